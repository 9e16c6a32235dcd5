#!/usr/bin/env bash
# Validates every backup in a directory, fully, and fails on the first bad one.
# Usage: contrib/validate-all.sh DIR     (needs wqm and jq on PATH)
set -euo pipefail
dir=${1:?usage: validate-all.sh DIR}
paths=$(wqm backup list "$dir" --json | jq -r '.[].path')
count=0
while IFS= read -r backup; do
  [ -n "$backup" ] || continue
  if ! wqm backup validate "$backup" --check-files --json > /dev/null; then
    echo "bad backup: $backup" >&2
    exit 1
  fi
  count=$((count + 1))
done <<< "$paths"
echo "$count backup(s) valid in $dir"
