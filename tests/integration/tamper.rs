//! The backend in an attacker's hands (issue 6, part 2), through a real mount.
//!
//! For every kind of object (unencrypted, AES256, SM4, KMS, KMS with SM4
//! data, KMS with a named CMK) and every shape (empty, one short chunk, one
//! full chunk, several chunks ending short or on a boundary, with holes), a
//! seeded random set of tamper cases is applied to the backend files while
//! the data directory is unmounted. A fresh mount (cold chunk and page
//! caches) then reads every object:
//! - a case docs/SECURITY.md says is detected must fail (EIO; ENOKEY when a
//!   forged header names a key that does not exist), the mount log must name
//!   the object with the OSS code, and every read that succeeds (chunk by
//!   chunk with O_DIRECT, and sequentially) must return original bytes;
//! - a case SECURITY.md lists as undetected must read back exactly as it
//!   says (e.g. a zeroed interior chunk reads as zeros).
//!
//! `TAMPER_SEED=N` replays a run; the seed is printed either way.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

use crate::mount::Mount;

const SSE: &str = "user.oss.server-side-encryption";
const KEY: &str = "user.oss.server-side-encryption-key-id";
const DATA: &str = "user.oss.server-side-data-encryption";

// The layout of docs/FORMAT.md §2-§3, restated here so the test checks the
// spec rather than the code. Buckets made through the mount have wide slots
// (§3.1): R (12), N (12), ciphertext, tag (16).
const HDR: usize = 128;
const CHUNK: usize = 16 * 1024;
const OVERHEAD: usize = 12 + 12 + 16;
const SLOT: usize = CHUNK + OVERHEAD;
const KEY_ID: std::ops::Range<usize> = 32..48;
const OBJECT_ID: std::ops::Range<usize> = 16..32;
/// The header's fields (§2), so that each is hit about as often as the
/// others whatever its size; the last is the checksum.
const FIELDS: &[std::ops::Range<usize>] = &[
    0..8,
    8..9,
    9..10,
    10..11,
    11..12,
    12..13,
    13..16,
    OBJECT_ID,
    KEY_ID,
    48..52,
    52..64,
    64..96,
    96..112,
    112..128,
];

/// splitmix64: small, seedable, good enough to pick tamper cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn range(&mut self, r: std::ops::Range<usize>) -> usize {
        r.start + self.below(r.end - r.start)
    }
    fn mask(&mut self) -> u8 {
        1 + self.below(255) as u8
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
}

struct Kind {
    bucket: &'static str,
    rule: &'static [(&'static str, &'static str)],
    kms: bool,
}

const KINDS: &[Kind] = &[
    Kind {
        bucket: "t-plain",
        rule: &[],
        kms: false,
    },
    Kind {
        bucket: "t-aes256",
        rule: &[(SSE, "AES256")],
        kms: false,
    },
    Kind {
        bucket: "t-sm4",
        rule: &[(SSE, "SM4")],
        kms: false,
    },
    Kind {
        bucket: "t-kms",
        rule: &[(SSE, "KMS")],
        kms: true,
    },
    Kind {
        bucket: "t-kms-sm4",
        rule: &[(SSE, "KMS"), (DATA, "SM4")],
        kms: true,
    },
    Kind {
        bucket: "t-cmk",
        rule: &[(SSE, "KMS"), (KEY, "alias/tamper")],
        kms: true,
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Empty,
    /// One chunk shorter than C.
    Short,
    /// Exactly one full chunk.
    OneFull,
    /// Three full chunks and a short one.
    Multi,
    /// Four full chunks.
    MultiExact,
    /// Data, two holes, a full data chunk, a short last chunk.
    Holes,
}

const SHAPES: &[Shape] = &[
    Shape::Empty,
    Shape::Short,
    Shape::OneFull,
    Shape::Multi,
    Shape::MultiExact,
    Shape::Holes,
];

/// Lengths drawn once per run, so that every object of a shape has the
/// same layout and chunks can be moved between any two of them.
struct Layout {
    short: usize,
    tail: usize,
}

impl Shape {
    fn len(self, l: &Layout) -> usize {
        match self {
            Shape::Empty => 0,
            Shape::Short => l.short,
            Shape::OneFull => CHUNK,
            Shape::Multi => 3 * CHUNK + l.tail,
            Shape::MultiExact => 4 * CHUNK,
            Shape::Holes => 4 * CHUNK + l.tail,
        }
    }
    fn holes(self) -> &'static [usize] {
        if self == Shape::Holes {
            &[1, 2]
        } else {
            &[]
        }
    }
    fn content(self, l: &Layout, rng: &mut Rng) -> Vec<u8> {
        let mut v = rng.bytes(self.len(l));
        for &h in self.holes() {
            v[h * CHUNK..(h + 1) * CHUNK].fill(0);
        }
        v
    }
    fn chunks(self, l: &Layout) -> usize {
        self.len(l).div_ceil(CHUNK)
    }
    /// Data (not hole) chunks holding a full C bytes.
    fn full_data_chunks(self, l: &Layout) -> Vec<usize> {
        (0..self.chunks(l))
            .filter(|i| (i + 1) * CHUNK <= self.len(l) && !self.holes().contains(i))
            .collect()
    }
    fn data_chunks(self, l: &Layout) -> Vec<usize> {
        (0..self.chunks(l))
            .filter(|i| !self.holes().contains(i))
            .collect()
    }
}

