//! The built-in KMS: SSE-OSS master keys and customer master keys (CMKs),
//! persisted in `DATA_DIR/.ssefs/keystore.toml`, every key sealed under the
//! root key. Also the permission policy (who may use which key / manage which
//! bucket rule).
//!
//! The data path (`encryptor`, `decryptor`) is here; key management (what
//! `ssefs kms ...` calls) is in `manage`; the file format in `store`.

pub mod location;
mod mac;
mod manage;
mod metadata;
mod names;
pub mod paper;
pub mod policy;
mod rootkey;
mod store;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;
use zeroize::Zeroizing;

use crate::backend::{State, StateStore, Version};
use crate::crypto::{Aead, Cipher, IntegrityError, Nonce, SecretKey, NONCE_LEN, TAG_LEN};
use crate::error::{Error, OssCode, Result};
use crate::principal::Principal;

pub use mac::{MacKey, MacPurpose};
pub use metadata::{rfc3339, KeyCreator, KeyMetadata, KeyOrigin, KeyState, MasterInfo};
pub use policy::{Action, Policy};

use names::KeyRef;
use store::Store;

pub use crate::backend::KEYSTORE_FILE;

/// 16-byte key identifier as stored in object headers: all zero for the
/// SSE-OSS master keyring, else the CMK's UUID bytes.
pub type KeyId = [u8; 16];
pub const MASTER_KEY_ID: KeyId = [0u8; 16];
pub const DEFAULT_KEY_ALIAS: &str = "alias/acs/oss";
const DEFAULT_KEY_DESCRIPTION: &str = "default managed key of OSS";
const SECS_PER_DAY: u64 = 86_400;

/// Where the root key comes from.
#[derive(Debug, Clone)]
pub enum RootKeySource {
    /// A file holding 32 random bytes (mode 0600).
    File(PathBuf),
    /// The file named after the data directory's id in this directory
    /// (`DIR/ID.key`, see `location`); created there by init.
    KeyDir(PathBuf),
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
/// Holds the material privately; zeroized on drop (by `SecretKey`).
pub struct Kek {
    key_id: KeyId,
    version: u32,
    /// Always `store::KEY_LEN` bytes: only `unseal_key` makes a Kek.
    material: SecretKey,
}

impl Kek {
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    fn aead(&self) -> Aead {
        // Invariant: the material is 32 bytes (see the field), so building
        // an AES-256-GCM key cannot fail.
        #[allow(clippy::expect_used)]
        Aead::new(Cipher::Aes256Gcm, &self.material).expect("KEK material is 32 bytes")
    }

    /// AES-256-GCM seal of `data_key` with a fresh random nonce and `ad`:
    /// returns (nonce, ciphertext of data_key.len() bytes, tag).
    pub fn wrap(&self, ad: &[u8], data_key: &SecretKey) -> ([u8; 12], Vec<u8>, [u8; 16]) {
        let nonce = Nonce::random();
        let mut buf = Zeroizing::new(data_key.expose().to_vec());
        let tag = self.aead().seal(&nonce, ad, &mut buf);
        (nonce.0, buf.to_vec(), tag)
    }

