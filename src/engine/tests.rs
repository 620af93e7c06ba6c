//! Engine tests without a mount: random access against a model, tampering,
//! OSS precedence rules, KMS key states and permissions.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;

use proptest::prelude::*;

use super::*;
use crate::crypto::Cipher;
use crate::format::tests::FixedKek;
use crate::format::SlotFormat::{Narrow, Wide};
use crate::format::{ChunkSize, CHUNK_OVERHEAD};
use crate::kms::KeyOrigin;
use crate::oss::{BucketName, ObjectKey};

// ---------------------------------------------------------------- helpers

/// The default chunk size, for the tests that are not about chunk sizes.
const CHUNK_SIZE: usize = ChunkSize::DEFAULT.bytes();
const SLOT_SIZE: usize = CHUNK_SIZE + CHUNK_OVERHEAD;

fn slot_offset(i: u64) -> u64 {
    ChunkSize::DEFAULT.slot_offset(i)
}

/// An ObjectFile on a temp file with a random data key (no KMS involved).
fn temp_object(cipher: Cipher) -> (tempfile::NamedTempFile, ObjectFile, SecretKey) {
    temp_object_in(cipher, ChunkSize::DEFAULT)
}

/// `temp_object` with chunks of `chunk`.
fn temp_object_in(
    cipher: Cipher,
    chunk: ChunkSize,
) -> (tempfile::NamedTempFile, ObjectFile, SecretKey) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(tmp.path())
        .unwrap();
    let (h, key) = if cipher == Cipher::None {
        let key = SecretKey::random(crate::crypto::PLAIN_MAC_KEY_LEN);
        (Header::new_plain(chunk, &key).unwrap(), key)
    } else {
        let kek = FixedKek {
            key_id: [0; 16],
            version: 1,
            key: SecretKey::random(32),
            nonce: [9; 12],
        };
        Header::new_sealed(Method::Oss, cipher, chunk, &kek)
    };
    // A small shared cache, so the tests also cover hits, evictions and
    // invalidation.
    let o = ObjectFile::create(f, h, &key, "test".into())
        .unwrap()
        .with_cache(Some(std::sync::Arc::new(super::ChunkCache::new(
            6 * chunk.bytes(),
        ))));
    (tmp, o, key)
}

/// Opens the object again from its file, as a later process would.
fn reopen(tmp: &tempfile::NamedTempFile, key: &SecretKey) -> ObjectFile {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(tmp.path())
        .unwrap();
    let h = Engine::read_header(&f, "test").unwrap();
    ObjectFile::new(f, h, key, "test".into()).unwrap()
}

struct Env {
    _dir: tempfile::TempDir,
    engine: Engine,
    data: std::path::PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let root = RootKeySource::File(dir.path().join("root.key"));
    Engine::init(&data, &root).unwrap();
    let engine = Engine::open(&data, &root).unwrap();
    Env {
        _dir: dir,
        engine,
        data,
    }
}

fn b(s: &str) -> BucketName {
    BucketName::parse(s).unwrap()
}

fn k(s: &str) -> ObjectKey {
    ObjectKey::parse(s).unwrap()
}

fn rule(a: &str, key: Option<&str>, data: Option<&str>) -> SseConfig {
    SseConfig::bucket_rule(a, key, data).unwrap()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn root() -> Principal {
    Principal::root()
}

impl Env {
    fn put(
        &self,
        bucket: &str,
        key: &str,
        data: &[u8],
        over: Option<&SseConfig>,
    ) -> Result<ObjectInfo> {
        self.engine
            .put_object(&root(), &b(bucket), &k(key), &mut &data[..], over)
    }
    fn get_as(&self, p: &Principal, bucket: &str, key: &str) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.engine.get_object(p, &b(bucket), &k(key), &mut v)?;
        Ok(v)
    }
    fn get(&self, bucket: &str, key: &str) -> Result<Vec<u8>> {
        self.get_as(&root(), bucket, key)
    }
    fn path(&self, bucket: &str, key: &str) -> std::path::PathBuf {
        self.data.join(bucket).join(key)
    }
}

// ------------------------------------------------- random access vs model

#[derive(Debug, Clone)]
enum Op {
    Write(u64, Vec<u8>),
    Read(u64, usize),
    Truncate(u64),
}

/// Operations over the first 5 chunks of an object of chunk size `c`.
fn op(c: usize) -> impl Strategy<Value = Op> {
    let max = 5 * c as u64;
    prop_oneof![
        (0..max, prop::collection::vec(any::<u8>(), 1..2 * c)).prop_map(|(o, d)| Op::Write(o, d)),
        (0..max, 1usize..3 * c).prop_map(|(o, l)| Op::Read(o, l)),
        (0..max).prop_map(Op::Truncate),
    ]
}

/// A chunk size (every one the format allows, in `format`'s slots) and up
/// to `n` operations.
fn sized_ops(
    n: usize,
    format: crate::format::SlotFormat,
) -> impl Strategy<Value = (ChunkSize, Vec<Op>)> {
    prop::sample::select(ChunkSize::ALL.map(|c| c.with_format(format)).to_vec())
        .prop_flat_map(move |c| (Just(c), prop::collection::vec(op(c.bytes()), 1..n)))
}

fn run_model(
    cipher: Cipher,
    chunk: ChunkSize,
    ops: &[Op],
) -> std::result::Result<(), TestCaseError> {
    let (tmp, mut o, key) = temp_object_in(cipher, chunk);
    let mut model: Vec<u8> = Vec::new();
    for op in ops {
        match op {
            Op::Write(off, d) => {
                o.write_at(*off, d).unwrap();
                let end = *off as usize + d.len();
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[*off as usize..end].copy_from_slice(d);
            }
            Op::Read(off, len) => {
                let mut buf = vec![0u8; *len];
                let n = o.read_at(*off, &mut buf).unwrap();
                let from = (*off as usize).min(model.len());
                let to = (*off as usize + len).min(model.len());
                prop_assert_eq!(&buf[..n], &model[from..to]);
                // The same through read_with: the cached chunks just read
                // take it through read_at, a reopened object (no cache)
                // through the slots opened in place.
                let got = o.read_with(*off, *len, |d| d.to_vec()).unwrap();
                prop_assert_eq!(&got[..], &model[from..to]);
                let fresh = reopen(&tmp, &key);
                let got = fresh.read_with(*off, *len, |d| d.to_vec()).unwrap();
                prop_assert_eq!(&got[..], &model[from..to]);
            }
            Op::Truncate(n) => {
                o.set_len(*n).unwrap();
                model.resize(*n as usize, 0);
            }
        }
        prop_assert_eq!(o.size(), model.len() as u64);
        let file_len = fs::metadata(tmp.path()).unwrap().len();
        prop_assert_eq!(chunk.plaintext_len(file_len), Some(model.len() as u64));
    }
    // Everything reads back, and every chunk authenticates.
    let mut all = vec![0u8; model.len()];
    let n = o.read_at(0, &mut all).unwrap();
    prop_assert_eq!(n, model.len());
    prop_assert_eq!(&all, &model);
    o.verify().unwrap();
    let o2 = reopen(&tmp, &key);
    prop_assert_eq!(o2.size(), model.len() as u64);
    let mut again = vec![0u8; model.len()];
    o2.read_at(0, &mut again).unwrap();
    prop_assert_eq!(again, model);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_access_matches_a_model_aes((chunk, ops) in sized_ops(24, Narrow)) {
        run_model(Cipher::Aes256Gcm, chunk, &ops)?;
    }
    #[test]
    fn random_access_matches_a_model_sm4((chunk, ops) in sized_ops(12, Narrow)) {
        run_model(Cipher::Sm4Gcm, chunk, &ops)?;
    }
    #[test]
    fn random_access_matches_a_model_plain((chunk, ops) in sized_ops(24, Narrow)) {
        run_model(Cipher::None, chunk, &ops)?;
    }
    // The same in wide slots (FORMAT.md §3.1, §4.1).
    #[test]
    fn random_access_matches_a_model_aes_wide((chunk, ops) in sized_ops(24, Wide)) {
        run_model(Cipher::Aes256Gcm, chunk, &ops)?;
    }
    #[test]
    fn random_access_matches_a_model_sm4_wide((chunk, ops) in sized_ops(12, Wide)) {
        run_model(Cipher::Sm4Gcm, chunk, &ops)?;
    }
    #[test]
    fn random_access_matches_a_model_plain_wide((chunk, ops) in sized_ops(24, Wide)) {
        run_model(Cipher::None, chunk, &ops)?;
    }
    /// With one R per 3 chunks, writes of many chunks cross R boundaries.
    #[test]
    fn random_access_matches_a_model_wide_small_r_limit((chunk, ops) in sized_ops(24, Wide)) {
        crate::format::TEST_MAX_CHUNKS_PER_R.with(|c| c.set(Some(3)));
        let r = run_model(Cipher::Aes256Gcm, chunk, &ops);
        crate::format::TEST_MAX_CHUNKS_PER_R.with(|c| c.set(None));
        r?;
    }
}

