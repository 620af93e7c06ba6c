//! The mount on an S3-compatible store (issue 14, slice 3;
//! docs/SEMANTICS.md §12).
//!
//! A store has no inodes, so nodes here are named by path: `bucket/key`,
//! with the mount root `""`. A directory is a prefix (with its own
//! metadata in a record `DIR/.ssefs-dir` once made or changed through a
//! mount), a regular file is an object, a symlink an empty store object
//! whose authenticated record holds the target (`backend::s3::tree`).
//!
//! What other hosts change shows within `meta_ttl`: directory listings
//! and attributes are kept that long, and the kernel is told the same
//! TTL. An open always asks the store again (close-to-open), so a file
//! closed elsewhere is read whole and new at the next open here.
//!
//! Files are read and written through a local copy in the host's staging
//! directory (`files`): the whole object is downloaded at the first open,
//! writes of any shape go to the copy through `ObjectFile`, and the copy
//! is uploaded whole on close (FLUSH), fsync and release. An upload is one
//! PUT or a multipart upload completed at the end, so readers anywhere see
//! the old object or the new one; the last close wins.
//!
//! Where each part lives: `files` (open, read, write, upload), `names`
//! (create, remove, rename), `xattrs`; here the node table, lookups,
//! attributes and listings.

mod files;
mod journal;
mod names;
mod xattrs;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::backend::s3::meta::Shape;
use crate::backend::s3::{Entry, EntryKind, S3Backend, Stat};
use crate::engine::Engine;
use crate::error::Result;
use crate::fs::{Attr, AttrChanges, FsOps, Kind, SetTime, ROOT_INO};
use crate::oss::BucketName;
use crate::principal::Principal;

use files::OpenFile;

/// Names whose attributes `readdirplus` asks for together (a reply to it
/// holds fewer).
const PREFETCH: usize = 128;

/// Directory listings kept before those past their TTL are dropped.
const LISTINGS_KEPT: usize = 256;

/// How a store mount behaves.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How long listings and attributes are trusted (and the kernel's
    /// entry and attribute timeouts).
    pub meta_ttl: Duration,
    pub read_only: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            meta_ttl: Duration::from_secs(1),
            read_only: false,
        }
    }
}

/// One node the kernel knows (or an open file keeps).
struct Node {
    /// `""` (the root), `bucket`, or `bucket/key`.
    path: String,
    kind: Kind,
    lookups: u64,
    /// The last HEAD's answer and when it was asked (None: no record, a
    /// directory made elsewhere, or a file not uploaded yet).
    seen: Option<(Instant, Option<Stat>)>,
    /// The open state all handles share, and how many handles hold it.
    open: Option<Arc<OpenFile>>,
    opens: u32,
    /// The version whose bytes the kernel may still cache (an open keeps
    /// the page cache only if the object is still that version).
    cached_version: Option<crate::backend::Version>,
}

#[derive(Default)]
struct Tree {
    nodes: HashMap<u64, Node>,
    inos: HashMap<String, u64>,
    next: u64,
    /// Directory listings by path, with when they were made.
    listings: HashMap<String, (Instant, Vec<Entry>)>,
}

/// An open directory: its entries at opendir (name, ino, kind), with
/// `.` and `..` first.
struct DirHandle {
    ino: u64,
    entries: Vec<(String, u64, Kind)>,
}

enum Handle {
    File(Arc<OpenFile>),
    Dir(Arc<DirHandle>),
}

