//! A reference model of the namespace, in the manner of mountpoint-s3's
//! model tests: random sequences of create, write, mkdir, symlink, link,
//! unlink, rmdir, rename (plain, RENAME_NOREPLACE, RENAME_EXCHANGE) and
//! setxattr run against `Fs` directly and against a plain in-memory tree.
//! After every step both must agree on the outcome (success, or the same
//! errno) and on the whole tree: names, kinds, link counts, hard-link
//! identity, symlink targets, xattrs and file contents.
//!
//! Each step names its parent by a path from the bucket, looked up one
//! name at a time as the kernel would (`Fs::lookup`), and never follows
//! symlinks. The model follows Linux's order of checks (do_renameat2,
//! do_linkat, vfs_rename), with ssefs's own rules first: names under the
//! reserved prefix are hidden (ENOENT) and cannot be created (EPERM).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use proptest::prelude::*;

use super::tests::{env, os, Env};
use super::*;
use crate::principal::Principal;

/// Names steps use; the last is under the reserved prefix.
const NAMES: [&str; 4] = ["a", "b", "c", ".ssefs-x"];
const TARGETS: [&str; 3] = ["a", "../b", "c/a"];
const XATTRS: [&str; 2] = ["user.a", "user.b"];

/// A path from the bucket: indexes into NAMES, never empty.
type P = Vec<usize>;

#[derive(Debug, Clone)]
enum Op {
    Create(P, Vec<u8>),
    /// open(O_WRONLY | O_TRUNC) and write.
    Write(P, Vec<u8>),
    Mkdir(P),
    Symlink(P, usize),
    Link(P, P),
    Unlink(P),
    Rmdir(P),
    Rename(P, P, u32),
    SetXattr(P, usize, Vec<u8>, i32),
}

fn path() -> impl Strategy<Value = P> {
    // Short paths and the reserved name rarely, or few steps would find
    // what they name.
    let name = || prop_oneof![12 => 0..3usize, 1 => Just(3usize)];
    prop_oneof![
        6 => prop::collection::vec(name(), 1..=1),
        3 => prop::collection::vec(name(), 2..=2),
        1 => prop::collection::vec(name(), 3..=3),
    ]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..64)
}

fn op() -> impl Strategy<Value = Op> {
    let flags = prop_oneof![
        2 => Just(0u32),
        1 => Just(libc::RENAME_NOREPLACE),
        1 => Just(libc::RENAME_EXCHANGE),
    ];
    let xflags = prop_oneof![Just(0), Just(libc::XATTR_CREATE), Just(libc::XATTR_REPLACE)];
    prop_oneof![
        3 => (path(), data()).prop_map(|(p, d)| Op::Create(p, d)),
        1 => (path(), data()).prop_map(|(p, d)| Op::Write(p, d)),
        3 => path().prop_map(Op::Mkdir),
        1 => (path(), 0..TARGETS.len()).prop_map(|(p, t)| Op::Symlink(p, t)),
        2 => (path(), path()).prop_map(|(a, b)| Op::Link(a, b)),
        2 => path().prop_map(Op::Unlink),
        2 => path().prop_map(Op::Rmdir),
        4 => (path(), path(), flags).prop_map(|(a, b, f)| Op::Rename(a, b, f)),
        2 => (path(), 0..XATTRS.len(), prop::collection::vec(any::<u8>(), 0..8), xflags)
            .prop_map(|(p, n, v, f)| Op::SetXattr(p, n, v, f)),
    ]
}

// ---------------------------------------------------------------- model

type MIno = usize;