/// What is done to the backend file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    // Detected, per docs/SECURITY.md.
    HeaderFlip,
    HeaderForge,
    ChunkFlip,
    TruncAtBoundary,
    TruncOffBoundary,
    Append,
    SwapWithin,
    ChunkFromOther,
    HeaderFromOther,
    // Not detected, per docs/SECURITY.md.
    TruncToHeader,
    TruncToZero,
    ZeroInteriorChunk,
    ChunkRollback,
    ObjectRollback,
    ObjectSwap,
}

const DETECTED: &[Class] = &[
    Class::HeaderFlip,
    Class::HeaderForge,
    Class::ChunkFlip,
    Class::TruncAtBoundary,
    Class::TruncOffBoundary,
    Class::Append,
    Class::SwapWithin,
    Class::ChunkFromOther,
    Class::HeaderFromOther,
];
const UNDETECTED: &[Class] = &[
    Class::TruncToHeader,
    Class::TruncToZero,
    Class::ZeroInteriorChunk,
    Class::ChunkRollback,
    Class::ObjectRollback,
    Class::ObjectSwap,
];

impl Class {
    fn applies(self, s: Shape, l: &Layout) -> bool {
        let n = s.chunks(l);
        match self {
            Class::HeaderFlip
            | Class::HeaderForge
            | Class::TruncOffBoundary
            | Class::Append
            | Class::HeaderFromOther
            | Class::TruncToZero => true,
            Class::ChunkFlip
            | Class::ChunkFromOther
            | Class::TruncToHeader
            | Class::ChunkRollback
            | Class::ObjectRollback
            | Class::ObjectSwap => n > 0,
            Class::TruncAtBoundary => n >= 2,
            Class::SwapWithin => s.full_data_chunks(l).len() >= 2,
            Class::ZeroInteriorChunk => s.full_data_chunks(l).iter().any(|&i| i + 1 < n),
        }
    }
}

struct Case {
    kind: usize,
    shape: Shape,
    class: Class,
    /// bucket/key, as the mount log names it.
    name: String,
    /// The content when the data directory was unmounted.
    original: Vec<u8>,
    /// For rollbacks: an earlier content and its backend file.
    older: Option<(Vec<u8>, Vec<u8>)>,
    /// For a chunk rollback: the chunk rewritten since.
    rolled: usize,
    /// What was done, for failure messages.
    what: String,
}

