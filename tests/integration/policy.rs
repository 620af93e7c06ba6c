//! Authenticated policy (issue 12, part 3): someone who can write the
//! backend but does not hold the root key edits the policy files. Through
//! the backend, then the mount, then the CLI, each edit is detected (EIO on
//! the mount with one log line naming the file, DataIntegrityError in the
//! CLI), and nothing plaintext is written where the rule says to encrypt.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::mount::Mount;
use crate::util::{errno_of, snapshot, DataDir};

const SETTINGS: &str = ".ssefs-bucket.toml";
/// Bytes no sealed object would hold in the clear.
const MARKER: &[u8] = b"PLAINTEXT-MARKER-4a1f9c";

fn bucket(d: &DataDir, name: &str, rule: Option<&str>) {
    d.run(&["bucket", "create", name]).ok();
    if let Some(alg) = rule {
        d.run(&["bucket", "encryption", "put", name, "--algorithm", alg])
            .ok();
    }
}

fn put(d: &DataDir, key: &str, data: &[u8]) -> crate::util::Run {
    let src = d.write("src.bin", data);
    d.run(&["object", "put", key, src.to_str().unwrap()])
}

/// Every backend file but the mount's log, to prove nothing changed.
fn backend(d: &DataDir) -> Vec<(PathBuf, Vec<u8>)> {
    snapshot(&d.data())
        .into_iter()
        .filter(|(p, _)| !p.ends_with(".ssefs/mount.log"))
        .collect()
}

/// The backend files that hold `MARKER` in the clear.
fn plaintext_on_backend(d: &DataDir) -> Vec<PathBuf> {
    backend(d)
        .into_iter()
        .filter(|(_, b)| b.windows(MARKER.len()).any(|w| w == MARKER))
        .map(|(p, _)| p)
        .collect()
}

/// The mount log's text after `from` bytes.
fn log_since(d: &DataDir, from: usize) -> String {
    let t = fs::read_to_string(d.data().join(".ssefs/mount.log")).unwrap_or_default();
    t.get(from..).unwrap_or_default().to_owned()
}

fn log_len(d: &DataDir) -> usize {
    fs::metadata(d.data().join(".ssefs/mount.log")).map_or(0, |m| m.len() as usize)
}

/// Writes `MARKER` to a new file at `p` through the mount: the first step
/// that fails, as an errno (None if all succeeded).
fn write_through_mount(p: &Path) -> Option<i32> {
    let mut f = match OpenOptions::new().write(true).create_new(true).open(p) {
        Ok(f) => f,
        Err(e) => return Some(errno_of(&e)),
    };
    if let Err(e) = f.write_all(MARKER) {
        return Some(errno_of(&e));
    }
    match f.sync_all() {
        Ok(()) => None,
        Err(e) => Some(errno_of(&e)),
    }
}

