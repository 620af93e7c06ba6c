//! Bad input everywhere (issue 6, part 7): every CLI command that takes a
//! value, and every OSS xattr on buckets and files, given empty, over-long
//! (64 KiB), non-UTF-8, wrong-case and whitespace-padded values. Each must
//! be refused clearly (CLI: non-zero exit and one stderr line
//! `ssefs: CODE: ...`; xattr: EINVAL and a log line with the code and the
//! path) and change nothing (data directory, keystore, rules, objects).
//!
//! What the reference (oss-sse.md) decides otherwise is asserted as such:
//! an empty KMSMasterKeyID in a rule means the default key (§2).

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use crate::mount::{xattr_get, xattr_set, Mount};
use crate::util::{snapshot, DataDir, Run};

const SSE: &str = "user.oss.server-side-encryption";
const KEY: &str = "user.oss.server-side-encryption-key-id";
const DATA: &str = "user.oss.server-side-data-encryption";

const IA: &str = "InvalidArgument";
const IP: &str = "InvalidParameter";
const IBN: &str = "InvalidBucketName";
const ION: &str = "InvalidObjectName";
const IEA: &str = "InvalidEncryptionAlgorithmError";
const IDEA: &str = "InvalidDataEncryptionAlgorithmError";

fn os(s: &str) -> OsString {
    OsString::from(s)
}

fn bytes(b: &[u8]) -> OsString {
    OsString::from_vec(b.to_vec())
}

/// 64 KiB of `c`.
fn long(c: char) -> String {
    c.to_string().repeat(64 * 1024)
}