/// What reading the tampered object must give.
enum Expect {
    /// An error with this errno, logged with this OSS code.
    Fails(i32, &'static str),
    /// Exactly these bytes (a case SECURITY.md lists as undetected, or one
    /// that cannot change what reads return).
    Reads(Vec<u8>),
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

/// The header checksum of FORMAT.md §2.3, so a forged header passes it and
/// only the keyed checks (§2.2, §4) stand.
fn fix_checksum(h: &mut [u8]) {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"ssefs-header-v1");
    ctx.update(&h[..112]);
    h[112..128].copy_from_slice(&ctx.finish().as_ref()[..16]);
}

fn slot(b: &[u8], i: usize) -> &[u8] {
    let at = HDR + i * SLOT;
    &b[at..(at + SLOT).min(b.len())]
}

/// Applies `c.class` to `own` (the pristine backend bytes) with random
/// parameters; returns the tampered bytes and the expectation.
fn tamper(
    c: &mut Case,
    own: &[u8],
    cases: &[(usize, Shape, Vec<u8>, Vec<u8>)],
    me: usize,
    l: &Layout,
    rng: &mut Rng,
) -> (Vec<u8>, Expect) {
    let kind = &KINDS[c.kind];
    let eio = Expect::Fails(libc::EIO, "DataIntegrityError");
    let mut b = own.to_vec();
    let n = c.shape.chunks(l);
    let (my_kind, my_shape) = (c.kind, c.shape);
    // Another case's object with the same shape (for chunk moves), or any
    // other non-empty one; half the time of the same kind, so the same key.
    let donor = |rng: &mut Rng, same_shape: bool, same_kind: bool| -> usize {
        loop {
            let d = rng.below(cases.len());
            let (dk, ds, _, _) = &cases[d];
            let ok = d != me
                && (!same_shape || *ds == my_shape)
                && (same_kind == (*dk == my_kind))
                && *ds != Shape::Empty;
            if ok {
                return d;
            }
        }
    };
    let expect = match c.class {
        Class::HeaderFlip => {
            let field = FIELDS[rng.below(FIELDS.len())].clone();
            let at = rng.range(field);
            let m = rng.mask();
            b[at] ^= m;
            c.what = format!("header byte {at} ^= {m:#04x}");
            eio
        }
        Class::HeaderForge => {
            // Any field but the checksum, which is then recomputed.
            let field = FIELDS[rng.below(FIELDS.len() - 1)].clone();
            let at = rng.range(field);
            let m = rng.mask();
            b[at] ^= m;
            fix_checksum(&mut b[..HDR]);
            c.what = format!("header byte {at} ^= {m:#04x}, checksum recomputed");
            if kind.kms && KEY_ID.contains(&at) {
                // Names a CMK that does not exist: indistinguishable from a
                // deleted key.
                Expect::Fails(libc::ENOKEY, "KeyNotFound")
            } else {
                // An unencrypted object's header, empty or not, carries its
                // keyed MAC (FORMAT.md §2.5).
                eio
            }
        }
        Class::ChunkFlip => {
            let i = rng.below(n);
            let len = slot(own, i).len();
            let at = rng.below(len);
            let m = rng.mask();
            b[HDR + i * SLOT + at] ^= m;
            c.what = format!("chunk {i} slot byte {at} (of {len}) ^= {m:#04x}");
            eio
        }
        Class::TruncAtBoundary => {
            let k = rng.range(1..n);
            b.truncate(HDR + k * SLOT);
            c.what = format!("truncated to {k} of {n} chunks");
            eio
        }
        Class::TruncOffBoundary => {
            // Inside the header, or inside a slot but not at its start:
            // leaving at most its overhead of it (no length an object
            // has), or more.
            let len = match rng.below(3) {
                _ if n == 0 => rng.range(1..HDR),
                0 => rng.range(1..HDR),
                1 => HDR + rng.below(n) * SLOT + rng.range(1..OVERHEAD + 1),
                _ => {
                    let i = rng.below(n);
                    HDR + i * SLOT + rng.range(OVERHEAD + 1..slot(own, i).len())
                }
            };
            b.truncate(len);
            c.what = format!("truncated to {len} of {} bytes", own.len());
            eio
        }
        Class::Append => {
            let (what, extra) = match rng.below(4) {
                0 => ("a zero slot", vec![0u8; SLOT]),
                1 => {
                    let k = rng.range(1..29);
                    ("random bytes", rng.bytes(k))
                }
                2 => {
                    let k = rng.range(29..SLOT);
                    ("random bytes", rng.bytes(k))
                }
                _ if n > 0 => ("a copy of its first slot", slot(own, 0).to_vec()),
                _ => ("a zero slot", vec![0u8; SLOT]),
            };
            c.what = format!("appended {what} ({} bytes)", extra.len());
            b.extend_from_slice(&extra);
            eio
        }
        Class::SwapWithin => {
            let full = c.shape.full_data_chunks(l);
            let i = rng.pick(&full);
            let j = loop {
                let j = rng.pick(&full);
                if j != i {
                    break j;
                }
            };
            let (si, sj) = (slot(own, i).to_vec(), slot(own, j).to_vec());
            b[HDR + i * SLOT..][..SLOT].copy_from_slice(&sj);
            b[HDR + j * SLOT..][..SLOT].copy_from_slice(&si);
            c.what = format!("chunks {i} and {j} swapped");
            eio
        }
        Class::ChunkFromOther => {
            let same_kind = rng.below(2) == 0;
            let d = donor(rng, true, same_kind);
            let dbytes = &cases[d].3;
            // The same index, or (between full data chunks) another one.
            let full = c.shape.full_data_chunks(l);
            let (from, to) = if full.len() >= 2 && rng.below(2) == 0 {
                (rng.pick(&full), rng.pick(&full))
            } else {
                let data = c.shape.data_chunks(l);
                let i = rng.pick(&data);
                (i, i)
            };
            let s = slot(dbytes, from);
            b[HDR + to * SLOT..][..s.len()].copy_from_slice(s);
            c.what = format!(
                "chunk {to} replaced by chunk {from} of {} ({})",
                d,
                if same_kind { "same key" } else { "other kind" }
            );
            eio
        }
        Class::HeaderFromOther => {
            let same_kind = rng.below(2) == 0;
            let d = donor(rng, false, same_kind);
            b[..HDR].copy_from_slice(&cases[d].3[..HDR]);
            c.what = format!("header of case {d}");
            if n == 0 {
                // No chunk to bind: it reads as the empty object it is.
                Expect::Reads(Vec::new())
            } else {
                eio
            }
        }
        Class::TruncToHeader => {
            b.truncate(HDR);
            c.what = "truncated to the bare header".into();
            Expect::Reads(Vec::new())
        }
        Class::TruncToZero => {
            b.clear();
            c.what = "truncated to zero bytes".into();
            Expect::Reads(Vec::new())
        }
        Class::ZeroInteriorChunk => {
            let cands: Vec<usize> = c
                .shape
                .full_data_chunks(l)
                .into_iter()
                .filter(|&i| i + 1 < n)
                .collect();
            let i = rng.pick(&cands);
            b[HDR + i * SLOT..][..SLOT].fill(0);
            c.what = format!("interior chunk {i} zeroed");
            let mut want = c.original.clone();
            want[i * CHUNK..(i + 1) * CHUNK].fill(0);
            Expect::Reads(want)
        }
        Class::ChunkRollback => {
            let (old_plain, old_backend) = c.older.as_ref().expect("written twice");
            let i = c.rolled;
            let s = slot(old_backend, i);
            b[HDR + i * SLOT..][..s.len()].copy_from_slice(s);
            c.what = format!("chunk {i} rolled back to its previous version");
            let mut want = c.original.clone();
            let end = ((i + 1) * CHUNK).min(want.len());
            want[i * CHUNK..end].copy_from_slice(&old_plain[i * CHUNK..end]);
            Expect::Reads(want)
        }
        Class::ObjectRollback => {
            let (old_plain, old_backend) = c.older.clone().expect("written twice");
            b = old_backend;
            c.what = "whole object rolled back to its previous version".into();
            Expect::Reads(old_plain)
        }
        Class::ObjectSwap => {
            let same_kind = rng.below(2) == 0;
            let d = donor(rng, false, same_kind);
            b = cases[d].3.clone();
            c.what = format!("whole object replaced by case {d}");
            Expect::Reads(cases[d].2.clone())
        }
    };
    (b, expect)
}

/// The mount log from where the last call left off.
struct LogTail {
    path: std::path::PathBuf,
    at: usize,
}

impl LogTail {
    fn new_text(&mut self) -> String {
        let all = fs::read(&self.path).unwrap_or_default();
        let new = String::from_utf8_lossy(&all[self.at.min(all.len())..]).into_owned();
        self.at = all.len();
        new
    }
}

/// Reads the object every way and checks the outcome against `e`. Returns
/// an error message for a failed check.
fn check(m: &Mount, c: &Case, e: &Expect, log: &mut LogTail) -> Result<(), String> {
    let path = m.p(&c.name);
    log.new_text();
    match e {
        Expect::Reads(want) => {
            let got = fs::read(&path).map_err(|e| format!("read failed: {e}"))?;
            if &got != want {
                return Err(format!(
                    "read {} bytes, not the {} SECURITY.md says",
                    got.len(),
                    want.len()
                ));
            }
            Ok(())
        }
        Expect::Fails(want_errno, code) => {
            let want_errno = *want_errno;
            let is_wanted = |e: &std::io::Error| errno_of(e) == want_errno;
            // Either the open fails, or the sequential read does.
            match File::open(&path) {
                Err(e) if is_wanted(&e) => {}
                Err(e) => return Err(format!("open failed with {e}")),
                Ok(mut f) => {
                    // Chunk by chunk, past the cache: each read is its own
                    // request, so an intact chunk must come back intact.
                    let direct = OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_DIRECT)
                        .open(&path)
                        .map_err(|e| format!("O_DIRECT open failed with {e}"))?;
                    let mut buf = vec![0u8; CHUNK];
                    for i in 0..=c.original.len().div_ceil(CHUNK) {
                        let off = i * CHUNK;
                        match direct.read_at(&mut buf, off as u64) {
                            Ok(0) => {}
                            Ok(k) => {
                                if c.original.get(off..off + k) != Some(&buf[..k]) {
                                    return Err(format!(
                                        "chunk {i}: {k} bytes that differ from the original"
                                    ));
                                }
                            }
                            Err(e) if is_wanted(&e) => {}
                            Err(e) => return Err(format!("chunk {i}: {e}")),
                        }
                    }
                    let mut all = Vec::new();
                    match f.read_to_end(&mut all) {
                        Ok(_) => return Err("a sequential read succeeded".into()),
                        Err(e) if is_wanted(&e) => {
                            if !c.original.starts_with(&all) {
                                return Err(
                                    "a failed sequential read returned wrong bytes first".into()
                                );
                            }
                        }
                        Err(e) => return Err(format!("sequential read: {e}")),
                    }
                }
            }
            let text = log.new_text();
            let named = text
                .lines()
                .any(|l| l.contains(code) && l.contains(&format!("\"{}\"", c.name)));
            if !named {
                return Err(format!("no log line with {code} names {}: {text}", c.name));
            }
            Ok(())
        }
    }
}

