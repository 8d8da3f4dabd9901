"""GPU check of the reach::chunk_attention op. Loads the CMake-built op library
(build-gpu/ops/libreach_ops.so, built by scripts/gpu-build), then compares the CUDA op
(float32 and bfloat16) with the CPU op in float64, forward and every gradient, and times
forward + backward. Run by scripts/gpu-check; by hand (repo root, on the GPU machine):
    python3 tests/ops/chunk_attention_cuda_op_check.py [--out FILE.json] [--ops-library PATH]
        [--time-lengths 8192,32768,65536,131072] [--compare] [--skip-checks]
--compare also times dense causal SDPA and FlexAttention (a block mask of the chunk selection at
64-token granularity) in the same process; every timing row is printed as JSON with its ratios.
--nsa also times fla-core's NSA kernel (fla.ops.nsa.parallel_nsa: compression attention over
mean-pooled 64-token blocks, its top-k blocks per query, attention over them) at the same shape,
block size and k; it needs query heads per KV head a power of 2 >= 16, so use --hq 16 --hkv 1.
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


def timed(step, reps=3):
    """Mean ms of step() over reps after one warm-up."""
    step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e3


def time_case(n, d, results, hq=8, hkv=2, dr=64, s=64, k=8, window=0, compare=False, nsa=False):
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
    def fwd():
        with torch.no_grad():
            torch.ops.reach.chunk_attention(q, kk, v, r, lm, **cfg)
    row = {"timing": f"bf16 fwd+bwd n={n} Hq={hq} Hkv={hkv} d={d} dr={dr} S={s} k={k}",
           "n": n, "ms": timed(step), "fwd_ms": timed(fwd)}
    if PROFILE:
        row["kernels"] = kernel_times(step)
    print(json.dumps(row), flush=True)  # before the peers: a cut run still has reach's time
    if compare:
        row.update(compare_dense(n, d, hq, hkv, q, kk, v, r, lm, go, s, k))
    if nsa:
        row.update(compare_nsa(q, kk, v, go, s, k))
    results.append(row)
    print(json.dumps(row), flush=True)
    del q, kk, v, r, lm, go
    torch.cuda.empty_cache()


FLEX = True  # --no-flex: SDPA only in compare_dense
PROFILE = False  # --profile: reach's fwd+bwd kernel by kernel


def kernel_times(step, reps=3):
    """{kernel name: mean device ms a call of step()} over reps calls, the 12 largest, from
    torch.profiler (what a timing alone cannot say: which of the op's kernels takes the time)."""
    from torch.profiler import ProfilerActivity, profile
    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            step()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        ms = getattr(e, "device_time_total", getattr(e, "cuda_time_total", 0)) / 1e3 / reps
        if ms > 0:
            rows.append((ms, e.key, e.count // reps))
    rows.sort(reverse=True)
    return [{"ms": round(ms, 4), "calls": calls, "kernel": key[:120]} for ms, key, calls in rows[:12]]


def compare_dense(n, d, hq, hkv, q, kk, v, r, lm, go, s, k):
    """Dense causal SDPA (FlashAttention) and FlexAttention with a block mask equivalent to
    chunk selection at 64-token block granularity: each 64-query block reads its own block
    (causal) and the previous one (a local window) plus the top-k chunks of its mean retrieval
    query (chunks fully before the block). Same B, Hq, n, d, bf16, fwd+bwd."""
    import torch.nn.functional as F
    out = {}
    qd = q.detach().clone().requires_grad_()
    kd = kk.detach().repeat_interleave(hq // hkv, dim=1).requires_grad_()
    vd = v.detach().repeat_interleave(hq // hkv, dim=1).requires_grad_()

    def sdpa():
        o = F.scaled_dot_product_attention(qd, kd, vd, is_causal=True)
        o.backward(go)
    try:
        out["sdpa_ms"] = timed(sdpa)
    except RuntimeError as e:  # e.g. out of memory
        out["sdpa_error"] = str(e).splitlines()[0]
    print(json.dumps({"n": n, **out}), flush=True)
    if not FLEX:
        return out
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        blk = 64
        nb = n // blk
        with torch.no_grad():  # block-level selection from the block's mean retrieval query
            rb = r.detach().float()[0, :, :nb * blk].reshape(hkv, nb, blk, -1).mean(2)
            sc = torch.einsum("gbe,gce->gbc", rb, lm.detach().float()[0])  # [Hkv, nb, chunks]
            bi = torch.arange(nb, device=q.device)
            ci = torch.arange(sc.shape[-1], device=q.device)
            # chunk c (tokens c*s .. c*s+s-1) lies before block b: (c+1)*s <= b*blk
            sc = sc.masked_fill((ci[None, :] + 1) * s > bi[:, None] * blk, float("-inf"))
            top = sc.topk(min(k, sc.shape[-1]), dim=-1).indices  # [Hkv, nb, k]
            valid = torch.gather(sc, -1, top) > float("-inf")
            sel = torch.zeros(hkv, nb, sc.shape[-1], dtype=torch.bool, device=q.device)
            sel.scatter_(-1, top, valid)
        group = hq // hkv

        def mask_mod(b, h, qi, ki):
            qb = qi // blk
            local = (ki <= qi) & (ki // blk >= qb - 1)
            chosen = sel[h // group, qb.clamp(max=nb - 1), (ki // s).clamp(max=sel.shape[-1] - 1)]
            return local | chosen
        # _compile: evaluate the mask per block without materialising n x n
        # Flex's kernels tile by 128 here (a 64-token BLOCK_SIZE failed in Inductor on the H200,
        # 2026-12-03: "Q and KV block size must be divisible by BLOCK_M and BLOCK_N"); the mask
        # itself stays the 64-token selection, evaluated per token inside partial blocks.
        bm = create_block_mask(mask_mod, 1, hq, n, n, device=q.device, BLOCK_SIZE=128,
                               _compile=True)
        flex = torch.compile(flex_attention)
        qf = q.detach().clone().requires_grad_()
        kf = kk.detach().clone().requires_grad_()
        vf = v.detach().clone().requires_grad_()

        def flex_step():
            o = flex(qf, kf, vf, block_mask=bm, enable_gqa=True)
            o.backward(go)
        out["flex_ms"] = timed(flex_step)
        out["flex_block_sparsity"] = float(bm.sparsity())
    except Exception as e:  # noqa: BLE001 (report, keep timing the rest)
        out["flex_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return out


def compare_nsa(q, kk, v, go, s, k):
    """fla-core's NSA (parallel_nsa) fwd+bwd on the same q, k, v (its layout [B, T, H, D]):
    block size s, k selected blocks per query, the selection from its compression branch (g_cmp
    given: mean-pooled keys, compressed attention, top-k on the device), no sliding window (its
    window branch needs flash-attn). Gates of ones; bf16."""
    out = {}
    try:
        from fla.ops.nsa import parallel_nsa
    except Exception as e:  # noqa: BLE001 (report, keep the rest)
        return {"nsa_error": f"import: {type(e).__name__}: {e}"[:300]}
    try:
        qn = q.detach().transpose(1, 2).contiguous().requires_grad_()
        kn = kk.detach().transpose(1, 2).contiguous().requires_grad_()
        vn = v.detach().transpose(1, 2).contiguous().requires_grad_()
        gon = go.transpose(1, 2).contiguous()
        gate = torch.ones(qn.shape[:3], device=q.device, dtype=q.dtype, requires_grad=True)

        def nsa_step():
            o = parallel_nsa(qn, kn, vn, g_cmp=gate, g_slc=gate, block_counts=k, block_size=s)
            o.backward(gon)

        def nsa_fwd():
            with torch.no_grad():
                parallel_nsa(qn, kn, vn, g_cmp=gate, g_slc=gate, block_counts=k, block_size=s)
        out["nsa_ms"] = timed(nsa_step)
        out["nsa_fwd_ms"] = timed(nsa_fwd)
    except Exception as e:  # noqa: BLE001
        out["nsa_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--time-lengths", default="16384,65536")
    ap.add_argument("--compare", action="store_true",
                    help="also time dense causal SDPA and a FlexAttention block mask (ratios)")
    ap.add_argument("--skip-checks", action="store_true", help="timing only")
    ap.add_argument("--nsa", action="store_true",
                    help="also time fla-core's NSA kernel (needs --hq / --hkv a power of 2 >= 16)")
    ap.add_argument("--no-flex", action="store_true",
                    help="with --compare: SDPA only (FlexAttention's compile of a large mask can "
                    "take minutes)")
    ap.add_argument("--profile", action="store_true",
                    help="also list reach's fwd+bwd kernel by kernel (torch.profiler)")
    ap.add_argument("--hq", type=int, default=8, help="query heads of the timed cases")
    ap.add_argument("--hkv", type=int, default=2, help="KV heads of the timed cases")
    ap.add_argument("--head-dim", type=int, default=128, help="head_dim of the timed cases")
    ap.add_argument("--ops-library",
                    default=os.path.join(ROOT, "build-gpu", "ops", "libreach_ops.so"))
    a = ap.parse_args()
    global FLEX, PROFILE
    FLEX = not a.no_flex
    PROFILE = a.profile
    load_ops(a.ops_library)
    print(f"GPU {torch.cuda.get_device_name()}", flush=True)
    results = []
    print(f"{'case':40s} {'dtype':9s} {'out':>8s} {'dq':>8s} {'dk':>8s} {'dv':>8s} {'dr':>8s} "
          f"{'dL':>8s}")
    for d in (64, 128) if not a.skip_checks else ():
        check_case(f"gqa_window d={d}", 1, 4, 2, 1000, d, 64,
                   dict(chunk_size=64, top_k=8, window=128), results)
        check_case(f"stick_fraction d={d}", 2, 2, 1, 700, d, 32,
                   dict(chunk_size=32, top_k=6, budget="fraction", fraction=0.3, min_k=2,
                        weighting="stick_breaking"), results)
    for n in [int(x) for x in a.time_lengths.split(",") if x]:
        time_case(n, a.head_dim, results, hq=a.hq, hkv=a.hkv, compare=a.compare, nsa=a.nsa)
    for row in results:
        if "sdpa_ms" in row:
            row["sdpa_over_chunk"] = row["sdpa_ms"] / row["ms"]
        if "flex_ms" in row:
            row["flex_over_chunk"] = row["flex_ms"] / row["ms"]
        if "nsa_ms" in row:
            row["nsa_over_chunk"] = row["nsa_ms"] / row["ms"]
    timings = [r for r in results if "timing" in r]
    if timings:
        print(json.dumps({"timings": timings}, indent=1))
    ok = all(r.get("pass", True) for r in results)
    print("PASS" if ok else "FAIL")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
