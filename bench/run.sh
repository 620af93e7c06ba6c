#!/usr/bin/env bash
# ssefs benchmark harness: runs the same workloads on plain ext4 (the backend
# directory itself), bindfs, gocryptfs, securefs and ssefs (AES256, SM4 and KMS
# buckets), all over directories on the same disk, and prints one markdown
# table with every median and its ratio to gocryptfs. See bench/README.md.
#
# Needs root (drop_caches, mounts), fuse3, attr, bindfs, gocryptfs, securefs,
# fio, python3. INSTALL_DEPS=1 installs the Debian packages first.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

# ---------------------------------------------------------------- settings
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    : "${SIZE_MB:=64}" "${ROUNDS:=1}" "${FIO_RUNTIME:=2}" "${FIO_SIZE_MB:=32}" "${CORPUS_FILES:=1000}"
fi
SIZE_MB=${SIZE_MB:-1024}            # sequential write/read size (MiB)
ROUNDS=${ROUNDS:-3}
FIO_RUNTIME=${FIO_RUNTIME:-10}      # seconds per fio job
FIO_SIZE_MB=${FIO_SIZE_MB:-256}     # fio file size (each of the 4 jobs gets its own file for the 1M job)
FIO_SEQ_RW=${FIO_SEQ_RW:-read}      # 1 MiB x 4 jobs: read or write
CORPUS_FILES=${CORPUS_FILES:-0}     # 0 = whole corpus; N = first N files of it; CORPUS=none skips
# ssefs-aes256-4k: an AES256 bucket with 4 KiB chunks (user.ssefs.chunk-size)
# pthp and pthp-uring: libfuse's passthrough_hp example (PTHP, libfuse >= 3.18)
# over /dev/fuse reads and writes, and over FUSE-over-io_uring; not in the
# default set (see bench/results/2026-12-03-fuse-io-uring.md)
# ssefs-aes256-uring: ssefs-aes256 mounted with -o io_uring (enable_uring=Y
# for it); see bench/results/2026-12-04-ssefs-io-uring.md
DEFAULT_SYSTEMS="ext4 bindfs gocryptfs securefs ssefs-aes256 ssefs-sm4 ssefs-kms ssefs-aes256-4k"
# ssefs-aes256-base: ssefs-aes256 served by another build, SSEFS_BASE (an
# A/B of two builds side by side in one run)
ALL_SYSTEMS="$DEFAULT_SYSTEMS pthp pthp-uring ssefs-aes256-uring ssefs-aes256-base"
SYSTEMS=${SYSTEMS:-$DEFAULT_SYSTEMS}
PTHP=${PTHP:-passthrough_hp}
# the fuse module's switch for FUSE-over-io_uring; set per mount for the pthp
# rows and put back to this value on exit
URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_ORIG=$(cat "$URING_PARAM" 2>/dev/null || echo)
WORKDIR=${WORKDIR:-/work/bench-work}
SSEFS=${SSEFS:-$REPO/target/release/ssefs}
SSEFS_BASE=${SSEFS_BASE:-}
CORPUS=${CORPUS:-/work/bench-cache/corpus.tar}
MAKE_CORPUS=${MAKE_CORPUS:-/work/shared/bench/make-corpus.sh}
RESULTS_DIR=${RESULTS_DIR:-$WORKDIR/results}
SECUREFS_FORMAT=${SECUREFS_FORMAT:-4}
PYTHON=${PYTHON:-$(command -v python3 || echo /usr/bin/python3)}
# BACKEND=loop (default): every system of every round gets a fresh ext4
# filesystem (a loop-mounted image file on the work disk) for its backend.
# ext4's inode allocator slows down in block groups with many recently
# deleted inodes (we measured a plain open(O_CREAT) at 50 us in one
# directory and 700 us in another of the same filesystem), so backends in
# plain directories of a long-used disk compare allocator history, not
# filesystems. BACKEND=dir uses plain directories under WORKDIR.
BACKEND=${BACKEND:-loop}
IMG_GB=${IMG_GB:-8}

