//! What the FUSE adapter asks of a filesystem: [`FsOps`]. The local
//! [`Fs`] and the store's [`super::store::StoreFs`] both answer it, so one
//! adapter and both transports (/dev/fuse, io_uring) serve either.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use super::{Attr, AttrChanges, Fs, Kind};
use crate::error::Result;
use crate::principal::Principal;

/// The filesystem operations of a mount, one method per FUSE request that
/// does something. Errors carry their errno (`Error::errno`).
#[allow(clippy::too_many_arguments)]
pub trait FsOps: Send + Sync + 'static {
    fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr>;
    fn forget(&self, ino: u64, n: u64);
    fn getattr(&self, ino: u64) -> Result<Attr>;
    fn setattr(&self, ino: u64, ch: &AttrChanges, p: &Principal, fh: Option<u64>) -> Result<Attr>;
    fn readlink(&self, ino: u64) -> Result<Vec<u8>>;
    fn mknod(&self, parent: u64, name: &OsStr, mode: u32, rdev: u32, p: &Principal)
        -> Result<Attr>;
    fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, uid: u32, gid: u32) -> Result<Attr>;
    fn unlink(&self, parent: u64, name: &OsStr) -> Result<()>;
    fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()>;
    fn symlink(&self, parent: u64, name: &OsStr, target: &Path, uid: u32, gid: u32)
        -> Result<Attr>;
    fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()>;
    fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Result<Attr>;
    fn create_object(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        p: &Principal,
    ) -> Result<(u64, Attr)>;
    fn open(&self, ino: u64, flags: i32, p: &Principal) -> Result<u64>;
    /// Reads and hands the bytes to `f` (the reply) without a copy.
    fn read_with<R>(&self, fh: u64, off: u64, size: u32, f: impl FnOnce(&[u8]) -> R) -> Result<R>;
    fn write(
        &self,
        ino: u64,
        fh: u64,
        off: u64,
        data: &[u8],
        kill_setid: bool,
        p: &Principal,
    ) -> Result<u32>;
    /// close(2) of one descriptor of a handle that may have written.
    fn flush(&self, _ino: u64, _fh: u64) -> Result<()> {
        Ok(())
    }
    fn release(&self, ino: u64, fh: u64);
    fn fsync(&self, fh: u64, datasync: bool) -> Result<()>;
    fn fallocate(
        &self,
        ino: u64,
        fh: u64,
        off: u64,
        len: u64,
        mode: i32,
        p: &Principal,
    ) -> Result<()>;
    fn copy_range(
        &self,
        fh_in: u64,
        off_in: u64,
        ino_out: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
        p: &Principal,
    ) -> Result<u32>;
    fn opendir(&self, ino: u64) -> Result<u64>;
    /// `add(ino, next offset, kind, name)` returns true when the reply is full.
    fn readdir(
        &self,
        fh: u64,
        offset: u64,
        add: impl FnMut(u64, u64, Kind, &OsStr) -> bool,
    ) -> Result<()>;
    /// `add(next offset, name, attributes)` returns true when full.
    fn readdirplus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        add: impl FnMut(u64, &OsStr, &Attr) -> bool,
    ) -> Result<()>;
    fn releasedir(&self, fh: u64);
    fn fsyncdir(&self, ino: u64) -> Result<()>;
    fn statfs(&self) -> Result<libc::statvfs>;
    fn setxattr(
        &self,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        p: &Principal,
    ) -> Result<()>;
    fn getxattr(&self, ino: u64, name: &OsStr, p: &Principal) -> Result<Vec<u8>>;
    fn listxattr(&self, ino: u64, p: &Principal) -> Result<Vec<u8>>;
    fn removexattr(&self, ino: u64, name: &OsStr, p: &Principal) -> Result<()>;
    fn access(&self, ino: u64, mask: i32, p: &Principal) -> Result<()>;
    /// Whether the kernel may keep the pages it cached of an object
    /// across this open (FOPEN_KEEP_CACHE).
    fn keep_cache(&self, _fh: u64) -> bool {
        true
    }
    /// How long the kernel may trust entries and attributes.
    fn ttl(&self) -> Duration {
        DEFAULT_TTL
    }
}

/// Every change goes through a local mount's daemon, which answers with
/// fresh attributes, so a short TTL only bounds how stale a change made
/// behind it (the CLI) looks.
pub const DEFAULT_TTL: Duration = Duration::from_secs(1);

