//! ssefs's own records beside the objects: the keystore, the grants and
//! each bucket's settings. Each is small, read whole, and replaced whole.
//!
//! On the local backend they are files: the keystore and the grants in the
//! state directory (`.ssefs/keystore.toml`, `.ssefs/config.toml`), a
//! bucket's settings in its directory (`BUCKET/.ssefs-bucket.toml`). A
//! store keeps them as objects under the same names
//! (docs/design/s3-backend.md §1.5). What they hold, and the MACs that
//! authenticate them, are the KMS's and the engine's business, not this
//! module's.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::{Dir, Version};
use crate::error::{Error, IoContext, OssCode, Result};
use crate::oss::BucketName;

/// The keystore's name in the state directory.
pub const KEYSTORE_FILE: &str = "keystore.toml";
/// The grants' name in the state directory (written by the operator,
/// approved by `ssefs kms seal-policy`).
pub const GRANTS_FILE: &str = "config.toml";
/// A bucket's settings, in the bucket's directory.
pub const BUCKET_SETTINGS: &str = ".ssefs-bucket.toml";
/// Serialises writers of the state directory's records across processes.
const LOCK_FILE: &str = "keystore.lock";

/// One of ssefs's own records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State<'a> {
    Keystore,
    Grants,
    BucketSettings(&'a BucketName),
}

/// Maps a record's current bytes (`None`: there is none) to the bytes to
/// store (`None`: leave it as it is). May be called more than once on a
/// backend that retries when another writer got in first.
pub type Update<'f> = dyn FnMut(Option<&[u8]>) -> Result<Option<Vec<u8>>> + 'f;