#[derive(Debug, Clone)]
enum MKind {
    File(Vec<u8>),
    Dir(BTreeMap<&'static str, MIno>),
    Symlink(&'static str),
}

#[derive(Debug, Clone)]
struct MNode {
    kind: MKind,
    xattrs: BTreeMap<&'static str, Vec<u8>>,
    /// Directories only: the directory holding it (the bucket holds itself).
    parent: MIno,
}

/// The namespace below the bucket (inode 0). Unlinked inodes stay in the
/// map, unreachable.
struct Model {
    nodes: HashMap<MIno, MNode>,
}

type Outcome = Result<(), i32>;

fn reserved(n: usize) -> bool {
    NAMES[n].starts_with(crate::oss::RESERVED_PREFIX)
}

impl Model {
    fn new() -> Model {
        let root = MNode {
            kind: MKind::Dir(BTreeMap::new()),
            xattrs: BTreeMap::new(),
            parent: 0,
        };
        Model {
            nodes: HashMap::from([(0, root)]),
        }
    }

    fn entries(&self, dir: MIno) -> Option<&BTreeMap<&'static str, MIno>> {
        match &self.nodes[&dir].kind {
            MKind::Dir(e) => Some(e),
            _ => None,
        }
    }

    fn entries_mut(&mut self, dir: MIno) -> &mut BTreeMap<&'static str, MIno> {
        match &mut self.nodes.get_mut(&dir).expect("a known inode").kind {
            MKind::Dir(e) => e,
            _ => panic!("not a directory"),
        }
    }

    fn is_dir(&self, ino: MIno) -> bool {
        matches!(self.nodes[&ino].kind, MKind::Dir(_))
    }

    /// `Fs::lookup` of each name in turn: hidden names first (ENOENT),
    /// then a parent that is no directory (ENOTDIR), then a missing name.
    fn resolve(&self, path: &[usize]) -> Result<MIno, i32> {
        let mut cur = 0;
        for &n in path {
            if reserved(n) {
                return Err(libc::ENOENT);
            }
            let e = self.entries(cur).ok_or(libc::ENOTDIR)?;
            cur = *e.get(NAMES[n]).ok_or(libc::ENOENT)?;
        }
        Ok(cur)
    }

    /// The parent directory of `path` and its last name.
    fn parent(&self, path: &[usize]) -> Result<(MIno, usize), i32> {
        let (last, dir) = path.split_last().expect("paths are never empty");
        Ok((self.resolve(dir)?, *last))
    }

    fn add(&mut self, kind: MKind, parent: MIno) -> MIno {
        let ino = self.nodes.len();
        self.nodes.insert(
            ino,
            MNode {
                kind,
                xattrs: BTreeMap::new(),
                parent,
            },
        );
        ino
    }

    /// The checks of create, mkdir, symlink and link's new name, in
    /// `Fs`'s order: the name, then the parent's kind, then existence.
    fn new_name(&self, dir: MIno, n: usize) -> Outcome {
        if reserved(n) {
            return Err(libc::EPERM);
        }
        let e = self.entries(dir).ok_or(libc::ENOTDIR)?;
        if e.contains_key(NAMES[n]) {
            return Err(libc::EEXIST);
        }
        Ok(())
    }

    fn make(&mut self, path: &[usize], kind: MKind) -> Outcome {
        let (dir, n) = self.parent(path)?;
        self.new_name(dir, n)?;
        let ino = self.add(kind, dir);
        self.entries_mut(dir).insert(NAMES[n], ino);
        Ok(())
    }

    /// Whether `a` is `b` or one of its ancestors.
    fn encloses(&self, a: MIno, mut b: MIno) -> bool {
        loop {
            if a == b {
                return true;
            }
            if b == 0 {
                return false;
            }
            b = self.nodes[&b].parent;
        }
    }

