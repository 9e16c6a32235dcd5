# Shared by the benchmark scripts (sourced, after `out` is set): timing with peak RSS, medians,
# and the comparison table.

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