#[test]
fn a_one_byte_write_touches_one_chunk() {
    let (tmp, mut o, _) = temp_object(Cipher::Aes256Gcm);
    o.write_at(0, &pattern(4 * CHUNK_SIZE, 1)).unwrap();
    let before = fs::read(tmp.path()).unwrap();
    o.write_at(2 * CHUNK_SIZE as u64 + 5, &[0xEE]).unwrap();
    let after = fs::read(tmp.path()).unwrap();
    assert_eq!(before.len(), after.len());
    let changed: Vec<usize> = (0..before.len())
        .filter(|&i| before[i] != after[i])
        .collect();
    let (lo, hi) = (slot_offset(2) as usize, slot_offset(3) as usize);
    assert!(!changed.is_empty());
    assert!(
        changed.iter().all(|&i| (lo..hi).contains(&i)),
        "bytes outside chunk 2 changed"
    );
}

#[test]
fn rewriting_the_same_chunk_gives_different_ciphertext() {
    for cipher in [Cipher::Aes256Gcm, Cipher::Sm4Gcm] {
        let (tmp, mut o, _) = temp_object(cipher);
        o.write_at(0, b"same bytes").unwrap();
        let first = fs::read(tmp.path()).unwrap();
        o.write_at(0, b"same bytes").unwrap();
        let second = fs::read(tmp.path()).unwrap();
        assert_eq!(first.len(), second.len());
        assert_ne!(first[HEADER_LEN..], second[HEADER_LEN..], "{cipher:?}");
    }
}

#[test]
fn holes_read_as_zeros_and_files_can_exceed_4_gib() {
    let (tmp, mut o, _) = temp_object(Cipher::Aes256Gcm);
    let far = (5u64 << 30) + 123;
    o.write_at(far, b"tail").unwrap();
    assert_eq!(o.size(), far + 4);
    let mut buf = vec![1u8; 3 * CHUNK_SIZE];
    o.read_at(1 << 30, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    let mut t = [0u8; 4];
    o.read_at(far, &mut t).unwrap();
    assert_eq!(&t, b"tail");
    // The backend stays sparse.
    use std::os::unix::fs::MetadataExt;
    assert!(fs::metadata(tmp.path()).unwrap().blocks() < 1024);
}

// ------------------------------------------------------------- tampering

/// Every method a small object can be stored under.
fn methods() -> Vec<(&'static str, Option<SseConfig>)> {
    vec![
        ("none", None),
        ("aes256", Some(rule("AES256", None, None))),
        ("sm4", Some(rule("SM4", None, None))),
        ("kms", Some(rule("KMS", None, None))),
        ("kms-sm4", Some(rule("KMS", None, Some("SM4")))),
    ]
}

fn assert_integrity_error(r: Result<Vec<u8>>, what: &str) {
    match r {
        Err(e) => assert_eq!(e.code, OssCode::DataIntegrityError, "{what}: {e}"),
        Ok(_) => panic!("{what}: tampering went undetected"),
    }
}

#[test]
fn flipping_any_byte_of_a_small_object_is_detected() {
    let e = env();
    e.engine.create_bucket(&b("bkt")).unwrap();
    let data = pattern(CHUNK_SIZE + 600, 3);
    for (name, sse) in methods() {
        e.put("bkt", name, &data, sse.as_ref()).unwrap();
        let path = e.path("bkt", name);
        let good = fs::read(&path).unwrap();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        for (i, &byte) in good.iter().enumerate() {
            f.write_all_at(&[byte ^ 0x04], i as u64).unwrap();
            assert_integrity_error(e.get("bkt", name), &format!("{name} byte {i}"));
            f.write_all_at(&[byte], i as u64).unwrap();
        }
        assert_eq!(e.get("bkt", name).unwrap(), data);
    }
}

#[test]
fn truncation_at_and_off_chunk_boundaries_is_detected() {
    let e = env();
    e.engine.create_bucket(&b("bkt")).unwrap();
    let data = pattern(3 * CHUNK_SIZE + 100, 5);
    for (name, sse) in methods() {
        e.put("bkt", name, &data, sse.as_ref()).unwrap();
        let path = e.path("bkt", name);
        let good = fs::read(&path).unwrap();
        let mut cuts = vec![];
        for i in 1..=3u64 {
            cuts.push(slot_offset(i)); // at a boundary
            cuts.push(slot_offset(i) - 1); // just before
            cuts.push(slot_offset(i) - SLOT_SIZE as u64 / 2); // mid-chunk
        }
        cuts.push(good.len() as u64 - 1);
        cuts.push(HEADER_LEN as u64 - 1);
        for cut in cuts {
            fs::write(&path, &good[..cut as usize]).unwrap();
            assert_integrity_error(e.get("bkt", name), &format!("{name} cut at {cut}"));
        }
        fs::write(&path, &good).unwrap();
        assert_eq!(e.get("bkt", name).unwrap(), data);
    }
}

/// Tamper test (issue 6): a backend file grown or cut to a length no object
/// has read as the intact original (bytes appended after a whole last
/// chunk) or as an empty object (cut to within 28 bytes of the header).
#[test]
fn regression_lengths_no_object_has_are_integrity_errors() {
    let e = env();
    e.engine.create_bucket(&b("bkt")).unwrap();
    for (name, sse) in methods() {
        e.put("bkt", name, &pattern(CHUNK_SIZE, 1), sse.as_ref())
            .unwrap();
        let path = e.path("bkt", name);
        let good = fs::read(&path).unwrap();
        for extra in [1, CHUNK_OVERHEAD] {
            let mut grown = good.clone();
            grown.resize(good.len() + extra, 0);
            fs::write(&path, &grown).unwrap();
            assert_integrity_error(e.get("bkt", name), &format!("{name} + {extra}"));
        }
        for cut in [HEADER_LEN + 1, HEADER_LEN + CHUNK_OVERHEAD] {
            fs::write(&path, &good[..cut]).unwrap();
            assert_integrity_error(e.get("bkt", name), &format!("{name} cut at {cut}"));
        }
        fs::write(&path, &good).unwrap();
        assert_eq!(e.get("bkt", name).unwrap(), pattern(CHUNK_SIZE, 1));
    }
}

/// Tamper test (issue 6): two backend files holding one object id (a copy
/// made on the backend, or one object's header put on another file) shared
/// cache entries, so a read of one returned the other's chunks.
#[test]
fn regression_the_cache_keeps_backend_files_apart() {
    let cache = std::sync::Arc::new(ChunkCache::new(6 * CHUNK_SIZE));
    let (tmp, a, key) = temp_object(Cipher::Aes256Gcm);
    let mut a = a.with_cache(Some(cache.clone()));
    a.write_at(0, &pattern(100, 1)).unwrap();
    let copy = tempfile::NamedTempFile::new().unwrap();
    fs::copy(tmp.path(), copy.path()).unwrap();
    let b = reopen(&copy, &key).with_cache(Some(cache));
    a.write_at(0, &pattern(100, 2)).unwrap();
    let mut buf = vec![0u8; 100];
    assert_eq!(b.read_at(0, &mut buf).unwrap(), 100);
    assert_eq!(buf, pattern(100, 1));
}

#[test]
fn swapping_chunks_within_and_between_objects_is_detected() {
    let e = env();
    e.engine.create_bucket(&b("bkt")).unwrap();
    let data = pattern(3 * CHUNK_SIZE, 7);
    for (name, sse) in methods() {
        let other = format!("{name}-2");
        e.put("bkt", name, &data, sse.as_ref()).unwrap();
        e.put("bkt", &other, &data, sse.as_ref()).unwrap();
        let path = e.path("bkt", name);
        let good = fs::read(&path).unwrap();
        let slot = |i: u64| slot_offset(i) as usize..slot_offset(i + 1) as usize;
        let mut swapped = good.clone();
        swapped[slot(0)].copy_from_slice(&good[slot(1)]);
        swapped[slot(1)].copy_from_slice(&good[slot(0)]);
        fs::write(&path, &swapped).unwrap();
        assert_integrity_error(e.get("bkt", name), &format!("{name} swap within"));

        let theirs = fs::read(e.path("bkt", &other)).unwrap();
        let mut mixed = good.clone();
        mixed[slot(1)].copy_from_slice(&theirs[slot(1)]);
        fs::write(&path, &mixed).unwrap();
        assert_integrity_error(
            e.get("bkt", name),
            &format!("{name} chunk from another object"),
        );

        // Another object's header over ours: the object ids differ.
        let mut hdr = good.clone();
        hdr[..HEADER_LEN].copy_from_slice(&theirs[..HEADER_LEN]);
        fs::write(&path, &hdr).unwrap();
        assert_integrity_error(
            e.get("bkt", name),
            &format!("{name} header from another object"),
        );
        fs::write(&path, &good).unwrap();
    }
}

#[test]
fn encrypted_backend_bytes_hold_no_plaintext() {
    let e = env();
    e.engine.create_bucket(&b("bkt")).unwrap();
    let secret = b"TOP-SECRET-MARKER-0123456789".repeat(2000);
    for (name, sse) in methods().into_iter().skip(1) {
        e.put("bkt", name, &secret, sse.as_ref()).unwrap();
        let raw = fs::read(e.path("bkt", name)).unwrap();
        assert!(
            !raw.windows(18).any(|w| w == &secret[..18]),
            "{name} leaks plaintext"
        );
    }
    e.put("bkt", "plain", &secret, None).unwrap();
    let raw = fs::read(e.path("bkt", "plain")).unwrap();
    assert!(
        raw.windows(18).any(|w| w == &secret[..18]),
        "unencrypted objects are stored in clear"
    );
}

// ------------------------------------------------------ OSS semantics

#[test]
fn precedence_override_beats_rule_beats_nothing() {
    let e = env();
    e.engine.create_bucket(&b("bkt")).unwrap();
    let info = e.put("bkt", "a", b"x", None).unwrap();
    assert_eq!(info.algorithm, None);
    e.engine
        .put_bucket_encryption(&root(), &b("bkt"), &rule("SM4", None, None))
        .unwrap();
    assert_eq!(
        e.put("bkt", "b", b"x", None).unwrap().algorithm,
        Some(SseAlgorithm::Sm4)
    );
    let over = rule("AES256", None, None);
    assert_eq!(
        e.put("bkt", "c", b"x", Some(&over)).unwrap().algorithm,
        Some(SseAlgorithm::Aes256)
    );
    // Existing objects keep what they were stored with.
    assert_eq!(
        e.engine.head_object(&b("bkt"), &k("a")).unwrap().algorithm,
        None
    );
    e.engine
        .delete_bucket_encryption(&root(), &b("bkt"))
        .unwrap();
    assert_eq!(
        e.engine.head_object(&b("bkt"), &k("b")).unwrap().algorithm,
        Some(SseAlgorithm::Sm4)
    );
    assert_eq!(e.put("bkt", "d", b"x", None).unwrap().algorithm, None);
    for key in ["a", "b", "c", "d"] {
        assert_eq!(e.get("bkt", key).unwrap(), b"x");
    }
}

#[test]
fn get_bucket_encryption_without_rule_is_no_such_rule() {
    let e = env();
    e.engine.create_bucket(&b("bkt")).unwrap();
    let err = e
        .engine
        .get_bucket_encryption(&root(), &b("bkt"))
        .unwrap_err();
    assert_eq!(err.code, OssCode::NoSuchServerSideEncryptionRule);
    assert_eq!(err.errno(), libc::ENODATA);
    let r = rule("KMS", Some("alias/x"), Some("SM4"));
    e.engine
        .put_bucket_encryption(&root(), &b("bkt"), &r)
        .unwrap();
    assert_eq!(
        e.engine.get_bucket_encryption(&root(), &b("bkt")).unwrap(),
        r
    );
}

#[test]
fn copy_over_itself_reencrypts_under_the_current_rule_and_keeps_content() {
    let e = env();
    e.engine.create_bucket(&b("bkt")).unwrap();
    let data = pattern(50_000, 9);
    e.put("bkt", "o", &data, None).unwrap();
    xattr::set(
        xattr::At::Link(&e.path("bkt", "o")),
        OsStr::new("user.meta"),
        b"kept",
        0,
    )
    .unwrap();
    let before = fs::read(e.path("bkt", "o")).unwrap();
    e.engine
        .put_bucket_encryption(&root(), &b("bkt"), &rule("KMS", None, Some("SM4")))
        .unwrap();
    let info = e
        .engine
        .copy_object(&root(), (&b("bkt"), &k("o")), (&b("bkt"), &k("o")), None)
        .unwrap();
    assert_eq!(info.algorithm, Some(SseAlgorithm::Kms));
    assert!(info.data_sm4);
    let default = e.engine.kms().default_key_id().unwrap().unwrap();
    assert_eq!(info.key_id.as_deref(), Some(default.to_string().as_str()));
    assert_ne!(fs::read(e.path("bkt", "o")).unwrap(), before);
    assert_eq!(e.get("bkt", "o").unwrap(), data);
    assert_eq!(
        xattr::get(
            xattr::At::Link(&e.path("bkt", "o")),
            OsStr::new("user.meta")
        )
        .unwrap()
        .unwrap(),
        b"kept"
    );
}

#[test]
fn an_unknown_cmk_is_accepted_in_a_rule_and_refused_at_the_next_write() {
    let e = env();
    e.engine.create_bucket(&b("bkt")).unwrap();
    let missing = "0b9f2b4e-7a1c-4c7e-9a55-0d6a2f3e4b5c";
    e.engine
        .put_bucket_encryption(&root(), &b("bkt"), &rule("KMS", Some(missing), None))
        .unwrap();
    let err = e.put("bkt", "o", b"data", None).unwrap_err();
    assert_eq!(err.code, OssCode::KeyNotFound);
    assert_eq!(err.errno(), libc::ENOKEY);
    assert_eq!(err.key_id.as_deref(), Some(missing));
    // Nothing was written.
    assert!(!e.path("bkt", "o").exists());
    assert_eq!(fs::read_dir(e.data.join(".ssefs/tmp")).unwrap().count(), 0);
    let err = e
        .engine
        .put_bucket_encryption(&root(), &b("bkt"), &rule("KMS", Some("alias/nope"), None))
        .and_then(|_| e.put("bkt", "o", b"data", None))
        .unwrap_err();
    assert_eq!(err.code, OssCode::AliasNotFound);
}

/// Issue 6, part 5: the key state was checked at open only, so an object
/// kept open (as the mount keeps them) went on reading after its CMK was
/// disabled, from the chunk cache as from disk.
#[test]
fn disabling_a_cmk_stops_reads_and_writes_of_objects_already_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let root = RootKeySource::File(dir.path().join("root.key"));
    Engine::init(&data, &root).unwrap();
    let engine = Engine::open(&data, &root).unwrap().with_cache(1 << 20);
    // Another process (the CLI) changes key states.
    let cli = Engine::open(&data, &root).unwrap();
    engine.create_bucket(&b("bkt")).unwrap();
    cli.kms()
        .create_key(None, KeyOrigin::AliyunKms, Some("alias/app"))
        .unwrap();
    let body = pattern(3 * CHUNK_SIZE, 4);
    let over = rule("KMS", Some("alias/app"), None);
    engine
        .put_object(&root_p(), &b("bkt"), &k("o"), &mut &body[..], Some(&over))
        .unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(data.join("bkt/o"))
        .unwrap();
    let mut o = engine
        .open_object(&root_p(), f, "bkt/o".into(), ChunkSize::DEFAULT.wide())
        .unwrap();
    let mut buf = vec![0u8; body.len()];
    assert_eq!(o.read_at(0, &mut buf).unwrap(), body.len());

    cli.kms().disable_key("alias/app").unwrap();
    let e = o.read_at(0, &mut buf).unwrap_err();
    assert_eq!(
        (e.code, e.errno()),
        (OssCode::RejectedDisabled, libc::EKEYREVOKED)
    );
    assert_eq!(e.resource.as_deref(), Some("bkt/o"));
    assert_eq!(
        o.write_at(0, b"x").unwrap_err().code,
        OssCode::RejectedDisabled
    );
    assert_eq!(o.set_len(1).unwrap_err().code, OssCode::RejectedDisabled);

    cli.kms().enable_key("alias/app").unwrap();
    assert_eq!(o.read_at(0, &mut buf).unwrap(), body.len());
    assert_eq!(buf, body);
}

