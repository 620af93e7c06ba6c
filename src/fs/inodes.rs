//! The inode table: what the daemon keeps for each inode the kernel knows,
//! and how it gets a descriptor of one when a request needs it.
//!
//! The kernel forgets inodes only under memory pressure, so holding one
//! descriptor per known inode made the number of files a tree could have
//! depend on RLIMIT_NOFILE (issue 13). A node holds instead the inode's
//! file handle (name_to_handle_at, 8 to 16 bytes on ext4, xfs, btrfs), and
//! descriptors come from a bounded LRU cache ([`FdCache`]), opened again
//! with open_by_handle_at on a miss. A node holds its own descriptor only
//! where a handle cannot stand for it: the root, a data directory on a
//! filesystem without handles or a daemon without CAP_DAC_READ_SEARCH
//! (the whole mount then works as before), an inode on another filesystem
//! below the data directory, the new file of a re-encryption (`Aliases`),
//! and an open object, whose descriptor stays pinned while it is open, so
//! that a file unlinked while open keeps working. (`FsOptions::file_handles`
//! forces the descriptor-per-inode mode for its tests, fallback_tests.rs;
//! tests/integration/fallback.rs reaches it for real, on overlayfs and in
//! a daemon without CAP_DAC_READ_SEARCH.)
//!
//! Confinement (issue 12, docs/SECURITY.md): open_by_handle_at resolves no
//! name, so nothing a user renames or plants can steer it; but a handle can
//! name any inode of the backend filesystem. Handles are only ever taken
//! from descriptors of inodes found inside the data directory, so re-opening
//! one reaches exactly the inode the old design held a descriptor of, never
//! another: each re-opened descriptor is checked to be the recorded inode
//! (same st_dev and st_ino) and anything else is ESTALE, as is a handle
//! whose inode is gone (the handle carries the inode's generation, so a
//! freed and reused inode number does not match).
//!
//! Memory: a node is small (see the size test below), but with a 2,000,000
//! file tree the kernel would happily remember every inode, and the table
//! would outgrow its budget. Past `max_inodes` known inodes, the least
//! recently used ones (a clock sweep over a bit per node) are handed to
//! the FUSE layer, which asks the kernel to drop their entries
//! (FUSE_NOTIFY_INVAL_ENTRY); the kernel then forgets them as usual and
//! looks them up again if they are needed. Only entries of files, symlinks
//! and the like: a directory's dropped entry can outlive the request (a
//! child still holds it), and a later lookup of the directory must then
//! move that old alias under the new entry, which the kernel refuses with
//! ESTALE when it cannot take the locks at once (d_splice_alias; read in
//! the kernel's source, not seen here). Directories are few next to files
//! in most trees, and each costs a node, not a descriptor.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::num::NonZeroUsize;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::{sys, OpenObject, Role};

/// Handles up to this many bytes are kept inside the node: ext4 makes 8,
/// btrfs 12, xfs 8 or 12 (16 at most). Longer ones (overlayfs) go on the
/// heap.
const INLINE: usize = 16;

/// A file handle of a backend inode (see the module doc).
#[derive(Clone, PartialEq, Eq, Debug)]
pub(super) enum FileHandle {
    Inline {
        ty: i32,
        len: u8,
        data: [u8; INLINE],
    },
    Long {
        ty: i32,
        data: Box<[u8]>,
    },
}

impl FileHandle {
    pub(super) fn from_raw(h: &sys::RawHandle) -> FileHandle {
        let len = (h.bytes as usize).min(h.data.len());
        let bytes = &h.data[..len];
        if len <= INLINE {
            let mut data = [0; INLINE];
            data[..len].copy_from_slice(bytes);
            FileHandle::Inline {
                ty: h.ty,
                // len <= INLINE (16) fits a u8.
                len: len as u8,
                data,
            }
        } else {
            FileHandle::Long {
                ty: h.ty,
                data: bytes.into(),
            }
        }
    }

    pub(super) fn ty(&self) -> i32 {
        match self {
            FileHandle::Inline { ty, .. } | FileHandle::Long { ty, .. } => *ty,
        }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            FileHandle::Inline { len, data, .. } => &data[..*len as usize],
            FileHandle::Long { data, .. } => data,
        }
    }
}

/// How a node reaches its backend inode.
pub(super) enum Backing {
    /// Through the descriptor cache, re-opened from the handle on a miss.
    Handle(FileHandle),
    /// A descriptor of its own (see the module doc for which nodes).
    Fd(Arc<OwnedFd>),
}

