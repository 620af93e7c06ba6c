#!/bin/sh
# Writes the seed corpora of the fuzz targets into fuzz/corpus/TARGET/, from
# real files: the format's test vectors, objects and keystores made by the
# ssefs binary, and the example configs. Run once before the first fuzzing
# run (scripts/fuzz.sh does when a corpus is missing); the fuzzers then grow
# the corpus, and `cargo fuzz cmin` keeps it small.
#
#   fuzz/seeds.sh [path/to/ssefs]     (default: target/debug/ssefs, built if missing)
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
corpus=$root/fuzz/corpus
ssefs=${1:-}
if [ -z "$ssefs" ]; then
    tdir=${CARGO_TARGET_DIR:-$root/target}
    ssefs=$tdir/debug/ssefs
    [ -x "$ssefs" ] || (cd "$root" && cargo build --quiet)
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$corpus/header" "$corpus/keystore" "$corpus/config" "$corpus/policy"

# --- header: the test vectors (FORMAT.md §6), decoded, and real objects ----
for v in "$root"/tests/vectors/*.hex; do
    tr -d ' \n' <"$v" | xxd -r -p >"$corpus/header/vector-$(basename "$v" .hex)"
done

# The keystore seeds' root key: bytes 00..1f, as fuzz_targets/keystore.rs.
key=$work/root.key
printf '%s' 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f \
    | xxd -r -p >"$key"
chmod 600 "$key"
d=$work/data
s() { "$ssefs" --data-dir "$d" --root-key "$key" "$@"; }

s init
cp "$d/.ssefs/keystore.toml" "$corpus/keystore/fresh.toml"
s kms create-key --alias alias/team --description "team key" >/dev/null
cp "$d/.ssefs/keystore.toml" "$corpus/keystore/one-cmk.toml"
ext=$(s kms create-key --origin EXTERNAL --description byok | awk '/KeyId/ {print $NF; exit}')
old=$(s kms create-key --description old | awk '/KeyId/ {print $NF; exit}')
s kms rotate-key alias/team >/dev/null
s kms rotate-master >/dev/null
s kms create-alias alias/old "$old" >/dev/null
s kms disable-key "$old" >/dev/null
cp "$d/.ssefs/keystore.toml" "$corpus/keystore/disabled.toml"
s kms enable-key "$old" >/dev/null
s kms schedule-key-deletion "$old" --pending-days 7 >/dev/null
printf '%s' 202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f \
    | xxd -r -p >"$work/material"
s kms import-key-material "$ext" --material-file "$work/material" >/dev/null

printf 'hello\n' >"$work/small"
head -c 40000 /dev/zero | tr '\0' 'x' >"$work/big"
for alg in none AES256 SM4 KMS; do
    b=b-$(echo "$alg" | tr 'A-Z' 'a-z')
    s bucket create "$b" >/dev/null
    [ "$alg" = none ] || s bucket encryption put "$b" --algorithm "$alg" >/dev/null
    s object put "$b/small" "$work/small" >/dev/null
    cp "$d/$b/small" "$corpus/header/object-$b-small"
done
# Two chunks, the first a full one; and an empty object (header only).
s object put b-none/big "$work/big" >/dev/null
cp "$d/b-none/big" "$corpus/header/object-b-none-two-chunks"
: >"$work/empty"
s object put b-aes256/empty "$work/empty" >/dev/null
cp "$d/b-aes256/empty" "$corpus/header/object-b-aes256-empty"
cp "$d/.ssefs/keystore.toml" "$corpus/keystore/full.toml"

# A passphrase keystore: its root key is derived (the target cannot verify
# it, but parses and round-trips it).
printf 'correct horse\n' >"$work/pass"
"$ssefs" --data-dir "$work/pdata" --passphrase-file "$work/pass" init
cp "$work/pdata/.ssefs/keystore.toml" "$corpus/keystore/passphrase.toml"

# --- config: the example, and every key set ----------------------------------
cp "$root/packaging/ssefs.toml.example" "$corpus/config/example.toml"
cat >"$corpus/config/all-keys.toml" <<'EOF'
data_dir = "/var/lib/ssefs/oss"
mountpoint = "/mnt/oss"
root_key = "/etc/ssefs/oss.key"
passphrase_file = "/etc/ssefs/oss.passphrase"
allow_other = true
read_only = true
threads = 8
cache_mb = 0
log_level = "ssefs=debug,warn"
EOF
printf 'allow_root = true\nthreads = 64\ncache_mb = 1048576\nlog_level = "TRACE"\n' \
    >"$corpus/config/bounds.toml"
printf 'mountpoint = "/mnt/\\u00e9t\\u00e9 d\\"x"\n# comment\n' >"$corpus/config/escapes.toml"

# --- policy: the README's example and the patterns ---------------------------
cat >"$corpus/policy/readme.toml" <<'EOF'
[kms]
master_rotation_days = 90
[[grant]]
uids = [1000]
actions = ["kms:GenerateDataKey", "kms:Decrypt"]
resources = ["alias/team"]
EOF
cat >"$corpus/policy/patterns.toml" <<'EOF'
[kms]
master_rotation_days = 0

[[grant]]
gids = [100, 65534]
users = ["root", "nobody"]
actions = ["kms:*", "oss:PutBucketEncryption"]
resources = ["alias/team-*", "1B4E28BA-2FA1-11D2-883F-0016D3CCA427"]

[[grant]]
uids = [65534, 2000]
actions = ["*", "oss:*", "oss:GetBucketEncryption", "oss:DeleteBucketEncryption"]
resources = ["*", "photos"]
EOF
printf '[[grant]]\nuids = []\nactions = []\nresources = []\n' >"$corpus/policy/empty-grant.toml"

ls "$corpus"/* | wc -l
