//! The core without a mount: permission rules for owner, group and other,
//! set-id removal, read-only refusals and SETATTR, on an `Fs` built over a
//! temp data directory. The mount tests reach only what the kernel lets
//! through (root's branch, or the kernel's own checks); these call the
//! core's checks directly.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::perms::setid_kill;
use super::*;
use crate::kms::RootKeySource;
use crate::principal::Principal;

// ---------------------------------------------------------------- helpers

pub(super) struct Env {
    _dir: tempfile::TempDir,
    pub(super) engine: Arc<Engine>,
    pub(super) fs: Fs,
}

/// An `Fs` with the core making the permission checks (no
/// default_permissions), writable.
pub(super) fn env() -> Env {
    env_with_handles(true)
}

/// As `env`, with inodes named by file handle where the data directory
/// allows it, or (`false`) never: the descriptor-per-inode fallback of a
/// filesystem without handles (see `inodes`).
pub(super) fn env_with_handles(file_handles: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let root = RootKeySource::File(dir.path().join("root.key"));
    Engine::init(&data, &root).unwrap();
    let engine = Arc::new(Engine::open(&data, &root).unwrap());
    let fs = fs_with(&engine, false, false, file_handles);
    Env {
        _dir: dir,
        engine,
        fs,
    }
}

/// Another `Fs` over the same engine, with other options. It knows only
/// the root: look inodes up in it before use, as the kernel would.
pub(super) fn fs_on(engine: &Arc<Engine>, read_only: bool, kernel_checks: bool) -> Fs {
    fs_with(engine, read_only, kernel_checks, true)
}

pub(super) fn fs_with(
    engine: &Arc<Engine>,
    read_only: bool,
    kernel_checks: bool,
    file_handles: bool,
) -> Fs {
    Fs::new(
        engine.clone(),
        FsOptions {
            read_only,
            kernel_checks_permissions: kernel_checks,
            mount_dev: Arc::new(OnceLock::new()),
            max_inodes: super::DEFAULT_MAX_INODES,
            file_handles,
        },
    )
    .unwrap()
}

pub(super) fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// 0 for success, else the errno the FUSE layer would answer.
pub(super) fn errno_of<T>(r: Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.errno(),
    }
}

/// Looks up `path` from the root in `fs`, returning the last inode.
pub(super) fn look(fs: &Fs, path: &[&str]) -> u64 {
    path.iter()
        .fold(ROOT_INO, |dir, name| fs.lookup(dir, os(name)).unwrap().ino)
}

impl Env {
    /// A bucket anyone may create in (mode 0777, as root made it).
    pub(super) fn bucket(&self, name: &str) -> u64 {
        let a = self.fs.mkdir(ROOT_INO, os(name), 0o777, 0, 0).unwrap();
        // mkdir's mode passes the process umask on the backend.
        self.fs
            .setattr(a.ino, &mode(0o777), &Principal::root(), None)
            .unwrap();
        a.ino
    }

    /// A regular file made by `p` with `data`, then given mode `perm` (a
    /// create's mode passes the umask on the backend).
    pub(super) fn file(
        &self,
        parent: u64,
        name: &str,
        perm: u32,
        p: &Principal,
        data: &[u8],
    ) -> u64 {
        let (fh, a) = self
            .fs
            .create_object(parent, os(name), 0o600, libc::O_RDWR, p)
            .unwrap();
        if !data.is_empty() {
            self.fs.write(a.ino, fh, 0, data, false, p).unwrap();
        }
        self.fs.release(a.ino, fh);
        self.fs.chmod(a.ino, perm).unwrap();
        a.ino
    }

    fn perm(&self, ino: u64) -> u32 {
        u32::from(self.fs.getattr(ino).unwrap().perm)
    }

    /// The whole content, read as root.
    pub(super) fn content(&self, ino: u64) -> Vec<u8> {
        let fh = self
            .fs
            .open(ino, libc::O_RDONLY, &Principal::root())
            .unwrap();
        let d = self.fs.read(fh, 0, 1 << 20).unwrap();
        self.fs.release(ino, fh);
        d
    }
}

fn mode(m: u32) -> AttrChanges {
    AttrChanges {
        mode: Some(m),
        ..AttrChanges::default()
    }
}

// The principals: the owner of the files under test (uid 1000, group
// 1000), a member of that group by a supplementary group, someone else, and
// the owner logged in with another primary group that is not the file's.
// Principals built so never hold CAP_FSETID (`holds_cap_fsetid`).
const OWNER: u32 = 1000;
const GROUP: u32 = 1000;

fn owner() -> Principal {
    Principal::new(OWNER, GROUP)
}
fn member() -> Principal {
    Principal::new(1001, 2001).with_groups(vec![GROUP])
}
fn other() -> Principal {
    Principal::new(1002, 2002)
}
fn owner_outside_group() -> Principal {
    Principal::new(OWNER, 3000)
}
pub(super) fn root() -> Principal {
    Principal::root()
}

const R: i32 = libc::R_OK;
const W: i32 = libc::W_OK;
const X: i32 = libc::X_OK;
const OK: i32 = 0;
const EACCES: i32 = libc::EACCES;
const EPERM: i32 = libc::EPERM;

// ------------------------------------------------------------ access(2)

