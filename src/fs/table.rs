//! The inode table's operations: FUSE inode numbers to backend inodes,
//! lookup and forget, a descriptor of a node when a request needs one, and
//! the attributes `stat` shows. What a node holds (a file handle or a
//! descriptor) and the descriptor cache are in `inodes`.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use super::inodes::{Backing, FileHandle, Links, Node, Nodes};
use super::{errno, lock, os_err, sys, ts, Attr, Fs, Kind, Role, ROOT_INO, ROOT_MODE};
use crate::backend::Ident;
use crate::error::Result;

impl Fs {
    /// Backend inode number to FUSE inode number (the root is always 1).
    pub(super) fn fuse_ino(&self, backend: u64) -> u64 {
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

    /// The names the inode is known by (see `Links`), most recent first.
    pub(super) fn links_of(&self, ino: u64) -> Vec<(u64, OsString)> {
        let nodes = lock(&self.nodes);
        nodes.get(&ino).map_or_else(Vec::new, |n| {
            n.links
                .iter()
                .map(|(parent, name)| (parent, name.to_os_string()))
                .collect()
        })
    }

    /// The first of the inode's known names for which `f`, given the
    /// directory's descriptor and the name, finds what it looks for: a
    /// name may have been unlinked or replaced behind the mount's back, so
    /// each user checks what it finds there.
    pub(super) fn by_link<T>(
        &self,
        ino: u64,
        mut f: impl FnMut(&Arc<OwnedFd>, &OsStr) -> Option<T>,
    ) -> Option<T> {
        self.links_of(ino)
            .into_iter()
            // The root has no name; nothing is its own directory.
            .filter(|&(parent, _)| parent != ino)
            .find_map(|(parent, name)| {
                let (pfd, _) = self.node(parent).ok()?;
                f(&pfd, &name)
            })
    }

    /// The FUSE inode that `name` in directory `dir_fd` is now, whether the
    /// kernel knows it or not.
    pub(super) fn ino_at(&self, dir_fd: RawFd, name: &OsStr) -> Option<u64> {
        let st = sys::stat_at(dir_fd, name).ok()?;
        Some(self.fuse_ino(st.st_ino))
    }

    /// Updates the names of known inode `ino` (if it is known): `gone` no
    /// longer names it, `new` does.
    pub(super) fn relink(&self, ino: u64, gone: Option<(u64, &OsStr)>, new: Option<(u64, &OsStr)>) {
        if let Some(n) = lock(&self.nodes).get_mut(&ino) {
            if let Some((parent, name)) = gone {
                n.links.remove(parent, name);
            }
            if let Some((parent, name)) = new {
                n.links.add(parent, name);
            }
        }
    }

    /// The backend inode number of FUSE inode `fuse` when it is its own
    /// (not an alias): `fuse_ino` backwards.
    pub(super) fn backend_ino(&self, fuse: u64) -> u64 {
        if fuse == self.root_backend_ino {
            ROOT_INO
        } else if fuse == ROOT_INO {
            self.root_backend_ino
        } else {
            fuse
        }
    }

    /// A descriptor of the node's backend inode, and its role.
    pub(super) fn node(&self, ino: u64) -> Result<(Arc<OwnedFd>, Role)> {
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
    pub(super) fn open_handle(&self, ino: u64, h: &FileHandle) -> Result<OwnedFd> {
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

    /// The node's inode found again by a name it was seen under, beneath
    /// its directory's descriptor, when its handle would not open.
    /// ext4 with inline_data fails to reconnect some directory handles
    /// (measured: ESTALE for a directory that exists, once the backend's
    /// dentries were dropped), so a handle's failure alone does not make a
    /// node stale. The same identity check as for handles applies.
    pub(super) fn open_by_link(&self, ino: u64) -> Option<OwnedFd> {
        let dev = self.handle_root.as_ref()?.1;
        self.by_link(ino, |pfd, name| {
            let fd = sys::open_path(pfd.as_raw_fd(), name).ok()?;
            let st = sys::stat_fd(fd.as_raw_fd()).ok()?;
            ((st.st_dev, st.st_ino) == (dev, self.backend_ino(ino))).then_some(fd)
        })
    }

    /// How a new node with descriptor `fd` and stat `st` reaches its
    /// inode: by handle where it can (the descriptor then goes to the
    /// cache), else by keeping the descriptor.
    pub(super) fn backing_for(&self, ino: u64, fd: Arc<OwnedFd>, st: &libc::stat) -> Backing {
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
    pub(super) fn attr_of(&self, st: &libc::stat, role: &Role) -> Result<Attr> {
        let kind = Kind::from_mode(st.st_mode);
        let size = match (kind, role) {
            (Kind::File, Role::InBucket(b)) => {
                let chunk = self
                    .engine
                    .chunk_size_for_stat(b)
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

    /// Registers (or re-counts) the inode `name` in `parent_fd` and returns its attr.
    pub(super) fn remember(
        &self,
        (parent, parent_fd, parent_role): (u64, RawFd, &Role),
        name: &OsStr,
    ) -> Result<Attr> {
        let fd = sys::open_path(parent_fd, name).map_err(os_err)?;
        let st = sys::stat_fd(fd.as_raw_fd()).map_err(os_err)?;
        self.register(Arc::new(fd), &st, (parent, parent_role), name)
    }

    /// Registers (or re-counts) the inode held by `fd`, whose stat is `st`.
    pub(super) fn register(
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
        let mut nodes = lock(&self.nodes);
        match nodes.entry(attr.ino) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let n = e.get_mut();
                n.lookups += 1;
                n.links.add(parent, name);
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
                e.insert(Box::new(Node {
                    backing: self.backing_for(attr.ino, fd, st),
                    role,
                    links: Links::one(parent, name),
                    lookups: 1,
                    open: None,
                    recent: true,
                    dir: attr.kind == Kind::Dir,
                }));
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
    pub(super) fn remove_node(&self, nodes: &mut Nodes, ino: u64) {
        nodes.remove(&ino);
        lock(&self.aliases).forgotten(ino);
        self.fds.remove(ino);
    }

    /// Waits until more than `max_inodes` inodes are known, then returns up
    /// to `want` entries (directory, name) of the least recently used, for
    /// the kernel to drop: a clock sweep, where a node used since the last
    /// sweep gets another round, as does one asked for (its FORGET may
    /// still be on its way). Never the root, a bucket, a directory (see
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
        // A second lap takes the nodes whose bit the first cleared. With
        // one lap, a sweep right after a burst of lookups (every node
        // recent) found nothing, and the trimmer slept while the table
        // grew on (bench/results/2026-12-04-memory.md).
        for lap in 0..2 {
            for n in nodes.values_mut() {
                if out.len() >= want {
                    break;
                }
                if !matches!(n.role, Role::InBucket(_)) || n.open.is_some() || n.dir {
                    continue;
                }
                if n.recent {
                    // The second lap leaves the bits of the first's
                    // picks alone.
                    if lap == 0 {
                        n.recent = false;
                    }
                    continue;
                }
                if n.links.first().is_some() {
                    // Every name the kernel may hold an entry under: it
                    // forgets the inode only once all are dropped.
                    out.extend(n.links.iter().map(|(p, name)| (p, name.to_os_string())));
                    n.recent = true;
                }
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
    pub(super) fn current(
        &self,
        ino: u64,
        fd: Arc<OwnedFd>,
        st: libc::stat,
    ) -> (Arc<OwnedFd>, libc::stat) {
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
    pub(super) fn follow_rewrite(
        &self,
        ino: u64,
        old: &Arc<OwnedFd>,
        st: &libc::stat,
    ) -> Option<(Arc<OwnedFd>, libc::stat)> {
        // The name the new file replaced the old one under: one of those
        // the node was seen under, whichever holds the mark.
        let (fd, nst) = self.by_link(ino, |pfd, leaf| {
            let fd = sys::open_path(pfd.as_raw_fd(), leaf).ok()?;
            let nst = sys::stat_fd(fd.as_raw_fd()).ok()?;
            if Kind::from_mode(nst.st_mode) != Kind::File {
                return None;
            }
            let mark = crate::backend::xattr::get(
                crate::backend::xattr::At::Follow(&sys::proc_path(fd.as_raw_fd())),
                OsStr::new(crate::engine::REPLACES_XATTR),
            )
            .ok()??;
            (Ident::from_bytes(&mark)? == Ident::of(st)).then_some((fd, nst))
        })?;
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
}

/// A re-encryption renames a new backend file over an object, so its backend
/// inode number changes while the kernel keeps the old one (K). The new
/// number maps to K here. Until the kernel forgets K, the backend inode
/// numbered K stays open (pinned): were it freed, the backend could give K
/// to a new file, which would then be taken for this object.
#[derive(Default)]
pub(super) struct Aliases {
    /// Backend inode -> FUSE inode.
    pub(super) fuse_of: HashMap<u64, u64>,
    /// FUSE inode -> its current backend inode and the pinned inode K.
    pub(super) pinned: HashMap<u64, (u64, Arc<OwnedFd>)>,
}

impl Aliases {
    /// FUSE inode `fuse` now lives in backend inode `backend`; `old` is the
    /// backend file it replaced.
    pub(super) fn moved(&mut self, fuse: u64, backend: u64, old: Arc<OwnedFd>) {
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
    pub(super) fn forgotten(&mut self, fuse: u64) {
        if let Some((backend, _pin)) = self.pinned.remove(&fuse) {
            self.fuse_of.remove(&backend);
        }
    }
}