impl FsOps for Fs {
    fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        Fs::lookup(self, parent, name)
    }
    fn forget(&self, ino: u64, n: u64) {
        Fs::forget(self, ino, n)
    }
    fn getattr(&self, ino: u64) -> Result<Attr> {
        Fs::getattr(self, ino)
    }
    fn setattr(&self, ino: u64, ch: &AttrChanges, p: &Principal, fh: Option<u64>) -> Result<Attr> {
        Fs::setattr(self, ino, ch, p, fh)
    }
    fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        Fs::readlink(self, ino)
    }
    fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        p: &Principal,
    ) -> Result<Attr> {
        Fs::mknod(self, parent, name, mode, rdev, p)
    }
    fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        Fs::mkdir(self, parent, name, mode, uid, gid)
    }
    fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        Fs::unlink(self, parent, name)
    }
    fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        Fs::rmdir(self, parent, name)
    }
    fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &Path,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        Fs::symlink(self, parent, name, target, uid, gid)
    }
    fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        Fs::rename(self, parent, name, newparent, newname, flags)
    }
    fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Result<Attr> {
        Fs::link(self, ino, newparent, newname)
    }
    fn create_object(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        p: &Principal,
    ) -> Result<(u64, Attr)> {
        Fs::create_object(self, parent, name, mode, flags, p)
    }
    fn open(&self, ino: u64, flags: i32, p: &Principal) -> Result<u64> {
        Fs::open(self, ino, flags, p)
    }
    fn read_with<R>(&self, fh: u64, off: u64, size: u32, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        Fs::read_with(self, fh, off, size, f)
    }
    fn write(
        &self,
        ino: u64,
        fh: u64,
        off: u64,
        data: &[u8],
        kill_setid: bool,
        p: &Principal,
    ) -> Result<u32> {
        Fs::write(self, ino, fh, off, data, kill_setid, p)
    }
    fn release(&self, ino: u64, fh: u64) {
        Fs::release(self, ino, fh)
    }
    fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        Fs::fsync(self, fh, datasync)
    }
    fn fallocate(
        &self,
        ino: u64,
        fh: u64,
        off: u64,
        len: u64,
        mode: i32,
        p: &Principal,
    ) -> Result<()> {
        Fs::fallocate(self, ino, fh, off, len, mode, p)
    }
    fn copy_range(
        &self,
        fh_in: u64,
        off_in: u64,
        ino_out: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
        p: &Principal,
    ) -> Result<u32> {
        Fs::copy_range(self, fh_in, off_in, ino_out, fh_out, off_out, len, p)
    }
    fn opendir(&self, ino: u64) -> Result<u64> {
        Fs::opendir(self, ino)
    }
    fn readdir(
        &self,
        fh: u64,
        offset: u64,
        add: impl FnMut(u64, u64, Kind, &OsStr) -> bool,
    ) -> Result<()> {
        Fs::readdir(self, fh, offset, add)
    }
    fn readdirplus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        add: impl FnMut(u64, &OsStr, &Attr) -> bool,
    ) -> Result<()> {
        Fs::readdirplus(self, ino, fh, offset, add)
    }
    fn releasedir(&self, fh: u64) {
        Fs::releasedir(self, fh)
    }
    fn fsyncdir(&self, ino: u64) -> Result<()> {
        Fs::fsyncdir(self, ino)
    }
    fn statfs(&self) -> Result<libc::statvfs> {
        Fs::statfs(self)
    }
    fn setxattr(
        &self,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        p: &Principal,
    ) -> Result<()> {
        Fs::setxattr(self, ino, name, value, flags, p)
    }
    fn getxattr(&self, ino: u64, name: &OsStr, p: &Principal) -> Result<Vec<u8>> {
        Fs::getxattr(self, ino, name, p)
    }
    fn listxattr(&self, ino: u64, p: &Principal) -> Result<Vec<u8>> {
        Fs::listxattr(self, ino, p)
    }
    fn removexattr(&self, ino: u64, name: &OsStr, p: &Principal) -> Result<()> {
        Fs::removexattr(self, ino, name, p)
    }
    fn access(&self, ino: u64, mask: i32, p: &Principal) -> Result<()> {
        Fs::access(self, ino, mask, p)
    }
}
