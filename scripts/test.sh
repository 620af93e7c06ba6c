#!/usr/bin/env bash
# The whole test suite: unit, property, tamper, CLI and mount tests, a smoke
# run of the benchmarks, then pjdfstest and fsx on a real mount. Needs root,
# fuse3 and attr (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
cargo test --release --lib --bins --tests -- --test-threads=2 "$@"
# Each benchmark once, as a test (no timing): they must keep working.
cargo test --release --benches
./scripts/package-test.sh
./scripts/conformance.sh target/release/ssefs
# Last: the stress tests again, against a debug build of the daemon
# (overflow checks and debug assertions on).
./scripts/stress-debug.sh