case "$WORKDIR" in /*) ;; *) WORKDIR=$(pwd)/$WORKDIR ;; esac
for s in $SYSTEMS; do
    case " $ALL_SYSTEMS " in *" $s "*) ;; *) echo "unknown system '$s' (known: $ALL_SYSTEMS)" >&2; exit 2 ;; esac
done

. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (drop_caches and mounts need it)"

if [ "${INSTALL_DEPS:-0}" = 1 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gocryptfs securefs bindfs fio fuse3 attr >/dev/null
fi
need=(fio fusermount3 setfattr "$PYTHON")
for s in $SYSTEMS; do
    case $s in bindfs|gocryptfs|securefs) need+=("$s") ;; esac
done
for c in "${need[@]}"; do command -v "$c" >/dev/null || die "missing $c (apt-get install -y gocryptfs securefs bindfs fio fuse3 attr)"; done
case " $SYSTEMS " in *" pthp"*) command -v "$PTHP" >/dev/null || die "PTHP=$PTHP: no passthrough_hp (build libfuse >= 3.18's examples)" ;; esac
case " $SYSTEMS " in *"-uring "*) [ -w "$URING_PARAM" ] || die "no writable $URING_PARAM: this kernel has no FUSE-over-io_uring" ;; esac
case " $SYSTEMS " in *" ssefs-"*) [ -x "$SSEFS" ] || die "SSEFS=$SSEFS is not an executable (cargo build --release)" ;; esac
case " $SYSTEMS " in *"-base "*) [ -x "$SSEFS_BASE" ] || die "SSEFS_BASE='$SSEFS_BASE' is not an executable (the build to compare with)" ;; esac

# ---------------------------------------------------------------- mounts and cleanup

cleanup() {
    local rc=$?
    cd /
    # every mount of ours is under WORKDIR
    if [ -d "$WORKDIR" ]; then
        findmnt -rn -o TARGET | while read -r m; do
            case "$m" in "$WORKDIR"/*) unmount "$m" ;; esac
        done
    fi
    if [ -n "$URING_ORIG" ] && [ "$(cat "$URING_PARAM" 2>/dev/null)" != "$URING_ORIG" ]; then
        echo "$URING_ORIG" >"$URING_PARAM" && log "enable_uring back to $URING_ORIG"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# stale mounts from an earlier aborted run of this harness
if [ -d "$WORKDIR" ]; then
    findmnt -rn -o TARGET | while read -r m; do
        case "$m" in "$WORKDIR"/*) log "unmounting stale $m"; unmount "$m" ;; esac
    done
fi

# pid of the FUSE daemon serving mountpoint $1: the live process with $1 as an argument
daemon_pid() {
    local m=$1 p
    for p in /proc/[0-9]*; do
        [ -r "$p/cmdline" ] || continue
        if tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qxF -- "$m"; then
            echo "${p#/proc/}"; return 0
        fi
    done
    return 1
}

vmhwm_mib() {   # peak RSS (VmHWM) of the daemon of mountpoint $1, in MiB
    local pid kb
    pid=$(daemon_pid "$1") || { echo NA; return; }
    kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || { echo NA; return; }
    [ -n "$kb" ] || { echo NA; return; }
    awk -v k="$kb" 'BEGIN {printf "%.1f", k/1024}'
}

PASSFILE=$WORKDIR/passphrase

# prepare (first use) and mount system $1; sets BENCH_DIR to the directory to benchmark in
mount_system() {
    local s=$1 base=$WORKDIR/fs/$1
    local back=$base/back mnt=$base/mnt
    mkdir -p "$back" "$mnt"
    case $s in
    ext4)
        BENCH_DIR=$back; return 0 ;;
    bindfs)
        bindfs "$back" "$mnt" >&2 ;;
    gocryptfs)
        [ -f "$back/gocryptfs.conf" ] || gocryptfs -q -nosyslog -init -passfile "$PASSFILE" "$back" >&2
        gocryptfs -q -nosyslog -passfile "$PASSFILE" "$back" "$mnt" >&2 ;;
    securefs)
        # key file only, no password prompt: --keyfile without --askpass.
        # Cheap key stretching (the key file is random): mounts take ms, not seconds
        [ -f "$back/.securefs.json" ] || securefs create --format "$SECUREFS_FORMAT" \
            --pbkdf pkcs5-pbkdf2-hmac-sha256 --rounds 1 --keyfile "$PASSFILE" "$back" >&2
        securefs mount -b --keyfile "$PASSFILE" --log "$base/securefs.log" "$back" "$mnt" >&2 ;;
    pthp)
        # reads and writes through the daemon (--nopassthrough), as an
        # encrypting filesystem must; /dev/fuse transport
        echo N >"$URING_PARAM"
        FUSE_URING_ENABLE=0 "$PTHP" --nopassthrough "$back" "$mnt" >&2 ;;
    pthp-uring)
        echo Y >"$URING_PARAM"
        FUSE_URING_ENABLE=1 "$PTHP" --nopassthrough -o io_uring "$back" "$mnt" >&2 ;;
    ssefs-*-uring)
        echo Y >"$URING_PARAM"
        SSEFS_DATA_DIR=$back SSEFS_KEY_DIR=$base/keys "$SSEFS" mount "$mnt" -o io_uring >&2 ;;
    ssefs-*-base)
        SSEFS_DATA_DIR=$back SSEFS_KEY_DIR=$base/keys "$SSEFS_BASE" mount "$mnt" >&2 ;;
    ssefs-*)
        SSEFS_DATA_DIR=$back SSEFS_KEY_DIR=$base/keys "$SSEFS" mount "$mnt" >&2 ;;
    esac
    local i
    for i in $(seq 100); do is_mounted "$mnt" && break; sleep 0.1; done
    is_mounted "$mnt" || die "$s: $mnt did not mount"
    case $s in
    pthp-uring)
        # the ring threads (fuse-ring-N) exist only when the kernel took the
        # io_uring registration
        local pid; pid=$(daemon_pid "$mnt") || die "$s: no daemon"
        for i in $(seq 50); do grep -qs '^fuse-ring' /proc/"$pid"/task/*/comm && break; sleep 0.1; done
        grep -qs '^fuse-ring' /proc/"$pid"/task/*/comm || die "$s: daemon $pid has no io_uring queue threads"
        BENCH_DIR=$mnt ;;
    ssefs-*)
        # ssefs-ALG, ssefs-ALG-4k (a bucket with 4 KiB chunks) or
        # ssefs-ALG-uring (-o io_uring: its ring threads must exist)
        local sse=${s#ssefs-} chunk=16384
        case $sse in *-base) sse=${sse%-base} ;; esac
        case $sse in *-4k) sse=${sse%-4k}; chunk=4096 ;; esac
        case $sse in *-uring)
            sse=${sse%-uring}
            local pid; pid=$(daemon_pid "$mnt") || die "$s: no daemon"
            stat "$mnt" >/dev/null  # answered only once the rings are up
            grep -qs '^ssefs-uring' /proc/"$pid"/task/*/comm || die "$s: daemon $pid has no io_uring queue threads"
            ;;
        esac
        sse=${sse^^}
        if [ ! -d "$mnt/bench" ]; then
            mkdir "$mnt/bench"
            # only while the bucket is empty
            setfattr -n user.ssefs.chunk-size -v "$chunk" "$mnt/bench"
        fi
        [ "$(getfattr --only-values -n user.ssefs.chunk-size "$mnt/bench")" = "$chunk" ] \
            || die "$s: bucket chunk size is not $chunk"
        setfattr -n user.oss.server-side-encryption -v "$sse" "$mnt/bench"
        BENCH_DIR=$mnt/bench ;;
    *) BENCH_DIR=$mnt ;;
    esac
}

