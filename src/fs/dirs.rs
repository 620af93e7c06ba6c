//! Directories: listing (opendir, readdir, readdirplus) and fsyncdir.
//!
//! A listing streams: its handle holds the directory open and at most one
//! batch of getdents64 records, read as readdir asks for more, so an open
//! handle costs the same for ten entries as for a million (a copy of the
//! whole directory cost ~70 MiB for a million, issue 13). FUSE offsets are
//! the backend's own d_off cookies, which the backend keeps valid while
//! entries come and go (what telldir and seekdir rely on): a readdir at
//! another offset than where the stream stands seeks there, and offset 0
//! starts again. "." and ".." are the backend's own first two entries,
//! shown with the directory's inode number, so every offset is a cookie
//! the backend made and none of ours can collide with one.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::{errno, lock, os_err, sys, Attr, Fs, Handle, Kind, Role};
use crate::error::Result;

/// The most a handle buffers of getdents64 records: some 500 entries of
/// 40-byte names, more than one reply to the kernel holds.
const BATCH: usize = 32 * 1024;

/// An open directory being listed (see the module doc).
pub(super) struct DirStream {
    dir: File,
    /// The directory's FUSE inode number and role, as at opendir.
    ino: u64,
    role: Role,
    /// Records read and not yet consumed are `buf[pos..len]`; the buffer
    /// is let go at the end of the directory.
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// The offset the stream stands at: the cookie of the last entry the
    /// kernel took (0 before the first). Entries consumed since were
    /// hidden ones, so a readdir at this offset goes on from `pos`.
    at: u64,
}

/// One getdents64 record (struct linux_dirent64).
struct Dirent<'a> {
    ino: u64,
    /// Where the stream stands after this entry (d_off).
    cookie: u64,
    d_type: u8,
    name: &'a OsStr,
    len: usize,
}

fn field<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at + N)?.try_into().ok()
}

/// The record at the start of `b`; None if it is cut short or malformed.
fn parse(b: &[u8]) -> Option<Dirent<'_>> {
    let len = u16::from_ne_bytes(field(b, 16)?) as usize;
    // The name starts at byte 19 and ends with a NUL inside the record.
    let raw = b.get(19..len)?;
    let name = raw.split(|&c| c == 0).next()?;
    Some(Dirent {
        ino: u64::from_ne_bytes(field(b, 0)?),
        // A cookie is an opaque 64-bit position; kept bit for bit.
        cookie: i64::from_ne_bytes(field(b, 8)?) as u64,
        d_type: *b.get(18)?,
        name: OsStr::from_bytes(name),
        len,
    })
}

fn is_dot(name: &OsStr) -> bool {
    name == "." || name == ".."
}

impl DirStream {
    /// Reads the next batch if the buffer is used up; false at the end of
    /// the directory.
    fn fill(&mut self) -> io::Result<bool> {
        if self.pos < self.len {
            return Ok(true);
        }
        if self.buf.is_empty() {
            self.buf = vec![0; BATCH];
        }
        let n = sys::getdents(self.dir.as_raw_fd(), &mut self.buf)?;
        (self.pos, self.len) = (0, n);
        if n == 0 {
            // Asked again, the stream reads anew: entries made since show.
            self.buf = Vec::new();
        }
        Ok(n > 0)
    }

