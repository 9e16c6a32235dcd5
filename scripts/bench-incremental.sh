#!/usr/bin/env bash
# Incremental backups over nights of churn, on the real Qdrant server, beside restic over the
# same nights' uncompressed snapshots, in one run. Not a test: run it by hand and copy the tables
# into docs/performance.md.
#
#   scripts/bench-incremental.sh                          # 40000 points, 30 nights
#   BENCH_POINTS=8000 BENCH_NIGHTS=5 scripts/bench-incremental.sh   # a quick look
#
# Each night: ~1 % new points, ~1 % payloads edited, ~0.25 % deleted (scripts/bench_incremental.py),
# rows of the state database touched; then `wqm backup create --incremental`, and restic backs up
# the same night's snapshot (downloaded with curl) and database. At the end: full vs incremental
# create and restore times on the same data, and the store at 32–256 KiB average chunks.
# Each create's file reads are counted (scripts/io_of.py: /proc/PID/io `rchar`, page cache
# included; the snapshot's download is a socket and not counted) with its verify phase's time.
set -euo pipefail
cd "$(dirname "$0")/.."
points=${BENCH_POINTS:-40000}
nights=${BENCH_NIGHTS:-30}
runs=${BENCH_RUNS:-3}
out=$(mktemp -d "${TMPDIR:-/tmp}/wqm-bench-inc.XXXXXX")
. scripts/bench-lib.sh
command -v restic >/dev/null || { echo "restic is needed (apt-get install restic)" >&2; exit 1; }

cargo build --release --locked --quiet --example chunk_sizes
cargo build --release --locked --quiet
wqm=${CARGO_TARGET_DIR:-$PWD/target}/release/wqm
eval "$(../shared/bin/qdrant-serve --storage "$out/storage")"
trap 'kill $QDRANT_PID 2>/dev/null; rm -rf "$out"' EXIT
export QDRANT_URL WQM_DATA_DIR=$out/data WQM_BACKUP__DAEMON__PROCESS_NAME=wqm-bench-no-daemon
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$out/restic

echo "loading $points points..." >&2
python3 scripts/bench_incremental.py load "$QDRANT_URL" projects "$points"
mkdir -p "$out/data" "$out/restic-in" "$out/nights"
sqlite3 "$out/data/state.db" < tests/fixtures/state-db/schema.sql
sqlite3 "$out/data/state.db" < tests/fixtures/state-db/sample-data.sql
restic init --repository-version 2 -q
# The same nights into an encrypted repository too (issue 21: encryption's cost, same run).
export WQM_BACKUP_PASSWORD=bench-Pa55word
"$wqm" backup init "$out/enc" --encrypt >/dev/null

# Bytes as files hold them, and as the filesystem allocates them (blocks: one file per chunk
# costs a partly filled block, which a pack-based store like restic's does not pay).
bytes() { du -sb "$@" | awk '{s += $1} END {print s}'; }
allocated() { du -s --block-size=1 "$@" | awk '{s += $1} END {print s}'; }
night_name() { printf 'night-%02d' "$1"; }

# `create LABEL TARGET ARGS...`: a timed create (JSON out) whose file reads go to $out/LABEL.io
# and, with its verify phase's seconds, are appended to $out/LABEL.reads as `rchar verify-s`.
create() {
  local label=$1 target=$2; shift 2
  time_of "$label" python3 scripts/io_of.py "$out/$label.io" "$wqm" backup create "$target" --json "$@"
  echo "$(cut -d' ' -f1 "$out/$label.io") $(jq '[.phases[] | select(.phase == "verify") | .seconds] | add // 0 | . * 1000 | round / 1000' "$out/$label.out")" >> "$out/$label.reads"
}
mib() { echo "scale=1; $1 / 1048576" | bc; }

create full-first "$out/full/first"
full_size=$(bytes "$out/full/first")

printf '| night | wqm added | wqm store total | restic repository | create s | verify s | files read MiB | RSS MiB |\n|---|---|---|---|---|---|---|---|\n' > "$out/nights.md"
for n in $(seq "$nights"); do
  if [ "$n" -gt 1 ]; then
    python3 scripts/bench_incremental.py churn "$QDRANT_URL" projects "$points" "$n"
    sqlite3 "$out/data/state.db" "UPDATE tracked_files SET file_mtime = datetime('now'), chunk_count = chunk_count + 1 WHERE file_id % 7 = $n % 7;"
  fi
  name=$(night_name "$n")
  create inc-night "$out/inc/$name" --incremental
  added=$(jq .chunk_store.bytes_added "$out/inc-night.out")
  create inc-night-enc "$out/enc/$name" --incremental
  # The same night for restic: the uncompressed snapshot (curl) and a copy of the database.
  snap=$(curl -sS -X POST "$QDRANT_URL/collections/projects/snapshots?wait=true" | jq -r .result.name)
  curl -sS -o "$out/nights/$name.snapshot" "$QDRANT_URL/collections/projects/snapshots/$snap"
  curl -sS -X DELETE "$QDRANT_URL/collections/projects/snapshots/$snap?wait=true" >/dev/null
  cp "$out/nights/$name.snapshot" "$out/restic-in/projects.snapshot"
  sqlite3 "$out/data/state.db" ".backup '$out/restic-in/state.db'"
  restic backup -q "$out/restic-in"
  read -r seconds rss < "$out/inc-night.time"
  read -r rchar verify < <(tail -1 "$out/inc-night.reads")
  printf '| %d | %.1f MiB | %.1f MiB | %.1f MiB | %s | %s | %s | %d |\n' "$n" \
    "$(echo "$added / 1048576" | bc -l)" "$(echo "$(bytes "$out/inc") / 1048576" | bc -l)" \
    "$(echo "$(bytes "$out/restic") / 1048576" | bc -l)" "$seconds" "$verify" "$(mib "$rchar")" $((rss / 1024)) >> "$out/nights.md"
  echo "night $n: added $added bytes in $seconds s" >&2
