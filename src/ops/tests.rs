//! Operations against a temp engine, without the CLI.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;

use indicatif::ProgressBar;

use super::*;
use crate::engine::Engine;
use crate::format::{Header, Method, HEADER_LEN};
use crate::kms::{KeyOrigin, RootKeySource};
use crate::oss::{BucketName, ObjectKey, SseAlgorithm, SseConfig};
use crate::principal::Principal;

struct Env {
    _dir: tempfile::TempDir,
    engine: Engine,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let root = RootKeySource::File(dir.path().join("root.key"));
    Engine::init(&data, &root).unwrap();
    let engine = Engine::open(&data, &root).unwrap();
    Env { _dir: dir, engine }
}

fn b(s: &str) -> BucketName {
    BucketName::parse(s).unwrap()
}

fn p() -> Principal {
    Principal::current()
}

fn hidden() -> ProgressBar {
    ProgressBar::hidden()
}

fn sse(alg: SseAlgorithm, key: Option<&str>) -> SseConfig {
    SseConfig {
        algorithm: alg,
        kms_key_id: key.map(str::to_owned),
        kms_data_sm4: false,
    }
}

fn put(e: &Engine, bucket: &str, key: &str, data: &[u8], over: Option<&SseConfig>) {
    e.put_object(
        &p(),
        &b(bucket),
        &ObjectKey::parse(key).unwrap(),
        &mut &data[..],
        over,
    )
    .unwrap();
}

fn get(e: &Engine, bucket: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    e.get_object(&p(), &b(bucket), &ObjectKey::parse(key).unwrap(), &mut out)
        .unwrap();
    out
}

fn header(e: &Engine, bucket: &str, key: &str) -> Header {
    let path = e.object_path(&b(bucket), &ObjectKey::parse(key).unwrap());
    Engine::read_header(&File::open(path).unwrap(), key).unwrap()
}

