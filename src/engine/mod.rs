//! The engine: buckets and objects on the local backend (the data
//! directory), encryption decided by OSS rules and carried out with the KMS.
//! The CLI and the FUSE adapter are thin layers over it.
//!
//! Data directory layout (docs/FORMAT.md §1):
//! ```text
//! DATA_DIR/.ssefs/            state, mode 0700
//!          .ssefs/keystore.toml, keystore.lock, config.toml
//!          .ssefs/root.key    the root key in the old layout (now kept apart)
//!          .ssefs/tmp/        temp files of atomic replacements
//! DATA_DIR/BUCKET/            a bucket
//! DATA_DIR/BUCKET/.ssefs-bucket.toml   its settings (encryption rule)
//! DATA_DIR/BUCKET/KEY...      objects (header + chunks)
//! ```

mod bucket;
mod cache;
mod object;
mod objects;
mod upgrade;
pub mod walk;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

#[cfg(test)]
use crate::backend::xattr;
use crate::backend::{Backend, PosixBackend, State, StateStore};
use crate::crypto::{IntegrityError, SecretKey};
use crate::error::{Error, IoContext, OssCode, Result};
use crate::format::{ChunkSize, Header, KeyWrap, Method, HEADER_LEN};
use crate::kms::{Kek, Kms, Policy, RootKeySource, WrapTarget};
use crate::oss::{BucketName, SseAlgorithm, SseConfig};
use crate::principal::Principal;

pub use crate::backend::{open_regular, Staged, OVERRIDE_XATTR, REPLACES_XATTR, STATE_DIR};
pub use bucket::BucketSettings;
pub use cache::ChunkCache;
pub use object::{ObjectFile, SlotIo};
pub(crate) use objects::object_source;
pub use objects::ObjectInfo;

/// A bucket's settings file.
pub const BUCKET_SETTINGS: &str = ".ssefs-bucket.toml";

/// Where the root key comes from when nothing is said: the systemd
/// credential, else the key file apart from the data directory, else the
/// old layout's file inside it (`crate::kms::location`).
pub fn default_root_key(data_dir: &Path) -> Result<RootKeySource> {
    crate::kms::location::default_source(data_dir, false)
}

pub struct Engine {
    /// Where objects live. Whole-object operations go through it.
    backend: Arc<dyn Backend>,
    /// The same backend as the data directory it is, for the mount, which
    /// works on its files directly; None on a store.
    local: Option<Arc<PosixBackend>>,
    /// The data directory, or for a store its description (messages).
    location: std::path::PathBuf,
    /// Shared with open SSE-KMS objects, which re-check their key's state.
    kms: std::sync::Arc<Kms>,
    /// Decrypted chunks shared by open objects (the mount sets one).
    cache: Option<std::sync::Arc<ChunkCache>>,
    /// Parsed bucket settings, revalidated by a stat on every use.
    settings: bucket::SettingsCache,
}

impl KeyWrap for Kek {
    fn key_id(&self) -> [u8; 16] {
        Kek::key_id(self)
    }
    fn version(&self) -> u32 {
        Kek::version(self)
    }
    fn wrap(&self, ad: &[u8], data_key: &SecretKey) -> ([u8; 12], Vec<u8>, [u8; 16]) {
        Kek::wrap(self, ad, data_key)
    }
    fn unwrap(
        &self,
        ad: &[u8],
        nonce: &[u8; 12],
        ct: &[u8],
        tag: &[u8; 16],
    ) -> std::result::Result<SecretKey, IntegrityError> {
        Kek::unwrap(self, ad, nonce, ct, tag)
    }
}

impl Engine {
    /// Creates a data directory: the state directory and the keystore (and
    /// the root key file when it does not exist yet).
    pub fn init(data_dir: &Path, root: &RootKeySource) -> Result<()> {
        if PosixBackend::initialised(data_dir) {
            return Err(Error::new(
                OssCode::InvalidArgument,
                "the data directory is already initialised",
            )
            .resource(data_dir.display().to_string()));
        }
        Kms::init(&PosixBackend::create(data_dir)?, root)
    }

    /// Opens an initialised data directory.
    pub fn open(data_dir: &Path, root: &RootKeySource) -> Result<Engine> {
        let (engine, grants) = Self::open_unsealed(data_dir, root)?;
        let config = data_dir.join(STATE_DIR).join("config.toml");
        engine.kms.check_grants(grants.as_deref(), &config)?;
        Ok(engine)
    }

    /// `open` but for the check of `config.toml` against its approved MAC
    /// (which `ssefs kms seal-policy` makes): the engine, and the text of
    /// `config.toml` its policy came from (`None`: no file).
    fn open_unsealed(data_dir: &Path, root: &RootKeySource) -> Result<(Engine, Option<String>)> {
        if !PosixBackend::initialised(data_dir) {
            return Err(Error::new(
                OssCode::KmsServiceNotEnabled,
                "the data directory is not initialised (run `ssefs init`)",
            )
            .resource(data_dir.display().to_string()));
        }
        let local = Arc::new(PosixBackend::open(data_dir)?);
        let owner = local.owner()?;
        local.remove_stale_temps();
        let (engine, grants) = Self::open_on(local.clone(), Some(local), owner, root)?;
        engine.upgrade(grants.as_deref())?;
        Ok((engine, grants))
    }

