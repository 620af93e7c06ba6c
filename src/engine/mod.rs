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
pub mod xattr;

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::backend::{strict, Dir, Ident};
use crate::crypto::{fill_random, IntegrityError, SecretKey};
use crate::error::{Error, IoContext, OssCode, Result};
use crate::format::{ChunkSize, Header, KeyWrap, Method, HEADER_LEN};
use crate::kms::{Kek, Kms, Policy, RootKeySource, WrapTarget};
use crate::oss::{SseAlgorithm, SseConfig};
use crate::principal::Principal;

pub use bucket::BucketSettings;
pub use cache::ChunkCache;
pub use object::ObjectFile;
pub use objects::open_regular;
pub use objects::ObjectInfo;
pub(crate) use objects::{copy_posix_attrs, mark_replaces};

/// The state directory inside the data directory.
pub const STATE_DIR: &str = ".ssefs";
/// A bucket's settings file.
pub const BUCKET_SETTINGS: &str = ".ssefs-bucket.toml";
/// Backend xattr holding an object's encryption override (an SseConfig in
/// TOML), so that rewrites of the object keep using it.
pub const OVERRIDE_XATTR: &str = "user.ssefs.sse";
/// Backend xattr a rewrite by `reencrypt` or `rewrap` leaves on the new
/// file: the identity (`Ident::to_bytes`) of the backend file it replaced,
/// so that a mount holding the old one can tell a rewrite of its object
/// from a new file that took its name, and follow the rewrite.
pub const REPLACES_XATTR: &str = "user.ssefs.replaces";
/// Temp files older than this are left over from a crash and removed at open.
const STALE_TEMP: Duration = Duration::from_secs(600);

/// Where the root key comes from when nothing is said: the systemd
/// credential, else the key file apart from the data directory, else the
/// old layout's file inside it (`crate::kms::location`).
pub fn default_root_key(data_dir: &Path) -> Result<RootKeySource> {
    crate::kms::location::default_source(data_dir, false)
}

pub struct Engine {
    data_dir: PathBuf,
    /// The data directory, held: every backend name is resolved beneath it.
    root: Dir,
    /// `.ssefs/tmp`, where replacements are written.
    tmp: Dir,
    /// Shared with open SSE-KMS objects, which re-check their key's state.
    kms: std::sync::Arc<Kms>,
    /// Decrypted chunks shared by open objects (the mount sets one).
    cache: Option<std::sync::Arc<ChunkCache>>,
    /// Parsed bucket settings, revalidated by a stat on every use.
    settings: bucket::SettingsCache,
}

