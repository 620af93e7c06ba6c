#!/usr/bin/env bash
# The cost of one ssefs request round trip, classic /dev/fuse against
# -o io_uring: statvfs() of the mount N times (STATFS always goes to the
# daemon; stat would be answered from the kernel's 1 s attribute cache),
# the two transports alternating for ROUNDS rounds on one data directory.
# Prints round,transport,us_per_statfs. Needs root and a kernel with
# /sys/module/fuse/parameters/enable_uring; puts it back as it found it.
# See bench/results/2026-12-04-ssefs-io-uring.md.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SSEFS=${SSEFS:-$REPO/target/release/ssefs}
W=${WORKDIR:-/work/bench-work-ssefs-rtt}
N=${N:-50000}
ROUNDS=${ROUNDS:-5}
P=/sys/module/fuse/parameters/enable_uring
ORIG=$(cat "$P")
export SSEFS_DATA_DIR=$W/data SSEFS_KEY_DIR=$W/keys
mkdir -p "$W/mnt"
trap 'fusermount3 -u "$W/mnt" 2>/dev/null || true; echo "$ORIG" >"$P"' EXIT
echo "round,transport,us_per_statfs"
for r in $(seq "$ROUNDS"); do
    for mode in classic uring; do
        if [ $mode = uring ]; then echo Y >"$P"; opt=(-o io_uring); else echo N >"$P"; opt=(); fi
        "$SSEFS" mount "$W/mnt" "${opt[@]}" >&2
        stat "$W/mnt" >/dev/null
        pid=$(pgrep -nf -- "mount $W/mnt.*--foreground") || { echo "no daemon" >&2; exit 1; }
        rings=$(cat /proc/"$pid"/task/*/comm | grep -c '^ssefs-uring' || true)
        if [ $mode = uring ] && [ "$rings" = 0 ]; then echo "daemon $pid has no io_uring queue threads" >&2; exit 1; fi
        us=$(python3 - "$W/mnt" "$N" <<'PY'
import os, sys, time
p, n = sys.argv[1], int(sys.argv[2])
for _ in range(1000):
    os.statvfs(p)
t = time.perf_counter()
for _ in range(n):
    os.statvfs(p)
print("%.2f" % ((time.perf_counter() - t) / n * 1e6))
PY
)
        echo "$r,$mode,$us"
        fusermount3 -u "$W/mnt"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    done
done
