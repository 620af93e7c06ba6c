#!/usr/bin/env bash
# ssefs@.service under a real systemd. CI has no systemd as PID 1, so this
# boots the machine's own installation in a container (systemd-nspawn
# --volatile=yes: a fresh tmpfs root and /etc, /usr read-only from the host,
# hence the installed package; up to basic.target only, so none of the
# machine's other services start) and checks there:
#   - start: Type=notify reaches "active" with the mount answering in the
#     system's mount namespace (the hardening must not hide it in the
#     service's own), and the root key arrives by LoadCredential=;
#   - the watchdog: a hung daemon (SIGSTOP) is killed and restarted, and the
#     restart clears the dead mount it left;
#   - stop: a clean unmount;
#   - an fstab line as systemd's .mount unit (what x-systemd.automount
#     triggers; autofs itself does not work in a container).
#   - the root key sealed with systemd-creds (LoadCredentialEncrypted=),
#     set up as the README says: the unit mounts with it, and the plain key
#     is on no disk (nor the data directory) inside the container.
#   - the unit's sandbox (system call filter, capabilities, devices) lets
#     the daemon do what users do through the mount; and
#     `systemd-analyze security` on the running instance (its exposure score
#     is printed).
# Run by scripts/package-test.sh once the package is installed. Needs root
# and systemd-container (.ci/run installs it).
#
# SSEFS_BIN=path/to/ssefs scripts/systemd-test.sh tests that binary with this
# tree's unit and nothing installed on the host: the container then gets a
# throw-away writable overlay over /usr and installs them there.
set -euo pipefail

work=$(mktemp -d /tmp/ssefs-systemd.XXXXXX)
mkdir "$work/mnt" "$work/auto"
overlay=()
if [ -n "${SSEFS_BIN:-}" ]; then
  cp "$SSEFS_BIN" "$work/ssefs"
  cp "$(dirname "$0")/../packaging/systemd/ssefs@.service" "$work/"
  overlay=(--overlay=/usr::/usr)
fi
nspawn_pid=
leader=
cleanup() {
  if [ -n "$leader" ]; then
    nsenter -t "$leader" -a systemctl poweroff >/dev/null 2>&1 || true
  fi
  if [ -n "$nspawn_pid" ]; then
    for _ in $(seq 50); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.2; done
    kill "$nspawn_pid" 2>/dev/null || true
    wait "$nspawn_pid" 2>/dev/null || true
  fi
  for m in "$work/mnt" "$work/auto"; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m"
  done
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "systemd test: $*" >&2
  [ -z "$leader" ] || inside journalctl --no-pager -n 40 >&2 || true
  exit 1
}
inside() { nsenter -t "$leader" -a "$@"; }

systemd-nspawn -q -D / --volatile=yes "${overlay[@]}" --bind=/dev/fuse --bind="$work:/srv" \
  --register=no --keep-unit --machine="ssefs-ci-$$" \
  -b systemd.firstboot=off systemd.unit=basic.target \
  </dev/null >"$work/console.log" 2>&1 &
nspawn_pid=$!
# The container's PID 1 (nspawn's first child is a short-lived helper).
for _ in $(seq 100); do
  leader=
  for p in $(pgrep -P "$nspawn_pid"); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd ] && leader=$p
  done
  [ -n "$leader" ] && break
  sleep 0.1
done
[ -n "$leader" ] || { cat "$work/console.log" >&2; fail "the container did not start"; }
state=
for _ in $(seq 120); do
  state=$(timeout 10 nsenter -t "$leader" -a systemctl is-system-running 2>/dev/null) || true
  case $state in running | degraded) break ;; esac
  sleep 0.5
done
case $state in
  running | degraded) ;;
  *) cat "$work/console.log" >&2; fail "the container's systemd did not come up ($state)" ;;
esac

if [ -n "${SSEFS_BIN:-}" ]; then
  inside sh -ec '
    install -m 755 /srv/ssefs /usr/bin/ssefs
    ln -sf /usr/bin/ssefs /usr/sbin/mount.fuse.ssefs
    install -m 644 /srv/ssefs@.service /usr/lib/systemd/system/
    systemctl daemon-reload'
fi

