#!/usr/bin/env bash
# Issue 12, item 5: where /proc/cpuinfo lists aes and avx, the AES-NI SM4
# kernels (src/crypto/sm4ni.rs) must have been tested, not skipped. Their
# tests pass vacuously on a CPU without the features, so this runs them with
# SSEFS_REQUIRE_SM4NI=1 (no tier is then a failure) and checks by name that
# the ones that exercise the kernels ran and passed. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
if [[ $flags != *" aes "* || $flags != *" avx "* ]]; then
  echo "sm4ni: no aes+avx in /proc/cpuinfo; only the portable SM4 path is tested here"
  exit 0
fi
out=$(SSEFS_REQUIRE_SM4NI=1 cargo test --release --lib crypto:: 2>&1) || {
  echo "$out" >&2
  echo "sm4ni: FAILED: the crypto tests failed with SSEFS_REQUIRE_SM4NI=1" >&2
  exit 1
}
for t in sm4ni::tests::detection_agrees_with_proc_cpuinfo \
  sm4ni::tests::vector_sbox_matches_on_all_256_inputs \
  sm4ni::tests::gbt_32907_examples \
  sm4ni::tests::blocks_match_the_sm4_crate \
  sm4ni::tests::ctr_matches_the_sm4_crate \
  tests::sm4gcm_uses_the_fast_path_when_the_cpu_has_aes_ni; do
  grep -qx "test crypto::$t \.\.\. ok" <<<"$out" || {
    echo "sm4ni: FAILED: this CPU has aes and avx but crypto::$t did not run and pass" >&2
    exit 1
  }
done
echo "sm4ni: the AES-NI SM4 kernels were tested (aes and avx in /proc/cpuinfo)"
