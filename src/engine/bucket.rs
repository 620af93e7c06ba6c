//! Buckets, each with a settings record (`BUCKET/.ssefs-bucket.toml`
//! locally) holding its default encryption rule and its chunk size.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::Engine;
use crate::backend::{Dir, State, StateStore, Version};
use crate::error::{Error, OssCode, Result};
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
    /// `shown` names the record in errors.
    fn parse(bytes: &[u8], shown: &str) -> Result<Stored> {
        let unreadable = |why: String| {
            Error::new(
                OssCode::InternalError,
                format!("bucket settings unreadable: {why}"),
            )
            .resource(shown)
        };
        let text = std::str::from_utf8(bytes).map_err(|_| unreadable("not UTF-8".into()))?;
        toml::from_str::<Stored>(text).map_err(|e| unreadable(e.to_string()))
    }

    fn settings(&self) -> BucketSettings {
        BucketSettings {
            encryption: self.encryption.clone(),
            chunk_size: self.chunk_size,
            slot_format: self.slot_format,
        }
    }
}

/// The MAC input besides the bucket's name: the settings' TOML as ssefs
/// writes it, without the `mac` line.
fn body(s: &BucketSettings) -> Result<String> {
    toml::to_string(s).map_err(|e| Error::new(OssCode::InternalError, e.to_string()))
}

/// The integrity error for a settings record that is not as ssefs wrote it.
fn tampered(shown: &str, why: &str) -> Error {
    Error::integrity(format!(
        "bucket settings {shown} {why}: changed outside ssefs? Nothing is written to the bucket until the file is restored from a backup (an empty bucket can be deleted and made again)"
    ))
    .resource(shown)
}

/// One bucket's settings as last parsed: the version of the record they
/// came from, the keystore epoch of the check against the keystore's
/// anchor, the rule, the chunk size, and when the version was last checked.
type Parsed = (
    Version,
    u64,
    Option<SseConfig>,
    ChunkSize,
    std::time::Instant,
);

/// How long `chunk_recent` trusts a checked entry without a stat. Sizes in
/// `ls -l` may lag a change of an empty bucket's chunk size by this much
/// (an object created by the mount re-checks first, and refreshes it).
const RECENT: std::time::Duration = std::time::Duration::from_secs(1);

/// Bucket settings as last parsed, per bucket. Every object creation needs
/// its bucket's rule, and every stat of an object its bucket's chunk size;
/// asking the record's version (a stat locally) is far cheaper than
/// reading and parsing it, and still sees changes made by the CLI or
/// another mount at once.
pub(super) struct SettingsCache {
    /// Holds each bucket's current settings MAC (the anchor).
    kms: Arc<Kms>,
    /// Where the settings records are.
    states: Arc<dyn StateStore>,
    /// Authenticates every settings record (bound to its bucket's name).
    key: MacKey,
    entries: Mutex<HashMap<BucketName, Parsed>>,
}

