#!/usr/bin/env python3
"""The row path's two threshold solves side by side, in float64 numpy (no GPU needed).

alpha-entmax needs tau with f(tau) = sum_j [x_j - tau]_+^r - 1 = 0, r = 1 / (alpha - 1),
x = (alpha - 1) z. The CUDA row kernels (kernels/cuda/entmax_attention.cu, newton_threshold)
take safeguarded Newton steps from xmax - 1; the CPU kernel bisects to machine precision. This
script runs both, step for step as the kernels do, on random rows and prints, per alpha, the
largest difference of the probabilities and how many passes over the row each solve took.
Usage: python3 scripts/newton_threshold_model.py [--rows 2000] [--slots 96] [--seed 0]
"""
import argparse

import numpy as np

MAX_NEWTON_PASSES = 64  # kMaxNewtonPasses


def probabilities(x, tau, r):
    y = np.maximum(x - tau, 0.0)
    p = y**r
    return p / p.sum()


def bisection(x, r, am1):
    """The CPU kernel's solve: bisection on [xmax - 1, xmax - n^-(a-1)] to machine precision."""
    xmax = x.max()
    lo, hi = xmax - 1.0, xmax - len(x) ** (-am1)
    passes = 0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        passes += 1
        f = (np.maximum(x - mid, 0.0) ** r).sum()
        if f >= 1.0:
            lo = mid
        else:
            hi = mid
    return lo, passes


def newton(x, r, am1):
    """The CUDA row kernels' solve (newton_threshold), pass for pass."""
    xmax = x.max()
    lo, hi = xmax - 1.0, xmax - len(x) ** (-am1)
    tau = lo
    passes = 0
    for _ in range(MAX_NEWTON_PASSES):
        passes += 1
        y = x - tau
        y = y[y > 0]
        f = (y**r).sum() - 1.0
        df = (r * y ** (r - 1.0)).sum()
        if f >= 0:
            lo = tau
        else:
            hi = tau
        if f == 0:
            break
        nxt = tau + f / df
        if abs(nxt - tau) <= 1e-15 * max(1.0, abs(tau)):  # converged (before the safeguard)
            tau = nxt
            break
        if not (lo < nxt < hi):
            nxt = 0.5 * (lo + hi)
        tau = nxt
        if not (lo < hi):
            break
    return tau, passes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--slots", type=int, default=96, help="S = window + offsets of a row")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.rows < 1 or a.slots < 1:
        ap.error("--rows and --slots must be >= 1")
    rng = np.random.default_rng(a.seed)
    print(f"{a.rows} random rows of {a.slots} slots (scores N(0, s^2), s in [0.5, 8]), seed {a.seed}")
    print(f"{'alpha':>6} {'max |p diff|':>13} {'Newton passes mean':>19} {'max':>4} {'bisection mean':>15}")
    worst = 0.0
    for alpha in (1.01, 1.1, 1.25, 1.5, 1.75, 2.0):
        am1 = alpha - 1.0
        r = 1.0 / am1
        diff, newton_passes, bisect_passes = 0.0, [], []
        for _ in range(a.rows):
            slots = int(rng.integers(1, a.slots + 1))
            z = rng.normal(0.0, rng.uniform(0.5, 8.0), slots)
            x = am1 * z
            t_b, n_b = bisection(x, r, am1)
            t_n, n_n = newton(x, r, am1)
            diff = max(diff, np.abs(probabilities(x, t_b, r) - probabilities(x, t_n, r)).max())
            newton_passes.append(n_n)
            bisect_passes.append(n_b)
        worst = max(worst, diff)
        print(f"{alpha:>6} {diff:>13.1e} {np.mean(newton_passes):>19.1f} {max(newton_passes):>4d} "
              f"{np.mean(bisect_passes):>15.1f}")
    print(f"largest difference of p over every alpha: {worst:.1e}")


if __name__ == "__main__":
    main()
