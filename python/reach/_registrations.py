"""Fake (meta) implementations and autograd for the C++ ops, so that torch.compile traces
them without graph breaks and gradients flow through the forward/backward op pairs.

The C++ library defines each family as a forward op (returning what the backward needs) and
a backward op, with CPU and CUDA kernels; the fake functions here give the shapes, dtypes and
devices those kernels return (kept in step with ops/*.cpp), and register_autograd ties each
forward to its backward.
"""

import torch

_lib = "reach::"


def _contiguous_like(t, dtype=None):
    return torch.empty(t.shape, dtype=dtype or t.dtype, device=t.device)


# --- dilated attention (ops/dilated_attention.cpp, ops/dilated_attention_cuda.cpp) ---------


@torch.library.register_fake(_lib + "dilated_attention_forward")
def _dilated_forward_fake(q, k, v, window, offsets, scale=None, token_major_out=False):
    torch._check(q.dim() == 4, lambda: "dilated_attention: q must have rank 4")
    torch._check(k.shape == v.shape, lambda: "dilated_attention: k and v must share one shape")
    # The CUDA kernels keep the log-sum-exp in float32 whatever q's dtype.
    lse_dtype = torch.float32 if q.device.type == "cuda" else q.dtype
    lse = q.new_empty(q.shape[:3], dtype=lse_dtype)
    if token_major_out and q.shape[1] > 1:  # a [B, H, n, d] view of a [B, n, H, d] tensor
        b, h, n, d = q.shape
        return q.new_empty((b, n, h, d)).transpose(1, 2), lse
    return _contiguous_like(q), lse


@torch.library.register_fake(_lib + "dilated_attention_backward")
def _dilated_backward_fake(
    grad_out, q, k, v, out, lse, window, offsets, scale=None, offsets_grad=True
):
    doff = torch.empty(offsets.shape, dtype=torch.float64, device=q.device)
    return _contiguous_like(q), _contiguous_like(k), _contiguous_like(v), doff


def _dilated_setup(ctx, inputs, output):
    q, k, v, window, offsets, scale = inputs[:6]
    out, lse = output
    ctx.save_for_backward(q, k, v, offsets, out, lse)
    ctx.window, ctx.scale = window, scale
    ctx.mark_non_differentiable(lse)


def _dilated_backward(ctx, grad_out, grad_lse):
    q, k, v, offsets, out, lse = ctx.saved_tensors
    need_offsets = ctx.needs_input_grad[4]
    dq, dk, dv, doff = torch.ops.reach.dilated_attention_backward(
        grad_out, q, k, v, out, lse, ctx.window, offsets, ctx.scale, need_offsets
    )
    doff = doff.to(offsets.device, offsets.dtype) if need_offsets else None
    return dq, dk, dv, None, doff, None, None


torch.library.register_autograd(
    _lib + "dilated_attention_forward", _dilated_backward, setup_context=_dilated_setup
)


# --- entmax attention (ops/entmax_attention.cpp) -------------------------------------------


def _given(t):
    return t is not None and t.numel() > 0


def _entmax_state_bytes(q):
    """The CUDA forward state's bytes, from the shapes alone (as
    kernels::gpu::entmax_attention_saved_bytes_for_shape computes them); the CPU keeps none."""
    tile = torch.ops.reach.entmax_attention_state_tile()
    batch_heads, n = q.shape[0] * q.shape[1], q.shape[2]
    tiles = (n + tile - 1) // tile
    words = (tiles + 31) // 32
    return (batch_heads * n * 16 + batch_heads * tiles * words * 4 + 15) // 16 * 16


@torch.library.register_fake(_lib + "entmax_attention_forward")
def _entmax_forward_fake(
    q, k, v, window, offsets, alpha, delta, beta, gamma, softmax, scale, alibi
):
    torch._check(
        k.shape == q.shape and v.shape == q.shape,
        lambda: "entmax_attention: q, k and v must have the same shape",
    )
    size = _entmax_state_bytes(q) if q.device.type == "cuda" else 0
    return _contiguous_like(q), q.new_empty((size,), dtype=torch.uint8)


