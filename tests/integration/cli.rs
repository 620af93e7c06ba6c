//! The CLI, run as a built binary.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use crate::util::{snapshot, DataDir, Run};

#[test]
fn init_creates_a_private_root_key_and_refuses_to_run_twice() {
    let d = DataDir::uninit();
    let out = d.run(&["init"]).ok();
    assert!(out.stdout.contains("initialised"));
    let key = d.data().join(".ssefs/root.key");
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.len(), 32);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(d.data().join(".ssefs"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    d.run(&["init"]).fails_with("already initialised");
}

#[test]
fn every_command_has_help() {
    let d = DataDir::uninit();
    for args in [
        vec!["--help"],
        vec!["init", "--help"],
        vec!["bucket", "--help"],
        vec!["bucket", "encryption", "put", "--help"],
        vec!["object", "put", "--help"],
        vec!["object", "copy", "--help"],
        vec!["kms", "--help"],
        vec!["kms", "schedule-key-deletion", "--help"],
        vec!["kms", "import-key-material", "--help"],
    ] {
        let r = d.run(&args).ok();
        assert!(r.stdout.contains("Usage"), "{args:?}");
    }
}

#[test]
fn bucket_names_are_validated() {
    let d = DataDir::new();
    for bad in ["ab", "Upper", "-lead", "trail-", "under_score", "", " pad "] {
        d.run(&["bucket", "create", "--", bad])
            .fails_with("InvalidBucketName");
    }
    d.run(&["bucket", "create", "good-name-1"]).ok();
    d.run(&["bucket", "create", "good-name-1"])
        .fails_with("BucketAlreadyExists");
    assert_eq!(d.run(&["bucket", "list"]).ok().stdout, "good-name-1\n");
    d.run(&["bucket", "delete", "good-name-1"]).ok();
    assert_eq!(d.run(&["bucket", "list"]).ok().stdout, "");
}

#[test]
fn encryption_rules_follow_the_reference_and_bad_input_changes_nothing() {
    let d = DataDir::new();
    d.run(&["bucket", "create", "bkt"]).ok();
    d.run(&["bucket", "encryption", "get", "bkt"])
        .fails_with("NoSuchServerSideEncryptionRule");
    d.run(&[
        "bucket",
        "encryption",
        "put",
        "bkt",
        "--algorithm",
        "KMS",
        "--kms-data-encryption",
        "SM4",
    ])
    .ok();
    let before = snapshot(&d.data());
    let cases: &[(&[&str], &str)] = &[
        (&["--algorithm", "DES"], "InvalidEncryptionAlgorithmError"),
        (
            &["--algorithm", "aes256"],
            "InvalidEncryptionAlgorithmError",
        ),
        (
            &["--algorithm", " AES256"],
            "InvalidEncryptionAlgorithmError",
        ),
        (&["--algorithm", ""], "InvalidEncryptionAlgorithmError"),
        (
            &["--algorithm", "AES256", "--kms-key-id", "alias/x"],
            "InvalidArgument",
        ),
        (
            &["--algorithm", "SM4", "--kms-key-id", "alias/x"],
            "InvalidArgument",
        ),
        (
            &["--algorithm", "KMS", "--kms-data-encryption", "AES256"],
            "InvalidDataEncryptionAlgorithmError",
        ),
        (
            &["--algorithm", "KMS", "--kms-data-encryption", "sm4"],
            "InvalidDataEncryptionAlgorithmError",
        ),
    ];
    for (args, code) in cases {
        let mut a = vec!["bucket", "encryption", "put", "bkt"];
        a.extend_from_slice(args);
        d.run(&a).fails_with(code);
    }
    assert_eq!(
        snapshot(&d.data()),
        before,
        "a refused rule changed the data directory"
    );
    let got = d.run(&["bucket", "encryption", "get", "bkt"]).ok().stdout;
    assert_eq!(got, "SSEAlgorithm: KMS\nKMSDataEncryption: SM4\n");

    // AES256 with data encryption SM4: accepted, the field dropped.
    d.run(&[
        "bucket",
        "encryption",
        "put",
        "bkt",
        "--algorithm",
        "AES256",
        "--kms-data-encryption",
        "SM4",
    ])
    .ok();
    assert_eq!(
        d.run(&["bucket", "encryption", "get", "bkt"]).ok().stdout,
        "SSEAlgorithm: AES256\n"
    );
    d.run(&["bucket", "encryption", "delete", "bkt"]).ok();
    d.run(&["bucket", "encryption", "get", "bkt"])
        .fails_with("NoSuchServerSideEncryptionRule");
}

#[test]
fn objects_round_trip_and_head_reports_how_they_are_stored() {
    let d = DataDir::new();
    d.run(&["bucket", "create", "bkt"]).ok();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let src = d.write("src.bin", &data);
    let src = src.to_str().unwrap();

    let head = d.run(&["object", "put", "bkt/plain", src]).ok().stdout;
    assert_eq!(head, "content-length: 300000\n");
    let head = d
        .run(&["object", "put", "bkt/a/b/sm4", src, "--sse", "SM4"])
        .ok()
        .stdout;
    assert!(head.contains("x-oss-server-side-encryption: SM4"), "{head}");

    let key = d
        .run(&["kms", "create-key", "--alias", "alias/docs"])
        .ok()
        .stdout;
    let id = key
        .lines()
        .find_map(|l| l.strip_prefix("KeyId: "))
        .expect("KeyId line")
        .to_owned();
    let head = d
        .run(&[
            "object",
            "put",
            "bkt/kms",
            src,
            "--sse",
            "KMS",
            "--sse-key-id",
            "alias/docs",
            "--sse-data-encryption",
            "SM4",
        ])
        .ok()
        .stdout;
    assert!(head.contains("x-oss-server-side-encryption: KMS"));
    assert!(
        head.contains(&format!("x-oss-server-side-encryption-key-id: {id}")),
        "{head}"
    );
    assert!(head.contains("x-oss-server-side-data-encryption: SM4"));
    assert_eq!(d.run(&["object", "head", "bkt/kms"]).ok().stdout, head);

    for key in ["bkt/plain", "bkt/a/b/sm4", "bkt/kms"] {
        let out = d.path("out.bin");
        d.run(&["object", "get", key, out.to_str().unwrap()]).ok();
        assert_eq!(std::fs::read(&out).unwrap(), data, "{key}");
    }
    // To stdout.
    let r = d.cmd().args(["object", "get", "bkt/kms"]).output().unwrap();
    assert!(r.status.success());
    assert_eq!(r.stdout, data);
    // From stdin.
    d.run_stdin(&["object", "put", "bkt/stdin", "-"], b"piped")
        .ok();
    assert_eq!(
        d.cmd()
            .args(["object", "get", "bkt/stdin"])
            .output()
            .unwrap()
            .stdout,
        b"piped"
    );
}

#[test]
fn default_kms_key_is_created_on_first_use_and_reported_by_id() {
    let d = DataDir::new();
    d.run(&["bucket", "create", "bkt"]).ok();
    d.run(&["bucket", "encryption", "put", "bkt", "--algorithm", "KMS"])
        .ok();
    assert!(!d
        .run(&["kms", "list-aliases"])
        .ok()
        .stdout
        .contains("alias/acs/oss"));
    let src = d.write("f", b"hello");
    let head = d
        .run(&["object", "put", "bkt/o", src.to_str().unwrap()])
        .ok()
        .stdout;
    let aliases = d.run(&["kms", "list-aliases"]).ok().stdout;
    let line = aliases
        .lines()
        .find(|l| l.starts_with("alias/acs/oss\t"))
        .expect("default alias");
    let id = line.split('\t').nth(1).unwrap();
    assert!(
        head.contains(&format!("x-oss-server-side-encryption-key-id: {id}")),
        "{head}"
    );
}

#[test]
fn copy_over_itself_reencrypts_and_copy_does_not_carry_encryption_over() {
    let d = DataDir::new();
    d.run(&["bucket", "create", "bkt"]).ok();
    d.run(&["bucket", "create", "dst"]).ok();
    let src = d.write("f", b"content stays the same");
    d.run(&[
        "object",
        "put",
        "bkt/o",
        src.to_str().unwrap(),
        "--sse",
        "SM4",
    ])
    .ok();
    let raw_before = std::fs::read(d.data().join("bkt/o")).unwrap();
    let h = d
        .run(&["object", "copy", "bkt/o", "bkt/o", "--sse", "AES256"])
        .ok()
        .stdout;
    assert!(h.contains("x-oss-server-side-encryption: AES256"));
    assert_ne!(std::fs::read(d.data().join("bkt/o")).unwrap(), raw_before);
    // Copy into another bucket with no rule and no headers: unencrypted.
    let h = d.run(&["object", "copy", "bkt/o", "dst/o"]).ok().stdout;
    assert!(!h.contains("x-oss-server-side-encryption"), "{h}");
    for k in ["bkt/o", "dst/o"] {
        assert_eq!(
            d.cmd().args(["object", "get", k]).output().unwrap().stdout,
            b"content stays the same"
        );
    }
}

#[test]
fn kms_key_lifecycle_through_the_cli() {
    let d = DataDir::new();
    d.run(&["bucket", "create", "bkt"]).ok();
    let out = d
        .run(&[
            "kms",
            "create-key",
            "--alias",
            "alias/app",
            "--description",
            "app data",
        ])
        .ok()
        .stdout;
    assert!(out.contains("KeyState: Enabled"), "{out}");
    let src = d.write("f", b"data");
    let put = |expect: Option<&str>| {
        let r = d.run(&[
            "object",
            "put",
            "bkt/o",
            src.to_str().unwrap(),
            "--sse",
            "KMS",
            "--sse-key-id",
            "alias/app",
        ]);
        match expect {
            None => {
                r.ok();
            }
            Some(code) => {
                r.fails_with(code);
            }
        }
    };
    put(None);
    d.run(&["kms", "disable-key", "alias/app"]).ok();
    put(Some("Rejected.Disabled"));
    d.run(&["object", "get", "bkt/o"])
        .fails_with("Rejected.Disabled");
    d.run(&["kms", "enable-key", "alias/app"]).ok();
    d.run(&["kms", "rotate-key", "alias/app"]).ok();
    assert_eq!(
        d.cmd()
            .args(["object", "get", "bkt/o"])
            .output()
            .unwrap()
            .stdout,
        b"data"
    );
    d.run(&[
        "kms",
        "schedule-key-deletion",
        "alias/app",
        "--pending-days",
        "3",
    ])
    .fails_with("InvalidParameter");
    d.run(&[
        "kms",
        "schedule-key-deletion",
        "alias/app",
        "--pending-days",
        "7",
    ])
    .ok();
    d.run(&["object", "get", "bkt/o"])
        .fails_with("Rejected.PendingDeletion");
    d.run(&["kms", "cancel-key-deletion", "alias/app"]).ok();
    d.run(&["kms", "describe-key", "alias/nope"])
        .fails_with("AliasNotFound");
    d.run(&[
        "kms",
        "describe-key",
        "0b9f2b4e-7a1c-4c7e-9a55-0d6a2f3e4b5c",
    ])
    .fails_with("KeyNotFound");
    d.run(&["kms", "describe-key", "not a key"])
        .fails_with("InvalidParameter");

    // BYOK.
    let out = d
        .run(&[
            "kms",
            "create-key",
            "--origin",
            "EXTERNAL",
            "--alias",
            "alias/byok",
        ])
        .ok()
        .stdout;
    assert!(out.contains("PendingImport"), "{out}");
    let bad = d.write("short.key", &[1u8; 16]);
    d.run(&[
        "kms",
        "import-key-material",
        "alias/byok",
        "--material-file",
        bad.to_str().unwrap(),
    ])
    .fails_with("InvalidParameter");
    let good = d.write("m.key", &[7u8; 32]);
    d.run(&[
        "kms",
        "import-key-material",
        "alias/byok",
        "--material-file",
        good.to_str().unwrap(),
    ])
    .ok();
    d.run(&[
        "object",
        "put",
        "bkt/b",
        src.to_str().unwrap(),
        "--sse",
        "KMS",
        "--sse-key-id",
        "alias/byok",
    ])
    .ok();
    // The imported material appears nowhere in the data directory.
    for (path, bytes) in snapshot(&d.data()) {
        assert!(
            !bytes.windows(32).any(|w| w == [7u8; 32]),
            "material in {path:?}"
        );
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&"07".repeat(32)),
            "hex material in {path:?}"
        );
    }
    d.run(&["kms", "rotate-master"]).ok();
    assert_eq!(
        d.run(&["kms", "list-master"]).ok().stdout.lines().count(),
        2
    );
}

