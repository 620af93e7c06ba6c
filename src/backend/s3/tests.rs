//! `S3Backend` over object_store's in-memory store: the same code as on
//! Garage (tests/integration/store.rs), with conditional writes that the
//! in-memory store honours, so both ways of serialising records are
//! checked: compare-and-swap (`conditional`) and the ticket lock.

use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use object_store::memory::InMemory;

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutOptions, PutPayload};

use super::*;
use crate::backend::{Backend, StateStore};
use crate::crypto::SecretKey;
use crate::error::OssCode;
use crate::format::ChunkSize;
use crate::kms::{MacKey, MacPurpose};

struct Fx {
    _dir: tempfile::TempDir,
    be: S3Backend,
    bkt: BucketName,
}

fn fx(conditional: bool) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let be = S3Backend::with_stores(
        vec![store],
        "pre/fix",
        ("s3://mem".into(), "s3://mem/pre/fix at memory".into()),
        &dir.path().join("state"),
    )
    .unwrap()
    .force_conditional(conditional);
    be.use_meta_key(
        MacKey::derive(&SecretKey::from_bytes(&[9; 32]), MacPurpose::ObjectMeta).into_secret(),
    );
    let bkt = BucketName::parse("bkt").unwrap();
    be.create_bucket(&bkt).unwrap();
    Fx { _dir: dir, be, bkt }
}

/// A header as an object starts with (unencrypted, so no KMS is needed),
/// then `body`.
fn object(body: &[u8]) -> (Vec<u8>, [u8; 16]) {
    let h = Header::new_plain(ChunkSize::DEFAULT, &SecretKey::from_bytes(&[1; 32])).unwrap();
    let mut v = h.encode().to_vec();
    v.extend_from_slice(body);
    (v, h.object_id)
}

impl Fx {
    fn at<'a>(&'a self, key: &'a str) -> Loc<'a> {
        Loc {
            bucket: &self.bkt,
            key,
        }
    }

    fn put(&self, key: &str, bytes: &[u8], meta: &ObjMeta, cond: Cond) -> Result<Version> {
        let mut s = self.be.stage(key)?;
        s.file.write_all(bytes).unwrap();
        self.be.commit(s, self.at(key), meta, cond)
    }

    fn read(&self, key: &str) -> Vec<u8> {
        let f = self.be.find(self.at(key)).unwrap();
        let mut out = Vec::new();
        f.file().read_to_end(&mut out).unwrap();
        out
    }
}

#[test]
fn the_probe_finds_conditional_writes_in_memory() {
    assert!(fx(false).be.probe().unwrap());
}

#[test]
fn objects_round_trip_with_their_metadata_in_both_modes() {
    for conditional in [false, true] {
        let f = fx(conditional);
        let (bytes, _) = object(b"hello");
        let meta = ObjMeta {
            mode: Some(0o600),
            owner: Some((7, 8)),
            times: Some([(1, 2), (3, 4)]),
            xattrs: vec![(b"user.k".to_vec(), b"v".to_vec())],
            sse_override: None,
            ctime: None,
        };
        let v = f.put("a/b", &bytes, &meta, Cond::Any).unwrap();
        assert_eq!(f.read("a/b"), bytes);
        let found = f.be.find(f.at("a/b")).unwrap();
        assert_eq!(found.version, v);
        assert_eq!(found.len, bytes.len() as u64);
        assert_eq!(f.be.meta(&found).unwrap(), meta);
        // An empty object (no header yet) round-trips too.
        f.put("empty", b"", &ObjMeta::default(), Cond::Any).unwrap();
        assert!(f.be.find(f.at("empty")).unwrap().headerless());
    }
}