    fn apply(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Create(p, d) => self.make(p, MKind::File(d.clone())),
            Op::Mkdir(p) => self.make(p, MKind::Dir(BTreeMap::new())),
            Op::Symlink(p, t) => self.make(p, MKind::Symlink(TARGETS[*t])),
            Op::Write(p, d) => {
                let ino = self.resolve(p)?;
                match &mut self.nodes.get_mut(&ino).expect("resolved").kind {
                    MKind::File(c) => *c = d.clone(),
                    // `Fs::open` refuses any other kind so (the kernel
                    // follows symlinks before it opens).
                    _ => return Err(libc::EISDIR),
                }
                Ok(())
            }
            Op::Link(src, dst) => {
                let ino = self.resolve(src)?;
                let (dir, n) = self.parent(dst)?;
                self.new_name(dir, n)?;
                if self.is_dir(ino) {
                    return Err(libc::EPERM);
                }
                self.entries_mut(dir).insert(NAMES[n], ino);
                Ok(())
            }
            Op::Unlink(p) => {
                let (dir, n) = self.parent(p)?;
                if reserved(n) {
                    return Err(libc::ENOENT);
                }
                let e = self.entries(dir).ok_or(libc::ENOTDIR)?;
                let ino = *e.get(NAMES[n]).ok_or(libc::ENOENT)?;
                if self.is_dir(ino) {
                    return Err(libc::EISDIR);
                }
                self.entries_mut(dir).remove(NAMES[n]);
                Ok(())
            }
            Op::Rmdir(p) => {
                let (dir, n) = self.parent(p)?;
                if reserved(n) {
                    return Err(libc::ENOENT);
                }
                let e = self.entries(dir).ok_or(libc::ENOTDIR)?;
                let ino = *e.get(NAMES[n]).ok_or(libc::ENOENT)?;
                match self.entries(ino) {
                    None => return Err(libc::ENOTDIR),
                    Some(e) if !e.is_empty() => return Err(libc::ENOTEMPTY),
                    Some(_) => {}
                }
                self.entries_mut(dir).remove(NAMES[n]);
                Ok(())
            }
            Op::Rename(src, dst, flags) => self.rename(src, dst, *flags),
            Op::SetXattr(p, x, v, flags) => {
                let ino = self.resolve(p)?;
                let node = self.nodes.get_mut(&ino).expect("resolved");
                if matches!(node.kind, MKind::Symlink(_)) {
                    return Err(libc::EPERM);
                }
                let name = XATTRS[*x];
                let exists = node.xattrs.contains_key(name);
                if *flags == libc::XATTR_CREATE && exists {
                    return Err(libc::EEXIST);
                }
                if *flags == libc::XATTR_REPLACE && !exists {
                    return Err(libc::ENODATA);
                }
                node.xattrs.insert(name, v.clone());
                Ok(())
            }
        }
    }

    /// `Fs::rename`'s own checks, then renameat2(2)'s as Linux makes them.
    fn rename(&mut self, src: &[usize], dst: &[usize], flags: u32) -> Outcome {
        let (sdir, sn) = self.parent(src)?;
        let (ddir, dn) = self.parent(dst)?;
        if reserved(sn) {
            return Err(libc::ENOENT);
        }
        if reserved(dn) {
            return Err(libc::EPERM);
        }
        let se = self.entries(sdir).ok_or(libc::ENOTDIR)?;
        let de = self.entries(ddir).ok_or(libc::ENOTDIR)?;
        let s = *se.get(NAMES[sn]).ok_or(libc::ENOENT)?;
        let d = de.get(NAMES[dn]).copied();
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if flags & libc::RENAME_NOREPLACE != 0 && d.is_some() {
            return Err(libc::EEXIST);
        }
        if exchange && d.is_none() {
            return Err(libc::ENOENT);
        }
        // The source may not enclose the target, nor the target the source.
        if sdir != ddir {
            if self.encloses(s, ddir) {
                return Err(libc::EINVAL);
            }
            if let Some(d) = d {
                if self.encloses(d, sdir) {
                    return Err(if exchange {
                        libc::EINVAL
                    } else {
                        libc::ENOTEMPTY
                    });
                }
            }
        }
        let Some(d) = d else {
            self.entries_mut(sdir).remove(NAMES[sn]);
            self.entries_mut(ddir).insert(NAMES[dn], s);
            self.nodes.get_mut(&s).expect("resolved").parent = ddir;
            return Ok(());
        };
        if s == d {
            // Two names of one inode: nothing happens.
            return Ok(());
        }
        if exchange {
            self.entries_mut(sdir).insert(NAMES[sn], d);
            self.entries_mut(ddir).insert(NAMES[dn], s);
            self.nodes.get_mut(&s).expect("resolved").parent = ddir;
            self.nodes.get_mut(&d).expect("resolved").parent = sdir;
            return Ok(());
        }
        match (self.is_dir(s), self.entries(d)) {
            (true, None) => return Err(libc::ENOTDIR),
            (false, Some(_)) => return Err(libc::EISDIR),
            (true, Some(e)) if !e.is_empty() => return Err(libc::ENOTEMPTY),
            _ => {}
        }
        self.entries_mut(sdir).remove(NAMES[sn]);
        self.entries_mut(ddir).insert(NAMES[dn], s);
        self.nodes.get_mut(&s).expect("resolved").parent = ddir;
        Ok(())
    }

    /// Link counts as Linux keeps them: a directory has its "." and one
    /// ".." per subdirectory besides its own name; anything else one per name.
    fn nlinks(&self) -> HashMap<MIno, u32> {
        let mut n = HashMap::new();
        let mut todo = vec![0];
        while let Some(dir) = todo.pop() {
            for &c in self.entries(dir).expect("a directory").values() {
                if self.is_dir(c) {
                    n.insert(c, 2);
                    *n.entry(dir).or_insert(2) += 1;
                    todo.push(c);
                } else {
                    *n.entry(c).or_insert(0) += 1;
                }
            }
        }
        n
    }
}

