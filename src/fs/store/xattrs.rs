//! Extended attributes on a store mount: the same names and rules as on a
//! local mount (`crate::fs::xattrs`). The OSS names on a bucket's top
//! directory are its rule; on a file they show how it is stored, and
//! setting one re-encrypts it under an override. Other `user.` names live
//! in the object's authenticated record (FORMAT.md §9), so they cost an
//! upload of the object when it is not open (the store cannot change
//! metadata alone through this client).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use super::{errno, lock, split, StoreFs};
use crate::backend::s3::Stat;
use crate::backend::ObjMeta;
use crate::error::Result;
use crate::format::ChunkSize;
use crate::fs::xattrs::{
    bucket_get, bucket_remove, bucket_set, field, is_chunk_name, is_user_name, list_bucket_names,
    list_oss_names, oss_name, sse_of_header, value_str, with_field, without_field, INTERNAL_PREFIX,
};
use crate::fs::Kind;
use crate::oss::{BucketName, SseConfig};
use crate::principal::Principal;

/// The largest value of one user xattr, and of all of them together (they
/// travel in one HTTP header with the rest of the record).
const VALUE_MAX: usize = 4096;
const TOTAL_MAX: usize = 6144;

const XATTR_CREATE: i32 = 1;
const XATTR_REPLACE: i32 = 2;

enum Target {
    Root,
    Bucket(BucketName),
    File,
    Other,
}

impl StoreFs {
    fn target(&self, ino: u64) -> Result<(Target, String, Kind)> {
        let (path, kind) = self.node(ino)?;
        let t = if path.is_empty() {
            Target::Root
        } else if !path.contains('/') {
            Target::Bucket(split(&path)?.0)
        } else if kind == Kind::File {
            Target::File
        } else {
            Target::Other
        };
        Ok((t, path, kind))
    }

    /// The record of `ino` as this host knows it now (an open file's own).
    fn meta_now(&self, ino: u64) -> Result<ObjMeta> {
        let open = lock(&self.tree)
            .nodes
            .get(&ino)
            .and_then(|n| n.open.clone());
        if let Some(o) = open {
            return Ok(o.meta());
        }
        self.attr_of(ino)?;
        let t = lock(&self.tree);
        Ok(t.nodes
            .get(&ino)
            .and_then(|n| n.seen.as_ref())
            .and_then(|(_, st)| st.as_ref())
            .map(|st| st.meta.clone())
            .unwrap_or_default())
    }

    /// How a file is stored now, as HeadObject reports it; a file without
    /// a header shows what its first write will use.
    fn stored_sse(&self, ino: u64, path: &str) -> Result<Option<SseConfig>> {
        let (b, key) = split(path)?;
        let open = lock(&self.tree)
            .nodes
            .get(&ino)
            .and_then(|n| n.open.clone());
        let (header, over) = match open {
            Some(o) => (o.header(), o.meta().sse_override),
            None => {
                let st: Stat = self
                    .store
                    .stat_key(&b, key)?
                    .ok_or_else(|| errno(libc::ENOENT))?;
                (self.store.header_of(&b, key, &st)?, st.meta.sse_override)
            }
        };
        match header {
            Some(h) => Ok(sse_of_header(&h)),
            None => match over {
                Some(o) => Ok(Some(o)),
                None => self.engine.bucket_rule(&b),
            },
        }
    }

    fn stored_chunk(&self, ino: u64, path: &str) -> Result<ChunkSize> {
        let (b, key) = split(path)?;
        let open = lock(&self.tree)
            .nodes
            .get(&ino)
            .and_then(|n| n.open.clone());
        let header = match open {
            Some(o) => o.header(),
            None => {
                let st = self
                    .store
                    .stat_key(&b, key)?
                    .ok_or_else(|| errno(libc::ENOENT))?;
                self.store.header_of(&b, key, &st)?
            }
        };
        match header {
            Some(h) => Ok(h.chunk),
            None => self.engine.bucket_chunk_size(&b),
        }
    }

    /// The override if one is set, else how the file is stored.
    fn current_object_sse(&self, ino: u64, path: &str) -> Result<Option<SseConfig>> {
        match self.meta_now(ino)?.sse_override {
            Some(o) => Ok(Some(o)),
            None => self.stored_sse(ino, path),
        }
    }

    /// Stores the file anew under `sse`, with `over` as its override.
    fn apply_override(
        &self,
        ino: u64,
        sse: Option<&SseConfig>,
        over: Option<&SseConfig>,
        p: &Principal,
    ) -> Result<()> {
        let fh = self.open_file(ino, libc::O_RDONLY, p)?;
        let r = self
            .file_handle(fh)
            .and_then(|o| self.reencrypt_open(ino, &o, sse, over, p));
        self.release_file(ino, fh);
        r
    }

    /// Changes the record of `ino` (at `path`, of `kind`) by `f`: in the
    /// open copy, or on the store now.
    fn change_meta(
        &self,
        ino: u64,
        path: &str,
        kind: Kind,
        f: impl FnOnce(&mut ObjMeta) -> Result<()>,
    ) -> Result<()> {
        if let Some((fh, o)) = self.pin(ino) {
            let mut m = o.meta();
            let r = f(&mut m);
            if r.is_ok() {
                m.ctime = Some(super::now_pair());
                o.edit_meta(|x| *x = m);
                self.note_dirty(ino, &o);
            }
            self.release_file(ino, fh);
            return r;
        }
        let (b, key) = split(path)?;
        let (st, mut meta) = self.current_meta(path, kind)?;
        f(&mut meta)?;
        meta.ctime = Some(super::now_pair());
        match (&st, kind) {
            (Some(st), _) => {
                self.store.set_meta(&b, key, st, &meta)?;
            }
            (None, Kind::Dir) => self.store.put_dir(&b, key, &meta)?,
            (None, _) => return Err(errno(libc::ENOENT)),
        }
        self.invalidate(path);
        Ok(())
    }

