//! Buckets: top-level directories of the data directory, each with a
//! settings file holding its default encryption rule and its chunk size.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{Engine, BUCKET_SETTINGS};
use crate::backend::Dir;
use crate::error::{Error, IoContext, OssCode, Result};
use crate::format::{ChunkSize, SlotFormat};
use crate::kms::{Action, Kms, MacKey, MacPurpose};
use crate::oss::{BucketName, SseConfig};
use crate::principal::Principal;

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

/// `.ssefs-bucket.toml` as stored: the settings and their MAC (FORMAT.md
/// §8.1). Absent only in data directories from before MACs, until the first
/// open upgrades them.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encryption: Option<SseConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunk_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slot_format: Option<SlotFormat>,
}

impl Stored {
    fn parse(text: &str, path: &Path) -> Result<Stored> {
        toml::from_str::<Stored>(text).map_err(|e| {
            Error::new(
                OssCode::InternalError,
                format!("bucket settings unreadable: {e}"),
            )
            .resource(path.display().to_string())
        })
    }

    fn settings(&self) -> BucketSettings {
        BucketSettings {
            encryption: self.encryption.clone(),
            chunk_size: self.chunk_size,
            slot_format: self.slot_format,
        }
    }
}

/// The bucket a bucket directory is (its last component).
fn bucket_of(bucket_dir: &Path) -> Result<&str> {
    bucket_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            Error::new(OssCode::InternalError, "not a bucket directory")
                .resource(bucket_dir.display().to_string())
        })
}

/// The MAC input besides the bucket's name: the settings' TOML as ssefs
/// writes it, without the `mac` line.
fn body(s: &BucketSettings) -> Result<String> {
    toml::to_string(s).map_err(|e| Error::new(OssCode::InternalError, e.to_string()))
}

/// The integrity error for a settings file that is not as ssefs wrote it.
fn tampered(path: &Path, why: &str) -> Error {
    Error::integrity(format!(
        "bucket settings {} {why}: changed outside ssefs? Nothing is written to the bucket until the file is restored from a backup (an empty bucket can be deleted and made again)",
        path.display()
    ))
    .resource(path.display().to_string())
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
/// The keystore epoch is that of the check against the keystore's anchor.
type Parsed = (Stamp, u64, Option<SseConfig>, ChunkSize, std::time::Instant);

/// How long `chunk_recent` trusts a checked entry without a stat. Sizes in
/// `ls -l` may lag a change of an empty bucket's chunk size by this much
/// (an object created by the mount re-checks first, and refreshes it).
const RECENT: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) struct SettingsCache {
    /// Holds each bucket's current settings MAC (the anchor).
    kms: Arc<Kms>,
    /// Authenticates every settings file (bound to its bucket's name).
    key: MacKey,
    entries: Mutex<HashMap<PathBuf, Parsed>>,
}

impl SettingsCache {
    pub(super) fn new(kms: Arc<Kms>) -> SettingsCache {
        SettingsCache {
            key: kms.policy_mac_key(MacPurpose::BucketSettings),
            kms,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Reads a bucket's settings and checks their MAC and that it is the
    /// one the keystore holds for the bucket. Every bucket has a settings
    /// file (made with it, or at the upgrade): a missing, empty, edited,
    /// copied or older one is an integrity error, never the defaults.
    /// Returns the keystore epoch of the check too.
    pub(super) fn read(&self, bucket_dir: &Path) -> Result<(BucketSettings, u64)> {
        let (s, mac) = self.read_mac_only(bucket_dir)?;
        let (allowed, epoch) = self.kms.settings_anchor(bucket_of(bucket_dir)?)?;
        if !allowed.contains(&mac) {
            let p = bucket_dir.join(BUCKET_SETTINGS);
            return Err(tampered(
                &p,
                "is not the bucket's current one (an older copy written back?)",
            ));
        }
        Ok((s, epoch))
    }

    /// `read` without the keystore's anchor (for the upgrade, which makes
    /// the anchors): the settings and their MAC.
    fn read_mac_only(&self, bucket_dir: &Path) -> Result<(BucketSettings, String)> {
        let p = bucket_dir.join(BUCKET_SETTINGS);
        let text = match fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(tampered(&p, "is missing"))
            }
            Err(e) => return Err(Error::io(p.display(), e)),
        };
        let stored = Stored::parse(&text, &p)?;
        let Some(mac) = &stored.mac else {
            return Err(tampered(&p, "has no MAC"));
        };
        let s = stored.settings();
        self.key
            .verify_hex(
                &[bucket_of(bucket_dir)?.as_bytes(), body(&s)?.as_bytes()],
                mac,
            )
            .map_err(|_| tampered(&p, "fails authentication"))?;
        s.chunk().map_err(|e| e.resource(p.display().to_string()))?;
        Ok((s, mac.clone()))
    }

