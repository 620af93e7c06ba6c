//! Where objects live: the seam between the engine and its storage, and the
//! local backend behind it.
//!
//! [`Backend`] speaks of buckets, keys, versions and staged writes, never of
//! paths, so that the same engine can later keep its objects on an
//! S3-compatible store (docs/design/s3-backend.md, issue 14). The data
//! directory is its first implementation, [`PosixBackend`]. The mount's
//! fast path (`crate::fs`) does not go through the trait: it works on the
//! backend files themselves, by descriptor, as it always has.
//!
//! The local backend is reached only through descriptors. The daemon runs
//! as root and serves users who may rename directories and plant symlinks
//! through the mount while it works. So nothing here takes a path below the
//! data directory and hands it to the kernel whole: names are resolved
//! relative to directory descriptors that are held open, with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (or `O_NOFOLLOW` one
//! component at a time on kernels without it), and whole files are replaced
//! by an exchange against the parent descriptor that checks the identity
//! (device and inode) of what it replaced ([`Dir::replace`]). docs/SECURITY.md
//! §"Local users attacking the root daemon" lists what this guarantees and
//! the tests that show it.
//!
//! [`strict`] holds the other half: refusing a data directory, state
//! directory or key file that someone else could swap or write.

mod dir;
mod posix;
pub mod s3;
mod slots;
mod state;
pub mod strict;
pub mod xattr;

use std::ffi::OsString;
use std::fs::File;

use nix::fcntl::Flock;

use crate::error::Result;
use crate::oss::{BucketName, SseConfig};

pub use dir::{Dir, Ident};
pub use posix::{
    apply_meta, open_regular, posix_meta, read_override, write_override, PosixBackend,
    OVERRIDE_XATTR, REPLACES_XATTR, STATE_DIR,
};
pub use slots::SlotIo;
pub use state::{State, StateDir, StateStore, Update, BUCKET_SETTINGS, GRANTS_FILE, KEYSTORE_FILE};

/// Where an object is: its bucket and its key (an OSS key, `/`-separated,
/// already checked by `oss::ObjectKey` or found by a listing).
#[derive(Clone, Copy, Debug)]
pub struct Loc<'a> {
    pub bucket: &'a BucketName,
    pub key: &'a str,
}

impl Loc<'_> {
    /// `BUCKET/KEY`, as messages show it.
    pub fn shown(&self) -> String {
        format!("{}/{}", self.bucket, self.key)
    }
}

/// One version of an object. Locally the backend file's identity and what
/// a rewrite changes (size, mtime, ctime): a version read earlier that
/// differs from the present one means the object was written or replaced
/// in between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Version {
    Local {
        id: Ident,
        size: u64,
        mtime: (i64, i64),
        ctime: (i64, i64),
    },
    /// On a store: the ETag, as the store sent it.
    ETag(String),
}

/// The precondition of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    /// Whatever is there is replaced.
    Any,
    /// Only if nothing is there (PreconditionFailed otherwise).
    Absent,
    /// Only while the object is still this version (PreconditionFailed
    /// otherwise): a rewrite never overwrites what someone wrote meanwhile.
    Is(Version),
}

impl Cond {
    /// Whether the condition holds over `now`, the version there now (None:
    /// no object). FileAlreadyExists or PreconditionFailed, naming `shown`,
    /// when it does not.
    pub(crate) fn check(&self, now: Option<&Version>, shown: &str) -> Result<()> {
        match (self, now) {
            (Cond::Any, _) | (Cond::Absent, None) => Ok(()),
            (Cond::Absent, Some(_)) => Err(already_exists(shown)),
            (Cond::Is(v), Some(n)) if v == n => Ok(()),
            (Cond::Is(_), _) => Err(changed_since_read(shown)),
        }
    }
}

/// OSS's error for a create over an existing object.
pub(crate) fn already_exists(shown: &str) -> crate::error::Error {
    crate::error::Error::new(
        crate::error::OssCode::FileAlreadyExists,
        "The object you specified already exists and can not be overwritten.",
    )
    .resource(shown)
}

/// A write conditioned on the version read found another one there.
pub(crate) fn changed_since_read(shown: &str) -> crate::error::Error {
    crate::error::Error::new(
        crate::error::OssCode::PreconditionFailed,
        "the object was written, replaced or removed since it was read; it was left as it is now",
    )
    .resource(shown)
}

/// All of an object but its bytes that a write carries. `None` and empty
/// fields leave the staged file as it is (mode 0644, owned by the writer,
/// times of the write).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjMeta {
    /// Permission bits (`& 0o7777`).
    pub mode: Option<u32>,
    /// (uid, gid).
    pub owner: Option<(u32, u32)>,
    /// (atime, mtime), each (seconds, nanoseconds).
    pub times: Option<[(i64, i64); 2]>,
    /// User metadata: `user.*` xattrs, never ssefs's own `user.ssefs.*`.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The object's encryption override (request headers that won over
    /// its bucket's rule), kept so that rewrites keep using it.
    pub sse_override: Option<SseConfig>,
    /// When the object or its metadata last changed through a store mount
    /// (the store's own time has whole seconds only); None elsewhere.
    pub ctime: Option<(i64, i64)>,
}