    /// The engine over `backend`: the KMS on its keystore, the grants, and
    /// the key of its metadata records. `owner` owns the grants' defaults.
    fn open_on(
        backend: Arc<dyn Backend>,
        local: Option<Arc<PosixBackend>>,
        owner: u32,
        root: &RootKeySource,
    ) -> Result<(Engine, Option<String>)> {
        let grants = backend.get_state(State::Grants)?;
        let (policy, grants) = Policy::from_record(
            grants.as_ref().map(|(b, _)| &b[..]),
            owner,
            Path::new(&backend.state_shown(State::Grants)),
        )?;
        let states: Arc<dyn StateStore> = backend.clone();
        let kms = std::sync::Arc::new(Kms::open(states, root, policy)?);
        backend.use_meta_key(
            kms.policy_mac_key(crate::kms::MacPurpose::ObjectMeta)
                .into_secret(),
        );
        let settings = bucket::SettingsCache::new(kms.clone(), backend.clone());
        let location = match &local {
            Some(l) => l.data_dir().to_path_buf(),
            None => std::path::PathBuf::from(backend.describe()),
        };
        let engine = Engine {
            backend,
            local,
            location,
            kms,
            cache: None,
            settings,
        };
        Ok((engine, grants))
    }

    /// Makes a keystore on a store (`ssefs --backend s3://... init`).
    pub fn init_store(backend: &dyn Backend, root: &RootKeySource) -> Result<()> {
        if backend.state_version(State::Keystore)?.is_some() {
            return Err(
                Error::new(OssCode::InvalidArgument, "the store is already initialised")
                    .resource(backend.describe()),
            );
        }
        Kms::init(backend, root)
    }

    /// Opens an initialised store. The grants' defaults go to the user
    /// running this (a store has no directory owner to give them to).
    pub fn open_store(backend: Arc<dyn Backend>, root: &RootKeySource) -> Result<Engine> {
        if backend.state_version(State::Keystore)?.is_none() {
            return Err(Error::new(
                OssCode::KmsServiceNotEnabled,
                "the store is not initialised (run `ssefs --backend ... init`)",
            )
            .resource(backend.describe()));
        }
        let owner = nix::unistd::geteuid().as_raw();
        let (engine, grants) = Self::open_on(backend, None, owner, root)?;
        let config = std::path::PathBuf::from(engine.backend.state_shown(State::Grants));
        engine.kms.check_grants(grants.as_deref(), &config)?;
        Ok(engine)
    }

    /// Opens the data directory, initialising it first if it is new (what
    /// `ssefs mount` does on first use).
    pub fn open_or_init(data_dir: &Path, root: &RootKeySource) -> Result<Engine> {
        if !PosixBackend::initialised(data_dir) {
            Self::init(data_dir, root)?;
        }
        Self::open(data_dir, root)
    }

    /// Keeps up to `bytes` of decrypted chunks in memory for open objects.
    pub fn with_cache(mut self, bytes: usize) -> Self {
        self.cache = Some(std::sync::Arc::new(ChunkCache::new(bytes)));
        self
    }

    pub fn cache(&self) -> Option<std::sync::Arc<ChunkCache>> {
        self.cache.clone()
    }

    /// The data directory (for a store, its description).
    pub fn data_dir(&self) -> &Path {
        &self.location
    }

    /// The local backend, for the mount; an error on a store.
    pub fn local(&self) -> Result<&PosixBackend> {
        self.local.as_deref().ok_or_else(|| {
            Error::new(
                OssCode::InvalidArgument,
                "this works on a data directory only, not on a store (yet)",
            )
            .resource(self.location.display().to_string())
        })
    }

    pub fn kms(&self) -> &Kms {
        &self.kms
    }

    /// Where objects live.
    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// The encryption a new object gets: its override, else the bucket rule
    /// in force now, else none.
    pub fn effective_sse(
        &self,
        bucket: &BucketName,
        over: Option<&SseConfig>,
    ) -> Result<Option<SseConfig>> {
        match over {
            Some(o) => Ok(Some(o.clone())),
            None => self.settings.rule(bucket),
        }
    }

    /// What a new upload into `bucket` uses: `over` or the bucket's rule,
    /// and the bucket's chunk size, from one check of its settings.
    pub fn upload_settings(
        &self,
        bucket: &BucketName,
        over: Option<&SseConfig>,
    ) -> Result<(Option<SseConfig>, ChunkSize)> {
        let (rule, chunk) = self.settings.get(bucket)?;
        Ok((over.cloned().or(rule), chunk))
    }

