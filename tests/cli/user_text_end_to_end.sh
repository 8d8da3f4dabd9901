#!/usr/bin/env bash
# A user's own text end to end at toy size: train on a single file and on a folder (each with a
# held-out part by default), score other text with `reach eval --text`, several checkpoints in
# one table, `reach info`, `reach tokenizer encode/decode`, and the errors of a held-out part
# too short, a directory where model.safetensors should be, and NaN weights.
# Usage: user_text_end_to_end.sh REACH WORK_DIR
set -euo pipefail
reach=$1 work=$2
rm -rf "$work"
mkdir -p "$work/folder/sub"
fail() { echo "FAIL: $*"; exit 1; }
expect_error() {  # expect_error TEXT COMMAND...: non-zero exit (no crash) and TEXT in the output
  local text=$1 status=0 out
  shift
  out=$("$@" 2>&1) || status=$?
  ((status != 0 && status < 128)) || fail "exit $status from: $* ($out)"
  [[ $out == *"$text"* ]] || fail "expected '$text' from: $* ($out)"
}
awk 'BEGIN { for (i = 0; i < 3000; i++) print "line " i " of a text the user wrote, word " i % 17 }' \
  >"$work/single.txt"
for f in 0 1 2 3 4 5 6 7 8 9 10 11; do
  awk -v f=$f 'BEGIN { for (i = 0; i < 100 + 40 * f; i++) print "file " f " says " i * f % 23 }' \
    >"$work/folder/$( ((f % 3)) && echo sub/)doc$f.txt"
done
awk 'BEGIN { for (i = 0; i < 400; i++) print "other text, sentence " i }' >"$work/other.txt"
common=(--set model.preset=micro --set data.seq_len=16 --set data.batch=2 --set train.steps=3
        --set train.eval_every=3 --set train.checkpoint_every=3 --set train.eval_tokens=32
        --set run.threads=1 --set data.cache_dir="$work/cache")

# Training on a single file and on a folder: each holds out a part by default.
"$reach" train /dev/null "${common[@]}" --set data.corpus="$work/single.txt" \
  --set run.out_dir="$work/run-single" >"$work/single.log" 2>&1 || { cat "$work/single.log"; fail "single file"; }
grep -q "heldout" "$work/single.log" || fail "no held-out loss for a single file"
"$reach" train /dev/null "${common[@]}" --set data.corpus="$work/folder" \
  --set run.out_dir="$work/run-folder" >"$work/folder.log" 2>&1 || { cat "$work/folder.log"; fail "folder"; }
grep -q "heldout" "$work/folder.log" || fail "no held-out loss for a folder"
grep -q 'heldout_fraction = 0.1' "$work"/run-single/checkpoints/step-*/config.toml ||
  fail "held-out fraction not recorded in the checkpoint"

# Other text, fractional and sub-1x lengths labelled as asked, bits per byte, the checkpoint named.
"$reach" eval "$work/run-single" --text "$work/other.txt" --lengths 1x,1.5x,1 --max-tokens 64 \
  --device cpu >"$work/eval.md" 2>"$work/eval.err" || { cat "$work/eval.err"; fail "eval --text"; }
grep -q "| 1.5x |" "$work/eval.md" || { cat "$work/eval.md"; fail "1.5x label"; }
grep -q "| 0.0625x |" "$work/eval.md" || { cat "$work/eval.md"; fail "length 1 label"; }
grep -q "bits/byte" "$work/eval.md" || fail "no bits per byte"
grep -q "checkpoint $work/run-single/checkpoints/step-00000003 (step 3" "$work/eval.err" ||
  { cat "$work/eval.err"; fail "checkpoint not named"; }
grep -q "text: all of $work/other.txt; device: cpu, fp32" "$work/eval.err" || { cat "$work/eval.err"; fail "text/device"; }
! grep -q "(stagger)" "$work/eval.md" || fail "schedule label in parentheses"

# Several checkpoints, one table; two of the same model are told apart.
"$reach" eval "$work/run-single" "$work/run-folder" --lengths 1x,2x --max-tokens 64 \
  --json "$work/two.json" >"$work/two.md" 2>/dev/null || fail "two checkpoints"
[[ $(grep -c "^| fibonacci-stagger" "$work/two.md") == 4 ]] || { cat "$work/two.md"; fail "rows"; }
grep -q "fibonacci-stagger #2" "$work/two.md" || { cat "$work/two.md"; fail "duplicate labels"; }
grep -q '"bits_per_byte"' "$work/two.json" || fail "JSON without bits per byte"
grep -q '"checkpoint"' "$work/two.json" || fail "JSON without the checkpoint"

# reach info.
"$reach" info "$work/run-single" >"$work/info.txt" || fail "info"
for want in "parameters" "trained     3 steps x 2 x 16 tokens = 96 tokens" "keys per query" \
            "| 0 | 1.0000 |" "vocabulary 256"; do
  grep -qF "$want" "$work/info.txt" || { cat "$work/info.txt"; fail "info lacks '$want'"; }
done
"$reach" info "$work/run-single" --json | grep -q '"keys_per_query"' || fail "info --json"

# Tokenizer: pieces and ids; decode back.
"$reach" tokenizer encode "Hi there" | grep -qF 'pieces: ["H", "i", "<0x20>", "t"' ||
  fail "encode pieces"
[[ $("$reach" tokenizer decode 72 105) == "Hi" ]] || fail "decode"
expect_error "outside 0..255" "$reach" tokenizer decode 300

# A held-out part too short for the training length: an error at start naming what to change.
awk 'BEGIN { for (i = 0; i < 40; i++) print "short line " i }' >"$work/short.txt"
expect_error "raise data.heldout_fraction (now 0.1)" "$reach" train /dev/null "${common[@]}" \
  --set data.corpus="$work/short.txt" --set data.seq_len=256 --set train.eval_tokens=256 \
  --set run.out_dir="$work/run-short"
expect_error "has no document 'nope.txt'" "$reach" train /dev/null "${common[@]}" \
  --set data.corpus="$work/folder" --set data.heldout_files=nope.txt --set run.out_dir="$work/x"
expect_error "lower --lengths" "$reach" eval "$work/run-single" --text "$work/short.txt" \
  --lengths 1000

# Broken checkpoints: clear errors, never a crash.
ckpt=$work/run-single/checkpoints/step-00000003
cp -r "$ckpt" "$work/dir-weights"
rm "$work/dir-weights/model.safetensors" && mkdir "$work/dir-weights/model.safetensors"
expect_error "is not a regular file" "$reach" eval "$work/dir-weights" --max-tokens 64
expect_error "is not a regular file" "$reach" info "$work/dir-weights"
cp -r "$ckpt" "$work/nan-weights"
# The last 4 bytes of the file are the last float32 of the last tensor: make it a NaN.
size=$(stat -c %s "$work/nan-weights/model.safetensors")
printf '\xff\xff\xc0\x7f' | dd of="$work/nan-weights/model.safetensors" bs=1 seek=$((size - 4)) \
  conv=notrunc status=none
expect_error "NaN or infinite" "$reach" eval "$work/nan-weights" --max-tokens 64
echo "user text end to end: ok"
