//! Directories: listing (opendir, readdir, readdirplus) and fsyncdir.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use super::{errno, lock, os_err, sys, Attr, Fs, Handle, Kind, Role};
use crate::error::Result;

impl Fs {
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
}
