//! Crash consistency: the daemon is SIGKILLed at random points of a
//! write-heavy workload, remounted, and checked against the log the
//! workload kept outside the mount. Keystore writers (`ssefs kms`) and the
//! CLI's `reencrypt` and `rewrap` are killed at random points too.
//!
//! A SIGKILL loses the daemon's memory, not the backend's page cache, and
//! the mount has no writeback cache: a write that returned has reached the
//! backend. So every file whose last operation finished (fsync-ed or not)
//! must read back exactly; only the one operation each workload thread had
//! in flight may leave its file old, new, a byte-wise mix of the two, or
//! with chunks that fail with EIO. (With a writeback cache the rule would
//! have to widen to "every state since the last fsync".)

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ssefs::format::{ChunkSize, Header, HEADER_LEN};
/// The default chunk size, which these tests' buckets have.
const CHUNK_SIZE: usize = ChunkSize::DEFAULT.bytes();
use ssefs::oss::SseConfig;

use crate::mount::{daemon_pid, xattr_get, xattr_set, Mount};
use crate::util::{env_count, errno_of, seeded_bytes, test_seed, DataDir, Rng};

const SSE: &str = "user.oss.server-side-encryption";
const OVERRIDE: &str = "user.ssefs.sse";
/// Workload threads, each in its own bucket with its own rule.
const BUCKETS: [(&str, &str); 2] = [("crash-aes", "AES256"), ("crash-sm4", "SM4")];
/// File names each thread uses (so renames overwrite and creates reuse).
const NAMES: usize = 7;
/// Files stay below this size, so each check reads little.
const MAX_FILE: u64 = 640 * 1024;

// ------------------------------------------------------------------ model

/// What a file holds: content, the algorithm in its header (`None` for an
/// empty backend file, the state a crash between create and header leaves)
/// and its override.
#[derive(Debug, Clone, PartialEq)]
struct FileState {
    data: Vec<u8>,
    stored: Option<String>,
    over: Option<String>,
}

type Model = BTreeMap<String, FileState>;

#[derive(Debug, Clone)]
enum Op {
    Create {
        name: String,
        seed: u64,
        len: usize,
    },
    Write {
        name: String,
        off: u64,
        seed: u64,
        len: usize,
    },
    Append {
        name: String,
        seed: u64,
        len: usize,
    },
    Truncate {
        name: String,
        size: u64,
    },
    /// open(O_TRUNC) and write: a new upload.
    Replace {
        name: String,
        seed: u64,
        len: usize,
    },
    Rename {
        from: String,
        to: String,
    },
    Unlink {
        name: String,
    },
    /// setfattr on the file: re-encryption.
    Reencrypt {
        name: String,
        alg: String,
    },
    Fsync {
        name: String,
        data_only: bool,
    },
}

impl Op {
    fn to_line(&self) -> String {
        match self {
            Op::Create { name, seed, len } => format!("create {name} {seed} {len}"),
            Op::Write {
                name,
                off,
                seed,
                len,
            } => format!("write {name} {off} {seed} {len}"),
            Op::Append { name, seed, len } => format!("append {name} {seed} {len}"),
            Op::Truncate { name, size } => format!("truncate {name} {size}"),
            Op::Replace { name, seed, len } => format!("replace {name} {seed} {len}"),
            Op::Rename { from, to } => format!("rename {from} {to}"),
            Op::Unlink { name } => format!("unlink {name}"),
            Op::Reencrypt { name, alg } => format!("reencrypt {name} {alg}"),
            Op::Fsync { name, data_only } => format!("fsync {name} {data_only}"),
        }
    }

    fn parse(line: &str) -> Op {
        let t: Vec<&str> = line.split(' ').collect();
        let s = |i: usize| t[i].to_owned();
        let n = |i: usize| t[i].parse::<u64>().unwrap();
        match t[0] {
            "create" => Op::Create {
                name: s(1),
                seed: n(2),
                len: n(3) as usize,
            },
            "write" => Op::Write {
                name: s(1),
                off: n(2),
                seed: n(3),
                len: n(4) as usize,
            },
            "append" => Op::Append {
                name: s(1),
                seed: n(2),
                len: n(3) as usize,
            },
            "truncate" => Op::Truncate {
                name: s(1),
                size: n(2),
            },
            "replace" => Op::Replace {
                name: s(1),
                seed: n(2),
                len: n(3) as usize,
            },
            "rename" => Op::Rename {
                from: s(1),
                to: s(2),
            },
            "unlink" => Op::Unlink { name: s(1) },
            "reencrypt" => Op::Reencrypt {
                name: s(1),
                alg: s(2),
            },
            "fsync" => Op::Fsync {
                name: s(1),
                data_only: t[2] == "true",
            },
            other => panic!("unknown op in log: {other}"),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::Write { .. } => "write",
            Op::Append { .. } => "append",
            Op::Truncate { .. } => "truncate",
            Op::Replace { .. } => "replace",
            Op::Rename { .. } => "rename",
            Op::Unlink { .. } => "unlink",
            Op::Reencrypt { .. } => "reencrypt",
            Op::Fsync { .. } => "fsync",
        }
    }