    /// The file `read` accepts for `s` in `bucket_dir` (once the keystore
    /// holds its MAC), and that MAC.
    pub(super) fn encode(&self, bucket_dir: &Path, s: &BucketSettings) -> Result<(String, String)> {
        let mac = self
            .key
            .tag_hex(&[bucket_of(bucket_dir)?.as_bytes(), body(s)?.as_bytes()]);
        let stored = Stored {
            mac: Some(mac.clone()),
            encryption: s.encryption.clone(),
            chunk_size: s.chunk_size,
            slot_format: s.slot_format,
        };
        let text = toml::to_string(&stored)
            .map_err(|e| Error::new(OssCode::InternalError, e.to_string()))?;
        Ok((text, mac))
    }

    /// The bucket's current rule and chunk size.
    pub(super) fn get(&self, bucket_dir: &Path) -> Result<(Option<SseConfig>, ChunkSize)> {
        let p = bucket_dir.join(BUCKET_SETTINGS);
        let stamp = match fs::metadata(&p) {
            Ok(m) => Stamp::of(&m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(tampered(&p, "is missing"))
            }
            Err(e) => return Err(Error::io(p.display(), e)),
        };
        // One stat of the keystore: its anchor for the bucket may have
        // changed (the epoch says whether anything in it did).
        let (_, epoch) = self.kms.settings_anchor("")?;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, e, rule, chunk, checked)) = entries.get_mut(bucket_dir) {
            if *s == stamp && *e == epoch {
                *checked = std::time::Instant::now();
                return Ok((rule.clone(), *chunk));
            }
        }
        // Parse outside the cache's view of time: the stamp taken before the
        // read is stored, so a change racing the read is seen next time.
        let (s, epoch) = self.read(bucket_dir)?;
        let chunk = s.chunk()?;
        entries.insert(
            bucket_dir.to_path_buf(),
            (
                stamp,
                epoch,
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
            if let Some((_, _, _, chunk, checked)) = entries.get(bucket_dir) {
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
        self.data_dir().join(name.as_str())
    }

    /// The bucket's directory, held open (resolved beneath the data
    /// directory, no symlink followed), or NoSuchBucket.
    pub fn bucket(&self, name: &BucketName) -> Result<Dir> {
        self.local.bucket(name)
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

    /// CreateBucket: the directory and its (default) settings file.
    pub fn create_bucket(&self, name: &BucketName) -> Result<()> {
        match fs::DirBuilder::new()
            .mode(0o755)
            .create(self.bucket_dir(name))
        {
            Ok(()) => self.init_bucket_settings(name),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::new(
                OssCode::BucketAlreadyExists,
                "The requested bucket name is not available.",
            )
            .resource(name.as_str())),
            Err(e) => Err(Error::io(name, e)),
        }
    }

    /// Gives a bucket directory just made (by `create_bucket` or a mkdir
    /// through the mount) its settings file, with the MAC every later read
    /// checks, and wide slots (FORMAT.md §3.1), which bound nonce reuse
    /// (§4.1). On failure the directory is removed again, rather than left
    /// as a bucket that fails every access.
    pub fn init_bucket_settings(&self, name: &BucketName) -> Result<()> {
        let d = self.bucket_dir(name);
        let s = BucketSettings {
            slot_format: Some(SlotFormat::Wide),
            ..BucketSettings::default()
        };
        self.write_settings(name, &s)
            .inspect_err(|_| {
                let _ = fs::remove_dir(&d);
            })
            .map_err(|e| e.resource(name.as_str()))
    }

    /// Buckets, sorted by name. Entries that are not valid bucket names
    /// (the state directory, stray files) are not buckets.
    pub fn list_buckets(&self) -> Result<Vec<BucketName>> {
        self.backend.list_buckets()
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
        // An empty bucket is deleted whatever its settings file holds (a
        // damaged one loses nothing); if the directory turns out not to be
        // empty after all, the file is put back as it was.
        let sp = d.join(BUCKET_SETTINGS);
        let saved = match fs::read(&sp) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(name, e)),
        };
        match fs::remove_file(&sp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(name, e)),
        }
        fs::remove_dir(&d).map_err(|e| {
            if let Some(b) = &saved {
                if let Err(r) = self.write_settings_file(name, b) {
                    tracing::error!(path = %sp.display(), "could not restore bucket settings: {r}");
                }
            }
            match e.raw_os_error() {
                Some(libc::ENOTEMPTY) => Error::new(
                    OssCode::BucketNotEmpty,
                    "The bucket you tried to delete is not empty.",
                )
                .resource(name.as_str()),
                _ => Error::io(name, e),
            }
        })?;
        // A stale anchor would be harmless (a new bucket of the name gets
        // its own), so a failure here does not undo the deletion.
        if let Err(e) = self.kms.forget_settings(name.as_str()) {
            tracing::warn!(
                bucket = name.as_str(),
                "could not drop the bucket's settings MAC from the keystore: {e}"
            );
        }
        Ok(())
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
        let mut s = self.settings.read(&d)?.0;
        s.encryption = Some(rule.clone());
        self.write_settings(name, &s)
    }

    /// GetBucketEncryption: NoSuchServerSideEncryptionRule when there is none.
    pub fn get_bucket_encryption(&self, p: &Principal, name: &BucketName) -> Result<SseConfig> {
        let d = self.existing_bucket(name)?;
        self.check_bucket_permission(p, name, &d, Action::OssGetBucketEncryption)?;
        self.settings.read(&d)?.0.encryption.ok_or_else(|| {
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
        let mut s = self.settings.read(&d)?.0;
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
        let mut s = self.settings.read(&d)?.0;
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

    /// Replaces a bucket's settings file: its new MAC allowed in the
    /// keystore first, then the file, then only the new MAC allowed.
    pub(super) fn write_settings(&self, name: &BucketName, s: &BucketSettings) -> Result<()> {
        let (text, tag) = self.settings.encode(&self.bucket_dir(name), s)?;
        self.kms.begin_settings_change(name.as_str(), &tag)?;
        self.write_settings_file(name, text.as_bytes())?;
        self.kms.end_settings_change(name.as_str(), &tag)
    }

    /// Replaces the bucket's settings file with `bytes`, as they are.
    fn write_settings_file(&self, name: &BucketName, bytes: &[u8]) -> Result<()> {
        let dir = self.bucket(name)?;
        self.write_atomic(&dir, OsStr::new(BUCKET_SETTINGS), bytes)
            .map_err(|e| e.resource(format!("{name}/{BUCKET_SETTINGS}")))
    }

    /// The upgrade of a data directory from before MACs: gives every
    /// bucket's settings file its MAC, trusting what it holds now (a
    /// missing file means the defaults, as it did). A file that already has
    /// one (an upgrade interrupted) must verify. Returns each bucket's MAC,
    /// for the keystore to hold (it cannot be written before its own MAC is
    /// added: `Kms::finish_upgrade`).
    pub(super) fn seal_legacy_settings(&self) -> Result<BTreeMap<String, String>> {
        let mut sealed = BTreeMap::new();
        for b in self.list_buckets()? {
            let d = self.bucket_dir(&b);
            let p = d.join(BUCKET_SETTINGS);
            let text = match fs::read_to_string(&p) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(Error::io(p.display(), e)),
            };
            if Stored::parse(&text, &p)?.mac.is_some() {
                let (_, mac) = self.settings.read_mac_only(&d)?;
                sealed.insert(b.as_str().to_string(), mac);
                continue;
            }
            let s = Stored::parse(&text, &p)?.settings();
            s.chunk().map_err(|e| e.resource(p.display().to_string()))?;
            let (text, mac) = self.settings.encode(&d, &s)?;
            self.write_settings_file(&b, text.as_bytes())?;
            sealed.insert(b.as_str().to_string(), mac);
        }
        Ok(sealed)
    }
}
