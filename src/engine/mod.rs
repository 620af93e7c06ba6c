//! The engine: buckets and objects on the local backend (the data
//! directory), encryption decided by OSS rules and carried out with the KMS.
//! The CLI and the FUSE adapter are thin layers over it.
//!
//! Data directory layout (docs/FORMAT.md §1):
//! ```text
//! DATA_DIR/.ssefs/            state, mode 0700
//!          .ssefs/keystore.toml, keystore.lock, config.toml, root.key (default)
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
pub mod xattr;

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::crypto::{fill_random, IntegrityError, SecretKey};
use crate::error::{Error, IoContext, OssCode, Result};
use crate::format::{ChunkSize, Header, KeyWrap, Method, HEADER_LEN};
use crate::kms::{Kek, Kms, Policy, Principal, RootKeySource, WrapTarget};
use crate::oss::{SseAlgorithm, SseConfig};

pub use bucket::BucketSettings;
pub use cache::ChunkCache;
pub use object::ObjectFile;
pub(crate) use objects::copy_posix_attrs;
pub use objects::ObjectInfo;

/// The state directory inside the data directory.
pub const STATE_DIR: &str = ".ssefs";
/// A bucket's settings file.
pub const BUCKET_SETTINGS: &str = ".ssefs-bucket.toml";
/// Backend xattr holding an object's encryption override (an SseConfig in
/// TOML), so that rewrites of the object keep using it.
pub const OVERRIDE_XATTR: &str = "user.ssefs.sse";
/// Temp files older than this are left over from a crash and removed at open.
const STALE_TEMP: Duration = Duration::from_secs(600);

/// Where the root key comes from when nothing is said: the systemd
/// credential if there is one, else a file in the state directory.
pub fn default_root_key(data_dir: &Path) -> RootKeySource {
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let p = Path::new(&dir).join("root.key");
        if p.exists() {
            return RootKeySource::File(p);
        }
    }
    RootKeySource::File(data_dir.join(STATE_DIR).join("root.key"))
}