/// A temp file in `.ssefs/tmp`, open for writing.
pub struct TempFile {
    pub name: OsString,
    pub file: File,
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
        for d in [data_dir, &state, &state.join("tmp")] {
            strict::create_private_dir(d).ctx(d.display())?;
        }
        Self::check_private(data_dir)?;
        Kms::init(&state, root)
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
        let state = data_dir.join(STATE_DIR);
        if !state.join("keystore.toml").exists() {
            return Err(Error::new(
                OssCode::KmsServiceNotEnabled,
                "the data directory is not initialised (run `ssefs init`)",
            )
            .resource(data_dir.display().to_string()));
        }
        Self::check_private(data_dir)?;
        let root_dir = Dir::open(data_dir).ctx(data_dir.display())?;
        strict::check_held(data_dir, &root_dir)?;
        let owner = root_dir
            .stat(OsStr::new(""))
            .ctx(data_dir.display())?
            .st_uid;
        // Made by versions that did not make it with the state directory.
        let tmp_path = state.join("tmp");
        strict::create_private_dir(&tmp_path).ctx(tmp_path.display())?;
        strict::check(&tmp_path)?;
        let tmp = root_dir
            .dir(&Path::new(STATE_DIR).join("tmp"))
            .ctx(tmp_path.display())?;
        let config = state.join("config.toml");
        let (policy, grants) = Policy::load_with_text(&config, owner)?;
        let kms = std::sync::Arc::new(Kms::open(&state, root, policy)?);
        let settings = bucket::SettingsCache::new(kms.clone());
        let engine = Engine {
            data_dir: data_dir.to_path_buf(),
            root: root_dir,
            tmp,
            kms,
            cache: None,
            settings,
        };
        engine.remove_stale_temps();
        engine.upgrade(grants.as_deref())?;
        Ok((engine, grants))
    }

    /// Refuses a data directory that someone other than us (or root) could
    /// change: the directory, the directories above it, its state
    /// directory and the files in it that hold keys and policy.
    pub fn check_private(data_dir: &Path) -> Result<()> {
        strict::check(data_dir)?;
        strict::check_ancestors(data_dir)?;
        let state = data_dir.join(STATE_DIR);
        strict::check(&state)?;
        for f in ["keystore.toml", "config.toml", "root.key"] {
            strict::check_if_present(&state.join(f))?;
        }
        Ok(())
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

    /// The data directory, held open.
    pub fn root(&self) -> &Dir {
        &self.root
    }

    fn remove_stale_temps(&self) {
        let Ok(entries) = self.tmp.entries() else {
            return;
        };
        let now = SystemTime::now();
        for e in entries {
            let old = self.tmp.stat(&e.name).is_ok_and(|st| {
                let t = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
                now.duration_since(t).unwrap_or_default() > STALE_TEMP
            });
            if old {
                let _ = self.tmp.remove_file(&e.name);
            }
        }
    }

    /// Creates a new, empty temp file for an atomic replacement.
    pub fn temp_file(&self, mode: u32) -> Result<TempFile> {
        let mut r = [0u8; 12];
        fill_random(&mut r);
        let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
        let name = OsString::from(format!("{hex}.tmp"));
        let file = self
            .tmp
            .file(
                Path::new(&name),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                mode,
            )
            .ctx(format!("{STATE_DIR}/tmp/{hex}.tmp"))?;
        Ok(TempFile { name, file })
    }

    /// Removes a temp file that will not be committed.
    pub fn discard_temp(&self, tmp: &TempFile) {
        let _ = self.tmp.remove_file(&tmp.name);
    }

    /// Durably replaces `name` in `dir` with `bytes` (temp file, fsync,
    /// rename, fsync of the directory).
    pub fn write_atomic(&self, dir: &Dir, name: &OsStr, bytes: &[u8]) -> Result<()> {
        let mut tmp = self.temp_file(0o644)?;
        let shown = Path::new(name).display().to_string();
        let res = tmp
            .file
            .write_all(bytes)
            .and_then(|_| tmp.file.sync_all())
            .ctx(&shown)
            .and_then(|_| self.commit_temp(&tmp, dir, name, &shown));
        if res.is_err() {
            self.discard_temp(&tmp);
        }
        res
    }

    /// Renames a finished, fsynced temp file to `name` in `dir` (replacing
    /// whatever is there) and makes the rename durable. For new objects;
    /// a rewrite of an existing one goes through `replace_with_temp`.
    pub fn commit_temp(&self, tmp: &TempFile, dir: &Dir, name: &OsStr, shown: &str) -> Result<()> {
        self.tmp.rename(&tmp.name, dir, name).ctx(shown)?;
        dir.sync().ctx(shown)
    }

    /// Puts a finished, fsynced temp file in the place of `name` in `dir`,
    /// only while that is still the file `expect` (see `Dir::replace`).
    /// The temp file is removed if it does not take the place.
    pub fn replace_with_temp(
        &self,
        tmp: &TempFile,
        (dir, name): (&Dir, &OsStr),
        expect: Ident,
        shown: &str,
    ) -> Result<()> {
        let r = dir.replace(name, &self.tmp, &tmp.name, expect);
        if r.is_err() {
            self.discard_temp(tmp);
        }
        r.map_err(|e| match e.raw_os_error() {
            Some(libc::ESTALE | libc::ENOENT) => Error::new(
                OssCode::InternalError,
                "the object was moved or replaced while it was rewritten; it was left as it is now",
            )
            .resource(shown),
            _ => Error::io(shown, e),
        })
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