#[test]
fn access_uses_the_owner_group_or_other_bits_of_the_caller() {
    let e = env();
    let b = e.bucket("bkt");
    let f = e.file(b, "f", 0o640, &owner(), b"x");
    assert_eq!(e.fs.getattr(f).unwrap().uid, OWNER, "own() gave it away");
    let cases = [
        ("owner rw", owner(), R | W, OK),
        ("owner x", owner(), X, EACCES),
        ("member r", member(), R, OK),
        ("member w", member(), W, EACCES),
        ("other r", other(), R, EACCES),
        ("other exists", other(), libc::F_OK, OK),
        ("root rw", root(), R | W, OK),
        // Root executes only what some class may execute.
        ("root x", root(), X, EACCES),
    ];
    for (what, p, mask, want) in cases {
        assert_eq!(errno_of(e.fs.access(f, mask, &p)), want, "{what}");
    }
}

#[test]
fn access_takes_only_the_first_class_that_matches() {
    // Each class is judged by its own bits alone: an owner shut out by the
    // owner bits gets nothing from generous group or other bits, a group
    // member nothing from the other bits.
    let e = env();
    let b = e.bucket("bkt");
    let f = e.file(b, "f", 0o077, &owner(), b"x");
    assert_eq!(errno_of(e.fs.access(f, R, &owner())), EACCES);
    assert_eq!(errno_of(e.fs.access(f, R | W | X, &member())), OK);
    e.fs.chmod(f, 0o607).unwrap();
    assert_eq!(errno_of(e.fs.access(f, R | W, &owner())), OK);
    assert_eq!(errno_of(e.fs.access(f, X, &owner())), EACCES);
    assert_eq!(errno_of(e.fs.access(f, R, &member())), EACCES);
    assert_eq!(errno_of(e.fs.access(f, R | W | X, &other())), OK);
    // One execute bit anywhere lets root execute.
    assert_eq!(errno_of(e.fs.access(f, X, &root())), OK);
}

#[test]
fn access_to_directories_and_the_mount_root() {
    let e = env();
    let b = e.bucket("bkt");
    let d = e.fs.mkdir(b, os("d"), 0o700, OWNER, GROUP).unwrap().ino;
    e.fs.chmod(d, 0o750).unwrap();
    assert_eq!(errno_of(e.fs.access(d, W | X, &owner())), OK);
    assert_eq!(errno_of(e.fs.access(d, X, &member())), OK);
    assert_eq!(errno_of(e.fs.access(d, W, &member())), EACCES);
    assert_eq!(errno_of(e.fs.access(d, X, &other())), EACCES);
    e.fs.chmod(d, 0).unwrap();
    // Root searches any directory.
    assert_eq!(errno_of(e.fs.access(d, R | W | X, &root())), OK);
    // The root shows 0755 (the backend's data directory is 0700, root's).
    assert_eq!(errno_of(e.fs.access(ROOT_INO, R | X, &other())), OK);
    assert_eq!(errno_of(e.fs.access(ROOT_INO, W, &other())), EACCES);
}

#[test]
fn access_is_the_kernels_under_default_permissions() {
    let e = env();
    let b = e.bucket("bkt");
    let f = e.file(b, "f", 0o000, &owner(), b"x");
    let kernel = fs_on(&e.engine, false, true);
    assert_eq!(errno_of(e.fs.access(f, R, &other())), EACCES);
    // The kernel has checked the mode bits before asking.
    look(&kernel, &["bkt", "f"]);
    assert_eq!(errno_of(kernel.access(f, R | W, &other())), OK);
}

// ------------------------------------------------------------- open(2)

#[test]
fn open_checks_the_access_mode_against_the_callers_class() {
    let e = env();
    let b = e.bucket("bkt");
    let f = e.file(b, "f", 0o640, &owner(), b"hello");
    let (rd, wr, rdwr) = (libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR);
    let cases = [
        ("owner rdwr", owner(), rdwr, OK),
        ("member rd", member(), rd, OK),
        ("member wr", member(), wr, EACCES),
        ("member rdwr", member(), rdwr, EACCES),
        // O_TRUNC writes, whatever the access mode says.
        ("member rd|trunc", member(), rd | libc::O_TRUNC, EACCES),
        ("other rd", other(), rd, EACCES),
        ("root rdwr", root(), rdwr, OK),
    ];
    for (what, p, flags, want) in cases {
        let r = e.fs.open(f, flags, &p);
        if let Ok(fh) = r {
            e.fs.release(f, fh);
        }
        assert_eq!(errno_of(r), want, "{what}");
    }
    // The refused O_TRUNC left the object alone.
    assert_eq!(e.content(f), b"hello");
}

#[test]
fn open_is_the_kernels_under_default_permissions() {
    let e = env();
    let b = e.bucket("bkt");
    let f = e.file(b, "f", 0o600, &owner(), b"hello");
    assert_eq!(errno_of(e.fs.open(f, libc::O_RDONLY, &other())), EACCES);
    let kernel = fs_on(&e.engine, false, true);
    look(&kernel, &["bkt", "f"]);
    let fh = kernel.open(f, libc::O_RDONLY, &other()).unwrap();
    assert_eq!(kernel.read(fh, 0, 100).unwrap(), b"hello");
    kernel.release(f, fh);
}

// -------------------------------------------------- set-id bits (KILLPRIV)

