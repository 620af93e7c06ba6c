#!/usr/bin/env bash
# What the test suite needs from outside Rust, installed on a fresh Debian
# machine. Run first by scripts/test.sh (the README's test command), so a new
# user and CI both go through it. As root it apt-get installs just what is
# missing; as any other user it stops at once with one line naming the
# packages and the command that installs them. The cargo tools (cargo-deb,
# pjdfstest, fsx) are installed by their own scripts, and pjdfstest's second
# user by scripts/pjdfstest.sh.
# Usage: scripts/setup.sh
set -euo pipefail
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH:/usr/sbin:/sbin"

# What is checked, then the Debian package that provides it. A path is a
# file that must exist; anything else a command on $PATH.
needs=(
  "fusermount3 fuse3"             # the mounts, as a user and for cleanup
  "setfattr attr"                 # bucket rules in the mount tests and scripts
  "getfattr attr"
  "systemd-analyze systemd"       # unit checks (tests/integration/service.rs, package-test.sh)
  "systemd-escape systemd"
  "systemd-nspawn systemd-container" # the unit under a real systemd (systemd-test.sh)
  "man man-db"                    # man -w on the installed pages (package-test.sh)
  "mkfs.ext4 e2fsprogs"           # the small loop disk of tests/integration/fullspace.rs
  "pgrep procps"                  # finds the container's systemd (systemd-test.sh)
  "cc gcc"                        # ring's C and assembly parts, and the linker
  "/usr/include/stdio.h libc6-dev"
  "/etc/ssl/certs/ca-certificates.crt ca-certificates" # cargo install over https
  "pkg-config pkg-config"         # Garage's build (scripts/garage.sh): the test store
  "/usr/include/sodium.h libsodium-dev"
  "/usr/include/zstd.h libzstd-dev"
  "rsync rsync"                   # tools on a store mount (tests/integration/store_mount.rs)
  "git git"
  "tar tar"
  "diff diffutils"
)

missing() {
  local line what pkg
  for line in "${needs[@]}"; do
    read -r what pkg _ <<<"$line"
    if [[ $what == /* ]]; then
      [[ -e $what ]] && continue
    else
      command -v "$what" >/dev/null && continue
    fi
    echo "$pkg"
  done | sort -u | tr '\n' ' ' | sed 's/ $//'
}

# Nothing here installs Rust or a kernel module: say so and stop.
if ! command -v cargo >/dev/null; then
  echo "ssefs tests need Rust 1.85 or newer (cargo not found): install it from https://rustup.rs" >&2
  exit 1
fi
if [[ ! -c /dev/fuse ]]; then
  echo "ssefs tests need /dev/fuse: run modprobe fuse as root (in a container, pass the device, e.g. --device /dev/fuse)" >&2
  exit 1
fi

pkgs=$(missing)
if [[ $(id -u) -ne 0 ]]; then
  # The suite mounts with allow_other, switches users and installs the .deb:
  # only root runs it, and only root installs packages.
  if [[ -n $pkgs ]]; then
    echo "ssefs tests need root and: $pkgs — run: sudo apt-get install -y $pkgs && sudo ./scripts/test.sh" >&2
  else
    echo "ssefs tests need root (they mount, switch users and install the package) — run: sudo ./scripts/test.sh" >&2
  fi
  exit 1
fi
if [[ -n $pkgs ]]; then
  echo "setup: installing $pkgs (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  read -ra list <<<"$pkgs"
  apt-get update -qq
  apt-get install -y -qq "${list[@]}" >/dev/null
  pkgs=$(missing)
  if [[ -n $pkgs ]]; then
    echo "setup: still missing after apt-get install: $pkgs" >&2
    exit 1
  fi
fi
# clippy comes with rustup's default profile; a minimal toolchain lacks it.
if ! cargo clippy --version >/dev/null 2>&1; then
  if command -v rustup >/dev/null 2>&1; then
    echo "setup: installing clippy (rustup component add clippy)" >&2
    rustup component add clippy >/dev/null
  else
    echo "ssefs tests need clippy (cargo clippy): install it with your Rust toolchain" >&2
    exit 1
  fi
fi
# The test store (issue 14): Garage, built once and cached by version.
"$(dirname "$0")/garage.sh" install
echo "setup: everything the tests need is installed" >&2
