//! Safe wrappers over the l*xattr system calls on backend paths (symlinks
//! are not followed: xattrs belong to the link itself, as on any POSIX fs).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn cname(n: &OsStr) -> io::Result<CString> {
    CString::new(n.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The value of `name`, or `None` when the attribute does not exist.
pub fn get(path: &Path, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    let p = cpath(path)?;
    let n = cname(name)?;
    loop {
        // SAFETY: p and n are valid NUL-terminated strings; a null buffer
        // with size 0 asks for the length only.
        let len = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODATA) => Ok(None),
                _ => Err(e),
            };
        }
        let mut buf = vec![0u8; len as usize];
        // SAFETY: buf is writable for buf.len() bytes.
        let got =
            unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // Grew between the two calls: ask again.
                Some(libc::ERANGE) => continue,
                Some(libc::ENODATA) => return Ok(None),
                _ => return Err(e),
            }
        }
        buf.truncate(got as usize);
        return Ok(Some(buf));
    }
}

/// Sets `name`; `flags` is 0, `libc::XATTR_CREATE` or `libc::XATTR_REPLACE`.
pub fn set(path: &Path, name: &OsStr, value: &[u8], flags: i32) -> io::Result<()> {
    let p = cpath(path)?;
    let n = cname(name)?;
    // SAFETY: valid strings; value is readable for value.len() bytes.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Removes `name`; a missing attribute is `ENODATA`.
pub fn remove(path: &Path, name: &OsStr) -> io::Result<()> {
    let p = cpath(path)?;
    let n = cname(name)?;
    // SAFETY: valid strings.
    let r = unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// All attribute names on `path`.
pub fn list(path: &Path) -> io::Result<Vec<Vec<u8>>> {
    let p = cpath(path)?;
    loop {
        // SAFETY: size query with a null buffer.
        let len = unsafe { libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; len as usize];
        // SAFETY: buf is writable for buf.len() bytes.
        let got = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(<[u8]>::to_vec)
            .collect());
    }
}

/// Copies every `user.*` attribute from `from` to `to`.
pub fn copy_user(from: &Path, to: &Path) -> io::Result<()> {
    for name in list(from)? {
        if !name.starts_with(b"user.") {
            continue;
        }
        let n = OsStr::from_bytes(&name);
        if let Some(v) = get(from, n)? {
            set(to, n, &v, 0)?;
        }
    }
    Ok(())
}

/// The value of `name` on an open file, or `None` when it does not exist.
pub fn fget(file: &std::fs::File, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let n = cname(name)?;
    loop {
        // SAFETY: valid name; null buffer with size 0 asks for the length.
        let len = unsafe { libc::fgetxattr(fd, n.as_ptr(), std::ptr::null_mut(), 0) };
        if len < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODATA) => Ok(None),
                _ => Err(e),
            };
        }
        let mut buf = vec![0u8; len as usize];
        // SAFETY: buf is writable for buf.len() bytes.
        let got = unsafe { libc::fgetxattr(fd, n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => continue,
                Some(libc::ENODATA) => return Ok(None),
                _ => return Err(e),
            }
        }
        buf.truncate(got as usize);
        return Ok(Some(buf));
    }
}

/// Sets `name` on an open file.
pub fn fset(file: &std::fs::File, name: &OsStr, value: &[u8]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let n = cname(name)?;
    // SAFETY: valid name; value readable for its length.
    let r = unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Removes `name` from an open file; a missing attribute is not an error.
pub fn fremove(file: &std::fs::File, name: &OsStr) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let n = cname(name)?;
    // SAFETY: valid name.
    let r = unsafe { libc::fremovexattr(file.as_raw_fd(), n.as_ptr()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENODATA) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}