# An instance, set up as the README says.
inside sh -ec '
  install -d -m 0700 /etc/ssefs
  ssefs --data-dir /srv/data --root-key /etc/ssefs/ci.key init >/dev/null
  printf "data_dir = \"/srv/data\"\nmountpoint = \"/srv/mnt\"\nallow_other = true\n" >/etc/ssefs/ci.toml
  mkdir -p /etc/systemd/system/ssefs@ci.service.d
  printf "[Service]\nWatchdogSec=2s\n" >/etc/systemd/system/ssefs@ci.service.d/watchdog.conf
  systemctl daemon-reload'

# Start: returns once READY=1 arrived, i.e. the mount answers.
inside systemctl start ssefs@ci || fail "start failed"
[ "$(inside systemctl show -P ActiveState ssefs@ci)" = active ] || fail "not active"
inside grep -q " /srv/mnt .* - fuse.ssefs /srv/data " /proc/1/mountinfo \
  || fail "mount not visible to the system as fuse.ssefs from /srv/data"
inside sh -ec 'mkdir /srv/mnt/bkt; echo through-systemd >/srv/mnt/bkt/f'
[ "$(inside cat /srv/mnt/bkt/f)" = through-systemd ] || fail "I/O"
[ ! -e "$work/data/.ssefs/root.key" ] || fail "the root key did not come from LoadCredential="
[ "$(inside systemctl show -P StatusText ssefs@ci)" = "mounted on /srv/mnt" ] || fail "no STATUS="
echo "systemd: Type=notify start, mount visible to the system, credential used"

# The sandbox: what users do through a shared mount makes the daemon call
# chown, chmod, xattrs, mknod, link, symlink, rename, truncate, fallocate,
# copy_file_range and fsync; a system call outside the filter fails (EPERM)
# and shows up here as an error.
inside sh -ecx '
  cd /srv/mnt/bkt
  head -c 100000 /dev/urandom >big
  cp big copy && cmp big copy
  chown 1000:1000 copy && chmod 2640 copy
  [ "$(stat -c %u:%g:%a copy)" = 1000:1000:2640 ]
  setfattr -n user.note -v hi copy && [ "$(getfattr --only-values -n user.note copy)" = hi ]
  setfattr -n user.oss.server-side-encryption -v SM4 copy && cmp big copy
  mknod null c 1 3 && [ -c null ]
  ln copy hard && ln -s copy soft && mv hard moved && [ "$(readlink soft)" = copy ]
  truncate -s 5000 moved && [ "$(stat -c %s copy)" = 5000 ]
  fallocate -l 70000 moved && [ "$(stat -c %s copy)" = 70000 ]
  sync moved && rm moved soft null big' >"$work/sandbox.log" 2>&1 \
  || { cat "$work/sandbox.log" >&2; fail "an operation through the mount failed under the sandbox"; }
# The allow-list systemd resolved for the instance: mount(2) in, and e.g.
# swapon(2) and reboot(2) (not in @system-service) out.
filter=" $(inside systemctl show -P SystemCallFilter ssefs@ci) "
case $filter in *" mount "*) ;; *) fail "mount(2) is not in the system call filter" ;; esac
case $filter in *" swapon "* | *" reboot "*) fail "the system call filter lets swapon or reboot through" ;; esac
[ "$(inside systemctl show -P NRestarts ssefs@ci)" = 0 ] || fail "the daemon died under the sandbox"
echo "systemd: chown, chmod, xattrs, re-encryption, mknod, links, truncate, fallocate, sync under the sandbox"

# systemd's own assessment of the sandbox (informational: the mount must
# stay visible, so the namespacing settings it counts are off on purpose).
score=$(inside systemd-analyze security --no-pager ssefs@ci.service | sed -n 's/.*Overall exposure level for ssefs@ci.service: //p')
echo "systemd: systemd-analyze security: exposure ${score:-unknown}"

# The watchdog: keep-alives hold the service up, a hung daemon restarts it.
sleep 5
[ "$(inside systemctl show -P NRestarts ssefs@ci)" = 0 ] || fail "restarted despite keep-alives"
inside kill -STOP "$(inside systemctl show -P MainPID ssefs@ci)"
for _ in $(seq 100); do
  [ "$(inside systemctl show -P NRestarts ssefs@ci)" = 1 ] \
    && [ "$(inside systemctl show -P ActiveState ssefs@ci)" = active ] && break
  sleep 0.2
