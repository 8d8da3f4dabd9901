#!/usr/bin/env bash
# Usage: python_interop_test.sh REACH VENV WORKDIR
# reach -> Python: a checkpoint's model.safetensors opens with the real `safetensors` package
# (numpy backend) with the expected names, dtypes and shapes.
# Python -> reach: a file written by that package (weights scaled) loads in `reach eval` and
# changes the loss; one with a wrong shape is refused with a clear error.
set -euo pipefail
reach=$1
venv=$2
work=$3
if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q safetensors numpy
fi
rm -rf "$work"
mkdir -p "$work"
"$reach" train /dev/null --set run.out_dir="$work/run" --set model.preset=micro \
  --set data.seq_len=32 --set data.batch=2 --set train.steps=3 --set train.eval_tokens=64 \
  >/dev/null 2>&1
ckpt=$(ls -d "$work"/run/checkpoints/step-* | tail -n1)
"$venv/bin/python" - "$ckpt" <<'PY'
import sys, shutil
from safetensors.numpy import load_file, save_file
ckpt = sys.argv[1]
w = load_file(ckpt + "/model.safetensors")
expected = {"wte.weight": (256, 32), "blocks.0.attn.qkv.weight": (96, 32),
            "blocks.1.fc.weight": (128, 32), "ln_f.weight": (32,)}
for name, shape in expected.items():
    assert name in w, f"missing {name}; have {sorted(w)[:5]}..."
    assert w[name].shape == shape, (name, w[name].shape)
    assert str(w[name].dtype) == "float32", (name, w[name].dtype)
opt = load_file(ckpt + "/optimizer.safetensors")
assert "wte.weight.exp_avg" in opt and opt["wte.weight.step"].dtype.name == "int64"
for name, dst in (("scaled", lambda a: a * 0.5), ("badshape", None)):
    out = ckpt + "-" + name
    shutil.copytree(ckpt, out)
    v = dict(w)
    if dst:
        v = {k: dst(a) for k, a in v.items()}
    else:
        v["wte.weight"] = v["wte.weight"][:100]
    save_file(v, out + "/model.safetensors")
print("python read", len(w), "tensors")
PY
before=$("$reach" eval "$ckpt" --lengths 1x --max-tokens 256 | awk -F'|' '/micro|fibonacci|dense/{print $7}' | head -n1)
after=$("$reach" eval "$ckpt-scaled" --lengths 1x --max-tokens 256 | awk -F'|' '/fibonacci|dense/{print $7}' | head -n1)
if [[ -z "$before" || -z "$after" || "$before" == "$after" ]]; then
  echo "expected different losses from the original and the Python-written weights: '$before' '$after'" >&2
  exit 1
fi
if out=$("$reach" eval "$ckpt-badshape" --lengths 1x 2>&1); then
  echo "a mis-shaped tensor was accepted" >&2
  exit 1
fi
[[ "$out" == *"tensor 'wte.weight' has shape"* ]] || { echo "unclear error: $out" >&2; exit 1; }
echo "interop ok: loss $before -> $after with Python-written weights"
