//! Names: creating, linking, renaming and removing entries, and the rules
//! of the namespace (the root lists buckets, reserved names stay hidden,
//! objects do not move between buckets).

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use super::{errno, os_err, sys, Attr, Fs, Role};
use crate::error::{OssCode, Result};
use crate::oss::{BucketName, RESERVED_PREFIX};
use crate::principal::Principal;

impl Fs {
    /// Names that are not part of the namespace: the state directory at the
    /// root, anything not a bucket name at the root, reserved names below.
    pub(super) fn hidden(role: &Role, name: &OsStr) -> bool {
        match role {
            Role::Root => name
                .to_str()
                .map(|s| BucketName::parse(s).is_err())
                .unwrap_or(true),
            _ => name.as_bytes().starts_with(RESERVED_PREFIX.as_bytes()),
        }
    }

    /// The role of a child of a node with role `parent`.
    pub(super) fn child_role(parent: &Role, name: &OsStr) -> Result<Role> {
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

    /// Gives the inode `name`, just created by the daemon, to the requesting
    /// user, as a kernel filesystem would (the daemon itself runs as root),
    /// and returns an O_PATH descriptor of it with its stat.
    pub(super) fn own(
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
    pub(super) fn adopt(
        &self,
        (parent, parent_fd, parent_role): (u64, RawFd, &Role),
        name: &OsStr,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        let (fd, st) = self.own(parent_fd, name, uid, gid)?;
        self.register(Arc::new(fd), &st, (parent, parent_role), name)
    }

    /// Checks a name for creation under `role`.
    pub(super) fn check_new_name(role: &Role, name: &OsStr) -> Result<()> {
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
        let gone = self.ino_at(pfd.as_raw_fd(), name);
        sys::unlink_at(pfd.as_raw_fd(), name, 0).map_err(os_err)?;
        // The inode (another hard link, or open) no longer has this name.
        if let Some(ino) = gone {
            self.relink(ino, Some((parent, name)), None);
        }
        Ok(())
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
        let gone = self.ino_at(pfd.as_raw_fd(), name);
        sys::unlink_at(pfd.as_raw_fd(), name, libc::AT_REMOVEDIR).map_err(os_err)?;
        if let Some(ino) = gone {
            self.relink(ino, Some((parent, name)), None);
        }
        Ok(())
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
        // What each name holds before: the names of known inodes are then
        // kept up to date (see `Links`).
        let moved = self.ino_at(pfd.as_raw_fd(), name);
        let over = self.ino_at(nfd.as_raw_fd(), newname);
        sys::rename_at(pfd.as_raw_fd(), name, nfd.as_raw_fd(), newname, flags).map_err(os_err)?;
        let (from, to) = ((parent, name), (newparent, newname));
        if moved == over {
            // Two names of one inode: rename(2) changes nothing.
            return Ok(());
        }
        if let Some(ino) = over {
            if flags & libc::RENAME_EXCHANGE != 0 {
                self.relink(ino, Some(to), Some(from));
            } else {
                self.relink(ino, Some(to), None);
            }
        }
        if let Some(ino) = moved {
            self.relink(ino, Some(from), Some(to));
        }
        Ok(())
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
}
