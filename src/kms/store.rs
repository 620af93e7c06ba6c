//! The keystore (`STATE_DIR/keystore.toml` locally): its format, the
//! sealing of every key under the root key and validation at load. Where
//! it is kept, and how writers are serialised, is the backend's
//! ([`StateStore`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::metadata::{KeyCreator, KeyOrigin, KeyState};
use crate::backend::{State, StateStore, Version};
use crate::crypto::{Aead, Cipher, IntegrityError, Nonce, SecretKey, NONCE_LEN, TAG_LEN};
use crate::error::{Error, OssCode, Result};

pub(super) const FORMAT_VERSION: u32 = 1;
/// Every key the keystore holds (master versions, CMK versions) is 32 bytes.
pub(super) const KEY_LEN: usize = 32;

/// The whole keystore file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Store {
    pub version: u32,
    /// HMAC-SHA256 (hex) over the rest of the file, under a key derived from
    /// the root key (`mac.rs`). Absent only in keystores written before
    /// ssefs authenticated them; the first open adds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// HMAC-SHA256 (hex) of `config.toml` (grants, master rotation) as
    /// last sealed by `ssefs kms seal-policy` (or the upgrade); absent: no
    /// such file. Authenticated with the rest by `mac`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants_mac: Option<String>,
    /// Names the root key file kept outside the data directory
    /// (`KEY_DIR/ID.key`); given at init, or at the first open of a
    /// keystore made before it existed. Authenticated by `mac`, but read
    /// unverified first to pick the key file to try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir_id: Option<Uuid>,
    /// Every unencrypted object carries keyed tags (FORMAT.md §4.2, §8.6):
    /// from now on one without them is an integrity error. Set at init,
    /// and by the upgrade once it has converted every object. Absent
    /// (false) in keystores from before keyed tags; left out when false,
    /// so that their text, and hence their MAC, is unchanged.
    #[serde(default, skip_serializing_if = "is_false")]
    pub plain_macs: bool,
    pub root: RootSection,
    #[serde(default)]
    pub master: Vec<MasterEntry>,
    #[serde(default)]
    pub cmk: Vec<CmkEntry>,
    /// Alias name -> CMK id.
    #[serde(default)]
    pub aliases: BTreeMap<String, Uuid>,
    /// Bucket name -> the MACs its settings file may carry (one; two while
    /// a change is under way), so that an older, once-valid settings file
    /// written back is refused (FORMAT.md §8.1).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bucket_settings: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RootSection {
    /// A fixed marker sealed under the root key (hex).
    pub check: String,
    /// Present when the root key is derived from a passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<KdfParams>,
}

