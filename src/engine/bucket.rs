//! Buckets: top-level directories of the data directory, each with a
//! settings file holding its default encryption rule and its chunk size.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{Engine, BUCKET_SETTINGS};
use crate::backend::Dir;
use crate::error::{Error, IoContext, OssCode, Result};
use crate::format::{ChunkSize, SlotFormat};
use crate::kms::{Action, Principal};
use crate::oss::{BucketName, SseConfig};

/// What `.ssefs-bucket.toml` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketSettings {
    /// The default encryption rule (PutBucketEncryption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<SseConfig>,
    /// The chunk size of the bucket's objects, in bytes (an ssefs
    /// extension; absent: the default). Changed only while the bucket is
    /// empty, so that a file's length alone gives its object's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
    /// The slot format of the bucket's objects (FORMAT.md §3.1; absent:
    /// narrow, as in every bucket made before wide slots). Buckets made now
    /// get "wide"; like the chunk size it changes only while the bucket is
    /// empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_format: Option<SlotFormat>,
}

impl BucketSettings {
    /// The chunk size and slot format new objects get and existing ones
    /// must have.
    pub fn chunk(&self) -> Result<ChunkSize> {
        let format = self.slot_format.unwrap_or_default();
        Ok(self.chunk_bytes()?.with_format(format))
    }

    fn chunk_bytes(&self) -> Result<ChunkSize> {
        match self.chunk_size {
            None => Ok(ChunkSize::DEFAULT),
            Some(n) => ChunkSize::from_bytes(n).ok_or_else(|| {
                Error::new(
                    OssCode::InternalError,
                    format!(
                        "bucket settings unreadable: chunk_size = {n} is not 4096, 16384 or 65536"
                    ),
                )
            }),
        }
    }
}

/// Reads a bucket's settings; a missing file means defaults.
pub(super) fn read_settings(bucket_dir: &Path) -> Result<BucketSettings> {
    let p = bucket_dir.join(BUCKET_SETTINGS);
    match fs::read_to_string(&p) {
        Ok(s) => toml::from_str::<BucketSettings>(&s)
            .map_err(|e| {
                Error::new(
                    OssCode::InternalError,
                    format!("bucket settings unreadable: {e}"),
                )
            })
            .and_then(|b| b.chunk().map(|_| b))
            .map_err(|e| e.resource(p.display().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BucketSettings::default()),
        Err(e) => Err(Error::io(p.display(), e)),
    }
}

/// Whether the bucket directory holds nothing but its settings file (an
/// empty subdirectory counts as something, as it does for deletion).
fn bucket_is_empty(dir: &Path) -> Result<bool> {
    for e in fs::read_dir(dir).ctx(dir.display())? {
        if e.ctx(dir.display())?.file_name() != BUCKET_SETTINGS {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What identifies one version of a settings file. Settings are replaced
/// by atomic rename, so every change brings a new inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Bucket settings as last parsed, per bucket directory. Every object
/// creation needs its bucket's rule, and every stat of an object its
/// bucket's chunk size; a stat of the settings file is far cheaper than
/// reading and parsing it, and still sees changes made by the CLI or
/// another mount at once.
/// One bucket's settings as parsed, and the version of the file they came from.
/// A parsed settings file, its stamp, and when the stamp was last checked.
type Parsed = (Stamp, Option<SseConfig>, ChunkSize, std::time::Instant);

/// How long `chunk_recent` trusts a checked entry without a stat. Sizes in
/// `ls -l` may lag a change of an empty bucket's chunk size by this much
/// (an object created by the mount re-checks first, and refreshes it).
const RECENT: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Debug, Default)]
pub(super) struct SettingsCache {
    entries: Mutex<HashMap<PathBuf, Parsed>>,
}

impl SettingsCache {
    /// The bucket's current rule and chunk size.
    pub(super) fn get(&self, bucket_dir: &Path) -> Result<(Option<SseConfig>, ChunkSize)> {
        let p = bucket_dir.join(BUCKET_SETTINGS);
        let stamp = match fs::metadata(&p) {
            Ok(m) => Stamp::of(&m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((None, ChunkSize::DEFAULT)),
            Err(e) => return Err(Error::io(p.display(), e)),
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, rule, chunk, checked)) = entries.get_mut(bucket_dir) {
            if *s == stamp {
                *checked = std::time::Instant::now();
                return Ok((rule.clone(), *chunk));
            }
        }
        // Parse outside the cache's view of time: the stamp taken before the
        // read is stored, so a change racing the read is seen next time.
        let s = read_settings(bucket_dir)?;
        let chunk = s.chunk()?;
        entries.insert(
            bucket_dir.to_path_buf(),
            (
                stamp,
                s.encryption.clone(),
                chunk,
                std::time::Instant::now(),
            ),
        );
        Ok((s.encryption, chunk))
    }

    /// The bucket's current rule.
    pub(super) fn rule(&self, bucket_dir: &Path) -> Result<Option<SseConfig>> {
        self.get(bucket_dir).map(|(r, _)| r)
    }

    /// The bucket's current chunk size.
    pub(super) fn chunk(&self, bucket_dir: &Path) -> Result<ChunkSize> {
        self.get(bucket_dir).map(|(_, c)| c)
    }

    /// The bucket's chunk size as checked within the last second, else
    /// checked now. For stat and lookups, which would otherwise pay a stat
    /// of the settings file each (`ls -lR` is one per object).
    pub(super) fn chunk_recent(&self, bucket_dir: &Path) -> Result<ChunkSize> {
        {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, _, chunk, checked)) = entries.get(bucket_dir) {
                if checked.elapsed() < RECENT {
                    return Ok(*chunk);
                }
            }
        }
        self.chunk(bucket_dir)
    }
}