/// An object found for reading: the version found, its stored length, and
/// where it is. Every read goes to that version, never to a newer one.
#[derive(Debug)]
pub struct Found {
    pub version: Version,
    /// Stored bytes (header and sealed chunks), 0 for an object created
    /// empty through the mount, which has no header yet (FORMAT.md §1).
    pub len: u64,
    pub(crate) at: Place,
}

/// Where a found object is.
#[derive(Debug)]
pub(crate) enum Place {
    Local(LocalPlace),
    /// Downloaded whole from a store into an unnamed local file, with its
    /// verified metadata and its store path.
    Store {
        file: File,
        meta: ObjMeta,
        key: String,
    },
}

/// A found object on the local backend: the directory it is in (held), its
/// name there, and its file, open for reading.
#[derive(Debug)]
pub struct LocalPlace {
    pub dir: Dir,
    pub leaf: OsString,
    pub file: File,
}

impl Found {
    /// The stored bytes, open for reading.
    pub fn file(&self) -> &File {
        match &self.at {
            Place::Local(l) => &l.file,
            Place::Store { file, .. } => file,
        }
    }

    /// Where it is on the local backend (None: on a store).
    pub fn place(&self) -> Option<&LocalPlace> {
        match &self.at {
            Place::Local(l) => Some(l),
            Place::Store { .. } => None,
        }
    }

    /// The stored bytes, open for reading, for an object opened over them.
    pub fn into_file(self) -> File {
        match self.at {
            Place::Local(l) => l.file,
            Place::Store { file, .. } => file,
        }
    }

    /// An object downloaded from a store.
    pub(crate) fn stored(
        version: Version,
        len: u64,
        file: File,
        meta: ObjMeta,
        key: String,
    ) -> Found {
        Found {
            version,
            len,
            at: Place::Store { file, meta, key },
        }
    }

    /// A store object's verified metadata.
    pub(crate) fn stored_meta(&self) -> Option<&ObjMeta> {
        match &self.at {
            Place::Store { meta, .. } => Some(meta),
            Place::Local(_) => None,
        }
    }

    /// A store object's path in the store.
    pub(crate) fn stored_key(&self) -> Option<&str> {
        match &self.at {
            Place::Store { key, .. } => Some(key),
            Place::Local(_) => None,
        }
    }

    /// Nothing stored: an object created empty through the mount, which
    /// writes the header with the first byte, or one the mount died between
    /// truncating and writing its header (FORMAT.md §1). It reads as an
    /// empty object; there is nothing to verify, re-encrypt or re-wrap.
    pub fn headerless(&self) -> bool {
        self.len == 0
    }
}

/// An object opened for one front-to-back read (GetObject): the version
/// and stored length found, and its bytes, which on a store may still be
/// arriving (reads wait for them).
pub struct Fetched {
    pub version: Version,
    pub len: u64,
    pub slots: Box<dyn SlotIo>,
}

/// A whole-object write in progress: a local file that nothing else sees
/// until [`Backend::commit`] makes it the object, or [`Backend::discard`]
/// drops it.
#[derive(Debug)]
pub struct Staged {
    pub file: File,
    pub(crate) name: OsString,
    /// On a store: the upload that began while the bytes were written.
    pub(crate) early: Option<s3::EarlyUpload>,
}

impl Staged {
    /// The staged bytes before `off` will not change again: a writer
    /// appending front to back says so as it goes, and a store may send
    /// them already.
    pub fn settled(&self, off: u64) {
        if let Some(u) = &self.early {
            u.settled(off);
        }
    }
}

/// An object kept for a rewrite: writers through a mount stay out of it
/// until this is dropped (after the rewrite took its place). Locally an
/// exclusive flock(2) on the object's file, which the daemon holds shared
/// while the object is open for writing.
pub struct Claim {
    /// None on a store, where a rewrite's commit checks the version instead.
    _lock: Option<Flock<File>>,
}

/// One page of a listing: keys in byte order, and the key to continue
/// after (`None`: the last page).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub keys: Vec<String>,
    pub next: Option<String>,
}

/// What a backend can do, for the callers that must choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// `Cond::Absent` and `Cond::Is` are enforced by the backend itself.
    pub conditional: bool,
    /// Writers through a mount hold a lock that a rewrite can test
    /// (`walk::claim`).
    pub claims: bool,
    /// Objects are files in a directory tree that a mount serves directly.
    pub posix_tree: bool,
}

