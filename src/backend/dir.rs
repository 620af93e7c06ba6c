//! A directory held open, and every name resolved beneath it.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once openat2(2) is found missing (Linux < 5.6, or a seccomp filter
/// that refuses it): every later resolution walks component by component.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// How often a resolution that raced a rename (EAGAIN from openat2) is
/// tried again before giving up.
const RACE_RETRIES: usize = 16;

/// What identifies an inode while someone holds it open: its device and
/// inode number (a number is not reused while the inode lives).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ident {
    pub dev: u64,
    pub ino: u64,
}

impl Ident {
    pub fn of(st: &libc::stat) -> Ident {
        Ident {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }

    /// The identity of an open file or directory.
    pub fn of_fd(fd: BorrowedFd<'_>) -> io::Result<Ident> {
        stat_at(fd, OsStr::new("")).map(|st| Ident::of(&st))
    }

    /// 16 bytes: device then inode, little-endian.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.dev.to_le_bytes());
        b[8..].copy_from_slice(&self.ino.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Ident> {
        let b: &[u8; 16] = b.try_into().ok()?;
        let (d, i) = b.split_at(8);
        Some(Ident {
            dev: u64::from_le_bytes(d.try_into().ok()?),
            ino: u64::from_le_bytes(i.try_into().ok()?),
        })
    }
}

/// One entry of a directory listing. `kind` is the `S_IFMT` bits of the
/// entry's type, taken from the directory itself (no stat, no following).
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: OsString,
    pub kind: u32,
    pub ino: u64,
}

/// A directory held by descriptor. Everything below it is reached through
/// it, never by a path that the kernel resolves from `/`.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn errno(n: i32) -> io::Error {
    io::Error::from_raw_os_error(n)
}

/// fstatat without following a final symlink; an empty name stats `dir`.
fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<libc::stat> {
    let n = cstr(name)?;
    let flags = libc::AT_SYMLINK_NOFOLLOW
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: n is a valid C string and st is written on success.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), n.as_ptr(), st.as_mut_ptr(), flags) }.into())?;
    // SAFETY: fstatat succeeded and filled st.
    Ok(unsafe { st.assume_init() })
}

fn openat(dir: RawFd, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: name is a valid C string; the fd returned is fresh and ours.
    let fd =
        check(unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) }.into())?;
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The components of a relative path of plain names; anything else
/// (absolute, `..`) has no place in a backend name and is refused.
fn names(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(errno(libc::EXDEV)),
        })
        .collect()
}

/// openat2 beneath `dir`, no symlinks anywhere, no magic links.
fn openat2_beneath(dir: RawFd, rel: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: open_how is a plain struct of integers; zero is its default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
    how.mode = if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
        mode as u64
    } else {
        0
    };
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    for _ in 0..RACE_RETRIES {
        // SAFETY: rel is a valid C string and how a valid open_how of the
        // size passed; the fd returned is fresh and ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                rel.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        match check(r) {
            // A rename or mount raced the lookup: the kernel refuses rather
            // than risk an escape. Look again.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            Err(e) => return Err(e),
            // SAFETY: a fresh descriptor nobody else owns.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        }
    }
    Err(errno(libc::EAGAIN))
}

/// Opens `rel` beneath `dir` with `flags`: no component may be a symlink
/// or `..`, and nothing outside `dir` is ever reached. `openat2` where the
/// kernel has it; else one `O_NOFOLLOW` open per component.
fn resolve(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: i32,
    mode: u32,
    try_openat2: bool,
) -> io::Result<OwnedFd> {
    let parts = names(rel)?;
    let Some((last, parents)) = parts.split_last() else {
        // The directory itself.
        return openat(dir.as_raw_fd(), c".", flags | libc::O_NOFOLLOW, mode);
    };
    if try_openat2 && !NO_OPENAT2.load(Ordering::Relaxed) {
        let c = cstr(rel.as_os_str())?;
        match openat2_beneath(dir.as_raw_fd(), &c, flags, mode) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            r => return r,
        }
    }
    let mut cur: Option<OwnedFd> = None;
    for p in parents {
        let at = cur.as_ref().map_or(dir.as_raw_fd(), |f| f.as_raw_fd());
        let next = openat(
            at,
            &cstr(p)?,
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        cur = Some(next);
    }
    let at = cur.as_ref().map_or(dir.as_raw_fd(), |f| f.as_raw_fd());
    openat(at, &cstr(last)?, flags | libc::O_NOFOLLOW, mode)
}

