//! Where the root key lives (issue 16): apart from the data directory by
//! default, the old layout still working and moved out safely, and the
//! paper backup.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::mount::Mount;
use crate::util::{snapshot, DataDir, Run};

/// The path after "root key: " in `init`'s or `status`'s output.
fn reported_key(stdout: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("root key: "))
        .unwrap_or_else(|| panic!("no root key line: {stdout}"));
    PathBuf::from(line)
}

/// Whether any file under `dir` holds `needle`.
fn holds(dir: &Path, needle: &[u8]) -> Option<PathBuf> {
    snapshot(dir)
        .into_iter()
        .find(|(_, bytes)| bytes.windows(needle.len()).any(|w| w == needle))
        .map(|(p, _)| p)
}

fn check_private_key(key: &Path, data: &Path) {
    let m = fs::metadata(key).unwrap();
    assert_eq!(m.len(), 32);
    assert_eq!(m.mode() & 0o777, 0o600, "{}", key.display());
    assert!(!key.starts_with(data));
    let bytes = fs::read(key).unwrap();
    assert_eq!(
        holds(data, &bytes),
        None,
        "a file in the data directory holds the key"
    );
    assert!(!data.join(".ssefs/root.key").exists());
}

/// Removes a key file written to the machine's /etc/ssefs.
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

#[test]
fn first_use_as_root_puts_the_key_under_etc_ssefs() {
    let d = DataDir::uninit();
    let r = Run::from(
        d.cmd()
            .env_remove("SSEFS_KEY_DIR")
            .arg("init")
            .output()
            .unwrap(),
    )
    .ok();
    let key = reported_key(&r.stdout);
    let _rm = RemoveOnDrop(vec![key.clone()]);
    assert_eq!(key.parent(), Some(Path::new("/etc/ssefs")));
    let id = key.file_stem().unwrap().to_str().unwrap();
    let ks = fs::read_to_string(d.data().join(".ssefs/keystore.toml")).unwrap();
    assert!(
        ks.contains(id),
        "the key is not named after the keystore's id"
    );
    check_private_key(&key, &d.data());
    assert_eq!(fs::metadata("/etc/ssefs").unwrap().mode() & 0o022, 0);
    // Found there again with nothing named.
    Run::from(
        d.cmd()
            .env_remove("SSEFS_KEY_DIR")
            .args(["bucket", "create", "bkt"])
            .output()
            .unwrap(),
    )
    .ok();
}

