#!/usr/bin/env bash
# How much zstd level 1 (wqm's level) saves on the first N MiB of each FILE against the whole
# file: the measurement behind `backup.compression: auto`'s sample size and threshold
# (`compress::SAMPLE_SIZE`, `compress::MIN_SAVING_PERCENT`; docs/performance.md, "Choosing the
# compression"). Not a test: run it by hand on real snapshots and databases.
#
#   scripts/compression-sample.sh FILE...
set -euo pipefail
saving() { # saving BYTES FILE: percent saved on the first BYTES of FILE (all of it with 0)
  local n
  if [ "$1" = 0 ]; then n=$(stat -c %s "$2"); else n=$(head -c "$1" "$2" | wc -c); fi
  local z
  if [ "$1" = 0 ]; then z=$(zstd -1 -T1 -c "$2" | wc -c); else z=$(head -c "$1" "$2" | zstd -1 -T1 -c | wc -c); fi
  awk -v n="$n" -v z="$z" 'BEGIN {printf "%.1f %%", (n - z) * 100 / n}'
}
echo "| file | size | first 1 MiB | first 4 MiB | first 16 MiB | whole file |"
echo "|---|---|---|---|---|---|"
for f in "$@"; do
  printf '| %s | %s | %s | %s | %s | %s |\n' "$(basename "$f")" "$(numfmt --to=iec "$(stat -c %s "$f")")" \
    "$(saving $((1 << 20)) "$f")" "$(saving $((4 << 20)) "$f")" "$(saving $((16 << 20)) "$f")" "$(saving 0 "$f")"
done
