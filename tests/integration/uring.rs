//! FUSE over io_uring (`-o io_uring`) through real mounts: requests must
//! actually come over the rings (the daemon's ring threads exist and its
//! per-queue count at unmount is large), the filesystem must behave as on
//! /dev/fuse, unmount must end the daemon, and with the kernel's
//! `enable_uring` off the option must fall back and say so.
//!
//! `enable_uring` is one switch for the whole kernel and is read at each
//! mount's INIT, so these tests take a lock, set it, mount, and put the old
//! value back. Other tests mount without the option and do not care.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::mount::{daemon_pid, Mount};
use crate::util::seeded_bytes;

const ENABLE: &str = "/sys/module/fuse/parameters/enable_uring";
static SWITCH: Mutex<()> = Mutex::new(());

/// Sets `enable_uring` while alive; the old value comes back on drop.
struct EnableUring {
    old: String,
}

impl EnableUring {
    /// None when this machine cannot switch it (no such parameter, not
    /// root): the test is skipped then, saying why.
    fn set(on: bool) -> Option<EnableUring> {
        let old = fs::read_to_string(ENABLE).ok()?.trim().to_owned();
        fs::write(ENABLE, if on { "Y" } else { "N" }).ok()?;
        Some(EnableUring { old })
    }
}

impl Drop for EnableUring {
    fn drop(&mut self) {
        let _ = fs::write(ENABLE, &self.old);
    }
}

fn log_of(m: &Mount) -> String {
    fs::read_to_string(m.d.data().join(".ssefs/mount.log")).unwrap_or_default()
}

/// Names of the daemon's threads.
fn threads(pid: i32) -> Vec<String> {
    let mut v = Vec::new();
    for t in fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap();
        if let Ok(c) = fs::read_to_string(t.path().join("comm")) {
            v.push(c.trim().to_owned());
        }
    }
    v
}