# a fresh ext4 filesystem at $WORKDIR/fs/$1 (BACKEND=loop)
make_backend_fs() {  # system
    local s=$1 img=$WORKDIR/img/$1.img base=$WORKDIR/fs/$1
    [ "$BACKEND" = loop ] || return 0
    mkdir -p "$WORKDIR/img" "$base"
    rm -f "$img"
    truncate -s "${IMG_GB}G" "$img"
    # no lazy init: a background ext4lazyinit thread would disturb the run
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img"
    mount -o loop "$img" "$base"
}

drop_backend_fs() {  # system
    local s=$1 base=$WORKDIR/fs/$1
    [ "$BACKEND" = loop ] || return 0
    if is_mounted "$base"; then umount "$base" || umount -l "$base"; fi
    rm -f "$WORKDIR/img/$1.img"
}

umount_system() {
    local s=$1 mnt=$WORKDIR/fs/$1/mnt
    [ "$s" = ext4 ] && return 0
    unmount "$mnt"
}

# ---------------------------------------------------------------- measuring
# META_SYNC=1 counts a final sync in the untar and rm -rf times (default: not,
# the backend's own writeback is the same for every system and only adds noise)
meta_sync() { if [ "${META_SYNC:-0}" = 1 ]; then sync; fi; }

# peak RSS of the daemon of this system's turn: VmHWM sampled before every unmount
RSS_MAX=NA
sample_rss() {  # system
    [ "$1" = ext4 ] && return 0
    local v; v=$(vmhwm_mib "$WORKDIR/fs/$1/mnt")
    [ "$v" = NA ] && return 0
    if [ "$RSS_MAX" = NA ] || awk -v a="$v" -v b="$RSS_MAX" 'BEGIN {exit !(a > b)}'; then RSS_MAX=$v; fi
}