#[test]
fn setid_kill_follows_linux_rule() {
    let e = env();
    let b = e.bucket("bkt");
    let f = e.file(b, "f", 0o644, &owner(), b"x");
    let _ = f;
    let mut st = nix::sys::stat::stat(&e.engine.data_dir().join("bkt/f")).unwrap();
    let file = st.st_mode & libc::S_IFMT;
    let (suid, sgid) = (libc::S_ISUID, libc::S_ISGID);
    let cases = [
        // Set-user-ID goes for anyone.
        ("suid, owner", 0o4755, owner(), suid),
        // Set-group-ID with group execute is a set-group-ID program: goes.
        ("sgid g+x, member", 0o2775, member(), sgid),
        // Without group execute (mandatory locking's old mark) it stays
        // for callers in the group, and goes for those outside it.
        ("sgid g-x, member", 0o2764, member(), 0),
        ("sgid g-x, owner in group", 0o2764, owner(), 0),
        (
            "sgid g-x, owner outside",
            0o2764,
            owner_outside_group(),
            sgid,
        ),
        ("sgid g-x, other", 0o2766, other(), sgid),
        ("both, member", 0o6764, member(), suid),
        ("both g+x, other", 0o6777, other(), suid | sgid),
        ("plain", 0o777, other(), 0),
    ];
    for (what, perm, p, want) in cases {
        st.st_mode = file | perm;
        assert_eq!(setid_kill(&st, &p), want, "{what}");
    }
    // Only regular files lose them.
    st.st_mode = libc::S_IFDIR | 0o6777;
    assert_eq!(setid_kill(&st, &other()), 0, "directory");
}

#[test]
fn truncation_and_writes_clear_set_id_bits_by_the_callers_class() {
    let e = env();
    let b = e.bucket("bkt");
    // Group may write but not execute: set-group-ID stays for members.
    let f = e.file(b, "f", 0o6766, &owner(), b"hello");
    let c = AttrChanges {
        size: Some(2),
        ..AttrChanges::default()
    };
    let a = e.fs.setattr(f, &c, &member(), None).unwrap();
    assert_eq!((u32::from(a.perm), a.size), (0o2766, 2));
    let a = e.fs.setattr(f, &c, &other(), None).unwrap();
    assert_eq!(u32::from(a.perm), 0o0766);

    // A write flagged FUSE_WRITE_KILL_SUIDGID clears them; unflagged (the
    // kernel found CAP_FSETID) it does not.
    e.fs.chmod(f, 0o6766).unwrap();
    let fh = e.fs.open(f, libc::O_WRONLY, &member()).unwrap();
    e.fs.write(f, fh, 0, b"ab", false, &member()).unwrap();
    assert_eq!(e.perm(f), 0o6766);
    e.fs.write(f, fh, 0, b"ab", true, &member()).unwrap();
    assert_eq!(e.perm(f), 0o2766);
    e.fs.release(f, fh);

    // open(O_TRUNC) too (FUSE_ATOMIC_O_TRUNC leaves it to us).
    e.fs.chmod(f, 0o6777).unwrap();
    let fh =
        e.fs.open(f, libc::O_WRONLY | libc::O_TRUNC, &member())
            .unwrap();
    e.fs.release(f, fh);
    assert_eq!(e.perm(f), 0o0777);
}

#[test]
fn chown_clears_set_group_id_for_a_caller_outside_the_group() {
    let e = env();
    let b = e.bucket("bkt");
    // Set-group-ID without group execute: the backend's chown (made as
    // root) keeps it; the core drops it for a caller outside the group.
    let f = e.file(b, "f", 0o2740, &owner(), b"x");
    e.fs.setattr(f, &AttrChanges::default(), &owner(), None)
        .unwrap();
    assert_eq!(e.perm(f), 0o2740, "owner in the group keeps it");
    let a =
        e.fs.setattr(f, &AttrChanges::default(), &owner_outside_group(), None)
            .unwrap();
    assert_eq!(u32::from(a.perm), 0o0740);
    // chown(f, -1, -1) by someone else changes nothing (see chown_nothing).
    e.fs.chmod(f, 0o4740).unwrap();
    e.fs.setattr(f, &AttrChanges::default(), &other(), None)
        .unwrap();
    assert_eq!(e.perm(f), 0o4740);
    // A real chown by root: set-user-ID goes.
    let to_member = AttrChanges {
        uid: Some(1001),
        ..AttrChanges::default()
    };
    let a = e.fs.setattr(f, &to_member, &root(), None).unwrap();
    assert_eq!((a.uid, u32::from(a.perm)), (1001, 0o0740));
}

// ----------------------------------------------------------- read-only