/// Where ssefs's records live. Errors name the record as
/// [`StateStore::state_shown`] does.
pub trait StateStore: Send + Sync + fmt::Debug {
    /// How messages name the record: its path on the local backend.
    fn state_shown(&self, s: State<'_>) -> String;

    /// The record's bytes and their version; `None` if there is none.
    fn get_state(&self, s: State<'_>) -> Result<Option<(Vec<u8>, Version)>>;

    /// The record's version without its bytes (a stat locally): what
    /// caches compare to see whether they are still current.
    fn state_version(&self, s: State<'_>) -> Result<Option<Version>>;

    /// Forgets the versions trusted for a while (a store mount trusts them
    /// for its metadata TTL), so that the next `state_version` asks again:
    /// for a record that must agree with another one read just now.
    /// Locally every `state_version` asks.
    fn forget_versions(&self) {}

    /// Reads the record, applies `f` and stores what it returns, durably
    /// and atomically, with no other writer of the state directory in
    /// between (even in other processes). Returns the version now stored
    /// (`None`: there is no record and `f` made none).
    fn update_state(&self, s: State<'_>, f: &mut Update<'_>) -> Result<Option<Version>>;
}

/// A state directory (`.ssefs`), held open: every name is resolved beneath
/// it, no symlink followed. Holds the keystore and the grants; it has no
/// buckets, so bucket settings are refused (the data directory's
/// [`PosixBackend`](super::PosixBackend) keeps them).
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    dir: Dir,
}

impl StateDir {
    /// The state directory at `path`, which must exist (the engine makes
    /// and checks it: `strict`).
    pub fn open(path: &Path) -> Result<StateDir> {
        let dir = Dir::open(path).ctx(path.display())?;
        Ok(StateDir {
            path: path.to_path_buf(),
            dir,
        })
    }

    /// The state directory of the data directory at `data_dir`.
    pub fn of_data_dir(data_dir: &Path) -> Result<StateDir> {
        StateDir::open(&data_dir.join(super::STATE_DIR))
    }

    /// A state directory already held open (and checked) at `path`.
    pub fn held(path: &Path, dir: Dir) -> StateDir {
        StateDir {
            path: path.to_path_buf(),
            dir,
        }
    }

    fn name(s: State<'_>) -> &'static str {
        match s {
            State::Keystore => KEYSTORE_FILE,
            State::Grants => GRANTS_FILE,
            // Refused by every method before it gets here.
            State::BucketSettings(_) => BUCKET_SETTINGS,
        }
    }

    fn refuse_buckets(&self, s: State<'_>) -> Result<()> {
        match s {
            State::BucketSettings(b) => Err(Error::new(
                OssCode::InternalError,
                format!(
                    "bucket settings of {b} asked of the state directory {}, which has no buckets",
                    self.path.display()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// The exclusive lock every writer of the state directory holds,
    /// released on drop.
    fn lock(&self) -> Result<Flock<File>> {
        let shown = self.path.join(LOCK_FILE);
        let ctx = || format!("locking {}", shown.display());
        let mut file = self
            .dir
            .file(
                Path::new(LOCK_FILE),
                libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC,
                0o600,
            )
            .ctx(ctx())?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(lock) => return Ok(lock),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => return Err(Error::io(ctx(), io::Error::from(errno))),
            }
        }
    }
}

impl StateStore for StateDir {
    fn state_shown(&self, s: State<'_>) -> String {
        match s {
            State::BucketSettings(b) => format!("{b}/{BUCKET_SETTINGS}"),
            _ => self.path.join(Self::name(s)).display().to_string(),
        }
    }

    fn get_state(&self, s: State<'_>) -> Result<Option<(Vec<u8>, Version)>> {
        self.refuse_buckets(s)?;
        read_record(&self.dir, OsStr::new(Self::name(s)), &|| {
            self.state_shown(s)
        })
    }

    fn state_version(&self, s: State<'_>) -> Result<Option<Version>> {
        self.refuse_buckets(s)?;
        record_version(&self.dir, OsStr::new(Self::name(s)), &|| {
            self.state_shown(s)
        })
    }

    fn update_state(&self, s: State<'_>, f: &mut Update<'_>) -> Result<Option<Version>> {
        self.refuse_buckets(s)?;
        let name = OsStr::new(Self::name(s));
        let shown = self.state_shown(s);
        let _lock = self.lock()?;
        let current = read_record(&self.dir, name, &|| shown.clone())?;
        let Some(bytes) = f(current.as_ref().map(|(b, _)| &b[..]))? else {
            return Ok(current.map(|(_, v)| v));
        };
        // The keystore holds sealed keys and the grants say who may use
        // them: neither is anyone else's to read.
        let mut tmp = name.to_os_string();
        tmp.push(".tmp");
        write_record((&self.dir, name), (&self.dir, &tmp), &bytes, 0o600, &shown).map(Some)
    }
}

/// The record `name` in `dir`, read whole, with the version of the file
/// read (not of whatever is there a moment later). `shown` names it in
/// errors; it is only called for one (this is on every object creation's
/// path, through the bucket settings cache).
pub(super) fn read_record(
    dir: &Dir,
    name: &OsStr,
    shown: &dyn Fn() -> String,
) -> Result<Option<(Vec<u8>, Version)>> {
    let failed = |e: io::Error| {
        let s = shown();
        Error::io(format!("reading {s}"), e).resource(s)
    };
    let mut f = match dir.file(
        Path::new(name),
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
        0,
    ) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(failed(e)),
    };
    let meta = f.metadata().map_err(failed)?;
    if !meta.is_file() {
        let s = shown();
        return Err(Error::new(
            OssCode::InvalidArgument,
            format!("{s} is not a regular file"),
        )
        .resource(s));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.read_to_end(&mut bytes).map_err(failed)?;
    Ok(Some((bytes, super::posix::version_of(&meta))))
}

/// The version of the record `name` in `dir`, if there is one (`shown` as
/// for `read_record`).
pub(super) fn record_version(
    dir: &Dir,
    name: &OsStr,
    shown: &dyn Fn() -> String,
) -> Result<Option<Version>> {
    match dir.stat(name) {
        Ok(st) => Ok(Some(super::posix::version_of_stat(&st))),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => {
            let s = shown();
            Err(Error::io(format!("reading {s}"), e).resource(s))
        }
    }
}

/// Replaces the record `name` in `dir` with `bytes`: the temp file
/// `tmp_name` in `tmp_dir` (same filesystem), made with `mode`, written and
/// fsynced, renamed over it, and the directory fsynced. The caller keeps other writers of the same record out.
///
/// The new file's mtime is strictly newer than the one it replaces,
/// whatever the clock's granularity: a version is the file's identity,
/// size and times, and an inode number can be used again, so without it a
/// reader could take a record two writes on for the one it has cached.
pub(super) fn write_record(
    (dir, name): (&Dir, &OsStr),
    (tmp_dir, tmp_name): (&Dir, &OsStr),
    bytes: &[u8],
    mode: u32,
    shown: &str,
) -> Result<Version> {
    let ctx = || format!("writing {shown}");
    // A temp file a crashed writer left may have any mode; start afresh so
    // that ours is created with `mode`.
    match tmp_dir.remove_file(tmp_name) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(Error::io(ctx(), e)),
    }
    let mut f = tmp_dir
        .file(
            Path::new(tmp_name),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
            mode,
        )
        .ctx(ctx())?;
    let written = (|| {
        f.write_all(bytes)?;
        let now = SystemTime::now();
        let mtime = match dir.stat(name) {
            Ok(st) => {
                let prev = UNIX_EPOCH
                    + Duration::new(
                        st.st_mtime.max(0) as u64,
                        st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
                    );
                if now > prev {
                    now
                } else {
                    prev + Duration::from_nanos(1)
                }
            }
            Err(_) => now,
        };
        f.set_modified(mtime)?;
        f.sync_all()?;
        tmp_dir.rename(tmp_name, dir, name)?;
        dir.sync()?;
        f.metadata()
    })();
    match written {
        Ok(meta) => Ok(super::posix::version_of(&meta)),
        Err(e) => {
            let _ = tmp_dir.remove_file(tmp_name);
            Err(Error::io(ctx(), e).resource(shown))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn state_dir() -> (tempfile::TempDir, StateDir) {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::open(t.path()).unwrap();
        (t, s)
    }

    #[test]
    fn a_missing_record_is_none_and_an_update_creates_it_0600() {
        let (t, s) = state_dir();
        assert!(s.get_state(State::Keystore).unwrap().is_none());
        assert!(s.state_version(State::Keystore).unwrap().is_none());
        let v = s
            .update_state(State::Keystore, &mut |cur| {
                assert!(cur.is_none());
                Ok(Some(b"one".to_vec()))
            })
            .unwrap()
            .unwrap();
        let (bytes, got) = s.get_state(State::Keystore).unwrap().unwrap();
        assert_eq!(bytes, b"one");
        assert_eq!(got, v);
        assert_eq!(s.state_version(State::Keystore).unwrap(), Some(v));
        let mode = std::fs::metadata(t.path().join(KEYSTORE_FILE))
            .unwrap()
            .permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    #[test]
    fn every_write_is_a_new_version_even_of_the_same_bytes() {
        let (_t, s) = state_dir();
        let mut seen = Vec::new();
        for _ in 0..20 {
            let v = s
                .update_state(State::Grants, &mut |_| Ok(Some(b"same".to_vec())))
                .unwrap()
                .unwrap();
            assert!(!seen.contains(&v), "version {v:?} seen before");
            seen.push(v);
        }
    }

    #[test]
    fn an_update_that_writes_nothing_changes_nothing() {
        let (_t, s) = state_dir();
        let v = s
            .update_state(State::Keystore, &mut |_| Ok(Some(b"x".to_vec())))
            .unwrap();
        let same = s.update_state(State::Keystore, &mut |_| Ok(None)).unwrap();
        assert_eq!(v, same);
        let e = s
            .update_state(State::Keystore, &mut |_| {
                Err(Error::new(OssCode::InvalidArgument, "no"))
            })
            .unwrap_err();
        assert_eq!(e.code, OssCode::InvalidArgument);
        assert_eq!(s.get_state(State::Keystore).unwrap().unwrap().0, b"x");
        assert_eq!(s.state_version(State::Keystore).unwrap(), v);
    }

    #[test]
    fn updates_from_many_threads_lose_nothing() {
        let (t, _) = state_dir();
        let path = t.path().to_path_buf();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                // A StateDir each, as separate processes would have.
                let s = Arc::new(StateDir::open(&path).unwrap());
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        s.update_state(State::Keystore, &mut |cur| {
                            let n: u64 = cur
                                .map(|b| std::str::from_utf8(b).unwrap().parse().unwrap())
                                .unwrap_or(0);
                            Ok(Some((n + 1).to_string().into_bytes()))
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = StateDir::open(&path).unwrap();
        assert_eq!(s.get_state(State::Keystore).unwrap().unwrap().0, b"200");
    }

    #[test]
    fn a_symlinked_record_is_refused_not_followed() {
        let (t, s) = state_dir();
        std::fs::write(t.path().join("elsewhere"), b"secret").unwrap();
        std::os::unix::fs::symlink("elsewhere", t.path().join(KEYSTORE_FILE)).unwrap();
        assert!(s.get_state(State::Keystore).is_err());
        assert!(s
            .update_state(State::Keystore, &mut |_| Ok(Some(b"x".to_vec())))
            .is_err());
        assert_eq!(
            std::fs::read(t.path().join("elsewhere")).unwrap(),
            b"secret"
        );
    }

    #[test]
    fn a_state_directory_has_no_bucket_settings() {
        let (_t, s) = state_dir();
        let b = BucketName::parse("bkt").unwrap();
        assert!(s.get_state(State::BucketSettings(&b)).is_err());
    }
}
