//! `StoreFs` without a mount, over object_store's in-memory store: the
//! same code the store mount runs (tests/integration/store_mount.rs runs
//! it on Garage through real mounts).

use std::ffi::OsStr;
use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::ObjectStore;

use super::*;
use crate::backend::Backend;
use crate::fs::FsOps;
use crate::kms::RootKeySource;

struct Fx {
    _dir: tempfile::TempDir,
    fs: StoreFs,
    /// The same store, as a second host would see it.
    store: Arc<S3Backend>,
}

fn root() -> Principal {
    Principal::of_process(0, 0, 0)
}

fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let store = Arc::new(
        S3Backend::with_stores(
            vec![mem],
            "pre",
            ("s3://mem".into(), "s3://mem/pre at memory".into()),
            &dir.path().join("state"),
        )
        .unwrap(),
    );
    let key = RootKeySource::File(dir.path().join("root.key"));
    Engine::init_store(&*store, &key).unwrap();
    let backend: Arc<dyn Backend> = store.clone();
    let engine = Arc::new(Engine::open_store(backend, &key).unwrap());
    engine
        .create_bucket(&BucketName::parse("bkt").unwrap())
        .unwrap();
    let fs = StoreFs::new(
        engine,
        store.clone(),
        StoreOptions {
            // Nothing trusted: every step sees the store as it is.
            meta_ttl: Duration::ZERO,
            read_only: false,
        },
    );
    Fx {
        _dir: dir,
        fs,
        store,
    }
}

impl Fx {
    /// The inode of `path` (from the root), looked up step by step.
    fn ino(&self, path: &str) -> u64 {
        let mut ino = ROOT_INO;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self.fs.lookup(ino, OsStr::new(part)).unwrap().ino;
        }
        ino
    }

    fn write_file(&self, dir: &str, name: &str, data: &[u8]) -> u64 {
        let p = root();
        let parent = self.ino(dir);
        let (fh, a) = self
            .fs
            .create_object(parent, OsStr::new(name), 0o644, libc::O_RDWR, &p)
            .unwrap();
        self.fs.write(a.ino, fh, 0, data, false, &p).unwrap();
        self.fs.flush(a.ino, fh).unwrap();
        self.fs.release(a.ino, fh);
        a.ino
    }

    fn read(&self, path: &str) -> Vec<u8> {
        let ino = self.ino(path);
        let fh = self.fs.open(ino, libc::O_RDONLY, &root()).unwrap();
        let data = self.fs.read_with(fh, 0, 1 << 20, |d| d.to_vec()).unwrap();
        self.fs.release(ino, fh);
        data
    }

    fn bkt(&self) -> BucketName {
        BucketName::parse("bkt").unwrap()
    }
}

#[test]
fn a_file_written_and_closed_is_on_the_store_and_reads_back() {
    let f = fx();
    f.write_file("bkt", "a", b"hello store");
    assert_eq!(f.read("bkt/a"), b"hello store");
    // On the store itself, as an object with its record.
    let st = f.store.stat_key(&f.bkt(), "a").unwrap().unwrap();
    assert!(matches!(st.shape, Shape::Object(Some(_))));
    assert!(st.len > b"hello store".len() as u64);
}

#[test]
fn directories_and_symlinks_are_records_and_list_as_such() {
    let f = fx();
    let b = f.ino("bkt");
    let d = f.fs.mkdir(b, OsStr::new("d"), 0o750, 7, 8).unwrap();
    assert_eq!((d.perm, d.uid, d.gid), (0o750, 7, 8));
    f.fs.symlink(b, OsStr::new("l"), std::path::Path::new("d/x"), 0, 0)
        .unwrap();
    f.write_file("bkt/d", "x", b"1");
    let fh = f.fs.opendir(b).unwrap();
    let mut seen = Vec::new();
    f.fs.readdir(fh, 0, |_, _, k, n| {
        seen.push((n.to_string_lossy().into_owned(), k));
        false
    })
    .unwrap();
    f.fs.releasedir(fh);
    assert_eq!(
        seen,
        vec![
            (".".into(), Kind::Dir),
            ("..".into(), Kind::Dir),
            ("d".into(), Kind::Dir),
            ("l".into(), Kind::Symlink),
        ]
    );
    let l = f.ino("bkt/l");
    assert_eq!(f.fs.readlink(l).unwrap(), b"d/x");
    // rmdir of a directory with something in it is refused.
    let e = f.fs.rmdir(b, OsStr::new("d")).unwrap_err();
    assert_eq!(e.errno(), libc::ENOTEMPTY);
}

#[test]
fn link_and_mknod_are_eperm() {
    let f = fx();
    let a = f.write_file("bkt", "a", b"x");
    let b = f.ino("bkt");
    assert_eq!(
        f.fs.link(a, b, OsStr::new("b")).unwrap_err().errno(),
        libc::EPERM
    );
    let e =
        f.fs.mknod(b, OsStr::new("fifo"), libc::S_IFIFO | 0o644, 0, &root())
            .unwrap_err();
    assert_eq!(e.errno(), libc::EPERM);
}