#[test]
fn conditions_hold_in_both_modes() {
    for conditional in [false, true] {
        let f = fx(conditional);
        let (one, _) = object(b"one");
        let (two, _) = object(b"two");
        let m = ObjMeta::default();
        let v1 = f.put("k", &one, &m, Cond::Absent).unwrap();
        let e = f.put("k", &two, &m, Cond::Absent).unwrap_err();
        assert_eq!(e.code, OssCode::FileAlreadyExists, "{conditional}");
        f.put("k", &two, &m, Cond::Is(v1.clone())).unwrap();
        // The version read before is gone: a rewrite over it is refused,
        // and the object is left as it is.
        let e = f.put("k", &one, &m, Cond::Is(v1)).unwrap_err();
        assert_eq!(e.code, OssCode::PreconditionFailed, "{conditional}");
        assert_eq!(f.read("k"), two);
        // replace() commits over the found version only.
        let found = f.be.find(f.at("k")).unwrap();
        f.put("k", &one, &m, Cond::Any).unwrap();
        let mut s = f.be.stage("k").unwrap();
        s.file.write_all(&two).unwrap();
        let e = f.be.replace(s, &found, &m, "k").unwrap_err();
        assert_eq!(e.code, OssCode::PreconditionFailed, "{conditional}");
        assert_eq!(f.read("k"), one);
    }
}

#[test]
fn records_changed_from_many_threads_lose_nothing_in_both_modes() {
    for conditional in [false, true] {
        let f = fx(conditional);
        let threads = 4;
        let each = 6;
        std::thread::scope(|s| {
            for t in 0..threads {
                let be = &f.be;
                s.spawn(move || {
                    for i in 0..each {
                        be.update_state(State::Keystore, &mut |cur| {
                            let mut v = cur.map(<[u8]>::to_vec).unwrap_or_default();
                            v.extend_from_slice(format!("{t}.{i}\n").as_bytes());
                            Ok(Some(v))
                        })
                        .unwrap();
                    }
                });
            }
        });
        let (bytes, _) = f.be.get_state(State::Keystore).unwrap().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text.lines().count(),
            threads * each,
            "{conditional}: {text}"
        );
        // No lock ticket is left behind.
        let locks = f.be.path(".ssefs/locks").unwrap();
        let left: Vec<_> =
            f.be.block_on(f.be.store().list(Some(&locks)).try_collect::<Vec<_>>())
                .unwrap();
        assert!(left.is_empty(), "{left:?}");
    }
}

#[test]
fn buckets_are_created_once_listed_and_deleted_only_when_empty() {
    let f = fx(false);
    let other = BucketName::parse("other").unwrap();
    assert_eq!(
        f.be.create_bucket(&f.bkt).unwrap_err().code,
        OssCode::BucketAlreadyExists
    );
    f.be.create_bucket(&other).unwrap();
    assert_eq!(
        f.be.list_buckets().unwrap(),
        vec![f.bkt.clone(), other.clone()]
    );
    assert_eq!(
        f.be.bucket_owner(&f.bkt).unwrap(),
        nix::unistd::geteuid().as_raw()
    );
    let (bytes, _) = object(b"x");
    f.put("d/x", &bytes, &ObjMeta::default(), Cond::Any)
        .unwrap();
    // Settings are not content; an object is.
    f.be.update_state(State::BucketSettings(&f.bkt), &mut |_| {
        Ok(Some(b"s".to_vec()))
    })
    .unwrap();
    assert!(!f.be.bucket_is_empty(&f.bkt).unwrap());
    assert_eq!(
        f.be.delete_bucket(&f.bkt).unwrap_err().code,
        OssCode::BucketNotEmpty
    );
    f.be.delete(f.at("d/x"), Cond::Any).unwrap();
    assert!(f.be.bucket_is_empty(&f.bkt).unwrap());
    f.be.delete_bucket(&f.bkt).unwrap();
    assert_eq!(f.be.list_buckets().unwrap(), vec![other]);
    let e = f.be.find(f.at("d/x")).unwrap_err();
    assert_eq!(e.code, OssCode::NoSuchBucket);
}

