//! The FUSE adapter: kernel requests in, `fs::FsOps` calls, replies out.
//! No filesystem logic lives here.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::error::{Error, OssCode};
use crate::fs::{Attr, AttrChanges, Fs, FsOps, Kind, SetTime};
use crate::principal::Principal;

/// Open flags for file handles. KEEP_CACHE: every change to an object's
/// bytes goes through this daemon (the CLI replaces objects by rename,
/// which makes a new inode), so the page cache stays valid across opens.
const FILE_OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_KEEP_CACHE;

/// For read-only handles also NOFLUSH: nothing is buffered here, and such a
/// handle cannot have dirtied pages (no shared writable mapping), so the
/// FLUSH the kernel sends on its close(2) would be a round trip that does
/// nothing (one of four requests per file read). Handles that write keep
/// it: the kernel writes an mmap's dirty pages back at that FLUSH and
/// reports their errors to close(2).
const READ_ONLY_OPEN_FLAGS: FopenFlags = FILE_OPEN_FLAGS.union(FopenFlags::FOPEN_NOFLUSH);

pub struct SsefsFuse<F = Fs> {
    pub fs: Arc<F>,
    /// Set when `-o io_uring` asked for FUSE over io_uring and its rings
    /// are ready: `init` asks the kernel for it and records here whether
    /// the kernel agreed (then the rings must be started).
    pub uring: Option<Arc<AtomicBool>>,
}

/// The largest write (and read) the kernel sends: FUSE's 1 MiB maximum.
/// Also the size of each io_uring entry's payload.
pub const MAX_WRITE: u32 = 1 << 20;

fn kind(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

fn attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

/// The errno for `e`, logging it once when it carries an OSS meaning
/// (KMS refusals, validation, integrity) rather than a plain POSIX one.
fn errno(op: &str, e: Error) -> Errno {
    let plain = e.code == OssCode::InternalError && e.os_errno.is_some();
    if !plain {
        tracing::warn!(
            op,
            code = e.code.as_str(),
            path = e.resource.as_deref().unwrap_or("-"),
            key_id = e.key_id.as_deref().unwrap_or("-"),
            "{}",
            e.message
        );
    } else if e.code == OssCode::InternalError && e.os_errno == Some(libc::EIO) {
        tracing::error!(
            op,
            path = e.resource.as_deref().unwrap_or("-"),
            "{}",
            e.message
        );
    }
    Errno::from_i32(e.errno())
}

/// The caller of a request. Its supplementary groups are read from /proc
/// only if a grant by gid is consulted.
fn principal(req: &Request) -> Principal {
    Principal::of_process(req.uid(), req.gid(), req.pid())
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(t),
    }
}

