//! Running as a service: the config file, systemd's notify protocol, the
//! mount(8) helper conventions and the systemd unit (verified, and its
//! hardening exercised: the capabilities it keeps are all needed and enough).

use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{bin, DataDir};

const UNIT: &str = include_str!("../../packaging/systemd/ssefs@.service");

fn is_mounted(p: &Path) -> bool {
    let canon = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    crate::util::mountinfo()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(canon.to_str().unwrap()))
}

fn mount_options(p: &Path) -> String {
    let canon = p.canonicalize().unwrap();
    crate::util::mountinfo()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(canon.to_str().unwrap()))
        .map(|l| l.split(" - ").nth(1).unwrap_or("").to_owned())
        .unwrap_or_default()
}

/// As the mount tests unmount: EBUSY from a copy of a descriptor that a
/// concurrently forked test process holds is tried again.
fn unmount(p: &Path) {
    crate::mount::unmount_at(p);
}

/// Lazily unmounts whatever is still mounted at the end of a test, so a
/// failed assertion leaves no mount behind.
struct Cleanup(Vec<PathBuf>, Option<Child>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(c) = &mut self.1 {
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in &self.0 {
            if is_mounted(p) {
                let _ = Command::new("fusermount3").arg("-uz").arg(p).status();
            }
        }
    }
}

#[track_caller]
fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A command with the test's environment cleared of ssefs variables.
fn ssefs_at(exe: &Path, d: &DataDir) -> Command {
    let mut c = Command::new(exe);
    c.env("SSEFS_KEY_DIR", d.keys());
    c.env_remove("SSEFS_PASSPHRASE")
        .env_remove("SSEFS_ROOT_KEY")
        .env_remove("SSEFS_DATA_DIR")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("RUST_LOG");
    c
}

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.to_str().unwrap())
}

/// Some I/O through a mount: a bucket, a file written and read back.
fn io_works(mnt: &Path, bucket: &str) {
    fs::create_dir(mnt.join(bucket)).unwrap();
    let f = mnt.join(bucket).join("hello.txt");
    fs::write(&f, b"through the mount").unwrap();
    assert_eq!(fs::read(&f).unwrap(), b"through the mount");
}

// ------------------------------------------------------------ config file

