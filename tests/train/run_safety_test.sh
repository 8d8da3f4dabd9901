#!/usr/bin/env bash
# Usage: run_safety_test.sh REACH WORKDIR CASE
# Runs that cannot be lost or mixed: each CASE trains micro models for a few steps and checks
# that reach refuses, locks, falls back or stops as it must (see the cases below).
set -euo pipefail
reach=$1
work=$2
case=$3
rm -rf "$work"
mkdir -p "$work"
run=$work/run
common=(--set model.preset=micro --set data.seq_len=32 --set data.batch=4 --set train.warmup=2
        --set train.eval_every=1000 --set train.eval_tokens=64 --set run.threads=1)
train() { "$reach" train /dev/null --set run.out_dir="$run" "${common[@]}" "$@"; }
fail() { echo "FAIL ($case): $*" >&2; exit 1; }
# expect TEXT COMMAND...: COMMAND fails (no crash) and prints TEXT.
expect() {
  local text=$1 status=0
  shift
  "$@" >"$work/out" 2>&1 || status=$?
  ((status != 0)) || fail "expected an error, got exit 0: $*"
  ((status < 128)) || fail "crashed with signal $((status - 128)): $*"
  grep -qF -- "$text" "$work/out" || { cat "$work/out" >&2; fail "expected '$text'"; }
}
losses() { python3 -c 'import json,sys; print([(j["step"], j["loss"]) for j in map(json.loads, open(sys.argv[1]))])' "$1"; }

