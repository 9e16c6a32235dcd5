#!/usr/bin/env bash
# What `wqm backup create --force` costs on S3 (SeaweedFS on loopback) over a create to a new
# name, full and incremental, against the same pair into a local directory: the new backup is
# sent beside the old one, then put in place under the exclusive lock with copies on the server
# (docs/architecture.md, "`--force` on S3"). Not a test: run it by hand (under the machine lock
# where several share the machine) and copy the tables into docs/performance.md.
#
#   scripts/bench-s3-force.sh                          # 40000 points, 5 pairs of each
#   BENCH_POINTS=8000 BENCH_RUNS=1 scripts/bench-s3-force.sh   # a quick look
#   BENCH_BASELINE=/path/to/an/older/wqm scripts/bench-s3-force.sh   # its full create to S3 too
set -euo pipefail
cd "$(dirname "$0")/.."
points=${BENCH_POINTS:-40000}
runs=${BENCH_RUNS:-5}
out=$(mktemp -d "${TMPDIR:-/tmp}/wqm-bench-s3-force.XXXXXX")
. scripts/bench-lib.sh

with_servers
export TMPDIR=$out/tmp
mkdir -p "$TMPDIR"
load_workspace "$points"

create() { # create LABEL TARGET FLAGS...: timed, its JSON in $out/LABEL.out
  local label=$1 target=$2; shift 2
  time_of "$label" "$wqm" backup create "$target" --json "$@"
}
# The names replaced, made once.
"$wqm" backup create "$repo/full" --json > /dev/null
"$wqm" backup create "$repo/nightly" --incremental --json > /dev/null
"$wqm" backup create "$out/backups/full" --json > /dev/null
"$wqm" backup create "$out/backups/nightly" --incremental --json > /dev/null

# Pair by pair, the order alternating: a new name against `--force` over the same one.
for i in $(seq "$runs"); do
  if [ $((i % 2)) -eq 1 ]; then
    create s3-new "$repo/new-$i"; create s3-force "$repo/full" --force
  else
    create s3-force "$repo/full" --force; create s3-new "$repo/new-$i"
  fi
  if [ -n "${BENCH_BASELINE:-}" ]; then
    time_of s3-new-baseline "$BENCH_BASELINE" backup create "$repo/baseline-$i" --json
  fi
  create s3-inc-new "$repo/nightly-$i" --incremental
  create s3-inc-force "$repo/nightly" --incremental --force
  create local-new "$out/backups/new-$i"
  create local-force "$out/backups/full" --force
  create local-inc-new "$out/backups/nightly-$i" --incremental
  create local-inc-force "$out/backups/nightly" --incremental --force
  rm -rf "$out/backups/new-$i"
done
"$wqm" backup validate "$repo/full" --check-files > /dev/null
"$wqm" backup validate "$repo/nightly" --check-files > /dev/null

echo
echo "## create --force on S3, ${points} points ($(date -u +%F), $(nproc) cores), $runs runs each"
echo
echo "Full backups:"
echo
table s3-new s3-force local-new local-force ${BENCH_BASELINE:+s3-new-baseline}
echo
echo "Incremental (every chunk there already):"
echo
table s3-inc-new s3-inc-force local-inc-new local-inc-force