    pub(super) fn get_xattr(&self, ino: u64, name: &OsStr, p: &Principal) -> Result<Vec<u8>> {
        let (t, path, _) = self.target(ino)?;
        if !is_user_name(name.as_bytes()) {
            return Err(errno(libc::EOPNOTSUPP));
        }
        if let Target::Bucket(b) = &t {
            if let Some(r) = bucket_get(&self.engine, b, name, p) {
                return r;
            }
        }
        if is_chunk_name(name) {
            return match t {
                Target::File => Ok(self.stored_chunk(ino, &path)?.to_string().into_bytes()),
                _ => Err(errno(libc::ENOTSUP)),
            };
        }
        if let Some(n) = oss_name(name) {
            return match t {
                Target::File => field(self.stored_sse(ino, &path)?.as_ref(), n),
                _ => Err(errno(libc::ENOTSUP)),
            };
        }
        if name.as_bytes().starts_with(INTERNAL_PREFIX) || matches!(t, Target::Root) {
            return Err(errno(libc::ENODATA));
        }
        self.meta_now(ino)?
            .xattrs
            .into_iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| v)
            .ok_or_else(|| errno(libc::ENODATA))
    }

    pub(super) fn list_xattrs(&self, ino: u64, p: &Principal) -> Result<Vec<u8>> {
        let (t, path, _) = self.target(ino)?;
        let mut out = Vec::new();
        match &t {
            Target::Bucket(b) => list_bucket_names(&self.engine, b, p, &mut out),
            Target::File => list_oss_names(
                self.stored_sse(ino, &path).unwrap_or(None).as_ref(),
                &mut out,
            ),
            _ => {}
        }
        if matches!(t, Target::Root) {
            return Ok(out);
        }
        for (n, _) in self.meta_now(ino)?.xattrs {
            out.extend_from_slice(&n);
            out.push(0);
        }
        Ok(out)
    }

    pub(super) fn set_xattr(
        &self,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        p: &Principal,
    ) -> Result<()> {
        let (t, path, kind) = self.target(ino)?;
        if !is_user_name(name.as_bytes()) {
            return Err(errno(libc::EOPNOTSUPP));
        }
        if let Target::Bucket(b) = &t {
            if let Some(r) = bucket_set(&self.engine, b, name, value, p) {
                return r;
            }
        }
        if is_chunk_name(name) {
            return Err(errno(libc::ENOTSUP));
        }
        if let Some(n) = oss_name(name) {
            return match t {
                Target::File => {
                    let v = value_str(value).map_err(|e| e.resource(path.as_str()))?;
                    let cur = self.current_object_sse(ino, &path)?;
                    let over =
                        with_field(cur.as_ref(), n, v).map_err(|e| e.resource(path.as_str()))?;
                    self.apply_override(ino, Some(&over), Some(&over), p)
                }
                _ => Err(errno(libc::ENOTSUP)),
            };
        }
        if name.as_bytes().starts_with(INTERNAL_PREFIX) || matches!(t, Target::Root) {
            return Err(errno(libc::EPERM));
        }
        if value.len() > VALUE_MAX {
            return Err(errno(libc::E2BIG));
        }
        let name = name.as_bytes().to_vec();
        let value = value.to_vec();
        self.change_meta(ino, &path, kind, move |m| {
            let at = m.xattrs.iter().position(|(n, _)| *n == name);
            match (at, flags) {
                (Some(_), f) if f & XATTR_CREATE != 0 => return Err(errno(libc::EEXIST)),
                (None, f) if f & XATTR_REPLACE != 0 => return Err(errno(libc::ENODATA)),
                (Some(i), _) => m.xattrs[i].1 = value,
                (None, _) => m.xattrs.push((name, value)),
            }
            let total: usize = m.xattrs.iter().map(|(n, v)| n.len() + v.len()).sum();
            if total > TOTAL_MAX {
                return Err(errno(libc::ENOSPC));
            }
            Ok(())
        })
    }

    pub(super) fn remove_xattr(&self, ino: u64, name: &OsStr, p: &Principal) -> Result<()> {
        let (t, path, kind) = self.target(ino)?;
        if !is_user_name(name.as_bytes()) {
            return Err(errno(libc::EOPNOTSUPP));
        }
        if let Target::Bucket(b) = &t {
            if let Some(r) = bucket_remove(&self.engine, b, name, p) {
                return r;
            }
        }
        if is_chunk_name(name) {
            return Err(errno(libc::ENOTSUP));
        }
        if let Some(n) = oss_name(name) {
            return match t {
                Target::File => {
                    let cur = self
                        .current_object_sse(ino, &path)?
                        .ok_or_else(|| errno(libc::ENODATA))?;
                    match without_field(&cur, n)? {
                        None => {
                            let (b, _) = split(&path)?;
                            let rule = self.engine.bucket_rule(&b)?;
                            self.apply_override(ino, rule.as_ref(), None, p)
                        }
                        Some(over) => self.apply_override(ino, Some(&over), Some(&over), p),
                    }
                }
                _ => Err(errno(libc::ENOTSUP)),
            };
        }
        if name.as_bytes().starts_with(INTERNAL_PREFIX) || matches!(t, Target::Root) {
            return Err(errno(libc::EPERM));
        }
        let name = name.as_bytes().to_vec();
        self.change_meta(ino, &path, kind, move |m| {
            let before = m.xattrs.len();
            m.xattrs.retain(|(n, _)| *n != name);
            if m.xattrs.len() == before {
                return Err(errno(libc::ENODATA));
            }
            Ok(())
        })
    }
}