/// Object storage, as the engine needs it, with ssefs's own records
/// beside the objects ([`StateStore`]). Every method names objects by
/// bucket and key; errors carry the OSS code (NoSuchBucket, NoSuchKey,
/// PreconditionFailed, ...) and `Loc::shown`.
pub trait Backend: StateStore {
    /// What it is, for messages and `ssefs status`: the data directory's
    /// path for the local backend.
    fn describe(&self) -> String;

    fn caps(&self) -> Caps;

    /// Gives the backend the key that authenticates object metadata it
    /// keeps apart from the objects (a store's records, FORMAT.md §9),
    /// once the KMS is open. Local metadata is the files' own.
    /// (K_meta of FORMAT.md §9.2, derived by the KMS from the root key.)
    fn use_meta_key(&self, _key: crate::crypto::SecretKey) {}

    /// Bucket names, sorted. Anything else at the top (the state, stray
    /// files, names that are not bucket names) is not a bucket.
    fn list_buckets(&self) -> Result<Vec<BucketName>>;

    /// CreateBucket: a new, empty bucket, without settings (the engine
    /// writes them next). BucketAlreadyExists if the name is taken.
    fn create_bucket(&self, b: &BucketName) -> Result<()>;

    /// DeleteBucket: removes the bucket and its settings if it holds
    /// nothing else (BucketNotEmpty otherwise, and nothing changes).
    fn delete_bucket(&self, b: &BucketName) -> Result<()>;

    /// Whether the bucket holds nothing but its settings. An empty
    /// directory (or directory record) is something.
    fn bucket_is_empty(&self, b: &BucketName) -> Result<bool>;

    /// Who owns the bucket: the uid its owner-only permissions go to.
    fn bucket_owner(&self, b: &BucketName) -> Result<u32>;

    /// The object at `at`, open for reading. NoSuchBucket, or NoSuchKey when
    /// there is no object there (nothing, a directory, a symlink, or a
    /// symlink on the way).
    fn find(&self, at: Loc<'_>) -> Result<Found>;

    /// The object at `at` for one read, front to back: as `find`, but a
    /// store hands it out while it arrives, so that decryption overlaps
    /// the download.
    fn fetch(&self, at: Loc<'_>) -> Result<Fetched> {
        let f = self.find(at)?;
        Ok(Fetched {
            version: f.version.clone(),
            len: f.len,
            slots: Box::new(f.into_file()),
        })
    }

    /// The metadata of a found object, as a write would carry it on
    /// (`Backend::commit`), with its encryption override.
    fn meta(&self, f: &Found) -> Result<ObjMeta>;

    /// Up to `max` keys of `bucket` that start with `prefix`, in byte
    /// order, after `after`. ssefs's own names (`.ssefs*`) are never listed.
    fn list(
        &self,
        bucket: &BucketName,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Page>;

    /// A new, empty staged write; `shown` names it in errors.
    fn stage(&self, shown: &str) -> Result<Staged>;

    /// `stage` for a whole new object bound for `at` with `meta`, written
    /// front to back and committed there with `Cond::Any`: a store begins
    /// uploading the bytes as they settle (`Staged::settled`).
    fn stage_for(&self, at: Loc<'_>, _meta: &ObjMeta) -> Result<Staged> {
        self.stage(&at.shown())
    }

    /// The encryption override of a found object (request headers that
    /// won over its bucket's rule), alone: cheaper than `meta`.
    fn sse_override(&self, f: &Found, shown: &str) -> Result<Option<SseConfig>>;

    /// Makes the staged bytes, with `meta`, the object at `at`, if `cond`
    /// holds; durable when it returns. The staged write is used up either
    /// way.
    fn commit(&self, s: Staged, at: Loc<'_>, meta: &ObjMeta, cond: Cond) -> Result<Version>;

    /// Makes the staged bytes, with `meta`, the object found as `f`, only
    /// while it is still the version found (PreconditionFailed otherwise,
    /// and nothing changes); durable when it returns. Locally it takes the
    /// name `f` was found under, in the directory held since: whatever
    /// users rename meanwhile, nothing else is touched. The staged write
    /// is used up either way; `shown` names the object in errors.
    fn replace(&self, s: Staged, f: &Found, meta: &ObjMeta, shown: &str) -> Result<Version>;

    /// Drops a staged write that will not be committed.
    fn discard(&self, s: Staged);

    /// Claims the object found as `f` for a rewrite, without waiting.
    /// `None` when it is busy: open for writing through a mount, being
    /// rewritten by another operation, or replaced since it was found.
    fn claim(&self, f: &Found, shown: &str) -> Result<Option<Claim>>;

    /// Removes the object at `at` if `cond` holds (NoSuchKey if absent).
    fn delete(&self, at: Loc<'_>, cond: Cond) -> Result<()>;
}

#[cfg(test)]
mod contract;
