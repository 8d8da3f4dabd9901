#!/usr/bin/env python3
"""The table of scripts/gpu-chunk-study: accuracy per length per run, and GPU memory.

Reads, for each run directory RUNS/NAME (NAME = TASK-VARIANT, e.g. passkey-chunk):
metrics.jsonl (`reach tasks train`), train.rc, train.seconds and train.limit (written by the
script), train.log, and per evaluation group i: eval-i.json (`reach tasks eval --json`),
eval-i.log (its progress lines: what finished when the group was cut by its limit), eval-i.rc,
eval-i.limit and eval-i.lengths (the lengths asked). Writes a Markdown table (accuracy at each
multiple of the training length; a cell says why a length was not measured) and one JSON with
everything, including the peak GPU memory of each forward that reported one (the memory rows:
the chunk models' forwards at 64k, 256k and 1M tokens, no autograd).

Safe to run at any point (every phase of the script rewrites the table): a run or group that has
not happened yet is reported as such.

Usage: chunk_study_table.py RUNS NAME... --markdown OUT.md --json OUT.json [--note TEXT]
       [--dense-max N] [--memory-lengths 65536,262144,1048576]
"""
import argparse
import json
import os
import re

VARIANTS = {
    "chunk": "chunk (CLS encoder, bypass, enforced sparsity)",
    "mean-landmarks": "ablation: mean-pooled landmarks, no CLS encoder",
    "standard-residual": "ablation: standard residual (no bypass)",
    "no-sparsity": "ablation: no enforced sparsity",
    "moba": "ablation: MoBA-style selection",
    "dense": "dense (RoPE)",
    "window": "window only (RoPE)",
}
PROGRESS = re.compile(
    r"^\[tasks\] .*: (\d+)x \((\d+) tokens\) accuracy ([0-9.]+)% \(([0-9.]+)% of answer tokens\) "
    r"on (\d+) examples \(([0-9.]+)s(?:, peak GPU memory ([0-9.]+) MiB)?\)")