pub struct Engine {
    data_dir: PathBuf,
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
        let state = data_dir.join(STATE_DIR);
        if state.join("keystore.toml").exists() {
            return Err(Error::new(
                OssCode::InvalidArgument,
                "the data directory is already initialised",
            )
            .resource(data_dir.display().to_string()));
        }
        fs::create_dir_all(data_dir).ctx(data_dir.display())?;
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(state.join("tmp"))
            .ctx(state.display())?;
        Kms::init(&state, root)
    }

    /// Opens an initialised data directory.
    pub fn open(data_dir: &Path, root: &RootKeySource) -> Result<Engine> {
        let state = data_dir.join(STATE_DIR);
        if !state.join("keystore.toml").exists() {
            return Err(Error::new(
                OssCode::KmsServiceNotEnabled,
                "the data directory is not initialised (run `ssefs init`)",
            )
            .resource(data_dir.display().to_string()));
        }
        let owner =
            std::os::unix::fs::MetadataExt::uid(&fs::metadata(data_dir).ctx(data_dir.display())?);
        let config = state.join("config.toml");
        let (policy, grants) = Policy::load_with_text(&config, owner)?;
        let kms = std::sync::Arc::new(Kms::open(&state, root, policy)?);
        let settings = bucket::SettingsCache::new(kms.clone());
        let engine = Engine {
            data_dir: data_dir.to_path_buf(),
            kms,
            cache: None,
            settings,
        };
        engine.remove_stale_temps();
        engine.upgrade(grants.as_deref())?;
        engine.kms.check_grants(grants.as_deref(), &config)?;
        Ok(engine)
    }

    /// Opens the data directory, initialising it first if it is new (what
    /// `ssefs mount` does on first use).
    pub fn open_or_init(data_dir: &Path, root: &RootKeySource) -> Result<Engine> {
        if !data_dir.join(STATE_DIR).join("keystore.toml").exists() {
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

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn kms(&self) -> &Kms {
        &self.kms
    }

    fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join(STATE_DIR).join("tmp")
    }

    fn remove_stale_temps(&self) {
        let Ok(entries) = fs::read_dir(self.tmp_dir()) else {
            return;
        };
        let now = SystemTime::now();
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() > STALE_TEMP)
                .unwrap_or(false);
            if old {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Creates a new, empty temp file for an atomic replacement.
    pub fn temp_file(&self, mode: u32) -> Result<(PathBuf, File)> {
        let mut r = [0u8; 12];
        fill_random(&mut r);
        let name: String = r.iter().map(|b| format!("{b:02x}")).collect();
        let path = self.tmp_dir().join(format!("{name}.tmp"));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .ctx(path.display())?;
        Ok((path, f))
    }

    /// Durably replaces `dest` with `bytes` (temp file, fsync, rename, fsync
    /// of the directory).
    pub fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let (tmp, mut f) = self.temp_file(0o644)?;
        let res = f
            .write_all(bytes)
            .and_then(|_| f.sync_all())
            .ctx(tmp.display())
            .and_then(|_| self.commit_temp(&tmp, dest));
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }

    /// Renames a finished, fsynced temp file over `dest` and makes the
    /// rename durable.
    pub fn commit_temp(&self, tmp: &Path, dest: &Path) -> Result<()> {
        fs::rename(tmp, dest).ctx(dest.display())?;
        if let Some(parent) = dest.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .ctx(parent.display())?;
        }
        Ok(())
    }

    /// The encryption a new object gets: its override, else the bucket rule
    /// in force now, else none.
    pub fn effective_sse(
        &self,
        bucket_dir: &Path,
        over: Option<&SseConfig>,
    ) -> Result<Option<SseConfig>> {
        match over {
            Some(o) => Ok(Some(o.clone())),
            None => self.settings.rule(bucket_dir),
        }
    }

    /// What a new upload into `bucket_dir` uses: `over` or the bucket's rule,
    /// and the bucket's chunk size, from one check of its settings file.
    pub fn upload_settings(
        &self,
        bucket_dir: &Path,
        over: Option<&SseConfig>,
    ) -> Result<(Option<SseConfig>, ChunkSize)> {
        let (rule, chunk) = self.settings.get(bucket_dir)?;
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
            return Ok((Header::new_plain(chunk), SecretKey::from_bytes(&[])));
        };
        let (method, target) = match cfg.algorithm {
            SseAlgorithm::Aes256 | SseAlgorithm::Sm4 => (Method::Oss, WrapTarget::Master),
            SseAlgorithm::Kms => (Method::Kms, WrapTarget::Cmk(cfg.kms_key_id.clone())),
        };
        let kek = self.kms.encryptor(p, &target)?;
        Ok(Header::new_sealed(method, cfg.cipher(), chunk, &kek))
    }

    /// Reads and parses the header of the object file at `path`.
    pub fn read_header(file: &File, name: &str) -> Result<Header> {
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; HEADER_LEN];
        let mut done = 0;
        while done < HEADER_LEN {
            let n = file.read_at(&mut b[done..], done as u64).ctx(name)?;
            if n == 0 {
                return Err(Error::integrity("object header truncated").resource(name));
            }
            done += n;
        }
        Header::parse(&b).map_err(|e| e.resource(name))
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
        let header = Self::read_header(&file, &name)?;
        Self::check_chunk(&header, chunk, &name)?;
        let key = self.unwrap_key(p, &header).map_err(|e| e.resource(&name))?;
        Ok(self.track(ObjectFile::new(file, header, &key, name)?))
    }

    /// Refuses an object whose chunk size is not its bucket's `chunk`: its
    /// size as `stat` shows it (from the bucket's chunk size, FORMAT.md
    /// §3.2) would be wrong. Only a backend file moved between buckets by
    /// hand, or tampering, does that.
    pub fn check_chunk(header: &Header, chunk: ChunkSize, name: &str) -> Result<()> {
        if header.chunk == chunk {
            return Ok(());
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

    /// The data key of an object, checking key state and permission.
    pub fn unwrap_key(&self, p: &Principal, header: &Header) -> Result<SecretKey> {
        if header.method == Method::None {
            return Ok(SecretKey::from_bytes(&[]));
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
        let Some(v) = xattr::get(xattr::At::File(file), OsStr::new(OVERRIDE_XATTR)).ctx(name)?
        else {
            return Ok(None);
        };
        let s = String::from_utf8(v)
            .map_err(|_| Error::integrity("encryption override is not UTF-8").resource(name))?;
        toml::from_str(&s).map(Some).map_err(|e| {
            Error::integrity(format!("encryption override unreadable: {e}")).resource(name)
        })
    }

    /// Records (or with `None` removes) an object's encryption override.
    pub fn write_override(file: &File, name: &str, over: Option<&SseConfig>) -> Result<()> {
        match over {
            Some(o) => {
                let s = toml::to_string(o)
                    .map_err(|e| Error::new(OssCode::InternalError, e.to_string()))?;
                xattr::set(
                    xattr::At::File(file),
                    OsStr::new(OVERRIDE_XATTR),
                    s.as_bytes(),
                    0,
                )
                .ctx(name)
            }
            None => match xattr::remove(xattr::At::File(file), OsStr::new(OVERRIDE_XATTR)) {
                Err(e) if e.raw_os_error() != Some(libc::ENODATA) => Err(Error::io(name, e)),
                _ => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests;