// ------------------------------------------------------------- the Fs side

/// `Fs::lookup` of each name of `path` from the bucket.
fn lookup(fs: &Fs, bucket: u64, path: &[usize]) -> Result<u64> {
    let mut cur = bucket;
    for &n in path {
        cur = fs.lookup(cur, os(NAMES[n]))?.ino;
    }
    Ok(cur)
}

fn parent(fs: &Fs, bucket: u64, path: &[usize]) -> Result<(u64, &'static OsStr)> {
    let (last, dir) = path.split_last().expect("paths are never empty");
    Ok((lookup(fs, bucket, dir)?, os(NAMES[*last])))
}

fn run(fs: &Fs, bucket: u64, op: &Op) -> Result<()> {
    let root = Principal::root();
    match op {
        Op::Create(p, d) => {
            let (dir, name) = parent(fs, bucket, p)?;
            let (fh, a) = fs.create_object(dir, name, 0o644, libc::O_RDWR, &root)?;
            let w = if d.is_empty() {
                Ok(0)
            } else {
                fs.write(a.ino, fh, 0, d, false, &root)
            };
            fs.release(a.ino, fh);
            w.map(|_| ())
        }
        Op::Write(p, d) => {
            let ino = lookup(fs, bucket, p)?;
            let fh = fs.open(ino, libc::O_WRONLY | libc::O_TRUNC, &root)?;
            let w = if d.is_empty() {
                Ok(0)
            } else {
                fs.write(ino, fh, 0, d, false, &root)
            };
            fs.release(ino, fh);
            w.map(|_| ())
        }
        Op::Mkdir(p) => {
            let (dir, name) = parent(fs, bucket, p)?;
            fs.mkdir(dir, name, 0o755, 0, 0).map(|_| ())
        }
        Op::Symlink(p, t) => {
            let (dir, name) = parent(fs, bucket, p)?;
            fs.symlink(dir, name, Path::new(TARGETS[*t]), 0, 0)
                .map(|_| ())
        }
        Op::Link(src, dst) => {
            let ino = lookup(fs, bucket, src)?;
            let (dir, name) = parent(fs, bucket, dst)?;
            fs.link(ino, dir, name).map(|_| ())
        }
        Op::Unlink(p) => {
            let (dir, name) = parent(fs, bucket, p)?;
            fs.unlink(dir, name)
        }
        Op::Rmdir(p) => {
            let (dir, name) = parent(fs, bucket, p)?;
            fs.rmdir(dir, name)
        }
        Op::Rename(src, dst, flags) => {
            let (sdir, sname) = parent(fs, bucket, src)?;
            let (ddir, dname) = parent(fs, bucket, dst)?;
            fs.rename(sdir, sname, ddir, dname, *flags)
        }
        Op::SetXattr(p, x, v, flags) => {
            let ino = lookup(fs, bucket, p)?;
            fs.setxattr(ino, os(XATTRS[*x]), v, *flags, &root)
        }
    }
}

/// The names in directory `dir` with their kinds, as readdir gives them.
fn list(fs: &Fs, dir: u64) -> Result<BTreeMap<OsString, Kind>> {
    let fh = fs.opendir(dir)?;
    let mut out = BTreeMap::new();
    let r = fs.readdir(fh, 0, |_, _, kind, name| {
        if name != "." && name != ".." {
            out.insert(name.to_owned(), kind);
        }
        false
    });
    fs.releasedir(fh);
    r.map(|()| out)
}

fn content(fs: &Fs, ino: u64) -> Result<Vec<u8>> {
    let fh = fs.open(ino, libc::O_RDONLY, &Principal::root())?;
    let d = fs.read(fh, 0, 1 << 16);
    fs.release(ino, fh);
    d
}

