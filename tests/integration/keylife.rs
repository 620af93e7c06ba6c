//! Key lifecycle under load (issue 6, part 5), through a real mount: a CMK
//! disabled and enabled while files under it are open and being read and
//! written; CMK and master keys rotated while objects are being written.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::mount::Mount;

const SSE: &str = "user.oss.server-side-encryption";
const KEY: &str = "user.oss.server-side-encryption-key-id";
const DATA: &str = "user.oss.server-side-data-encryption";

/// How long an asynchronous effect (the daemon dropping cached pages after
/// the keystore changed) may take before the test calls it missing. A bound
/// for liveness, not a timing assertion: it is expected in milliseconds.
const PATIENCE: Duration = Duration::from_secs(30);

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn content(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What a reader thread has seen so far.
#[derive(Default)]
struct Seen {
    ok: AtomicU64,
    revoked: AtomicU64,
    /// Reads that returned bytes other than the file's, or failed with an
    /// errno other than EKEYREVOKED. Must stay 0.
    bad: AtomicU64,
}

impl Seen {
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }
    fn revoked(&self) -> u64 {
        self.revoked.load(Ordering::SeqCst)
    }
}

/// Reads `f` whole, again and again, until `stop`; every read either
/// returns all of `want` exactly or fails with EKEYREVOKED. A read(2) may
/// return part of the file (the kernel stops at a page it could not fill):
/// the rest is read on from there, so only the whole file counts as ok.
fn reader(f: File, want: Arc<Vec<u8>>, seen: Arc<Seen>, stop: Arc<AtomicBool>) {
    let mut buf = vec![0u8; want.len()];
    while !stop.load(Ordering::SeqCst) {
        match read_whole(&f, &mut buf) {
            Ok(n) if n == want.len() && buf == *want => seen.ok.fetch_add(1, Ordering::SeqCst),
            Err(e) if errno_of(&e) == libc::EKEYREVOKED => {
                seen.revoked.fetch_add(1, Ordering::SeqCst)
            }
            Ok(_) | Err(_) => seen.bad.fetch_add(1, Ordering::SeqCst),
        };
    }
}

/// Fills `buf` from offset 0 of `f`, going on after partial reads; the
/// count is short only at end of file.
fn read_whole(f: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Waits until `cond` holds; panics with `what` after PATIENCE.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < PATIENCE, "never happened: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn direct(path: &std::path::Path) -> File {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap()
}