# make the next step cold: with COLD_REMOUNT=1 (default) unmount the system,
# drop the kernel caches and mount it again, so that no cache inside a daemon
# survives either; with COLD_REMOUNT=0 only drop the kernel caches
go_cold() {  # system
    if [ "${COLD_REMOUNT:-1}" = 1 ] && [ "$1" != ext4 ]; then
        sample_rss "$1"
        umount_system "$1"
        drop_caches
        mount_system "$1"
    else
        drop_caches
    fi
}
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b-a}'; }
mbps() { awk -v mb="$1" -v t="$2" 'BEGIN {printf "%.1f", mb/t}'; }

STAMP=$(date +%Y%m%d-%H%M%S)
mkdir -p "$RESULTS_DIR"
CSV=$RESULTS_DIR/bench-$STAMP.csv
MD=$RESULTS_DIR/bench-$STAMP.md
echo "round,system,metric,value,unit" >"$CSV"
record() {  # round system metric value unit
    echo "$1,$2,$3,$4,$5" >>"$CSV"
    log "  $2 r$1 $3 = $4 $5"
}

fio_run() {  # dir name extra-args... ; prints the fio JSON
    local dir=$1 name=$2; shift 2
    fio --output-format=json --name="$name" --directory="$dir" \
        --ioengine=psync --direct=0 --invalidate=1 \
        --runtime="$FIO_RUNTIME" --time_based --group_reporting "$@"
}
fio_iops() {  # json-file rw(read|write)
    "$PYTHON" -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.0f" % j["jobs"][0][sys.argv[2]]["iops"])' "$1" "$2"
}
fio_mbps() {
    "$PYTHON" -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.1f" % (j["jobs"][0][sys.argv[2]]["bw_bytes"]/1048576))' "$1" "$2"
}