#[test]
fn a_chmod_through_an_open_handle_goes_with_a_rename_before_release() {
    // rsync: fchmod on a read-only descriptor, close (RELEASE comes later,
    // asynchronously), rename. The mode changed in the open copy must
    // end up on the new name, and nothing under the old one.
    let f = fx();
    let p = root();
    f.write_file("bkt", ".tmp", b"data");
    let ino = f.ino("bkt/.tmp");
    let fh = f.fs.open(ino, libc::O_RDONLY, &p).unwrap();
    let ch = AttrChanges {
        mode: Some(0o640),
        ..AttrChanges::default()
    };
    f.fs.setattr(ino, &ch, &p, None).unwrap();
    let b = f.ino("bkt");
    f.fs.rename(b, OsStr::new(".tmp"), b, OsStr::new("final"), 0)
        .unwrap();
    f.fs.release(ino, fh);
    let st = f.store.stat_key(&f.bkt(), "final").unwrap().unwrap();
    assert_eq!(st.meta.mode, Some(0o640));
    assert!(f.store.stat_key(&f.bkt(), ".tmp").unwrap().is_none());
    assert_eq!(f.read("bkt/final"), b"data");
}

#[test]
fn an_unlinked_open_file_is_never_uploaded_again() {
    let f = fx();
    let p = root();
    let a = f.write_file("bkt", "a", b"first");
    let fh = f.fs.open(a, libc::O_RDWR, &p).unwrap();
    let b = f.ino("bkt");
    f.fs.unlink(b, OsStr::new("a")).unwrap();
    f.fs.write(a, fh, 0, b"again", false, &p).unwrap();
    // Still readable through the handle, shown with no links.
    assert_eq!(f.fs.read_with(fh, 0, 16, |d| d.to_vec()).unwrap(), b"again");
    assert_eq!(f.fs.getattr(a).unwrap().nlink, 0);
    f.fs.flush(a, fh).unwrap();
    f.fs.release(a, fh);
    assert!(f.store.stat_key(&f.bkt(), "a").unwrap().is_none());
}

#[test]
fn a_directory_rename_moves_everything_below_it() {
    let f = fx();
    let b = f.ino("bkt");
    let d = f.fs.mkdir(b, OsStr::new("d"), 0o755, 0, 0).unwrap();
    f.fs.mkdir(d.ino, OsStr::new("e"), 0o700, 0, 0).unwrap();
    f.write_file("bkt/d", "x", b"x");
    f.write_file("bkt/d/e", "y", b"y");
    f.fs.rename(b, OsStr::new("d"), b, OsStr::new("n"), 0)
        .unwrap();
    assert_eq!(f.read("bkt/n/x"), b"x");
    assert_eq!(f.read("bkt/n/e/y"), b"y");
    assert_eq!(f.fs.getattr(f.ino("bkt/n/e")).unwrap().perm, 0o700);
    assert!(f.store.list_dir(&f.bkt(), "d").unwrap().is_empty());
    assert_eq!(
        f.fs.lookup(b, OsStr::new("d")).unwrap_err().errno(),
        libc::ENOENT
    );
}

/// The one directory in `d` (the journal of the one store used).
fn only_dir(d: &std::path::Path) -> std::path::PathBuf {
    let mut v: Vec<_> = std::fs::read_dir(d).unwrap().flatten().collect();
    assert_eq!(v.len(), 1, "{d:?}");
    v.remove(0).path()
}

#[test]
fn unsent_changes_are_journaled_until_uploaded() {
    let f = fx();
    let p = root();
    let b = f.ino("bkt");
    let journal = only_dir(&f._dir.path().join("state/dirty"));
    let entries = || std::fs::read_dir(&journal).unwrap().count();
    let (fh, a) =
        f.fs.create_object(b, OsStr::new("j"), 0o644, libc::O_RDWR, &p)
            .unwrap();
    f.fs.write(a.ino, fh, 0, b"unsent", false, &p).unwrap();
    let name = format!("{}-{}", std::process::id(), a.ino);
    let text = std::fs::read_to_string(journal.join(&name)).unwrap();
    assert_eq!(text.lines().next(), Some("bkt/j"));
    f.fs.flush(a.ino, fh).unwrap();
    assert_eq!(entries(), 0, "uploaded: out of the journal");
    // Dirty again, then renamed: the entry follows the name.
    f.fs.write(a.ino, fh, 0, b"again", false, &p).unwrap();
    f.fs.rename(b, OsStr::new("j"), b, OsStr::new("k"), 0)
        .unwrap();
    let text = std::fs::read_to_string(journal.join(&name)).unwrap();
    assert_eq!(text.lines().next(), Some("bkt/k"));
    f.fs.release(a.ino, fh);
    assert_eq!(entries(), 0);
    // "again" over "unsent": the sixth byte stays.
    assert_eq!(f.read("bkt/k"), b"againt");
}

#[test]
fn entries_of_a_dead_daemon_are_reported_once_and_removed() {
    let f = fx();
    let journal = only_dir(&f._dir.path().join("state/dirty"));
    // No process has pid 2^22 + 1 (above Linux's pid_max limit).
    std::fs::write(journal.join("4194305-7"), "bkt/lost\n1700000000\n").unwrap();
    // A live process's entry (ours) is left alone.
    let mine = format!("{}-99", std::process::id());
    std::fs::write(journal.join(&mine), "bkt/mine\n1\n").unwrap();
    let j = journal::Journal::new(f.store.journal_dir().unwrap());
    let left = j.left_behind();
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].path.as_str(), left[0].since, left[0].pid),
        ("bkt/lost", 1_700_000_000, 4_194_305)
    );
    assert!(!journal.join("4194305-7").exists());
    assert!(journal.join(&mine).exists());
    assert!(j.left_behind().is_empty(), "reported once");
}
