//! Object I/O through the mount: create, open, read, write, truncate, sync.
//! All handles of one inode share one `OpenObject`, so every reader and
//! writer sees the same size and bytes.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{errno, lock, os_err, sys, Attr, Fs, Handle, Kind, Node, Opened};
use crate::crypto::SecretKey;
use crate::engine::{Engine, ObjectFile};
use crate::error::Result;
use crate::format::{ChunkSize, Header};
use crate::principal::Principal;

/// The open state of one object.
pub struct OpenObject {
    state: RwLock<ObjState>,
    pub name: String,
}

pub(super) struct ObjState {
    pub(super) file: File,
    /// `None` while the backend file is empty (no header yet: a crash
    /// between a truncation and its new header leaves that state).
    pub(super) obj: Option<ObjectFile>,
    /// `file` holds a shared flock(2) because the object was opened for
    /// writing: `reencrypt` and `rewrap` (ops::claim) leave it alone until
    /// every handle is closed (closing `file` releases the lock).
    pub(super) shared_lock: bool,
    /// Bytes written sequentially through this object since its backend
    /// file's writeback was last started (see WRITEBACK_KICK), and where
    /// the last write ended.
    pub(super) unstarted: u64,
    pub(super) write_end: u64,
    /// A new object's header and data key, made when it was created (so
    /// that a KMS refusal fails the create and the rule then in force is
    /// the one used) but written only with its first byte (`Fs::begin`).
    /// A file closed empty stays an empty backend file without a header:
    /// no data block to allocate, write back and free again per empty
    /// file (issue 13: create and unlink at 1M files).
    pub(super) pending: Option<Box<(Header, SecretKey)>>,
}

/// After this many bytes written sequentially to an object, the backend's
/// writeback of the file is started (sync_file_range WRITE, which does not
/// wait). A large write then reaches the disk while it is still being
/// encrypted, instead of all at the fsync that ends it: below the dirty
/// background ratio (10% of RAM by default) the kernel would otherwise
/// start it only after 30 s. It changes no durability promise; an fsync
/// still waits for everything, and a failure is reported there.
const WRITEBACK_KICK: u64 = 8 << 20;

impl OpenObject {
    fn new(state: ObjState, name: String) -> OpenObject {
        OpenObject {
            state: RwLock::new(state),
            name,
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, ObjState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }
    pub(super) fn write_lock(&self) -> RwLockWriteGuard<'_, ObjState> {
        self.write()
    }
    fn write(&self) -> RwLockWriteGuard<'_, ObjState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn size(&self) -> u64 {
        self.read().obj.as_ref().map(|o| o.size()).unwrap_or(0)
    }
}

/// fallocate's request as both mounts take it: `Some(end)` for mode 0
/// (grow to at least `end`), `None` for KEEP_SIZE alone (a no-op: chunks
/// are sealed only when written), EOPNOTSUPP for anything else (no hole
/// punching), EFBIG past the largest offset.
pub(crate) fn fallocate_end(off: u64, len: u64, mode: i32) -> Result<Option<u64>> {
    match mode {
        libc::FALLOC_FL_KEEP_SIZE => Ok(None),
        0 => off
            .checked_add(len)
            .map(Some)
            .ok_or_else(|| errno(libc::EFBIG)),
        _ => Err(errno(libc::EOPNOTSUPP)),
    }
}

impl Fs {
    /// Starts a new upload in `st`: a fresh data key and header, encrypted
    /// per the object's override or else the bucket's current rule. On
    /// failure (e.g. a disabled key) the object is left as it was. A file
    /// just created has no override to look for.
    fn new_upload(
        &self,
        st: &mut ObjState,
        bucket: &crate::oss::BucketName,
        name: &str,
        p: &Principal,
    ) -> Result<()> {
        let over = Engine::read_override(&st.file, name)?;
        let (sse, chunk) = self
            .engine
            .upload_settings(bucket, over.as_ref())
            .map_err(|e| e.resource(name))?;
        let (header, key) = self
            .engine
            .new_header(p, sse.as_ref(), chunk)
            .map_err(|e| e.resource(name))?;
        let f = st.file.try_clone().map_err(os_err)?;
        st.pending = None;
        st.obj = Some(
            self.engine
                .track(ObjectFile::create(f, header, &key, name.to_owned())?),
        );
        Ok(())
    }

