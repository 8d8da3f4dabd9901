#!/usr/bin/env bash
# `reach tasks train` then `reach tasks eval` on two toy runs: every report file appears,
# the table has a row per run and a column per multiplier, skipped lengths show as "—".
# Usage: tasks_end_to_end.sh REACH WORK_DIR
set -euo pipefail
reach=$1 work=$2
rm -rf "$work"
common=(--set task.num_values=8 --set task.items=4 --set train.length=12 --set train.batch=4
        --set train.steps=2 --set eval.examples=2 --set eval.max_length=48
        --set eval.multipliers=1,2,8 --set run.threads=1 --quiet)
"$reach" tasks train "${common[@]}" --out "$work/a" --set model.normalizer=asentmax \
  --set model.positions=nape >"$work.a.txt" 2>&1 || { cat "$work.a.txt"; exit 1; }
for f in config.toml model.safetensors metrics.jsonl accuracy.json accuracy.md accuracy.png; do
  [[ -s $work/a/$f ]] || { echo "missing $work/a/$f"; exit 1; }
done
"$reach" tasks train "${common[@]}" --out "$work/b" --no-eval >/dev/null 2>&1
[[ ! -e $work/b/accuracy.json ]] || { echo "--no-eval still evaluated"; exit 1; }
"$reach" tasks eval "$work/a" "$work/b" --multipliers 1,4 --examples 3 \
  --json "$work/all.json" --markdown "$work/all.md" --png "$work/all.png" >"$work.eval.txt" 2>&1 ||
  { cat "$work.eval.txt"; exit 1; }
grep -q "asentmax + nape (fibonacci-stagger)" "$work/all.md" || { cat "$work/all.md"; exit 1; }
[[ $(grep -c "^| .* (fibonacci-stagger) |" "$work/all.md") == 2 ]] || { cat "$work/all.md"; exit 1; }
grep -q "| 1x | 4x |" "$work/all.md" || { cat "$work/all.md"; exit 1; }
grep -q '"examples": 3' "$work/all.json" || { cat "$work/all.json"; exit 1; }
[[ -s $work/all.png ]] || { echo "no plot"; exit 1; }
echo "tasks end to end: ok"