fn root_p() -> Principal {
    Principal::root()
}

#[test]
fn every_key_state_governs_reads_and_writes() {
    let e = env();
    e.engine.create_bucket(&b("bkt")).unwrap();
    let kms = e.engine.kms();
    let key = kms
        .create_key(Some("test"), KeyOrigin::AliyunKms, Some("alias/app"))
        .unwrap();
    let id = key.key_id.to_string();
    let over = rule("KMS", Some("alias/app"), None);
    let info = e.put("bkt", "o", b"hello", Some(&over)).unwrap();
    assert_eq!(info.key_id.as_deref(), Some(id.as_str()));

    kms.disable_key(&id).unwrap();
    let err = e.get("bkt", "o").unwrap_err();
    assert_eq!(
        (err.code, err.errno()),
        (OssCode::RejectedDisabled, libc::EKEYREVOKED)
    );
    assert_eq!(err.key_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        e.put("bkt", "p", b"x", Some(&over)).unwrap_err().code,
        OssCode::RejectedDisabled
    );
    kms.enable_key(&id).unwrap();
    assert_eq!(e.get("bkt", "o").unwrap(), b"hello");

    // Rotation: old objects still decrypt, new ones use the new version.
    kms.rotate_key(&id).unwrap();
    e.put("bkt", "q", b"v2", Some(&over)).unwrap();
    assert_eq!(e.get("bkt", "o").unwrap(), b"hello");
    assert_eq!(e.get("bkt", "q").unwrap(), b"v2");

    kms.schedule_key_deletion(&id, 7).unwrap();
    let err = e.get("bkt", "o").unwrap_err();
    assert_eq!(
        (err.code, err.errno()),
        (OssCode::RejectedPendingDeletion, libc::EKEYREVOKED)
    );
    kms.cancel_key_deletion(&id).unwrap();
    assert_eq!(e.get("bkt", "o").unwrap(), b"hello");

    let ext = kms.create_key(None, KeyOrigin::External, None).unwrap();
    let ext_id = ext.key_id.to_string();
    let over_ext = rule("KMS", Some(&ext_id), None);
    let err = e.put("bkt", "x", b"x", Some(&over_ext)).unwrap_err();
    assert_eq!(
        (err.code, err.errno()),
        (OssCode::RejectedPendingImport, libc::EKEYREVOKED)
    );
    kms.import_key_material(&ext_id, SecretKey::random(32))
        .unwrap();
    e.put("bkt", "x", b"byok", Some(&over_ext)).unwrap();
    assert_eq!(e.get("bkt", "x").unwrap(), b"byok");
}