done
[ "$(inside systemctl show -P NRestarts ssefs@ci)" = 1 ] || fail "no restart after a hang"
[ "$(inside cat /srv/mnt/bkt/f)" = through-systemd ] || fail "I/O after the restart"
echo "systemd: watchdog restarted a hung daemon, dead mount cleared"

# Stop: a clean unmount.
inside systemctl stop ssefs@ci
[ "$(inside systemctl show -P Result ssefs@ci)" = success ] || fail "stop did not succeed"
! inside grep -q " /srv/mnt " /proc/1/mountinfo || fail "still mounted after stop"
echo "systemd: stop unmounted cleanly"

# An fstab line, as the .mount unit systemd makes of it.
inside sh -ec '
  echo "/srv/data /srv/auto fuse.ssefs defaults,allow_other,_netdev,noauto,x-systemd.automount,root_key=/etc/ssefs/ci.key 0 0" >>/etc/fstab
  systemctl daemon-reload'
inside systemctl start srv-auto.mount || fail "the fstab line's mount unit failed"
[ "$(inside cat /srv/auto/bkt/f)" = through-systemd ] || fail "I/O through the fstab mount"
inside systemctl stop srv-auto.mount
! inside grep -q " /srv/auto " /proc/1/mountinfo || fail "the fstab mount stayed"
echo "systemd: fstab line mounted and unmounted as a .mount unit"

# The root key sealed with systemd-creds to the host key (the README's three
# commands): initialised with the key in /run (memory), sealed, removed.
inside sh -ec '
  ssefs --data-dir /srv/sealed-data --root-key /run/sealed.key init >/dev/null
  od -An -tx1 /run/sealed.key | tr -d " \n" >/run/sealed.hex
  systemd-creds encrypt --with-key=host --name=root.key /run/sealed.key /etc/ssefs/sealed.cred 2>/dev/null
  rm /run/sealed.key
  printf "data_dir = \"/srv/sealed-data\"\nmountpoint = \"/srv/sealed-mnt\"\n" >/etc/ssefs/sealed.toml'
inside test ! -e /etc/ssefs/sealed.key || fail "a plain key file is in the way"
inside systemctl start ssefs@sealed || fail "start with the sealed credential failed"
inside sh -ec 'mkdir /srv/sealed-mnt/bkt; echo sealed-io >/srv/sealed-mnt/bkt/f'
[ "$(inside cat /srv/sealed-mnt/bkt/f)" = sealed-io ] || fail "I/O with the sealed credential"
# The plain key, as bytes or as hex, on no disk: every file of the
# container (its /etc, /var, and /srv with the data directory; /usr is the
# host's, read-only) is searched. It must turn up exactly once: in the unit's
# credentials directory, which is memory (ramfs) and shows that the search
# does find it. /run/sealed.hex is the test's own note of it, in memory too.
inside python3 - <<'PY' || fail "the plain root key is on a disk"
import os, sys
hexkey = open("/run/sealed.hex").read().strip()
needles = [bytes.fromhex(hexkey), hexkey.encode()]
assert len(needles[0]) == 32
skip = ("/proc", "/sys", "/dev", "/usr", "/run/sealed.hex", "/srv/sealed-mnt", "/srv/mnt", "/srv/auto")
found, seen = [], set()
for root, dirs, files in os.walk("/"):
    if root.startswith(skip):
        dirs[:] = []
        continue
    for f in files:
        p = os.path.join(root, f)
        if p.startswith(skip) or os.path.islink(p) or not os.path.isfile(p):
            continue
        try:
            data = open(p, "rb").read()
        except OSError:
            continue
        seen.add(p)
        if any(n in data for n in needles):
            found.append(p)
must_see = ["/srv/sealed-data/.ssefs/keystore.toml", "/etc/ssefs/sealed.cred", "/srv/sealed-data/bkt/f"]
missing = [p for p in must_see if p not in seen]
print(f"searched {len(seen)} files; found in {found}", file=sys.stderr)
if missing or found != ["/run/credentials/ssefs@sealed.service/root.key"]:
    print("not searched:", missing, file=sys.stderr)
    sys.exit(1)
PY
[ "$(inside systemctl show -P NRestarts ssefs@sealed)" = 0 ] || fail "the sealed instance restarted"
inside systemctl stop ssefs@sealed
[ "$(inside systemctl show -P Result ssefs@sealed)" = success ] || fail "stop of the sealed instance"
echo "systemd: root key sealed with systemd-creds (LoadCredentialEncrypted=), plain key on no disk"
