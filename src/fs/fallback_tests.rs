//! The descriptor-per-inode fallback of `inodes`: where the data directory
//! is on a filesystem without file handles, or the daemon lacks
//! CAP_DAC_READ_SEARCH, every node holds its own descriptor. Forced here
//! with `FsOptions::file_handles` (handles work wherever these tests run),
//! the guarantees that handles were made to keep are checked without them:
//! hard links share an inode, renames by another process are followed, a
//! file deleted while open keeps working, and a symlink planted in the
//! backend is never followed. (tests/integration/fallback.rs runs a real
//! mount in this mode.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::inodes::Backing;
use super::tests::{env_with_handles, errno_of, fs_with, look, os, root, Env};
use super::xattrs::XA_SSE;
use super::*;

/// An `Fs` in the fallback mode, checked to be in it.
fn fallback() -> Env {
    let e = env_with_handles(false);
    assert!(e.fs.handle_root.is_none(), "file handles in use");
    e
}

/// Whether every known node holds its own descriptor, none being named by
/// a handle (whose descriptors would sit in the cache).
fn by_descriptor(fs: &Fs) -> bool {
    let nodes = lock(&fs.nodes);
    nodes.values().all(|n| matches!(n.backing, Backing::Fd(_))) && fs.fds.len() == 0
}

/// The path of `rel` in bucket `bkt` on the backend.
fn backend(e: &Env, rel: &str) -> PathBuf {
    e.engine.data_dir().join("bkt").join(rel)
}

fn mkdir(e: &Env, parent: u64, name: &str) -> u64 {
    e.fs.mkdir(parent, os(name), 0o755, 0, 0).unwrap().ino
}