/// The filesystem of a store mount.
pub struct StoreFs {
    engine: Arc<Engine>,
    store: Arc<S3Backend>,
    opts: StoreOptions,
    started: SystemTime,
    tree: Mutex<Tree>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    /// Opens run one at a time, so that two opens of one file share one
    /// local copy.
    opening: Mutex<()>,
    /// Bucket owners, from the buckets' markers.
    owners: Mutex<HashMap<String, u32>>,
    /// Files changed here and not uploaded yet (None: no state directory
    /// to note them in).
    journal: Option<journal::Journal>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

use crate::fs::errno;

/// `dir/name`, or `name` at the top.
fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// The bucket and the key (`""`: the bucket's top) of a node's path.
fn split(path: &str) -> Result<(BucketName, &str)> {
    let (b, key) = path.split_once('/').unwrap_or((path, ""));
    let b = BucketName::parse(b).map_err(|_| errno(libc::ENOENT))?;
    Ok((b, key))
}

/// The parent's path of a node's path.
fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

fn name_of(path: &str) -> &str {
    path.rsplit_once('/').map(|(_, n)| n).unwrap_or(path)
}

/// A name as the store can hold it: UTF-8, no `/` or control characters,
/// not one of ssefs's own (`.ssefs*`: EPERM for a new name).
fn checked_name(name: &OsStr) -> Result<&str> {
    let s = name.to_str().ok_or_else(|| errno(libc::EILSEQ))?;
    if s.is_empty() || s.contains('/') || s.chars().any(char::is_control) {
        return Err(errno(libc::EINVAL));
    }
    if s.len() > 255 {
        return Err(errno(libc::ENAMETOOLONG));
    }
    Ok(s)
}

/// The longest path below the mount's prefix a store key may take: S3's
/// 1024-byte key limit, less room for the prefix and a directory record's
/// name. (Garage's LMDB metadata engine takes keys of about 500 bytes
/// only; beyond that its answer is a 503, EIO here.)
const PATH_MAX_ON_STORE: usize = 900;

/// ENAMETOOLONG for a path no store key can hold.
fn fits(path: &str) -> Result<()> {
    if path.len() > PATH_MAX_ON_STORE {
        Err(errno(libc::ENAMETOOLONG))
    } else {
        Ok(())
    }
}

/// The inode number a listing shows for a name without a node: FNV-1a
/// of its path, with the top bit set so that it never meets the table's
/// own numbers (counted up from 2).
fn listed_ino(path: &str) -> u64 {
    crate::backend::s3::name_hash(path) | 1 << 63
}

fn reserved(name: &str) -> bool {
    name.starts_with(".ssefs")
}

fn system_time((s, n): (i64, i64)) -> SystemTime {
    if s >= 0 {
        UNIX_EPOCH + Duration::new(s as u64, n as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(s.unsigned_abs()) + Duration::from_nanos(n as u64)
    }
}

fn time_pair(t: SystemTime) -> (i64, i64) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
        Err(e) => {
            let d = e.duration();
            let (s, n) = (d.as_secs() as i64, i64::from(d.subsec_nanos()));
            if n == 0 {
                (-s, 0)
            } else {
                (-s - 1, 1_000_000_000 - n)
            }
        }
    }
}

fn now_pair() -> (i64, i64) {
    time_pair(SystemTime::now())
}

fn set_time(t: &SetTime) -> (i64, i64) {
    match t {
        SetTime::Now => now_pair(),
        SetTime::At(t) => time_pair(*t),
    }
}

impl StoreFs {
    pub fn new(engine: Arc<Engine>, store: Arc<S3Backend>, opts: StoreOptions) -> StoreFs {
        let mut tree = Tree {
            next: ROOT_INO + 1,
            ..Tree::default()
        };
        tree.nodes.insert(
            ROOT_INO,
            Node {
                path: String::new(),
                kind: Kind::Dir,
                lookups: 1,
                seen: None,
                open: None,
                opens: 0,
                cached_version: None,
            },
        );
        tree.inos.insert(String::new(), ROOT_INO);
        let journal = match store.journal_dir() {
            Ok(d) => Some(journal::Journal::new(d)),
            Err(e) => {
                tracing::warn!("changes a crash loses will not be reported: {}", e.message);
                None
            }
        };
        // What a daemon of this host that died left unsent: said once.
        for l in journal.iter().flat_map(|j| j.left_behind()) {
            tracing::error!(
                code = crate::error::OssCode::InternalError.as_str(),
                path = l.path.as_str(),
                pid = l.pid,
                since = l.since,
                "changes made to this file through a mount were not uploaded before its daemon stopped: they are lost; the store has the version from before them"
            );
        }
        StoreFs {
            engine,
            store,
            opts,
            started: SystemTime::now(),
            tree: Mutex::new(tree),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            opening: Mutex::new(()),
            owners: Mutex::new(HashMap::new()),
            journal,
        }
    }

    /// The kernel's entry and attribute timeout.
    pub fn ttl(&self) -> Duration {
        self.opts.meta_ttl
    }

