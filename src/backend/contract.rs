//! What every `Backend` must do, checked on the local one. The store
//! backends of docs/design/s3-backend.md are to pass the same checks.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, MetadataExt};

use super::*;
use crate::error::OssCode;
use crate::oss::SseAlgorithm;

struct Fixture {
    dir: tempfile::TempDir,
    be: PosixBackend,
    bkt: BucketName,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join(".ssefs/tmp")).unwrap();
    fs::create_dir(root.join("bkt")).unwrap();
    let be = PosixBackend::new(
        root,
        Dir::open(root).unwrap(),
        Dir::open(&root.join(".ssefs/tmp")).unwrap(),
        super::StateDir::open(&root.join(".ssefs")).unwrap(),
    );
    Fixture {
        dir,
        be,
        bkt: BucketName::parse("bkt").unwrap(),
    }
}

impl Fixture {
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

    /// Staged files still in `.ssefs/tmp`.
    fn staged(&self) -> usize {
        fs::read_dir(self.dir.path().join(".ssefs/tmp"))
            .unwrap()
            .count()
    }

    fn code(&self, r: Result<impl std::fmt::Debug>) -> OssCode {
        r.expect_err("should have failed").code
    }
}

#[test]
fn a_committed_object_is_found_with_its_bytes_and_version() {
    let f = fixture();
    let v = f
        .put("a/b/c", b"hello", &ObjMeta::default(), Cond::Any)
        .unwrap();
    assert_eq!(f.read("a/b/c"), b"hello");
    let found = f.be.find(f.at("a/b/c")).unwrap();
    assert_eq!(found.version, v);
    assert_eq!(found.len, 5);
    // Replaced whole by the next commit, which is another version.
    let v2 = f
        .put("a/b/c", b"bye", &ObjMeta::default(), Cond::Any)
        .unwrap();
    assert_ne!(v, v2);
    assert_eq!(f.read("a/b/c"), b"bye");
    assert_eq!(f.staged(), 0);
}

#[test]
fn absent_refuses_an_existing_object_and_changes_nothing() {
    let f = fixture();
    f.put("k", b"first", &ObjMeta::default(), Cond::Absent)
        .unwrap();
    let again = f.put("k", b"second", &ObjMeta::default(), Cond::Absent);
    assert_eq!(f.code(again), OssCode::FileAlreadyExists);
    assert_eq!(f.read("k"), b"first");
    assert_eq!(f.staged(), 0, "the refused write left its staged file");
}

#[test]
fn is_commits_only_over_the_version_it_names() {
    let f = fixture();
    f.put("k", b"one", &ObjMeta::default(), Cond::Any).unwrap();
    let read = f.be.find(f.at("k")).unwrap().version;
    // Someone else writes in between: the conditional write is refused
    // and theirs stays.
    f.put("k", b"theirs", &ObjMeta::default(), Cond::Any)
        .unwrap();
    let late = f.put("k", b"mine", &ObjMeta::default(), Cond::Is(read));
    assert_eq!(f.code(late), OssCode::PreconditionFailed);
    assert_eq!(f.read("k"), b"theirs");
    // A write in place, as the mount makes them, is a new version too.
    let read = f.be.find(f.at("k")).unwrap().version;
    fs::OpenOptions::new()
        .append(true)
        .open(f.dir.path().join("bkt/k"))
        .unwrap()
        .write_all(b"+")
        .unwrap();
    let late = f.put("k", b"mine", &ObjMeta::default(), Cond::Is(read));
    assert_eq!(f.code(late), OssCode::PreconditionFailed);
    assert_eq!(f.read("k"), b"theirs+");
    // Over the version it read, it goes through, and says what it replaced.
    let now = f.be.find(f.at("k")).unwrap().version;
    let Version::Local { id, .. } = now else {
        panic!("a local version expected: {now:?}");
    };
    f.put("k", b"mine", &ObjMeta::default(), Cond::Is(now.clone()))
        .unwrap();
    assert_eq!(f.read("k"), b"mine");
    let found = f.be.find(f.at("k")).unwrap();
    let mark = xattr::get(xattr::At::File(found.file()), OsStr::new(REPLACES_XATTR))
        .unwrap()
        .unwrap();
    assert_eq!(Ident::from_bytes(&mark), Some(id));
    assert_eq!(f.staged(), 0);
}

