#!/usr/bin/env bash
# Times `wqm backup create` and `wqm backup restore` of the same collection on a three-node
# Qdrant cluster (3 shards, 2 replicas) and on a single node, on 127.0.0.1. Not a test: run it by
# hand and copy the table into docs/performance.md.
#
#   scripts/bench-cluster.sh                          # 30000 x 512-dim points, 3 runs
#   BENCH_POINTS=5000 BENCH_RUNS=1 scripts/bench-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
points=${BENCH_POINTS:-30000}
dim=${BENCH_DIM:-512}
runs=${BENCH_RUNS:-3}
bin=$(../shared/bin/qdrant-path)
work=$(mktemp -d "${TMPDIR:-/tmp}/wqm-bench-cluster.XXXXXX")
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$work"' EXIT

cargo build --release --locked --quiet
wqm=$PWD/target/release/wqm
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
  (cd "$work/$name" && env "${env[@]}" "$bin" "${args[@]}" > log 2>&1) &
  pids+=($!)
  until curl -fsS "http://127.0.0.1:$http/readyz" >/dev/null 2>&1; do sleep 0.1; done
}

single=$(free_port); node single "$single"
h1=$(free_port); p1=$(free_port); node n1 "$h1" "$p1"
h2=$(free_port); node n2 "$h2" "$(free_port)" "$p1"
h3=$(free_port); node n3 "$h3" "$(free_port)" "$p1"
until [ "$(curl -fsS "http://127.0.0.1:$h1/cluster" | jq '.result.peers | length')" = 3 ]; do sleep 0.2; done
nodes="http://127.0.0.1:$h1,http://127.0.0.1:$h2,http://127.0.0.1:$h3"

echo "loading $points x $dim points twice..." >&2
python3 scripts/bench_load.py "http://127.0.0.1:$single" bench "$points" "$dim"
python3 scripts/bench_load.py "http://127.0.0.1:$h1" bench "$points" "$dim" 3 2

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
    curl -fsS -X DELETE "$url/collections/bench" >/dev/null
    measure "$target-restore" env QDRANT_URL="$url" "${extra[@]}" WQM_DATA_DIR="$work/none" "$wqm" backup restore "$work/backup-$target" --force
  done
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
size=$(du -sb "$work/backup-single" | cut -f1)
echo
echo "$points points x $dim dims; backup of the single node: $size bytes. Median of $runs runs."
echo
echo "| Qdrant | create (s) | restore (s) |"
echo "|---|---|---|"
echo "| single node | $(median < "$work/single-create") | $(median < "$work/single-restore") |"
echo "| 3 nodes, 3 shards x 2 replicas | $(median < "$work/cluster-create") | $(median < "$work/cluster-restore") |"