#[test]
fn a_config_file_mounts_and_the_command_line_overrides_it() {
    let d = DataDir::uninit();
    let (data, mnt) = (d.path("cfgdata"), d.path("mnt"));
    let cfg = d.write(
        "oss.toml",
        format!(
            "# a mount\ndata_dir = {}\nmountpoint = {}\nallow_other = true\nthreads = 2\ncache_mb = 8\n",
            toml_path(&data),
            toml_path(&mnt)
        )
        .as_bytes(),
    );
    let cfg_s = cfg.to_str().unwrap();
    let _c = Cleanup(vec![mnt.clone()], None);

    // `ssefs --config FILE mount`: data dir and mount point from the file,
    // which wins over $SSEFS_DATA_DIR.
    d.run(&["--config", cfg_s, "mount"]).ok();
    assert!(is_mounted(&mnt));
    assert!(
        mount_options(&mnt).contains("allow_other"),
        "{}",
        mount_options(&mnt)
    );
    io_works(&mnt, "bkt");
    assert!(
        data.join("bkt/hello.txt").exists(),
        "not in the config's data_dir"
    );
    assert!(
        !d.data().exists(),
        "used $SSEFS_DATA_DIR despite the config"
    );
    // Other commands read the same file.
    assert_eq!(
        d.run(&["--config", cfg_s, "bucket", "list"]).ok().stdout,
        "bkt\n"
    );
    unmount(&mnt);

    // `ssefs mount --config FILE -o ro`: -o over the file's keys.
    d.run(&["mount", "--config", cfg_s, "-o", "ro"]).ok();
    assert!(is_mounted(&mnt));
    assert_eq!(
        fs::read(mnt.join("bkt/hello.txt")).unwrap(),
        b"through the mount"
    );
    let e = fs::write(mnt.join("bkt/new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    unmount(&mnt);
}

#[test]
fn a_bad_config_stops_the_start_naming_the_file_the_line_and_the_reason() {
    let d = DataDir::uninit();
    let (data, mnt) = (d.path("cfgdata"), d.path("mnt"));
    let head = format!(
        "data_dir = {}\nmountpoint = {}\n",
        toml_path(&data),
        toml_path(&mnt)
    );
    let cases = [
        ("read-only = true\n", ":3:1", "unknown field `read-only`"),
        ("\nthreads = 0\n", ":4:11", "threads must be 1 to 64"),
        ("allow_other = \"yes\"\n", ":3:15", "invalid type"),
        (
            "log_level = \"verbose\"\n",
            ":3:13",
            "log_level \"verbose\"",
        ),
    ];
    for (tail, at, why) in cases {
        let cfg = d.write("bad.toml", format!("{head}{tail}").as_bytes());
        let cfg_s = cfg.to_str().unwrap();
        for args in [
            &["--config", cfg_s, "mount"][..],
            &["--config", cfg_s, "mount", "--foreground"],
        ] {
            let r = d.run(args).fails_with(&format!("{}{at}", cfg.display()));
            assert!(r.stderr.contains(why), "{tail:?}: {}", r.stderr);
        }
        assert!(!is_mounted(&mnt), "{tail:?} mounted");
        assert!(!data.exists(), "{tail:?} created the data directory");
    }
}

// ------------------------------------------------------- systemd (notify)

/// The unit's ExecStart=, with the binary and the instance's config file
/// swapped for the test's.
fn exec_start(cfg: &Path) -> Vec<String> {
    let line = UNIT
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart=");
    line.split_whitespace()
        .map(|w| match w {
            "/usr/bin/ssefs" => bin().to_str().unwrap().to_owned(),
            "/etc/ssefs/%i.toml" => cfg.to_str().unwrap().to_owned(),
            w => {
                assert!(!w.contains('%'), "unexpected specifier in {w}");
                w.to_owned()
            }
        })
        .collect()
}

fn recv_until(sock: &UnixDatagram, want: &str, seen: &mut Vec<String>) {
    let mut buf = [0u8; 4096];
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        seen.push(msg.clone());
        if msg.lines().any(|l| l == want) {
            return;
        }
    }
    let last = &seen[seen.len().saturating_sub(5)..];
    panic!(
        "no {want} from the daemon; {} messages, the last: {last:?}",
        seen.len()
    );
}

#[test]
fn the_units_command_speaks_systemds_notify_protocol() {
    let d = DataDir::uninit();
    let (data, mnt, creds) = (d.path("data"), d.path("mnt"), d.path("creds"));
    fs::create_dir(&creds).unwrap();
    // The key lives where LoadCredential= puts it, not in the data dir.
    let key = creds.join("root.key");
    d.run(&["--root-key", key.to_str().unwrap(), "init"]).ok();
    let cfg = d.write(
        "svc.toml",
        format!(
            "data_dir = {}\nmountpoint = {}\nlog_level = \"debug\"\n",
            toml_path(&data),
            toml_path(&mnt)
        )
        .as_bytes(),
    );
    let sock_path = d.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let argv = exec_start(&cfg);
    let log = fs::File::create(d.path("stderr.log")).unwrap();
    let child = ssefs_at(Path::new(&argv[0]), &d)
        .args(&argv[1..])
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "300000")
        .env("CREDENTIALS_DIRECTORY", &creds)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut c = Cleanup(vec![mnt.clone()], Some(child));

    let mut seen = Vec::new();
    recv_until(&sock, "READY=1", &mut seen);
    // READY=1 means the mount answers, with no waiting.
    assert!(is_mounted(&mnt), "READY=1 before the mount");
    io_works(&mnt, "bkt");
    assert!(
        !data.join(".ssefs/root.key").exists(),
        "the credential was not used"
    );
    // Keep-alives every 150 ms (half of WATCHDOG_USEC).
    let t = Instant::now();
    for _ in 0..3 {
        recv_until(&sock, "WATCHDOG=1", &mut seen);
    }
    assert!(t.elapsed() < Duration::from_secs(5), "keep-alives too slow");

    // systemctl stop: SIGTERM, STOPPING=1, clean unmount, exit 0.
    // SAFETY: kill(2) takes plain integers; no memory is involved.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    recv_until(&sock, "STOPPING=1", &mut seen);
    let status = c.1.take().unwrap().wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&mnt), "still mounted after SIGTERM");
    let log = fs::read_to_string(d.path("stderr.log")).unwrap();
    assert!(log.contains("DEBUG"), "log_level = debug ignored: {log}");
    assert!(log.contains("unmounted"), "{log}");
}

// ---------------------------------------------------------- mount helper

