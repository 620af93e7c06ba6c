//! Full disk: the data directory on a small ext4 loop filesystem (tmpfs
//! where loop devices are not available), filled through the mount. Writes
//! must fail with ENOSPC, nothing written before may be damaged, the
//! keystore must stay loadable, and once space is freed everything works.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::mount::{xattr_get, Mount};
use crate::util::{errno_of, seeded_bytes, DataDir};

const SSE: &str = "user.oss.server-side-encryption";
const DISK_MIB: u64 = 32;

/// A small filesystem mounted at a directory; unmounted on drop (after the
/// FUSE mount above it, which the test drops first).
struct SmallDisk {
    at: PathBuf,
    _img: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(at: &Path, mib: u64) -> SmallDisk {
        fs::create_dir_all(at).unwrap();
        let img_dir = tempfile::tempdir().unwrap();
        let img = img_dir.path().join("disk.img");
        File::create(&img).unwrap().set_len(mib << 20).unwrap();
        // -m 0: no blocks reserved for root (the daemon runs as root here
        // and would otherwise fill them too, later than a user would).
        let loop_ok = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&img)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(at)
                .status()
                .is_ok_and(|s| s.success());
        if !loop_ok {
            eprintln!("fullspace: no loop device; using tmpfs instead of ext4");
            let st = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                .arg(at)
                .status()
                .unwrap();
            assert!(st.success(), "cannot mount a small filesystem");
        }
        SmallDisk {
            at: at.to_path_buf(),
            _img: img_dir,
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // The daemon above may take a moment to exit and close its files.
        let umount = || {
            Command::new("umount")
                .arg(&self.at)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let ok = (0..50).any(|_| {
            umount() || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                false
            }
        });
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
        let _ = fs::remove_dir(&self.at);
        if let Some(parent) = self.at.parent() {
            let _ = fs::remove_dir_all(parent);
        }
    }
}

/// Writes `data` at `off` through a new handle.
fn write_at(p: &Path, off: u64, data: &[u8]) -> std::io::Result<()> {
    OpenOptions::new()
        .write(true)
        .open(p)?
        .write_all_at(data, off)
}

/// The files written before the disk fills, with what they must hold.
struct Earlier {
    files: Vec<(String, Vec<u8>, &'static str)>,
}

impl Earlier {
    fn check(&self, m: &Mount, when: &str) {
        for (name, data, alg) in &self.files {
            let got = fs::read(m.p(name)).unwrap_or_else(|e| panic!("{when}: read {name}: {e}"));
            assert!(
                got == *data,
                "{when}: {name} damaged (size {} vs {})",
                got.len(),
                data.len()
            );
            if !data.is_empty() {
                assert_eq!(m.getfattr(name, SSE).unwrap(), *alg, "{when}: {name}");
            }
        }
    }
}

fn keys(m: &Mount) -> usize {
    m.d.run(&["kms", "list-keys"]).ok().stdout.lines().count()
}

fn masters(m: &Mount) -> usize {
    m.d.run(&["kms", "list-master"]).ok().stdout.lines().count()
}

/// Appends to `path` until the disk is full, in ever smaller writes (a
/// write that fails gives back the space it took), down to single bytes;
/// returns the bytes `path` must hold.
fn fill_up(path: &Path, mut data: Vec<u8>) -> Vec<u8> {
    let block = seeded_bytes(7, 1 << 20);
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    for size in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let err = loop {
            match f.write(&block[..size]) {
                Ok(n) => data.extend_from_slice(&block[..n]),
                Err(e) => break e,
            }
            assert!(data.len() < 1 << 30, "the disk never filled");
        };
        assert_eq!(errno_of(&err), libc::ENOSPC, "filling: {err}");
    }
    data
}

