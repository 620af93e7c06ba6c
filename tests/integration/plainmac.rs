//! Unencrypted objects carry keyed tags (issue 12, part 3; FORMAT.md
//! §2.5, §4.2, §8.6). Someone who can write the backend but does not hold
//! the root key forges unencrypted objects the only way open to them, with
//! the unkeyed checksums objects carried before; each is refused through
//! the mount (EIO, one log line naming the object), the CLI
//! (`DataIntegrityError`) and `verify`. Data directories made by older
//! versions (tests/fixtures/unkeyed-plain) are converted at their first
//! open, losing nothing, and refuse unkeyed objects from then on.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use ssefs::crypto::{Cipher, SecretKey};
use ssefs::format::{ChunkKeys, ChunkSize, Header};

use crate::mount::Mount;
use crate::util::{errno_of, DataDir};

/// An unencrypted object in the format from before keyed tags, built as
/// anyone can without the root key: a header without MAC, chunks with
/// unkeyed checksums.
fn forge_unkeyed(chunk: ChunkSize, content: &[u8]) -> Vec<u8> {
    let mut id = [0u8; 16];
    id.iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = 0x40 ^ i as u8);
    let h = Header::unkeyed_plain(chunk, id);
    let mut out = h.encode().to_vec();
    let keys = ChunkKeys::new(Cipher::None, chunk, &SecretKey::from_bytes(&[])).unwrap();
    let mut sealer = keys.sealer();
    let parts: Vec<&[u8]> = content.chunks(chunk.bytes()).collect();
    for (i, p) in parts.iter().enumerate() {
        sealer
            .seal(&id, i as u64, i + 1 == parts.len(), p, &mut out)
            .unwrap();
    }
    out
}

/// Recomputes the unkeyed header checksum (FORMAT.md §2.3) after an edit.
fn fix_checksum(h: &mut [u8]) {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"ssefs-header-v1");
    ctx.update(&h[..112]);
    h[112..128].copy_from_slice(&ctx.finish().as_ref()[..16]);
}

fn mount_log(d: &DataDir) -> String {
    fs::read_to_string(d.data().join(".ssefs/mount.log")).unwrap_or_default()
}

/// A bucket without a rule holds a real unencrypted object; three forgeries
/// are put beside it on the backend: a whole new object, the real one with
/// its content changed and its (unkeyed) tag recomputed, and the real one
/// with its header MAC stripped. None reads; the real one still does.
#[test]
fn forged_unencrypted_objects_are_refused_by_the_mount_the_cli_and_verify() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("plain")).unwrap();
    let real = b"the real unencrypted content\n".repeat(700); // two 16 KiB chunks
    fs::write(m.p("plain/real"), &real).unwrap();
    m.unmount();
    let backend = m.backend("plain/real");
    let good = fs::read(&backend).unwrap();
    // Written by this version: a MAC in bytes 96..112 (§2.5).
    assert_ne!(&good[96..112], &[0u8; 16]);
    let chunk = ChunkSize::DEFAULT.wide();
    assert_eq!(
        good.len() as u64,
        chunk.backend_len(real.len() as u64),
        "new buckets have wide 16 KiB slots"
    );

    let forged = b"forged by someone without the root key\n";
    fs::write(m.backend("plain/forged"), forge_unkeyed(chunk, forged)).unwrap();
    // Content changed in place, the tag recomputed as an unkeyed checksum
    // would be: the forgery carries the real header and its MAC.
    let mut edited = forge_unkeyed(chunk, &real);
    edited[..128].copy_from_slice(&good[..128]);
    fs::write(m.backend("plain/edited"), &edited).unwrap();
    // The real object, its header MAC zeroed (the unkeyed kind of header).
    let mut stripped = good.clone();
    stripped[96..112].fill(0);
    fix_checksum(&mut stripped[..128]);
    fs::write(m.backend("plain/stripped"), &stripped).unwrap();
    for f in ["forged", "edited", "stripped"] {
        fs::set_permissions(
            m.backend(&format!("plain/{f}")),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }

    m.mount(&[]);
    assert!(fs::read(m.p("plain/real")).unwrap() == real);
    for f in ["forged", "edited", "stripped"] {
        let e = fs::read(m.p(&format!("plain/{f}"))).unwrap_err();
        assert_eq!(errno_of(&e), libc::EIO, "plain/{f}: {e}");
        let log = mount_log(&m.d);
        assert!(
            log.lines()
                .any(|l| l.contains("DataIntegrityError") && l.contains(&format!("plain/{f}"))),
            "no log line names plain/{f}: {log}"
        );
    }
    m.unmount();

    for f in ["forged", "edited", "stripped"] {
        m.d.run(&["object", "get", &format!("plain/{f}")])
            .fails_with("DataIntegrityError");
    }
    let v = m.d.run(&["verify", "plain"]);
    assert_ne!(v.status, 0, "verify passed forgeries: {}", v.stdout);
    let out = format!("{}{}", v.stdout, v.stderr);
    for f in ["forged", "edited", "stripped"] {
        assert!(
            out.contains(&format!("plain/{f}")),
            "verify missed plain/{f}: {out}"
        );
    }
    assert!(!out.contains("plain/real"), "{out}");
}

