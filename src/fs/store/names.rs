//! Names on a store mount: mkdir, symlink, unlink, rmdir, rename.
//!
//! A rename is a copy and a delete per store object (a store has no
//! rename), so renaming a directory costs one copy per object below it
//! and is not atomic: a crash in the middle leaves some objects under each
//! name, none lost (docs/SEMANTICS.md §12).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Instant, SystemTime};

use super::{checked_name, errno, join, lock, now_pair, parent_of, reserved, split, StoreFs};
use crate::backend::s3::meta::Shape;
use crate::backend::s3::{Entry, EntryKind, Stat};
use crate::backend::{ObjMeta, Version};
use crate::error::{OssCode, Result};
use crate::fs::{Attr, Kind};
use crate::oss::BucketName;

const RENAME_NOREPLACE: u32 = 1;

impl StoreFs {
    /// The path of a new name in directory `parent` (inside a bucket),
    /// checked: EEXIST if taken, EPERM for ssefs's own names.
    pub(super) fn new_name(&self, parent: u64, name: &OsStr) -> Result<(String, BucketName)> {
        let (ppath, pkind) = self.node(parent)?;
        if pkind != Kind::Dir {
            return Err(errno(libc::ENOTDIR));
        }
        if ppath.is_empty() {
            // Only buckets live at the top.
            return Err(errno(libc::EPERM));
        }
        let name = checked_name(name)?;
        if reserved(name) {
            return Err(errno(libc::EPERM));
        }
        if self.entry(&ppath, name)?.is_some() {
            return Err(errno(libc::EEXIST));
        }
        let path = join(&ppath, name);
        super::fits(&path)?;
        let (b, _) = split(&path)?;
        Ok((path, b))
    }

    /// A node just made here, with what we wrote as its stat.
    fn made(&self, path: &str, kind: Kind, meta: ObjMeta, shape: Shape) -> Result<Attr> {
        let ino = self.register(path, kind);
        let st = Stat {
            version: Version::ETag(String::new()),
            len: 0,
            modified: SystemTime::now(),
            meta,
            shape,
        };
        let a = self.attr_from(ino, path, kind, Some(&st));
        // Trusted for a TTL like any HEAD.
        if let Some(n) = lock(&self.tree).nodes.get_mut(&ino) {
            n.seen = Some((Instant::now(), Some(st)));
        }
        a
    }

    pub(super) fn make_dir(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        owner: (u32, u32),
    ) -> Result<Attr> {
        self.writable()?;
        let now = now_pair();
        let meta = ObjMeta {
            mode: Some(mode & 0o7777),
            owner: Some(owner),
            times: Some([now, now]),
            ctime: Some(now),
            ..ObjMeta::default()
        };
        let (ppath, _) = self.node(parent)?;
        if ppath.is_empty() {
            // mkdir at the top creates a bucket, owned by its maker.
            let s = name.to_str().ok_or_else(|| errno(libc::EINVAL))?;
            let b = BucketName::parse(s).map_err(|e| {
                tracing::warn!(code = e.code.as_str(), path = s, "{}", e.message);
                errno(libc::EINVAL)
            })?;
            self.engine.create_bucket(&b).map_err(|e| {
                if e.code == OssCode::BucketAlreadyExists {
                    errno(libc::EEXIST)
                } else {
                    e
                }
            })?;
            self.store.put_dir(&b, "", &meta)?;
            lock(&self.tree).listings.remove("");
            return self.made(b.as_str(), Kind::Dir, meta, Shape::Dir);
        }
        let (path, b) = self.new_name(parent, name)?;
        let (_, key) = split(&path)?;
        self.store.put_dir(&b, key, &meta)?;
        self.listed(
            &ppath,
            Entry {
                name: super::name_of(&path).to_owned(),
                kind: EntryKind::Dir,
                len: 0,
            },
        );
        self.made(&path, Kind::Dir, meta, Shape::Dir)
    }

    pub(super) fn make_link(
        &self,
        parent: u64,
        name: &OsStr,
        target: &std::path::Path,
        owner: (u32, u32),
    ) -> Result<Attr> {
        self.writable()?;
        let target = target.as_os_str().as_bytes();
        if target.len() >= libc::PATH_MAX as usize {
            return Err(errno(libc::ENAMETOOLONG));
        }
        let (path, b) = self.new_name(parent, name)?;
        let (_, key) = split(&path)?;
        let now = now_pair();
        let meta = ObjMeta {
            mode: Some(0o777),
            owner: Some(owner),
            times: Some([now, now]),
            ctime: Some(now),
            ..ObjMeta::default()
        };
        self.store.put_link(&b, key, target, &meta)?;
        self.listed(
            parent_of(&path),
            Entry {
                name: super::name_of(&path).to_owned(),
                kind: EntryKind::Empty,
                len: 0,
            },
        );
        self.made(&path, Kind::Symlink, meta, Shape::Link(target.to_vec()))
    }