#[test]
fn is_refuses_an_object_renamed_away_meanwhile() {
    let f = fixture();
    f.put("k", b"one", &ObjMeta::default(), Cond::Any).unwrap();
    let read = f.be.find(f.at("k")).unwrap().version;
    let b = f.dir.path().join("bkt");
    fs::rename(b.join("k"), b.join("moved")).unwrap();
    let late = f.put("k", b"two", &ObjMeta::default(), Cond::Is(read.clone()));
    assert_eq!(f.code(late), OssCode::PreconditionFailed);
    assert!(
        !b.join("k").exists(),
        "the rewrite recreated a moved object"
    );
    assert_eq!(fs::read(b.join("moved")).unwrap(), b"one");
    // And a file put in its place is not the version read either.
    fs::write(b.join("k"), b"other").unwrap();
    let late = f.put("k", b"two", &ObjMeta::default(), Cond::Is(read));
    assert_eq!(f.code(late), OssCode::PreconditionFailed);
    assert_eq!(f.read("k"), b"other");
    assert_eq!(f.staged(), 0);
}

#[test]
fn metadata_goes_with_the_commit_and_comes_back_with_meta() {
    let f = fixture();
    let meta = ObjMeta {
        mode: Some(0o640),
        owner: Some((1234, 5678)),
        times: Some([(1_600_000_000, 5), (1_500_000_000, 7)]),
        xattrs: vec![(b"user.color".to_vec(), b"blue".to_vec())],
        sse_override: Some(SseConfig {
            algorithm: SseAlgorithm::Sm4,
            kms_key_id: None,
            kms_data_sm4: false,
        }),
        ctime: None,
    };
    f.put("k", b"x", &meta, Cond::Any).unwrap();
    let found = f.be.find(f.at("k")).unwrap();
    assert_eq!(f.be.meta(&found).unwrap(), meta);
    let m = fs::metadata(f.dir.path().join("bkt/k")).unwrap();
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.mtime()),
        (0o640, 1234, 1_500_000_000)
    );
    // Nothing given: the staged file's own mode and owner, no override.
    f.put("plain", b"x", &ObjMeta::default(), Cond::Any)
        .unwrap();
    let found = f.be.find(f.at("plain")).unwrap();
    let got = f.be.meta(&found).unwrap();
    assert_eq!(got.sse_override, None);
    assert!(got.xattrs.is_empty());
}

#[test]
fn only_regular_files_beneath_the_bucket_are_objects() {
    let f = fixture();
    let b = f.dir.path().join("bkt");
    fs::create_dir(b.join("dir")).unwrap();
    fs::write(f.dir.path().join("outside"), b"secret").unwrap();
    symlink(f.dir.path().join("outside"), b.join("link")).unwrap();
    symlink(f.dir.path(), b.join("up")).unwrap();
    for key in ["dir", "link", "up/outside", "missing", "dir/missing"] {
        assert_eq!(f.code(f.be.find(f.at(key))), OssCode::NoSuchKey, "{key}");
    }
    let other = BucketName::parse("nope").unwrap();
    let r = f.be.find(Loc {
        bucket: &other,
        key: "k",
    });
    assert_eq!(f.code(r), OssCode::NoSuchBucket);
    // A commit through the symlinked directory does not land outside.
    let r = f.put("up/planted", b"x", &ObjMeta::default(), Cond::Any);
    assert_eq!(f.code(r), OssCode::InvalidObjectName);
    assert!(!f.dir.path().join("planted").exists());
    // Nor over a directory.
    let r = f.put("dir", b"x", &ObjMeta::default(), Cond::Any);
    assert_eq!(f.code(r), OssCode::InvalidObjectName);
    assert!(b.join("dir").is_dir());
    assert_eq!(f.staged(), 0);
}