/// Waits (up to 10 s) until the filesystem holding `dir` has `bytes` free.
/// An unlinked file's blocks come back only when the daemon lets go of its
/// inode, which it does at the kernel's FORGET: asynchronous, and later
/// still when other tests keep the machine busy.
fn wait_for_free_space(dir: &Path, bytes: u64) {
    let t = std::time::Instant::now();
    loop {
        let st = nix::sys::statvfs::statvfs(dir).unwrap();
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        if free >= bytes {
            return;
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(10),
            "only {free} bytes free 10 s after the filler was removed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn expect_enospc(what: &str, r: std::io::Result<()>) {
    match r {
        Err(e) => assert_eq!(errno_of(&e), libc::ENOSPC, "{what}: {e}"),
        Ok(()) => panic!("{what}: succeeded on a full disk"),
    }
}

#[test]
fn a_full_disk_fails_writes_with_enospc_and_damages_nothing() {
    let d = DataDir::uninit();
    let disk = SmallDisk::mount(&d.data(), DISK_MIB);
    let m = Mount::on(d, &[]);
    fs::create_dir(m.p("full")).unwrap();
    m.setfattr("full", SSE, "AES256").unwrap();
    fs::create_dir(m.p("full-kms")).unwrap();
    m.setfattr("full-kms", SSE, "KMS").unwrap();

    // Earlier files: each encryption, a size ending on a chunk boundary
    // (an append re-seals its last chunk), one inside a chunk, an empty one.
    let mut earlier = Earlier { files: Vec::new() };
    for (name, len, alg) in [
        ("full/a", 100_000, "AES256"),
        ("full/edge", 32_768, "AES256"),
        ("full/c", 70_000, "SM4"),
        ("full/e", 0, "AES256"),
        ("full-kms/b", 50_000, "KMS"),
    ] {
        let data = seeded_bytes(len as u64, len);
        let mut f = File::create(m.p(name)).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        if alg == "SM4" {
            m.setfattr(name, SSE, "SM4").unwrap();
        }
        earlier.files.push((name.to_owned(), data, alg));
    }
    earlier.check(&m, "before filling");
    let (keys0, masters0) = (keys(&m), masters(&m));

    // Fill the disk through the mount.
    File::create(m.p("full/filler")).unwrap();
    let filler = fill_up(&m.p("full/filler"), Vec::new());
    eprintln!("fullspace: full after {} bytes", filler.len());
    earlier
        .files
        .push(("full/filler".to_owned(), filler, "AES256"));

    // Every kind of write fails with ENOSPC and changes nothing.
    let add = seeded_bytes(99, 200_000);
    let append = |name: &str| {
        OpenOptions::new()
            .append(true)
            .open(m.p(name))
            .and_then(|mut f| f.write_all(&add))
    };
    expect_enospc("append inside a chunk", append("full/a"));
    expect_enospc("append at a chunk boundary", append("full/edge"));
    expect_enospc("SM4 append", append("full/c"));
    expect_enospc("KMS append", append("full-kms/b"));
    expect_enospc(
        "write past the end",
        write_at(&m.p("full/a"), 300_000, &add),
    );
    expect_enospc("write to an empty file", write_at(&m.p("full/e"), 0, &add));
    expect_enospc(
        "create",
        File::create(m.p("full/new")).and_then(|mut f| f.write_all(&add)),
    );
    if let Ok(md) = fs::metadata(m.p("full/new")) {
        // Created before the write failed: an empty, readable object.
        assert_eq!(md.len(), 0);
        assert_eq!(fs::read(m.p("full/new")).unwrap(), b"");
        fs::remove_file(m.p("full/new")).unwrap();
    }
    // Re-encryption and a rule change need a temp file: refused, unchanged.
    assert_eq!(m.setfattr("full/a", SSE, "SM4"), Err(libc::ENOSPC));
    assert_eq!(m.setfattr("full", SSE, "SM4"), Err(libc::ENOSPC));
    assert_eq!(m.getfattr("full", SSE).unwrap(), "AES256");
    // The keystore cannot grow, and stays loadable.
    let r = m.d.run(&["kms", "create-key"]);
    assert_ne!(r.status, 0, "create-key succeeded on a full disk");
    assert!(r.stderr.contains("No space left"), "{}", r.stderr);
    assert_ne!(m.d.run(&["kms", "rotate-master"]).status, 0);
    assert_eq!((keys(&m), masters(&m)), (keys0, masters0));
    earlier.check(&m, "after the failed writes");
    m.d.run(&["verify"]).ok();

    // A remount on the full disk loads the keystore and serves everything.
    m.unmount();
    m.mount(&[]);
    earlier.check(&m, "remounted on the full disk");

    // Space freed: everything works again.
    fs::remove_file(m.p("full/filler")).unwrap();
    earlier.files.retain(|(n, _, _)| n != "full/filler");
    wait_for_free_space(&m.d.data(), 1 << 20);
    for (name, data, _) in &mut earlier.files {
        let mut f = OpenOptions::new().append(true).open(m.p(name)).unwrap();
        f.write_all(&add).unwrap();
        f.sync_all().unwrap();
        data.extend_from_slice(&add);
    }
    let new = seeded_bytes(5, 300_000);
    fs::write(m.p("full/new"), &new).unwrap();
    earlier.files.push(("full/new".to_owned(), new, "AES256"));
    m.setfattr("full/a", SSE, "SM4").unwrap();
    earlier.files[0].2 = "SM4";
    m.setfattr("full", SSE, "SM4").unwrap();
    m.d.run(&["kms", "create-key"]).ok();
    m.d.run(&["kms", "rotate-master"]).ok();
    assert_eq!((keys(&m), masters(&m)), (keys0 + 1, masters0 + 1));
    earlier.check(&m, "after freeing space");
    m.unmount();
    m.mount(&[]);
    earlier.check(&m, "remounted after freeing space");
    m.d.run(&["verify"]).ok();
    assert_eq!(xattr_get(&m.p("full"), SSE).unwrap(), "SM4");
    m.unmount();
    drop(m);
    drop(disk);
}

/// Found by the full-disk test: a write that ran out of space part way
/// returned ENOSPC but left the backend file longer, its last slot torn,
/// and the chunks it had sealed in the cache: reads returned the failed
/// write's data until a remount, then failed with EIO.
#[test]
fn regression_a_write_that_runs_out_of_space_leaves_the_object_as_it_was() {
    let d = DataDir::uninit();
    let disk = SmallDisk::mount(&d.data(), 16);
    let m = Mount::on(d, &[]);
    fs::create_dir(m.p("bkt")).unwrap();
    m.setfattr("bkt", SSE, "AES256").unwrap();
    // A file that ends inside a chunk and one that ends on a boundary.
    let mut files = Vec::new();
    for (name, len) in [("bkt/inside", 20_000usize), ("bkt/boundary", 16_384)] {
        let data = seeded_bytes(len as u64, len);
        fs::write(m.p(name), &data).unwrap();
        files.push((name, data));
    }
    // Writes of 1 MiB until the disk is full: the last one fails part way.
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.p("bkt/inside"))
        .unwrap();
    let block = seeded_bytes(8, 1 << 20);
    let mut data = files[0].1.clone();
    let err = loop {
        match f.write(&block) {
            Ok(n) => data.extend_from_slice(&block[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(errno_of(&err), libc::ENOSPC);
    drop(f);
    let got = fs::read(m.p("bkt/inside")).unwrap();
    assert!(got == data, "{} bytes, not {}", got.len(), data.len());
    // The space the failed write took is free again: take it too.
    files[0].1 = fill_up(&m.p("bkt/inside"), data);
    let tail = seeded_bytes(9, 100_000);
    let r = OpenOptions::new()
        .append(true)
        .open(m.p("bkt/boundary"))
        .and_then(|mut f| f.write_all(&tail));
    expect_enospc("append at a chunk boundary", r);
    for pass in ["now", "after a remount"] {
        for (name, data) in &files {
            let got = fs::read(m.p(name)).unwrap_or_else(|e| panic!("{pass}: {name}: {e}"));
            assert!(
                got == *data,
                "{pass}: {name} has {} bytes, not {}",
                got.len(),
                data.len()
            );
        }
        m.unmount();
        m.mount(&[]);
    }
    m.d.run(&["verify"]).ok();
    m.unmount();
    drop(m);
    drop(disk);
}

/// Found by the full-disk test: the daemon logs to DATA_DIR/.ssefs/mount.log;
/// with the disk full, a log line failed, tracing reported the failure on
/// the same stderr with eprintln!, which panicked: the daemon died at its
/// first log line (a remount on a full disk never came up).
#[test]
fn regression_a_full_disk_does_not_kill_the_daemon_through_its_log() {
    let d = DataDir::uninit();
    let disk = SmallDisk::mount(&d.data(), 16);
    let m = Mount::on(d, &[]);
    fs::create_dir(m.p("bkt")).unwrap();
    fs::write(m.p("bkt/f"), b"kept").unwrap();
    m.unmount();
    // Fill the disk from outside, the log's last block included.
    let mut log = OpenOptions::new()
        .append(true)
        .open(m.d.data().join(".ssefs/mount.log"))
        .unwrap();
    let line = [[b'.'; 63].as_slice(), b"\n"].concat();
    for size in [1 << 20, 4096, 64, 1] {
        let chunk: Vec<u8> = line
            .iter()
            .cycle()
            .skip(64 - size % 64)
            .take(size)
            .copied()
            .collect();
        while log.write_all(&chunk).is_ok() {}
    }
    // The mount starts (it logs "mounted") and logs a refused request.
    m.mount(&[]);
    assert_eq!(fs::read(m.p("bkt/f")).unwrap(), b"kept");
    assert_eq!(m.setfattr("bkt", SSE, "DES"), Err(libc::EINVAL));
    assert_eq!(fs::read(m.p("bkt/f")).unwrap(), b"kept");
    m.unmount();
    drop(m);
    drop(disk);
}