    /// Gives an object without a header (`obj` is `None`) its header before
    /// its first byte: the one made at its create if it has one, else a new
    /// upload (an empty file from an earlier mount, or a crash).
    fn begin(&self, ino: u64, st: &mut ObjState, name: &str, p: &Principal) -> Result<()> {
        if st.obj.is_some() {
            return Ok(());
        }
        let Some(pending) = st.pending.take() else {
            return self.start_upload(ino, st, name, p);
        };
        let (header, key) = *pending;
        let f = st.file.try_clone().map_err(os_err)?;
        st.obj = Some(
            self.engine
                .track(ObjectFile::create(f, header, &key, name.to_owned())?),
        );
        Ok(())
    }

    /// Creates a regular file (an object, with its header) and opens it.
    pub fn create_object(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        p: &Principal,
    ) -> Result<(u64, Attr)> {
        self.writable()?;
        let (pfd, prole) = self.node(parent)?;
        Self::check_new_name(&prole, name)?;
        let Some(bucket) = prole.bucket().cloned() else {
            return Err(errno(libc::EPERM));
        };
        let file = sys::open_at(
            pfd.as_raw_fd(),
            name,
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
            mode,
        )
        .map_err(os_err)?;
        let undo = || {
            let _ = sys::unlink_at(pfd.as_raw_fd(), name, 0);
        };
        let result = (|| {
            let (fd, stat) = self.own(pfd.as_raw_fd(), name, p.uid, p.gid)?;
            let fd = Arc::new(fd);
            let display = format!(
                "{}/{}",
                self.display_name(pfd.as_raw_fd()),
                name.to_string_lossy()
            );
            // Locked before it has a header: until then no operation
            // would touch it anyway.
            sys::flock(file.as_raw_fd(), libc::LOCK_SH).map_err(os_err)?;
            // The header and data key now (KMS checks and the rule in
            // force at creation), written with the first byte.
            let (sse, chunk) = self
                .engine
                .upload_settings(&bucket, None)
                .map_err(|e| e.resource(&display))?;
            let pending = self
                .engine
                .new_header(p, sse.as_ref(), chunk)
                .map_err(|e| e.resource(&display))?;
            let st = ObjState {
                file,
                obj: None,
                shared_lock: true,
                unstarted: 0,
                write_end: 0,
                pending: Some(Box::new(pending)),
            };
            let attr = self.register(fd.clone(), &stat, (parent, &prole), name)?;
            let open = Arc::new(OpenObject::new(st, display));
            Ok((attr, open, fd))
        })();
        let (attr, open, fd) = result.inspect_err(|_| undo())?;
        let _ = flags;
        let fh = self.attach(attr.ino, open, fd)?;
        Ok((fh, attr))
    }

    /// Registers a handle for `ino`'s shared open object. If another open
    /// of the inode registered its object since `open` was set up, the
    /// handle shares that one instead, so every handle sees one state.
    /// `fd`, the inode's O_PATH descriptor, stays pinned while it is open.
    fn attach(&self, ino: u64, open: Arc<OpenObject>, fd: Arc<OwnedFd>) -> Result<u64> {
        let open = {
            let mut nodes = lock(&self.nodes);
            let node: &mut Node = nodes.get_mut(&ino).ok_or_else(|| errno(libc::ESTALE))?;
            match &mut node.open {
                Some(o) => {
                    o.count += 1;
                    o.obj.clone()
                }
                None => {
                    node.open = Some(Box::new(Opened {
                        obj: open.clone(),
                        count: 1,
                        fd,
                    }));
                    open
                }
            }
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Handle::File(open));
        Ok(fh)
    }

