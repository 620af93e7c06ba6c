#!/usr/bin/env bash
# The cost of one FUSE request round trip, classic /dev/fuse against
# FUSE-over-io_uring: stat() of one file, N times, on libfuse's passthrough_hp
# mounted with --nocache (entry and attr timeouts 0, so every stat goes to the
# daemon), the two transports alternating for ROUNDS rounds. Prints
# round,transport,us_per_stat. Needs root, PTHP=path to passthrough_hp
# (libfuse >= 3.18), a kernel with /sys/module/fuse/parameters/enable_uring;
# puts enable_uring back as it found it. See
# bench/results/2026-12-03-fuse-io-uring.md.
set -euo pipefail
PTHP=${PTHP:?PTHP=path to passthrough_hp}
W=${WORKDIR:-/work/bench-work-rtt}
N=${N:-100000}
ROUNDS=${ROUNDS:-5}
P=/sys/module/fuse/parameters/enable_uring
ORIG=$(cat "$P")
mkdir -p "$W/back" "$W/mnt"
trap 'fusermount3 -u "$W/mnt" 2>/dev/null || true; echo "$ORIG" >"$P"' EXIT
touch "$W/back/f"
echo "round,transport,us_per_stat"
for r in $(seq "$ROUNDS"); do
    for mode in classic uring; do
        if [ $mode = uring ]; then echo Y >"$P"; opt=(-o io_uring); else echo N >"$P"; opt=(); fi
        "$PTHP" --nopassthrough --nocache "${opt[@]}" "$W/back" "$W/mnt"
        if [ $mode = uring ]; then
            pid=$(pgrep -nf -- "--nocache -o io_uring $W/back") || { echo "no daemon" >&2; exit 1; }
            sleep 0.2
            grep -qs '^fuse-ring' /proc/"$pid"/task/*/comm || { echo "daemon $pid has no io_uring queue threads" >&2; exit 1; }
        fi
        us=$(python3 - "$W/mnt/f" "$N" <<'PY'
import os, sys, time
p, n = sys.argv[1], int(sys.argv[2])
for _ in range(1000):
    os.stat(p)
t = time.perf_counter()
for _ in range(n):
    os.stat(p)
print("%.2f" % ((time.perf_counter() - t) / n * 1e6))
PY
)
        echo "$r,$mode,$us"
        fusermount3 -u "$W/mnt"
        sleep 0.5
    done
done
