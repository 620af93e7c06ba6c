#!/usr/bin/env bash
# The whole test suite: unit, property, tamper, CLI and mount tests, a smoke
# run of the benchmarks, the Debian package, then pjdfstest and fsx on a real
# mount, pjdfstest on a mount of the test store, and the stress tests on a
# debug build. Runs as root; first installs
# what is missing on a fresh Debian machine (scripts/setup.sh; as another
# user that step stops with one line saying what to install).
# SSEFS_TEST_ONLY=setup stops after the set-up. Extra arguments go to the
# first cargo test run (a name filter, for instance).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
./scripts/setup.sh
[ "${SSEFS_TEST_ONLY:-}" != setup ] || exit 0

# FUSE over io_uring (-o io_uring) needs the fuse module's enable_uring: on
# for the run (tests/integration/uring.rs switches it per mount as well),
# and back to what it was whatever happens.
URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_ORIG=
# The test store (tests/integration/store.rs): three Garage nodes on
# 127.0.0.1, stopped whatever happens.
GARAGE_DIR=$(mktemp -d /tmp/ssefs-garage.XXXXXX)
cleanup() {
  [ -z "$URING_ORIG" ] || echo "$URING_ORIG" >"$URING_PARAM"
  ./scripts/garage.sh stop "$GARAGE_DIR" || true
  rm -rf "$GARAGE_DIR"
}
trap cleanup EXIT
if [ -w "$URING_PARAM" ]; then
  URING_ORIG=$(cat "$URING_PARAM")
  echo Y >"$URING_PARAM"
fi
# A port base of its own, so that a second run on the machine does not
# collide with this one (ports 39n0-39n3 plus the base).
export GARAGE_PORT_BASE=${GARAGE_PORT_BASE:-$(( (RANDOM % 40) * 100 ))}
./scripts/garage.sh start "$GARAGE_DIR"
export SSEFS_TEST_GARAGE=$GARAGE_DIR/env

cargo build --release --bins
# The lints of Cargo.toml's [lints] (no unwrap or expect outside tests, a
# SAFETY comment on every unsafe block) and clippy's defaults, as errors.
cargo clippy --release --all-targets -- -D warnings
# The fuzz targets (their own workspace, fuzz/) must keep building against
# the crate's API: checked here (seconds once fuzz/target is warm; no
# nightly flags), run only by scripts/fuzz.sh.
cargo check --manifest-path fuzz/Cargo.toml
cargo test --release --lib --bins --tests -- --test-threads=2 "$@"
./scripts/sm4ni-check.sh
# Each benchmark once, as a test (no timing): they must keep working.
cargo test --release --benches
./scripts/package-test.sh
./scripts/conformance.sh target/release/ssefs
# pjdfstest on a mount of the Garage cluster, its expected failures listed
# and explained in scripts/pjdfstest-store.toml.
./scripts/store-conformance.sh target/release/ssefs
# Once more over io_uring, where the kernel has it (pjdfstest and fsx with
# fewer operations: the transport, not the filesystem, is what differs).
if [ -w "$URING_PARAM" ]; then
  SSEFS_MOUNT_OPTS=allow_other,io_uring FSX_OPS=20000 ./scripts/conformance.sh target/release/ssefs
fi
# Last: the stress tests again, against a debug build of the daemon
# (overflow checks and debug assertions on).
./scripts/stress-debug.sh
