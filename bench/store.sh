#!/usr/bin/env bash
# ssefs on a store against the client library alone (issue 14): a 1 GiB
# file put and got through `ssefs object put/get` (AES256 and SM4) and
# through object_store with ssefs's own client settings
# (bench/store_raw.rs), on the same three-node Garage cluster on
# 127.0.0.1, rounds interleaved. Prints medians, MB/s and ratios, and
# writes bench/results/DATE-store-put-get.{md,csv}.
#
# Needs root only for drop_caches; builds what it runs. Settings:
#   SIZE_MB=1024 ROUNDS=3 GARAGE_PORT_BASE=4500 SSEFS_BIN=... OUT=...
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SIZE_MB=${SIZE_MB:-1024}
ROUNDS=${ROUNDS:-3}
export GARAGE_PORT_BASE=${GARAGE_PORT_BASE:-4500}
cd "$REPO"
if [ -z "${SSEFS_BIN:-}" ]; then
  cargo build --release --bins --example store_raw >&2
  SSEFS_BIN=target/release/ssefs
fi
RAW=${RAW_BIN:-target/release/examples/store_raw}
WORK=$(mktemp -d /var/tmp/ssefs-store-bench.XXXXXX)
cleanup() { ./scripts/garage.sh stop "$WORK/garage" >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT
./scripts/garage.sh start "$WORK/garage" 2>/dev/null
set -a; . "$WORK/garage/env"; set +a
export SSEFS_S3_ENDPOINTS=$SSEFS_TEST_S3_ENDPOINTS
export SSEFS_BACKEND=s3://$SSEFS_TEST_S3_BUCKET/bench
export SSEFS_KEY_DIR=$WORK/keys SSEFS_STATE_DIR=$WORK/state
"$SSEFS_BIN" init >/dev/null
"$SSEFS_BIN" bucket create bench >/dev/null
head -c $((SIZE_MB << 20)) /dev/urandom >"$WORK/in"

drop() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
# seconds of one command, caches dropped first
timed() {
  drop
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }'
}

CSV=$WORK/results.csv
echo "round,system,op,seconds" >"$CSV"
for r in $(seq "$ROUNDS"); do
  echo "round $r" >&2
  echo "$r,object_store,put,$(timed "$RAW" put "$WORK/in" bench/raw)" >>"$CSV"
  echo "$r,object_store,get,$(timed "$RAW" get bench/raw "$WORK/out")" >>"$CSV"
  echo "$r,object_store-ranged,get,$(timed "$RAW" get-ranged bench/raw "$WORK/out")" >>"$CSV"
  for sse in AES256 SM4; do
    echo "$r,ssefs-$sse,put,$(timed "$SSEFS_BIN" object put "bench/$sse" "$WORK/in" --sse "$sse")" >>"$CSV"
    echo "$r,ssefs-$sse,get,$(timed "$SSEFS_BIN" object get "bench/$sse" "$WORK/out")" >>"$CSV"
    cmp -s "$WORK/in" "$WORK/out" || { echo "ssefs-$sse: bytes differ" >&2; exit 1; }
  done
done

DATE=$(date +%Y-%m-%d)
OUT=${OUT:-$REPO/bench/results/$DATE-store-put-get}
cp "$CSV" "$OUT.csv"
python3 - "$CSV" "$SIZE_MB" >"$OUT.md" <<'EOF'
import csv, statistics, sys, platform, os
rows = list(csv.DictReader(open(sys.argv[1])))
mb = int(sys.argv[2]) * 1.048576
med = {}
for r in rows:
    med.setdefault((r["system"], r["op"]), []).append(float(r["seconds"]))
base = {"put": statistics.median(med[("object_store", "put")]),
        "get": statistics.median(med[("object_store", "get")])}
print(f"# {sys.argv[2]} MiB put/get: ssefs on a store against object_store alone\n")
print(f"Three Garage 2.5.0 nodes on 127.0.0.1 (replication 3, one disk), "
      f"{len(set(r['round'] for r in rows))} rounds interleaved, page cache dropped before each; "
      f"host {platform.node()}, {os.cpu_count()} CPUs.\n")
print("| system | op | median s | MB/s | vs object_store | rounds (s) |")
print("|---|---|---|---|---|---|")
for (s, op), v in med.items():
    m = statistics.median(v)
    print(f"| {s} | {op} | {m:.2f} | {mb/m:.0f} | {base[op]/m:.2f}x | {', '.join(f'{x:.2f}' for x in v)} |")
EOF
cat "$OUT.md"
