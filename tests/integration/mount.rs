//! The filesystem through real FUSE mounts.

use std::ffi::{CStr, CString};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{bin, DataDir};

/// A mounted data directory; unmounted on drop.
pub struct Mount {
    pub d: DataDir,
    pub mnt: PathBuf,
}

/// Unmounts the FUSE mount at `mnt` and waits until it is gone.
pub fn unmount_at(mnt: &Path) {
    // EBUSY is tried again: a process another test forks holds copies
    // of this test's open files until it execs (Rust's descriptors are
    // close-on-exec), and tests that spawn thousands of processes run
    // alongside.
    let t = Instant::now();
    let unmounted = loop {
        let st = Command::new("fusermount3")
            .arg("-u")
            .arg(mnt)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        if st.success() || t.elapsed() > Duration::from_secs(10) {
            break st.success();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(unmounted, "fusermount3 -u {}", mnt.display());
    let t = Instant::now();
    while is_mounted(mnt) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the daemon finish its exit path.
    std::thread::sleep(Duration::from_millis(100));
}

/// Compared as bytes: a mount point need not be UTF-8, and mountinfo
/// escapes only space, tab, newline and backslash (as octal).
fn is_mounted(p: &Path) -> bool {
    let canon = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let mut want = Vec::new();
    for &b in canon.as_os_str().as_bytes() {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => want.extend(format!("\\{b:03o}").bytes()),
            _ => want.push(b),
        }
    }
    fs::read("/proc/self/mountinfo")
        .unwrap()
        .split(|&b| b == b'\n')
        .any(|l| l.split(|&b| b == b' ').nth(4) == Some(&want[..]))
}

/// The filesystem type and source that /proc/self/mountinfo lists for the
/// mount at `p` ("... MOUNTPOINT ... - FSTYPE SOURCE SUPEROPTS").
fn mountinfo_type_and_source(p: &Path) -> Option<(String, String)> {
    let canon = p.canonicalize().ok()?;
    let info = crate::util::mountinfo();
    info.lines()
        .filter(|l| l.split(' ').nth(4) == canon.to_str())
        .filter_map(|l| l.split_once(" - ").map(|(_, r)| r.to_owned()))
        .map(|r| {
            let mut f = r.split(' ');
            let t = f.next().unwrap_or_default().to_owned();
            (t, f.next().unwrap_or_default().to_owned())
        })
        .next_back()
}

impl Mount {
    pub fn new(opts: &[&str]) -> Mount {
        let d = DataDir::uninit();
        let mnt = d.path("mnt");
        fs::create_dir(&mnt).unwrap();
        let m = Mount { d, mnt };
        m.mount(opts);
        m
    }

    /// Mounts `d` (initialised or not) on `d`'s `mnt`.
    pub fn on(d: DataDir, opts: &[&str]) -> Mount {
        let mnt = d.path("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let m = Mount { d, mnt };
        m.mount(opts);
        m
    }

    pub fn mount(&self, opts: &[&str]) {
        let mut args = vec!["mount", self.mnt.to_str().unwrap()];
        for o in opts {
            args.push("-o");
            args.push(o);
        }
        self.d.run(&args).ok();
        assert!(
            is_mounted(&self.mnt),
            "not mounted after ssefs mount returned"
        );
    }

    pub fn unmount(&self) {
        unmount_at(&self.mnt);
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn backend(&self, rel: &str) -> PathBuf {
        self.d.data().join(rel)
    }

    pub fn getfattr(&self, rel: &str, name: &str) -> Result<String, i32> {
        xattr_get(&self.p(rel), name)
    }

    pub fn setfattr(&self, rel: &str, name: &str, v: &str) -> Result<(), i32> {
        xattr_set(&self.p(rel), name, v.as_bytes())
    }

    /// Waits until the daemon has closed every handle that wrote to `rel`.
    /// FUSE sends RELEASE after close(2) has returned, so a file just
    /// written may still be open for writing in the daemon, and (rightly)
    /// busy for reencrypt and rewrap. They see it as the daemon's shared
    /// flock(2) on the backend file; so does this, for at most 10 s.
    pub fn wait_closed(&self, rel: &str) {
        let f = File::open(self.backend(rel)).unwrap();
        let t = Instant::now();
        loop {
            // SAFETY: flock on a descriptor this function owns; the lock
            // goes with it when `f` is dropped.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                // Unlocked explicitly, not by the close: a child forked by
                // another test thread meanwhile shares this open file (until
                // its exec), and with it the lock, so a CLI started next saw
                // the object busy (reencrypt_and_rewrap_skip_objects_open_for_writing
                // failed so once under a loaded full run).
                // SAFETY: as above.
                unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
                return;
            }
            assert_eq!(last_errno(), libc::EWOULDBLOCK, "flock {rel}");
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{rel} still open for writing in the daemon after 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mnt)
                .status();
        }
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

/// Runs a program the test has just written. A child forked by another test
/// thread inherits the writer's descriptor until its own exec, and while it
/// holds it the kernel refuses to execute the file (ETXTBSY): wait that out.
fn run_written_program(p: &Path) -> std::process::Output {
    let t = Instant::now();
    loop {
        match Command::new(p).output() {
            Err(e)
                if e.raw_os_error() == Some(libc::ETXTBSY)
                    && t.elapsed() < Duration::from_secs(5) =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r.unwrap(),
        }
    }
}

pub fn xattr_get(p: &Path, name: &str) -> Result<String, i32> {
    let mut buf = vec![0u8; 4096];
    let n = CString::new(name).unwrap();
    // SAFETY: the C strings and buffers passed live for the whole call, and each length is its buffer's own.
    let r = unsafe {
        libc::getxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if r < 0 {
        return Err(last_errno());
    }
    buf.truncate(r as usize);
    Ok(String::from_utf8(buf).unwrap())
}

pub fn xattr_set(p: &Path, name: &str, v: &[u8]) -> Result<(), i32> {
    let n = CString::new(name).unwrap();
    // SAFETY: the C strings and buffers passed live for the whole call, and each length is its buffer's own.
    let r = unsafe { libc::setxattr(cpath(p).as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

pub fn xattr_remove(p: &Path, name: &str) -> Result<(), i32> {
    let n = CString::new(name).unwrap();
    // SAFETY: the C strings and buffers passed live for the whole call, and each length is its buffer's own.
    let r = unsafe { libc::removexattr(cpath(p).as_ptr(), n.as_ptr()) };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

fn xattr_list(p: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 8192];
    // SAFETY: the C strings and buffers passed live for the whole call, and each length is its buffer's own.
    let r = unsafe { libc::listxattr(cpath(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(r >= 0);
    buf.truncate(r as usize);
    buf.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn errno_of(e: std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

const SSE: &str = "user.oss.server-side-encryption";
const KEY: &str = "user.oss.server-side-encryption-key-id";
const DATA: &str = "user.oss.server-side-data-encryption";

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

// ----------------------------------------------------------------- namespace

#[test]
fn mount_creates_the_data_dir_and_the_root_lists_buckets() {
    let m = Mount::new(&[]);
    assert!(m.d.data().join(".ssefs/keystore.toml").exists());
    // findmnt -t fuse.ssefs and mount(8) show the type and the data dir.
    let (fstype, source) = mountinfo_type_and_source(&m.mnt).expect("in mountinfo");
    assert_eq!(fstype, "fuse.ssefs");
    assert_eq!(Path::new(&source), m.d.data());
    assert_eq!(
        fs::read_dir(&m.mnt).unwrap().count(),
        0,
        ".ssefs must not show"
    );
    fs::create_dir(m.p("bucket-one")).unwrap();
    assert_eq!(
        errno_of(fs::create_dir(m.p("Bad_Name")).unwrap_err()),
        libc::EINVAL
    );
    assert_eq!(
        errno_of(fs::create_dir(m.p("ab")).unwrap_err()),
        libc::EINVAL
    );
    assert_eq!(
        errno_of(File::create(m.p("file-at-root")).unwrap_err()),
        libc::EPERM
    );
    let names: Vec<_> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["bucket-one"]);
    assert_eq!(m.d.run(&["bucket", "list"]).ok().stdout, "bucket-one\n");
    fs::write(m.p("bucket-one/x"), b"x").unwrap();
    assert_eq!(
        errno_of(fs::remove_dir(m.p("bucket-one")).unwrap_err()),
        libc::ENOTEMPTY
    );
    fs::remove_file(m.p("bucket-one/x")).unwrap();
    fs::remove_dir(m.p("bucket-one")).unwrap();
    assert!(!m.backend("bucket-one").exists());
}

#[test]
fn posix_tree_under_a_bucket() {
    let m = Mount::new(&[]);
    fs::create_dir_all(m.p("bkt/a/b")).unwrap();
    fs::write(m.p("bkt/a/b/f"), b"data").unwrap();
    // Symlinks.
    std::os::unix::fs::symlink("b/f", m.p("bkt/a/link")).unwrap();
    assert_eq!(fs::read_link(m.p("bkt/a/link")).unwrap(), Path::new("b/f"));
    assert_eq!(fs::read(m.p("bkt/a/link")).unwrap(), b"data");
    // Hard links share the inode.
    fs::hard_link(m.p("bkt/a/b/f"), m.p("bkt/a/hard")).unwrap();
    let (s1, s2) = (
        fs::metadata(m.p("bkt/a/b/f")).unwrap(),
        fs::metadata(m.p("bkt/a/hard")).unwrap(),
    );
    assert_eq!(s1.ino(), s2.ino());
    assert_eq!(s1.nlink(), 2);
    fs::write(m.p("bkt/a/hard"), b"via the other name").unwrap();
    assert_eq!(fs::read(m.p("bkt/a/b/f")).unwrap(), b"via the other name");
    // Fifos and sockets.
    let fifo = cpath(&m.p("bkt/fifo"));
    // SAFETY: the C strings and buffers passed live for the whole call, and each length is its buffer's own.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    assert!(fs::symlink_metadata(m.p("bkt/fifo"))
        .unwrap()
        .file_type()
        .is_fifo_like());
    let _sock = std::os::unix::net::UnixListener::bind(m.p("bkt/sock")).unwrap();
    assert!(fs::symlink_metadata(m.p("bkt/sock")).is_ok());
    // chmod, chown, utimens.
    fs::set_permissions(m.p("bkt/a/b/f"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        fs::metadata(m.p("bkt/a/b/f")).unwrap().mode() & 0o777,
        0o640
    );
    std::os::unix::fs::chown(m.p("bkt/a/b/f"), Some(1234), Some(5678)).unwrap();
    let md = fs::metadata(m.p("bkt/a/b/f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    let f = File::options().write(true).open(m.p("bkt/a/b/f")).unwrap();
    let t = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
    assert_eq!(
        fs::metadata(m.p("bkt/a/b/f")).unwrap().mtime(),
        1_000_000_000
    );
    // statfs answers.
    // SAFETY: statvfs is a plain C struct: all zero bytes is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: the C strings and buffers passed live for the whole call, and each length is its buffer's own.
    assert_eq!(unsafe { libc::statvfs(cpath(&m.mnt).as_ptr(), &mut st) }, 0);
    assert!(st.f_blocks > 0);
    // Reserved names are refused.
    assert_eq!(
        errno_of(File::create(m.p("bkt/.ssefs-x")).unwrap_err()),
        libc::EPERM
    );
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}

/// The next entry of the stream `d` with telldir's position after it.
fn next_entry(d: *mut libc::DIR) -> Option<(String, libc::c_long)> {
    // SAFETY: d is an open DIR stream; the entry stays valid until the
    // next readdir on it, and its name is NUL-terminated.
    unsafe {
        let e = libc::readdir(d);
        if e.is_null() {
            return None;
        }
        let name = CStr::from_ptr((*e).d_name.as_ptr())
            .to_string_lossy()
            .into_owned();
        Some((name, libc::telldir(d)))
    }
}

#[test]
fn a_large_directory_lists_each_entry_once_and_seekdir_resumes_at_telldir() {
    // Several of the daemon's 32 KiB getdents batches, read through the
    // kernel; a seekdir to a telldir position asks the daemon for the
    // entries after an offset it gave in an earlier reply.
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    fs::create_dir(m.p("bkt/many")).unwrap();
    let name = |i: usize| format!("entry-with-a-longish-name-{i:05}");
    for i in 0..3000 {
        fs::write(m.p(&format!("bkt/many/{}", name(i))), b"").unwrap();
    }
    let path = cpath(&m.p("bkt/many"));
    // SAFETY: a valid C string; the stream is closed below.
    let d = unsafe { libc::opendir(path.as_ptr()) };
    assert!(!d.is_null(), "opendir: {}", last_errno());
    let all: Vec<(String, libc::c_long)> = std::iter::from_fn(|| next_entry(d)).collect();
    let mut names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    let mut want: Vec<String> = (0..3000).map(name).collect();
    want.extend([".".to_owned(), "..".to_owned()]);
    want.sort_unstable();
    assert_eq!(names, want);
    for k in [2500, 3, 1700, 0, 3000] {
        // SAFETY: d is open; the position came from telldir on it.
        unsafe { libc::seekdir(d, all[k].1) };
        assert_eq!(
            next_entry(d).map(|(n, _)| n).as_deref(),
            Some(all[k + 1].0.as_str()),
            "after entry {k}"
        );
    }
    // SAFETY: d is open.
    unsafe { libc::seekdir(d, all[3001].1) };
    assert_eq!(next_entry(d), None, "nothing after the last entry");
    // SAFETY: d is open.
    unsafe { libc::rewinddir(d) };
    let again: Vec<(String, libc::c_long)> = std::iter::from_fn(|| next_entry(d)).collect();
    assert_eq!(again, all, "the same listing again after rewinddir");
    // SAFETY: d is open and not used after this.
    unsafe { libc::closedir(d) };
}

fn renameat2(m: &Mount, a: &str, b: &str, flags: u32) -> Result<(), i32> {
    let (pa, pb) = (cpath(&m.p(a)), cpath(&m.p(b)));
    // SAFETY: the C strings and buffers passed live for the whole call, and each length is its buffer's own.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            pa.as_ptr(),
            libc::AT_FDCWD,
            pb.as_ptr(),
            flags,
        )
    };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

#[test]
fn rename_plain_over_noreplace_and_exchange() {
    let m = Mount::new(&[]);
    fs::create_dir_all(m.p("bkt/d")).unwrap();
    fs::create_dir(m.p("other")).unwrap();
    fs::write(m.p("bkt/a"), b"A").unwrap();
    fs::write(m.p("bkt/b"), b"B").unwrap();
    renameat2(&m, "bkt/a", "bkt/b", libc::RENAME_NOREPLACE).unwrap_err();
    assert_eq!(
        renameat2(&m, "bkt/a", "bkt/b", libc::RENAME_NOREPLACE),
        Err(libc::EEXIST)
    );
    renameat2(&m, "bkt/a", "bkt/b", libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(m.p("bkt/a")).unwrap(), b"B");
    assert_eq!(fs::read(m.p("bkt/b")).unwrap(), b"A");
    fs::rename(m.p("bkt/a"), m.p("bkt/b")).unwrap();
    assert_eq!(fs::read(m.p("bkt/b")).unwrap(), b"B");
    assert!(!m.p("bkt/a").exists());
    fs::rename(m.p("bkt/b"), m.p("bkt/d/moved")).unwrap();
    assert_eq!(fs::read(m.p("bkt/d/moved")).unwrap(), b"B");
    // Between buckets: EXDEV (mv falls back to copy, which re-encrypts).
    assert_eq!(
        errno_of(fs::rename(m.p("bkt/d/moved"), m.p("other/x")).unwrap_err()),
        libc::EXDEV
    );
}

#[test]
fn truncate_append_sparse_and_large_files() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    m.setfattr("bkt", SSE, "AES256").unwrap();
    let data = pattern(100_000, 1);
    fs::write(m.p("bkt/f"), &data).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("bkt/f"))
        .unwrap();
    f.set_len(40_000).unwrap();
    assert_eq!(fs::metadata(m.p("bkt/f")).unwrap().len(), 40_000);
    f.set_len(70_000).unwrap();
    let got = fs::read(m.p("bkt/f")).unwrap();
    assert_eq!(&got[..40_000], &data[..40_000]);
    assert!(got[40_000..].iter().all(|&b| b == 0));
    // O_APPEND
    let mut a = OpenOptions::new().append(true).open(m.p("bkt/f")).unwrap();
    a.write_all(b"tail").unwrap();
    drop(a);
    let got = fs::read(m.p("bkt/f")).unwrap();
    assert_eq!(got.len(), 70_004);
    assert_eq!(&got[70_000..], b"tail");
    // Sparse, past 4 GiB: holes read as zeros, backend stays small.
    let far = (4u64 << 30) + 777;
    f.write_all_at(b"far", far).unwrap();
    let mut buf = [9u8; 8];
    f.read_exact_at(&mut buf, far - 5).unwrap();
    assert_eq!(&buf, b"\0\0\0\0\0far");
    let mut mid = vec![1u8; 65536];
    f.read_exact_at(&mut mid, 2 << 30).unwrap();
    assert!(mid.iter().all(|&b| b == 0));
    assert_eq!(fs::metadata(m.p("bkt/f")).unwrap().len(), far + 3);
    assert!(fs::metadata(m.backend("bkt/f")).unwrap().blocks() < 4096);
    // fallocate grows.
    let g = File::create(m.p("bkt/g")).unwrap();
    // SAFETY: a descriptor this test owns, and plain integers.
    let r = unsafe { libc::posix_fallocate(std::os::fd::AsRawFd::as_raw_fd(&g), 0, 50_000) };
    assert_eq!(r, 0);
    assert_eq!(g.metadata().unwrap().len(), 50_000);
    g.sync_all().unwrap();
    g.sync_data().unwrap();
}

#[test]
fn shared_writable_mmap() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    m.setfattr("bkt", SSE, "SM4").unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.p("bkt/map"))
        .unwrap();
    f.set_len(3 * 4096).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: a shared mapping of a file this test holds open, 3 pages long (its length was set above); the slice stays within it and is dropped before munmap.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            3 * 4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        let s = std::slice::from_raw_parts_mut(p as *mut u8, 3 * 4096);
        s[5000..5005].copy_from_slice(b"mmap!");
        assert_eq!(libc::msync(p, 3 * 4096, libc::MS_SYNC), 0);
        libc::munmap(p, 3 * 4096);
    }
    drop(f);
    let got = fs::read(m.p("bkt/map")).unwrap();
    assert_eq!(&got[5000..5005], b"mmap!");
    // And it is encrypted on disk.
    let raw = fs::read(m.backend("bkt/map")).unwrap();
    assert!(!raw.windows(5).any(|w| w == b"mmap!"));
}

// ------------------------------------------------------------------ xattrs

#[test]
fn bucket_rule_through_xattrs_follows_the_reference() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    assert_eq!(m.getfattr("bkt", SSE), Err(libc::ENODATA));
    m.setfattr("bkt", SSE, "KMS").unwrap();
    m.setfattr("bkt", DATA, "SM4").unwrap();
    m.setfattr("bkt", KEY, "alias/not-yet").unwrap();
    assert_eq!(m.getfattr("bkt", SSE).unwrap(), "KMS");
    assert_eq!(m.getfattr("bkt", KEY).unwrap(), "alias/not-yet");
    assert_eq!(m.getfattr("bkt", DATA).unwrap(), "SM4");
    let mut l = xattr_list(&m.p("bkt"));
    l.sort();
    assert_eq!(
        l,
        vec![SSE, KEY, DATA]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
            .tap_sort()
    );
    // The CLI sees the same rule.
    let cli = m.d.run(&["bucket", "encryption", "get", "bkt"]).ok().stdout;
    assert!(cli.contains("KMSMasterKeyID: alias/not-yet"), "{cli}");
    // Invalid values: EINVAL, rule unchanged.
    let settings = fs::read(m.backend("bkt/.ssefs-bucket.toml")).unwrap();
    for (name, v) in [
        (SSE, "DES"),
        (SSE, "kms"),
        (SSE, " KMS"),
        (SSE, ""),
        (DATA, "AES256"),
    ] {
        assert_eq!(
            m.setfattr("bkt", name, v),
            Err(libc::EINVAL),
            "{name}={v:?}"
        );
    }
    assert_eq!(
        xattr_set(&m.p("bkt"), SSE, &[0xff, 0xfe]),
        Err(libc::EINVAL)
    );
    assert_eq!(
        fs::read(m.backend("bkt/.ssefs-bucket.toml")).unwrap(),
        settings
    );
    // Switching to AES256 drops the key id (it would be InvalidArgument).
    m.setfattr("bkt", SSE, "AES256").unwrap();
    assert_eq!(m.getfattr("bkt", KEY), Err(libc::ENODATA));
    assert_eq!(m.setfattr("bkt", KEY, "alias/x"), Err(libc::EINVAL));
    xattr_remove(&m.p("bkt"), SSE).unwrap();
    assert_eq!(m.getfattr("bkt", SSE), Err(libc::ENODATA));
    // Other directories: ENOTSUP. The root too.
    fs::create_dir(m.p("bkt/sub")).unwrap();
    assert_eq!(m.setfattr("bkt/sub", SSE, "AES256"), Err(libc::ENOTSUP));
    assert_eq!(m.getfattr("bkt/sub", SSE), Err(libc::ENOTSUP));
    assert_eq!(xattr_get(&m.mnt, SSE), Err(libc::ENOTSUP));
}

trait TapSort {
    fn tap_sort(self) -> Self;
}
impl TapSort for Vec<String> {
    fn tap_sort(mut self) -> Self {
        self.sort();
        self
    }
}

#[test]
fn setfattr_and_getfattr_tools_work() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    let st = Command::new("setfattr")
        .args(["-n", SSE, "-v", "SM4"])
        .arg(m.p("bkt"))
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", SSE])
        .arg(m.p("bkt"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"SM4");
    let st = Command::new("setfattr")
        .args(["-n", SSE, "-v", "BOGUS"])
        .arg(m.p("bkt"))
        .output()
        .unwrap();
    assert!(!st.status.success());
    assert!(String::from_utf8_lossy(&st.stderr).contains("Invalid argument"));
    let st = Command::new("setfattr")
        .args(["-x", SSE])
        .arg(m.p("bkt"))
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("getfattr")
        .args(["-n", SSE])
        .arg(m.p("bkt"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn objects_show_how_they_are_stored_and_rules_apply_at_creation() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    fs::write(m.p("bkt/plain"), b"p").unwrap();
    assert_eq!(m.getfattr("bkt/plain", SSE), Err(libc::ENODATA));
    m.setfattr("bkt", SSE, "KMS").unwrap();
    fs::write(m.p("bkt/kms"), b"k").unwrap();
    let id = m.getfattr("bkt/kms", KEY).unwrap();
    assert_eq!(id.len(), 36, "the default CMK's id, not its alias: {id}");
    let aliases = m.d.run(&["kms", "list-aliases"]).ok().stdout;
    assert!(
        aliases.contains(&format!("alias/acs/oss\t{id}")),
        "{aliases}"
    );
    assert_eq!(m.getfattr("bkt/kms", SSE).unwrap(), "KMS");
    // A rule change never touches existing objects.
    m.setfattr("bkt", SSE, "SM4").unwrap();
    assert_eq!(m.getfattr("bkt/kms", SSE).unwrap(), "KMS");
    assert_eq!(m.getfattr("bkt/plain", SSE), Err(libc::ENODATA));
    // O_TRUNC + write is a new upload under the current rule.
    fs::write(m.p("bkt/kms"), b"rewritten").unwrap();
    assert_eq!(m.getfattr("bkt/kms", SSE).unwrap(), "SM4");
    assert_eq!(m.getfattr("bkt/kms", KEY), Err(libc::ENODATA));
    // chmod, rename, link, utimens and xattrs do not change encryption.
    fs::set_permissions(m.p("bkt/kms"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::rename(m.p("bkt/kms"), m.p("bkt/renamed")).unwrap();
    fs::hard_link(m.p("bkt/renamed"), m.p("bkt/linked")).unwrap();
    m.setfattr("bkt/renamed", "user.note", "meta").unwrap();
    m.setfattr("bkt", SSE, "AES256").unwrap();
    assert_eq!(m.getfattr("bkt/renamed", SSE).unwrap(), "SM4");
    assert_eq!(m.getfattr("bkt/linked", SSE).unwrap(), "SM4");
    assert_eq!(m.getfattr("bkt/renamed", "user.note").unwrap(), "meta");
    assert_eq!(fs::read(m.p("bkt/renamed")).unwrap(), b"rewritten");
    let l = xattr_list(&m.p("bkt/renamed"));
    assert!(
        l.contains(&SSE.to_string()) && l.contains(&"user.note".to_string()),
        "{l:?}"
    );
    assert!(!l.iter().any(|n| n.starts_with("user.ssefs")), "{l:?}");
}

/// A re-encryption replaces the backend file (a new backend inode) while the
/// kernel keeps the object's inode number, the old backend one. That number
/// was free on the backend, so the next new file got it and the daemon took
/// it for the re-encrypted object: `b` showed `a`'s content, and a symlink
/// could not be read.
#[test]
fn regression_new_files_after_a_reencryption_are_not_taken_for_it() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    fs::write(m.p("bkt/a"), b"secret-a").unwrap();
    let ino = fs::metadata(m.p("bkt/a")).unwrap().ino();
    let backend_before = fs::metadata(m.backend("bkt/a")).unwrap().ino();
    m.setfattr("bkt/a", SSE, "SM4").unwrap();
    assert_ne!(
        fs::metadata(m.backend("bkt/a")).unwrap().ino(),
        backend_before
    );
    for i in 0..8 {
        let name = format!("bkt/new-{i}");
        fs::write(m.p(&name), name.as_bytes()).unwrap();
        assert_ne!(fs::metadata(m.p(&name)).unwrap().ino(), ino, "{name}");
        assert_eq!(fs::read(m.p(&name)).unwrap(), name.as_bytes());
        let link = format!("bkt/link-{i}");
        std::os::unix::fs::symlink("a", m.p(&link)).unwrap();
        assert_eq!(fs::read_link(m.p(&link)).unwrap(), Path::new("a"), "{link}");
    }
    assert_eq!(fs::read(m.p("bkt/a")).unwrap(), b"secret-a");
    assert_eq!(fs::metadata(m.p("bkt/a")).unwrap().ino(), ino);
    // Re-encrypted twice, then forgotten by the kernel: still itself.
    m.setfattr("bkt/a", SSE, "AES256").unwrap();
    fs::write(m.p("bkt/after"), b"after").unwrap();
    assert_eq!(fs::read(m.p("bkt/after")).unwrap(), b"after");
    assert_eq!(fs::read(m.p("bkt/a")).unwrap(), b"secret-a");
    drop_caches();
    fs::write(m.p("bkt/later"), b"later").unwrap();
    assert_eq!(fs::read(m.p("bkt/later")).unwrap(), b"later");
    assert_eq!(fs::read(m.p("bkt/a")).unwrap(), b"secret-a");
}

/// The daemon knew an inode by one name, the last it saw: after `ln a b;
/// rm b` that was the unlinked `b`, and setfattr on `a` (a re-encryption,
/// renamed over a name the object still has) failed with ENOENT until the
/// kernel looked `a` up again, once its entry's 1 s TTL ran out. Renaming
/// a file over `b` left the same dead name. Each step follows the last at
/// once, within the TTL.
#[test]
fn regression_setfattr_after_ln_and_rm_of_the_other_name_failed_with_enoent() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    fs::write(m.p("bkt/a"), b"content").unwrap();
    let ino = fs::metadata(m.p("bkt/a")).unwrap().ino();

    fs::hard_link(m.p("bkt/a"), m.p("bkt/b")).unwrap();
    fs::remove_file(m.p("bkt/b")).unwrap();
    m.setfattr("bkt/a", SSE, "SM4").unwrap();
    assert_eq!(m.getfattr("bkt/a", SSE).unwrap(), "SM4");

    fs::hard_link(m.p("bkt/a"), m.p("bkt/b")).unwrap();
    fs::write(m.p("bkt/x"), b"other").unwrap();
    fs::rename(m.p("bkt/x"), m.p("bkt/b")).unwrap();
    m.setfattr("bkt/a", SSE, "AES256").unwrap();
    assert_eq!(m.getfattr("bkt/a", SSE).unwrap(), "AES256");

    // Renamed away, then the first name removed: only `c` is left.
    fs::hard_link(m.p("bkt/a"), m.p("bkt/tmp")).unwrap();
    fs::rename(m.p("bkt/tmp"), m.p("bkt/c")).unwrap();
    fs::remove_file(m.p("bkt/a")).unwrap();
    m.setfattr("bkt/c", SSE, "SM4").unwrap();
    assert_eq!(m.getfattr("bkt/c", SSE).unwrap(), "SM4");

    assert_eq!(fs::read(m.p("bkt/c")).unwrap(), b"content");
    assert_eq!(fs::metadata(m.p("bkt/c")).unwrap().ino(), ino);
    assert_eq!(fs::read(m.p("bkt/b")).unwrap(), b"other");
    let stored = fs::read(m.backend("bkt/c")).unwrap();
    assert!(!stored.windows(7).any(|w| w == b"content"), "not encrypted");
}

#[test]
fn setfattr_on_a_file_overrides_and_reencrypts_atomically() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    m.setfattr("bkt", SSE, "AES256").unwrap();
    // Empty file: decides how data about to be written is encrypted.
    File::create(m.p("bkt/empty")).unwrap();
    m.setfattr("bkt/empty", SSE, "SM4").unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(m.p("bkt/empty"))
        .unwrap()
        .write_all(b"sm4 data")
        .unwrap();
    assert_eq!(m.getfattr("bkt/empty", SSE).unwrap(), "SM4");

    // Non-empty: re-encrypted, content unchanged, attributes kept.
    let data = pattern(200_000, 4);
    fs::write(m.p("bkt/f"), &data).unwrap();
    m.setfattr("bkt/f", "user.keep", "yes").unwrap();
    fs::set_permissions(m.p("bkt/f"), fs::Permissions::from_mode(0o604)).unwrap();
    let ino = fs::metadata(m.p("bkt/f")).unwrap().ino();
    let before = fs::read(m.backend("bkt/f")).unwrap();
    let mut open = File::open(m.p("bkt/f")).unwrap();
    m.setfattr("bkt/f", SSE, "KMS").unwrap();
    m.setfattr("bkt/f", DATA, "SM4").unwrap();
    assert_eq!(m.getfattr("bkt/f", SSE).unwrap(), "KMS");
    assert_eq!(m.getfattr("bkt/f", DATA).unwrap(), "SM4");
    assert_ne!(fs::read(m.backend("bkt/f")).unwrap(), before);
    assert_eq!(fs::read(m.p("bkt/f")).unwrap(), data);
    let md = fs::metadata(m.p("bkt/f")).unwrap();
    assert_eq!(md.ino(), ino, "the inode number stays");
    assert_eq!(md.mode() & 0o777, 0o604);
    assert_eq!(m.getfattr("bkt/f", "user.keep").unwrap(), "yes");
    // A handle opened before still reads the same content.
    let mut got = Vec::new();
    open.seek(SeekFrom::Start(0)).unwrap();
    open.read_to_end(&mut got).unwrap();
    assert_eq!(got, data);
    // The override survives truncate-and-rewrite.
    fs::write(m.p("bkt/f"), b"again").unwrap();
    assert_eq!(m.getfattr("bkt/f", SSE).unwrap(), "KMS");
    // setfattr -x: back to the bucket's current rule.
    xattr_remove(&m.p("bkt/f"), SSE).unwrap();
    assert_eq!(m.getfattr("bkt/f", SSE).unwrap(), "AES256");
    assert_eq!(fs::read(m.p("bkt/f")).unwrap(), b"again");
    // Invalid overrides: EINVAL, nothing changes.
    let raw = fs::read(m.backend("bkt/f")).unwrap();
    assert_eq!(m.setfattr("bkt/f", SSE, "aes256"), Err(libc::EINVAL));
    assert_eq!(
        m.setfattr("bkt/f", KEY, "alias/x"),
        Err(libc::EINVAL),
        "key id needs KMS"
    );
    assert_eq!(fs::read(m.backend("bkt/f")).unwrap(), raw);
    // Unknown CMK: ENOKEY, nothing changes.
    m.setfattr("bkt/f", SSE, "KMS").unwrap();
    let raw = fs::read(m.backend("bkt/f")).unwrap();
    assert_eq!(m.setfattr("bkt/f", KEY, "alias/missing"), Err(libc::ENOKEY));
    assert_eq!(fs::read(m.backend("bkt/f")).unwrap(), raw);
}

#[test]
fn encrypted_backend_bytes_hold_no_plaintext_and_everything_persists() {
    let m = Mount::new(&[]);
    let marker = b"PLAINTEXT-MARKER-do-not-leak-0123456789".repeat(3000);
    for (b, alg) in [
        ("aes", "AES256"),
        ("sm4", "SM4"),
        ("kms", "KMS"),
        ("none", ""),
    ] {
        fs::create_dir(m.p(b)).unwrap();
        if !alg.is_empty() {
            m.setfattr(b, SSE, alg).unwrap();
        }
        fs::write(m.p(&format!("{b}/obj")), &marker).unwrap();
        m.setfattr(&format!("{b}/obj"), "user.meta", "m").unwrap();
        let raw = fs::read(m.backend(&format!("{b}/obj"))).unwrap();
        let leaks = raw.windows(24).any(|w| w == &marker[..24]);
        assert_eq!(leaks, alg.is_empty(), "bucket {b}");
    }
    m.unmount();
    m.mount(&[]);
    for (b, alg) in [
        ("aes", "AES256"),
        ("sm4", "SM4"),
        ("kms", "KMS"),
        ("none", ""),
    ] {
        let p = format!("{b}/obj");
        assert_eq!(fs::read(m.p(&p)).unwrap(), marker);
        assert_eq!(m.getfattr(&p, "user.meta").unwrap(), "m");
        if alg.is_empty() {
            assert_eq!(m.getfattr(b, SSE), Err(libc::ENODATA));
        } else {
            assert_eq!(m.getfattr(b, SSE).unwrap(), alg);
            assert_eq!(m.getfattr(&p, SSE).unwrap(), alg);
        }
    }
}

/// A POSIX ACL xattr value (version 2): u::rw-, u:1000:r--, g::r--, m::r--, o::r--.
fn acl_with_named_user() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 1000),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[test]
fn only_user_xattrs_are_stored_other_namespaces_are_not_supported() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    m.setfattr("bkt", SSE, "AES256").unwrap();
    fs::create_dir(m.p("bkt/dir")).unwrap();
    fs::write(m.p("bkt/obj"), b"data").unwrap();
    for rel in ["bkt/obj", "bkt/dir"] {
        let p = m.p(rel);
        xattr_set(&p, "user.meta", b"v").unwrap();
        assert_eq!(xattr_get(&p, "user.meta").unwrap(), "v", "{rel}");
        // The kernel checks security.capability and ACL values itself, so
        // the ACL is a well-formed one (with a named user: not reducible to
        // mode bits) and the security name one no module handles.
        let acl = acl_with_named_user();
        for (name, v) in [
            ("trusted.t", &b"x"[..]),
            ("security.ssefs-test", b"x"),
            ("system.posix_acl_access", &acl),
        ] {
            assert_eq!(
                xattr_set(&p, name, v),
                Err(libc::EOPNOTSUPP),
                "{rel} {name}"
            );
        }
        // Read and removed as a filesystem without these namespaces
        // answers, so that `ls -l` stops asking after the first file.
        for name in ["trusted.t", "security.selinux", "system.posix_acl_access"] {
            assert_eq!(xattr_get(&p, name), Err(libc::EOPNOTSUPP), "{rel} {name}");
            assert_eq!(
                xattr_remove(&p, name),
                Err(libc::EOPNOTSUPP),
                "{rel} {name}"
            );
        }
        // A name put on the backend file behind the mount's back (as root)
        // stays invisible: the namespace is filtered, not merely empty.
        let back = CString::new(m.backend(rel).as_os_str().as_bytes()).unwrap();
        // SAFETY: the C strings and buffers passed live for the whole call, and each length is its buffer's own.
        let r = unsafe {
            libc::setxattr(
                back.as_ptr(),
                c"trusted.behind".as_ptr(),
                b"x".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(r, 0, "{rel}: setting trusted.* on the backend needs root");
        assert_eq!(
            xattr_get(&p, "trusted.behind"),
            Err(libc::EOPNOTSUPP),
            "{rel}"
        );
        let names = xattr_list(&p);
        assert!(
            names.iter().all(|n| n.starts_with("user.")),
            "{rel}: {names:?}"
        );
        assert!(names.contains(&"user.meta".to_owned()), "{rel}: {names:?}");
    }
    assert_eq!(m.getfattr("bkt/obj", SSE).unwrap(), "AES256");
    assert_eq!(fs::read(m.p("bkt/obj")).unwrap(), b"data");
}

/// The mode of `rel` as the mount shows it and as the backend stores it.
fn modes(m: &Mount, rel: &str) -> (u32, u32) {
    let shown = fs::metadata(m.p(rel)).unwrap().mode() & 0o7777;
    let stored = fs::metadata(m.backend(rel)).unwrap().mode() & 0o7777;
    (shown, stored)
}

/// Runs `sh -c cmd`, as uid and gid 1000 when `as_user`: whether it
/// succeeded.
fn sh_ok(cmd: &str, as_user: bool) -> bool {
    let mut c = Command::new("sh");
    c.arg("-c").arg(cmd);
    if as_user {
        c.uid(1000).gid(1000);
    }
    c.output().unwrap().status.success()
}

fn sh(cmd: &str, as_user: bool) {
    assert!(sh_ok(cmd, as_user), "{cmd}");
}

// The kernel leaves clearing set-id bits to the daemon
// (FUSE_HANDLE_KILLPRIV_V2). Every change is made both through the mount
// and in a directory of the local filesystem, and the modes must agree:
// writes, truncations and O_TRUNC opens by root and by uid 1000 (inside and
// outside the file's group), chown and chown(f, -1, -1).
#[test]
fn regression_killpriv_set_id_bits_are_cleared_as_the_local_filesystem_clears_them() {
    let m = Mount::new(&["allow_other"]);
    fs::create_dir(m.p("plain")).unwrap();
    fs::set_permissions(m.p("plain"), fs::Permissions::from_mode(0o777)).unwrap();
    let local = tempfile::tempdir().unwrap();
    fs::set_permissions(local.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let actions = [
        ("append", "printf x >> {f}"),
        ("truncate", "truncate -s 2 {f}"),
        ("o_trunc", ": > {f}"),
        ("chown", "chown 0:{g} {f}"),
        (
            "chown -1:-1",
            "perl -e 'chown(-1, -1, $ARGV[0]) or die $!' {f}",
        ),
    ];
    let mut cleared = 0;
    for (i, (what, cmd)) in actions.iter().enumerate() {
        for start in [0o6777, 0o2767, 0o4766, 0o0777] {
            for group in [0, 1000] {
                for as_user in [true, false] {
                    if *what == "chown" && as_user {
                        continue; // only root may give a file away
                    }
                    let name = format!("f{i}-{start:o}-{group}-{as_user}");
                    let there = m.p(&format!("plain/{name}"));
                    let here = local.path().join(&name);
                    let mut seen = Vec::new();
                    for f in [&there, &here] {
                        fs::write(f, b"abc").unwrap();
                        std::os::unix::fs::chown(f, Some(0), Some(group)).unwrap();
                        fs::set_permissions(f, fs::Permissions::from_mode(start)).unwrap();
                        let cmd = cmd
                            .replace("{f}", &f.display().to_string())
                            .replace("{g}", &group.to_string());
                        let ok = sh_ok(&cmd, as_user);
                        seen.push((ok, fs::metadata(f).unwrap().mode() & 0o7777));
                    }
                    // The one known difference (Fs::chown_nothing): another
                    // user's chown(f, -1, -1) of a set-id file succeeds here,
                    // changing nothing, where the local filesystem refuses.
                    let refused_locally = *what == "chown -1:-1" && as_user && !seen[1].0;
                    if !refused_locally {
                        assert_eq!(seen[0].0, seen[1].0, "{what} on {start:o}: exit status");
                    }
                    let seen = [seen[0].1, seen[1].1];
                    let (shown, stored) = modes(&m, &format!("plain/{name}"));
                    assert_eq!(
                        (shown, stored),
                        (seen[1], seen[1]),
                        "{what} on {start:o} (group {group}) as {}",
                        if as_user { "uid 1000" } else { "root" }
                    );
                    cleared += usize::from(seen[1] != start);
                }
            }
        }
    }
    // the comparison is not vacuous: the local filesystem cleared bits
    assert!(cleared >= 10, "{cleared}");
    assert_eq!(fs::read(m.p("plain/f0-6777-0-true")).unwrap(), b"abcx");
    assert_eq!(fs::read(m.p("plain/f1-6777-0-true")).unwrap(), b"ab");
    assert_eq!(fs::read(m.p("plain/f2-6777-0-true")).unwrap(), b"");
}

// The daemon (root) gives a new inode to its creator with a chown, which
// cleared the set-user-ID bit asked for at creation; a re-encryption made
// the object anew with chmod before chown, which cleared it too.
#[test]
fn regression_set_id_bits_survive_creation_by_a_user_and_reencryption() {
    let m = Mount::new(&["allow_other"]);
    for b in ["plain", "aes"] {
        fs::create_dir(m.p(b)).unwrap();
        fs::set_permissions(m.p(b), fs::Permissions::from_mode(0o777)).unwrap();
    }
    m.setfattr("aes", SSE, "AES256").unwrap();
    for b in ["plain", "aes"] {
        let rel = format!("{b}/made-by-user");
        sh(
            &format!(
                "umask 0; perl -MFcntl -e 'sysopen(F, $ARGV[0], O_CREAT|O_WRONLY, 04755) or die $!' {}",
                m.p(&rel).display()
            ),
            true,
        );
        // root's write keeps the bit (CAP_FSETID)
        sh(&format!("printf x >> {}", m.p(&rel).display()), false);
        let md = fs::metadata(m.p(&rel)).unwrap();
        assert_eq!((md.uid(), md.gid()), (1000, 1000), "{rel}");
        assert_eq!(modes(&m, &rel), (0o4755, 0o4755), "{rel}");
    }
    // re-encrypt the user's set-user-ID object: owner and mode stay
    m.setfattr("aes/made-by-user", SSE, "SM4").unwrap();
    assert_eq!(m.getfattr("aes/made-by-user", SSE).unwrap(), "SM4");
    let md = fs::metadata(m.p("aes/made-by-user")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 1000));
    assert_eq!(modes(&m, "aes/made-by-user"), (0o4755, 0o4755));
    assert_eq!(fs::read(m.p("aes/made-by-user")).unwrap(), b"x");
}

// ------------------------------------------------------------------ errors

#[test]
fn kms_errors_reach_the_caller_with_their_errno() {
    let m = Mount::new(&["allow_other"]);
    fs::create_dir(m.p("bkt")).unwrap();
    m.d.run(&["kms", "create-key", "--alias", "alias/app"]).ok();
    m.setfattr("bkt", SSE, "KMS").unwrap();
    m.setfattr("bkt", KEY, "alias/app").unwrap();
    fs::write(m.p("bkt/doc"), b"secret doc").unwrap();
    fs::set_permissions(m.p("bkt/doc"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(m.p("bkt"), fs::Permissions::from_mode(0o777)).unwrap();

    // Disabled with the CLI while mounted: EKEYREVOKED, without a remount.
    m.d.run(&["kms", "disable-key", "alias/app"]).ok();
    assert_eq!(
        errno_of(File::open(m.p("bkt/doc")).unwrap_err()),
        libc::EKEYREVOKED
    );
    assert_eq!(
        errno_of(File::create(m.p("bkt/new")).unwrap_err()),
        libc::EKEYREVOKED
    );
    assert!(
        !m.backend("bkt/new").exists(),
        "a refused create leaves nothing"
    );
    m.d.run(&["kms", "enable-key", "alias/app"]).ok();
    assert_eq!(fs::read(m.p("bkt/doc")).unwrap(), b"secret doc");

    // Overwriting (O_TRUNC) is a new upload and, as in OSS, needs no access
    // to the old object's key.
    fs::write(m.p("bkt/replace-me"), b"old").unwrap();
    m.setfattr("bkt", SSE, "AES256").unwrap();
    m.d.run(&["kms", "disable-key", "alias/app"]).ok();
    fs::write(m.p("bkt/replace-me"), b"new").unwrap();
    assert_eq!(fs::read(m.p("bkt/replace-me")).unwrap(), b"new");
    assert_eq!(m.getfattr("bkt/replace-me", SSE).unwrap(), "AES256");
    m.d.run(&["kms", "enable-key", "alias/app"]).ok();
    m.setfattr("bkt", SSE, "KMS").unwrap();
    m.setfattr("bkt", KEY, "alias/app").unwrap();

    // Pending deletion: EKEYREVOKED.
    m.d.run(&[
        "kms",
        "schedule-key-deletion",
        "alias/app",
        "--pending-days",
        "7",
    ])
    .ok();
    assert_eq!(
        errno_of(File::open(m.p("bkt/doc")).unwrap_err()),
        libc::EKEYREVOKED
    );
    m.d.run(&["kms", "cancel-key-deletion", "alias/app"]).ok();

    // A rule naming a key that does not exist: ENOKEY at the next write.
    m.d.run(&[
        "bucket",
        "encryption",
        "put",
        "bkt",
        "--algorithm",
        "KMS",
        "--kms-key-id",
        "0b9f2b4e-7a1c-4c7e-9a55-0d6a2f3e4b5c",
    ])
    .ok();
    assert_eq!(
        errno_of(File::create(m.p("bkt/other")).unwrap_err()),
        libc::ENOKEY
    );

    // The anonymous user (nobody) is refused by KMS: EACCES.
    let out = Command::new("cat")
        .arg(m.p("bkt/doc"))
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Logged once, with the OSS code, the path and the key id.
    let log = fs::read_to_string(m.d.data().join(".ssefs/mount.log")).unwrap();
    assert!(
        log.contains("Rejected.Disabled") && log.contains("bkt/doc"),
        "{log}"
    );
    assert!(log.contains("KeyNotFound") && log.contains("0b9f2b4e-7a1c-4c7e-9a55-0d6a2f3e4b5c"));
    assert!(log.contains("AccessDenied"));
}

#[test]
fn tampered_backend_reads_fail_with_eio() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    m.setfattr("bkt", SSE, "AES256").unwrap();
    fs::write(m.p("bkt/t"), pattern(50_000, 2)).unwrap();
    m.unmount();
    let raw = m.backend("bkt/t");
    let f = OpenOptions::new().write(true).open(&raw).unwrap();
    f.write_all_at(&[0x55], 20_000).unwrap();
    drop(f);
    m.mount(&[]);
    let mut buf = Vec::new();
    let err = File::open(m.p("bkt/t"))
        .unwrap()
        .read_to_end(&mut buf)
        .unwrap_err();
    assert_eq!(errno_of(err), libc::EIO);
    let log = fs::read_to_string(m.d.data().join(".ssefs/mount.log")).unwrap();
    assert!(
        log.contains("DataIntegrityError") && log.contains("bkt/t"),
        "{log}"
    );
}

// --------------------------------------------------------------- lifecycle

#[test]
fn a_dead_mount_is_cleaned_up_and_sigterm_unmounts() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    fs::write(m.p("bkt/f"), b"survives").unwrap();
    let pid = daemon_pid(&m);
    // SAFETY: kill(2) takes plain integers; no memory is involved.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        errno_of(fs::metadata(m.p("bkt")).unwrap_err()),
        libc::ENOTCONN
    );
    m.mount(&[]);
    assert_eq!(fs::read(m.p("bkt/f")).unwrap(), b"survives");
    let pid = daemon_pid(&m);
    // SAFETY: kill(2) takes plain integers; no memory is involved.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let t = Instant::now();
    while is_mounted(&m.mnt) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!is_mounted(&m.mnt), "SIGTERM did not unmount");
}

pub fn daemon_pid(m: &Mount) -> i32 {
    let want = m.mnt.to_str().unwrap().to_owned();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|&b| b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if args.iter().any(|a| a == "--foreground") && args.iter().any(|a| a == &want) {
            if let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) {
                if !stat.contains(") Z ") {
                    return pid;
                }
            }
        }
    }
    panic!("daemon not found for {want} (binary {:?})", bin());
}

/// pjdfstest rename::write_access_required_subdir: the daemon's own umask
/// stripped group/other bits from new directories and files.
#[test]
fn regression_new_inode_modes_are_not_masked_by_the_daemon_umask() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg("umask 0 && mkdir \"$1/d\" && touch \"$1/f\" && mkfifo \"$1/p\"")
        .arg("sh")
        .arg(m.p("bkt"))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(fs::metadata(m.p("bkt/d")).unwrap().mode() & 0o777, 0o777);
    assert_eq!(fs::metadata(m.p("bkt/f")).unwrap().mode() & 0o777, 0o666);
    assert_eq!(
        fs::symlink_metadata(m.p("bkt/p")).unwrap().mode() & 0o777,
        0o666
    );
}

#[test]
fn read_only_mounts_refuse_changes_and_serve_reads() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    m.setfattr("bkt", SSE, "AES256").unwrap();
    fs::write(m.p("bkt/f"), b"kept").unwrap();
    m.unmount();
    m.mount(&["ro"]);
    assert_eq!(fs::read(m.p("bkt/f")).unwrap(), b"kept");
    assert_eq!(m.getfattr("bkt/f", SSE).unwrap(), "AES256");
    assert_eq!(
        errno_of(fs::write(m.p("bkt/g"), b"x").unwrap_err()),
        libc::EROFS
    );
    assert_eq!(
        errno_of(
            OpenOptions::new()
                .write(true)
                .open(m.p("bkt/f"))
                .unwrap_err()
        ),
        libc::EROFS
    );
    assert_eq!(m.setfattr("bkt", SSE, "SM4"), Err(libc::EROFS));
    assert_eq!(
        errno_of(fs::create_dir(m.p("new-bucket")).unwrap_err()),
        libc::EROFS
    );
}

#[test]
fn mount_creates_a_missing_mount_point_and_rejects_unknown_options() {
    let d = DataDir::uninit();
    let mnt = d.path("not/yet/there");
    d.run(&["mount", mnt.to_str().unwrap(), "-o", "allow_other,bogus"])
        .fails_with("InvalidArgument");
    assert!(!mnt.exists(), "a refused mount changes nothing");
    d.run(&["mount", mnt.to_str().unwrap()]).ok();
    assert!(is_mounted(&mnt));
    unmount_at(&mnt);
}

/// With FUSE_ATOMIC_O_TRUNC the kernel skips its own truncation of
/// open(O_RDONLY | O_TRUNC) and sets its cached size to 0; the daemon must
/// truncate the object too, or the cache and the backend disagree.
#[test]
fn regression_read_only_open_with_o_trunc_truncates_the_object() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    fs::write(m.p("bkt/f"), b"some content").unwrap();
    let f = cpath(&m.p("bkt/f"));
    // SAFETY: the C strings and buffers passed live for the whole call, and each length is its buffer's own.
    let fd = unsafe { libc::open(f.as_ptr(), libc::O_RDONLY | libc::O_TRUNC) };
    assert!(fd >= 0);
    // SAFETY: a descriptor this test owns, and plain integers.
    unsafe { libc::close(fd) };
    m.unmount();
    m.mount(&[]);
    assert_eq!(fs::metadata(m.p("bkt/f")).unwrap().len(), 0);
    assert_eq!(fs::read(m.p("bkt/f")).unwrap(), b"");
}