#[test]
fn bad_object_requests_change_nothing() {
    let d = DataDir::new();
    d.run(&["bucket", "create", "bkt"]).ok();
    let src = d.write("f", b"x");
    let s = src.to_str().unwrap();
    let before = snapshot(&d.data());
    d.run(&["object", "put", "bkt/o", s, "--sse", "aes256"])
        .fails_with("InvalidEncryptionAlgorithmError");
    d.run(&[
        "object",
        "put",
        "bkt/o",
        s,
        "--sse",
        "SM4",
        "--sse-key-id",
        "k",
    ])
    .fails_with("InvalidArgument");
    d.run(&[
        "object",
        "put",
        "bkt/o",
        s,
        "--sse",
        "KMS",
        "--sse-data-encryption",
        "AES",
    ])
    .fails_with("InvalidDataEncryptionAlgorithmError");
    d.run(&[
        "object",
        "put",
        "bkt/o",
        s,
        "--sse",
        "KMS",
        "--sse-key-id",
        "alias/missing",
    ])
    .fails_with("AliasNotFound");
    d.run(&["object", "put", "bkt/../x", s])
        .fails_with("InvalidObjectName");
    d.run(&["object", "put", "nob/x", s])
        .fails_with("NoSuchBucket");
    d.run(&["object", "get", "bkt/none"])
        .fails_with("NoSuchKey");
    assert_eq!(snapshot(&d.data()), before);
}