/// Argon2id parameters; not secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KdfParams {
    pub algorithm: String,
    pub salt: String,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MasterEntry {
    pub version: u32,
    /// Unix seconds.
    pub created: u64,
    /// nonce || ciphertext || tag, hex.
    pub sealed: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CmkEntry {
    pub id: Uuid,
    pub description: String,
    pub origin: KeyOrigin,
    pub state: KeyState,
    pub creator: KeyCreator,
    pub created: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<u64>,
    /// Oldest first; the last is the primary version.
    #[serde(default)]
    pub versions: Vec<VersionEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VersionEntry {
    pub version: u32,
    pub created: u64,
    pub sealed: String,
}

impl CmkEntry {
    /// Deleted: its pending deletion date has passed. Such a key behaves as
    /// if it did not exist until the next write purges it.
    pub fn is_gone(&self, now: u64) -> bool {
        self.state == KeyState::PendingDeletion && self.deletion_date.is_some_and(|d| d <= now)
    }

    pub fn primary(&self) -> Option<&VersionEntry> {
        self.versions.last()
    }

    pub fn version(&self, v: u32) -> Option<&VersionEntry> {
        self.versions.iter().find(|e| e.version == v)
    }
}

/// Associated data binding a sealed master version to its place.
pub(super) fn master_ad(version: u32) -> Vec<u8> {
    let mut ad = b"ssefs-master".to_vec();
    ad.extend_from_slice(&version.to_le_bytes());
    ad
}

/// Associated data binding a sealed CMK version to its key and place.
pub(super) fn cmk_ad(id: &Uuid, version: u32) -> Vec<u8> {
    let mut ad = b"ssefs-cmk".to_vec();
    ad.extend_from_slice(id.as_bytes());
    ad.extend_from_slice(&version.to_le_bytes());
    ad
}

/// serde's `skip_serializing_if` for a flag written only when set.
fn is_false(b: &bool) -> bool {
    !*b
}

impl Store {
    pub fn new(check: String, kdf: Option<KdfParams>) -> Self {
        Store {
            version: FORMAT_VERSION,
            mac: None,
            grants_mac: None,
            data_dir_id: None,
            plain_macs: true,
            root: RootSection { check, kdf },
            master: Vec::new(),
            cmk: Vec::new(),
            aliases: BTreeMap::new(),
            bucket_settings: BTreeMap::new(),
        }
    }

    pub fn newest_master(&self) -> Option<&MasterEntry> {
        self.master.iter().max_by_key(|m| m.version)
    }

    /// Adds a master version with fresh material; returns its number.
    pub fn add_master_version(&mut self, root: &SecretKey, now: u64) -> u32 {
        let version = self.newest_master().map_or(1, |m| m.version + 1);
        let material = SecretKey::random(KEY_LEN);
        self.master.push(MasterEntry {
            version,
            created: now,
            sealed: seal(root, &master_ad(version), material.expose()),
        });
        version
    }

    pub fn cmk(&self, id: &Uuid) -> Option<&CmkEntry> {
        self.cmk.iter().find(|k| &k.id == id)
    }

    pub fn cmk_mut(&mut self, id: &Uuid) -> Option<&mut CmkEntry> {
        self.cmk.iter_mut().find(|k| &k.id == id)
    }

    /// The aliases naming `id`, sorted.
    pub fn aliases_of(&self, id: &Uuid) -> Vec<String> {
        self.aliases
            .iter()
            .filter(|(_, v)| *v == id)
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// Drops keys whose deletion date has passed, with their aliases.
    pub fn purge_expired(&mut self, now: u64) {
        let gone: BTreeSet<Uuid> = self
            .cmk
            .iter()
            .filter(|k| k.is_gone(now))
            .map(|k| k.id)
            .collect();
        if gone.is_empty() {
            return;
        }
        for id in &gone {
            tracing::info!(key_id = %id, "purging CMK whose deletion date has passed");
        }
        self.cmk.retain(|k| !gone.contains(&k.id));
        self.aliases.retain(|_, id| !gone.contains(id));
    }

    /// Refuses a keystore written by a newer ssefs.
    pub fn check_version(&self, path: &Path) -> Result<()> {
        if self.version != FORMAT_VERSION {
            return Err(Error::new(
                OssCode::InternalError,
                format!(
                    "keystore {} has format version {}; this ssefs reads version {FORMAT_VERSION}",
                    path.display(),
                    self.version
                ),
            )
            .resource(path.display().to_string()));
        }
        Ok(())
    }

    /// Checks structure and that every sealed entry authenticates under
    /// `root` (whose check value the caller has already verified).
    pub fn verify(&self, root: &SecretKey, path: &Path) -> Result<()> {
        self.check_version(path)?;
        let bad = |why: String| corrupt(path, why);
        if self.master.is_empty() {
            return Err(bad("no master key version".into()));
        }
        let mut seen = BTreeSet::new();
        for m in &self.master {
            if !seen.insert(m.version) || m.version == 0 {
                return Err(bad(format!(
                    "master key version {} repeated or 0",
                    m.version
                )));
            }
            check_sealed(root, &master_ad(m.version), &m.sealed).map_err(|_| {
                bad(format!(
                    "master key version {} fails to authenticate",
                    m.version
                ))
            })?;
        }
        let mut ids = BTreeSet::new();
        for k in &self.cmk {
            if !ids.insert(k.id) {
                return Err(bad(format!("CMK {} appears twice", k.id)));
            }
            let has_material = !k.versions.is_empty();
            let consistent = match k.state {
                KeyState::Enabled | KeyState::Disabled => has_material,
                KeyState::PendingImport => !has_material,
                KeyState::PendingDeletion => k.deletion_date.is_some(),
            };
            if !consistent || (k.state != KeyState::PendingDeletion && k.deletion_date.is_some()) {
                return Err(bad(format!("CMK {} has an inconsistent state", k.id)));
            }
            let mut prev = 0;
            for v in &k.versions {
                if v.version <= prev {
                    return Err(bad(format!("CMK {} versions out of order", k.id)));
                }
                prev = v.version;
                check_sealed(root, &cmk_ad(&k.id, v.version), &v.sealed).map_err(|_| {
                    bad(format!(
                        "CMK {} version {} fails to authenticate",
                        k.id, v.version
                    ))
                })?;
            }
        }
        for (alias, id) in &self.aliases {
            if !ids.contains(id) {
                return Err(bad(format!("alias {alias} names a missing CMK {id}")));
            }
        }
        Ok(())
    }
}

fn check_sealed(root: &SecretKey, ad: &[u8], sealed: &str) -> Result<(), IntegrityError> {
    let k = open_sealed(root, ad, sealed)?;
    if k.len() != KEY_LEN {
        return Err(IntegrityError);
    }
    Ok(())
}

pub(super) fn corrupt(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(
        OssCode::InternalError,
        format!("keystore {} is corrupt: {why}", path.display()),
    )
    .resource(path.display().to_string())
}

/// AES-256-GCM seal of `plain` under `root` with a fresh nonce; returns
/// hex(nonce || ciphertext || tag).
pub(super) fn seal(root: &SecretKey, ad: &[u8], plain: &[u8]) -> String {
    // The root key is always 32 bytes (checked when loaded or derived).
    #[allow(clippy::expect_used)]
    let aead = Aead::new(Cipher::Aes256Gcm, root).expect("root key is 32 bytes");
    let nonce = Nonce::random();
    let mut buf = zeroize::Zeroizing::new(plain.to_vec());
    let tag = aead.seal(&nonce, ad, &mut buf);
    let mut out = Vec::with_capacity(NONCE_LEN + buf.len() + TAG_LEN);
    out.extend_from_slice(&nonce.0);
    out.extend_from_slice(&buf);
    out.extend_from_slice(&tag);
    hex_encode(&out)
}

/// Opens what `seal` made; the plaintext comes back zeroizing.
pub(super) fn open_sealed(
    root: &SecretKey,
    ad: &[u8],
    sealed: &str,
) -> Result<SecretKey, IntegrityError> {
    let raw = hex_decode(sealed).ok_or(IntegrityError)?;
    if raw.len() < NONCE_LEN + TAG_LEN {
        return Err(IntegrityError);
    }
    let aead = Aead::new(Cipher::Aes256Gcm, root)?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&raw[..NONCE_LEN]);
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&raw[raw.len() - TAG_LEN..]);
    let mut buf = zeroize::Zeroizing::new(raw[NONCE_LEN..raw.len() - TAG_LEN].to_vec());
    aead.open(&Nonce(nonce), ad, &mut buf, &tag)?;
    Ok(SecretKey::from_bytes(&buf))
}

pub(super) fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Lowercase hex only (what `hex_encode` writes).
pub(super) fn hex_decode(s: &str) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// Reads and parses the keystore (without verifying seals), with the
/// version it was read at.
pub(super) fn read(states: &dyn StateStore) -> Result<(Store, Version)> {
    let (bytes, version) = states
        .get_state(State::Keystore)?
        .ok_or_else(|| not_initialised(states))?;
    Ok((parse_bytes(&bytes, states)?, version))
}

/// The current version of the keystore, without reading it.
pub(super) fn version(states: &dyn StateStore) -> Result<Version> {
    states
        .state_version(State::Keystore)?
        .ok_or_else(|| not_initialised(states))
}

/// Parses keystore bytes as `read` does; `None` (no keystore) is an error.
pub(super) fn parse_bytes(bytes: &[u8], states: &dyn StateStore) -> Result<Store> {
    let path = PathBuf::from(states.state_shown(State::Keystore));
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt(&path, "not UTF-8"))?;
    parse(text, &path)
}

pub(super) fn not_initialised(states: &dyn StateStore) -> Error {
    let shown = states.state_shown(State::Keystore);
    Error::new(
        OssCode::KmsServiceNotEnabled,
        format!("no keystore at {shown}: the KMS is not initialized (run `ssefs kms init`)"),
    )
    .resource(shown)
}

/// Parses keystore text (without verifying seals); `path` names the file in
/// errors.
pub(super) fn parse(text: &str, path: &Path) -> Result<Store> {
    toml::from_str(text).map_err(|e| corrupt(path, e))
}

/// The text the keystore is stored as.
pub(super) fn to_text(store: &Store, path: &Path) -> Result<String> {
    toml::to_string(store).map_err(|e| {
        Error::new(
            OssCode::InternalError,
            format!("writing keystore {}: {e}", path.display()),
        )
    })
}