    /// The names the operation touches.
    fn names(&self) -> Vec<&str> {
        match self {
            Op::Rename { from, to } => vec![from, to],
            Op::Create { name, .. }
            | Op::Write { name, .. }
            | Op::Append { name, .. }
            | Op::Truncate { name, .. }
            | Op::Replace { name, .. }
            | Op::Unlink { name }
            | Op::Reencrypt { name, .. }
            | Op::Fsync { name, .. } => vec![name],
        }
    }

    /// The model after the operation, in a bucket whose rule is `rule`.
    fn apply(&self, m: &mut Model, rule: &str) {
        // A write to an empty backend file starts a new upload.
        let upload = |f: &mut FileState| {
            if f.stored.is_none() {
                f.stored = Some(f.over.clone().unwrap_or_else(|| rule.to_owned()));
            }
        };
        match self {
            Op::Create { name, seed, len } => {
                m.insert(
                    name.clone(),
                    FileState {
                        data: seeded_bytes(*seed, *len),
                        // The header comes with the first byte.
                        stored: (*len > 0).then(|| rule.to_owned()),
                        over: None,
                    },
                );
            }
            Op::Write {
                name,
                off,
                seed,
                len,
            } => {
                let f = m.get_mut(name).unwrap();
                upload(f);
                let (off, end) = (*off as usize, *off as usize + len);
                if f.data.len() < end {
                    f.data.resize(end, 0);
                }
                f.data[off..end].copy_from_slice(&seeded_bytes(*seed, *len));
            }
            Op::Append { name, seed, len } => {
                let f = m.get_mut(name).unwrap();
                upload(f);
                f.data.extend_from_slice(&seeded_bytes(*seed, *len));
            }
            Op::Truncate { name, size } => {
                let f = m.get_mut(name).unwrap();
                if *size == 0 {
                    f.stored = Some(f.over.clone().unwrap_or_else(|| rule.to_owned()));
                } else {
                    upload(f);
                }
                f.data.resize(*size as usize, 0);
            }
            Op::Replace { name, seed, len } => {
                let f = m.get_mut(name).unwrap();
                f.stored = Some(f.over.clone().unwrap_or_else(|| rule.to_owned()));
                f.data = seeded_bytes(*seed, *len);
            }
            Op::Rename { from, to } => {
                let f = m.remove(from).unwrap();
                m.insert(to.clone(), f);
            }
            Op::Unlink { name } => {
                m.remove(name);
            }
            Op::Reencrypt { name, alg } => {
                let f = m.get_mut(name).unwrap();
                f.stored = Some(alg.clone());
                f.over = Some(alg.clone());
            }
            Op::Fsync { .. } => {}
        }
    }
}

// --------------------------------------------------------------- workload

/// One workload thread: random operations on the files of one bucket, each
/// logged before it starts ("B op") and after it returns ("E", fsync-ed
/// for fsync, whose return is the claim checked after the crash). It stops
/// at the first error, which must come from the kill.
struct Worker {
    dir: PathBuf,
    rule: &'static str,
    model: Model,
    rng: Rng,
    log: File,
    killed: Arc<AtomicBool>,
}

/// How a workload thread ended.
struct Ended {
    ops: usize,
    /// An error that came before the kill: a bug.
    early_error: Option<String>,
}

impl Worker {
    fn log(&mut self, line: &str, sync: bool) {
        // One write per record (O_APPEND): a record is whole or absent.
        self.log.write_all(format!("{line}\n").as_bytes()).unwrap();
        if sync {
            self.log.sync_data().unwrap();
        }
    }

    fn pick(&mut self) -> Op {
        let existing: Vec<String> = self.model.keys().cloned().collect();
        let free: Vec<String> = (0..NAMES)
            .map(|i| format!("f{i}"))
            .filter(|n| !self.model.contains_key(n))
            .collect();
        let r = &mut self.rng;
        let any_name = |r: &mut Rng| format!("f{}", r.below(NAMES as u64));
        if existing.is_empty() || (!free.is_empty() && r.below(8) == 0) {
            let name = free[r.below(free.len() as u64) as usize].clone();
            return Op::Create {
                name,
                seed: r.next_u64(),
                len: r.below(300_000) as usize,
            };
        }
        let name = existing[r.below(existing.len() as u64) as usize].clone();
        let size = self.model[&name].data.len() as u64;
        // write, append, truncate, replace, rename, unlink, reencrypt, fsync
        match r.weighted(&[24, 10, 8, 8, 7, 3, 8, 24]) {
            0 => {
                let off = r.below(size + 40_000).min(MAX_FILE - 1);
                let len = r.range(1, 200_000).min(MAX_FILE - off) as usize;
                Op::Write {
                    name,
                    off,
                    seed: r.next_u64(),
                    len,
                }
            }
            1 if size < MAX_FILE => Op::Append {
                name,
                seed: r.next_u64(),
                len: r.range(1, 100_000.min(MAX_FILE - size)) as usize,
            },
            2 => Op::Truncate {
                name,
                size: r.below((size + 40_000).min(MAX_FILE)),
            },
            3 => Op::Replace {
                name,
                seed: r.next_u64(),
                len: r.below(300_000) as usize,
            },
            4 => {
                let to = any_name(r);
                if to == name {
                    Op::Fsync {
                        name,
                        data_only: false,
                    }
                } else {
                    Op::Rename { from: name, to }
                }
            }
            5 => Op::Unlink { name },
            6 => {
                let alg = ["AES256", "SM4", "KMS"][r.below(3) as usize].to_owned();
                Op::Reencrypt { name, alg }
            }
            _ => Op::Fsync {
                name,
                data_only: r.below(2) == 0,
            },
        }
    }

