//! Safe wrappers over the xattr system calls, for the three ways ssefs names
//! an inode: a backend path whose symlinks are not followed (`l*xattr`), a
//! /proc magic link that must be followed to reach the inode (`*xattr`), and
//! an open file (`f*xattr`).

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Which inode an xattr call addresses.
#[derive(Clone, Copy)]
pub enum At<'a> {
    /// The path itself; a symlink is not followed.
    Link(&'a Path),
    /// Whatever the path resolves to (used with /proc/self/fd/N).
    Follow(&'a Path),
    /// An open file.
    File(&'a File),
}

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Runs a size-query-then-fill xattr call until the buffer fits (the value
/// can grow between the two calls).
fn sized(call: impl Fn(*mut libc::c_void, usize) -> isize) -> io::Result<Vec<u8>> {
    loop {
        let len = call(std::ptr::null_mut(), 0);
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; len as usize];
        let got = call(buf.as_mut_ptr().cast(), buf.len());
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf);
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The value of `name`, or `None` when the attribute does not exist.
pub fn get(at: At<'_>, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    let n = cstr(name.as_bytes())?;
    let r = match at {
        At::Link(p) | At::Follow(p) => {
            let p = cstr(p.as_os_str().as_bytes())?;
            let follow = matches!(at, At::Follow(_));
            sized(|buf, len| {
                // SAFETY: valid C strings; buf is null with len 0, or
                // writable for len bytes.
                unsafe {
                    if follow {
                        libc::getxattr(p.as_ptr(), n.as_ptr(), buf, len)
                    } else {
                        libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf, len)
                    }
                }
            })
        }
        At::File(f) => {
            let fd = f.as_raw_fd();
            // SAFETY: as above, on an open descriptor.
            sized(|buf, len| unsafe { libc::fgetxattr(fd, n.as_ptr(), buf, len) })
        }
    };
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets `name`; `flags` is 0, `libc::XATTR_CREATE` or `libc::XATTR_REPLACE`.
pub fn set(at: At<'_>, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
    let n = cstr(name.as_bytes())?;
    let (v, len) = (value.as_ptr().cast(), value.len());
    // SAFETY: valid C strings; value is readable for len bytes.
    check(unsafe {
        match at {
            At::Link(p) => libc::lsetxattr(
                cstr(p.as_os_str().as_bytes())?.as_ptr(),
                n.as_ptr(),
                v,
                len,
                flags,
            ),
            At::Follow(p) => libc::setxattr(
                cstr(p.as_os_str().as_bytes())?.as_ptr(),
                n.as_ptr(),
                v,
                len,
                flags,
            ),
            At::File(f) => libc::fsetxattr(f.as_raw_fd(), n.as_ptr(), v, len, flags),
        }
    })
}

/// Removes `name`; a missing attribute is `ENODATA`.
pub fn remove(at: At<'_>, name: &OsStr) -> io::Result<()> {
    let n = cstr(name.as_bytes())?;
    // SAFETY: valid C strings.
    check(unsafe {
        match at {
            At::Link(p) => libc::lremovexattr(cstr(p.as_os_str().as_bytes())?.as_ptr(), n.as_ptr()),
            At::Follow(p) => {
                libc::removexattr(cstr(p.as_os_str().as_bytes())?.as_ptr(), n.as_ptr())
            }
            At::File(f) => libc::fremovexattr(f.as_raw_fd(), n.as_ptr()),
        }
    })
}

/// All attribute names.
pub fn list(at: At<'_>) -> io::Result<Vec<Vec<u8>>> {
    let raw = match at {
        At::Link(p) | At::Follow(p) => {
            let p = cstr(p.as_os_str().as_bytes())?;
            let follow = matches!(at, At::Follow(_));
            sized(|buf, len| {
                // SAFETY: valid C string; buf null with len 0 or writable.
                unsafe {
                    if follow {
                        libc::listxattr(p.as_ptr(), buf.cast(), len)
                    } else {
                        libc::llistxattr(p.as_ptr(), buf.cast(), len)
                    }
                }
            })?
        }
        At::File(f) => {
            let fd = f.as_raw_fd();
            // SAFETY: as above, on an open descriptor.
            sized(|buf, len| unsafe { libc::flistxattr(fd, buf.cast(), len) })?
        }
    };
    Ok(raw
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}
