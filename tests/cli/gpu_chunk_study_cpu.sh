#!/usr/bin/env bash
# scripts/gpu-chunk-study's CPU-runnable path: every run of the study (passkey: chunk, dense,
# window; needle: chunk, its four ablations, dense, window) trained 2 steps at toy size on the
# CPU (no build), over real filler text (this repository's docs), evaluated in two rounds, and
# the table and JSON written (each run after a one-step warm stage it starts from): a row per
# run, a cell per length, dense's long length skipped with
# its reason, the memory section saying nothing was measured on the CPU.
# Usage: gpu_chunk_study_cpu.sh REACH SOURCE_DIR WORK_DIR
set -euo pipefail
reach=$1 source=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
out=$work/out
cat "$source"/docs/*.md >"$work/filler.txt"
OUT=$out REACH=$reach REACH_STUDY_BUILD=0 REACH_STUDY_DEVICE=cpu REACH_STUDY_PRECISION=fp32 \
  REACH_STUDY_LENGTH=128 REACH_STUDY_STEPS=2 REACH_STUDY_WARMUP=1 REACH_STUDY_BATCH=2 \
  REACH_STUDY_THREADS=1 REACH_STUDY_DENSE_MAX=256 REACH_STUDY_RUNS_DIR=$work/runs \
  REACH_STUDY_TASK_CORPUS=$work/filler.txt REACH_STUDY_TOTAL_S=300 REACH_STUDY_TRAIN_S=120 \
  REACH_STUDY_EVAL_PASSKEY="1:2 4:1" REACH_STUDY_EVAL_NEEDLE="1:2 2:1" \
  REACH_STUDY_MODEL="model.layers=2 model.d_model=32 model.heads=2" \
  REACH_STUDY_SET="task.needles=1 task.queries=1 train.log_every=1" \
  REACH_STUDY_WARM="128:1:train.warmup=1" \
  bash "$source/scripts/gpu-chunk-study" >"$work/log" 2>&1 || { cat "$work/log"; exit 1; }
for f in table.md table.json log.txt; do
  [[ -s $out/$f ]] || { echo "missing $out/$f"; cat "$work/log"; exit 1; }
done
fail() { echo "$1"; cat "$out/table.md"; exit 1; }
# The curriculum (REACH_STUDY_WARM): every run trained its warm stage, then started from it.
for log in "$work"/runs/*/train.log; do
  run=$(dirname "$log")
  grep -q "warm stage (length 128, 1 steps train.warmup=1): rc 0" "$run/warm.log" ||
    fail "no finished warm stage for $run"
  grep -q "starting from the weights of $run-warm" "$log" || fail "$run did not start from its warm stage"
done
[[ $(grep -c '^| .* | 2 | [0-9.]* | finished | [0-9.]*% (2) | [0-9.]*% (1) |$' "$out/table.md") == 9 ]] ||
  fail "expected 9 rows of 2 steps, finished, with a 1x (2 examples) and a longer (1 example) cell"
grep -q '^| dense (RoPE) | 2 | .* | [0-9.]*% (2) | — (not run: dense attention costs O(n^2) time; capped at 256 tokens (REACH_STUDY_DENSE_MAX)) |$' \
  "$out/table.md" || fail "the passkey dense row should skip 4x (512 tokens) with its reason"
grep -q 'ablation: MoBA-style selection' "$out/table.md" || fail "no MoBA row"
grep -q '(none measured' "$out/table.md" || fail "the memory section should say none was measured"
python3 - "$out/table.json" <<'PY' || fail "table.json"
import json, sys
j = json.load(open(sys.argv[1]))
assert len(j["runs"]) == 10, len(j["runs"])
assert {r["name"] for r in j["runs"]} >= {"passkey-chunk", "needle-moba", "needle-no-sparsity"}
assert all(r["steps"] == 2 for r in j["runs"]), [r["steps"] for r in j["runs"]]
assert j["memory"] == []
PY
echo "gpu-chunk-study on the CPU: ok"