    fn exec(&self, op: &Op) -> std::io::Result<()> {
        let p = |n: &str| self.dir.join(n);
        match op {
            Op::Create { name, seed, len } => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(p(name))?;
                f.write_all(&seeded_bytes(*seed, *len))
            }
            Op::Write {
                name,
                off,
                seed,
                len,
            } => OpenOptions::new()
                .write(true)
                .open(p(name))?
                .write_all_at(&seeded_bytes(*seed, *len), *off),
            Op::Append { name, seed, len } => OpenOptions::new()
                .append(true)
                .open(p(name))?
                .write_all(&seeded_bytes(*seed, *len)),
            Op::Truncate { name, size } => {
                OpenOptions::new().write(true).open(p(name))?.set_len(*size)
            }
            Op::Replace { name, seed, len } => OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(p(name))?
                .write_all(&seeded_bytes(*seed, *len)),
            Op::Rename { from, to } => fs::rename(p(from), p(to)),
            Op::Unlink { name } => fs::remove_file(p(name)),
            Op::Reencrypt { name, alg } => {
                xattr_set(&p(name), SSE, alg.as_bytes()).map_err(std::io::Error::from_raw_os_error)
            }
            Op::Fsync { name, data_only } => {
                let f = OpenOptions::new().write(true).open(p(name))?;
                if *data_only {
                    f.sync_data()
                } else {
                    f.sync_all()
                }
            }
        }
    }

    fn run(mut self) -> Ended {
        let mut ops = 0;
        loop {
            let op = self.pick();
            self.log(&format!("B {}", op.to_line()), true);
            match self.exec(&op) {
                Ok(()) => {
                    self.log("E", matches!(op, Op::Fsync { .. }));
                    op.apply(&mut self.model, self.rule);
                    ops += 1;
                }
                Err(e) => {
                    self.log(&format!("X {}", errno_of(&e)), true);
                    // The kill flag is set before the kill, so an error
                    // seen without it did not come from the kill. The
                    // kernel fails requests it had sent with ECONNABORTED,
                    // later ones with ENOTCONN, and a write whose pages it
                    // was sending when the connection went with EIO.
                    let from_kill = self.killed.load(Ordering::SeqCst)
                        && matches!(
                            errno_of(&e),
                            libc::ENOTCONN | libc::ECONNABORTED | libc::EIO
                        );
                    return Ended {
                        ops,
                        early_error: (!from_kill).then(|| format!("{} failed: {e}", op.to_line())),
                    };
                }
            }
        }
    }
}

/// Runs `ssefs kms create-key` and `kms rotate-master` back to back (each a
/// keystore write) until told to kill the one running.
struct KeystoreWriter {
    done_keys: usize,
    done_masters: usize,
    killed_in_flight: Option<&'static str>,
}

fn keystore_writer(d: &DataDir, stop: &AtomicBool, mut rng: Rng) -> KeystoreWriter {
    let mut w = KeystoreWriter {
        done_keys: 0,
        done_masters: 0,
        killed_in_flight: None,
    };
    while !stop.load(Ordering::SeqCst) {
        let which = if rng.below(2) == 0 {
            "create-key"
        } else {
            "rotate-master"
        };
        let mut child = d
            .cmd()
            .args(["kms", which])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if stop.load(Ordering::SeqCst) {
                child.kill().unwrap();
                let st = child.wait().unwrap();
                // It may have finished just before the kill.
                break st.success().then_some(st);
            }
            thread::sleep(Duration::from_micros(500));
        };
        match status {
            Some(st) if st.success() => match which {
                "create-key" => w.done_keys += 1,
                _ => w.done_masters += 1,
            },
            Some(st) => panic!("ssefs kms {which} failed: {st}"),
            None => w.killed_in_flight = Some(which),
        }
    }
    w
}

// ---------------------------------------------------------------- checking

/// What a crash left of one bucket, against its log.
struct Replayed {
    /// The model after every operation that returned.
    done: Model,
    /// The operation in flight at the kill, if any.
    in_flight: Option<Op>,
    /// Files whose last operation was an fsync that returned.
    synced: BTreeSet<String>,
}

fn replay(start: &Model, log: &str, rule: &str) -> Replayed {
    let mut r = Replayed {
        done: start.clone(),
        in_flight: None,
        synced: BTreeSet::new(),
    };
    for line in log.lines() {
        if let Some(op) = line.strip_prefix("B ") {
            assert!(r.in_flight.is_none(), "two operations in flight: {line}");
            r.in_flight = Some(Op::parse(op));
        } else if line == "E" {
            let op = r.in_flight.take().expect("E without B");
            for n in op.names() {
                r.synced.remove(n);
            }
            if let Op::Fsync { name, .. } = &op {
                r.synced.insert(name.clone());
            }
            if let Op::Rename { from, to } = &op {
                if r.synced.remove(from) {
                    r.synced.insert(to.clone());
                }
            }
            op.apply(&mut r.done, rule);
        } else {
            // "X errno": the operation was cut by the kill; still in flight.
            assert!(line.starts_with("X "), "bad log line {line:?}");
        }
    }
    r
}