def read_text(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def read_int(path):
    try:
        return int(read_text(path))
    except ValueError:
        return None


def last_metrics(path):
    last = None
    try:
        with open(path) as f:
            for line in f:
                try:
                    last = json.loads(line)
                except json.JSONDecodeError:
                    pass  # a line cut short by a kill
    except OSError:
        pass
    return last


def run_summary(runs, name, dense_max):
    d = os.path.join(runs, name)
    task, _, variant = name.partition("-")
    out = {"name": name, "task": task, "variant": variant,
           "label": VARIANTS.get(variant, variant), "results": {}}
    cfg = read_text(os.path.join(d, "config.toml"))
    train = cfg[cfg.find("[train]"):] if "[train]" in cfg else ""
    m = re.search(r"^length = (\d+)", train, re.M)
    out["train_length"] = int(m[1]) if m else None
    last = last_metrics(os.path.join(d, "metrics.jsonl"))
    out["steps"] = last.get("step") if last else 0
    out["final_loss"] = last.get("loss") if last else None
    out["final_batch_accuracy"] = None
    try:
        with open(os.path.join(d, "metrics.jsonl")) as f:
            for line in f:
                try:
                    j = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "batch_accuracy" in j:
                    out["final_batch_accuracy"] = j["batch_accuracy"]
    except OSError:
        pass
    rc = read_int(os.path.join(d, "train.rc"))
    out["train_rc"] = rc
    out["train_seconds"] = read_int(os.path.join(d, "train.seconds"))
    limit = read_int(os.path.join(d, "train.limit"))
    if rc is None:
        out["train_status"] = "not trained (yet)"
    elif rc == 0:
        out["train_status"] = "finished"
    elif rc in (124, 130, 143):
        out["train_status"] = f"cut by the {limit} s limit (weights saved)"
    else:
        err = [l for l in read_text(os.path.join(d, "train.log")).splitlines() if "rror" in l]
        out["train_status"] = f"failed (rc {rc})" + (f": {err[-1][:160]}" if err else "")
    i = 0
    while os.path.exists(os.path.join(d, f"eval-{i}.lengths")):
        lengths = [int(x) for x in read_text(os.path.join(d, f"eval-{i}.lengths")).split(",") if x]
        rc = read_int(os.path.join(d, f"eval-{i}.rc"))
        glimit = read_int(os.path.join(d, f"eval-{i}.limit"))
        got = {}
        try:
            with open(os.path.join(d, f"eval-{i}.json")) as f:
                for run in json.load(f):
                    for r in run["results"]:
                        got[r["multiplier"]] = r
        except (OSError, json.JSONDecodeError, KeyError):
            for line in read_text(os.path.join(d, f"eval-{i}.log")).splitlines():
                p = PROGRESS.match(line)
                if p:
                    r = {"multiplier": int(p[1]), "length": int(p[2]), "accuracy": float(p[3]) / 100,
                         "token_accuracy": float(p[4]) / 100, "examples": int(p[5]),
                         "seconds": float(p[6])}
                    if p[7]:
                        r["peak_gpu_mib"] = float(p[7])
                    got[r["multiplier"]] = r
        for mult in lengths:
            r = got.get(mult)
            if r is None:
                if rc is None:
                    r = {"multiplier": mult, "skipped": "not evaluated (yet)"}
                elif rc in (124, 137, 143):
                    r = {"multiplier": mult, "skipped": f"not finished within the group's {glimit} s"}
                else:
                    err = [l for l in read_text(os.path.join(d, f"eval-{i}.log")).splitlines()
                           if "rror" in l or "out of memory" in l]
                    r = {"multiplier": mult,
                         "skipped": f"failed (rc {rc})" + (f": {err[-1][:160]}" if err else "")}
            elif r.get("skipped", "").startswith("longer than eval.max_length") and variant == "dense":
                r = dict(r, skipped=f"not run: dense attention costs O(n^2) time; capped at "
                                    f"{dense_max} tokens (REACH_STUDY_DENSE_MAX)")
            out["results"][mult] = r
        i += 1
    return out


def cell(r):
    if r is None:
        return "—"
    if r.get("skipped"):
        return "— (" + r["skipped"] + ")"
    return f"{100 * r['accuracy']:.1f}% ({r['examples']})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("names", nargs="+")
    ap.add_argument("--markdown", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--note", default="")
    ap.add_argument("--dense-max", type=int, default=65536)
    ap.add_argument("--memory-lengths", default="65536,262144,1048576")
    a = ap.parse_args()
    rows = [run_summary(a.runs, n, a.dense_max) for n in a.names]
    memory_lengths = [int(x) for x in a.memory_lengths.split(",")]
    memory = []
    for r in rows:
        for res in r["results"].values():
            if res.get("peak_gpu_mib") is not None and res.get("length") in memory_lengths:
                memory.append({"run": r["name"], "length": res["length"],
                               "peak_gpu_mib": res["peak_gpu_mib"], "seconds": res.get("seconds")})
    memory.sort(key=lambda m: (m["run"], m["length"]))
    md = []
    for task in dict.fromkeys(r["task"] for r in rows):
        trs = [r for r in rows if r["task"] == task]
        mults = sorted({m for r in trs for m in r["results"]})
        length = next((r["train_length"] for r in trs if r["train_length"]), None)
        md.append(f"### {task} (trained at {length} tokens; cells: accuracy (examples))\n")
        md.append("| model | steps | final loss | training | " +
                  " | ".join(f"{m}x ({m * length:,})" if length else f"{m}x" for m in mults) + " |")
        md.append("|---|---:|---:|---|" + "---:|" * len(mults))
        for r in trs:
            loss = f"{r['final_loss']:.4f}" if r["final_loss"] is not None else "—"
            md.append(f"| {r['label']} | {r['steps']} | {loss} | {r['train_status']} | " +
                      " | ".join(cell(r["results"].get(m)) for m in mults) + " |")
        md.append("")
    md.append("### Peak GPU memory of one forward (batch 1, inference, no autograd)\n")
    if memory:
        md.append("| run | tokens | peak MiB beyond the weights | MiB per 1k tokens | seconds |")
        md.append("|---|---:|---:|---:|---:|")
        for m in memory:
            md.append(f"| {m['run']} | {m['length']:,} | {m['peak_gpu_mib']:.1f} | "
                      f"{1024 * m['peak_gpu_mib'] / m['length']:.3f} | {m['seconds'] or 0:.1f} |")
    else:
        md.append("(none measured: the forwards at " + ", ".join(f"{l:,}" for l in memory_lengths) +
                  " tokens have not run on a CUDA device)")
    if a.note:
        md += ["", a.note]
    text = "\n".join(md) + "\n"
    for path, body in ((a.markdown, text),
                       (a.json, json.dumps({"runs": rows, "memory": memory, "note": a.note},
                                           indent=2) + "\n")):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(body)
        os.replace(tmp, path)


if __name__ == "__main__":
    main()
