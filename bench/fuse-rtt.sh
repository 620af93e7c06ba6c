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
CALL=stat TARGET=$W/mnt/f
. "$(dirname "$0")/lib.sh"
mkdir -p "$W/back" "$W/mnt"
touch "$W/back/f"
mount_fs() {
    local opt=()
    [ "$1" = classic ] || opt=(-o io_uring)
    "$PTHP" --nopassthrough --nocache "${opt[@]}" "$W/back" "$W/mnt"
    pid=$(pgrep -nf -- "--nocache.* $W/back") || die "no daemon"
    if [ "$1" = uring ]; then
        sleep 0.2
        grep -qs '^fuse-ring' /proc/"$pid"/task/*/comm || die "daemon $pid has no io_uring queue threads"
    fi
}
rtt_rounds