#[test]
fn master_rotation_keeps_old_objects_readable() {
    let e = env();
    e.engine.create_bucket(&b("bkt")).unwrap();
    let over = rule("AES256", None, None);
    e.put("bkt", "old", b"v1", Some(&over)).unwrap();
    let v = e.engine.kms().rotate_master().unwrap();
    assert_eq!(v, 2);
    e.put("bkt", "new", b"v2", Some(&over)).unwrap();
    let f = File::open(e.path("bkt", "new")).unwrap();
    assert_eq!(Engine::read_header(&f, "new").unwrap().key_version, 2);
    assert_eq!(e.get("bkt", "old").unwrap(), b"v1");
    assert_eq!(e.get("bkt", "new").unwrap(), b"v2");
}

#[test]
fn kms_permissions_apply_to_reads_and_writes() {
    let e = env();
    e.engine.create_bucket(&b("bkt")).unwrap();
    let kms = e.engine.kms();
    kms.create_key(None, KeyOrigin::AliyunKms, Some("alias/team"))
        .unwrap();
    let over = rule("KMS", Some("alias/team"), None);
    e.put("bkt", "o", b"secret", Some(&over)).unwrap();
    let alice = Principal::new(1000, 1000);
    let err = e.get_as(&alice, "bkt", "o").unwrap_err();
    assert_eq!(
        (err.code, err.errno()),
        (OssCode::AccessDenied, libc::EACCES)
    );
    assert_eq!(err.message, "This request is forbidden by kms");
    let nobody = Principal::new(crate::principal::NOBODY_UID, crate::principal::NOBODY_UID);
    assert_eq!(
        e.get_as(&nobody, "bkt", "o").unwrap_err().message,
        "This request is forbidden by kms"
    );
    let err = e
        .engine
        .put_object(&alice, &b("bkt"), &k("p"), &mut &b"x"[..], Some(&over))
        .unwrap_err();
    assert_eq!(err.code, OssCode::AccessDenied);
    // SSE-OSS needs no KMS permission.
    e.engine
        .put_object(
            &alice,
            &b("bkt"),
            &k("p"),
            &mut &b"x"[..],
            Some(&rule("AES256", None, None)),
        )
        .unwrap();
}

#[test]
fn granted_users_may_use_keys_and_bucket_owners_may_manage_rules() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let root_src = RootKeySource::File(dir.path().join("root.key"));
    Engine::init(&data, &root_src).unwrap();
    fs::write(
        data.join(".ssefs/config.toml"),
        "[[grant]]\nuids = [1000]\nactions = [\"kms:GenerateDataKey\", \"kms:Decrypt\"]\nresources = [\"alias/team\"]\n\n[[grant]]\ngids = [2000]\nactions = [\"oss:GetBucketEncryption\"]\nresources = [\"bkt\"]\n",
    )
    .unwrap();
    // Refused until approved (issue 12, part 3), then in force.
    assert_eq!(
        Engine::open(&data, &root_src).err().map(|e| e.code),
        Some(OssCode::DataIntegrityError)
    );
    assert_eq!(
        Engine::seal_policy(&data, &root_src).unwrap().grant_count(),
        2
    );
    let e = Engine::open(&data, &root_src).unwrap();
    e.create_bucket(&b("bkt")).unwrap();
    e.kms()
        .create_key(None, KeyOrigin::AliyunKms, Some("alias/team"))
        .unwrap();
    e.kms()
        .create_key(None, KeyOrigin::AliyunKms, Some("alias/other"))
        .unwrap();
    let alice = Principal::new(1000, 1000);
    let team = rule("KMS", Some("alias/team"), None);
    e.put_object(&alice, &b("bkt"), &k("o"), &mut &b"ok"[..], Some(&team))
        .unwrap();
    let mut out = Vec::new();
    e.get_object(&alice, &b("bkt"), &k("o"), &mut out).unwrap();
    assert_eq!(out, b"ok");
    let other = rule("KMS", Some("alias/other"), None);
    let err = e
        .put_object(&alice, &b("bkt"), &k("p"), &mut &b"no"[..], Some(&other))
        .unwrap_err();
    assert_eq!(err.code, OssCode::AccessDenied);

    // Bucket rules: alice is neither owner nor granted; a gid-2000 user may read it.
    let err = e
        .put_bucket_encryption(&alice, &b("bkt"), &team)
        .unwrap_err();
    assert_eq!(
        (err.code, err.errno()),
        (OssCode::AccessDenied, libc::EACCES)
    );
    assert_eq!(
        e.get_bucket_encryption(&root(), &b("bkt"))
            .unwrap_err()
            .code,
        OssCode::NoSuchServerSideEncryptionRule
    );
    let bob = Principal::new(1001, 2000);
    assert_eq!(
        e.get_bucket_encryption(&bob, &b("bkt")).unwrap_err().code,
        OssCode::NoSuchServerSideEncryptionRule
    );
    assert_eq!(
        e.delete_bucket_encryption(&bob, &b("bkt"))
            .unwrap_err()
            .code,
        OssCode::AccessDenied
    );
    // The bucket's owner may.
    std::os::unix::fs::chown(data.join("bkt"), Some(1000), None).unwrap();
    e.put_bucket_encryption(&alice, &b("bkt"), &team).unwrap();
    assert_eq!(e.get_bucket_encryption(&alice, &b("bkt")).unwrap(), team);
}

#[test]
fn buckets_are_created_listed_and_deleted_when_empty() {
    let e = env();
    e.engine.create_bucket(&b("one")).unwrap();
    e.engine.create_bucket(&b("two")).unwrap();
    assert_eq!(
        e.engine.create_bucket(&b("one")).unwrap_err().code,
        OssCode::BucketAlreadyExists
    );
    assert_eq!(e.engine.list_buckets().unwrap(), vec![b("one"), b("two")]);
    e.engine
        .put_bucket_encryption(&root(), &b("one"), &rule("AES256", None, None))
        .unwrap();
    e.put("one", "dir/obj", b"x", None).unwrap();
    assert_eq!(
        e.engine.delete_bucket(&b("one")).unwrap_err().code,
        OssCode::BucketNotEmpty
    );
    fs::remove_file(e.path("one", "dir/obj")).unwrap();
    fs::remove_dir(e.path("one", "dir")).unwrap();
    e.engine.delete_bucket(&b("one")).unwrap();
    assert_eq!(e.engine.list_buckets().unwrap(), vec![b("two")]);
    assert_eq!(
        e.engine.delete_bucket(&b("one")).unwrap_err().code,
        OssCode::NoSuchBucket
    );
}

#[test]
fn regression_cache_after_truncate_to_zero_and_regrow() {
    let (_tmp, mut o, _) = temp_object(Cipher::Aes256Gcm);
    o.set_len(32769).unwrap();
    o.set_len(0).unwrap();
    o.set_len(49153).unwrap();
    let mut all = vec![1u8; 49153];
    let n = o.read_at(0, &mut all).unwrap();
    assert_eq!(n, 49153);
    assert!(all.iter().all(|&b| b == 0));
}

#[test]
fn the_cached_bucket_rule_follows_changes_made_by_another_process() {
    // The mount caches parsed bucket rules; the CLI changes them with its
    // own Engine. Each change must be seen by the next lookup.
    let e = env();
    let root_src = RootKeySource::File(e._dir.path().join("root.key"));
    let cli = Engine::open(&e.data, &root_src).unwrap();
    e.engine.create_bucket(&b("bkt")).unwrap();
    let dir = b("bkt");
    assert_eq!(e.engine.effective_sse(&dir, None).unwrap(), None);
    for a in ["SM4", "AES256", "KMS", "SM4"] {
        let r = rule(a, None, None);
        cli.put_bucket_encryption(&root(), &b("bkt"), &r).unwrap();
        assert_eq!(e.engine.effective_sse(&dir, None).unwrap(), Some(r));
    }
    cli.delete_bucket_encryption(&root(), &b("bkt")).unwrap();
    assert_eq!(e.engine.effective_sse(&dir, None).unwrap(), None);
    // An override wins without consulting the rule.
    let over = rule("AES256", None, None);
    assert_eq!(
        e.engine.effective_sse(&dir, Some(&over)).unwrap(),
        Some(over)
    );
}

// ------------------------------------------------------------ chunk sizes

/// Byte ranges of the backend file that differ.
fn changed_bytes(before: &[u8], after: &[u8]) -> Vec<usize> {
    (0..before.len().max(after.len()))
        .filter(|&i| before.get(i) != after.get(i))
        .collect()
}

#[test]
fn a_one_byte_write_touches_one_chunk_of_every_size() {
    for c in ChunkSize::ALL {
        let (tmp, mut o, _) = temp_object_in(Cipher::Aes256Gcm, c);
        o.write_at(0, &pattern(4 * c.bytes(), 1)).unwrap();
        let before = fs::read(tmp.path()).unwrap();
        assert_eq!(before.len() as u64, c.backend_len(4 * c.bytes() as u64));
        o.write_at(2 * c.bytes() as u64 + 5, &[0xEE]).unwrap();
        let after = fs::read(tmp.path()).unwrap();
        let changed = changed_bytes(&before, &after);
        let chunk2 = c.slot_offset(2) as usize..c.slot_offset(3) as usize;
        assert!(!changed.is_empty());
        assert!(
            changed.iter().all(|i| chunk2.contains(i)),
            "{c}: outside chunk 2"
        );
    }
}

