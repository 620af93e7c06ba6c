//! Listing a bucket's objects through the backend (which, locally, walks
//! directory descriptors: users of a mount may rename directories and plant
//! symlinks while a walk runs, and nothing they do can lead it outside the
//! bucket), and claiming one for a rewrite.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::backend::{Dir, Ident};
use crate::engine::Engine;
use crate::error::{Error, IoContext, Result};
use crate::oss::BucketName;

/// One object file found on the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    /// Its key: its path below the bucket directory.
    pub key: String,
    /// `BUCKET/KEY`, as messages and the summary show it.
    pub name: String,
    /// Its bucket, whose chunk size it must have.
    pub bucket: BucketName,
}

/// An object found again for work on it: the directory it is in (held),
/// its name there, and its backend file, open for reading.
pub struct Found {
    pub dir: Dir,
    pub leaf: OsString,
    pub file: File,
}

impl Found {
    /// An empty backend file: an object created empty through the mount
    /// (its header comes with its first byte), or one the mount died
    /// between truncating and writing its header (FORMAT.md §1). The mount
    /// reads it as an empty object and gives it a header at its first
    /// write, so there is nothing to verify, re-encrypt or re-wrap.
    pub fn headerless(&self) -> bool {
        self.file.metadata().is_ok_and(|m| m.len() == 0)
    }
}

impl ObjectEntry {
    /// Opens the object again, beneath its bucket with no symlink followed
    /// (it may have been renamed, replaced or removed since the listing).
    pub fn find(&self, engine: &Engine) -> Result<Found> {
        let l = engine.find_object(&self.bucket, &self.key)?.into_local();
        Ok(Found {
            dir: l.dir,
            leaf: l.leaf,
            file: l.file,
        })
    }
}

/// Keys asked of the backend at a time: all of them, as the caller wants
/// them all; a backend with pages of its own (a store) loops over them.
const PAGE: usize = usize::MAX;

/// The objects of `bucket` whose key starts with `prefix` (an OSS prefix: a
/// plain string prefix, not a directory), sorted by key. ssefs's own files
/// (names starting with `.ssefs`), symlinks and anything that is not a
/// regular file are not objects.
pub fn objects(
    engine: &Engine,
    bucket: &BucketName,
    prefix: Option<&str>,
) -> Result<Vec<ObjectEntry>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = engine
            .backend()
            .list(bucket, prefix.unwrap_or(""), after.as_deref(), PAGE)?;
        out.extend(page.keys.into_iter().map(|key| ObjectEntry {
            name: format!("{bucket}/{key}"),
            key,
            bucket: bucket.clone(),
        }));
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
}

/// The buckets an operation covers: one, or all.
pub(crate) fn buckets(engine: &Engine, bucket: Option<&BucketName>) -> Result<Vec<BucketName>> {
    match bucket {
        Some(b) => {
            engine.bucket(b)?;
            Ok(vec![b.clone()])
        }
        None => engine.list_buckets(),
    }
}

/// The objects of the given buckets (all when `None`).
pub(crate) fn all_objects(
    engine: &Engine,
    bucket: Option<&BucketName>,
) -> Result<Vec<ObjectEntry>> {
    let mut out = Vec::new();
    for b in buckets(engine, bucket)? {
        out.extend(objects(engine, &b, None)?);
    }
    Ok(out)
}

/// An exclusive flock(2) on an object's backend file, held while an
/// operation replaces the file; released on drop (after the rename, it
/// locks the old file, which no one can open by name any more).
pub(crate) struct Claim {
    _lock: Flock<File>,
}

/// Claims the object `found` for replacement without waiting. `None` when
/// it is busy: open for writing through a mount (the daemon holds a shared
/// lock), being replaced by another operation, or replaced since the caller
/// opened it.
pub(crate) fn claim(found: &Found, name: &str) -> Result<Option<Claim>> {
    // A second descriptor of the same open file: the lock lives as long as
    // the claim, whatever the caller does with its own.
    let mut f = found.file.try_clone().ctx(name)?;
    let lock = loop {
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => break l,
            Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
            Err((g, Errno::EINTR)) => f = g,
            Err((_, e)) => return Err(Error::io(format!("locking {name}"), io::Error::from(e))),
        }
    };
    // The lock must be on the file that has the name now.
    let held = Ident::of_fd(lock.as_fd()).ctx(name)?;
    let now = found.dir.stat(&found.leaf).ctx(name)?;
    if held != Ident::of(&now) {
        return Ok(None);
    }
    Ok(Some(Claim { _lock: lock }))
}
