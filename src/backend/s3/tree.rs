//! The store as a tree, for a mount (`crate::fs::store`): directories are
//! prefixes, a directory's own metadata is the record of an empty object
//! `DIR/.ssefs-dir`, and a symlink is an empty object whose record holds
//! its target (FORMAT.md §9.3). Every ssefs object has at least its
//! 128-byte header, so a listing tells objects from the rest by size.

use std::time::SystemTime;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, GetRange, ObjectStoreExt, PutOptions,
    PutPayload,
};

use super::meta::{self, Shape};
use super::{etag, meta_attr, S3Backend};
use crate::backend::{Cond, ObjMeta, Staged, Version};
use crate::error::{Error, OssCode, Result};
use crate::format::{Header, HEADER_LEN};
use crate::oss::BucketName;

/// A HEAD request's options.
fn head() -> GetOptions {
    GetOptions {
        head: true,
        ..GetOptions::default()
    }
}

/// A directory's record, beside its entries.
pub const DIR_RECORD: &str = ".ssefs-dir";

/// What a listing says an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// An object: at least a header.
    File,
    /// Empty on the store: a symlink (or an object that never got a header,
    /// migrated from a data directory); its record says which.
    Empty,
}

/// One name in a directory's listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
    /// Stored bytes (0 for a directory).
    pub len: u64,
}

/// A store object found by HEAD, its record verified.
#[derive(Clone, Debug)]
pub struct Stat {
    pub version: Version,
    /// Stored bytes.
    pub len: u64,
    /// When the store last wrote it (an upload or a metadata change).
    pub modified: SystemTime,
    pub meta: ObjMeta,
    pub shape: Shape,
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

impl S3Backend {
    /// The store path of `rel` in bucket `b` (a key or a directory).
    fn tree_path(&self, b: &BucketName, rel: &str) -> Result<StorePath> {
        if rel.is_empty() {
            self.path(b.as_str())
        } else {
            self.path(&format!("{b}/{rel}"))
        }
    }