run_workloads() {  # round system dir
    local r=$1 s=$2 d=$3 t0 t1 t
    local full=1
    case $s in ssefs-sm4|ssefs-kms) full=0 ;; esac
    local mnt=$WORKDIR/fs/$s/mnt

    # --- sequential write / cold read / warm read
    drop_caches
    cat "$SRC" >/dev/null                     # source in page cache: RNG and source disk do not limit
    rm -f "$d/seq.bin"
    t0=$(now)
    dd if="$SRC" of="$d/seq.bin" bs=1M count="$SIZE_MB" conv=fsync status=none
    t1=$(now); t=$(elapsed "$t0" "$t1")
    record "$r" "$s" seq_write "$(mbps "$SIZE_MB" "$t")" MB/s
    go_cold "$s"; d=$BENCH_DIR
    t0=$(now); dd if="$d/seq.bin" of=/dev/null bs=1M status=none; t1=$(now)
    record "$r" "$s" read_cold "$(mbps "$SIZE_MB" "$(elapsed "$t0" "$t1")")" MB/s
    t0=$(now); dd if="$d/seq.bin" of=/dev/null bs=1M status=none; t1=$(now)
    record "$r" "$s" read_warm "$(mbps "$SIZE_MB" "$(elapsed "$t0" "$t1")")" MB/s
    rm -f "$d/seq.bin"

    if [ $full = 1 ]; then
        # --- small-file corpus
        if [ -n "$CORPUS_TAR" ]; then
            rm -rf "$d/corpus"; mkdir "$d/corpus"
            sync
            t0=$(now); tar -xf "$CORPUS_TAR" -C "$d/corpus"; meta_sync; t1=$(now)
            record "$r" "$s" untar "$(elapsed "$t0" "$t1")" s
            go_cold "$s"; d=$BENCH_DIR
            t0=$(now); ls -lR "$d/corpus" >/dev/null; t1=$(now)
            record "$r" "$s" ls_lR "$(elapsed "$t0" "$t1")" s
            go_cold "$s"; d=$BENCH_DIR
            t0=$(now); (cd "$d/corpus" && find . -type f -print0 | xargs -0 cat >/dev/null); t1=$(now)
            record "$r" "$s" read_all "$(elapsed "$t0" "$t1")" s
            sync
            t0=$(now); rm -rf "$d/corpus"; meta_sync; t1=$(now)
            record "$r" "$s" rm_rf "$(elapsed "$t0" "$t1")" s
        fi

        # --- fio
        # files are laid out first (untimed), then the system goes cold
        local fd=$d/fio j=$WORKDIR/tmp/fio.json
        rm -rf "$fd"; mkdir -p "$fd" "$WORKDIR/tmp"
        fio --name=rand --directory="$fd" --filename=rand.dat --size="${FIO_SIZE_MB}M" --create_only=1 >/dev/null
        fio --name=seq --directory="$fd" --size="${FIO_SIZE_MB}M" --numjobs=4 --create_only=1 >/dev/null
        go_cold "$s"; d=$BENCH_DIR; fd=$d/fio
        fio_run "$fd" rand --filename=rand.dat --size="${FIO_SIZE_MB}M" --bs=4k --rw=randread >"$j"
        record "$r" "$s" randread_4k "$(fio_iops "$j" read)" IOPS
        drop_caches
        fio_run "$fd" rand --filename=rand.dat --size="${FIO_SIZE_MB}M" --bs=4k --rw=randwrite --end_fsync=1 >"$j"
        record "$r" "$s" randwrite_4k "$(fio_iops "$j" write)" IOPS
        rm -f "$fd/rand.dat"
        go_cold "$s"; d=$BENCH_DIR; fd=$d/fio
        fio_run "$fd" seq --size="${FIO_SIZE_MB}M" --bs=1M --rw="$FIO_SEQ_RW" --numjobs=4 --end_fsync=1 >"$j"
        record "$r" "$s" "seq1m_4j_$FIO_SEQ_RW" "$(fio_mbps "$j" "$FIO_SEQ_RW")" MB/s
        rm -rf "$fd"
    fi

    if [ "$s" != ext4 ]; then
        sample_rss "$s"
        record "$r" "$s" peak_rss "$RSS_MAX" MiB
    fi
}