impl<F: FsOps> Filesystem for SsefsFuse<F> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(MAX_WRITE);
        let _ = config.set_max_readahead(MAX_WRITE);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // O_TRUNC arrives with open, so an overwrite never has to open (and
        // unwrap the key of) the old object first.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        // Set-id bits are cleared here on writes, truncations and chowns
        // (Fs::kill_setid, Fs::chown), so the kernel no longer asks for
        // security.capability on every write (only on the first after each
        // attribute refresh) nor for the mode before every chown.
        let _ = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        // `ls -l` and friends: entries come with their attributes, one
        // request per buffer instead of a LOOKUP per entry. AUTO lets the
        // kernel fall back to plain READDIR when nobody stats the entries.
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        if let Some(agreed) = &self.uring {
            // The kernel offers the flag only when its `enable_uring` is on.
            if config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok()
            {
                agreed.store(true, Ordering::Release);
            } else {
                tracing::warn!(
                    "FUSE over io_uring not offered by the kernel (the fuse module's enable_uring is N, or Linux is older than 6.14): serving over /dev/fuse"
                );
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name) {
            Ok(a) => reply.entry(&self.fs.ttl(), &attr(&a), Generation(0)),
            Err(e) => reply.error(errno("lookup", e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&self.fs.ttl(), &attr(&a)),
            Err(e) => reply.error(errno("getattr", e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let changes = AttrChanges {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            ctime,
        };
        match self
            .fs
            .setattr(ino.0, &changes, &principal(req), fh.map(|f| f.0))
        {
            Ok(a) => reply.attr(&self.fs.ttl(), &attr(&a)),
            Err(e) => reply.error(errno("setattr", e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno("readlink", e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let p = principal(req);
        match self.fs.mknod(parent.0, name, mode & !umask, rdev, &p) {
            Ok(a) => reply.entry(&self.fs.ttl(), &attr(&a), Generation(0)),
            Err(e) => reply.error(errno("mknod", e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self
            .fs
            .mkdir(parent.0, name, mode & !umask, req.uid(), req.gid())
        {
            Ok(a) => reply.entry(&self.fs.ttl(), &attr(&a), Generation(0)),
            Err(e) => reply.error(errno("mkdir", e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("unlink", e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rmdir", e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match self
            .fs
            .symlink(parent.0, link_name, target, req.uid(), req.gid())
        {
            Ok(a) => reply.entry(&self.fs.ttl(), &attr(&a), Generation(0)),
            Err(e) => reply.error(errno("symlink", e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self
            .fs
            .rename(parent.0, name, newparent.0, newname, flags.bits())
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rename", e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.fs.link(ino.0, newparent.0, newname) {
            Ok(a) => reply.entry(&self.fs.ttl(), &attr(&a), Generation(0)),
            Err(e) => reply.error(errno("link", e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let p = principal(req);
        let read_only = flags.0 & libc::O_ACCMODE == libc::O_RDONLY && flags.0 & libc::O_TRUNC == 0;
        let how = if read_only {
            READ_ONLY_OPEN_FLAGS
        } else {
            FILE_OPEN_FLAGS
        };
        match self.fs.open(ino.0, flags.0, &p) {
            Ok(fh) if self.fs.keep_cache(fh) => reply.opened(FileHandle(fh), how),
            Ok(fh) => reply.opened(FileHandle(fh), how.difference(FopenFlags::FOPEN_KEEP_CACHE)),
            Err(e) => reply.error(errno("open", e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // The reply is sent from inside, straight from the thread's buffer.
        let mut reply = Some(reply);
        let r = self.fs.read_with(fh.0, offset, size, |d| {
            if let Some(r) = reply.take() {
                r.data(d);
            }
        });
        if let (Err(e), Some(r)) = (r, reply.take()) {
            r.error(errno("read", e));
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let p = principal(req);
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self.fs.write(ino.0, fh.0, offset, data, kill, &p) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno("write", e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Locally writes go to the backend as they arrive and this does
        // nothing; on a store it uploads. (Not sent for read-only handles:
        // READ_ONLY_OPEN_FLAGS.)
        match self.fs.flush(ino.0, fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("flush", e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(ino.0, fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.fsync(fh.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("fsync", e)),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno("opendir", e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.fs.readdir(fh.0, offset, |ino, next, k, name| {
            reply.add(INodeNo(ino), next, kind(k), name)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("readdir", e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.fs.readdirplus(ino.0, fh.0, offset, |next, name, a| {
            reply.add(
                INodeNo(a.ino),
                next,
                name,
                &self.fs.ttl(),
                &attr(a),
                Generation(0),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("readdirplus", e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.fsyncdir(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("fsyncdir", e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                255,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno("statfs", e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let p = principal(req);
        match self.fs.setxattr(ino.0, name, value, flags, &p) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("setxattr", e)),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let p = principal(req);
        match self.fs.getxattr(ino.0, name, &p) {
            Ok(v) => xattr_reply(reply, size, &v),
            Err(e) => reply.error(errno("getxattr", e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let p = principal(req);
        match self.fs.listxattr(ino.0, &p) {
            Ok(v) => xattr_reply(reply, size, &v),
            Err(e) => reply.error(errno("listxattr", e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let p = principal(req);
        match self.fs.removexattr(ino.0, name, &p) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("removexattr", e)),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.fs.access(ino.0, mask.bits(), &principal(req)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("access", e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let p = principal(req);
        match self
            .fs
            .create_object(parent.0, name, mode & !umask & 0o7777, flags, &p)
        {
            Ok((fh, a)) => reply.created(
                &self.fs.ttl(),
                &attr(&a),
                Generation(0),
                FileHandle(fh),
                FILE_OPEN_FLAGS,
            ),
            Err(e) => reply.error(errno("create", e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let p = principal(req);
        match self.fs.fallocate(ino.0, fh.0, offset, length, mode, &p) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("fallocate", e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let p = principal(req);
        match self
            .fs
            .copy_range(fh_in.0, offset_in, ino_out.0, fh_out.0, offset_out, len, &p)
        {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno("copy_file_range", e)),
        }
    }
}

/// getxattr/listxattr's size protocol: 0 asks for the length.
fn xattr_reply(reply: ReplyXattr, size: u32, v: &[u8]) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if v.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(v);
    }
}
