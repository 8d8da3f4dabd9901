#!/usr/bin/env bash
# Usage: kill_resume_test.sh REACH WORKDIR
# Trains a micro model twice: once uninterrupted, once killed with SIGKILL after its first
# checkpoints and resumed with --resume. The per-step losses must match bit for bit.
set -euo pipefail
reach=$1
work=$2
rm -rf "$work"
mkdir -p "$work"
cat > "$work/config.toml" <<'TOML'
[model]
preset = "micro"
attention = "fibonacci"
schedule = "stagger"
[data]
seq_len = 32
batch = 4
[train]
steps = 60
warmup = 5
checkpoint_every = 10
eval_every = 1000
eval_tokens = 64
TOML
"$reach" train "$work/config.toml" --set run.out_dir="$work/straight" >/dev/null 2>&1

"$reach" train "$work/config.toml" --set run.out_dir="$work/killed" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  [[ -d "$work/killed/checkpoints/step-00000020" ]] && break
  sleep 0.05
done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
if [[ -d "$work/killed/checkpoints/step-00000060" ]]; then
  echo "the run finished before it could be killed; the test proves nothing" >&2
  exit 1
fi
if ! ls -d "$work"/killed/checkpoints/step-* >/dev/null 2>&1; then
  echo "no checkpoint was written before the kill" >&2
  exit 1
fi
"$reach" train "$work/config.toml" --set run.out_dir="$work/killed" --resume >/dev/null 2>&1

python3 - "$work/straight/metrics.jsonl" "$work/killed/metrics.jsonl" <<'PY'
import json, sys
def losses(path):
    return [(j["step"], j["loss"]) for j in map(json.loads, open(path))]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert len(a) == 60, f"uninterrupted run logged {len(a)} steps"
assert a == b, "loss curves differ: " + str([(x, y) for x, y in zip(a, b) if x != y][:3])
print("identical loss curves over", len(a), "steps")
PY