/// The bucket "sm4" holds an object written before its rule (plaintext,
/// as OSS allows) and one after; "plain" has no rule. Each tampering of
/// sm4's settings file is refused by the CLI (put and reencrypt, which
/// would otherwise rewrite the bucket as plaintext) and by the mount, with
/// no change to the backend; put back, the file works again.
#[test]
fn tampered_bucket_settings_are_refused_by_the_cli_and_the_mount() {
    let d = DataDir::new();
    bucket(&d, "sm4", None);
    bucket(&d, "plain", None);
    put(&d, "sm4/early", b"from before the rule").ok();
    // sm4's settings file from before its rule: valid once, not now.
    let before_rule = fs::read(d.data().join("sm4").join(SETTINGS)).unwrap();
    d.run(&["bucket", "encryption", "put", "sm4", "--algorithm", "SM4"])
        .ok();
    put(&d, "sm4/late", b"sealed").ok();
    let sp = d.data().join("sm4").join(SETTINGS);
    let good = fs::read(&sp).unwrap();
    let text = String::from_utf8(good.clone()).unwrap();
    // The MAC line kept, the rule taken out.
    let mac_only: String = text.lines().take(1).map(|l| format!("{l}\n")).collect();
    assert!(mac_only.starts_with("mac = "), "{text}");
    let edited = text.replace("SM4", "AES256");
    assert_ne!(edited, text);
    let copied = fs::read(d.data().join("plain").join(SETTINGS)).unwrap();
    let cases: [(&str, Option<&[u8]>); 6] = [
        ("emptied", Some(b"")),
        ("deleted", None),
        ("rule removed", Some(mac_only.as_bytes())),
        ("edited", Some(edited.as_bytes())),
        ("copied from another bucket", Some(&copied)),
        ("older copy written back", Some(&before_rule)),
    ];
    let shown = sp.display().to_string();
    let m = Mount::on(d, &[]);
    m.unmount();
    for (what, content) in cases {
        match content {
            Some(c) => fs::write(&sp, c).unwrap(),
            None => fs::remove_file(&sp).unwrap(),
        }
        let before = backend(&m.d);

        // The CLI.
        let r = put(&m.d, "sm4/new", MARKER).fails_with("DataIntegrityError");
        assert!(r.stderr.contains(&shown), "{what}: {}", r.stderr);
        m.d.run(&["reencrypt", "sm4"])
            .fails_with("DataIntegrityError");
        m.d.run(&["bucket", "encryption", "get", "sm4"])
            .fails_with("DataIntegrityError");
        // src.bin is the test's own file, outside the data directory.
        assert_eq!(backend(&m.d), before, "{what}: the CLI changed the backend");

        // The mount.
        let from = log_len(&m.d);
        m.mount(&[]);
        let failed = write_through_mount(&m.p("sm4/new"));
        assert_eq!(failed, Some(libc::EIO), "{what}");
        assert_eq!(
            fs::read(m.p("sm4/late")).map_err(|e| errno_of(&e)).err(),
            Some(libc::EIO),
            "{what}: reads in the bucket need its chunk size, which is unauthenticated now"
        );
        m.unmount();
        assert!(
            plaintext_on_backend(&m.d).is_empty(),
            "{what}: plaintext landed on the backend"
        );
        assert!(!m.backend("sm4/new").exists(), "{what}");
        let log = log_since(&m.d, from);
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("DataIntegrityError") && l.contains(&shown))
            .collect();
        assert!(
            !lines.is_empty(),
            "{what}: no log line names {shown}: {log}"
        );

        // Put back: the bucket works as before.
        fs::write(&sp, &good).unwrap();
    }
    put(&m.d, "sm4/new", MARKER).ok();
    assert!(plaintext_on_backend(&m.d).is_empty());
    let r = m.d.run(&["reencrypt", "sm4"]).ok();
    assert!(r.stdout.contains("1 rewritten"), "{}", r.stdout);
}

/// A CMK disabled through the CLI and re-enabled by editing keystore.toml:
/// the CLI and the mount refuse the keystore, naming it, and nothing is
/// written with the key.
#[test]
fn a_cmk_re_enabled_by_hand_is_refused() {
    let d = DataDir::new();
    bucket(&d, "kms", None);
    d.run(&["kms", "create-key", "--alias", "alias/app"]).ok();
    d.run(&[
        "bucket",
        "encryption",
        "put",
        "kms",
        "--algorithm",
        "KMS",
        "--kms-key-id",
        "alias/app",
    ])
    .ok();
    put(&d, "kms/o", b"data").ok();
    d.run(&["kms", "disable-key", "alias/app"]).ok();
    put(&d, "kms/o2", MARKER).fails_with("Rejected.Disabled");
    let ks = d.data().join(".ssefs/keystore.toml");
    let text = fs::read_to_string(&ks).unwrap();
    let edited = text.replace("state = \"Disabled\"", "state = \"Enabled\"");
    assert_ne!(edited, text);
    fs::write(&ks, edited).unwrap();
    let before = backend(&d);
    let shown = ks.display().to_string();
    for args in [
        &["kms", "describe-key", "alias/app"][..],
        &["kms", "enable-key", "alias/app"][..],
        &["object", "get", "kms/o"][..],
        &["status"][..],
    ] {
        let r = d.run(args).fails_with("DataIntegrityError");
        assert!(r.stderr.contains(&shown), "{args:?}: {}", r.stderr);
    }
    put(&d, "kms/o2", MARKER).fails_with("DataIntegrityError");
    assert_eq!(backend(&d), before);
    // The mount does not start on it.
    let mnt = d.path("mnt");
    fs::create_dir(&mnt).unwrap();
    d.run(&["mount", mnt.to_str().unwrap()])
        .fails_with("DataIntegrityError");
    assert_eq!(backend(&d), before);
    assert!(plaintext_on_backend(&d).is_empty());
}