    /// The entries of directory `dir` (`""`: the bucket's top), all pages,
    /// ssefs's own names left out.
    pub fn list_dir(&self, b: &BucketName, dir: &str) -> Result<Vec<Entry>> {
        let p = self.tree_path(b, dir)?;
        let shown = format!("{b}/{dir}");
        let listed = self.call(&shown, |s| {
            let p = p.clone();
            async move { s.list_with_delimiter(Some(&p)).await }
        })?;
        let mut out = Vec::with_capacity(listed.objects.len() + listed.common_prefixes.len());
        for d in &listed.common_prefixes {
            let Some(name) = d.filename() else { continue };
            if name.starts_with(".ssefs") {
                continue;
            }
            out.push(Entry {
                name: name.to_owned(),
                kind: EntryKind::Dir,
                len: 0,
            });
        }
        for o in &listed.objects {
            let Some(name) = o.location.filename() else {
                continue;
            };
            if name.starts_with(".ssefs") {
                continue;
            }
            out.push(Entry {
                name: name.to_owned(),
                kind: if o.size == 0 {
                    EntryKind::Empty
                } else {
                    EntryKind::File
                },
                len: o.size,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Whether anything at all is below directory `dir` (its own record
    /// included): one listing of at most a page.
    pub fn dir_has_any(&self, b: &BucketName, dir: &str) -> Result<bool> {
        let p = self.tree_path(b, dir)?;
        let shown = format!("{b}/{dir}");
        self.call(&shown, |s| {
            let p = p.clone();
            async move { Ok(s.list(Some(&p)).try_next().await?.is_some()) }
        })
    }

    /// HEAD of `key` (a file or symlink), its record verified; None if
    /// nothing is there.
    pub fn stat_key(&self, b: &BucketName, key: &str) -> Result<Option<Stat>> {
        let p = self.tree_path(b, key)?;
        self.stat_path(&p, &format!("{b}/{key}"))
    }

    /// HEAD of directory `dir`'s record; None if it has none (a prefix
    /// made by someone else, or a bucket's top).
    pub fn stat_dir(&self, b: &BucketName, dir: &str) -> Result<Option<Stat>> {
        let p = self.tree_path(b, &join(dir, DIR_RECORD))?;
        let st = self.stat_path(&p, &format!("{b}/{dir}/"))?;
        match &st {
            Some(s) if s.shape != Shape::Dir => Err(Error::integrity(
                "a directory record that is not a directory's: changed outside ssefs?",
            )
            .resource(format!("{b}/{dir}/"))),
            _ => Ok(st),
        }
    }

    fn stat_path(&self, p: &StorePath, shown: &str) -> Result<Option<Stat>> {
        let r = self.call(shown, |s| {
            let p = p.clone();
            async move { s.get_opts(&p, head()).await }
        });
        let g = match r {
            Ok(g) => g,
            Err(e) if e.code == OssCode::NoSuchKey => return Ok(None),
            Err(e) => return Err(e),
        };
        self.verified_stat(g, shown)
    }

    /// HEADs of many names of bucket `b` at once (`rel`, and whether each
    /// is a directory, whose record is asked for), up to 32 in flight: a
    /// listing's attributes for `ls -l`, in one round trip's time rather
    /// than one per name. Each answer as `stat_key` / `stat_dir` give it.
    pub fn stat_many(&self, b: &BucketName, names: &[(String, bool)]) -> Vec<Result<Option<Stat>>> {
        let paths: Vec<Result<StorePath>> = names
            .iter()
            .map(|(rel, dir)| {
                if *dir {
                    self.tree_path(b, &join(rel, DIR_RECORD))
                } else {
                    self.tree_path(b, rel)
                }
            })
            .collect();
        let store = self.store_arc();
        let answers: Vec<object_store::Result<object_store::GetResult>> = self.block_on(async {
            use futures::StreamExt;
            futures::stream::iter(paths.iter().map(|p| {
                let store = store.clone();
                async move {
                    match p {
                        Ok(p) => store.get_opts(p, head()).await,
                        Err(_) => Err(object_store::Error::NotImplemented {
                            operation: "not a store name".into(),
                            implementer: "ssefs".into(),
                        }),
                    }
                }
            }))
            .buffered(32)
            .collect()
            .await
        });
        names
            .iter()
            .zip(answers)
            .map(|((rel, dir), r)| {
                let shown = if *dir {
                    format!("{b}/{rel}/")
                } else {
                    format!("{b}/{rel}")
                };
                match r {
                    Ok(g) => {
                        let st = self.verified_stat(g, &shown)?;
                        if *dir && st.as_ref().is_some_and(|s| s.shape != Shape::Dir) {
                            return Err(Error::integrity(
                                "a directory record that is not a directory's: changed outside ssefs?",
                            )
                            .resource(shown));
                        }
                        Ok(st)
                    }
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    // Asked again alone, with the failover and retries of
                    // a single request.
                    Err(_) if *dir => self.stat_dir(b, rel),
                    Err(_) => self.stat_key(b, rel),
                }
            })
            .collect()
    }

    /// A HEAD's answer with its record verified and fitting its size.
    fn verified_stat(&self, g: object_store::GetResult, shown: &str) -> Result<Option<Stat>> {
        let v = meta::decode(self.key()?, meta_attr(&g.attributes).as_deref(), shown)?;
        // Directory records and symlinks are empty; an object is not
        // (but for one migrated without a header).
        let fits = match v.shape {
            Shape::Object(oid) => oid.is_some() == (g.meta.size > 0),
            Shape::Dir | Shape::Link(_) => g.meta.size == 0,
        };
        if !fits {
            return Err(Error::integrity(
                "the metadata of this store object does not fit its size: changed outside ssefs?",
            )
            .resource(shown.to_owned()));
        }
        Ok(Some(Stat {
            version: etag(g.meta.e_tag.as_deref()),
            len: g.meta.size,
            modified: g.meta.last_modified.into(),
            meta: v.meta,
            shape: v.shape,
        }))
    }

    /// PUTs an empty object with a record of `shape` at `rel`.
    fn put_record(&self, b: &BucketName, rel: &str, meta: &ObjMeta, shape: &Shape) -> Result<()> {
        let p = self.tree_path(b, rel)?;
        let shown = format!("{b}/{rel}");
        let record = meta::encode_shape(self.key()?, meta, shape)?;
        let mut attrs = Attributes::new();
        attrs.insert(
            Attribute::Metadata(meta::META_NAME.into()),
            AttributeValue::from(record),
        );
        self.call(&shown, |s| {
            let (p, attrs) = (p.clone(), attrs.clone());
            async move {
                s.put_opts(
                    &p,
                    PutPayload::from(Bytes::new()),
                    PutOptions {
                        attributes: attrs,
                        ..PutOptions::default()
                    },
                )
                .await
            }
        })?;
        Ok(())
    }

    /// Writes directory `dir`'s record.
    pub fn put_dir(&self, b: &BucketName, dir: &str, meta: &ObjMeta) -> Result<()> {
        self.put_record(b, &join(dir, DIR_RECORD), meta, &Shape::Dir)
    }

    /// Makes `key` a symlink to `target`.
    pub fn put_link(&self, b: &BucketName, key: &str, target: &[u8], meta: &ObjMeta) -> Result<()> {
        self.put_record(b, key, meta, &Shape::Link(target.to_vec()))
    }

    /// Uploads a staged object file (header and chunks) as `key`.
    pub fn put_file(
        &self,
        b: &BucketName,
        key: &str,
        s: Staged,
        meta: &ObjMeta,
    ) -> Result<Version> {
        let p = self.tree_path(b, key)?;
        self.put_checked(s, &p, meta, &Cond::Any, &format!("{b}/{key}"))
    }

    /// Changes the metadata of what `st` found at `rel`: a record is
    /// written again; an object is uploaded again with the new record
    /// (the store cannot replace metadata alone through this client), only
    /// while it is still the version found.
    pub fn set_meta(
        &self,
        b: &BucketName,
        rel: &str,
        st: &Stat,
        meta: &ObjMeta,
    ) -> Result<Version> {
        let shown = format!("{b}/{rel}");
        match &st.shape {
            Shape::Dir => {
                self.put_dir(b, rel, meta)?;
                Ok(Version::ETag(String::new()))
            }
            Shape::Link(t) => {
                self.put_link(b, rel, t, meta)?;
                Ok(Version::ETag(String::new()))
            }
            Shape::Object(_) => {
                let p = self.tree_path(b, rel)?;
                let file = self.download(&p, &st.version, st.len, &shown)?;
                let s = Staged {
                    file,
                    name: std::ffi::OsString::new(),
                    early: None,
                };
                self.put_checked(s, &p, meta, &Cond::Is(st.version.clone()), &shown)
            }
        }
    }

    /// The object `st` found at `rel`, whole, in an unnamed local file.
    pub fn download_found(&self, b: &BucketName, rel: &str, st: &Stat) -> Result<std::fs::File> {
        let p = self.tree_path(b, rel)?;
        self.download(&p, &st.version, st.len, &format!("{b}/{rel}"))
    }

    /// The header of the object `st` found at `key` (None: it has none),
    /// by one ranged GET pinned to that version.
    pub fn header_of(&self, b: &BucketName, key: &str, st: &Stat) -> Result<Option<Header>> {
        if st.len == 0 {
            return Ok(None);
        }
        let Version::ETag(tag) = &st.version else {
            return Err(Error::new(OssCode::InternalError, "not a store version"));
        };
        let p = self.tree_path(b, key)?;
        let shown = format!("{b}/{key}");
        let bytes = self.call(&shown, |s| {
            let (p, tag) = (p.clone(), tag.clone());
            async move {
                let opts = GetOptions {
                    if_match: Some(tag),
                    range: Some(GetRange::Bounded(0..HEADER_LEN as u64)),
                    ..GetOptions::default()
                };
                s.get_opts(&p, opts).await?.bytes().await
            }
        })?;
        if bytes.len() != HEADER_LEN {
            return Err(Error::integrity("object header truncated").resource(shown.as_str()));
        }
        Header::parse(&bytes)
            .map(Some)
            .map_err(|e| e.resource(shown.as_str()))
    }

    /// A new unnamed local file for a staged write.
    pub fn staging_file(&self, shown: &str) -> Result<std::fs::File> {
        self.local_temp(shown)
    }

    /// Removes `rel` (an object or symlink); nothing there is fine.
    pub fn remove(&self, b: &BucketName, rel: &str) -> Result<()> {
        let p = self.tree_path(b, rel)?;
        match self.call(&format!("{b}/{rel}"), |s| {
            let p = p.clone();
            async move { s.delete(&p).await }
        }) {
            Err(e) if e.code != OssCode::NoSuchKey => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes directory `dir`'s record.
    pub fn remove_dir(&self, b: &BucketName, dir: &str) -> Result<()> {
        self.remove(b, &join(dir, DIR_RECORD))
    }

    /// A server-side copy of `from` to `to`, record and all (records are
    /// not bound to names, so it stays valid).
    pub fn copy_within(&self, b: &BucketName, from: &str, to: &str) -> Result<()> {
        let (f, t) = (self.tree_path(b, from)?, self.tree_path(b, to)?);
        self.call(&format!("{b}/{from}"), |s| {
            let (f, t) = (f.clone(), t.clone());
            async move { s.copy(&f, &t).await }
        })
    }

    /// Every store path below directory `dir`, relative to it, ssefs's
    /// directory records included (for a directory's rename).
    pub fn all_below(&self, b: &BucketName, dir: &str) -> Result<Vec<String>> {
        let p = self.tree_path(b, dir)?;
        let skip = format!("{p}/");
        let shown = format!("{b}/{dir}");
        let listed = self.call(&shown, |s| {
            let p = p.clone();
            async move { s.list(Some(&p)).try_collect::<Vec<_>>().await }
        })?;
        Ok(listed
            .into_iter()
            .filter_map(|m| m.location.as_ref().strip_prefix(&skip).map(str::to_owned))
            .collect())
    }

    /// This host's journal of files a mount of this store changed and has
    /// not uploaded yet (`fs::store::journal`): `dirty/STORE` in the state
    /// directory (STORE a hash of the bucket and prefix, as several stores
    /// may share a state directory), made 0700 if missing.
    pub fn journal_dir(&self) -> Result<crate::backend::Dir> {
        let store = super::name_hash(&format!("{}/{}", self.bucket_url, self.prefix));
        let rel = format!("dirty/{store:016x}");
        self.state
            .create_dirs(std::path::Path::new(&rel), 0o700)
            .map_err(|e| Error::io(format!("the state directory's {rel}"), e))
    }

    /// The owner recorded for bucket `b` (its marker).
    pub fn owner_of(&self, b: &BucketName) -> Result<u32> {
        crate::backend::Backend::bucket_owner(self, b)
    }
}