    /// Opens a regular file. The data key is unwrapped for `p` on every open,
    /// so KMS state and kms:Decrypt are checked per opener.
    pub fn open(&self, ino: u64, flags: i32, p: &Principal) -> Result<u64> {
        // Opens of one inode run one at a time, and read the node only once
        // they run: the object an open shares, or sets up from the backend
        // file, is then the current one when its handle is registered. (An
        // open could register a view that had missed the writes of a handle
        // going away meanwhile, and whose next write sealed stale chunks
        // over them; or one set up on the file a re-encryption had just
        // replaced, whose writes were lost.)
        let _opening = lock(&self.open_locks[super::shard(ino)]);
        let (fd, role) = self.node(ino)?;
        let st = sys::stat_fd(fd.as_raw_fd()).map_err(os_err)?;
        let (fd, st) = self.current(ino, fd, st);
        if Kind::from_mode(st.st_mode) != Kind::File {
            return Err(errno(libc::EISDIR));
        }
        // O_TRUNC writes whatever the access mode says (it would start a
        // new upload below).
        if self.opts.read_only
            && (flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0)
        {
            return Err(errno(libc::EROFS));
        }
        if !self.opts.kernel_checks_permissions {
            let mut mask = match flags & libc::O_ACCMODE {
                libc::O_RDONLY => libc::R_OK,
                libc::O_WRONLY => libc::W_OK,
                _ => libc::R_OK | libc::W_OK,
            };
            if flags & libc::O_TRUNC != 0 {
                mask |= libc::W_OK;
            }
            if !super::may(&st, mask, p) {
                return Err(errno(libc::EACCES));
            }
        }
        // With FUSE_ATOMIC_O_TRUNC the kernel leaves the truncation of any
        // open(O_TRUNC) to us, whatever the access mode (it has already
        // checked write permission), and skips its own setattr.
        let truncating = flags & libc::O_TRUNC != 0;
        if truncating && flags & libc::O_ACCMODE == libc::O_RDONLY && self.running(ino) {
            // The kernel refuses to truncate a running program (ETXTBSY),
            // but for a read-only open it checks only after this OPEN, which
            // with FUSE_ATOMIC_O_TRUNC has truncated already: the program
            // died of SIGBUS and the failed open(2) had emptied the file.
            // (Opens for writing are refused before they reach us.)
            return Err(errno(libc::ETXTBSY));
        }
        if truncating {
            self.kill_setid(ino, p, false)?;
        }
        let existing = lock(&self.nodes)
            .get(&ino)
            .and_then(|n| n.open.as_ref().map(|o| o.obj.clone()));
        let open = match existing {
            Some(o) => {
                // Check this opener's right to the key (an overwrite with
                // O_TRUNC never reads the old data, so it needs none).
                let g = o.read();
                if let (Some(obj), false) = (&g.obj, truncating) {
                    self.engine
                        .unwrap_key(p, obj.header())
                        .map_err(|e| e.resource(&o.name))?;
                }
                drop(g);
                o
            }
            None => {
                let name = self.display_name(fd.as_raw_fd());
                let file = sys::reopen(fd.as_raw_fd(), libc::O_RDWR)
                    .or_else(|_| sys::reopen(fd.as_raw_fd(), libc::O_RDONLY))
                    .map_err(os_err)?;
                let len = file.metadata().map_err(os_err)?.len();
                let obj = if len == 0 || truncating {
                    // Empty, or about to be truncated to a new upload: as in
                    // OSS, overwriting an object needs no access to the old one.
                    None
                } else {
                    let b = role.bucket().ok_or_else(|| errno(libc::EPERM))?;
                    Some(self.engine.open_object(
                        p,
                        file.try_clone().map_err(os_err)?,
                        name.clone(),
                        self.engine.bucket_chunk_size(b)?,
                    )?)
                };
                Arc::new(OpenObject::new(
                    ObjState {
                        file,
                        obj,
                        shared_lock: false,
                        unstarted: 0,
                        write_end: 0,
                        pending: None,
                    },
                    name,
                ))
            }
        };
        let fh = self.attach(ino, open, fd)?;
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY || truncating;
        if writing {
            // On the object the handle got (attach may have swapped it).
            let open = self.handle(fh)?;
            let prepared = Self::lock_for_writing(&open).and_then(|()| {
                if !truncating {
                    return Ok(());
                }
                // FUSE_ATOMIC_O_TRUNC: the kernel leaves O_TRUNC to us. It is
                // a new upload: fresh data key, the override or the current
                // rule.
                let mut g = open.write();
                self.start_upload(ino, &mut g, &open.name, p)
            });
            if let Err(e) = prepared {
                self.release(ino, fh);
                return Err(e);
            }
        }
        Ok(fh)
    }