/// One file as read back through the mount: each chunk's bytes, or None
/// for a chunk that failed with EIO.
struct Seen {
    chunks: Vec<Option<Vec<u8>>>,
    size: u64,
    stored: Option<String>,
    over: Option<String>,
}

impl Seen {
    fn whole(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(self.size as usize);
        for c in &self.chunks {
            out.extend_from_slice(c.as_ref()?);
        }
        Some(out)
    }
    fn eio_chunks(&self) -> usize {
        self.chunks.iter().filter(|c| c.is_none()).count()
    }
}

/// Reads `path` chunk by chunk, so one chunk failing does not hide the
/// others (no readahead: each read asks the daemon for that chunk only).
fn read_back(path: &Path, backend: &Path) -> Seen {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: a descriptor this test owns, and plain integers.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    let size = f.metadata().unwrap().len();
    let mut chunks = Vec::new();
    let mut off = 0u64;
    while off < size {
        let want = (size - off).min(CHUNK_SIZE as u64) as usize;
        let mut buf = vec![0u8; want];
        match f.read_exact_at(&mut buf, off) {
            Ok(()) => chunks.push(Some(buf)),
            Err(e) if errno_of(&e) == libc::EIO => chunks.push(None),
            Err(e) => panic!("read {} at {off}: {e} (never EIO-or-data)", path.display()),
        }
        off += want as u64;
    }
    // What the backend's header says. An empty backend file has none:
    // getfattr shows what its first write will use (SEMANTICS.md §3.3),
    // which is not what is stored (regression: recording that as stored
    // made the next round fail "empty backend file" on a file a kill had
    // left empty, once it went untouched).
    let headerless = fs::metadata(backend).unwrap().len() == 0;
    let stored = match xattr_get(path, SSE) {
        _ if headerless => None,
        Ok(v) => Some(v),
        Err(libc::ENODATA) => None,
        Err(e) => panic!("getfattr {}: errno {e}", path.display()),
    };
    let over = match xattr_get(backend, OVERRIDE) {
        Ok(v) => Some(
            toml::from_str::<SseConfig>(&v)
                .unwrap()
                .algorithm
                .as_str()
                .to_owned(),
        ),
        Err(_) => None,
    };
    Seen {
        chunks,
        size,
        stored,
        over,
    }
}

/// Checks a file against the states it may be in: each byte it shows must
/// be that byte of one of them, and its size between theirs (from zero when
/// the operation starts by emptying the file). Chunks may fail with EIO.
fn check_mixed(what: &str, seen: &Seen, states: &[Option<&FileState>], size_from_zero: bool) {
    let sizes: Vec<u64> = states
        .iter()
        .map(|s| s.map_or(0, |f| f.data.len() as u64))
        .collect();
    let lo = if size_from_zero {
        0
    } else {
        *sizes.iter().min().unwrap()
    };
    let hi = *sizes.iter().max().unwrap();
    assert!(
        (lo..=hi).contains(&seen.size),
        "{what}: size {} outside {lo}..={hi}",
        seen.size
    );
    for (k, c) in seen.chunks.iter().enumerate() {
        let Some(c) = c else { continue };
        for (j, &b) in c.iter().enumerate() {
            let i = k * CHUNK_SIZE + j;
            let ok = states.iter().flatten().any(|s| s.data.get(i) == Some(&b));
            assert!(
                ok,
                "{what}: byte {i} = {b:#04x} is in no possible state: wrong data"
            );
        }
    }
}

/// Per-run figures, printed at the end.
#[derive(Default, Debug)]
struct Figures {
    kill_points: usize,
    ops_done: usize,
    in_flight: BTreeMap<&'static str, usize>,
    fsync_claims: usize,
    exact_files: usize,
    eio_files: usize,
    mixed_files: usize,
    headers: usize,
    keystore_kills: usize,
}