impl SettingsCache {
    pub(super) fn new(kms: Arc<Kms>, states: Arc<dyn StateStore>) -> SettingsCache {
        SettingsCache {
            key: kms.policy_mac_key(MacPurpose::BucketSettings),
            kms,
            states,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn shown(&self, b: &BucketName) -> String {
        self.states.state_shown(State::BucketSettings(b))
    }

    /// Reads a bucket's settings and checks their MAC and that it is the
    /// one the keystore holds for the bucket. Every bucket has a settings
    /// file (made with it, or at the upgrade): a missing, empty, edited,
    /// copied or older one is an integrity error, never the defaults.
    /// Returns the keystore epoch of the check too.
    pub(super) fn read(&self, b: &BucketName) -> Result<(BucketSettings, u64)> {
        let (s, mac) = self.read_mac_only(b)?;
        let (mut allowed, mut epoch) = self.kms.settings_anchor(b.as_str())?;
        if !allowed.contains(&mac) {
            // Settings newer than the keystore we trust (a store mount
            // trusts its version for a while, and another host changed
            // both): read the keystore again before calling them tampered.
            self.states.forget_versions();
            (allowed, epoch) = self.kms.settings_anchor(b.as_str())?;
        }
        if !allowed.contains(&mac) {
            return Err(tampered(
                &self.shown(b),
                "is not the bucket's current one (an older copy written back?)",
            ));
        }
        Ok((s, epoch))
    }

    /// `read` without the keystore's anchor (for the upgrade, which makes
    /// the anchors): the settings and their MAC.
    fn read_mac_only(&self, b: &BucketName) -> Result<(BucketSettings, String)> {
        let shown = self.shown(b);
        let Some((bytes, _)) = self.states.get_state(State::BucketSettings(b))? else {
            return Err(tampered(&shown, "is missing"));
        };
        let stored = Stored::parse(&bytes, &shown)?;
        let Some(mac) = &stored.mac else {
            return Err(tampered(&shown, "has no MAC"));
        };
        let s = stored.settings();
        self.key
            .verify_hex(&[b.as_str().as_bytes(), body(&s)?.as_bytes()], mac)
            .map_err(|_| tampered(&shown, "fails authentication"))?;
        s.chunk().map_err(|e| e.resource(shown.clone()))?;
        Ok((s, mac.clone()))
    }

    /// The record `read` accepts for `s` in bucket `b` (once the keystore
    /// holds its MAC), and that MAC.
    pub(super) fn encode(&self, b: &BucketName, s: &BucketSettings) -> Result<(String, String)> {
        let mac = self
            .key
            .tag_hex(&[b.as_str().as_bytes(), body(s)?.as_bytes()]);
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
    pub(super) fn get(&self, b: &BucketName) -> Result<(Option<SseConfig>, ChunkSize)> {
        let Some(version) = self.states.state_version(State::BucketSettings(b))? else {
            return Err(tampered(&self.shown(b), "is missing"));
        };
        // One stat of the keystore: its anchor for the bucket may have
        // changed (the epoch says whether anything in it did).
        let (_, epoch) = self.kms.settings_anchor("")?;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((v, e, rule, chunk, checked)) = entries.get_mut(b) {
            if *v == version && *e == epoch {
                *checked = std::time::Instant::now();
                return Ok((rule.clone(), *chunk));
            }
        }
        // The version taken before the read is stored, so a change racing
        // the read is seen next time.
        let (s, epoch) = self.read(b)?;
        let chunk = s.chunk()?;
        entries.insert(
            b.clone(),
            (
                version,
                epoch,
                s.encryption.clone(),
                chunk,
                std::time::Instant::now(),
            ),
        );
        Ok((s.encryption, chunk))
    }

    /// The bucket's current rule.
    pub(super) fn rule(&self, b: &BucketName) -> Result<Option<SseConfig>> {
        self.get(b).map(|(r, _)| r)
    }

    /// The bucket's current chunk size.
    pub(super) fn chunk(&self, b: &BucketName) -> Result<ChunkSize> {
        self.get(b).map(|(_, c)| c)
    }

    /// The bucket's chunk size as checked within the last second, else
    /// checked now. For stat and lookups, which would otherwise pay a stat
    /// of the settings file each (`ls -lR` is one per object).
    pub(super) fn chunk_recent(&self, b: &BucketName) -> Result<ChunkSize> {
        {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, _, _, chunk, checked)) = entries.get(b) {
                if checked.elapsed() < RECENT {
                    return Ok(*chunk);
                }
            }
        }
        self.chunk(b)
    }
}

impl Engine {
    pub fn bucket_dir(&self, name: &BucketName) -> PathBuf {
        self.data_dir().join(name.as_str())
    }

    /// The bucket's directory, held open (resolved beneath the data
    /// directory, no symlink followed), or NoSuchBucket.
    pub fn bucket(&self, name: &BucketName) -> Result<Dir> {
        self.local()?.bucket(name)
    }

    /// NoSuchBucket unless the bucket exists.
    pub fn check_bucket(&self, name: &BucketName) -> Result<()> {
        self.backend.bucket_owner(name).map(|_| ())
    }

    /// CreateBucket: the bucket and its (default) settings.
    pub fn create_bucket(&self, name: &BucketName) -> Result<()> {
        self.backend.create_bucket(name)?;
        self.init_bucket_settings(name)
    }

    /// Gives a bucket just made (by `create_bucket` or a mkdir through the
    /// mount) its settings, with the MAC every later read checks, and wide
    /// slots (FORMAT.md §3.1), which bound nonce reuse (§4.1). On failure
    /// the bucket is removed again, rather than left as a bucket that fails
    /// every access.
    pub fn init_bucket_settings(&self, name: &BucketName) -> Result<()> {
        let s = BucketSettings {
            slot_format: Some(SlotFormat::Wide),
            ..BucketSettings::default()
        };
        self.write_settings(name, &s)
            .inspect_err(|_| {
                let _ = self.backend.delete_bucket(name);
            })
            .map_err(|e| e.resource(name.as_str()))
    }

