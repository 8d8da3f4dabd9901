"""Offset sets and alpha schedules, computed by reach's C++ pattern/ code (bound as ops in
ops/pattern_ops.cpp), so Python gets exactly the C++ definitions (docs/definitions.md).

Two conventions:
  reach: a window of W keys (distances 0..W-1) plus offsets round(alpha * b) (half away from
         zero) for b in the base sequence (Fibonacci 1, 2, 3, 5, ... or powers of two), kept
         where W <= d <= R; alpha across layers from a schedule (fixed, stagger, coprime,
         learned = stagger at init, real offsets alpha * b).
  paper: the main paper's sets: the window is the distances 0..W (W + 1 keys); 15 Fibonacci
         rungs (or powers of two); Python's round of alpha * f kept where W < d <= T - 1;
         alpha in [0.5, 1.5].
`layer_patterns` gives, per layer, what `reach pattern --json` prints.
"""

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch

_ops = torch.ops.reach


def _ints(t: torch.Tensor) -> List[int]:
    return [int(x) for x in t.tolist()]


def dilated_offsets(window: int, reach: int, alpha: float = 1.0, base: str = "fibonacci") -> List[int]:
    """reach's static offsets: round(alpha * b), sorted, unique, W <= d <= R."""
    return _ints(_ops.dilated_offsets(base, float(alpha), window, reach))


def fractional_offsets(
    window: int, reach: int, alpha: float, base: str = "fibonacci"
) -> Tuple[List[float], List[int]]:
    """reach's learned schedule: the real distances alpha * b with W <= alpha * b <= R, and the
    base value b of each (d offset / d alpha = b)."""
    distances, bases = _ops.fractional_offsets(base, float(alpha), window, reach)
    return distances.tolist(), _ints(bases)


def layer_alphas(
    layers: int,
    schedule: str = "stagger",
    alpha0: float = 1.0,
    alpha_min: float = 1.0,
    alpha_max: float = 3.0,
) -> List[float]:
    """reach's alpha per layer: fixed alpha0; stagger alpha_min + (alpha_max - alpha_min)
    l / (L - 1); coprime the stagger permuted by l -> (l s) mod L; learned its initial
    values."""
    return _ops.layer_alphas(schedule, layers, float(alpha0), float(alpha_min), float(alpha_max)).tolist()


def coprime_step(layers: int) -> int:
    """reach's coprime step s (gcd(s, L) = 1, nearest L / phi)."""
    return int(_ops.coprime_step(layers))


def paper_offsets(window: int, seq_len: int, alpha: float = 1.0, base: str = "fibonacci") -> List[int]:
    """The paper's rung distances beyond the window 0..W: round_half_even(alpha * f),
    W < d <= T - 1. With reach's ops use a window of W + 1 keys."""
    return _ints(_ops.paper_offsets(base, float(alpha), window, seq_len))


def paper_learned_distances(
    window: int, seq_len: int, alpha: float = 1.0, base: str = "fibonacci"
) -> List[float]:
    """The paper's learned path: the interpolated target distances alpha * f it keeps
    (float32 arithmetic, as its authors' code)."""
    return _ops.paper_learned_distances(float(alpha), base, window, seq_len).tolist()


def paper_layer_alphas(layers: int, schedule: str = "stagger") -> List[float]:
    """The paper's alpha per layer: fixed 1; stagger 0.5 + l / (L - 1); coprime slot
    (l S) mod L; learned the initial 1."""
    return _ops.paper_layer_alphas(schedule, layers).tolist()


def paper_coprime_step(layers: int) -> int:
    """The paper's coprime stride S (largest s <= L / 2 coprime with L)."""
    return int(_ops.paper_coprime_step(layers))


def attended_fraction(seq_len: int, window: int, offsets: List[int]) -> float:
    """Exact attended (query, key) pairs over n(n + 1) / 2 for a causal sequence."""
    t = torch.tensor([float(x) for x in offsets], dtype=torch.float64)
    return float(_ops.attended_fraction(seq_len, window, t))


@dataclass
class LayerPattern:
    """One layer in reach's operator terms: `window_keys` keys (distances
    0..window_keys-1) plus `offsets`; `alpha` is the layer's (initial, for learned) value;
    `learned_distances` the learned schedules' real distances at init."""

    layer: int
    alpha: float
    window_keys: int
    offsets: List[int]
    learned_distances: List[float] = field(default_factory=list)

    def distances(self, seq_len: int) -> List[int]:
        return list(range(min(self.window_keys, seq_len))) + list(self.offsets)


def layer_patterns(
    layers: int,
    window: int,
    reach: int = 2048,
    seq_len: Optional[int] = None,
    schedule: str = "stagger",
    base: str = "fibonacci",
    alpha: float = 1.0,
    alpha_min: float = 1.0,
    alpha_max: float = 3.0,
    convention: str = "reach",
) -> List[LayerPattern]:
    """Every layer's pattern, as `reach pattern --json` gives it (same arguments: alpha is
    the fixed schedule's alpha0; the paper convention's window is 0..W and its length
    seq_len defaults to 1024)."""
    if convention == "reach":
        result = []
        for l, a in enumerate(layer_alphas(layers, schedule, alpha, alpha_min, alpha_max)):
            learned = fractional_offsets(window, reach, a, base)[0] if schedule == "learned" else []
            result.append(LayerPattern(l, a, window, dilated_offsets(window, reach, a, base), learned))
        return result
    if convention == "paper":
        n = 1024 if seq_len is None else seq_len
        result = []
        for l, a in enumerate(paper_layer_alphas(layers, schedule)):
            learned = paper_learned_distances(window, n, a, base) if schedule == "learned" else []
            result.append(LayerPattern(l, a, window + 1, paper_offsets(window, n, a, base), learned))
        return result
    raise ValueError(f"convention must be 'reach' or 'paper', got {convention!r}")