#[test]
fn a_read_only_fs_refuses_every_change_itself() {
    // The mount test cannot show these: the kernel answers EROFS for a
    // read-only mount before asking the daemon. Here nothing stands
    // before `Fs::writable`.
    let e = env();
    let b = e.bucket("bkt");
    let f = e.file(b, "f", 0o644, &root(), b"hello");
    let d = e.fs.mkdir(b, os("d"), 0o755, 0, 0).unwrap().ino;
    let ro = fs_on(&e.engine, true, false);
    look(&ro, &["bkt", "f"]);
    look(&ro, &["bkt", "d"]);
    let p = root();
    let erofs = libc::EROFS;
    let x = os("user.x");
    let checks: [(&str, i32); 17] = [
        (
            "create",
            errno_of(ro.create_object(b, os("n"), 0o644, 0, &p)),
        ),
        ("mkdir", errno_of(ro.mkdir(b, os("n"), 0o755, 0, 0))),
        (
            "mkdir bucket",
            errno_of(ro.mkdir(ROOT_INO, os("nb"), 0o755, 0, 0)),
        ),
        (
            "mknod",
            errno_of(ro.mknod(b, os("n"), libc::S_IFIFO | 0o644, 0, &p)),
        ),
        (
            "symlink",
            errno_of(ro.symlink(b, os("n"), Path::new("f"), 0, 0)),
        ),
        ("link", errno_of(ro.link(f, b, os("n")))),
        ("unlink", errno_of(ro.unlink(b, os("f")))),
        ("rmdir", errno_of(ro.rmdir(b, os("d")))),
        ("rename", errno_of(ro.rename(b, os("f"), b, os("g"), 0))),
        ("open for writing", errno_of(ro.open(f, libc::O_RDWR, &p))),
        (
            "open O_TRUNC",
            errno_of(ro.open(f, libc::O_RDONLY | libc::O_TRUNC, &p)),
        ),
        (
            "setattr size",
            errno_of(ro.setattr(
                f,
                &AttrChanges {
                    size: Some(0),
                    ..Default::default()
                },
                &p,
                None,
            )),
        ),
        (
            "setattr mode",
            errno_of(ro.setattr(f, &mode(0o600), &p, None)),
        ),
        (
            "setattr chown -1 -1",
            errno_of(ro.setattr(f, &AttrChanges::default(), &p, None)),
        ),
        ("setxattr", errno_of(ro.setxattr(f, x, b"v", 0, &p))),
        ("removexattr", errno_of(ro.removexattr(f, x, &p))),
        ("access W", errno_of(ro.access(f, W, &p))),
    ];
    for (what, got) in checks {
        assert_eq!(got, erofs, "{what}");
    }
    // Writing through a handle opened for reading: the handle cannot
    // write, and the object is untouched.
    let fh = ro.open(f, libc::O_RDONLY, &p).unwrap();
    assert_eq!(
        errno_of(ro.write(f, fh, 0, b"j", false, &p)),
        erofs,
        "write"
    );
    ro.release(f, fh);
    // Everything is still there and unchanged; reading works.
    assert_eq!(errno_of(ro.access(f, R, &p)), OK);
    assert_eq!(e.content(f), b"hello");
    assert_eq!(errno_of(e.fs.lookup(b, os("g"))), libc::ENOENT);
    assert_eq!(errno_of(e.fs.lookup(b, os("n"))), libc::ENOENT);
    e.fs.lookup(b, os("d")).unwrap();
    let _ = d;
}

// ------------------------------------------------------------- setattr

#[test]
fn setattr_applies_times_after_the_truncation_that_moves_them() {
    let e = env();
    let b = e.bucket("bkt");
    let f = e.file(b, "f", 0o644, &owner(), b"hello world");
    let t = UNIX_EPOCH + Duration::new(1_000_000_000, 123_456_789);
    let c = AttrChanges {
        size: Some(5),
        mtime: Some(SetTime::At(t)),
        atime: Some(SetTime::At(t)),
        ..AttrChanges::default()
    };
    let a = e.fs.setattr(f, &c, &owner(), None).unwrap();
    assert_eq!((a.size, a.mtime, a.atime), (5, t, t));
    assert_eq!(e.content(f), b"hello");
}

#[test]
fn setattr_mode_asked_for_survives_the_chown_in_the_same_request() {
    let e = env();
    let b = e.bucket("bkt");
    let f = e.file(b, "f", 0o755, &root(), b"x");
    // chown clears set-user-ID; the mode asked for comes after it.
    let c = AttrChanges {
        uid: Some(OWNER),
        gid: Some(GROUP),
        mode: Some(0o4755),
        ..AttrChanges::default()
    };
    let a = e.fs.setattr(f, &c, &root(), None).unwrap();
    assert_eq!((a.uid, a.gid, u32::from(a.perm)), (OWNER, GROUP, 0o4755));
}

#[test]
fn setattr_times_before_1970_and_now() {
    let e = env();
    let b = e.bucket("bkt");
    let f = e.file(b, "f", 0o644, &owner(), b"x");
    let old = UNIX_EPOCH - Duration::new(86_400, 250_000_000);
    let c = AttrChanges {
        mtime: Some(SetTime::At(old)),
        ..AttrChanges::default()
    };
    assert_eq!(e.fs.setattr(f, &c, &owner(), None).unwrap().mtime, old);
    let before = SystemTime::now() - Duration::from_secs(1);
    let c = AttrChanges {
        mtime: Some(SetTime::Now),
        atime: Some(SetTime::Now),
        ..AttrChanges::default()
    };
    let a = e.fs.setattr(f, &c, &owner(), None).unwrap();
    assert!(a.mtime >= before && a.atime >= before);
}