/// The open state of a node while any handle of it is open.
pub(super) struct Opened {
    pub(super) obj: Arc<OpenObject>,
    pub(super) count: u32,
    /// Pinned while open: a file unlinked meanwhile could not be re-opened
    /// by its handle once the cache let go of it.
    pub(super) fd: Arc<OwnedFd>,
}

pub(super) struct Node {
    pub(super) backing: Backing,
    pub(super) role: Role,
    /// The names this inode was looked up, created, linked or renamed to
    /// through the mount (see `Links`): where a re-encryption puts its new
    /// file, after checking that the name still holds this inode, and the
    /// entries the kernel is asked to drop when the table is full.
    pub(super) links: Links,
    pub(super) lookups: u64,
    /// Boxed: few nodes are open at once, and a pointer keeps every other
    /// node small.
    pub(super) open: Option<Box<Opened>>,
    /// Used since the last sweep of the clock (see `Fs::stale_entries`).
    pub(super) recent: bool,
    /// A directory: never handed to the kernel to forget (see
    /// `Fs::stale_entries`).
    pub(super) dir: bool,
}

/// Names a node keeps at most; past that the oldest is forgotten.
const MAX_LINKS: usize = 8;

/// An entry's fixed part in `Links`: the directory's FUSE inode (8 bytes)
/// and the name's length (2).
const LINK_HEAD: usize = 10;

/// The names (directory's FUSE inode, name) a node is known by through the
/// mount, most recent first. Keeping one name, the last one seen, was not
/// enough: after `ln a b; rm b` the node named only the unlinked `b`, and
/// a re-encryption of `a` failed (ENOENT) until `a` was looked up again.
/// So a node keeps every name it was seen under and drops one when it is
/// unlinked or renamed over through the mount; users of a name still check
/// that it holds the inode (another process may change the backend), and
/// try the next one if not.
///
/// Few nodes ever have a second name, so all of them are packed in one
/// allocation (per entry the directory's inode, the name's length and the
/// name), behind a 16-byte pointer: a one-or-many enum of boxed names
/// would make every node 8 bytes larger (32 bytes instead of 24 for the
/// single optional name), against the memory budget (`nodes_are_small`).
/// At most `MAX_LINKS` names are kept: the kernel looks up any other one
/// again when it needs it.
#[derive(Default, Debug)]
pub(super) struct Links(Option<Box<[u8]>>);

impl Links {
    pub(super) fn one(parent: u64, name: &OsStr) -> Links {
        let mut l = Links::default();
        l.add(parent, name);
        l
    }

    /// The names, most recent first.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &OsStr)> + '_ {
        let mut rest: &[u8] = self.0.as_deref().unwrap_or_default();
        std::iter::from_fn(move || {
            let (head, tail) = rest.split_first_chunk::<LINK_HEAD>()?;
            let (parent, len) = head.split_first_chunk::<8>()?;
            let len = u16::from_ne_bytes(len.try_into().ok()?) as usize;
            let (name, next) = tail.split_at_checked(len)?;
            rest = next;
            Some((u64::from_ne_bytes(*parent), OsStr::from_bytes(name)))
        })
    }

    /// The most recent name.
    pub(super) fn first(&self) -> Option<(u64, &OsStr)> {
        self.iter().next()
    }

    /// Makes `name` in `parent` the most recent name.
    pub(super) fn add(&mut self, parent: u64, name: &OsStr) {
        if self.first() == Some((parent, name)) {
            // A lookup again (every entry's TTL): nothing to allocate.
            return;
        }
        let new = std::iter::once((parent, name));
        let others = self.iter().filter(|&e| e != (parent, name));
        self.0 = Self::pack(new.chain(others).take(MAX_LINKS));
    }

    /// Forgets `name` in `parent`, if known.
    pub(super) fn remove(&mut self, parent: u64, name: &OsStr) {
        if self.iter().any(|e| e == (parent, name)) {
            self.0 = Self::pack(self.iter().filter(|&e| e != (parent, name)));
        }
    }

    fn pack<'a>(entries: impl Iterator<Item = (u64, &'a OsStr)>) -> Option<Box<[u8]>> {
        let mut buf = Vec::new();
        for (parent, name) in entries {
            // Longer than any backend allows (PATH_MAX): not kept.
            let Ok(len) = u16::try_from(name.len()) else {
                continue;
            };
            buf.extend_from_slice(&parent.to_ne_bytes());
            buf.extend_from_slice(&len.to_ne_bytes());
            buf.extend_from_slice(name.as_bytes());
        }
        (!buf.is_empty()).then(|| buf.into_boxed_slice())
    }
}

