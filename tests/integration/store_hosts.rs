//! Two hosts on one store (issue 14, slice 3; docs/SEMANTICS.md §12): two
//! `mount --foreground` daemons, each with a state directory of its own
//! and the same root key, mount the same prefix of the three-node Garage
//! cluster named in `$SSEFS_TEST_GARAGE` (see store.rs) at the same time.
//! A file closed on one host opens whole and new on the other, names come
//! and go within the metadata TTL, a bucket rule or a CMK's state changed
//! on one host applies on the other, the last of two closes wins whole,
//! and a daemon killed during an upload leaves the old object or the new.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::io::IntoRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::mount::{xattr_get, xattr_remove, xattr_set};
use crate::store::Store;
use crate::store_mount::{assert_same, differs, errno_at, names, StoreMount, KEY, SSE};
use crate::util::{env_count, errno_of, seeded_bytes, test_seed, Rng};

/// The default metadata TTL of a store mount (`-o meta_ttl_ms`).
const TTL: Duration = Duration::from_secs(1);

/// How long a change made on one host may take to show on the other: the
/// TTL and a margin for a loaded machine (a bound, not a measurement).
const SETTLE: Duration = Duration::from_secs(3);

/// Host A (initialises a new store, mounts it) and host B: the same store
/// prefix, a temp directory of its own (so its own state directory,
/// $SSEFS_STATE_DIR = tmp/state, and its own mount point and logs) and a
/// copy of A's root key file, as a second host has once it imported it.
fn two_hosts(test: &str, opts: &[&str]) -> (StoreMount, StoreMount) {
    let s = Store::new(test);
    s.run(&["init"]).ok();
    let a = StoreMount::on_with(s, opts);
    let b = Store {
        tmp: tempfile::tempdir().unwrap(),
        env: a.s.env.clone(),
        prefix: a.s.prefix.clone(),
    };
    let key = a.key_file();
    let keys = b.tmp.path().join("keys");
    fs::create_dir(&keys).unwrap();
    // fs::copy keeps the mode (0600).
    fs::copy(&key, keys.join(key.file_name().unwrap())).unwrap();
    let b = StoreMount::on_with(b, opts);
    assert_ne!(a.s.tmp.path(), b.s.tmp.path());
    (a, b)
}

/// Makes bucket `name` through A and waits until B sees it.
fn bucket_on_both(a: &StoreMount, b: &StoreMount, name: &str) {
    fs::create_dir(a.p(name)).unwrap();
    soon(&format!("B sees the bucket {name} A made"), || {
        b.p(name).is_dir()
    });
}

/// Writes `data` to `p` (created or truncated) and closes it, failing on
/// an error of the close: on a store mount the close uploads, and a close
/// that returned 0 means the bytes are on the store. (fs::write and drop
/// ignore close's answer.)
fn write_closed(p: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(p)?;
    // Several writes, as a program writing a file does.
    for c in data.chunks(64 << 10) {
        f.write_all(c)?;
    }
    close(f)
}

