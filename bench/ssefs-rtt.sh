#!/usr/bin/env bash
# The cost of one ssefs request round trip, classic /dev/fuse against
# -o io_uring: statvfs() of the mount N times (STATFS always goes to the
# daemon; stat would be answered from the kernel's 1 s attribute cache),
# the two transports alternating for ROUNDS rounds on one data directory.
# Prints round,transport,us_per_statvfs. Needs root and a kernel with
# /sys/module/fuse/parameters/enable_uring; puts it back as it found it.
# See bench/results/2026-12-04-ssefs-io-uring.md.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SSEFS=${SSEFS:-$REPO/target/release/ssefs}
W=${WORKDIR:-/work/bench-work-ssefs-rtt}
N=${N:-50000}
ROUNDS=${ROUNDS:-5}
CALL=statvfs TARGET=$W/mnt
. "$REPO/bench/lib.sh"
export SSEFS_DATA_DIR=$W/data SSEFS_KEY_DIR=$W/keys
mkdir -p "$W/mnt"
mount_fs() {
    local opt=()
    [ "$1" = classic ] || opt=(-o io_uring)
    "$SSEFS" mount "$W/mnt" "${opt[@]}" >&2
    stat "$W/mnt" >/dev/null
    pid=$(pgrep -nf -- "mount $W/mnt.*--foreground") || die "no daemon"
    rings=$(cat /proc/"$pid"/task/*/comm | grep -c '^ssefs-uring' || true)
    if [ "$1" = uring ] && [ "$rings" = 0 ]; then die "daemon $pid has no io_uring queue threads"; fi
}
rtt_rounds