/// Checks one bucket after a crash and returns the state to continue from.
/// Files left with EIO chunks are removed (the state is no longer known).
fn check_bucket(
    m: &Mount,
    bucket: &str,
    rule: &str,
    start: &Model,
    log: &str,
    verify_failed: &BTreeMap<String, String>,
    fig: &mut Figures,
) -> Model {
    let r = replay(start, log, rule);
    let after: Option<Model> = r.in_flight.as_ref().map(|op| {
        let mut m2 = r.done.clone();
        op.apply(&mut m2, rule);
        m2
    });
    if let Some(op) = &r.in_flight {
        *fig.in_flight.entry(op.kind()).or_default() += 1;
    }
    let touched: BTreeSet<&str> = r.in_flight.iter().flat_map(|op| op.names()).collect();

    // Names: those of the state before or after the operation in flight.
    let names: BTreeSet<String> = fs::read_dir(m.p(bucket))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let keys = |m: &Model| m.keys().cloned().collect::<BTreeSet<_>>();
    assert!(
        names == keys(&r.done) || after.as_ref().is_some_and(|a| names == keys(a)),
        "{bucket}: names {names:?}, expected {:?} (in flight: {:?})",
        keys(&r.done),
        r.in_flight
    );

    // No object may fail verification except those the operation touched.
    for (f, why) in verify_failed {
        let key = f.strip_prefix(&format!("{bucket}/")).unwrap_or(f);
        assert!(
            !f.starts_with(&format!("{bucket}/")) || touched.contains(key),
            "{f} fails verification ({why}) but was not being written (in flight: {:?})",
            r.in_flight
        );
    }

    let mut next = Model::new();
    for name in &names {
        let what = format!("{bucket}/{name}");
        let backend = m.backend(&what);
        // Every header parses; an empty backend file (no header yet) only
        // where the crash cut an upload.
        let raw_len = fs::metadata(&backend).unwrap().len();
        if raw_len == 0 {
            // Empty before the operation in flight, or after it: a rename
            // in flight may have put an empty file at this name.
            let pre_empty = r.done.get(name).is_some_and(|f| f.stored.is_none())
                || after
                    .as_ref()
                    .and_then(|a| a.get(name))
                    .is_some_and(|f| f.stored.is_none());
            let cut_upload = touched.contains(name.as_str())
                && matches!(
                    r.in_flight,
                    Some(Op::Create { .. } | Op::Replace { .. } | Op::Truncate { size: 0, .. })
                        | Some(Op::Reencrypt { .. })
                );
            assert!(
                pre_empty || cut_upload,
                "{what}: empty backend file; in flight {:?}; before it {:?}; log tail:\n{}",
                r.in_flight,
                r.done.get(name).map(|f| (f.data.len(), &f.stored, &f.over)),
                log.lines().rev().take(12).collect::<Vec<_>>().join("\n")
            );
        } else {
            let mut h = [0u8; HEADER_LEN];
            File::open(&backend)
                .unwrap()
                .read_exact_at(&mut h, 0)
                .unwrap_or_else(|e| panic!("{what}: header unreadable: {e}"));
            Header::parse(&h).unwrap_or_else(|e| panic!("{what}: torn header: {e}"));
            fig.headers += 1;
        }

        let seen = read_back(&m.p(&what), &backend);
        let pre = r.done.get(name);
        let post = after.as_ref().and_then(|a| a.get(name));
        if !touched.contains(name.as_str()) {
            let pre = pre.unwrap();
            let claim = if r.synced.contains(name) {
                fig.fsync_claims += 1;
                "fsync returned"
            } else {
                "the last write returned"
            };
            assert_eq!(
                seen.eio_chunks(),
                0,
                "{what}: EIO, yet {claim} before the kill"
            );
            assert!(
                seen.whole().as_ref() == Some(&pre.data),
                "{what}: content differs, yet {claim} before the kill (size {} vs {})",
                seen.size,
                pre.data.len()
            );
            assert_eq!(seen.stored, pre.stored, "{what}: encryption");
            fig.exact_files += 1;
        } else {
            let op = r.in_flight.as_ref().unwrap();
            match op {
                Op::Rename { from, .. } => {
                    // Atomic: the old file at either name, exactly.
                    let src = r.done.get(from).unwrap();
                    let want = if names.contains(from) {
                        pre.unwrap()
                    } else {
                        src
                    };
                    assert_eq!(seen.whole().as_ref(), Some(&want.data), "{what}: rename");
                    assert_eq!(seen.stored, want.stored, "{what}: encryption");
                }
                Op::Unlink { .. } | Op::Fsync { .. } => {
                    let pre = pre.unwrap();
                    assert_eq!(seen.whole().as_ref(), Some(&pre.data), "{what}: {op:?}");
                    assert_eq!(seen.stored, pre.stored, "{what}: encryption");
                }
                Op::Reencrypt { .. } => {
                    // Atomic for content; the header is old or new (none
                    // while an empty file gets its new header).
                    let (pre, post) = (pre.unwrap(), post.unwrap());
                    assert_eq!(seen.whole().as_ref(), Some(&pre.data), "{what}: reencrypt");
                    assert!(
                        seen.stored == pre.stored
                            || seen.stored == post.stored
                            || (pre.data.is_empty() && seen.stored.is_none()),
                        "{what}: encryption {:?} after {op:?}",
                        seen.stored
                    );
                }
                _ => {
                    // A data operation: old, new, a mix, or EIO chunks.
                    let from_zero = matches!(op, Op::Replace { .. } | Op::Create { .. });
                    check_mixed(&what, &seen, &[pre, post], from_zero);
                    let stored_ok = [pre, post]
                        .iter()
                        .flatten()
                        .any(|s| s.stored == seen.stored)
                        || (from_zero && seen.stored.is_none())
                        || (matches!(op, Op::Truncate { size: 0, .. }) && seen.stored.is_none());
                    assert!(
                        stored_ok,
                        "{what}: encryption {:?} after {op:?}",
                        seen.stored
                    );
                    let whole = seen.whole();
                    if whole.is_none() {
                        fig.eio_files += 1;
                    } else if whole.as_ref() != pre.map(|f| &f.data)
                        && whole.as_ref() != post.map(|f| &f.data)
                    {
                        fig.mixed_files += 1;
                    }
                }
            }
        }
        // Continue from what is there; a file with EIO chunks goes.
        match seen.whole() {
            Some(data) => {
                next.insert(
                    name.clone(),
                    FileState {
                        data,
                        stored: seen.stored.clone(),
                        over: seen.over.clone(),
                    },
                );
            }
            None => fs::remove_file(m.p(&what)).unwrap(),
        }
    }
    next
}

