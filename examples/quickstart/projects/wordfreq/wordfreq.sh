#!/usr/bin/env bash
# Prints the N most frequent words of a file: "count word" per line, most frequent first.
set -euo pipefail
file="$1"
n="${2:-10}"
tr -cs '[:alnum:]' '\n' < "$file" | grep -v '^$' | sort | uniq -c | sort -k1,1nr -k2,2 | head -n "$n" | awk '{print $1, $2}'
