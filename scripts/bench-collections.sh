#!/usr/bin/env bash
# Benchmarks a workspace of several collections (5 x 20000 points, 384-dim dense + sparse, as
# workspace-qdrant-mcp shapes them) on the real Qdrant server, in one run:
#
# - create: `wqm backup create` (with `backup.transfer.parallel` 1, 2 and 3) against a sequential
#   curl loop doing for each collection what a careful script does: create the snapshot,
#   download it, fsync it, delete it from the server;
# - restore: `wqm backup restore --force` of the same collections (deleted first) against
#   sequential curl uploads with the same `?checksum=` (each uploaded copy deleted after).
#
# Wall time and peak RSS with /usr/bin/time. Not a test: run it on a quiet machine and copy the
# tables into docs/performance.md.
#
#   scripts/bench-collections.sh                       # 5 x 20000 x 384, 3 runs
#   BENCH_POINTS=2000 BENCH_RUNS=1 scripts/bench-collections.sh   # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
points=${BENCH_POINTS:-20000}
dim=${BENCH_DIM:-384}
runs=${BENCH_RUNS:-3}
names=(projects libraries rules scratchpad images)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/wqm-bench
out=$(mktemp -d "${TMPDIR:-/tmp}/wqm-bench-collections.XXXXXX")
. scripts/bench-lib.sh

cargo build --release --locked --quiet
wqm=${CARGO_TARGET_DIR:-$PWD/target}/release/wqm
mkdir -p "$cache"
eval "$(../shared/bin/qdrant-serve --storage "$cache/storage-5x$points-$dim-sparse")"
trap 'kill $QDRANT_PID 2>/dev/null; rm -rf "$out"' EXIT
echo "loading 5 x $points x $dim points, dense + sparse (once per machine)..." >&2
for name in "${names[@]}"; do
  python3 scripts/bench_load.py "$QDRANT_URL" "$name" "$points" "$dim" 1 1 sparse
done


curl_loop() {
  mkdir -p "$out/curl"
  for c in $names_list; do
    local name
    name=$(curl -fsS -X POST "$QDRANT_URL/collections/$c/snapshots?wait=true" | jq -r .result.name)
    curl -fsS -H 'Accept-Encoding: identity' -o "$out/curl/$c.snapshot" "$QDRANT_URL/collections/$c/snapshots/$name"
    sync "$out/curl/$c.snapshot"
    curl -fsS -X DELETE "$QDRANT_URL/collections/$c/snapshots/$name?wait=true" >/dev/null
  done
}

curl_uploads() {
  for c in $names_list; do
    curl -fsS -X DELETE "$QDRANT_URL/collections/$c" >/dev/null
    curl -fsS -F "snapshot=@$out/curl/$c.snapshot;filename=bench-upload.snapshot" \
      "$QDRANT_URL/collections/$c/snapshots/upload?wait=true&priority=snapshot&checksum=$(cat "$out/curl/$c.sha256")" >/dev/null
    curl -fsS -X DELETE "$QDRANT_URL/collections/$c/snapshots/bench-upload.snapshot?wait=true" >/dev/null
  done
}
export -f curl_loop curl_uploads
export QDRANT_URL out names_list="${names[*]}"

wqm_create() { # wqm_create LABEL ENV...
  local label=$1; shift
  rm -rf "${out:?}/$label"
  time_of "$label" env WQM_DATA_DIR="$out/no-data" QDRANT_URL="$QDRANT_URL" "$@" "$wqm" backup create "$out/$label"
}

wqm_restore() { # wqm_restore LABEL BACKUP ENV...
  local label=$1 backup=$2; shift 2
  for c in "${names[@]}"; do curl -fsS -X DELETE "$QDRANT_URL/collections/$c" >/dev/null; done
  time_of "$label" env WQM_DATA_DIR="$out/no-data" QDRANT_URL="$QDRANT_URL" "$@" "$wqm" backup restore "$out/$backup" --force
}

plain=(WQM_BACKUP__COMPRESSION=false WQM_BACKUP__VERIFICATION__VERIFY_AFTER_BACKUP=false)
for i in $(seq "$runs"); do
  echo "create run $i/$runs" >&2
  # New files each run, as wqm writes (a file truncated and written again is written back by
  # ext4 on close: scripts/bench.sh).
  rm -rf "$out/curl"
  time_of curl-loop bash -c curl_loop
  wqm_create wqm-plain-p1 "${plain[@]}" WQM_BACKUP__TRANSFER__PARALLEL=1
  wqm_create wqm-plain-p2 "${plain[@]}" WQM_BACKUP__TRANSFER__PARALLEL=2
  wqm_create wqm-plain-p3 "${plain[@]}" WQM_BACKUP__TRANSFER__PARALLEL=3
  wqm_create wqm-defaults-p1 WQM_BACKUP__TRANSFER__PARALLEL=1
  wqm_create wqm-defaults
done

for c in "${names[@]}"; do sha256sum "$out/curl/$c.snapshot" | cut -d' ' -f1 > "$out/curl/$c.sha256"; done
for i in $(seq "$runs"); do
  echo "restore run $i/$runs" >&2
  # The curl path deletes each collection first too, inside the timed command.
  time_of curl-uploads bash -c curl_uploads
  wqm_restore restore-plain-p1 wqm-plain-p1 WQM_BACKUP__VERIFICATION__VERIFY_BEFORE_RESTORE=false WQM_BACKUP__TRANSFER__PARALLEL=1
  wqm_restore restore-plain-p2 wqm-plain-p1 WQM_BACKUP__VERIFICATION__VERIFY_BEFORE_RESTORE=false WQM_BACKUP__TRANSFER__PARALLEL=2
  wqm_restore restore-defaults-p1 wqm-defaults WQM_BACKUP__TRANSFER__PARALLEL=1
  wqm_restore restore-defaults wqm-defaults
done

snapshots=$(du -cb "$out"/curl/*.snapshot | tail -1 | cut -f1)
echo
echo "5 collections x $points points x $dim dims (dense + sparse): $snapshots bytes of snapshots. $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'). Median of $runs runs."
echo
echo "Create (5 snapshots made, downloaded, synced, deleted):"
echo
table curl-loop wqm-plain-p1 wqm-plain-p2 wqm-plain-p3 wqm-defaults-p1 wqm-defaults
echo
echo "Restore (5 uploads, each recovered and its uploaded copy deleted):"
echo
table curl-uploads restore-plain-p1 restore-plain-p2 restore-defaults-p1 restore-defaults
