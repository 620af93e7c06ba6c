//! The keystore loader without its file I/O, for the fuzz target
//! fuzz/fuzz_targets/keystore.rs. Built only with the `fuzzing` feature:
//! the store's types stay private to the KMS everywhere else.

use std::path::Path;

use super::store::{self, Store};
use super::{verify_store, KeyState};
use crate::crypto::SecretKey;
use crate::error::Result;

const PATH: &str = "/fuzz/.ssefs/keystore.toml";

/// What the rest of the KMS relies on in a verified keystore, in plain
/// types, so the target can check it independently of `Store::verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub master_versions: Vec<u32>,
    pub cmks: Vec<CmkShape>,
    /// Alias -> CMK id.
    pub aliases: Vec<(String, [u8; 16])>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmkShape {
    pub id: [u8; 16],
    pub state: KeyState,
    pub deletion_date: Option<u64>,
    /// In file order.
    pub versions: Vec<u32>,
}

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
        verify_store(&self.0, &SecretKey::from_bytes(root), Path::new(PATH), true)
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

    pub fn shape(&self) -> Shape {
        Shape {
            master_versions: self.0.master.iter().map(|m| m.version).collect(),
            cmks: self
                .0
                .cmk
                .iter()
                .map(|k| CmkShape {
                    id: k.id.into_bytes(),
                    state: k.state,
                    deletion_date: k.deletion_date,
                    versions: k.versions.iter().map(|v| v.version).collect(),
                })
                .collect(),
            aliases: self
                .0
                .aliases
                .iter()
                .map(|(a, id)| (a.clone(), id.into_bytes()))
                .collect(),
        }
    }

    /// Whether the store uses a passphrase (its root key is derived, so a
    /// fixed root key cannot verify it).
    pub fn has_kdf(&self) -> bool {
        self.0.root.kdf.is_some()
    }
}
