//! SETATTR as one call: the kernel sends one request for truncate(2),
//! chown(2), chmod(2) and utimensat(2) alike (and for the removal of set-id
//! bits before a write). `Fs::setattr` checks the whole request first, then
//! applies it in one fixed order, so that the adapter only translates.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{errno, may_mode, Attr, Fs, Kind};
use crate::error::Result;
use crate::kms::Principal;

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