    /// A header for a new object encrypted per `sse` in chunks of `chunk`
    /// (its bucket's), with its fresh data key. KMS permission and key
    /// state are checked here, at write time.
    pub fn new_header(
        &self,
        p: &Principal,
        sse: Option<&SseConfig>,
        chunk: ChunkSize,
    ) -> Result<(Header, SecretKey)> {
        let Some(cfg) = sse else {
            let key = self.kms.plain_key();
            return Ok((Header::new_plain(chunk, &key)?, key));
        };
        let (method, target) = match cfg.algorithm {
            SseAlgorithm::Aes256 | SseAlgorithm::Sm4 => (Method::Oss, WrapTarget::Master),
            SseAlgorithm::Kms => (Method::Kms, WrapTarget::Cmk(cfg.kms_key_id.clone())),
        };
        let kek = self.kms.encryptor(p, &target)?;
        Ok(Header::new_sealed(method, cfg.cipher(), chunk, &kek))
    }

    /// Reads and parses the header at the start of an object's bytes (a
    /// backend file, or any other [`SlotIo`]).
    pub fn read_header<F: SlotIo + ?Sized>(file: &F, name: &str) -> Result<Header> {
        let mut b = [0u8; HEADER_LEN];
        let mut done = 0;
        while done < HEADER_LEN {
            let n = file.read_slots(&mut b[done..], done as u64).ctx(name)?;
            if n == 0 {
                return Err(Error::integrity("object header truncated").resource(name));
            }
            done += n;
        }
        Header::parse(&b).map_err(|e| e.resource(name))
    }

    /// `open_object` over any [`SlotIo`] (an object arriving from a
    /// store), for one read; not tracked by the chunk cache.
    pub fn open_slots<F: SlotIo>(
        &self,
        p: &Principal,
        slots: F,
        name: String,
        chunk: ChunkSize,
    ) -> Result<ObjectFile<F>> {
        let header = Self::read_header(&slots, &name)?;
        Self::check_chunk(&header, chunk, &name)?;
        let key = self.unwrap_key(p, &header).map_err(|e| e.resource(&name))?;
        ObjectFile::new(slots, header, &key, name)
    }

    /// Opens an existing object file of a bucket whose chunk size is
    /// `chunk`: parses the header, checks its chunk size, unwraps the data
    /// key (checking KMS state and kms:Decrypt for `p`).
    pub fn open_object(
        &self,
        p: &Principal,
        file: File,
        name: String,
        chunk: ChunkSize,
    ) -> Result<ObjectFile> {
        Ok(self.track(self.open_slots(p, file, name, chunk)?))
    }

    /// Refuses an object whose chunk size or slot format is not its
    /// bucket's `chunk`: its size as `stat` shows it (from the bucket's
    /// chunk size and slot format, FORMAT.md §3.2) would be wrong. Only a
    /// backend file moved between buckets by hand, or tampering, does that.
    pub fn check_chunk(header: &Header, chunk: ChunkSize, name: &str) -> Result<()> {
        if header.chunk == chunk {
            return Ok(());
        }
        if header.chunk.bytes() == chunk.bytes() {
            return Err(Error::integrity(format!(
                "the object's slots are {:?}, its bucket's {:?} (FORMAT.md §3.1): moved between buckets outside ssefs?",
                header.chunk.format(),
                chunk.format()
            ))
            .resource(name));
        }
        Err(Error::integrity(format!(
            "the object's chunk size ({}) is not its bucket's ({chunk}): moved between buckets outside ssefs?",
            header.chunk
        ))
        .resource(name))
    }

    /// Gives an object kept open (by the mount) the shared chunk cache and,
    /// under SSE-KMS, a check of its CMK's state on every read and write.
    pub fn track(&self, o: ObjectFile) -> ObjectFile {
        o.with_cache(self.cache.clone())
            .with_key_check(self.kms.clone())
    }

    /// The data key of an object, checking key state and permission. For
    /// an unencrypted object, K_plain once its header MAC checks (FORMAT.md
    /// §2.5); an empty key for one from before keyed tags, accepted only
    /// until the upgrade has converted them all (§8.6).
    pub fn unwrap_key(&self, p: &Principal, header: &Header) -> Result<SecretKey> {
        if header.method == Method::None {
            if header.is_unkeyed_plain() {
                if self.kms.plain_macs_required()? {
                    return Err(Error::integrity(
                        "unencrypted object without a MAC: not written by ssefs (forged?), \
                         or restored from before the upgrade to keyed tags",
                    ));
                }
                return Ok(SecretKey::from_bytes(&[]));
            }
            let key = self.kms.plain_key();
            header.check_plain(&key)?;
            return Ok(key);
        }
        let kek = self
            .kms
            .decryptor(p, &header.key_id, header.key_version)
            .map_err(|e| {
                if header.method == Method::Kms {
                    e.key(Kms::key_id_string(&header.key_id))
                } else {
                    e
                }
            })?;
        header.unwrap_data_key(&kek)
    }

    /// An object's persisted encryption override, if any.
    pub fn read_override(file: &File, name: &str) -> Result<Option<SseConfig>> {
        crate::backend::read_override(file, name)
    }

    /// Records (or with `None` removes) an object's encryption override.
    pub fn write_override(file: &File, name: &str, over: Option<&SseConfig>) -> Result<()> {
        crate::backend::write_override(file, name, over)
    }
}

#[cfg(test)]
mod tests;