/// Names of the objects `ssefs verify` lists as failed.
fn verify_failures(d: &DataDir) -> BTreeMap<String, String> {
    let r = d.run(&["verify"]);
    assert!(
        r.status == 0 || r.status == 1,
        "verify did not run: {}",
        r.stderr
    );
    let failed: BTreeMap<String, String> = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("FAILED "))
        .map(|l| {
            let (name, why) = l.split_once(": ").unwrap();
            (name.to_owned(), why.to_owned())
        })
        .collect();
    assert_eq!(r.status == 0, failed.is_empty(), "{}", r.stdout);
    failed
}

fn lines_without(out: &str, skip: &str) -> usize {
    out.lines().filter(|l| !l.contains(skip)).count()
}

/// Waits until the process is gone or a zombie (its files are closed then,
/// so the FUSE connection is down).
fn wait_dead(pid: i32) {
    loop {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(s) if !s.contains(") Z ") => thread::sleep(Duration::from_millis(2)),
            _ => return,
        }
    }
}

#[test]
fn daemon_killed_at_random_points_loses_nothing_that_returned() {
    let seed = test_seed("crash");
    let points = env_count("SSEFS_CRASH_POINTS", 40);
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let d = DataDir::new();
    for (b, rule) in BUCKETS {
        d.run(&["bucket", "create", b]).ok();
        d.run(&["bucket", "encryption", "put", b, "--algorithm", rule])
            .ok();
    }
    let logs = d.path("logs");
    fs::create_dir(&logs).unwrap();
    let m = Mount::on(d, &[]);
    let mut models: Vec<Model> = vec![Model::new(); BUCKETS.len()];
    let (mut keys, mut masters) = (0usize, 1usize);
    let mut fig = Figures::default();

    for round in 0..=points {
        if round > 0 {
            m.mount(&[]);
        }
        // The keystore loads (the CLI) and holds what was written, plus at
        // most the one write the kill cut.
        let listed = lines_without(&m.d.run(&["kms", "list-keys"]).ok().stdout, "alias/acs/");
        assert!(
            listed == keys || listed == keys + 1,
            "{listed} keys, {keys} created"
        );
        keys = listed;
        let listed = m.d.run(&["kms", "list-master"]).ok().stdout.lines().count();
        assert!(
            listed == masters || listed == masters + 1,
            "{listed} master versions, {masters} made"
        );
        masters = listed;

        if round > 0 {
            let failed = verify_failures(&m.d);
            for (i, (b, rule)) in BUCKETS.iter().enumerate() {
                let log = fs::read_to_string(logs.join(format!("{round}-{b}"))).unwrap();
                models[i] = check_bucket(&m, b, rule, &models[i], &log, &failed, &mut fig);
            }
            // Files with EIO chunks were removed: the rest verifies.
            let failed = verify_failures(&m.d);
            assert!(failed.is_empty(), "after clean-up: {failed:?}");
        }
        if round == points {
            break;
        }

        // The next crash: workload threads and a keystore writer, killed
        // together after a random delay.
        let pid = daemon_pid(&m);
        let killed = Arc::new(AtomicBool::new(false));
        let delay = Duration::from_micros(rng.range(2_000, 600_000));
        let (ends, w) = thread::scope(|s| {
            let mut workers = Vec::new();
            for (i, (b, rule)) in BUCKETS.iter().enumerate() {
                let w = Worker {
                    dir: m.p(b),
                    rule,
                    model: models[i].clone(),
                    rng: Rng::new(rng.next_u64()),
                    log: OpenOptions::new()
                        .create_new(true)
                        .append(true)
                        .open(logs.join(format!("{}-{b}", round + 1)))
                        .unwrap(),
                    killed: killed.clone(),
                };
                workers.push(s.spawn(move || w.run()));
            }
            let ks_rng = Rng::new(rng.next_u64());
            let (d, killed2) = (&m.d, &killed);
            let ks = s.spawn(move || keystore_writer(d, killed2, ks_rng));
            thread::sleep(delay);
            killed.store(true, Ordering::SeqCst);
            // SAFETY: kill(2) takes plain integers; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            wait_dead(pid);
            let ends: Vec<Ended> = workers.into_iter().map(|w| w.join().unwrap()).collect();
            (ends, ks.join().unwrap())
        });
        for end in ends {
            assert!(
                end.early_error.is_none(),
                "round {}: {:?}",
                round + 1,
                end.early_error
            );
            fig.ops_done += end.ops;
        }
        keys += w.done_keys;
        masters += w.done_masters;
        fig.keystore_kills += usize::from(w.killed_in_flight.is_some());
        fig.kill_points += 1;
    }
    m.unmount();
    eprintln!(
        "crash: {} kill points survived in {:.1?} (seed {seed}): {} operations returned, \
         in flight at the kill {:?}; {} fsync claims and {} other files read back exactly, \
         {} files with EIO chunks, {} mixed old/new, {} headers parsed, \
         {} keystore writers killed mid-write",
        fig.kill_points,
        started.elapsed(),
        fig.ops_done,
        fig.in_flight,
        fig.fsync_claims,
        fig.exact_files - fig.fsync_claims,
        fig.eio_files,
        fig.mixed_files,
        fig.headers,
        fig.keystore_kills,
    );
}

