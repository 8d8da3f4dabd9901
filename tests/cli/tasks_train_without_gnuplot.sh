#!/usr/bin/env bash
# `reach tasks train` on a machine without gnuplot (the GPU machine has none): the run trains,
# evaluates and writes accuracy.json / accuracy.md, says that the default plot was not drawn,
# and exits 0 (it used to fail the finished run with "cannot run gnuplot").
set -euo pipefail
reach=$(realpath "$1")
config=$(realpath "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
PATH=/nonexistent "$reach" tasks train --config "$config" --set train.device=cpu \
  --set train.steps=1 --set train.batch=4 --set eval.multipliers=1 --set eval.examples=4 \
  --set model.layers=1 --set model.d_model=64 --set model.heads=2 --set model.mlp_hidden=64 \
  --set run.threads=1 --out "$work/run" >"$work/out" 2>&1 || { echo "failed:"; cat "$work/out"; exit 1; }
grep -q "no gnuplot on PATH: accuracy.png not drawn" "$work/out" || { echo "no note:"; cat "$work/out"; exit 1; }
[[ -s $work/run/accuracy.json && -s $work/run/accuracy.md && ! -e $work/run/accuracy.png ]] || {
  echo "reports missing"; ls "$work/run"; exit 1; }
echo "tasks train without gnuplot: ok"
