//! Object I/O through the mount: create, open, read, write, truncate, sync.
//! All handles of one inode share one `OpenObject`, so every reader and
//! writer sees the same size and bytes.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{errno, lock, os_err, sys, Attr, Fs, Handle, Kind, Node};
use crate::engine::{Engine, ObjectFile};
use crate::error::Result;
use crate::kms::Principal;

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
}

impl OpenObject {
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

impl Fs {
    /// Starts a new upload in `st`: a fresh data key and header, encrypted
    /// per the object's override or else the bucket's current rule. On
    /// failure (e.g. a disabled key) the object is left as it was.
    fn new_upload(
        &self,
        st: &mut ObjState,
        bucket_dir: &std::path::Path,
        name: &str,
        p: &Principal,
    ) -> Result<()> {
        let over = Engine::read_override(&st.file, name)?;
        let sse = self.engine.effective_sse(bucket_dir, over.as_ref())?;
        let (header, key) = self
            .engine
            .new_header(p, sse.as_ref())
            .map_err(|e| e.resource(name))?;
        let f = st.file.try_clone().map_err(os_err)?;
        st.obj = Some(
            ObjectFile::create(f, header, &key, name.to_owned())?.with_cache(self.engine.cache()),
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
            self.give_to(pfd.as_raw_fd(), name, p.uid, p.gid)?;
            let display = format!(
                "{}/{}",
                self.display_name(pfd.as_raw_fd()),
                name.to_string_lossy()
            );
            let mut st = ObjState { file, obj: None };
            self.new_upload(&mut st, &self.bucket_dir(&bucket), &display, p)?;
            let attr = self.remember(pfd.as_raw_fd(), &prole, name)?;
            let open = Arc::new(OpenObject {
                state: RwLock::new(st),
                name: display,
            });
            Ok((attr, open))
        })();
        let (attr, open) = result.inspect_err(|_| undo())?;
        let _ = flags;
        let fh = self.attach(attr.ino, open)?;
        Ok((fh, attr))
    }

    /// Registers a handle for `ino`'s shared open object. If another open
    /// of the inode registered its object since `open` was set up, the
    /// handle shares that one instead, so every handle sees one state.
    fn attach(&self, ino: u64, open: Arc<OpenObject>) -> Result<u64> {
        let open = {
            let mut nodes = lock(&self.nodes);
            let node: &mut Node = nodes.get_mut(&ino).ok_or_else(|| errno(libc::ESTALE))?;
            match &mut node.open {
                Some((o, n)) => {
                    *n += 1;
                    o.clone()
                }
                None => {
                    node.open = Some((open.clone(), 1));
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
        let _opening = lock(&self.open_locks[(ino % super::OPEN_LOCKS as u64) as usize]);
        let (fd, role) = self.node(ino)?;
        let st = sys::stat_fd(fd.as_raw_fd()).map_err(os_err)?;
        if Kind::from_mode(st.st_mode) != Kind::File {
            return Err(errno(libc::EISDIR));
        }
        if self.opts.read_only && flags & libc::O_ACCMODE != libc::O_RDONLY {
            return Err(errno(libc::EROFS));
        }
        // With FUSE_ATOMIC_O_TRUNC the kernel leaves the truncation of any
        // open(O_TRUNC) to us, whatever the access mode (it has already
        // checked write permission), and skips its own setattr.
        let truncating = flags & libc::O_TRUNC != 0;
        let existing = lock(&self.nodes)
            .get(&ino)
            .and_then(|n| n.open.as_ref().map(|(o, _)| o.clone()));
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
                    Some(self.engine.open_object(
                        p,
                        file.try_clone().map_err(os_err)?,
                        name.clone(),
                    )?)
                };
                Arc::new(OpenObject {
                    state: RwLock::new(ObjState { file, obj }),
                    name,
                })
            }
        };
        let _ = role;
        let fh = self.attach(ino, open)?;
        if truncating {
            // FUSE_ATOMIC_O_TRUNC: the kernel leaves O_TRUNC to us. It is a
            // new upload: fresh data key, the override or the current rule.
            // On the object the handle got (attach may have swapped it).
            let open = self.handle(fh)?;
            let mut g = open.write();
            if let Err(e) = self.start_upload(ino, &mut g, &open.name, p) {
                drop(g);
                self.release(ino, fh);
                return Err(e);
            }
        }
        Ok(fh)
    }