fn renameat2(from: &Dir, a: &OsStr, to: &Dir, b: &OsStr, flags: u32) -> io::Result<()> {
    let (a, b) = (cstr(a)?, cstr(b)?);
    // SAFETY: valid C strings and descriptors we hold.
    check(
        unsafe {
            libc::renameat2(
                from.fd.as_raw_fd(),
                a.as_ptr(),
                to.fd.as_raw_fd(),
                b.as_ptr(),
                flags,
            )
        }
        .into(),
    )
    .map(|_| ())
}

impl Dir {
    /// Opens the directory at `path`. The one place a whole path goes to
    /// the kernel: the data directory itself, which the operator names
    /// (and `strict` checks).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let c = cstr(path.as_os_str())?;
        let fd = openat(libc::AT_FDCWD, &c, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Ok(Dir { fd })
    }

    /// A second handle on the directory behind `fd` (which must be one).
    pub fn dup(fd: BorrowedFd<'_>) -> io::Result<Dir> {
        let fd = fd.try_clone_to_owned()?;
        if stat_at(fd.as_fd(), OsStr::new(""))?.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(errno(libc::ENOTDIR));
        }
        Ok(Dir { fd })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The directory `rel` beneath this one ("" is this one again).
    pub fn dir(&self, rel: &Path) -> io::Result<Dir> {
        self.dir_with(rel, true)
    }

    fn dir_with(&self, rel: &Path, try_openat2: bool) -> io::Result<Dir> {
        let fd = resolve(
            self.fd(),
            rel,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
            try_openat2,
        )?;
        Ok(Dir { fd })
    }

    /// Opens the file `rel` beneath this directory with `flags` (and
    /// `mode` when creating). A symlink at `rel` fails with ELOOP.
    pub fn file(&self, rel: &Path, flags: i32, mode: u32) -> io::Result<File> {
        resolve(self.fd(), rel, flags, mode, true).map(File::from)
    }

    /// An O_PATH descriptor of `rel` (a symlink at `rel` is itself).
    pub fn path_fd(&self, rel: &Path) -> io::Result<OwnedFd> {
        resolve(self.fd(), rel, libc::O_PATH, 0, true)
    }