    /// Takes the shared flock(2) of an object opened for writing, waiting
    /// while `reencrypt` or `rewrap` replaces it. If it was replaced (or
    /// unlinked) meanwhile, our file is no longer the object: ESTALE makes
    /// the kernel look the name up again and open the new file (open(2)
    /// retries once with LOOKUP_REVAL).
    fn lock_for_writing(open: &OpenObject) -> Result<()> {
        let mut g = open.write();
        if g.shared_lock {
            return Ok(());
        }
        sys::flock(g.file.as_raw_fd(), libc::LOCK_SH).map_err(os_err)?;
        if g.file.metadata().map_err(os_err)?.nlink() == 0 {
            sys::flock(g.file.as_raw_fd(), libc::LOCK_UN).map_err(os_err)?;
            return Err(errno(libc::ESTALE));
        }
        g.shared_lock = true;
        Ok(())
    }

    fn handle(&self, fh: u64) -> Result<Arc<OpenObject>> {
        match lock(&self.handles).get(&fh) {
            Some(Handle::File(o)) => Ok(o.clone()),
            _ => Err(errno(libc::EBADF)),
        }
    }

    pub fn read(&self, fh: u64, off: u64, size: u32) -> Result<Vec<u8>> {
        self.read_with(fh, off, size, |d| d.to_vec())
    }

