#!/usr/bin/env bash
# `reach generate` on a micro checkpoint trained for a few steps: greedy output is identical on
# repeat, seeded sampling too, --stop cuts the text, --max-context and a prompt beyond it fail
# clearly, the timing report and the budget used appear on stderr.
# Usage: generate_end_to_end.sh REACH WORK_DIR
set -euo pipefail
reach=$1 work=$2
rm -rf "$work"
mkdir -p "$work"
cat >"$work/config.toml" <<'TOML'
[model]
preset = "micro"
attention = "fibonacci"
schedule = "stagger"
[data]
seq_len = 32
batch = 4
[train]
steps = 4
warmup = 1
checkpoint_every = 4
eval_every = 1000
eval_tokens = 64
TOML
"$reach" train "$work/config.toml" --set run.out_dir="$work/run" \
  ${REACH_TEST_CORPUS:+--set data.corpus="$REACH_TEST_CORPUS"} >"$work/train.txt" 2>&1 ||
  { cat "$work/train.txt"; exit 1; }
gen=("$reach" generate "$work/run" --max-new-tokens 40)
"${gen[@]}" --prompt "In the beginning" >"$work/a.txt" 2>"$work/a.err"
"${gen[@]}" --prompt "In the beginning" >"$work/b.txt" 2>/dev/null
cmp "$work/a.txt" "$work/b.txt" || { echo "greedy output differs on repeat"; exit 1; }
grep -q "decode: 40 tokens" "$work/a.err" || { cat "$work/a.err"; exit 1; }
grep -q "keys read per query and head" "$work/a.err" || { cat "$work/a.err"; exit 1; }
echo "In the beginning" | "${gen[@]}" --temperature 0.9 --top-k 20 --top-p 0.95 --seed 5 \
  --budget "rungs=log2(n),mass=0.9" >"$work/c.txt" 2>/dev/null
echo "In the beginning" | "${gen[@]}" --temperature 0.9 --top-k 20 --top-p 0.95 --seed 5 \
  --budget "rungs=log2(n),mass=0.9" >"$work/d.txt" 2>/dev/null
cmp "$work/c.txt" "$work/d.txt" || { echo "seeded sampling differs on repeat"; exit 1; }
# A stop string taken from the greedy text: the output is the greedy text cut right before it.
greedy=$(cat "$work/a.txt")
stop=${greedy:9:3}
if [[ $stop =~ ^[[:print:]]+$ ]]; then
  printf 'In the beginning' >"$work/prompt.txt"
  "${gen[@]}" --prompt-file "$work/prompt.txt" --stop "$stop" >"$work/e.txt" 2>"$work/e.err"
  grep -q "stopped by stop string" "$work/e.err" || { cat "$work/e.err"; exit 1; }
  cut=$(cat "$work/e.txt")
  [[ $cut == "${greedy%%"$stop"*}" ]] || { echo "stop: got '$cut' from '$greedy'"; exit 1; }
else
  echo "greedy text has no printable 3-byte stop string at byte 9; stop check skipped"
fi
if "${gen[@]}" --prompt "In the beginning" --max-context 20 >/dev/null 2>"$work/f.err"; then
  echo "a prompt over the context limit was accepted"; exit 1
fi
grep -q "exceed the context limit 20" "$work/f.err" || { cat "$work/f.err"; exit 1; }
if "${gen[@]}" --prompt "In the beginning" --cuda-graph >/dev/null 2>"$work/g.err"; then
  echo "--cuda-graph on the CPU was accepted"; exit 1
fi
grep -q "cuda-graph needs a CUDA device" "$work/g.err" || { cat "$work/g.err"; exit 1; }
# On a machine with a CUDA GPU (and a CUDA build): the same greedy text on the GPU, eager and
# replayed from a CUDA graph (float32: the same kernels), and the graph's steps reported.
if [[ ${REACH_TEST_CUDA:-0} == 1 ]]; then
  "${gen[@]}" --prompt "In the beginning" --device cuda >"$work/h.txt" 2>"$work/h.err" ||
    { cat "$work/h.err"; exit 1; }
  "${gen[@]}" --prompt "In the beginning" --device cuda --cuda-graph >"$work/i.txt" 2>"$work/i.err" ||
    { cat "$work/i.err"; exit 1; }
  cmp "$work/h.txt" "$work/i.txt" || { echo "CUDA graph output differs from eager on the GPU"; exit 1; }
  grep -q "CUDA graph: 38 of 39 decode steps replayed" "$work/i.err" || { cat "$work/i.err"; exit 1; }
  cat "$work/h.err" "$work/i.err"
fi
echo "generate end to end: ok"
