#!/usr/bin/env bash
# The whole test suite: unit, property, tamper and CLI tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --all-targets -- --test-threads=2 "$@"