/// What makes 4 KiB chunks fast for 4 KiB random writes: an aligned
/// whole-chunk write never reads the old chunk. Chunk 1 is corrupted on the
/// backend first; reading it would fail authentication, overwriting it
/// whole must not.
#[test]
fn an_aligned_whole_chunk_write_does_not_read_the_old_chunk() {
    let c = ChunkSize::KIB4;
    let (tmp, mut o, key) = temp_object_in(Cipher::Aes256Gcm, c);
    o.write_at(0, &pattern(3 * 4096, 2)).unwrap();
    drop(o);
    let f = OpenOptions::new().write(true).open(tmp.path()).unwrap();
    f.write_all_at(&[0xFF; 64], c.slot_offset(1) + 100).unwrap();
    let mut o = reopen(&tmp, &key);
    let mut buf = vec![0u8; 4096];
    assert!(o.read_at(4096, &mut buf).is_err(), "the corruption is seen");
    o.write_at(4096, &pattern(4096, 9)).unwrap();
    assert_eq!(o.read_at(4096, &mut buf).unwrap(), 4096);
    assert_eq!(buf, pattern(4096, 9));
    // An unaligned write into a corrupt chunk has to read it, and fails.
    f.write_all_at(&[0xFF; 64], c.slot_offset(2) + 100).unwrap();
    let mut o = reopen(&tmp, &key);
    assert_eq!(
        o.write_at(2 * 4096 + 1, b"x").unwrap_err().code,
        OssCode::DataIntegrityError
    );
}

/// Writes, reads, truncations, holes and growth across chunk boundaries,
/// worked by hand for every chunk size and cipher; then read back from the
/// file alone.
#[test]
fn boundaries_holes_and_truncation_for_every_chunk_size() {
    for c in ChunkSize::ALL {
        for cipher in [Cipher::Aes256Gcm, Cipher::Sm4Gcm, Cipher::None] {
            let n = c.bytes();
            let (tmp, mut o, key) = temp_object_in(cipher, c);
            let mut model = pattern(2 * n + n / 2, 3);
            o.write_at(0, &model).unwrap();
            // Straddling the boundary between chunks 0 and 1.
            let piece = pattern(10, 77);
            o.write_at(n as u64 - 5, &piece).unwrap();
            model[n - 5..n + 5].copy_from_slice(&piece);
            // Truncate mid-chunk, then exactly at a boundary.
            o.set_len(n as u64 + 7).unwrap();
            model.truncate(n + 7);
            o.set_len(n as u64).unwrap();
            model.truncate(n);
            // Grow past several chunks: the skipped ones are holes.
            let far = 5 * n as u64 + 3;
            o.write_at(far, b"end").unwrap();
            model.resize(far as usize, 0);
            model.extend_from_slice(b"end");
            // An append that fills the last chunk and starts another.
            let tail = pattern(n, 5);
            o.write_at(model.len() as u64, &tail).unwrap();
            model.extend_from_slice(&tail);
            let len = fs::metadata(tmp.path()).unwrap().len();
            assert_eq!(
                c.plaintext_len(len),
                Some(model.len() as u64),
                "{c} {cipher:?}"
            );
            let o2 = reopen(&tmp, &key);
            assert_eq!(o2.header().chunk, c);
            let mut all = vec![1u8; model.len() + 10];
            assert_eq!(o2.read_at(0, &mut all).unwrap(), model.len());
            assert_eq!(&all[..model.len()], &model[..], "{c} {cipher:?}");
            o2.verify().unwrap();
            // The holes are sparse slots, not sealed zeros.
            let raw = fs::read(tmp.path()).unwrap();
            let hole = c.slot_offset(2) as usize..c.slot_offset(3) as usize;
            assert!(raw[hole].iter().all(|&b| b == 0), "{c} {cipher:?}");
        }
    }
}

#[test]
fn the_chunk_size_is_set_only_while_the_bucket_is_empty() {
    let e = env();
    let bk = b("bkt");
    e.engine.create_bucket(&bk).unwrap();
    assert_eq!(
        e.engine.bucket_chunk_size(&bk).unwrap(),
        ChunkSize::DEFAULT.wide()
    );
    e.engine
        .put_bucket_chunk_size(&root(), &bk, ChunkSize::KIB4)
        .unwrap();
    assert_eq!(
        e.engine.bucket_chunk_size(&bk).unwrap(),
        ChunkSize::KIB4.wide()
    );
    let settings = fs::read_to_string(e.data.join("bkt").join(BUCKET_SETTINGS)).unwrap();
    assert_eq!(
        without_mac(&settings),
        "chunk_size = 4096\nslot_format = \"wide\""
    );
    e.put("bkt", "o", b"x", None).unwrap();
    let err = e
        .engine
        .put_bucket_chunk_size(&root(), &bk, ChunkSize::KIB64)
        .unwrap_err();
    assert_eq!(
        (err.code, err.errno()),
        (OssCode::BucketNotEmpty, libc::ENOTEMPTY)
    );
    assert_eq!(err.resource.as_deref(), Some("bkt"));
    assert_eq!(
        fs::read_to_string(e.data.join("bkt").join(BUCKET_SETTINGS)).unwrap(),
        settings,
        "a refusal changes nothing"
    );
    // The size it has already: nothing to change, so no refusal.
    e.engine
        .put_bucket_chunk_size(&root(), &bk, ChunkSize::KIB4)
        .unwrap();
    // An empty directory is something too, as for deleting the bucket.
    fs::remove_file(e.path("bkt", "o")).unwrap();
    fs::create_dir(e.path("bkt", "d")).unwrap();
    assert!(e
        .engine
        .put_bucket_chunk_size(&root(), &bk, ChunkSize::KIB64)
        .is_err());
    fs::remove_dir(e.path("bkt", "d")).unwrap();
    e.engine
        .put_bucket_chunk_size(&root(), &bk, ChunkSize::DEFAULT)
        .unwrap();
    // Back to the default: the field is gone, as if never set; the
    // slots stay wide.
    assert_eq!(
        without_mac(&fs::read_to_string(e.data.join("bkt").join(BUCKET_SETTINGS)).unwrap()),
        "slot_format = \"wide\""
    );
    // Someone else's bucket: AccessDenied, as for the rule.
    let other = Principal::new(4242, 4242);
    let err = e
        .engine
        .put_bucket_chunk_size(&other, &bk, ChunkSize::KIB4)
        .unwrap_err();
    assert_eq!(err.code, OssCode::AccessDenied);
}

#[test]
fn objects_are_written_with_their_buckets_chunk_size() {
    let e = env();
    for (name, c) in [
        ("small", ChunkSize::KIB4),
        ("big", ChunkSize::KIB64),
        ("std", ChunkSize::KIB16),
    ] {
        e.engine.create_bucket(&b(name)).unwrap();
        e.engine
            .put_bucket_chunk_size(&root(), &b(name), c)
            .unwrap();
    }
    let data = pattern(100_000, 8);
    let aes = rule("AES256", None, None);
    e.put("small", "o", &data, Some(&aes)).unwrap();
    let chunk_of = |bucket: &str, key: &str| {
        let f = fs::File::open(e.path(bucket, key)).unwrap();
        Engine::read_header(&f, key).unwrap().chunk
    };
    assert_eq!(chunk_of("small", "o"), ChunkSize::KIB4.wide());
    let len = fs::metadata(e.path("small", "o")).unwrap().len();
    assert_eq!(len, ChunkSize::KIB4.wide().backend_len(100_000));
    assert_eq!(
        e.engine.head_object(&b("small"), &k("o")).unwrap().size,
        100_000
    );
    assert_eq!(e.get("small", "o").unwrap(), data);
    // A copy takes the destination's chunk size, and a copy over itself
    // (re-encryption) keeps the bucket's.
    for dst in ["big", "std"] {
        e.engine
            .copy_object(&root(), (&b("small"), &k("o")), (&b(dst), &k("c")), None)
            .unwrap();
        assert_eq!(
            chunk_of(dst, "c"),
            e.engine.bucket_chunk_size(&b(dst)).unwrap()
        );
        assert_eq!(e.get(dst, "c").unwrap(), data);
    }
    let sm4 = rule("SM4", None, None);
    e.engine
        .copy_object(
            &root(),
            (&b("small"), &k("o")),
            (&b("small"), &k("o")),
            Some(&sm4),
        )
        .unwrap();
    assert_eq!(chunk_of("small", "o"), ChunkSize::KIB4.wide());
    assert_eq!(e.get("small", "o").unwrap(), data);
}

/// An object whose chunk size is not its bucket's (moved on the backend by
/// hand) is refused by every reader; never read with the wrong layout.
#[test]
fn an_object_moved_to_a_bucket_of_another_chunk_size_is_refused() {
    let e = env();
    e.engine.create_bucket(&b("std")).unwrap();
    e.engine.create_bucket(&b("small")).unwrap();
    e.engine
        .put_bucket_chunk_size(&root(), &b("small"), ChunkSize::KIB4)
        .unwrap();
    for (i, (name, sse)) in methods().into_iter().enumerate() {
        let key = format!("m{i}");
        e.put("std", &key, &pattern(50_000, 1), sse.as_ref())
            .unwrap();
        fs::rename(e.path("std", &key), e.path("small", &key)).unwrap();
        let err = e.get("small", &key).unwrap_err();
        assert_eq!(err.code, OssCode::DataIntegrityError, "{name}");
        assert_eq!(err.errno(), libc::EIO);
        assert_eq!(
            err.resource.as_deref(),
            Some(format!("small/{key}").as_str())
        );
        assert!(err.message.contains("chunk size"), "{}", err.message);
        assert_eq!(
            e.engine
                .head_object(&b("small"), &k(&key))
                .unwrap_err()
                .code,
            OssCode::DataIntegrityError
        );
        // Moved back, it reads again.
        fs::rename(e.path("small", &key), e.path("std", &key)).unwrap();
        assert_eq!(e.get("std", &key).unwrap(), pattern(50_000, 1));
    }
}

