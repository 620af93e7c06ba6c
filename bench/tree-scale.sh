#!/usr/bin/env bash
# Issue 13's scale target: a tree of FILES objects (2,000,000 by default),
# made through the mount, with the daemon's RLIMIT_NOFILE at NOFILE (4096):
# `find`, `ls -lR`, `du -s`, `rsync -a` to another directory of the mount
# and `rm -rf` must run without an error, and the daemon's RSS stay at or
# below 256 MiB throughout. Samples the daemon's VmRSS every second and
# writes a markdown report (OUT). Not run in CI: 2M files take most of an
# hour on a 2-core machine.
#
#   FILES=200000 bench/tree-scale.sh          # a quicker check
#
# Needs root (mounts, drop_caches, a loop device), fuse3, rsync, python3.
# The backend is a fresh ext4 image (loop-mounted under WORKDIR) made with
# 512-byte inodes and inline_data: objects of a few bytes (a ~170-byte
# header and tag) then live in their inodes, so 4M objects do not take
# 16 GB of data blocks. It changes nothing the daemon does.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
FILES=${FILES:-2000000}
PER_DIR=${PER_DIR:-1000}          # files per leaf directory
DIRS_PER_TOP=${DIRS_PER_TOP:-100} # leaf directories per top directory
NOFILE=${NOFILE:-4096}
RSS_LIMIT_MB=${RSS_LIMIT_MB:-256}
WORKERS=${WORKERS:-4}             # processes creating files
WORKDIR=${WORKDIR:-/work/tree-scale-work}
SSEFS=${SSEFS:-$REPO/target/release/ssefs}
OUT=${OUT:-$HERE/results/2026-12-03-tree-2m.md}
MOUNT_OPTS=${MOUNT_OPTS:-}
# rsync copies the first RSYNC_TOPS top directories (DIRS_PER_TOP * PER_DIR
# files each) while the whole tree is there; empty: all of it.
RSYNC_TOPS=${RSYNC_TOPS:-}

. "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || die "run as root"
for c in rsync python3 fusermount3 mkfs.ext4 prlimit; do command -v $c >/dev/null || die "missing $c"; done
[ -x "$SSEFS" ] || die "SSEFS=$SSEFS: cargo build --release first"

BACK=$WORKDIR/back
MNT=$WORKDIR/mnt
IMG=$WORKDIR/back.img
SAMPLES=$WORKDIR/rss.tsv
ERRS=$WORKDIR/errors.log
PID=