fn close(f: File) -> std::io::Result<()> {
    let fd = f.into_raw_fd();
    // SAFETY: `fd` was just taken from a File, so it is open and ours, and
    // it is closed exactly once, here.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Waits (SETTLE at most) until `cond` holds; how long that took.
#[track_caller]
fn soon(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < SETTLE, "not within {SETTLE:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t.elapsed()
}

/// Opens `rel` on `m` again and again until it reads exactly `want`, which
/// must happen within SETTLE of `since` (when another host's close of it
/// returned). Until then every open must read exactly one of `before`
/// (None: the file does not exist yet, ENOENT): whole, never a mix or a
/// part. Returns how many opens read an older state.
#[track_caller]
fn reads_soon(
    m: &StoreMount,
    rel: &str,
    want: &[u8],
    before: &[Option<&[u8]>],
    since: Instant,
    what: &str,
) -> u32 {
    let mut stale = 0;
    loop {
        let got = fs::read(m.p(rel));
        let state = match &got {
            Ok(v) if v.as_slice() == want => return stale,
            Ok(v) => Some(v.as_slice()),
            Err(e) if errno_of(e) == libc::ENOENT => None,
            Err(e) => panic!("{what}: {rel}: {e}\nmount log:\n{}", m.log()),
        };
        assert!(
            before.contains(&state),
            "{what}: {rel} read neither the new version nor an old one: {}",
            match state {
                Some(v) => differs(v, want),
                None => "no such file".to_owned(),
            }
        );
        stale += 1;
        assert!(
            since.elapsed() < SETTLE,
            "{what}: {rel} still reads an old version {SETTLE:?} after the other \
             host's close ({stale} opens)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ------------------------------------------------------- close-to-open

#[test]
fn a_file_closed_on_one_host_opens_whole_and_new_on_the_other() {
    let seed = test_seed("store-hosts-close-to-open");
    let (a, b) = two_hosts("hosts-c2o", &[]);
    bucket_on_both(&a, &b, "bkt");

    // Empty, small, one MiB, and beyond the 16 MiB upload part.
    let sizes = [0usize, 1000, 1 << 20, (20 << 20) + 123];
    let mut stale = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let rel = format!("bkt/f{i}");
        let s = seed + 10 * i as u64;
        // B looks first: the negative entry it keeps may hide the file
        // for the TTL, no longer.
        assert_eq!(
            errno_at(fs::metadata(b.p(&rel)), "B's stat before"),
            libc::ENOENT
        );
        // A creates it; B's next open reads it.
        let v1 = seeded_bytes(s, n);
        write_closed(&a.p(&rel), &v1).unwrap();
        let t = Instant::now();
        let s1 = reads_soon(&b, &rel, &v1, &[None], t, "A's create, on B");
        // B overwrites it (longer); A's next open reads B's bytes.
        let v2 = seeded_bytes(s + 1, n + 4097);
        write_closed(&b.p(&rel), &v2).unwrap();
        let t = Instant::now();
        let s2 = reads_soon(&a, &rel, &v2, &[Some(&v1)], t, "B's overwrite, on A");
        // A again, back to the first length: B, which wrote and read v2
        // and may cache its pages and size, reads v3 whole.
        let v3 = seeded_bytes(s + 2, n);
        write_closed(&a.p(&rel), &v3).unwrap();
        let t = Instant::now();
        let s3 = reads_soon(&b, &rel, &v3, &[Some(&v2)], t, "A's overwrite, on B");
        soon(&format!("B's stat of {rel} shows A's length"), || {
            fs::metadata(b.p(&rel)).unwrap().len() == n as u64
        });
        a.committed(&rel, &v3);
        stale.push((n, [s1, s2, s3]));
    }
    // How many opens read an older version first (allowed within the TTL).
    eprintln!("stale opens before the new version, by size: {stale:?}");

    // A name made on A shows in B's listing within the TTL; B opens it;
    // unlinked on A, it leaves B's listing and B's open fails.
    let listed = names(&b.p("bkt"));
    assert!(!listed.contains("new"), "{listed:?}");
    let body = seeded_bytes(seed + 100, 5_555);
    write_closed(&a.p("bkt/new"), &body).unwrap();
    let shown = soon("A's new file in B's listing", || {
        names(&b.p("bkt")).contains("new")
    });
    assert_same(&fs::read(b.p("bkt/new")).unwrap(), &body, "bkt/new on B");
    assert_eq!(
        fs::metadata(b.p("bkt/new")).unwrap().len(),
        body.len() as u64
    );
    fs::remove_file(a.p("bkt/new")).unwrap();
    let gone = soon("A's unlinked file gone from B's listing", || {
        !names(&b.p("bkt")).contains("new")
    });
    soon(
        "B's open of A's unlinked file fails with ENOENT",
        || matches!(fs::read(b.p("bkt/new")), Err(e) if errno_of(&e) == libc::ENOENT),
    );
    eprintln!("in B's listing after {shown:?}, gone after {gone:?}");
    // The rest of the listing is what both hosts made, on both hosts.
    let want: BTreeSet<String> = (0..sizes.len()).map(|i| format!("f{i}")).collect();
    assert_eq!(names(&b.p("bkt")), want);
    assert_eq!(names(&a.p("bkt")), want);
}

// ----------------------------------------------------------- bucket rules

#[test]
fn a_bucket_rule_set_on_one_host_applies_to_the_next_upload_on_the_other() {
    let seed = test_seed("store-hosts-rule");
    let (a, b) = two_hosts("hosts-rule", &[]);
    bucket_on_both(&a, &b, "bkt");

    // B uploads once without a rule: whatever it keeps of the bucket's
    // rule, it now holds "none".
    let body = seeded_bytes(seed, 30_000);
    write_closed(&b.p("bkt/before"), &body).unwrap();
    b.committed("bkt/before", &body);
    let h = b.head("bkt/before");
    assert!(!h.contains("x-oss-server-side-encryption"), "{h}");

    // (rule set through A, or None: removed; what head shows of B's next
    // upload). Each case follows an upload by B under the previous rule.
    let cases: [(Option<&str>, &[&str]); 3] = [
        (Some("SM4"), &["x-oss-server-side-encryption: SM4\n"]),
        (
            Some("KMS"),
            &[
                "x-oss-server-side-encryption: KMS\n",
                "x-oss-server-side-encryption-key-id: ",
            ],
        ),
        (None, &[]),
    ];
    for (i, (rule, want)) in cases.iter().enumerate() {
        match rule {
            Some(alg) => {
                xattr_set(&a.p("bkt"), SSE, alg.as_bytes()).unwrap();
                assert_eq!(xattr_get(&a.p("bkt"), SSE).unwrap(), *alg);
            }
            None => xattr_remove(&a.p("bkt"), SSE).unwrap(),
        }
        std::thread::sleep(TTL + Duration::from_secs(1));
        // B reads the rule as A left it.
        match rule {
            Some(alg) => assert_eq!(xattr_get(&b.p("bkt"), SSE).unwrap(), *alg, "{rule:?}"),
            None => assert_eq!(xattr_get(&b.p("bkt"), SSE), Err(libc::ENODATA)),
        }
        let key = format!("bkt/after-{i}");
        let body = seeded_bytes(seed + 1 + i as u64, 40_000 + 1000 * i);
        write_closed(&b.p(&key), &body).unwrap();
        b.committed(&key, &body);
        let h = b.head(&key);
        for w in *want {
            assert!(h.contains(w), "B's upload after A set {rule:?}: {h}");
        }
        match rule {
            Some(alg) => assert_eq!(xattr_get(&b.p(&key), SSE).unwrap(), *alg),
            None => {
                assert!(!h.contains("x-oss-server-side-encryption"), "{h}");
                assert_eq!(xattr_get(&b.p(&key), SSE), Err(libc::ENODATA));
            }
        }
        // And A reads what B wrote under it.
        assert_same(&fs::read(a.p(&key)).unwrap(), &body, &key);
    }
}

// -------------------------------------------------------------- key state

#[test]
fn a_cmk_disabled_on_one_host_is_refused_on_the_other_within_the_ttl() {
    let seed = test_seed("store-hosts-cmk");
    let (a, b) = two_hosts("hosts-cmk", &[]);
    let out = a.run(&["kms", "create-key"]).ok().stdout;
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("KeyId: "))
        .unwrap_or_else(|| panic!("no KeyId: {out}"))
        .trim()
        .to_owned();
    // A bucket under the CMK, and one under SSE-OSS that must not care.
    fs::create_dir(a.p("bkt")).unwrap();
    xattr_set(&a.p("bkt"), SSE, b"KMS").unwrap();
    xattr_set(&a.p("bkt"), KEY, id.as_bytes()).unwrap();
    fs::create_dir(a.p("aes")).unwrap();
    xattr_set(&a.p("aes"), SSE, b"AES256").unwrap();
    soon("B sees the buckets A made", || {
        b.p("bkt").is_dir() && b.p("aes").is_dir()
    });
    std::thread::sleep(TTL + Duration::from_secs(1));

    let body = seeded_bytes(seed, 100_000);
    write_closed(&b.p("bkt/k"), &body).unwrap();
    b.committed("bkt/k", &body);
    let h = b.head("bkt/k");
    assert!(
        h.contains(&format!("x-oss-server-side-encryption-key-id: {id}\n")),
        "B's upload is not under the CMK A set: {h}"
    );
    let other = seeded_bytes(seed + 1, 50_000);
    write_closed(&b.p("aes/o"), &other).unwrap();
    // B reads both now: whatever it keeps of the key's state says Enabled.
    assert_same(
        &fs::read(b.p("bkt/k")).unwrap(),
        &body,
        "before the disable",
    );
    assert_same(&fs::read(b.p("aes/o")).unwrap(), &other, "aes/o");

    // Disabled by the CLI on host A.
    a.run(&["kms", "disable-key", &id]).ok();
    let t = Instant::now();
    // Until B notices, an open reads the file whole; then EKEYREVOKED.
    let open_k = |m: &StoreMount| fs::read(m.p("bkt/k"));
    let mut opens = 0;
    loop {
        match open_k(&b) {
            Ok(v) => assert_same(&v, &body, "B's open while the key goes"),
            Err(e) => {
                assert_eq!(errno_of(&e), libc::EKEYREVOKED, "B's open: {e}");
                break;
            }
        }
        opens += 1;
        assert!(
            t.elapsed() < SETTLE,
            "B still opens bkt/k {SETTLE:?} after the key was disabled ({opens} opens)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "B's open refused {:?} after the disable, {opens} opens before",
        t.elapsed()
    );
    // A create in the bucket is refused too, and leaves nothing behind.
    loop {
        match File::create(b.p("bkt/new")) {
            Err(e) => {
                assert_eq!(errno_of(&e), libc::EKEYREVOKED, "B's create: {e}");
                break;
            }
            Ok(f) => {
                // Not yet known here: allowed within the TTL only. (Its
                // upload may be refused, so nothing to remove then.)
                let _ = close(f);
                let _ = fs::remove_file(b.p("bkt/new"));
            }
        }
        assert!(
            t.elapsed() < SETTLE,
            "B still creates under the key {SETTLE:?} after it was disabled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    b.run(&["object", "head", "bkt/new"])
        .fails_with("NoSuchKey");
    // Host A's own mount refuses the open as well.
    soon(
        "A's open of bkt/k refused with EKEYREVOKED",
        || matches!(open_k(&a), Err(e) if errno_of(&e) == libc::EKEYREVOKED),
    );
    // Objects under other keys read on.
    assert_same(&fs::read(b.p("aes/o")).unwrap(), &other, "aes/o disabled");

    // Enabled again: B's open and create work within the TTL.
    a.run(&["kms", "enable-key", &id]).ok();
    let t = Instant::now();
    loop {
        match open_k(&b) {
            Ok(v) => {
                assert_same(&v, &body, "B's open after the enable");
                break;
            }
            Err(e) => assert_eq!(errno_of(&e), libc::EKEYREVOKED, "B's open: {e}"),
        }
        assert!(
            t.elapsed() < SETTLE,
            "B still refuses bkt/k {SETTLE:?} after the key was enabled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let body2 = seeded_bytes(seed + 2, 77_777);
    loop {
        match write_closed(&b.p("bkt/new"), &body2) {
            Ok(()) => break,
            Err(e) => assert_eq!(errno_of(&e), libc::EKEYREVOKED, "B's create: {e}"),
        }
        assert!(
            t.elapsed() < SETTLE,
            "B still refuses a create {SETTLE:?} after the key was enabled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    b.committed("bkt/new", &body2);
    let h = b.head("bkt/new");
    assert!(h.contains(&format!("key-id: {id}\n")), "{h}");
    soon("A's open of bkt/k works again", || {
        open_k(&a).is_ok_and(|v| v == body)
    });
    assert_same(&fs::read(a.p("bkt/new")).unwrap(), &body2, "bkt/new on A");
}

// ------------------------------------------------------------ two writers

#[test]
fn two_writers_on_two_hosts_the_last_close_wins_whole() {
    let seed = test_seed("store-hosts-writers");
    // A shorter TTL, so that 30 rounds stay short; the check after each
    // round waits for it to run out.
    let ttl = Duration::from_millis(250);
    let (a, b) = two_hosts("hosts-writers", &["meta_ttl_ms=250"]);
    bucket_on_both(&a, &b, "bkt");
    let rounds = env_count("SSEFS_STORE_HOSTS_ROUNDS", 30);
    let mut rng = Rng::new(seed);
    let mut wins = [0u32; 2];
    let mut overlapped = 0;
    for r in 0..rounds as u64 {
        // Distinct lengths: A's 300-400 KB, B's 150-250 KB.
        let ca = seeded_bytes(seed ^ (r << 1), 300_000 + rng.below(100_000) as usize);
        let cb = seeded_bytes(seed ^ (r << 1 | 1), 150_000 + rng.below(100_000) as usize);
        let go = Barrier::new(2);
        // Each writer: when its close started and when it returned.
        let write = |m: &StoreMount, data: &[u8]| {
            go.wait();
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(m.p("bkt/f"))
                .unwrap();
            for c in data.chunks(64 << 10) {
                f.write_all(c).unwrap();
            }
            let start = Instant::now();
            close(f).unwrap();
            (start, Instant::now())
        };
        let ((a0, a1), (b0, b1)) = std::thread::scope(|sc| {
            let ha = sc.spawn(|| write(&a, &ca));
            let hb = sc.spawn(|| write(&b, &cb));
            (ha.join().unwrap(), hb.join().unwrap())
        });
        std::thread::sleep(ttl * 2);
        let got_a = fs::read(a.p("bkt/f")).unwrap();
        let got_b = fs::read(b.p("bkt/f")).unwrap();
        let got_cli = a.cli_get("bkt/f");
        for (who, got) in [("A", &got_a), ("B", &got_b), ("the CLI", &got_cli)] {
            assert!(
                *got == ca || *got == cb,
                "round {r}: {who} reads neither A's bytes nor B's: {} (A's), {} (B's)",
                differs(got, &ca),
                differs(got, &cb)
            );
        }
        let name = |v: &[u8]| if v == ca.as_slice() { "A's" } else { "B's" };
        assert!(
            got_a == got_cli && got_b == got_cli,
            "round {r}: the hosts disagree: A reads {}, B reads {}, the CLI {}",
            name(&got_a),
            name(&got_b),
            name(&got_cli)
        );
        // Closes that did not overlap: the later one won.
        if a1 < b0 {
            assert!(got_cli == cb, "round {r}: B closed after A, A's bytes won");
        } else if b1 < a0 {
            assert!(got_cli == ca, "round {r}: A closed after B, B's bytes won");
        } else {
            overlapped += 1;
        }
        wins[usize::from(got_cli == cb)] += 1;
    }
    eprintln!(
        "{rounds} rounds: A's bytes won {}, B's {}; the closes overlapped in {overlapped}",
        wins[0], wins[1]
    );
}

// ------------------------------------------------------------------ crash

/// Where a writer is: bytes written, and whether its close has begun.
#[derive(Default)]
struct Progress {
    written: AtomicU64,
    closing: AtomicBool,
}

/// Overwrites `p` with `data` (O_TRUNC, 1 MiB writes) and closes it,
/// reporting progress; stops at the first error (the daemon was killed).
/// The close's answer, or the write's error; with how long the close took.
fn overwrite(p: &Path, data: &[u8], pr: &Progress) -> (std::io::Result<()>, Duration) {
    let mut f = match OpenOptions::new().write(true).truncate(true).open(p) {
        Ok(f) => f,
        Err(e) => return (Err(e), Duration::ZERO),
    };
    for c in data.chunks(1 << 20) {
        if let Err(e) = f.write_all(c) {
            return (Err(e), Duration::ZERO);
        }
        pr.written.fetch_add(c.len() as u64, Ordering::SeqCst);
    }
    pr.closing.store(true, Ordering::SeqCst);
    let t = Instant::now();
    let r = close(f);
    (r, t.elapsed())
}

/// When the daemon is killed.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// Half the new bytes written, no close yet.
    Writing,
    /// Just after the close began (its upload starting).
    CloseStarted,
    /// Into the close, at a share of what the first close took.
    IntoClose(f64),
    /// Just after the close returned (0: the new bytes are on the store).
    Closed,
}

#[test]
fn kill_9_of_a_daemon_during_an_upload_leaves_the_old_or_the_new_object() {
    let seed = test_seed("store-hosts-kill");
    let (mut a, b) = two_hosts("hosts-kill", &[]);
    fs::create_dir(a.p("bkt")).unwrap();
    xattr_set(&a.p("bkt"), SSE, b"AES256").unwrap();
    let len = 48 << 20;
    let old = seeded_bytes(seed, len);
    fs::write(a.p("bkt/big"), b"").unwrap();
    let (r, close_took) = overwrite(&a.p("bkt/big"), &old, &Progress::default());
    r.unwrap();
    a.committed("bkt/big", &old);
    eprintln!("a close of 48 MiB took {close_took:?}");

    let mut current = old;
    let points = [
        KillAt::Writing,
        KillAt::CloseStarted,
        KillAt::IntoClose(0.5),
        KillAt::IntoClose(0.9),
        KillAt::Closed,
    ];
    for (k, point) in points.into_iter().enumerate() {
        // A length of its own each time, so a mix of versions shows.
        let new = seeded_bytes(seed + 1 + k as u64, len - 4096 * (k + 1) - 7);
        let pr = Progress::default();
        let path = a.p("bkt/big");
        let ((res, _), returned) = std::thread::scope(|sc| {
            let w = sc.spawn(|| overwrite(&path, &new, &pr));
            let t = Instant::now();
            let wait = |cond: &dyn Fn() -> bool| {
                while !cond() {
                    assert!(
                        t.elapsed() < Duration::from_secs(60),
                        "{point:?}: writer stuck"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            };
            match point {
                KillAt::Writing => wait(&|| pr.written.load(Ordering::SeqCst) >= len as u64 / 2),
                KillAt::CloseStarted => {
                    wait(&|| pr.closing.load(Ordering::SeqCst));
                    std::thread::sleep(Duration::from_millis(20));
                }
                KillAt::IntoClose(share) => {
                    wait(&|| pr.closing.load(Ordering::SeqCst));
                    std::thread::sleep(close_took.mul_f64(share));
                }
                KillAt::Closed => wait(&|| w.is_finished()),
            }
            // Whether the close had returned before the kill.
            let done = w.is_finished();
            a.kill9();
            (w.join().unwrap(), done)
        });
        // A close that returned 0 before the kill put the new bytes there.
        let closed_ok = returned && res.is_ok();
        if matches!(point, KillAt::Closed) {
            assert!(closed_ok, "the close before the kill failed: {res:?}");
        }

        // The CLI (on host A, as its operator would look after the crash).
        let got = a.cli_get("bkt/big");
        let which = if got == current {
            "old"
        } else if got == new {
            "new"
        } else {
            panic!(
                "{point:?}: the store holds neither the old nor the new bytes: {} (old), {} (new)",
                differs(&got, &current),
                differs(&got, &new)
            );
        };
        assert!(
            !closed_ok || got == new,
            "{point:?}: the close returned 0 before the kill, yet the store holds the old bytes"
        );
        eprintln!("{point:?}: the writer saw {res:?}; the store holds the {which} bytes");
        // B's next open reads the same, whole (its pages and size may be
        // of the version it read before: within the TTL).
        let t = Instant::now();
        let prev = current.clone();
        reads_soon(&b, "bkt/big", &got, &[Some(&prev)], t, "B after the kill");
        let v = a.run(&["verify", "bkt"]).ok().stdout;
        assert!(v.contains(" 0 failed"), "{point:?}: {v}");
        // A fresh daemon on host A (its state directory as the dead one
        // left it) reads the same.
        a.mount();
        assert_same(
            &fs::read(a.p("bkt/big")).unwrap(),
            &got,
            &format!("{point:?}: A remounted"),
        );
        current = got;
    }
}

// -------------------------------------------------- within the TTL window

/// Within the TTL after another host made a bucket or changed its rule, a
/// create here may use the old rule or the new one (or, for a bucket not
/// seen yet, not find it), but a bucket that shows here takes files, and
/// each upload is stored whole under one of the two rules: no refusal, and
/// no integrity error.
#[test]
fn regression_a_create_racing_a_bucket_change_on_the_other_host_gets_the_old_rule_or_the_new() {
    let seed = test_seed("store-hosts-rule-race");
    let (a, b) = two_hosts("hosts-rule-race", &[]);
    // B has just read what it needs of the store (a bucket of its own and
    // a file in it), as a busy host has, when A makes the bucket.
    fs::create_dir(b.p("mine")).unwrap();
    write_closed(&b.p("mine/x"), b"x").unwrap();
    fs::create_dir(a.p("bkt")).unwrap();
    let t = Instant::now();
    soon("B sees the bucket A made", || b.p("bkt").is_dir());
    let body = seeded_bytes(seed, 10_000);
    write_closed(&b.p("bkt/first"), &body).unwrap_or_else(|e| {
        panic!(
            "B's create in the bucket A made {:?} before, as soon as B sees it: {e}\n\
             B's log:\n{}",
            t.elapsed(),
            b.log()
        )
    });
    b.committed("bkt/first", &body);

    // Rule changes through A while B creates files: each of B's uploads
    // works and is stored under the rule before the change or after it.
    let mut rule: Option<&str> = None;
    let mut n = 0u64;
    for alg in ["SM4", "AES256", "SM4"] {
        xattr_set(&a.p("bkt"), SSE, alg.as_bytes()).unwrap();
        let t = Instant::now();
        while t.elapsed() < TTL + Duration::from_millis(500) {
            n += 1;
            let key = format!("bkt/r{n}");
            let body = seeded_bytes(seed + n, 5_000 + n as usize);
            write_closed(&b.p(&key), &body).unwrap_or_else(|e| {
                panic!(
                    "B's create {:?} after A set {alg} (was {rule:?}): {e}\nB's log:\n{}",
                    t.elapsed(),
                    b.log()
                )
            });
            b.committed(&key, &body);
            let h = b.head(&key);
            let got = h
                .lines()
                .find_map(|l| l.strip_prefix("x-oss-server-side-encryption: "));
            assert!(
                got == rule || got == Some(alg),
                "{key}, {:?} after A set {alg} (was {rule:?}): {h}",
                t.elapsed()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        rule = Some(alg);
    }
}