    pub fn unwrap(
        &self,
        ad: &[u8],
        nonce: &[u8; 12],
        ct: &[u8],
        tag: &[u8; 16],
    ) -> Result<SecretKey, IntegrityError> {
        let mut buf = Zeroizing::new(ct.to_vec());
        self.aead().open(&Nonce(*nonce), ad, &mut buf, tag)?;
        Ok(SecretKey::from_bytes(&buf))
    }
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("key_id", &Kms::key_id_string(&self.key_id))
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

// Compile-time guarantee that the contract's sizes agree with crypto's.
const _: () = assert!(NONCE_LEN == 12 && TAG_LEN == 16);

/// The parsed keystore and the version it came from.
struct Cached {
    version: Version,
    store: Arc<Store>,
    /// Counts the stores held so far (from 1), so data paths can tell
    /// cheaply whether anything changed since they last looked.
    epoch: u64,
}

/// The key service of one data directory. Send + Sync: share it via `Arc`.
pub struct Kms {
    /// Where the keystore is kept.
    states: Arc<dyn StateStore>,
    /// How messages name the keystore.
    keystore: PathBuf,
    root: SecretKey,
    /// K_plain (FORMAT.md §4.2), derived from `root` once.
    plain: SecretKey,
    policy: Policy,
    cache: RwLock<Cached>,
}

impl Kms {
    /// Makes a keystore in `states` with one master key version. With
    /// `RootKeySource::File` the file is created (random, 0600) if it does
    /// not exist. Fails if a keystore already exists.
    pub fn init(states: &dyn StateStore, root: &RootKeySource) -> Result<()> {
        let path = PathBuf::from(states.state_shown(State::Keystore));
        states.update_state(State::Keystore, &mut |current| {
            if current.is_some() {
                return Err(Error::new(
                    OssCode::InvalidParameter,
                    format!("a keystore already exists at {}", path.display()),
                )
                .resource(path.display().to_string()));
            }
            let id = Uuid::new_v4();
            let (key, kdf) = rootkey::create(root, &id)?;
            let mut s = Store::new(rootkey::check_value(&key), kdf);
            s.data_dir_id = Some(id);
            s.add_master_version(&key, now_secs());
            mac::seal_store(&key, &mut s, &path)?;
            store::to_text(&s, &path).map(|t| Some(t.into_bytes()))
        })?;
        tracing::info!(keystore = %path.display(), "initialized keystore");
        Ok(())
    }

    /// Opens an existing keystore; a wrong root key is a clear error.
    pub fn open(states: Arc<dyn StateStore>, root: &RootKeySource, policy: Policy) -> Result<Kms> {
        let keystore = PathBuf::from(states.state_shown(State::Keystore));
        let (s, version) = store::read(&*states)?;
        s.check_version(&keystore)?;
        // Held for the life of the process: kept out of core dumps and swap.
        let root = rootkey::load(root, s.root.kdf.as_ref(), s.data_dir_id, &keystore)?.locked();
        // A keystore from before MACs is accepted here only; the engine adds
        // its MAC (`finish_upgrade`) once the bucket settings have theirs.
        verify_store(&s, &root, &keystore, true)?;
        // A keystore from before MACs gets its id with the upgrade (a save
        // now would add the keystore's MAC before the bucket settings have
        // theirs, and mark the upgrade done).
        let needs_id = s.data_dir_id.is_none() && s.mac.is_some();
        let plain = MacKey::derive(&root, MacPurpose::PlainObjects)
            .into_secret()
            .locked();
        let kms = Kms {
            states,
            keystore,
            root,
            plain,
            policy,
            cache: RwLock::new(Cached {
                version,
                store: Arc::new(s),
                epoch: 1,
            }),
        };
        if needs_id {
            kms.assign_data_dir_id();
        }
        Ok(kms)
    }

    /// Gives a keystore made before data directory ids existed its id.
    /// Only the name of a moved root key file depends on it, so a keystore
    /// that cannot be written now (a read-only backend) just stays without.
    pub(crate) fn assign_data_dir_id(&self) {
        let r = self.modify(|s, _| {
            Ok(match s.data_dir_id {
                Some(id) => id,
                None => *s.data_dir_id.insert(Uuid::new_v4()),
            })
        });
        match r {
            Ok(id) => tracing::info!(
                keystore = %self.keystore.display(),
                "gave the data directory its id {id} (the name of its root key file)"
            ),
            Err(e) => tracing::warn!("cannot record the data directory's id: {e}"),
        }
    }

    /// The data directory's id (see `Store::data_dir_id`).
    pub fn data_dir_id(&self) -> Result<Option<Uuid>> {
        Ok(self.snapshot()?.data_dir_id)
    }

