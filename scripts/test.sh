#!/usr/bin/env bash
# The whole test suite: unit, property, tamper, CLI and mount tests, then
# pjdfstest and fsx on a real mount. Needs root, fuse3 and attr (.ci/run
# installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
cargo test --release --all-targets -- --test-threads=2 "$@"
./scripts/conformance.sh target/release/ssefs