/// The user xattrs of `ino` with their values.
fn xattrs(fs: &Fs, ino: u64) -> Result<BTreeMap<String, Vec<u8>>> {
    let root = Principal::root();
    let list = fs.listxattr(ino, &root)?;
    let mut out = BTreeMap::new();
    for n in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = OsStr::from_bytes(n);
        out.insert(
            name.to_string_lossy().into_owned(),
            fs.getxattr(ino, name, &root)?,
        );
    }
    Ok(out)
}

/// Compares the tree below the bucket with the model's, and hard-link
/// identity: one `Fs` inode per model inode.
fn same_tree(fs: &Fs, bucket: u64, m: &Model) -> std::result::Result<(), TestCaseError> {
    let nlinks = m.nlinks();
    let mut inos: HashMap<MIno, u64> = HashMap::new();
    let mut todo = vec![(bucket, 0, String::from("/"))];
    while let Some((dir, mdir, at)) = todo.pop() {
        let got = list(fs, dir).map_err(|e| TestCaseError::fail(format!("readdir {at}: {e:?}")))?;
        let want = m.entries(mdir).expect("a directory");
        let got_names: BTreeSet<&OsStr> = got.keys().map(|n| n.as_os_str()).collect();
        let want_names: BTreeSet<&OsStr> = want.keys().map(|n| os(n)).collect();
        prop_assert_eq!(got_names, want_names, "names in {}", at);
        for (&name, &mino) in want {
            let path = format!("{at}{name}");
            let a = fs
                .lookup(dir, os(name))
                .map_err(|e| TestCaseError::fail(format!("lookup {path}: {e:?}")))?;
            let prev = *inos.entry(mino).or_insert(a.ino);
            prop_assert_eq!(
                prev,
                a.ino,
                "{} is another inode than its other names",
                &path
            );
            let node = &m.nodes[&mino];
            let kind = match &node.kind {
                MKind::File(_) => Kind::File,
                MKind::Dir(_) => Kind::Dir,
                MKind::Symlink(_) => Kind::Symlink,
            };
            prop_assert_eq!(a.kind, kind, "kind of {}", &path);
            prop_assert_eq!(got[os(name)], kind, "readdir's kind of {}", &path);
            prop_assert_eq!(a.nlink, nlinks[&mino], "links of {}", &path);
            match &node.kind {
                MKind::File(c) => {
                    let d = content(fs, a.ino)
                        .map_err(|e| TestCaseError::fail(format!("read {path}: {e:?}")))?;
                    prop_assert_eq!(&d, c, "content of {}", &path);
                    prop_assert_eq!(a.size, c.len() as u64, "size of {}", &path);
                }
                MKind::Symlink(t) => {
                    let got = fs
                        .readlink(a.ino)
                        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                    prop_assert_eq!(got, t.as_bytes().to_vec(), "target of {}", &path);
                }
                MKind::Dir(_) => todo.push((a.ino, mino, format!("{path}/"))),
            }
            if !matches!(node.kind, MKind::Symlink(_)) {
                let got = xattrs(fs, a.ino)
                    .map_err(|e| TestCaseError::fail(format!("xattrs of {path}: {e:?}")))?;
                let want: BTreeMap<String, Vec<u8>> = node
                    .xattrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                prop_assert_eq!(got, want, "xattrs of {}", &path);
            }
        }
    }
    let distinct: BTreeSet<u64> = inos.values().copied().collect();
    prop_assert_eq!(
        distinct.len(),
        inos.len(),
        "two model inodes share an Fs inode"
    );
    Ok(())
}

/// A tree to start from, so that early steps find something to rename,
/// link and remove.
fn seed() -> Vec<Op> {
    vec![
        Op::Mkdir(vec![0]),
        Op::Mkdir(vec![0, 0]),
        Op::Create(vec![0, 1], b"ab".to_vec()),
        Op::Create(vec![1], b"b".to_vec()),
        Op::Symlink(vec![2], 0),
    ]
}

fn check_sequence(ops: &[Op]) -> std::result::Result<(), TestCaseError> {
    let e: Env = env();
    let bucket = e.bucket("bkt");
    let mut m = Model::new();
    for (i, op) in ops.iter().enumerate() {
        let want = m.apply(op);
        let got = run(&e.fs, bucket, op).map_err(|e| e.errno());
        prop_assert_eq!(got, want, "step {}: {:?}", i, op);
        same_tree(&e.fs, bucket, &m)?;
    }
    Ok(())
}

