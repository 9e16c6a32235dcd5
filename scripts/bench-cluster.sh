#!/usr/bin/env bash
# Times `wqm backup create` and `wqm backup restore` of the same data on a three-node Qdrant
# cluster (3 shards, 2 replicas per collection) and on a single node, on 127.0.0.1: five
# collections (`projects`, `libraries`, `rules`, `scratchpad`, `images`) of 20000 points, 384-dim
# dense + sparse vectors. Not a test: run it on a quiet machine and copy the table into
# docs/performance.md.
#
#   scripts/bench-cluster.sh                          # 5 x 20000 x 384, 3 runs
#   BENCH_POINTS=2000 BENCH_RUNS=1 scripts/bench-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh
points=${BENCH_POINTS:-20000}
dim=${BENCH_DIM:-384}
names=(projects libraries rules scratchpad images)
runs=${BENCH_RUNS:-3}
bin=$(../shared/bin/qdrant-path)
work=$(mktemp -d "${TMPDIR:-/tmp}/wqm-bench-cluster.XXXXXX")
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT

cargo build --release --locked --quiet
wqm=${CARGO_TARGET_DIR:-$PWD/target}/release/wqm
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# node NAME HTTP_PORT [cluster: P2P_PORT [BOOTSTRAP_P2P_PORT]]
node() {
  local name=$1 http=$2 p2p=${3:-} boot=${4:-}
  local args=(--disable-telemetry)
  mkdir -p "$work/$name"
  local env=(QDRANT__SERVICE__HOST=127.0.0.1 QDRANT__SERVICE__HTTP_PORT=$http
    QDRANT__SERVICE__GRPC_PORT=$(free_port) QDRANT__CLUSTER__P2P__PORT=${p2p:-$(free_port)}
    QDRANT__STORAGE__STORAGE_PATH=$work/$name/storage QDRANT__STORAGE__SNAPSHOTS_PATH=$work/$name/snapshots
    QDRANT__STORAGE__TEMP_PATH=$work/$name/tmp QDRANT__TELEMETRY_DISABLED=true QDRANT__LOG_LEVEL=WARN)
  if [ -n "$p2p" ]; then
    env+=(QDRANT__CLUSTER__ENABLED=true)
    args+=(--uri "http://127.0.0.1:$p2p")
    [ -n "$boot" ] && args+=(--bootstrap "http://127.0.0.1:$boot")
  fi
  # `exec`: the pid is the server's, so the trap stops it (a server left running would also keep
  # holding any lock the caller took with `flock`).
  (cd "$work/$name" && exec env "${env[@]}" "$bin" "${args[@]}" > log 2>&1) &
  pids+=($!)
  until curl -fsS "http://127.0.0.1:$http/readyz" >/dev/null 2>&1; do sleep 0.1; done
}

single=$(free_port); node single "$single"
h1=$(free_port); p1=$(free_port); node n1 "$h1" "$p1"
h2=$(free_port); node n2 "$h2" "$(free_port)" "$p1"
h3=$(free_port); node n3 "$h3" "$(free_port)" "$p1"
until [ "$(curl -fsS "http://127.0.0.1:$h1/cluster" | jq '.result.peers | length')" = 3 ]; do sleep 0.2; done
nodes="http://127.0.0.1:$h1,http://127.0.0.1:$h2,http://127.0.0.1:$h3"

echo "loading 5 x $points x $dim points twice..." >&2
for name in "${names[@]}"; do
  python3 scripts/bench_load.py "http://127.0.0.1:$single" "$name" "$points" "$dim" 1 1 sparse
  python3 scripts/bench_load.py "http://127.0.0.1:$h1" "$name" "$points" "$dim" 3 2 sparse
done

# measure LABEL URL COMMAND...: wall seconds, appended to $work/LABEL
measure() {
  local label=$1; shift
  sync
  /usr/bin/time -f '%e' -o "$work/$label.t" "$@" >/dev/null
  cat "$work/$label.t" >> "$work/$label"
}
for i in $(seq "$runs"); do
  echo "run $i/$runs" >&2
  for target in single cluster; do
    if [ $target = single ]; then url=http://127.0.0.1:$single; extra=(); else url=http://127.0.0.1:$h1; extra=(QDRANT_NODES=$nodes); fi
    rm -rf "$work/backup-$target"
    measure "$target-create" env QDRANT_URL="$url" "${extra[@]}" WQM_DATA_DIR="$work/none" "$wqm" backup create "$work/backup-$target"
    for name in "${names[@]}"; do curl -fsS -X DELETE "$url/collections/$name" >/dev/null; done
    measure "$target-restore" env QDRANT_URL="$url" "${extra[@]}" WQM_DATA_DIR="$work/none" "$wqm" backup restore "$work/backup-$target" --force
  done
  # The cluster with one snapshot in flight (as before issue 13) and with three (one per node).
  for p in 1 3; do
    rm -rf "$work/backup-p$p"
    measure "cluster-create-p$p" env QDRANT_URL="http://127.0.0.1:$h1" QDRANT_NODES="$nodes" WQM_BACKUP__TRANSFER__PARALLEL=$p WQM_DATA_DIR="$work/none" "$wqm" backup create "$work/backup-p$p"
  done
done

size=$(du -sb "$work/backup-single" | cut -f1)
echo
echo "5 collections x $points points x $dim dims (dense + sparse); backup of the single node: $size bytes. Median of $runs runs."
echo
sc=$(median < "$work/single-create"); cc=$(median < "$work/cluster-create")
echo "| Qdrant | create (s) | restore (s) |"
echo "|---|---|---|"
echo "| single node | $sc | $(median < "$work/single-restore") |"
ratio() { awk -v a="$1" -v b="$sc" 'BEGIN {printf "%.2fx", a / b}'; }
echo "| 3 nodes, 3 shards x 2 replicas | $cc ($(ratio "$cc")) | $(median < "$work/cluster-restore") |"
for p in 1 3; do
  c=$(median < "$work/cluster-create-p$p")
  echo "| 3 nodes, parallel $p | $c ($(ratio "$c")) | |"
done
