#!/usr/bin/env bash
# Data-integrity stress run of fsx (crates.io `fsx`, Rust port of the classic file
# system exerciser) on one file, normally inside an ssefs mount. fsx keeps an
# in-memory copy of what the file should hold and checks every read against it.
#
# Usage: scripts/fsx.sh FILE [NUMOPS]
#   FILE    file to exercise (created/truncated; its directory must exist)
#   NUMOPS  number of operations (default 50000)
# Env:
#   FSX_SEED       RNG seed (default 1); the same seed replays the same sequence
#   FSX_ARTIFACTS  where fsx writes FILE.fsxgood/.fsxlog on failure (default: a
#                  temp dir outside the file system under test)
#
# Prints `fsx: N operations, 0 miscompares` and exits 0 on success; on any failure
# (miscompare, short read/write, a syscall error) prints fsx's op log dump and
# exits non-zero.
set -euo pipefail

FSX_VERSION=0.3.2

[[ $# -ge 1 && $# -le 2 ]] || { echo "usage: $0 FILE [NUMOPS]" >&2; exit 2; }
file=$1
numops=${2:-50000}
seed=${FSX_SEED:-1}
[[ $numops =~ ^[1-9][0-9]*$ ]] || { echo "fsx.sh: NUMOPS must be a positive integer" >&2; exit 2; }
[[ $seed =~ ^[0-9]+$ ]] || { echo "fsx.sh: FSX_SEED must be a non-negative integer" >&2; exit 2; }
[[ -d $(dirname -- "$file") ]] || { echo "fsx.sh: directory of $file does not exist" >&2; exit 2; }

# Install the pinned version into ~/.cargo/bin unless it is already there, so a
# fresh CI machine works and a warm one pays nothing (~40 s build on 2 cores).
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if [[ $(fsx --version 2>/dev/null || true) != "fsx $FSX_VERSION" ]]; then
    echo "fsx.sh: installing fsx $FSX_VERSION (cargo install)" >&2
    # --locked for reproducible deps; fall back to a fresh resolve if the lock fails.
    cargo install --quiet --locked --force fsx --version "=$FSX_VERSION" \
        || cargo install --quiet --force fsx --version "=$FSX_VERSION"
fi

work=$(mktemp -d -t fsx.XXXXXX)
trap 'rm -rf -- "$work"' EXIT
artifacts=${FSX_ARTIFACTS:-$work/artifacts}
mkdir -p "$artifacts"

# fsx takes its op mix from a TOML file (the CLI only has -N/-S/-P/-b/-m).
# Weights are relative frequencies; 0 disables an op. Keep read/write dominant
# so the file has content for the other ops to act on.
cat >"$work/fsx.toml" <<'EOF'
flen = 262144              # max file size (fsx default, 256 KiB)
nomsyncafterwrite = false  # msync(MS_SYNC) after every mmap write
nosizechecks = false       # check st_size after every size-changing op

[opsize]
max = 65536                # op sizes 1..64 KiB, any alignment: unaligned
min = 1                    # ops cross our encryption block boundaries. Not 0:
                           # fallocate(2) of 0 bytes is EINVAL in the kernel,
                           # before the file system, and fsx takes that for
                           # "no posix_fallocate" (seed 780191 hit it at op 2181)
align = 1

[weights]
read = 10                  # pread
write = 10                 # pwrite
mapread = 10               # mmap + read memory + munmap
mapwrite = 10              # ftruncate-extend if needed, mmap, memcpy, msync, munmap
truncate = 5               # ftruncate, grow and shrink
fsync = 2
fdatasync = 2
posix_fallocate = 2        # glibc posix_fallocate -> fallocate(fd, 0, off, len): mode 0 only
copy_file_range = 5        # within the same file, non-overlapping ranges
close_open = 2             # close and reopen: drops per-fd state
invalidate = 1             # msync(MS_INVALIDATE) on a mapping
sendfile = 2               # read via sendfile(2) (splice read path)
posix_fadvise = 1          # random advice incl. DONTNEED (drops page cache)
punch_hole = 0             # fallocate(PUNCH_HOLE|KEEP_SIZE): ssefs supports mode 0 only
EOF

log=$work/fsx.log
rc=0
# -q: log only errors (no per-op lines). Success prints "All operations completed A-OK!".
fsx -q -f "$work/fsx.toml" -N "$numops" -S "$seed" -P "$artifacts" "$file" >"$log" 2>&1 || rc=$?

if [[ $rc -ne 0 ]] || ! grep -q '^All operations completed A-OK!$' "$log"; then
    miscompares=$(grep -c 'miscompare' "$log" || true)
    cat "$log" >&2
    # Keep config + log next to fsx's own artifacts, outside the temp dir
    # that the EXIT trap removes.
    if [[ -z ${FSX_ARTIFACTS:-} ]]; then
        artifacts=$(mktemp -d -t fsx-failed.XXXXXX)
        cp -a "$work/artifacts/." "$artifacts/" 2>/dev/null || true
    fi
    cp "$log" "$work/fsx.toml" "$artifacts/" 2>/dev/null || true
    echo "fsx.sh: FAILED (exit $rc), seed $seed; artifacts in $artifacts;" \
         "replay: fsx -f $artifacts/fsx.toml -N $numops -S $seed $file" >&2
    echo "fsx: FAILED within $numops operations, $miscompares miscompares (seed $seed)"
    exit 1
fi
echo "fsx: $numops operations, 0 miscompares"