/// The known inodes by FUSE inode number. Each node is boxed, so that the
/// table's slots hold a pointer, not a node: hashbrown doubles its table
/// when inserts meet too many slots left by removals (it rehashes in place
/// only below half full), and a table churning at `max_inodes` nodes,
/// as a large tree walk makes it, grows to twice the slots its nodes need
/// and keeps them. With nodes inline a 100,000-node table doubled from 13
/// to 25 MiB (38 MiB while the two coexisted); with boxes its slots cost
/// 17 bytes and the nodes themselves are allocated once each.
pub(super) type Nodes = HashMap<u64, Box<Node>>;

/// A bounded LRU cache of O_PATH descriptors by FUSE inode number. A
/// descriptor evicted while a request still uses it stays open until that
/// request drops its `Arc`, so at most the cache's size plus one per
/// request in flight are open.
pub(super) struct FdCache {
    lru: Mutex<LruCache<u64, Arc<OwnedFd>>>,
}

impl FdCache {
    pub(super) fn new(cap: NonZeroUsize) -> FdCache {
        FdCache {
            lru: Mutex::new(LruCache::new(cap)),
        }
    }

    pub(super) fn get(&self, ino: u64) -> Option<Arc<OwnedFd>> {
        super::lock(&self.lru).get(&ino).cloned()
    }

    pub(super) fn put(&self, ino: u64, fd: Arc<OwnedFd>) {
        // The evicted descriptor is closed after the lock is let go.
        let evicted = super::lock(&self.lru).push(ino, fd);
        drop(evicted);
    }

    pub(super) fn remove(&self, ino: u64) {
        let gone = super::lock(&self.lru).pop(&ino);
        drop(gone);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        super::lock(&self.lru).len()
    }
}