#[test]
fn setattr_checks_who_may_change_what() {
    let e = env();
    let b = e.bucket("bkt");
    let f = e.file(b, "f", 0o664, &owner(), b"hello");
    let t = SetTime::At(UNIX_EPOCH + Duration::from_secs(5));
    let none = AttrChanges::default();
    let size = AttrChanges {
        size: Some(1),
        ..none
    };
    let times = AttrChanges {
        mtime: Some(t),
        ..none
    };
    let touch = AttrChanges {
        atime: Some(SetTime::Now),
        mtime: Some(SetTime::Now),
        ..none
    };
    let give = AttrChanges {
        uid: Some(1001),
        ..none
    };
    let keep_owner = AttrChanges {
        uid: Some(OWNER),
        ..none
    };
    let chgrp = |g| AttrChanges {
        gid: Some(g),
        ..none
    };
    let cases = [
        // Only the owner (or root) changes the mode.
        ("member chmod", mode(0o666), member(), EPERM),
        ("other chmod", mode(0o666), other(), EPERM),
        // Only root gives a file away; the owner may name themselves.
        ("owner gives away", give, owner(), EPERM),
        ("member takes", keep_owner, member(), EPERM),
        ("owner keeps", keep_owner, owner(), OK),
        // The owner may set one of their groups, nobody else any.
        (
            "owner chgrp to a group not theirs",
            chgrp(2002),
            owner(),
            EPERM,
        ),
        ("member chgrp to own group", chgrp(2001), member(), EPERM),
        // Truncation needs write permission.
        ("other truncate", size, other(), EACCES),
        ("member truncate", size, member(), OK),
        // Explicit times: the owner; now: anyone who may write.
        ("member sets times", times, member(), EPERM),
        ("member touches", touch, member(), OK),
        ("other touches", touch, other(), EACCES),
        ("owner sets times", times, owner(), OK),
        // (Last but one: the group changes, and with it who is a member.)
        (
            "owner chgrp to a supplementary group",
            chgrp(2003),
            Principal::new(OWNER, GROUP).with_groups(vec![2003]),
            OK,
        ),
        ("root gives away", give, root(), OK),
    ];
    for (what, c, p, want) in cases {
        let before = e.fs.getattr(f).unwrap();
        let r = e.fs.setattr(f, &c, &p, None);
        assert_eq!(errno_of(r), want, "{what}");
        if want != OK {
            // A refused request changed nothing.
            let after = e.fs.getattr(f).unwrap();
            assert_eq!(
                (after.perm, after.uid, after.gid, after.size, after.mtime),
                (
                    before.perm,
                    before.uid,
                    before.gid,
                    before.size,
                    before.mtime
                ),
                "{what}"
            );
        }
    }
}

#[test]
fn setattr_drops_set_group_id_the_owner_may_not_give() {
    let e = env();
    let b = e.bucket("bkt");
    let f = e.file(b, "f", 0o755, &owner(), b"x");
    let a = e.fs.setattr(f, &mode(0o2755), &owner(), None).unwrap();
    assert_eq!(u32::from(a.perm), 0o2755, "owner in the group");
    let a =
        e.fs.setattr(f, &mode(0o2755), &owner_outside_group(), None)
            .unwrap();
    assert_eq!(u32::from(a.perm), 0o0755, "owner outside the group");
}

#[test]
fn setattr_ftruncate_needs_no_write_permission_and_kernel_checks_skip_ours() {
    let e = env();
    let b = e.bucket("bkt");
    let f = e.file(b, "f", 0o644, &owner(), b"hello");
    let size = AttrChanges {
        size: Some(2),
        ..AttrChanges::default()
    };
    // ftruncate on a handle opened (by root here) for writing.
    let fh = e.fs.open(f, libc::O_RDWR, &root()).unwrap();
    e.fs.setattr(f, &size, &other(), Some(fh)).unwrap();
    e.fs.release(f, fh);
    assert_eq!(e.content(f), b"he");
    assert_eq!(
        errno_of(e.fs.setattr(f, &mode(0o600), &other(), None)),
        EPERM
    );
    let kernel = fs_on(&e.engine, false, true);
    look(&kernel, &["bkt", "f"]);
    kernel.setattr(f, &mode(0o600), &other(), None).unwrap();
    assert_eq!(e.perm(f), 0o600);
}

#[test]
fn setattr_refuses_what_the_kind_does_not_allow() {
    let e = env();
    let b = e.bucket("bkt");
    let size = AttrChanges {
        size: Some(0),
        ..AttrChanges::default()
    };
    let d = e.fs.mkdir(b, os("d"), 0o755, 0, 0).unwrap().ino;
    assert_eq!(
        errno_of(e.fs.setattr(d, &size, &root(), None)),
        libc::EISDIR
    );
    let l = e.fs.symlink(b, os("l"), Path::new("d"), 0, 0).unwrap().ino;
    assert_eq!(
        errno_of(e.fs.setattr(l, &size, &root(), None)),
        libc::EINVAL
    );
    assert_eq!(
        errno_of(e.fs.setattr(l, &mode(0o600), &root(), None)),
        libc::EOPNOTSUPP
    );
    // The root's mode and owner are fixed.
    assert_eq!(
        errno_of(e.fs.setattr(ROOT_INO, &mode(0o777), &root(), None)),
        EPERM
    );
    let own = AttrChanges {
        uid: Some(0),
        ..AttrChanges::default()
    };
    assert_eq!(errno_of(e.fs.setattr(ROOT_INO, &own, &root(), None)), EPERM);
}

#[test]
fn regression_read_only_open_with_o_trunc_emptied_the_object() {
    // open(O_RDONLY | O_TRUNC) passed the read-only check, which looked at
    // the access mode only, and then truncated the object to a new upload.
    let e = env();
    let b = e.bucket("bkt");
    let f = e.file(b, "f", 0o644, &root(), b"hello");
    let ro = fs_on(&e.engine, true, false);
    look(&ro, &["bkt", "f"]);
    let r = ro.open(f, libc::O_RDONLY | libc::O_TRUNC, &root());
    if let Ok(fh) = r {
        ro.release(f, fh);
    }
    assert_eq!(e.content(f), b"hello");
    assert_eq!(errno_of(r), libc::EROFS);
}

