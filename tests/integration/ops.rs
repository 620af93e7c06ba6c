//! The operations commands: verify, reencrypt, rewrap, status, and a
//! reencrypt killed mid-run.

use std::os::unix::fs::FileExt;
use std::time::Duration;

use crate::util::DataDir;

fn content(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (j as u8).wrapping_mul(7) ^ i as u8)
        .collect()
}

/// Creates bucket `name`, with `rule` as its default encryption if given.
fn bucket(d: &DataDir, name: &str, rule: Option<&str>) {
    d.run(&["bucket", "create", name]).ok();
    if let Some(alg) = rule {
        d.run(&["bucket", "encryption", "put", name, "--algorithm", alg])
            .ok();
    }
}

fn put(d: &DataDir, key: &str, data: &[u8]) {
    let src = d.write("src.bin", data);
    d.run(&["object", "put", key, src.to_str().unwrap()]).ok();
}

fn get(d: &DataDir, key: &str) -> Vec<u8> {
    let out = d.path("out.bin");
    d.run(&["object", "get", key, out.to_str().unwrap()]).ok();
    std::fs::read(out).unwrap()
}

fn head(d: &DataDir, key: &str) -> String {
    d.run(&["object", "head", key]).ok().stdout
}

#[test]
fn verify_names_the_corrupt_object_and_fails() {
    let d = DataDir::new();
    bucket(&d, "bkt", Some("AES256"));
    put(&d, "bkt/good", &content(1, 100_000));
    put(&d, "bkt/bad", &content(2, 100_000));
    let r = d.run(&["verify"]).ok();
    assert!(
        r.stdout.contains("verify: 2 objects checked, 0 failed"),
        "{}",
        r.stdout
    );

    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(d.data().join("bkt/bad"))
        .unwrap();
    let mut byte = [0u8];
    f.read_at(&mut byte, 5000).unwrap();
    f.write_at(&[byte[0] ^ 0x40], 5000).unwrap();

    let r = d
        .run(&["verify", "bkt"])
        .fails_with("1 objects failed verification");
    assert!(r.stdout.contains("FAILED bkt/bad: "), "{}", r.stdout);
    assert!(!r.stdout.contains("bkt/good"), "{}", r.stdout);
    assert!(
        r.stdout.contains("verify: 2 objects checked, 1 failed"),
        "{}",
        r.stdout
    );
}

#[test]
fn reencrypt_after_changing_the_rule() {
    let d = DataDir::new();
    d.run(&["bucket", "create", "bkt"]).ok();
    put(&d, "bkt/a", &content(1, 70_000));
    put(&d, "bkt/sub/b", &content(2, 10));
    assert!(!head(&d, "bkt/a").contains("x-oss-server-side-encryption"));
    d.run(&["bucket", "encryption", "put", "bkt", "--algorithm", "SM4"])
        .ok();
    let r = d.run(&["reencrypt", "bkt"]).ok();
    assert_eq!(
        r.stdout,
        "reencrypt: 2 objects checked, 2 rewritten, 0 failed\n"
    );
    assert!(head(&d, "bkt/a").contains("x-oss-server-side-encryption: SM4"));
    assert!(head(&d, "bkt/sub/b").contains("x-oss-server-side-encryption: SM4"));
    assert_eq!(get(&d, "bkt/a"), content(1, 70_000));
    assert_eq!(get(&d, "bkt/sub/b"), content(2, 10));
    let r = d.run(&["reencrypt", "bkt/sub/"]).ok();
    assert_eq!(
        r.stdout,
        "reencrypt: 1 objects checked, 0 rewritten, 0 failed\n"
    );
    d.run(&["reencrypt", "nosuchbucket"])
        .fails_with("NoSuchBucket");
}

