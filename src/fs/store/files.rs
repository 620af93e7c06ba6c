//! Files on a store mount: a local copy per open file, uploaded whole.
//!
//! The first open of a file downloads the object (or starts a new one, for
//! a create or O_TRUNC) into an unnamed file in the host's staging
//! directory; every handle of the file shares that copy, so readers and
//! writers here see one state. Writes of any shape go to the copy through
//! `ObjectFile`, sealed as on a local mount. The copy goes up whole on
//! FLUSH (each close(2) of a writer), fsync and the last release; `fsync`
//! and `close` return once the store has answered, so a close that
//! returned 0 means the bytes are on the store.

use std::ffi::OsString;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use super::{errno, lock, name_of, now_pair, parent_of, split, Handle, StoreFs};
use crate::backend::s3::meta::Shape;
use crate::backend::s3::{Entry, EntryKind, Stat};
use crate::backend::{ObjMeta, Staged, Version};
use crate::engine::ObjectFile;
use crate::error::{Error, IoContext, Result};
use crate::fs::{Attr, Kind};
use crate::oss::{BucketName, SseConfig};
use crate::principal::Principal;

/// The open state of one file, shared by its handles.
pub(super) struct OpenFile {
    ino: u64,
    st: RwLock<FileState>,
    /// Created here and never uploaded yet: listings here show it anyway.
    unsent: AtomicBool,
    /// Unlinked (or renamed over) since it was opened: never uploaded again.
    removed: AtomicBool,
    /// The last open found the version the kernel's pages came from.
    keep: AtomicBool,
    /// Its unsent changes are noted in the journal.
    journaled: AtomicBool,
}

/// An open file held still (`OpenFile::hold`).
pub(super) struct Held<'a>(#[allow(dead_code)] RwLockWriteGuard<'a, FileState>);

struct FileState {
    /// `BUCKET/KEY` at the open, for messages.
    name: String,
    /// The local copy of the stored bytes.
    file: File,
    /// None for an object without a header (one migrated empty from a
    /// data directory): it gets one with its first byte.
    obj: Option<ObjectFile>,
    meta: ObjMeta,
    /// Changed since the copy was downloaded or last uploaded.
    dirty: bool,
    /// When the copy last changed, for its attributes.
    changed: SystemTime,
}

impl OpenFile {
    fn read(&self) -> RwLockReadGuard<'_, FileState> {
        self.st.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, FileState> {
        self.st.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn ino(&self) -> u64 {
        self.ino
    }

    pub(super) fn unsent(&self) -> bool {
        self.unsent.load(Ordering::Acquire)
    }

    pub(super) fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }

    /// Keeps uploads of this file out while a rename or unlink moves or
    /// removes it (they read its path only once they hold this).
    pub(super) fn hold(&self) -> Held<'_> {
        Held(self.write())
    }

    pub(super) fn keep_cache(&self) -> bool {
        self.keep.load(Ordering::Acquire)
    }

    pub(super) fn size(&self) -> u64 {
        self.read().obj.as_ref().map(|o| o.size()).unwrap_or(0)
    }

    pub(super) fn read_with<R>(
        &self,
        off: u64,
        size: u32,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let g = self.read();
        match &g.obj {
            Some(obj) => obj.read_with(off, size as usize, f),
            None => Ok(f(&[])),
        }
    }

    /// Changes the metadata that goes up with the next upload.
    pub(super) fn edit_meta(&self, f: impl FnOnce(&mut ObjMeta)) {
        let mut g = self.write();
        f(&mut g.meta);
        g.dirty = true;
    }

    pub(super) fn meta(&self) -> ObjMeta {
        self.read().meta.clone()
    }

    pub(super) fn header(&self) -> Option<crate::format::Header> {
        self.read().obj.as_ref().map(|o| o.header().clone())
    }
}

/// The bytes changed now: mtime and ctime move (atime stays).
fn touch(m: &mut ObjMeta) {
    let now = now_pair();
    m.times = Some(match m.times {
        Some([at, _]) => [at, now],
        None => [now, now],
    });
    m.ctime = Some(now);
}

