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
    d.write("data/.ssefs/config.toml", b"[kms]\nmaster_rotation_days = 0\n");
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