#[test]
fn regression_reencrypting_one_name_of_a_hard_link_showed_two_files_as_one_inode() {
    // setfattr of the encryption on one name of a hard-linked object
    // renamed a re-encrypted copy over that name only. The other name kept
    // the old backend file, whose inode number the mount still mapped to
    // the new one: both names showed one inode with one link each, and
    // bytes written through one name showed under the other until a
    // remount brought the old content back. Now refused (EMLINK).
    let e = env();
    let b = e.bucket("bkt");
    let f = e.file(b, "a", 0o644, &root(), b"old content");
    e.fs.link(f, b, os("b")).unwrap();
    let sse = os(super::xattrs::XA_SSE);
    let r = e.fs.setxattr(f, sse, b"AES256", 0, &root());
    assert_eq!(errno_of(r), libc::EMLINK);
    let (a, bb) = (look(&e.fs, &["bkt", "a"]), look(&e.fs, &["bkt", "b"]));
    assert_eq!((a, e.fs.getattr(a).unwrap().nlink), (bb, 2));
    let fh =
        e.fs.open(a, libc::O_WRONLY | libc::O_TRUNC, &root())
            .unwrap();
    e.fs.write(a, fh, 0, b"new", false, &root()).unwrap();
    e.fs.release(a, fh);
    let on_disk = |n: &str| std::fs::read(e.engine.data_dir().join("bkt").join(n)).unwrap();
    assert_eq!(on_disk("a"), on_disk("b"), "the names hold one file");
    // With one name left it re-encrypts.
    e.fs.unlink(b, os("b")).unwrap();
    e.fs.setxattr(f, sse, b"AES256", 0, &root()).unwrap();
    assert_eq!(e.content(f), b"new");
    assert_eq!(e.fs.getxattr(f, sse, &root()).unwrap(), b"AES256");
}