fn backend(e: &Engine, bucket: &str, key: &str) -> Vec<u8> {
    fs::read(e.object_path(&b(bucket), &ObjectKey::parse(key).unwrap())).unwrap()
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

#[test]
fn reencrypt_rewrites_only_differing_objects() {
    let env = env();
    let e = &env.engine;
    e.create_bucket(&b("bkt")).unwrap();
    // Written before any rule: unencrypted.
    put(e, "bkt", "plain", &data(200_000, 1), None);
    put(e, "bkt", "dir/nested", &data(70_000, 2), None);
    // An explicit override is kept, whatever the rule.
    let sm4 = sse(SseAlgorithm::Sm4, None);
    put(e, "bkt", "pinned", &data(1000, 3), Some(&sm4));
    e.put_bucket_encryption(&p(), &b("bkt"), &sse(SseAlgorithm::Aes256, None))
        .unwrap();
    put(e, "bkt", "already", &data(5000, 4), None);
    // Our own files and symlinks are not objects.
    let dir = e.bucket_dir(&b("bkt"));
    std::os::unix::fs::symlink("plain", dir.join("link")).unwrap();
    let before_pinned = backend(e, "bkt", "pinned");
    let before_already = backend(e, "bkt", "already");

    let r = reencrypt(e, &p(), &b("bkt"), None, &hidden()).unwrap();
    assert_eq!((r.checked, r.changed), (4, 2), "{r:?}");
    assert!(r.failures.is_empty());
    assert_eq!(header(e, "bkt", "plain").method, Method::Oss);
    assert_eq!(header(e, "bkt", "dir/nested").method, Method::Oss);
    assert_eq!(get(e, "bkt", "plain"), data(200_000, 1));
    assert_eq!(get(e, "bkt", "dir/nested"), data(70_000, 2));
    assert_eq!(backend(e, "bkt", "pinned"), before_pinned);
    assert_eq!(backend(e, "bkt", "already"), before_already);

    // A second run has nothing left to do.
    let r = reencrypt(e, &p(), &b("bkt"), None, &hidden()).unwrap();
    assert_eq!((r.checked, r.changed), (4, 0));
    assert_eq!(
        r.summary("reencrypt", "rewritten"),
        "reencrypt: 4 objects checked, 0 rewritten, 0 failed"
    );
}

#[test]
fn reencrypt_honours_prefix_and_kms_key() {
    let env = env();
    let e = &env.engine;
    e.create_bucket(&b("bkt")).unwrap();
    put(e, "bkt", "a/1", b"one", None);
    put(e, "bkt", "b/2", b"two", None);
    let key = e
        .kms()
        .create_key(None, KeyOrigin::AliyunKms, Some("alias/app"))
        .unwrap();
    e.put_bucket_encryption(&p(), &b("bkt"), &sse(SseAlgorithm::Kms, Some("alias/app")))
        .unwrap();
    let r = reencrypt(e, &p(), &b("bkt"), Some("a/"), &hidden()).unwrap();
    assert_eq!((r.checked, r.changed), (1, 1));
    let h = header(e, "bkt", "a/1");
    assert_eq!(h.method, Method::Kms);
    assert_eq!(h.key_id, *key.key_id.as_bytes());
    assert_eq!(header(e, "bkt", "b/2").method, Method::None);
    assert_eq!(get(e, "bkt", "a/1"), b"one");
}

#[test]
fn rewrap_moves_headers_to_new_versions_keeping_chunks() {
    let env = env();
    let e = &env.engine;
    e.create_bucket(&b("oss")).unwrap();
    e.create_bucket(&b("kms")).unwrap();
    e.put_bucket_encryption(&p(), &b("oss"), &sse(SseAlgorithm::Aes256, None))
        .unwrap();
    e.kms()
        .create_key(None, KeyOrigin::AliyunKms, Some("alias/app"))
        .unwrap();
    e.put_bucket_encryption(&p(), &b("kms"), &sse(SseAlgorithm::Kms, Some("alias/app")))
        .unwrap();
    put(e, "oss", "o", &data(150_000, 5), None);
    put(e, "kms", "k", &data(90_000, 6), None);
    let mv = header(e, "oss", "o").key_version;
    let kv = header(e, "kms", "k").key_version;
    let old_o = backend(e, "oss", "o");
    let old_k = backend(e, "kms", "k");

    // Nothing to do yet.
    let r = rewrap(e, &p(), None, &hidden()).unwrap();
    assert_eq!((r.checked, r.changed), (2, 0));

    let new_mv = e.kms().rotate_master().unwrap();
    assert!(new_mv > mv);
    e.kms().rotate_key("alias/app").unwrap();
    let r = rewrap(e, &p(), None, &hidden()).unwrap();
    assert_eq!((r.checked, r.changed), (2, 2), "{r:?}");
    assert!(r.failures.is_empty());

    let (ho, hk) = (header(e, "oss", "o"), header(e, "kms", "k"));
    assert_eq!(ho.key_version, new_mv);
    assert_eq!(hk.key_version, kv + 1);
    let (new_o, new_k) = (backend(e, "oss", "o"), backend(e, "kms", "k"));
    assert_eq!(new_o[HEADER_LEN..], old_o[HEADER_LEN..]);
    assert_eq!(new_k[HEADER_LEN..], old_k[HEADER_LEN..]);
    assert_ne!(new_o[..HEADER_LEN], old_o[..HEADER_LEN]);
    assert_eq!(get(e, "oss", "o"), data(150_000, 5));
    assert_eq!(get(e, "kms", "k"), data(90_000, 6));
    assert!(fs::read_dir(e.data_dir().join(".ssefs/tmp"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn rewrap_keeps_override_and_attributes() {
    let env = env();
    let e = &env.engine;
    e.create_bucket(&b("bkt")).unwrap();
    let sm4 = sse(SseAlgorithm::Sm4, None);
    put(e, "bkt", "x", b"hello", Some(&sm4));
    let path = e.object_path(&b("bkt"), &ObjectKey::parse("x").unwrap());
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    e.kms().rotate_master().unwrap();
    let r = rewrap(e, &p(), Some(&b("bkt")), &hidden()).unwrap();
    assert_eq!(r.changed, 1);
    let f = File::open(&path).unwrap();
    assert_eq!(Engine::read_override(&f, "x").unwrap(), Some(sm4));
    let m = f.metadata().unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777,
        0o600
    );
    assert_eq!(m.modified().unwrap(), mtime);
    assert_eq!(get(e, "bkt", "x"), b"hello");
}

#[test]
fn verify_reports_only_the_corrupt_object() {
    let env = env();
    let e = &env.engine;
    e.create_bucket(&b("bkt")).unwrap();
    e.put_bucket_encryption(&p(), &b("bkt"), &sse(SseAlgorithm::Aes256, None))
        .unwrap();
    put(e, "bkt", "good", &data(100_000, 7), None);
    put(e, "bkt", "bad", &data(100_000, 8), None);
    put(e, "bkt", "sm4", b"x", Some(&sse(SseAlgorithm::Sm4, None)));
    assert!(verify(e, &p(), None, &hidden())
        .unwrap()
        .failures
        .is_empty());

    let path = e.object_path(&b("bkt"), &ObjectKey::parse("bad").unwrap());
    let f = fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8];
    let off = HEADER_LEN as u64 + 70_000;
    f.read_at(&mut byte, off).unwrap();
    f.write_at(&[byte[0] ^ 1], off).unwrap();

    let r = verify(e, &p(), Some(&b("bkt")), &hidden()).unwrap();
    assert_eq!(r.checked, 3);
    assert_eq!(r.failures.len(), 1, "{r:?}");
    assert_eq!(r.failures[0].name, "bkt/bad");
    assert!(!r.failures[0].reason.is_empty());
}

#[test]
fn status_lists_buckets_rules_counts_and_keys() {
    let env = env();
    let e = &env.engine;
    e.create_bucket(&b("one")).unwrap();
    e.create_bucket(&b("two")).unwrap();
    e.put_bucket_encryption(&p(), &b("two"), &sse(SseAlgorithm::Sm4, None))
        .unwrap();
    put(e, "one", "a", b"1", None);
    put(e, "one", "d/b", b"2", None);
    put(e, "two", "c", b"3", None);
    let key = e
        .kms()
        .create_key(None, KeyOrigin::AliyunKms, Some("alias/app"))
        .unwrap();
    let s = status(e).unwrap();
    assert!(s.mounts.is_empty());
    assert_eq!(s.buckets.len(), 2);
    assert_eq!(
        (s.buckets[0].objects, s.buckets[0].rule.is_none()),
        (2, true)
    );
    assert_eq!(s.buckets[1].objects, 1);
    assert_eq!(s.buckets[1].rule, Some(sse(SseAlgorithm::Sm4, None)));
    assert!(s.keys.iter().any(|k| k.key_id == key.key_id));
    let text = s.to_string();
    assert!(text.contains("one\trule: none\tobjects: 2"), "{text}");
    assert!(text.contains("two\trule: SM4\tobjects: 1"), "{text}");
    assert!(
        text.contains(&key.key_id.hyphenated().to_string()),
        "{text}"
    );
    assert!(text.contains("Enabled"), "{text}");
    let policy = e.data_dir().join(".ssefs/config.toml");
    assert!(
        text.contains(&format!(
            "  rotated automatically: every 90 days ([kms] master_rotation_days in {})",
            policy.display()
        )),
        "{text}"
    );
}