    /// The root key, for `ssefs root-key export` and `move`: refused when
    /// it is derived from a passphrase (there is no key to keep then).
    pub fn root_key_material(&self) -> Result<SecretKey> {
        if self.snapshot()?.root.kdf.is_some() {
            return Err(Error::new(
                OssCode::InvalidArgument,
                "the root key is derived from the passphrase: there is nothing to export or \
                 move; the passphrase is what to keep safe",
            )
            .resource(self.keystore.display().to_string()));
        }
        Ok(self.root.clone())
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The key that authenticates one kind of policy file, derived from the
    /// root key (docs/FORMAT.md §8).
    pub fn policy_mac_key(&self, purpose: MacPurpose) -> MacKey {
        MacKey::derive(&self.root, purpose)
    }

    fn grants_tag(&self, text: &str) -> String {
        self.policy_mac_key(MacPurpose::Grants)
            .tag_hex(&[text.as_bytes()])
    }

    /// Refuses a `config.toml` (`text`, `None`: no file) other than the one
    /// last sealed: grants widened or master rotation stopped by someone
    /// who can write the backend but does not hold the root key.
    pub fn check_grants(&self, text: Option<&str>, path: &Path) -> Result<()> {
        let s = self.snapshot()?;
        let key = self.policy_mac_key(MacPurpose::Grants);
        let ok = match (&s.grants_mac, text) {
            (None, None) => true,
            (Some(tag), Some(t)) => key.verify_hex(&[t.as_bytes()], tag).is_ok(),
            _ => false,
        };
        if ok {
            return Ok(());
        }
        let what = if text.is_none() {
            "is missing"
        } else {
            "is not as last sealed"
        };
        Err(Error::integrity(format!(
            "{} {what} (edited outside ssefs?): check it, then run `ssefs kms seal-policy`",
            path.display()
        ))
        .resource(path.display().to_string()))
    }

    /// Records `text` (`None`: no file) as the approved `config.toml`.
    pub fn seal_grants(&self, text: Option<&str>) -> Result<()> {
        let tag = text.map(|t| self.grants_tag(t));
        self.modify(|s, _| {
            s.grants_mac = tag.clone();
            Ok(())
        })
    }

    /// Whether the keystore predates MACs: the data directory was made by
    /// an older ssefs and has not been upgraded yet.
    pub fn needs_upgrade(&self) -> bool {
        let c = self.cache.read().unwrap_or_else(|e| e.into_inner());
        c.store.mac.is_none()
    }

    /// K_plain: the key of unencrypted objects' tags (FORMAT.md §2.5, §4.2).
    pub fn plain_key(&self) -> SecretKey {
        SecretKey::from_bytes(self.plain.expose())
    }

    /// Whether every unencrypted object must carry keyed tags: false only
    /// until the upgrade of a data directory from before them is done.
    pub fn plain_macs_required(&self) -> Result<bool> {
        Ok(self.snapshot()?.plain_macs)
    }

    /// Records that every unencrypted object now carries keyed tags (the
    /// end of their upgrade, FORMAT.md §8.6): from now on one without is an
    /// integrity error.
    pub fn finish_plain_upgrade(&self) -> Result<()> {
        self.modify(|s, _| {
            s.plain_macs = true;
            Ok(())
        })
    }

    /// Adds the keystore's MAC (the last step of upgrading a data
    /// directory: from now on every policy file must carry its MAC). Logs
    /// once; does nothing if another process did it first.
    /// `grants`: the text of `config.toml` now (`None`: no file), sealed as
    /// it is, as `seal_grants` would.
    /// `buckets`: each bucket's settings MAC, as just sealed (§8.1).
    pub fn finish_upgrade(
        &self,
        grants: Option<&str>,
        buckets: BTreeMap<String, String>,
    ) -> Result<()> {
        let mut done = false;
        self.write(|s| {
            verify_store(s, &self.root, &self.keystore, true)?;
            if s.mac.is_some() {
                done = true;
                return Ok(false);
            }
            s.grants_mac = grants.map(|t| self.grants_tag(t));
            s.bucket_settings = buckets
                .iter()
                .map(|(b, t)| (b.clone(), vec![t.clone()]))
                .collect();
            Ok(true)
        })?;
        if done {
            return Ok(());
        }
        tracing::info!(
            keystore = %self.keystore.display(),
            "added integrity MACs to the keystore (first start of this ssefs version)"
        );
        Ok(())
    }

    /// For writing a new object: resolves `target`, checks that the key is
    /// usable and that `p` holds kms:GenerateDataKey on it (SSE-OSS needs no
    /// permission), auto-rotates the master key when it is older than the
    /// configured period, creates the default managed key on first use.
    pub fn encryptor(&self, p: &Principal, target: &WrapTarget) -> Result<Kek> {
        match target {
            WrapTarget::Master => self.master_encryptor(),
            WrapTarget::Cmk(key_ref) => {
                let shown = key_ref.as_deref().unwrap_or(DEFAULT_KEY_ALIAS);
                // Anonymous requests are refused before any lookup, so they
                // learn nothing about which keys exist.
                if p.is_anonymous() {
                    return Err(Error::access_denied_kms().key(shown));
                }
                let (s, id) = match key_ref {
                    Some(r) => {
                        let s = self.snapshot()?;
                        let id = resolve(&s, r, now_secs())?;
                        (s, id)
                    }
                    None => self.default_key()?,
                };
                let k = s.cmk(&id).ok_or_else(|| key_not_found(shown))?;
                self.authorize(&s, p, Action::KmsGenerateDataKey, &id, shown)?;
                require_enabled(k.state, shown)?;
                let v = k.primary().ok_or_else(|| {
                    Error::new(
                        OssCode::RejectedPendingImport,
                        "The key material is not imported",
                    )
                    .key(shown)
                })?;
                self.unseal_key(
                    id.into_bytes(),
                    v.version,
                    &store::cmk_ad(&id, v.version),
                    &v.sealed,
                )
                .map_err(|e| e.key(shown))
            }
        }
    }

    /// For reading: the KEK for (`key_id`, `version`), checking state and
    /// kms:Decrypt for CMKs.
    pub fn decryptor(&self, p: &Principal, key_id: &KeyId, version: u32) -> Result<Kek> {
        if *key_id == MASTER_KEY_ID {
            let s = self.snapshot()?;
            let m = s
                .master
                .iter()
                .find(|m| m.version == version)
                // Versions are never deleted: a header naming one that does
                // not exist is corrupt or forged.
                .ok_or_else(|| {
                    Error::integrity(format!(
                        "the object header names master key version {version}, which does not exist"
                    ))
                })?;
            return self.unseal_key(
                MASTER_KEY_ID,
                version,
                &store::master_ad(version),
                &m.sealed,
            );
        }
        let id = Uuid::from_bytes(*key_id);
        let shown = id.hyphenated().to_string();
        if p.is_anonymous() {
            return Err(Error::access_denied_kms().key(shown));
        }
        let s = self.snapshot()?;
        let k = s
            .cmk(&id)
            .filter(|k| !k.is_gone(now_secs()))
            .ok_or_else(|| key_not_found(&shown))?;
        self.authorize(&s, p, Action::KmsDecrypt, &id, &shown)?;
        require_enabled(k.state, &shown)?;
        // As for master keys: a CMK's versions live as long as the CMK.
        let v = k.version(version).ok_or_else(|| {
            Error::integrity(format!(
                "the object header names version {version} of key {shown}, which does not exist"
            ))
            .key(&shown)
        })?;
        self.unseal_key(*key_id, version, &store::cmk_ad(&id, version), &v.sealed)
            .map_err(|e| e.key(shown))
    }

    /// The CMK's canonical id string (UUID) for headers shown to users.
    pub fn key_id_string(key_id: &KeyId) -> String {
        Uuid::from_bytes(*key_id).hyphenated().to_string()
    }

    fn master_encryptor(&self) -> Result<Kek> {
        let s = self.snapshot()?;
        let newest = s.newest_master().ok_or_else(|| self.no_master())?;
        if !self.rotation_due(newest.created, now_secs()) {
            return self.master_kek(newest.version, &newest.sealed);
        }
        // Re-check under the lock: another thread or process may have
        // rotated already.
        self.modify(|s, now| {
            let due = s
                .newest_master()
                .is_none_or(|m| self.rotation_due(m.created, now));
            if due {
                let v = s.add_master_version(&self.root, now);
                tracing::info!(
                    version = v,
                    "rotated the SSE-OSS master key (period elapsed)"
                );
            }
            let m = s.newest_master().ok_or_else(|| self.no_master())?;
            self.master_kek(m.version, &m.sealed)
        })
    }

    fn master_kek(&self, version: u32, sealed: &str) -> Result<Kek> {
        self.unseal_key(MASTER_KEY_ID, version, &store::master_ad(version), sealed)
    }

    fn no_master(&self) -> Error {
        store::corrupt(&self.keystore, "no master key version")
    }

    fn rotation_due(&self, created: u64, now: u64) -> bool {
        let days = u64::from(self.policy.master_rotation_days());
        days != 0 && now.saturating_sub(created) >= days * SECS_PER_DAY
    }

    /// The default managed key's id, creating the key on first use.
    fn default_key(&self) -> Result<(Arc<Store>, Uuid)> {
        let s = self.snapshot()?;
        if let Some(id) = default_key_in(&s, now_secs()) {
            return Ok((s, id));
        }
        // Created under the write lock after re-reading the file, so two
        // racing threads or processes make exactly one default key.
        let id = self.modify(|s, now| {
            if let Some(id) = default_key_in(s, now) {
                return Ok(id);
            }
            let id = new_key_id(s);
            let material = SecretKey::random(store::KEY_LEN);
            s.cmk.push(store::CmkEntry {
                id,
                description: DEFAULT_KEY_DESCRIPTION.to_string(),
                origin: KeyOrigin::AliyunKms,
                state: KeyState::Enabled,
                creator: KeyCreator::Oss,
                created: now,
                deletion_date: None,
                versions: vec![store::VersionEntry {
                    version: 1,
                    created: now,
                    sealed: store::seal(&self.root, &store::cmk_ad(&id, 1), material.expose()),
                }],
            });
            s.aliases.insert(DEFAULT_KEY_ALIAS.to_string(), id);
            tracing::info!(key_id = %id, "created the default managed key {DEFAULT_KEY_ALIAS}");
            Ok(id)
        })?;
        Ok((self.snapshot()?, id))
    }

    /// Refuses `p` unless the policy grants `action` on the key `id` (named
    /// by its id or any of its aliases).
    fn authorize(
        &self,
        s: &Store,
        p: &Principal,
        action: Action,
        id: &Uuid,
        shown: &str,
    ) -> Result<()> {
        let id_str = id.hyphenated().to_string();
        let aliases = s.aliases_of(id);
        let mut names: Vec<&str> = vec![&id_str];
        names.extend(aliases.iter().map(String::as_str));
        if self.policy.allows(p, action, &names) {
            Ok(())
        } else {
            Err(Error::access_denied_kms().key(shown))
        }
    }

    fn unseal_key(&self, key_id: KeyId, version: u32, ad: &[u8], sealed: &str) -> Result<Kek> {
        // Every entry authenticated when the store was loaded; failing now
        // means the cached store and the root key disagree, which is a bug.
        match store::open_sealed(&self.root, ad, sealed) {
            Ok(material) if material.len() == store::KEY_LEN => Ok(Kek {
                key_id,
                version,
                material,
            }),
            _ => Err(store::corrupt(
                &self.keystore,
                format!(
                    "key {} version {version} fails to authenticate",
                    Kms::key_id_string(&key_id)
                ),
            )),
        }
    }

    /// The current keystore, reloaded first if another writer replaced the
    /// file since we last read it.
    fn snapshot(&self) -> Result<Arc<Store>> {
        self.snapshot_at().map(|(s, _)| s)
    }

    /// The current keystore and its epoch (see `Cached`).
    fn snapshot_at(&self) -> Result<(Arc<Store>, u64)> {
        let version = store::version(&*self.states)?;
        {
            let c = self.cache.read().unwrap_or_else(|e| e.into_inner());
            if c.version == version {
                return Ok((Arc::clone(&c.store), c.epoch));
            }
        }
        let (s, version) = store::read(&*self.states)?;
        self.verify(&s)?;
        let s = Arc::new(s);
        // The cache only ever holds a verified store, so a panic elsewhere
        // while it was locked cannot have left it half-updated.
        let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if c.version != version {
            let epoch = c.epoch + 1;
            *c = Cached {
                version,
                store: Arc::clone(&s),
                epoch,
            };
        }
        Ok((Arc::clone(&c.store), c.epoch))
    }

    /// For the data path of an SSE-KMS object whose data key was unwrapped
    /// at open: fails unless its CMK `key_id` is still usable (Enabled, not
    /// deleted), so that disabling a key stops reads and writes of objects
    /// already open too. One stat of the keystore per call; the key's state
    /// is looked up only when the keystore changed since `known`, the value
    /// the last successful call returned (0 the first time).
    pub fn check_cmk_usable(&self, key_id: &KeyId, known: u64) -> Result<u64> {
        let (s, epoch) = self.snapshot_at()?;
        if epoch == known {
            return Ok(epoch);
        }
        let id = Uuid::from_bytes(*key_id);
        let shown = id.hyphenated().to_string();
        let k = s
            .cmk(&id)
            .filter(|k| !k.is_gone(now_secs()))
            .ok_or_else(|| key_not_found(&shown))?;
        require_enabled(k.state, &shown)?;
        Ok(epoch)
    }

    /// Every load after open: a keystore must carry its MAC (an old one
    /// was upgraded at open).
    fn verify(&self, s: &Store) -> Result<()> {
        verify_store(s, &self.root, &self.keystore, false)
    }

    /// Applies `f` to the current keystore, with no other writer in
    /// between (even in another process), and writes the result. Keys past
    /// their deletion date are purged first. Nothing is written if `f`
    /// fails. `f` may run more than once, on a backend that retries when
    /// another writer got in first.
    fn modify<T>(&self, mut f: impl FnMut(&mut Store, u64) -> Result<T>) -> Result<T> {
        let mut out = None;
        self.write(|s| {
            self.verify(s)?;
            let now = now_secs();
            s.purge_expired(now);
            out = Some(f(s, now)?);
            Ok(true)
        })?;
        out.ok_or_else(|| {
            Error::new(
                OssCode::InternalError,
                format!("{}: the update was not applied", self.keystore.display()),
            )
        })
    }

    /// The read-modify-write under `modify`: `f` changes the keystore read
    /// and says whether to write it (false: leave it). What is written gets
    /// its MAC sealed and becomes the cached keystore.
    fn write(&self, mut f: impl FnMut(&mut Store) -> Result<bool>) -> Result<()> {
        let mut written = None;
        let version = self.states.update_state(State::Keystore, &mut |current| {
            let current = current.ok_or_else(|| store::not_initialised(&*self.states))?;
            let mut s = store::parse_bytes(current, &*self.states)?;
            if !f(&mut s)? {
                return Ok(None);
            }
            mac::seal_store(&self.root, &mut s, &self.keystore)?;
            let text = store::to_text(&s, &self.keystore)?;
            written = Some(s);
            Ok(Some(text.into_bytes()))
        })?;
        if let (Some(s), Some(version)) = (written, version) {
            let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
            let epoch = c.epoch + 1;
            *c = Cached {
                version,
                store: Arc::new(s),
                epoch,
            };
        }
        Ok(())
    }

    /// Test hook: rewrites the keystore as an ssefs from before MACs wrote
    /// it (no MAC, the check value sealed as it then was), as the upgrade
    /// tests start from.
    #[cfg(test)]
    pub(crate) fn downgrade_for_test(&self) -> Result<()> {
        let root = &self.root;
        let keystore = &self.keystore;
        self.states.update_state(State::Keystore, &mut |current| {
            let current = current.ok_or_else(|| store::not_initialised(&*self.states))?;
            let mut s = store::parse_bytes(current, &*self.states)?;
            s.mac = None;
            s.grants_mac = None;
            s.plain_macs = false;
            s.bucket_settings.clear();
            s.root.check = rootkey::check_value(root);
            store::to_text(&s, keystore).map(|t| Some(t.into_bytes()))
        })?;
        Ok(())
    }

    /// Test hook: edit the stored keystore directly (e.g. to age a key).
    #[cfg(test)]
    fn edit_store_for_test(&self, mut f: impl FnMut(&mut Store, &SecretKey)) -> Result<()> {
        self.modify(|s, _| {
            f(s, &self.root);
            Ok(())
        })
    }
}

/// Checks `key`, a candidate root key, against the keystore in `states`
/// without writing anything: the check value and every sealed entry must
/// authenticate under it. Returns the data directory's id.
pub fn check_root_key(states: &dyn StateStore, key: &SecretKey) -> Result<Option<Uuid>> {
    let path = PathBuf::from(states.state_shown(State::Keystore));
    let (s, _) = store::read(states)?;
    s.check_version(&path)?;
    if s.root.kdf.is_some() {
        return Err(Error::new(
            OssCode::InvalidArgument,
            "the root key of this data directory is derived from a passphrase: \
             there is no key file to restore",
        )
        .resource(path.display().to_string()));
    }
    verify_store(&s, key, &path, true)?;
    Ok(s.data_dir_id)
}

/// Reads a root key file (checking its owner, mode and size).
pub fn load_key_file(path: &Path) -> Result<SecretKey> {
    rootkey::load_file(path)
}

/// The data directory's id as its keystore records it, unverified (it only
/// picks which key file to try; the key is then checked against the
/// keystore). `None` when there is no keystore or no id.
pub fn recorded_data_dir_id(states: &dyn StateStore) -> Option<Uuid> {
    store::read(states).ok().and_then(|(s, _)| s.data_dir_id)
}

/// Every check a keystore read from `path` passes before it is used: its
/// format version, the root key's check value and the MAC over its
/// metadata, then every sealed entry. `legacy_ok`: see `mac::verify_store_mac`.
fn verify_store(s: &Store, root: &SecretKey, path: &Path, legacy_ok: bool) -> Result<()> {
    s.check_version(path)?;
    mac::verify_store_mac(root, s, path, legacy_ok)?;
    s.verify(root, path)
}

/// The id of the default managed key, if it exists.
fn default_key_in(s: &Store, now: u64) -> Option<Uuid> {
    s.aliases
        .get(DEFAULT_KEY_ALIAS)
        .and_then(|id| s.cmk(id))
        .filter(|k| !k.is_gone(now))
        .map(|k| k.id)
}

/// Resolves a key ref (UUID or alias) to an existing, not deleted CMK id.
fn resolve(s: &Store, key_ref: &str, now: u64) -> Result<Uuid> {
    let live = |id: &Uuid| s.cmk(id).filter(|k| !k.is_gone(now)).map(|k| k.id);
    match names::parse_key_ref(key_ref)? {
        KeyRef::Id(id) => live(&id).ok_or_else(|| key_not_found(key_ref)),
        KeyRef::Alias(a) => s.aliases.get(a).and_then(live).ok_or_else(|| {
            Error::new(OssCode::AliasNotFound, "The specified alias is not found").key(key_ref)
        }),
    }
}

fn key_not_found(key_ref: &str) -> Error {
    Error::new(
        OssCode::KeyNotFound,
        "The specified parameter KMS keyId is not found",
    )
    .key(key_ref)
}

/// The data path needs an Enabled key.
fn require_enabled(state: KeyState, shown: &str) -> Result<()> {
    let (code, msg) = match state {
        KeyState::Enabled => return Ok(()),
        KeyState::Disabled => (OssCode::RejectedDisabled, "The specified key is disabled"),
        KeyState::PendingDeletion => (
            OssCode::RejectedPendingDeletion,
            "The specified key is pending deletion",
        ),
        KeyState::PendingImport => (
            OssCode::RejectedPendingImport,
            "The specified key is pending import of its key material",
        ),
    };
    Err(Error::new(code, msg).key(shown))
}

/// A fresh v4 id not used by any CMK (nor the all-zero master id).
fn new_key_id(s: &Store) -> Uuid {
    loop {
        let id = Uuid::new_v4();
        if s.cmk(&id).is_none() {
            return id;
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