/// A settings file's lines other than its MAC.
fn without_mac(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("mac = "))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

#[test]
fn a_bucket_settings_file_with_a_bad_chunk_size_is_an_error() {
    let e = env();
    let bk = b("bkt");
    e.engine.create_bucket(&bk).unwrap();
    let dir = e.data.join("bkt");
    // Written by hand: not authenticated, so an integrity error.
    fs::write(dir.join(BUCKET_SETTINGS), "chunk_size = 8192\n").unwrap();
    let err = e.engine.bucket_chunk_size(&bk).unwrap_err();
    assert_eq!(err.code, OssCode::DataIntegrityError);
    assert!(e.put("bkt", "o", b"x", None).is_err());
    // With a valid MAC (only a bug could write that): still refused, and
    // the message says why.
    let bad = BucketSettings {
        encryption: None,
        chunk_size: Some(8192),
        slot_format: None,
    };
    e.engine.write_settings(&bk, &bad).unwrap();
    let err = e.engine.bucket_chunk_size(&bk).unwrap_err();
    assert_eq!(err.code, OssCode::InternalError);
    assert!(err.message.contains("8192"), "{}", err.message);
    assert!(e.put("bkt", "o", b"x", None).is_err());
}

/// Issue 12, part 3: someone who can write the backend but lacks the root
/// key edits a bucket's settings so that uploads would be plaintext: the
/// file emptied, deleted, edited, or copied from a bucket without a rule.
/// Every write is refused as an integrity error naming the file, no object
/// file is created, and putting the file back restores service.
#[test]
fn tampered_bucket_settings_are_an_integrity_error_and_nothing_is_written() {
    let e = env();
    e.engine.create_bucket(&b("sm4")).unwrap();
    e.engine.create_bucket(&b("plain")).unwrap();
    // What the bucket's file held before its rule: valid once, not now.
    let before_rule = fs::read(e.data.join("sm4").join(BUCKET_SETTINGS)).unwrap();
    e.engine
        .put_bucket_encryption(&root(), &b("sm4"), &rule("SM4", None, None))
        .unwrap();
    e.put("sm4", "before", b"sealed", None).unwrap();
    let sp = e.data.join("sm4").join(BUCKET_SETTINGS);
    let good = fs::read(&sp).unwrap();
    let plain_file = fs::read(e.data.join("plain").join(BUCKET_SETTINGS)).unwrap();
    let edited = String::from_utf8(good.clone())
        .unwrap()
        .replace("SM4", "AES256");
    assert_ne!(edited.as_bytes(), &good[..]);
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("emptied", Some(Vec::new())),
        ("deleted", None),
        ("edited", Some(edited.into_bytes())),
        ("copied", Some(plain_file)),
        ("older copy written back", Some(before_rule)),
        (
            "MAC only",
            Some(good.split(|&c| c == b'\n').next().unwrap().to_vec()),
        ),
    ];
    for (what, content) in cases {
        match &content {
            Some(c) => fs::write(&sp, c).unwrap(),
            None => fs::remove_file(&sp).unwrap(),
        }
        let err = e.put("sm4", "new", b"secret", None).unwrap_err();
        assert_eq!(err.code, OssCode::DataIntegrityError, "{what}: {err}");
        assert_eq!(err.errno(), libc::EIO);
        assert_eq!(err.resource.as_deref(), sp.to_str(), "{what}");
        assert!(
            !e.path("sm4", "new").exists(),
            "{what}: an object was written"
        );
        for r in [
            e.engine.bucket_rule(&b("sm4")).map(|_| ()),
            e.engine
                .get_bucket_encryption(&root(), &b("sm4"))
                .map(|_| ()),
            e.engine.delete_bucket_encryption(&root(), &b("sm4")),
            e.engine
                .put_bucket_encryption(&root(), &b("sm4"), &rule("AES256", None, None)),
            e.engine.bucket_chunk_size(&b("sm4")).map(|_| ()),
        ] {
            assert_eq!(r.unwrap_err().code, OssCode::DataIntegrityError, "{what}");
        }
        // Restored, the bucket works again with its rule.
        fs::write(&sp, &good).unwrap();
        assert_eq!(
            e.engine.bucket_rule(&b("sm4")).unwrap(),
            Some(rule("SM4", None, None)),
            "{what}"
        );
    }
    e.put("sm4", "after", b"sealed", None).unwrap();
    let h = e.engine.head_object(&b("sm4"), &k("after")).unwrap();
    assert_eq!(h.algorithm, Some(crate::oss::SseAlgorithm::Sm4));
}

/// A data directory from before MACs: bucket settings files without a MAC
/// (or none at all, meaning the defaults) and a keystore without one. The
/// first open seals them all as they are and marks the keystore; from then
/// on a file without a MAC is refused.
#[test]
fn the_first_open_upgrades_a_data_directory_from_before_macs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let root_src = RootKeySource::File(dir.path().join("root.key"));
    Engine::init(&data, &root_src).unwrap();
    let e = Engine::open(&data, &root_src).unwrap();
    for n in ["ruled", "bare", "nofile"] {
        e.create_bucket(&b(n)).unwrap();
    }
    e.put_bucket_encryption(&root(), &b("ruled"), &rule("SM4", None, None))
        .unwrap();
    e.put_bucket_chunk_size(&root(), &b("bare"), ChunkSize::KIB4)
        .unwrap();
    // What an older ssefs wrote (no MAC, and narrow slots: no
    // `slot_format`).
    for n in ["ruled", "bare"] {
        let p = data.join(n).join(BUCKET_SETTINGS);
        let old: Vec<String> = without_mac(&fs::read_to_string(&p).unwrap())
            .lines()
            .filter(|l| !l.starts_with("slot_format"))
            .map(str::to_owned)
            .collect();
        fs::write(&p, old.join("\n")).unwrap();
    }
    fs::remove_file(data.join("nofile").join(BUCKET_SETTINGS)).unwrap();
    let config = data.join(".ssefs/config.toml");
    fs::write(&config, "[kms]\nmaster_rotation_days = 30\n").unwrap();
    e.kms().downgrade_for_test().unwrap();
    drop(e);

    let e = Engine::open(&data, &root_src).unwrap();
    assert!(!e.kms().needs_upgrade());
    assert_eq!(
        e.bucket_rule(&b("ruled")).unwrap(),
        Some(rule("SM4", None, None))
    );
    assert_eq!(e.bucket_chunk_size(&b("bare")).unwrap(), ChunkSize::KIB4);
    assert_eq!(e.bucket_rule(&b("nofile")).unwrap(), None);
    assert_eq!(
        e.bucket_chunk_size(&b("nofile")).unwrap(),
        ChunkSize::DEFAULT
    );
    for n in ["ruled", "bare", "nofile"] {
        let t = fs::read_to_string(data.join(n).join(BUCKET_SETTINGS)).unwrap();
        assert!(t.starts_with("mac = "), "{n}: {t}");
    }
    // The grants were sealed as they were: in force, and an edit refused.
    assert_eq!(e.kms().policy().master_rotation_days(), 30);
    fs::write(&config, "[kms]\nmaster_rotation_days = 0\n").unwrap();
    assert_eq!(
        Engine::open(&data, &root_src).err().map(|e| e.code),
        Some(OssCode::DataIntegrityError)
    );
    fs::write(&config, "[kms]\nmaster_rotation_days = 30\n").unwrap();
    // Upgraded once: an old-style file now is an integrity error.
    let p = data.join("ruled").join(BUCKET_SETTINGS);
    fs::write(&p, "[encryption]\nalgorithm = \"AES256\"\n").unwrap();
    drop(e);
    let e = Engine::open(&data, &root_src).unwrap();
    assert_eq!(
        e.bucket_rule(&b("ruled")).unwrap_err().code,
        OssCode::DataIntegrityError
    );
}

/// New buckets get a settings file with its MAC at once, so a bucket made
/// now cannot be passed off as one without settings; deleting an empty
/// bucket works whatever its settings hold.
#[test]
fn new_buckets_have_authenticated_settings_and_empty_ones_can_always_go() {
    let e = env();
    e.engine.create_bucket(&b("bkt")).unwrap();
    let sp = e.data.join("bkt").join(BUCKET_SETTINGS);
    assert!(fs::read_to_string(&sp).unwrap().starts_with("mac = "));
    assert_eq!(e.engine.bucket_rule(&b("bkt")).unwrap(), None);
    fs::write(&sp, "garbage = 1\n").unwrap();
    e.engine.delete_bucket(&b("bkt")).unwrap();
    assert!(!e.data.join("bkt").exists());
    // A bucket that is not empty keeps its file, as it was.
    e.engine.create_bucket(&b("bkt")).unwrap();
    e.put("bkt", "o", b"x", None).unwrap();
    let before = fs::read(&sp).unwrap();
    assert_eq!(
        e.engine.delete_bucket(&b("bkt")).unwrap_err().code,
        OssCode::BucketNotEmpty
    );
    assert_eq!(fs::read(&sp).unwrap(), before);
}

