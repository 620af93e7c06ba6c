//! The descriptor-per-inode fallback (src/fs/inodes.rs) through real
//! mounts: where the data directory's filesystem makes no file handles
//! (overlayfs here) or the daemon may not open them (no
//! CAP_DAC_READ_SEARCH),
//! every known inode holds a descriptor, and the guarantees hold as with
//! handles: hard links share an inode, a rename by another process is
//! followed, a file deleted while open keeps working, and a symlink
//! planted in the backend is not followed.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::mount::{daemon_pid, xattr_get, Mount};
use crate::util::{DataDir, Run};

const SSE: &str = "user.oss.server-side-encryption";
const CAP_DAC_READ_SEARCH: u32 = 2;

/// An overlayfs mounted on a data directory: without nfs_export (the
/// default) it makes no file handles, and unlike ramfs it stores the user
/// xattrs objects need. Unmounted (and what is left of the temp directory
/// holding it removed) on drop: declared before the `Mount` that uses it,
/// so dropped after it.
struct Overlay {
    at: PathBuf,
    _layers: tempfile::TempDir,
}

impl Overlay {
    fn on(at: &Path) -> Overlay {
        let layers = tempfile::tempdir().unwrap();
        let l = |n: &str| layers.path().join(n);
        for n in ["lower", "upper", "work"] {
            fs::create_dir(l(n)).unwrap();
        }
        // The data directory (the overlay's root) must be private.
        fs::set_permissions(l("upper"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::create_dir_all(at).unwrap();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            l("lower").display(),
            l("upper").display(),
            l("work").display()
        );
        let st = Command::new("mount")
            .args(["-t", "overlay", "ssefs-test", "-o", &opts])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t overlay {}", at.display());
        Overlay {
            at: at.to_path_buf(),
            _layers: layers,
        }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        if let Some(tmp) = self.at.parent() {
            let _ = fs::remove_dir_all(tmp);
        }
    }
}

/// A ramfs mounted on a data directory: no file handles and no user
/// xattrs at all. Unmounted on drop (declared before the `Mount`).
struct Ramfs(PathBuf);

impl Ramfs {
    fn on(at: &Path) -> Ramfs {
        fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "ramfs", "-o", "mode=0700", "ssefs-test"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t ramfs {}", at.display());
        Ramfs(at.to_path_buf())
    }
}

impl Drop for Ramfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Mounts `d`, its `ssefs mount` command first given to `prepare`, and
/// checks that the daemon fell back to descriptors.
fn mount_with(d: DataDir, prepare: impl FnOnce(&mut Command)) -> Mount {
    let mnt = d.path("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let mut c = d.cmd();
    c.arg("mount").arg(&mnt);
    prepare(&mut c);
    Run::from(c.output().unwrap()).ok();
    let m = Mount { d, mnt };
    let log = fs::read_to_string(m.backend(".ssefs/mount.log")).unwrap();
    assert!(
        log.contains("file handles unavailable on the data directory"),
        "the daemon uses file handles: {log}"
    );
    m
}

/// Opens `name` beneath the directory `dir` holds (never through a path
/// from the mount root, which the kernel would look up again).
fn open_at(dir: &File, name: &str, flags: i32) -> File {
    let n = CString::new(name).unwrap();
    // SAFETY: a valid descriptor and C string; the result is checked.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), n.as_ptr(), flags, 0o644) };
    assert!(
        fd >= 0,
        "openat {name}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor we own.
    unsafe { File::from_raw_fd(fd) }
}

fn read_all(mut f: &File) -> Vec<u8> {
    let mut out = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut out).unwrap();
    out
}

/// The guarantees, through the mount `m`.
fn guarantees_hold(m: &Mount) {
    for d in ["d0", "d1", "d2", "d3"] {
        fs::create_dir_all(m.p(&format!("bkt/{d}"))).unwrap();
        fs::write(m.p(&format!("bkt/{d}/f")), format!("{d} data")).unwrap();
    }

    // Hard links: one inode, whose bytes change through either name.
    fs::hard_link(m.p("bkt/d1/f"), m.p("bkt/d0/link")).unwrap();
    let (a, b) = (
        fs::metadata(m.p("bkt/d1/f")).unwrap(),
        fs::metadata(m.p("bkt/d0/link")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    fs::write(m.p("bkt/d0/link"), b"through the link").unwrap();
    assert_eq!(fs::read(m.p("bkt/d1/f")).unwrap(), b"through the link");

    // A directory renamed on the backend by another process: a descriptor
    // the kernel holds still reaches its entries, and creates in it.
    let moved = File::open(m.p("bkt/d2")).unwrap();
    fs::rename(m.backend("bkt/d2"), m.backend("bkt/moved")).unwrap();
    assert_eq!(read_all(&open_at(&moved, "f", libc::O_RDONLY)), b"d2 data");
    let mut new = open_at(&moved, "new", libc::O_CREAT | libc::O_WRONLY);
    new.write_all(b"made after the rename").unwrap();
    drop((new, moved));
    assert_eq!(
        fs::read(m.p("bkt/moved/new")).unwrap(),
        b"made after the rename"
    );

    // Unlinked while open: reads, writes and fstat go on.
    let mut open = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("bkt/d0/f"))
        .unwrap();
    let ino = open.metadata().unwrap().ino();
    fs::remove_file(m.p("bkt/d0/f")).unwrap();
    open.seek(SeekFrom::End(0)).unwrap();
    open.write_all(b" after unlink").unwrap();
    assert_eq!(read_all(&open), b"d0 data after unlink");
    let st = open.metadata().unwrap();
    assert_eq!((st.ino(), st.nlink(), st.len()), (ino, 0, 20));
    drop(open);
    assert!(!m.p("bkt/d0/f").exists());

    // A directory moved away and a symlink to one outside planted in its
    // place: what goes through the directory the kernel holds stays in
    // it, wherever it is now.
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("f"), b"root's file").unwrap();
    let dir = File::open(m.p("bkt/d3")).unwrap();
    let held = open_at(&dir, "f", libc::O_RDONLY);
    fs::rename(m.backend("bkt/d3"), m.backend("bkt/d3.moved")).unwrap();
    std::os::unix::fs::symlink(outside.path(), m.backend("bkt/d3")).unwrap();
    let mut new = open_at(&dir, "new", libc::O_CREAT | libc::O_WRONLY);
    new.write_all(b"inside").unwrap();
    drop(new);
    // A re-encryption puts its new file by the object's name in its
    // directory.
    let v = CString::new("SM4").unwrap();
    let n = CString::new(SSE).unwrap();
    // SAFETY: a valid descriptor, C strings and length.
    let r = unsafe { libc::fsetxattr(held.as_raw_fd(), n.as_ptr(), v.as_ptr().cast(), 3, 0) };
    assert_eq!(r, 0, "fsetxattr: {}", std::io::Error::last_os_error());
    drop(held);
    assert_eq!(
        xattr_get(&m.p("bkt/d3.moved/f"), SSE).unwrap(),
        "SM4",
        "re-encrypted in place"
    );
    assert_eq!(read_all(&open_at(&dir, "f", libc::O_RDONLY)), b"d3 data");
    assert_eq!(fs::read(m.p("bkt/d3.moved/new")).unwrap(), b"inside");
    let left: Vec<_> = fs::read_dir(outside.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["f"], "a file was made outside");
    assert_eq!(fs::read(outside.path().join("f")).unwrap(), b"root's file");
    drop(dir);
    m.unmount();
}

#[test]
fn fallback_on_a_filesystem_without_file_handles() {
    let d = DataDir::uninit();
    let _overlay = Overlay::on(&d.data());
    let m = mount_with(d, |_| {});
    guarantees_hold(&m);
}

#[test]
fn fallback_in_a_daemon_without_cap_dac_read_search() {
    let m = mount_with(DataDir::uninit(), |c| {
        // SAFETY: prctl is async-signal-safe and touches no Rust state.
        unsafe {
            c.pre_exec(|| {
                // Dropped from the bounding set: root's exec then does not
                // give it (its inheritable set is empty).
                if libc::prctl(libc::PR_CAPBSET_DROP, CAP_DAC_READ_SEARCH, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let status = fs::read_to_string(format!("/proc/{}/status", daemon_pid(&m))).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(eff & (1 << CAP_DAC_READ_SEARCH), 0, "{status}");
    guarantees_hold(&m);
}

/// Every open with O_TRUNC of an existing object (a shell's `>`) and every
/// truncate to 0 failed with EOPNOTSUPP on a data directory whose
/// filesystem keeps no user xattrs (ramfs): a new upload removes the
/// object's encryption override, and removing an xattr there is not
/// supported. Such a filesystem holds no override to remove; setting one
/// is refused with a logged reason, and changes nothing.
#[test]
fn regression_overwrites_work_on_a_backend_without_user_xattrs() {
    let d = DataDir::uninit();
    let _ramfs = Ramfs::on(&d.data());
    let m = mount_with(d, |_| {});
    fs::create_dir(m.p("bkt")).unwrap();
    fs::write(m.p("bkt/plain"), b"one").unwrap();
    fs::write(m.p("bkt/plain"), b"two, longer").unwrap();
    assert_eq!(fs::read(m.p("bkt/plain")).unwrap(), b"two, longer");

    let st = Command::new("setfattr")
        .args(["-n", SSE, "-v", "AES256"])
        .arg(m.p("bkt"))
        .status()
        .unwrap();
    assert!(st.success());
    fs::write(m.p("bkt/enc"), b"three").unwrap();
    fs::write(m.p("bkt/enc"), b"four").unwrap();
    assert_eq!(fs::read(m.p("bkt/enc")).unwrap(), b"four");
    assert_eq!(xattr_get(&m.p("bkt/enc"), SSE), Ok("AES256".to_string()));
    OpenOptions::new()
        .write(true)
        .open(m.p("bkt/enc"))
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_eq!(fs::metadata(m.p("bkt/enc")).unwrap().len(), 0);
    fs::write(m.p("bkt/enc"), b"five").unwrap();
    assert_eq!(fs::read(m.p("bkt/enc")).unwrap(), b"five");

    // An object's own encryption needs an xattr: refused, said why, and
    // the object is as it was.
    let before = fs::read(m.backend("bkt/plain")).unwrap();
    let out = Command::new("setfattr")
        .args(["-n", SSE, "-v", "SM4"])
        .arg(m.p("bkt/plain"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not supported"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(m.backend("bkt/plain")).unwrap(), before);
    assert_eq!(fs::read(m.p("bkt/plain")).unwrap(), b"two, longer");
    let log = fs::read_to_string(m.backend(".ssefs/mount.log")).unwrap();
    assert!(
        log.contains("keeps no user xattrs") && log.contains("path=\"bkt/plain\""),
        "{log}"
    );
}