    /// The entry `fill` made available.
    fn entry(&self) -> Result<Dirent<'_>> {
        self.buf
            .get(self.pos..self.len)
            .and_then(parse)
            .ok_or_else(|| errno(libc::EIO))
    }

    /// Steps past `e`'s record; `taken` when the kernel took the entry.
    fn consume(&mut self, len: usize, cookie: u64, taken: bool) {
        self.pos += len;
        if taken {
            self.at = cookie;
        }
    }

    /// Makes the stream stand at `offset` (a cookie given earlier, or 0).
    fn resume(&mut self, offset: u64) -> Result<()> {
        if offset == self.at {
            return Ok(());
        }
        sys::seek_dir(self.dir.as_raw_fd(), offset as i64).map_err(os_err)?;
        (self.pos, self.len, self.at) = (0, 0, offset);
        Ok(())
    }

    /// The kind the mount shows `e` as, from d_type (no stat per entry
    /// unless the backend leaves it unknown); None when it is not shown:
    /// hidden, gone meanwhile, or a non-directory at the mount root.
    fn kind_of(&self, e: &Dirent<'_>) -> Option<Kind> {
        if is_dot(e.name) {
            return Some(Kind::Dir);
        }
        if Fs::hidden(&self.role, e.name) {
            return None;
        }
        let kind = match e.d_type {
            libc::DT_DIR => Kind::Dir,
            libc::DT_REG => Kind::File,
            libc::DT_LNK => Kind::Symlink,
            libc::DT_FIFO => Kind::Fifo,
            libc::DT_SOCK => Kind::Socket,
            libc::DT_CHR => Kind::CharDev,
            libc::DT_BLK => Kind::BlockDev,
            _ => {
                let st = sys::stat_at(self.dir.as_raw_fd(), e.name).ok()?;
                Kind::from_mode(st.st_mode)
            }
        };
        if matches!(self.role, Role::Root) && kind != Kind::Dir {
            return None;
        }
        Some(kind)
    }
}

impl Fs {
    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let (fd, role) = self.node(ino)?;
        // Relative to the node's descriptor: no name but "." is resolved.
        let dir = sys::open_at(
            fd.as_raw_fd(),
            OsStr::new("."),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )
        .map_err(os_err)?;
        let stream = DirStream {
            dir,
            ino,
            role,
            buf: Vec::new(),
            pos: 0,
            len: 0,
            at: 0,
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Handle::Dir(Arc::new(Mutex::new(stream))));
        Ok(fh)
    }

    fn dir_stream(&self, fh: u64) -> Result<Arc<Mutex<DirStream>>> {
        match lock(&self.handles).get(&fh) {
            Some(Handle::Dir(d)) => Ok(d.clone()),
            _ => Err(errno(libc::EBADF)),
        }
    }

    /// Directory entries from `offset` on, each with the offset that
    /// follows it; `add` returns true when the reply buffer is full, and
    /// the entry it refused comes first in the next reply.
    pub fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, Kind, &OsStr) -> bool,
    ) -> Result<()> {
        let stream = self.dir_stream(fh)?;
        let mut s = lock(&stream);
        s.resume(offset)?;
        while s.fill().map_err(os_err)? {
            let e = s.entry()?;
            let (len, cookie) = (e.len, e.cookie);
            let taken = match s.kind_of(&e) {
                Some(kind) => {
                    let ino = if is_dot(e.name) {
                        s.ino
                    } else {
                        // d_ino from the directory itself: no stat per entry.
                        self.fuse_ino(e.ino)
                    };
                    if add(ino, cookie, kind, e.name) {
                        break;
                    }
                    true
                }
                None => false,
            };
            s.consume(len, cookie, taken);
        }
        Ok(())
    }

    /// Directory entries from `offset` on with their attributes
    /// (READDIRPLUS). The kernel remembers every entry it is sent but "."
    /// and "..", so each counts as a lookup; `add` returns true when the
    /// reply buffer is full, and the entry it refused is taken back (and
    /// comes first in the next reply).
    pub fn readdirplus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, &OsStr, &Attr) -> bool,
    ) -> Result<()> {
        let (dfd, role) = self.node(ino)?;
        let stream = self.dir_stream(fh)?;
        let mut s = lock(&stream);
        s.resume(offset)?;
        while s.fill().map_err(os_err)? {
            let e = s.entry()?;
            let (len, cookie) = (e.len, e.cookie);
            let taken = match s.kind_of(&e) {
                None => false,
                Some(_) if is_dot(e.name) => {
                    // Not remembered by the kernel: the directory's own
                    // attr serves, since the kernel ignores it.
                    let attr = self.getattr(ino)?;
                    if add(cookie, e.name, &attr) {
                        break;
                    }
                    true
                }
                Some(_) => match self.remember((ino, dfd.as_raw_fd(), &role), e.name) {
                    // Removed since it was read, or no longer a bucket:
                    // left out.
                    Err(_) => false,
                    Ok(attr) => {
                        if add(cookie, e.name, &attr) {
                            self.forget(attr.ino, 1);
                            break;
                        }
                        true
                    }
                },
            };
            s.consume(len, cookie, taken);
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
}
