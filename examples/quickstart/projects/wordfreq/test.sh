#!/usr/bin/env bash
# Words differing only in case are the same word.
set -euo pipefail
cd "$(dirname "$0")"
printf 'The cat saw the dog.\nTHE END\n' > /tmp/wordfreq-input.txt
got="$(./wordfreq.sh /tmp/wordfreq-input.txt 1)"
if [[ "$got" != "3 the" ]]; then
  echo "FAIL: expected '3 the', got '$got'"
  exit 1
fi
echo "ok"
