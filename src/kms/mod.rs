//! The built-in KMS: SSE-OSS master keys and customer master keys (CMKs),
//! persisted in `DATA_DIR/.ssefs/keystore.toml`, every key sealed under the
//! root key. Also the permission policy (who may use which key / manage which
//! bucket rule).
//!
//! INTERFACE CONTRACT (the engine and CLI are written against this; keep the
//! signatures, fill in the bodies, add private items freely):

use std::path::{Path, PathBuf};

use crate::crypto::{IntegrityError, SecretKey};
use crate::error::Result;

pub mod policy;

pub use policy::{Action, Policy, Principal};

/// 16-byte key identifier as stored in object headers: all zero for the
/// SSE-OSS master keyring, else the CMK's UUID bytes.
pub type KeyId = [u8; 16];
pub const MASTER_KEY_ID: KeyId = [0u8; 16];
pub const DEFAULT_KEY_ALIAS: &str = "alias/acs/oss";

/// Where the root key comes from.
#[derive(Debug, Clone)]
pub enum RootKeySource {
    /// A file holding 32 random bytes (mode 0600).
    File(PathBuf),
    /// A passphrase, stretched with Argon2id (salt and cost in the keystore).
    Passphrase(zeroize::Zeroizing<String>),
}

/// What a new object's data key is wrapped under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WrapTarget {
    /// SSE-OSS: the newest master key version.
    Master,
    /// SSE-KMS: the named CMK (id or alias), or the default managed key.
    Cmk(Option<String>),
}

/// A key-encryption key handle: one version of the master key or of a CMK.
/// Holds the material privately; zeroized on drop.
pub struct Kek { /* key_id, version, material */ }

impl Kek {
    pub fn key_id(&self) -> KeyId { todo!() }
    pub fn version(&self) -> u32 { todo!() }
    /// AES-256-GCM seal of `data_key` with a fresh random nonce and `ad`:
    /// returns (nonce, ciphertext of data_key.len() bytes, tag).
    pub fn wrap(&self, ad: &[u8], data_key: &SecretKey) -> ([u8; 12], Vec<u8>, [u8; 16]) { todo!() }
    pub fn unwrap(&self, ad: &[u8], nonce: &[u8; 12], ct: &[u8], tag: &[u8; 16]) -> Result<SecretKey, IntegrityError> { todo!() }
}

pub struct Kms { /* ... */ }

impl Kms {
    /// Creates `state_dir` (mode 0700) with an empty keystore and one master
    /// key version. With `RootKeySource::File` the file is created (random,
    /// 0600) if it does not exist. Fails if a keystore already exists.
    pub fn init(state_dir: &Path, root: &RootKeySource) -> Result<()> { todo!() }
    /// Opens an existing keystore; a wrong root key is a clear error.
    pub fn open(state_dir: &Path, root: &RootKeySource, policy: Policy) -> Result<Kms> { todo!() }
    pub fn policy(&self) -> &Policy { todo!() }

    /// For writing a new object: resolves `target`, checks that the key is
    /// usable and that `p` holds kms:GenerateDataKey on it (SSE-OSS needs no
    /// permission), auto-rotates the master key when it is older than the
    /// configured period, creates the default managed key on first use.
    pub fn encryptor(&self, p: &Principal, target: &WrapTarget) -> Result<Kek> { todo!() }
    /// For reading: the KEK for (`key_id`, `version`), checking state and
    /// kms:Decrypt for CMKs.
    pub fn decryptor(&self, p: &Principal, key_id: &KeyId, version: u32) -> Result<Kek> { todo!() }
    /// The CMK's canonical id string (UUID) for headers shown to users.
    pub fn key_id_string(key_id: &KeyId) -> String { todo!() }
}