#[test]
fn the_cache_is_bounded_in_bytes_across_chunk_sizes() {
    let cache = ChunkCache::new(40_000);
    let owner = |n: u8| super::cache::Owner {
        object_id: [n; 16],
        dev: 1,
        ino: n as u64,
    };
    let entry = super::cache::ENTRY_COST;
    for i in 0..9 {
        cache.put(&owner(1), i, vec![0; 4096]);
    }
    assert_eq!(cache.held_bytes(), 9 * (4096 + entry));
    cache.put(&owner(2), 0, vec![0; 16384]);
    assert!(cache.held_bytes() <= 40_000);
    assert!(cache.get(&owner(2), 0).is_some(), "the newest stays");
    assert!(cache.get(&owner(1), 0).is_none(), "the oldest went first");
    // Replacing an entry counts its new size only.
    cache.put(&owner(2), 0, vec![0; 100]);
    let held = cache.held_bytes();
    cache.put(&owner(2), 0, vec![0; 100]);
    assert_eq!(cache.held_bytes(), held);
    // One chunk larger than the whole cache is still kept (alone).
    cache.put(&owner(3), 0, vec![0; 65536]);
    assert_eq!(cache.held_bytes(), 65536 + entry);
    cache.remove_from(&owner(3), 0);
    assert_eq!(cache.held_bytes(), 0);
}

/// Tiny chunks (objects of a few bytes) are bounded by their entries' own
/// cost, not only by their plaintext: a 64 KiB cache of 8-byte chunks
/// holds a few hundred, not 8,192.
#[test]
fn tiny_chunks_are_bounded_by_their_entry_cost() {
    let cache = ChunkCache::new(64 << 10);
    for n in 0..10_000u64 {
        let owner = super::cache::Owner {
            object_id: [0; 16],
            dev: 1,
            ino: n,
        };
        cache.put(&owner, 0, vec![0; 8]);
    }
    assert!(cache.held_bytes() <= 64 << 10);
    assert_eq!(
        cache.held_bytes(),
        (64 << 10) / (8 + super::cache::ENTRY_COST) * (8 + super::cache::ENTRY_COST)
    );
}

// ------------------------------------------------------------ wide slots

/// The R of every slot of an object's backend file (FORMAT.md §3.1: the
/// first 12 bytes of each wide slot).
fn slot_rs(bytes: &[u8], c: ChunkSize) -> Vec<[u8; 12]> {
    (0..)
        .map(|i| c.slot_offset(i) as usize)
        .take_while(|&at| at < bytes.len())
        .map(|at| bytes[at..at + 12].try_into().unwrap())
        .collect()
}

/// The nonce bound's test hook (FORMAT.md §4.1): with at most 4 chunks per
/// R, one write of 50 chunks seals them under 13 R (read back from the
/// backend file); without the hook the same write uses one. Everything
/// reads back, now and after a reopen.
#[test]
fn a_long_write_draws_a_new_r_every_max_chunks_per_r() {
    for cipher in [Cipher::Aes256Gcm, Cipher::Sm4Gcm] {
        let c = ChunkSize::KIB4.wide();
        let data = pattern(50 * c.bytes(), 5);
        let count = |tmp: &tempfile::NamedTempFile| {
            let rs = slot_rs(&fs::read(tmp.path()).unwrap(), c);
            assert_eq!(rs.len(), 50);
            rs.iter().collect::<std::collections::HashSet<_>>().len()
        };

        let (tmp, mut o, _) = temp_object_in(cipher, c);
        o.write_at(0, &data).unwrap();
        assert_eq!(count(&tmp), 1, "{cipher:?}: one write, one R");

        let (tmp, mut o, key2) = temp_object_in(cipher, c);
        crate::format::TEST_MAX_CHUNKS_PER_R.with(|l| l.set(Some(4)));
        let w = o.write_at(0, &data);
        crate::format::TEST_MAX_CHUNKS_PER_R.with(|l| l.set(None));
        w.unwrap();
        assert_eq!(count(&tmp), 13, "{cipher:?}: 50 chunks, 4 per R");
        let mut back = vec![0u8; data.len()];
        assert_eq!(o.read_at(0, &mut back).unwrap(), data.len());
        assert_eq!(back, data);
        o.verify().unwrap();
        let o2 = reopen(&tmp, &key2);
        let mut back = vec![0u8; data.len()];
        o2.read_at(0, &mut back).unwrap();
        assert_eq!(back, data);
        // A one-byte write draws a new R for its chunk, one not seen before.
        let before = slot_rs(&fs::read(tmp.path()).unwrap(), c);
        o.write_at(7 * c.bytes() as u64, &[1]).unwrap();
        let after = slot_rs(&fs::read(tmp.path()).unwrap(), c);
        assert!(!before.contains(&after[7]));
        assert_eq!(before[..7], after[..7]);
    }
}

/// A bucket made by this version has wide slots; one made before (no
/// `slot_format` in its settings, or no settings file) keeps narrow ones.
/// Both read back; an object moved by hand between them is refused.
#[test]
fn new_buckets_are_wide_and_old_ones_stay_narrow() {
    let e = env();
    // Settings as a bucket made before wide slots has them (after the
    // MAC upgrade): no `slot_format`.
    let old_style = |name: &str, chunk_size: Option<u64>| {
        e.engine.create_bucket(&b(name)).unwrap();
        let s = BucketSettings {
            chunk_size,
            ..Default::default()
        };
        e.engine.write_settings(&b(name), &s).unwrap();
    };
    e.engine.create_bucket(&b("new")).unwrap();
    old_style("old", Some(4096));
    old_style("old16", None);
    assert_eq!(
        e.engine.bucket_chunk_size(&b("new")).unwrap(),
        ChunkSize::DEFAULT.wide()
    );
    assert_eq!(
        e.engine.bucket_chunk_size(&b("old")).unwrap(),
        ChunkSize::KIB4
    );
    assert_eq!(
        e.engine.bucket_chunk_size(&b("old16")).unwrap(),
        ChunkSize::DEFAULT
    );
    let data = pattern(40_000, 9);
    for (i, (name, sse)) in methods().into_iter().enumerate() {
        let key = format!("m{i}");
        for (bucket, c) in [
            ("new", ChunkSize::DEFAULT.wide()),
            ("old", ChunkSize::KIB4),
            ("old16", ChunkSize::DEFAULT),
        ] {
            e.put(bucket, &key, &data, sse.as_ref()).unwrap();
            let f = fs::File::open(e.path(bucket, &key)).unwrap();
            assert_eq!(
                Engine::read_header(&f, &key).unwrap().chunk,
                c,
                "{name} {bucket}"
            );
            let len = fs::metadata(e.path(bucket, &key)).unwrap().len();
            assert_eq!(len, c.backend_len(data.len() as u64), "{name} {bucket}");
            assert_eq!(e.get(bucket, &key).unwrap(), data, "{name} {bucket}");
        }
        // Same chunk size, other slot format: refused, never misread.
        fs::rename(e.path("old16", &key), e.path("new", "moved")).unwrap();
        let err = e.get("new", "moved").unwrap_err();
        assert_eq!(err.code, OssCode::DataIntegrityError, "{name}");
        assert!(err.message.contains("slots"), "{}", err.message);
        fs::remove_file(e.path("new", "moved")).unwrap();
        // A copy into the new bucket re-encrypts it in wide slots.
        e.engine
            .copy_object(
                &root(),
                (&b("old"), &k(&key)),
                (&b("new"), &k("copied")),
                None,
            )
            .unwrap();
        let f = fs::File::open(e.path("new", "copied")).unwrap();
        assert_eq!(
            Engine::read_header(&f, "copied").unwrap().chunk,
            ChunkSize::DEFAULT.wide()
        );
        assert_eq!(e.get("new", "copied").unwrap(), data);
    }
    // An empty old bucket becomes wide when its chunk size is set.
    old_style("empty", None);
    e.engine
        .put_bucket_chunk_size(&root(), &b("empty"), ChunkSize::KIB64)
        .unwrap();
    assert_eq!(
        e.engine.bucket_chunk_size(&b("empty")).unwrap(),
        ChunkSize::KIB64.wide()
    );
}

// ------------------------------------------ read_with: runs opened in place

/// Every cipher, in both slot formats, at a small chunk size.
fn layouts() -> Vec<(Cipher, ChunkSize)> {
    let mut v = Vec::new();
    for cipher in [Cipher::Aes256Gcm, Cipher::Sm4Gcm, Cipher::None] {
        for format in [Narrow, Wide] {
            v.push((cipher, ChunkSize::ALL[0].with_format(format)));
        }
    }
    v
}

#[test]
fn read_with_returns_runs_across_chunk_boundaries_holes_and_the_end() {
    for (cipher, chunk) in layouts() {
        let c = chunk.bytes();
        let (tmp, mut o, key) = temp_object_in(cipher, chunk);
        let mut model = pattern(9 * c + 123, 5);
        o.write_at(0, &model).unwrap();
        // A hole (chunks 11, 12) and a new short last chunk.
        let tail = pattern(77, 6);
        o.write_at(13 * c as u64 + 5, &tail).unwrap();
        model.resize(13 * c + 5, 0);
        model.extend_from_slice(&tail);
        let o = reopen(&tmp, &key);
        let len = model.len();
        let cases = [
            (0, len),
            (0, 1),
            (1, c),
            (c - 1, 2),
            (c, 3 * c),
            (c / 2, 5 * c),
            (9 * c, 4 * c + 2),
            (11 * c + 7, c),
            (len - 1, 10),
            (len - 77, 77),
            (len, 5),
            (len + 4, 5),
        ];
        for (off, n) in cases {
            let got = o.read_with(off as u64, n, |d| d.to_vec()).unwrap();
            let from = off.min(len);
            let to = (off + n).min(len);
            assert_eq!(got, &model[from..to], "{cipher:?} {chunk:?} at {off}+{n}");
        }
    }
}

