//! The CLI and the KMS on a real S3-compatible store (issue 14, slice 2):
//! a three-node Garage cluster on 127.0.0.1 that scripts/test.sh starts
//! (scripts/garage.sh) and names in `$SSEFS_TEST_GARAGE`. Each test works
//! under a prefix of its own in the store's bucket.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::{
    Attribute, AttributeValue, Attributes, ClientOptions, GetOptions, ObjectStore, PutOptions,
    PutPayload,
};

use crate::util::{bin, seeded_bytes, test_seed, Run};

/// The cluster's env file (scripts/garage.sh start DIR writes DIR/env).
pub(crate) fn garage_env() -> Vec<(String, String)> {
    let path = std::env::var("SSEFS_TEST_GARAGE").unwrap_or_else(|_| {
        panic!(
            "the store tests need a Garage cluster: run them through scripts/test.sh, or \
             `scripts/garage.sh start DIR` and set SSEFS_TEST_GARAGE=DIR/env"
        )
    });
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A Garage cluster of a test's own (for tests that kill its nodes),
/// stopped when dropped.
struct OwnCluster {
    dir: tempfile::TempDir,
}

impl OwnCluster {
    fn start() -> OwnCluster {
        let dir = tempfile::tempdir().unwrap();
        // Ports above the shared cluster's (scripts/test.sh: base < 4000).
        let base = 4000 + (std::process::id() % 20) * 100;
        let st = Command::new(Self::script())
            .args(["start", dir.path().to_str().unwrap()])
            .env("GARAGE_PORT_BASE", base.to_string())
            .status()
            .unwrap();
        assert!(st.success(), "garage.sh start failed");
        OwnCluster { dir }
    }

    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/garage.sh")
    }

    fn env(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(self.dir.path().join("env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn kill(&self, node: u32) {
        let st = Command::new(Self::script())
            .args(["kill", self.dir.path().to_str().unwrap(), &node.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = Command::new(Self::script())
            .args(["stop", self.dir.path().to_str().unwrap()])
            .status();
    }
}

pub(crate) struct Store {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) prefix: String,
}

impl Store {
    pub(crate) fn new(test: &str) -> Store {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Store {
            tmp: tempfile::tempdir().unwrap(),
            env: garage_env(),
            prefix: format!("{test}-{}-{nanos}", std::process::id()),
        }
    }

    fn on(env: Vec<(String, String)>, test: &str) -> Store {
        Store {
            env,
            ..Store::new(test)
        }
    }

    pub(crate) fn var(&self, k: &str) -> String {
        self.env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{k} missing from the Garage env file"))
    }

    pub(crate) fn url(&self) -> String {
        format!("s3://{}/{}", self.var("SSEFS_TEST_S3_BUCKET"), self.prefix)
    }

    /// The CLI on this test's store, as a user would run it: the store in
    /// $SSEFS_BACKEND, endpoint and keys in the environment.
    pub(crate) fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.env_remove("SSEFS_PASSPHRASE")
            .env_remove("SSEFS_ROOT_KEY")
            .env_remove("SSEFS_DATA_DIR")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env("SSEFS_BACKEND", self.url())
            .env("SSEFS_S3_ENDPOINTS", self.var("SSEFS_TEST_S3_ENDPOINTS"))
            .env("AWS_ACCESS_KEY_ID", self.var("AWS_ACCESS_KEY_ID"))
            .env("AWS_SECRET_ACCESS_KEY", self.var("AWS_SECRET_ACCESS_KEY"))
            .env("AWS_REGION", self.var("AWS_REGION"))
            .env("SSEFS_KEY_DIR", self.tmp.path().join("keys"))
            .env("SSEFS_STATE_DIR", self.tmp.path().join("state"));
        c
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd().args(args).output().unwrap())
    }

    pub(crate) fn file(&self, name: &str, data: &[u8]) -> String {
        let p = self.tmp.path().join(name);
        std::fs::write(&p, data).unwrap();
        p.display().to_string()
    }

    /// A plain S3 client on the same store, to look at (and tamper with)
    /// what ssefs wrote, as the store's operator could.
    pub(crate) fn raw(&self) -> Raw {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let endpoint = self.var("SSEFS_TEST_S3_ENDPOINTS");
        let endpoint = endpoint.split(',').next().unwrap().to_owned();
        let s = AmazonS3Builder::new()
            .with_bucket_name(self.var("SSEFS_TEST_S3_BUCKET"))
            .with_endpoint(&endpoint)
            .with_region(self.var("AWS_REGION"))
            .with_access_key_id(self.var("AWS_ACCESS_KEY_ID"))
            .with_secret_access_key(self.var("AWS_SECRET_ACCESS_KEY"))
            .with_client_options(ClientOptions::new().with_allow_http(true))
            .build()
            .unwrap();
        Raw {
            store: Arc::new(s),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            prefix: self.prefix.clone(),
        }
    }
}

pub(crate) struct Raw {
    store: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Runtime,
    prefix: String,
}

impl Raw {
    fn path(&self, rel: &str) -> StorePath {
        StorePath::parse(format!("{}/{rel}", self.prefix)).unwrap()
    }

    /// The bytes and the `x-amz-meta-ssefs` record of `rel`.
    pub(crate) fn get(&self, rel: &str) -> (Vec<u8>, Option<String>) {
        self.rt.block_on(async {
            let g = self
                .store
                .get_opts(&self.path(rel), GetOptions::default())
                .await
                .unwrap();
            let m = g
                .attributes
                .get(&Attribute::Metadata("ssefs".into()))
                .map(|v| v.as_ref().to_owned());
            (g.bytes().await.unwrap().to_vec(), m)
        })
    }

    pub(crate) fn put(&self, rel: &str, bytes: &[u8], record: Option<&str>) {
        let mut attributes = Attributes::new();
        if let Some(r) = record {
            attributes.insert(
                Attribute::Metadata("ssefs".into()),
                AttributeValue::from(r.to_owned()),
            );
        }
        self.rt
            .block_on(self.store.put_opts(
                &self.path(rel),
                PutPayload::from(bytes.to_vec()),
                PutOptions {
                    attributes,
                    ..PutOptions::default()
                },
            ))
            .unwrap();
    }
}

#[test]
fn every_cli_command_works_on_a_store_with_each_encryption() {
    let s = Store::new("cli");
    let out = s.run(&["init"]).ok();
    assert!(out.stdout.contains(&s.url()), "{}", out.stdout);
    // The root key is on this host, never on the store.
    let keys: Vec<PathBuf> = std::fs::read_dir(s.tmp.path().join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(keys.len(), 1, "{keys:?}");
    s.run(&["init"]).fails_with("already initialised");

    s.run(&["bucket", "create", "docs"]).ok();
    s.run(&["bucket", "create", "docs"])
        .fails_with("BucketAlreadyExists");
    s.run(&["bucket", "create", "empty"]).ok();
    assert_eq!(s.run(&["bucket", "list"]).ok().stdout, "docs\nempty\n");
    s.run(&["bucket", "delete", "empty"]).ok();
    assert_eq!(s.run(&["bucket", "list"]).ok().stdout, "docs\n");

    let id = s.run(&["kms", "create-key"]).ok().stdout;
    let id = id
        .lines()
        .find_map(|l| l.strip_prefix("KeyId: "))
        .unwrap()
        .to_owned();
    s.run(&["bucket", "encryption", "put", "docs", "--algorithm", "SM4"])
        .ok();
    let cases: [(&str, &[&str], &str); 5] = [
        ("rule", &[], "x-oss-server-side-encryption: SM4"),
        (
            "aes",
            &["--sse", "AES256"],
            "x-oss-server-side-encryption: AES256",
        ),
        ("kms", &["--sse", "KMS", "--sse-key-id", &id], &id),
        (
            "kms-sm4",
            &["--sse", "KMS", "--sse-data-encryption", "SM4"],
            "x-oss-server-side-data-encryption: SM4",
        ),
        ("big", &["--sse", "AES256"], "content-length: 20000001"),
    ];
    let seed = test_seed("store-cli");
    for (i, (name, sse, expect)) in cases.iter().enumerate() {
        // Beyond 16 MiB, the upload goes in parts.
        let len = if *name == "big" {
            20_000_001
        } else {
            1000 + i * 7777
        };
        let data = seeded_bytes(seed + i as u64, len);
        let f = s.file(name, &data);
        let key = format!("docs/dir/{name}");
        let mut args = vec!["object", "put", key.as_str(), f.as_str()];
        args.extend_from_slice(sse);
        s.run(&args).ok();
        let head = s.run(&["object", "head", &key]).ok().stdout;
        assert!(head.contains(expect), "{name}: {head}");
        let back = s.tmp.path().join(format!("{name}.out"));
        s.run(&["object", "get", &key, back.to_str().unwrap()]).ok();
        assert!(
            std::fs::read(&back).unwrap() == data,
            "{name}: bytes differ"
        );
    }
    // Copy with new encryption; verify, rewrap, status.
    s.run(&[
        "object",
        "copy",
        "docs/dir/aes",
        "docs/copy",
        "--sse",
        "SM4",
    ])
    .ok();
    let head = s.run(&["object", "head", "docs/copy"]).ok().stdout;
    assert!(head.contains("SM4"), "{head}");
    let v = s.run(&["verify"]).ok().stdout;
    assert!(v.contains("6 objects checked, 0 failed"), "{v}");
    s.run(&["rewrap"]).ok();
    let st = s.run(&["status"]).ok().stdout;
    assert!(st.contains("docs") && st.contains(&id), "{st}");
    // Garage ignores conditional PUT headers: the probe finds out, and
    // records change under the ticket lock.
    assert!(st.contains("(ticket lock)"), "{st}");
    // A disabled key refuses reads and writes of its objects.
    s.run(&["kms", "disable-key", &id]).ok();
    let out = s.tmp.path().join("x");
    s.run(&["object", "get", "docs/dir/kms", out.to_str().unwrap()])
        .fails_with("Disabled");
    s.run(&["kms", "enable-key", &id]).ok();
    s.run(&["bucket", "delete", "docs"])
        .fails_with("BucketNotEmpty");
    // Commands that need a data directory say so. (The mount works on a
    // store: tests/integration/store_mount.rs.)
    s.run(&["root-key", "move"])
        .fails_with("data directory only");
}

#[test]
fn a_second_host_reads_once_it_imports_the_root_key_from_paper() {
    let a = Store::new("hosts");
    a.run(&["init"]).ok();
    a.run(&["bucket", "create", "shared"]).ok();
    let data = seeded_bytes(test_seed("store-hosts"), 70_000);
    let f = a.file("d", &data);
    a.run(&["object", "put", "shared/x", &f, "--sse", "SM4"])
        .ok();
    // Host B: the same store, its own key directory and state directory.
    let b = Store {
        tmp: tempfile::tempdir().unwrap(),
        env: a.env.clone(),
        prefix: a.prefix.clone(),
    };
    let out = b.tmp.path().join("out");
    b.run(&["object", "get", "shared/x", out.to_str().unwrap()])
        .fails_with("root key");
    // A's key, on paper, typed in on B.
    let paper = a.run(&["root-key", "export"]).ok().stdout;
    let mut c = b.cmd();
    c.args(["root-key", "import"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(paper.as_bytes())
        .unwrap();
    Run::from(child.wait_with_output().unwrap()).ok();
    b.run(&["object", "get", "shared/x", out.to_str().unwrap()])
        .ok();
    assert!(std::fs::read(&out).unwrap() == data);
    // A rule B sets applies to A's next upload.
    b.run(&[
        "bucket",
        "encryption",
        "put",
        "shared",
        "--algorithm",
        "AES256",
    ])
    .ok();
    a.run(&["object", "put", "shared/y", &f]).ok();
    let h = a.run(&["object", "head", "shared/y"]).ok().stdout;
    assert!(h.contains("encryption: AES256"), "{h}");
}

#[test]
fn regression_reencrypt_on_a_store_keeps_each_objects_own_encryption() {
    // The first store run of reencrypt read overrides from the downloaded
    // file's xattrs, found none, and rewrote an SM4 object unencrypted.
    let s = Store::new("reenc");
    s.run(&["init"]).ok();
    s.run(&["bucket", "create", "bk1"]).ok();
    let f = s.file("a", b"hello store");
    s.run(&["object", "put", "bk1/own", &f, "--sse", "SM4"])
        .ok();
    s.run(&["object", "put", "bk1/rule", &f]).ok();
    s.run(&[
        "bucket",
        "encryption",
        "put",
        "bk1",
        "--algorithm",
        "AES256",
    ])
    .ok();
    let r = s.run(&["reencrypt", "bk1"]).ok().stdout;
    assert!(r.contains("2 objects checked, 1 rewritten"), "{r}");
    let own = s.run(&["object", "head", "bk1/own"]).ok().stdout;
    assert!(own.contains("encryption: SM4"), "{own}");
    let rule = s.run(&["object", "head", "bk1/rule"]).ok().stdout;
    assert!(rule.contains("encryption: AES256"), "{rule}");
}

#[test]
fn the_store_holds_only_ciphertext_and_refuses_edited_metadata() {
    let s = Store::new("tamper");
    s.run(&["init"]).ok();
    s.run(&["bucket", "create", "bk1"]).ok();
    let secret = b"the plaintext nobody on the store may read ".repeat(50);
    let f = s.file("p", &secret);
    s.run(&["object", "put", "bk1/one", &f, "--sse", "AES256"])
        .ok();
    s.run(&["object", "put", "bk1/two", &f, "--sse", "AES256"])
        .ok();
    let raw = s.raw();
    let (bytes, record) = raw.get("bk1/one");
    assert!(bytes.starts_with(b"SSEFSOBJ"));
    assert!(!bytes
        .windows(32)
        .any(|w| secret.windows(32).any(|p| p == w)));
    let record = record.expect("no x-amz-meta-ssefs");
    let (_, record_two) = raw.get("bk1/two");
    let record_two = record_two.unwrap();
    let get = |key: &str| {
        let out = s.tmp.path().join("out");
        s.run(&["object", "get", key, out.to_str().unwrap()])
    };
    // Another object's record, valid in itself, on this object.
    raw.put("bk1/one", &bytes, Some(&record_two));
    get("bk1/one").fails_with("belongs to another object");
    // An edited record with its old tag; no record at all.
    let mut parts: Vec<String> = record.split('.').map(str::to_owned).collect();
    let mut body: Vec<char> = parts[1].chars().collect();
    body[5] = if body[5] == 'x' { 'y' } else { 'x' };
    parts[1] = body.into_iter().collect();
    raw.put("bk1/one", &bytes, Some(&parts.join(".")));
    get("bk1/one").fails_with("DataIntegrityError");
    raw.put("bk1/one", &bytes, None);
    get("bk1/one").fails_with("DataIntegrityError");
    // A flipped byte in a chunk, under the right record.
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    raw.put("bk1/one", &flipped, Some(&record));
    get("bk1/one").fails_with("DataIntegrityError");
    // Restored, it reads again: nothing else was changed by the failures.
    raw.put("bk1/one", &bytes, Some(&record));
    let out = s.tmp.path().join("out");
    s.run(&["object", "get", "bk1/one", out.to_str().unwrap()])
        .ok();
    assert!(std::fs::read(&out).unwrap() == secret);
    // An edited keystore stops every command.
    let (ks, _) = raw.get(".ssefs/keystore.toml");
    let text = String::from_utf8(ks.clone()).unwrap();
    raw.put(
        ".ssefs/keystore.toml",
        text.replacen("Enabled", "Disabled", 1)
            .replacen("created = ", "created = 1", 1)
            .as_bytes(),
        None,
    );
    s.run(&["kms", "list-keys"])
        .fails_with("DataIntegrityError");
    raw.put(".ssefs/keystore.toml", &ks, None);
    s.run(&["kms", "list-keys"]).ok();
}

#[test]
fn two_clis_changing_keys_at_once_lose_no_change() {
    let s = Store::new("race");
    s.run(&["init"]).ok();
    let n = crate::util::env_count("SSEFS_STORE_RACE_OPS", 12);
    // Two processes at a time, each adding keys and aliases: every change
    // goes through the ticket lock, so none is lost to the other's write.
    let made: Vec<Vec<String>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..2)
            .map(|t| {
                let s = &s;
                sc.spawn(move || {
                    let mut ids = Vec::new();
                    for i in 0..n {
                        let alias = format!("alias/t{t}-{i}");
                        let out = s.run(&["kms", "create-key", "--alias", &alias]).ok();
                        let id = out
                            .stdout
                            .lines()
                            .find_map(|l| l.strip_prefix("KeyId: "))
                            .unwrap()
                            .to_owned();
                        if i % 2 == 0 {
                            s.run(&["kms", "disable-key", &id]).ok();
                        }
                        ids.push(id);
                    }
                    ids
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let listed = s.run(&["kms", "list-keys"]).ok().stdout;
    let all: BTreeSet<&str> = made.iter().flatten().map(String::as_str).collect();
    assert_eq!(all.len(), 2 * n);
    for id in &all {
        assert!(listed.contains(id), "key {id} lost: {listed}");
    }
    for (t, ids) in made.iter().enumerate() {
        for (i, id) in ids.iter().enumerate() {
            let d = s.run(&["kms", "describe-key", id]).ok().stdout;
            let want = if i % 2 == 0 { "Disabled" } else { "Enabled" };
            assert!(d.contains(want), "key {id}: {d}");
            assert!(d.contains(&format!("alias/t{t}-{i}")), "alias lost: {d}");
        }
    }
}

#[test]
fn an_unreachable_store_or_wrong_keys_give_one_line_and_write_nothing() {
    let s = Store::new("faults");
    // A port nothing listens on: refused at once, a few quick retries.
    let cfg = s.file(
        "bad.toml",
        format!(
            "[backend]\nurl = \"{}\"\nendpoints = [\"http://127.0.0.1:9\"]\nretries = 1\ntimeout_ms = 2000\n",
            s.url()
        )
        .as_bytes(),
    );
    let mut c = s.cmd();
    c.env_remove("SSEFS_BACKEND")
        .args(["--config", &cfg, "init"]);
    let r = Run::from(c.output().unwrap());
    r.fails_with("InternalError");
    // Wrong secret: the store refuses, and says so in one line.
    let mut c = s.cmd();
    c.env("AWS_SECRET_ACCESS_KEY", "0".repeat(64)).arg("init");
    Run::from(c.output().unwrap()).fails_with("AccessDenied");
    // A store bucket that does not exist.
    let mut c = s.cmd();
    c.env("SSEFS_BACKEND", "s3://no-such-store-bucket/x")
        .arg("init");
    let r = Run::from(c.output().unwrap());
    assert_ne!(r.status, 0);
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
    // None of it initialised anything.
    s.run(&["kms", "list-keys"]).fails_with("not initialised");
    // Credentials never come from the command line, and a file that
    // others may read is refused.
    let creds = s.file(
        "creds",
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            s.var("AWS_ACCESS_KEY_ID"),
            s.var("AWS_SECRET_ACCESS_KEY")
        )
        .as_bytes(),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut c = s.cmd();
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .arg("init");
    Run::from(c.output().unwrap()).fails_with("chmod 600");
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut c = s.cmd();
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds)
        .arg("init");
    assert_eq!(Run::from(c.output().unwrap()).ok().status, 0);
}

#[test]
fn a_put_killed_at_any_moment_leaves_one_whole_version() {
    let s = Store::new("kill");
    s.run(&["init"]).ok();
    s.run(&["bucket", "create", "bkt"]).ok();
    let old = seeded_bytes(test_seed("store-kill-old"), 3 << 20);
    let f = s.file("old", &old);
    s.run(&["object", "put", "bkt/obj", &f, "--sse", "AES256"])
        .ok();
    // 80 MB: five parts, long enough to be killed in the middle.
    let new = seeded_bytes(test_seed("store-kill-new"), 80 << 20);
    let nf = s.file("new", &new);
    let out = s.tmp.path().join("out");
    let mut killed_mid = 0;
    for delay_ms in [300u64, 600, 900, 1200] {
        let mut child = s
            .cmd()
            .args(["object", "put", "bkt/obj", &nf])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        child.wait().unwrap();
        // Whatever the moment, the object is one version, whole.
        s.run(&["object", "get", "bkt/obj", out.to_str().unwrap()])
            .ok();
        let got = std::fs::read(&out).unwrap();
        if finished {
            assert!(got == new, "the finished put left other bytes");
            break;
        }
        assert!(got == old || got == new, "a torn object after kill -9");
        if got == old {
            killed_mid += 1;
        }
    }
    assert!(killed_mid > 0, "no kill landed before the upload finished");
    let v = s.run(&["verify"]).ok().stdout;
    assert!(v.contains("0 failed"), "{v}");
}

#[test]
fn migrate_moves_a_data_directory_to_a_store_and_back_and_survives_a_kill() {
    use std::os::unix::fs::PermissionsExt;
    let s = Store::new("migrate");
    let data = s.tmp.path().join("data");
    let local = |args: &[&str]| {
        let mut c = s.cmd();
        c.env_remove("SSEFS_BACKEND")
            .env("SSEFS_DATA_DIR", &data)
            .args(args);
        Run::from(c.output().unwrap())
    };
    local(&["init"]).ok();
    local(&["bucket", "create", "docs"]).ok();
    local(&["bucket", "encryption", "put", "docs", "--algorithm", "SM4"]).ok();
    local(&["kms", "create-key", "--alias", "alias/m"]).ok();
    let seed = test_seed("store-migrate");
    let mut objects = Vec::new();
    for i in 0..12u64 {
        // Mostly small, two beyond a multipart part.
        let len = if i % 6 == 5 {
            17 << 20
        } else {
            500 + 3000 * i as usize
        };
        let body = seeded_bytes(seed + i, len);
        let key = format!("docs/d{}/o{i}", i % 3);
        let f = s.file(&format!("in{i}"), &body);
        let sse: &[&str] = match i % 3 {
            0 => &[],
            1 => &["--sse", "AES256"],
            _ => &["--sse", "KMS", "--sse-key-id", "alias/m"],
        };
        let mut args = vec!["object", "put", key.as_str(), f.as_str()];
        args.extend_from_slice(sse);
        local(&args).ok();
        objects.push((key, body));
    }
    // Metadata goes with the bytes.
    let tagged = data.join("docs/d0/o0");
    std::fs::set_permissions(&tagged, std::fs::Permissions::from_mode(0o640)).unwrap();
    let st = Command::new("setfattr")
        .args(["-n", "user.team", "-v", "blue"])
        .arg(&tagged)
        .status()
        .unwrap();
    assert!(st.success());

    // Killed in the middle, then run again: it finishes, and skips what
    // the first run copied whole.
    let data_s = data.to_str().unwrap().to_owned();
    let url = s.url();
    let mut child = s
        .cmd()
        .env_remove("SSEFS_BACKEND")
        .args(["migrate", &data_s, &url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    let _ = child.kill();
    child.wait().unwrap();
    let mut c = s.cmd();
    c.env_remove("SSEFS_BACKEND")
        .args(["migrate", &data_s, &url]);
    let out = Run::from(c.output().unwrap()).ok().stdout;
    println!("after the kill: {out}");
    assert!(out.contains("0 failed"), "{out}");
    assert!(
        out.contains("verify: 12 objects checked, 0 failed"),
        "{out}"
    );
    // On the store, everything reads as it was, under the same root key.
    let got = s.tmp.path().join("got");
    for (key, body) in &objects {
        s.run(&["object", "get", key, got.to_str().unwrap()]).ok();
        assert!(std::fs::read(&got).unwrap() == *body, "{key}");
    }
    let h = s.run(&["object", "head", "docs/d2/o2"]).ok().stdout;
    assert!(h.contains("KMS"), "{h}");
    let rule = s.run(&["bucket", "encryption", "get", "docs"]).ok().stdout;
    assert!(rule.contains("SM4"), "{rule}");

    // And back to a new data directory, mode and xattr included.
    let back = s.tmp.path().join("back");
    let back_s = back.to_str().unwrap().to_owned();
    let mut c = s.cmd();
    c.env_remove("SSEFS_BACKEND")
        .args(["migrate", &url, &back_s]);
    let out = Run::from(c.output().unwrap()).ok().stdout;
    assert!(out.contains("12 objects copied"), "{out}");
    let m = std::fs::metadata(back.join("docs/d0/o0")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o640);
    let x = Command::new("getfattr")
        .args(["--only-values", "-n", "user.team"])
        .arg(back.join("docs/d0/o0"))
        .output()
        .unwrap();
    assert_eq!(x.stdout, b"blue");
    let mut c = s.cmd();
    c.env_remove("SSEFS_BACKEND")
        .env("SSEFS_DATA_DIR", &back)
        .args(["object", "get", &objects[5].0, got.to_str().unwrap()]);
    Run::from(c.output().unwrap()).ok();
    assert!(std::fs::read(&got).unwrap() == objects[5].1);

    // Into a place that holds another keystore: refused, nothing written.
    let other = Store::new("migrate-other");
    other.run(&["init"]).ok();
    let mut c = other.cmd();
    c.env_remove("SSEFS_BACKEND")
        .env("SSEFS_KEY_DIR", s.tmp.path().join("keys"))
        .args(["migrate", &data_s, &other.url()]);
    Run::from(c.output().unwrap()).fails_with("another keystore");
    other.run(&["bucket", "list"]).ok();
    assert_eq!(other.run(&["bucket", "list"]).ok().stdout, "");
}

#[test]
fn reads_and_writes_go_on_when_a_store_node_dies() {
    let cluster = OwnCluster::start();
    let s = Store::on(cluster.env(), "nodekill");
    s.run(&["init"]).ok();
    s.run(&["bucket", "create", "bkt"]).ok();
    let seed = test_seed("store-nodekill");
    let mut objects = Vec::new();
    for i in 0..4u64 {
        let body = seeded_bytes(seed + i, 100_000 + i as usize * 7_000_000);
        let f = s.file(&format!("b{i}"), &body);
        s.run(&["object", "put", &format!("bkt/o{i}"), &f, "--sse", "SM4"])
            .ok();
        objects.push(body);
    }
    // Node 1 is the first endpoint every client tries; with replication
    // 3 the other two still make a quorum.
    cluster.kill(1);
    let got = s.tmp.path().join("got");
    for (i, body) in objects.iter().enumerate() {
        s.run(&["object", "get", &format!("bkt/o{i}"), got.to_str().unwrap()])
            .ok();
        assert!(std::fs::read(&got).unwrap() == *body, "o{i} after the kill");
    }
    // Writes too: objects (one multipart), keys under the ticket lock.
    let big = seeded_bytes(seed + 100, 20 << 20);
    let f = s.file("big", &big);
    s.run(&["object", "put", "bkt/big", &f]).ok();
    s.run(&["object", "get", "bkt/big", got.to_str().unwrap()])
        .ok();
    assert!(std::fs::read(&got).unwrap() == big);
    s.run(&["kms", "create-key", "--alias", "alias/after"]).ok();
    s.run(&["bucket", "create", "second"]).ok();
    let v = s.run(&["verify"]).ok().stdout;
    assert!(v.contains("5 objects checked, 0 failed"), "{v}");
}

#[test]
fn grants_on_a_store_change_only_through_seal_policy() {
    let s = Store::new("grants");
    s.run(&["init"]).ok();
    s.run(&["kms", "create-key", "--alias", "alias/team"]).ok();
    let narrow = "[kms]\nmaster_rotation_days = 30\n\n[[grant]]\nuids = [1000]\nactions = [\"kms:Decrypt\"]\nresources = [\"alias/team\"]\n";
    let f = s.file("config.toml", narrow.as_bytes());
    let r = s.run(&["kms", "seal-policy", &f]).ok();
    assert!(r.stdout.contains("1 grant(s)"), "{}", r.stdout);
    let st = s.run(&["status"]).ok().stdout;
    assert!(st.contains("every 30 days"), "{st}");
    // Not TOML, or an unknown action: refused, and what is sealed stays.
    let bad = s.file(
        "bad.toml",
        b"[[grant]]\nuids = [1]\nactions = [\"kms:Everything\"]\n",
    );
    let r = s
        .run(&["kms", "seal-policy", &bad])
        .fails_with("InvalidParameter");
    assert!(r.stderr.contains(&bad), "{}", r.stderr);
    let st = s.run(&["status"]).ok().stdout;
    assert!(st.contains("every 30 days"), "{st}");
    // The store's operator widens the grant: every command refuses it.
    let raw = s.raw();
    let widened = narrow.replace("\"kms:Decrypt\"", "\"*\"");
    raw.put(".ssefs/config.toml", widened.as_bytes(), None);
    let r = s
        .run(&["kms", "list-keys"])
        .fails_with("DataIntegrityError");
    assert!(r.stderr.contains("seal-policy"), "{}", r.stderr);
}
