#!/usr/bin/env bash
# `reach experiment` resumes after a kill -9 without redoing finished runs: a two-run matrix of
# micro models; kill -9 while the second run trains (after its first checkpoint); rerun: the
# first run is skipped (its result.json unchanged), the second resumes from its checkpoint, and
# the table has both runs.
set -euo pipefail
reach=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/matrix.toml" <<TOML
[experiment]
name = "resume-test"
out_dir = "$work/out"
set = ["model.preset=micro", "data.seq_len=32", "data.batch=4", "train.warmup=2",
       "train.log_every=10", "train.eval_every=1000", "train.eval_tokens=64",
       "run.threads=1"]
multipliers = [1, 2]
max_tokens = 256

[[run]]
name = "first"
set = ["model.attention=fibonacci", "model.schedule=learned", "train.steps=20",
       "train.checkpoint_every=20"]

[[run]]
name = "second"
set = ["model.attention=fibonacci", "train.steps=100000", "train.checkpoint_every=25"]
TOML

"$reach" experiment "$work/matrix.toml" --quiet --no-png >"$work/log1" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  if compgen -G "$work/out/second-seed1/checkpoints/step-*" >/dev/null; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then echo "experiment ended early:"; cat "$work/log1"; exit 1; fi
  sleep 0.2
done
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
[[ -f "$work/out/first-seed1/result.json" ]] || { echo "first run did not finish"; exit 1; }
[[ ! -f "$work/out/second-seed1/result.json" ]] || { echo "second run finished too soon"; exit 1; }
before=$(sha256sum "$work/out/first-seed1/result.json")

# Shorter now, so the resumed run ends soon; the override changes train.steps only, which
# resume allows, but the finished run's stored config must then still match: keep it per run.
sed -i 's/train.steps=100000/train.steps=1000/' "$work/matrix.toml"
"$reach" experiment "$work/matrix.toml" --quiet --no-png >"$work/log2" 2>&1 || {
  echo "rerun failed:"; cat "$work/log2"; exit 1; }
grep -q "first seed 1: finished earlier, skipped" "$work/log2" || {
  echo "first run not skipped:"; cat "$work/log2"; exit 1; }
grep -q "second seed 1: resuming" "$work/log2" || { echo "second run not resumed:"; cat "$work/log2"; exit 1; }
[[ "$(sha256sum "$work/out/first-seed1/result.json")" == "$before" ]] || {
  echo "first run's result changed"; exit 1; }
grep -q '| second | 1 |' "$work/out/results.md" || { echo "table lacks the second run"; cat "$work/out/results.md"; exit 1; }
grep -q '| first | 1 |' "$work/out/results.md"
# Inference speed: timed for every run, the learned schedule also frozen to integer offsets.
grep -q 'inference tokens/s |' "$work/out/results.md" || { echo "no inference column"; cat "$work/out/results.md"; exit 1; }
python3 - "$work/out/results.json" <<'PY'
import json, sys
runs = {r["name"]: r["seeds"][0] for r in json.load(open(sys.argv[1]))["runs"]}
assert runs["first"]["inference_tokens_per_s"] > 0, runs["first"]
assert runs["first"]["frozen_inference_tokens_per_s"] > 0, runs["first"]
assert runs["second"]["inference_tokens_per_s"] > 0, runs["second"]
assert runs["second"]["frozen_inference_tokens_per_s"] == 0, runs["second"]
assert runs["first"]["device"] == "cpu", runs["first"]
PY
# --only runs a part of the matrix and tabulates that part alone; --table-only trains nothing
# and tabulates every finished run; an unknown run name is an error listing the matrix's runs.
"$reach" experiment "$work/matrix.toml" --quiet --no-png --only second >"$work/log_only" 2>&1 || {
  cat "$work/log_only"; exit 1; }
grep -q '| second | 1 |' "$work/out/results.md" && ! grep -q '| first |' "$work/out/results.md" || {
  echo "--only second tabulated other runs:"; cat "$work/out/results.md"; exit 1; }
"$reach" experiment "$work/matrix.toml" --no-png --table-only >"$work/log_table" 2>&1 || {
  cat "$work/log_table"; exit 1; }
grep -q '| first | 1 |' "$work/out/results.md" && grep -q '| second | 1 |' "$work/out/results.md" || {
  echo "--table-only lacks a finished run:"; cat "$work/out/results.md"; exit 1; }
if "$reach" experiment "$work/matrix.toml" --no-png --only third >"$work/log_bad" 2>&1; then
  echo "an unknown run name was accepted"; exit 1
fi
grep -q "no run named 'third' in 'resume-test' (its runs: first, second)" "$work/log_bad" || {
  cat "$work/log_bad"; exit 1; }
# A matrix changed under a finished run is an error naming the run, not a silent mix.
sed -i 's/train.checkpoint_every=20"/train.checkpoint_every=20", "train.lr=0.002"/' "$work/matrix.toml"
if "$reach" experiment "$work/matrix.toml" --quiet --no-png >"$work/log3" 2>&1; then
  echo "a changed finished run was accepted"; exit 1
fi
grep -q "run 'first' seed 1 finished with a different configuration" "$work/log3" || {
  cat "$work/log3"; exit 1; }
echo "experiment resume: ok"