case $case in
  resume_refuses_changed_keys)
    train --set train.steps=4 --set train.checkpoint_every=2 >/dev/null 2>&1
    expect "config key 'model.layers'" train --set train.steps=6 --resume --set model.layers=1
    expect "config key 'data.seq_len'" train --set train.steps=6 --resume --set data.seq_len=16
    expect "config key 'data.corpus'" train --set train.steps=6 --resume --set data.corpus="$work"
    expect "config key 'run.seed'" train --set train.steps=6 --resume --set run.seed=7
    expect "config key 'data.batch'" train --set train.steps=6 --resume --set data.batch=2
    # Nothing was written by the refused resumes; keys listed as mutable may change.
    [[ ! -d $run/checkpoints/step-00000006 ]] || fail "a refused resume trained"
    train --set train.steps=6 --resume --set train.log_every=3 --set train.checkpoint_every=3 \
      >/dev/null 2>&1 || fail "resume with only mutable keys changed was refused"
    [[ -d $run/checkpoints/step-00000006 ]] || fail "resume did not train to step 6"
    # (Not `--help | grep -q`: under pipefail grep's early exit can make reach's last write fail.)
    help=$("$reach" train --help) || fail "reach train --help failed"
    grep -q "train.steps" <<<"$help" || fail "--help does not list the mutable keys"
    grep -q "train.cuda_graph" <<<"$help" || fail "--help does not list train.cuda_graph"
    ;;
  existing_run_is_refused)
    train --set train.steps=4 --set train.checkpoint_every=2 >/dev/null 2>&1
    before=$(losses "$run/metrics.jsonl")
    expect "already holds a run" train --set train.steps=3
    [[ $(losses "$run/metrics.jsonl") == "$before" ]] || fail "the refused run touched metrics"
    expect "exclude" train --set train.steps=3 --resume --overwrite
    train --set train.steps=3 --overwrite >/dev/null 2>&1 || fail "--overwrite failed"
    [[ ! -d $run/checkpoints/step-00000004 ]] || fail "--overwrite kept an old checkpoint"
    [[ -d $run/checkpoints/step-00000003 ]] || fail "--overwrite did not train"
    [[ $(wc -l <"$run/metrics.jsonl") == 3 ]] || fail "metrics.jsonl mixes runs"
    ;;
  concurrent_training_is_locked)
    # reach itself in the background (not the shell function: a TERM to the function's
    # subshell would leave the training running).
    "$reach" train /dev/null --set run.out_dir="$run" "${common[@]}" --set train.steps=100000 \
      --set train.checkpoint_every=100000 >"$work/first" 2>&1 &
    pid=$!
    trap 'kill "$pid" 2>/dev/null || true' EXIT  # never left running, also when a check fails
    for _ in $(seq 1 600); do
      grep -q "step 10/" "$work/first" 2>/dev/null && break
      sleep 0.05
    done
    status=0
    train --set train.steps=5 --resume >"$work/out" 2>&1 || status=$?
    kill -TERM "$pid"
    wait "$pid" || true
    ((status != 0)) || fail "a second training of the same directory ran"
    grep -q "is in use by another training (pid [0-9]*)" "$work/out" ||
      { cat "$work/out"; fail "no lock error"; }
    ;;
  resume_needs_a_checkpoint)
    expect "holds no checkpoint to resume from" train --set train.steps=4 --resume
    [[ ! -s $run/metrics.jsonl ]] || fail "a resume without checkpoint trained"
    ;;
  resume_falls_back_to_the_newest_valid)
    train --set train.steps=8 --set train.checkpoint_every=2 --set run.out_dir="$work/straight" \
      >/dev/null 2>&1
    train --set train.steps=8 --set train.checkpoint_every=2 --set train.keep_checkpoints=4 \
      >/dev/null 2>&1
    rm -r "$run/checkpoints/step-00000008"
    printf 'garbage' >"$run/checkpoints/step-00000006/model.safetensors"
    mkdir -p "$run/checkpoints/step-00000099" "$run/checkpoints/.tmp-step-00000008"
    printf 'half' >"$run/checkpoints/.tmp-step-00000008/model.safetensors"
    train --set train.steps=8 --set train.checkpoint_every=2 --resume >"$work/out" 2>&1 ||
      { cat "$work/out"; fail "resume with an older valid checkpoint failed"; }
    grep -q "skipping checkpoint .*step-00000099" "$work/out" || fail "no note of the stray dir"
    grep -q "skipping checkpoint .*step-00000006" "$work/out" || fail "no note of the corrupt one"
    grep -q "resuming from the newest valid checkpoint, .*step-00000004" "$work/out" ||
      { cat "$work/out"; fail "did not say which checkpoint it resumed"; }
    grep -q "removed .*\.tmp-step-00000008" "$work/out" || fail "no note of the partial write"
    [[ ! -e $run/checkpoints/.tmp-step-00000008 ]] || fail "the partial write was left"
    [[ ! -e $run/checkpoints/step-00000099 ]] || fail "the stray directory was left"
    [[ $(losses "$run/metrics.jsonl") == "$(losses "$work/straight/metrics.jsonl")" ]] ||
      fail "the resumed loss curve differs from the uninterrupted one"
    ;;
  divergence_stops_training)
    expect "training diverged at step" train --set train.steps=20 --set train.checkpoint_every=1 \
      --set train.lr=1000 --set train.min_lr=0 --set train.warmup=0 --set train.grad_clip=1e9
    grep -q "the last good checkpoint is" "$work/out" || { cat "$work/out"; fail "no checkpoint named"; }
    ckpt=$(sed -n 's/.*the last good checkpoint is \([^ ]*\).*/\1/p' "$work/out")
    [[ -s $ckpt/model.safetensors ]] || fail "the last good checkpoint $ckpt is not there"
    newest=$(ls -d "$run"/checkpoints/step-* | tail -n1)
    [[ $newest == "$ckpt" ]] || fail "a checkpoint after the last good one was written: $newest"
    ;;
  retention_keeps_the_newest)
    train --set train.steps=6 --set train.checkpoint_every=1 --set train.keep_checkpoints=2 \
      >/dev/null 2>&1
    [[ $(ls "$run/checkpoints") == $'step-00000005\nstep-00000006' ]] ||
      fail "kept: $(ls "$run/checkpoints" | tr '\n' ' ')"
    touch "$run/checkpoints/step-00000005/keep"
    train --set train.steps=9 --set train.checkpoint_every=1 --set train.keep_checkpoints=2 \
      --resume >/dev/null 2>&1
    [[ $(ls "$run/checkpoints") == $'step-00000005\nstep-00000008\nstep-00000009' ]] ||
      fail "kept: $(ls "$run/checkpoints" | tr '\n' ' ')"
    ;;
  eval_names_the_checkpoint_it_loads)
    train --set train.steps=4 --set train.checkpoint_every=2 >/dev/null 2>&1
    printf 'garbage' >"$run/checkpoints/step-00000004/model.safetensors"
    "$reach" eval "$run" --lengths 1x >"$work/out" 2>&1 ||
      { cat "$work/out"; fail "eval of a run with an older valid checkpoint failed"; }
    grep -q "skipping checkpoint .*step-00000004" "$work/out" || fail "no note of the corrupt one"
    grep -q "checkpoint .*step-00000002 (step 2" "$work/out" ||
      { cat "$work/out"; fail "eval did not name the checkpoint it loaded"; }
    "$reach" info "$run" >"$work/out" 2>&1 || { cat "$work/out"; fail "info fell over"; }
    grep -q "skipping checkpoint .*step-00000004" "$work/out" || fail "info: no note"
    ;;
  tasks_quiet_is_quiet)
    "$reach" tasks train --set task.num_values=8 --set task.items=4 --set train.length=12 \
      --set train.batch=4 --set train.steps=2 --set eval.examples=2 --set eval.max_length=48 \
      --set eval.multipliers=1,2 --set run.threads=1 --quiet --out "$run" >"$work/stdout" \
      2>"$work/stderr"
    [[ ! -s $work/stderr ]] || { cat "$work/stderr"; fail "--quiet printed to stderr"; }
    grep -q "| 1x | 2x |" "$work/stdout" || fail "no table on stdout"
    ;;
  *)
    fail "unknown case"
    ;;
esac
echo "$case: ok"
