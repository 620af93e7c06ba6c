//! The data directory as a [`Backend`]: a bucket is a directory, an object a
//! file below it whose path is its key (docs/FORMAT.md §1). Every name is
//! resolved beneath a held descriptor ([`Dir`]); writes are staged in
//! `.ssefs/tmp` and renamed into place, so a reader or a crash sees the old
//! object or the new one, never a mix.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::state::{read_record, record_version, write_record};
use super::Page;
use super::{strict, Staged, State, StateDir, StateStore, Update, Version};
use super::{xattr, Backend, Caps, Claim, Cond, Dir, Found, Ident, Loc, LocalPlace, ObjMeta};
use super::{BUCKET_SETTINGS, GRANTS_FILE, KEYSTORE_FILE};
use crate::crypto::fill_random;
use crate::error::{Error, IoContext, OssCode, Result};
use crate::oss::{BucketName, SseConfig};

/// The state directory inside the data directory.
pub const STATE_DIR: &str = ".ssefs";
/// Backend xattr holding an object's encryption override (an SseConfig in
/// TOML), so that rewrites of the object keep using it.
pub const OVERRIDE_XATTR: &str = "user.ssefs.sse";
/// Staged files older than this are left over from a crash and removed at
/// open.
const STALE_TEMP: Duration = Duration::from_secs(600);

/// The data directory, held open, and its staging directory.
#[derive(Debug)]
pub struct PosixBackend {
    data_dir: PathBuf,
    /// Every backend name is resolved beneath it.
    root: Dir,
    /// `.ssefs/tmp`, where writes are staged.
    tmp: Dir,
    /// `.ssefs`: the keystore and the grants.
    state: StateDir,
}

impl PosixBackend {
    /// The backend over `root`, the data directory held open (already
    /// checked by the caller, as its state directory), staging in `tmp`.
    pub fn new(data_dir: &Path, root: Dir, tmp: Dir, state: StateDir) -> PosixBackend {
        PosixBackend {
            data_dir: data_dir.to_path_buf(),
            root,
            tmp,
            state,
        }
    }

    /// Whether the data directory at `data_dir` has a keystore (a new one
    /// gets its keystore right after `create`).
    pub fn initialised(data_dir: &Path) -> bool {
        data_dir.join(STATE_DIR).join(KEYSTORE_FILE).exists()
    }

    /// Makes the directories of a new data directory (it, the state
    /// directory and the staging directory, each 0700 whatever the umask)
    /// and opens it.
    pub fn create(data_dir: &Path) -> Result<PosixBackend> {
        let state = data_dir.join(STATE_DIR);
        for d in [data_dir, &state, &state.join("tmp")] {
            strict::create_private_dir(d).ctx(d.display())?;
        }
        Self::open(data_dir)
    }

    /// Opens the data directory at `data_dir`, refusing one that someone
    /// other than us (or root) could change (`check_private`), and holds
    /// it, its state directory and its staging directory open from then on.
    pub fn open(data_dir: &Path) -> Result<PosixBackend> {
        Self::check_private(data_dir)?;
        let root = Dir::open(data_dir).ctx(data_dir.display())?;
        strict::check_held(data_dir, &root)?;
        let state_path = data_dir.join(STATE_DIR);
        // Made by versions that did not make it with the state directory.
        let tmp_path = state_path.join("tmp");
        strict::create_private_dir(&tmp_path).ctx(tmp_path.display())?;
        strict::check(&tmp_path)?;
        let tmp = root
            .dir(&Path::new(STATE_DIR).join("tmp"))
            .ctx(tmp_path.display())?;
        let state = root.dir(Path::new(STATE_DIR)).ctx(state_path.display())?;
        let state = StateDir::held(&state_path, state);
        Ok(PosixBackend::new(data_dir, root, tmp, state))
    }

    /// Refuses a data directory that someone other than us (or root) could
    /// change: the directory, the directories above it, its state
    /// directory and the files in it that hold keys and policy.
    pub fn check_private(data_dir: &Path) -> Result<()> {
        strict::check(data_dir)?;
        strict::check_ancestors(data_dir)?;
        let state = data_dir.join(STATE_DIR);
        strict::check(&state)?;
        for f in [KEYSTORE_FILE, GRANTS_FILE, "root.key"] {
            strict::check_if_present(&state.join(f))?;
        }
        Ok(())
    }

