#!/usr/bin/env bash
# Usage: kill_resume_soak_test.sh REACH WORKDIR [SECONDS]
# Kill-and-resume soak (label "long"): a micro run checkpointing every step (so kills land in
# checkpoint writes and in the removal of old checkpoints, keep_checkpoints = 2) is killed with
# SIGKILL at random points and resumed, again and again, until it completes; rounds of that
# repeat for SECONDS (default 180; the round running then is finished unkilled). After every
# kill every step-* checkpoint must load and the
# newest must not be older than one seen before (no lost step); each completed round's loss
# curve must equal an uninterrupted run's, bit for bit.
set -euo pipefail
reach=$1
work=$2
budget=${3:-180}
rm -rf "$work"
mkdir -p "$work"
steps=30
common=(--set model.preset=micro --set model.attention=fibonacci --set model.schedule=stagger
        --set data.seq_len=32 --set data.batch=4 --set train.steps=$steps --set train.warmup=5
        --set train.checkpoint_every=1 --set train.keep_checkpoints=2 --set train.eval_every=100000
        --set train.eval_tokens=64 --set run.threads=1)
"$reach" train /dev/null --set run.out_dir="$work/straight" "${common[@]}" --quiet >/dev/null
run=$work/killed
newest_step() {
  local newest
  newest=$(ls -d "$run"/checkpoints/step-* 2>/dev/null | tail -n1 || true)
  if [[ -n $newest ]]; then echo $((10#${newest##*step-})); else echo 0; fi
}
RANDOM=12345
rounds=0 runs=0 kills=0
start=$SECONDS
while ((SECONDS - start < budget)); do
  rm -rf "$run"
  newest_seen=0
  while ((newest_seen < steps)); do
    mode=(--overwrite)
    ((newest_seen == 0)) || mode=(--resume)
    "$reach" train /dev/null --set run.out_dir="$run" "${common[@]}" --quiet "${mode[@]}" \
      >"$work/log" 2>&1 &
    pid=$!
    runs=$((runs + 1))
    # Kill point: once 0 to 2 more checkpoints have appeared, 0 to 90 ms later (mid-step,
    # mid-write or mid-removal); now and then at once (during start-up).
    target=$((newest_seen + RANDOM % 3))
    kill_it=1
    if ((SECONDS - start >= budget)); then
      kill_it=0  # out of time: this round's last run goes to the end unkilled
    elif ((RANDOM % 8 != 0)); then
      for _ in $(seq 1 1000); do
        kill -0 "$pid" 2>/dev/null || break
        (($(newest_step) >= target)) && break
        sleep 0.02
      done
      sleep "0.0$((RANDOM % 10))"
    fi
    if ((kill_it)) && kill -9 "$pid" 2>/dev/null; then kills=$((kills + 1)); fi
    status=0
    wait "$pid" 2>/dev/null || status=$?
    if ((status != 0 && status != 137)); then
      cat "$work/log" >&2
      echo "a run failed on its own (exit $status)" >&2
      exit 1
    fi
    step=$(newest_step)
    if ((step < newest_seen)); then
      echo "lost steps: newest checkpoint is $step after $newest_seen was seen" >&2
      exit 1
    fi
    newest_seen=$step
    for ckpt in "$run"/checkpoints/step-*; do
      [[ -e $ckpt ]] || continue
      if ! "$reach" eval "$ckpt" --lengths 32 --max-tokens 32 >"$work/eval" 2>&1; then
        cat "$work/eval" >&2
        echo "unloadable checkpoint after a kill: $ckpt" >&2
        exit 1
      fi
    done
  done
  python3 - "$work/straight/metrics.jsonl" "$run/metrics.jsonl" "$steps" <<'PY'
import json, sys
def losses(path):
    return [(j["step"], j["loss"]) for j in map(json.loads, open(path))]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert len(a) == int(sys.argv[3]), f"uninterrupted run logged {len(a)} steps"
assert a == b, "loss curves differ: " + str([(x, y) for x, y in zip(a, b) if x != y][:3])
PY
  rounds=$((rounds + 1))
done
echo "soak: $rounds rounds of $steps steps, $runs runs, $kills killed, $((SECONDS - start)) s;" \
  "every checkpoint loaded after every kill, loss curves identical"