proptest! {
    // Each case builds a data directory and checks the whole tree after
    // every step: a few dozen cases keep the run to seconds.
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn namespace_matches_the_model(ops in prop::collection::vec(op(), 1..50)) {
        check_sequence(&[seed(), ops].concat())?;
    }
}

// ------------------------------------------------- fixed cases and checks

fn p(s: &str) -> P {
    s.split('/')
        .map(|n| NAMES.iter().position(|x| *x == n).expect("a model name"))
        .collect()
}

#[test]
fn the_model_runs_the_cases_it_was_written_for() {
    // The model itself: each rule it encodes, against Fs, so that a model
    // that never produced an error could not pass.
    use Op::*;
    let x = libc::RENAME_EXCHANGE;
    let cases = [
        (Mkdir(p("a")), 0),
        (Mkdir(p("a/b")), 0),
        (Create(p("a/b/c"), b"one".to_vec()), 0),
        (Link(p("a/b/c"), p("b")), 0),
        (Write(p("b"), b"two".to_vec()), 0),
        (Link(p("a"), p("c")), libc::EPERM),
        (Rename(p("a"), p("a/b/a"), 0), libc::EINVAL),
        (Rename(p("b"), p("a"), 0), libc::EISDIR),
        (Rename(p("a/b"), p("a"), 0), libc::ENOTEMPTY),
        (Rename(p("b"), p("a"), libc::RENAME_NOREPLACE), libc::EEXIST),
        (Rename(p("b"), p("c"), x), libc::ENOENT),
        (Rename(p("b"), p("a"), x), 0),
        // Two names of one inode.
        (Rename(p("b/b/c"), p("a"), 0), 0),
        (Rmdir(p("b")), libc::ENOTEMPTY),
        (Unlink(p("a")), 0),
        (Unlink(p("b")), libc::EISDIR),
        (Mkdir(p(".ssefs-x")), libc::EPERM),
        (Rename(p("b/b/c"), p(".ssefs-x"), 0), libc::EPERM),
        (Unlink(p(".ssefs-x")), libc::ENOENT),
        (Rename(p(".ssefs-x"), p("a"), 0), libc::ENOENT),
        (Symlink(p("c"), 1), 0),
        (SetXattr(p("c"), 0, b"v".to_vec(), 0), libc::EPERM),
        (SetXattr(p("b"), 0, b"v".to_vec(), libc::XATTR_CREATE), 0),
        (
            SetXattr(p("b"), 0, b"v".to_vec(), libc::XATTR_CREATE),
            libc::EEXIST,
        ),
        (
            SetXattr(p("b"), 1, b"w".to_vec(), libc::XATTR_REPLACE),
            libc::ENODATA,
        ),
        (Create(p("c/a"), vec![]), libc::ENOTDIR),
        (Create(p("b/b/c/a"), vec![]), libc::ENOTDIR),
        (Rmdir(p("b/b/c")), libc::ENOTDIR),
        (Rename(p("b"), p("b/b/a"), 0), libc::EINVAL),
        (Rename(p("b/b"), p("b"), x), libc::EINVAL),
        (Link(p("b/b/c"), p("a")), 0),
        (Rename(p("a"), p("b/b/c"), x), 0),
        (Rename(p("b/b"), p("a"), 0), libc::ENOTDIR),
        // A file over a symlink, then written through one name of two.
        (Rename(p("b/b/c"), p("c"), 0), 0),
        (Write(p("c"), b"three".to_vec()), 0),
        (Write(p("b"), vec![]), libc::EISDIR),
        (Rmdir(p("a")), libc::ENOTDIR),
        (Rename(p("b/b"), p("c"), x), 0),
        (Rmdir(p("c")), 0),
    ];
    let mut m = Model::new();
    for (i, (op, want)) in cases.iter().enumerate() {
        assert_eq!(m.apply(op).err().unwrap_or(0), *want, "step {i}: {op:?}");
    }
    let ops: Vec<Op> = cases.into_iter().map(|(o, _)| o).collect();
    check_sequence(&ops).unwrap();
}
