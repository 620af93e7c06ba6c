#!/usr/bin/env bash
# The Debian package, end to end: builds it with cargo-deb (man pages from
# `ssefs man`), installs it with dpkg -i, then checks what it installed:
#   - systemd-analyze verify on an instance of the installed unit (its man
#     page references included);
#   - mount -t fuse.ssefs DATA DIR -o allow_other, through the installed
#     /sbin/mount.fuse.ssefs: I/O, encryption on the backend, umount;
#   - fstab lines, from an alternative fstab (mount -T, so /etc/fstab is never
#     touched): a data directory and a config file as the source;
#   - x-systemd.automount: systemd's fstab generator turns the line into an
#     .automount and a .mount unit, both verified, and the .mount unit's
#     mount command (what systemd runs on first access) mounts;
#   - the unit under a real systemd (scripts/systemd-test.sh).
# The package is removed again at the end unless it was installed before.
# Needs root, fuse3, attr, systemd and systemd-container (.ci/run installs
# them); installs cargo-deb (pinned) if missing.
# Usage: scripts/package-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
start=$SECONDS

CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
  # About 3 minutes, once per machine.
  echo "package-test.sh: installing cargo-deb $CARGO_DEB_VERSION (cargo install)" >&2
  cargo install --quiet --locked --force cargo-deb --version "=$CARGO_DEB_VERSION"
fi

