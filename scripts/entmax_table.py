#!/usr/bin/env python3
"""Seed 003's associative-recall table from the runs scripts/gpu-entmax-table trained.

Reads, for each variant directory RUNS/NAME: metrics.jsonl (`reach tasks train`), train.rc and
train.seconds (written by the script), and eval-*.json (`reach tasks eval --json`, one file per
group of lengths). Writes a Markdown table (accuracy at each multiple of the longest training
length, with the paper's figures beside it), one JSON with everything, and the runs' training
metrics merged into one JSON-lines file (a "variant" field per line).

The paper's figures are the ones ../shared/ANCHORS.md quotes (accuracy at 64x / 256x / 1024x:
softmax 97.8 / 80.2 / 3.0, ASEntmax 99.6 / 99.0 / 95.3); ANCHORS.md does not say which
positions its softmax row uses, nor give the other variants, so the table says so.

Usage: entmax_table.py RUNS VARIANT... --markdown OUT.md --json OUT.json [--metrics OUT.jsonl]
"""
import argparse
import glob
import json
import os
import sys

PAPER = {  # ANCHORS.md, seed 003: MQMTAR accuracy (%) at these multiples of the training length
    "softmax": {64: 97.8, 256: 80.2, 1024: 3.0},
    "asentmax": {64: 99.6, 256: 99.0, 1024: 95.3},
}
LABELS = {
    "softmax-rope": "softmax + RoPE",
    "softmax-nape": "softmax + NAPE",
    "ssmax-nape": "SSMax + NAPE",
    "entmax-nape": "entmax-1.5 + NAPE",
    "asentmax-nape": "ASEntmax-1.5 (per query) + NAPE",
}


def read_lines(path):
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut short by a kill
    return out


def read_text(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def variant_summary(runs, name):
    d = os.path.join(runs, name)
    metrics = read_lines(os.path.join(d, "metrics.jsonl"))
    logged = [m for m in metrics if "batch_accuracy" in m]
    results = {}
    config = {}
    for path in sorted(glob.glob(os.path.join(d, "eval-*.json"))):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError):
            continue
        for run in data:
            config = {k: run.get(k) for k in ("task", "train_length", "train_min_length",
                                               "train_steps", "model")}
            for r in run.get("results", []):
                if r.get("examples", 0) > 0 and not r.get("skipped"):
                    results[int(r["multiplier"])] = r
    rc = read_text(os.path.join(d, "train.rc"), "missing")
    return {
        "variant": name,
        "label": LABELS.get(name, name),
        "train_rc": rc,
        "train_seconds": float(read_text(os.path.join(d, "train.seconds"), "nan")),
        "steps_done": metrics[-1]["step"] if metrics else 0,
        "final_loss": metrics[-1]["loss"] if metrics else None,
        "final_batch_accuracy": logged[-1]["batch_accuracy"] if logged else None,
        "tokens_per_s": metrics[-1].get("tokens_per_s") if metrics else None,
        "config": config,
        "results": results,
        "metrics": metrics,
    }


def paper_cells(name, multipliers):
    normalizer = name.split("-")[0]
    figures = PAPER.get(normalizer)
    if figures is None:
        return "not in ANCHORS.md"
    mark = " (positions not stated)" if normalizer == "softmax" else ""
    return " / ".join(f"{figures[m]:.1f}" for m in (64, 256, 1024)) + mark


def markdown(summaries, multipliers):
    head = "| model | steps | final loss | train acc. |"
    rule = "|---|---:|---:|---:|"
    for m in multipliers:
        head += f" {m}x |"
        rule += "---:|"
    head += " paper 64x / 256x / 1024x |"
    rule += "---|"
    lines = [head, rule]
    for s in summaries:
        stopped = ""
        if s["train_rc"] not in ("0", "missing"):
            stopped = " (stopped: time limit)" if s["train_rc"] in ("124", "130") else \
                f" (rc {s['train_rc']})"
        loss = f"{s['final_loss']:.4f}" if s["final_loss"] is not None else "—"
        acc = f"{100 * s['final_batch_accuracy']:.1f}%" if s["final_batch_accuracy"] is not None \
            else "—"
        row = f"| {s['label']} | {s['steps_done']}{stopped} | {loss} | {acc} |"
        for m in multipliers:
            r = s["results"].get(m)
            row += f" {100 * r['accuracy']:.1f}% ({r['examples']}) |" if r else " — |"
        row += f" {paper_cells(s['variant'], multipliers)} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def token_markdown(summaries, multipliers):
    head = "| model |" + "".join(f" {m}x |" for m in multipliers)
    rule = "|---|" + "---:|" * len(multipliers)
    lines = [head, rule]
    for s in summaries:
        row = f"| {s['label']} |"
        for m in multipliers:
            r = s["results"].get(m)
            row += f" {100 * r['token_accuracy']:.1f}% |" if r and "token_accuracy" in r else " — |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("variants", nargs="+")
    ap.add_argument("--markdown", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--metrics", default=None)
    ap.add_argument("--note", default="", help="a line printed under the table")
    args = ap.parse_args()
    summaries = [variant_summary(args.runs, v) for v in args.variants]
    multipliers = sorted({m for s in summaries for m in s["results"]})
    table = markdown(summaries, multipliers)
    example = next((s["config"] for s in summaries if s["config"]), {})
    text = ["# Seed 003: multi-query multi-token associative recall", ""]
    if example:
        lo, hi = example.get("train_min_length"), example.get("train_length")
        model = example.get("model", {})
        text.append(
            f"Trained at context lengths {lo}..{hi} (accuracy at multiples of {hi}: "
            f"1x = {hi} tokens of context), {model.get('layers')} layers, d {model.get('d_model')},"
            f" {model.get('heads')} heads, dense causal attention. A cell is exact-match accuracy"
            " (all 4 values right) with the number of examples in brackets; \"train acc.\" is the"
            " last logged training batch's.")
        text.append("")
    text.append(table)
    text += ["Answer tokens right, each on its own (the 13 predictions after sep: 4 x (qsep, two "
             "value tokens) and eos; partial learning shows here before it shows in exact "
             "match):", "", token_markdown(summaries, multipliers)]
    if args.note:
        text += [args.note, ""]
    text.append("Paper column: ../shared/ANCHORS.md (seed 003, MQMTAR; its softmax row does not "
                "say which positions, and it gives no SSMax or entmax figures).")
    with open(args.markdown, "w") as f:
        f.write("\n".join(text) + "\n")
    with open(args.json, "w") as f:
        json.dump([{k: v for k, v in s.items() if k != "metrics"} for s in summaries], f,
                  indent=1)
    if args.metrics:
        with open(args.metrics, "w") as f:
            for s in summaries:
                for m in s["metrics"]:
                    f.write(json.dumps({"variant": s["variant"], **m}) + "\n")
    sys.stdout.write(table)


if __name__ == "__main__":
    main()