    /// Files open here below `dir` (or at it) that are not on the store.
    fn unsent_below(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        lock(&self.tree)
            .nodes
            .values()
            .any(|n| n.path.starts_with(&prefix) && n.open.as_ref().is_some_and(|o| o.unsent()))
    }

    /// The open files at `path` or below it, in inode order (the order
    /// every holder of several takes their locks in).
    fn open_at_or_below(&self, path: &str) -> Vec<std::sync::Arc<super::files::OpenFile>> {
        let prefix = format!("{path}/");
        let t = lock(&self.tree);
        let mut v: Vec<_> = t
            .nodes
            .iter()
            .filter(|(_, n)| n.path == path || n.path.starts_with(&prefix))
            .filter_map(|(ino, n)| n.open.clone().map(|o| (*ino, o)))
            .collect();
        v.sort_by_key(|(ino, _)| *ino);
        v.into_iter().map(|(_, o)| o).collect()
    }

    /// Whether directory `path` holds nothing (its own record aside).
    fn dir_empty(&self, path: &str) -> Result<bool> {
        let (b, key) = split(path)?;
        Ok(self.store.list_dir(&b, key)?.is_empty() && !self.unsent_below(path))
    }

    /// The node at `path` is gone: it keeps its inode for the kernel (and
    /// its open state, never uploaded again), but the name is free.
    fn detach(&self, path: &str) {
        let removed = {
            let mut t = lock(&self.tree);
            let ino = t.inos.remove(path);
            ino.and_then(|ino| {
                let n = t.nodes.get_mut(&ino)?;
                n.seen = None;
                n.open.clone().map(|o| (ino, o))
            })
        };
        if let Some((ino, o)) = removed {
            o.mark_removed();
            self.note_clean(ino, &o);
        }
    }

    pub(super) fn remove_name(&self, parent: u64, name: &OsStr, dir: bool) -> Result<()> {
        self.writable()?;
        let (ppath, _) = self.node(parent)?;
        let name = checked_name(name)?;
        if reserved(name) {
            return Err(errno(libc::ENOENT));
        }
        if ppath.is_empty() {
            if !dir {
                return Err(errno(libc::EPERM));
            }
            // rmdir of a bucket deletes it if it holds nothing.
            let b = BucketName::parse(name).map_err(|_| errno(libc::ENOENT))?;
            let (b_path, _) = (b.as_str().to_owned(), ());
            if !self.dir_empty(&b_path)? {
                return Err(errno(libc::ENOTEMPTY));
            }
            // (Its top's record goes with it.)
            self.engine.delete_bucket(&b).map_err(|e| match e.code {
                OssCode::BucketNotEmpty => errno(libc::ENOTEMPTY),
                OssCode::NoSuchBucket => errno(libc::ENOENT),
                _ => e,
            })?;
            lock(&self.tree).listings.remove("");
            self.detach(&b_path);
            return Ok(());
        }
        let path = join(&ppath, name);
        let (b, key) = split(&path)?;
        // An upload of the file now would put it back: it waits, then
        // finds it removed.
        let open = self.open_at_or_below(&path);
        let _held: Vec<_> = open.iter().map(|o| o.hold()).collect();
        let open_unsent = {
            let t = lock(&self.tree);
            t.inos
                .get(&path)
                .and_then(|i| t.nodes.get(i))
                .and_then(|n| n.open.as_ref())
                .is_some_and(|o| o.unsent())
        };
        let e = self
            .entry(&ppath, name)?
            .ok_or_else(|| errno(libc::ENOENT))?;
        match (e.kind, dir) {
            (EntryKind::Dir, false) => return Err(errno(libc::EISDIR)),
            (EntryKind::File | EntryKind::Empty, true) => return Err(errno(libc::ENOTDIR)),
            (EntryKind::Dir, true) => {
                if !self.dir_empty(&path)? {
                    return Err(errno(libc::ENOTEMPTY));
                }
                self.store.remove_dir(&b, key)?;
            }
            _ if open_unsent => {}
            _ => self.store.remove(&b, key)?,
        }
        self.unlisted(&ppath, name);
        lock(&self.tree).listings.remove(&path);
        self.detach(&path);
        Ok(())
    }

