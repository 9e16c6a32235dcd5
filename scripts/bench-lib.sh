# Shared by the benchmark scripts (sourced, after `out` is set): timing with peak RSS, medians,
# and the comparison table.

# A step that fails says which (the scripts send most output to /dev/null, and `set -e` would
# otherwise end the run without a word); `-E` so that it holds inside functions too.
set -E
trap 'status=$?; echo "$(basename "$0"): line $LINENO: \`$BASH_COMMAND\` failed (exit $status)" >&2' ERR

# `time_of NAME COMMAND...`: wall seconds and peak RSS (KiB), appended to $out/NAME.all; the
# command's stdout goes to $out/NAME.out. `sync` first, so the previous run's writeback does not
# slow this one down (curl does not fsync its file; wqm fsyncs every file it writes).
time_of() {
  local name=$1; shift
  sync
  /usr/bin/time -f '%e %M' -o "$out/$name.time" "$@" > "$out/$name.out"
  cat "$out/$name.time" >> "$out/$name.all"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The disk and the cores are shared with other machines: how much of a stretch of the run some
# task waited for the disk or for a core (`/proc/pressure`, "some"), so that a disturbed run
# shows as one. `mark=$(pressure_mark)` at its start, `pressure_since "$mark"` at its end.
pressure_mark() {
  echo "$(date +%s.%N) $(pressure_total io) $(pressure_total cpu)"
}
pressure_total() { # microseconds some task has waited, since boot
  awk '/^some/ {sub("total=", "", $5); print $5}' "/proc/pressure/$1" 2>/dev/null || echo 0
}
pressure_since() {
  local t0 io0 cpu0
  read -r t0 io0 cpu0 <<< "$1"
  awk -v t0="$t0" -v t1="$(date +%s.%N)" -v io0="$io0" -v io1="$(pressure_total io)" \
    -v cpu0="$cpu0" -v cpu1="$(pressure_total cpu)" \
    'BEGIN {s = (t1 - t0) * 1e6; printf "some task waited for the disk %.1f %%, for a core %.1f %% of the time\n", 100 * (io1 - io0) / s, 100 * (cpu1 - cpu0) / s}'
}

# `table BASELINE LABEL...`: median wall time of each label, its ratio to BASELINE's, peak RSS.
table() {
  local base wall rss ratio label
  base=$(cut -d' ' -f1 "$out/$1.all" | median)
  echo "| path | wall (s) | vs $1 | peak RSS (MiB) |"
  echo "|---|---|---|---|"
  for label in "$@"; do
    wall=$(cut -d' ' -f1 "$out/$label.all" | median)
    rss=$(cut -d' ' -f2 "$out/$label.all" | sort -n | tail -1)
    ratio=$(awk -v a="$wall" -v b="$base" 'BEGIN {printf "%.2fx", a / b}')
    echo "| $label | $wall | $ratio | $(awk -v k="$rss" 'BEGIN {printf "%.1f", k / 1024}') |"
  done
}

# `rounds BASELINE LABEL...`: each label's wall time against BASELINE's run by run (the runs of
# one round follow each other, so a stretch the machine slowed down slows both), and the median.
rounds() {
  local base=$1 label ratios; shift
  for label in "$@"; do
    ratios=$(paste -d' ' <(cut -d' ' -f1 "$out/$label.all") <(cut -d' ' -f1 "$out/$base.all") |
      awk '{printf "%.2f\n", $1 / $2}')
    echo "- $label: $(paste -sd" " <<< "$ratios") (median $(median <<< "$ratios"))"
  done
}

# `with_servers`: builds wqm (release) as $wqm, starts a throwaway Qdrant and S3 server (both
# stopped, and $out removed, on exit) and exports what wqm needs to reach them; $repo is the S3
# repository `s3://BUCKET/bench`.
with_servers() {
  cargo build --release --locked --quiet
  wqm=${CARGO_TARGET_DIR:-$PWD/target}/release/wqm
  eval "$(../shared/bin/qdrant-serve --storage "$out/storage")"
  eval "$(../shared/bin/s3-serve)"
  trap 'kill $QDRANT_PID 2>/dev/null; kill -9 "$S3_PID" 2>/dev/null; rm -rf "$out" "$S3_DIR"' EXIT
  export QDRANT_URL WQM_DATA_DIR=$out/data WQM_BACKUP__DAEMON__PROCESS_NAME=wqm-bench-no-daemon
  export AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
  repo=s3://$S3_BUCKET/bench
}

# `load_workspace POINTS`: the benchmark collection of POINTS points, and the state database.
load_workspace() {
  echo "loading $1 points..." >&2
  python3 scripts/bench_incremental.py load "$QDRANT_URL" projects "$1"
  mkdir -p "$out/data"
  sqlite3 "$out/data/state.db" < tests/fixtures/state-db/schema.sql
  sqlite3 "$out/data/state.db" < tests/fixtures/state-db/sample-data.sql
}