impl Engine {
    pub fn bucket_dir(&self, name: &BucketName) -> PathBuf {
        self.data_dir.join(name.as_str())
    }

    /// The bucket's directory, held open (resolved beneath the data
    /// directory, no symlink followed), or NoSuchBucket.
    pub fn bucket(&self, name: &BucketName) -> Result<Dir> {
        self.root
            .dir(Path::new(name.as_str()))
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP) => Error::new(
                    OssCode::NoSuchBucket,
                    "The specified bucket does not exist.",
                )
                .resource(name.as_str()),
                _ => Error::io(name, e),
            })
    }

    /// The bucket's directory, or NoSuchBucket.
    pub fn existing_bucket(&self, name: &BucketName) -> Result<PathBuf> {
        let d = self.bucket_dir(name);
        match fs::symlink_metadata(&d) {
            Ok(m) if m.is_dir() => Ok(d),
            _ => Err(Error::new(
                OssCode::NoSuchBucket,
                "The specified bucket does not exist.",
            )
            .resource(name.as_str())),
        }
    }

    pub fn create_bucket(&self, name: &BucketName) -> Result<()> {
        match fs::DirBuilder::new()
            .mode(0o755)
            .create(self.bucket_dir(name))
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::new(
                OssCode::BucketAlreadyExists,
                "The requested bucket name is not available.",
            )
            .resource(name.as_str())),
            Err(e) => Err(Error::io(name, e)),
        }?;
        self.init_bucket_settings(name)
    }

    /// Gives a new, empty bucket its settings: wide slots (FORMAT.md
    /// §3.1), which bound nonce reuse (§4.1). Called wherever a bucket is
    /// made (`create_bucket`, mkdir at the mount's root).
    pub fn init_bucket_settings(&self, name: &BucketName) -> Result<()> {
        let s = BucketSettings {
            slot_format: Some(SlotFormat::Wide),
            ..BucketSettings::default()
        };
        self.write_settings(name, &s)
    }

    /// Buckets, sorted by name. Entries that are not valid bucket names
    /// (the state directory, stray files) are not buckets.
    pub fn list_buckets(&self) -> Result<Vec<BucketName>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.data_dir).ctx(self.data_dir.display())? {
            let e = e.ctx(self.data_dir.display())?;
            let Some(n) = e
                .file_name()
                .to_str()
                .and_then(|s| BucketName::parse(s).ok())
            else {
                continue;
            };
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.push(n);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes an empty bucket (its settings file does not count).
    pub fn delete_bucket(&self, name: &BucketName) -> Result<()> {
        let d = self.existing_bucket(name)?;
        if !bucket_is_empty(&d)? {
            return Err(Error::new(
                OssCode::BucketNotEmpty,
                "The bucket you tried to delete is not empty.",
            )
            .resource(name.as_str()));
        }
        match fs::remove_file(d.join(BUCKET_SETTINGS)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(name, e)),
        }
        fs::remove_dir(&d).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTEMPTY) => Error::new(
                OssCode::BucketNotEmpty,
                "The bucket you tried to delete is not empty.",
            )
            .resource(name.as_str()),
            _ => Error::io(name, e),
        })
    }

    /// Root, the data directory's owner, the bucket's owner, or a grant.
    fn check_bucket_permission(
        &self,
        p: &Principal,
        name: &BucketName,
        dir: &Path,
        action: Action,
    ) -> Result<()> {
        let owner = fs::metadata(dir).map(|m| m.uid()).ctx(dir.display())?;
        if p.uid == owner || self.kms.policy().allows(p, action, &[name.as_str()]) {
            Ok(())
        } else {
            Err(Error::new(
                OssCode::AccessDenied,
                format!(
                    "You have no right to access this bucket ({} required).",
                    action.as_str()
                ),
            )
            .resource(name.as_str()))
        }
    }

    /// PutBucketEncryption. The rule is already validated (`SseConfig`); an
    /// unknown CMK is accepted here and refused at the next write.
    pub fn put_bucket_encryption(
        &self,
        p: &Principal,
        name: &BucketName,
        rule: &SseConfig,
    ) -> Result<()> {
        let d = self.existing_bucket(name)?;
        self.check_bucket_permission(p, name, &d, Action::OssPutBucketEncryption)?;
        let mut s = read_settings(&d)?;
        s.encryption = Some(rule.clone());
        self.write_settings(name, &s)
    }

    /// GetBucketEncryption: NoSuchServerSideEncryptionRule when there is none.
    pub fn get_bucket_encryption(&self, p: &Principal, name: &BucketName) -> Result<SseConfig> {
        let d = self.existing_bucket(name)?;
        self.check_bucket_permission(p, name, &d, Action::OssGetBucketEncryption)?;
        read_settings(&d)?.encryption.ok_or_else(|| {
            Error::new(
                OssCode::NoSuchServerSideEncryptionRule,
                "The server side encryption configuration was not found",
            )
            .resource(name.as_str())
        })
    }

    /// DeleteBucketEncryption: succeeds whether or not a rule exists (204).
    pub fn delete_bucket_encryption(&self, p: &Principal, name: &BucketName) -> Result<()> {
        let d = self.existing_bucket(name)?;
        self.check_bucket_permission(p, name, &d, Action::OssDeleteBucketEncryption)?;
        let mut s = read_settings(&d)?;
        if s.encryption.is_none() {
            return Ok(());
        }
        s.encryption = None;
        self.write_settings(name, &s)
    }

    /// The rule in force for new objects, without a permission check (used
    /// when writing objects).
    pub fn bucket_rule(&self, name: &BucketName) -> Result<Option<SseConfig>> {
        self.settings.rule(&self.existing_bucket(name)?)
    }

    /// The chunk size of the bucket's objects, without a permission check
    /// or an existence check (used on every stat of an object: a missing
    /// bucket has no objects to show anyway).
    pub fn chunk_size_at(&self, bucket_dir: &Path) -> Result<ChunkSize> {
        self.settings.chunk(bucket_dir)
    }

    /// `chunk_size_at` as checked within the last second: for the sizes
    /// stat and lookups show, which would otherwise pay a stat of the
    /// settings file each. Writers use `chunk_size_at`.
    pub fn chunk_size_for_stat(&self, bucket_dir: &Path) -> Result<ChunkSize> {
        self.settings.chunk_recent(bucket_dir)
    }

    /// The chunk size of the bucket's objects.
    pub fn bucket_chunk_size(&self, name: &BucketName) -> Result<ChunkSize> {
        self.settings
            .chunk(&self.existing_bucket(name)?)
            .map_err(|e| e.resource(name.as_str()))
    }

    /// Sets the chunk size of the bucket's objects (an ssefs extension).
    /// Only while the bucket holds nothing but its settings: the size of an
    /// object is computed from its file length and its bucket's chunk size
    /// (FORMAT.md §3.2), so existing objects would show wrong sizes. Setting
    /// the size it already has succeeds and changes nothing. A change also
    /// makes the bucket's slots wide (§3.1). The same permission as the
    /// encryption rule is needed.
    pub fn put_bucket_chunk_size(
        &self,
        p: &Principal,
        name: &BucketName,
        chunk: ChunkSize,
    ) -> Result<()> {
        let d = self.existing_bucket(name)?;
        self.check_bucket_permission(p, name, &d, Action::OssPutBucketEncryption)?;
        let mut s = read_settings(&d)?;
        if s.chunk()?.bytes() == chunk.bytes() {
            return Ok(());
        }
        if !bucket_is_empty(&d)? {
            return Err(Error::new(
                OssCode::BucketNotEmpty,
                format!(
                    "The bucket is not empty: its chunk size ({}) can only change while it holds no objects.",
                    s.chunk()?
                ),
            )
            .resource(name.as_str()));
        }
        s.chunk_size =
            (chunk.bytes() != ChunkSize::DEFAULT.bytes()).then_some(chunk.bytes() as u64);
        s.slot_format = Some(SlotFormat::Wide);
        self.write_settings(name, &s)
    }

    fn write_settings(&self, name: &BucketName, s: &BucketSettings) -> Result<()> {
        let text =
            toml::to_string(s).map_err(|e| Error::new(OssCode::InternalError, e.to_string()))?;
        let dir = self.bucket(name)?;
        self.write_atomic(&dir, OsStr::new(BUCKET_SETTINGS), text.as_bytes())
            .map_err(|e| e.resource(format!("{name}/{BUCKET_SETTINGS}")))
    }
}