#[test]
fn rewrap_after_rotation() {
    let d = DataDir::new();
    bucket(&d, "bkt", Some("AES256"));
    put(&d, "bkt/a", &content(3, 200_000));
    let before = std::fs::read(d.data().join("bkt/a")).unwrap();
    let r = d.run(&["rewrap"]).ok();
    assert_eq!(
        r.stdout,
        "rewrap: 1 objects checked, 0 rewrapped, 0 failed\n"
    );
    d.run(&["kms", "rotate-master"]).ok();
    let r = d.run(&["rewrap", "bkt"]).ok();
    assert_eq!(
        r.stdout,
        "rewrap: 1 objects checked, 1 rewrapped, 0 failed\n"
    );
    let after = std::fs::read(d.data().join("bkt/a")).unwrap();
    assert_eq!(after[128..], before[128..]);
    assert_ne!(after[..128], before[..128]);
    assert_eq!(get(&d, "bkt/a"), content(3, 200_000));
    d.run(&["verify"]).ok();
}

#[test]
fn status_shows_buckets_and_keys() {
    let d = DataDir::new();
    bucket(&d, "bkt", Some("KMS"));
    put(&d, "bkt/a", b"x");
    put(&d, "bkt/b", b"y");
    d.write(
        "data/.ssefs/config.toml",
        b"[kms]\nmaster_rotation_days = 0\n",
    );
    d.run(&["kms", "seal-policy"]).ok();
    let s = d.run(&["status"]).ok().stdout;
    assert!(
        s.contains("rotated automatically: never ([kms] master_rotation_days in "),
        "{s}"
    );
    assert!(s.contains("mounts: none"), "{s}");
    assert!(
        s.contains("bkt\trule: KMS (key: default managed key)\tobjects: 2"),
        "{s}"
    );
    // The default managed key was created by the first KMS upload.
    assert!(s.contains("keys: 1"), "{s}");
    assert!(s.contains("Enabled"), "{s}");
}

