# Shared by the bench scripts (sourced): logging, and unmounting the FUSE
# and loop mounts a run makes.

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

is_mounted() { findmnt -rn -M "$1" >/dev/null 2>&1; }

# Unmounts $1 (FUSE or not), retrying while it is busy, lazily as a last
# resort; returns once it is gone from the mount table.
unmount() {
    local m=$1 i
    is_mounted "$m" || return 0
    for i in $(seq 20); do
        fusermount3 -u "$m" 2>/dev/null && break
        umount "$m" 2>/dev/null && break
        sleep 0.5
    done
    if is_mounted "$m"; then
        log "warning: $m busy, lazy unmount"
        fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    fi
    for i in $(seq 50); do is_mounted "$m" || break; sleep 0.1; done
}

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# The round-trip loop of fuse-rtt.sh and ssefs-rtt.sh: ROUNDS rounds, each
# mounting with the classic transport and then with io_uring (the fuse
# module's enable_uring switched to match, and put back on exit), timing
# N calls of os.$CALL on $TARGET. The caller defines mount_fs MODE (which
# mounts $W/mnt and sets $pid to the daemon) and sets W, N, ROUNDS, CALL,
# TARGET. Prints round,transport,us_per_$CALL.
rtt_rounds() {
    local p=/sys/module/fuse/parameters/enable_uring r mode us
    RTT_ORIG=$(cat "$p")
    trap 'fusermount3 -u "$W/mnt" 2>/dev/null || true; echo "$RTT_ORIG" >/sys/module/fuse/parameters/enable_uring' EXIT
    echo "round,transport,us_per_$CALL"
    for r in $(seq "$ROUNDS"); do
        for mode in classic uring; do
            if [ $mode = uring ]; then echo Y >"$p"; else echo N >"$p"; fi
            mount_fs $mode
            us=$(python3 - "$CALL" "$TARGET" "$N" <<'PY'
import os, sys, time
call, p, n = getattr(os, sys.argv[1]), sys.argv[2], int(sys.argv[3])
for _ in range(1000):
    call(p)
t = time.perf_counter()
for _ in range(n):
    call(p)
print("%.2f" % ((time.perf_counter() - t) / n * 1e6))
PY
)
            echo "$r,$mode,$us"
            fusermount3 -u "$W/mnt"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        done
    done
}
