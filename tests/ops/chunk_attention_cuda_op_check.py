"""GPU check of the reach::chunk_attention op. Loads the CMake-built op library
(build-gpu/ops/libreach_ops.so, built by scripts/gpu-build), then compares the CUDA op
(float32 and bfloat16) with the CPU op in float64, forward and every gradient, and times
forward + backward. Run by scripts/gpu-check; by hand (repo root, on the GPU machine):
    python3 tests/ops/chunk_attention_cuda_op_check.py [--out FILE.json] [--ops-library PATH]
Error rule: relative L2 against float64; float32 within 1e-4, bfloat16 within 2x the error of
rounding the float64 result to bfloat16 plus 1e-4 (as tests/kernels/chunk_attention_cuda_cases.hpp).
"""
import argparse
import json
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_ops(path):
    if not os.path.exists(path):
        sys.exit(f"chunk_attention_cuda_op_check: {path} does not exist: run scripts/gpu-build")
    torch.ops.load_library(path)


def rel_l2(x, ref):
    return ((x.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def run(args_list, cfg, device, dtype, grad_out):
    leaves = [a.detach().to(device, dtype).requires_grad_() for a in args_list]
    out = torch.ops.reach.chunk_attention(*leaves, **cfg)
    out.backward(grad_out.to(device, dtype))
    return [out.detach()] + [t.grad for t in leaves]


def check_case(name, b, hq, hkv, n, d, dr, cfg, results):
    g = torch.Generator().manual_seed(n + d)
    def rnd(*shape, sd=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * sd
    s = cfg["chunk_size"]
    inputs = [rnd(b, hq, n, d), rnd(b, hkv, n, d), rnd(b, hkv, n, d), rnd(b, hkv, n, dr, sd=2.0),
              rnd(b, hkv, n // s, dr)]
    grad_out = rnd(b, hq, n, d)
    for dtype in (torch.float32, torch.bfloat16):
        rounded = [x.to(dtype).double() for x in inputs]
        ref = run(rounded, cfg, "cpu", torch.float64, grad_out.to(dtype).double())
        got = run(rounded, cfg, "cuda", dtype, grad_out)
        errs, bounds = [], []
        for x, r in zip(got, ref):
            errs.append(rel_l2(x.cpu(), r))
            bounds.append(1e-4 if dtype == torch.float32 else
                          2 * rel_l2(r.to(torch.bfloat16).double(), r) + 1e-4)
        ok = all(e <= bd for e, bd in zip(errs, bounds))
        row = {"case": name, "dtype": str(dtype).split(".")[-1], "errors": errs,
               "bounds": bounds, "pass": ok}
        results.append(row)
        print(f"{name:40s} {row['dtype']:9s} " + " ".join(f"{e:8.1e}" for e in errs) +
              ("  PASS" if ok else "  FAIL"), flush=True)


def time_case(n, d, results, hq=8, hkv=2, dr=64, s=64, k=8, window=0):
    cfg = dict(chunk_size=s, top_k=k, window=window)
    dev = "cuda"
    q = torch.randn(1, hq, n, d, device=dev, dtype=torch.bfloat16, requires_grad=True)
    kk = torch.randn(1, hkv, n, d, device=dev, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(1, hkv, n, d, device=dev, dtype=torch.bfloat16, requires_grad=True)
    r = torch.randn(1, hkv, n, dr, device=dev, dtype=torch.bfloat16, requires_grad=True)
    lm = torch.randn(1, hkv, n // s, dr, device=dev, dtype=torch.bfloat16, requires_grad=True)
    go = torch.randn(1, hq, n, d, device=dev, dtype=torch.bfloat16)
    def step():
        out = torch.ops.reach.chunk_attention(q, kk, v, r, lm, **cfg)
        out.backward(go)
    step()
    torch.cuda.synchronize()
    reps = 3
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t0) / reps * 1e3
    row = {"timing": f"bf16 fwd+bwd n={n} Hq={hq} Hkv={hkv} d={d} dr={dr} S={s} k={k}",
           "ms": ms}
    results.append(row)
    print(row, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--time-lengths", default="16384,65536")
    ap.add_argument("--ops-library",
                    default=os.path.join(ROOT, "build-gpu", "ops", "libreach_ops.so"))
    a = ap.parse_args()
    load_ops(a.ops_library)
    print(f"GPU {torch.cuda.get_device_name()}", flush=True)
    results = []
    print(f"{'case':40s} {'dtype':9s} {'out':>8s} {'dq':>8s} {'dk':>8s} {'dv':>8s} {'dr':>8s} "
          f"{'dL':>8s}")
    for d in (64, 128):
        check_case(f"gqa_window d={d}", 1, 4, 2, 1000, d, 64,
                   dict(chunk_size=64, top_k=8, window=128), results)
        check_case(f"stick_fraction d={d}", 2, 2, 1, 700, d, 32,
                   dict(chunk_size=32, top_k=6, budget="fraction", fraction=0.3, min_k=2,
                        weighting="stick_breaking"), results)
    for n in [int(x) for x in a.time_lengths.split(",") if x]:
        time_case(n, 128, results)
    ok = all(r.get("pass", True) for r in results)
    print("PASS" if ok else "FAIL")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