#[test]
fn disabling_a_cmk_stops_reads_and_writes_of_open_files_and_enabling_restores_them() {
    let m = Mount::new(&[]);
    m.d.run(&["kms", "create-key", "--alias", "alias/live"])
        .ok();
    m.d.run(&["kms", "create-key", "--alias", "alias/other"])
        .ok();
    for (b, rule) in [
        ("live", &[(SSE, "KMS"), (KEY, "alias/live")][..]),
        (
            "live-sm4",
            &[(SSE, "KMS"), (KEY, "alias/live"), (DATA, "SM4")],
        ),
        ("other", &[(SSE, "KMS"), (KEY, "alias/other")]),
        ("aes", &[(SSE, "AES256")]),
        ("plain", &[]),
    ] {
        fs::create_dir(m.p(b)).unwrap();
        for (n, v) in rule {
            m.setfattr(b, n, v).unwrap();
        }
    }
    // Several chunks each, so reads span many chunk-cache entries.
    let files: Vec<(&str, bool)> = vec![
        ("live/a", true),
        ("live/b", true),
        ("live-sm4/c", true),
        ("other/d", false),
        ("aes/e", false),
        ("plain/f", false),
    ];
    let data: Vec<Arc<Vec<u8>>> = (0..files.len())
        .map(|i| Arc::new(content(100_000 + 777 * i, i as u64)))
        .collect();
    for ((f, _), d) in files.iter().zip(&data) {
        fs::write(m.p(f), d.as_slice()).unwrap();
    }

    // Open handles: a buffered reader thread per file (the page cache in
    // play), plus O_DIRECT and writable handles kept by the test.
    let stop = Arc::new(AtomicBool::new(false));
    let mut seen = Vec::new();
    let mut threads = Vec::new();
    for ((f, _), d) in files.iter().zip(&data) {
        let s = Arc::new(Seen::default());
        let (file, want, s2, stop2) = (
            File::open(m.p(f)).unwrap(),
            d.clone(),
            s.clone(),
            stop.clone(),
        );
        threads.push(thread::spawn(move || reader(file, want, s2, stop2)));
        seen.push(s);
    }
    let directs: Vec<File> = files.iter().map(|(f, _)| direct(&m.p(f))).collect();
    let writers: Vec<File> = files
        .iter()
        .map(|(f, _)| OpenOptions::new().write(true).open(m.p(f)).unwrap())
        .collect();
    let read_direct = |i: usize| -> Result<(), i32> {
        let mut buf = vec![0u8; data[i].len()];
        match directs[i].read_at(&mut buf, 0) {
            Ok(n) => {
                assert_eq!(n, data[i].len(), "{}", files[i].0);
                assert!(buf == *data[i], "{}: wrong bytes", files[i].0);
                Ok(())
            }
            Err(e) => Err(errno_of(&e)),
        }
    };

    // Everything reads while the key is enabled (and the daemon's chunk
    // cache now holds every chunk: a disabled key must not be served
    // from it).
    for i in 0..files.len() {
        read_direct(i).unwrap();
    }
    eventually("every reader read its file", || {
        seen.iter().all(|s| s.ok() >= 3)
    });

    m.d.run(&["kms", "disable-key", "alias/live"]).ok();
    let after_disable: Vec<u64> = seen.iter().map(|s| s.ok()).collect();
    // Buffered readers of the disabled key's files are refused (the pages
    // the kernel cached for them are dropped); the others keep reading.
    // Checked first, before anything else touches these files.
    for (i, (f, live)) in files.iter().enumerate() {
        if *live {
            eventually(&format!("buffered reads of {f} refused"), || {
                seen[i].revoked() > 0
            });
        } else {
            eventually(&format!("{f} read on"), || {
                seen[i].ok() >= after_disable[i] + 3
            });
        }
    }
    // Requests that reach the daemon fail at once.
    for (i, (f, live)) in files.iter().enumerate() {
        if *live {
            assert_eq!(read_direct(i), Err(libc::EKEYREVOKED), "{f}");
            let e = writers[i].write_at(b"x", 5).unwrap_err();
            assert_eq!(errno_of(&e), libc::EKEYREVOKED, "write {f}");
            let e = File::open(m.p(f)).unwrap_err();
            assert_eq!(errno_of(&e), libc::EKEYREVOKED, "open {f}");
        } else {
            read_direct(i).unwrap();
            writers[i].write_at(&data[i][5..6], 5).unwrap();
        }
    }
    let log = fs::read_to_string(m.d.data().join(".ssefs/mount.log")).unwrap();
    for (f, live) in &files {
        let named = log
            .lines()
            .any(|l| l.contains("Rejected.Disabled") && l.contains(&format!("\"{f}\"")));
        assert_eq!(named, *live, "log line for {f}:\n{log}");
    }

    m.d.run(&["kms", "enable-key", "alias/live"]).ok();
    let ok_at_enable: Vec<u64> = seen.iter().map(|s| s.ok()).collect();
    for (i, (f, _)) in files.iter().enumerate() {
        read_direct(i).unwrap_or_else(|e| panic!("{f} after enable: errno {e}"));
        writers[i].write_at(&data[i][5..6], 5).unwrap();
        eventually(&format!("buffered reads of {f} work again"), || {
            seen[i].ok() > ok_at_enable[i]
        });
        // A read that was under way at the enable may still have failed;
        // every read issued after one that succeeded must succeed.
        let (ok, revoked) = (seen[i].ok(), seen[i].revoked());
        eventually(&format!("{f} read on"), || seen[i].ok() >= ok + 3);
        assert_eq!(seen[i].revoked(), revoked, "{f} refused after enable");
    }

    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    for (s, (f, live)) in seen.iter().zip(&files) {
        assert_eq!(s.bad.load(Ordering::SeqCst), 0, "{f}: wrong bytes or errno");
        assert_eq!(s.revoked() > 0, *live, "{f}");
    }
    for ((f, _), d) in files.iter().zip(&data) {
        assert!(fs::read(m.p(f)).unwrap() == **d, "{f} changed");
    }
}

/// Key versions of the objects in `bucket`, from their headers (FORMAT.md
/// §2: bytes 48..52).
fn key_versions(m: &Mount, bucket: &str) -> std::collections::BTreeSet<u32> {
    fs::read_dir(m.backend(bucket))
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            let h = fs::read(e.path()).unwrap();
            u32::from_le_bytes(h[48..52].try_into().unwrap())
        })
        .collect()
}