    /// The data directory's owner: the user who, besides root, manages
    /// its buckets and keys.
    pub fn owner(&self) -> Result<u32> {
        Ok(self
            .root
            .stat(OsStr::new(""))
            .ctx(self.data_dir.display())?
            .st_uid)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The data directory, held open.
    pub fn root(&self) -> &Dir {
        &self.root
    }

    /// The bucket's directory, held open (resolved beneath the data
    /// directory, no symlink followed), or NoSuchBucket.
    pub fn bucket(&self, name: &BucketName) -> Result<Dir> {
        self.root
            .dir(Path::new(name.as_str()))
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP) => no_bucket(name),
                _ => Error::io(name, e),
            })
    }

    /// Removes staged files left by a crash (older than `STALE_TEMP`).
    pub fn remove_stale_temps(&self) {
        let Ok(entries) = self.tmp.entries() else {
            return;
        };
        let now = SystemTime::now();
        for e in entries {
            let old = self.tmp.stat(&e.name).is_ok_and(|st| {
                let t = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
                now.duration_since(t).unwrap_or_default() > STALE_TEMP
            });
            if old {
                let _ = self.tmp.remove_file(&e.name);
            }
        }
    }

    /// A new, empty staged file with permission bits `mode`.
    fn temp_file(&self, mode: u32) -> Result<Staged> {
        let name = temp_name();
        let file = self
            .tmp
            .file(
                Path::new(&name),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                mode,
            )
            .ctx(Path::new(STATE_DIR).join("tmp").join(&name).display())?;
        Ok(Staged {
            file,
            name,
            early: None,
        })
    }

    /// Removes a staged file that will not be committed.
    fn discard_temp(&self, tmp: &Staged) {
        let _ = self.tmp.remove_file(&tmp.name);
    }

    /// Renames a finished, fsynced staged file to `name` in `dir`
    /// (replacing whatever is there) and makes the rename durable.
    fn commit_temp(&self, tmp: &Staged, dir: &Dir, name: &OsStr, shown: &str) -> Result<()> {
        self.tmp.rename(&tmp.name, dir, name).ctx(shown)?;
        dir.sync().ctx(shown)
    }

    /// Puts a finished, fsynced staged file in the place of `name` in
    /// `dir`, only while that is still the file `expect` (see
    /// `Dir::replace`). The staged file is removed if it does not take the
    /// place.
    fn replace_with_temp(
        &self,
        tmp: &Staged,
        (dir, name): (&Dir, &OsStr),
        expect: Ident,
        shown: &str,
    ) -> Result<()> {
        let r = dir.replace(name, &self.tmp, &tmp.name, expect);
        if r.is_err() {
            self.discard_temp(tmp);
        }
        r.map_err(|e| match e.raw_os_error() {
            Some(libc::ESTALE | libc::ENOENT) => Error::new(
                OssCode::PreconditionFailed,
                "the object was moved or replaced while it was rewritten; it was left as it is now",
            )
            .resource(shown),
            _ => Error::io(shown, e),
        })
    }

    /// The directory a new object goes in, made as needed (beneath the
    /// bucket, no symlink followed), and the object's name there.
    fn new_place<'k>(&self, at: Loc<'k>, shown: &str) -> Result<(Dir, &'k OsStr)> {
        let b = self.bucket(at.bucket)?;
        let (parent, leaf) = split_key(at.key, shown)?;
        let dir = b
            .create_dirs(parent, 0o755)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOTDIR | libc::ELOOP) => Error::new(
                    OssCode::InvalidObjectName,
                    "a part of the key names something that is not a directory",
                )
                .resource(shown),
                _ => Error::io(shown, e),
            })?;
        if dir
            .stat(leaf)
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        {
            return Err(
                Error::new(OssCode::InvalidObjectName, "a directory exists at this key")
                    .resource(shown),
            );
        }
        Ok((dir, leaf))
    }

    /// The directory holding `at` and its name there, if both exist.
    fn place<'k>(&self, at: Loc<'k>, shown: &str) -> Result<(Dir, &'k OsStr)> {
        let b = self.bucket(at.bucket)?;
        let (parent, leaf) = split_key(at.key, shown)?;
        match b.dir(parent) {
            Ok(d) => Ok((d, leaf)),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                ) =>
            {
                Err(no_key(shown))
            }
            Err(e) => Err(Error::io(shown, e)),
        }
    }

    /// Checks `cond` against what `leaf` in `dir` is now.
    fn check_cond(dir: &Dir, leaf: &OsStr, cond: Cond, shown: &str) -> Result<()> {
        let now = match dir.stat(leaf) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => Some(version_of_stat(&st)),
            Ok(_) => None,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
            Err(e) => return Err(Error::io(shown, e)),
        };
        cond.check(now.as_ref(), shown)
    }
}

