//! Process hardening of the daemon (issue 12, part 5): no core dumps, and
//! no passphrase left in its environment.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::mount::Mount;
use crate::util::DataDir;

/// The pid of the daemon serving `mnt` (its command line names the mount
/// point and --foreground).
pub fn daemon_pid(mnt: &Path) -> u32 {
    let want = mnt.as_os_str().as_encoded_bytes();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        if args.contains(&want) && args.contains(&&b"--foreground"[..]) {
            return pid;
        }
    }
    panic!("no daemon for {}", mnt.display());
}

#[test]
fn the_daemon_keeps_no_passphrase_in_its_environment() {
    let marker = format!("pass-{}-marker", std::process::id());
    let d = DataDir::uninit();
    let mnt = d.path("mnt");
    let r = d
        .cmd()
        .env("SSEFS_PASSPHRASE", &marker)
        .args(["init", "--passphrase"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = d
        .cmd()
        .env("SSEFS_PASSPHRASE", &marker)
        .args(["mount", mnt.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let m = Mount { d, mnt };
    // The passphrase reached the daemon: it opened the keystore and serves.
    fs::create_dir(m.p("bkt")).unwrap();
    fs::write(m.p("bkt/f"), b"hello").unwrap();
    assert_eq!(fs::read(m.p("bkt/f")).unwrap(), b"hello");
    let pid = daemon_pid(&m.mnt);
    let env = fs::read(format!("/proc/{pid}/environ")).unwrap();
    let has = |needle: &[u8]| env.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"SSEFS_DATA_DIR="), "environ unreadable or empty");
    assert!(
        !has(marker.as_bytes()),
        "the passphrase is in the daemon's environ"
    );
    assert!(!has(b"SSEFS_PASSPHRASE"), "the variable is still named");
}

#[test]
fn the_daemon_is_not_dumpable() {
    // As root /proc/PID files belong to root anyway; a daemon run by a user
    // shows it: the kernel gives a non-dumpable process's /proc files to
    // root instead of to the process's user.
    let uid = 1000;
    let d = DataDir::uninit();
    fs::set_permissions(d.tmp.path(), fs::Permissions::from_mode(0o711)).unwrap();
    let home = d.path("home");
    let mnt = d.path("mnt");
    for p in [&home, &mnt] {
        fs::create_dir(p).unwrap();
        std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
    }
    let run = |args: &[&str]| {
        let o = as_user(d.cmd().get_program(), uid)
            .envs(d.cmd().get_envs().filter_map(|(k, v)| Some((k, v?))))
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("SSEFS_KEY_DIR")
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    // The data directory's parent is root's: make it the user's first.
    fs::create_dir(d.data()).unwrap();
    std::os::unix::fs::chown(d.data(), Some(uid), Some(uid)).unwrap();
    run(&["mount", mnt.to_str().unwrap()]);
    let m = Mount { d, mnt };
    let pid = daemon_pid(&m.mnt);
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.lines().any(|l| l.starts_with("Uid:\t1000\t")),
        "the daemon does not run as the user: {status}"
    );
    assert_eq!(
        fs::metadata(format!("/proc/{pid}/environ")).unwrap().uid(),
        0,
        "the daemon's /proc files are its user's: it is dumpable"
    );
    // The control: an ordinary process of the same user.
    let mut sleeper = as_user("sleep".as_ref(), uid).arg("30").spawn().unwrap();
    // setpriv itself runs as root until it execs sleep.
    let comm = format!("/proc/{}/comm", sleeper.id());
    let t = std::time::Instant::now();
    while fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
        assert!(t.elapsed().as_secs() < 10, "sleep did not start");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let own = fs::metadata(format!("/proc/{}/environ", sleeper.id()))
        .unwrap()
        .uid();
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert_eq!(
        own, uid,
        "the control process's /proc files are not its user's"
    );
}

/// `prog` run as `uid` (and gid) with just the capabilities a FUSE mount
/// needs (/dev/fuse is root's, mount(2) wants CAP_SYS_ADMIN), as ambient
/// capabilities, which leave the process dumpable as any of the user's.
fn as_user(prog: &std::ffi::OsStr, uid: u32) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".into(),
        "--inh-caps=+sys_admin,+dac_override".into(),
        "--ambient-caps=+sys_admin,+dac_override".into(),
    ])
    .arg(prog);
    c
}
