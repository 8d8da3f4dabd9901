#!/usr/bin/env python3
"""reach's CUDA entmax attention against AdaSplash and SDPA softmax, on one GPU, in one process.

Methods (bf16, batch 1, 8 heads, head_dim 64, causal):
  reach_dense   torch.ops.reach.entmax_attention, dense causal, alpha = 1.5 (tiled kernels)
  reach_fib     the same op over the Fibonacci key set: window 64 + Fibonacci offsets up to n
                (row kernels; offsets from torch.ops.reach.dilated_offsets, i.e. pattern/)
  adasplash     AdaSplash (PyPI adasplash, Triton), adasplash(q, k, v, alpha=1.5, is_causal=True)
                (its AdaSplash-2 path for causal alpha = 1.5)
  sdpa          torch.nn.functional.scaled_dot_product_attention(is_causal=True) (softmax, for
                scale)
Forward (no autograd) and forward + backward (q, k, v require grad; backward of a fixed random
grad_out), median of CUDA-event timings after a warm-up call. Before timing, reach_dense and
AdaSplash are compared on the same inputs at the smallest n (relative L2 of out and of dq).

AdaSplash autotunes over 6..30 Triton configurations per kernel and per n (n is a compile-time
constant); to fit the device budget this script keeps one configuration per kernel
(num_warps 4, num_stages 3, and BLOCK_M x BLOCK_N = 128 x 64 where the kernel tunes blocks),
which it says in its output. --full-autotune keeps all of them.

--warm-only runs AdaSplash once per n (forward and backward) and times nothing: Triton
compiles and caches its kernels, so a later timing run in another process skips the
compilation (scripts/gpu-entmax-table does this while the GPU trains). The JSON is rewritten
after every measured row, so a run cut short keeps what it measured.

Usage: python3 bench/entmax_gpu_bench.py --ops-library build-gpu/ops/libreach_ops.so
           [--ns 4096,8192,16384,32768,65536] [--adasplash-ns ...] [--json OUT.json]
           [--warm-only]
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F


def restrict_triton_autotune():
    """Keep one config per autotuned kernel (see the module docstring)."""
    import triton

    original = triton.autotune

    def keep(config):
        kw = config.kwargs
        blocks_ok = ("BLOCK_M" not in kw) or (kw.get("BLOCK_M") == 128 and kw.get("BLOCK_N") == 64)
        return config.num_warps == 4 and config.num_stages == 3 and blocks_ok

    def autotune(configs, *args, **kwargs):
        kept = [c for c in configs if keep(c)] or configs[:1]
        return original(kept, *args, **kwargs)

    triton.autotune = autotune


def time_ms(fn, budget_s=0.4, max_reps=20):
    fn()  # warm-up (and compilation)
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    first = start.elapsed_time(end)
    reps = max(1, min(max_reps, int(budget_s * 1000 / max(first, 1e-3))))
    times = [first]
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def warm(adasplash, args):
    if adasplash is None:
        return
    dev = torch.device("cuda")
    for n in (int(x) for x in (args.adasplash_ns or args.ns).split(",")):
        start = time.time()
        q, k, v, g = (torch.randn(1, args.heads, n, args.head_dim, device=dev,
                                  dtype=torch.bfloat16) for _ in range(4))
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        adasplash(qq, kk, vv, alpha=1.5, is_causal=True).backward(g)
        torch.cuda.synchronize()
        print(f"adasplash n={n}: compiled and ran once in {time.time() - start:.1f} s")
        sys.stdout.flush()
        del q, k, v, g, qq, kk, vv
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops-library", default="build-gpu/ops/libreach_ops.so")
    ap.add_argument("--ns", default="4096,8192,16384,32768,65536")
    ap.add_argument("--adasplash-ns", default=None, help="default: --ns")
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--full-autotune", action="store_true")
    ap.add_argument("--max-call-s", type=float, default=4.0,
                    help="skip a method's larger n once one call takes longer than this")
    ap.add_argument("--json", default=None)
    ap.add_argument("--warm-only", action="store_true",
                    help="compile AdaSplash's kernels for each n (one call each), time nothing")
    args = ap.parse_args()

    if not args.full_autotune:
        restrict_triton_autotune()
    try:
        from adasplash import adasplash
    except Exception as e:  # reported, the rest still runs
        print(f"adasplash unavailable: {e}")
        adasplash = None
    if args.warm_only:
        warm(adasplash, args)
        return
    torch.ops.load_library(args.ops_library)

    dev = torch.device("cuda")
    H, d, W = args.heads, args.head_dim, args.window
    ns = [int(x) for x in args.ns.split(",")]
    ada_ns = set(int(x) for x in (args.adasplash_ns or args.ns).split(","))
    alpha = torch.full((H,), 1.5, dtype=torch.float64)
    none = torch.empty(0, dtype=torch.float64)

    def fib(n):
        return torch.ops.reach.dilated_offsets("fibonacci", 1.0, W, n).to(torch.float64)

    methods = {
        "reach_dense": lambda q, k, v: torch.ops.reach.entmax_attention(
            q, k, v, q.shape[2], none, alpha),
        "reach_fib": lambda q, k, v: torch.ops.reach.entmax_attention(
            q, k, v, W, fib(q.shape[2]), alpha),
        "sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    }
    if adasplash is not None:
        methods["adasplash"] = lambda q, k, v: adasplash(q, k, v, alpha=1.5, is_causal=True)

    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"bf16, B=1, H={H}, d={d}, causal; reach_fib: W={W} + Fibonacci offsets; "
          f"AdaSplash autotune: {'full' if args.full_autotune else 'one config per kernel'}")

    results = {"config": vars(args), "device": torch.cuda.get_device_name(),
               "torch": torch.__version__, "agreement": {}, "times": []}

    # Agreement at the smallest n: reach dense entmax-1.5 vs AdaSplash (both bf16).
    if adasplash is not None:
        n0 = ns[0]
        torch.manual_seed(0)
        q, k, v, g = (torch.randn(1, H, n0, d, device=dev, dtype=torch.bfloat16) for _ in range(4))
        outs = {}
        for name in ("reach_dense", "adasplash"):
            qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
            o = methods[name](qq, kk, vv)
            o.backward(g)
            outs[name] = (o.detach().float(), qq.grad.float(), kk.grad.float(), vv.grad.float())
        agree = {f"{t}_rel_l2": rel(outs["reach_dense"][i], outs["adasplash"][i])
                 for i, t in enumerate(("out", "dq", "dk", "dv"))}
        agree["n"] = n0
        results["agreement"] = agree
        print("reach_dense vs adasplash at n=%d: " % n0 +
              ", ".join(f"{k}={v:.2e}" for k, v in agree.items() if k != "n"))

    skipped = set()
    for n in ns:
        torch.manual_seed(n)
        q, k, v, g = (torch.randn(1, H, n, d, device=dev, dtype=torch.bfloat16) for _ in range(4))
        for name, fn in methods.items():
            if name == "adasplash" and n not in ada_ns:
                continue
            if name in skipped:
                results["times"].append({"method": name, "n": n, "skipped": True})
                print(f"{name:12s} n={n:6d}  skipped (a smaller n took > {args.max_call_s} s)")
                continue
            row = {"method": name, "n": n}
            try:
                with torch.no_grad():
                    row["fwd_ms"] = time_ms(lambda: fn(q, k, v))
                qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))

                def fwd_bwd():
                    for t in (qq, kk, vv):
                        t.grad = None
                    fn(qq, kk, vv).backward(g)

                row["fwd_bwd_ms"] = time_ms(fwd_bwd)
                if row["fwd_bwd_ms"] > args.max_call_s * 1000:
                    skipped.add(name)
            except Exception as e:  # one method failing does not hide the others
                row["error"] = str(e).split("\n")[0][:300]
            results["times"].append(row)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(results, f, indent=1)
            if "error" in row:
                print(f"{name:12s} n={n:6d}  error: {row['error']}")
            else:
                print(f"{name:12s} n={n:6d}  fwd {row['fwd_ms']:9.2f} ms  "
                      f"fwd+bwd {row['fwd_bwd_ms']:9.2f} ms")
            sys.stdout.flush()
        del q, k, v, g
        torch.cuda.empty_cache()

    # Ratios the bars ask for.
    by = {(r["method"], r["n"]): r for r in results["times"] if "fwd_ms" in r}
    print("\nratios (fwd+bwd):")
    for n in ns:
        a, rd, rf = by.get(("adasplash", n)), by.get(("reach_dense", n)), by.get(("reach_fib", n))
        parts = [f"n={n}"]
        if a and rd:
            parts.append(f"adasplash/reach_dense = {a['fwd_bwd_ms'] / rd['fwd_bwd_ms']:.2f}")
        if rd and rf:
            parts.append(f"reach_dense/reach_fib = {rd['fwd_bwd_ms'] / rf['fwd_bwd_ms']:.1f}")
        print("  " + ", ".join(parts))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
