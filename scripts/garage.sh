#!/usr/bin/env bash
# The test store of issue 14: a real Garage cluster of three nodes on
# 127.0.0.1 with replication factor 3 (docs/design/s3-backend.md §3).
# Garage is a test tool here, like pjdfstest: never linked into ssefs.
#
#   scripts/garage.sh install        build it once (cached by version)
#   scripts/garage.sh start DIR      three nodes under DIR; writes DIR/env
#   scripts/garage.sh stop DIR       stops them
#   scripts/garage.sh kill DIR N     kill -9 of node N (1..3)
#   scripts/garage.sh path           prints the binary's path
#
# DIR/env (0600) holds what a client needs, as shell assignments:
# SSEFS_TEST_S3_ENDPOINTS (the three S3 ports, comma-separated),
# AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION and
# SSEFS_TEST_S3_BUCKET. Ports: node n listens on 39n0 (S3), 39n1 (RPC)
# and 39n3 (admin), n = 1..3, plus $GARAGE_PORT_BASE (default 0) so that
# two clusters can run at once.
set -euo pipefail
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

GARAGE_VERSION=2.5.0
CACHE=${SSEFS_CI_CACHE:-/var/cache/ssefs-ci}
ROOT=$CACHE/garage-$GARAGE_VERSION
BIN=$ROOT/bin/garage
BASE=${GARAGE_PORT_BASE:-0}

# The cold build takes about 6.5 min on 2 cores; a warm run finds the
# binary and does nothing. Only what ssefs's tests need: LMDB metadata,
# Debian's libsodium and zstd (scripts/setup.sh installs them).
install() {
  [[ -x $BIN ]] && return 0
  echo "garage: building $GARAGE_VERSION once into $ROOT (about 7 minutes on 2 cores)" >&2
  mkdir -p "$CACHE"
  CARGO_TARGET_DIR=$CACHE/garage-target nice -n 10 cargo install --quiet --locked \
    --root "$ROOT" garage --version "=$GARAGE_VERSION" \
    --no-default-features --features lmdb,system-libs
  # The build tree is 2+ GB and only the binary is used.
  rm -rf "$CACHE/garage-target"
  [[ -x $BIN ]]
}

port() { echo $((BASE + 3900 + 10 * $1 + $2)); }

g() { local n=$1; shift; "$BIN" -c "$DIR/$n/garage.toml" "$@"; }

start() {
  install
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  local secret n
  secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  for n in 1 2 3; do
    mkdir -p "$DIR/$n/meta" "$DIR/$n/data"
    # Garage refuses a config with the RPC secret that others can read.
    (umask 077 && cat >"$DIR/$n/garage.toml" <<EOF
metadata_dir = "$DIR/$n/meta"
data_dir = "$DIR/$n/data"
db_engine = "lmdb"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:$(port "$n" 1)"
rpc_public_addr = "127.0.0.1:$(port "$n" 1)"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$(port "$n" 0)"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$(port "$n" 3)"
EOF
    )
    RUST_LOG=warn setsid "$BIN" -c "$DIR/$n/garage.toml" server \
      >"$DIR/$n/log" 2>&1 </dev/null &
    echo $! >"$DIR/$n/pid"
  done
  # Each node answers its CLI once its RPC port is up.
  local id=() tries
  for n in 1 2 3; do
    for tries in $(seq 100); do
      if id[n]=$(g "$n" node id -q 2>/dev/null); then break; fi
      sleep 0.2
    done
    [[ -n ${id[n]:-} ]] || { echo "garage: node $n did not start (see $DIR/$n/log)" >&2; exit 1; }
  done
  g 1 node connect "${id[2]}" >/dev/null
  g 1 node connect "${id[3]}" >/dev/null
  # One zone per node, so the three copies are spread over all of them.
  for n in 1 2 3; do
    g 1 layout assign -z "dc$n" -c 1G "${id[n]%@*}" >/dev/null
  done
  g 1 layout apply --version 1 >/dev/null
  for tries in $(seq 150); do
    # All three nodes healthy and the layout applied everywhere.
    if [[ $(g 1 status 2>/dev/null | grep -c '127.0.0.1') -ge 3 ]] &&
       g 1 bucket list >/dev/null 2>&1; then
      break
    fi
    sleep 0.2
  done
  local key
  key=$(g 1 key create ssefs-test)
  local kid ksecret
  kid=$(awk '/Key ID:/ {print $3}' <<<"$key")
  ksecret=$(awk '/Secret key:/ {print $3}' <<<"$key")
  [[ -n $kid && -n $ksecret ]] || { echo "garage: no key in: $key" >&2; exit 1; }
  g 1 bucket create ssefs-test >/dev/null
  g 1 bucket allow --read --write --owner ssefs-test --key ssefs-test >/dev/null
  (umask 077 && cat >"$DIR/env" <<EOF
SSEFS_TEST_S3_ENDPOINTS=http://127.0.0.1:$(port 1 0),http://127.0.0.1:$(port 2 0),http://127.0.0.1:$(port 3 0)
AWS_ACCESS_KEY_ID=$kid
AWS_SECRET_ACCESS_KEY=$ksecret
AWS_REGION=garage
SSEFS_TEST_S3_BUCKET=ssefs-test
EOF
  )
  echo "garage: 3 nodes up under $DIR" >&2
}

stop() {
  local n pid
  for n in 1 2 3; do
    [[ -f $DIR/$n/pid ]] || continue
    pid=$(cat "$DIR/$n/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$DIR/$n/pid"
  done
}

case ${1:-} in
  install) install ;;
  path) echo "$BIN" ;;
  start) DIR=${2:?usage: garage.sh start DIR}; start ;;
  stop) DIR=${2:?usage: garage.sh stop DIR}; stop ;;
  kill)
    DIR=${2:?usage: garage.sh kill DIR N}
    kill -9 "$(cat "$DIR/${3:?usage: garage.sh kill DIR N}/pid")"
    rm -f "$DIR/$3/pid"
    ;;
  *) echo "usage: garage.sh install|path|start DIR|stop DIR|kill DIR N" >&2; exit 2 ;;
esac
