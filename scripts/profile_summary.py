#!/usr/bin/env python3
"""Per-kernel summary of a Kineto Chrome trace (bench/train_step_profile --trace FILE).

Prints, per traced step: wall span of the GPU work, GPU busy time (the union of kernel, memcpy
and memset intervals), idle time between them (launch gaps: the GPU waiting for the CPU), the
number of kernels, and the kernels grouped by kind and by name, sorted by time.
Usage: python3 scripts/profile_summary.py TRACE.json STEPS [--top 30] [--json OUT]
"""
import argparse
import collections
import json
import re

KINDS = [  # first match wins
    ("matmul (cuBLAS / cutlass)", r"gemm|cutlass|sm90_xmma|nvjet|cublas|splitk"),
    ("attention (reach kernels / flash)", r"dilated|flash|fmha|attention|chunk_"),
    ("layer norm", r"layer_norm|LayerNorm"),
    ("cross-entropy / softmax", r"softmax|nll_loss|cross_entropy|log_softmax"),
    ("optimizer / clip (foreach, fused adamw)", r"multi_tensor|foreach|adam|FusedAdam|norm_kernel|lpnorm"),
    ("embedding", r"embedding|indexSelect|index_select|scatter|sort|radix|segment|krn_partial"),
    ("copies / casts / cat (layout)", r"copy|cat|Cat|bfloat16_copy|direct_copy|transpose|unrolled_elementwise_kernel<at::native::direct"),
    ("reductions (sum, bias grads)", r"reduce_kernel|Reduce"),
    ("GELU", r"gelu|GeluCUDA"),
    ("other element-wise", r"elementwise|vectorized|Mul|Add|Sub|fill|Fill"),
]


def kind_of(name):
    for kind, pattern in KINDS:
        if re.search(pattern, name):
            return kind
    return "other"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("trace")
    p.add_argument("steps", type=int)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--json")
    args = p.parse_args()
    events = json.load(open(args.trace))
    events = events["traceEvents"] if isinstance(events, dict) else events
    gpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in
           ("kernel", "gpu_memcpy", "gpu_memset", "Kernel", "Memcpy", "Memset")]
    launches = [e for e in events if e.get("ph") == "X" and e.get("cat") == "cuda_runtime" and
                re.search(r"LaunchKernel|cudaLaunch|cuLaunch|Memcpy|Memset", e.get("name", ""))]
    if not gpu:
        raise SystemExit("profile_summary: no GPU events in the trace")
    gpu.sort(key=lambda e: e["ts"])
    span = max(e["ts"] + e["dur"] for e in gpu) - gpu[0]["ts"]
    busy, end = 0.0, -1e30
    for e in gpu:  # union of intervals
        s, f = e["ts"], e["ts"] + e["dur"]
        if s > end:
            busy += f - s
            end = f
        elif f > end:
            busy += f - end
            end = f
    n = args.steps
    by_name = collections.defaultdict(lambda: [0.0, 0])
    for e in gpu:
        by_name[e["name"]][0] += e["dur"]
        by_name[e["name"]][1] += 1
    by_kind = collections.defaultdict(lambda: [0.0, 0])
    for name, (t, c) in by_name.items():
        by_kind[kind_of(name)][0] += t
        by_kind[kind_of(name)][1] += c
    total = sum(t for t, _ in by_name.values())
    print(f"per step: GPU span {span / n / 1e3:.2f} ms, busy {busy / n / 1e3:.2f} ms "
          f"({100 * busy / span:.1f}%), idle {(span - busy) / n / 1e3:.2f} ms; "
          f"{len(gpu) / n:.0f} GPU operations, {len(launches) / n:.0f} launches seen on the CPU")
    print(f"\n{'kind':<44} {'ms/step':>8} {'share':>6} {'ops/step':>9}")
    for kind, (t, c) in sorted(by_kind.items(), key=lambda kv: -kv[1][0]):
        print(f"{kind:<44} {t / n / 1e3:8.2f} {100 * t / total:5.1f}% {c / n:9.0f}")
    print(f"\n{'kernel (top ' + str(args.top) + ')':<90} {'ms/step':>8} {'calls':>6}")
    for name, (t, c) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:args.top]:
        short = name if len(name) <= 88 else name[:85] + "..."
        print(f"{short:<90} {t / n / 1e3:8.3f} {c / n:6.0f}")
    if args.json:
        json.dump(dict(steps=n, span_ms=span / n / 1e3, busy_ms=busy / n / 1e3,
                       gpu_ops=len(gpu) / n, launches=len(launches) / n,
                       kinds={k: dict(ms=t / n / 1e3, ops=c / n) for k, (t, c) in by_kind.items()},
                       kernels={k: dict(ms=t / n / 1e3, calls=c / n)
                                for k, (t, c) in by_name.items()}),
                  open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
