#!/usr/bin/env bash
# `wqm backup create --incremental` to S3 (SeaweedFS on loopback) against the same create into a
# local directory, over nights of ~1 % churn on the real Qdrant server. Not a test: run it by
# hand (under the machine lock where several share the machine) and copy the tables into
# docs/performance.md.
#
#   scripts/bench-s3-incremental.sh                                   # 20000 points, 10 nights
#   BENCH_POINTS=8000 BENCH_NIGHTS=3 BENCH_RUNS=1 scripts/bench-s3-incremental.sh   # a quick look
#   BENCH_BASELINE=/path/to/an/older/wqm scripts/bench-s3-incremental.sh   # its S3 runs too
#
# Each night (scripts/bench_incremental.py churn, rows of the state database touched) is backed
# up twice, the order alternating night by night: `create DIR/night-NN --incremental` and
# `create s3://BUCKET/bench/night-NN --incremental` (its chunks staged locally, only those the
# repository lacks, then sent). Then BENCH_RUNS pairs on the last night's data, and BENCH_RUNS
# pairs of a first night into an empty repository (every chunk new): median wall time and peak
# RSS of each (scripts/bench-lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
points=${BENCH_POINTS:-20000}
nights=${BENCH_NIGHTS:-10}
runs=${BENCH_RUNS:-3}
out=$(mktemp -d "${TMPDIR:-/tmp}/wqm-bench-s3-inc.XXXXXX")
. scripts/bench-lib.sh

with_servers
# The S3 create stages in $TMPDIR: on the same disk as the local repository.
export TMPDIR=$out/tmp
mkdir -p "$TMPDIR"

load_workspace "$points"

create() { # create LABEL TARGET [WQM]: timed, its JSON in $out/LABEL.out
  time_of "$1" "${3:-$wqm}" backup create "$2" --incremental --json
}
mib() { echo "scale=1; $1 / 1048576" | bc; }
printf '| night | local s | S3 s | added MiB (local) | added MiB (S3) | chunks sent to S3 | reused chunks compared (S3) |\n|---|---|---|---|---|---|---|\n' > "$out/nights.md"
for n in $(seq "$nights"); do
  if [ "$n" -gt 1 ]; then
    python3 scripts/bench_incremental.py churn "$QDRANT_URL" projects "$points" "$n"
    sqlite3 "$out/data/state.db" "UPDATE tracked_files SET file_mtime = datetime('now'), chunk_count = chunk_count + 1 WHERE file_id % 7 = $n % 7;"
  fi
  name=$(printf 'night-%02d' "$n")
  if [ $((n % 2)) -eq 1 ]; then
    create night-local "$out/backups/$name"; create night-s3 "$repo/$name"
  else
    create night-s3 "$repo/$name"; create night-local "$out/backups/$name"
  fi
  if [ -n "${BENCH_BASELINE:-}" ]; then
    # Its own repository, with the same history.
    create night-s3-baseline "$repo-baseline/$name" "$BENCH_BASELINE"
  fi
  read -r local_s _ < "$out/night-local.time"
  read -r s3_s _ < "$out/night-s3.time"
  printf '| %d | %s | %s | %s | %s | %d | %d |\n' "$n" "$local_s" "$s3_s" \
    "$(mib "$(jq .chunk_store.bytes_added "$out/night-local.out")")" \
    "$(mib "$(jq .chunk_store.bytes_added "$out/night-s3.out")")" \
    "$(jq .chunk_store.chunks_added "$out/night-s3.out")" \
    "$(jq .chunk_store.chunks_compared "$out/night-s3.out")" >> "$out/nights.md"
  echo "night $n: local ${local_s}s, S3 ${s3_s}s" >&2
done

# The same (last night's) data, pair by pair.
for i in $(seq "$runs"); do
  create create-local "$out/backups/extra-$i"
  create create-s3 "$repo/extra-$i"
done

# A first night (every chunk new) into an empty repository, pair by pair, the order alternating.
for i in $(seq "$runs"); do
  if [ $((i % 2)) -eq 1 ]; then
    create first-local "$out/empty-$i/night"; create first-s3 "$repo-empty-$i/night"
  else
    create first-s3 "$repo-empty-$i/night"; create first-local "$out/empty-$i/night"
  fi
  if [ -n "${BENCH_BASELINE:-}" ]; then
    create first-s3-baseline "$repo-baseline-empty-$i/night" "$BENCH_BASELINE"
  fi
done

echo
echo "## $nights nights of ${points}-point churn, local vs S3 ($(date -u +%F), $(nproc) cores)"
echo
cat "$out/nights.md"
echo
echo "Night medians:"
echo
table night-local night-s3 ${BENCH_BASELINE:+night-s3-baseline}
echo
echo "Where the last night's time went (seconds by phase, local then S3):"
echo
jq -c .phases "$out/night-local.out" "$out/night-s3.out"
echo
echo "Same data, $runs runs each:"
echo
table create-local create-s3
echo
echo "A first night into an empty repository, $runs runs each:"
echo
table first-local first-s3 ${BENCH_BASELINE:+first-s3-baseline}
