#!/usr/bin/env bash
# Benchmarks `wqm backup create` against the plain curl path (create the snapshot, download it,
# delete it) and `wqm backup restore` against a curl upload of the same snapshot, on the real
# Qdrant server, in one run, with peak RSS. Not a test: run it by hand and copy the tables into
# docs/performance.md.
#
#   scripts/bench.sh            # 140000 x 1024-dim points (a ~580 MB snapshot), 3 runs each
#   BENCH_POINTS=20000 BENCH_RUNS=1 scripts/bench.sh    # a quick look
#   BENCH_POINTS=70000 BENCH_RUNS=5 BENCH_CREATE_RUNS=1 scripts/bench.sh   # restores, median of 5
#   BENCH_ONLY=create BENCH_RUNS=5 scripts/bench.sh       # the creates alone
#
# Two more baselines for the creates: `curl-synced`, the curl path with its file fsynced (as
# every file of a backup is), and `curl-same-work`, the defaults' work scripted with the
# standard tools (`curl | tee >(openssl sha256) | zstd -1`, fsync, the file read once more).
#
# Each run's steps are printed at the end as well: curl's (making the snapshot, downloading,
# deleting) and wqm's (its phases, and the snapshot's making and downloading), to see where
# the runs differ.
#
# The collection is built once and kept in ~/.cache/wqm-bench (the server reuses its storage).
set -euo pipefail
cd "$(dirname "$0")/.."
points=${BENCH_POINTS:-140000}
dim=${BENCH_DIM:-1024}
runs=${BENCH_RUNS:-3}
# The creates also make the backups the restores read: at least one run.
create_runs=${BENCH_CREATE_RUNS:-$runs}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/wqm-bench
out=$(mktemp -d "${TMPDIR:-/tmp}/wqm-bench.XXXXXX")
. scripts/bench-lib.sh

cargo build --release --locked --quiet
wqm=${CARGO_TARGET_DIR:-$PWD/target}/release/wqm
mkdir -p "$cache"
eval "$(../shared/bin/qdrant-serve --storage "$cache/storage-$points-$dim")"
trap 'kill $QDRANT_PID 2>/dev/null; rm -rf "$out"' EXIT
echo "loading $points x $dim points (once per machine)..." >&2
python3 scripts/bench_load.py "$QDRANT_URL" bench "$points" "$dim"


curl_path() { # curl_path LABEL [sync]: with `sync`, the file is fsynced before the snapshot goes
  local label=$1 name t0 t1 t2 t3
  t0=$(date +%s.%N)
  name=$(curl -sS -X POST "$QDRANT_URL/collections/bench/snapshots?wait=true" | jq -r .result.name)
  t1=$(date +%s.%N)
  curl -sS -H 'Accept-Encoding: identity' -o "$out/$label.snapshot" "$QDRANT_URL/collections/bench/snapshots/$name"
  t2=$(date +%s.%N)
  [ "${2:-}" != sync ] || sync "$out/$label.snapshot"
  t3=$(date +%s.%N)
  curl -sS -X DELETE "$QDRANT_URL/collections/bench/snapshots/$name?wait=true" >/dev/null
  awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v e="$(date +%s.%N)" \
    'BEGIN {printf "making %.2f, downloading %.2f, fsync %.2f, deleting %.2f\n", b - a, c - b, d - c, e - d}' >> "$out/$label.steps"
}
export -f curl_path

# The same work as wqm's defaults, scripted with the standard tools: the download hashed
# (openssl's sha256, which uses the CPU's SHA instructions as wqm's does; coreutils' sha256sum
# here runs at 160 MB/s) and compressed (zstd -1, as wqm) on the way, the file fsynced, then
# read once more (wqm's verify).
curl_same_work() {
  local name t0 t1 t2 t3
  t0=$(date +%s.%N)
  name=$(curl -sS -X POST "$QDRANT_URL/collections/bench/snapshots?wait=true" | jq -r .result.name)
  t1=$(date +%s.%N)
  curl -sS -H 'Accept-Encoding: identity' "$QDRANT_URL/collections/bench/snapshots/$name" |
    tee >(openssl dgst -sha256 -r > "$out/same-work.sha256") | zstd -1 -q -o "$out/same-work.snapshot.zst"
  t2=$(date +%s.%N)
  sync "$out/same-work.snapshot.zst"
  cat "$out/same-work.snapshot.zst" > /dev/null
  t3=$(date +%s.%N)
  curl -sS -X DELETE "$QDRANT_URL/collections/bench/snapshots/$name?wait=true" >/dev/null
  awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v e="$(date +%s.%N)" \
    'BEGIN {printf "making %.2f, downloading %.2f, fsync and reading back %.2f, deleting %.2f\n", b - a, c - b, d - c, e - d}' >> "$out/curl-same-work.steps"
}
export -f curl_same_work
export QDRANT_URL out

# The encrypted variants write into an encrypted repository (`enc/`), opened with this password
# (the key derivation, ~0.6 s, is part of each run, as it is of every real one).
password=bench-Pa55word
WQM_BACKUP_PASSWORD=$password "$wqm" backup init "$out/enc" --encrypt >/dev/null