    /// Buckets, sorted by name. Entries that are not valid bucket names
    /// (the state directory, stray files) are not buckets.
    pub fn list_buckets(&self) -> Result<Vec<BucketName>> {
        self.backend.list_buckets()
    }

    /// Removes an empty bucket (its settings do not count): whatever its
    /// settings hold, a damaged record loses nothing.
    pub fn delete_bucket(&self, name: &BucketName) -> Result<()> {
        self.backend.delete_bucket(name)?;
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
        action: Action,
    ) -> Result<()> {
        let owner = self.backend.bucket_owner(name)?;
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
        self.check_bucket_permission(p, name, Action::OssPutBucketEncryption)?;
        let mut s = self.settings.read(name)?.0;
        s.encryption = Some(rule.clone());
        self.write_settings(name, &s)
    }

    /// GetBucketEncryption: NoSuchServerSideEncryptionRule when there is none.
    pub fn get_bucket_encryption(&self, p: &Principal, name: &BucketName) -> Result<SseConfig> {
        self.check_bucket_permission(p, name, Action::OssGetBucketEncryption)?;
        self.settings.read(name)?.0.encryption.ok_or_else(|| {
            Error::new(
                OssCode::NoSuchServerSideEncryptionRule,
                "The server side encryption configuration was not found",
            )
            .resource(name.as_str())
        })
    }

    /// DeleteBucketEncryption: succeeds whether or not a rule exists (204).
    pub fn delete_bucket_encryption(&self, p: &Principal, name: &BucketName) -> Result<()> {
        self.check_bucket_permission(p, name, Action::OssDeleteBucketEncryption)?;
        let mut s = self.settings.read(name)?.0;
        if s.encryption.is_none() {
            return Ok(());
        }
        s.encryption = None;
        self.write_settings(name, &s)
    }

    /// The rule in force for new objects, without a permission check (used
    /// when writing objects).
    pub fn bucket_rule(&self, name: &BucketName) -> Result<Option<SseConfig>> {
        self.settings.rule(name)
    }

    /// The chunk size of the bucket's objects, without a permission check
    /// or an existence check (used on every stat of an object: a missing
    /// bucket has no objects to show anyway).
    pub fn chunk_size_at(&self, bucket: &BucketName) -> Result<ChunkSize> {
        self.settings.chunk(bucket)
    }

    /// `chunk_size_at` as checked within the last second: for the sizes
    /// stat and lookups show, which would otherwise pay a stat of the
    /// settings file each. Writers use `chunk_size_at`.
    pub fn chunk_size_for_stat(&self, bucket: &BucketName) -> Result<ChunkSize> {
        self.settings.chunk_recent(bucket)
    }

    /// The chunk size of the bucket's objects.
    pub fn bucket_chunk_size(&self, name: &BucketName) -> Result<ChunkSize> {
        self.settings
            .chunk(name)
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
        self.check_bucket_permission(p, name, Action::OssPutBucketEncryption)?;
        let mut s = self.settings.read(name)?.0;
        if s.chunk()?.bytes() == chunk.bytes() {
            return Ok(());
        }
        if !self.backend.bucket_is_empty(name)? {
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
        let (text, tag) = self.settings.encode(name, s)?;
        self.kms.begin_settings_change(name.as_str(), &tag)?;
        self.write_settings_file(name, text.as_bytes())?;
        self.kms.end_settings_change(name.as_str(), &tag)
    }

    /// Replaces the bucket's settings record with `bytes`, as they are.
    fn write_settings_file(&self, name: &BucketName, bytes: &[u8]) -> Result<()> {
        self.backend
            .update_state(State::BucketSettings(name), &mut |_| {
                Ok(Some(bytes.to_vec()))
            })?;
        Ok(())
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
            let shown = self.backend.state_shown(State::BucketSettings(&b));
            let bytes = self
                .backend
                .get_state(State::BucketSettings(&b))?
                .map(|(bytes, _)| bytes)
                .unwrap_or_default();
            let stored = Stored::parse(&bytes, &shown)?;
            if stored.mac.is_some() {
                let (_, mac) = self.settings.read_mac_only(&b)?;
                sealed.insert(b.as_str().to_string(), mac);
                continue;
            }
            let s = stored.settings();
            s.chunk().map_err(|e| e.resource(shown.clone()))?;
            let (text, mac) = self.settings.encode(&b, &s)?;
            self.write_settings_file(&b, text.as_bytes())?;
            sealed.insert(b.as_str().to_string(), mac);
        }
        Ok(sealed)
    }
}