/// An alias re-pointed by hand at another key is refused.
#[test]
fn a_swapped_alias_is_refused() {
    let d = DataDir::new();
    let id = |out: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("KeyId: "))
            .unwrap()
            .trim()
            .to_owned()
    };
    let a = id(&d
        .run(&["kms", "create-key", "--alias", "alias/prod"])
        .ok()
        .stdout);
    let b = id(&d.run(&["kms", "create-key"]).ok().stdout);
    let ks = d.data().join(".ssefs/keystore.toml");
    let text = fs::read_to_string(&ks).unwrap();
    let swapped = text.replace(
        &format!("\"alias/prod\" = \"{a}\""),
        &format!("\"alias/prod\" = \"{b}\""),
    );
    assert_ne!(swapped, text, "{text}");
    fs::write(&ks, swapped).unwrap();
    d.run(&["kms", "describe-key", "alias/prod"])
        .fails_with("DataIntegrityError");
}

/// Grants and the master rotation period live in `.ssefs/config.toml`,
/// which the operator edits; an edit takes effect once sealed with
/// `ssefs kms seal-policy`. An edit nobody sealed (a grant widened, the
/// rotation stopped or its line removed, the file deleted) is refused by
/// the CLI and the mount with one line naming the file and the command.
#[test]
fn grants_edited_by_hand_are_refused_until_sealed() {
    let d = DataDir::new();
    bucket(&d, "kms", None);
    d.run(&["kms", "create-key", "--alias", "alias/team"]).ok();
    let config = d.data().join(".ssefs/config.toml");
    let narrow = "[kms]\nmaster_rotation_days = 30\n\n[[grant]]\nuids = [1000]\nactions = [\"kms:Decrypt\"]\nresources = [\"alias/team\"]\n";
    fs::write(&config, narrow).unwrap();
    // Not yet sealed: refused, with the hint.
    let r = d.run(&["status"]).fails_with("DataIntegrityError");
    assert!(r.stderr.contains("ssefs kms seal-policy"), "{}", r.stderr);
    let r = d.run(&["kms", "seal-policy"]).ok();
    assert!(
        r.stdout
            .contains("1 grant(s), master key rotated every 30 days"),
        "{}",
        r.stdout
    );
    let s = d.run(&["status"]).ok().stdout;
    assert!(s.contains("every 30 days"), "{s}");

    let widened = narrow
        .replace("uids = [1000]", "uids = [1000, 1001]")
        .replace("\"kms:Decrypt\"", "\"*\"");
    let stopped = narrow.replace("master_rotation_days = 30", "master_rotation_days = 0");
    let removed = narrow.replace("master_rotation_days = 30\n", "");
    let shown = config.display().to_string();
    let mnt = d.path("mnt");
    fs::create_dir(&mnt).unwrap();
    for (what, content) in [
        ("grant widened", Some(widened.as_str())),
        ("rotation stopped", Some(stopped.as_str())),
        ("rotation removed", Some(removed.as_str())),
        ("deleted", None),
    ] {
        match content {
            Some(c) => fs::write(&config, c).unwrap(),
            None => fs::remove_file(&config).unwrap(),
        }
        let before = backend(&d);
        for args in [
            &["status"][..],
            &["kms", "list-keys"][..],
            &["kms", "rotate-master"][..],
        ] {
            let r = d.run(args).fails_with("DataIntegrityError");
            assert!(r.stderr.contains(&shown), "{what}: {}", r.stderr);
            assert!(
                r.stderr.contains("ssefs kms seal-policy"),
                "{what}: {}",
                r.stderr
            );
        }
        put(&d, "kms/o", MARKER).fails_with("DataIntegrityError");
        d.run(&["mount", mnt.to_str().unwrap()])
            .fails_with("DataIntegrityError");
        assert_eq!(backend(&d), before, "{what}");
        fs::write(&config, narrow).unwrap();
        d.run(&["status"]).ok();
    }
    // An operator's edit, sealed, is in force.
    fs::write(&config, &stopped).unwrap();
    d.run(&["kms", "seal-policy"]).ok();
    let s = d.run(&["status"]).ok().stdout;
    assert!(s.contains("never"), "{s}");
    // A config.toml that does not parse is not sealed.
    fs::write(&config, "[[grant]]\nactions = [\"kms:Fly\"]\n").unwrap();
    d.run(&["kms", "seal-policy"])
        .fails_with("InvalidParameter");
    d.run(&["status"]).fails_with("InvalidParameter");
    // Put back as sealed, it is in force again.
    fs::write(&config, &stopped).unwrap();
    d.run(&["status"]).ok();
}