/// The cache's size under a soft descriptor limit `soft`: a quarter of it,
/// leaving the rest to open objects (one or two descriptors each), pinned
/// aliases, directories being listed and the keystore; never under 16, and
/// at most 65,536 (beyond that, more descriptors only cost kernel memory).
pub(super) fn cache_size(soft: u64) -> NonZeroUsize {
    let n = (soft / 4).clamp(16, 65_536) as usize;
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

/// How many inodes the daemon remembers before it asks the kernel to drop
/// some, by default. A node costs about 130 bytes: its box (80), its names
/// (`Links`, ~32 for one) and its table slot (17 bytes, in a table of 2^18 slots once it has
/// churned, see `Nodes`): 100,000 take about 15 MiB. The daemon's memory
/// then stops growing with the number of files at about 100,000 (issue
/// 13: "memory is flat"); with 400,000 it grew to 120-170 MiB in a
/// 2,000,000-file tree (bench/results/2026-12-03-tree-2m.md). A smaller
/// table costs little: the kernel looks up an entry again after its 1 s
/// TTL anyway, and only a file it forgot costs a re-registration.
pub const DEFAULT_MAX_INODES: usize = 100_000;

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    fn fd_of(path: &str) -> Arc<OwnedFd> {
        Arc::new(sys::open_path(libc::AT_FDCWD, OsStr::new(path)).unwrap())
    }

    #[test]
    fn the_cache_keeps_at_most_its_size_and_drops_the_least_recently_used() {
        let c = FdCache::new(NonZeroUsize::new(2).unwrap());
        let a = fd_of("/");
        let weak_a = Arc::downgrade(&a);
        c.put(1, a);
        c.put(2, fd_of("/"));
        // Using 1 makes 2 the least recently used.
        assert!(c.get(1).is_some());
        c.put(3, fd_of("/"));
        assert_eq!(c.len(), 2);
        assert!(c.get(2).is_none(), "2 was the least recently used");
        assert!(c.get(1).is_some() && c.get(3).is_some());
        // An evicted descriptor is closed once nothing else holds it.
        c.put(4, fd_of("/"));
        c.put(5, fd_of("/"));
        assert!(weak_a.upgrade().is_none(), "evicted descriptor still open");
        // One still in use by a request outlives its eviction.
        let held = c.get(5).unwrap();
        c.put(6, fd_of("/"));
        c.put(7, fd_of("/"));
        assert!(c.get(5).is_none());
        assert!(sys::stat_fd(held.as_raw_fd()).is_ok());
        c.remove(7);
        assert!(c.get(7).is_none());
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn cache_size_follows_the_descriptor_limit() {
        assert_eq!(cache_size(4096).get(), 1024);
        assert_eq!(cache_size(256).get(), 64);
        assert_eq!(cache_size(10).get(), 16);
        assert_eq!(cache_size(1 << 20).get(), 65_536);
    }

    #[test]
    fn handles_round_trip_and_small_ones_stay_inline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        let fd = sys::open_path(libc::AT_FDCWD, p.as_os_str()).unwrap();
        let raw = match sys::handle_of(fd.as_raw_fd()) {
            Ok(h) => h,
            // A filesystem without handles (tmpfs of old kernels): nothing
            // to check here; Fs falls back to descriptors.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return,
            Err(e) => panic!("name_to_handle_at: {e}"),
        };
        let h = FileHandle::from_raw(&raw);
        assert_eq!(h.bytes(), &raw.data[..raw.bytes as usize]);
        assert_eq!(h.ty(), raw.ty);
        if raw.bytes as usize <= INLINE {
            assert!(matches!(h, FileHandle::Inline { .. }));
        }
        let mount = std::fs::File::open(dir.path()).unwrap();
        match sys::open_handle(mount.as_raw_fd(), h.ty(), h.bytes()) {
            Ok(again) => {
                let (a, b) = (
                    sys::stat_fd(fd.as_raw_fd()).unwrap(),
                    sys::stat_fd(again.as_raw_fd()).unwrap(),
                );
                assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
            }
            // Not root: open_by_handle_at needs CAP_DAC_READ_SEARCH.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => panic!("open_by_handle_at: {e}"),
        }
        // Once the file is gone, its handle no longer opens anything.
        drop(fd);
        std::fs::remove_file(&p).unwrap();
        let e = sys::open_handle(mount.as_raw_fd(), h.ty(), h.bytes()).unwrap_err();
        assert!(
            matches!(e.raw_os_error(), Some(libc::ESTALE) | Some(libc::EPERM)),
            "{e}"
        );
    }

    #[test]
    fn links_keep_every_name_most_recent_first_until_removed() {
        let names = |l: &Links| -> Vec<(u64, String)> {
            l.iter()
                .map(|(p, n)| (p, n.to_str().unwrap().to_owned()))
                .collect()
        };
        let mut l = Links::default();
        assert_eq!(l.first(), None);
        l.add(1, OsStr::new("a"));
        l.add(1, OsStr::new("b"));
        l.add(7, OsStr::new("a"));
        assert_eq!(
            names(&l),
            [(7, "a".into()), (1, "b".into()), (1, "a".into())]
        );
        // Seen again: moved to the front, not doubled.
        l.add(1, OsStr::new("a"));
        assert_eq!(l.first(), Some((1, OsStr::new("a"))));
        assert_eq!(l.iter().count(), 3);
        l.remove(1, OsStr::new("b"));
        l.remove(1, OsStr::new("missing"));
        assert_eq!(names(&l), [(1, "a".into()), (7, "a".into())]);
        l.remove(1, OsStr::new("a"));
        l.remove(7, OsStr::new("a"));
        assert!(l.0.is_none(), "nothing left allocated");
        // At most MAX_LINKS, the oldest forgotten.
        for i in 0..MAX_LINKS + 3 {
            l.add(i as u64, OsStr::new("n"));
        }
        assert_eq!(l.iter().count(), MAX_LINKS);
        assert_eq!(l.first(), Some(((MAX_LINKS + 2) as u64, OsStr::new("n"))));
        assert!(l.iter().all(|(p, _)| p >= 3));
        // Names as long as a backend has them round-trip.
        let long = "x".repeat(255);
        let l = Links::one(u64::MAX, OsStr::new(&long));
        assert_eq!(names(&l), [(u64::MAX, long)]);
    }

    #[test]
    fn nodes_are_small() {
        // The memory budget (DEFAULT_MAX_INODES) counts on this; a field
        // added to Node should be weighed against it. A boxed node is one
        // 96-byte malloc chunk up to 88 bytes.
        assert!(std::mem::size_of::<FileHandle>() <= 24);
        assert!(std::mem::size_of::<Backing>() <= 24);
        assert!(
            std::mem::size_of::<Node>() <= 80,
            "Node is {} bytes",
            std::mem::size_of::<Node>()
        );
    }
}