#[test]
fn rotating_cmk_and_master_keys_during_writes_keeps_every_object_readable() {
    let m = Mount::new(&[]);
    m.d.run(&["kms", "create-key", "--alias", "alias/rot"]).ok();
    let buckets: &[(&str, &[(&str, &str)])] = &[
        ("rot-kms", &[(SSE, "KMS"), (KEY, "alias/rot")]),
        (
            "rot-kms-sm4",
            &[(SSE, "KMS"), (KEY, "alias/rot"), (DATA, "SM4")],
        ),
        ("rot-aes", &[(SSE, "AES256")]),
        ("rot-sm4", &[(SSE, "SM4")]),
    ];
    for (b, rule) in buckets {
        fs::create_dir(m.p(b)).unwrap();
        for (n, v) in *rule {
            m.setfattr(b, n, v).unwrap();
        }
    }

    // One writer per bucket: objects written in several pieces (so a
    // rotation can fall inside one), some overwritten and appended to later.
    // Writers run from before the first rotation until after the last.
    const ROTATIONS: usize = 6;
    let rotations_done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(buckets.len() + 1));
    let mut threads = Vec::new();
    for (t, (b, _)) in buckets.iter().enumerate() {
        let (mnt, done, start) = (m.mnt.clone(), rotations_done.clone(), start.clone());
        let b = b.to_string();
        threads.push(thread::spawn(move || {
            let mut written: Vec<(String, Vec<u8>)> = Vec::new();
            let mut i = 0u64;
            start.wait();
            while !done.load(Ordering::SeqCst) || i < 8 {
                let name = format!("{b}/o{i}");
                let want = content(40_000 + (i as usize % 5) * 9_000, (t as u64) << 32 | i);
                let f = File::create(mnt.join(&name)).unwrap();
                for (k, piece) in want.chunks(10_000).enumerate() {
                    f.write_all_at(piece, (k * 10_000) as u64).unwrap();
                }
                drop(f);
                written.push((name, want));
                // Now and then, rewrite an earlier object's middle (its own
                // data key) or overwrite it (a new upload under the
                // current version).
                if i % 3 == 2 {
                    let (name, want) = &mut written[(i / 2) as usize];
                    let patch = content(5_000, i + 1000);
                    let f = OpenOptions::new()
                        .write(true)
                        .open(mnt.join(&*name))
                        .unwrap();
                    f.write_all_at(&patch, 17_000).unwrap();
                    want[17_000..22_000].copy_from_slice(&patch);
                }
                if i % 4 == 3 {
                    let (name, want) = &mut written[(i / 3) as usize];
                    *want = content(30_000, i + 2000);
                    fs::write(mnt.join(&*name), &*want).unwrap();
                }
                i += 1;
            }
            written
        }));
    }
    start.wait();
    for r in 0..ROTATIONS {
        m.d.run(&["kms", "rotate-key", "alias/rot"]).ok();
        m.d.run(&["kms", "rotate-master"]).ok();
        // And a disable/enable of another key in between, which must not
        // disturb writers under these.
        if r == ROTATIONS / 2 {
            m.d.run(&["kms", "create-key", "--alias", "alias/bystander"])
                .ok();
            m.d.run(&["kms", "disable-key", "alias/bystander"]).ok();
            m.d.run(&["kms", "enable-key", "alias/bystander"]).ok();
        }
    }
    rotations_done.store(true, Ordering::SeqCst);
    let written: Vec<(String, Vec<u8>)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();

    // Rotation took effect during the run: new uploads used newer versions.
    for (b, _) in buckets {
        let v = key_versions(&m, b);
        assert!(v.len() >= 2, "{b}: objects under versions {v:?} only");
    }
    // Every object reads back, through this mount, after a remount (cold
    // caches), and with the CLI.
    for (name, want) in &written {
        assert!(fs::read(m.p(name)).unwrap() == *want, "{name}");
    }
    m.unmount();
    m.mount(&[]);
    for (name, want) in &written {
        assert!(
            fs::read(m.p(name)).unwrap() == *want,
            "{name} after remount"
        );
    }
    let (name, want) = &written[written.len() / 2];
    let out = m.d.path("got");
    m.d.run(&["object", "get", name, out.to_str().unwrap()])
        .ok();
    assert!(fs::read(&out).unwrap() == *want);
    let r = m.d.run(&["verify"]).ok();
    let summary = format!("{} objects checked, 0 failed", written.len());
    assert!(r.stdout.contains(&summary), "{}", r.stdout);
}