/// Found through pjdfstest's open::etxtbsy, which failed about one run in
/// three: for open(O_RDONLY | O_TRUNC) the kernel checks that the file is
/// not a running program (ETXTBSY) only after the OPEN request, which with
/// FUSE_ATOMIC_O_TRUNC had already emptied the object. The program died of
/// SIGBUS, and when it died first the open even succeeded.
#[test]
fn regression_read_only_o_trunc_of_a_running_program_fails_and_keeps_it() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    let prog = m.p("bkt/sleep");
    let original = fs::read("/bin/sleep").unwrap();
    fs::write(&prog, &original).unwrap();
    fs::set_permissions(&prog, fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = Command::new(&prog).arg("30").spawn().unwrap();
    let f = cpath(&prog);
    for flags in [libc::O_RDONLY | libc::O_TRUNC, libc::O_WRONLY, libc::O_RDWR] {
        // SAFETY: the C strings and buffers passed live for the whole call, and each length is its buffer's own.
        let fd = unsafe { libc::open(f.as_ptr(), flags) };
        let err = last_errno();
        if fd >= 0 {
            // SAFETY: a descriptor this test owns, and plain integers.
            unsafe { libc::close(fd) };
        }
        assert_eq!((fd, err), (-1, libc::ETXTBSY), "open flags {flags:#x}");
    }
    assert!(child.try_wait().unwrap().is_none(), "the program died");
    child.kill().unwrap();
    child.wait().unwrap();
    let now = fs::read(&prog).unwrap();
    assert!(
        now == original,
        "the program changed: {} bytes, was {}",
        now.len(),
        original.len()
    );
    // Not running any more: the same open truncates.
    // SAFETY: the C strings and buffers passed live for the whole call, and each length is its buffer's own.
    let fd = unsafe { libc::open(f.as_ptr(), libc::O_RDONLY | libc::O_TRUNC) };
    assert!(fd >= 0);
    // SAFETY: a descriptor this test owns, and plain integers.
    unsafe { libc::close(fd) };
    assert_eq!(fs::metadata(&prog).unwrap().len(), 0);
}

