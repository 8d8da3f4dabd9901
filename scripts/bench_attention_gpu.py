#!/usr/bin/env python3
"""GPU benchmark of reach's dilated attention against dense causal SDPA and
FlexAttention with the same mask, plus the bandwidth floor (run by scripts/gpu-check).

Loads the CMake-built op library (build-gpu/ops/libreach_ops.so, built by scripts/gpu-build)
with torch.ops.load_library, so torch.ops.reach.* dispatch to the CUDA kernels; offsets come
from the library too (torch.ops.reach.dilated_offsets, i.e. pattern/). Before timing it checks
the op end to end (bf16 CUDA vs the float64 CPU op, outputs and gradients incl. the
learned-offset gradient). Writes full results as JSON.

Usage: python3 scripts/bench_attention_gpu.py --json OUT.json [--ns 2048,8192,...]
       [--ops-library build-gpu/ops/libreach_ops.so]
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_ops(path):
    if not os.path.exists(path):
        sys.exit(f"bench_attention_gpu: {path} does not exist: build it with scripts/gpu-build")
    torch.ops.load_library(path)


def fibonacci_offsets(window, reach):
    """Fibonacci offsets W <= d <= R at alpha 1, from pattern/ through the op library."""
    return [int(x) for x in torch.ops.reach.dilated_offsets("fibonacci", 1.0, window, reach)]


def bench_ms(fn, grad_to_none=None):
    import triton.testing
    return triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none,
                                   return_mode="median")


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm()).item()


def check_op_case(offsets, learn_offsets, seed):
    """bf16 CUDA op vs float64 CPU op through autograd on the same (bf16-rounded) inputs."""
    torch.manual_seed(seed)
    B, H, n, d, W = 2, 3, 777, 64, 16
    q, k, v, g = (torch.randn(B, H, n, d, dtype=torch.float64) for _ in range(4))
    q, k, v, g = (t.bfloat16().double() for t in (q, k, v, g))  # same inputs both sides
    offs = torch.tensor(offsets, dtype=torch.float64)
    res = {}
    outs = {}
    for dev, dt in (("cpu", torch.float64), ("cuda", torch.bfloat16)):
        qq, kk, vv = (t.detach().clone().to(dev, dt).requires_grad_() for t in (q, k, v))
        oo = offs.clone().requires_grad_(learn_offsets)
        o = torch.ops.reach.dilated_attention(qq, kk, vv, W, oo, None)
        o.backward(g.to(dev, dt))
        outs[dev] = (o.detach(), qq.grad, kk.grad, vv.grad, oo.grad)
    names = ("out", "dq", "dk", "dv", "doffsets") if learn_offsets else ("out", "dq", "dk", "dv")
    for name, a, b in zip(names, outs["cuda"], outs["cpu"]):
        res[name] = rel(a, b)
    # FlashAttention-style rule: within 2x the error of bf16 rounding of the float64 result
    # (offsets gradient: 1e-2; see tests/kernels/dilated_attention_cuda_cases.hpp).
    ok = True
    for name, b in zip(("out", "dq", "dk", "dv"), outs["cpu"][:4]):
        bound = 2 * rel(b.bfloat16(), b) + 1e-4
        ok &= res[name] <= bound
    if learn_offsets:
        ok &= res["doffsets"] <= 1e-2
    res["passed"] = bool(ok)
    return res


def check_op():
    """Both CUDA paths through the torch op: learned fractional offsets (CUDA cores, with
    the offset gradient) and integer Fibonacci offsets (tensor cores)."""
    learned = check_op_case([21.5, 34.0, 55.25, 89.75, 144.0, 233.5], True, 0)
    fixed = check_op_case(fibonacci_offsets(21, 610), False, 1)  # 21, 34, ..., 610
    return {"learned_fractional": learned, "integer_tensor_cores": fixed,
            "passed": learned["passed"] and fixed["passed"]}


def copy_bandwidth():
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")  # 1 GiB
    x.random_(0, 255)
    y = torch.empty_like(x)
    ms = bench_ms(lambda: y.copy_(x))
    return 2 * x.numel() / (ms * 1e-3)  # bytes read + written per second


def flex_fn(n, window, offsets, device):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    off = torch.tensor(offsets, dtype=torch.int64, device=device)

    def mask_mod(b, h, q_idx, kv_idx):
        dist = q_idx - kv_idx
        m = (dist >= 0) & (dist < window)
        for o in offsets:
            m = m | (dist == o)
        return m

    del off
    block_mask = create_block_mask(mask_mod, None, None, n, n, device=device, _compile=True)
    compiled = torch.compile(flex_attention)
    return lambda q, k, v: compiled(q, k, v, block_mask=block_mask), block_mask


def profile_kernels(n, tokens, H=8, d=64, W=64, iters=5):
    """Per-kernel device time of reach's forward + backward at (n, reach = n)."""
    from torch.profiler import ProfilerActivity, profile
    B = max(1, tokens // n)
    offs = torch.tensor(fibonacci_offsets(W, n), dtype=torch.float64)
    q, k, v, g = (torch.randn(B, H, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

    def step():
        qg.grad = kg.grad = vg.grad = None  # as the timed benchmark: no .grad accumulation
        torch.ops.reach.dilated_attention(qg, kg, vg, W, offs, None).backward(g)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            step()
        torch.cuda.synchronize()
    out = {}
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t > 0:
            out[e.key[:90]] = t / iters / 1e3  # ms per step
    print(f"per-kernel ms per fwd+bwd step (n={n}, reach=n):", flush=True)
    for key, ms in sorted(out.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {ms:8.3f}  {key}", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", required=True)
    ap.add_argument("--ns", default="2048,8192,32768,65536,131072")
    ap.add_argument("--tokens", type=int, default=131072)
    ap.add_argument("--ops-library",
                    default=os.path.join(ROOT, "build-gpu", "ops", "libreach_ops.so"))
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--flex-budget-s", type=float, default=200)
    ap.add_argument("--profile", action="store_true",
                    help="also print per-kernel CUDA times (torch.profiler) for the largest n")
    args = ap.parse_args()

    load_ops(args.ops_library)
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    results["op_check"] = check_op()
    print("op check (bf16 CUDA vs float64 CPU, rel. L2):", results["op_check"], flush=True)
    bw = copy_bandwidth()
    results["copy_bandwidth_GBps"] = bw / 1e9
    print(f"copy bandwidth {bw / 1e9:.0f} GB/s", flush=True)
    torch._dynamo.config.cache_size_limit = 64

    H, d, W = 8, 64, 64
    rows = []
    flex_started = time.time()
    flex_spent = 0.0
    for n in [int(x) for x in args.ns.split(",")]:
        B = max(1, args.tokens // n)
        for reach in sorted({4096, n}):
            offsets = fibonacci_offsets(W, reach)
            row = {"n": n, "batch": B, "heads": H, "head_dim": d, "window": W, "reach": reach,
                   "num_offsets": len(offsets)}
            torch.manual_seed(n + reach)
            q, k, v, g = (torch.randn(B, H, n, d, device="cuda", dtype=torch.bfloat16)
                          for _ in range(4))
            offs = torch.tensor(offsets, dtype=torch.float64)
            qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
            row["reach_fwd_ms"] = bench_ms(
                lambda: torch.ops.reach.dilated_attention_forward(q, k, v, W, offs, None))

            def reach_fwd_bwd():
                torch.ops.reach.dilated_attention(qg, kg, vg, W, offs, None).backward(g)
            row["reach_fwdbwd_ms"] = bench_ms(reach_fwd_bwd, grad_to_none=[qg, kg, vg])
            elem = B * H * n * d * 2  # one bf16 tensor
            row["floor_fwd_ms"] = 4 * elem / bw * 1e3  # q, k, v read; o written
            row["floor_fwdbwd_ms"] = (4 + 8) * elem / bw * 1e3  # + q,k,v,o,do read; dq,dk,dv
            if reach == max(4096, n) or n <= 4096:
                row["sdpa_fwd_ms"] = bench_ms(
                    lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))

                def sdpa_fwd_bwd():
                    F.scaled_dot_product_attention(qg, kg, vg, is_causal=True).backward(g)
                row["sdpa_fwdbwd_ms"] = bench_ms(sdpa_fwd_bwd, grad_to_none=[qg, kg, vg])
            if not args.no_flex and flex_spent < args.flex_budget_s:
                fs = time.time()
                try:
                    fn, bm = flex_fn(n, W, offsets, "cuda")
                    row["flex_fwd_ms"] = bench_ms(lambda: fn(q, k, v))

                    def flex_fwd_bwd():
                        fn(qg, kg, vg).backward(g)
                    row["flex_fwdbwd_ms"] = bench_ms(flex_fwd_bwd, grad_to_none=[qg, kg, vg])
                    try:  # fraction of 128x128 blocks Flex computes (of the full n x n grid)
                        blocks = bm.kv_num_blocks.sum().item()
                        if bm.full_kv_num_blocks is not None:
                            blocks += bm.full_kv_num_blocks.sum().item()
                        row["flex_block_density"] = blocks / math.ceil(n / 128) ** 2
                    except Exception:
                        pass
                except Exception as e:  # report, keep benchmarking the rest
                    row["flex_error"] = f"{type(e).__name__}: {e}"[:300]
                flex_spent += time.time() - fs
            rows.append(row)
            print(json.dumps(row), flush=True)
            del q, k, v, g, qg, kg, vg
            torch.cuda.empty_cache()
    results["rows"] = rows
    if args.profile:
        results["profile"] = profile_kernels(max(int(x) for x in args.ns.split(",")), args.tokens)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)

    def fmt(x):
        return f"{x:8.3f}" if isinstance(x, float) else f"{'-':>8}"
    print("\n%s bf16, B*n = %d tokens, 8 heads, d 64, W 64, Fibonacci offsets (ms, median)"
          % (results["device"], args.tokens))
    print(f"{'n':>7} {'reach':>7} {'K':>3} | {'reach fwd':>9} {'floor':>8} {'sdpa':>8} "
          f"{'flex':>8} | {'reach f+b':>9} {'floor':>8} {'sdpa':>8} {'flex':>8}")
    for r in rows:
        print(f"{r['n']:>7} {r['reach']:>7} {r['num_offsets']:>3} | {r['reach_fwd_ms']:9.3f} "
              f"{fmt(r['floor_fwd_ms'])} {fmt(r.get('sdpa_fwd_ms'))} {fmt(r.get('flex_fwd_ms'))} | "
              f"{r['reach_fwdbwd_ms']:9.3f} {fmt(r['floor_fwdbwd_ms'])} "
              f"{fmt(r.get('sdpa_fwdbwd_ms'))} {fmt(r.get('flex_fwdbwd_ms'))}")
    print(f"copy bandwidth {bw / 1e9:.0f} GB/s; op check passed: {results['op_check']['passed']}")
    return 0 if results["op_check"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