// -------------------------------------------------- reencrypt and rewrap

/// The first 128 bytes of an object's backend file (its header).
fn raw_header(path: &Path) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_LEN];
    File::open(path).unwrap().read_exact_at(&mut h, 0).unwrap();
    h
}

/// `ssefs reencrypt` and `ssefs rewrap` SIGKILLed at random points (after a
/// random number of objects, plus a random few hundred microseconds into
/// the next one), over and over with the rule changing in between: every
/// object reads back exactly each time, every header parses, the keystore
/// loads, and a last full run finishes the job. (ops.rs kills one
/// reencrypt after its first object.)
#[test]
fn reencrypt_and_rewrap_killed_at_random_points_leave_every_object_whole() {
    const OBJECTS: usize = 24;
    let seed = test_seed("crash-cli");
    let points = env_count("SSEFS_CRASH_CLI_POINTS", 12);
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let d = DataDir::new();
    d.run(&["bucket", "create", "bkt"]).ok();
    let mut objects = Vec::new();
    for i in 0..OBJECTS {
        let data = seeded_bytes(rng.next_u64(), rng.below(400_000) as usize);
        let src = d.write("src.bin", &data);
        let key = format!("bkt/o{i:02}");
        // Every fifth object has its own encryption, which reencrypt keeps.
        let mut args = vec!["object", "put", &key, src.to_str().unwrap()];
        if i % 5 == 0 {
            args.extend(["--sse", "SM4"]);
        }
        d.run(&args).ok();
        objects.push((key, data));
    }
    let backend = |key: &str| d.data().join(key);
    let (mut killed_mid_run, mut changed_at_kill) = (0, 0);
    let mut rules = ["AES256", "SM4", "KMS"].iter().cycle();
    for point in 0..points {
        // Each run has work to do: a new master version to re-wrap every
        // object under, or a new rule for all but the SM4 overrides.
        let (cmd, work) = if point % 3 == 2 {
            d.run(&["kms", "rotate-master"]).ok();
            (vec!["rewrap"], OBJECTS)
        } else {
            let alg = rules.next().unwrap();
            d.run(&["bucket", "encryption", "put", "bkt", "--algorithm", alg])
                .ok();
            (vec!["reencrypt", "bkt"], OBJECTS - OBJECTS.div_ceil(5))
        };
        let before: Vec<Vec<u8>> = objects
            .iter()
            .map(|(k, _)| raw_header(&backend(k)))
            .collect();
        let target = rng.below(work as u64) as usize;
        let mut child = d
            .cmd()
            .args(&cmd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let changed = || {
            objects
                .iter()
                .zip(&before)
                .filter(|((k, _), h)| raw_header(&backend(k)) != **h)
                .count()
        };
        // Until `target` objects are rewritten (or the run ends), then a
        // little into the next one.
        while changed() < target && child.try_wait().unwrap().is_none() {
            thread::sleep(Duration::from_micros(100));
        }
        thread::sleep(Duration::from_micros(rng.below(800)));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap();
        child.wait().unwrap();
        killed_mid_run += usize::from(!finished);
        changed_at_kill += changed();

        for (key, data) in &objects {
            Header::parse(&raw_header(&backend(key)))
                .unwrap_or_else(|e| panic!("point {point}: {key}: torn header: {e}"));
            let out = d.path("out.bin");
            let r = d.run(&["object", "get", key, out.to_str().unwrap()]);
            assert_eq!(
                r.status, 0,
                "point {point} ({}): {key}: {}",
                cmd[0], r.stderr
            );
            assert!(
                fs::read(&out).unwrap() == *data,
                "point {point} ({}): {key} differs",
                cmd[0]
            );
        }
        d.run(&["kms", "list-keys"]).ok();
    }
    d.run(&["reencrypt", "bkt"]).ok();
    d.run(&["rewrap"]).ok();
    d.run(&["verify"]).ok();
    let rule = d.run(&["bucket", "encryption", "get", "bkt"]).ok().stdout;
    for (i, (key, data)) in objects.iter().enumerate() {
        let head = d.run(&["object", "head", key]).ok().stdout;
        let want = if i % 5 == 0 {
            "SM4"
        } else {
            rule.trim()
                .strip_prefix("SSEAlgorithm: ")
                .unwrap()
                .lines()
                .next()
                .unwrap()
        };
        assert!(
            head.contains(&format!("x-oss-server-side-encryption: {want}\n")),
            "{key}: {head}"
        );
        let out = d.path("out.bin");
        d.run(&["object", "get", key, out.to_str().unwrap()]).ok();
        assert!(fs::read(&out).unwrap() == *data, "{key} differs at the end");
    }
    // Temp files of killed runs stay in .ssefs/tmp until they are 10 minutes
    // old; they are never objects.
    let temps = fs::read_dir(d.data().join(".ssefs/tmp")).unwrap().count();
    eprintln!(
        "crash-cli: {points} kill points in {:.1?} (seed {seed}): {killed_mid_run} runs killed \
         mid-way, {changed_at_kill} objects rewritten before the kills, {temps} temp files left",
        started.elapsed()
    );
}

// ------------------------------------------------------------ regressions

/// Found by the crash workload: after a re-encryption the kernel keeps
/// knowing the object by the inode number of its old backend file, which
/// the rename had freed. A file created next could get that number back on
/// the backend, and the daemon took it for the re-encrypted object: its
/// writes went to the other file.
#[test]
fn regression_a_new_file_never_takes_the_inode_number_of_a_reencrypted_one() {
    use std::os::unix::fs::MetadataExt;
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    let a = seeded_bytes(1, 100_000);
    fs::write(m.p("bkt/a"), &a).unwrap();
    // Held open, so the kernel keeps the inode (and its number).
    let held = File::open(m.p("bkt/a")).unwrap();
    let ino = held.metadata().unwrap().ino();
    let old_backend = fs::metadata(m.backend("bkt/a")).unwrap().ino();
    xattr_set(&m.p("bkt/a"), SSE, b"SM4").unwrap();
    assert_ne!(fs::metadata(m.backend("bkt/a")).unwrap().ino(), old_backend);
    for i in 0..40 {
        let name = format!("bkt/n{i}");
        let data = seeded_bytes(100 + i, 5_000 + i as usize);
        fs::write(m.p(&name), &data).unwrap();
        assert_ne!(fs::metadata(m.p(&name)).unwrap().ino(), ino, "{name}");
        assert_eq!(fs::read(m.p(&name)).unwrap(), data, "{name}");
    }
    assert_eq!(fs::read(m.p("bkt/a")).unwrap(), a);
    assert_eq!(xattr_get(&m.p("bkt/a"), SSE).unwrap(), "SM4");
    drop(held);
}

/// Found by the crash workload: `ssefs mount` right after the daemon died
/// missed the dead mount (a stat of the mount point is answered from the
/// kernel's attribute cache for a second) and returned at once, the dead
/// mount still in place: every access then failed with ENOTCONN.
#[test]
fn regression_a_mount_right_after_a_crash_replaces_the_dead_one() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    fs::write(m.p("bkt/f"), b"kept").unwrap();
    // Fresh attributes of the mount point in the kernel's cache.
    fs::metadata(&m.mnt).unwrap();
    let pid = daemon_pid(&m);
    // SAFETY: kill(2) takes plain integers; no memory is involved.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_dead(pid);
    m.mount(&[]);
    assert_eq!(fs::read(m.p("bkt/f")).unwrap(), b"kept");
}

