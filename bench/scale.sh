#!/usr/bin/env bash
# Scale benchmark (issue 13 part 2): the cost per file of create, stat,
# readdir and unlink at growing file counts, in one directory ("flat") and
# spread over a tree of PER_DIR files per directory ("tree"), side by side in
# one run on ext4 (the same disk, no FUSE), gocryptfs, securefs and ssefs.
#
#   bench/scale.sh [SIZE...]            default sizes: 10000 100000
#   SYSTEMS="ext4 gocryptfs" ROUNDS=1 bench/scale.sh 1000      # a smoke test
#
# Each phase is one run of bench/scale-ops (a small C program built here with
# cc) that does the syscalls in a loop and times itself. Between phases the
# system goes cold: unmount, drop the kernel's caches, mount again (ext4:
# drop caches only), so stat and readdir pay for lookups and unlink for
# lookups too. A phase that fails (EMFILE, ENOSPC, a timeout, a daemon that
# died) is recorded as failed with its errno and where it stopped, and the
# remaining phases of that system at that size are skipped; the run goes on.
#
# Needs root (mounts, drop_caches), cc, fuse3, attr, gocryptfs, securefs,
# python3 (the report; the plot installs matplotlib into a venv under
# WORKDIR). See bench/README.md, "Scale".
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(10000 100000)
SYSTEMS=${SYSTEMS:-"ext4 gocryptfs securefs ssefs-aes256"}
LAYOUTS=${LAYOUTS:-"flat tree"}
PER_DIR=${PER_DIR:-1000}
ROUNDS=${ROUNDS:-3}
# system=limit pairs (e.g. "securefs=100000"): sizes above the limit are not
# run for that system, and the report says so. Empty (the default): no limits.
MAX_FILES=${MAX_FILES-}
PHASE_TIMEOUT=${PHASE_TIMEOUT:-3600}   # seconds, per phase
# RLIMIT_NOFILE (soft and hard) for the FUSE daemons, e.g. 4096 for issue 13
# part 1's target; empty: the daemons inherit this shell's limits
DAEMON_NOFILE=${DAEMON_NOFILE:-}
WORKDIR=${WORKDIR:-/work/bench-work-scale}
RESULTS_DIR=${RESULTS_DIR:-$WORKDIR/results}
SSEFS=${SSEFS:-$REPO/target/release/ssefs}
PYTHON=${PYTHON:-$(command -v python3 || echo /usr/bin/python3)}
PLOT=${PLOT:-1}
SECUREFS_FORMAT=${SECUREFS_FORMAT:-4}
ALL_SYSTEMS="ext4 gocryptfs securefs ssefs-aes256"