#[test]
fn the_mount_helper_takes_fstab_options_and_returns_once_mounted() {
    let d = DataDir::uninit();
    let (data, mnt) = (d.path("data"), d.path("mnt"));
    fs::create_dir(&mnt).unwrap();
    fs::create_dir(d.path("sbin")).unwrap();
    let helper = d.path("sbin/mount.fuse.ssefs");
    symlink(bin(), &helper).unwrap();
    let _c = Cleanup(vec![mnt.clone()], None);
    let opts =
        "defaults,allow_other,_netdev,noauto,nofail,x-systemd.automount,rw,dev,suid,exec,relatime";

    // mount(8)'s fake mode does nothing.
    ok(ssefs_at(&helper, &d)
        .args([&data, &mnt])
        .args(["-f", "-o", opts])
        .output()
        .unwrap());
    assert!(!is_mounted(&mnt) && !data.exists());

    // As mount(8) calls it for an fstab line.
    ok(ssefs_at(&helper, &d)
        .args([&data, &mnt])
        .args(["-o", opts, "-n", "-t", "fuse.ssefs"])
        .output()
        .unwrap());
    assert!(is_mounted(&mnt), "the helper returned before the mount");
    assert!(mount_options(&mnt).contains("allow_other"));
    io_works(&mnt, "helper");
    unmount(&mnt);

    // A config file as the source; the rw that mount(8) always adds does
    // not undo its read_only.
    let cfg = d.write(
        "h.toml",
        format!("data_dir = {}\nread_only = true\n", toml_path(&data)).as_bytes(),
    );
    ok(ssefs_at(&helper, &d)
        .args([&cfg, &mnt])
        .args(["-o", "rw"])
        .output()
        .unwrap());
    assert!(is_mounted(&mnt));
    assert!(mnt.join("helper/hello.txt").exists());
    assert!(
        fs::write(mnt.join("helper/x"), b"x").is_err(),
        "read_only ignored"
    );
    unmount(&mnt);

    // A bad option fails without mounting.
    let o = ssefs_at(&helper, &d)
        .args([&data, &mnt])
        .args(["-o", "allow_other,bogus"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("bogus"));
    assert!(!is_mounted(&mnt));
}

#[test]
fn fuse3s_mount_helper_runs_ssefs_by_its_type_name() {
    // Without mount.fuse.ssefs, mount(8) falls back to mount.fuse3, which
    // runs `ssefs SOURCE DIR -o OPTIONS` from $PATH.
    let d = DataDir::uninit();
    let (data, mnt) = (d.path("data"), d.path("mnt"));
    fs::create_dir(&mnt).unwrap();
    fs::create_dir(d.path("bin")).unwrap();
    symlink(bin(), d.path("bin/ssefs")).unwrap();
    let _c = Cleanup(vec![mnt.clone()], None);
    let path = format!(
        "{}:{}",
        d.path("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    ok(ssefs_at(Path::new("mount.fuse3"), &d)
        .args([&data, &mnt])
        .args(["-t", "fuse.ssefs", "-o", "allow_other,_netdev,nofail"])
        .env("PATH", path)
        .output()
        .expect("mount.fuse3 (package fuse3) is needed"));
    assert!(is_mounted(&mnt));
    io_works(&mnt, "fuse3");
    unmount(&mnt);
}

// ------------------------------------------------------------ the unit

#[test]
fn an_instance_of_the_unit_passes_systemd_analyze_verify() {
    let d = DataDir::uninit();
    let unit = UNIT.replace("/usr/bin/ssefs", bin().to_str().unwrap());
    fs::write(d.path("ssefs@.service"), unit).unwrap();
    fs::write(
        d.path("ssefs@ci.service"),
        fs::read(d.path("ssefs@.service")).unwrap(),
    )
    .unwrap();
    // --man=no: the man pages are checked once the .deb is installed
    // (scripts/package-test.sh).
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "./ssefs@ci.service"])
        .current_dir(d.tmp.path())
        .output()
        .expect("systemd-analyze (package systemd) is needed");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // verify exits 0 on unknown keys and bad values: any output is a finding.
    assert!(o.status.success() && out.trim().is_empty(), "{out}");
}

/// Settings that give a service its own mount namespace, which would hide
/// the FUSE mount from everyone else (systemd.exec(5), MountFlags=).
const NAMESPACING: &[&str] = &[
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "PrivateNetwork",
    "PrivateUsers",
    "PrivateIPC",
    "ProtectHostname",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "ProcSubset",
    "MountFlags",
    "MountAPIVFS",
    "BindPaths",
    "BindReadOnlyPaths",
    "TemporaryFileSystem",
    "RootDirectory",
    "RootImage",
    "DynamicUser",
    "User",
];