/// Writes `data` at `off` through a new handle of `ino`.
fn write_at(e: &Env, ino: u64, off: u64, data: &[u8]) {
    let fh = e.fs.open(ino, libc::O_WRONLY, &root()).unwrap();
    e.fs.write(ino, fh, off, data, false, &root()).unwrap();
    e.fs.release(ino, fh);
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn fallback_hard_links_share_an_inode() {
    let e = fallback();
    let b = e.bucket("bkt");
    let d = mkdir(&e, b, "d");
    let a = e.file(b, "a", 0o644, &root(), b"one");
    let l = e.fs.link(a, d, os("l")).unwrap();
    assert_eq!((l.ino, l.nlink), (a, 2));
    assert_eq!(look(&e.fs, &["bkt", "d", "l"]), a);
    write_at(&e, a, 0, b"two");
    // Another Fs (a remount) finds one inode under both names too.
    let again = fs_with(&e.engine, false, false, false);
    assert_eq!(
        look(&again, &["bkt", "a"]),
        look(&again, &["bkt", "d", "l"])
    );
    // With one name gone, the other holds the object.
    e.fs.unlink(b, os("a")).unwrap();
    assert_eq!(e.fs.getattr(a).unwrap().nlink, 1);
    assert_eq!(look(&e.fs, &["bkt", "d", "l"]), a);
    assert_eq!(e.content(a), b"two");
    assert!(by_descriptor(&e.fs) && by_descriptor(&again));
}

#[test]
fn fallback_follows_a_rename_made_on_the_backend() {
    let e = fallback();
    let b = e.bucket("bkt");
    let d = mkdir(&e, b, "d");
    let f = e.file(d, "f", 0o644, &root(), b"data");
    // Another process renames the directory, then the file in it.
    std::fs::rename(backend(&e, "d"), backend(&e, "moved")).unwrap();
    std::fs::rename(backend(&e, "moved/f"), backend(&e, "moved/g")).unwrap();
    // The directory's node still reaches the directory: lookups and
    // creates in it.
    assert_eq!(e.fs.lookup(d, os("g")).unwrap().ino, f);
    assert_eq!(errno_of(e.fs.lookup(d, os("f"))), libc::ENOENT);
    let n = e.file(d, "new", 0o644, &root(), b"new");
    assert!(backend(&e, "moved/new").is_file());
    assert_eq!(e.content(n), b"new");
    // The file's node still reads and writes the file.
    assert_eq!(e.content(f), b"data");
    write_at(&e, f, 4, b"+more");
    assert_eq!(e.fs.getattr(f).unwrap().size, 9);
    // And re-encrypts it in place, under the name it has now.
    e.fs.setxattr(f, os(XA_SSE), b"SM4", 0, &root()).unwrap();
    assert_eq!(e.content(f), b"data+more");
    assert_eq!(e.fs.getxattr(f, os(XA_SSE), &root()).unwrap(), b"SM4");
    assert_eq!(look(&e.fs, &["bkt", "moved", "g"]), f);
    assert!(by_descriptor(&e.fs));
}

#[test]
fn fallback_a_file_deleted_while_open_still_reads_and_writes() {
    let e = fallback();
    let b = e.bucket("bkt");
    let f = e.file(b, "f", 0o644, &root(), b"before");
    let g = e.file(b, "g", 0o644, &root(), b"gee");
    let (fh, gh) = (
        e.fs.open(f, libc::O_RDWR, &root()).unwrap(),
        e.fs.open(g, libc::O_RDWR, &root()).unwrap(),
    );
    // One through the mount, one by another process on the backend.
    e.fs.unlink(b, os("f")).unwrap();
    std::fs::remove_file(backend(&e, "g")).unwrap();
    assert_eq!(errno_of(e.fs.lookup(b, os("f"))), libc::ENOENT);
    for (ino, h, old) in [(f, fh, &b"before"[..]), (g, gh, b"gee")] {
        e.fs.write(ino, h, old.len() as u64, b" after", false, &root())
            .unwrap();
        let want = [old, b" after"].concat();
        assert_eq!(e.fs.read(h, 0, 100).unwrap(), want);
        let a = e.fs.getattr(ino).unwrap();
        assert_eq!((a.nlink, a.size), (0, want.len() as u64));
    }
    // Another handle of the deleted file shares its open object.
    let again = e.fs.open(f, libc::O_RDONLY, &root()).unwrap();
    assert_eq!(e.fs.read(again, 0, 100).unwrap(), b"before after");
    assert!(by_descriptor(&e.fs));
    for (ino, h) in [(f, fh), (f, again), (g, gh)] {
        e.fs.release(ino, h);
    }
}

#[test]
fn fallback_does_not_follow_a_symlink_planted_in_the_backend() {
    let e = fallback();
    let b = e.bucket("bkt");
    let d = mkdir(&e, b, "d");
    let f = e.file(d, "f", 0o644, &root(), b"secret");
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("f"), b"root's file").unwrap();
    let before = files(outside.path());
    // The directory is moved away and a symlink to a directory outside put
    // in its place.
    std::fs::rename(backend(&e, "d"), backend(&e, "d.moved")).unwrap();
    std::os::unix::fs::symlink(outside.path(), backend(&e, "d")).unwrap();

    // A re-encryption, a create and a link through the known directory go
    // into it, wherever it is now.
    e.fs.setxattr(f, os(XA_SSE), b"SM4", 0, &root()).unwrap();
    let n = e.file(d, "new", 0o644, &root(), b"new");
    e.fs.link(n, d, os("l")).unwrap();
    for name in ["f", "new", "l"] {
        assert!(backend(&e, &format!("d.moved/{name}")).is_file(), "{name}");
    }
    assert_eq!(e.content(f), b"secret");
    assert_eq!(e.fs.getxattr(f, os(XA_SSE), &root()).unwrap(), b"SM4");

    // Looked up anew, the name is the symlink, and nothing below it is
    // reached.
    let s = e.fs.lookup(b, os("d")).unwrap();
    assert_eq!(s.kind, Kind::Symlink);
    assert_eq!(errno_of(e.fs.lookup(s.ino, os("f"))), libc::ENOTDIR);
    let made =
        e.fs.create_object(s.ino, os("x"), 0o644, libc::O_RDWR, &root());
    assert_eq!(errno_of(made), libc::ENOTDIR);
    assert_eq!(
        errno_of(e.fs.mkdir(s.ino, os("x"), 0o755, 0, 0)),
        libc::ENOTDIR
    );

    // A symlink planted where an object would be is neither opened nor
    // given attributes or encryption.
    std::os::unix::fs::symlink(outside.path().join("f"), backend(&e, "d.moved/p")).unwrap();
    let p = e.fs.lookup(d, os("p")).unwrap();
    assert_eq!(p.kind, Kind::Symlink);
    assert_ne!(errno_of(e.fs.open(p.ino, libc::O_RDWR, &root())), 0);
    assert_ne!(
        errno_of(e.fs.setxattr(p.ino, os("user.x"), b"v", 0, &root())),
        0
    );
    assert_ne!(
        errno_of(e.fs.setxattr(p.ino, os(XA_SSE), b"AES256", 0, &root())),
        0
    );
    assert_eq!(files(outside.path()), before, "a file outside changed");
    assert!(by_descriptor(&e.fs));
}
