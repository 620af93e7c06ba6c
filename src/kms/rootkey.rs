//! The root key every keystore entry is sealed under: read from a 0600 file
//! or stretched from a passphrase with Argon2id; and the check value that
//! tells a wrong root key from a corrupt keystore.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::location;
use super::store::{self, KdfParams};
use super::RootKeySource;
use crate::crypto::{fill_random, SecretKey};
use crate::error::{Error, IoContext, OssCode, Result};

pub(crate) const ROOT_KEY_LEN: usize = 32;
const SALT_LEN: usize = 16;
const CHECK_AD: &[u8] = b"ssefs-root-check";
const CHECK_MARKER: &[u8] = b"ssefs root key check v1";

/// Argon2id cost for new keystores. Tests use a tiny cost so the suite stays
/// fast; production follows RFC 9106's second recommendation (64 MiB, t=3).
#[cfg(not(test))]
const DEFAULT_KDF_COST: (u32, u32, u32) = (64 * 1024, 3, 1);
#[cfg(test)]
const DEFAULT_KDF_COST: (u32, u32, u32) = (64, 1, 1);

/// Refuse absurd costs from a tampered keystore (4 GiB, t=64) rather than
/// exhausting memory or hanging at open.
const MAX_M_COST_KIB: u32 = 4 * 1024 * 1024;
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 64;

/// For a new keystore: the root key and, for a passphrase, the KDF
/// parameters to record.
pub(super) fn create(source: &RootKeySource, id: &Uuid) -> Result<(SecretKey, Option<KdfParams>)> {
    match source {
        RootKeySource::File(path) => Ok((load_or_create_file(path)?, None)),
        RootKeySource::KeyDir(dir) => {
            location::ensure_key_dir(dir)?;
            Ok((load_or_create_file(&location::key_file(dir, id))?, None))
        }
        RootKeySource::Passphrase(p) => {
            let mut salt = [0u8; SALT_LEN];
            fill_random(&mut salt);
            let (m, t, par) = DEFAULT_KDF_COST;
            let params = KdfParams {
                algorithm: "argon2id".to_string(),
                salt: store::hex_encode(&salt),
                m_cost_kib: m,
                t_cost: t,
                p_cost: par,
            };
            let key = derive(p, &params)?;
            Ok((key, Some(params)))
        }
    }
}

/// For an existing keystore: the root key from `source`, using the KDF
/// parameters the keystore recorded (`None` if it was made with a key file).
pub(super) fn load(
    source: &RootKeySource,
    kdf: Option<&KdfParams>,
    id: Option<Uuid>,
    keystore: &Path,
) -> Result<SecretKey> {
    match (source, kdf) {
        (RootKeySource::File(path), None) => load_file(path),
        (RootKeySource::KeyDir(dir), None) => {
            let Some(id) = id else {
                return Err(mismatch(
                    keystore,
                    "the keystore names no data directory id, so no key file in the key \
                     directory belongs to it: name the root key with --root-key",
                ));
            };
            let path = location::key_file(dir, &id);
            if !path.exists() {
                return Err(Error::new(
                    OssCode::InvalidParameter,
                    format!(
                        "no root key at {}: restore it with `ssefs root-key import`, or name \
                         it with --root-key",
                        path.display()
                    ),
                )
                .resource(path.display().to_string()));
            }
            load_file(&path)
        }
        (RootKeySource::KeyDir(_), Some(_)) => Err(mismatch(
            keystore,
            "the root key of this keystore is derived from a passphrase: give it with \
             --passphrase-file or $SSEFS_PASSPHRASE",
        )),
        (RootKeySource::Passphrase(p), Some(params)) => derive(p, params),
        (RootKeySource::File(_), Some(_)) => Err(mismatch(
            keystore,
            "the root key does not match this keystore: it was initialized with a passphrase, \
             not a key file",
        )),
        (RootKeySource::Passphrase(_), None) => Err(mismatch(
            keystore,
            "the root key does not match this keystore: it was initialized with a key file, \
             not a passphrase",
        )),
    }
}

/// The check value: the marker sealed under the root key.
pub(super) fn check_value(root: &SecretKey) -> String {
    store::seal(root, CHECK_AD, CHECK_MARKER)
}