/// kill -9 in the middle of a reencrypt: every object still reads back
/// exactly, some old and some new, and a second run finishes the job.
#[test]
fn killed_reencrypt_leaves_every_object_readable() {
    const N: usize = 60;
    const LEN: usize = 512 * 1024;
    let d = DataDir::new();
    d.run(&["bucket", "create", "bkt"]).ok();
    for i in 0..N {
        put(&d, &format!("bkt/o{i:02}"), &content(i, LEN));
    }
    d.run(&[
        "bucket",
        "encryption",
        "put",
        "bkt",
        "--algorithm",
        "AES256",
    ])
    .ok();
    let mut child = d
        .cmd()
        .args(["reencrypt", "bkt"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill as soon as the first object has been rewritten (byte 9 of the
    // header is the method: 0 for unencrypted), so the kill lands mid-run
    // however fast the machine; give up waiting after 10 s.
    let encrypted = |i: usize| {
        let mut h = [0u8; 10];
        std::fs::File::open(d.data().join(format!("bkt/o{i:02}")))
            .and_then(|f| f.read_exact_at(&mut h, 0))
            .map(|()| h[9] != 0)
            .unwrap_or(false)
    };
    let start = std::time::Instant::now();
    while !(0..N).any(encrypted) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_micros(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = (0..N).filter(|&i| encrypted(i)).count();
    eprintln!(
        "killed after {:?} with {done}/{N} rewritten",
        start.elapsed()
    );
    assert!(done >= 1, "reencrypt never got going");

    for i in 0..N {
        assert_eq!(get(&d, &format!("bkt/o{i:02}")), content(i, LEN), "o{i:02}");
    }
    d.run(&["reencrypt", "bkt"]).ok();
    d.run(&["verify"]).ok();
    for i in 0..N {
        let key = format!("bkt/o{i:02}");
        assert!(head(&d, &key).contains("x-oss-server-side-encryption: AES256"));
        assert_eq!(get(&d, &key), content(i, LEN), "{key}");
    }
}

/// While mounted: status names the mount, and reencrypt, rewrap and verify
/// run against the live data directory with the files still readable
/// through the mount.
#[test]
fn operations_while_mounted() {
    let m = crate::mount::Mount::new(&[]);
    let d = &m.d;
    d.run(&["bucket", "create", "bkt"]).ok();
    std::fs::write(m.p("bkt/a"), content(1, 300_000)).unwrap();
    std::fs::write(m.p("bkt/b"), content(2, 10)).unwrap();
    // Closed in the daemon too, or reencrypt would skip them as busy.
    m.wait_closed("bkt/a");
    m.wait_closed("bkt/b");

    let s = d.run(&["status"]).ok().stdout;
    let mnt = m.mnt.canonicalize().unwrap();
    assert!(
        s.contains(&format!("  {} (", mnt.display())),
        "mount not listed: {s}"
    );
    assert!(s.contains("bkt\trule: none\tobjects: 2"), "{s}");

    d.run(&["bucket", "encryption", "put", "bkt", "--algorithm", "SM4"])
        .ok();
    let r = d.run(&["reencrypt", "bkt"]).ok();
    assert_eq!(
        r.stdout,
        "reencrypt: 2 objects checked, 2 rewritten, 0 failed\n"
    );
    d.run(&["kms", "rotate-master"]).ok();
    let r = d.run(&["rewrap"]).ok();
    assert_eq!(
        r.stdout,
        "rewrap: 2 objects checked, 2 rewrapped, 0 failed\n"
    );
    d.run(&["verify"]).ok();
    assert_eq!(std::fs::read(m.p("bkt/a")).unwrap(), content(1, 300_000));
    assert_eq!(std::fs::read(m.p("bkt/b")).unwrap(), content(2, 10));
    assert!(head(d, "bkt/a").contains("x-oss-server-side-encryption: SM4"));
}

/// A file open for writing through the mount is "busy" for reencrypt and
/// rewrap: they skip it, so nothing written through it is lost (before,
/// the rename replaced the file under the writer, whose later writes went
/// to the unlinked old file). Once it is closed, the next run does it. A
/// file open only for reading does not hold them up.
#[test]
fn reencrypt_and_rewrap_skip_objects_open_for_writing() {
    use std::fs::{File, OpenOptions};

    let m = crate::mount::Mount::new(&[]);
    let d = &m.d;
    d.run(&["bucket", "create", "bkt"]).ok();
    std::fs::write(m.p("bkt/open"), content(1, 100_000)).unwrap();
    std::fs::write(m.p("bkt/idle"), content(2, 50_000)).unwrap();
    d.run(&["bucket", "encryption", "put", "bkt", "--algorithm", "SM4"])
        .ok();

    let mut want = content(1, 100_000);
    let f = OpenOptions::new()
        .write(true)
        .open(m.p("bkt/open"))
        .unwrap();
    f.write_all_at(b"before", 0).unwrap();
    want[..6].copy_from_slice(b"before");
    // Only the writer's object is to be busy, but the daemon may not have
    // the release of idle's write yet (FUSE sends it after close returns);
    // a reader opened before it would keep the object busy (see
    // `ObjState::shared_lock`).
    m.wait_closed("bkt/idle");
    let reader = File::open(m.p("bkt/idle")).unwrap();
    let r = d
        .run(&["reencrypt", "bkt"])
        .fails_with("run `ssefs reencrypt` again");
    assert_eq!(
        r.stdout,
        "BUSY bkt/open: open for writing through a mount, skipped\n\
         reencrypt: 2 objects checked, 1 rewritten, 1 busy, 0 failed\n"
    );
    assert!(head(d, "bkt/idle").contains("x-oss-server-side-encryption: SM4"));
    assert!(!head(d, "bkt/open").contains("x-oss-server-side-encryption"));
    // The reader goes on reading what it opened.
    let mut buf = vec![0u8; 50_000];
    reader.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, content(2, 50_000));

    // Keep writing after the run, then close.
    f.write_all_at(b"after", 150_000).unwrap();
    want.resize(150_000, 0);
    want.extend_from_slice(b"after");
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(std::fs::read(m.p("bkt/open")).unwrap(), want);
    m.wait_closed("bkt/open");
    let r = d.run(&["reencrypt", "bkt"]).ok();
    assert_eq!(
        r.stdout,
        "reencrypt: 2 objects checked, 1 rewritten, 0 failed\n"
    );
    assert!(head(d, "bkt/open").contains("x-oss-server-side-encryption: SM4"));
    assert_eq!(std::fs::read(m.p("bkt/open")).unwrap(), want);
    assert_eq!(get(d, "bkt/open"), want);

    // rewrap likewise.
    d.run(&["kms", "rotate-master"]).ok();
    let f = OpenOptions::new()
        .append(true)
        .open(m.p("bkt/open"))
        .unwrap();
    let r = d
        .run(&["rewrap", "bkt"])
        .fails_with("run `ssefs rewrap` again");
    assert!(
        r.stdout
            .ends_with("rewrap: 2 objects checked, 1 rewrapped, 1 busy, 0 failed\n"),
        "{}",
        r.stdout
    );
    std::io::Write::write_all(&mut &f, b"appended").unwrap();
    want.extend_from_slice(b"appended");
    drop(f);
    m.wait_closed("bkt/open");
    let r = d.run(&["rewrap", "bkt"]).ok();
    assert_eq!(
        r.stdout,
        "rewrap: 2 objects checked, 1 rewrapped, 0 failed\n"
    );
    assert_eq!(std::fs::read(m.p("bkt/open")).unwrap(), want);
    d.run(&["verify"]).ok();
}

/// A writer that opens an object while reencrypt is rewriting it waits for
/// the new file and writes to it (before, the write went to the old file,
/// which the rename then dropped). The open is made once reencrypt's temp
/// file exists, i.e. while it holds the object.
#[test]
fn a_writer_opening_during_a_reencrypt_writes_to_the_new_object() {
    use std::fs::OpenOptions;

    let m = crate::mount::Mount::new(&[]);
    let d = &m.d;
    d.run(&["bucket", "create", "bkt"]).ok();
    let len = 16 << 20;
    std::fs::write(m.p("bkt/big"), content(3, len)).unwrap();
    d.run(&["bucket", "encryption", "put", "bkt", "--algorithm", "SM4"])
        .ok();
    let spawn = || {
        d.cmd()
            .args(["reencrypt", "bkt"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = spawn();
    let tmp = d.data().join(".ssefs/tmp");
    let t = std::time::Instant::now();
    while std::fs::read_dir(&tmp).map_or(0, |r| r.count()) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "reencrypt never started rewriting"
        );
        // FUSE sends the release of the file written above asynchronously:
        // a reencrypt that runs before the daemon has it finds the object
        // (rightly) busy and skips it. Run it again then.
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("1 busy"), "reencrypt ended early: {out:?}");
            child = spawn();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let f = OpenOptions::new().write(true).open(m.p("bkt/big")).unwrap();
    f.write_all_at(b"during", 1000).unwrap();
    drop(f);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "reencrypt: 1 objects checked, 1 rewritten, 0 failed\n",
        "the writer came too late to overlap: {out:?}"
    );
    let mut want = content(3, len);
    want[1000..1006].copy_from_slice(b"during");
    for (how, got) in [
        ("through the mount", std::fs::read(m.p("bkt/big")).unwrap()),
        ("with object get", get(d, "bkt/big")),
    ] {
        let diff = got.iter().zip(&want).position(|(a, b)| a != b);
        assert!(
            got.len() == want.len() && diff.is_none(),
            "{how}: {} bytes, first difference at {diff:?}; reencrypt: {out:?}",
            got.len()
        );
    }
}
