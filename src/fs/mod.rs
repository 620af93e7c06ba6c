//! The filesystem core: POSIX operations on buckets and objects, testable
//! without a mount. The FUSE adapter (`crate::fuse`) only translates kernel
//! requests into these calls and results back into replies.
//!
//! Inodes are the backend's own: each known inode is named by its file
//! handle, or held as an O_PATH descriptor where it cannot be (see
//! `inodes`), so renames and hard links need no path bookkeeping. The mount
//! root is the data directory; its entries are buckets; below a bucket
//! everything is an ordinary POSIX tree whose regular files are objects.

mod attr;
mod inodes;
mod io;
#[cfg(test)]
mod model_tests;
mod sys;
#[cfg(test)]
mod tests;
mod xattrs;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::Ident;
use crate::engine::{Engine, BUCKET_SETTINGS, STATE_DIR};
use crate::error::{Error, OssCode, Result};
use crate::kms::Principal;
use crate::oss::{BucketName, RESERVED_PREFIX};

pub use attr::{AttrChanges, SetTime};
pub use inodes::DEFAULT_MAX_INODES;
pub use io::OpenObject;

use inodes::{Backing, FdCache, FileHandle, Node, Opened};

/// FUSE's root inode number.
pub const ROOT_INO: u64 = 1;

/// The mode the mount root shows (see `Fs::attr_of`).
const ROOT_MODE: u16 = 0o755;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl Kind {
    fn from_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            _ => Kind::File,
        }
    }
}

/// What `stat` shows for an inode. Regular files show their plaintext size.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub kind: Kind,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
}

