//! The mount on an S3-compatible store (issue 14, slice 3), through real
//! mounts: `ssefs --backend s3://BUCKET/PREFIX --root-key KEY mount MP
//! --foreground` on the three-node Garage cluster that scripts/test.sh
//! starts and names in `$SSEFS_TEST_GARAGE` (see store.rs). Files big and
//! small, what survives a remount, directories, renames, symlinks, what is
//! refused, bucket rules and overrides set with setfattr, tampering on the
//! store, fsx once per cipher, and tar, cp -a, rsync -a and git on the
//! mount. Each test works under a prefix of its own in the store's bucket.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::mount::{unmount_at, xattr_get, xattr_remove, xattr_set};
use crate::store::Store;
use crate::stress::{ensure_fsx, script};
use crate::util::{env_count, errno_of, seeded_bytes, test_seed, Rng, Run};

pub(crate) const SSE: &str = "user.oss.server-side-encryption";
pub(crate) const KEY: &str = "user.oss.server-side-encryption-key-id";
const DATA: &str = "user.oss.server-side-data-encryption";

/// A bucket rule: xattrs set on the bucket directory, in this order.
type Rule<'a> = &'a [(&'a str, &'a str)];

/// A store mounted by a `mount --foreground` child of the test. Unmounted
/// (lazily) and the child killed on drop, if a test failed with it live.
pub(crate) struct StoreMount {
    pub(crate) s: Store,
    /// Canonical, so that it compares with /proc/self/mountinfo.
    mnt: PathBuf,
    child: Option<Child>,
    /// Mounts so far: each one logs to a file of its own.
    mounts: u32,
    /// `-o` options of every mount (store_hosts.rs: a shorter meta_ttl).
    opts: Vec<String>,
}

impl StoreMount {
    /// A new store, initialised, mounted.
    fn new(test: &str) -> StoreMount {
        let s = Store::new(test);
        s.run(&["init"]).ok();
        StoreMount::on(s)
    }

    /// Mounts `s` (initialised) on its tmp/mnt.
    fn on(s: Store) -> StoreMount {
        StoreMount::on_with(s, &[])
    }

