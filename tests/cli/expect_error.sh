#!/usr/bin/env bash
# Usage: expect_error.sh "EXPECTED TEXT" COMMAND [ARGS...]
# Passes when COMMAND exits non-zero, prints EXPECTED TEXT, and did not crash (no signal).
expected=$1
shift
output=$("$@" 2>&1)
status=$?
if ((status == 0)); then
  echo "expected failure, got exit 0: $*"
  exit 1
fi
if ((status >= 128)); then
  echo "crashed with signal $((status - 128)): $*"
  echo "$output"
  exit 1
fi
if [[ "$output" != *"$expected"* ]]; then
  echo "expected '$expected' in output of: $*"
  echo "$output"
  exit 1
fi
exit 0