    /// The directory `rel` beneath this one, making each missing component
    /// with `mode` (less the umask). An existing component that is not a
    /// directory, or is a symlink, fails.
    pub fn create_dirs(&self, rel: &Path, mode: u32) -> io::Result<Dir> {
        let mut cur = Dir::dup(self.fd())?;
        for p in names(rel)? {
            let c = cstr(p)?;
            // SAFETY: valid C string and a descriptor we hold.
            let r = unsafe { libc::mkdirat(cur.fd.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
            }
            let fd = openat(
                cur.fd.as_raw_fd(),
                &c,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
            cur = Dir { fd };
        }
        Ok(cur)
    }

    /// Makes the directory `name` (one component) with `mode` (less the
    /// umask); EEXIST if anything is there.
    pub fn mkdir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: valid C string and a descriptor we hold.
        check(
            unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) }.into(),
        )
        .map(|_| ())
    }

    /// lstat of the entry `name` (one component); "" is the directory.
    pub fn stat(&self, name: &OsStr) -> io::Result<libc::stat> {
        stat_at(self.fd(), name)
    }

    pub fn ident(&self) -> io::Result<Ident> {
        Ident::of_fd(self.fd())
    }

    pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        self.unlink(name, 0)
    }

    pub fn remove_dir(&self, name: &OsStr) -> io::Result<()> {
        self.unlink(name, libc::AT_REMOVEDIR)
    }

    fn unlink(&self, name: &OsStr, flags: i32) -> io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: valid C string and a descriptor we hold.
        check(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), flags) }.into()).map(|_| ())
    }

    /// Renames `from` here to `name` in `to`, replacing what is there.
    pub fn rename(&self, from: &OsStr, to: &Dir, name: &OsStr) -> io::Result<()> {
        renameat2(self, from, to, name, 0)
    }

    /// `rename` that fails with EEXIST rather than replace `name`.
    pub fn rename_noreplace(&self, from: &OsStr, to: &Dir, name: &OsStr) -> io::Result<()> {
        renameat2(self, from, to, name, libc::RENAME_NOREPLACE)
    }

    /// Puts the file `tmp` of `tmp_dir` in the place of `name` here, but
    /// only while `name` is still the inode `expect`: the two are exchanged
    /// atomically, then what came out is checked to be `expect`; if a rename
    /// raced in between, the exchange is undone and ESTALE returned. What
    /// was replaced is removed. Nothing outside the two directories can be
    /// touched, whatever is renamed meanwhile.
    pub fn replace(
        &self,
        name: &OsStr,
        tmp_dir: &Dir,
        tmp: &OsStr,
        expect: Ident,
    ) -> io::Result<()> {
        if Ident::of(&self.stat(name)?) != expect {
            return Err(errno(libc::ESTALE));
        }
        match renameat2(tmp_dir, tmp, self, name, libc::RENAME_EXCHANGE) {
            Ok(()) => {}
            // A filesystem without RENAME_EXCHANGE: a plain rename after
            // the check above (the window is the check's; the rename still
            // only acts inside this directory).
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
                tmp_dir.rename(tmp, self, name)?;
                return self.sync();
            }
            Err(e) => return Err(e),
        }
        let out = tmp_dir.stat(tmp).map(|st| Ident::of(&st));
        if out.ok() != Some(expect) {
            // Something else was renamed to `name` after the check: give it
            // its place back and leave ours as a temp file.
            renameat2(tmp_dir, tmp, self, name, libc::RENAME_EXCHANGE)?;
            return Err(errno(libc::ESTALE));
        }
        // A failure here leaves the old object in the temp directory, from
        // which the next start removes it; the replacement itself is done.
        let _ = tmp_dir.remove_file(tmp);
        self.sync()
    }

    /// fsync of the directory (an O_PATH descriptor cannot be synced).
    pub fn sync(&self) -> io::Result<()> {
        let d = File::from(openat(
            self.fd.as_raw_fd(),
            c".",
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?);
        d.sync_all()
    }

    /// The directory's entries but `.` and `..`, unsorted.
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        let fd = openat(
            self.fd.as_raw_fd(),
            c".",
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?;
        let raw = fd.as_raw_fd();
        // SAFETY: fdopendir takes ownership of a valid directory fd; on
        // success it is closed by closedir below, so ours is forgotten.
        let dirp = unsafe { libc::fdopendir(raw) };
        if dirp.is_null() {
            return Err(io::Error::last_os_error());
        }
        std::mem::forget(fd);
        let mut out = Vec::new();
        let res = loop {
            // SAFETY: errno is thread-local; readdir reports errors only
            // through it, so it is cleared first.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: dirp is a valid, open DIR stream.
            let e = unsafe { libc::readdir64(dirp) };
            if e.is_null() {
                let err = io::Error::last_os_error();
                break if err.raw_os_error() == Some(0) {
                    Ok(())
                } else {
                    Err(err)
                };
            }
            // SAFETY: readdir returned a valid entry, alive until the next
            // call on this stream; its name is NUL-terminated.
            let (name, d_type, ino) = unsafe {
                let e = &*e;
                (CStr::from_ptr(e.d_name.as_ptr()), e.d_type, e.d_ino)
            };
            let name = OsStr::from_bytes(name.to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let kind = match d_type {
                libc::DT_DIR => libc::S_IFDIR,
                libc::DT_REG => libc::S_IFREG,
                libc::DT_LNK => libc::S_IFLNK,
                libc::DT_FIFO => libc::S_IFIFO,
                libc::DT_SOCK => libc::S_IFSOCK,
                libc::DT_CHR => libc::S_IFCHR,
                libc::DT_BLK => libc::S_IFBLK,
                // Filesystems that do not fill d_type: ask, without following.
                _ => match self.stat(name) {
                    Ok(st) => st.st_mode & libc::S_IFMT,
                    Err(_) => continue, // removed meanwhile
                },
            };
            out.push(Entry {
                name: name.to_owned(),
                kind,
                ino,
            });
        };
        // SAFETY: dirp is valid and not used again.
        unsafe { libc::closedir(dirp) };
        res.map(|()| out)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn setup() -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(t.path().join("in/a/b")).expect("mkdir");
        std::fs::write(t.path().join("in/a/b/f"), b"inside").expect("write");
        std::fs::create_dir(t.path().join("out")).expect("mkdir");
        std::fs::write(t.path().join("out/secret"), b"outside").expect("write");
        let d = Dir::open(&t.path().join("in")).expect("open");
        (t, d)
    }

    /// Both resolvers refuse every way out: symlinks at any component
    /// (relative or absolute targets), `..`, absolute paths.
    #[test]
    fn resolution_never_leaves_the_directory() {
        let (t, d) = setup();
        symlink(t.path().join("out"), t.path().join("in/a/abs")).expect("symlink");
        symlink("../../out", t.path().join("in/a/rel")).expect("symlink");
        symlink("b/f", t.path().join("in/a/inner")).expect("symlink");
        for openat2 in [true, false] {
            for bad in [
                "a/abs/secret",
                "a/rel/secret",
                "a/abs",
                "a/inner",
                "../out/secret",
                "a/../../out/secret",
                "/etc/passwd",
            ] {
                let r = resolve(d.fd(), Path::new(bad), libc::O_RDONLY, 0, openat2);
                assert!(r.is_err(), "{bad} resolved (openat2: {openat2})");
            }
            let f = resolve(d.fd(), Path::new("a/b/f"), libc::O_RDONLY, 0, openat2)
                .expect("a plain path resolves");
            let mut s = String::new();
            io::Read::read_to_string(&mut File::from(f), &mut s).expect("read");
            assert_eq!(s, "inside");
            assert!(d.dir_with(Path::new("a/abs"), openat2).is_err());
            assert!(d.dir_with(Path::new("a/b"), openat2).is_ok());
        }
    }

    #[test]
    fn create_dirs_refuses_a_symlinked_component() {
        let (t, d) = setup();
        symlink(t.path().join("out"), t.path().join("in/a/link")).expect("symlink");
        assert!(d.create_dirs(Path::new("a/link/x"), 0o755).is_err());
        assert!(!t.path().join("out/x").exists());
        let made = d
            .create_dirs(Path::new("a/new/deeper"), 0o755)
            .expect("create");
        assert!(t.path().join("in/a/new/deeper").is_dir());
        let m = std::fs::metadata(t.path().join("in/a/new/deeper")).expect("stat");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            made.ident().expect("ident"),
            Ident {
                dev: m.dev(),
                ino: m.ino()
            }
        );
    }

    #[test]
    fn replace_checks_identity_and_puts_a_racer_back() {
        let (t, d) = setup();
        let b = d.dir(Path::new("a/b")).expect("dir");
        let expect = Ident::of(&b.stat(OsStr::new("f")).expect("stat"));
        std::fs::write(t.path().join("in/tmp1"), b"new").expect("write");
        // The name now holds something else: refused, nothing moved.
        std::fs::rename(t.path().join("in/a/b/f"), t.path().join("in/a/b/g")).expect("mv");
        std::fs::write(t.path().join("in/a/b/f"), b"planted").expect("write");
        let e = b
            .replace(OsStr::new("f"), &d, OsStr::new("tmp1"), expect)
            .expect_err("identity differs");
        assert_eq!(e.raw_os_error(), Some(libc::ESTALE));
        assert_eq!(
            std::fs::read(t.path().join("in/a/b/f")).expect("read"),
            b"planted"
        );
        assert!(t.path().join("in/tmp1").exists());
        // The right one: replaced, and the old inode is gone from the temp place.
        let now = Ident::of(&b.stat(OsStr::new("g")).expect("stat"));
        assert_eq!(now, expect);
        b.replace(OsStr::new("g"), &d, OsStr::new("tmp1"), expect)
            .expect("replace");
        assert_eq!(
            std::fs::read(t.path().join("in/a/b/g")).expect("read"),
            b"new"
        );
        assert!(!t.path().join("in/tmp1").exists());
    }

    #[test]
    fn entries_list_types_without_following() {
        let (t, d) = setup();
        symlink(t.path().join("out"), t.path().join("in/a/abs")).expect("symlink");
        let a = d.dir(Path::new("a")).expect("dir");
        let mut e: Vec<(String, u32)> = a
            .entries()
            .expect("entries")
            .into_iter()
            .map(|e| (e.name.to_string_lossy().into_owned(), e.kind))
            .collect();
        e.sort();
        assert_eq!(
            e,
            vec![("abs".into(), libc::S_IFLNK), ("b".into(), libc::S_IFDIR)]
        );
    }

    #[test]
    fn ident_round_trips_through_bytes() {
        let i = Ident {
            dev: 0x0102,
            ino: u64::MAX - 7,
        };
        assert_eq!(Ident::from_bytes(&i.to_bytes()), Some(i));
        assert_eq!(Ident::from_bytes(&[0u8; 15]), None);
    }
}