/// The keystore and the grants are the state directory's; a bucket's
/// settings are a file in its directory.
impl StateStore for PosixBackend {
    fn state_shown(&self, s: State<'_>) -> String {
        match s {
            State::BucketSettings(b) => self
                .data_dir
                .join(b.as_str())
                .join(BUCKET_SETTINGS)
                .display()
                .to_string(),
            _ => self.state.state_shown(s),
        }
    }

    fn get_state(&self, s: State<'_>) -> Result<Option<(Vec<u8>, Version)>> {
        match s {
            State::BucketSettings(b) => {
                read_record(&self.bucket(b)?, OsStr::new(BUCKET_SETTINGS), &|| {
                    self.state_shown(s)
                })
            }
            _ => self.state.get_state(s),
        }
    }

    fn state_version(&self, s: State<'_>) -> Result<Option<Version>> {
        match s {
            State::BucketSettings(b) => {
                record_version(&self.bucket(b)?, OsStr::new(BUCKET_SETTINGS), &|| {
                    self.state_shown(s)
                })
            }
            _ => self.state.state_version(s),
        }
    }

    /// Bucket settings are replaced under no lock of their own: their
    /// writers already serialise on the keystore, which records the MAC
    /// each settings file may carry (`Kms::begin_settings_change`).
    fn update_state(&self, s: State<'_>, f: &mut Update<'_>) -> Result<Option<Version>> {
        let State::BucketSettings(b) = s else {
            return self.state.update_state(s, f);
        };
        let dir = self.bucket(b)?;
        let name = OsStr::new(BUCKET_SETTINGS);
        let shown = self.state_shown(s);
        let current = read_record(&dir, name, &|| shown.clone())?;
        let Some(bytes) = f(current.as_ref().map(|(b, _)| &b[..]))? else {
            return Ok(current.map(|(_, v)| v));
        };
        // Staged where every other write is, so that a crash leaves its
        // temp file where the next open cleans up.
        let tmp = temp_name();
        write_record((&dir, name), (&self.tmp, &tmp), &bytes, 0o644, &shown).map(Some)
    }
}

impl Backend for PosixBackend {
    fn describe(&self) -> String {
        self.data_dir.display().to_string()
    }

    fn caps(&self) -> Caps {
        Caps {
            conditional: true,
            claims: true,
            posix_tree: true,
        }
    }

    fn list_buckets(&self) -> Result<Vec<BucketName>> {
        let shown = self.data_dir.display();
        let mut out = Vec::new();
        for e in self.root.entries().ctx(&shown)? {
            let Some(n) = e.name.to_str().and_then(|s| BucketName::parse(s).ok()) else {
                continue;
            };
            // The type from the directory entry: a symlink is not a bucket.
            if e.kind == libc::S_IFDIR {
                out.push(n);
            }
        }
        out.sort();
        Ok(out)
    }