# ---------------------------------------------------------------- setup
mkdir -p "$WORKDIR/src" "$WORKDIR/tmp"
[ -f "$PASSFILE" ] || { head -c 24 /dev/urandom | base64 >"$PASSFILE"; chmod 600 "$PASSFILE"; }

SRC=$WORKDIR/src/random-${SIZE_MB}M.bin
if [ ! -f "$SRC" ] || [ "$(stat -c %s "$SRC")" -ne $((SIZE_MB * 1048576)) ]; then
    log "generating $SIZE_MB MiB of random source data in $SRC"
    rm -f "$WORKDIR"/src/random-*.bin
    head -c $((SIZE_MB * 1048576)) /dev/urandom >"$SRC.tmp"
    mv "$SRC.tmp" "$SRC"
fi

CORPUS_TAR=
if [ "$CORPUS" != none ]; then
    if [ ! -s "$CORPUS" ]; then
        log "building the small-file corpus $CORPUS (cargo vendor)"
        mkdir -p "$(dirname "$CORPUS")"
        bash "$MAKE_CORPUS" "$CORPUS"
    fi
    CORPUS_TAR=$CORPUS
    if [ "$CORPUS_FILES" -gt 0 ]; then
        CORPUS_TAR=$WORKDIR/src/corpus-$CORPUS_FILES.tar
        if [ ! -s "$CORPUS_TAR" ] || [ "$CORPUS_TAR" -ot "$CORPUS" ]; then
            log "making a $CORPUS_FILES-file subset of the corpus"
            local_tmp=$WORKDIR/tmp/corpus-subset
            rm -rf "$local_tmp"; mkdir -p "$local_tmp"
            tar -tf "$CORPUS" | awk -v n="$CORPUS_FILES" '!/\/$/ && c < n {print; c++}' >"$WORKDIR/tmp/corpus-list"
            tar -xf "$CORPUS" -C "$local_tmp" -T "$WORKDIR/tmp/corpus-list"
            tar -cf "$CORPUS_TAR.tmp" -C "$local_tmp" . && mv "$CORPUS_TAR.tmp" "$CORPUS_TAR"
            rm -rf "$local_tmp"
        fi
    fi
    CORPUS_NFILES=$(tar -tf "$CORPUS_TAR" | grep -vc '/$')
    CORPUS_BYTES=$(stat -c %s "$CORPUS_TAR")
fi

# remove the backends, but never through a live mount
clear_backends() {
    if findmnt -rn -o TARGET | grep -q "^$WORKDIR/"; then
        log "warning: mounts left under $WORKDIR; not removing $WORKDIR/fs"
    else
        rm -rf "$WORKDIR/fs"
    fi
}
# every system starts from an empty backend
clear_backends