@torch.library.register_fake(_lib + "entmax_attention_backward")
def _entmax_backward_fake(
    grad_out, q, k, v, saved, window, offsets, alpha, delta, beta, gamma, softmax, scale, alibi,
    params_grad,
):
    log_n = _given(delta) and _given(beta) and _given(gamma)
    takes_part = [not softmax and _given(alpha), log_n, log_n, log_n]
    grads = []
    for param, need, part in zip((alpha, delta, beta, gamma), params_grad, takes_part):
        grads.append(torch.empty_like(param) if need and part else q.new_empty((0,)))
    return (_contiguous_like(q), _contiguous_like(k), _contiguous_like(v), *grads)


def _entmax_setup(ctx, inputs, output):
    q, k, v, window, offsets, alpha, delta, beta, gamma, softmax, scale, alibi = inputs
    out, saved = output
    ctx.save_for_backward(q, k, v, saved, offsets, alpha, delta, beta, gamma, alibi)
    ctx.window, ctx.softmax, ctx.scale = window, softmax, scale
    ctx.mark_non_differentiable(saved)


def _entmax_backward(ctx, grad_out, grad_saved):
    q, k, v, saved, offsets, alpha, delta, beta, gamma, alibi = ctx.saved_tensors
    need = [bool(ctx.needs_input_grad[i]) for i in (5, 6, 7, 8)]
    dq, dk, dv, *dparams = torch.ops.reach.entmax_attention_backward(
        grad_out, q, k, v, saved, ctx.window, offsets, alpha, delta, beta, gamma,
        ctx.softmax, ctx.scale, alibi, need,
    )
    grads = [g if n else None for g, n in zip(dparams, need)]
    return (dq, dk, dv, None, None, *grads, None, None, None)


torch.library.register_autograd(
    _lib + "entmax_attention_forward", _entmax_backward, setup_context=_entmax_setup
)


# --- chunk attention (ops/chunk_attention.cpp, ops/chunk_attention_cuda.cpp) ---------------


@torch.library.register_fake(_lib + "chunk_attention_forward")
def _chunk_forward_fake(
    q, k, v, r, landmarks, chunk_size, top_k, window, budget, fraction, min_k, weighting,
    scale, retrieval_scale,
):
    batch, query_heads, n, _ = q.shape
    kv_heads = k.shape[1]
    # The CUDA kernels keep the chunk weights and log-sum-exps in float32.
    stat_dtype = torch.float32 if q.device.type == "cuda" else q.dtype
    indices = q.new_empty((batch, kv_heads, n, top_k), dtype=torch.int64)
    weights = q.new_empty((batch, kv_heads, n, top_k), dtype=stat_dtype)
    lse = q.new_empty((batch, query_heads, n, top_k), dtype=stat_dtype)
    return _contiguous_like(q), indices, weights, lse


@torch.library.register_fake(_lib + "chunk_attention_backward")
def _chunk_backward_fake(
    grad_out, q, k, v, r, landmarks, indices, weights, lse, chunk_size, top_k, window, budget,
    fraction, min_k, weighting, scale, retrieval_scale,
):
    return tuple(_contiguous_like(t) for t in (q, k, v, r, landmarks))


def _chunk_setup(ctx, inputs, output):
    q, k, v, r, landmarks = inputs[:5]
    out, indices, weights, lse = output
    ctx.save_for_backward(q, k, v, r, landmarks, indices, weights, lse)
    ctx.options = inputs[5:]
    ctx.mark_non_differentiable(indices, weights, lse)


def _chunk_backward(ctx, grad_out, *unused):
    saved = ctx.saved_tensors
    grads = torch.ops.reach.chunk_attention_backward(grad_out, *saved, *ctx.options)
    return (*grads, *([None] * len(ctx.options)))


torch.library.register_autograd(
    _lib + "chunk_attention_forward", _chunk_backward, setup_context=_chunk_setup
)