    /// Mounts `s` (initialised) on its tmp/mnt with `-o` options `opts`.
    pub(crate) fn on_with(s: Store, opts: &[&str]) -> StoreMount {
        let mnt = s.tmp.path().join("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let mnt = mnt.canonicalize().unwrap();
        let mut m = StoreMount {
            s,
            mnt,
            child: None,
            mounts: 0,
            opts: opts.iter().map(|o| (*o).to_owned()).collect(),
        };
        m.mount();
        m
    }

    /// The root key file `init` wrote ($SSEFS_KEY_DIR/ID.key).
    pub(crate) fn key_file(&self) -> PathBuf {
        let mut found = fs::read_dir(self.s.tmp.path().join("keys"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "key"));
        let k = found
            .next()
            .expect("no root key file: init the store first");
        assert!(found.next().is_none(), "more than one root key file");
        k
    }

    fn log_path(&self) -> PathBuf {
        self.s.tmp.path().join(format!("mount-{}.log", self.mounts))
    }

    /// What the current (or last) mount wrote to stderr.
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub(crate) fn mount(&mut self) {
        assert!(self.child.is_none(), "mounted already");
        self.mounts += 1;
        // A file, not a pipe: nobody reads a pipe while the test runs, and
        // a daemon that logs much would block on a full one.
        let log = File::create(self.log_path()).unwrap();
        let mut c = self.s.cmd();
        c.arg("--backend")
            .arg(self.s.url())
            .arg("--root-key")
            .arg(self.key_file())
            .arg("mount")
            .arg(&self.mnt)
            .arg("--foreground");
        for o in &self.opts {
            c.arg("-o").arg(o);
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t = Instant::now();
        while !mounted(&self.mnt) {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("the mount exited ({st}) before mounting:\n{}", self.log());
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "not mounted after 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Unmounts, and the daemon must then exit 0.
    fn unmount(&mut self) {
        assert!(self.child.is_some(), "not mounted");
        unmount_at(&self.mnt);
        let t = Instant::now();
        let st = loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                break st;
            }
            // Dirty files still going up may take a while; not a minute.
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "the daemon still runs 60 s after the unmount:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.child = None;
        assert!(st.success(), "the mount exited with {st}:\n{}", self.log());
    }

    /// A fresh daemon on the same store: what it shows came from the store.
    fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    /// kill -9 of the daemon, as a crash of its host would stop it, then a
    /// lazy unmount of the dead mount point; `mount` may follow.
    pub(crate) fn kill9(&mut self) {
        let mut c = self.child.take().expect("not mounted");
        // Child::kill sends SIGKILL.
        c.kill().unwrap();
        c.wait().unwrap();
        run_ok(Command::new("fusermount3").arg("-uz").arg(&self.mnt));
        assert!(!mounted(&self.mnt), "still mounted after fusermount3 -uz");
    }

    pub(crate) fn p(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub(crate) fn run(&self, args: &[&str]) -> Run {
        self.s.run(args)
    }

    /// `object head KEY`'s output.
    pub(crate) fn head(&self, key: &str) -> String {
        self.run(&["object", "head", key]).ok().stdout
    }

    /// The object at `key` as `object get` reads it.
    pub(crate) fn cli_get(&self, key: &str) -> Vec<u8> {
        let out = self.s.tmp.path().join("cli-get.out");
        self.run(&["object", "get", key, out.to_str().unwrap()])
            .ok();
        fs::read(&out).unwrap()
    }

    /// Waits until `object get KEY` reads `want`. FUSE sends RELEASE after
    /// close(2) has returned, so an upload done there may land just after
    /// the writer's close; 10 s at most.
    pub(crate) fn committed(&self, key: &str, want: &[u8]) {
        let out = self.s.tmp.path().join("committed.out");
        let t = Instant::now();
        loop {
            let r = self.run(&["object", "get", key, out.to_str().unwrap()]);
            if r.status == 0 && fs::read(&out).unwrap() == want {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{key}: the CLI does not read what was written through the mount, 10 s \
                 after its close: {}{}",
                r.stderr,
                if r.status == 0 {
                    differs(&fs::read(&out).unwrap(), want)
                } else {
                    String::new()
                }
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits (10 s at most, as `committed`) until `object head KEY` shows
    /// every one of `want`; returns the head.
    fn head_shows(&self, key: &str, want: &[&str]) -> String {
        let t = Instant::now();
        loop {
            let r = self.run(&["object", "head", key]);
            if r.status == 0 && want.iter().all(|w| r.stdout.contains(w)) {
                return r.stdout;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{key}: head lacks one of {want:?} after 10 s: {}{}",
                r.stdout,
                r.stderr
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for StoreMount {
    fn drop(&mut self) {
        if mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mnt)
                .status();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether /proc/self/mountinfo lists a mount at `canon` (canonical, UTF-8
/// and free of the characters mountinfo escapes: our temp paths are).
fn mounted(canon: &Path) -> bool {
    let want = canon.to_str().unwrap();
    crate::util::mountinfo()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want))
}

/// Where two byte strings first differ, for a message (never the bytes:
/// some are 40 MiB).
pub(crate) fn differs(got: &[u8], want: &[u8]) -> String {
    let at = got.iter().zip(want).position(|(a, b)| a != b);
    format!(
        "{} bytes, {} expected, first difference at {}",
        got.len(),
        want.len(),
        at.map_or("the end of the shorter".to_owned(), |i| i.to_string())
    )
}

#[track_caller]
pub(crate) fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert!(got == want, "{what}: {}", differs(got, want));
}

pub(crate) fn errno_at<T>(r: std::io::Result<T>, what: &str) -> i32 {
    match r {
        Ok(_) => panic!("{what}: succeeded, an error expected"),
        Err(e) => errno_of(&e),
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn mknod(p: &Path, mode: libc::mode_t, dev: libc::dev_t) -> Result<(), i32> {
    let c = cpath(p);
    // SAFETY: a NUL-terminated path that lives for the whole call, and plain integers.
    let r = unsafe { libc::mknod(c.as_ptr(), mode, dev) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    }
}

fn mkfifo(p: &Path) -> Result<(), i32> {
    let c = cpath(p);
    // SAFETY: a NUL-terminated path that lives for the whole call, and a plain integer.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    }
}

/// Runs `c`, which must succeed; its stdout.
#[track_caller]
fn run_ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?}: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Whether `stored` holds any 32-byte run of `plain`.
fn holds_plaintext(stored: &[u8], plain: &[u8]) -> bool {
    let runs: HashSet<&[u8]> = plain.windows(32).collect();
    stored.windows(32).any(|w| runs.contains(w))
}

// ------------------------------------------------------------------ files

#[test]
fn files_on_a_store_mount_read_back_after_overwrite_append_pwrite_and_truncate() {
    let seed = test_seed("store-mount-files");
    let m = StoreMount::new("mnt-files");
    fs::create_dir(m.p("bkt")).unwrap();

    // Create and read back.
    let a = seeded_bytes(seed, 100_000);
    fs::write(m.p("bkt/a"), &a).unwrap();
    assert_same(&fs::read(m.p("bkt/a")).unwrap(), &a, "bkt/a as written");
    assert_eq!(fs::metadata(m.p("bkt/a")).unwrap().len(), a.len() as u64);

    // Overwritten by a shorter file: nothing of the old tail is left.
    let mut model = seeded_bytes(seed + 1, 30_001);
    fs::write(m.p("bkt/a"), &model).unwrap();
    assert_same(
        &fs::read(m.p("bkt/a")).unwrap(),
        &model,
        "bkt/a overwritten",
    );
    assert_eq!(fs::metadata(m.p("bkt/a")).unwrap().len(), 30_001);

    // Appends: O_APPEND from two opens, then the shell's >>.
    for i in 0..2u64 {
        let add = seeded_bytes(seed + 2 + i, 5_000 + 777 * i as usize);
        OpenOptions::new()
            .append(true)
            .open(m.p("bkt/a"))
            .unwrap()
            .write_all(&add)
            .unwrap();
        model.extend_from_slice(&add);
    }
    let add = seeded_bytes(seed + 4, 12_345);
    let local = m.s.file("append-me", &add);
    run_ok(
        Command::new("sh")
            .arg("-c")
            .arg("cat \"$1\" >> \"$2\"")
            .arg("sh")
            .arg(&local)
            .arg(m.p("bkt/a")),
    );
    model.extend_from_slice(&add);
    assert_same(&fs::read(m.p("bkt/a")).unwrap(), &model, "bkt/a appended");
    assert_eq!(
        fs::metadata(m.p("bkt/a")).unwrap().len(),
        model.len() as u64
    );
    m.committed("bkt/a", &model);

    // Random writes in the middle of a 5 MiB file, and one past its end
    // (the gap reads as zeros).
    let mut big = seeded_bytes(seed + 10, (5 << 20) + 123);
    fs::write(m.p("bkt/big"), &big).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("bkt/big"))
        .unwrap();
    let mut rng = Rng::new(seed);
    for i in 0..24u64 {
        let len = rng.range(1, 100_000) as usize;
        let off = rng.below((big.len() - len) as u64) as usize;
        let patch = seeded_bytes(seed + 100 + i, len);
        f.write_all_at(&patch, off as u64).unwrap();
        big[off..off + len].copy_from_slice(&patch);
    }
    let past = big.len() + 4096 + 17;
    let patch = seeded_bytes(seed + 99, 1000);
    f.write_all_at(&patch, past as u64).unwrap();
    big.resize(past, 0);
    big.extend_from_slice(&patch);
    // Read back through the same descriptor before it is closed.
    let mut got = vec![0u8; big.len()];
    f.read_exact_at(&mut got, 0).unwrap();
    assert_same(&got, &big, "bkt/big before close");
    assert_eq!(f.metadata().unwrap().len(), big.len() as u64);

    // Truncated down, then up: the new part reads as zeros.
    let down = (2 << 20) + 17;
    f.set_len(down as u64).unwrap();
    big.truncate(down);
    assert_eq!(fs::metadata(m.p("bkt/big")).unwrap().len(), down as u64);
    let up = (3 << 20) + 5;
    f.set_len(up as u64).unwrap();
    big.resize(up, 0);
    assert_eq!(fs::metadata(m.p("bkt/big")).unwrap().len(), up as u64);
    drop(f);
    assert_same(
        &fs::read(m.p("bkt/big")).unwrap(),
        &big,
        "bkt/big after truncate",
    );
    m.committed("bkt/big", &big);

    // truncate(2) by path, and O_TRUNC, on a closed file.
    let path = cpath(&m.p("bkt/a"));
    // SAFETY: a NUL-terminated path that lives for the whole call, and an integer.
    assert_eq!(unsafe { libc::truncate(path.as_ptr(), 1000) }, 0);
    model.truncate(1000);
    assert_same(&fs::read(m.p("bkt/a")).unwrap(), &model, "bkt/a truncated");
    File::create(m.p("bkt/a")).unwrap();
    assert_eq!(fs::metadata(m.p("bkt/a")).unwrap().len(), 0);
    assert!(fs::read(m.p("bkt/a")).unwrap().is_empty());
    m.committed("bkt/a", b"");
}

#[test]
fn a_file_written_through_a_store_mount_reads_back_through_the_cli_and_the_reverse() {
    let seed = test_seed("store-mount-cli");
    let m = StoreMount::new("mnt-cli");
    fs::create_dir(m.p("bkt")).unwrap();

    let x = seeded_bytes(seed, 300_007);
    fs::write(m.p("bkt/x"), &x).unwrap();
    m.committed("bkt/x", &x);
    assert_same(
        &fs::read(m.p("bkt/x")).unwrap(),
        &x,
        "bkt/x through the mount",
    );
    assert!(m.head("bkt/x").contains("content-length: 300007\n"));

    // fsync returns once the store has the bytes: no waiting after it.
    let y = seeded_bytes(seed + 1, 70_000);
    let mut f = File::create(m.p("bkt/y")).unwrap();
    f.write_all(&y).unwrap();
    f.sync_all().unwrap();
    assert_same(&m.cli_get("bkt/y"), &y, "bkt/y right after fsync");
    drop(f);

    // 40 MiB and a bit: three 16 MiB parts, the last one short.
    let len = (40 << 20) + 12_345;
    let mut big = seeded_bytes(seed + 2, len);
    fs::write(m.p("bkt/big"), &big).unwrap();
    assert_eq!(fs::metadata(m.p("bkt/big")).unwrap().len(), len as u64);
    assert_same(&fs::read(m.p("bkt/big")).unwrap(), &big, "40 MiB file");
    m.committed("bkt/big", &big);
    m.head_shows("bkt/big", &[&format!("content-length: {len}\n")]);
    // Writes across the part boundaries of the stored object.
    let f = OpenOptions::new().write(true).open(m.p("bkt/big")).unwrap();
    for (i, off) in [(16usize << 20) - 100, (32 << 20) - 7]
        .into_iter()
        .enumerate()
    {
        let patch = seeded_bytes(seed + 10 + i as u64, 5_000);
        f.write_all_at(&patch, off as u64).unwrap();
        big[off..off + patch.len()].copy_from_slice(&patch);
    }
    drop(f);
    assert_same(
        &fs::read(m.p("bkt/big")).unwrap(),
        &big,
        "40 MiB file patched",
    );
    m.committed("bkt/big", &big);

    // The reverse: objects put by the CLI read back through the mount,
    // one under a key prefix that has no directory record (it shows as
    // a directory all the same).
    let z = seeded_bytes(seed + 3, 2_000_003);
    let zf = m.s.file("z", &z);
    m.run(&["object", "put", "bkt/from-cli", &zf, "--sse", "SM4"])
        .ok();
    let w = seeded_bytes(seed + 4, 4_321);
    let wf = m.s.file("w", &w);
    m.run(&["object", "put", "bkt/cli-dir/deeper/w", &wf]).ok();
    // Names made behind the mount's back show once the listings it
    // holds are older than the metadata TTL (1 s by default).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(
        fs::metadata(m.p("bkt/from-cli")).unwrap().len(),
        z.len() as u64
    );
    assert_same(&fs::read(m.p("bkt/from-cli")).unwrap(), &z, "bkt/from-cli");
    assert!(fs::metadata(m.p("bkt/cli-dir/deeper")).unwrap().is_dir());
    assert_eq!(names(&m.p("bkt/cli-dir/deeper")), set(&["w"]));
    assert_same(
        &fs::read(m.p("bkt/cli-dir/deeper/w")).unwrap(),
        &w,
        "nested",
    );

    // A new version put behind the mount's back shows at the next open,
    // once the attribute timeout (1 s by default) has run out.
    let x2 = seeded_bytes(seed + 5, 123_457);
    let x2f = m.s.file("x2", &x2);
    m.run(&["object", "put", "bkt/x", &x2f]).ok();
    std::thread::sleep(Duration::from_secs(2));
    assert_same(
        &fs::read(m.p("bkt/x")).unwrap(),
        &x2,
        "bkt/x put by the CLI",
    );
    // And a file the CLI put, rewritten through the mount.
    fs::write(m.p("bkt/from-cli"), &x).unwrap();
    m.committed("bkt/from-cli", &x);
}

// ---------------------------------------------------------------- remount

#[test]
fn contents_modes_owners_mtimes_xattrs_symlinks_and_empty_dirs_survive_a_remount() {
    let seed = test_seed("store-mount-durable");
    let mut m = StoreMount::new("mnt-durable");
    fs::create_dir(m.p("bkt")).unwrap();
    fs::create_dir_all(m.p("bkt/empty/inner")).unwrap();
    fs::create_dir(m.p("bkt/d")).unwrap();
    let f = seeded_bytes(seed, 77_777);
    let g = seeded_bytes(seed + 1, 5);
    fs::write(m.p("bkt/d/f"), &f).unwrap();
    fs::write(m.p("bkt/d/g"), &g).unwrap();
    File::create(m.p("bkt/d/zero")).unwrap();

    fs::set_permissions(m.p("bkt/d/f"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(m.p("bkt/d/g"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(m.p("bkt/empty"), fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(m.p("bkt/d/f"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::chown(m.p("bkt/empty/inner"), Some(4321), Some(8765)).unwrap();
    // mtime by utimensat (with nanoseconds) and by touch -d.
    let secs = 1_000_000_000 + (seed % 500_000_000) as i64;
    let nanos = (seed % 1_000_000_000) as u32;
    let t = UNIX_EPOCH + Duration::new(secs as u64, nanos);
    File::options()
        .write(true)
        .open(m.p("bkt/d/f"))
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
    run_ok(
        Command::new("touch")
            .arg("-m")
            .arg("-d")
            .arg(format!("@{}", secs + 12_345))
            .arg(m.p("bkt/d/g")),
    );
    let xv = format!("value-{seed:x}");
    run_ok(
        Command::new("setfattr")
            .args(["-n", "user.x", "-v", &xv])
            .arg(m.p("bkt/d/f")),
    );
    xattr_set(&m.p("bkt/d"), "user.on-a-dir", b"dir value").unwrap();
    std::os::unix::fs::symlink("d/f", m.p("bkt/link")).unwrap();
    std::os::unix::fs::symlink("../nowhere/x", m.p("bkt/d/dangling")).unwrap();

    let check = |m: &StoreMount, when: &str| {
        assert_same(&fs::read(m.p("bkt/d/f")).unwrap(), &f, when);
        assert_same(&fs::read(m.p("bkt/d/g")).unwrap(), &g, when);
        assert_eq!(fs::metadata(m.p("bkt/d/zero")).unwrap().len(), 0, "{when}");
        let md = fs::metadata(m.p("bkt/d/f")).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o640, "{when}");
        assert_eq!((md.uid(), md.gid()), (1234, 5678), "{when}");
        assert_eq!(
            (md.mtime(), md.mtime_nsec()),
            (secs, i64::from(nanos)),
            "{when}"
        );
        let mg = fs::metadata(m.p("bkt/d/g")).unwrap();
        assert_eq!(mg.mode() & 0o7777, 0o755, "{when}");
        assert_eq!(mg.mtime(), secs + 12_345, "{when}");
        let out = run_ok(
            Command::new("getfattr")
                .args(["--only-values", "-n", "user.x"])
                .arg(m.p("bkt/d/f")),
        );
        assert_eq!(out, xv, "{when}");
        assert_eq!(
            xattr_get(&m.p("bkt/d"), "user.on-a-dir").unwrap(),
            "dir value",
            "{when}"
        );
        assert!(fs::symlink_metadata(m.p("bkt/link"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read_link(m.p("bkt/link")).unwrap(),
            Path::new("d/f"),
            "{when}"
        );
        assert_same(&fs::read(m.p("bkt/link")).unwrap(), &f, when);
        assert_eq!(
            fs::read_link(m.p("bkt/d/dangling")).unwrap(),
            Path::new("../nowhere/x"),
            "{when}"
        );
        assert_eq!(
            errno_at(fs::read(m.p("bkt/d/dangling")), when),
            libc::ENOENT
        );
        let e = fs::metadata(m.p("bkt/empty")).unwrap();
        assert!(e.is_dir(), "{when}");
        assert_eq!(e.mode() & 0o7777, 0o750, "{when}");
        assert_eq!(names(&m.p("bkt/empty")), set(&["inner"]), "{when}");
        assert!(names(&m.p("bkt/empty/inner")).is_empty(), "{when}");
        let i = fs::metadata(m.p("bkt/empty/inner")).unwrap();
        assert_eq!((i.uid(), i.gid()), (4321, 8765), "{when}");
        assert_eq!(
            names(&m.p("bkt/d")),
            set(&["f", "g", "zero", "dangling"]),
            "{when}"
        );
        assert_eq!(names(&m.p("bkt")), set(&["d", "empty", "link"]), "{when}");
        assert_eq!(names(&m.mnt), set(&["bkt"]), "{when}");
    };
    check(&m, "before the remount");
    m.remount();
    check(&m, "after the remount");
}

// ------------------------------------------------------------ directories

#[test]
fn directories_on_a_store_mount_list_exactly_what_was_made_and_refuse_as_posix_does() {
    let seed = test_seed("store-mount-dirs");
    // A bucket made by the CLI before the mount, one by mkdir on it.
    let s = Store::new("mnt-dirs");
    s.run(&["init"]).ok();
    s.run(&["bucket", "create", "made-by-cli"]).ok();
    let mut m = StoreMount::on(s);
    assert_eq!(names(&m.mnt), set(&["made-by-cli"]));
    fs::create_dir(m.p("bkt")).unwrap();
    assert_eq!(names(&m.mnt), set(&["bkt", "made-by-cli"]));
    assert_eq!(m.run(&["bucket", "list"]).ok().stdout, "bkt\nmade-by-cli\n");
    // The root holds buckets only.
    assert_eq!(
        errno_at(File::create(m.p("file-at-root")), "root file"),
        libc::EPERM
    );
    fs::write(m.p("made-by-cli/x"), b"x").unwrap();
    assert_eq!(fs::read(m.p("made-by-cli/x")).unwrap(), b"x");

    fs::create_dir_all(m.p("bkt/a/b/c")).unwrap();
    fs::create_dir(m.p("bkt/a/other")).unwrap();
    // Seeded file names and places: the listings are compared with them.
    let dirs = ["bkt/a", "bkt/a/b", "bkt/a/b/c", "bkt"];
    let mut want: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    want.insert("bkt", set(&["a"]));
    want.insert("bkt/a", set(&["b", "other"]));
    want.insert("bkt/a/b", set(&["c"]));
    want.insert("bkt/a/b/c", BTreeSet::new());
    want.insert("bkt/a/other", BTreeSet::new());
    let mut rng = Rng::new(seed);
    for i in 0..25u64 {
        // The first in the bucket itself: the checks below need a file there.
        let d = if i == 0 {
            "bkt"
        } else {
            dirs[rng.below(dirs.len() as u64) as usize]
        };
        let name = format!("f{i}-{:x}", rng.next_u64() % 0xffff);
        fs::write(
            m.p(&format!("{d}/{name}")),
            seeded_bytes(seed + i, 100 + i as usize),
        )
        .unwrap();
        want.get_mut(d).unwrap().insert(name);
    }
    let check = |m: &StoreMount, want: &BTreeMap<&str, BTreeSet<String>>, when: &str| {
        for (d, w) in want {
            assert_eq!(&names(&m.p(d)), w, "{d} {when}");
        }
    };
    check(&m, &want, "as made");

    // rmdir of a non-empty directory, also one holding only an empty one.
    assert_eq!(
        errno_at(fs::remove_dir(m.p("bkt/a")), "rmdir a"),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno_at(fs::remove_dir(m.p("bkt/a/b")), "rmdir b"),
        libc::ENOTEMPTY
    );
    fs::create_dir(m.p("bkt/only-a-dir")).unwrap();
    fs::create_dir(m.p("bkt/only-a-dir/empty")).unwrap();
    assert_eq!(
        errno_at(fs::remove_dir(m.p("bkt/only-a-dir")), "rmdir only-a-dir"),
        libc::ENOTEMPTY
    );
    // mkdir over a directory or a file.
    assert_eq!(
        errno_at(fs::create_dir(m.p("bkt/a/b")), "mkdir b"),
        libc::EEXIST
    );
    let file = want["bkt"]
        .iter()
        .find(|n| n.starts_with('f'))
        .unwrap()
        .clone();
    assert_eq!(
        errno_at(
            fs::create_dir(m.p(&format!("bkt/{file}"))),
            "mkdir over a file"
        ),
        libc::EEXIST
    );
    assert_eq!(
        errno_at(fs::create_dir(m.p("bkt")), "mkdir bucket"),
        libc::EEXIST
    );
    // Missing names; a directory unlinked, a file rmdir'ed.
    assert_eq!(
        errno_at(fs::remove_file(m.p("bkt/missing")), "unlink"),
        libc::ENOENT
    );
    assert_eq!(
        errno_at(fs::remove_dir(m.p("bkt/missing")), "rmdir"),
        libc::ENOENT
    );
    assert_eq!(
        errno_at(fs::remove_file(m.p("bkt/a/b")), "unlink dir"),
        libc::EISDIR
    );
    assert_eq!(
        errno_at(fs::remove_dir(m.p(&format!("bkt/{file}"))), "rmdir file"),
        libc::ENOTDIR
    );
    // rmdir of empty directories works.
    fs::remove_dir(m.p("bkt/only-a-dir/empty")).unwrap();
    fs::remove_dir(m.p("bkt/only-a-dir")).unwrap();
    fs::remove_dir(m.p("bkt/a/other")).unwrap();
    want.get_mut("bkt/a").unwrap().remove("other");
    want.remove("bkt/a/other");
    assert_eq!(
        errno_at(fs::metadata(m.p("bkt/a/other")), "stat"),
        libc::ENOENT
    );
    check(&m, &want, "after the rmdirs");

    // The same tree from a fresh daemon.
    m.remount();
    check(&m, &want, "after the remount");
    assert_eq!(
        errno_at(fs::metadata(m.p("bkt/only-a-dir")), "stat"),
        libc::ENOENT
    );
    assert_eq!(
        errno_at(fs::metadata(m.p("bkt/a/other")), "stat"),
        libc::ENOENT
    );

    // An empty bucket goes with rmdir.
    fs::remove_file(m.p("made-by-cli/x")).unwrap();
    fs::remove_dir(m.p("made-by-cli")).unwrap();
    assert_eq!(names(&m.mnt), set(&["bkt"]));
    assert_eq!(m.run(&["bucket", "list"]).ok().stdout, "bkt\n");
    // And a bucket made through the mount goes with the CLI's delete once
    // it is empty (its top's directory record is the bucket's own).
    fs::create_dir(m.p("made-by-mkdir")).unwrap();
    m.run(&["bucket", "delete", "made-by-mkdir"]).ok();
    assert_eq!(m.run(&["bucket", "list"]).ok().stdout, "bkt\n");
}

// ----------------------------------------------------------------- rename

#[test]
fn renames_on_a_store_mount_move_files_over_files_and_whole_directories() {
    let seed = test_seed("store-mount-rename");
    let mut m = StoreMount::new("mnt-rename");
    fs::create_dir(m.p("bkt")).unwrap();
    fs::create_dir(m.p("bkt/d1")).unwrap();
    fs::create_dir(m.p("bkt/d2")).unwrap();

    // Within a directory; mode and xattrs go along.
    let a = seeded_bytes(seed, 40_000);
    fs::write(m.p("bkt/d1/a"), &a).unwrap();
    fs::set_permissions(m.p("bkt/d1/a"), fs::Permissions::from_mode(0o600)).unwrap();
    xattr_set(&m.p("bkt/d1/a"), "user.tag", b"kept").unwrap();
    fs::rename(m.p("bkt/d1/a"), m.p("bkt/d1/a2")).unwrap();
    assert_eq!(
        errno_at(fs::metadata(m.p("bkt/d1/a")), "old name"),
        libc::ENOENT
    );
    assert_same(&fs::read(m.p("bkt/d1/a2")).unwrap(), &a, "renamed in d1");
    assert_eq!(
        fs::metadata(m.p("bkt/d1/a2")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(xattr_get(&m.p("bkt/d1/a2"), "user.tag").unwrap(), "kept");

    // Across directories.
    fs::rename(m.p("bkt/d1/a2"), m.p("bkt/d2/a3")).unwrap();
    assert_eq!(names(&m.p("bkt/d1")), BTreeSet::new());
    assert_eq!(names(&m.p("bkt/d2")), set(&["a3"]));
    assert_same(&fs::read(m.p("bkt/d2/a3")).unwrap(), &a, "moved to d2");

    // Over an existing file: its content is gone, the new one is there.
    let old = seeded_bytes(seed + 1, 90_000);
    let new = seeded_bytes(seed + 2, 33_333);
    fs::write(m.p("bkt/d2/victim"), &old).unwrap();
    fs::write(m.p("bkt/d1/new"), &new).unwrap();
    fs::rename(m.p("bkt/d1/new"), m.p("bkt/d2/victim")).unwrap();
    assert_eq!(
        errno_at(fs::metadata(m.p("bkt/d1/new")), "old name"),
        libc::ENOENT
    );
    assert_same(
        &fs::read(m.p("bkt/d2/victim")).unwrap(),
        &new,
        "renamed over",
    );
    assert_eq!(
        fs::metadata(m.p("bkt/d2/victim")).unwrap().len(),
        new.len() as u64
    );
    m.committed("bkt/d2/victim", &new);
    m.run(&[
        "object",
        "get",
        "bkt/d1/new",
        m.s.tmp.path().join("o").to_str().unwrap(),
    ])
    .fails_with("NoSuchKey");

    // A directory with files and a subdirectory.
    let mut tree = BTreeMap::new();
    for (i, rel) in ["f0", "f1", "f2", "sub/g0", "sub/g1", "sub/deeper/h"]
        .into_iter()
        .enumerate()
    {
        let body = seeded_bytes(seed + 10 + i as u64, 1000 + 4099 * i);
        fs::create_dir_all(m.p(&format!("bkt/tree/{rel}")).parent().unwrap()).unwrap();
        fs::write(m.p(&format!("bkt/tree/{rel}")), &body).unwrap();
        tree.insert(rel, body);
    }
    fs::create_dir(m.p("bkt/tree/empty-sub")).unwrap();
    fs::rename(m.p("bkt/tree"), m.p("bkt/d1/moved")).unwrap();
    let check = |m: &StoreMount, when: &str| {
        assert_eq!(
            errno_at(fs::metadata(m.p("bkt/tree")), "old dir"),
            libc::ENOENT
        );
        assert_eq!(names(&m.p("bkt")), set(&["d1", "d2"]), "{when}");
        assert_eq!(
            names(&m.p("bkt/d1/moved")),
            set(&["f0", "f1", "f2", "sub", "empty-sub"]),
            "{when}"
        );
        assert_eq!(
            names(&m.p("bkt/d1/moved/sub")),
            set(&["g0", "g1", "deeper"])
        );
        assert!(names(&m.p("bkt/d1/moved/empty-sub")).is_empty(), "{when}");
        for (rel, body) in &tree {
            let p = m.p(&format!("bkt/d1/moved/{rel}"));
            assert_same(&fs::read(&p).unwrap(), body, &format!("{rel} {when}"));
        }
        assert_same(&fs::read(m.p("bkt/d2/victim")).unwrap(), &new, when);
        assert_same(&fs::read(m.p("bkt/d2/a3")).unwrap(), &a, when);
    };
    check(&m, "after the renames");
    // On the store too: the new keys hold the bytes, the old ones are gone.
    m.committed("bkt/d1/moved/sub/deeper/h", &tree["sub/deeper/h"]);
    m.run(&[
        "object",
        "get",
        "bkt/tree/f0",
        m.s.tmp.path().join("o").to_str().unwrap(),
    ])
    .fails_with("NoSuchKey");
    m.remount();
    check(&m, "after the remount");
}

// ---------------------------------------------------------------- symlinks

#[test]
fn symlinks_on_a_store_mount_read_through_and_lstat_as_links() {
    let seed = test_seed("store-mount-symlink");
    let m = StoreMount::new("mnt-symlink");
    fs::create_dir_all(m.p("bkt/d")).unwrap();
    let data = seeded_bytes(seed, 10_000);
    fs::write(m.p("bkt/d/target"), &data).unwrap();
    std::os::unix::fs::symlink("d/target", m.p("bkt/ln")).unwrap();
    std::os::unix::fs::symlink("d", m.p("bkt/dir-ln")).unwrap();
    let outside = m.s.file("outside", &data[..100]);
    std::os::unix::fs::symlink(&outside, m.p("bkt/abs-ln")).unwrap();

    assert_eq!(fs::read_link(m.p("bkt/ln")).unwrap(), Path::new("d/target"));
    let l = fs::symlink_metadata(m.p("bkt/ln")).unwrap();
    assert!(l.file_type().is_symlink());
    assert_eq!(
        l.len(),
        "d/target".len() as u64,
        "a symlink's size is its target's length"
    );
    let followed = fs::metadata(m.p("bkt/ln")).unwrap();
    assert!(followed.is_file());
    assert_eq!(followed.len(), data.len() as u64);
    assert_same(&fs::read(m.p("bkt/ln")).unwrap(), &data, "through the link");
    let ls = run_ok(Command::new("ls").arg("-l").arg(m.p("bkt/ln")));
    assert!(ls.starts_with('l'), "{ls}");
    assert!(ls.trim_end().ends_with("-> d/target"), "{ls}");
    assert_eq!(names(&m.p("bkt/dir-ln")), set(&["target"]));
    assert_same(
        &fs::read(m.p("bkt/dir-ln/target")).unwrap(),
        &data,
        "through dir-ln",
    );
    assert_eq!(
        fs::read_link(m.p("bkt/abs-ln")).unwrap(),
        Path::new(&outside)
    );
    assert_same(
        &fs::read(m.p("bkt/abs-ln")).unwrap(),
        &data[..100],
        "out of the mount",
    );
    // Writing through a link writes the target.
    fs::write(m.p("bkt/ln"), b"via the link").unwrap();
    assert_eq!(fs::read(m.p("bkt/d/target")).unwrap(), b"via the link");
    // A link over an existing name; removing the link leaves the target.
    assert_eq!(
        errno_at(
            std::os::unix::fs::symlink("x", m.p("bkt/ln")),
            "symlink over"
        ),
        libc::EEXIST
    );
    fs::remove_file(m.p("bkt/ln")).unwrap();
    assert_eq!(
        errno_at(fs::symlink_metadata(m.p("bkt/ln")), "lstat"),
        libc::ENOENT
    );
    assert_eq!(fs::read(m.p("bkt/d/target")).unwrap(), b"via the link");
    assert_eq!(names(&m.p("bkt")), set(&["d", "dir-ln", "abs-ln"]));
}

// ------------------------------------------------------------------ crash

#[test]
fn changes_a_killed_daemon_never_uploaded_are_reported_by_the_next_mount() {
    let seed = test_seed("store-mount-crash");
    let mut m = StoreMount::new("crash");
    fs::create_dir(m.p("bkt")).unwrap();
    let old = seeded_bytes(seed, 70_000);
    fs::write(m.p("bkt/kept"), &old).unwrap();
    m.committed("bkt/kept", &old);
    // Written through a descriptor that stays open: not uploaded.
    let mut f = OpenOptions::new()
        .write(true)
        .open(m.p("bkt/kept"))
        .unwrap();
    f.write_all(&seeded_bytes(seed + 1, 5_000)).unwrap();
    let mut g = File::create(m.p("bkt/new-never-closed")).unwrap();
    g.write_all(b"lost").unwrap();
    // And a file written and closed: uploaded, nothing to report.
    let done = seeded_bytes(seed + 2, 3_000);
    fs::write(m.p("bkt/done"), &done).unwrap();
    m.kill9();
    drop((f, g));
    m.mount();
    // The report is made as the mount starts, before it answers.
    let log = m.log();
    let reported: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("were not uploaded before its daemon stopped"))
        .collect();
    let named = |p: &str| {
        reported
            .iter()
            .any(|l| l.contains(&format!("path=\"{p}\"")) || l.contains(&format!("path={p} ")))
    };
    assert!(named("bkt/kept"), "no report of bkt/kept:\n{log}");
    assert!(
        named("bkt/new-never-closed"),
        "no report of the new file:\n{log}"
    );
    assert_eq!(reported.len(), 2, "reported: {reported:#?}");
    assert!(reported.iter().all(|l| l.contains("InternalError")));
    // The store has what was there before the unsent changes.
    assert_same(&fs::read(m.p("bkt/kept")).unwrap(), &old, "kept");
    assert_same(&fs::read(m.p("bkt/done")).unwrap(), &done, "done");
    assert!(!m.p("bkt/new-never-closed").exists());
    // Reported once: a second mount says nothing more.
    m.remount();
    assert!(
        !m.log()
            .contains("were not uploaded before its daemon stopped"),
        "{}",
        m.log()
    );
}

// ----------------------------------------------------------------- refused

#[test]
fn hard_links_fifos_sockets_and_device_nodes_are_refused_with_eperm_on_a_store_mount() {
    let m = StoreMount::new("mnt-refused");
    fs::create_dir(m.p("bkt")).unwrap();
    fs::write(m.p("bkt/a"), b"content").unwrap();
    assert_eq!(
        errno_at(fs::hard_link(m.p("bkt/a"), m.p("bkt/b")), "link"),
        libc::EPERM
    );
    let ln = Command::new("ln")
        .env("LC_ALL", "C")
        .arg(m.p("bkt/a"))
        .arg(m.p("bkt/c"))
        .output()
        .unwrap();
    assert!(!ln.status.success());
    assert!(
        String::from_utf8_lossy(&ln.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&ln.stderr)
    );
    assert_eq!(mkfifo(&m.p("bkt/fifo")), Err(libc::EPERM));
    assert_eq!(
        mknod(&m.p("bkt/chr"), libc::S_IFCHR | 0o644, libc::makedev(1, 3)),
        Err(libc::EPERM)
    );
    assert_eq!(
        mknod(&m.p("bkt/blk"), libc::S_IFBLK | 0o644, libc::makedev(7, 0)),
        Err(libc::EPERM)
    );
    assert_eq!(
        mknod(&m.p("bkt/fifo2"), libc::S_IFIFO | 0o644, 0),
        Err(libc::EPERM)
    );
    // A socket is a mknod too.
    assert_eq!(
        errno_at(
            std::os::unix::net::UnixListener::bind(m.p("bkt/sock")),
            "bind"
        ),
        libc::EPERM
    );
    // Nothing was made, and the file is untouched.
    assert_eq!(names(&m.p("bkt")), set(&["a"]));
    assert_eq!(fs::read(m.p("bkt/a")).unwrap(), b"content");
    assert_eq!(fs::metadata(m.p("bkt/a")).unwrap().nlink(), 1);
}

// -------------------------------------------------------------- encryption

#[test]
fn bucket_rules_and_file_overrides_set_with_setfattr_on_a_store_mount_show_in_object_head() {
    let seed = test_seed("store-mount-sse");
    let m = StoreMount::new("mnt-sse");
    fs::create_dir(m.p("bkt")).unwrap();
    let bkt = m.p("bkt");
    let raw = m.s.raw();

    // (name, bucket rule, what head shows). Each file is written right
    // after its rule is set.
    let cases: [(&str, Rule, &[&str]); 5] = [
        ("none", &[], &[]),
        (
            "aes",
            &[(SSE, "AES256")],
            &["x-oss-server-side-encryption: AES256\n"],
        ),
        (
            "sm4",
            &[(SSE, "SM4")],
            &["x-oss-server-side-encryption: SM4\n"],
        ),
        (
            "kms",
            &[(SSE, "KMS")],
            &[
                "x-oss-server-side-encryption: KMS\n",
                "x-oss-server-side-encryption-key-id: ",
            ],
        ),
        (
            "kms-sm4",
            &[(SSE, "KMS"), (DATA, "SM4")],
            &[
                "x-oss-server-side-encryption: KMS\n",
                "x-oss-server-side-data-encryption: SM4\n",
            ],
        ),
    ];
    let mut written = Vec::new();
    for (i, (name, rule, want)) in cases.iter().enumerate() {
        for (n, v) in *rule {
            xattr_set(&bkt, n, v.as_bytes()).unwrap();
        }
        if let Some((_, alg)) = rule.first() {
            assert_eq!(xattr_get(&bkt, SSE).unwrap(), *alg);
            let cli = m.run(&["bucket", "encryption", "get", "bkt"]).ok().stdout;
            assert!(
                cli.contains(alg),
                "the CLI sees the rule set on the mount: {cli}"
            );
        }
        let body = seeded_bytes(seed + i as u64, 50_000 + 1000 * i);
        let key = format!("bkt/{name}");
        fs::write(m.p(&key), &body).unwrap();
        m.committed(&key, &body);
        let head = m.head(&key);
        for w in *want {
            assert!(head.contains(w), "{name}: {head}");
        }
        if want.is_empty() {
            assert!(
                !head.contains("x-oss-server-side-encryption"),
                "{name}: {head}"
            );
            assert_eq!(xattr_get(&m.p(&key), SSE), Err(libc::ENODATA), "{name}");
        } else {
            // The mount shows the same encryption on the file.
            assert_eq!(xattr_get(&m.p(&key), SSE).unwrap(), rule[0].1, "{name}");
        }
        // The store holds ciphertext, and the plaintext only when the
        // rule said no encryption (which shows the check can see it).
        let (stored, record) = raw.get(&key);
        assert!(stored.starts_with(b"SSEFSOBJ"), "{name}");
        assert!(record.is_some(), "{name}: no x-amz-meta-ssefs");
        assert_eq!(holds_plaintext(&stored, &body), want.is_empty(), "{name}");
        written.push((key, body, *want));
    }
    // KMS without a key id: the default CMK, by id.
    let head = m.head("bkt/kms");
    let id = head
        .lines()
        .find_map(|l| l.strip_prefix("x-oss-server-side-encryption-key-id: "))
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "{head}");
    let aliases = m.run(&["kms", "list-aliases"]).ok().stdout;
    assert!(
        aliases.contains(&format!("alias/acs/oss\t{id}")),
        "{aliases}"
    );
    assert_eq!(xattr_get(&m.p("bkt/kms"), KEY).unwrap(), id);

    // A rule change touches no existing object.
    xattr_remove(&bkt, DATA).unwrap();
    xattr_set(&bkt, SSE, b"AES256").unwrap();
    for (key, body, want) in &written {
        let head = m.head(key);
        for w in *want {
            assert!(head.contains(w), "{key} after the rule changed: {head}");
        }
        assert_same(&fs::read(m.p(key)).unwrap(), body, key);
    }

    // Per-file overrides re-encrypt the object in place.
    let body = seeded_bytes(seed + 100, 150_000);
    fs::write(m.p("bkt/over"), &body).unwrap();
    m.committed("bkt/over", &body);
    m.head_shows("bkt/over", &["x-oss-server-side-encryption: AES256\n"]);
    let (before, _) = raw.get("bkt/over");
    xattr_set(&m.p("bkt/over"), SSE, b"SM4").unwrap();
    m.head_shows("bkt/over", &["x-oss-server-side-encryption: SM4\n"]);
    assert_eq!(xattr_get(&m.p("bkt/over"), SSE).unwrap(), "SM4");
    let (after, _) = raw.get("bkt/over");
    assert!(after != before, "re-encrypted: new ciphertext");
    assert!(!holds_plaintext(&after, &body));
    assert_same(&fs::read(m.p("bkt/over")).unwrap(), &body, "after SM4");
    assert_same(&m.cli_get("bkt/over"), &body, "the CLI after SM4");
    // KMS with SM4 data encryption, by setfattr with setfattr(1).
    for (n, v) in [(SSE, "KMS"), (DATA, "SM4")] {
        run_ok(
            Command::new("setfattr")
                .args(["-n", n, "-v", v])
                .arg(m.p("bkt/over")),
        );
    }
    m.head_shows(
        "bkt/over",
        &[
            "x-oss-server-side-encryption: KMS\n",
            "x-oss-server-side-data-encryption: SM4\n",
        ],
    );
    assert_same(&m.cli_get("bkt/over"), &body, "the CLI after KMS+SM4");
    // Without the override: the bucket's rule (AES256) again.
    xattr_remove(&m.p("bkt/over"), DATA).unwrap();
    xattr_remove(&m.p("bkt/over"), SSE).unwrap();
    m.head_shows("bkt/over", &["x-oss-server-side-encryption: AES256\n"]);
    assert_same(
        &fs::read(m.p("bkt/over")).unwrap(),
        &body,
        "back to the rule",
    );
    assert_same(&m.cli_get("bkt/over"), &body, "the CLI back to the rule");
    // An invalid override: EINVAL, nothing changes.
    let (stored, _) = raw.get("bkt/over");
    assert_eq!(
        xattr_set(&m.p("bkt/over"), SSE, b"aes256"),
        Err(libc::EINVAL)
    );
    assert!(
        raw.get("bkt/over").0 == stored,
        "an invalid override changed the object"
    );
}

// --------------------------------------------------------------- tampering

#[test]
fn a_flipped_ciphertext_byte_or_an_edited_record_reads_as_eio_through_a_fresh_store_mount() {
    let seed = test_seed("store-mount-tamper");
    let mut m = StoreMount::new("mnt-tamper");
    fs::create_dir(m.p("bkt")).unwrap();
    xattr_set(&m.p("bkt"), SSE, b"AES256").unwrap();
    let mut bodies = BTreeMap::new();
    for (i, name) in ["flip", "meta", "other", "intact"].into_iter().enumerate() {
        let body = seeded_bytes(seed + i as u64, 200_000 + 333 * i);
        fs::write(m.p(&format!("bkt/{name}")), &body).unwrap();
        m.committed(&format!("bkt/{name}"), &body);
        bodies.insert(name, body);
    }
    m.unmount();

    let raw = m.s.raw();
    let (flip, flip_record) = raw.get("bkt/flip");
    let flip_record = flip_record.unwrap();
    let (meta, meta_record) = raw.get("bkt/meta");
    let meta_record = meta_record.unwrap();
    let (other, other_record) = raw.get("bkt/other");
    let other_record = other_record.unwrap();
    let (_, intact_record) = raw.get("bkt/intact");
    // A byte in the middle of the ciphertext, under its own record.
    let mut flipped = flip.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x20;
    raw.put("bkt/flip", &flipped, Some(&flip_record));
    // The record edited, its tag kept (as store.rs does).
    let mut parts: Vec<String> = meta_record.split('.').map(str::to_owned).collect();
    let mut body: Vec<char> = parts[1].chars().collect();
    body[5] = if body[5] == 'x' { 'y' } else { 'x' };
    parts[1] = body.into_iter().collect();
    raw.put("bkt/meta", &meta, Some(&parts.join(".")));
    // Another object's record, valid in itself: bound to the other content.
    raw.put("bkt/other", &other, intact_record.as_deref());

    m.mount();
    let read = |rel: &str| -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        File::open(m.p(rel))?.read_to_end(&mut buf)?;
        Ok(buf)
    };
    assert_eq!(errno_at(read("bkt/flip"), "read bkt/flip"), libc::EIO);
    // stat still answers: the record is intact, the length unchanged.
    assert_eq!(
        fs::metadata(m.p("bkt/flip")).unwrap().len(),
        bodies["flip"].len() as u64
    );
    match fs::metadata(m.p("bkt/meta")) {
        Err(e) => assert_eq!(errno_of(&e), libc::EIO, "stat bkt/meta"),
        Ok(_) => assert_eq!(errno_at(read("bkt/meta"), "read bkt/meta"), libc::EIO),
    }
    match fs::metadata(m.p("bkt/other")) {
        Err(e) => assert_eq!(errno_of(&e), libc::EIO, "stat bkt/other"),
        Ok(_) => assert_eq!(errno_at(read("bkt/other"), "read bkt/other"), libc::EIO),
    }
    assert_same(
        &read("bkt/intact").unwrap(),
        &bodies["intact"],
        "untouched object",
    );
    m.unmount();

    // Put back as they were, they read again: the failures changed nothing.
    raw.put("bkt/flip", &flip, Some(&flip_record));
    raw.put("bkt/meta", &meta, Some(&meta_record));
    raw.put("bkt/other", &other, Some(&other_record));
    m.mount();
    for (name, body) in &bodies {
        assert_same(&fs::read(m.p(&format!("bkt/{name}"))).unwrap(), body, name);
    }
}

// --------------------------------------------------------------------- fsx

/// fsx (scripts/fsx.sh) on a file of a store mount whose bucket has `rule`;
/// afterwards the store holds what fsx left, encrypted as `head` says.
fn fsx_on_a_store_bucket(test: &str, rule: Rule, head: &[&str]) {
    let ops = env_count("SSEFS_STORE_FSX_OPS", 20_000);
    let seed = test_seed(test) % 1_000_000;
    ensure_fsx();
    let mut m = StoreMount::new(test);
    fs::create_dir(m.p("fsx")).unwrap();
    for (n, v) in rule {
        xattr_set(&m.p("fsx"), n, v.as_bytes()).unwrap();
    }
    let t = Instant::now();
    let out = Command::new(script("fsx.sh"))
        .arg(m.p("fsx/f.bin"))
        .arg(ops.to_string())
        .env("FSX_SEED", seed.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fsx (FSX_SEED={seed}): {stdout}{}\nmount log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.log()
    );
    assert!(
        stdout.contains(&format!("fsx: {ops} operations, 0 miscompares")),
        "{stdout}"
    );
    eprintln!("{test}: {} in {:.1?}", stdout.trim_end(), t.elapsed());
    let left = fs::read(m.p("fsx/f.bin")).unwrap();
    m.unmount();
    let h = m.head("fsx/f.bin");
    assert!(
        h.contains(&format!("content-length: {}\n", left.len())),
        "{h}"
    );
    for w in head {
        assert!(h.contains(w), "{h}");
    }
    if head.is_empty() {
        assert!(!h.contains("x-oss-server-side-encryption"), "{h}");
    }
    assert_same(&m.cli_get("fsx/f.bin"), &left, "what fsx left, by the CLI");
    let v = m.run(&["verify", "fsx"]).ok().stdout;
    assert!(v.contains("0 failed"), "{v}");
}

#[test]
fn fsx_on_a_store_mount_without_encryption() {
    fsx_on_a_store_bucket("mnt-fsx-none", &[], &[]);
}

#[test]
fn fsx_on_a_store_mount_with_aes256() {
    fsx_on_a_store_bucket(
        "mnt-fsx-aes",
        &[(SSE, "AES256")],
        &["x-oss-server-side-encryption: AES256\n"],
    );
}

#[test]
fn fsx_on_a_store_mount_with_sm4() {
    fsx_on_a_store_bucket(
        "mnt-fsx-sm4",
        &[(SSE, "SM4")],
        &["x-oss-server-side-encryption: SM4\n"],
    );
}

#[test]
fn fsx_on_a_store_mount_with_kms() {
    fsx_on_a_store_bucket(
        "mnt-fsx-kms",
        &[(SSE, "KMS")],
        &[
            "x-oss-server-side-encryption: KMS\n",
            "x-oss-server-side-encryption-key-id: ",
        ],
    );
}

#[test]
fn fsx_on_a_store_mount_with_kms_and_sm4_data_encryption() {
    fsx_on_a_store_bucket(
        "mnt-fsx-kms-sm4",
        &[(SSE, "KMS"), (DATA, "SM4")],
        &[
            "x-oss-server-side-encryption: KMS\n",
            "x-oss-server-side-data-encryption: SM4\n",
        ],
    );
}

// ------------------------------------------------------------------- tools

const TREE_DIRS: [&str; 11] = [
    "src",
    "src/core",
    "src/core/deep",
    "src/util",
    "docs",
    "docs/img",
    "data",
    "data/raw",
    "data/raw/2024",
    "empty",
    "empty/inner",
];

/// A source tree of about 200 files under `root`, made from `seed`: sizes
/// from 0 to a few MiB, several modes, a few files owned by 1234:5678,
/// symlinks (one dangling), an empty directory, and whole-second mtimes
/// on every file and directory.
fn make_tree(root: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    for d in TREE_DIRS {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let homes = &TREE_DIRS[..9];
    let modes = [0o644, 0o600, 0o755, 0o640, 0o444];
    for i in 0..200u64 {
        let dir = if i % 10 == 0 {
            root.to_path_buf()
        } else {
            root.join(homes[rng.below(homes.len() as u64) as usize])
        };
        let len = match i % 50 {
            7 => (1 << 20) + rng.below(1 << 20) as usize,
            3 => 0,
            _ => rng.below(20_000) as usize,
        };
        let p = dir.join(format!(
            "file-{i:03}.{}",
            ["rs", "txt", "bin"][i as usize % 3]
        ));
        fs::write(&p, seeded_bytes(seed + i, len)).unwrap();
        fs::set_permissions(
            &p,
            fs::Permissions::from_mode(modes[i as usize % modes.len()]),
        )
        .unwrap();
        if i % 13 == 0 {
            std::os::unix::fs::chown(&p, Some(1234), Some(5678)).unwrap();
        }
        set_mtime(&p, 1_000_000_000 + rng.below(700_000_000));
    }
    std::os::unix::fs::symlink("core/deep", root.join("src/to-deep")).unwrap();
    std::os::unix::fs::symlink("../file-010.txt", root.join("docs/readme-link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("data/dangling")).unwrap();
    fs::set_permissions(root.join("docs"), fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(root.join("data/raw"), fs::Permissions::from_mode(0o700)).unwrap();
    // Directory mtimes last, deepest first: a change inside moves them.
    for d in TREE_DIRS.iter().rev() {
        set_mtime(&root.join(d), 1_000_000_000 + rng.below(700_000_000));
    }
}

fn set_mtime(p: &Path, secs: u64) {
    let t = UNIX_EPOCH + Duration::from_secs(secs);
    File::open(p)
        .unwrap()
        .set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}

/// Every entry below `root` (not `root`), one line each: the kind, mode,
/// owner, size and mtime of files, the same but the size of directories
/// (it differs between filesystems), the target of symlinks. `times`:
/// with mtimes. Names in `skip` are left out, with what is below them.
fn listing(root: &Path, times: bool, skip: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if skip.contains(&name.as_str()) {
                continue;
            }
            let r = rel.join(&name);
            let md = fs::symlink_metadata(root.join(&r)).unwrap();
            let t = if times {
                format!(" mtime {}.{:09}", md.mtime(), md.mtime_nsec())
            } else {
                String::new()
            };
            let owner = format!("{:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid());
            let line = if md.file_type().is_symlink() {
                format!(
                    "link -> {}",
                    fs::read_link(root.join(&r)).unwrap().display()
                )
            } else if md.is_dir() {
                stack.push(r.clone());
                format!("dir {owner}{t}")
            } else {
                format!("file {owner} {} bytes{t}", md.len())
            };
            out.insert(r.display().to_string(), line);
        }
    }
    out
}

#[track_caller]
fn assert_same_listing(
    got: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
    what: &str,
) {
    let diff: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: {v} expected, {:?}", got.get(k)))
        .chain(
            got.keys()
                .filter(|k| !want.contains_key(*k))
                .map(|k| format!("{k}: not expected")),
        )
        .collect();
    assert!(
        diff.is_empty(),
        "{what} ({} entries):\n{}",
        want.len(),
        diff.join("\n")
    );
}

#[track_caller]
fn diff_r(a: &Path, b: &Path, extra: &[&str]) {
    run_ok(
        Command::new("diff")
            .args(["-r", "--no-dereference"])
            .args(extra)
            .arg(a)
            .arg(b),
    );
}

#[test]
fn a_tar_of_a_tree_extracts_onto_a_store_mount_identically_and_survives_a_remount() {
    let seed = test_seed("store-mount-tar");
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), seed);
    let want = listing(src.path(), true, &[]);
    assert!(want.len() > 200, "{}", want.len());
    let mut m = StoreMount::new("mnt-tar");
    let archive = m.s.tmp.path().join("tree.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(src.path())
            .arg("-cf")
            .arg(&archive)
            .arg("."),
    );
    fs::create_dir_all(m.p("bkt/x")).unwrap();
    // As root, tar keeps owners and modes.
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(m.p("bkt/x"))
            .arg("-xpf")
            .arg(&archive),
    );
    diff_r(src.path(), &m.p("bkt/x"), &[]);
    assert_same_listing(&listing(&m.p("bkt/x"), true, &[]), &want, "tar xf");
    m.remount();
    diff_r(src.path(), &m.p("bkt/x"), &[]);
    assert_same_listing(
        &listing(&m.p("bkt/x"), true, &[]),
        &want,
        "tar xf, remounted",
    );
    // And back: a tar of the mount extracts to the same tree.
    let back = tempfile::tempdir().unwrap();
    let archive2 = m.s.tmp.path().join("back.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(m.p("bkt/x"))
            .arg("-cf")
            .arg(&archive2)
            .arg("."),
    );
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(back.path())
            .arg("-xpf")
            .arg(&archive2),
    );
    diff_r(src.path(), back.path(), &[]);
    assert_same_listing(
        &listing(back.path(), true, &[]),
        &want,
        "tar cf of the mount",
    );
}

#[test]
fn cp_a_of_a_tree_onto_a_store_mount_keeps_contents_modes_owners_and_mtimes() {
    let seed = test_seed("store-mount-cp");
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), seed);
    let want = listing(src.path(), true, &[]);
    let m = StoreMount::new("mnt-cp");
    fs::create_dir_all(m.p("bkt/copy")).unwrap();
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(src.path().join("."))
            .arg(m.p("bkt/copy")),
    );
    diff_r(src.path(), &m.p("bkt/copy"), &[]);
    assert_same_listing(&listing(&m.p("bkt/copy"), true, &[]), &want, "cp -a");
    // And as stat(1) prints them, file by file.
    let stat = |root: &Path| {
        run_ok(
            Command::new("sh")
                .arg("-c")
                .arg("cd \"$1\" && find . -type f -exec stat -c '%n %a %u:%g %s %Y' {} + | sort")
                .arg("sh")
                .arg(root),
        )
    };
    assert_eq!(stat(&m.p("bkt/copy")), stat(src.path()));
    // A second cp -a over the copy, and a copy within the mount.
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(src.path().join("."))
            .arg(m.p("bkt/copy")),
    );
    assert_same_listing(&listing(&m.p("bkt/copy"), true, &[]), &want, "cp -a again");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(m.p("bkt/copy"))
            .arg(m.p("bkt/copy2")),
    );
    diff_r(src.path(), &m.p("bkt/copy2"), &[]);
    assert_same_listing(
        &listing(&m.p("bkt/copy2"), true, &[]),
        &want,
        "cp -a in the mount",
    );
}

#[test]
fn rsync_a_onto_a_store_mount_copies_a_tree_and_then_finds_nothing_to_do() {
    let seed = test_seed("store-mount-rsync");
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path(), seed);
    let m = StoreMount::new("mnt-rsync");
    fs::create_dir(m.p("bkt")).unwrap();
    let from = format!("{}/", src.path().display());
    let to = format!("{}/", m.p("bkt/r").display());
    run_ok(Command::new("rsync").args(["-a", &from, &to]));
    diff_r(src.path(), &m.p("bkt/r"), &[]);
    assert_same_listing(
        &listing(&m.p("bkt/r"), true, &[]),
        &listing(src.path(), true, &[]),
        "rsync -a",
    );

    // Changes at the source: rsync writes temp files and renames them over.
    fs::write(
        src.path().join("file-000.rs"),
        seeded_bytes(seed + 1000, 7_777),
    )
    .unwrap();
    fs::write(
        src.path().join("src/new-file"),
        seeded_bytes(seed + 1001, 3_000),
    )
    .unwrap();
    let gone = listing(src.path(), false, &[])
        .into_iter()
        .find(|(k, v)| k.starts_with("docs/") && v.starts_with("file"))
        .map(|(k, _)| k)
        .unwrap();
    fs::remove_file(src.path().join(&gone)).unwrap();
    set_mtime(&src.path().join("file-000.rs"), 1_600_000_000);
    set_mtime(&src.path().join("src/new-file"), 1_600_000_001);
    set_mtime(&src.path().join("src"), 1_600_000_002);
    set_mtime(&src.path().join("docs"), 1_600_000_003);
    run_ok(Command::new("rsync").args(["-a", "--delete", &from, &to]));
    diff_r(src.path(), &m.p("bkt/r"), &[]);
    assert_same_listing(
        &listing(&m.p("bkt/r"), true, &[]),
        &listing(src.path(), true, &[]),
        "rsync -a --delete after changes",
    );
    // Sizes, modes, owners and times all match: nothing left to send.
    let out = run_ok(Command::new("rsync").args(["-a", "--delete", "-i", &from, &to]));
    assert_eq!(out, "", "a second rsync found differences");
}

fn git(dir: &Path, args: &[&str]) -> String {
    run_ok(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args([
                "-c",
                "user.name=ssefs test",
                "-c",
                "user.email=test@ssefs.invalid",
            ])
            .args([
                "-c",
                "init.defaultBranch=main",
                "-c",
                "advice.detachedHead=false",
            ])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE"),
    )
}

#[test]
fn git_clone_checkout_status_and_fsck_work_on_a_store_mount() {
    let seed = test_seed("store-mount-git");
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    let mut rng = Rng::new(seed);
    for i in 0..40u64 {
        let dir = ["", "src/", "src/lib/", "docs/"][i as usize % 4];
        let p = repo.join(format!("{dir}f{i}.txt"));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let len = rng.below(30_000) as usize;
        // Text-like (git diffs it), from the seed.
        let text: String = seeded_bytes(seed + i, len)
            .iter()
            .map(|b| {
                if b % 17 == 0 {
                    '\n'
                } else {
                    (b'a' + b % 26) as char
                }
            })
            .collect();
        fs::write(p, text).unwrap();
    }
    fs::write(repo.join("big.bin"), seeded_bytes(seed + 500, 3 << 20)).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    // Another branch: changed, deleted, renamed, added and executable files.
    git(&repo, &["checkout", "-q", "-b", "other"]);
    fs::write(repo.join("src/f1.txt"), seeded_bytes(seed + 600, 5_000)).unwrap();
    fs::write(
        repo.join("big.bin"),
        seeded_bytes(seed + 601, (3 << 20) + 1),
    )
    .unwrap();
    git(&repo, &["rm", "-q", "f0.txt", "docs/f3.txt"]);
    git(&repo, &["mv", "f4.txt", "src/lib/moved.txt"]);
    let script_path = repo.join("run.sh");
    fs::write(&script_path, b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&script_path, fs::Permissions::from_mode(0o755)).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "second"]);
    git(&repo, &["checkout", "-q", "main"]);

    let m = StoreMount::new("mnt-git");
    fs::create_dir(m.p("bkt")).unwrap();
    let clone = m.p("bkt/clone");
    run_ok(
        Command::new("git")
            .args(["-c", "advice.detachedHead=false", "clone", "-q"])
            .arg(&repo)
            .arg(&clone)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null"),
    );
    assert_eq!(git(&clone, &["status", "--porcelain"]), "");
    diff_r(&repo, &clone, &["--exclude=.git"]);
    assert_same_listing(
        &listing(&clone, false, &[".git"]),
        &listing(&repo, false, &[".git"]),
        "the clone on main",
    );
    // The other branch, checked out on the mount.
    git(&clone, &["checkout", "-q", "other"]);
    git(&repo, &["checkout", "-q", "other"]);
    assert_eq!(git(&clone, &["status", "--porcelain"]), "");
    diff_r(&repo, &clone, &["--exclude=.git"]);
    assert_same_listing(
        &listing(&clone, false, &[".git"]),
        &listing(&repo, false, &[".git"]),
        "the clone on other",
    );
    assert_eq!(
        fs::metadata(clone.join("run.sh")).unwrap().mode() & 0o111,
        0o111,
        "the executable bit"
    );
    assert_eq!(
        git(&clone, &["rev-parse", "HEAD"]),
        git(&repo, &["rev-parse", "HEAD"])
    );
    // And back, then a commit made on the mount.
    git(&clone, &["checkout", "-q", "main"]);
    assert!(!clone.join("run.sh").exists());
    assert_eq!(git(&clone, &["status", "--porcelain"]), "");
    fs::write(clone.join("made-here.txt"), b"a commit on the store\n").unwrap();
    git(&clone, &["add", "made-here.txt"]);
    git(&clone, &["commit", "-q", "-m", "on the mount"]);
    assert_eq!(git(&clone, &["status", "--porcelain"]), "");
    git(&clone, &["fsck", "--full", "--strict"]);
}
