#!/usr/bin/env bash
# The concurrency stress tests (tests/integration/stress.rs: fsx on several
# files of one mount at once while they are re-encrypted, and threads doing
# random operations checked against a model) against a debug build of the
# daemon, so that overflow checks and debug assertions are on where the
# requests are served. The test harness itself is the release build that
# scripts/test.sh has already made. Run last by scripts/test.sh; needs root,
# fuse3 and attr like the rest of the suite. SSEFS_STRESS_OPS and
# SSEFS_STRESS_FSX_OPS make the run longer.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cargo build --bin ssefs
target=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
SSEFS_TEST_BIN=$target/debug/ssefs cargo test --release --test integration stress:: -- --test-threads=1