done

# Create and restore on the same (last night's) data: full vs incremental, pair by pair.
for i in $(seq "$runs"); do
  rm -rf "$out/full/last-$i"
  create full-create "$out/full/last-$i"
  create inc-create "$out/inc/extra-$i" --incremental
  create inc-create-enc "$out/enc/extra-$i" --incremental
done
restore() { # restore LABEL BACKUP
  time_of "$1" env WQM_BACKUP__AUTO_BACKUP_BEFORE_RESTORE=false "$wqm" backup restore "$2" --force --overwrite
}
# The encrypted restore reads the last night copied (re-keyed) into an encrypted repository of
# its own: the same content as the plain night, so the two restores differ by encryption alone
# (the encrypted repository's own night was made after the plain one, of a collection Qdrant
# had optimized since, which restores faster by itself).
"$wqm" backup init "$out/enc-same" --encrypt >/dev/null
"$wqm" backup copy "$out/inc" "$out/enc-same" "$(night_name "$nights")" >/dev/null
for i in $(seq "$runs"); do
  restore restore-full "$out/full/last-1"
  restore restore-night-1 "$out/inc/$(night_name 1)"
  restore restore-night-last "$out/inc/$(night_name "$nights")"
  restore restore-night-last-enc "$out/enc-same/$(night_name "$nights")"
done
for i in $(seq "$runs"); do rm -rf "$out/inc/extra-$i" "$out/enc/extra-$i"; done
enc_size=$(bytes "$out/enc")
store_size=$(bytes "$out/inc")
restic_size=$(bytes "$out/restic")
full_alloc=$(allocated "$out/full/first")
store_alloc=$(allocated "$out/inc")
restic_alloc=$(allocated "$out/restic")

stat_of() { # stat_of NAME: "median-seconds max-RSS-MiB median-verify-s median-files-read-MiB"
  local reads="- -"
  [ -f "$out/$1.reads" ] && reads="$(cut -d' ' -f2 "$out/$1.reads" | median) $(mib "$(cut -d' ' -f1 "$out/$1.reads" | median)")"
  echo "$(cut -d' ' -f1 "$out/$1.all" | median) $(( $(cut -d' ' -f2 "$out/$1.all" | sort -n | tail -1) / 1024 )) $reads"
}
echo
echo "## $nights nights of ${points}-point churn ($(date -u +%F), $(nproc) cores)"
echo
cat "$out/nights.md"
echo
ratio() { echo "scale=3; $1 / $2" | bc; }
echo "| | bytes | × one full | allocated on disk | × one full |"
echo "|---|---|---|---|---|"
echo "| one full backup (zstd), night 1 | $full_size | 1.00 | $full_alloc | 1.00 |"
echo "| wqm: $nights incremental nights (store + backups) | $store_size | $(ratio "$store_size" "$full_size") | $store_alloc | $(ratio "$store_alloc" "$full_alloc") |"
echo "| wqm: the same nights, encrypted repository | $enc_size | $(ratio "$enc_size" "$full_size") | - | - |"
echo "| restic 0.14 repository, same nights (uncompressed snapshots + db, its zstd) | $restic_size | $(ratio "$restic_size" "$full_size") | $restic_alloc | $(ratio "$restic_alloc" "$full_alloc") |"
echo
echo "| command, same data | median s | peak RSS MiB | verify s | files read MiB |"
echo "|---|---|---|---|---|"
for name in full-create inc-create inc-create-enc inc-night inc-night-enc restore-full restore-night-1 restore-night-last restore-night-last-enc; do
  read -r s r v m <<< "$(stat_of "$name")"
  echo "| $name | $s | $r | $v | $m |"
done
echo
echo "Average chunk size over the $nights nights' snapshots:"
echo
"${CARGO_TARGET_DIR:-target}"/release/examples/chunk_sizes "$out"/nights/*.snapshot