cargo build --release --bins # a no-op after scripts/test.sh
man_dir=$target/release/man
rm -rf "$man_dir"
"$target/release/ssefs" man "$man_dir"
gzip -9n "$man_dir"/*.1
deb=$(cargo deb --no-build --strip | tail -n 1)
[ -f "$deb" ] || { echo "cargo deb made no package" >&2; exit 1; }
echo "package: $deb ($(du -h "$deb" | cut -f1))"

work=$(mktemp -d /tmp/ssefs-package.XXXXXX)
# Root keys of the data directories made here go beside them, not into the
# machine's /etc/ssefs.
export SSEFS_KEY_DIR=$work/keys
chmod 755 "$work"
was_installed=no
dpkg -s ssefs >/dev/null 2>&1 && was_installed=yes
cleanup() {
  for m in "$work"/mnt*; do
    mountpoint -q "$m" 2>/dev/null && { umount "$m" || umount -l "$m"; }
  done
  rm -rf "$work" /etc/ssefs/pkgtest.toml
  if [ "$was_installed" = no ]; then
    dpkg -P ssefs >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

dpkg -i "$deb" >/dev/null
for f in /usr/bin/ssefs /sbin/mount.fuse.ssefs /lib/systemd/system/ssefs@.service \
  /usr/share/doc/ssefs/ssefs.toml.example; do
  [ -e "$f" ] || { echo "not installed: $f" >&2; exit 1; }
done
[ "$(readlink -f /sbin/mount.fuse.ssefs)" = "$(readlink -f /usr/bin/ssefs)" ]
[ "$(stat -c %a /etc/ssefs)" = 700 ] || { echo "/etc/ssefs is not 0700" >&2; exit 1; }
man -w ssefs-mount >/dev/null

# The installed unit, as an instance. verify exits 0 on warnings: any output
# is a failure.
cat >/etc/ssefs/pkgtest.toml <<EOF
data_dir = "$work/data"
mountpoint = "$work/mnt-unit"
read_only = true
EOF
out=$(systemd-analyze verify ssefs@pkgtest.service 2>&1) || true
if [ -n "$out" ]; then
  echo "systemd-analyze verify ssefs@pkgtest.service:" >&2
  echo "$out" >&2
  exit 1
fi
echo "unit: systemd-analyze verify ssefs@pkgtest.service passed"

# io MOUNTPOINT BUCKET: a bucket with an SM4 rule, a file written, read back
# and stored as ciphertext.
io() {
  local mnt=$1 b=$2
  mkdir "$mnt/$b"
  setfattr -n user.oss.server-side-encryption -v SM4 "$mnt/$b"
  echo "secret payload $b" >"$mnt/$b/f.txt"
  [ "$(cat "$mnt/$b/f.txt")" = "secret payload $b" ]
  [ "$(getfattr --absolute-names --only-values -n user.oss.server-side-encryption "$mnt/$b/f.txt")" = SM4 ]
  if grep -q "secret payload" "$work/data/$b/f.txt"; then
    echo "plaintext on the backend: $work/data/$b/f.txt" >&2
    exit 1
  fi
}

# mount(8) by hand, through the installed helper. Without ssefs on $PATH,
# mount.fuse3's fallback (which runs `ssefs` from $PATH) cannot be what works.
mkdir "$work/mnt"
env PATH=/usr/sbin:/sbin /usr/bin/mount -t fuse.ssefs "$work/data" "$work/mnt" -o allow_other
mountpoint -q "$work/mnt"
grep -q " $work/mnt .*allow_other" /proc/self/mountinfo
io "$work/mnt" byhand
umount "$work/mnt"
! mountpoint -q "$work/mnt"
echo "mount -t fuse.ssefs: mounted, I/O, unmounted"

# fstab lines, from an alternative fstab.
cat >"$work/fstab" <<EOF
$work/data  $work/mnt-fstab  fuse.ssefs  defaults,allow_other,_netdev  0 0
/etc/ssefs/pkgtest.toml  $work/mnt-config  fuse.ssefs  defaults,nofail  0 0
EOF
mkdir "$work/mnt-fstab" "$work/mnt-config"
mount -T "$work/fstab" "$work/mnt-fstab"
[ "$(cat "$work/mnt-fstab/byhand/f.txt")" = "secret payload byhand" ]
io "$work/mnt-fstab" fstab
umount "$work/mnt-fstab"
mount -T "$work/fstab" "$work/mnt-config"
[ "$(cat "$work/mnt-config/fstab/f.txt")" = "secret payload fstab" ]
if touch "$work/mnt-config/fstab/new" 2>/dev/null; then
  echo "the config's read_only was undone (by mount(8)'s rw?)" >&2
  exit 1
fi
umount "$work/mnt-config"
echo "fstab (mount -T): data directory and config file sources mounted, I/O, unmounted"

# x-systemd.automount: the generator's units, and their mount command.
gen=$work/generator
mkdir -p "$gen"/{normal,early,late} "$work/mnt-auto"
echo "$work/data $work/mnt-auto fuse.ssefs defaults,allow_other,_netdev,noauto,x-systemd.automount 0 0" >"$work/fstab-auto"
SYSTEMD_FSTAB=$work/fstab-auto SYSTEMD_PROC_CMDLINE="" \
  /lib/systemd/system-generators/systemd-fstab-generator "$gen/normal" "$gen/early" "$gen/late"
unit=$(systemd-escape --path --suffix=mount "$work/mnt-auto")
[ -f "$gen/normal/$unit" ] && [ -f "$gen/normal/${unit%.mount}.automount" ] || {
  echo "the fstab generator made no .mount/.automount for the line" >&2
  exit 1
}
out=$(cd "$gen/normal" && systemd-analyze verify --man=no "./$unit" "./${unit%.mount}.automount" 2>&1) || true
[ -z "$out" ] || { echo "$out" >&2; exit 1; }
what=$(sed -n 's/^What=//p' "$gen/normal/$unit")
where=$(sed -n 's/^Where=//p' "$gen/normal/$unit")
type=$(sed -n 's/^Type=//p' "$gen/normal/$unit")
opts=$(sed -n 's/^Options=//p' "$gen/normal/$unit")
[ "$type" = fuse.ssefs ]
mount "$what" "$where" -t "$type" -o "$opts"
io "$where" automount
umount "$where"
echo "x-systemd.automount: units generated and verified, their mount command mounted"

# The installed unit under a real systemd, in a container.
./scripts/systemd-test.sh

echo "package test passed in $((SECONDS - start)) s"