    fn writable(&self) -> Result<()> {
        if self.opts.read_only {
            Err(errno(libc::EROFS))
        } else {
            Ok(())
        }
    }

    fn fresh(&self, at: Instant) -> bool {
        at.elapsed() < self.opts.meta_ttl
    }

    /// The path and kind of `ino`.
    fn node(&self, ino: u64) -> Result<(String, Kind)> {
        let t = lock(&self.tree);
        let n = t.nodes.get(&ino).ok_or_else(|| errno(libc::ESTALE))?;
        Ok((n.path.clone(), n.kind))
    }

    /// The inode for `path`, made if new, with one more lookup (the reply
    /// that names it gives the kernel one).
    fn register(&self, path: &str, kind: Kind) -> u64 {
        let mut t = lock(&self.tree);
        if let Some(&ino) = t.inos.get(path) {
            if let Some(n) = t.nodes.get_mut(&ino) {
                if n.kind == kind {
                    n.lookups += 1;
                    return ino;
                }
                // Replaced by something of another kind elsewhere: a new
                // inode for it; the old one lives on until forgotten.
                if n.open.is_none() && n.lookups == 0 {
                    t.nodes.remove(&ino);
                }
            }
        }
        let ino = t.next;
        t.next += 1;
        t.nodes.insert(
            ino,
            Node {
                path: path.to_owned(),
                kind,
                lookups: 1,
                seen: None,
                open: None,
                opens: 0,
                cached_version: None,
            },
        );
        t.inos.insert(path.to_owned(), ino);
        ino
    }

    /// Forgets what was seen of `path` (and its parent's listing).
    fn invalidate(&self, path: &str) {
        let mut t = lock(&self.tree);
        if let Some(&ino) = t.inos.get(path) {
            if let Some(n) = t.nodes.get_mut(&ino) {
                n.seen = None;
            }
        }
        t.listings.remove(parent_of(path));
        t.listings.remove(path);
    }

    /// Records what a HEAD (or a write of ours) found for `ino`.
    fn remember(&self, ino: u64, st: Option<Stat>) {
        if let Some(n) = lock(&self.tree).nodes.get_mut(&ino) {
            n.seen = Some((Instant::now(), st));
        }
    }

    /// Adds (or replaces) `entry` in the cached listing of `dir`.
    fn listed(&self, dir: &str, entry: Entry) {
        let mut t = lock(&self.tree);
        if let Some((_, l)) = t.listings.get_mut(dir) {
            match l.binary_search_by(|e| e.name.as_str().cmp(&entry.name)) {
                Ok(i) => l[i] = entry,
                Err(i) => l.insert(i, entry),
            }
        }
    }

    /// Takes `name` out of the cached listing of `dir`.
    fn unlisted(&self, dir: &str, name: &str) {
        let mut t = lock(&self.tree);
        if let Some((_, l)) = t.listings.get_mut(dir) {
            l.retain(|e| e.name != name);
        }
    }

    fn owner(&self, b: &BucketName) -> Result<u32> {
        if let Some(&u) = lock(&self.owners).get(b.as_str()) {
            return Ok(u);
        }
        let u = self.store.owner_of(b)?;
        lock(&self.owners).insert(b.as_str().to_owned(), u);
        Ok(u)
    }

    /// The entries of directory `path` (the root: the buckets), from a
    /// listing at most `meta_ttl` old, with the files created here and not
    /// uploaded yet.
    fn entries(&self, path: &str) -> Result<Vec<Entry>> {
        self.with_entries(path, |l| l.to_vec())
    }

