#!/usr/bin/env bash
# scripts/gpu-entmax-table's CPU-runnable path: the five associative-recall variants trained a
# few steps at toy size on the CPU (REACH_TABLE_DEVICE=cpu, no build, no benchmark), evaluated
# at two lengths, and the table, JSON and merged metrics written: one row per variant with a
# cell per length and the paper's figures where ANCHORS.md has them.
# Usage: gpu_entmax_table_cpu.sh REACH SOURCE_DIR WORK_DIR
set -euo pipefail
reach=$1 source=$2 work=$3
rm -rf "$work"
mkdir -p "$work"
out=$work/out
OUT=$out REACH=$reach REACH_TABLE_BUILD=0 REACH_TABLE_DEVICE=cpu REACH_TABLE_PRECISION=fp32 \
  REACH_TABLE_STEPS=2 REACH_TABLE_BENCH=0 REACH_TABLE_RUNS=$work/runs \
  REACH_TABLE_EVAL="1:2 2:1" \
  REACH_TABLE_SET="model.layers=1 model.d_model=32 model.heads=2 model.mlp_hidden=32 train.batch=2 train.log_every=1 train.warmup=1 run.threads=1" \
  bash "$source/scripts/gpu-entmax-table" >"$work/log" 2>&1 || { cat "$work/log"; exit 1; }
for f in table.md table.json metrics.jsonl log.txt; do
  [[ -s $out/$f ]] || { echo "missing $out/$f"; cat "$work/log"; exit 1; }
done
fail() { echo "$1"; cat "$out/table.md"; exit 1; }
[[ $(grep -c '^| .* | 2 | .* | .*% (2) | .*% (1) |' "$out/table.md") == 5 ]] ||
  fail "expected 5 rows of 2 steps with a 1x (2 examples) and a 2x (1 example) cell"
grep -q '^| ASEntmax-1.5 (per query) + NAPE | .* 99.6 / 99.0 / 95.3 |$' "$out/table.md" ||
  fail "the ASEntmax row lacks the paper's figures"
grep -q '^| SSMax + NAPE | .* not in ANCHORS.md |$' "$out/table.md" || fail "SSMax row"
[[ $(grep -c '^| .* | [0-9.]*% | [0-9.]*% |$' "$out/table.md") == 5 ]] ||
  fail "expected the answer-token table: 5 rows of two percentages"
[[ $(wc -l <"$out/metrics.jsonl") == 10 ]] || fail "metrics.jsonl: $(wc -l <"$out/metrics.jsonl") lines, not 10"
grep -q '"variant": "entmax-nape"' "$out/metrics.jsonl" || fail "metrics.jsonl has no variant field"
echo "gpu-entmax-table on the CPU: ok"