fn access(p: &Path, mode: i32) -> Result<(), i32> {
    // SAFETY: valid C string.
    match unsafe { libc::access(cpath(p).as_ptr(), mode) } {
        0 => Ok(()),
        _ => Err(last_errno()),
    }
}

fn mount_super_options(mnt: &Path) -> String {
    let canon = mnt.canonicalize().unwrap();
    let info = crate::util::mountinfo();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(canon.to_str().unwrap()))
        .unwrap();
    line.rsplit(' ').next().unwrap().to_string()
}

#[test]
fn single_user_mounts_check_permissions_in_the_daemon() {
    // Without allow_other only the mount's owner gets in, and the kernel's
    // mode-bit checks (default_permissions) are off: the daemon answers
    // access() and checks open() itself, as a kernel filesystem would.
    let m = Mount::new(&[]);
    assert!(!mount_super_options(&m.mnt).contains("default_permissions"));
    fs::create_dir(m.p("bkt")).unwrap();
    m.setfattr("bkt", SSE, "AES256").unwrap();
    fs::write(m.p("bkt/plain"), b"x").unwrap();
    fs::write(m.p("bkt/tool"), b"#!/bin/sh\necho ran\n").unwrap();
    fs::set_permissions(m.p("bkt/plain"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(m.p("bkt/tool"), fs::Permissions::from_mode(0o700)).unwrap();
    // Root reads and writes anything, executes only what has an x bit.
    assert_eq!(access(&m.p("bkt/plain"), libc::X_OK), Err(libc::EACCES));
    assert_eq!(access(&m.p("bkt/tool"), libc::X_OK), Ok(()));
    assert_eq!(access(&m.p("bkt"), libc::X_OK), Ok(()));
    fs::set_permissions(m.p("bkt/plain"), fs::Permissions::from_mode(0o000)).unwrap();
    assert_eq!(access(&m.p("bkt/plain"), libc::R_OK | libc::W_OK), Ok(()));
    fs::write(m.p("bkt/plain"), b"root may").unwrap();
    assert_eq!(fs::read(m.p("bkt/plain")).unwrap(), b"root may");
    let out = run_written_program(&m.p("bkt/tool"));
    assert_eq!(out.stdout, b"ran\n");
    // Everyone else is refused by the kernel before any check of ours.
    let out = Command::new("stat")
        .arg(m.p("bkt/tool"))
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    m.unmount();

    // With allow_other the kernel checks mode bits for every caller.
    m.mount(&["allow_other"]);
    assert!(mount_super_options(&m.mnt).contains("default_permissions"));
    fs::set_permissions(m.p("bkt/plain"), fs::Permissions::from_mode(0o644)).unwrap();
    let nobody_writes = Command::new("sh")
        .arg("-c")
        .arg(format!("echo x > {}", m.p("bkt/plain").display()))
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!nobody_writes.status.success());
    assert_eq!(fs::read(m.p("bkt/plain")).unwrap(), b"root may");
    let nobody_reads = Command::new("cat")
        .arg(m.p("bkt/plain"))
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(nobody_reads.stdout, b"root may");
}

fn daemon_fds(m: &Mount) -> usize {
    fs::read_dir(format!("/proc/{}/fd", daemon_pid(m)))
        .unwrap()
        .count()
}

#[test]
fn listings_with_attributes_are_right_and_forgotten_when_the_kernel_forgets() {
    // `ls -l` gets entries with their attributes in one READDIRPLUS; each
    // entry the kernel keeps counts as a lookup the daemon must hold until
    // the kernel forgets it. The descriptors the daemon's cache took for
    // them (300 fit in it under this machine's limit) go with the nodes.
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    m.setfattr("bkt", SSE, "AES256").unwrap();
    fs::create_dir(m.p("bkt/d")).unwrap();
    let n = 300;
    for i in 0..n {
        fs::write(m.p(&format!("bkt/d/f{i}")), pattern(i * 37, i as u8)).unwrap();
    }
    std::os::unix::fs::symlink("f1", m.p("bkt/d/link")).unwrap();
    fs::create_dir(m.p("bkt/d/sub")).unwrap();
    drop_caches();
    let before = daemon_fds(&m);
    let out = Command::new("ls")
        .args(["-ln", "--time-style=+%s"])
        .arg(m.p("bkt/d"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let listing = String::from_utf8(out.stdout).unwrap();
    let mut seen = 0;
    for line in listing.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let name = f[6];
        let md = fs::symlink_metadata(m.p(&format!("bkt/d/{name}"))).unwrap();
        assert_eq!(f[4], md.len().to_string(), "size of {name}");
        if let Some(i) = name.strip_prefix('f').and_then(|s| s.parse::<usize>().ok()) {
            assert_eq!(md.len(), (i * 37) as u64, "plaintext size of {name}");
            seen += 1;
        }
    }
    assert_eq!(seen, n, "{listing}");
    let held = daemon_fds(&m);
    assert!(held >= before + n, "held {held}, before {before}");
    // When the kernel drops its inodes it forgets them, and the daemon
    // lets go of every descriptor it took for the listing.
    drop_caches();
    let t = Instant::now();
    while daemon_fds(&m) > before + 2 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        daemon_fds(&m) <= before + 2,
        "{} descriptors held after the kernel forgot (before: {before})",
        daemon_fds(&m)
    );
}

fn drop_caches() {
    Command::new("sync").status().unwrap();
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
}

/// Root's mount reads ahead 4 MiB (the kernel's default for FUSE is
/// 128 KiB, which INIT can only lower): a sequential read reaches the
/// daemon as 1 MiB requests, several at a time. A large file read that
/// way comes back right; with one chunk's backend bytes flipped in the
/// middle, reading stops with EIO at that chunk and every byte handed out
/// before it is right.
#[test]
fn sequential_reads_go_deep_and_stop_at_a_bad_chunk() {
    let m = Mount::new(&[]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let dev = fs::metadata(&m.mnt).unwrap().dev();
        let (maj, min) = (libc::major(dev), libc::minor(dev));
        let ra = fs::read_to_string(format!("/sys/class/bdi/{maj}:{min}/read_ahead_kb")).unwrap();
        assert_eq!(ra.trim(), "4096");
    }
    fs::create_dir(m.p("bkt")).unwrap();
    m.setfattr("bkt", SSE, "AES256").unwrap();
    let data = pattern(24 << 20, 4);
    fs::write(m.p("bkt/big"), &data).unwrap();
    let read_all = |m: &Mount| -> (Vec<u8>, Option<i32>) {
        let mut f = File::open(m.p("bkt/big")).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match f.read(&mut buf) {
                Ok(0) => return (got, None),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return (got, e.raw_os_error()),
            }
        }
    };
    // Cold: the daemon (and its cache) anew, the kernel's pages dropped.
    m.unmount();
    m.mount(&[]);
    let (got, err) = read_all(&m);
    assert_eq!(err, None);
    assert!(got == data, "a sequential read came back wrong");
    // Flip a byte of chunk 1000 (at 15.6 MiB) on the backend.
    m.unmount();
    let backend = m.backend("bkt/big");
    let shift = fs::read(&backend).unwrap()[11];
    let (c, slot) = (1u64 << shift, fs::metadata(&backend).unwrap().len());
    let chunks = (data.len() as u64).div_ceil(c);
    let slot_len = (slot - 128) / chunks;
    let at = 128 + 1000 * slot_len + slot_len / 2;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&backend)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
    drop(f);
    m.mount(&[]);
    let (got, err) = read_all(&m);
    assert_eq!(err, Some(libc::EIO));
    assert!(
        got.len() as u64 <= 1000 * c,
        "bytes of the bad chunk handed out"
    );
    assert!(
        got[..] == data[..got.len()],
        "wrong bytes before the bad chunk"
    );
}