/// Creates or overwrites (O_TRUNC: a new upload) the object at `p`, leaving
/// the shape's holes unwritten.
fn write_object(p: &std::path::Path, shape: Shape, content: &[u8]) {
    let f = File::create(p).unwrap();
    if content.is_empty() {
        // An object created empty has no header until its first byte
        // (FORMAT.md §1); a truncation to zero is a new upload, which writes
        // one, and the header is what the cases tamper with.
        f.set_len(0).unwrap();
    }
    for (i, piece) in content.chunks(CHUNK).enumerate() {
        if !shape.holes().contains(&i) {
            f.write_all_at(piece, (i * CHUNK) as u64).unwrap();
        }
    }
}

#[test]
fn tampering_with_every_kind_of_object_is_detected_or_behaves_as_documented() {
    let seed = std::env::var("TAMPER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("tamper: TAMPER_SEED={seed}");
    let mut rng = Rng(seed);
    let l = Layout {
        short: rng.range(1..CHUNK),
        tail: rng.range(1..CHUNK),
    };

    let m = Mount::new(&[]);
    m.d.run(&["kms", "create-key", "--alias", "alias/tamper"])
        .ok();
    for k in KINDS {
        fs::create_dir(m.p(k.bucket)).unwrap();
        for (name, v) in k.rule {
            m.setfattr(k.bucket, name, v).unwrap();
        }
    }

    // Every detected class twice (different random parameters), every
    // undetected one once, for each kind and shape that it applies to.
    let mut cases = Vec::new();
    for (ki, k) in KINDS.iter().enumerate() {
        for &s in SHAPES {
            let classes = DETECTED.iter().chain(DETECTED).chain(UNDETECTED);
            for &class in classes.filter(|c| c.applies(s, &l)) {
                let name = format!("{}/c{:04}", k.bucket, cases.len());
                cases.push(Case {
                    kind: ki,
                    shape: s,
                    class,
                    name,
                    original: s.content(&l, &mut rng),
                    older: None,
                    rolled: 0,
                    what: String::new(),
                });
            }
        }
    }

    // Write them through the mount; rollback cases write twice and keep the
    // first version's backend file.
    for c in &mut cases {
        let p = m.p(&c.name);
        write_object(&p, c.shape, &c.original);
        match c.class {
            Class::ChunkRollback => {
                let old = fs::read(m.backend(&c.name)).unwrap();
                let i = rng.pick(&c.shape.data_chunks(&l));
                let end = ((i + 1) * CHUNK).min(c.original.len());
                let fresh = rng.bytes(end - i * CHUNK);
                let mut newer = c.original.clone();
                newer[i * CHUNK..end].copy_from_slice(&fresh);
                let f = OpenOptions::new().write(true).open(&p).unwrap();
                f.write_all_at(&fresh, (i * CHUNK) as u64).unwrap();
                c.older = Some((std::mem::replace(&mut c.original, newer), old));
                c.rolled = i;
            }
            Class::ObjectRollback => {
                let old = fs::read(m.backend(&c.name)).unwrap();
                let newer = c.shape.content(&l, &mut rng);
                write_object(&p, c.shape, &newer);
                c.older = Some((std::mem::replace(&mut c.original, newer), old));
            }
            _ => {}
        }
    }
    m.unmount();

    let pristine: Vec<(usize, Shape, Vec<u8>, Vec<u8>)> = cases
        .iter()
        .map(|c| {
            let b = fs::read(m.backend(&c.name)).unwrap();
            (c.kind, c.shape, c.original.clone(), b)
        })
        .collect();
    // The premise: the layout is FORMAT.md's, holes are all-zero slots.
    for (c, (_, _, _, b)) in cases.iter().zip(&pristine) {
        let n = c.shape.chunks(&l);
        let expect_len = HDR + c.original.len() + n * (SLOT - CHUNK);
        assert_eq!(b.len(), expect_len, "{}: backend length", c.name);
        for &h in c.shape.holes() {
            assert!(slot(b, h).iter().all(|&x| x == 0), "{}: hole {h}", c.name);
        }
    }

    let mut expects = Vec::new();
    for (i, c) in cases.iter_mut().enumerate() {
        let (bytes, e) = tamper(c, &pristine[i].3, &pristine, i, &l, &mut rng);
        // Rewrite in place: the inode and its xattrs stay.
        let mut f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(m.backend(&c.name))
            .unwrap();
        f.write_all(&bytes).unwrap();
        expects.push(e);
    }

    m.mount(&[]);
    let mut log = LogTail {
        path: m.d.data().join(".ssefs/mount.log"),
        at: 0,
    };
    let mut failures = Vec::new();
    let (mut detectable, mut detected, mut enokey) = (0, 0, 0);
    let (mut documented, mut harmless) = (0, 0);
    for (i, (c, e)) in cases.iter().zip(&expects).enumerate() {
        match e {
            Expect::Fails(errno, _) => {
                detectable += 1;
                if *errno == libc::ENOKEY {
                    enokey += 1;
                }
            }
            Expect::Reads(_) if UNDETECTED.contains(&c.class) => documented += 1,
            Expect::Reads(_) => harmless += 1,
        }
        match check(&m, c, e, &mut log) {
            Ok(()) => {
                if matches!(e, Expect::Fails(..)) {
                    detected += 1;
                }
            }
            Err(why) => failures.push(format!(
                "case {i} {} ({:?}, {:?}, {:?}: {}): {why}",
                c.name, KINDS[c.kind].bucket, c.shape, c.class, c.what
            )),
        }
    }
    println!(
        "tamper: {} cases tried on {} kinds x {} shapes: {detectable} detectable, {detected} detected \
         ({enokey} as KeyNotFound); {documented} in classes SECURITY.md lists as undetected, \
         {harmless} that leave an empty object empty",
        cases.len(),
        KINDS.len(),
        SHAPES.len()
    );
    for class in DETECTED.iter().chain(UNDETECTED) {
        let n = cases.iter().filter(|c| c.class == *class).count();
        println!("tamper:   {class:?}: {n}");
    }
    assert!(
        failures.is_empty(),
        "TAMPER_SEED={seed}: {} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
