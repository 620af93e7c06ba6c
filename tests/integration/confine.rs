//! Issue 12: a local user must not be able to steer the root daemon, or the
//! CLI run by root, outside the data directory; and the data directory the
//! daemon makes is private, whatever the umask.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::mount::{xattr_get, xattr_set, Mount};
use crate::util::{bin, env_count, seeded_bytes, snapshot, test_seed, DataDir, Rng};

const SSE: &str = "user.oss.server-side-encryption";
const USER: u32 = 1000;

/// Starts `sh -c script` as the unprivileged user.
fn as_user(script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .uid(USER)
        .gid(USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn user_ok(script: &str) {
    let st = as_user(script).wait().unwrap();
    assert!(st.success(), "as uid {USER}: {script}");
}

/// What the attacker does to the directory holding the object while the
/// operation runs: moves it away and puts a symlink in its place, to a
/// directory outside the data directory or to the state directory.
fn attack_script(m: &Mount, dir_rel: &str, target: &Path, delay_us: u64) -> String {
    let d = m.p(dir_rel);
    format!(
        "sleep {:.6}; mv {d} {d}.moved && ln -s {t} {d}",
        delay_us as f64 / 1e6,
        d = d.display(),
        t = target.display()
    )
}

/// Every file under `dir` by name, with the names of directories, for
/// telling that nothing was added or replaced there.
fn listing(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

/// The state directory's files that no operation here may create: all
/// but the temp directory, the log and the keystore's own files.
fn state_listing(m: &Mount) -> BTreeSet<PathBuf> {
    let state = m.backend(".ssefs");
    listing(&state)
        .into_iter()
        .filter(|p| !p.starts_with(state.join("tmp")))
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            !n.starts_with("keystore") && n != "mount.log"
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Op {
    SetXattr,
    RemoveXattr,
    Reencrypt,
    Rewrap,
}

struct Attempt {
    dir: String,
    content: Vec<u8>,
}

/// The race of issue 12, seeded: for each operation, `n` objects of random
/// size are rewritten while their owner moves the directory away and
/// plants a symlink to a directory outside the data directory (or to
/// `.ssefs`) after a random delay. Nothing outside the data directory may
/// change, nothing may appear in the state directory, and each object must
/// end up whole under one of its names.
#[test]
fn a_user_renaming_and_planting_symlinks_cannot_steer_rewrites_outside() {
    let seed = test_seed("confine race");
    let n = env_count("SSEFS_CONFINE_ATTEMPTS", 200);
    let mut rng = Rng::new(seed);
    let m = Mount::new(&["allow_other"]);
    let outside = tempfile::tempdir().unwrap();
    // Root's, and holding a file by the object's name: the prize.
    fs::write(outside.path().join("f"), b"root's file").unwrap();
    let before_outside = snapshot(outside.path());
    let before_state = state_listing(&m);
    let targets = [outside.path().to_path_buf(), m.backend(".ssefs")];

    for op in [Op::SetXattr, Op::RemoveXattr, Op::Reencrypt, Op::Rewrap] {
        // One bucket per operation (rewrap takes whole buckets: one per
        // attempt there), writable by the user.
        let buckets: Vec<String> = match op {
            Op::Rewrap => (0..n).map(|i| format!("rw{i}")).collect(),
            _ => vec![format!("{op:?}").to_lowercase()],
        };
        for b in &buckets {
            fs::create_dir(m.p(b)).unwrap();
            fs::set_permissions(m.p(b), fs::Permissions::from_mode(0o777)).unwrap();
            if matches!(op, Op::Rewrap) {
                xattr_set(&m.p(b), SSE, b"AES256").unwrap();
            }
        }
        let mut attempts = Vec::new();
        for i in 0..n {
            let b = &buckets[i % buckets.len()];
            let dir = format!("{b}/d{i}");
            let len = rng.range(1, 2 << 20) as usize;
            let content = seeded_bytes(rng.next_u64(), len);
            let staged = outside.path().join(format!("in{i}"));
            // Written by the user through the mount.
            fs::write(&staged, &content).unwrap();
            fs::set_permissions(&staged, fs::Permissions::from_mode(0o644)).unwrap();
            user_ok(&format!(
                "mkdir {d} && cp {s} {d}/f",
                d = m.p(&dir).display(),
                s = staged.display()
            ));
            fs::remove_file(&staged).unwrap();
            if matches!(op, Op::RemoveXattr) {
                user_ok(&format!(
                    "setfattr -n {SSE} -v SM4 {}/f",
                    m.p(&dir).display()
                ));
            }
            attempts.push(Attempt { dir, content });
        }
        match op {
            // Every object's target differs from how it is stored now.
            Op::Reencrypt => xattr_set(&m.p(&buckets[0]), SSE, b"SM4").unwrap(),
            // Every object's key version is an old one now.
            Op::Rewrap => {
                m.d.run(&["kms", "rotate-master"]).ok();
            }
            _ => {}
        }
        let before_objects = snapshot(outside.path());
        assert_eq!(before_objects, before_outside);

        for (i, a) in attempts.iter().enumerate() {
            let target = &targets[rng.below(2) as usize];
            // Objects of up to 2 MiB take a few ms to rewrite through the
            // mount and tens of ms through the CLI (which also starts up).
            let max_delay = match op {
                Op::SetXattr | Op::RemoveXattr => 10_000,
                Op::Reencrypt | Op::Rewrap => 40_000,
            };
            let delay = rng.below(max_delay);
            let f = m.p(&format!("{}/f", a.dir));
            let mut worker = match op {
                Op::SetXattr => as_user(&format!("setfattr -n {SSE} -v SM4 {}", f.display())),
                Op::RemoveXattr => as_user(&format!("setfattr -x {SSE} {}", f.display())),
                Op::Reencrypt => {
                    m.d.cmd()
                        .args(["reencrypt", &format!("{}/", a.dir)])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap()
                }
                Op::Rewrap => {
                    m.d.cmd()
                        .args(["rewrap", a.dir.split('/').next().unwrap()])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap()
                }
            };
            let mut attacker = as_user(&attack_script(&m, &a.dir, target, delay));
            // Either may fail (the rewrite finding its object moved, the
            // attacker finding the rewrite done): what matters is below.
            let _ = worker.wait().unwrap();
            let _ = attacker.wait().unwrap();

            let ctx = format!("{op:?} attempt {i} (seed {seed}, delay {delay} us)");
            assert_eq!(
                snapshot(outside.path()),
                before_outside,
                "{ctx}: outside changed"
            );
            assert_eq!(state_listing(&m), before_state, "{ctx}: state dir changed");
            // Whole under one of its names: the moved directory if the
            // attacker got that far, else the original one.
            let moved = m.p(&format!("{}.moved/f", a.dir));
            let at = if moved.exists() { moved } else { f.clone() };
            let got = fs::read(&at).unwrap_or_else(|e| panic!("{ctx}: reading {at:?}: {e}"));
            assert!(got == a.content, "{ctx}: content differs at {at:?}");
        }
    }
}

/// Modes of what the first mount makes.
fn modes(data: &Path) -> Vec<(String, u32)> {
    ["", ".ssefs", ".ssefs/tmp", ".ssefs/keystore.toml"]
        .iter()
        .map(|rel| {
            let p = if rel.is_empty() {
                data.to_path_buf()
            } else {
                data.join(rel)
            };
            ((*rel).to_owned(), fs::metadata(&p).unwrap().mode() & 0o777)
        })
        .collect()
}

fn wait_mounted(mnt: &Path) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        let canon = mnt.canonicalize().unwrap();
        let info = crate::util::mountinfo();
        if info.lines().any(|l| l.split(' ').nth(4) == canon.to_str()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn unmount(mnt: &Path) {
    crate::mount::unmount_at(mnt);
}

/// The first mount of a new data directory, in the foreground and in the
/// background, under umask 0 and 077: the data directory, the state
/// directory and its temp directory are 0700, the keystore 0600.
#[test]
fn first_use_makes_a_private_data_directory_whatever_the_umask() {
    for (umask, foreground) in [("0", true), ("0", false), ("077", true), ("077", false)] {
        let d = DataDir::uninit();
        let mnt = d.path("mnt");
        fs::create_dir(&mnt).unwrap();
        let fg = if foreground { "--foreground" } else { "" };
        let script = format!(
            "umask {umask}; exec {} mount {} {fg}",
            bin().display(),
            mnt.display()
        );
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(&script)
            .env("SSEFS_DATA_DIR", d.data())
            .env("SSEFS_KEY_DIR", d.keys())
            .env_remove("SSEFS_PASSPHRASE")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        // The background mount returns once mounted; the foreground one
        // when unmounted.
        let started = if foreground {
            None
        } else {
            Some(child.wait().unwrap())
        };
        assert!(started.is_none_or(|s| s.success()), "{script}");
        assert!(wait_mounted(&mnt), "{script}: not mounted");
        let got = modes(&d.data());
        unmount(&mnt);
        let _ = child.wait();
        let want: Vec<(String, u32)> = [
            ("", 0o700),
            (".ssefs", 0o700),
            (".ssefs/tmp", 0o700),
            (".ssefs/keystore.toml", 0o600),
        ]
        .iter()
        .map(|(p, m)| ((*p).to_owned(), *m))
        .collect();
        assert_eq!(got, want, "umask {umask}, foreground {foreground}");
    }
}

/// A data directory, state directory, keystore or root key that someone
/// else could write or that another user owns is refused, by the mount and
/// by every CLI command, in one line naming the path and the fix; nothing
/// is changed.
#[test]
fn unsafe_modes_and_owners_are_refused_in_one_line() {
    let d = DataDir::new();
    let data = d.data();
    let cases: Vec<(PathBuf, &str)> = vec![
        (data.clone(), "mode 0777"),
        (data.clone(), "mode 0775"),
        (data.clone(), "owner"),
        (data.join(".ssefs"), "mode 0757"),
        (data.join(".ssefs"), "owner"),
        (data.join(".ssefs/keystore.toml"), "mode 0666"),
        (data.join(".ssefs/keystore.toml"), "owner"),
        (d.path("."), "mode 0777"),
    ];
    let mnt = d.path("mnt");
    fs::create_dir(&mnt).unwrap();
    for (path, what) in cases {
        let m0 = fs::metadata(&path).unwrap();
        if what == "owner" {
            std::os::unix::fs::chown(&path, Some(USER), None).unwrap();
        } else {
            let mode = u32::from_str_radix(what.trim_start_matches("mode 0"), 8).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        }
        let before = snapshot(&data);
        for args in [
            vec!["mount", mnt.to_str().unwrap()],
            vec!["status"],
            vec!["bucket", "create", "b"],
            vec!["kms", "list-keys"],
            vec!["verify"],
        ] {
            let r = d.run(&args);
            let shown = path.canonicalize().unwrap();
            assert_ne!(r.status, 0, "{args:?} with {} {what}", path.display());
            assert_eq!(r.stderr.trim_end().lines().count(), 1, "{}", r.stderr);
            assert!(
                r.stderr.contains(&path.display().to_string())
                    || r.stderr.contains(&shown.display().to_string()),
                "{args:?}: {}",
                r.stderr
            );
            assert!(r.stderr.contains("fix it with"), "{}", r.stderr);
        }
        assert_eq!(
            snapshot(&data),
            before,
            "{} {what}: changed",
            path.display()
        );
        // Put back.
        std::os::unix::fs::chown(&path, Some(m0.uid()), Some(m0.gid())).unwrap();
        fs::set_permissions(&path, m0.permissions()).unwrap();
        d.run(&["status"]).ok();
    }
}

/// Issue 12, part 6: after `ssefs reencrypt` (or `rewrap`) rewrote an
/// object while the bucket is mounted, the mount shows the new encryption
/// at once, through the inode it already knew, and reads the data.
#[test]
fn regression_getfattr_follows_a_cli_reencrypt_without_a_new_lookup() {
    let m = Mount::new(&[]);
    fs::create_dir(m.p("bkt")).unwrap();
    xattr_set(&m.p("bkt"), SSE, b"AES256").unwrap();
    let content = seeded_bytes(7, 100_000);
    fs::write(m.p("bkt/obj"), &content).unwrap();
    // Closed in the daemon too, or reencrypt would skip it as busy.
    m.wait_closed("bkt/obj");
    let held = m.p("bkt/obj");
    assert_eq!(xattr_get(&held, SSE).unwrap(), "AES256");
    m.d.run(&["bucket", "encryption", "put", "bkt", "--algorithm", "SM4"])
        .ok();
    m.d.run(&["reencrypt", "bkt"]).ok();
    assert_eq!(xattr_get(&held, SSE).unwrap(), "SM4");
    assert_eq!(fs::read(&held).unwrap(), content);
    // And across a rewrap, which keeps the encryption but not the file.
    let ino = fs::metadata(&held).unwrap().ino();
    m.d.run(&["kms", "rotate-master"]).ok();
    m.d.run(&["rewrap", "bkt"]).ok();
    assert_eq!(fs::read(&held).unwrap(), content);
    assert_eq!(xattr_get(&held, SSE).unwrap(), "SM4");
    assert_eq!(fs::metadata(&held).unwrap().ino(), ino, "same inode");
}

/// `ssefs object put/get/head/copy` with a key whose directory a user has
/// replaced by a symlink (to a root-owned directory outside): refused, and
/// nothing outside is read or written.
#[test]
fn object_commands_do_not_follow_a_planted_symlink() {
    let m = Mount::new(&["allow_other"]);
    fs::create_dir(m.p("bkt")).unwrap();
    fs::set_permissions(m.p("bkt"), fs::Permissions::from_mode(0o777)).unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("f"), b"root's file").unwrap();
    let before = snapshot(outside.path());
    user_ok(&format!(
        "ln -s {} {}",
        outside.path().display(),
        m.p("bkt/d").display()
    ));
    let src = m.d.write("src", b"new bytes");
    m.d.run(&["object", "put", "bkt/d/f", src.to_str().unwrap()])
        .fails_with("InvalidObjectName");
    m.d.run(&["object", "put", "bkt/d/sub/g", src.to_str().unwrap()])
        .fails_with("InvalidObjectName");
    m.d.run(&["object", "get", "bkt/d/f"])
        .fails_with("NoSuchKey");
    m.d.run(&["object", "head", "bkt/d/f"])
        .fails_with("NoSuchKey");
    m.d.run(&["object", "put", "bkt/ok", src.to_str().unwrap()])
        .ok();
    m.d.run(&["object", "copy", "bkt/ok", "bkt/d/f"])
        .fails_with("InvalidObjectName");
    m.d.run(&["object", "copy", "bkt/d/f", "bkt/ok2"])
        .fails_with("NoSuchKey");
    assert_eq!(snapshot(outside.path()), before);
    assert_eq!(fs::read(m.p("bkt/ok")).unwrap(), b"new bytes");
}
