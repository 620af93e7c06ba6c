//! Trees with more files than the daemon may hold descriptors (issue 13):
//! the daemon runs under a small RLIMIT_NOFILE, so its descriptor cache is
//! far smaller than the tree and descriptors are evicted and re-opened from
//! file handles all along.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::mount::{daemon_pid, xattr_set, Mount};
use crate::util::{DataDir, Run};

const SSE: &str = "user.oss.server-side-encryption";

/// Mounts a fresh data directory with the daemon's RLIMIT_NOFILE at
/// `nofile` (soft and hard, so the daemon cannot raise it).
fn mount_with_fd_limit(nofile: u64, opts: &[&str]) -> Mount {
    let d = DataDir::uninit();
    let mnt = d.path("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let mut c = d.cmd();
    // The trimmer's debug lines count the inodes the daemon knows.
    c.env("RUST_LOG", "info,ssefs::fuse=debug");
    c.arg("mount").arg(&mnt);
    for o in opts {
        c.args(["-o", o]);
    }
    // SAFETY: setrlimit is async-signal-safe and touches no Rust state.
    unsafe {
        c.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Run::from(c.output().unwrap()).ok();
    let m = Mount { d, mnt };
    let limits = fs::read_to_string(format!("/proc/{}/limits", daemon_pid(&m))).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(
        line.split_whitespace().nth(3) == Some(&nofile.to_string()),
        "daemon limit: {line}"
    );
    m
}

fn daemon_fds(m: &Mount) -> usize {
    fs::read_dir(format!("/proc/{}/fd", daemon_pid(m)))
        .unwrap()
        .count()
}

fn drop_caches() {
    Command::new("sync").status().unwrap();
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
}

fn content(d: usize, i: usize) -> Vec<u8> {
    format!("dir {d} file {i}\n").repeat(1 + i % 7).into_bytes()
}

/// `dirs` directories of `files` objects each under bkt/, through the mount.
fn make_tree(m: &Mount, dirs: usize, files: usize) {
    fs::create_dir(m.p("bkt")).unwrap();
    xattr_set(&m.p("bkt"), SSE, b"AES256").unwrap();
    for d in 0..dirs {
        fs::create_dir(m.p(&format!("bkt/d{d}"))).unwrap();
        for i in 0..files {
            fs::write(m.p(&format!("bkt/d{d}/f{i}")), content(d, i)).unwrap();
        }
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The bug: `find` over a bucket of 100k files died with EMFILE once the
/// daemon held as many descriptors as its limit allowed, one per inode the
/// kernel knew. Here 4,000 files and a limit of 256.
#[test]
fn find_over_more_files_than_descriptors() {
    let m = mount_with_fd_limit(256, &[]);
    let (dirs, files) = (20, 200);
    make_tree(&m, dirs, files);
    // Every inode created is known to the kernel still: without file
    // handles the daemon would hold 4,000 descriptors now.
    let found = run_ok(Command::new("find").arg(m.p("bkt")).args(["-type", "f"]));
    assert_eq!(found.lines().count(), dirs * files);
    let listing = run_ok(Command::new("ls").arg("-lR").arg(m.p("bkt")));
    assert_eq!(
        listing.lines().filter(|l| l.starts_with('-')).count(),
        dirs * files
    );
    run_ok(Command::new("du").arg("-s").arg(m.p("bkt")));
    for d in 0..dirs {
        for i in 0..files {
            let p = m.p(&format!("bkt/d{d}/f{i}"));
            assert_eq!(fs::read(&p).unwrap(), content(d, i), "{}", p.display());
            assert_eq!(fs::metadata(&p).unwrap().len(), content(d, i).len() as u64);
        }
    }
    let held = daemon_fds(&m);
    assert!(held < 128, "the daemon holds {held} descriptors");
    // And again after the kernel dropped what it cached.
    drop_caches();
    let found = run_ok(Command::new("find").arg(m.p("bkt")).args(["-type", "f"]));
    assert_eq!(found.lines().count(), dirs * files);
    run_ok(Command::new("rm").arg("-rf").arg(m.p("bkt/d0")));
    assert!(!m.p("bkt/d0").exists());
    assert!(!m.backend("bkt/d0").exists());
}

/// The guarantees of the descriptor-per-inode design, kept while
/// descriptors are evicted: hard links share an inode, renames behind the
/// mount are followed, a file unlinked while open keeps working, and an
/// object re-encrypted (a new backend inode under the old FUSE one) stays
/// the same file.
#[test]
fn links_renames_and_open_unlinked_files_survive_descriptor_eviction() {
    let m = mount_with_fd_limit(128, &[]);
    let (dirs, files) = (10, 300);
    make_tree(&m, dirs, files);
    // Walks two directories left alone below, of more files than the
    // cache holds: every descriptor it held is evicted.
    let churn = || {
        for d in dirs - 2..dirs {
            for i in 0..files {
                fs::metadata(m.p(&format!("bkt/d{d}/f{i}"))).unwrap();
            }
        }
    };

    // Hard links: one inode, whose bytes change through either name.
    fs::hard_link(m.p("bkt/d1/f1"), m.p("bkt/d0/link")).unwrap();
    churn();
    let (a, b) = (
        fs::metadata(m.p("bkt/d1/f1")).unwrap(),
        fs::metadata(m.p("bkt/d0/link")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    fs::write(m.p("bkt/d0/link"), b"through the link").unwrap();
    churn();
    assert_eq!(fs::read(m.p("bkt/d1/f1")).unwrap(), b"through the link");

    // A directory renamed on the backend by another process: lookups in
    // it through a descriptor the kernel holds still find its entries.
    let dir = File::open(m.p("bkt/d2")).unwrap();
    fs::rename(m.backend("bkt/d2"), m.backend("bkt/moved")).unwrap();
    churn();
    let name = CString::new("f5").unwrap();
    // SAFETY: a valid descriptor and C string; the result is checked.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0, "openat: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor we own.
    let mut f5 = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut got = Vec::new();
    f5.read_to_end(&mut got).unwrap();
    assert_eq!(got, content(2, 5));
    assert_eq!(fs::read(m.p("bkt/moved/f6")).unwrap(), content(2, 6));
    // Renamed through the mount while its descriptor is evicted.
    fs::rename(m.p("bkt/d3/f0"), m.p("bkt/d4/renamed")).unwrap();
    churn();
    assert_eq!(fs::read(m.p("bkt/d4/renamed")).unwrap(), content(3, 0));

    // Unlinked while open: reads, writes and fstat go on.
    let mut open = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("bkt/d5/f9"))
        .unwrap();
    let ino = open.metadata().unwrap().ino();
    fs::remove_file(m.p("bkt/d5/f9")).unwrap();
    churn();
    open.seek(SeekFrom::End(0)).unwrap();
    open.write_all(b"after unlink").unwrap();
    open.seek(SeekFrom::Start(0)).unwrap();
    let mut all = Vec::new();
    open.read_to_end(&mut all).unwrap();
    let mut want = content(5, 9);
    want.extend_from_slice(b"after unlink");
    assert_eq!(all, want);
    let st = open.metadata().unwrap();
    assert_eq!(
        (st.ino(), st.nlink(), st.len()),
        (ino, 0, want.len() as u64)
    );
    drop(open);
    assert!(!m.p("bkt/d5/f9").exists());

    // Re-encrypted by a setfattr: a new backend file, the same FUSE inode.
    let before = fs::metadata(m.p("bkt/d6/f3")).unwrap().ino();
    xattr_set(&m.p("bkt/d6/f3"), SSE, b"SM4").unwrap();
    churn();
    let after = fs::metadata(m.p("bkt/d6/f3")).unwrap();
    assert_eq!(after.ino(), before);
    assert_eq!(fs::read(m.p("bkt/d6/f3")).unwrap(), content(6, 3));

    // Unlinks of evicted inodes free their space on the backend.
    run_ok(Command::new("rm").arg("-rf").arg(m.p("bkt/d7")));
    assert!(!m.backend("bkt/d7").exists());
    let held = daemon_fds(&m);
    assert!(held < 96, "the daemon holds {held} descriptors");
}

/// Past `max_inodes` the daemon asks the kernel to forget the least
/// recently used inodes; walks still see every file, with their bytes.
#[test]
fn the_inode_table_stays_within_max_inodes() {
    let m = mount_with_fd_limit(256, &["max_inodes=300"]);
    let (dirs, files) = (8, 500);
    make_tree(&m, dirs, files);
    for pass in 0..2 {
        let found = run_ok(Command::new("find").arg(m.p("bkt")).args(["-type", "f"]));
        assert_eq!(found.lines().count(), dirs * files, "pass {pass}");
        for d in 0..dirs {
            for i in (0..files).step_by(7) {
                let p = m.p(&format!("bkt/d{d}/f{i}"));
                assert_eq!(fs::read(&p).unwrap(), content(d, i), "{}", p.display());
            }
        }
    }
    let log = fs::read_to_string(m.backend(".ssefs/mount.log")).unwrap();
    assert!(
        log.contains("asking the kernel to forget the least recently used"),
        "{log}"
    );
    // The kernel did forget: the daemon saw the table over its limit many
    // times, but never near the 4,000 files of the tree (it would hold all
    // of them if the kernel kept its entries). A walk outruns the trimmer
    // by up to a directory or two of READDIRPLUS entries between sweeps.
    let known: Vec<usize> = log
        .lines()
        .filter(|l| l.contains("trimming inodes"))
        .filter_map(|l| {
            l.split("known=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(known.len() > 2, "{log}");
    let most = known.iter().max().copied().unwrap_or(0);
    assert!(
        most < 3000,
        "the daemon knew {most} inodes at once: {known:?}"
    );
    // A hard link made now still finds its inode.
    fs::hard_link(m.p("bkt/d0/f0"), m.p("bkt/d1/again")).unwrap();
    assert_eq!(
        fs::metadata(m.p("bkt/d1/again")).unwrap().ino(),
        fs::metadata(m.p("bkt/d0/f0")).unwrap().ino()
    );
}
