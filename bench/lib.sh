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
