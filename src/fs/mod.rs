//! The filesystem core: POSIX operations on buckets and objects, testable
//! without a mount. The FUSE adapter (`crate::fuse`) only translates kernel
//! requests into these calls and results back into replies.
//!
//! Inodes are the backend's own: each known inode is named by its file
//! handle, or held as an O_PATH descriptor where it cannot be (see
//! `inodes`), so renames and hard links need no path bookkeeping. The mount
//! root is the data directory; its entries are buckets; below a bucket
//! everything is an ordinary POSIX tree whose regular files are objects.
//!
//! Where each part lives:
//! - `inodes`: what a node holds (a file handle or a descriptor) and the
//!   bounded descriptor cache; `table`: lookup, forget and the attributes;
//! - `namespace`: create, link, rename, remove, and the namespace's rules;
//! - `dirs`: directory listing;
//! - `perms`: access(2) and the mode-bit check; `attr`: SETATTR;
//! - `io`: opening, reading and writing objects; `xattrs`: the OSS
//!   encryption xattrs and user xattrs;
//! - `sys`: the descriptor-relative system calls everything goes through.

mod attr;
mod dirs;
#[cfg(test)]
mod fallback_tests;
mod inodes;
pub(crate) mod io;
#[cfg(test)]
mod model_tests;
mod namespace;
mod ops;
mod perms;
pub mod store;
mod sys;
mod table;
#[cfg(test)]
mod tests;
pub(crate) mod xattrs;

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::engine::{Engine, BUCKET_SETTINGS, STATE_DIR};
use crate::error::{Error, OssCode, Result};
use crate::oss::{BucketName, RESERVED_PREFIX};

pub use attr::{AttrChanges, SetTime};
pub use inodes::DEFAULT_MAX_INODES;
pub use io::OpenObject;
pub use ops::FsOps;
pub(crate) use perms::may;

use inodes::{Backing, FdCache, FileHandle, Links, Node, Nodes, Opened};
use table::Aliases;

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
    Dir(Arc<Mutex<dirs::DirStream>>),
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
    /// Name inodes by file handle where the data directory allows it (see
    /// `inodes`). False keeps one descriptor per known inode, as on a
    /// filesystem without handles: the mount always uses handles when it
    /// can; the tests of that fallback use this to force it.
    pub file_handles: bool,
}

pub struct Fs {
    engine: Arc<Engine>,
    opts: FsOptions,
    root_backend_ino: u64,
    nodes: Mutex<Nodes>,
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
    /// FUSE inode numbers kept across re-encryptions (see `table`). Lock order: `nodes`
    /// before `aliases`.
    aliases: Mutex<Aliases>,
    /// open() of one inode at a time (sharded by inode number).
    open_locks: [Mutex<()>; OPEN_LOCKS],
    /// chmod and the clearing of set-id bits, one at a time per inode
    /// (sharded), so that neither undoes the other.
    mode_locks: [Mutex<()>; OPEN_LOCKS],
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
        let handle_root = if opts.file_handles {
            Self::handle_root(&fd, &st)
        } else {
            None
        };
        let mut nodes = Nodes::new();
        nodes.insert(
            ROOT_INO,
            Box::new(Node {
                backing: Backing::Fd(Arc::new(fd)),
                role: Role::Root,
                links: Links::default(),
                lookups: 1,
                open: None,
                recent: true,
                dir: true,
            }),
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
    pub(super) fn handle_root(fd: &OwnedFd, st: &libc::stat) -> Option<(File, u64)> {
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

    pub(super) fn writable(&self) -> Result<()> {
        if self.opts.read_only {
            Err(errno(libc::EROFS))
        } else {
            Ok(())
        }
    }

    pub fn statfs(&self) -> Result<libc::statvfs> {
        let (fd, _) = self.node(ROOT_INO)?;
        sys::statvfs_fd(fd.as_raw_fd()).map_err(os_err)
    }

    /// Whether a process runs inode `ino` of this mount as its program.
    pub(super) fn running(&self, ino: u64) -> bool {
        self.opts
            .mount_dev
            .get()
            .is_some_and(|&dev| sys::runs_as_program(dev, ino))
    }

    pub(super) fn display_name(&self, fd: RawFd) -> String {
        let p = std::fs::read_link(sys::proc_path(fd)).unwrap_or_default();
        p.strip_prefix(self.engine.data_dir())
            .map(|r| r.display().to_string())
            .unwrap_or_else(|_| p.display().to_string())
    }
}

/// True for names that must never be shown or created at the data
/// directory's root or in a bucket (used by tests).
pub fn is_internal_name(name: &str) -> bool {
    name == STATE_DIR || name == BUCKET_SETTINGS || name.starts_with(RESERVED_PREFIX)
}