    fn create_bucket(&self, b: &BucketName) -> Result<()> {
        self.root
            .mkdir(OsStr::new(b.as_str()), 0o755)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EEXIST) => Error::new(
                    OssCode::BucketAlreadyExists,
                    "The requested bucket name is not available.",
                )
                .resource(b.as_str()),
                _ => Error::io(b, e),
            })?;
        self.root.sync().ctx(b)
    }

    fn delete_bucket(&self, b: &BucketName) -> Result<()> {
        let dir = self.bucket(b)?;
        let settings = OsStr::new(BUCKET_SETTINGS);
        let not_empty = || {
            Error::new(
                OssCode::BucketNotEmpty,
                "The bucket you tried to delete is not empty.",
            )
            .resource(b.as_str())
        };
        if !only_settings(&dir, b)? {
            return Err(not_empty());
        }
        // If the directory turns out not to be empty after all (something
        // made in between), the settings are put back as they were.
        let shown = self.state_shown(State::BucketSettings(b));
        let saved = read_record(&dir, settings, &|| shown.clone())?;
        match dir.remove_file(settings) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(Error::io(b, e)),
        }
        if let Err(e) = self.root.remove_dir(OsStr::new(b.as_str())) {
            if let Some((bytes, _)) = &saved {
                let restored =
                    self.update_state(State::BucketSettings(b), &mut |_| Ok(Some(bytes.clone())));
                if let Err(r) = restored {
                    tracing::error!(path = %shown, "could not restore bucket settings: {r}");
                }
            }
            return Err(match e.raw_os_error() {
                Some(libc::ENOTEMPTY | libc::EEXIST) => not_empty(),
                _ => Error::io(b, e),
            });
        }
        self.root.sync().ctx(b)
    }

    fn bucket_is_empty(&self, b: &BucketName) -> Result<bool> {
        only_settings(&self.bucket(b)?, b)
    }

    fn bucket_owner(&self, b: &BucketName) -> Result<u32> {
        Ok(self.bucket(b)?.stat(OsStr::new("")).ctx(b)?.st_uid)
    }

    fn find(&self, at: Loc<'_>) -> Result<Found> {
        let shown = at.shown();
        let (dir, leaf) = self.place(at, &shown)?;
        let file = open_regular(&dir, leaf)
            .ctx(&shown)?
            .ok_or_else(|| no_key(&shown))?;
        Found::local(LocalPlace {
            dir,
            leaf: leaf.to_owned(),
            file,
        })
        .ctx(&shown)
    }

    fn meta(&self, f: &Found) -> Result<ObjMeta> {
        let file = f.file();
        let shown = Path::new(&local_place(f)?.leaf).display().to_string();
        let mut meta = posix_meta(file).ctx(&shown)?;
        meta.sse_override = read_override(file, &shown)?;
        Ok(meta)
    }

    fn list(
        &self,
        bucket: &BucketName,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Page> {
        let dir = self.bucket(bucket)?;
        let mut walk = Walk {
            shown: bucket.as_str(),
            prefix,
            after,
            // One more than asked: whether there is a next page.
            want: max.saturating_add(1),
            keys: Vec::new(),
        };
        walk.dir(&dir, "")?;
        let mut keys = walk.keys;
        let next = if keys.len() > max {
            keys.truncate(max);
            keys.last().cloned()
        } else {
            None
        };
        Ok(Page { keys, next })
    }

    fn sse_override(&self, f: &Found, shown: &str) -> Result<Option<SseConfig>> {
        read_override(f.file(), shown)
    }

    fn stage(&self, _shown: &str) -> Result<Staged> {
        self.temp_file(0o644)
    }

    fn commit(&self, s: Staged, at: Loc<'_>, meta: &ObjMeta, cond: Cond) -> Result<Version> {
        let shown = at.shown();
        let result = (|| {
            apply_meta(&s.file, meta, &shown)?;
            if let Cond::Is(Version::Local { id, .. }) = &cond {
                let id = *id;
                // For mounts holding the old file: this one replaces it.
                mark_replaces(&s.file, id).ctx(&shown)?;
            }
            // The attributes are part of what the rename makes visible.
            s.file.sync_all().ctx(&shown)?;
            match cond {
                Cond::Any => {
                    let (dir, leaf) = self.new_place(at, &shown)?;
                    self.commit_temp(&s, &dir, leaf, &shown)?;
                }
                Cond::Absent => {
                    let (dir, leaf) = self.new_place(at, &shown)?;
                    match self.tmp.rename_noreplace(&s.name, &dir, leaf) {
                        Ok(()) => dir.sync().ctx(&shown)?,
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            Self::check_cond(&dir, leaf, cond, &shown)?;
                            return Err(Error::io(&shown, e));
                        }
                        Err(e) => return Err(Error::io(&shown, e)),
                    }
                }
                Cond::Is(Version::Local { id, .. }) => {
                    let (dir, leaf) = self.place(at, &shown)?;
                    Self::check_cond(&dir, leaf, cond.clone(), &shown)?;
                    self.replace_with_temp(&s, (&dir, leaf), id, &shown)?;
                }
                Cond::Is(Version::ETag(_)) => return Err(not_local()),
            }
            // After the rename, which moves the file's ctime.
            Ok(version_of(&s.file.metadata().ctx(&shown)?))
        })();
        if result.is_err() {
            self.discard_temp(&s);
        }
        result
    }

    fn replace(&self, s: Staged, f: &Found, meta: &ObjMeta, shown: &str) -> Result<Version> {
        let result = (|| {
            let Version::Local { id, .. } = f.version else {
                return Err(not_local());
            };
            let place = local_place(f)?;
            apply_meta(&s.file, meta, shown)?;
            mark_replaces(&s.file, id).ctx(shown)?;
            s.file.sync_all().ctx(shown)?;
            Self::check_cond(&place.dir, &place.leaf, Cond::Is(f.version.clone()), shown)?;
            self.replace_with_temp(&s, (&place.dir, &place.leaf), id, shown)?;
            Ok(version_of(&s.file.metadata().ctx(shown)?))
        })();
        if result.is_err() {
            self.discard_temp(&s);
        }
        result
    }

    fn discard(&self, s: Staged) {
        self.discard_temp(&s);
    }

    fn claim(&self, f: &Found, shown: &str) -> Result<Option<Claim>> {
        // A second descriptor of the same open file: the lock lives as long
        // as the claim, whatever the caller does with its own.
        let place = local_place(f)?;
        let mut file = place.file.try_clone().ctx(shown)?;
        let lock = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(l) => break l,
                Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
                Err((g, Errno::EINTR)) => file = g,
                Err((_, e)) => {
                    return Err(Error::io(format!("locking {shown}"), io::Error::from(e)))
                }
            }
        };
        // The lock must be on the file that has the name now.
        let held = Ident::of_fd(lock.as_fd()).ctx(shown)?;
        let now = place.dir.stat(&place.leaf).ctx(shown)?;
        if held != Ident::of(&now) {
            return Ok(None);
        }
        Ok(Some(Claim { _lock: Some(lock) }))
    }

    fn delete(&self, at: Loc<'_>, cond: Cond) -> Result<()> {
        let shown = at.shown();
        let (dir, leaf) = self.place(at, &shown)?;
        match dir.stat(leaf) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => {}
            Ok(_) => return Err(no_key(&shown)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Err(no_key(&shown)),
            Err(e) => return Err(Error::io(&shown, e)),
        }
        Self::check_cond(&dir, leaf, cond, &shown)?;
        dir.remove_file(leaf).ctx(&shown)?;
        dir.sync().ctx(&shown)
    }
}