wqm_create() { # wqm_create LABEL ENV...   (a label ending in -enc goes into enc/)
  local label=$1 target; shift
  case $label in *-enc) target=$out/enc/$label ;; *) target=$out/$label ;; esac
  rm -rf "${target:?}"
  time_of "$label" env WQM_DATA_DIR="$out/no-data" QDRANT_URL="$QDRANT_URL" WQM_BACKUP_PASSWORD=$password "$@" "$wqm" backup create "$target" --json
  jq -r '[(.files[] | select(.seconds) | "making \(.seconds.making * 100 | round / 100), downloading \(.seconds.downloading * 100 | round / 100)"),
          (.phases[] | select(.seconds >= 0.01) | "\(.phase) \(.seconds * 100 | round / 100)")] | join(", ")' \
    "$out/$label.out" >> "$out/$label.steps"
}

curl_upload() {
  curl -sS -X DELETE "$QDRANT_URL/collections/bench" >/dev/null
  curl -sS -F "snapshot=@$out/curl.snapshot;filename=bench-upload.snapshot" \
    "$QDRANT_URL/collections/bench/snapshots/upload?wait=true&priority=snapshot&checksum=$(cat "$out/curl.sha256")" >/dev/null
  curl -sS -X DELETE "$QDRANT_URL/collections/bench/snapshots/bench-upload.snapshot?wait=true" >/dev/null
}
export -f curl_upload

wqm_restore() { # wqm_restore LABEL BACKUP ENV...
  local label=$1 backup=$2; shift 2
  curl -sS -X DELETE "$QDRANT_URL/collections/bench" >/dev/null
  time_of "$label" env WQM_DATA_DIR="$out/no-data" QDRANT_URL="$QDRANT_URL" WQM_BACKUP_PASSWORD=$password "$@" "$wqm" backup restore "$out/$backup" --force
}

creates=$(pressure_mark)
for i in $(seq "$create_runs"); do
  echo "create run $i/$create_runs" >&2
  # A new file each run, as wqm writes: curl truncating the last run's file made ext4 write it
  # back on close (`auto_da_alloc`), and its download took 1.6-1.8 s instead of 0.8-1.2 s.
  rm -f "$out/curl.snapshot" "$out/curl-synced.snapshot" "$out/same-work.snapshot.zst"
  time_of curl bash -c 'curl_path curl'
  time_of curl-synced bash -c 'curl_path curl-synced sync'
  time_of curl-same-work bash -c curl_same_work
  wqm_create wqm-plain WQM_BACKUP__COMPRESSION=false WQM_BACKUP__VERIFICATION__VERIFY_AFTER_BACKUP=false
  wqm_create wqm-plain-verified WQM_BACKUP__COMPRESSION=false
  wqm_create wqm-zstd WQM_BACKUP__VERIFICATION__VERIFY_AFTER_BACKUP=false
  wqm_create wqm-zstd-verified
  wqm_create wqm-zstd-verified-enc
done

creates_pressure=$(pressure_since "$creates")
openssl dgst -sha256 -r "$out/curl.snapshot" | cut -d' ' -f1 > "$out/curl.sha256"
restores=$(pressure_mark)
[ "${BENCH_ONLY:-}" = create ] && runs_restore=0 || runs_restore=$runs
for i in $(seq "$runs_restore"); do
  echo "restore run $i/$runs" >&2
  # The curl path deletes the collection first too, inside the timed command.
  time_of curl-upload bash -c curl_upload
  wqm_restore restore-plain wqm-plain WQM_BACKUP__VERIFICATION__VERIFY_BEFORE_RESTORE=false
  wqm_restore restore-plain-verified wqm-plain
  wqm_restore restore-zstd wqm-zstd WQM_BACKUP__VERIFICATION__VERIFY_BEFORE_RESTORE=false
  wqm_restore restore-zstd-verified wqm-zstd
  wqm_restore restore-zstd-verified-enc enc/wqm-zstd-verified-enc
done
restores_pressure=$(pressure_since "$restores")

snapshot=$(stat -c %s "$out/curl.snapshot")
stored=$(stat -c %s "$out/wqm-zstd/collections/bench.snapshot.zst")
echo
echo "Snapshot: $snapshot bytes ($points points x $dim dims); zstd: $stored bytes. $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'). Median of $runs runs ($create_runs of the creates)."
echo
echo "Create (snapshot, download, delete):"
echo
table curl curl-synced curl-same-work wqm-plain wqm-plain-verified wqm-zstd wqm-zstd-verified wqm-zstd-verified-enc
echo
echo "Each create run (wall s: steps):"
echo
for label in curl curl-synced curl-same-work wqm-plain wqm-plain-verified wqm-zstd wqm-zstd-verified wqm-zstd-verified-enc; do
  paste -d'|' <(cut -d' ' -f1 "$out/$label.all") "$out/$label.steps" |
    awk -F'|' -v label="$label" '{printf "- %s: %s s (%s)\n", label, $1, $2}'
done
echo
echo "Each create run against the curl run of its round:"
echo
rounds curl curl-synced curl-same-work wqm-plain wqm-plain-verified wqm-zstd wqm-zstd-verified wqm-zstd-verified-enc
echo
echo "During the creates, $creates_pressure."
[ "$runs_restore" -gt 0 ] || exit 0
echo
echo "Restore (upload, recover, delete the uploaded file):"
echo
table curl-upload restore-plain restore-plain-verified restore-zstd restore-zstd-verified restore-zstd-verified-enc
echo
echo "During the restores, $restores_pressure."