# ---------------------------------------------------------------- machine info
{
    echo "# ssefs benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Machine:"
    echo
    echo "- CPU: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores"
    echo "- RAM: $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "- Kernel: $(uname -r) ($(. /etc/os-release && echo "$PRETTY_NAME"))"
    fsinfo=$(findmnt -n -o SOURCE,FSTYPE,OPTIONS -T "$WORKDIR" | head -1)
    dev=$(findmnt -n -o SOURCE -T "$WORKDIR" | head -1)
    disk=$(lsblk -ndo NAME,SIZE,ROTA,MODEL "$dev" 2>/dev/null | awk '{printf "%s %s rotational=%s %s", $1, $2, $3, $4}')
    echo "- Work dir: $WORKDIR on $fsinfo (${disk:-?})"
    rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
    if [ -n "$(git --no-optional-locks -C "$REPO" status --porcelain -uno 2>/dev/null)" ]; then rev="$rev + uncommitted changes"; fi
    ver=$("$SSEFS" --version 2>/dev/null | head -1 || true)
    echo "- ssefs: ${ver:-?} ($SSEFS built $(date -u -r "$SSEFS" '+%Y-%m-%d %H:%M UTC'); work tree $REPO at git $rev)"
    case " $SYSTEMS " in *"-base "*) echo "- ssefs-*-base rows: $SSEFS_BASE (built $(date -u -r "$SSEFS_BASE" '+%Y-%m-%d %H:%M UTC'))" ;; esac
    case " $SYSTEMS " in *" pthp"*) echo "- passthrough_hp: $(command -v "$PTHP") (${PTHP_DESC:-libfuse version not given: PTHP_DESC}), --nopassthrough, default threads; fuse enable_uring was $URING_ORIG at the start" ;; esac
    echo "- Peers: $(gocryptfs -version 2>/dev/null | cut -d';' -f1); securefs $(dpkg-query -W -f '${Version}' securefs 2>/dev/null) (format $SECUREFS_FORMAT); bindfs $(bindfs --version 2>/dev/null | awk '{print $2; exit}'); fio $(fio --version)"
    echo
    backend_note=$BACKEND; [ "$BACKEND" = loop ] && backend_note="loop (a fresh ${IMG_GB} GiB ext4 image per system and round)"
    echo "Settings: BACKEND=$backend_note, ROUNDS=$ROUNDS, SIZE_MB=$SIZE_MB, FIO_RUNTIME=${FIO_RUNTIME}s, FIO_SIZE_MB=$FIO_SIZE_MB, corpus=${CORPUS_TAR:-skipped}${CORPUS_TAR:+ ($CORPUS_NFILES files, $((CORPUS_BYTES / 1048576)) MiB tar)}, QUICK=$QUICK"
} >"$MD"

# ---------------------------------------------------------------- run
log "systems: $SYSTEMS; rounds: $ROUNDS; results: $CSV"
T_START=$(now)
FAILED=
for r in $(seq "$ROUNDS"); do
    for s in $SYSTEMS; do
        log "round $r/$ROUNDS: $s"
        # each system in a subshell, so that one failing system does not end the run
        set +e
        (
            set -e
            trap 'cd /; umount_system "$s"; drop_backend_fs "$s"' EXIT
            make_backend_fs "$s"
            mount_system "$s"
            run_workloads "$r" "$s" "$BENCH_DIR"
        )
        rc=$?
        set -e
        if [ $rc -ne 0 ]; then
            [ $rc -ge 128 ] && exit $rc    # interrupted
            log "FAILED: $s round $r (exit $rc); going on"
            FAILED="$FAILED $s/r$r"
        fi
    done
done
log "done in $(elapsed "$T_START" "$(now)") s"
[ -z "$FAILED" ] || echo "Failed (missing from the table):$FAILED" >>"$MD"

"$PYTHON" "$HERE/report.py" "$CSV" --systems "$SYSTEMS" --seq-rw "$FIO_SEQ_RW" --ref "${REF:-gocryptfs}" \
    --settings "Cold = $( [ "${COLD_REMOUNT:-1}" = 1 ] && echo 'unmount, drop_caches, mount again (no daemon cache survives)' || echo 'drop_caches only'); untar and rm -rf times $( [ "${META_SYNC:-0}" = 1 ] && echo include || echo exclude) a final sync. fio: psync, buffered (--direct=0, --invalidate=1), ${FIO_RUNTIME}s time_based, files laid out first and then cold; 4K random read then random write (--end_fsync=1), 1 job on one ${FIO_SIZE_MB} MiB file; 1M sequential $FIO_SEQ_RW, 4 jobs x ${FIO_SIZE_MB} MiB files." \
    >>"$MD"
clear_backends
cat "$MD"
log "table: $MD"
log "raw:   $CSV"
