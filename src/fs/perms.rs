//! Permissions: access(2), the POSIX mode-bit check the core makes when
//! the kernel does not (no default_permissions), and which set-id bits a
//! change to a file's bytes clears.

use std::os::fd::AsRawFd;

use super::{errno, os_err, sys, Fs, Kind, ROOT_INO, ROOT_MODE};
use crate::error::Result;
use crate::principal::Principal;

impl Fs {
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
}

/// The set-id bits a change to the bytes of the file with stat `st` by `p`
/// clears unless `p` holds CAP_FSETID (see Fs::kill_setid).
pub(super) fn setid_kill(st: &libc::stat, p: &Principal) -> u32 {
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
pub(super) fn may_mode(
    (kind, perm): (Kind, u32),
    (uid, gid): (u32, u32),
    mask: i32,
    p: &Principal,
) -> bool {
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
