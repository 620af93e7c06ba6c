#!/usr/bin/env bash
# The README's two quick-start commands on a fresh machine (issue 17): a
# clean Debian chroot (debootstrap --variant=minbase, this host's suite and
# mirror) with nothing in it but a Rust toolchain (this host's, bind-mounted
# read-only as the official rust image lays it out), this tree copied in
# (tracked files as they are in the work tree), /dev, /proc and /sys bound.
# It checks there, in order:
#   a. `ssefs mount /mnt/oss` as a user, before anything is installed (no
#      fuse3): one line naming fusermount3, fuse3 and the mount point. The
#      binary is this host's build (the chroot cannot build yet: no C
#      compiler), which runs there since the suite is the same.
#   b. `./scripts/test.sh` as that user: one line naming the packages and
#      the command that installs them.
#   c. As root, `SSEFS_TEST_ONLY=setup ./scripts/test.sh`: the set-up
#      installs what is missing; then, as test.sh goes on, the build, the
#      library tests and the SM4-NI check (not the mount tests, the package,
#      pjdfstest or fsx: too long for a check of the set-up).
#   d. As root, the first quick-start command itself, `cargo run --release
#      -- mount /mnt/oss`: it mounts, a file goes through an SM4 bucket,
#      fusermount3 unmounts.
# Needs root, network (apt, crates.io) and ~2 GB in $SSEFS_FRESH_DIR
# (default /var/tmp/ssefs-fresh, removed at the end). Not run by CI: about
# ten minutes, most of it the build, plus about seven for the set-up's
# one-time build of the test store (scripts/garage.sh install) when
# /var/cache/ssefs-ci has no Garage yet.
# Usage: scripts/fresh-machine-check.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
[[ $(id -u) -eq 0 ]] || { echo "fresh-machine-check: needs root (debootstrap, chroot, mounts)" >&2; exit 2; }
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
start=$SECONDS
step() { printf '\n== %s (%d s)\n' "$*" $((SECONDS - start)); }

# This host's suite and the mirror its apt uses for it (never a fixed host).
. /etc/os-release
suite=$VERSION_CODENAME
mirror=$(apt-cache policy | awk -v s="$suite/main" '$3 == s { print $2; exit }')
[[ -n $mirror ]] || { echo "fresh-machine-check: no apt source for $suite/main" >&2; exit 1; }
command -v debootstrap >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}
tc=$(cd "$repo" && rustup show active-toolchain | cut -d' ' -f1)
tc_dir=$(rustup toolchain list -v | awk -v t="$tc" '$1 == t { print $NF }')
[[ -d $tc_dir ]] || { echo "fresh-machine-check: toolchain $tc not found" >&2; exit 1; }

work=${SSEFS_FRESH_DIR:-/var/tmp/ssefs-fresh}
root=$work/root
# Mount points under the chroot, innermost first.
mounted() { awk -v r="$root/" 'index($5, r) == 1 { print $5 }' /proc/self/mountinfo | sort -r; }
cleanup() {
  local m
  for m in $(mounted); do umount -l "$m" || true; done
  # Never rm -rf through a bind of /dev, /proc or the toolchain.
  if [[ -n $(mounted) ]]; then
    echo "fresh-machine-check: still mounted, $work left in place:" $(mounted) >&2
    return
  fi
  rm -rf "$work"
}
trap cleanup EXIT
bind() { # bind SRC DST [ro]
  mkdir -p "$2"
  mount --bind "$1" "$2"
  [[ ${3:-} != ro ]] || mount -o remount,bind,ro "$2"
}

step "host build of the binary for check a"
(cd "$repo" && cargo build --release --bins -q)
[[ -z $(mounted) ]] || { echo "fresh-machine-check: a previous run left mounts under $root" >&2; exit 1; }
rm -rf "$work"
mkdir -p "$work"

step "debootstrap --variant=minbase $suite from $mirror"
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
cp /etc/resolv.conf "$root/etc/resolv.conf"
# CA certificates this host adds for its network (an intercepting proxy's,
# say): ca-certificates, once the set-up installs it, trusts them as here.
if compgen -G "/usr/local/share/ca-certificates/*" >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi
bind /proc "$root/proc"
bind /sys "$root/sys"
bind /dev "$root/dev"
bind /dev/pts "$root/dev/pts"

