#!/usr/bin/env bash
# `reach bench inference`: three runs of a micro matrix (dense, Fibonacci stagger, learned) timed
# side by side on the CPU; the table has a row per model plus the learned one frozen, the ratio
# column is 1.000x for the first, the JSON holds one figure per round, and runs that do not
# share shapes, unknown runs and a tokenizer's vocabulary without --vocab are clear errors.
set -euo pipefail
reach=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/matrix.toml" <<TOML
[experiment]
name = "bench-inference-test"
out_dir = "$work/out"
set = ["model.preset=micro", "data.seq_len=64", "data.batch=2", "run.threads=1"]

[[run]]
name = "dense"
set = ["model.attention=dense"]

[[run]]
name = "stagger"
set = ["model.attention=fibonacci", "model.schedule=stagger"]

[[run]]
name = "learned"
set = ["model.attention=fibonacci", "model.schedule=learned"]

[[run]]
name = "tokenized"
set = ["model.attention=dense", "data.tokenizer=$work/some-tokenizer"]

[[run]]
name = "longer"
set = ["model.attention=dense", "data.seq_len=128"]
TOML

"$reach" bench inference "$work/matrix.toml" --only stagger,learned,dense --device cpu \
  --rounds 2 --seconds-per-round 0.05 --json "$work/speed.json" >"$work/table" 2>"$work/log" || {
  echo "bench inference failed:"; cat "$work/log"; exit 1; }
cat "$work/table"
grep -q '^| stagger | [0-9]* | [0-9]* | [0-9]* | 1.000x |$' "$work/table" || { echo "no stagger row at 1.000x"; exit 1; }
grep -q '^| learned (frozen) | ' "$work/table" || { echo "no frozen learned row"; exit 1; }
grep -q '^| dense | ' "$work/table" || { echo "no dense row"; exit 1; }
python3 - "$work/speed.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
assert j["seq_len"] == 64 and j["batch"] == 2 and j["vocab"] == 256 and j["rounds"] == 2, j
names = [m["model"] for m in j["models"]]
assert names == ["stagger", "learned", "learned (frozen)", "dense"], names
for m in j["models"]:
    assert len(m["tokens_per_s"]) == 2 and min(m["tokens_per_s"]) > 0, m
PY

if "$reach" bench inference "$work/matrix.toml" --only dense,longer --device cpu --rounds 1 \
  >"$work/out2" 2>&1; then
  echo "runs with different seq_len were not refused"; exit 1
fi
grep -q "differs from 'dense'" "$work/out2" || { echo "unclear error:"; cat "$work/out2"; exit 1; }
if "$reach" bench inference "$work/matrix.toml" --only nosuch --device cpu >"$work/out3" 2>&1; then
  echo "an unknown run was not refused"; exit 1
fi
grep -q "nosuch" "$work/out3" || { echo "unclear error:"; cat "$work/out3"; exit 1; }
# A run whose vocabulary comes from a tokenizer needs --vocab (no corpus is read here).
if "$reach" bench inference "$work/matrix.toml" --only tokenized --device cpu >"$work/out4" 2>&1; then
  echo "a tokenizer run without --vocab was not refused"; exit 1
fi
grep -q "give --vocab" "$work/out4" || { echo "unclear error:"; cat "$work/out4"; exit 1; }
"$reach" bench inference "$work/matrix.toml" --only tokenized --device cpu --vocab 300 --rounds 1 \
  --seconds-per-round 0.05 2>/dev/null | grep -q '^| tokenized | ' || { echo "--vocab not taken"; exit 1; }
echo "bench inference: ok"
