#!/usr/bin/env bash
# Usage: sigterm_test.sh REACH WORKDIR
# SIGTERM (and SIGINT) mid-run: reach saves a checkpoint at the step it reached and exits 130.
set -euo pipefail
reach=$1
work=$2
for signal in TERM INT; do
  rm -rf "$work"
  mkdir -p "$work"
  "$reach" train /dev/null --set run.out_dir="$work" --set model.preset=micro \
    --set data.seq_len=32 --set data.batch=4 --set train.steps=100000 \
    --set train.checkpoint_every=100000 --set train.eval_every=100000 --set train.eval_tokens=64 \
    >"$work/log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    grep -q "step 20/" "$work/log" 2>/dev/null && break
    sleep 0.05
  done
  kill -"$signal" "$pid"
  status=0
  wait "$pid" || status=$?
  if [[ $status -ne 130 ]]; then
    echo "SIG$signal: expected exit 130, got $status" >&2
    cat "$work/log" >&2
    exit 1
  fi
  ckpt=$(ls -d "$work"/checkpoints/step-* 2>/dev/null | tail -n1)
  if [[ -z "$ckpt" || ! -f "$ckpt/model.safetensors" ]]; then
    echo "SIG$signal: no checkpoint written" >&2
    exit 1
  fi
  grep -q "stopped by signal" "$work/log" || { echo "SIG$signal: no stop message" >&2; exit 1; }
done
echo "SIGTERM and SIGINT each saved $(basename "$ckpt")-style checkpoints and exited 130"