case "$WORKDIR" in /*) ;; *) WORKDIR=$(pwd)/$WORKDIR ;; esac
for s in $SYSTEMS; do
    case " $ALL_SYSTEMS " in *" $s "*) ;; *) echo "unknown system '$s' (known: $ALL_SYSTEMS)" >&2; exit 2 ;; esac
done
for n in "${SIZES[@]}"; do
    [[ $n =~ ^[0-9]+$ ]] && [ "$n" -gt 0 ] || { echo "size '$n' is not a positive number" >&2; exit 2; }
done
for l in $LAYOUTS; do
    case $l in flat|tree) ;; *) echo "unknown layout '$l' (flat, tree)" >&2; exit 2 ;; esac
done

. "$(dirname "$0")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root (drop_caches and mounts need it)"
need=(cc fusermount3 setfattr mkfs.ext4 timeout "$PYTHON")
for s in $SYSTEMS; do case $s in gocryptfs|securefs) need+=("$s") ;; esac; done
for c in "${need[@]}"; do command -v "$c" >/dev/null || die "missing $c (apt-get install -y gcc gocryptfs securefs fuse3 attr)"; done
case " $SYSTEMS " in *" ssefs-"*) [ -x "$SSEFS" ] || die "SSEFS=$SSEFS is not an executable (cargo build --release)" ;; esac

limit_of() {  # system -> max files, or empty
    local kv
    for kv in $MAX_FILES; do
        if [ "${kv%%=*}" = "$1" ]; then echo "${kv#*=}"; return 0; fi
    done
    return 0
}

# ---------------------------------------------------------------- mounts

cleanup() {
    local rc=$?
    cd /
    if [ -d "$WORKDIR" ]; then
        # deepest first: the FUSE mounts sit on the loop-mounted backends
        findmnt -rn -o TARGET | awk -v w="$WORKDIR/" 'index($0, w) == 1' | sort -r | while read -r m; do
            unmount "$m"
        done
        rm -f "$WORKDIR"/img/*.img
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -d "$WORKDIR" ]; then
    findmnt -rn -o TARGET | awk -v w="$WORKDIR/" 'index($0, w) == 1' | sort -r | while read -r m; do
        log "unmounting stale $m"; unmount "$m"
    done
fi

daemon_pid() {  # mountpoint -> pid of the live process with it as an argument
    local m=$1 p
    for p in /proc/[0-9]*; do
        [ -r "$p/cmdline" ] || continue
        if tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qxF -- "$m"; then
            echo "${p#/proc/}"; return 0
        fi
    done
    return 1
}

PASSFILE=$WORKDIR/passphrase

# a fresh ext4 filesystem (loop image on the work disk) as the backend of
# system $1 for $2 files: inodes enough for every file twice over
make_backend() {  # system files
    local s=$1 n=$2 img=$WORKDIR/img/$1.img base=$WORKDIR/fs/$1
    mkdir -p "$WORKDIR/img" "$base"
    rm -f "$img"
    local inodes=$((2 * n + 65536)) gb=$(( (n / 250000) + 4 ))
    truncate -s "${gb}G" "$img"
    mkfs.ext4 -q -F -N "$inodes" -E lazy_itable_init=0,lazy_journal_init=0 "$img"
    mount -o loop "$img" "$base"
}

drop_backend() {  # system
    local base=$WORKDIR/fs/$1
    if is_mounted "$base/mnt"; then unmount "$base/mnt"; fi
    if is_mounted "$base"; then umount "$base" 2>/dev/null || umount -l "$base"; fi
    rm -f "$WORKDIR/img/$1.img"
}

# run a FUSE daemon, under DAEMON_NOFILE if set
daemon() {
    if [ -n "$DAEMON_NOFILE" ]; then prlimit --nofile="$DAEMON_NOFILE:$DAEMON_NOFILE" -- "$@"; else "$@"; fi
}

# mount system $1 (its backend is mounted already); sets BENCH_DIR
mount_system() {
    local s=$1 base=$WORKDIR/fs/$1
    local back=$base/back mnt=$base/mnt
    mkdir -p "$back" "$mnt"
    case $s in
    ext4) BENCH_DIR=$back/scale; mkdir -p "$BENCH_DIR"; return 0 ;;
    gocryptfs)
        [ -f "$back/gocryptfs.conf" ] || gocryptfs -q -nosyslog -init -passfile "$PASSFILE" "$back" >&2
        daemon gocryptfs -q -nosyslog -passfile "$PASSFILE" "$back" "$mnt" >&2 ;;
    securefs)
        [ -f "$back/.securefs.json" ] || securefs create --format "$SECUREFS_FORMAT" \
            --pbkdf pkcs5-pbkdf2-hmac-sha256 --rounds 1 --keyfile "$PASSFILE" "$back" >&2
        daemon securefs mount -b --keyfile "$PASSFILE" --log "$base/securefs.log" "$back" "$mnt" >&2 ;;
    ssefs-aes256)
        SSEFS_DATA_DIR=$back SSEFS_KEY_DIR=$base/keys daemon "$SSEFS" mount "$mnt" >&2 ;;
    esac
    local i
    for i in $(seq 100); do is_mounted "$mnt" && break; sleep 0.1; done
    is_mounted "$mnt" || return 1
    case $s in
    ssefs-aes256)
        if [ ! -d "$mnt/bench" ]; then
            mkdir "$mnt/bench"
            setfattr -n user.oss.server-side-encryption -v AES256 "$mnt/bench"
        fi
        BENCH_DIR=$mnt/bench/scale ;;
    *) BENCH_DIR=$mnt/scale ;;
    esac
    mkdir -p "$BENCH_DIR"
}

vmhwm_mib() {  # system -> the daemon's VmHWM in MiB, or NA
    [ "$1" = ext4 ] && { echo NA; return; }
    local pid kb
    pid=$(daemon_pid "$WORKDIR/fs/$1/mnt") || { echo NA; return; }
    kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$kb" ] || { echo NA; return; }
    awk -v k="$kb" 'BEGIN {printf "%.1f", k/1024}'
}


go_cold() {  # system
    if [ "$1" = ext4 ]; then drop_caches; return 0; fi
    unmount "$WORKDIR/fs/$1/mnt"
    drop_caches
    mount_system "$1"
}

# ---------------------------------------------------------------- setup
mkdir -p "$WORKDIR" "$RESULTS_DIR"
[ -f "$PASSFILE" ] || { head -c 24 /dev/urandom | base64 >"$PASSFILE"; chmod 600 "$PASSFILE"; }
OPS=$WORKDIR/scale-ops
if [ ! -x "$OPS" ] || [ "$OPS" -ot "$HERE/scale-ops.c" ]; then
    cc -O2 -Wall -Wextra -o "$OPS" "$HERE/scale-ops.c" || die "building scale-ops"
fi
rm -rf "$WORKDIR/fs"

STAMP=$(date +%Y%m%d-%H%M%S)
CSV=$RESULTS_DIR/scale-$STAMP.csv
MD=$RESULTS_DIR/scale-$STAMP.md
PNG=$RESULTS_DIR/scale-$STAMP.png
echo "round,system,layout,files,phase,status,seconds,us_per_file,rss_mib,note" >"$CSV"
record() {  # round system layout files phase status seconds rss note
    local us=NA
    [ "$7" != NA ] && us=$(awk -v t="$7" -v n="$4" 'BEGIN {printf "%.2f", t * 1e6 / n}')
    echo "$1,$2,$3,$4,$5,$6,$7,$us,$8,$9" >>"$CSV"
    log "  $2 $3 n=$4 r$1 $5: $6 ${7}s (${us} us/file) rss=$8 MiB${9:+ ($9)}"
}

# one system, one layout, one size, one round: the four phases
run_one() {  # round system layout files
    local r=$1 s=$2 l=$3 n=$4 per=0 ph out status t rss note skip=
    [ "$l" = tree ] && per=$PER_DIR
    if ! mount_system "$s"; then
        for ph in create stat readdir unlink; do record "$r" "$s" "$l" "$n" "$ph" fail NA NA "mount failed"; done
        return 0
    fi
    for ph in create stat readdir unlink; do
        if [ -n "$skip" ]; then
            record "$r" "$s" "$l" "$n" "$ph" skipped NA NA "after $skip failed"
            continue
        fi
        if [ "$ph" != create ] && ! go_cold "$s"; then
            record "$r" "$s" "$l" "$n" "$ph" fail NA NA "remount failed"
            skip=$ph; continue
        fi
        set +e
        out=$(timeout "$PHASE_TIMEOUT" "$OPS" "$ph" "$BENCH_DIR" "$n" "$per" 2>&1)
        local rc=$?
        set -e
        rss=$(vmhwm_mib "$s")
        read -r status _ _ t _ <<<"$out" || true
        if [ $rc = 0 ] && [ "$status" = ok ]; then
            record "$r" "$s" "$l" "$n" "$ph" ok "$t" "$rss" ""
        else
            if [ $rc = 124 ]; then note="timeout after ${PHASE_TIMEOUT}s"
            elif [ "$status" = fail ]; then
                # fail PHASE N T INDEX ERRNO what: msg
                note=$(awk '{i=$5; e=$6; $1=$2=$3=$4=$5=$6=""; sub(/^ +/, ""); printf "%s at file %s: %s", e, i, $0}' <<<"$out")
            else note="exit $rc: $(head -c 200 <<<"$out")"
            fi
            note=${note//,/;}
            record "$r" "$s" "$l" "$n" "$ph" fail NA "$rss" "$note"
            skip=$ph
            # a daemon that died leaves a dead mount: the next phases are skipped
        fi
    done
}

{
    echo "# ssefs scale benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- CPU: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), $(nproc) cores; RAM $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "- Kernel: $(uname -r) ($(. /etc/os-release && echo "$PRETTY_NAME"))"
    echo "- Work dir: $WORKDIR on $(findmnt -n -o SOURCE,FSTYPE,OPTIONS -T "$WORKDIR" | head -1); each system, size, layout and round on a fresh loop-mounted ext4 image there"
    rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
    [ -z "$(git --no-optional-locks -C "$REPO" status --porcelain -uno 2>/dev/null)" ] || rev="$rev + uncommitted changes"
    echo "- ssefs: $("$SSEFS" --version 2>/dev/null | head -1 || echo '?') ($SSEFS, work tree at git $rev); gocryptfs $(gocryptfs -version 2>/dev/null | cut -d';' -f1 | awk '{print $2}'); securefs $(dpkg-query -W -f '${Version}' securefs 2>/dev/null) (format $SECUREFS_FORMAT)"
    echo "- Settings: sizes ${SIZES[*]}; layouts $LAYOUTS (tree: $PER_DIR files per directory); rounds $ROUNDS; systems $SYSTEMS; MAX_FILES $MAX_FILES; daemon RLIMIT_NOFILE ${DAEMON_NOFILE:-inherited ($(ulimit -Sn)/$(ulimit -Hn))}"
} >"$MD"

# ---------------------------------------------------------------- run
log "systems: $SYSTEMS; sizes: ${SIZES[*]}; layouts: $LAYOUTS; rounds: $ROUNDS; results: $CSV"
T0=$EPOCHREALTIME
for n in "${SIZES[@]}"; do
    for r in $(seq "$ROUNDS"); do
        for l in $LAYOUTS; do
            for s in $SYSTEMS; do
                lim=$(limit_of "$s")
                if [ -n "$lim" ] && [ "$n" -gt "$lim" ]; then
                    if [ "$r" = 1 ]; then
                        for ph in create stat readdir unlink; do
                            record "$r" "$s" "$l" "$n" "$ph" skipped NA NA "over MAX_FILES $lim"
                        done
                    fi
                    continue
                fi
                log "n=$n round $r/$ROUNDS $l: $s"
                set +e
                (
                    set -e
                    trap 'cd /; drop_backend "$s"' EXIT
                    make_backend "$s" "$n"
                    run_one "$r" "$s" "$l" "$n"
                )
                rc=$?
                set -e
                [ $rc -ge 128 ] && exit $rc
                [ $rc = 0 ] || log "warning: $s $l n=$n round $r: exit $rc"
            done
        done
    done
done
log "done in $(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.0f", b-a}') s"

PLOT_ARGS=()
if [ "$PLOT" = 1 ]; then
    VENV=$WORKDIR/venv
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
        log "installing matplotlib into $VENV"
        "$PYTHON" -m venv "$VENV" && "$VENV/bin/pip" install -q matplotlib >&2 || log "warning: no matplotlib, no plot"
    fi
    if "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
        PY=$VENV/bin/python; PLOT_ARGS=(--png "$PNG")
    else
        PY=$PYTHON
    fi
else
    PY=$PYTHON
fi
"$PY" "$HERE/scale-plot.py" "$CSV" "${PLOT_ARGS[@]}" >>"$MD"
cat "$MD"
log "report: $MD"
log "raw:    $CSV"
[ ${#PLOT_ARGS[@]} = 0 ] || log "plot:   $PNG"