/// `ssefs ARGS` as uid 1000 with `env` (and no $SSEFS_KEY_DIR).
fn as_user(d: &DataDir, data: &Path, env: &[(&str, &Path)], args: &[&str]) -> Run {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=1000", "--regid=1000", "--clear-groups"])
        .arg(crate::util::bin())
        .env_remove("SSEFS_KEY_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("SSEFS_PASSPHRASE")
        .env_remove("SSEFS_ROOT_KEY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("SSEFS_DATA_DIR", data)
        .envs(env.iter().copied())
        .args(args);
    let _ = d;
    Run::from(c.output().unwrap())
}

#[test]
fn first_use_as_a_user_puts_the_key_under_xdg_config_home() {
    let d = DataDir::uninit();
    fs::set_permissions(d.tmp.path(), fs::Permissions::from_mode(0o711)).unwrap();
    let (home, xdg, a, b) = (d.path("home"), d.path("xdg"), d.path("a"), d.path("b"));
    for p in [&home, &xdg, &a, &b] {
        fs::create_dir(p).unwrap();
        std::os::unix::fs::chown(p, Some(1000), Some(1000)).unwrap();
    }
    // $XDG_CONFIG_HOME when set...
    let r = as_user(
        &d,
        &a,
        &[("HOME", &home), ("XDG_CONFIG_HOME", &xdg)],
        &["init"],
    )
    .ok();
    let key = reported_key(&r.stdout);
    assert_eq!(key.parent(), Some(xdg.join("ssefs").as_path()));
    check_private_key(&key, &a);
    assert_eq!(
        fs::metadata(xdg.join("ssefs")).unwrap().mode() & 0o777,
        0o700
    );
    assert_eq!(fs::metadata(&key).unwrap().uid(), 1000);
    // ... else ~/.config.
    let r = as_user(&d, &b, &[("HOME", &home)], &["init"]).ok();
    let key_b = reported_key(&r.stdout);
    assert_eq!(key_b.parent(), Some(home.join(".config/ssefs").as_path()));
    check_private_key(&key_b, &b);
    as_user(&d, &b, &[("HOME", &home)], &["bucket", "list"]).ok();
    // Two data directories, two keys, each found by its id.
    assert_ne!(fs::read(&key).unwrap(), fs::read(&key_b).unwrap());
    as_user(
        &d,
        &a,
        &[("HOME", &home), ("XDG_CONFIG_HOME", &xdg)],
        &["bucket", "list"],
    )
    .ok();
}

#[test]
fn a_copy_of_the_data_directory_alone_decrypts_nothing() {
    let marker = b"PLAINTEXT-MARKER-7f3a";
    let body: Vec<u8> = marker.iter().copied().cycle().take(100_000).collect();
    let m = Mount::new(&[]);
    for (bucket, rule) in [("aes", "AES256"), ("sm4", "SM4"), ("kms", "KMS")] {
        m.d.run(&["bucket", "create", bucket]).ok();
        m.d.run(&["bucket", "encryption", "put", bucket, "--algorithm", rule])
            .ok();
        fs::write(m.p(&format!("{bucket}/obj")), &body).unwrap();
    }
    m.unmount();
    let key = fs::read(m.d.key_file()).unwrap();
    let copy = m.d.path("copy");
    let st = Command::new("cp")
        .arg("-a")
        .arg(m.d.data())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(holds(&copy, &key), None, "the copy holds the root key");
    assert_eq!(holds(&copy, marker), None, "the copy holds plaintext");
    // On another machine (no key directory with its key) it opens nothing.
    let elsewhere = m.d.path("elsewhere");
    let r = Run::from(
        m.d.cmd()
            .env("SSEFS_DATA_DIR", &copy)
            .env("SSEFS_KEY_DIR", &elsewhere)
            .args(["object", "get", "aes/obj"])
            .output()
            .unwrap(),
    );
    assert_ne!(r.status, 0);
    assert!(r.stdout.is_empty());
    assert!(r.stderr.contains("no root key"), "{}", r.stderr);
    // With the key the copy is whole: the check above looked at real data.
    let r = Run::from(
        m.d.cmd()
            .env("SSEFS_DATA_DIR", &copy)
            .args(["object", "get", "sm4/obj"])
            .output()
            .unwrap(),
    )
    .ok();
    assert_eq!(r.stdout.as_bytes(), &body[..]);
}

/// What the old layout's `bkt/o` holds (tests/fixtures/old-layout).
pub(crate) const OLD_OBJECT: &str = "made by ssefs 0294309\n";

/// A data directory as the previous version made it: a copy of
/// tests/fixtures/old-layout, made by that version's binary (the key
/// inside, a keystore without a data directory id or MACs). The first open
/// upgrades it and gives it its id, and says so.
pub(crate) fn old_layout() -> DataDir {
    let d = DataDir::uninit();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/old-layout/data");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&fixture)
        .arg(d.data())
        .status()
        .unwrap();
    assert!(st.success());
    // Git keeps no modes but the execute bit: give them as ssefs made them.
    for (p, mode) in [
        ("", 0o700),
        (".ssefs", 0o700),
        (".ssefs/keystore.toml", 0o600),
        (".ssefs/root.key", 0o600),
    ] {
        fs::set_permissions(d.data().join(p), fs::Permissions::from_mode(mode)).unwrap();
    }
    let ks = d.data().join(".ssefs/keystore.toml");
    assert!(!fs::read_to_string(&ks).unwrap().contains("data_dir_id"));
    let r = Run::from(
        d.cmd()
            .env("RUST_LOG", "info")
            .args(["bucket", "create", "new"])
            .output()
            .unwrap(),
    )
    .ok();
    assert!(
        r.stderr.contains("gave the data directory its id"),
        "{}",
        r.stderr
    );
    assert!(fs::read_to_string(&ks).unwrap().contains("data_dir_id"));
    assert!(!d.keys().exists());
    d
}

#[test]
fn an_old_layout_still_mounts_warns_and_moves_out() {
    let d = old_layout();
    let legacy = d.data().join(".ssefs/root.key");
    let key = fs::read(&legacy).unwrap();
    let m = Mount::on(d, &[]);
    assert_eq!(fs::read(m.p("bkt/o")).unwrap(), OLD_OBJECT.as_bytes());
    assert_eq!(
        fs::read(m.p("sm4/obj")).unwrap(),
        b"an SM4 object from before\n"
    );
    fs::write(m.p("bkt/new"), b"written").unwrap();
    m.unmount();
    // The daemon said where the key is.
    let log = fs::read_to_string(m.d.data().join(".ssefs/mount.log")).unwrap();
    assert!(
        log.contains("WARN") && log.contains("inside the data directory"),
        "{log}"
    );
    let st = m.d.run(&["status"]).ok();
    assert_eq!(reported_key(&st.stdout), legacy);
    assert!(
        st.stdout
            .contains("warning: the root key is inside the data directory")
            && st.stdout.contains("root-key move"),
        "{}",
        st.stdout
    );
    let mv = m.d.run(&["root-key", "move"]).ok();
    let dest = m.d.key_file();
    assert!(
        mv.stdout.contains(&dest.display().to_string()),
        "{}",
        mv.stdout
    );
    assert!(!legacy.exists());
    assert_eq!(fs::read(&dest).unwrap(), key);
    check_private_key(&dest, &m.d.data());
    let st = m.d.run(&["status"]).ok();
    assert_eq!(reported_key(&st.stdout), dest);
    assert!(
        !st.stdout.contains("inside the data directory"),
        "{}",
        st.stdout
    );
    // The key directory is on the data's filesystem here: that is said too.
    assert!(st.stdout.contains("same filesystem"), "{}", st.stdout);
    assert_eq!(
        m.d.run(&["object", "get", "bkt/new"]).ok().stdout,
        "written"
    );
    // Moving again changes nothing.
    m.d.run(&["root-key", "move"]).ok();
    assert_eq!(fs::read(&dest).unwrap(), key);
}

#[test]
fn a_kill_at_any_step_of_the_move_loses_nothing() {
    for step in ["temp-written", "installed", "old-wiped"] {
        let d = old_layout();
        let key = fs::read(d.data().join(".ssefs/root.key")).unwrap();
        let r = Run::from(
            d.cmd()
                .env("SSEFS_TEST_KILL_AT", step)
                .args(["root-key", "move"])
                .output()
                .unwrap(),
        );
        assert_eq!(r.status, -1, "{step}: not killed: {}", r.stderr);
        // Still opens, with nothing named.
        assert_eq!(
            d.run(&["object", "get", "bkt/o"]).ok().stdout,
            OLD_OBJECT,
            "{step}"
        );
        // And the move completes when run again.
        d.run(&["root-key", "move"]).ok();
        assert!(!d.data().join(".ssefs/root.key").exists(), "{step}");
        assert_eq!(fs::read(d.key_file()).unwrap(), key, "{step}");
        assert_eq!(
            d.run(&["object", "get", "bkt/o"]).ok().stdout,
            OLD_OBJECT,
            "{step}"
        );
        let left: Vec<_> = fs::read_dir(d.keys()).unwrap().flatten().collect();
        assert_eq!(
            left.len(),
            1,
            "{step}: temp files left in the key directory"
        );
    }
}

#[test]
fn export_then_import_round_trips_and_typos_are_refused() {
    let d = DataDir::new();
    d.run(&["bucket", "create", "bkt"]).ok();
    let key_path = d.key_file();
    let key = fs::read(&key_path).unwrap();
    let paper = d.run(&["root-key", "export"]).ok().stdout;
    assert_eq!(paper.lines().filter(|l| l.contains("check")).count(), 4);
    fs::remove_file(&key_path).unwrap();
    d.run(&["bucket", "list"]).fails_with("no root key");

    // One digit mistyped in line 2: refused, naming the line; nothing written.
    let line2 = paper.lines().find(|l| l.starts_with("2:")).unwrap();
    let pos = line2
        .find(|c: char| c.is_ascii_hexdigit() && c != '2')
        .unwrap();
    let mut typo = line2.to_owned();
    let c = typo.as_bytes()[pos];
    typo.replace_range(pos..=pos, if c == b'0' { "1" } else { "0" });
    d.run_stdin(
        &["root-key", "import"],
        paper.replace(line2, &typo).as_bytes(),
    )
    .fails_with("line 2");
    assert!(!key_path.exists());

    // Another data directory's key: refused by the keystore check.
    let other = DataDir::new();
    let other_paper = other.run(&["root-key", "export"]).ok().stdout;
    d.run_stdin(&["root-key", "import"], other_paper.as_bytes())
        .fails_with("does not match");
    assert!(!key_path.exists());

    d.run_stdin(&["root-key", "import"], paper.as_bytes()).ok();
    assert_eq!(fs::read(&key_path).unwrap(), key);
    assert_eq!(fs::metadata(&key_path).unwrap().mode() & 0o777, 0o600);
    assert_eq!(d.run(&["bucket", "list"]).ok().stdout, "bkt\n");
}

#[test]
fn a_passphrase_has_no_key_to_export_and_a_foreign_key_file_is_refused() {
    let d = DataDir::uninit();
    d.run_stdin(&["init", "--passphrase"], b"correct horse\n")
        .ok();
    let r = Run::from(
        d.cmd()
            .env("SSEFS_PASSPHRASE", "correct horse")
            .args(["root-key", "export"])
            .output()
            .unwrap(),
    );
    let r = r.fails_with("nothing to export");
    assert!(r.stdout.is_empty());

    // A key file owned by another user is refused, naming it and the fix.
    let d = DataDir::new();
    let key = d.key_file();
    std::os::unix::fs::chown(&key, Some(1000), None).unwrap();
    let r = d.run(&["bucket", "list"]).fails_with("chown");
    assert!(
        r.stderr.contains(&key.display().to_string()),
        "{}",
        r.stderr
    );
}

#[test]
fn an_empty_credential_is_no_key_and_the_plain_one_is_used() {
    // What the unit's SetCredential= fallbacks leave when only the plain
    // file /etc/ssefs/NAME.key exists: root.key holding "none".
    let d = DataDir::uninit();
    let creds = d.path("creds");
    fs::create_dir(&creds).unwrap();
    let plain = creds.join("root.key.plain");
    d.run(&["--root-key", plain.to_str().unwrap(), "init"]).ok();
    fs::write(creds.join("root.key"), b"none").unwrap();
    let st = Run::from(
        d.cmd()
            .env("CREDENTIALS_DIRECTORY", &creds)
            .arg("status")
            .output()
            .unwrap(),
    )
    .ok();
    assert_eq!(reported_key(&st.stdout), plain);
    // Without any credential, nothing else holds the key.
    d.run(&["status"]).fails_with("no root key");
}