#[test]
fn delete_removes_only_the_version_named() {
    let f = fixture();
    f.put("k", b"one", &ObjMeta::default(), Cond::Any).unwrap();
    let read = f.be.find(f.at("k")).unwrap().version;
    f.put("k", b"two", &ObjMeta::default(), Cond::Any).unwrap();
    assert_eq!(
        f.code(f.be.delete(f.at("k"), Cond::Is(read))),
        OssCode::PreconditionFailed
    );
    assert_eq!(f.read("k"), b"two");
    f.be.delete(f.at("k"), Cond::Any).unwrap();
    assert_eq!(f.code(f.be.find(f.at("k"))), OssCode::NoSuchKey);
    assert_eq!(
        f.code(f.be.delete(f.at("k"), Cond::Any)),
        OssCode::NoSuchKey
    );
}

#[test]
fn listing_pages_through_every_key_in_order_and_skips_what_is_not_an_object() {
    let f = fixture();
    let mut want = Vec::new();
    for i in 0..23 {
        let key = format!("{}/{i:02}", ["a", "b/c", "d"][i % 3]);
        f.put(&key, b"x", &ObjMeta::default(), Cond::Any).unwrap();
        want.push(key);
    }
    want.sort();
    let b = f.dir.path().join("bkt");
    fs::write(b.join(".ssefs-bucket.toml"), b"").unwrap();
    symlink(f.dir.path(), b.join("zlink")).unwrap();
    fs::create_dir(b.join("empty")).unwrap();
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = f.be.list(&f.bkt, "", after.as_deref(), 5).unwrap();
        assert!(page.keys.len() <= 5);
        pages += 1;
        got.extend(page.keys);
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(got, want);
    assert_eq!(pages, 5);
    // A prefix is a string prefix, not a directory.
    let page = f.be.list(&f.bkt, "b/c/1", None, 100).unwrap();
    let with: Vec<_> = want
        .iter()
        .filter(|k| k.starts_with("b/c/1"))
        .cloned()
        .collect();
    assert_eq!(page.keys, with);
    assert!(!with.is_empty());
    assert_eq!(page.next, None);
}

#[test]
fn buckets_are_the_directories_with_bucket_names() {
    let f = fixture();
    let root = f.dir.path();
    fs::create_dir(root.join("zz-second")).unwrap();
    fs::create_dir(root.join("Not_A_Bucket")).unwrap();
    fs::write(root.join("file-not-bucket"), b"").unwrap();
    symlink(root.join("bkt"), root.join("link-bucket")).unwrap();
    let names: Vec<String> =
        f.be.list_buckets()
            .unwrap()
            .iter()
            .map(|b| b.as_str().to_owned())
            .collect();
    assert_eq!(names, ["bkt", "zz-second"]);
}

#[test]
fn a_discarded_write_leaves_nothing() {
    let f = fixture();
    let mut s = f.be.stage("k").unwrap();
    s.file.write_all(b"never").unwrap();
    assert_eq!(f.staged(), 1);
    f.be.discard(s);
    assert_eq!(f.staged(), 0);
    assert_eq!(f.code(f.be.find(f.at("k"))), OssCode::NoSuchKey);
}

mod listing_model {
    use proptest::prelude::*;

    use super::*;