/// A fresh random name for a staged file in `.ssefs/tmp`.
fn temp_name() -> OsString {
    let mut r = [0u8; 12];
    fill_random(&mut r);
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    OsString::from(format!("{hex}.tmp"))
}

/// Whether a bucket's directory holds nothing but its settings.
fn only_settings(dir: &Dir, b: &BucketName) -> Result<bool> {
    let settings = OsStr::new(BUCKET_SETTINGS);
    Ok(dir.entries().ctx(b)?.iter().all(|e| e.name == settings))
}

fn no_bucket(name: &BucketName) -> Error {
    Error::new(
        OssCode::NoSuchBucket,
        "The specified bucket does not exist.",
    )
    .resource(name.as_str())
}

fn no_key(shown: &str) -> Error {
    Error::new(OssCode::NoSuchKey, "The specified key does not exist.").resource(shown)
}

/// Splits a key into the directory it lives in (relative to its bucket)
/// and its last component. NoSuchKey for a key with no last component
/// (empty, or ending in `/`): no object can be there.
fn split_key<'k>(key: &'k str, shown: &str) -> Result<(&'k Path, &'k OsStr)> {
    let p = Path::new(key);
    if key.ends_with('/') {
        return Err(no_key(shown));
    }
    let leaf = p.file_name().ok_or_else(|| no_key(shown))?;
    Ok((p.parent().unwrap_or(Path::new("")), leaf))
}

impl Found {
    /// The version of `place`'s open file, found there.
    pub(crate) fn local(place: LocalPlace) -> io::Result<Found> {
        let m = place.file.metadata()?;
        Ok(Found {
            version: version_of(&m),
            len: m.len(),
            at: super::Place::Local(place),
        })
    }
}

/// A version, condition or found object of another backend handed to this
/// one: a bug, reported rather than acted on.
fn not_local() -> Error {
    Error::new(
        OssCode::InternalError,
        "an object of another backend was given to the data directory",
    )
}

fn local_place(f: &Found) -> Result<&LocalPlace> {
    f.place().ok_or_else(not_local)
}