    /// `f` of the entries of directory `path` (as `entries`), without a
    /// copy of them: a lookup in a large directory costs a search, not
    /// the listing.
    fn with_entries<R>(&self, path: &str, f: impl FnOnce(&[Entry]) -> R) -> Result<R> {
        {
            let t = lock(&self.tree);
            if let Some((at, l)) = t.listings.get(path) {
                if self.fresh(*at) {
                    return Ok(f(l));
                }
            }
        }
        let mut l = if path.is_empty() {
            self.engine
                .list_buckets()?
                .into_iter()
                .map(|b| Entry {
                    name: b.as_str().to_owned(),
                    kind: EntryKind::Dir,
                    len: 0,
                })
                .collect()
        } else {
            let (b, key) = split(path)?;
            self.store.list_dir(&b, key)?
        };
        let mut t = lock(&self.tree);
        // Files open here that are not on the store yet are there too.
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        for n in t.nodes.values() {
            let Some(rest) = n.path.strip_prefix(&prefix) else {
                continue;
            };
            if rest.is_empty() || rest.contains('/') || !n.open.as_ref().is_some_and(|o| o.unsent())
            {
                continue;
            }
            if let Err(i) = l.binary_search_by(|e: &Entry| e.name.as_str().cmp(rest)) {
                l.insert(
                    i,
                    Entry {
                        name: rest.to_owned(),
                        kind: EntryKind::File,
                        len: 0,
                    },
                );
            }
        }
        // Listings past their TTL are only a cost: dropped now and then.
        if t.listings.len() >= LISTINGS_KEPT {
            let ttl = self.opts.meta_ttl;
            t.listings.retain(|_, (at, _)| at.elapsed() < ttl);
        }
        let r = f(&l);
        t.listings.insert(path.to_owned(), (Instant::now(), l));
        Ok(r)
    }

    /// The entry `name` in directory `dir`, if there is one.
    fn entry(&self, dir: &str, name: &str) -> Result<Option<Entry>> {
        self.with_entries(dir, |l| {
            l.binary_search_by(|e| e.name.as_str().cmp(name))
                .ok()
                .map(|i| l[i].clone())
        })
    }

    /// What a HEAD says of `path`, being of `kind` (None: no record).
    fn stat_of(&self, path: &str, kind: Kind) -> Result<Option<Stat>> {
        if path.is_empty() {
            return Ok(None);
        }
        let (b, key) = split(path)?;
        match kind {
            Kind::Dir => self.store.stat_dir(&b, key),
            _ => self.store.stat_key(&b, key),
        }
    }

    /// What a listed entry is, by a HEAD (or `pre`, a HEAD's answer
    /// asked already with a batch of them).
    fn kind_of_entry(
        &self,
        path: &str,
        e: &Entry,
        pre: Option<Result<Option<Stat>>>,
    ) -> Result<Option<(Kind, Option<Stat>)>> {
        match e.kind {
            EntryKind::Dir => {
                let st = match pre {
                    Some(st) => st?,
                    None => self.stat_of(path, Kind::Dir)?,
                };
                Ok(Some((Kind::Dir, st)))
            }
            EntryKind::File | EntryKind::Empty => {
                let st = match pre {
                    Some(st) => st?,
                    None => self.stat_of(path, Kind::File)?,
                };
                Ok(st.map(|s| {
                    let k = if matches!(s.shape, Shape::Link(_)) {
                        Kind::Symlink
                    } else {
                        Kind::File
                    };
                    (k, Some(s))
                }))
            }
        }
    }

    /// The attributes of `ino` at `path`, from what was seen of it.
    fn attr_from(&self, ino: u64, path: &str, kind: Kind, st: Option<&Stat>) -> Result<Attr> {
        let mut a = Attr {
            ino,
            size: 0,
            blocks: 0,
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            kind,
            perm: if kind == Kind::Dir { 0o755 } else { 0o644 },
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
        };
        if path.is_empty() {
            return Ok(a);
        }
        let (b, _) = split(path)?;
        a.uid = self.owner(&b)?;
        let Some(st) = st else {
            return Ok(a);
        };
        a.ctime = st.modified;
        a.mtime = st.modified;
        a.atime = st.modified;
        if let Some(m) = st.meta.mode {
            a.perm = (m & 0o7777) as u16;
        }
        if let Some((u, g)) = st.meta.owner {
            a.uid = u;
            a.gid = g;
        }
        if let Some([at, mt]) = st.meta.times {
            a.atime = system_time(at);
            a.mtime = system_time(mt);
        }
        // The store's own time has whole seconds: ours, where we keep one.
        if let Some(c) = st.meta.ctime {
            a.ctime = system_time(c);
        }
        match &st.shape {
            Shape::Link(t) => {
                a.size = t.len() as u64;
                a.perm = 0o777;
            }
            Shape::Object(_) if st.len > 0 => {
                let chunk = self.engine.chunk_size_for_stat(&b)?;
                a.size = chunk.shown_len(st.len).0;
            }
            _ => {}
        }
        a.blocks = a.size.div_ceil(512);
        Ok(a)
    }