/// Unmounts and waits for the daemon to exit (no hung ring thread).
fn unmount_and_wait(m: &Mount, pid: i32) {
    m.unmount();
    let t = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "daemon {pid} still running 15 s after the unmount: {:?}",
            threads(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The request counts the daemon logged at its last exit.
fn ring_requests(log: &str) -> Option<u64> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("requests served over the rings"))?;
    let at = line.find("requests=")? + "requests=".len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn possible_cpus() -> usize {
    let s = fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    s.trim()
        .split(',')
        .map(|p| match p.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

#[test]
fn io_uring_mount_serves_over_the_rings() {
    let _one = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_on) = EnableUring::set(true) else {
        eprintln!(
            "skipped: cannot set {ENABLE} (not root, or a kernel without FUSE over io_uring)"
        );
        return;
    };
    let m = Mount::new(&["io_uring"]);
    let pid = daemon_pid(&m);
    // The mount shows before INIT is answered and the rings start; once a
    // request has been answered the rings are up (with io_uring agreed the
    // kernel holds requests until every queue has an entry).
    fs::metadata(m.p("")).unwrap();
    // Each possible CPU's queue has threads of its own (named
    // ssefs-uring-CPU-N), at least 2, 4 in all by default (-o threads).
    let names = threads(pid);
    let cpus: std::collections::BTreeSet<&str> = names
        .iter()
        .filter_map(|t| t.strip_prefix("ssefs-uring-"))
        .filter_map(|t| t.split('-').next())
        .collect();
    let rings = names
        .iter()
        .filter(|t| t.starts_with("ssefs-uring-"))
        .count();
    assert!(
        cpus.len() == possible_cpus() && rings >= 2 * possible_cpus() && rings >= 4,
        "ring threads for every possible CPU: {:?}\n{}",
        names,
        log_of(&m)
    );

    // Create, write, read, rename, unlink.
    fs::create_dir(m.p("ring")).unwrap();
    fs::write(m.p("ring/a"), b"hello ring").unwrap();
    assert_eq!(fs::read(m.p("ring/a")).unwrap(), b"hello ring");
    fs::rename(m.p("ring/a"), m.p("ring/b")).unwrap();
    assert!(!m.p("ring/a").exists());
    assert_eq!(fs::read(m.p("ring/b")).unwrap(), b"hello ring");
    fs::remove_file(m.p("ring/b")).unwrap();
    assert!(!m.p("ring/b").exists());

    // The OSS xattrs: a bucket rule, a file stored under it, an override
    // that re-encrypts the file, and the result on the backend.
    m.setfattr("ring", "user.oss.server-side-encryption", "AES256")
        .unwrap();
    assert_eq!(
        m.getfattr("ring", "user.oss.server-side-encryption")
            .as_deref(),
        Ok("AES256")
    );
    fs::write(m.p("ring/x"), b"secret text").unwrap();
    assert_eq!(
        m.getfattr("ring/x", "user.oss.server-side-encryption")
            .as_deref(),
        Ok("AES256")
    );
    m.setfattr("ring/x", "user.oss.server-side-encryption", "SM4")
        .unwrap();
    assert_eq!(
        m.getfattr("ring/x", "user.oss.server-side-encryption")
            .as_deref(),
        Ok("SM4")
    );
    assert_eq!(fs::read(m.p("ring/x")).unwrap(), b"secret text");
    let stored = fs::read(m.backend("ring/x")).unwrap();
    assert!(!stored.windows(11).any(|w| w == b"secret text"));
    assert_eq!(
        m.setfattr("ring/x", "user.oss.server-side-encryption", "aes256"),
        Err(libc::EINVAL)
    );
    m.setfattr("ring/x", "user.meta", "v").unwrap();
    assert_eq!(m.getfattr("ring/x", "user.meta").as_deref(), Ok("v"));

    // A directory of many entries, read back whole (several READDIRPLUS
    // buffers).
    fs::create_dir(m.p("ring/many")).unwrap();
    for i in 0..1500 {
        fs::write(
            m.p(&format!("ring/many/entry-with-a-longish-name-{i:05}")),
            b"",
        )
        .unwrap();
    }
    let mut names: Vec<String> = fs::read_dir(m.p("ring/many"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 1500);
    assert_eq!(names[1499], "entry-with-a-longish-name-01499");

    // Large sequential write and read: 1 MiB requests both ways, checked
    // byte for byte.
    let big = seeded_bytes(0x5eed, 48 << 20);
    {
        let mut f = fs::File::create(m.p("ring/big")).unwrap();
        for c in big.chunks(1 << 20) {
            f.write_all(c).unwrap();
        }
        f.sync_all().unwrap();
    }
    // Cold: drop the kernel's pages so the read goes to the daemon.
    let _ = fs::write("/proc/sys/vm/drop_caches", "1");
    let mut back = Vec::new();
    fs::File::open(m.p("ring/big"))
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == big, "48 MiB read back differ");

    // Concurrent workers, each in its own directory.
    std::thread::scope(|s| {
        for w in 0..4 {
            let m = &m;
            s.spawn(move || {
                let dir = format!("ring/w{w}");
                fs::create_dir(m.p(&dir)).unwrap();
                for i in 0..150 {
                    let name = format!("{dir}/f{i}");
                    let data = seeded_bytes(w * 1000 + i, 1 + (i as usize * 997) % 200_000);
                    fs::write(m.p(&name), &data).unwrap();
                    assert_eq!(fs::read(m.p(&name)).unwrap(), data, "{name}");
                    if i % 3 == 0 {
                        fs::rename(m.p(&name), m.p(&format!("{name}.r"))).unwrap();
                        fs::remove_file(m.p(&format!("{name}.r"))).unwrap();
                    }
                }
                assert_eq!(fs::read_dir(m.p(&dir)).unwrap().count(), 100);
            });
        }
    });

    unmount_and_wait(&m, pid);
    let log = log_of(&m);
    assert!(
        log.contains("first request served over the rings"),
        "no request came over the rings:\n{log}"
    );
    let served = ring_requests(&log).expect("the daemon logs its ring count at exit");
    // Far more than INIT and a few requests before the rings were up.
    assert!(served > 5000, "only {served} requests over the rings");
    assert!(!log.contains("serving over /dev/fuse"), "{log}");

    // Mounted again and unmounted while idle: the daemon still exits, and
    // the data is there.
    m.mount(&["io_uring"]);
    let pid = daemon_pid(&m);
    assert_eq!(fs::read(m.p("ring/x")).unwrap(), b"secret text");
    unmount_and_wait(&m, pid);
    m.mount(&["io_uring"]);
    let pid = daemon_pid(&m);
    unmount_and_wait(&m, pid);
}

#[test]
fn io_uring_falls_back_to_dev_fuse_when_the_kernel_has_it_off() {
    let _one = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let Some(_off) = EnableUring::set(false) else {
        eprintln!(
            "skipped: cannot set {ENABLE} (not root, or a kernel without FUSE over io_uring)"
        );
        return;
    };
    let m = Mount::new(&["io_uring"]);
    let pid = daemon_pid(&m);
    fs::metadata(m.p("")).unwrap();
    assert!(
        !threads(pid).iter().any(|t| t.starts_with("ssefs-uring-")),
        "ring threads without enable_uring"
    );
    fs::create_dir(m.p("back")).unwrap();
    fs::write(m.p("back/f"), b"classic").unwrap();
    assert_eq!(fs::read(m.p("back/f")).unwrap(), b"classic");
    unmount_and_wait(&m, pid);
    let log = log_of(&m);
    let fallbacks = log
        .lines()
        .filter(|l| l.contains("io_uring") && l.contains("serving over /dev/fuse"))
        .count();
    assert_eq!(fallbacks, 1, "one line says why:\n{log}");
    assert!(log.contains("enable_uring is N"), "{log}");
    assert_eq!(ring_requests(&log), None, "{log}");
}
