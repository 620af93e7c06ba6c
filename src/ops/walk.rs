//! Listing a bucket's objects on the backend.

use std::fs;
use std::path::{Path, PathBuf};

use crate::engine::Engine;
use crate::error::{IoContext, Result};
use crate::oss::BucketName;

/// One object file found on the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    pub path: PathBuf,
    /// `BUCKET/KEY`, as messages and the summary show it.
    pub name: String,
    /// Its bucket, whose chunk size it must have.
    pub bucket: BucketName,
}

impl ObjectEntry {
    /// An empty backend file: the mount died between creating (or
    /// truncating) the object and writing its header (FORMAT.md §1). The
    /// mount reads it as an empty object and gives it a header at its first
    /// write, so there is nothing to verify, re-encrypt or re-wrap.
    pub fn headerless(&self) -> bool {
        fs::symlink_metadata(&self.path).is_ok_and(|m| m.len() == 0)
    }
}

/// The objects of `bucket` whose key starts with `prefix` (an OSS prefix: a
/// plain string prefix, not a directory), sorted by key. Skips our own
/// files (names starting with `.ssefs`), symlinks and anything that is not a
/// regular file; never follows symlinks into other trees.
pub fn objects(
    engine: &Engine,
    bucket: &BucketName,
    prefix: Option<&str>,
) -> Result<Vec<ObjectEntry>> {
    let dir = engine.existing_bucket(bucket)?;
    let mut keys = Vec::new();
    collect(&dir, "", &mut keys)?;
    keys.retain(|(k, _)| prefix.is_none_or(|p| k.starts_with(p)));
    keys.sort();
    Ok(keys
        .into_iter()
        .map(|(k, path)| ObjectEntry {
            path,
            name: format!("{bucket}/{k}"),
            bucket: bucket.clone(),
        })
        .collect())
}

fn collect(dir: &Path, rel: &str, out: &mut Vec<(String, PathBuf)>) -> Result<()> {
    for e in fs::read_dir(dir).ctx(dir.display())? {
        let e = e.ctx(dir.display())?;
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            // Object keys are UTF-8; anything else was not made by ssefs.
            continue;
        };
        if name.starts_with(".ssefs") {
            continue;
        }
        // DirEntry::file_type does not follow symlinks.
        let t = e.file_type().ctx(e.path().display())?;
        let key = format!("{rel}{name}");
        if t.is_dir() {
            collect(&e.path(), &format!("{key}/"), out)?;
        } else if t.is_file() {
            out.push((key, e.path()));
        }
    }
    Ok(())
}

/// The buckets an operation covers: one, or all.
pub(crate) fn buckets(engine: &Engine, bucket: Option<&BucketName>) -> Result<Vec<BucketName>> {
    match bucket {
        Some(b) => {
            engine.existing_bucket(b)?;
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