/// Found by the crash workload: a crash between creating an object and
/// writing its header leaves an empty backend file, which the mount reads
/// as an empty object, yet `ssefs verify` listed it as corrupt (and
/// `reencrypt` and `rewrap` as failed) on every run.
#[test]
fn regression_verify_passes_over_the_empty_file_a_crash_leaves_before_the_header() {
    let d = DataDir::new();
    d.run(&["bucket", "create", "bkt"]).ok();
    d.run(&["bucket", "encryption", "put", "bkt", "--algorithm", "SM4"])
        .ok();
    // What create_object leaves when killed after open(O_CREAT) and before
    // the header write.
    File::create(d.data().join("bkt/cut")).unwrap();
    let src = d.write("src.bin", &seeded_bytes(3, 40_000));
    d.run(&["object", "put", "bkt/whole", src.to_str().unwrap()])
        .ok();
    let r = d.run(&["verify"]).ok();
    assert!(
        r.stdout.contains("2 objects checked, 0 failed"),
        "{}",
        r.stdout
    );
    d.run(&[
        "bucket",
        "encryption",
        "put",
        "bkt",
        "--algorithm",
        "AES256",
    ])
    .ok();
    let r = d.run(&["reencrypt", "bkt"]).ok();
    assert!(r.stdout.contains("1 rewritten, 0 failed"), "{}", r.stdout);
    d.run(&["kms", "rotate-master"]).ok();
    let r = d.run(&["rewrap"]).ok();
    assert!(r.stdout.contains("1 rewrapped, 0 failed"), "{}", r.stdout);
    // The mount agrees: an empty object, which takes a header when written.
    let m = Mount::on(d, &[]);
    assert_eq!(fs::read(m.p("bkt/cut")).unwrap(), b"");
    fs::write(m.p("bkt/cut"), b"now whole").unwrap();
    assert_eq!(xattr_get(&m.p("bkt/cut"), SSE).unwrap(), "AES256");
    m.d.run(&["verify"]).ok();
}
