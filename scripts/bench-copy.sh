#!/usr/bin/env bash
# `wqm backup copy` of incremental nights to S3 (SeaweedFS on loopback) and back, on the real
# Qdrant server. Not a test: run it by hand and copy the table into docs/performance.md.
#
#   scripts/bench-copy.sh                                   # 40000 points, 10 nights
#   BENCH_POINTS=8000 BENCH_NIGHTS=5 scripts/bench-copy.sh  # a quick look
#
# Nights of churn as in scripts/bench-incremental.sh, each `create --incremental`d locally. Then:
# the first copy of every night to S3, a copy with nothing new, one more night and its copy, and
# the whole repository copied back from S3 to a new directory. Bytes sent are wqm's own count
# (`bytes_sent`); a whole-directory copy (rsync, `rclone copy`) of the first copy would send the
# directory's bytes (`du -sb`), shown beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
points=${BENCH_POINTS:-40000}
nights=${BENCH_NIGHTS:-10}
out=$(mktemp -d "${TMPDIR:-/tmp}/wqm-bench-copy.XXXXXX")
. scripts/bench-lib.sh

cargo build --release --locked --quiet
wqm=${CARGO_TARGET_DIR:-$PWD/target}/release/wqm
eval "$(../shared/bin/qdrant-serve --storage "$out/storage")"
eval "$(../shared/bin/s3-serve)"
trap 'kill $QDRANT_PID 2>/dev/null; kill -9 "$S3_PID" 2>/dev/null; rm -rf "$out" "$S3_DIR"' EXIT
export QDRANT_URL WQM_DATA_DIR=$out/data WQM_BACKUP__DAEMON__PROCESS_NAME=wqm-bench-no-daemon
export AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
repo=s3://$S3_BUCKET/bench

echo "loading $points points..." >&2
python3 scripts/bench_incremental.py load "$QDRANT_URL" projects "$points"
mkdir -p "$out/data"
sqlite3 "$out/data/state.db" < tests/fixtures/state-db/schema.sql
sqlite3 "$out/data/state.db" < tests/fixtures/state-db/sample-data.sql
night() { # night N: churn (after the first), then an incremental create
  if [ "$1" -gt 1 ]; then
    python3 scripts/bench_incremental.py churn "$QDRANT_URL" projects "$points" "$1"
    sqlite3 "$out/data/state.db" "UPDATE tracked_files SET file_mtime = datetime('now'), chunk_count = chunk_count + 1 WHERE file_id % 7 = $1 % 7;"
  fi
  "$wqm" backup create "$out/backups/$(printf 'night-%02d' "$1")" --incremental --json > /dev/null
}
for n in $(seq "$nights"); do night "$n"; done

copy() { # copy LABEL SRC DEST: timed, its JSON in $out/LABEL.out
  time_of "$1" "$wqm" backup copy "$2" "$3" --json
  read -r seconds rss < "$out/$1.time"
  printf '| %s | %s | %d | %d | %.1f | %.1f |\n' "$1" "$seconds" \
    "$(jq .copied "$out/$1.out")" "$(jq '[.backups[].chunks_sent] | add // 0' "$out/$1.out")" \
    "$(echo "$(jq '[.backups[].bytes_sent] | add // 0' "$out/$1.out") / 1048576" | bc -l)" \
    "$(echo "$rss / 1024" | bc -l)" >> "$out/copy.md"
}
printf '| copy | wall s | backups copied | chunks sent | MiB sent | peak RSS MiB |\n|---|---|---|---|---|---|\n' > "$out/copy.md"
copy "first: $nights nights to S3" "$out/backups" "$repo"
copy "again: nothing new" "$out/backups" "$repo"
night $((nights + 1))
copy "one more night" "$out/backups" "$repo"
copy "S3 back to a new directory" "$repo" "$out/back"
"$wqm" backup validate "$out/back/$(printf 'night-%02d' $((nights + 1)))" --check-files > /dev/null

cat "$out/copy.md"
printf '\nThe local repository after %d nights: %.1f MiB (what a whole-directory copy sends the first time)\n' \
  "$((nights + 1))" "$(echo "$(du -sb "$out/backups" | cut -f1) / 1048576" | bc -l)"