/// Backend bytes flipped by hand, after the stream of reads has had the
/// kernel read them ahead: the read that covers them fails, and never
/// hands out a byte; the reads before and after it are intact.
#[test]
fn a_tampered_chunk_in_the_prefetched_range_fails_the_read_that_covers_it() {
    for (cipher, chunk) in layouts() {
        let c = chunk.bytes();
        let (tmp, mut o, key) = temp_object_in(cipher, chunk);
        let step = 256 << 10;
        let data = pattern(12 * step + c / 3, 7);
        o.write_at(0, &data).unwrap();
        let o = reopen(&tmp, &key);
        // Two sequential reads start the backend prefetch.
        for i in 0..2 {
            let got = o
                .read_with((i * step) as u64, step, |d| d.to_vec())
                .unwrap();
            assert_eq!(got, &data[i * step..(i + 1) * step]);
        }
        assert!(
            o.prefetched_to() > (2 * step) as u64,
            "{cipher:?}: no prefetch"
        );
        // Flip a byte of the chunk in the middle of the 6th step, now in
        // the page cache.
        let bad = (5 * step + step / 2) as u64 / c as u64;
        let at = chunk.slot_offset(bad) + chunk.slot() as u64 / 2;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(tmp.path())
            .unwrap();
        let mut byte = [0u8];
        f.read_exact_at(&mut byte, at).unwrap();
        f.write_all_at(&[byte[0] ^ 0x10], at).unwrap();
        for i in 2..=12 {
            let off = i * step;
            let mut handed = false;
            let r = o.read_with(off as u64, step, |d| {
                handed = true;
                d.to_vec()
            });
            if i == 5 {
                let e = r.unwrap_err();
                assert_eq!(e.code, OssCode::DataIntegrityError, "{cipher:?}: {e}");
                assert!(!handed, "{cipher:?}: bytes handed out before the check");
            } else {
                let to = (off + step).min(data.len());
                assert_eq!(r.unwrap(), &data[off..to], "{cipher:?} step {i}");
            }
        }
    }
}

#[test]
fn prefetch_follows_sequential_streams_only() {
    let (tmp, mut o, key) = temp_object(Cipher::Aes256Gcm);
    let data = pattern(40 << 20, 8);
    for (i, part) in data.chunks(1 << 20).enumerate() {
        o.write_at((i << 20) as u64, part).unwrap();
    }
    let o = reopen(&tmp, &key);
    let backend = fs::metadata(tmp.path()).unwrap().len();
    // Small random reads never prefetch.
    for off in [
        7u64 << 20,
        30 << 20,
        3 << 20,
        3 << 20 | 4096,
        3 << 20 | 8192,
    ] {
        o.read_with(off, 4096, |_| ()).unwrap();
    }
    assert_eq!(o.prefetched_to(), 0);
    // A stream of 1 MiB reads keeps the prefetch ahead of it, up to the
    // end of the backend file and never past it.
    for i in 0..40u64 {
        let got = o.read_with(i << 20, 1 << 20, |d| d.to_vec()).unwrap();
        assert_eq!(got, &data[(i << 20) as usize..((i + 1) << 20) as usize]);
        let p = o.prefetched_to();
        if i >= 1 {
            assert!(
                p >= ChunkSize::DEFAULT
                    .slot_offset(((i + 1) << 20) / CHUNK_SIZE as u64)
                    .min(backend),
                "read {i}: prefetched to {p}"
            );
        }
        assert!(p <= backend);
    }
    assert_eq!(o.prefetched_to(), backend);
    // Going back to the start starts a new window there.
    o.read_with(0, 1 << 20, |_| ()).unwrap();
    o.read_with(1 << 20, 1 << 20, |_| ()).unwrap();
    assert!(o.prefetched_to() < backend);
}

/// Readers racing over one object (the FUSE threads serving the kernel's
/// readahead) all get the right bytes, in both read paths.
#[test]
fn concurrent_sequential_readers_get_the_right_bytes() {
    let (tmp, mut o, key) = temp_object(Cipher::Aes256Gcm);
    let data = pattern((6 << 20) + 999, 9);
    o.write_at(0, &data).unwrap();
    for cached in [false, true] {
        let o = if cached { &o } else { &reopen(&tmp, &key) };
        std::thread::scope(|s| {
            for t in 0..4usize {
                let data = &data;
                s.spawn(move || {
                    let step = (128 << 10) + t * 4096 + 17;
                    let mut off = t * 1000;
                    while off < data.len() {
                        let got = o.read_with(off as u64, step, |d| d.to_vec()).unwrap();
                        let to = (off + step).min(data.len());
                        assert_eq!(got, &data[off..to], "thread {t} at {off}");
                        off += step;
                    }
                });
            }
        });
    }
}

/// Prefetching is of ciphertext into the backend's page cache, which
/// writes go through: what a write changed after the prefetch is what the
/// next read returns.
#[test]
fn a_write_after_the_prefetch_is_what_the_next_read_returns() {
    let (tmp, mut o, key) = temp_object(Cipher::Aes256Gcm);
    let mut data = pattern(8 << 20, 10);
    o.write_at(0, &data).unwrap();
    let mut o2 = reopen(&tmp, &key);
    for i in 0..2u64 {
        o2.read_with(i << 20, 1 << 20, |_| ()).unwrap();
    }
    assert!(o2.prefetched_to() > 2 << 20);
    let new = pattern(3 * CHUNK_SIZE + 5, 11);
    let at = (5 << 20) - 100;
    o2.write_at(at as u64, &new).unwrap();
    data[at..at + new.len()].copy_from_slice(&new);
    for i in 2..8u64 {
        let got = o2.read_with(i << 20, 1 << 20, |d| d.to_vec()).unwrap();
        assert_eq!(got, &data[(i << 20) as usize..((i + 1) << 20) as usize]);
    }
    // And another process opening the file sees it too.
    let o3 = reopen(&tmp, &key);
    assert_eq!(o3.read_with(0, data.len(), |d| d.to_vec()).unwrap(), data);
}

/// Bytes in memory, as a store's object will be to `ObjectFile`: not a
/// file, no descriptor.
#[derive(Default)]
struct MemSlots(std::sync::Mutex<Vec<u8>>);

impl super::SlotIo for MemSlots {
    fn read_slots(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        let v = self.0.lock().unwrap();
        let from = (off as usize).min(v.len());
        let n = buf.len().min(v.len() - from);
        buf[..n].copy_from_slice(&v[from..from + n]);
        Ok(n)
    }
    fn write_slots(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        let mut v = self.0.lock().unwrap();
        let end = off as usize + buf.len();
        if v.len() < end {
            v.resize(end, 0);
        }
        v[off as usize..end].copy_from_slice(buf);
        Ok(())
    }
    fn truncate_to(&self, len: u64) -> std::io::Result<()> {
        self.0.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }
    fn len_and_ident(&self) -> std::io::Result<(u64, (u64, u64))> {
        Ok((self.0.lock().unwrap().len() as u64, (0, 1)))
    }
    fn sync_slots(&self, _data_only: bool) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn an_object_in_slots_that_are_not_a_file_reads_back_and_detects_tampering() {
    for cipher in [Cipher::Aes256Gcm, Cipher::Sm4Gcm] {
        let kek = FixedKek {
            key_id: [0; 16],
            version: 1,
            key: SecretKey::random(32),
            nonce: [9; 12],
        };
        let (h, key) = Header::new_sealed(Method::Oss, cipher, ChunkSize::DEFAULT, &kek);
        let data: Vec<u8> = (0..3 * CHUNK_SIZE + 100).map(|i| (i * 7) as u8).collect();
        let mut o = ObjectFile::create(MemSlots::default(), h.clone(), &key, "mem".into()).unwrap();
        o.write_at(0, &data).unwrap();
        o.set_len(data.len() as u64 - 50).unwrap();
        let stored = o.file().0.lock().unwrap().clone();

        // Read back as a later reader would: from the stored bytes alone.
        let again = MemSlots(std::sync::Mutex::new(stored.clone()));
        let r = ObjectFile::new(again, h.clone(), &key, "mem".into()).unwrap();
        assert_eq!(r.size(), data.len() as u64 - 50);
        let mut buf = vec![0u8; data.len()];
        let n = r.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf[..n], &data[..data.len() - 50]);

        // One flipped byte in the second chunk: that chunk fails, the
        // first still reads.
        let mut bad = stored;
        bad[slot_offset(1) as usize + 10] ^= 1;
        let r =
            ObjectFile::new(MemSlots(std::sync::Mutex::new(bad)), h, &key, "mem".into()).unwrap();
        let mut first = vec![0u8; CHUNK_SIZE];
        assert_eq!(r.read_at(0, &mut first).unwrap(), CHUNK_SIZE);
        assert_eq!(first, data[..CHUNK_SIZE]);
        let e = r.read_at(CHUNK_SIZE as u64, &mut first).unwrap_err();
        assert_eq!(e.errno(), libc::EIO, "{e}");
    }
}