/// One command with a slot ("@") and the bad values to put in it, each with
/// the OSS code it must be refused with.
struct Slot {
    args: Vec<&'static str>,
    values: Vec<(OsString, &'static str)>,
}

/// The values every string slot gets: empty, 64 KiB, not UTF-8 (refused by
/// the argument parser: InvalidArgument), `good` padded with whitespace,
/// and `near` (wrong case and other near misses), all refused with `code`
/// unless given their own.
fn values(good: &str, code: &'static str, near: &[&str]) -> Vec<(OsString, &'static str)> {
    let mut v = vec![
        (os(""), code),
        (os(&long('a')), code),
        (bytes(&[good.as_bytes(), b"\xff"].concat()), IA),
        (os(&format!(" {good}")), code),
        (os(&format!("{good}\n")), code),
        (os(&format!("{good} ")), code),
        (os(&format!("\t{good}")), code),
    ];
    v.extend(near.iter().map(|n| (os(n), code)));
    v
}

fn slot(args: &[&'static str], values: Vec<(OsString, &'static str)>) -> Slot {
    Slot {
        args: args.to_vec(),
        values,
    }
}

/// Runs `args` with "@" replaced by `v`.
fn run_with(d: &DataDir, args: &[&str], v: &OsString) -> Run {
    let argv: Vec<OsString> = args
        .iter()
        .map(|a| if *a == "@" { v.clone() } else { os(a) })
        .collect();
    Run::from(d.cmd().args(&argv).output().unwrap())
}

/// A refusal as the CLI must give it: non-zero, one stderr line
/// `ssefs: CODE: ...` with the wanted code, nothing on stdout.
fn refused(r: &Run, code: &str) -> Result<(), String> {
    let line = r.stderr.trim_end();
    if r.status == 0 {
        return Err(format!("accepted (stdout {:?})", r.stdout));
    }
    if line.lines().count() != 1 {
        return Err(format!("{} stderr lines: {line:?}", line.lines().count()));
    }
    if !line.starts_with(&format!("ssefs: {code}: ")) {
        return Err(format!("not {code}: {line:?}"));
    }
    if line.len() > 4096 {
        return Err(format!("a {}-byte error line", line.len()));
    }
    if !r.stdout.is_empty() {
        return Err(format!("stdout {:?}", r.stdout));
    }
    Ok(())
}

fn show(v: &OsString) -> String {
    let s = format!("{v:?}");
    if s.len() > 40 {
        format!("{}... ({} bytes)", &s[..30], v.len())
    } else {
        s
    }
}

fn cli_slots(input: &Path, material: &Path) -> Vec<Slot> {
    let input = Box::leak(input.to_str().unwrap().to_owned().into_boxed_str());
    let material = Box::leak(material.to_str().unwrap().to_owned().into_boxed_str());
    let key_near = &["ALIAS/app", "Alias/app", "alias/", "alias/a b"][..];
    let obj_paths = || {
        let mut v = vec![
            (os(""), ION),
            (os(&long('a')), ION),
            (bytes(b"bkt/\xffobj"), IA),
            (os(" bkt/obj"), IBN),
            (os("\tbkt/obj"), IBN),
            (os("BKT/obj"), IBN),
            (os("Bkt/obj"), IBN),
            (os("bkt"), ION),
            (os("bkt/"), ION),
            (os("bkt//x"), ION),
            (os("bkt/../x"), ION),
            (os("bkt/.ssefs-bucket.toml"), ION),
            (os(&format!("bkt/{}", "k".repeat(1024))), ION),
        ];
        v.push((os(&format!("bkt/{}", long('k'))), ION));
        v
    };
    let days = || {
        let mut v: Vec<(OsString, &str)> = ["", " 7", "7\n", "7 ", "\t7", "0x7", "-7", "seven"]
            .iter()
            .map(|s| (os(s), IA))
            .collect();
        v.push((os(&long('9')), IA));
        v.push((bytes(b"7\xff"), IA));
        v.push((os("6"), IP));
        v.push((os("367"), IP));
        v
    };
    let bucket = |args: &[&'static str]| slot(args, values("bkt", IBN, &["BKT", "Bkt", "b_kt"]));
    let cmk = |args: &[&'static str]| {
        let mut v = values("alias/app", IP, key_near);
        // Aliases are case-sensitive: this one is another, unknown alias.
        v.push((os("alias/APP"), "AliasNotFound"));
        v.push((os("not-a-key"), IP));
        slot(args, v)
    };
    vec![
        bucket(&["bucket", "create", "@"]),
        bucket(&["bucket", "delete", "@"]),
        bucket(&["bucket", "encryption", "get", "@"]),
        bucket(&["bucket", "encryption", "delete", "@"]),
        bucket(&["bucket", "encryption", "put", "@", "--algorithm", "AES256"]),
        bucket(&["rewrap", "@"]),
        bucket(&["verify", "@"]),
        bucket(&["reencrypt", "@"]),
        slot(
            &["bucket", "encryption", "put", "bkt", "--algorithm", "@"],
            values(
                "AES256",
                IEA,
                &["aes256", "Sm4", "kms", "Kms", "AES-256", "DES"],
            ),
        ),
        // Empty: the default key (reference §2), asserted separately.
        slot(
            &[
                "bucket",
                "encryption",
                "put",
                "bkt",
                "--algorithm",
                "KMS",
                "--kms-key-id",
                "@",
            ],
            values("alias/app", IA, key_near)
                .into_iter()
                .filter(|(v, _)| !v.is_empty())
                .collect(),
        ),
        slot(
            &[
                "bucket",
                "encryption",
                "put",
                "bkt",
                "--algorithm",
                "KMS",
                "--kms-data-encryption",
                "@",
            ],
            values("SM4", IDEA, &["sm4", "Sm4", "AES256"]),
        ),
        slot(&["object", "put", "@", input], obj_paths()),
        slot(&["object", "get", "@"], obj_paths()),
        slot(&["object", "head", "@"], obj_paths()),
        slot(&["object", "copy", "@", "bkt/copy"], obj_paths()),
        slot(&["object", "copy", "bkt/obj", "@"], obj_paths()),
        slot(
            &["object", "put", "bkt/new", input, "--sse", "@"],
            values("AES256", IEA, &["aes256", "Sm4", "kms"]),
        ),
        slot(
            &["object", "copy", "bkt/obj", "bkt/new", "--sse", "@"],
            values("SM4", IEA, &["sm4", "Aes256"]),
        ),
        slot(
            &[
                "object",
                "put",
                "bkt/new",
                input,
                "--sse",
                "KMS",
                "--sse-key-id",
                "@",
            ],
            values("alias/app", IA, key_near)
                .into_iter()
                .filter(|(v, _)| !v.is_empty())
                .collect(),
        ),
        slot(
            &[
                "object",
                "put",
                "bkt/new",
                input,
                "--sse",
                "KMS",
                "--sse-data-encryption",
                "@",
            ],
            values("SM4", IDEA, &["sm4", "Sm4"]),
        ),
        // A path that is empty or names nothing: nothing is uploaded.
        slot(
            &["object", "put", "bkt/new", "@"],
            vec![
                (os(""), IA),
                (os(&format!("/{}", long('p'))), "InternalError"),
                (bytes(b"/nonexistent/\xff"), "InternalError"),
                (os(&format!(" {input}")), "InternalError"),
            ],
        ),
        slot(
            &["object", "get", "bkt/obj", "@"],
            vec![
                (os(""), IA),
                (os(&format!("/{}", long('p'))), "InternalError"),
                (os("/nonexistent/dir/out"), "InternalError"),
            ],
        ),
        slot(
            &["kms", "create-key", "--alias", "@"],
            values(
                "alias/new",
                IP,
                &["ALIAS/new", "Alias/new", "alias/", "alias/acs/new", "new"],
            ),
        ),
        slot(
            &["kms", "create-key", "--origin", "@"],
            values(
                "EXTERNAL",
                IP,
                &["external", "aliyun_kms", "ALIYUN_KMS", "Aliyun_kms"],
            ),
        ),
        // Free text: empty and padded descriptions are descriptions; too
        // long, control characters or not UTF-8 are not.
        slot(
            &["kms", "create-key", "--description", "@"],
            vec![
                (os(&long('d')), IP),
                (os("two\nlines"), IP),
                (os("a\ttab"), IP),
                (bytes(b"desc\xff"), IA),
            ],
        ),
        cmk(&["kms", "describe-key", "@"]),
        cmk(&["kms", "enable-key", "@"]),
        cmk(&["kms", "disable-key", "@"]),
        cmk(&["kms", "rotate-key", "@"]),
        cmk(&["kms", "cancel-key-deletion", "@"]),
        cmk(&["kms", "schedule-key-deletion", "@", "--pending-days", "7"]),
        slot(
            &[
                "kms",
                "schedule-key-deletion",
                "alias/app",
                "--pending-days",
                "@",
            ],
            days(),
        ),
        cmk(&[
            "kms",
            "import-key-material",
            "@",
            "--material-file",
            material,
        ]),
        slot(
            &[
                "kms",
                "import-key-material",
                "alias/ext",
                "--material-file",
                "@",
            ],
            vec![
                (os(""), IA),
                (os(&format!("/{}", long('p'))), "InternalError"),
                (bytes(b"/nonexistent/\xff"), "InternalError"),
            ],
        ),
        slot(
            &["kms", "create-alias", "@", "alias/app"],
            values(
                "alias/new",
                IP,
                &["ALIAS/new", "Alias/new", "alias/", "alias/acs/x", "new"],
            ),
        ),
        cmk(&["kms", "create-alias", "alias/new", "@"]),
        slot(
            &["kms", "delete-alias", "@"],
            values("alias/app", IP, &["ALIAS/app", "Alias/app", "alias/"]),
        ),
        // Global options: files that are empty or name nothing.
        slot(
            &["--config", "@", "bucket", "list"],
            vec![
                (os(""), IA),
                (os(&format!("/{}", long('p'))), IA),
                (os("/nonexistent.toml"), IA),
            ],
        ),
        slot(
            &["--root-key", "@", "bucket", "list"],
            vec![
                (os(""), IA),
                (os(&format!("/{}", long('p'))), "InternalError"),
                (bytes(b"/nonexistent/\xff"), "InternalError"),
            ],
        ),
        slot(
            &["--passphrase-file", "@", "bucket", "list"],
            vec![(os(""), IA), (os("/nonexistent"), "InternalError")],
        ),
        slot(
            &["--data-dir", "@", "bucket", "list"],
            vec![
                (os(""), IA),
                (os(&format!("/{}", long('p'))), "KmsServiceNotEnabled"),
                (bytes(b"/nonexistent/\xff"), "KmsServiceNotEnabled"),
            ],
        ),
    ]
}

#[test]
fn every_cli_value_is_refused_in_one_line_and_changes_nothing() {
    let d = DataDir::new();
    d.run(&["bucket", "create", "bkt"]).ok();
    d.run(&["kms", "create-key", "--alias", "alias/app"]).ok();
    d.run(&[
        "kms",
        "create-key",
        "--alias",
        "alias/ext",
        "--origin",
        "EXTERNAL",
    ])
    .ok();
    d.run(&[
        "bucket",
        "encryption",
        "put",
        "bkt",
        "--algorithm",
        "KMS",
        "--kms-key-id",
        "alias/app",
        "--kms-data-encryption",
        "SM4",
    ])
    .ok();
    let input = d.write("in.txt", b"object body");
    d.run(&["object", "put", "bkt/obj", input.to_str().unwrap()])
        .ok();
    let material = d.write("material.bin", &[7u8; 32]);

    let before = snapshot(&d.data());
    let rule = d.run(&["bucket", "encryption", "get", "bkt"]).ok().stdout;
    let mut failures = Vec::new();
    let mut tried = 0;
    for s in cli_slots(&input, &material) {
        for (v, code) in &s.values {
            tried += 1;
            let r = run_with(&d, &s.args, v);
            let what = format!("{} with {}", s.args.join(" "), show(v));
            if let Err(why) = refused(&r, code) {
                failures.push(format!("{what}: {why}"));
            }
            if snapshot(&d.data()) != before {
                failures.push(format!("{what}: changed the data directory"));
                break;
            }
        }
    }
    println!("badinput: {tried} bad CLI values tried");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        d.run(&["bucket", "encryption", "get", "bkt"]).ok().stdout,
        rule
    );

    // The reference's own rule: an empty KMSMasterKeyID is the default key.
    d.run(&[
        "bucket",
        "encryption",
        "put",
        "bkt",
        "--algorithm",
        "KMS",
        "--kms-key-id",
        "",
    ])
    .ok();
    assert_eq!(
        d.run(&["bucket", "encryption", "get", "bkt"]).ok().stdout,
        "SSEAlgorithm: KMS\n"
    );
}

fn is_mounted(p: &Path) -> bool {
    let want = p.as_os_str().as_bytes();
    fs::read("/proc/self/mountinfo")
        .unwrap()
        .split(|&b| b == b'\n')
        .any(|l| l.split(|&b| b == b' ').nth(4) == Some(want))
}

#[test]
fn bad_mount_options_mount_nothing_and_create_nothing() {
    let d = DataDir::new();
    let before = snapshot(&d.data());
    let mp = d.path("mnt");
    let cases: Vec<(OsString, &str)> = vec![
        (os(""), IA),
        (os("ro,,rw"), IA),
        (os(&long('o')), IA),
        (bytes(b"ro\xff"), IA),
        (os("RO"), IA),
        (os("Allow_Other"), IA),
        (os(" ro"), IA),
        (os("ro\n"), IA),
        (os("ro "), IA),
        (os("threads=0"), IA),
        (os("threads=65"), IA),
        (os("threads= 4"), IA),
        (os("threads=4\n"), IA),
        (os("threads="), IA),
        (os("cache_mb=-1"), IA),
        (os("cache_mb=x"), IA),
        (os("allow_other,bogus"), IA),
    ];
    let mut failures = Vec::new();
    for (v, code) in &cases {
        let r = run_with(&d, &["mount", mp.to_str().unwrap(), "-o", "@"], v);
        if let Err(why) = refused(&r, code) {
            failures.push(format!("-o {}: {why}", show(v)));
        }
        if mp.exists() || is_mounted(&mp) || snapshot(&d.data()) != before {
            failures.push(format!("-o {}: mounted or created something", show(v)));
            if is_mounted(&mp) {
                let _ = std::process::Command::new("fusermount3")
                    .arg("-u")
                    .arg(&mp)
                    .status();
            }
            let _ = fs::remove_dir(&mp);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The background daemon was handed its paths through `display()`, so a
/// mount point (or data directory) whose name is not UTF-8 became another
/// name; and `is_mounted` decoded mountinfo byte by byte, so even a UTF-8
/// name beyond ASCII never matched: `ssefs mount` waited 60 s for a mount
/// that had come up.
#[test]
fn regression_mount_points_beyond_ascii_are_mounted_where_named() {
    let d = DataDir::new();
    let base = d.path("mnt-").into_os_string().into_vec();
    for (i, tail) in [&b"\xc3\xa9t\xc3\xa9"[..], b"\xff\xfe"].iter().enumerate() {
        let mp = PathBuf::from(bytes(&[&base[..], tail].concat()));
        let r = Run::from(d.cmd().arg("mount").arg(&mp).output().unwrap());
        assert_eq!(r.status, 0, "{}", r.stderr);
        assert!(is_mounted(&mp));
        let b = format!("bkt{i}");
        fs::create_dir(mp.join(&b)).unwrap();
        fs::write(mp.join(&b).join("o"), b"x").unwrap();
        assert!(d.data().join(&b).join("o").exists());
        crate::mount::unmount_at(&mp);
    }
}

/// Every value of every OSS xattr, on buckets with and without a rule and
/// on encrypted, empty and unencrypted files.
fn xattr_values() -> Vec<(&'static str, Vec<u8>)> {
    let mut v: Vec<(&str, Vec<u8>)> = Vec::new();
    let strs = |name, good: &str, near: &[&str]| {
        let mut out: Vec<(&str, Vec<u8>)> = vec![
            (name, Vec::new()),
            (name, long(good.chars().next().unwrap()).into_bytes()),
            (name, [good.as_bytes(), b"\xff"].concat()),
            (name, b"\xff".to_vec()),
            (name, format!(" {good}").into_bytes()),
            (name, format!("{good}\n").into_bytes()),
            (name, format!("{good} ").into_bytes()),
            (name, format!("\t{good}").into_bytes()),
            (name, format!("{good}\0").into_bytes()),
        ];
        out.extend(near.iter().map(|n| (name, n.as_bytes().to_vec())));
        out
    };
    v.extend(strs(
        SSE,
        "AES256",
        &["aes256", "Sm4", "kms", "Kms", "AES-256"],
    ));
    v.extend(strs(
        KEY,
        "alias/app",
        &["ALIAS/app", "Alias/app", "alias/", "key-1"],
    ));
    v.extend(strs(DATA, "SM4", &["sm4", "Sm4", "AES256"]));
    v
}

/// The backend as it stands, less the mount log (which the refusals write).
fn backend(m: &Mount) -> Vec<(PathBuf, Vec<u8>)> {
    snapshot(&m.d.data())
        .into_iter()
        .filter(|(p, _)| !p.ends_with(".ssefs/mount.log"))
        .collect()
}

fn oss_xattrs(m: &Mount, targets: &[&str]) -> Vec<(String, String, Result<String, i32>)> {
    let mut out = Vec::new();
    for t in targets {
        for n in [SSE, KEY, DATA] {
            out.push((t.to_string(), n.to_string(), xattr_get(&m.p(t), n)));
        }
    }
    out
}

#[test]
fn every_oss_xattr_refuses_bad_values_with_einval_and_changes_nothing() {
    let m = Mount::new(&[]);
    m.d.run(&["kms", "create-key", "--alias", "alias/app"]).ok();
    for (b, rule) in [
        (
            "b-x",
            &[(SSE, "KMS"), (KEY, "alias/app"), (DATA, "SM4")][..],
        ),
        ("b-y", &[]),
        ("b-z", &[(SSE, "AES256")]),
    ] {
        fs::create_dir(m.p(b)).unwrap();
        for (n, v) in rule {
            m.setfattr(b, n, v).unwrap();
        }
    }
    fs::write(m.p("b-x/f"), vec![5u8; 40_000]).unwrap();
    fs::write(m.p("b-x/empty"), b"").unwrap();
    fs::write(m.p("b-y/g"), b"plain").unwrap();
    fs::write(m.p("b-z/h"), b"aes").unwrap();
    let targets = ["b-x", "b-y", "b-z", "b-x/f", "b-x/empty", "b-y/g", "b-z/h"];

    let before = backend(&m);
    let attrs = oss_xattrs(&m, &targets);
    let log_path = m.d.data().join(".ssefs/mount.log");
    let mut failures = Vec::new();
    let mut tried = 0;
    let invalid = [IA, IP, IEA, IDEA];
    for t in targets {
        for (name, v) in xattr_values() {
            tried += 1;
            let log_at = fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0) as usize;
            let what = format!("{t} {name}={}", show(&OsString::from_vec(v.clone())));
            match xattr_set(&m.p(t), name, &v) {
                Ok(()) => failures.push(format!("{what}: accepted")),
                Err(e) if e != libc::EINVAL => failures.push(format!("{what}: errno {e}")),
                Err(_) => {
                    let log = fs::read(&log_path).unwrap();
                    let new = String::from_utf8_lossy(&log[log_at..]);
                    let named = new.lines().any(|l| {
                        l.contains(&format!("path=\"{t}\""))
                            && invalid.iter().any(|c| l.contains(c))
                    });
                    if !named {
                        failures.push(format!("{what}: no log line with the code and {t}: {new}"));
                    }
                    if new.lines().any(|l| l.len() > 4096) {
                        failures.push(format!("{what}: an over-long log line"));
                    }
                }
            }
            if backend(&m) != before {
                failures.push(format!("{what}: changed the backend"));
                break;
            }
        }
    }
    println!("badinput: {tried} bad xattr values tried");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(oss_xattrs(&m, &targets), attrs);
    assert_eq!(fs::read(m.p("b-x/f")).unwrap(), vec![5u8; 40_000]);
}
