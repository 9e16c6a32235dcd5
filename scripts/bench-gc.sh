#!/usr/bin/env bash
# Garbage collection at a year's scale: prune's chunk collection over a synthetic backups
# directory of 365 incremental nights and about a million chunks (scripts/bench_gc.py writes it
# in wqm's format; no Qdrant). Not a test: run it by hand and copy the table into
# docs/performance.md.
#
#   scripts/bench-gc.sh                                       # 365 nights, ~1 M chunks
#   BENCH_NIGHTS=40 BENCH_CHUNKS=20000 scripts/bench-gc.sh    # a quick look
#   BENCH_BEFORE=/path/to/older/wqm scripts/bench-gc.sh       # that build too, same nights
#   WQM=/path/to/wqm scripts/bench-gc.sh                      # a build of your own
#   BENCH_LAYOUT=packs scripts/bench-gc.sh                    # a store of pack files
#   BENCH_LAYOUT=packs BENCH_REPACK=1M scripts/bench-gc.sh    # and `budget`: prune --max-repack-size 1M
#
# Each run works on hard-linked copies of the generated directory and prunes each three times:
# the 30 oldest nights (`-30`), then one more (`-1`), then nothing (`-0`: the collection
# alone); `budget` (BENCH_REPACK set): the same with `--max-repack-size $BENCH_REPACK`; `lists`: the nights with their reference lists, as `create` writes them; `indexes`: the
# same nights without (as older backups are), read from their indexes; `before`: another wqm
# (BENCH_BEFORE) on the nights without lists. Beside each prune, a watcher measures how long the
# store's lock is held exclusively: the longest a create or a reader waits for the collection
# (prune takes the lock only when free, so a reader running beside it would stop the collection).
# A store of pack files (BENCH_LAYOUT=packs) has no such lock file: prune's exclusive lock object
# is held for its whole run, so the wall time is the wait.
set -euo pipefail
cd "$(dirname "$0")/.."
nights=${BENCH_NIGHTS:-365}
per_night=${BENCH_CHUNKS:-215500}
layout=${BENCH_LAYOUT:-loose}
runs=${BENCH_RUNS:-3}
out=$(mktemp -d "${TMPDIR:-/tmp}/wqm-bench-gc.XXXXXX")
. scripts/bench-lib.sh
trap 'rm -rf "$out"' EXIT

if [ -z "${WQM:-}" ]; then
  cargo build --release --locked --quiet
  WQM=$PWD/target/release/wqm
fi
version=$("$WQM" --version | awk '{print $NF}')
echo "writing $nights nights of $per_night chunks..." >&2
start=$(date +%s.%N)
made=$(python3 scripts/bench_gc.py "$out/template" "$version" "$nights" "$per_night" 0.01 1 "$layout")
echo "$made, generated in $(echo "$(date +%s.%N) - $start" | bc) s; $(du -sh "$out/template" | cut -f1)" >&2

# `pruned BIN NAME KEEP`: prune with BIN keeping the KEEP newest while a watcher reads
# /proc/locks every 2 ms: how long the store's lock file is held exclusively (flock) is how long
# a create or a reader arriving then waits.
pruned() {
  local bin=$1 name=$2 keep=$3
  if [ "$layout" = packs ]; then
    time_of "$name" "$bin" backup prune "$out/b" --keep-last "$keep" "${prune_args[@]}" --json
    echo "$name: $(jq -c '.chunk_store' "$out/$name.out")" >&2
    return
  fi
  python3 - "$out/b/.wqm-chunks/lock" "$out/stop" > "$out/held" <<'PY' &
import os, sys, time
inode = ":%d " % os.stat(sys.argv[1]).st_ino
held, since = 0.0, None
while not os.path.exists(sys.argv[2]):
    with open("/proc/locks") as f:
        now_held = any("FLOCK" in l and "WRITE" in l and inode in l for l in f)
    now = time.monotonic()
    if now_held and since is None:
        since = now
    elif not now_held and since is not None:
        held, since = held + now - since, None
    time.sleep(0.002)
print("%.3f" % held)
PY
  local watcher=$!
  time_of "$name" "$bin" backup prune "$out/b" --keep-last "$keep" --json
  touch "$out/stop"
  wait "$watcher"
  rm -f "$out/stop"
  cat "$out/held" >> "$out/$name.wait"
  echo "$name: held $(cat "$out/held") s; $(jq -c '.chunk_store' "$out/$name.out")" >&2
}

# `without_refs`: the copy's nights as a wqm before reference lists wrote them (each changed
# file replaced, never written through its hard link into the template).
without_refs() {
  python3 - "$out/b" <<'PY'
import json, os, sys
for name in os.listdir(sys.argv[1]):
    meta = os.path.join(sys.argv[1], name, "metadata")
    if name.startswith(".") or not os.path.isdir(meta):
        continue
    os.unlink(os.path.join(meta, "chunk-refs"))
    with open(os.path.join(meta, "manifest.json")) as f:
        manifest = json.load(f)
    del manifest["chunk_refs"]
    with open(os.path.join(meta, "manifest.json.new"), "w") as f:
        json.dump(manifest, f, indent=2)
    os.rename(os.path.join(meta, "manifest.json.new"), os.path.join(meta, "manifest.json"))
PY
}

# `series LABEL BIN REFS [PRUNE ARGS]`: a fresh copy pruned by the 30 oldest, 1 more, then
# nothing.
series() {
  local label=$1 bin=$2 refs=$3
  prune_args=("${@:4}")
  rm -rf "$out/b"
  cp -al "$out/template" "$out/b"
  [ "$refs" = 1 ] || without_refs
  pruned "$bin" "$label-30" $((nights - 30))
  pruned "$bin" "$label-1" $((nights - 31))
  pruned "$bin" "$label-0" $((nights - 31))
}

labels=()
for _ in $(seq "$runs"); do
  if [ -n "${BENCH_BEFORE:-}" ]; then
    series before "$BENCH_BEFORE" 0
  fi
  series indexes "$WQM" 0
  series lists "$WQM" 1
  if [ -n "${BENCH_REPACK:-}" ]; then
    series budget "$WQM" 1 --max-repack-size "$BENCH_REPACK"
  fi
done
[ -n "${BENCH_BEFORE:-}" ] && labels+=(before-30 before-1 before-0)
labels+=(indexes-30 indexes-1 indexes-0 lists-30 lists-1 lists-0)
[ -n "${BENCH_REPACK:-}" ] && labels+=(budget-30 budget-1 budget-0)

echo
echo "## Garbage collection: $made, $layout ($(date -u +%F), $(nproc) cores)"
echo
table "${labels[@]}"
echo
[ "$layout" = packs ] && exit 0
echo "| run | store held exclusively (s): a create's longest wait, median of $runs |"
echo "|---|---|"
for name in "${labels[@]}"; do
  echo "| $name | $(median < "$out/$name.wait") |"
done
