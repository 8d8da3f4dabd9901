#!/usr/bin/env bash
# `reach eval --budget` and `reach tasks eval --budget` on micro checkpoints: the full budget
# reproduces the plain evaluation to the digit, smaller budgets change the numbers and read
# fewer keys, the budget used appears in the table and the JSON.
# Usage: budget_eval_end_to_end.sh REACH WORK_DIR
set -euo pipefail
reach=$1 work=$2
rm -rf "$work"
mkdir -p "$work"
cat >"$work/config.toml" <<'TOML'
[model]
preset = "micro"
attention = "fibonacci"
schedule = "stagger"
window = 4
[data]
seq_len = 64
batch = 4
[train]
steps = 4
warmup = 1
checkpoint_every = 4
eval_every = 1000
eval_tokens = 128
TOML
"$reach" train "$work/config.toml" --set run.out_dir="$work/run" >"$work/train.txt" 2>&1 ||
  { cat "$work/train.txt"; exit 1; }
ev=("$reach" eval "$work/run" --lengths 1x,2x --max-tokens 512 --device cpu)
"${ev[@]}" --json "$work/plain.json" >"$work/plain.md" 2>/dev/null
"${ev[@]}" --budget full --json "$work/full.json" >"$work/full.md" 2>/dev/null
"${ev[@]}" --budget "rungs=1" --json "$work/rungs.json" >"$work/rungs.md" 2>/dev/null
"${ev[@]}" --budget "mass=0.5" --json "$work/mass.json" >"$work/mass.md" 2>/dev/null
nll() { grep '"mean_nll"' "$1"; }
[[ $(nll "$work/plain.json") == $(nll "$work/full.json") ]] ||
  { echo "--budget full differs from the plain evaluation"; paste "$work/plain.md" "$work/full.md"; exit 1; }
[[ $(nll "$work/plain.json") != $(nll "$work/rungs.json") ]] ||
  { echo "--budget rungs=1 did not change the numbers"; cat "$work/rungs.md"; exit 1; }
[[ $(nll "$work/plain.json") != $(nll "$work/mass.json") ]] ||
  { echo "--budget mass=0.5 did not change the numbers"; cat "$work/mass.md"; exit 1; }
grep -q "| budget | at this length | keys/query |" "$work/rungs.md" || { cat "$work/rungs.md"; exit 1; }
grep -q "| rungs=1 | K 1 |" "$work/rungs.md" || { cat "$work/rungs.md"; exit 1; }
grep -q "| mass=0.5 | p 0.5 |" "$work/mass.md" || { cat "$work/mass.md"; exit 1; }
grep -q '"keys_per_query"' "$work/mass.json" || { cat "$work/mass.json"; exit 1; }
# Keys read per query: the full key set > rungs=1 > ... and the mass cut reads fewer than full.
keys() { grep '"keys_per_query"' "$1" | head -1 | tr -dc '0-9.'; }
awk -v f="$(keys "$work/full.json")" -v r="$(keys "$work/rungs.json")" \
  -v m="$(keys "$work/mass.json")" 'BEGIN { exit !(f > r && f > m && m >= 1) }' ||
  { echo "keys per query: full $(keys "$work/full.json"), rungs=1 $(keys "$work/rungs.json"), mass $(keys "$work/mass.json")"; exit 1; }
# The same for a task run.
common=(--set task.num_values=8 --set task.items=4 --set train.length=12 --set train.batch=4
        --set train.steps=2 --set eval.examples=2 --set eval.max_length=48
        --set eval.multipliers=1,2 --set run.threads=1 --set model.attention=fibonacci
        --set model.window=3 --quiet --no-eval)
"$reach" tasks train "${common[@]}" --out "$work/task" >"$work/task.txt" 2>&1 ||
  { cat "$work/task.txt"; exit 1; }
te=("$reach" tasks eval "$work/task" --multipliers 1,4 --examples 8 --device cpu)
"${te[@]}" --json "$work/tplain.json" >/dev/null 2>&1
"${te[@]}" --budget full --json "$work/tfull.json" >"$work/tfull.md" 2>/dev/null
"${te[@]}" --budget "mass=0.3" --json "$work/tmass.json" >"$work/tmass.md" 2>/dev/null
acc() { grep '"accuracy"' "$1"; }
[[ $(acc "$work/tplain.json") == $(acc "$work/tfull.json") ]] ||
  { echo "tasks eval --budget full differs from the plain evaluation"; exit 1; }
grep -q "| budget |" "$work/tfull.md" && grep -q " keys) |" "$work/tfull.md" ||
  { cat "$work/tfull.md"; exit 1; }
grep -q '"rule": "mass=0.3"' "$work/tmass.json" || { cat "$work/tmass.json"; exit 1; }
echo "budget eval end to end: ok"
