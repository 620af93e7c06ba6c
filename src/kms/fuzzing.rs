//! The keystore loader without its file I/O, for the fuzz target
//! fuzz/fuzz_targets/keystore.rs. Built only with the `fuzzing` feature:
//! the store's types stay private to the KMS everywhere else.

use std::path::Path;

use super::store::{self, Store};
use super::verify_store;
use crate::crypto::SecretKey;
use crate::error::Result;

const PATH: &str = "/fuzz/.ssefs/keystore.toml";

/// A parsed, not yet verified keystore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keystore(Store);

impl Keystore {
    /// Parses keystore text as `Kms::open` and every reload do.
    pub fn parse(text: &str) -> Result<Keystore> {
        store::parse(text, Path::new(PATH)).map(Keystore)
    }

    /// The text a keystore write stores.
    pub fn to_text(&self) -> Result<String> {
        store::to_text(&self.0, Path::new(PATH))
    }

    /// The checks a loaded keystore passes before use, under root key `root`.
    pub fn verify(&self, root: &[u8]) -> Result<()> {
        verify_store(&self.0, &SecretKey::from_bytes(root), Path::new(PATH))
    }

    /// What every write does first (drop keys past their deletion date at
    /// `now`), then what `rotate-master` does.
    pub fn purge_and_rotate(&mut self, root: &[u8], now: u64) -> u32 {
        self.0.purge_expired(now);
        self.0.add_master_version(&SecretKey::from_bytes(root), now)
    }

    /// The newest SSE-OSS master key version.
    pub fn newest_master(&self) -> Option<u32> {
        self.0.newest_master().map(|m| m.version)
    }

    /// Whether the store uses a passphrase (its root key is derived, so a
    /// fixed root key cannot verify it).
    pub fn has_kdf(&self) -> bool {
        self.0.root.kdf.is_some()
    }
}