cleanup() {
    [ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null || true
    [ -f "$BACK/data/.ssefs/mount.log" ] && cp "$BACK/data/.ssefs/mount.log" "$WORKDIR/mount.log"
    if findmnt -rn -M "$MNT" >/dev/null 2>&1; then
        fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" || true
    fi
    # The daemon holds the backend until it has exited.
    for _ in $(seq 50); do [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
    if findmnt -rn -M "$BACK" >/dev/null 2>&1; then umount "$BACK" || umount -l "$BACK" || true; fi
    rm -f "$IMG"
}
trap cleanup EXIT

mkdir -p "$WORKDIR" "$BACK" "$MNT" "$(dirname "$OUT")"
cleanup
# Inodes for the tree, its copy and the directories, with room to spare.
INODES=$(( FILES * 2 + FILES / PER_DIR * 4 + 100000 ))
truncate -s $(( (INODES * 600 / 1048576 + 2048) ))M "$IMG"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 ${MKFS_OPTS:--I 512 -O inline_data} -N "$INODES" "$IMG"
mount -o loop "$IMG" "$BACK"

export SSEFS_DATA_DIR=$BACK/data SSEFS_KEY_DIR=$WORKDIR/keys
rm -rf "$SSEFS_KEY_DIR"
"$SSEFS" init >/dev/null 2>&1
opts=()
[ -n "$MOUNT_OPTS" ] && opts=(-o "$MOUNT_OPTS")
prlimit --nofile="$NOFILE:$NOFILE" "$SSEFS" mount "$MNT" "${opts[@]}"
PID=$(pgrep -f -- "mount $MNT.*--foreground" | head -1)
[ -n "$PID" ] || die "daemon not found"
grep "Max open files" /proc/$PID/limits >&2

# The sampler: one line a second, phase, VmRSS (KiB), descriptors.
PHASE_FILE=$WORKDIR/phase
echo setup > "$PHASE_FILE"
: > "$SAMPLES"
(
    while kill -0 "$PID" 2>/dev/null; do
        rss=$(awk '/^VmRSS/ {print $2}' /proc/$PID/status 2>/dev/null || echo 0)
        fds=$(ls /proc/$PID/fd 2>/dev/null | wc -l)
        printf '%s\t%s\t%s\n' "$(cat "$PHASE_FILE")" "$rss" "$fds" >> "$SAMPLES"
        sleep 1
    done
) &
SAMPLER=$!

: > "$ERRS"
declare -A SECS STATUS NERR
phase() {
    local name=$1; shift
    echo "$name" > "$PHASE_FILE"
    log "$name: $*"
    local t0 t1 rc=0
    t0=$(date +%s.%N)
    "$@" > "$WORKDIR/$name.out" 2> "$WORKDIR/$name.err" || rc=$?
    t1=$(date +%s.%N)
    SECS[$name]=$(echo "$t1 - $t0" | bc)
    STATUS[$name]=$rc
    NERR[$name]=$(wc -l < "$WORKDIR/$name.err")
    awk -v p="$name: " 'NR <= 20 { print p $0 }' "$WORKDIR/$name.err" >> "$ERRS"
    log "$name: ${SECS[$name]} s, exit $rc, ${NERR[$name]} error lines"
}

create_tree() {
    mkdir "$MNT/bkt"
    setfattr -n user.oss.server-side-encryption -v AES256 "$MNT/bkt"
    python3 - "$MNT/bkt" "$FILES" "$PER_DIR" "$DIRS_PER_TOP" "$WORKERS" <<'EOF'
import os, sys
from multiprocessing import Pool
root, files, per_dir, per_top, workers = sys.argv[1], *map(int, sys.argv[2:])
leaves = (files + per_dir - 1) // per_dir
def make(leaf):
    top = f"{root}/t{leaf // per_top}"
    os.makedirs(top, exist_ok=True)
    d = f"{top}/d{leaf % per_top}"
    os.mkdir(d)
    n = min(per_dir, files - leaf * per_dir)
    for i in range(n):
        fd = os.open(f"{d}/f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, b"%d %d\n" % (leaf, i))
        os.close(fd)
    return n
with Pool(workers) as p:
    made = sum(p.imap_unordered(make, range(leaves)))
print(made)
EOF
}

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

phase create create_tree
CREATED=$(cat "$WORKDIR/create.out" 2>/dev/null || echo 0)
drop
phase find sh -c "find '$MNT/bkt' -type f | wc -l"
phase ls_lR sh -c "ls -lR '$MNT/bkt' | wc -l"
phase du sh -c "du -s '$MNT/bkt'"
mkdir "$MNT/bkt-copy"
setfattr -n user.oss.server-side-encryption -v AES256 "$MNT/bkt-copy"
if [ -n "$RSYNC_TOPS" ]; then
    src=(); for ((t = 0; t < RSYNC_TOPS; t++)); do src+=("$MNT/bkt/t$t"); done
    TO_COPY=$(( RSYNC_TOPS * DIRS_PER_TOP * PER_DIR < FILES ? RSYNC_TOPS * DIRS_PER_TOP * PER_DIR : FILES ))
else
    src=("$MNT/bkt/"); TO_COPY=$FILES
fi
phase rsync rsync -a "${src[@]}" "$MNT/bkt-copy/"
phase verify_copy sh -c "find '$MNT/bkt-copy' -type f | wc -l"
phase rm_rf rm -rf "$MNT/bkt" "$MNT/bkt-copy"
echo done > "$PHASE_FILE"
sleep 2
HWM=$(awk '/^VmHWM/ {print $2}' /proc/$PID/status)
kill "$SAMPLER" 2>/dev/null || true
SAMPLER=

found=$(cat "$WORKDIR/find.out"); copied=$(cat "$WORKDIR/verify_copy.out")
# Warnings and errors the daemon logged (none expected).
grep -E " (WARN|ERROR) " "$BACK/data/.ssefs/mount.log" | grep -v "root key is on the same filesystem" \
    | awk '{ print "daemon: " $0 }' | head -20 >> "$ERRS" || true
left=$( (find "$BACK/data/bkt" "$BACK/data/bkt-copy" -type f 2>/dev/null || true) | wc -l)
python3 - "$SAMPLES" "$OUT" "$FILES" "$NOFILE" "$HWM" "$RSS_LIMIT_MB" "$CREATED" "$found" "$copied" "$left" "$TO_COPY" \
    "$(for p in create find ls_lR du rsync verify_copy rm_rf; do printf '%s=%s,%s,%s ' $p "${SECS[$p]}" "${STATUS[$p]}" "${NERR[$p]}"; done)" \
    "$ERRS" <<'EOF'
import sys, collections
samples, out, files, nofile, hwm, limit, created, found, copied, left, to_copy, phases, errs = sys.argv[1:]
peak = collections.OrderedDict(); fdpeak = {}
for line in open(samples):
    ph, rss, fds = line.rstrip("\n").split("\t")
    peak[ph] = max(peak.get(ph, 0), int(rss or 0)); fdpeak[ph] = max(fdpeak.get(ph, 0), int(fds or 0))
files = int(files)
rows = []
ok = True
for item in phases.split():
    name, rest = item.split("=")
    secs, status, nerr = rest.split(",")
    secs = float(secs)
    ok &= status == "0" and nerr == "0"
    n = int(to_copy) if name in ("rsync", "verify_copy") else files + int(to_copy) if name == "rm_rf" else files
    rows.append(f"| {name} | {n:,} | {secs:.0f} | {n / secs if secs else 0:,.0f} | {status} | {nerr} | {peak.get(name, 0) / 1024:.0f} | {fdpeak.get(name, 0)} |")
mib = int(hwm) / 1024
ok &= mib <= int(limit) and int(found) == files and int(copied) == int(to_copy) and int(left) == 0
with open(out, "a") as f:
    f.write(f"\n## Run: {files:,} files, RLIMIT_NOFILE {nofile}\n\n")
    f.write("| phase | files | seconds | files/s | exit | stderr lines | peak VmRSS (MiB) | peak descriptors |\n|---|---|---|---|---|---|---|---|\n")
    f.write("\n".join(rows) + "\n\n")
    f.write(f"- created {int(created):,}, found {int(found):,}, copied {int(copied):,} of {int(to_copy):,}, left on the backend after rm -rf: {int(left):,}\n")
    f.write(f"- daemon VmHWM over the whole run: {mib:.0f} MiB (limit {limit} MiB)\n")
    f.write(f"- verdict: {'PASS' if ok else 'FAIL'}\n")
    e = open(errs).read().strip()
    if e:
        f.write("\nFirst errors:\n\n```\n" + e[:4000] + "\n```\n")
print(open(out).read())
EOF