    pub(super) fn move_name(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        self.writable()?;
        if flags & !RENAME_NOREPLACE != 0 {
            // RENAME_EXCHANGE and RENAME_WHITEOUT: a store cannot swap.
            return Err(errno(libc::EINVAL));
        }
        let (ppath, _) = self.node(parent)?;
        let (npath, nkind) = self.node(newparent)?;
        if nkind != Kind::Dir {
            return Err(errno(libc::ENOTDIR));
        }
        let (name, newname) = (checked_name(name)?, checked_name(newname)?);
        if reserved(name) {
            return Err(errno(libc::ENOENT));
        }
        if reserved(newname) {
            return Err(errno(libc::EPERM));
        }
        if ppath.is_empty() || npath.is_empty() {
            // Buckets are not renamed; nothing else is at the top.
            return Err(errno(libc::EPERM));
        }
        let (from, to) = (join(&ppath, name), join(&npath, newname));
        super::fits(&to)?;
        let (b1, k1) = split(&from)?;
        let (b2, k2) = split(&to)?;
        if b1.as_str() != b2.as_str() {
            // mv copies then.
            return Err(errno(libc::EXDEV));
        }
        if from == to {
            return Ok(());
        }
        let src = self
            .entry(&ppath, name)?
            .ok_or_else(|| errno(libc::ENOENT))?;
        let dst = self.entry(&npath, newname)?;
        if dst.is_some() && flags & RENAME_NOREPLACE != 0 {
            return Err(errno(libc::EEXIST));
        }
        let src_dir = src.kind == EntryKind::Dir;
        if src_dir && to.starts_with(&format!("{from}/")) {
            return Err(errno(libc::EINVAL));
        }
        if let Some(d) = &dst {
            match (src_dir, d.kind == EntryKind::Dir) {
                (true, false) => return Err(errno(libc::ENOTDIR)),
                (false, true) => return Err(errno(libc::EISDIR)),
                (true, true) if !self.dir_empty(&to)? => return Err(errno(libc::ENOTEMPTY)),
                _ => {}
            }
        }
        // Uploads of what moves wait, then go to the new names; uploads
        // of what is replaced wait, then find it removed.
        let mut open = self.open_at_or_below(&from);
        if dst.is_some() {
            open.extend(self.open_at_or_below(&to));
        }
        open.sort_by_key(|o| o.ino());
        open.dedup_by_key(|o| o.ino());
        let _held: Vec<_> = open.iter().map(|o| o.hold()).collect();
        if src_dir {
            if dst.is_some() {
                // Its record would outlive it otherwise.
                self.store.remove_dir(&b2, k2)?;
            }
            let below = self.store.all_below(&b1, k1)?;
            // Everything is copied before anything is removed: a failure
            // in between leaves both names, nothing lost.
            for rel in &below {
                self.store
                    .copy_within(&b1, &format!("{k1}/{rel}"), &format!("{k2}/{rel}"))?;
            }
            for rel in &below {
                self.store.remove(&b1, &format!("{k1}/{rel}"))?;
            }
        } else {
            let unsent = {
                let t = lock(&self.tree);
                t.inos
                    .get(&from)
                    .and_then(|i| t.nodes.get(i))
                    .and_then(|n| n.open.as_ref())
                    .is_some_and(|o| o.unsent())
            };
            if dst.is_some() {
                self.detach(&to);
            }
            if !unsent {
                self.store.copy_within(&b1, k1, k2)?;
                self.store.remove(&b1, k1)?;
            }
        }
        // The table follows: the node and everything below it.
        {
            let mut t = lock(&self.tree);
            if let Some(old) = t.inos.remove(&to) {
                if let Some(n) = t.nodes.get_mut(&old) {
                    n.seen = None;
                }
            }
            let prefix = format!("{from}/");
            let moved: Vec<(String, u64)> = t
                .inos
                .iter()
                .filter(|(p, _)| **p == from || p.starts_with(&prefix))
                .map(|(p, i)| (p.clone(), *i))
                .collect();
            for (p, ino) in moved {
                t.inos.remove(&p);
                let np = format!("{to}{}", &p[from.len()..]);
                if let Some(n) = t.nodes.get_mut(&ino) {
                    n.path = np.clone();
                    n.seen = None;
                    if let Some(o) = &n.open {
                        self.note_moved(ino, o, &np);
                    }
                }
                t.inos.insert(np, ino);
            }
            t.listings
                .retain(|p, _| !(*p == from || p.starts_with(&prefix) || *p == to));
        }
        self.unlisted(&ppath, name);
        self.listed(
            &npath,
            Entry {
                name: newname.to_owned(),
                kind: src.kind,
                len: src.len,
            },
        );
        Ok(())
    }
}