#[test]
fn a_wrong_root_key_is_refused_clearly() {
    let d = DataDir::new();
    let other = d.write("other.key", &[9u8; 32]);
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o600)).unwrap();
    d.run(&["--root-key", other.to_str().unwrap(), "bucket", "list"])
        .fails_with("root key");
}

#[test]
fn passphrase_mode_derives_the_root_key() {
    let d = DataDir::uninit();
    d.run_stdin(&["init", "--passphrase"], b"correct horse\n")
        .ok();
    assert!(!d.data().join(".ssefs/root.key").exists());
    let ok = d
        .cmd()
        .env("SSEFS_PASSPHRASE", "correct horse")
        .args(["bucket", "create", "bkt"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = d
        .cmd()
        .env("SSEFS_PASSPHRASE", "wrong horse")
        .args(["bucket", "list"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

/// Issue 17: the quick-start mount, run as a user (nobody) without fuse3 and
/// with a mount point under a directory that user cannot write: one line
/// naming both lacks and how to get them, exit status 1, nothing created.
/// fuse3 is hidden through $FUSERMOUNT_PATH, which fuser itself would take.
/// Then a helper that is not setuid root, on a mount point of the user's
/// own: only that lack is named.
#[test]
fn mount_as_a_user_without_fuse3_says_in_one_line_what_is_missing() {
    let d = DataDir::uninit();
    let top = d.tmp.path();
    std::fs::set_permissions(top, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mnt = d.path("mnt");
    let as_nobody = |helper: &str, mp: &std::path::Path| {
        let mut c = d.cmd();
        c.env("FUSERMOUNT_PATH", helper)
            .args(["mount", mp.to_str().unwrap()])
            .uid(65534)
            .gid(65534);
        Run::from(c.output().unwrap())
    };

    let r = as_nobody("/nonexistent/fusermount3", &mnt);
    assert_eq!(r.status, 1, "{}", r.stderr);
    let r = r.fails_with("AccessDenied");
    let want = format!(
        "ssefs: AccessDenied: mounting as uid 65534 (not root) needs fusermount3, which is \
         not installed (sudo apt-get install -y fuse3); and write access to {} to create {} \
         (use one you own, or sudo chown it to you); or mount as root",
        top.display(),
        mnt.display()
    );
    assert_eq!(r.stderr.trim_end(), want);
    assert!(!mnt.exists(), "the mount point was created");
    assert!(!d.data().exists(), "the data directory was created");

    std::fs::create_dir(&mnt).unwrap();
    std::os::unix::fs::chown(&mnt, Some(65534), Some(65534)).unwrap();
    let r = as_nobody("/bin/true", &mnt).fails_with("AccessDenied");
    assert!(
        r.stderr.contains("needs /bin/true to be setuid root, which it is not (sudo chmod u+s /bin/true); or mount as root"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("write access"), "{}", r.stderr);
    assert!(!d.data().exists(), "the data directory was created");
}