    /// Attributes of a known node: from its open state, a recent HEAD, or
    /// a new one.
    fn attr_of(&self, ino: u64) -> Result<Attr> {
        let (path, kind, seen, open) = {
            let t = lock(&self.tree);
            let n = t.nodes.get(&ino).ok_or_else(|| errno(libc::ESTALE))?;
            (n.path.clone(), n.kind, n.seen.clone(), n.open.clone())
        };
        if let Some(o) = open {
            return self.attr_open(ino, &path, &o);
        }
        let st = match seen {
            Some((at, st)) if self.fresh(at) => st,
            _ => {
                let st = self.stat_of(&path, kind)?;
                if st.is_none() && kind != Kind::Dir {
                    return Err(errno(libc::ENOENT));
                }
                if st.is_none() && kind == Kind::Dir && !path.is_empty() {
                    // A directory without a record is there while
                    // something is below it.
                    let (b, key) = split(&path)?;
                    let there = if key.is_empty() {
                        self.engine.check_bucket(&b).is_ok()
                    } else {
                        self.store.dir_has_any(&b, key)?
                    };
                    if !there {
                        return Err(errno(libc::ENOENT));
                    }
                }
                self.remember(ino, st.clone());
                st
            }
        };
        self.attr_from(ino, &path, kind, st.as_ref())
    }

    fn do_lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        self.lookup_with(parent, name, None)
    }

    /// LOOKUP, with `pre` the HEAD's answer for the name if it was asked
    /// already (`readdirplus`).
    fn lookup_with(
        &self,
        parent: u64,
        name: &OsStr,
        pre: Option<Result<Option<Stat>>>,
    ) -> Result<Attr> {
        let (ppath, pkind) = self.node(parent)?;
        if pkind != Kind::Dir {
            return Err(errno(libc::ENOTDIR));
        }
        let name = checked_name(name)?;
        if reserved(name) {
            return Err(errno(libc::ENOENT));
        }
        let path = join(&ppath, name);
        // A file open here is what this host sees, uploaded or not.
        let open_ino = {
            let t = lock(&self.tree);
            t.inos
                .get(&path)
                .copied()
                .filter(|i| t.nodes.get(i).is_some_and(|n| n.open.is_some()))
        };
        if let Some(ino) = open_ino {
            let a = self.attr_of(ino)?;
            if let Some(n) = lock(&self.tree).nodes.get_mut(&ino) {
                n.lookups += 1;
            }
            return Ok(a);
        }
        let Some(e) = self.entry(&ppath, name)? else {
            return Err(errno(libc::ENOENT));
        };
        let Some((kind, st)) = self.kind_of_entry(&path, &e, pre)? else {
            // Listed, then gone.
            self.invalidate(&path);
            return Err(errno(libc::ENOENT));
        };
        let ino = self.register(&path, kind);
        self.remember(ino, st.clone());
        self.attr_from(ino, &path, kind, st.as_ref())
    }

    /// The metadata a change starts from: the record there now (fresh),
    /// or defaults for a directory without one.
    fn current_meta(
        &self,
        path: &str,
        kind: Kind,
    ) -> Result<(Option<Stat>, crate::backend::ObjMeta)> {
        let st = self.stat_of(path, kind)?;
        let meta = st.as_ref().map(|s| s.meta.clone()).unwrap_or_default();
        Ok((st, meta))
    }

    fn do_setattr(
        &self,
        ino: u64,
        ch: &AttrChanges,
        p: &Principal,
        fh: Option<u64>,
    ) -> Result<Attr> {
        if let Some(size) = ch.size {
            self.writable()?;
            self.truncate(ino, fh, size, p)?;
        }
        let meta_change = ch.mode.is_some()
            || ch.uid.is_some()
            || ch.gid.is_some()
            || ch.atime.is_some()
            || ch.mtime.is_some();
        if meta_change {
            self.writable()?;
            let (path, kind) = self.node(ino)?;
            if path.is_empty() {
                return Err(errno(libc::EPERM));
            }
            let edit = |m: &mut crate::backend::ObjMeta, a: &Attr| {
                if let Some(mode) = ch.mode {
                    m.mode = Some(mode & 0o7777);
                }
                if ch.uid.is_some() || ch.gid.is_some() {
                    let (u, g) = m.owner.unwrap_or((a.uid, a.gid));
                    m.owner = Some((ch.uid.unwrap_or(u), ch.gid.unwrap_or(g)));
                    // A chown clears set-id bits, as the kernel would.
                    if ch.mode.is_none() {
                        let mode = m.mode.unwrap_or(u32::from(a.perm));
                        m.mode = Some(mode & !(libc::S_ISUID | libc::S_ISGID));
                    }
                }
                if ch.atime.is_some() || ch.mtime.is_some() {
                    let [at, mt] = m.times.unwrap_or([time_pair(a.atime), time_pair(a.mtime)]);
                    m.times = Some([
                        ch.atime.as_ref().map(set_time).unwrap_or(at),
                        ch.mtime.as_ref().map(set_time).unwrap_or(mt),
                    ]);
                }
                if m.mode.is_none() {
                    m.mode = Some(u32::from(a.perm));
                }
                m.ctime = Some(now_pair());
            };
            let before = self.attr_of(ino)?;
            if let Some((fh, o)) = self.pin(ino) {
                // Goes up with the bytes, at the last release.
                o.edit_meta(|m| edit(m, &before));
                self.note_dirty(ino, &o);
                self.release_file(ino, fh);
            } else {
                let (b, key) = split(&path)?;
                let (st, mut meta) = self.current_meta(&path, kind)?;
                edit(&mut meta, &before);
                match (&st, kind) {
                    (Some(st), _) => {
                        self.store.set_meta(&b, key, st, &meta)?;
                    }
                    (None, Kind::Dir) => self.store.put_dir(&b, key, &meta)?,
                    (None, _) => return Err(errno(libc::ENOENT)),
                }
                self.invalidate(&path);
            }
        }
        self.attr_of(ino)
    }
}