/// A copy of tests/fixtures/unkeyed-plain/`which` (data directory and, for
/// `wide`, its key directory), with the modes ssefs gave them.
fn fixture(which: &str) -> DataDir {
    let d = DataDir::uninit();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/unkeyed-plain")
        .join(which);
    let st = Command::new("cp")
        .arg("-a")
        .arg(src.join("data"))
        .arg(d.data())
        .status()
        .unwrap();
    assert!(st.success());
    fs::create_dir_all(d.data().join(".ssefs/tmp")).unwrap();
    for p in ["", ".ssefs", ".ssefs/tmp"] {
        fs::set_permissions(d.data().join(p), fs::Permissions::from_mode(0o700)).unwrap();
    }
    fs::set_permissions(
        d.data().join(".ssefs/keystore.toml"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    if src.join("keys").exists() {
        let st = Command::new("cp")
            .arg("-a")
            .arg(src.join("keys"))
            .arg(d.keys())
            .status()
            .unwrap();
        assert!(st.success());
        fs::set_permissions(d.keys(), fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(d.key_file(), fs::Permissions::from_mode(0o600)).unwrap();
    } else {
        fs::set_permissions(
            d.data().join(".ssefs/root.key"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    d
}

/// `content20k` of the fixtures' README.
fn content20k() -> Vec<u8> {
    (0..20000u32).map(|i| (i % 251) as u8).collect()
}

fn keystore(d: &DataDir) -> String {
    fs::read_to_string(d.data().join(".ssefs/keystore.toml")).unwrap()
}

/// Both fixtures (wide slots from 9f2a8ce, narrow from 0294309, which also
/// predates policy MACs): the first open converts every unencrypted object
/// and says so; content, mode and mtime are kept; encrypted objects are
/// left alone; the keystore records it; an unkeyed object written back
/// afterwards (the fixture's own file) is refused; and the mount reads
/// everything.
#[test]
fn unencrypted_objects_of_older_versions_are_converted_at_first_open() {
    for (which, plain_objects) in [("wide", 3), ("narrow", 2)] {
        let d = fixture(which);
        let fixture_big = fs::read(d.data().join("plain/big")).unwrap();
        assert_eq!(
            &fixture_big[96..112],
            &[0u8; 16],
            "{which}: not an unkeyed fixture"
        );
        let before = fs::metadata(d.data().join("plain/big")).unwrap();
        let enc_before = fs::read(d.data().join("enc/o")).ok();
        assert!(!keystore(&d).contains("plain_macs"));

        let r = run_info(&d, &["object", "get", "plain/big"]);
        assert!(r.0 == content20k(), "{which}: plain/big reads wrong");
        assert!(
            r.1.contains("unencrypted objects now carry keyed tags")
                && r.1.contains(&format!("rewritten={plain_objects}")),
            "{which}: {}",
            r.1
        );
        assert!(keystore(&d).contains("plain_macs = true"), "{which}");
        let mut converted = vec!["plain/big", "plain/dir/small"];
        if which == "wide" {
            converted.push("enc/p");
        }
        for f in converted {
            let b = fs::read(d.data().join(f)).unwrap();
            assert_ne!(&b[96..112], &[0u8; 16], "{which}: {f} not converted");
        }
        let after = fs::metadata(d.data().join("plain/big")).unwrap();
        assert_eq!(
            (after.mode(), after.mtime(), after.mtime_nsec()),
            (before.mode(), before.mtime(), before.mtime_nsec()),
            "{which}: attributes changed"
        );
        if let Some(enc) = enc_before {
            assert_eq!(
                fs::read(d.data().join("enc/o")).unwrap(),
                enc,
                "encrypted object rewritten"
            );
        }
        let small = d.run(&["object", "get", "plain/dir/small"]).ok();
        assert!(small.stdout.starts_with("plain, made by ssefs"), "{which}");

        // The fixture's unkeyed file written back (a restore from before
        // the upgrade, or a forgery): refused now.
        fs::write(d.data().join("plain/big"), &fixture_big).unwrap();
        d.run(&["object", "get", "plain/big"])
            .fails_with("DataIntegrityError");

        let m = Mount::on(d, &[]);
        let e = fs::read(m.p("plain/big")).unwrap_err();
        assert_eq!(errno_of(&e), libc::EIO, "{which}");
        assert!(fs::read(m.p("plain/dir/small"))
            .unwrap()
            .starts_with(b"plain, made by ssefs"));
        if which == "wide" {
            assert_eq!(
                fs::read(m.p("enc/p")).unwrap(),
                b"plain in a bucket that got a rule later\n"
            );
            assert_eq!(
                fs::read(m.p("enc/o")).unwrap(),
                b"encrypted, made by ssefs 9f2a8ce\n"
            );
        }
        m.unmount();
    }
}

/// An unencrypted object that cannot be converted now (here: a damaged
/// chunk) is left as it is, named in a warning, and the keystore does not
/// yet record the switch, so the object's intact chunks stay readable; once
/// it is gone, the next open finishes the upgrade.
#[test]
fn the_switch_waits_for_every_unencrypted_object_to_be_converted() {
    let d = fixture("wide");
    let big = d.data().join("plain/big");
    let mut b = fs::read(&big).unwrap();
    let last = b.len() - 1;
    b[last] ^= 0x01; // the last chunk's tag
    fs::write(&big, &b).unwrap();

    let (_, log) = run_info(&d, &["bucket", "list"]);
    assert!(
        log.contains("left to convert") && log.contains("plain/big"),
        "{log}"
    );
    assert!(!keystore(&d).contains("plain_macs"));
    // The others were converted all the same.
    let small = fs::read(d.data().join("plain/dir/small")).unwrap();
    assert_ne!(&small[96..112], &[0u8; 16]);
    // The damaged object's first chunk still reads, through the mount.
    let m = Mount::on(d, &[]);
    let mut first = vec![0u8; 16384];
    {
        use std::io::Read;
        let mut f = fs::File::open(m.p("plain/big")).unwrap();
        f.read_exact(&mut first).unwrap();
    }
    assert!(first == content20k()[..16384]);
    m.unmount();

    fs::remove_file(&big).unwrap();
    let (_, log) = run_info(&m.d, &["bucket", "list"]);
    assert!(
        log.contains("unencrypted objects now carry keyed tags"),
        "{log}"
    );
    assert!(keystore(&m.d).contains("plain_macs = true"));
}

/// Runs the CLI with info logging; its stdout bytes and stderr text.
fn run_info(d: &DataDir, args: &[&str]) -> (Vec<u8>, String) {
    let o = d.cmd().env("RUST_LOG", "info").args(args).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{args:?}: {err}");
    (o.stdout, err)
}
