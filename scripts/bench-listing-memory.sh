#!/usr/bin/env bash
# Peak memory of `wqm backup create --incremental` to S3 (SeaweedFS on loopback) against the size
# of the repository's chunk store: a real repository, then pack indexes naming BENCH_CHUNKS
# synthetic chunks added to it (index objects only: a create loads every index and reads no
# chunk it reuses), then the same small create again. Not a test: run it by hand and copy the
# table into docs/performance.md.
#
#   scripts/bench-listing-memory.sh                                  # 1,000,000 chunks
#   BENCH_BASELINE=/path/to/an/older/wqm scripts/bench-listing-memory.sh   # both, same store
set -euo pipefail
cd "$(dirname "$0")/.."
chunks=${BENCH_CHUNKS:-1000000}
out=$(mktemp -d "${TMPDIR:-/tmp}/wqm-bench-listing.XXXXXX")
. scripts/bench-lib.sh

with_servers
export TMPDIR=$out/tmp
mkdir -p "$TMPDIR"
load_workspace 2000
binaries=("$wqm" ${BENCH_BASELINE:+"$BENCH_BASELINE"})

"$wqm" backup create "$repo/first" --incremental --json > /dev/null
run=0
create_all() { # create_all LABEL: one small create per binary, timed
  for bin in "${binaries[@]}"; do
    run=$((run + 1))
    time_of "$1-$(basename "$bin")" "$bin" backup create "$repo/n$run" --incremental --json
  done
}
create_all empty

echo "writing the indexes of $chunks synthetic chunks..." >&2
python3 - "$chunks" "$S3_BUCKET" <<'PY'
import os, sys, secrets, concurrent.futures
import boto3
chunks = int(sys.argv[1])
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                  aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                  aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                  region_name=os.environ["AWS_REGION"])
bucket = sys.argv[2]
per_pack = 64
def one(_):
    lines = ["wqm-pack-index 1"]
    offset = 0
    for _ in range(per_pack):
        stored = 40000 + secrets.randbelow(40000)
        lines.append(f"{secrets.token_hex(32)} {offset} {stored} {stored + 100}")
        offset += stored
    body = ("\n".join(lines) + "\n").encode()
    s3.put_object(Bucket=bucket, Key=f"bench/.wqm-chunks/index/{secrets.token_hex(16)}", Body=body)
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    list(pool.map(one, range(chunks // per_pack)))
PY
create_all big

echo
echo "## Peak RSS of an incremental create to S3 against the store's size ($(date -u +%F), $(nproc) cores)"
echo
echo "| binary | empty store: s, MiB | $chunks more chunks: s, MiB | bytes a chunk |"
echo "|---|---|---|---|"
for bin in "${binaries[@]}"; do
  b=$(basename "$bin")
  read -r s0 k0 < "$out/empty-$b.all"
  read -r s1 k1 < "$out/big-$b.all"
  echo "| $b | $s0, $(awk -v k="$k0" 'BEGIN {printf "%.1f", k / 1024}') | $s1, $(awk -v k="$k1" 'BEGIN {printf "%.1f", k / 1024}') | $(awk -v a="$k0" -v b="$k1" -v n="$chunks" 'BEGIN {printf "%.0f", (b - a) * 1024 / n}') |"
done