impl FsOps for StoreFs {
    fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        self.do_lookup(parent, name)
    }

    fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut t = lock(&self.tree);
        let gone = match t.nodes.get_mut(&ino) {
            Some(node) => {
                node.lookups = node.lookups.saturating_sub(n);
                node.lookups == 0 && node.open.is_none()
            }
            None => false,
        };
        if gone {
            if let Some(node) = t.nodes.remove(&ino) {
                if t.inos.get(&node.path) == Some(&ino) {
                    t.inos.remove(&node.path);
                }
            }
        }
    }

    fn getattr(&self, ino: u64) -> Result<Attr> {
        self.attr_of(ino)
    }

    fn setattr(&self, ino: u64, ch: &AttrChanges, p: &Principal, fh: Option<u64>) -> Result<Attr> {
        self.do_setattr(ino, ch, p, fh)
    }

    fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let (path, kind) = self.node(ino)?;
        if kind != Kind::Symlink {
            return Err(errno(libc::EINVAL));
        }
        match self.stat_of(&path, kind)? {
            Some(Stat {
                shape: Shape::Link(t),
                ..
            }) => Ok(t),
            Some(_) => Err(errno(libc::EINVAL)),
            None => Err(errno(libc::ENOENT)),
        }
    }

    fn mknod(
        &self,
        parent: u64,
        _name: &OsStr,
        _mode: u32,
        _rdev: u32,
        _p: &Principal,
    ) -> Result<Attr> {
        // Regular files come through CREATE; a store holds no device
        // nodes, fifos or sockets (docs/SEMANTICS.md §12).
        self.node(parent)?;
        Err(errno(libc::EPERM))
    }

    fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, uid: u32, gid: u32) -> Result<Attr> {
        self.make_dir(parent, name, mode, (uid, gid))
    }

    fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.remove_name(parent, name, false)
    }

    fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.remove_name(parent, name, true)
    }

    fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &std::path::Path,
        uid: u32,
        gid: u32,
    ) -> Result<Attr> {
        self.make_link(parent, name, target, (uid, gid))
    }

    fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        self.move_name(parent, name, newparent, newname, flags)
    }

    fn link(&self, ino: u64, _newparent: u64, _newname: &OsStr) -> Result<Attr> {
        // A store has no hard links (docs/SEMANTICS.md §12).
        self.node(ino)?;
        Err(errno(libc::EPERM))
    }

    fn create_object(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        p: &Principal,
    ) -> Result<(u64, Attr)> {
        self.create_file(parent, name, mode, flags, p)
    }

    fn open(&self, ino: u64, flags: i32, p: &Principal) -> Result<u64> {
        self.open_file(ino, flags, p)
    }

    fn read_with<R>(&self, fh: u64, off: u64, size: u32, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.file_handle(fh)?.read_with(off, size, f)
    }

    fn write(
        &self,
        ino: u64,
        fh: u64,
        off: u64,
        data: &[u8],
        kill_setid: bool,
        p: &Principal,
    ) -> Result<u32> {
        self.writable()?;
        let o = self.file_handle(fh)?;
        self.write_file(ino, &o, off, data, kill_setid, p)
    }

    fn flush(&self, ino: u64, fh: u64) -> Result<()> {
        let o = self.file_handle(fh)?;
        self.upload(ino, &o)
    }

    fn release(&self, ino: u64, fh: u64) {
        self.release_file(ino, fh)
    }

    fn fsync(&self, fh: u64, _datasync: bool) -> Result<()> {
        let o = self.file_handle(fh)?;
        let ino = o.ino();
        self.upload(ino, &o)
    }

    fn fallocate(
        &self,
        ino: u64,
        fh: u64,
        off: u64,
        len: u64,
        mode: i32,
        p: &Principal,
    ) -> Result<()> {
        self.writable()?;
        let Some(end) = crate::fs::io::fallocate_end(off, len, mode)? else {
            return Ok(());
        };
        let o = self.file_handle(fh)?;
        if end > o.size() {
            self.set_size(ino, &o, end, p)?;
        }
        Ok(())
    }

    fn copy_range(
        &self,
        fh_in: u64,
        off_in: u64,
        ino_out: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
        p: &Principal,
    ) -> Result<u32> {
        let len = len.min(1 << 24) as u32;
        let data = self
            .file_handle(fh_in)?
            .read_with(off_in, len, |d| d.to_vec())?;
        if data.is_empty() {
            return Ok(0);
        }
        FsOps::write(self, ino_out, fh_out, off_out, &data, false, p)
    }

    fn opendir(&self, ino: u64) -> Result<u64> {
        let (path, kind) = self.node(ino)?;
        if kind != Kind::Dir {
            return Err(errno(libc::ENOTDIR));
        }
        let parent = {
            let t = lock(&self.tree);
            t.inos.get(parent_of(&path)).copied().unwrap_or(ROOT_INO)
        };
        let mut entries = vec![
            (".".to_owned(), ino, Kind::Dir),
            ("..".to_owned(), parent, Kind::Dir),
        ];
        for e in self.entries(&path)? {
            let child = join(&path, &e.name);
            let kind = match e.kind {
                EntryKind::Dir => Kind::Dir,
                EntryKind::File => Kind::File,
                // An empty store object: its record says what it is.
                EntryKind::Empty => match self.kind_of_entry(&child, &e, None)? {
                    Some((k, _)) => k,
                    None => continue,
                },
            };
            // A plain READDIR's inode numbers are only shown (d_ino), and
            // the kernel never forgets them: names not known yet get a
            // number from their path instead of a node that would stay
            // in the table for good.
            let known = lock(&self.tree).inos.get(&child).copied();
            let child_ino = known.unwrap_or_else(|| listed_ino(&child));
            entries.push((e.name, child_ino, kind));
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Handle::Dir(Arc::new(DirHandle { ino, entries })));
        Ok(fh)
    }

    fn readdir(
        &self,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, u64, Kind, &OsStr) -> bool,
    ) -> Result<()> {
        let d = self.dir_handle(fh)?;
        for (i, (name, ino, kind)) in d.entries.iter().enumerate().skip(offset as usize) {
            if add(*ino, i as u64 + 1, *kind, OsStr::new(name)) {
                break;
            }
        }
        Ok(())
    }

    fn readdirplus(
        &self,
        _ino: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, &OsStr, &Attr) -> bool,
    ) -> Result<()> {
        let d = self.dir_handle(fh)?;
        let (dpath, _) = self.node(d.ino)?;
        // The attributes of the next names, asked of the store together
        // rather than one HEAD after another (`ls -l`).
        let mut pre: HashMap<&str, Result<Option<Stat>>> = HashMap::new();
        if !dpath.is_empty() {
            let (b, key) = split(&dpath)?;
            let window: Vec<(&str, (String, bool))> = d
                .entries
                .iter()
                .skip(offset as usize)
                .filter(|(n, _, _)| n != "." && n != "..")
                .take(PREFETCH)
                .map(|(n, _, k)| (n.as_str(), (join(key, n), *k == Kind::Dir)))
                .collect();
            let asks: Vec<(String, bool)> = window.iter().map(|(_, a)| a.clone()).collect();
            for ((n, _), st) in window.iter().zip(self.store.stat_many(&b, &asks)) {
                pre.insert(n, st);
            }
        }
        for (i, (name, _, _)) in d.entries.iter().enumerate().skip(offset as usize) {
            let a = if name == "." || name == ".." {
                // The kernel takes no reference for these.
                let ino = if name == "." {
                    d.ino
                } else {
                    lock(&self.tree)
                        .inos
                        .get(parent_of(&dpath))
                        .copied()
                        .unwrap_or(ROOT_INO)
                };
                match self.attr_of(ino) {
                    Ok(a) => a,
                    Err(_) => continue,
                }
            } else {
                match self.lookup_with(d.ino, OsStr::new(name), pre.remove(name.as_str())) {
                    Ok(a) => a,
                    // Gone since opendir.
                    Err(e) if e.errno() == libc::ENOENT => continue,
                    Err(e) => return Err(e),
                }
            };
            if add(i as u64 + 1, OsStr::new(name), &a) {
                // Not sent: the kernel did not take the reference.
                if name != "." && name != ".." {
                    FsOps::forget(self, a.ino, 1);
                }
                break;
            }
        }
        Ok(())
    }

    fn releasedir(&self, fh: u64) {
        lock(&self.handles).remove(&fh);
    }

    fn fsyncdir(&self, ino: u64) -> Result<()> {
        // Every change of a directory is on the store when it returns.
        self.node(ino).map(|_| ())
    }

    fn statfs(&self) -> Result<libc::statvfs> {
        // A store has no fixed size: plenty, as s3fs and rclone show.
        // SAFETY: statvfs is plain old data; all-zero is a valid value.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        s.f_bsize = 4096;
        s.f_frsize = 4096;
        s.f_blocks = 1 << 40;
        s.f_bfree = 1 << 40;
        s.f_bavail = 1 << 40;
        s.f_files = 1 << 32;
        s.f_ffree = 1 << 32;
        s.f_favail = 1 << 32;
        s.f_namemax = 255;
        Ok(s)
    }

    fn setxattr(
        &self,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        p: &Principal,
    ) -> Result<()> {
        self.writable()?;
        self.set_xattr(ino, name, value, flags, p)
    }

    fn getxattr(&self, ino: u64, name: &OsStr, p: &Principal) -> Result<Vec<u8>> {
        self.get_xattr(ino, name, p)
    }

    fn listxattr(&self, ino: u64, p: &Principal) -> Result<Vec<u8>> {
        self.list_xattrs(ino, p)
    }

    fn removexattr(&self, ino: u64, name: &OsStr, p: &Principal) -> Result<()> {
        self.writable()?;
        self.remove_xattr(ino, name, p)
    }

    fn access(&self, ino: u64, _mask: i32, _p: &Principal) -> Result<()> {
        // The kernel checks mode bits (default_permissions is always on
        // for a store mount).
        self.node(ino).map(|_| ())
    }

    fn keep_cache(&self, fh: u64) -> bool {
        self.file_handle(fh)
            .map(|o| o.keep_cache())
            .unwrap_or(false)
    }

    fn ttl(&self) -> Duration {
        self.opts.meta_ttl
    }
}

impl StoreFs {
    fn dir_handle(&self, fh: u64) -> Result<Arc<DirHandle>> {
        match lock(&self.handles).get(&fh) {
            Some(Handle::Dir(d)) => Ok(d.clone()),
            _ => Err(errno(libc::EBADF)),
        }
    }

    fn file_handle(&self, fh: u64) -> Result<Arc<OpenFile>> {
        match lock(&self.handles).get(&fh) {
            Some(Handle::File(o)) => Ok(o.clone()),
            _ => Err(errno(libc::EBADF)),
        }
    }
}

#[cfg(test)]
mod tests;