fn ts(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

/// Where an inode sits in the namespace.
#[derive(Debug, Clone)]
pub enum Role {
    /// The mount root: the data directory.
    Root,
    /// A bucket's top directory.
    Bucket(Arc<BucketName>),
    /// Anything below a bucket.
    InBucket(Arc<BucketName>),
}

impl Role {
    pub fn bucket(&self) -> Option<&Arc<BucketName>> {
        match self {
            Role::Root => None,
            Role::Bucket(b) | Role::InBucket(b) => Some(b),
        }
    }
}

enum Handle {
    File(Arc<OpenObject>),
    Dir(Vec<(u64, Kind, OsString)>),
}

/// Mount-wide settings the core needs.
#[derive(Debug, Clone)]
pub struct FsOptions {
    pub read_only: bool,
    /// The kernel checks mode bits (FUSE default_permissions); otherwise
    /// `access` and `open` check them here.
    pub kernel_checks_permissions: bool,
    /// The mount's device number (major, minor), set by the FUSE layer
    /// once mounted; `open` looks for programs running from the mount by it.
    pub mount_dev: Arc<OnceLock<(u32, u32)>>,
    /// Known inodes past which the kernel is asked to forget the least
    /// recently used (see `inodes`).
    pub max_inodes: usize,
}

pub struct Fs {
    engine: Arc<Engine>,
    opts: FsOptions,
    root_backend_ino: u64,
    nodes: Mutex<HashMap<u64, Node>>,
    /// Signalled (with `nodes`) when more than `max_inodes` are known.
    over_full: Condvar,
    /// Descriptors of handle-backed nodes. Lock order: `nodes` before it.
    fds: FdCache,
    /// The data directory opened for open_by_handle_at, and its device;
    /// `None` where handles cannot be used (see `inodes`).
    handle_root: Option<(File, u64)>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    running_as_root: bool,
    /// FUSE inode numbers kept across re-encryptions. Lock order: `nodes`
    /// before `aliases`.
    aliases: Mutex<Aliases>,
    /// open() of one inode at a time (sharded by inode number).
    open_locks: [Mutex<()>; OPEN_LOCKS],
    /// chmod and the clearing of set-id bits, one at a time per inode
    /// (sharded), so that neither undoes the other.
    mode_locks: [Mutex<()>; OPEN_LOCKS],
}

/// A re-encryption renames a new backend file over an object, so its backend
/// inode number changes while the kernel keeps the old one (K). The new
/// number maps to K here. Until the kernel forgets K, the backend inode
/// numbered K stays open (pinned): were it freed, the backend could give K
/// to a new file, which would then be taken for this object.
#[derive(Default)]
struct Aliases {
    /// Backend inode -> FUSE inode.
    fuse_of: HashMap<u64, u64>,
    /// FUSE inode -> its current backend inode and the pinned inode K.
    pinned: HashMap<u64, (u64, Arc<OwnedFd>)>,
}

impl Aliases {
    /// FUSE inode `fuse` now lives in backend inode `backend`; `old` is the
    /// backend file it replaced.
    fn moved(&mut self, fuse: u64, backend: u64, old: Arc<OwnedFd>) {
        let pin = match self.pinned.remove(&fuse) {
            Some((prev, pin)) => {
                self.fuse_of.remove(&prev);
                pin
            }
            None => old,
        };
        self.fuse_of.insert(backend, fuse);
        self.pinned.insert(fuse, (backend, pin));
    }

    /// The kernel forgot `fuse`: its backend inode has its own number again.
    fn forgotten(&mut self, fuse: u64) {
        if let Some((backend, _pin)) = self.pinned.remove(&fuse) {
            self.fuse_of.remove(&backend);
        }
    }
}

const OPEN_LOCKS: usize = 16;

fn os_err(e: std::io::Error) -> Error {
    let mut err = Error::new(OssCode::InternalError, e.to_string());
    err.os_errno = Some(e.raw_os_error().unwrap_or(libc::EIO));
    err
}

pub(crate) fn errno(n: i32) -> Error {
    os_err(std::io::Error::from_raw_os_error(n))
}

/// The lock shard (of `open_locks`, `mode_locks`) of inode `ino`.
fn shard(ino: u64) -> usize {
    (ino % OPEN_LOCKS as u64) as usize
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain maps that stay consistent
    // (every update is a single insert/remove), so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fs {
    pub fn new(engine: Arc<Engine>, opts: FsOptions) -> Result<Fs> {
        let dir = engine.data_dir().to_path_buf();
        let fd = sys::open_path(libc::AT_FDCWD, dir.as_os_str()).map_err(os_err)?;
        let st = sys::stat_fd(fd.as_raw_fd()).map_err(os_err)?;
        let handle_root = Self::handle_root(&fd, &st);
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT_INO,
            Node {
                backing: Backing::Fd(Arc::new(fd)),
                role: Role::Root,
                link: None,
                lookups: 1,
                open: None,
                recent: true,
                dir: true,
            },
        );
        let cache = inodes::cache_size(sys::fd_limit());
        tracing::debug!(descriptors = cache.get(), "descriptor cache");
        Ok(Fs {
            engine,
            opts,
            root_backend_ino: st.st_ino,
            nodes: Mutex::new(nodes),
            over_full: Condvar::new(),
            fds: FdCache::new(cache),
            handle_root,
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            aliases: Mutex::new(Aliases::default()),
            open_locks: [const { Mutex::new(()) }; OPEN_LOCKS],
            mode_locks: [const { Mutex::new(()) }; OPEN_LOCKS],
            running_as_root: nix::unistd::geteuid().is_root(),
        })
    }

    /// The data directory opened for open_by_handle_at (which refuses an
    /// O_PATH descriptor), if its filesystem makes handles and the daemon
    /// may open them: tried once on the directory itself. Otherwise every
    /// node keeps a descriptor, as before issue 13, and the log says so.
    fn handle_root(fd: &OwnedFd, st: &libc::stat) -> Option<(File, u64)> {
        let tried = sys::handle_of(fd.as_raw_fd()).and_then(|h| {
            let h = FileHandle::from_raw(&h);
            let dir = sys::reopen(fd.as_raw_fd(), libc::O_RDONLY | libc::O_DIRECTORY)?;
            let again = sys::open_handle(dir.as_raw_fd(), h.ty(), h.bytes())?;
            let ast = sys::stat_fd(again.as_raw_fd())?;
            if (ast.st_dev, ast.st_ino) != (st.st_dev, st.st_ino) {
                return Err(std::io::Error::from_raw_os_error(libc::ESTALE));
            }
            Ok(dir)
        });
        match tried {
            Ok(dir) => Some((dir, st.st_dev)),
            Err(e) => {
                tracing::warn!(
                    "file handles unavailable on the data directory ({e}): one descriptor per known inode, so trees larger than the open-file limit fail with EMFILE"
                );
                None
            }
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Backend inode number to FUSE inode number (the root is always 1).
    fn fuse_ino(&self, backend: u64) -> u64 {
        if let Some(&ino) = lock(&self.aliases).fuse_of.get(&backend) {
            return ino;
        }
        if backend == self.root_backend_ino {
            ROOT_INO
        } else if backend == ROOT_INO {
            self.root_backend_ino
        } else {
            backend
        }
    }

    /// Where the inode was last seen by name (see `Node::link`).
    fn link_of(&self, ino: u64) -> Option<(u64, OsString)> {
        let nodes = lock(&self.nodes);
        let (parent, name) = nodes.get(&ino)?.link.as_ref()?;
        Some((*parent, name.to_os_string()))
    }

    /// The backend inode number of FUSE inode `fuse` when it is its own
    /// (not an alias): `fuse_ino` backwards.
    fn backend_ino(&self, fuse: u64) -> u64 {
        if fuse == self.root_backend_ino {
            ROOT_INO
        } else if fuse == ROOT_INO {
            self.root_backend_ino
        } else {
            fuse
        }
    }

    /// A descriptor of the node's backend inode, and its role.
    fn node(&self, ino: u64) -> Result<(Arc<OwnedFd>, Role)> {
        let (handle, role) = {
            let mut nodes = lock(&self.nodes);
            let Some(n) = nodes.get_mut(&ino) else {
                // The kernel never uses an inode it has forgotten: a
                // lookup count went wrong somewhere.
                tracing::warn!(ino, "a request for an inode the daemon does not know");
                return Err(errno(libc::ESTALE));
            };
            n.recent = true;
            let handle = match (&n.backing, &n.open) {
                (Backing::Fd(fd), _) => return Ok((fd.clone(), n.role.clone())),
                (Backing::Handle(_), Some(o)) => return Ok((o.fd.clone(), n.role.clone())),
                (Backing::Handle(h), None) => h.clone(),
            };
            if let Some(fd) = self.fds.get(ino) {
                return Ok((fd, n.role.clone()));
            }
            (handle, n.role.clone())
        };
        let fd = match self.open_handle(ino, &handle) {
            Ok(fd) => fd,
            Err(e) if e.os_errno == Some(libc::ESTALE) => self.open_by_link(ino).ok_or(e)?,
            Err(e) => return Err(e),
        };
        let fd = Arc::new(fd);
        // Cached only if the node still stands for this handle: one
        // forgotten or re-pointed meanwhile must not leave a descriptor
        // behind (it would keep an unlinked file's space until evicted).
        let nodes = lock(&self.nodes);
        if let Some(n) = nodes.get(&ino) {
            if matches!(&n.backing, Backing::Handle(h) if *h == handle) {
                self.fds.put(ino, fd.clone());
            }
        }
        Ok((fd, role))
    }

    /// Opens a node's handle and checks that it is still the inode recorded
    /// for it (see `inodes` on confinement): anything else is ESTALE.
    fn open_handle(&self, ino: u64, h: &FileHandle) -> Result<OwnedFd> {
        let (root, dev) = self
            .handle_root
            .as_ref()
            .ok_or_else(|| errno(libc::ESTALE))?;
        let stale = |e: std::io::Error| match e.raw_os_error() {
            // ENOENT: some filesystems say so for a freed inode.
            Some(libc::ESTALE | libc::ENOENT) => errno(libc::ESTALE),
            _ => os_err(e),
        };
        let fd = sys::open_handle(root.as_raw_fd(), h.ty(), h.bytes()).map_err(|e| {
            tracing::debug!(ino, "open_by_handle_at: {e}");
            stale(e)
        })?;
        let st = sys::stat_fd(fd.as_raw_fd()).map_err(os_err)?;
        if (st.st_dev, st.st_ino) != (*dev, self.backend_ino(ino)) {
            tracing::warn!(ino, "a file handle opened another inode than recorded");
            return Err(errno(libc::ESTALE));
        }
        Ok(fd)
    }

    /// The node's inode found again by the name it was last seen under,
    /// beneath its directory's descriptor, when its handle would not open.
    /// ext4 with inline_data fails to reconnect some directory handles
    /// (measured: ESTALE for a directory that exists, once the backend's
    /// dentries were dropped), so a handle's failure alone does not make a
    /// node stale. The same identity check as for handles applies.
    fn open_by_link(&self, ino: u64) -> Option<OwnedFd> {
        let (parent, name) = self.link_of(ino)?;
        if parent == ino {
            return None;
        }
        let (pfd, _) = self.node(parent).ok()?;
        let fd = sys::open_path(pfd.as_raw_fd(), &name).ok()?;
        let st = sys::stat_fd(fd.as_raw_fd()).ok()?;
        let dev = self.handle_root.as_ref()?.1;
        ((st.st_dev, st.st_ino) == (dev, self.backend_ino(ino))).then_some(fd)
    }

    /// How a new node with descriptor `fd` and stat `st` reaches its
    /// inode: by handle where it can (the descriptor then goes to the
    /// cache), else by keeping the descriptor.
    fn backing_for(&self, ino: u64, fd: Arc<OwnedFd>, st: &libc::stat) -> Backing {
        let on_root_fs = matches!(&self.handle_root, Some((_, dev)) if *dev == st.st_dev);
        if on_root_fs && self.fuse_ino(st.st_ino) == ino && ino != ROOT_INO {
            if let Ok(h) = sys::handle_of(fd.as_raw_fd()) {
                self.fds.put(ino, fd);
                return Backing::Handle(FileHandle::from_raw(&h));
            }
        }
        Backing::Fd(fd)
    }

    /// The attributes of an inode with stat `st` and role `role`. An
    /// object's size comes from its file length and its bucket's chunk size
    /// (FORMAT.md §3.2), never from opening it: that keeps `ls -l` to one
    /// stat per object (the bucket's settings file is checked at most once
    /// a second for it).
    fn attr_of(&self, st: &libc::stat, role: &Role) -> Result<Attr> {
        let kind = Kind::from_mode(st.st_mode);
        let size = match (kind, role) {
            (Kind::File, Role::InBucket(b)) => {
                let chunk = self
                    .engine
                    .chunk_size_for_stat(&self.bucket_dir(b))
                    .map_err(|e| e.resource(b.as_str()))?;
                // A length no object has shows the whole chunks before the
                // damaged tail; reads of the tail fail with EIO.
                chunk.shown_len(st.st_size as u64).0
            }
            _ => st.st_size as u64,
        };
        Ok(Attr {
            ino: self.fuse_ino(st.st_ino),
            size,
            blocks: st.st_blocks as u64,
            atime: ts(st.st_atime, st.st_atime_nsec),
            mtime: ts(st.st_mtime, st.st_mtime_nsec),
            ctime: ts(st.st_ctime, st.st_ctime_nsec),
            kind,
            perm: match role {
                // The data directory is private on the backend (0700, so no
                // local user can reach or swap what it holds); through the
                // mount its root is the list of buckets, open to all, as a
                // new directory would be. It cannot be changed (EPERM).
                Role::Root => ROOT_MODE,
                _ => (st.st_mode & 0o7777) as u16,
            },
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: 4096,
        })
    }

    /// Names that are not part of the namespace: the state directory at the
    /// root, anything not a bucket name at the root, reserved names below.
    fn hidden(role: &Role, name: &OsStr) -> bool {
        match role {
            Role::Root => name
                .to_str()
                .map(|s| BucketName::parse(s).is_err())
                .unwrap_or(true),
            _ => name.as_bytes().starts_with(RESERVED_PREFIX.as_bytes()),
        }
    }

    /// The role of a child of a node with role `parent`.
    fn child_role(parent: &Role, name: &OsStr) -> Result<Role> {
        Ok(match parent {
            Role::Root => {
                let s = name.to_str().ok_or_else(|| errno(libc::ENOENT))?;
                Role::Bucket(Arc::new(
                    BucketName::parse(s).map_err(|_| errno(libc::ENOENT))?,
                ))
            }
            Role::Bucket(b) | Role::InBucket(b) => Role::InBucket(b.clone()),
        })
    }

    /// Registers (or re-counts) the inode `name` in `parent_fd` and returns its attr.
    fn remember(
        &self,
        (parent, parent_fd, parent_role): (u64, RawFd, &Role),
        name: &OsStr,
    ) -> Result<Attr> {
        let fd = sys::open_path(parent_fd, name).map_err(os_err)?;
        let st = sys::stat_fd(fd.as_raw_fd()).map_err(os_err)?;
        self.register(Arc::new(fd), &st, (parent, parent_role), name)
    }

    /// Registers (or re-counts) the inode held by `fd`, whose stat is `st`.
    fn register(
        &self,
        fd: Arc<OwnedFd>,
        st: &libc::stat,
        (parent, parent_role): (u64, &Role),
        name: &OsStr,
    ) -> Result<Attr> {
        let role = Self::child_role(parent_role, name)?;
        if matches!(role, Role::Bucket(_)) && Kind::from_mode(st.st_mode) != Kind::Dir {
            return Err(errno(libc::ENOENT));
        }
        let attr = self.attr_of(st, &role)?;
        let link = Some((parent, name.to_os_string().into_boxed_os_str()));
        let mut nodes = lock(&self.nodes);
        match nodes.entry(attr.ino) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let n = e.get_mut();
                n.lookups += 1;
                n.link = link;
                n.recent = true;
                if let Backing::Handle(h) = &n.backing {
                    // The same inode number on the same filesystem, but a
                    // different handle: the inode the node named was freed
                    // (nothing held it) and its number reused. The node
                    // now stands for the new file, as it would have
                    // before handles (a held descriptor kept the number).
                    match sys::handle_of(fd.as_raw_fd()) {
                        Ok(raw) if FileHandle::from_raw(&raw) == *h => {}
                        Ok(raw) => n.backing = Backing::Handle(FileHandle::from_raw(&raw)),
                        Err(_) => n.backing = Backing::Fd(fd.clone()),
                    }
                    if matches!(n.backing, Backing::Handle(_)) {
                        self.fds.put(attr.ino, fd);
                    } else {
                        self.fds.remove(attr.ino);
                    }
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Node {
                    backing: self.backing_for(attr.ino, fd, st),
                    role,
                    link,
                    lookups: 1,
                    open: None,
                    recent: true,
                    dir: attr.kind == Kind::Dir,
                });
            }
        }
        if nodes.len() > self.opts.max_inodes {
            self.over_full.notify_one();
        }
        Ok(attr)
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        let (pfd, prole) = self.node(parent)?;
        if Self::hidden(&prole, name) {
            return Err(errno(libc::ENOENT));
        }
        self.remember((parent, pfd.as_raw_fd(), &prole), name)
    }

    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut nodes = lock(&self.nodes);
        if let Some(node) = nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
            if node.lookups == 0 && node.open.is_none() {
                self.remove_node(&mut nodes, ino);
            }
        }
    }

    /// Drops a node the kernel no longer knows (no lookups, no open handle).
    fn remove_node(&self, nodes: &mut HashMap<u64, Node>, ino: u64) {
        nodes.remove(&ino);
        lock(&self.aliases).forgotten(ino);
        self.fds.remove(ino);
    }

    /// Waits until more than `max_inodes` inodes are known, then returns up
    /// to `want` entries (directory, name) of the least recently used, for
    /// the kernel to drop: a clock sweep, where a node used since the last
    /// sweep gets another round. Never the root, a bucket, a directory (see
    /// `inodes`) or an open file.
    pub fn stale_entries(&self) -> Vec<(u64, OsString)> {
        let max = self.opts.max_inodes;
        let mut nodes = self
            .over_full
            .wait_while(lock(&self.nodes), |n| n.len() <= max)
            .unwrap_or_else(|p| p.into_inner());
        // Down to 7/8 of the limit, so that one sweep serves many lookups.
        let want = nodes.len() - max + max / 8;
        let mut out = Vec::with_capacity(want.min(1 << 16));
        for n in nodes.values_mut() {
            if out.len() >= want {
                break;
            }
            if !matches!(n.role, Role::InBucket(_)) || n.open.is_some() || n.dir {
                continue;
            }
            if std::mem::take(&mut n.recent) {
                continue;
            }
            if let Some((parent, name)) = &n.link {
                out.push((*parent, name.to_os_string()));
            }
        }
        out
    }

    /// How many inodes are known (for tests and the benchmark's log).
    pub fn known_inodes(&self) -> usize {
        lock(&self.nodes).len()
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let (fd, role) = self.node(ino)?;
        let st = sys::stat_fd(fd.as_raw_fd()).map_err(os_err)?;
        let (_, st) = self.current(ino, fd, st);
        self.attr_of(&st, &role)
    }

    /// The node's backend file and its stat, after following a rewrite by
    /// `ssefs reencrypt` or `rewrap` (see `follow_rewrite`).
    fn current(&self, ino: u64, fd: Arc<OwnedFd>, st: libc::stat) -> (Arc<OwnedFd>, libc::stat) {
        if st.st_nlink != 0 || Kind::from_mode(st.st_mode) != Kind::File {
            return (fd, st);
        }
        self.follow_rewrite(ino, &fd, &st).unwrap_or((fd, st))
    }

    /// A regular file whose backend inode is no longer linked may have been
    /// rewritten by the CLI: a new file renamed over it, marked with the old
    /// one's identity (`REPLACES_XATTR`). The node then takes the new file,
    /// keeping its FUSE inode number, so that what the mount shows follows
    /// what is on disk. A file deleted, or replaced by anything else, is
    /// left as it is (an open, deleted file must keep working).
    fn follow_rewrite(
        &self,
        ino: u64,
        old: &Arc<OwnedFd>,
        st: &libc::stat,
    ) -> Option<(Arc<OwnedFd>, libc::stat)> {
        let (parent, leaf) = self.link_of(ino)?;
        let (pfd, _) = self.node(parent).ok()?;
        let fd = sys::open_path(pfd.as_raw_fd(), &leaf).ok()?;
        let nst = sys::stat_fd(fd.as_raw_fd()).ok()?;
        if Kind::from_mode(nst.st_mode) != Kind::File {
            return None;
        }
        let mark = crate::engine::xattr::get(
            crate::engine::xattr::At::Follow(&sys::proc_path(fd.as_raw_fd())),
            OsStr::new(crate::engine::REPLACES_XATTR),
        )
        .ok()??;
        if Ident::from_bytes(&mark)? != Ident::of(st) {
            return None;
        }
        let new_fd = Arc::new(fd);
        let mut nodes = lock(&self.nodes);
        let n = nodes.get_mut(&ino)?;
        if let Backing::Fd(cur) = &n.backing {
            if !Arc::ptr_eq(cur, old) {
                // Followed already by another request.
                return Some((cur.clone(), nst));
            }
        }
        // The node keeps a descriptor of the new file from now on: its
        // backend inode number is no longer the node's (an alias).
        n.backing = Backing::Fd(new_fd.clone());
        self.fds.remove(ino);
        lock(&self.aliases).moved(ino, nst.st_ino, old.clone());
        tracing::debug!(ino, "following a rewrite of the object by the CLI");
        Some((new_fd, nst))
    }

    /// Gives the inode `name`, just created by the daemon, to the requesting
    /// user, as a kernel filesystem would (the daemon itself runs as root),
    /// and returns an O_PATH descriptor of it with its stat.
    fn own(
        &self,
        parent_fd: RawFd,
        name: &OsStr,
        uid: u32,
        gid: u32,
    ) -> Result<(OwnedFd, libc::stat)> {
        let fd = sys::open_path(parent_fd, name).map_err(os_err)?;
        let st = sys::stat_fd(fd.as_raw_fd()).map_err(os_err)?;
        if !self.running_as_root || (st.st_uid == uid && st.st_gid == gid) {
            // Already right (e.g. root creating): no chown, which would
            // also cost a journal update per file.
            return Ok((fd, st));
        }
        // Inherit the group of a setgid directory.
        let pst = sys::stat_fd(parent_fd).map_err(os_err)?;
        let gid = if pst.st_mode & libc::S_ISGID != 0 {
            pst.st_gid
        } else {
            gid
        };
        sys::chown_fd(fd.as_raw_fd(), Some(uid), Some(gid)).map_err(os_err)?;
        let mut now = sys::stat_fd(fd.as_raw_fd()).map_err(os_err)?;
        // Our chown cleared set-id bits the creator asked for (the kernel
        // has already dropped any it may not have): put them back.
        let setid = libc::S_ISUID | libc::S_ISGID;
        if st.st_mode & setid & !now.st_mode != 0 {
            sys::chmod_fd(fd.as_raw_fd(), st.st_mode & 0o7777).map_err(os_err)?;
            now = sys::stat_fd(fd.as_raw_fd()).map_err(os_err)?;
        }
        Ok((fd, now))
    }

    /// `own` then `register`: for everything but regular files.
    fn adopt(
        &self,
        (parent, parent_fd, parent_role): (u64, RawFd, &Role),
        name: &OsStr,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        let (fd, st) = self.own(parent_fd, name, uid, gid)?;
        self.register(Arc::new(fd), &st, (parent, parent_role), name)
    }

    fn writable(&self) -> Result<()> {
        if self.opts.read_only {
            Err(errno(libc::EROFS))
        } else {
            Ok(())
        }
    }

    /// Checks a name for creation under `role`.
    fn check_new_name(role: &Role, name: &OsStr) -> Result<()> {
        if name.len() > 255 {
            return Err(errno(libc::ENAMETOOLONG));
        }
        match role {
            Role::Root => Err(errno(libc::EPERM)),
            _ if name.as_bytes().starts_with(RESERVED_PREFIX.as_bytes()) => Err(errno(libc::EPERM)),
            _ => Ok(()),
        }
    }

    pub fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        self.writable()?;
        let (pfd, prole) = self.node(parent)?;
        let mut bucket = None;
        if let Role::Root = prole {
            // mkdir at the root creates a bucket.
            let s = name.to_str().ok_or_else(|| errno(libc::EINVAL))?;
            bucket = Some(BucketName::parse(s).map_err(|e| {
                tracing::warn!(code = e.code.as_str(), path = s, "{}", e.message);
                errno(libc::EINVAL)
            })?);
        } else {
            Self::check_new_name(&prole, name)?;
        }
        sys::mkdir_at(pfd.as_raw_fd(), name, mode).map_err(os_err)?;
        if let Some(b) = &bucket {
            self.engine.init_bucket_settings(b)?;
        }
        self.adopt((parent, pfd.as_raw_fd(), &prole), name, uid, gid)
    }

    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        p: &Principal,
    ) -> Result<Attr> {
        self.writable()?;
        let (pfd, prole) = self.node(parent)?;
        Self::check_new_name(&prole, name)?;
        if mode & libc::S_IFMT == libc::S_IFREG || mode & libc::S_IFMT == 0 {
            let (_, attr) = self.create_object(parent, name, mode & 0o7777, libc::O_RDWR, p)?;
            return Ok(attr);
        }
        sys::mknod_at(pfd.as_raw_fd(), name, mode, rdev as u64).map_err(os_err)?;
        self.adopt((parent, pfd.as_raw_fd(), &prole), name, p.uid, p.gid)
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &Path,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        self.writable()?;
        let (pfd, prole) = self.node(parent)?;
        Self::check_new_name(&prole, name)?;
        sys::symlink_at(target.as_os_str(), pfd.as_raw_fd(), name).map_err(os_err)?;
        self.adopt((parent, pfd.as_raw_fd(), &prole), name, uid, gid)
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let (fd, _) = self.node(ino)?;
        sys::readlink_fd(fd.as_raw_fd()).map_err(os_err)
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.writable()?;
        let (pfd, prole) = self.node(parent)?;
        if Self::hidden(&prole, name) || matches!(prole, Role::Root) {
            return Err(errno(if matches!(prole, Role::Root) {
                libc::EPERM
            } else {
                libc::ENOENT
            }));
        }
        sys::unlink_at(pfd.as_raw_fd(), name, 0).map_err(os_err)
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.writable()?;
        let (pfd, prole) = self.node(parent)?;
        if Self::hidden(&prole, name) {
            return Err(errno(libc::ENOENT));
        }
        if let Role::Root = prole {
            // A bucket: empty apart from its settings file.
            let s = name.to_str().ok_or_else(|| errno(libc::ENOENT))?;
            let b = BucketName::parse(s).map_err(|_| errno(libc::ENOENT))?;
            return self.engine.delete_bucket(&b).map_err(|e| match e.code {
                OssCode::BucketNotEmpty => errno(libc::ENOTEMPTY),
                _ => e,
            });
        }
        sys::unlink_at(pfd.as_raw_fd(), name, libc::AT_REMOVEDIR).map_err(os_err)
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        self.writable()?;
        let (pfd, prole) = self.node(parent)?;
        let (nfd, nrole) = self.node(newparent)?;
        if matches!(prole, Role::Root) || matches!(nrole, Role::Root) {
            return Err(errno(libc::EPERM));
        }
        if prole.bucket() != nrole.bucket() {
            // Objects do not move between buckets: each bucket has its own
            // rule and chunk size (an object must have its bucket's, or its
            // size would show wrong). `mv` falls back to copy + delete,
            // which re-encrypts under the destination's rule and chunk
            // size, as OSS CopyObject does.
            return Err(errno(libc::EXDEV));
        }
        if Self::hidden(&prole, name) {
            return Err(errno(libc::ENOENT));
        }
        Self::check_new_name(&nrole, newname)?;
        sys::rename_at(pfd.as_raw_fd(), name, nfd.as_raw_fd(), newname, flags).map_err(os_err)?;
        // Known inodes that moved keep their name up to date.
        self.relink(nfd.as_raw_fd(), (newparent, newname));
        if flags & libc::RENAME_EXCHANGE != 0 {
            self.relink(pfd.as_raw_fd(), (parent, name));
        }
        Ok(())
    }

    /// Records that whatever is now `name` in `dir` (FUSE inode `parent`,
    /// backend descriptor `dir_fd`) is reached by that name, if the kernel
    /// knows it.
    fn relink(&self, dir_fd: RawFd, (parent, name): (u64, &OsStr)) {
        let Ok(fd) = sys::open_path(dir_fd, name) else {
            return;
        };
        let Ok(st) = sys::stat_fd(fd.as_raw_fd()) else {
            return;
        };
        let ino = self.fuse_ino(st.st_ino);
        if let Some(n) = lock(&self.nodes).get_mut(&ino) {
            n.link = Some((parent, name.to_os_string().into_boxed_os_str()));
        }
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Result<Attr> {
        self.writable()?;
        let (fd, role) = self.node(ino)?;
        let (nfd, nrole) = self.node(newparent)?;
        Self::check_new_name(&nrole, newname)?;
        if role.bucket() != nrole.bucket() || matches!(role, Role::Bucket(_) | Role::Root) {
            return Err(errno(if matches!(role, Role::InBucket(_)) {
                libc::EXDEV
            } else {
                libc::EPERM
            }));
        }
        sys::link_fd(fd.as_raw_fd(), nfd.as_raw_fd(), newname).map_err(os_err)?;
        self.remember((newparent, nfd.as_raw_fd(), &nrole), newname)
    }

    /// Clears the set-id bits a change to a regular file's bytes (write,
    /// truncation, O_TRUNC open, fallocate, copy_file_range) would clear on
    /// a local filesystem; the kernel leaves this to us under
    /// FUSE_HANDLE_KILLPRIV_V2. Linux's rule (setattr_should_drop_suidgid,
    /// 6.2 and later): set-user-ID always; set-group-ID when the group may
    /// execute or the caller is not in the file's group; nothing for a
    /// caller holding CAP_FSETID. `no_cap`: the kernel has already found the
    /// caller without it (FUSE_WRITE_KILL_SUIDGID).
    pub(crate) fn kill_setid(&self, ino: u64, p: &Principal, no_cap: bool) -> Result<()> {
        let (fd, _) = self.node(ino)?;
        let fd = fd.as_raw_fd();
        if setid_kill(&sys::stat_fd(fd).map_err(os_err)?, p) == 0 {
            return Ok(());
        }
        let _g = lock(&self.mode_locks[shard(ino)]);
        // Again under the lock: a chmod may have come in between.
        let st = sys::stat_fd(fd).map_err(os_err)?;
        let kill = setid_kill(&st, p);
        if kill == 0 || (!no_cap && p.holds_cap_fsetid()) {
            return Ok(());
        }
        sys::chmod_fd(fd, st.st_mode & 0o7777 & !kill).map_err(os_err)
    }

    pub fn chmod(&self, ino: u64, mode: u32) -> Result<()> {
        self.writable()?;
        Self::not_root(ino)?;
        let (fd, _) = self.node(ino)?;
        let _g = lock(&self.mode_locks[shard(ino)]);
        sys::chmod_fd(fd.as_raw_fd(), mode & 0o7777).map_err(os_err)
    }

    /// A SETATTR that changes nothing: chown(f, -1, -1), or the kernel
    /// clearing set-id bits before a write. For the owner or root it is
    /// chown(f, -1, -1), which clears them as a local filesystem would.
    /// For anyone else it does nothing: a local filesystem refuses them
    /// chown(f, -1, -1) of a set-id file (EPERM) but must let their write
    /// go on, and the two cannot be told apart here; the write clears the
    /// bits itself (FUSE_WRITE_KILL_SUIDGID).
    pub fn chown_nothing(&self, ino: u64, p: &Principal) -> Result<()> {
        let (fd, _) = self.node(ino)?;
        let st = sys::stat_fd(fd.as_raw_fd()).map_err(os_err)?;
        if p.uid == 0 || p.uid == st.st_uid {
            self.chown(ino, None, None, p)?;
        }
        Ok(())
    }

    /// chown(2); both ids `None` is chown(f, -1, -1), which still clears
    /// set-id bits on a regular file. The backend's chown, made as root,
    /// clears set-user-ID and a set-group-ID the group may execute; a caller
    /// outside the file's group without CAP_FSETID also loses a set-group-ID
    /// the group may not execute (Linux 6.2 and later), which is ours to do.
    pub fn chown(&self, ino: u64, uid: Option<u32>, gid: Option<u32>, p: &Principal) -> Result<()> {
        self.writable()?;
        Self::not_root(ino)?;
        let (fd, _) = self.node(ino)?;
        let _g = lock(&self.mode_locks[shard(ino)]);
        let before = sys::stat_fd(fd.as_raw_fd()).map_err(os_err)?;
        sys::chown_fd(fd.as_raw_fd(), uid, gid).map_err(os_err)?;
        let sgid_only = libc::S_ISGID | libc::S_IXGRP;
        if Kind::from_mode(before.st_mode) == Kind::File
            && before.st_mode & sgid_only == libc::S_ISGID
            && !p.in_group(before.st_gid)
            && !p.holds_cap_fsetid()
        {
            let now = sys::stat_fd(fd.as_raw_fd()).map_err(os_err)?;
            sys::chmod_fd(fd.as_raw_fd(), now.st_mode & 0o7777 & !libc::S_ISGID).map_err(os_err)?;
        }
        Ok(())
    }

    pub fn utimens(
        &self,
        ino: u64,
        atime: Option<libc::timespec>,
        mtime: Option<libc::timespec>,
    ) -> Result<()> {
        self.writable()?;
        let (fd, _) = self.node(ino)?;
        let st = sys::stat_fd(fd.as_raw_fd()).map_err(os_err)?;
        let link = Kind::from_mode(st.st_mode) == Kind::Symlink;
        sys::utimens_fd(fd.as_raw_fd(), link, atime, mtime).map_err(os_err)
    }

    /// The mount root's owner and mode are the private data directory's
    /// on the backend, which users through the mount may not change.
    fn not_root(ino: u64) -> Result<()> {
        if ino == ROOT_INO {
            tracing::warn!(
                code = OssCode::AccessDenied.as_str(),
                "the mount root's mode and owner are fixed (the data directory stays private)"
            );
            return Err(errno(libc::EPERM));
        }
        Ok(())
    }

    /// access(2). With the kernel checking mode bits it has done so already;
    /// otherwise the check is ours, as a kernel filesystem would make it.
    pub fn access(&self, ino: u64, mask: i32, p: &Principal) -> Result<()> {
        let (fd, _) = self.node(ino)?;
        let mut st = sys::stat_fd(fd.as_raw_fd()).map_err(os_err)?;
        if ino == ROOT_INO {
            st.st_mode = (st.st_mode & libc::S_IFMT) | u32::from(ROOT_MODE);
        }
        if self.opts.kernel_checks_permissions || mask == libc::F_OK {
            return Ok(());
        }
        if mask & libc::W_OK != 0 && self.opts.read_only {
            return Err(errno(libc::EROFS));
        }
        if may(&st, mask, p) {
            Ok(())
        } else {
            Err(errno(libc::EACCES))
        }
    }

    pub fn statfs(&self) -> Result<libc::statvfs> {
        let (fd, _) = self.node(ROOT_INO)?;
        sys::statvfs_fd(fd.as_raw_fd()).map_err(os_err)
    }

    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let (fd, role) = self.node(ino)?;
        let dir = sys::proc_path(fd.as_raw_fd());
        let mut entries = vec![
            (ino, Kind::Dir, OsString::from(".")),
            (ino, Kind::Dir, OsString::from("..")),
        ];
        for e in std::fs::read_dir(&dir).map_err(os_err)? {
            let e = e.map_err(os_err)?;
            let name = e.file_name();
            if Self::hidden(&role, &name) {
                continue;
            }
            // d_ino and d_type from the directory itself: no stat per entry.
            let bino = std::os::unix::fs::DirEntryExt::ino(&e);
            let kind = match e.file_type() {
                Ok(t) if t.is_dir() => Kind::Dir,
                Ok(t) if t.is_symlink() => Kind::Symlink,
                Ok(t) => {
                    use std::os::unix::fs::FileTypeExt;
                    if t.is_fifo() {
                        Kind::Fifo
                    } else if t.is_socket() {
                        Kind::Socket
                    } else if t.is_char_device() {
                        Kind::CharDev
                    } else if t.is_block_device() {
                        Kind::BlockDev
                    } else {
                        Kind::File
                    }
                }
                Err(_) => continue, // removed meanwhile
            };
            if matches!(role, Role::Root) && kind != Kind::Dir {
                continue;
            }
            entries.push((self.fuse_ino(bino), kind, name));
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Handle::Dir(entries));
        Ok(fh)
    }

    /// Directory entries from `offset` on; `add` returns true when the
    /// reply buffer is full.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, Kind, &OsStr) -> bool,
    ) -> Result<()> {
        let handles = lock(&self.handles);
        let Some(Handle::Dir(entries)) = handles.get(&fh) else {
            return Err(errno(libc::EBADF));
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if add(*ino, i as u64 + 1, *kind, name) {
                break;
            }
        }
        Ok(())
    }

    /// Directory entries from `offset` on with their attributes
    /// (READDIRPLUS). The kernel remembers every entry it is sent but "."
    /// and "..", so each counts as a lookup; `add` returns true when the
    /// reply buffer is full, and the entry it refused is taken back.
    pub fn readdirplus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, &OsStr, &Attr) -> bool,
    ) -> Result<()> {
        let (dfd, role) = self.node(ino)?;
        // A reply buffer holds far fewer entries than this; copying a
        // bounded slice keeps the handle table unlocked during the stats.
        const BATCH: usize = 512;
        let batch: Vec<(u64, OsString)> = {
            let handles = lock(&self.handles);
            let Some(Handle::Dir(entries)) = handles.get(&fh) else {
                return Err(errno(libc::EBADF));
            };
            entries
                .iter()
                .enumerate()
                .skip(offset as usize)
                .take(BATCH)
                .map(|(i, (_, _, name))| (i as u64 + 1, name.clone()))
                .collect()
        };
        for (next, name) in batch {
            if name == "." || name == ".." {
                // Not remembered by the kernel: the directory's own attr
                // serves, since the kernel ignores it.
                let attr = self.getattr(ino)?;
                if add(next, &name, &attr) {
                    break;
                }
                continue;
            }
            let attr = match self.remember((ino, dfd.as_raw_fd(), &role), &name) {
                Ok(a) => a,
                // Removed since opendir, or no longer a bucket: leave it out.
                Err(_) => continue,
            };
            if add(next, &name, &attr) {
                self.forget(attr.ino, 1);
                break;
            }
        }
        Ok(())
    }

    pub fn releasedir(&self, fh: u64) {
        lock(&self.handles).remove(&fh);
    }

    pub fn fsyncdir(&self, ino: u64) -> Result<()> {
        let (fd, _) = self.node(ino)?;
        File::open(sys::proc_path(fd.as_raw_fd()))
            .and_then(|d| d.sync_all())
            .map_err(os_err)
    }

    /// The object's display name for logs and errors: bucket/key.
    /// Whether a process runs inode `ino` of this mount as its program.
    fn running(&self, ino: u64) -> bool {
        self.opts
            .mount_dev
            .get()
            .is_some_and(|&dev| sys::runs_as_program(dev, ino))
    }

    fn display_name(&self, fd: RawFd) -> String {
        let p = std::fs::read_link(sys::proc_path(fd)).unwrap_or_default();
        p.strip_prefix(self.engine.data_dir())
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| p.display().to_string())
    }

    fn bucket_dir(&self, b: &BucketName) -> std::path::PathBuf {
        self.engine.data_dir().join(b.as_str())
    }
}