impl StoreFs {
    /// A new object's first bytes (its header) in `file`, encrypted per
    /// `over` or the bucket's rule now. KMS permission and key state are
    /// checked here, so a refused create or truncation changes nothing.
    fn fresh_object(
        &self,
        b: &BucketName,
        file: File,
        over: Option<&SseConfig>,
        name: &str,
        p: &Principal,
    ) -> Result<ObjectFile> {
        let (sse, chunk) = self
            .engine
            .upload_settings(b, over)
            .map_err(|e| e.resource(name))?;
        let obj = self.engine.encrypt_into(
            p,
            (sse.as_ref(), chunk),
            &mut |_| Ok(0),
            name,
            file,
            &|_| {},
        )?;
        Ok(self.engine.track(obj))
    }

    /// Notes in the journal that `o` has changes not on the store.
    pub(super) fn note_dirty(&self, ino: u64, o: &OpenFile) {
        if o.journaled.swap(true, Ordering::AcqRel) {
            return;
        }
        if let (Some(j), Ok((path, _))) = (&self.journal, self.node(ino)) {
            j.dirty(ino, &path);
        }
    }

    /// Its changes are on the store (or will never be): out of the journal.
    pub(super) fn note_clean(&self, ino: u64, o: &OpenFile) {
        if o.journaled.swap(false, Ordering::AcqRel) {
            if let Some(j) = &self.journal {
                j.clean(ino);
            }
        }
    }

    /// A journaled file moved to `path` (a rename).
    pub(super) fn note_moved(&self, ino: u64, o: &OpenFile, path: &str) {
        if o.journaled.load(Ordering::Acquire) {
            if let Some(j) = &self.journal {
                j.dirty(ino, path);
            }
        }
    }