#[test]
fn listing_pages_through_keys_in_order_and_hides_ssefs_names() {
    let f = fx(false);
    let (bytes, _) = object(b"x");
    let keys = ["a/1", "a/2", "a/3", "b", "a/x/y"];
    for k in keys {
        f.put(k, &bytes, &ObjMeta::default(), Cond::Any).unwrap();
    }
    f.be.update_state(State::BucketSettings(&f.bkt), &mut |_| {
        Ok(Some(b"s".to_vec()))
    })
    .unwrap();
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let p = f.be.list(&f.bkt, "a/", after.as_deref(), 2).unwrap();
        assert!(p.keys.len() <= 2);
        got.extend(p.keys);
        match p.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(got, ["a/1", "a/2", "a/3", "a/x/y"]);
    let all = f.be.list(&f.bkt, "", None, 100).unwrap();
    assert_eq!(all.keys, ["a/1", "a/2", "a/3", "a/x/y", "b"]);
    assert_eq!(all.next, None);
    // Reserved names are refused as keys.
    let e = f.put(".ssefs-bucket", &bytes, &ObjMeta::default(), Cond::Any);
    assert_eq!(e.unwrap_err().code, OssCode::InvalidObjectName);
}

#[test]
fn a_record_moved_to_another_object_or_edited_is_refused() {
    let f = fx(false);
    let (one, _) = object(b"one");
    let (two, _) = object(b"two");
    f.put("one", &one, &ObjMeta::default(), Cond::Any).unwrap();
    f.put("two", &two, &ObjMeta::default(), Cond::Any).unwrap();
    let get = |k: &str| {
        let p = f.be.path(&format!("bkt/{k}")).unwrap();
        f.be.block_on(async { f.be.store().get(&p).await.unwrap() })
            .attributes
    };
    let rec_two = get("two");
    // One's bytes with two's (valid) record.
    let p = f.be.path("bkt/one").unwrap();
    f.be.block_on(f.be.store().put_opts(
        &p,
        PutPayload::from(one.clone()),
        PutOptions {
            attributes: rec_two,
            ..PutOptions::default()
        },
    ))
    .unwrap();
    let e = f.be.find(f.at("one")).unwrap_err();
    assert_eq!(e.code, OssCode::DataIntegrityError);
    assert!(e.to_string().contains("another object"), "{e}");
    // No record.
    f.be.block_on(f.be.store().put(&p, PutPayload::from(one)))
        .unwrap();
    assert_eq!(
        f.be.find(f.at("one")).unwrap_err().code,
        OssCode::DataIntegrityError
    );
}

#[test]
fn an_upload_begun_while_writing_completes_at_the_commit_and_vanishes_if_dropped() {
    let f = fx(false);
    let meta = ObjMeta {
        mode: Some(0o640),
        ..ObjMeta::default()
    };
    // 40 MiB in 1 MiB writes, settled as they go: parts leave early.
    let (mut bytes, _) = object(&[]);
    bytes.extend((0..40u32 << 20).map(|i| (i % 251) as u8));
    let s = f.be.stage_for(f.at("big"), &meta).unwrap();
    for (i, piece) in bytes.chunks(1 << 20).enumerate() {
        s.file.write_all_at(piece, (i as u64) << 20).unwrap();
        s.settled(((i as u64) + 1) << 20);
    }
    f.be.commit(s, f.at("big"), &meta, Cond::Any).unwrap();
    assert!(f.read("big") == bytes);
    let found = f.be.find(f.at("big")).unwrap();
    assert_eq!(f.be.meta(&found).unwrap(), meta);
    // Dropped before its commit: nothing appears, the old object stays.
    let s = f.be.stage_for(f.at("big"), &ObjMeta::default()).unwrap();
    let (other, _) = object(&vec![7u8; 20 << 20]);
    s.file.write_all_at(&other, 0).unwrap();
    s.settled(other.len() as u64);
    f.be.discard(s);
    assert!(f.read("big") == bytes);
    // A small object is one PUT at the commit.
    let s = f.be.stage_for(f.at("small"), &meta).unwrap();
    let (small, _) = object(b"tiny");
    s.file.write_all_at(&small, 0).unwrap();
    f.be.commit(s, f.at("small"), &meta, Cond::Any).unwrap();
    assert_eq!(f.read("small"), small);
}