/// The set-id bits a change to the bytes of the file with stat `st` by `p`
/// clears unless `p` holds CAP_FSETID (see Fs::kill_setid).
fn setid_kill(st: &libc::stat, p: &Principal) -> u32 {
    if Kind::from_mode(st.st_mode) != Kind::File {
        return 0;
    }
    let mode = st.st_mode;
    let mut kill = mode & libc::S_ISUID;
    if mode & libc::S_ISGID != 0 && (mode & libc::S_IXGRP != 0 || !p.in_group(st.st_gid)) {
        kill |= libc::S_ISGID;
    }
    kill
}

/// Whether `p` may access an inode with stat `st` for `mask` (R_OK, W_OK,
/// X_OK bits), by POSIX mode bits: root may read and write anything and
/// execute what has an execute bit (or is a directory).
pub(crate) fn may(st: &libc::stat, mask: i32, p: &Principal) -> bool {
    let mode = (Kind::from_mode(st.st_mode), st.st_mode & 0o7777);
    may_mode(mode, (st.st_uid, st.st_gid), mask, p)
}

/// `may` for an inode of kind and permission bits `mode`, owned by `owner`
/// (uid, gid).
fn may_mode((kind, perm): (Kind, u32), (uid, gid): (u32, u32), mask: i32, p: &Principal) -> bool {
    let mask = (mask & 0o7) as u32;
    if p.uid == 0 {
        return mask & libc::X_OK as u32 == 0 || kind == Kind::Dir || perm & 0o111 != 0;
    }
    let bits = if uid == p.uid {
        (perm >> 6) & 0o7
    } else if p.in_group(gid) {
        (perm >> 3) & 0o7
    } else {
        perm & 0o7
    };
    bits & mask == mask
}

/// True for names that must never be shown or created at the data
/// directory's root or in a bucket (used by tests).
pub fn is_internal_name(name: &str) -> bool {
    name == STATE_DIR || name == BUCKET_SETTINGS || name.starts_with(RESERVED_PREFIX)
}
