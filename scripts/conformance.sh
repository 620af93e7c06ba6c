#!/usr/bin/env bash
# POSIX conformance and data-integrity stress on a real ssefs mount:
# pjdfstest in an AES256 bucket, then fsx (50,000 operations each) in an
# AES256, an SM4, a KMS and an unencrypted bucket.
# Usage: scripts/conformance.sh [SSEFS_BINARY]   (default: target/release/ssefs)
# SSEFS_MOUNT_OPTS: the mount's -o list (default allow_other; test.sh runs it
# a second time with io_uring added).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../target/release/ssefs}
bin=$(realpath "$bin")
ops=${FSX_OPS:-50000}

work=$(mktemp -d /tmp/ssefs-conformance.XXXXXX)
chmod 755 "$work"   # pjdfstest switches to unprivileged users
mnt=$work/mnt
mkdir "$mnt"
export SSEFS_DATA_DIR=$work/data
# Its root key beside it, not in the machine's /etc/ssefs.
export SSEFS_KEY_DIR=$work/keys
cleanup() {
  fusermount3 -u "$mnt" 2>/dev/null || true
  sleep 0.5
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" mount "$mnt" -o "${SSEFS_MOUNT_OPTS:-allow_other}"
for b in aes256 sm4 kms plain; do mkdir "$mnt/$b"; done
setfattr -n user.oss.server-side-encryption -v AES256 "$mnt/aes256"
setfattr -n user.oss.server-side-encryption -v SM4 "$mnt/sm4"
setfattr -n user.oss.server-side-encryption -v KMS "$mnt/kms"
chmod 777 "$mnt/aes256"

# A test that fails is run once more on its own: open::etxtbsy failed once in
# several full runs on a loaded machine and passed in 40 runs of its own since
# (cause not yet found; tracked in the notes). Both results are printed;
# failing twice fails CI.
# pjdfstest.sh names the failed tests on stderr: capture both streams.
if ! "$here/pjdfstest.sh" "$mnt/aes256" 2>&1 | tee "$work/pjdfstest.out"; then
  mapfile -t failed < <(awk '/FAILED$/ {print $1}' "$work/pjdfstest.out")
  [ ${#failed[@]} -gt 0 ] || exit 1
  echo "pjdfstest: re-running ${failed[*]} once" >&2
  "$here/pjdfstest.sh" "$mnt/aes256" -- "${failed[@]}"
fi

seed=1
for b in aes256 sm4 kms plain; do
  printf 'fsx in the %s bucket: ' "$b"
  FSX_SEED=$seed "$here/fsx.sh" "$mnt/$b/fsx.bin" "$ops" | tail -n 1
  seed=$((seed + 1))
done
case ",${SSEFS_MOUNT_OPTS:-}," in *,io_uring,*)
  grep -q "first request served over the rings" "$SSEFS_DATA_DIR/.ssefs/mount.log" \
    || { echo "conformance: -o io_uring, but no request came over the rings" >&2; exit 1; }
  echo "conformance: over io_uring" ;;
esac
echo "conformance: pjdfstest and fsx passed"
