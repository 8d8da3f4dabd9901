"""reach's attention ops as Python functions (forward and backward on CPU and CUDA).

Layouts follow the C++ ops: q is [batch, heads, n, head_dim]; k and v are
[batch, kv_heads, n, head_dim] (kv_heads dividing heads: grouped-query attention, where
supported); every function is causal.
"""

import math
from typing import Optional, Sequence, Union

import torch

Offsets = Union[torch.Tensor, Sequence[float]]


def _offsets_tensor(offsets: Offsets, device=None) -> torch.Tensor:
    if isinstance(offsets, torch.Tensor):
        return offsets
    return torch.tensor([float(x) for x in offsets], dtype=torch.float64, device=device)


def _scale(scale: Optional[float], dim: int, what: str = "scale") -> float:
    s = 1.0 / math.sqrt(dim) if scale is None else float(scale)
    if not (math.isfinite(s) and s > 0):
        raise ValueError(f"{what} must be a positive finite number, got {s}")
    return s


def dilated_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    offsets: Offsets,
    scale: Optional[float] = None,
) -> torch.Tensor:
    """Causal dilated attention: query i attends the keys at distances 0..window-1 and at
    each distance in `offsets` (keys before position 0 do not exist).

    offsets: strictly increasing distances, each >= window, as a sequence or a 1-D float
    tensor. Integer values give the static schedules (reach.pattern.dilated_offsets); real
    values (the learned schedule, e.g. alpha * base values) attend an interpolated key and
    value (1 - f) * row(i - floor(x)) + f * row(i - floor(x) - 1), f = x - floor(x), visible
    from i >= ceil(x); a tensor that requires grad receives d loss / d offsets.
    q: [B, H, n, d], k and v: [B, Hkv, n, d], Hkv dividing H; float32 or float64 (bfloat16 on
    CUDA). scale defaults to 1/sqrt(d). Returns [B, H, n, d].
    """
    off = _offsets_tensor(offsets)
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"dilated_attention: window must be an int >= 1, got {window!r}")
    out, _ = torch.ops.reach.dilated_attention_forward(
        q, k, v, window, off, None if scale is None else float(scale)
    )
    return out


def entmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    offsets: Offsets,
    alpha: Optional[torch.Tensor] = None,
    delta: Optional[torch.Tensor] = None,
    beta: Optional[torch.Tensor] = None,
    gamma: Optional[torch.Tensor] = None,
    softmax: bool = False,
    scale: Optional[float] = None,
    alibi: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Causal alpha-entmax attention over the dilated key set (window + integer offsets;
    window >= n is dense causal): p_j = [(alpha - 1) z_j - tau]_+^(1 / (alpha - 1)) with tau
    making the row sum to 1, z_j = c * scale * q.k_j - slope * (i - j).

    alpha: [heads] in (1, 2] (required unless softmax=True). delta, beta, gamma, all given,
    turn on the log-n scaling c = delta + beta * log(n_visible + 1)^gamma (delta [heads];
    beta and gamma [heads] or [B, heads, n]); otherwise c = 1. softmax=True uses softmax
    instead (SSMax with delta = 0, gamma = 1). alibi: [heads] fixed slopes >= 0.
    alpha, delta, beta and gamma may require grad. q, k, v: [B, H, n, d] float32 or float64
    (float32 or bfloat16 on CUDA).
    """
    off = _offsets_tensor(offsets)
    out, _ = torch.ops.reach.entmax_attention_forward(
        q, k, v, window, off, alpha, delta, beta, gamma, softmax, _scale(scale, q.shape[-1]), alibi
    )
    return out


def chunk_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    r: torch.Tensor,
    landmarks: torch.Tensor,
    chunk_size: int,
    top_k: int,
    window: int = 0,
    budget: str = "fixed",
    fraction: float = 1.0,
    min_k: int = 1,
    weighting: str = "softmax",
    scale: Optional[float] = None,
    retrieval_scale: Optional[float] = None,
) -> torch.Tensor:
    """Hierarchical chunk sparse attention (docs/chunk_attention.md): each query scores the
    landmarks of the complete chunks before it with its retrieval query r, keeps the top_k
    (budget "fixed", or a rule of its C candidate chunks with coefficient f = fraction:
    "fraction" ceil(f C), "sqrt" ceil(f sqrt C), "log2" ceil(f log2 C), within min_k..top_k),
    attends causally inside each kept chunk and mixes the chunks' outputs by their weights.

    q: [B, Hq, n, d]; k, v: [B, Hkv, n, d]; r: [B, Hkv, n, dr]; landmarks:
    [B, Hkv, n // chunk_size, dr]. Gradients reach q, k, v, r and landmarks (the selection
    itself is not differentiable). scale defaults to 1/sqrt(d), retrieval_scale to
    1/sqrt(dr).
    """
    if landmarks.dim() == 4 and r.dim() == 4 and chunk_size >= 1:
        expected = (r.shape[0], r.shape[1], q.shape[2] // chunk_size, r.shape[3])
        if tuple(landmarks.shape) != expected:
            raise ValueError(
                "chunk_attention: landmarks must be [batch, kv_heads, n / chunk_size, "
                f"retrieval_dim] = {list(expected)}, got {list(landmarks.shape)}"
            )
    elif landmarks.dim() != 4:
        raise ValueError(f"chunk_attention: landmarks must have rank 4, got {landmarks.dim()}")
    out, _, _, _ = torch.ops.reach.chunk_attention_forward(
        q, k, v, r, landmarks, chunk_size, top_k, window, budget, float(fraction), min_k,
        weighting, _scale(scale, q.shape[-1]), _scale(retrieval_scale, r.shape[-1],
                                                      "retrieval_scale"),
    )
    return out


def dilated_mask(n: int, window: int, offsets: Sequence[int], device=None) -> torch.Tensor:
    """The boolean [n, n] mask (True = attended) of dilated attention with integer offsets:
    key j is visible from query i iff i - j is in 0..window-1 or in offsets. Use it with
    torch.nn.functional.scaled_dot_product_attention(attn_mask=...) for the same result."""
    i = torch.arange(n, device=device).unsqueeze(1)
    j = torch.arange(n, device=device).unsqueeze(0)
    distance = i - j
    visible = (distance >= 0) & (distance < window)
    for d in offsets:
        if float(d) != int(d):
            raise ValueError(f"dilated_mask: offsets must be integers, got {d}")
        visible |= distance == int(d)
    return visible