step "Rust: toolchain $tc, read-only, in /usr/local/rustup; rustup in /usr/local/cargo/bin"
bind "$tc_dir" "$root/usr/local/rustup/toolchains/$tc" ro
printf 'version = "12"\ndefault_toolchain = "%s"\n' "$tc" >"$root/usr/local/rustup/settings.toml"
mkdir -p "$root/usr/local/cargo/bin"
cp "$(command -v rustup)" "$root/usr/local/cargo/bin/rustup"
for p in cargo rustc rustdoc; do ln -s rustup "$root/usr/local/cargo/bin/$p"; done
chmod -R a+rX "$root/usr/local/cargo" "$root/usr/local/rustup/settings.toml"
# The tree, as a new user would have it after git clone.
mkdir -p "$root/src/ssefs"
(cd "$repo" && git ls-files -z | tar --null -T - -c) | tar -x -C "$root/src/ssefs"
cp "$repo/target/release/ssefs" "$root/usr/local/bin/ssefs-prebuilt"
chroot "$root" useradd -m newuser
chroot "$root" chown -R newuser: /src/ssefs

env_base=(env -i TERM=dumb LANG=C.UTF-8 RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo
  PATH=/usr/local/cargo/bin:/usr/local/bin:/usr/bin:/bin)
as_user() { chroot --userspec=newuser:newuser "$root" "${env_base[@]}" HOME=/home/newuser sh -c "cd /src/ssefs && $1"; }
as_root() { chroot "$root" "${env_base[@]}" PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root sh -c "cd /src/ssefs && $1"; }
# expect WHAT OUTPUT PATTERN: the output is one line and holds PATTERN.
expect() {
  printf '%s:\n  %s\n' "$1" "$2"
  [[ $(printf '%s\n' "$2" | wc -l) -eq 1 ]] || { echo "FAILED: not one line" >&2; exit 1; }
  [[ $2 == *"$3"* ]] || { echo "FAILED: lacks \"$3\"" >&2; exit 1; }
}

step "a. ssefs mount /mnt/oss as a user, nothing installed"
as_root '! command -v fusermount3 && ! command -v cc && ! command -v setfattr' >/dev/null \
  || { echo "FAILED: the chroot is not fresh" >&2; exit 1; }
out=$(as_user 'ssefs-prebuilt mount /mnt/oss 2>&1; echo "exit $?" >&2' 2>"$work/rc")
expect "ssefs mount /mnt/oss (newuser)" "$out" "fusermount3, which is not installed (sudo apt-get install -y fuse3); and write access to /mnt to create /mnt/oss"
grep -qx "exit 1" "$work/rc" || { echo "FAILED: $(cat "$work/rc")" >&2; exit 1; }
[[ ! -e $root/mnt/oss ]] || { echo "FAILED: /mnt/oss was created" >&2; exit 1; }

step "b. ./scripts/test.sh as a user, nothing installed"
out=$(as_user './scripts/test.sh 2>&1; echo "exit $?" >&2' 2>"$work/rc")
expect "./scripts/test.sh (newuser)" "$out" "— run: sudo apt-get install -y "
grep -qx "exit 1" "$work/rc" || { echo "FAILED: $(cat "$work/rc")" >&2; exit 1; }
for p in fuse3 attr systemd systemd-container man-db procps gcc libc6-dev ca-certificates; do
  [[ " $out " == *" $p "* ]] || { echo "FAILED: $p not named" >&2; exit 1; }
done

step "c. as root: the set-up installs what is missing"
as_root 'SSEFS_TEST_ONLY=setup ./scripts/test.sh'
as_root 'command -v fusermount3 setfattr systemd-nspawn man mkfs.ext4 pgrep cc' >/dev/null

step "c. as root: build, library tests, SM4-NI check (test.sh's first stages)"
as_root 'cargo build --release --bins -q && cargo test --release --lib -q 2>&1 | grep -E "^test result|FAILED|panicked" && ./scripts/sm4ni-check.sh'

step "a'. ssefs mount /mnt/oss as a user, fuse3 installed"
out=$(as_user 'target/release/ssefs mount /mnt/oss 2>&1' || true)
expect "ssefs mount /mnt/oss (newuser)" "$out" "needs write access to /mnt to create /mnt/oss"
[[ $out != *fusermount3* ]] || { echo "FAILED: fusermount3 named" >&2; exit 1; }

step "d. as root: cargo run --release -- mount /mnt/oss"
as_root 'cargo run --release -q -- mount /mnt/oss
  mkdir /mnt/oss/docs
  setfattr -n user.oss.server-side-encryption -v SM4 /mnt/oss/docs
  echo fresh >/mnt/oss/docs/f
  [ "$(getfattr --absolute-names --only-values -n user.oss.server-side-encryption /mnt/oss/docs/f)" = SM4 ]
  ! grep -q fresh /var/lib/ssefs/docs/f
  fusermount3 -u /mnt/oss
  echo "mounted, wrote through an SM4 bucket (ciphertext on disk), unmounted"'

step "fresh-machine check passed"