#[test]
fn the_unit_keeps_the_mount_visible_to_the_system() {
    let mut service = false;
    for l in UNIT.lines().map(str::trim) {
        if l.starts_with('[') {
            service = l == "[Service]";
        }
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        if !service || l.starts_with('#') {
            continue;
        }
        let off = ["", "no", "false", "0", "off"].contains(&v.trim());
        assert!(
            !NAMESPACING.contains(&k.trim()) || off,
            "{k}= would hide the mount in a private namespace (or drop root)"
        );
    }
    for k in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=",
        "Restart=on-failure",
        // Exercised under a real systemd by scripts/systemd-test.sh.
        "SystemCallFilter=@system-service @mount",
        "SystemCallArchitectures=native",
    ] {
        assert!(UNIT.lines().any(|l| l.starts_with(k)), "no {k}");
    }
    // The sealed credential and the plain file, each optional.
    for l in [
        "SetCredential=root.key:none",
        "LoadCredentialEncrypted=root.key:/etc/ssefs/%i.cred",
        "SetCredential=root.key.plain:none",
        "LoadCredential=root.key.plain:/etc/ssefs/%i.key",
    ] {
        assert!(UNIT.lines().any(|u| u == l), "no {l}");
    }
}

/// The unit's CapabilityBoundingSet= as setpriv's --bounding-set list.
fn unit_capabilities() -> Vec<String> {
    UNIT.lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit limits capabilities")
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase())
        .collect()
}

/// Mounts under `caps` (and no_new_privs, as the unit does), then does what
/// users do to a shared mount: files for other users, their modes,
/// set-group-ID bits, device nodes and private files. The first failure.
fn exercise(caps: &[String]) -> Result<(), String> {
    let d = DataDir::uninit();
    let (data, mnt) = (d.path("data"), d.path("mnt"));
    fs::create_dir(&mnt).unwrap();
    fs::set_permissions(d.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let _c = Cleanup(vec![mnt.clone()], None);
    let bounding: Vec<String> = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect();
    let o = ssefs_at(Path::new("setpriv"), &d)
        .args(["--no-new-privs", "--bounding-set", &bounding.join(",")])
        .arg(bin())
        .args(["--data-dir", data.to_str().unwrap(), "mount"])
        .arg(&mnt)
        .args(["-o", "allow_other"])
        .output()
        .expect("setpriv (util-linux) is needed");
    if !o.status.success() {
        return Err(format!("mount: {}", String::from_utf8_lossy(&o.stderr)));
    }
    let step = |what: &str, r: std::io::Result<()>| r.map_err(|e| format!("{what}: {e}"));
    let b = mnt.join("shared");
    step("mkdir", fs::create_dir(&b))?;
    let f = b.join("f");
    step("write", fs::write(&f, b"data"))?;
    step(
        "chown",
        std::os::unix::fs::chown(&f, Some(1000), Some(1000)),
    )?;
    step(
        "chmod g+s",
        fs::set_permissions(&f, fs::Permissions::from_mode(0o2600)),
    )?;
    let mode = fs::metadata(&f)
        .map_err(|e| format!("stat: {e}"))?
        .permissions()
        .mode();
    if mode & 0o7777 != 0o2600 {
        return Err(format!("chmod g+s gave {:o}", mode & 0o7777));
    }
    // A private file of another user, written by root through the mount.
    step(
        "write another user's 0600 file",
        fs::OpenOptions::new()
            .append(true)
            .open(&f)
            .and_then(|mut h| h.write_all(b"more")),
    )?;
    let node = b.join("null");
    let c = std::ffi::CString::new(node.as_os_str().as_bytes()).unwrap();
    // SAFETY: the C strings and buffers passed live for the whole call, and each length is its buffer's own.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 3)) };
    step(
        "mknod",
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        },
    )?;
    unmount(&mnt);
    Ok(())
}

#[test]
fn the_units_capabilities_are_enough_and_each_is_needed() {
    let caps = unit_capabilities();
    if let Err(e) = exercise(&caps) {
        panic!("with the unit's capabilities {caps:?}: {e}");
    }
    for drop in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != drop).cloned().collect();
        assert!(
            exercise(&fewer).is_err(),
            "CAP_{} is in the unit but nothing needed it",
            drop.to_ascii_uppercase()
        );
    }
}