pub(super) fn version_of(m: &fs::Metadata) -> Version {
    Version::Local {
        id: Ident {
            dev: m.dev(),
            ino: m.ino(),
        },
        size: m.len(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    }
}

pub(super) fn version_of_stat(st: &libc::stat) -> Version {
    Version::Local {
        id: Ident::of(st),
        size: st.st_size as u64,
        mtime: (st.st_mtime, st.st_mtime_nsec),
        ctime: (st.st_ctime, st.st_ctime_nsec),
    }
}

/// Opens `leaf` in `dir` for reading if it is a regular file: `None` when
/// it is absent, a symlink, a directory or anything else. Never blocks on
/// a FIFO, never follows a link.
pub fn open_regular(dir: &Dir, leaf: &OsStr) -> io::Result<Option<File>> {
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
    match dir.file(Path::new(leaf), flags, 0) {
        Ok(f) if f.metadata()?.is_file() => Ok(Some(f)),
        Ok(_) => Ok(None),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// A listing in progress: keys in byte order, gathered by a depth-first
/// walk that visits entries in the order of their keys and skips every
/// subtree that holds no key wanted.
struct Walk<'a> {
    shown: &'a str,
    prefix: &'a str,
    after: Option<&'a str>,
    want: usize,
    keys: Vec<String>,
}

impl Walk<'_> {
    /// The keys below `dir`, whose own keys start with `rel`. Skips our own
    /// files (names starting with `.ssefs`), symlinks and anything that is
    /// not a regular file or a directory; a directory swapped for a link
    /// since the listing is passed over.
    fn dir(&mut self, dir: &Dir, rel: &str) -> Result<()> {
        let mut entries: Vec<(String, bool)> = Vec::new();
        for e in dir.entries().ctx(format!("{}/{rel}", self.shown))? {
            let Some(name) = e.name.to_str() else {
                // Object keys are UTF-8; anything else was not made by ssefs.
                continue;
            };
            if name.starts_with(".ssefs") {
                continue;
            }
            // The type comes from the directory entry: symlinks are not
            // followed.
            match e.kind {
                libc::S_IFDIR => entries.push((format!("{rel}{name}/"), true)),
                libc::S_IFREG => entries.push((format!("{rel}{name}"), false)),
                _ => {}
            }
        }
        // A directory sorts as its keys do, by its name and a "/" ("a-b"
        // comes before the keys "a/..."); names are unique, so no two
        // entries' keys interleave.
        entries.sort_unstable();
        for (key, is_dir) in entries {
            if self.keys.len() >= self.want {
                break;
            }
            if is_dir {
                if !self.may_hold(&key) {
                    continue;
                }
                let name = &key[rel.len()..key.len() - 1];
                if let Ok(sub) = dir.dir(Path::new(OsStr::new(name))) {
                    self.dir(&sub, &key)?;
                }
            } else if key.starts_with(self.prefix) && self.after.is_none_or(|a| key.as_str() > a) {
                self.keys.push(key);
            }
        }
        Ok(())
    }

    /// Whether the subtree of keys starting with `dir` can hold a key
    /// wanted: one with the prefix, after `after`.
    fn may_hold(&self, dir: &str) -> bool {
        let prefix_ok = dir.starts_with(self.prefix) || self.prefix.starts_with(dir);
        // Every key below is past `after` unless `after` is greater than
        // `dir` at a byte before `dir` ends.
        let after_ok = self.after.is_none_or(|a| a.starts_with(dir) || a < dir);
        prefix_ok && after_ok
    }
}

/// Mode, owner, times and user xattrs of an open backend file (not
/// ssefs's own `user.ssefs.*`, which each object sets for itself).
pub fn posix_meta(f: &File) -> io::Result<ObjMeta> {
    let m = f.metadata()?;
    let mut xattrs = Vec::new();
    let names = match xattr::list(xattr::At::File(f)) {
        Err(e) if no_xattrs(&e) => Vec::new(),
        r => r?,
    };
    for name in names {
        if !name.starts_with(b"user.") || name.starts_with(b"user.ssefs.") {
            continue;
        }
        if let Some(v) = xattr::get(xattr::At::File(f), OsStr::from_bytes(&name))? {
            xattrs.push((name, v));
        }
    }
    Ok(ObjMeta {
        mode: Some(m.mode() & 0o7777),
        owner: Some((m.uid(), m.gid())),
        times: Some([(m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec())]),
        xattrs,
        sse_override: None,
        ctime: None,
    })
}

/// Gives an open backend file `meta`: override, owner, mode, user xattrs,
/// then times (last, as the others would move them).
pub fn apply_meta(f: &File, meta: &ObjMeta, shown: &str) -> Result<()> {
    write_override(f, shown, meta.sse_override.as_ref())?;
    apply_posix_meta(f, meta).ctx(shown)
}

fn apply_posix_meta(to: &File, meta: &ObjMeta) -> io::Result<()> {
    if let Some((uid, gid)) = meta.owner {
        // Changing the owner needs privilege; as a plain user the owner is
        // already us, so only try when it differs. Before the mode: a chown
        // clears set-id bits.
        let cur = to.metadata()?;
        if cur.uid() != uid || cur.gid() != gid {
            std::os::unix::fs::fchown(to, Some(uid), Some(gid))?;
        }
    }
    if let Some(mode) = meta.mode {
        to.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
    }
    for (name, value) in &meta.xattrs {
        xattr::set(xattr::At::File(to), OsStr::from_bytes(name), value, 0)?;
    }
    if let Some([(a, an), (m, mn)]) = meta.times {
        let times = [
            libc::timespec {
                tv_sec: a,
                tv_nsec: an,
            },
            libc::timespec {
                tv_sec: m,
                tv_nsec: mn,
            },
        ];
        // SAFETY: `to` is an open descriptor and times points to two
        // timespecs.
        let r = unsafe { libc::futimens(to.as_raw_fd(), times.as_ptr()) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Backend xattr a rewrite by `reencrypt` or `rewrap` leaves on the new
/// file: the identity (`Ident::to_bytes`) of the backend file it replaced,
/// so that a mount holding the old one can tell a rewrite of its object
/// from a new file that took its name, and follow the rewrite.
pub const REPLACES_XATTR: &str = "user.ssefs.replaces";

/// Records on a rewritten object's new file which backend file it replaces
/// (`REPLACES_XATTR`), for mounts that hold the old one.
pub(crate) fn mark_replaces(f: &File, old: Ident) -> io::Result<()> {
    xattr::set(
        xattr::At::File(f),
        OsStr::new(REPLACES_XATTR),
        &old.to_bytes(),
        0,
    )
}

/// An object's persisted encryption override, if any.
pub fn read_override(file: &File, name: &str) -> Result<Option<SseConfig>> {
    let v = match xattr::get(xattr::At::File(file), OsStr::new(OVERRIDE_XATTR)) {
        Ok(Some(v)) => v,
        Ok(None) => return Ok(None),
        // A backend without user xattrs (ramfs) cannot hold an override.
        Err(e) if no_xattrs(&e) => return Ok(None),
        Err(e) => return Err(Error::io(name, e)),
    };
    let s = String::from_utf8(v)
        .map_err(|_| Error::integrity("encryption override is not UTF-8").resource(name))?;
    toml::from_str(&s).map(Some).map_err(|e| {
        Error::integrity(format!("encryption override unreadable: {e}")).resource(name)
    })
}

/// Records (or with `None` removes) an object's encryption override.
pub fn write_override(file: &File, name: &str, over: Option<&SseConfig>) -> Result<()> {
    match over {
        Some(o) => {
            let s = toml::to_string(o)
                .map_err(|e| Error::new(OssCode::InternalError, e.to_string()))?;
            xattr::set(
                xattr::At::File(file),
                OsStr::new(OVERRIDE_XATTR),
                s.as_bytes(),
                0,
            )
            .map_err(|e| {
                if !no_xattrs(&e) {
                    return Error::io(name, e);
                }
                let mut err = Error::new(
                    OssCode::InvalidArgument,
                    "the data directory's filesystem keeps no user xattrs, so an object \
                     cannot have an encryption of its own: set a rule on its bucket instead",
                )
                .resource(name);
                err.os_errno = Some(libc::EOPNOTSUPP);
                err
            })
        }
        None => match xattr::remove(xattr::At::File(file), OsStr::new(OVERRIDE_XATTR)) {
            Err(e) if e.raw_os_error() != Some(libc::ENODATA) && !no_xattrs(&e) => {
                Err(Error::io(name, e))
            }
            _ => Ok(()),
        },
    }
}

/// The backend's filesystem keeps no user xattrs at all (ramfs): nothing
/// ssefs would find in one is there.
fn no_xattrs(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EOPNOTSUPP)
}
