//! Thin, safe wrappers over the *at(2) system calls the filesystem core
//! uses on backend inodes, which it holds as O_PATH descriptors.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// flock(2) `op` on `fd`, waiting as `op` says, retried on EINTR.
pub fn flock(fd: RawFd, op: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: flock only takes an fd and flags.
        match check(unsafe { libc::flock(fd, op) }) {
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            r => return r.map(|_| ()),
        }
    }
}

/// Starts writeback of the file's dirty pages without waiting for it.
pub fn start_writeback(fd: RawFd) -> io::Result<()> {
    // SAFETY: only an fd and integers; offset 0 and length 0 mean the
    // whole file.
    check(unsafe { libc::sync_file_range(fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE) }).map(|_| ())
}

/// The /proc path that reopens an O_PATH descriptor's inode.
pub fn proc_path(fd: RawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{fd}"))
}

pub fn proc_cpath(fd: RawFd) -> CString {
    // A formatted number never contains NUL.
    #[allow(clippy::expect_used)]
    CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL in a number")
}

/// An O_PATH descriptor of the inode the open descriptor `fd` refers to,
/// through its /proc magic link: no name is looked up, so nothing a user
/// renames can change which inode it is.
pub fn path_fd_of(fd: RawFd) -> io::Result<OwnedFd> {
    let p = proc_cpath(fd);
    // SAFETY: valid C string; the returned fd is owned below.
    let r = check(unsafe { libc::open(p.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) })?;
    // SAFETY: r is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// An O_PATH descriptor of `name` in `dir`, not following symlinks.
pub fn open_path(dir: RawFd, name: &OsStr) -> io::Result<OwnedFd> {
    let n = cstr(name)?;
    // SAFETY: valid C string; the returned fd is owned below.
    let fd = check(unsafe {
        libc::openat(
            dir,
            n.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `name` in `dir` with `flags` and `mode`.
pub fn open_at(dir: RawFd, name: &OsStr, flags: i32, mode: u32) -> io::Result<File> {
    let n = cstr(name)?;
    // SAFETY: valid C string.
    let fd = check(unsafe {
        libc::openat(
            dir,
            n.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Reopens an O_PATH descriptor's inode with real access `flags`.
pub fn reopen(fd: RawFd, flags: i32) -> io::Result<File> {
    let p = proc_cpath(fd);
    // SAFETY: valid C string.
    let f = check(unsafe {
        libc::open(
            p.as_ptr(),
            (flags & !libc::O_CREAT & !libc::O_EXCL & !libc::O_TRUNC) | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { File::from_raw_fd(f) })
}

pub fn stat_fd(fd: RawFd) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: empty path with AT_EMPTY_PATH stats fd itself; st is written.
    check(unsafe {
        libc::fstatat(
            fd,
            c"".as_ptr(),
            st.as_mut_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded and filled st.
    Ok(unsafe { st.assume_init() })
}

/// The stat of `name` in `dir`, not following a symlink.
pub fn stat_at(dir: RawFd, name: &OsStr) -> io::Result<libc::stat> {
    let n = cstr(name)?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: valid C string; st is written on success.
    check(unsafe { libc::fstatat(dir, n.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) })?;
    // SAFETY: fstatat succeeded and filled st.
    Ok(unsafe { st.assume_init() })
}

/// getdents64(2): the next `linux_dirent64` records of the directory open
/// as `fd` into `buf`; 0 at the end of the directory.
pub fn getdents(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most buf.len() bytes into buf.
    let r = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd,
            buf.as_mut_ptr(),
            buf.len() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // Never more than buf.len(), so it fits.
    Ok(r as usize)
}

/// Moves the directory stream open as `fd` to `cookie`, a d_off it gave
/// (0: its start).
pub fn seek_dir(fd: RawFd, cookie: i64) -> io::Result<()> {
    // SAFETY: only an fd and integers.
    let r = unsafe { libc::lseek(fd, cookie, libc::SEEK_SET) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn mkdir_at(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid string.
    check(unsafe { libc::mkdirat(dir, n.as_ptr(), mode as libc::mode_t) }).map(|_| ())
}

pub fn mknod_at(dir: RawFd, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid string.
    check(unsafe { libc::mknodat(dir, n.as_ptr(), mode as libc::mode_t, rdev as libc::dev_t) })
        .map(|_| ())
}

pub fn symlink_at(target: &OsStr, dir: RawFd, name: &OsStr) -> io::Result<()> {
    let t = cstr(target)?;
    let n = cstr(name)?;
    // SAFETY: valid strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, n.as_ptr()) }).map(|_| ())
}

pub fn readlink_fd(fd: RawFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: empty path reads the link fd refers to (O_PATH|O_NOFOLLOW).
    let n = unsafe { libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

pub fn unlink_at(dir: RawFd, name: &OsStr, flags: i32) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: valid string.
    check(unsafe { libc::unlinkat(dir, n.as_ptr(), flags) }).map(|_| ())
}

pub fn rename_at(
    from_dir: RawFd,
    from: &OsStr,
    to_dir: RawFd,
    to: &OsStr,
    flags: u32,
) -> io::Result<()> {
    let f = cstr(from)?;
    let t = cstr(to)?;
    // SAFETY: valid strings; renameat2 via syscall for portability of libc versions.
    check(unsafe { libc::renameat2(from_dir, f.as_ptr(), to_dir, t.as_ptr(), flags) }).map(|_| ())
}

/// Hard-links the inode behind an O_PATH descriptor as `name` in `dir`.
pub fn link_fd(fd: RawFd, dir: RawFd, name: &OsStr) -> io::Result<()> {
    let p = proc_cpath(fd);
    let n = cstr(name)?;
    // SAFETY: valid strings; AT_SYMLINK_FOLLOW resolves the /proc magic link.
    check(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            p.as_ptr(),
            dir,
            n.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(|_| ())
}

pub fn chown_fd(fd: RawFd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    let u = uid.unwrap_or(u32::MAX);
    let g = gid.unwrap_or(u32::MAX);
    // SAFETY: empty path with AT_EMPTY_PATH changes fd's inode itself.
    check(unsafe {
        libc::fchownat(
            fd,
            c"".as_ptr(),
            u,
            g,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(|_| ())
}

pub fn chmod_fd(fd: RawFd, mode: u32) -> io::Result<()> {
    let p = proc_cpath(fd);
    // SAFETY: valid string. Symlinks never get here (their mode is fixed).
    check(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) }).map(|_| ())
}

/// utimensat on the inode behind `fd`; `None` leaves a time unchanged.
pub fn utimens_fd(
    fd: RawFd,
    is_symlink: bool,
    atime: Option<libc::timespec>,
    mtime: Option<libc::timespec>,
) -> io::Result<()> {
    let omit = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_OMIT,
    };
    let ts = [atime.unwrap_or(omit), mtime.unwrap_or(omit)];
    if is_symlink {
        // The /proc link would follow the symlink; AT_EMPTY_PATH on the
        // O_PATH descriptor changes the link itself (Linux >= 5.8).
        // SAFETY: empty path, two timespecs.
        return check(unsafe {
            libc::utimensat(
                fd,
                c"".as_ptr(),
                ts.as_ptr(),
                libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            )
        })
        .map(|_| ());
    }
    let p = proc_cpath(fd);
    // SAFETY: valid string and two timespecs.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), ts.as_ptr(), 0) }).map(|_| ())
}

pub fn statvfs_fd(fd: RawFd) -> io::Result<libc::statvfs> {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: st is written on success.
    check(unsafe { libc::fstatvfs(fd, st.as_mut_ptr()) })?;
    // SAFETY: succeeded.
    Ok(unsafe { st.assume_init() })
}

/// Whether a process runs inode `ino` of device `dev` (major, minor) as
/// its program, the one kind of file the kernel denies writes to (ETXTBSY).
/// Looks at every /proc/PID/exe with AT_STATX_DONT_SYNC, which a FUSE mount
/// answers from the kernel's cached attributes, so no request reaches the
/// daemon that asks. The executable is set before exec(2) lets the parent
/// run again, unlike the program's mappings in /proc/PID/maps. Processes
/// that vanish, or that /proc hides from us, are skipped.
pub fn runs_as_program(dev: (u32, u32), ino: u64) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|e| {
        let pid = e.file_name();
        if !pid.as_bytes().iter().all(u8::is_ascii_digit) {
            return false;
        }
        let Ok(path) = CString::new(format!("/proc/{}/exe", pid.to_string_lossy())) else {
            return false;
        };
        // SAFETY: statx is a plain C struct, for which all zero bytes is a
        // valid value.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: statx writes only into `stx`, a plain struct we own; the
        // path is a valid C string.
        let r = unsafe {
            libc::statx(
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::AT_STATX_DONT_SYNC,
                libc::STATX_INO,
                &mut stx,
            )
        };
        r == 0 && (stx.stx_dev_major, stx.stx_dev_minor) == dev && stx.stx_ino == ino
    })
}

/// `struct file_handle` with room for the largest handle the kernel makes
/// (MAX_HANDLE_SZ), as name_to_handle_at(2) fills it.
#[repr(C)]
pub struct RawHandle {
    pub bytes: u32,
    pub ty: libc::c_int,
    pub data: [u8; libc::MAX_HANDLE_SZ as usize],
}

/// The file handle of the inode behind `fd` (name_to_handle_at with
/// AT_EMPTY_PATH): it names the inode on its filesystem without holding it.
pub fn handle_of(fd: RawFd) -> io::Result<RawHandle> {
    let mut h = RawHandle {
        bytes: libc::MAX_HANDLE_SZ as u32,
        ty: 0,
        data: [0; libc::MAX_HANDLE_SZ as usize],
    };
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `h` is a file_handle whose handle_bytes says how much room
    // follows it; mount_id is written; the empty path with AT_EMPTY_PATH
    // names fd itself.
    let r = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            fd,
            c"".as_ptr(),
            &mut h as *mut RawHandle,
            &mut mount_id as *mut libc::c_int,
            libc::AT_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(h)
}

/// Opens the inode a handle names on the filesystem of `mount_fd`, as an
/// O_PATH descriptor that does not follow a symlink.
pub fn open_handle(mount_fd: RawFd, ty: libc::c_int, data: &[u8]) -> io::Result<OwnedFd> {
    let mut h = RawHandle {
        bytes: data.len() as u32,
        ty,
        data: [0; libc::MAX_HANDLE_SZ as usize],
    };
    let n = data.len().min(h.data.len());
    h.data[..n].copy_from_slice(&data[..n]);
    // SAFETY: `h` is a valid file_handle of `data.len()` bytes; the
    // returned descriptor is owned below.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd,
            &mut h as *mut RawHandle,
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: r is a fresh descriptor we own (a descriptor fits c_int).
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// The soft limit on open descriptors (RLIMIT_NOFILE).
pub fn fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur
}