    /// Reads into a buffer reused by the calling thread and hands the bytes
    /// to `f` (the FUSE reply): no allocation, page faults or zeroing of a
    /// fresh 1 MiB buffer per request (`ObjectFile::read_with`).
    pub fn read_with<R>(
        &self,
        fh: u64,
        off: u64,
        size: u32,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<R> {
        let o = self.handle(fh)?;
        let g = o.read();
        let Some(obj) = &g.obj else {
            return Ok(f(&[]));
        };
        obj.read_with(off, size as usize, f)
    }

    /// Writes at `off`. `kill_setid`: the kernel's FUSE_WRITE_KILL_SUIDGID,
    /// set when the writer lacks CAP_FSETID.
    pub fn write(
        &self,
        ino: u64,
        fh: u64,
        off: u64,
        data: &[u8],
        kill_setid: bool,
        p: &Principal,
    ) -> Result<u32> {
        self.writable()?;
        if kill_setid {
            self.kill_setid(ino, p, true)?;
        }
        let o = self.handle(fh)?;
        let mut g = o.write();
        self.begin(ino, &mut g, &o.name, p)?;
        let obj = g.obj.as_mut().ok_or_else(|| errno(libc::EIO))?;
        obj.write_at(off, data)?;
        // Random writes are left to the kernel: starting writeback of
        // scattered pages would only add disk traffic.
        let end = off + data.len() as u64;
        g.unstarted = if off == g.write_end {
            g.unstarted + data.len() as u64
        } else {
            0
        };
        g.write_end = end;
        if g.unstarted >= WRITEBACK_KICK {
            g.unstarted = 0;
            // Only a head start for the disk: on failure the fsync or the
            // kernel's own writeback later does the same work.
            let _ = sys::start_writeback(g.file.as_raw_fd());
        }
        Ok(data.len() as u32)
    }

    fn start_upload(&self, ino: u64, st: &mut ObjState, name: &str, p: &Principal) -> Result<()> {
        let (_, role) = self.node(ino)?;
        let Some(bucket) = role.bucket() else {
            return Err(errno(libc::EPERM));
        };
        self.new_upload(st, bucket, name, p)
    }

    /// Sets the size. Truncation to zero is a new upload (new data key, the
    /// current rule); other sizes keep the object's key.
    pub fn truncate(&self, ino: u64, fh: Option<u64>, size: u64, p: &Principal) -> Result<()> {
        self.writable()?;
        self.kill_setid(ino, p, false)?;
        let o = match fh.and_then(|f| self.handle(f).ok()) {
            Some(o) => o,
            None => {
                let fh = self.open(ino, libc::O_RDWR, p)?;
                let o = self.handle(fh);
                self.release(ino, fh);
                o?
            }
        };
        let mut g = o.write();
        if size == 0 {
            return self.start_upload(ino, &mut g, &o.name, p);
        }
        self.begin(ino, &mut g, &o.name, p)?;
        let obj = g.obj.as_mut().ok_or_else(|| errno(libc::EIO))?;
        obj.set_len(size)
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        let o = self.handle(fh)?;
        let g = o.read();
        if datasync {
            g.file.sync_data().map_err(os_err)
        } else {
            g.file.sync_all().map_err(os_err)
        }
    }

    /// fallocate: mode 0 grows the file (the new range reads as zeros);
    /// KEEP_SIZE alone is accepted as a no-op, since chunks are sealed only
    /// when written. Hole punching is not supported.
    pub fn fallocate(
        &self,
        ino: u64,
        fh: u64,
        off: u64,
        len: u64,
        mode: i32,
        p: &Principal,
    ) -> Result<()> {
        self.writable()?;
        let Some(end) = fallocate_end(off, len, mode)? else {
            return Ok(());
        };
        self.kill_setid(ino, p, false)?;
        let o = self.handle(fh)?;
        let mut g = o.write();
        self.begin(ino, &mut g, &o.name, p)?;
        let obj = g.obj.as_mut().ok_or_else(|| errno(libc::EIO))?;
        if end > obj.size() {
            obj.set_len(end)?;
        }
        Ok(())
    }

    /// copy_file_range through the objects (decrypt, then encrypt under the
    /// destination's key).
    #[allow(clippy::too_many_arguments)]
    pub fn copy_range(
        &self,
        fh_in: u64,
        off_in: u64,
        ino_out: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
        p: &Principal,
    ) -> Result<u32> {
        let len = len.min(1 << 24) as u32;
        let data = self.read(fh_in, off_in, len)?;
        if data.is_empty() {
            return Ok(0);
        }
        // No kill flag comes with this request: the VFS rule applies.
        self.kill_setid(ino_out, p, false)?;
        self.write(ino_out, fh_out, off_out, &data, false, p)
    }

    pub fn release(&self, ino: u64, fh: u64) {
        lock(&self.handles).remove(&fh);
        let mut nodes = lock(&self.nodes);
        let Some(node) = nodes.get_mut(&ino) else {
            return;
        };
        if let Some(o) = &mut node.open {
            o.count -= 1;
            if o.count == 0 {
                node.open = None;
                if node.lookups == 0 {
                    self.remove_node(&mut nodes, ino);
                }
            }
        }
    }

    /// Inodes of open SSE-KMS objects whose CMK can no longer be used. Reads
    /// reaching the daemon check the key themselves, but the kernel keeps
    /// serving pages it has cached: the FUSE layer drops those pages for
    /// these inodes whenever the keystore changes.
    pub fn open_inodes_with_unusable_keys(&self) -> Vec<u64> {
        let open: Vec<(u64, Arc<OpenObject>)> = lock(&self.nodes)
            .iter()
            .filter_map(|(ino, n)| n.open.as_ref().map(|o| (*ino, o.obj.clone())))
            .collect();
        open.into_iter()
            .filter(|(_, o)| {
                let g = o.read();
                g.obj.as_ref().is_some_and(|obj| {
                    let h = obj.header();
                    h.method == crate::format::Method::Kms
                        && self.engine.kms().check_cmk_usable(&h.key_id, 0).is_err()
                })
            })
            .map(|(ino, _)| ino)
            .collect()
    }

    /// Points an open object at its backend file again after the file was
    /// replaced (re-encryption renames a new file over it); `chunk` is its
    /// bucket's chunk size.
    pub(super) fn refill(
        &self,
        fd: std::os::fd::RawFd,
        st: &mut ObjState,
        (name, chunk): (&str, ChunkSize),
        p: &Principal,
    ) -> Result<()> {
        let file = sys::reopen(fd, libc::O_RDWR).map_err(os_err)?;
        if st.shared_lock {
            sys::flock(file.as_raw_fd(), libc::LOCK_SH).map_err(os_err)?;
        }
        let len = file.metadata().map_err(os_err)?.len();
        // The header made at its create no longer applies to the new file.
        st.pending = None;
        st.obj = if len == 0 {
            None
        } else {
            Some(self.engine.open_object(
                p,
                file.try_clone().map_err(os_err)?,
                name.to_owned(),
                chunk,
            )?)
        };
        st.file = file;
        Ok(())
    }
}