    /// Keys of up to three components over a small alphabet that holds
    /// both sides of "/" in byte order ('-' and '.' sort before it, 'a'
    /// after), so that directory and file names interleave.
    fn keys() -> impl Strategy<Value = Vec<String>> {
        let component = "[-.ab]{1,3}".prop_filter("not . or ..", |c| c != "." && c != "..");
        let key = prop::collection::vec(component, 1..=3).prop_map(|c| c.join("/"));
        prop::collection::vec(key, 0..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Paging with any page size, prefix and starting point gives
        /// exactly the sorted keys a model of the bucket gives.
        #[test]
        fn pages_match_a_sorted_model(
            candidates in keys(),
            max in 1usize..7,
            prefix in "[-.ab/]{0,3}",
            start in "[-.ab/]{0,4}",
        ) {
            let f = fixture();
            let mut model: Vec<String> = Vec::new();
            for k in candidates {
                // A key cannot be both an object and a directory of others.
                let clash = model.iter().any(|m| {
                    *m == k || m.starts_with(&format!("{k}/")) || k.starts_with(&format!("{m}/"))
                });
                if !clash && f.put(&k, b"", &ObjMeta::default(), Cond::Any).is_ok() {
                    model.push(k);
                }
            }
            model.sort();
            let after = (!start.is_empty()).then_some(start.as_str());
            let want: Vec<String> = model
                .iter()
                .filter(|k| k.starts_with(&prefix) && after.is_none_or(|a| k.as_str() > a))
                .cloned()
                .collect();
            let mut got = Vec::new();
            let mut from = after.map(str::to_owned);
            loop {
                let page = f.be.list(&f.bkt, &prefix, from.as_deref(), max).unwrap();
                prop_assert!(page.keys.len() <= max);
                got.extend(page.keys);
                match page.next {
                    Some(n) => from = Some(n),
                    None => break,
                }
            }
            prop_assert_eq!(got, want);
        }
    }
}

#[test]
fn buckets_are_created_once_listed_and_deleted_only_when_empty() {
    let f = fixture();
    let nb = BucketName::parse("new-bkt").unwrap();
    f.be.create_bucket(&nb).unwrap();
    assert_eq!(
        f.code(f.be.create_bucket(&nb)),
        OssCode::BucketAlreadyExists
    );
    assert_eq!(
        f.be.list_buckets().unwrap(),
        vec![f.bkt.clone(), nb.clone()]
    );
    assert!(f.be.bucket_is_empty(&nb).unwrap());
    assert_eq!(
        f.be.bucket_owner(&nb).unwrap(),
        fs::metadata(f.dir.path().join("new-bkt")).unwrap().uid()
    );

    // Its settings do not count; an object does, and so does an empty
    // directory.
    let settings = State::BucketSettings(&nb);
    f.be.update_state(settings, &mut |_| Ok(Some(b"rule".to_vec())))
        .unwrap();
    assert!(f.be.bucket_is_empty(&nb).unwrap());
    let at = Loc {
        bucket: &nb,
        key: "d/o",
    };
    let s = f.be.stage("o").unwrap();
    f.be.commit(s, at, &ObjMeta::default(), Cond::Any).unwrap();
    assert!(!f.be.bucket_is_empty(&nb).unwrap());
    assert_eq!(f.code(f.be.delete_bucket(&nb)), OssCode::BucketNotEmpty);
    f.be.delete(at, Cond::Any).unwrap();
    assert!(!f.be.bucket_is_empty(&nb).unwrap(), "d/ is still there");
    assert_eq!(f.code(f.be.delete_bucket(&nb)), OssCode::BucketNotEmpty);
    assert_eq!(
        f.be.get_state(settings).unwrap().unwrap().0,
        b"rule",
        "a refused delete keeps the settings"
    );
    fs::remove_dir(f.dir.path().join("new-bkt/d")).unwrap();

    f.be.delete_bucket(&nb).unwrap();
    assert_eq!(f.be.list_buckets().unwrap(), vec![f.bkt.clone()]);
    assert_eq!(f.code(f.be.delete_bucket(&nb)), OssCode::NoSuchBucket);
    assert_eq!(f.code(f.be.get_state(settings)), OssCode::NoSuchBucket);
    assert_eq!(f.staged(), 0);
}

#[test]
fn state_records_round_trip_and_every_write_is_a_new_version() {
    let f = fixture();
    for s in [
        State::Keystore,
        State::Grants,
        State::BucketSettings(&f.bkt),
    ] {
        assert_eq!(f.be.get_state(s).unwrap(), None, "{s:?}");
        assert_eq!(f.be.state_version(s).unwrap(), None, "{s:?}");
        let v1 =
            f.be.update_state(s, &mut |cur| {
                assert_eq!(cur, None);
                Ok(Some(b"one".to_vec()))
            })
            .unwrap()
            .unwrap();
        let v2 =
            f.be.update_state(s, &mut |cur| {
                assert_eq!(cur, Some(&b"one"[..]));
                Ok(Some(b"one".to_vec()))
            })
            .unwrap()
            .unwrap();
        assert_ne!(v1, v2, "{s:?}: the same bytes again are a new version");
        assert_eq!(
            f.be.get_state(s).unwrap(),
            Some((b"one".to_vec(), v2.clone()))
        );
        assert_eq!(f.be.state_version(s).unwrap(), Some(v2));
        assert!(f.be.state_shown(s).ends_with(match s {
            State::Keystore => KEYSTORE_FILE,
            State::Grants => GRANTS_FILE,
            State::BucketSettings(_) => BUCKET_SETTINGS,
        }));
    }
    // ssefs's records are not objects.
    let page = f.be.list(&f.bkt, "", None, 10).unwrap();
    assert!(page.keys.is_empty(), "{:?}", page.keys);
    assert_eq!(f.staged(), 0);
}

#[test]
fn replace_takes_the_place_found_only_while_it_holds_the_version_found() {
    let f = fixture();
    let meta = ObjMeta {
        mode: Some(0o640),
        ..ObjMeta::default()
    };
    f.put("d/k", b"one", &ObjMeta::default(), Cond::Any)
        .unwrap();
    let found = f.be.find(f.at("d/k")).unwrap();
    let mut s = f.be.stage("d/k").unwrap();
    s.file.write_all(b"two").unwrap();
    let v = f.be.replace(s, &found, &meta, "bkt/d/k").unwrap();
    assert_eq!(f.read("d/k"), b"two");
    let now = f.be.find(f.at("d/k")).unwrap();
    assert_eq!(now.version, v);
    assert_eq!(now.file().metadata().unwrap().mode() & 0o7777, 0o640);

    // Written in between: refused, and the other write stays.
    let found = f.be.find(f.at("d/k")).unwrap();
    f.put("d/k", b"theirs", &ObjMeta::default(), Cond::Any)
        .unwrap();
    let mut s = f.be.stage("d/k").unwrap();
    s.file.write_all(b"mine").unwrap();
    let late = f.be.replace(s, &found, &meta, "bkt/d/k");
    assert_eq!(f.code(late), OssCode::PreconditionFailed);
    assert_eq!(f.read("d/k"), b"theirs");

    // Its directory renamed meanwhile: the object is replaced where it is
    // now, and nothing appears under its old key.
    let found = f.be.find(f.at("d/k")).unwrap();
    fs::rename(f.dir.path().join("bkt/d"), f.dir.path().join("bkt/e")).unwrap();
    let mut s = f.be.stage("d/k").unwrap();
    s.file.write_all(b"moved").unwrap();
    f.be.replace(s, &found, &meta, "bkt/d/k").unwrap();
    assert_eq!(f.read("e/k"), b"moved");
    assert_eq!(f.code(f.be.find(f.at("d/k"))), OssCode::NoSuchKey);
    assert_eq!(f.staged(), 0);
}

#[test]
fn claim_refuses_an_object_someone_holds_or_replaced() {
    use nix::fcntl::{Flock, FlockArg};

    let f = fixture();
    f.put("obj", b"x", &ObjMeta::default(), Cond::Any).unwrap();
    let found = || f.be.find(f.at("obj")).unwrap();
    // Free: claimed; a second claim meanwhile is refused.
    let c = f.be.claim(&found(), "bkt/obj").unwrap();
    assert!(c.is_some());
    assert!(f.be.claim(&found(), "bkt/obj").unwrap().is_none());
    drop(c);
    // Held shared (as the daemon holds a file open for writing): busy.
    let path = f.dir.path().join("bkt/obj");
    let shared = Flock::lock(fs::File::open(&path).unwrap(), FlockArg::LockSharedNonblock).unwrap();
    assert!(f.be.claim(&found(), "bkt/obj").unwrap().is_none());
    drop(shared);
    assert!(f.be.claim(&found(), "bkt/obj").unwrap().is_some());
    // Replaced since it was found: not ours to claim.
    let stale = found();
    f.put("obj", b"y", &ObjMeta::default(), Cond::Any).unwrap();
    assert!(f.be.claim(&stale, "bkt/obj").unwrap().is_none());
}