    fn attach(&self, ino: u64, o: &Arc<OpenFile>) -> Result<u64> {
        {
            let mut t = lock(&self.tree);
            let n = t.nodes.get_mut(&ino).ok_or_else(|| errno(libc::ESTALE))?;
            n.open = Some(o.clone());
            n.opens += 1;
        }
        let fh = self
            .next_fh
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.handles).insert(fh, Handle::File(o.clone()));
        Ok(fh)
    }

    /// The attributes of an open file, from its copy.
    pub(super) fn attr_open(&self, ino: u64, path: &str, o: &OpenFile) -> Result<Attr> {
        let (meta, changed, size, oid) = {
            let g = o.read();
            let oid = g.obj.as_ref().map(|x| x.header().object_id);
            (
                g.meta.clone(),
                g.changed,
                g.obj.as_ref().map(|x| x.size()).unwrap_or(0),
                oid,
            )
        };
        let st = Stat {
            version: Version::ETag(String::new()),
            len: 0,
            modified: changed,
            meta,
            shape: Shape::Object(oid),
        };
        let mut a = self.attr_from(ino, path, Kind::File, Some(&st))?;
        if o.removed.load(Ordering::Acquire) {
            a.nlink = 0;
        }
        a.size = size;
        a.blocks = size.div_ceil(512);
        Ok(a)
    }

    pub(super) fn create_file(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        _flags: i32,
        p: &Principal,
    ) -> Result<(u64, Attr)> {
        self.writable()?;
        let (path, b) = self.new_name(parent, name)?;
        let (_, key) = split(&path)?;
        let _ = key;
        let file = self.store.staging_file(&path)?;
        let obj = self.fresh_object(&b, file.try_clone().ctx(&path)?, None, &path, p)?;
        let now = now_pair();
        let meta = ObjMeta {
            mode: Some(mode & 0o7777),
            owner: Some((p.uid, p.gid)),
            times: Some([now, now]),
            ctime: Some(now),
            ..ObjMeta::default()
        };
        let ino = self.register(&path, Kind::File);
        let o = Arc::new(OpenFile {
            ino,
            st: RwLock::new(FileState {
                name: path.clone(),
                file,
                obj: Some(obj),
                meta,
                dirty: true,
                changed: SystemTime::now(),
            }),
            unsent: AtomicBool::new(true),
            removed: AtomicBool::new(false),
            keep: AtomicBool::new(true),
            journaled: AtomicBool::new(false),
        });
        let fh = self.attach(ino, &o)?;
        self.note_dirty(ino, &o);
        self.listed(
            parent_of(&path),
            Entry {
                name: name_of(&path).to_owned(),
                kind: EntryKind::File,
                len: 0,
            },
        );
        let a = self.attr_open(ino, &path, &o)?;
        Ok((fh, a))
    }

    pub(super) fn open_file(&self, ino: u64, flags: i32, p: &Principal) -> Result<u64> {
        let _one = lock(&self.opening);
        let (path, kind) = self.node(ino)?;
        match kind {
            Kind::File => {}
            Kind::Dir => return Err(errno(libc::EISDIR)),
            _ => return Err(errno(libc::EINVAL)),
        }
        let truncating = flags & libc::O_TRUNC != 0;
        if flags & libc::O_ACCMODE != libc::O_RDONLY || truncating {
            self.writable()?;
        }
        let (b, key) = split(&path)?;
        let existing = lock(&self.tree)
            .nodes
            .get(&ino)
            .and_then(|n| n.open.clone());
        if let Some(o) = existing {
            if truncating {
                self.restart(&b, &o, p)?;
                self.note_dirty(ino, &o);
            } else if let Some(h) = o.header() {
                // This opener's right to the key.
                self.engine
                    .unwrap_key(p, &h)
                    .map_err(|e| e.resource(&path))?;
            }
            return self.attach(ino, &o);
        }
        // Close-to-open: what the store holds now, whatever was cached.
        let st = self
            .store
            .stat_key(&b, key)?
            .ok_or_else(|| errno(libc::ENOENT))?;
        let Shape::Object(oid) = st.shape else {
            return Err(errno(libc::EINVAL));
        };
        let (file, obj, dirty) = if truncating {
            // As in OSS, an overwrite needs no access to the old object.
            let file = self.store.staging_file(&path)?;
            let obj = self.fresh_object(
                &b,
                file.try_clone().ctx(&path)?,
                st.meta.sse_override.as_ref(),
                &path,
                p,
            )?;
            (file, Some(obj), true)
        } else {
            let file = self.store.download_found(&b, key, &st)?;
            let obj = if st.len == 0 {
                None
            } else {
                let chunk = self.engine.bucket_chunk_size(&b)?;
                let obj = self.engine.open_object(
                    p,
                    file.try_clone().ctx(&path)?,
                    path.clone(),
                    chunk,
                )?;
                // The record must name this header (metadata moved from
                // another object is refused).
                if Some(obj.header().object_id) != oid {
                    return Err(Error::integrity(
                        "the metadata of this object on the store belongs to another object: \
                         changed outside ssefs?",
                    )
                    .resource(path.as_str()));
                }
                Some(obj)
            };
            (file, obj, false)
        };
        let keep = {
            let mut t = lock(&self.tree);
            let n = t.nodes.get_mut(&ino).ok_or_else(|| errno(libc::ESTALE))?;
            let keep = !truncating && n.cached_version.as_ref() == Some(&st.version);
            n.cached_version = Some(st.version.clone());
            keep
        };
        let mut meta = st.meta.clone();
        if truncating {
            touch(&mut meta);
        }
        let o = Arc::new(OpenFile {
            ino,
            st: RwLock::new(FileState {
                name: path.clone(),
                file,
                obj,
                meta,
                dirty,
                changed: st.modified,
            }),
            unsent: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            keep: AtomicBool::new(keep),
            journaled: AtomicBool::new(false),
        });
        self.remember(ino, Some(st));
        let fh = self.attach(ino, &o)?;
        if truncating {
            self.note_dirty(ino, &o);
        }
        Ok(fh)
    }

    /// A new upload over an open file (O_TRUNC, truncation to 0): a fresh
    /// data key, its override or the bucket's rule now.
    fn restart(&self, b: &BucketName, o: &OpenFile, p: &Principal) -> Result<()> {
        let mut g = o.write();
        let file = g.file.try_clone().ctx(&g.name)?;
        let obj = self.fresh_object(b, file, g.meta.sse_override.clone().as_ref(), &g.name, p)?;
        g.obj = Some(obj);
        g.dirty = true;
        g.changed = SystemTime::now();
        touch(&mut g.meta);
        Ok(())
    }

    /// The open object of a copy, given its header first if it has none
    /// (an object migrated empty, written to for the first time).
    fn begun<'g>(
        &self,
        b: &BucketName,
        g: &'g mut FileState,
        p: &Principal,
    ) -> Result<&'g mut ObjectFile> {
        if g.obj.is_none() {
            let file = g.file.try_clone().ctx(&g.name)?;
            let over = g.meta.sse_override.clone();
            g.obj = Some(self.fresh_object(b, file, over.as_ref(), &g.name, p)?);
        }
        g.obj.as_mut().ok_or_else(|| errno(libc::EIO))
    }

    pub(super) fn write_file(
        &self,
        ino: u64,
        o: &OpenFile,
        off: u64,
        data: &[u8],
        kill_setid: bool,
        p: &Principal,
    ) -> Result<u32> {
        let (path, _) = self.node(ino)?;
        let (b, _) = split(&path)?;
        let mut g = o.write();
        if kill_setid {
            if let Some(m) = g.meta.mode {
                g.meta.mode = Some(m & !(libc::S_ISUID | libc::S_ISGID));
            }
        }
        self.begun(&b, &mut g, p)?.write_at(off, data)?;
        g.dirty = true;
        g.changed = SystemTime::now();
        touch(&mut g.meta);
        drop(g);
        self.note_dirty(ino, o);
        Ok(data.len() as u32)
    }

    /// Sets an open file's size: 0 is a new upload (new data key, the rule
    /// now), as on a local mount; other sizes keep the object's key.
    pub(super) fn set_size(&self, ino: u64, o: &OpenFile, size: u64, p: &Principal) -> Result<()> {
        let (path, _) = self.node(ino)?;
        let (b, _) = split(&path)?;
        if size == 0 {
            self.restart(&b, o, p)?;
        } else {
            let mut g = o.write();
            self.begun(&b, &mut g, p)?.set_len(size)?;
            g.dirty = true;
            g.changed = SystemTime::now();
        }
        touch(&mut o.write().meta);
        self.note_dirty(ino, o);
        Ok(())
    }

    /// truncate(2) or ftruncate(2): through the handle's copy, or an open
    /// of its own that uploads at once.
    pub(super) fn truncate(
        &self,
        ino: u64,
        fh: Option<u64>,
        size: u64,
        p: &Principal,
    ) -> Result<()> {
        if let Some(o) = fh.and_then(|f| self.file_handle(f).ok()) {
            return self.set_size(ino, &o, size, p);
        }
        // truncate(2) by name: an open of its own (sharing the open state
        // if there is one), uploaded at once.
        let fh = self.open_file(ino, libc::O_RDWR, p)?;
        let r = self.file_handle(fh).and_then(|o| {
            self.set_size(ino, &o, size, p)
                .and_then(|()| self.upload(ino, &o))
        });
        self.release_file(ino, fh);
        r
    }

    /// Uploads an open file's copy if it changed: one PUT, or parts
    /// completed at the end, so a reader sees the old object or the new.
    pub(super) fn upload(&self, ino: u64, o: &OpenFile) -> Result<()> {
        // Under the lock a rename or unlink holds while it works: the
        // path read below is the one it left, and a removed file stays so.
        let mut g = o.write();
        if !g.dirty || o.removed.load(Ordering::Acquire) {
            drop(g);
            self.note_clean(ino, o);
            return Ok(());
        }
        // Where the file is now (renames move open files).
        let (path, _) = self.node(ino)?;
        let (b, key) = split(&path)?;
        let staged = Staged {
            file: g.file.try_clone().ctx(&path)?,
            name: OsString::new(),
            early: None,
        };
        let version = self
            .store
            .put_file(&b, key, staged, &g.meta)
            .map_err(|e| e.resource(path.as_str()))?;
        g.dirty = false;
        o.unsent.store(false, Ordering::Release);
        self.note_clean(ino, o);
        let len = g.file.metadata().ctx(&path)?.len();
        let st = Stat {
            version: version.clone(),
            len,
            modified: SystemTime::now(),
            meta: g.meta.clone(),
            shape: Shape::Object(g.obj.as_ref().map(|x| x.header().object_id)),
        };
        drop(g);
        {
            let mut t = lock(&self.tree);
            if let Some(n) = t.nodes.get_mut(&ino) {
                n.cached_version = Some(version);
            }
        }
        self.remember(ino, Some(st));
        self.listed(
            parent_of(&path),
            Entry {
                name: name_of(&path).to_owned(),
                kind: EntryKind::File,
                len,
            },
        );
        Ok(())
    }

    pub(super) fn release_file(&self, ino: u64, fh: u64) {
        let Some(Handle::File(o)) = lock(&self.handles).remove(&fh) else {
            return;
        };
        // Counted down first, under the lock: of two handles closing at
        // once, exactly one sees itself last.
        let last = match lock(&self.tree).nodes.get_mut(&ino) {
            Some(n) => {
                n.opens = n.opens.saturating_sub(1);
                n.opens == 0
            }
            None => true,
        };
        if !last {
            return;
        }
        // Anything not flushed yet (a metadata change through a read-only
        // handle, a failed flush) goes up now; nobody is left to hear of a
        // failure but the log. The node keeps the open state meanwhile, so
        // an open now shares it rather than reading the store.
        if let Err(e) = self.upload(ino, &o) {
            tracing::error!(
                code = e.code.as_str(),
                path = e.resource.as_deref().unwrap_or("-"),
                "upload at the last close failed, the changes are lost: {}",
                e.message
            );
        }
        let mut t = lock(&self.tree);
        let drop_node = match t.nodes.get_mut(&ino) {
            // Unless it was opened again meanwhile.
            Some(n) if n.opens == 0 => {
                if n.open.as_ref().is_some_and(|x| Arc::ptr_eq(x, &o)) {
                    n.open = None;
                }
                n.lookups == 0
            }
            _ => false,
        };
        if drop_node {
            if let Some(n) = t.nodes.remove(&ino) {
                if t.inos.get(&n.path) == Some(&ino) {
                    t.inos.remove(&n.path);
                }
            }
        }
    }

    /// A handle on the open state of `ino`, if it has one: a change made
    /// through it (a chmod, an xattr) is then counted as a user of the
    /// state and goes up with its last release.
    pub(super) fn pin(&self, ino: u64) -> Option<(u64, Arc<OpenFile>)> {
        let o = {
            let mut t = lock(&self.tree);
            let n = t.nodes.get_mut(&ino)?;
            let o = n.open.clone()?;
            n.opens += 1;
            o
        };
        let fh = self
            .next_fh
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.handles).insert(fh, Handle::File(o.clone()));
        Some((fh, o))
    }

    /// Replaces an open file's copy with the same bytes encrypted per
    /// `sse`, recording `over` as its override (setfattr of an OSS name on
    /// a file), and uploads it.
    pub(super) fn reencrypt_open(
        &self,
        ino: u64,
        o: &OpenFile,
        sse: Option<&SseConfig>,
        over: Option<&SseConfig>,
        p: &Principal,
    ) -> Result<()> {
        let (path, _) = self.node(ino)?;
        let (b, _) = split(&path)?;
        {
            let mut g = o.write();
            let file = self.store.staging_file(&path)?;
            let chunk = self.engine.bucket_chunk_size(&b)?;
            let copy = file.try_clone().ctx(&path)?;
            let new = match &g.obj {
                Some(old) => {
                    let mut src = crate::engine::object_source(old);
                    self.engine
                        .encrypt_into(p, (sse, chunk), &mut src, &path, copy, &|_| {})?
                }
                None => self.engine.encrypt_into(
                    p,
                    (sse, chunk),
                    &mut |_| Ok(0),
                    &path,
                    copy,
                    &|_| {},
                )?,
            };
            let new = self.engine.track(new);
            g.file = file;
            g.obj = Some(new);
            g.meta.sse_override = over.cloned();
            g.meta.ctime = Some(now_pair());
            g.dirty = true;
        }
        self.upload(ino, o)
    }
}
