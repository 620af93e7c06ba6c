#!/usr/bin/env bash
# POSIX conformance run of pjdfstest (crates.io Rust rewrite) against a directory,
# normally an ssefs mount point.
#
# Usage: scripts/pjdfstest.sh DIR [SECONDARY_DIR] [-- TEST_PATTERN...]
#   DIR            directory to test in (pjdfstest makes and removes a temp dir in it)
#   SECONDARY_DIR  optional directory on a *different* file system; enables the
#                  two EXDEV tests (rename/link across file systems)
#   TEST_PATTERN   optional substrings to run only some tests (e.g. `chmod`)
# Env:
#   PJDFSTEST_CONFIG   config file (default: scripts/pjdfstest.toml next to this script)
#   PJDFSTEST_LOG      where the full per-test log goes (default: a temp file)
#
# Must run as root: the permission tests switch to the dummy users `nobody` and
# `tests`, and are skipped without root. A FUSE mount must therefore be mounted with
# allow_other (otherwise the kernel denies every other uid) and must enforce
# permissions (default_permissions or its own checks).
#
# Prints the tool's summary line plus `pjdfstest: N passed, N failed, N skipped`;
# exits non-zero if any test failed (or unexpectedly passed, or the tool errored).
set -euo pipefail

PJDFSTEST_VERSION=0.2.2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() { echo "usage: $0 DIR [SECONDARY_DIR] [-- TEST_PATTERN...]" >&2; exit 2; }
[[ $# -ge 1 && $1 != -* ]] || usage
dir=$1; shift
secondary=
if [[ $# -ge 1 && $1 != -- ]]; then secondary=$1; shift; fi
if [[ $# -ge 1 ]]; then [[ $1 == -- ]] || usage; shift; fi
patterns=("$@")

[[ -d $dir ]] || { echo "pjdfstest.sh: $dir is not a directory" >&2; exit 2; }
dir=$(realpath -e "$dir")   # absolute: the tool is run from /
if [[ -n $secondary ]]; then
    [[ -d $secondary ]] || { echo "pjdfstest.sh: $secondary is not a directory" >&2; exit 2; }
    secondary=$(realpath -e "$secondary")
fi
[[ $(id -u) -eq 0 ]] || { echo "pjdfstest.sh: must run as root (tests switch users)" >&2; exit 2; }

config=${PJDFSTEST_CONFIG:-$here/pjdfstest.toml}
[[ -f $config ]] || { echo "pjdfstest.sh: config $config not found" >&2; exit 2; }
config=$(realpath -e "$config")

# Install the pinned version into ~/.cargo/bin unless it is already there, so a
# fresh CI machine works and a warm one pays nothing (~40 s build on 2 cores).
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if [[ $(pjdfstest --version 2>/dev/null || true) != "pjdfstest $PJDFSTEST_VERSION" ]]; then
    echo "pjdfstest.sh: installing pjdfstest $PJDFSTEST_VERSION (cargo install)" >&2
    # --locked for reproducible deps; fall back to a fresh resolve if the lock fails.
    cargo install --quiet --locked --force pjdfstest --version "=$PJDFSTEST_VERSION" \
        || cargo install --quiet --force pjdfstest --version "=$PJDFSTEST_VERSION"
fi

# The permission tests need two non-root users, each with its own primary group
# (names must match [dummy_auth] in the config). Debian has nobody:nogroup; create
# tests:tests if missing. Idempotent.
getent group tests >/dev/null || groupadd --system tests
id -u tests >/dev/null 2>&1 \
    || useradd --system --gid tests --home-dir / --no-create-home \
               --shell /usr/sbin/nologin --comment "pjdfstest dummy user" tests

# The users switched to must be able to reach DIR (pjdfstest's own dirs are 0755),
# else dozens of tests fail with EACCES. Open up DIR itself; a closed parent
# (e.g. from `mktemp -d`) is the caller's to fix.
chmod a+rx "$dir"
for u in nobody tests; do
    runuser -u "$u" -- test -x "$dir" || {
        echo "pjdfstest.sh: user $u cannot reach $dir (a parent dir is not a+x," \
             "or a FUSE mount lacks allow_other)" >&2
        exit 2
    }
done

# Work around a pjdfstest 0.2.2 bug: create_path_max() underflows and every
# *::enametoolong_path test panics ("capacity overflow") when
# PATH_MAX-1 - (len(DIR) + 22) is a multiple of NAME_MAX/2 (22 = two ".tmpXXXXXX"
# levels it adds), e.g. for a 9-character DIR like /mnt/ssef. Then run in a
# fresh sub-directory (17 more characters, which clears the condition).
path_max=$(getconf PATH_MAX "$dir"); name_max=$(getconf NAME_MAX "$dir")
rundir=$dir
if (( (path_max - 1 - ${#dir} - 22) % (name_max / 2) == 0 )); then
    rundir=$(mktemp -d "$dir/pjdfstest.XXXXXX")
    chmod 0755 "$rundir"
    trap 'rm -rf -- "$rundir"' EXIT
fi

args=(-c "$config" -p "$rundir")
[[ -n $secondary ]] && args+=(-s "$secondary")
[[ ${#patterns[@]} -gt 0 ]] && args+=("${patterns[@]}")

log=${PJDFSTEST_LOG:-$(mktemp -t pjdfstest.XXXXXX.log)}
rc=0
# Run from / so the tool's cwd is never inside the file system under test.
(cd / && NO_COLOR=1 pjdfstest "${args[@]}") >"$log" 2>&1 || rc=$?

# Tool summary: "Summary: F failed, S skipped, P passed, E expected failures, T total"
summary=$(grep -E '^Summary: [0-9]+ failed, ' "$log" | tail -n1 || true)
if [[ -z $summary ]]; then
    echo "pjdfstest.sh: no summary from pjdfstest (exit $rc); log follows" >&2
    cat "$log" >&2
    exit 1
fi
read -r failed skipped passed < <(sed -E \
    's/^Summary: ([0-9]+) failed, ([0-9]+) skipped, ([0-9]+) passed.*/\1 \2 \3/' <<<"$summary")

if [[ $rc -ne 0 || $failed -ne 0 ]]; then
    # Show each failing test with its reason (the indented lines after it).
    echo "pjdfstest.sh: failures (full log: $log):" >&2
    # Show each failing test with its reason (the indented lines after it),
    # without the backtrace (kept in the log).
    awk '/ (FAILED|PASSED UNEXPECTEDLY)$/ {p=1; print; next}
         /^Backtrace:/ || /^[^\t ]/ {p=0} p' "$log" >&2
fi
echo "$summary"
echo "pjdfstest: $passed passed, $failed failed, $skipped skipped"
[[ -z ${PJDFSTEST_LOG:-} && $rc -eq 0 && $failed -eq 0 ]] && rm -f "$log"
[[ $rc -eq 0 && $failed -eq 0 ]]
