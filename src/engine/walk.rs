//! Listing a bucket's objects through the backend (which, locally, walks
//! directory descriptors: users of a mount may rename directories and plant
//! symlinks while a walk runs, and nothing they do can lead it outside the
//! bucket).

use crate::backend::Found;
use crate::engine::Engine;
use crate::error::Result;
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

impl ObjectEntry {
    /// Opens the object again, beneath its bucket with no symlink followed
    /// (it may have been renamed, replaced or removed since the listing).
    pub fn find(&self, engine: &Engine) -> Result<Found> {
        engine.find_object(&self.bucket, &self.key)
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
            engine.check_bucket(b)?;
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