/// Fails with a clear error if `root` did not make `check`.
pub(super) fn verify_check(root: &SecretKey, check: &str, keystore: &Path) -> Result<()> {
    match store::open_sealed(root, CHECK_AD, check) {
        Ok(plain) if plain.expose() == CHECK_MARKER => Ok(()),
        _ => Err(mismatch(
            keystore,
            "the root key does not match this keystore",
        )),
    }
}

fn mismatch(keystore: &Path, msg: &str) -> Error {
    Error::new(OssCode::InvalidParameter, msg).resource(keystore.display().to_string())
}

fn derive(passphrase: &str, params: &KdfParams) -> Result<SecretKey> {
    if passphrase.is_empty() {
        return Err(Error::new(
            OssCode::InvalidParameter,
            "the root key passphrase is empty",
        ));
    }
    let bad = |why: String| {
        Error::new(
            OssCode::InternalError,
            format!("keystore is corrupt: root key derivation parameters: {why}"),
        )
    };
    if params.algorithm != "argon2id" {
        return Err(bad(format!("unknown algorithm {:?}", params.algorithm)));
    }
    if params.m_cost_kib > MAX_M_COST_KIB
        || params.t_cost > MAX_T_COST
        || params.p_cost > MAX_P_COST
    {
        return Err(bad("cost out of range".to_string()));
    }
    let salt = store::hex_decode(&params.salt).ok_or_else(|| bad("salt is not hex".into()))?;
    let p = Params::new(
        params.m_cost_kib,
        params.t_cost,
        params.p_cost,
        Some(ROOT_KEY_LEN),
    )
    .map_err(|e| bad(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; ROOT_KEY_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
        .hash_password_into(passphrase.as_bytes(), &salt, out.as_mut())
        .map_err(|e| bad(e.to_string()))?;
    Ok(SecretKey::from_bytes(out.as_ref()))
}

/// Loads the key file, or creates it when missing.
fn load_or_create_file(path: &Path) -> Result<SecretKey> {
    let key = SecretKey::random(ROOT_KEY_LEN);
    match write_key_file(path, &key) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created root key file");
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => load_file(path),
        Err(e) => Err(Error::io(
            format!("creating root key file {}", path.display()),
            e,
        )),
    }
}

/// Writes `key` to the new file `path`, durably: O_EXCL with mode 0600
/// (the secret never exists with wider permissions, and of two racing
/// writers exactly one succeeds), write, fsync, fsync of the directory.
/// A failure after the file was made removes it again.
pub(crate) fn write_key_file(path: &Path, key: &SecretKey) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let res = f
        .write_all(key.expose())
        .and_then(|_| f.sync_all())
        .and_then(|_| {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            File::open(parent).and_then(|d| d.sync_all())
        });
    if res.is_err() {
        let _ = std::fs::remove_file(path);
    }
    res
}

pub(crate) fn load_file(path: &Path) -> Result<SecretKey> {
    let ctx = || format!("reading root key file {}", path.display());
    let mut f = File::open(path).ctx(ctx())?;
    // Check the opened file, not the path, so a swap between check and read
    // cannot slip a different file past the check.
    let meta = f.metadata().ctx(ctx())?;
    let refuse = |why: String| {
        Error::new(
            OssCode::InvalidParameter,
            format!("root key file {}: {why}", path.display()),
        )
        .resource(path.display().to_string())
    };
    if !meta.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    // Owned by someone else, the key could have been planted or be swapped
    // by them (the StrictModes rule, as backend::strict words it).
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(refuse(format!(
            "it is owned by uid {}, not by uid {me} or root; fix it with `chown {me} {}` if \
             it is yours",
            meta.uid(),
            path.display()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "permissions {mode:04o} let group or others access it; run chmod 600 on it"
        )));
    }
    if meta.len() != ROOT_KEY_LEN as u64 {
        return Err(refuse(format!(
            "must hold exactly {ROOT_KEY_LEN} bytes, holds {}",
            meta.len()
        )));
    }
    let mut buf = Zeroizing::new([0u8; ROOT_KEY_LEN]);
    f.read_exact(buf.as_mut()).ctx(ctx())?;
    // The size is checked above; a file that grew since is still refused.
    let mut extra = [0u8; 1];
    if f.read(&mut extra).ctx(ctx())? != 0 {
        return Err(refuse(format!("must hold exactly {ROOT_KEY_LEN} bytes")));
    }
    Ok(SecretKey::from_bytes(buf.as_ref()))
}