#[test]
fn regression_reencrypting_after_ln_and_rm_of_the_other_name_failed_with_enoent() {
    // A node remembered one name, the last it was seen under. After
    // `ln a b; rm b` that was the unlinked "b", and a re-encryption of "a"
    // (a new file renamed over a name the object still has) failed with
    // ENOENT until "a" was looked up again. Renaming over "b" left the
    // same dead name (it then held another file). None of these steps
    // looks "a" up again.
    let e = env();
    let b = e.bucket("bkt");
    let sse = os(super::xattrs::XA_SSE);
    let stored = |ino: u64| e.fs.getxattr(ino, sse, &root()).unwrap();
    // The names each node knows, most recent first (see `Links`).
    let names = |ino: u64| -> Vec<(u64, String)> {
        e.fs.links_of(ino)
            .into_iter()
            .map(|(p, n)| (p, n.into_string().unwrap()))
            .collect()
    };
    let at = |n: &str| (b, n.to_owned());

    // ln a b; rm b
    let f = e.file(b, "a", 0o644, &root(), b"one");
    e.fs.link(f, b, os("b")).unwrap();
    e.fs.unlink(b, os("b")).unwrap();
    assert_eq!(names(f), [at("a")]);
    e.fs.setxattr(f, sse, b"AES256", 0, &root()).unwrap();
    assert_eq!(
        (e.content(f), stored(f)),
        (b"one".to_vec(), b"AES256".to_vec())
    );

    // ln a b; mv x b (over it): "b" now holds x.
    e.fs.link(f, b, os("b")).unwrap();
    let x = e.file(b, "x", 0o644, &root(), b"other");
    e.fs.rename(b, os("x"), b, os("b"), 0).unwrap();
    assert_eq!((names(f), names(x)), (vec![at("a")], vec![at("b")]));
    e.fs.setxattr(f, sse, b"SM4", 0, &root()).unwrap();
    assert_eq!(
        (e.content(f), stored(f)),
        (b"one".to_vec(), b"SM4".to_vec())
    );
    assert_eq!(e.content(x), b"other");
    assert_eq!(look(&e.fs, &["bkt", "b"]), x);

    // ln a c; mv c d (away); rm a: only "d" is left.
    e.fs.link(f, b, os("c")).unwrap();
    e.fs.rename(b, os("c"), b, os("d"), 0).unwrap();
    e.fs.unlink(b, os("a")).unwrap();
    assert_eq!(names(f), [at("d")]);
    e.fs.setxattr(f, sse, b"AES256", 0, &root()).unwrap();
    assert_eq!(
        (e.content(f), stored(f)),
        (b"one".to_vec(), b"AES256".to_vec())
    );

    // ln d e; exchange e and b; rm d: "b" holds the object.
    e.fs.link(f, b, os("e")).unwrap();
    e.fs.rename(b, os("e"), b, os("b"), libc::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(
        (names(f), names(x)),
        (vec![at("b"), at("d")], vec![at("e")])
    );
    e.fs.unlink(b, os("d")).unwrap();
    assert_eq!(names(f), [at("b")]);
    e.fs.setxattr(f, sse, b"SM4", 0, &root()).unwrap();
    assert_eq!(
        (e.content(f), stored(f)),
        (b"one".to_vec(), b"SM4".to_vec())
    );
    assert_eq!(e.content(x), b"other");
    let on_disk = |n: &str| std::fs::read(e.engine.data_dir().join("bkt").join(n)).unwrap();
    assert!(on_disk("b").starts_with(b"SSEFSOBJ"));

    // A name removed behind the mount (on the backend) stays known, and is
    // passed over for the next one that holds the object.
    e.fs.link(f, b, os("g")).unwrap();
    std::fs::remove_file(e.engine.data_dir().join("bkt/g")).unwrap();
    assert_eq!(names(f), [at("g"), at("b")]);
    e.fs.setxattr(f, sse, b"AES256", 0, &root()).unwrap();
    assert_eq!(
        (e.content(f), stored(f)),
        (b"one".to_vec(), b"AES256".to_vec())
    );
    assert_eq!(look(&e.fs, &["bkt", "b"]), f);
    assert_eq!(look(&e.fs, &["bkt", "e"]), x);
}

#[test]
fn a_file_created_empty_gets_its_header_with_its_first_byte() {
    // Issue 13: every create wrote a 128-byte header, so each empty file
    // cost a data block to allocate, write back and free again (create
    // and unlink at 1M files). The header and key are still made at
    // create, under the rule then in force, but written with the first
    // byte; a file closed empty stays an empty backend file.
    let e = env();
    let b = e.bucket("bkt");
    let sse = os(super::xattrs::XA_SSE);
    e.fs.setxattr(b, sse, b"AES256", 0, &root()).unwrap();
    let on_disk = |n: &str| std::fs::read(e.engine.data_dir().join("bkt").join(n)).unwrap();

    // Closed empty: no header; it shows (and will get) the bucket's rule.
    let empty = e.file(b, "empty", 0o644, &root(), b"");
    assert_eq!(on_disk("empty").len(), 0, "a header was written at create");
    assert_eq!(e.fs.getxattr(empty, sse, &root()).unwrap(), b"AES256");
    assert_eq!(e.fs.getattr(empty).unwrap().size, 0);
    assert_eq!(e.content(empty), b"");

    // Written through the handle that created it: the rule in force at
    // the create, even if it changed before the first byte.
    let (fh, a) =
        e.fs.create_object(b, os("late"), 0o644, libc::O_RDWR, &root())
            .unwrap();
    e.fs.setxattr(b, sse, b"SM4", 0, &root()).unwrap();
    e.fs.write(a.ino, fh, 0, b"data", false, &root()).unwrap();
    e.fs.release(a.ino, fh);
    assert_eq!(e.content(a.ino), b"data");
    assert_eq!(e.fs.getxattr(a.ino, sse, &root()).unwrap(), b"AES256");
    assert!(on_disk("late").starts_with(b"SSEFSOBJ"));

    // The empty one takes the rule of its first write (now SM4).
    assert_eq!(e.fs.getxattr(empty, sse, &root()).unwrap(), b"SM4");
    let fh = e.fs.open(empty, libc::O_WRONLY, &root()).unwrap();
    e.fs.write(empty, fh, 0, b"x", false, &root()).unwrap();
    e.fs.release(empty, fh);
    assert_eq!(e.content(empty), b"x");
    assert_eq!(e.fs.getxattr(empty, sse, &root()).unwrap(), b"SM4");

    // The CLI reads an empty backend file as an empty object.
    let bkt = crate::oss::BucketName::parse("bkt").unwrap();
    e.file(b, "e2", 0o644, &root(), b"");
    let key = crate::oss::ObjectKey::parse("e2").unwrap();
    let info = e.engine.head_object(&bkt, &key).unwrap();
    assert_eq!(
        (info.size, info.algorithm),
        (0, Some(crate::oss::SseAlgorithm::Sm4))
    );
    let mut out = Vec::new();
    assert_eq!(
        e.engine.get_object(&root(), &bkt, &key, &mut out).unwrap(),
        0
    );
    let copy = crate::oss::ObjectKey::parse("e3").unwrap();
    e.engine
        .copy_object(&root(), (&bkt, &key), (&bkt, &copy), None)
        .unwrap();
    assert!(
        on_disk("e3").starts_with(b"SSEFSOBJ"),
        "a CLI copy has its header"
    );
}

// ------------------------------------------------------------ listing

/// One readdir (or readdirplus) reply of at most `room` entries from
/// `offset`, as the kernel asks: the entry after the last one fits is
/// refused. Each entry with the offset that follows it.
fn reply(e: &Env, dir: u64, fh: u64, plus: bool, offset: u64, room: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut take = |next: u64, name: &OsStr| {
        if out.len() == room {
            return true;
        }
        out.push((next, name.to_str().unwrap().to_owned()));
        false
    };
    if plus {
        e.fs.readdirplus(dir, fh, offset, |next, name, _| take(next, name))
            .unwrap();
    } else {
        e.fs.readdir(fh, offset, |_, next, _, name| take(next, name))
            .unwrap();
    }
    out
}

/// A whole listing in replies of `room` entries, each reply asked for at
/// the offset of the last entry of the one before (as getdents does);
/// `between` runs after each reply with its number.
fn whole_listing(
    e: &Env,
    dir: u64,
    plus: bool,
    room: usize,
    mut between: impl FnMut(usize),
) -> Vec<(u64, String)> {
    let fh = e.fs.opendir(dir).unwrap();
    let (mut all, mut offset) = (Vec::new(), 0);
    for n in 0.. {
        let got = reply(e, dir, fh, plus, offset, room);
        let Some(&(last, _)) = got.last() else { break };
        offset = last;
        all.extend(got);
        between(n);
    }
    e.fs.releasedir(fh);
    all
}

fn long_name(i: usize) -> String {
    format!("entry-with-a-longish-name-{i:05}")
}

#[test]
fn a_directory_larger_than_a_batch_lists_every_entry_once_while_it_changes() {
    // A listing streams from the backend in batches of 32 KiB (~580 of
    // these names); 3,000 entries take six. Entries made or removed during
    // the listing may show or not, but every other one shows exactly once.
    let e = env();
    let b = e.bucket("bkt");
    let back = e.engine.data_dir().join("bkt");
    for i in 0..3000 {
        std::fs::write(back.join(long_name(i)), b"").unwrap();
    }
    std::fs::write(back.join(".ssefs-hidden"), b"").unwrap();
    let removed = |i: usize| i % 10 == 3;
    for plus in [false, true] {
        for i in 0..3000 {
            if removed(i) {
                std::fs::write(back.join(long_name(i)), b"").unwrap();
            }
        }
        let fresh = |j: usize| format!("new-{plus}-{j}");
        let all = whole_listing(&e, b, plus, 97, |n| {
            if n == 4 {
                for i in (0..3000).filter(|&i| removed(i)) {
                    std::fs::remove_file(back.join(long_name(i))).unwrap();
                }
                for j in 0..300 {
                    std::fs::write(back.join(fresh(j)), b"").unwrap();
                }
            }
        });
        let mut seen = std::collections::HashMap::<&str, usize>::new();
        for (_, name) in &all {
            *seen.entry(name.as_str()).or_default() += 1;
        }
        assert_eq!(seen.get("."), Some(&1), "plus {plus}");
        assert_eq!(seen.get(".."), Some(&1), "plus {plus}");
        for i in 0..3000 {
            let n = seen.get(long_name(i).as_str()).copied().unwrap_or(0);
            if removed(i) {
                assert!(n <= 1, "{} shown {n} times (plus {plus})", long_name(i));
            } else {
                assert_eq!(n, 1, "{} (plus {plus})", long_name(i));
            }
        }
        for j in 0..300 {
            assert!(seen.get(fresh(j).as_str()).copied().unwrap_or(0) <= 1);
        }
        let known =
            |n: &str| n == "." || n == ".." || n.starts_with("entry-with") || n.starts_with("new-");
        assert!(
            seen.keys().all(|n| known(n)),
            "{:?}",
            seen.keys().find(|n| !known(n))
        );
        // The removed entries are read back only in the batches read
        // before the removal: most of them are gone from the listing.
        let shown_removed = (0..3000)
            .filter(|&i| removed(i) && seen.contains_key(long_name(i).as_str()))
            .count();
        assert!(shown_removed < 300, "plus {plus}: {shown_removed}");
    }
}

#[test]
fn readdir_resumes_at_an_offset_from_an_earlier_reply() {
    // telldir/seekdir: the kernel asks for the entries after any offset it
    // was given, on the same handle, in any order; 0 starts again.
    let e = env();
    let b = e.bucket("bkt");
    let back = e.engine.data_dir().join("bkt");
    for i in 0..2000 {
        std::fs::write(back.join(long_name(i)), b"").unwrap();
    }
    let full = whole_listing(&e, b, false, 64, |_| {});
    assert_eq!(full.len(), 2002);
    let fh = e.fs.opendir(b).unwrap();
    // Read to the end first, so that each resume below has to seek.
    let first = reply(&e, b, fh, false, 0, usize::MAX);
    assert_eq!(first, full);
    for k in [1500, 0, 1, 700, 2000, 1999, 3] {
        let plus = k % 2 == 1;
        let rest = reply(&e, b, fh, plus, full[k].0, usize::MAX);
        assert_eq!(rest, full[k + 1..], "after entry {k} (plus {plus})");
    }
    // The last offset: nothing after it.
    assert!(reply(&e, b, fh, false, full[2001].0, usize::MAX).is_empty());
    // Offset 0 again: the whole listing, from the start.
    assert_eq!(reply(&e, b, fh, false, 0, 10), full[..10]);
    // An entry refused is the first of the next reply, at the offset of
    // the one before it.
    let two = reply(&e, b, fh, true, full[500].0, 2);
    assert_eq!(two, full[501..503]);
    let next = reply(&e, b, fh, true, two[1].0, 1);
    assert_eq!(next, full[503..504]);
    e.fs.releasedir(fh);
}

#[test]
fn the_mount_root_lists_buckets_only() {
    let e = env();
    e.bucket("bkt");
    e.bucket("other");
    std::fs::write(e.engine.data_dir().join("a-file"), b"").unwrap();
    std::fs::create_dir(e.engine.data_dir().join("Not_A_Bucket")).unwrap();
    for plus in [false, true] {
        let mut names: Vec<String> = whole_listing(&e, ROOT_INO, plus, 1, |_| {})
            .into_iter()
            .map(|(_, n)| n)
            .collect();
        names.sort();
        assert_eq!(names, [".", "..", "bkt", "other"], "plus {plus}");
    }
}

// ------------------------------------------------------------ inode table

#[test]
fn a_sweep_right_after_a_burst_of_lookups_finds_entries_to_drop() {
    // After a burst every node is marked used. A sweep of one lap only
    // cleared the marks and asked for nothing, and the trimmer slept while
    // the table grew on (a 1M-file stat doubled it); the second lap takes
    // the nodes the first lap passed.
    let e = env();
    let b = e.bucket("bkt");
    for i in 0..40 {
        std::fs::write(e.engine.data_dir().join("bkt").join(format!("f{i}")), b"").unwrap();
    }
    let fs = Fs::new(
        e.engine.clone(),
        FsOptions {
            read_only: false,
            kernel_checks_permissions: false,
            mount_dev: Arc::new(OnceLock::new()),
            max_inodes: 16,
            file_handles: true,
        },
    )
    .unwrap();
    let bkt = fs.lookup(ROOT_INO, os("bkt")).unwrap().ino;
    assert_eq!(bkt, b);
    for i in 0..40 {
        fs.lookup(bkt, os(&format!("f{i}"))).unwrap();
    }
    let known = fs.known_inodes();
    assert_eq!(known, 42, "40 files, the bucket and the root");
    let stale = fs.stale_entries();
    assert_eq!(stale.len(), known - 16 + 16 / 8);
    let mut names: Vec<_> = stale
        .iter()
        .map(|(parent, name)| {
            assert_eq!(*parent, bkt);
            name.clone()
        })
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), stale.len(), "an entry asked for twice");
}
