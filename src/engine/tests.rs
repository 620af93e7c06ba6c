//! Engine tests without a mount: random access against a model, tampering,
//! OSS precedence rules, KMS key states and permissions.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;

use proptest::prelude::*;

use super::*;
use crate::crypto::Cipher;
use crate::format::tests::FixedKek;
use crate::format::{slot_offset, CHUNK_OVERHEAD, CHUNK_SIZE, SLOT_SIZE};
use crate::kms::KeyOrigin;
use crate::oss::{BucketName, ObjectKey};

// ---------------------------------------------------------------- helpers

/// An ObjectFile on a temp file with a random data key (no KMS involved).
fn temp_object(cipher: Cipher) -> (tempfile::NamedTempFile, ObjectFile, SecretKey) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(tmp.path())
        .unwrap();
    let (h, key) = if cipher == Cipher::None {
        (Header::new_plain(), SecretKey::from_bytes(&[]))
    } else {
        let kek = FixedKek {
            key_id: [0; 16],
            version: 1,
            key: SecretKey::random(32),
            nonce: [9; 12],
        };
        Header::new_sealed(Method::Oss, cipher, &kek)
    };
    // A small shared cache, so the tests also cover hits, evictions and
    // invalidation.
    let o = ObjectFile::create(f, h, &key, "test".into())
        .unwrap()
        .with_cache(Some(std::sync::Arc::new(super::ChunkCache::new(
            6 * CHUNK_SIZE,
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

fn op() -> impl Strategy<Value = Op> {
    let max = 5 * CHUNK_SIZE as u64;
    prop_oneof![
        (
            0..max,
            prop::collection::vec(any::<u8>(), 1..2 * CHUNK_SIZE)
        )
            .prop_map(|(o, d)| Op::Write(o, d)),
        (0..max, 1usize..3 * CHUNK_SIZE).prop_map(|(o, l)| Op::Read(o, l)),
        (0..max).prop_map(Op::Truncate),
    ]
}

fn run_model(cipher: Cipher, ops: &[Op]) -> std::result::Result<(), TestCaseError> {
    let (tmp, mut o, key) = temp_object(cipher);
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
            }
            Op::Truncate(n) => {
                o.set_len(*n).unwrap();
                model.resize(*n as usize, 0);
            }
        }
        prop_assert_eq!(o.size(), model.len() as u64);
        let file_len = fs::metadata(tmp.path()).unwrap().len();
        prop_assert_eq!(
            crate::format::plaintext_len(file_len),
            Some(model.len() as u64)
        );
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
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn random_access_matches_a_model_aes(ops in prop::collection::vec(op(), 1..24)) {
        run_model(Cipher::Aes256Gcm, &ops)?;
    }
    #[test]
    fn random_access_matches_a_model_sm4(ops in prop::collection::vec(op(), 1..12)) {
        run_model(Cipher::Sm4Gcm, &ops)?;
    }
    #[test]
    fn random_access_matches_a_model_plain(ops in prop::collection::vec(op(), 1..24)) {
        run_model(Cipher::None, &ops)?;
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
    let mut o = engine.open_object(&root_p(), f, "bkt/o".into()).unwrap();
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
    let nobody = Principal::new(crate::kms::NOBODY_UID, crate::kms::NOBODY_UID);
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
    let dir = e.engine.bucket_dir(&b("bkt"));
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