    fn handle(&self, fh: u64) -> Result<Arc<OpenObject>> {
        match lock(&self.handles).get(&fh) {
            Some(Handle::File(o)) => Ok(o.clone()),
            _ => Err(errno(libc::EBADF)),
        }
    }

    pub fn read(&self, fh: u64, off: u64, size: u32) -> Result<Vec<u8>> {
        let o = self.handle(fh)?;
        let g = o.read();
        let Some(obj) = &g.obj else {
            return Ok(Vec::new());
        };
        let want = (size as u64).min(obj.size().saturating_sub(off)) as usize;
        let mut buf = vec![0u8; want];
        let n = obj.read_at(off, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    pub fn write(&self, ino: u64, fh: u64, off: u64, data: &[u8], p: &Principal) -> Result<u32> {
        self.writable()?;
        let o = self.handle(fh)?;
        let mut g = o.write();
        if g.obj.is_none() {
            self.start_upload(ino, &mut g, &o.name, p)?;
        }
        let obj = g.obj.as_mut().ok_or_else(|| errno(libc::EIO))?;
        obj.write_at(off, data)?;
        Ok(data.len() as u32)
    }

    fn start_upload(&self, ino: u64, st: &mut ObjState, name: &str, p: &Principal) -> Result<()> {
        let (_, role) = self.node(ino)?;
        let Some(bucket) = role.bucket() else {
            return Err(errno(libc::EPERM));
        };
        self.new_upload(st, &self.bucket_dir(bucket), name, p)
    }

    /// Sets the size. Truncation to zero is a new upload (new data key, the
    /// current rule); other sizes keep the object's key.
    pub fn truncate(&self, ino: u64, fh: Option<u64>, size: u64, p: &Principal) -> Result<()> {
        self.writable()?;
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
        if g.obj.is_none() {
            self.start_upload(ino, &mut g, &o.name, p)?;
        }
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
        if mode == libc::FALLOC_FL_KEEP_SIZE {
            return Ok(());
        }
        if mode != 0 {
            return Err(errno(libc::EOPNOTSUPP));
        }
        let o = self.handle(fh)?;
        let mut g = o.write();
        if g.obj.is_none() {
            self.start_upload(ino, &mut g, &o.name, p)?;
        }
        let obj = g.obj.as_mut().ok_or_else(|| errno(libc::EIO))?;
        let end = off.checked_add(len).ok_or_else(|| errno(libc::EFBIG))?;
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
        self.write(ino_out, fh_out, off_out, &data, p)
    }

    pub fn release(&self, ino: u64, fh: u64) {
        lock(&self.handles).remove(&fh);
        let mut nodes = lock(&self.nodes);
        let Some(node) = nodes.get_mut(&ino) else {
            return;
        };
        if let Some((_, n)) = &mut node.open {
            *n -= 1;
            if *n == 0 {
                node.open = None;
                if node.lookups == 0 {
                    nodes.remove(&ino);
                    self.unalias(ino);
                }
            }
        }
    }

    /// Points an open object at its backend file again after the file was
    /// replaced (re-encryption renames a new file over it).
    pub(super) fn refill(
        &self,
        fd: std::os::fd::RawFd,
        st: &mut ObjState,
        name: &str,
        p: &Principal,
    ) -> Result<()> {
        let file = sys::reopen(fd, libc::O_RDWR).map_err(os_err)?;
        let len = file.metadata().map_err(os_err)?.len();
        st.obj = if len == 0 {
            None
        } else {
            Some(
                self.engine
                    .open_object(p, file.try_clone().map_err(os_err)?, name.to_owned())?,
            )
        };
        st.file = file;
        Ok(())
    }
}
