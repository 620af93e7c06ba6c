//! SETATTR as one call: the kernel sends one request for truncate(2),
//! chown(2), chmod(2) and utimensat(2) alike (and for the removal of set-id
//! bits before a write). `Fs::setattr` checks the whole request first, then
//! applies it in one fixed order, so that the adapter only translates.

use std::os::fd::AsRawFd;
use std::time::{SystemTime, UNIX_EPOCH};

use super::perms::{may_mode, setid_kill};
use super::{errno, lock, os_err, shard, sys, Attr, Fs, Kind, ROOT_INO};
use crate::error::{OssCode, Result};
use crate::principal::Principal;

/// A time SETATTR sets: the current time (UTIME_NOW), or a given one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    Now,
    At(SystemTime),
}

impl SetTime {
    fn timespec(self) -> libc::timespec {
        match self {
            SetTime::Now => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
            SetTime::At(t) => match t.duration_since(UNIX_EPOCH) {
                Ok(d) => libc::timespec {
                    tv_sec: d.as_secs() as i64,
                    tv_nsec: i64::from(d.subsec_nanos()),
                },
                // Before 1970: whole seconds down, nanoseconds up, as a
                // timespec holds them.
                Err(e) => {
                    let d = e.duration();
                    let (sec, nsec) = (d.as_secs() as i64, i64::from(d.subsec_nanos()));
                    if nsec == 0 {
                        libc::timespec {
                            tv_sec: -sec,
                            tv_nsec: 0,
                        }
                    } else {
                        libc::timespec {
                            tv_sec: -sec - 1,
                            tv_nsec: 1_000_000_000 - nsec,
                        }
                    }
                }
            },
        }
    }
}

/// The changes one SETATTR asks for; `None` leaves that attribute alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttrChanges {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    /// Linux sets the ctime itself on every change, so it is not applied;
    /// asking for it still makes the request more than a set-id removal.
    pub ctime: Option<SystemTime>,
}

impl AttrChanges {
    /// Nothing asked for: under FUSE_HANDLE_KILLPRIV_V2 both
    /// chown(f, -1, -1) and the kernel's removal of set-id bits before a
    /// write arrive so (see `Fs::chown_nothing`).
    pub fn is_empty(&self) -> bool {
        *self == AttrChanges::default()
    }
}

impl Fs {
    /// SETATTR: checks every requested change, then makes them in this
    /// order, and returns the attributes after them:
    /// 1. size: the step that can fail for reasons no check foresees (the
    ///    object's key), so a refused truncation changes nothing else; its
    ///    set-id removal is judged on the owner and group before any chown,
    ///    as the kernel judges it before the change;
    /// 2. owner and group, which clear set-id bits (`Fs::chown`);
    /// 3. mode, after both: a mode asked for is the mode the file keeps;
    /// 4. times, last: the changes above move mtime or ctime, and times
    ///    asked for must stay as given.
    ///
    /// `fh`: the handle of an ftruncate(2), which needs no write permission
    /// (the handle was opened for writing).
    pub fn setattr(
        &self,
        ino: u64,
        ch: &AttrChanges,
        p: &Principal,
        fh: Option<u64>,
    ) -> Result<Attr> {
        if ch.is_empty() {
            self.chown_nothing(ino, p)?;
            return self.getattr(ino);
        }
        self.writable()?;
        let cur = self.getattr(ino)?;
        let mode = self.check_setattr(ino, &cur, ch, p, fh.is_some())?;
        if let Some(size) = ch.size {
            self.truncate(ino, fh, size, p)?;
        }
        if ch.uid.is_some() || ch.gid.is_some() {
            self.chown(ino, ch.uid, ch.gid, p)?;
        }
        if let Some(m) = mode {
            self.chmod(ino, m)?;
        }
        if ch.atime.is_some() || ch.mtime.is_some() {
            self.utimens(
                ino,
                ch.atime.map(SetTime::timespec),
                ch.mtime.map(SetTime::timespec),
            )?;
        }
        self.getattr(ino)
    }

    /// The checks of a SETATTR on `cur`, before anything changes; returns
    /// the mode to set. Without FUSE default_permissions the kernel checks
    /// none of them (it marks the request ATTR_FORCE), so they are made
    /// here as Linux's setattr_prepare makes them. Root stands for the
    /// capabilities (CAP_CHOWN, CAP_FOWNER, CAP_FSETID), as in `may`.
    fn check_setattr(
        &self,
        ino: u64,
        cur: &Attr,
        ch: &AttrChanges,
        p: &Principal,
        has_handle: bool,
    ) -> Result<Option<u32>> {
        if ch.mode.is_some() || ch.uid.is_some() || ch.gid.is_some() {
            Self::not_root(ino)?;
        }
        if ch.mode.is_some() && cur.kind == Kind::Symlink {
            // A symlink's mode is fixed (fchmodat refuses AT_SYMLINK_NOFOLLOW).
            return Err(errno(libc::EOPNOTSUPP));
        }
        if ch.size.is_some() {
            match cur.kind {
                Kind::File => {}
                Kind::Dir => return Err(errno(libc::EISDIR)),
                _ => return Err(errno(libc::EINVAL)),
            }
        }
        if self.opts.kernel_checks_permissions {
            return Ok(ch.mode);
        }
        let root = p.uid == 0;
        let owner = p.uid == cur.uid;
        let mode = (cur.kind, u32::from(cur.perm));
        if ch.size.is_some() && !has_handle && !may_mode(mode, (cur.uid, cur.gid), libc::W_OK, p) {
            return Err(errno(libc::EACCES));
        }
        // chown: only root gives a file away; the owner may set the group
        // to one of theirs (and the owner to themselves).
        if let Some(uid) = ch.uid {
            let allowed = root || (owner && uid == cur.uid);
            if !allowed {
                return Err(errno(libc::EPERM));
            }
        }
        if let Some(gid) = ch.gid {
            let allowed = root || (owner && (gid == cur.gid || p.in_group(gid)));
            if !allowed {
                return Err(errno(libc::EPERM));
            }
        }
        let mut new_mode = ch.mode;
        if let Some(m) = &mut new_mode {
            if !root && !owner {
                return Err(errno(libc::EPERM));
            }
            // The owner outside the file's (new) group cannot make it
            // set-group-ID: the bit is dropped, not refused.
            let group = ch.gid.unwrap_or(cur.gid);
            if !root && !p.in_group(group) {
                *m &= !libc::S_ISGID;
            }
        }
        // Times: setting them to now (touch) needs ownership or write
        // permission; setting anything else needs ownership.
        let touch = ch.atime == Some(SetTime::Now) && ch.mtime == Some(SetTime::Now);
        if !root && !owner {
            if touch {
                if !may_mode(mode, (cur.uid, cur.gid), libc::W_OK, p) {
                    return Err(errno(libc::EACCES));
                }
            } else if ch.atime.is_some() || ch.mtime.is_some() {
                return Err(errno(libc::EPERM));
            }
        }
        Ok(new_mode)
    }
}

impl Fs {
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
    pub(super) fn not_root(ino: u64) -> Result<()> {
        if ino == ROOT_INO {
            tracing::warn!(
                code = OssCode::AccessDenied.as_str(),
                "the mount root's mode and owner are fixed (the data directory stays private)"
            );
            return Err(errno(libc::EPERM));
        }
        Ok(())
    }
}
