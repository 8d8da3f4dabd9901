#!/usr/bin/env python3
"""Per-kernel summary of a Kineto Chrome trace (bench/train_step_profile --trace FILE).

Prints, per traced step: wall span of the GPU work, GPU busy time (the union of kernel, memcpy
and memset intervals), idle time between them (launch gaps: the GPU waiting for the CPU), the
number of kernels, and the kernels grouped by kind and by name, sorted by time; under each kernel
the CPU operators (aten::add_, reach::...) that launched it, found through the launch's
correlation id and the innermost CPU op around the launch, so a kernel such as a non-vectorised
element-wise one is traced to its op.
Usage: python3 scripts/profile_summary.py TRACE.json STEPS [--top 30] [--json OUT]
"""
import argparse
import bisect
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
    launched_by = launching_ops(events, launches)
    ops_of = collections.defaultdict(collections.Counter)
    for e in gpu:
        op = launched_by.get((e.get("args") or {}).get("correlation"))
        if op:
            ops_of[e["name"]][op] += 1
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
    print(f"\n{'kernel (top ' + str(args.top) + ')':<120} {'ms/step':>8} {'calls':>6}")
    for name, (t, c) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:args.top]:
        short = name if len(name) <= 120 else name[:117] + "..."
        print(f"{short:<120} {t / n / 1e3:8.3f} {c / n:6.0f}")
        if ops_of[name]:
            via = ", ".join(f"{op} x{k / n:g}" for op, k in ops_of[name].most_common(3))
            print(f"    <- {via}")
    if args.json:
        json.dump(dict(steps=n, span_ms=span / n / 1e3, busy_ms=busy / n / 1e3,
                       gpu_ops=len(gpu) / n, launches=len(launches) / n,
                       kinds={k: dict(ms=t / n / 1e3, ops=c / n) for k, (t, c) in by_kind.items()},
                       kernels={k: dict(ms=t / n / 1e3, calls=c / n)
                                for k, (t, c) in by_name.items()}),
                  open(args.json, "w"), indent=1)


def launching_ops(events, launches):
    """correlation id -> name of the innermost CPU op (cat cpu_op) around its launch."""
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") == "cpu_op":
            by_thread[(e.get("pid"), e.get("tid"))].append(e)
    starts = {}
    for key, ops in by_thread.items():
        ops.sort(key=lambda e: e["ts"])
        starts[key] = [e["ts"] for e in ops]
    result = {}
    for launch in launches:
        key = (launch.get("pid"), launch.get("tid"))
        correlation = (launch.get("args") or {}).get("correlation")
        if key not in by_thread or correlation is None:
            continue
        ops, t = by_thread[key], launch["ts"]
        # Nested ops: the latest-starting op that still contains t is the innermost one; the
        # others that contain t enclose it. Named as "innermost < autograd node" when an
        # autograd engine node (evaluate_function: XBackward) encloses it, so a kernel of the
        # backward names the forward op it differentiates.
        chain, innermost = [], None
        for i in range(bisect.bisect_right(starts[key], t) - 1, max(-1, bisect.bisect_right(
                starts[key], t) - 5000), -1):
            if ops[i]["ts"] + ops[i]["dur"] >= t:
                chain.append(ops[i]["name"])
                innermost = innermost or ops[i]
        if chain:
            node = next((c for c in chain[1:] if "evaluate_function" in c), None)
            name = chain[0]
            if node:
                name += " < " + node.replace("autograd::engine::evaluate_function: ", "")
            # Shapes and types when the trace recorded them (report_input_shapes).
            a = innermost.get("args") or {}
            if a.get("Input Dims"):
                name += f" dims {a['Input Dims']} types {a.get('Input type', '')}"
                if a.get("Input Strides"):
                    name += f" strides {a['Input Strides']}"
            result[correlation] = name
    return result


if __name__ == "__main__":
    main()
