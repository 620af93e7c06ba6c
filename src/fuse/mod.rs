//! `ssefs mount`: mount options, the daemon's life cycle (background start,
//! signals, clean unmount, stale-mount recovery) and the FUSE adapter.

mod adapter;
mod uring;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, Session, SessionACL};
use nix::sys::signal::{SigSet, Signal};

use crate::engine::{Engine, STATE_DIR};
use crate::error::{Error, IoContext, OssCode, Result};
use crate::fs::store::{StoreFs, StoreOptions};
use crate::fs::{Fs, FsOps, FsOptions};
use crate::kms::{RootKeySource, KEYSTORE_FILE};
use crate::mountinfo;

pub use adapter::SsefsFuse;
// The options are the service layer's (config file and `-o`); re-exported
// for the callers that mount.
pub use crate::service::MountOpts;

/// Is `path` the mount point of a live mount of ours? Reads mountinfo, as
/// bytes: mount points need not be UTF-8.
pub fn is_mounted(path: &Path) -> bool {
    !fuse_mount_ids(path).is_empty()
}

/// The mount ids (mountinfo's first field) of the FUSE mounts at `path`.
fn fuse_mount_ids(path: &Path) -> Vec<u64> {
    mountinfo::fuse_mounts_at(path)
        .iter()
        .map(|e| e.mount_id)
        .collect()
}

/// The device number (major, minor) of the topmost FUSE mount at `path`.
fn mount_dev(path: &Path) -> Option<(u32, u32)> {
    mountinfo::fuse_mounts_at(path).last()?.dev
}

/// The kernel's readahead window for the mount, in KiB (its default is
/// 128). FUSE's INIT can only lower the window the kernel offers, so the
/// daemon raises it afterwards through the mount's backing device info.
/// With 128 KiB a sequential read reached the daemon as 128 KiB requests,
/// about one at a time; with this window it comes as 1 MiB requests
/// (`max_pages`, from max_write), several in flight, which the worker
/// threads decrypt in parallel. Random reads are not affected: the kernel
/// reads ahead only for a sequential stream.
const READAHEAD_KB: u32 = 4096;

/// Sets the readahead window of the FUSE mount `dev` (after the INIT
/// handshake, which would lower it again). Only root may write the sysfs
/// file; anyone else keeps the kernel's default, which costs speed only.
fn deepen_readahead((major, minor): (u32, u32)) {
    let path = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    if let Err(e) = std::fs::write(&path, READAHEAD_KB.to_string()) {
        tracing::debug!("cannot set {path} ({e}): the kernel's readahead window stays");
    }
}

/// Cleans up a dead mount ("Transport endpoint is not connected") left at
/// `mp` by a daemon that died. statfs always asks the daemon; a stat may be
/// answered from the kernel's attribute cache for a while after the death.
/// A request sent while the dying daemon's threads still hold the device
/// ends with ECONNABORTED rather than ENOTCONN: dead all the same.
fn clear_dead_mount(mp: &Path) -> Result<()> {
    match nix::sys::statfs::statfs(mp) {
        Err(nix::errno::Errno::ENOTCONN | nix::errno::Errno::ECONNABORTED) => {
            tracing::warn!(mountpoint = %mp.display(), "cleaning up a dead mount");
            let ok = if nix::unistd::geteuid().is_root() {
                nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH).is_ok()
            } else {
                false
            };
            if !ok {
                let st = Command::new("fusermount3")
                    .arg("-uz")
                    .arg(mp)
                    .status()
                    .ctx("fusermount3")?;
                if !st.success() {
                    return Err(Error::new(
                        OssCode::InternalError,
                        "could not clean up the dead mount",
                    )
                    .resource(mp.display().to_string()));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Mounts in the foreground and serves until unmounted or signalled.
/// `on_ready` runs once the mount is up; `on_stopping` when a signal asks
/// it to stop (the service layer tells systemd, so this layer need not know
/// about it).
pub fn run_foreground(
    data_dir: &Path,
    root: &RootKeySource,
    mp: &Path,
    opts: &MountOpts,
    on_ready: impl FnOnce(),
    on_stopping: impl FnOnce() + Send + 'static,
) -> Result<()> {
    let sigs = prepare(mp)?;
    let engine = Arc::new(Engine::open_or_init(data_dir, root)?.with_cache(opts.cache_mb << 20));
    let dev_cell = Arc::new(std::sync::OnceLock::new());
    let fs = Arc::new(Fs::new(
        engine,
        FsOptions {
            read_only: opts.read_only,
            kernel_checks_permissions: opts.kernel_checks_permissions(),
            mount_dev: dev_cell.clone(),
            max_inodes: opts.max_inodes,
            file_handles: true,
        },
    )?);
    let source = data_dir.display().to_string();
    let state_dir = data_dir.join(STATE_DIR);
    let local = fs.clone();
    serve(
        fs,
        Mounted {
            sigs,
            source: &source,
            mp,
            opts,
            kernel_checks: opts.kernel_checks_permissions(),
        },
        on_ready,
        on_stopping,
        move |notifier| {
            if let Some(dev) = mount_dev(mp) {
                let _ = dev_cell.set(dev);
                deepen_readahead(dev);
            }
            watch_key_states(&state_dir, local.clone(), notifier.clone());
            trim_inodes(local, notifier);
        },
    )?;
    // Everything was written through; make it durable before exiting.
    if let Ok(d) = std::fs::File::open(data_dir) {
        let _ = nix::unistd::syncfs(&d);
    }
    tracing::info!(mountpoint = %mp.display(), "unmounted");
    Ok(())
}

/// Mounts buckets on an S3-compatible store in the foreground
/// (`crate::fs::store`), as `run_foreground` mounts a data directory.
/// The kernel always checks mode bits: the store's metadata is its own.
pub fn run_foreground_store(
    store: Arc<crate::backend::s3::S3Backend>,
    root: &RootKeySource,
    mp: &Path,
    opts: &MountOpts,
    on_ready: impl FnOnce(),
    on_stopping: impl FnOnce() + Send + 'static,
) -> Result<()> {
    use crate::backend::Backend;
    let sigs = prepare(mp)?;
    // The keystore's and the settings' versions are asked on every open
    // and create: trusted for the metadata TTL, as listings are.
    store.trust_versions_for(Duration::from_millis(opts.meta_ttl_ms));
    let backend: Arc<dyn Backend> = store.clone();
    let engine = Arc::new(Engine::open_store(backend, root)?);
    let source = store.describe();
    let fs = Arc::new(StoreFs::new(
        engine,
        store,
        StoreOptions {
            meta_ttl: Duration::from_millis(opts.meta_ttl_ms),
            read_only: opts.read_only,
        },
    ));
    serve(
        fs,
        Mounted {
            sigs,
            source: &source,
            mp,
            opts,
            kernel_checks: true,
        },
        on_ready,
        on_stopping,
        |_| {},
    )?;
    tracing::info!(mountpoint = %mp.display(), "unmounted");
    Ok(())
}

/// Checks the mount point and sets the process up for serving: signals
/// blocked (one thread takes them), no umask, malloc and descriptor limits.
fn prepare(mp: &Path) -> Result<SigSet> {
    clear_dead_mount(mp)?;
    if is_mounted(mp) {
        return Err(Error::new(OssCode::InvalidArgument, "already mounted")
            .resource(mp.display().to_string()));
    }
    // Signals are taken by one thread with sigwait; block them everywhere
    // first so no worker thread takes them.
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block()
        .map_err(|e| Error::new(OssCode::InternalError, format!("sigmask: {e}")))?;
    // Modes of new inodes arrive with the caller's umask already applied;
    // the daemon's own umask must not strip them again.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    limit_malloc_growth();
    raise_fd_limit();
    Ok(sigs)
}

/// A mount about to be served.
struct Mounted<'a> {
    sigs: SigSet,
    /// The source in /proc/mounts: the data directory or the store.
    source: &'a str,
    mp: &'a Path,
    opts: &'a MountOpts,
    kernel_checks: bool,
}

/// Mounts `fs` and serves it until unmounted or signalled. `after_mount`
/// runs once the kernel answered INIT, with a notifier for the session.
fn serve<F: FsOps>(
    fs: Arc<F>,
    m: Mounted<'_>,
    on_ready: impl FnOnce(),
    on_stopping: impl FnOnce() + Send + 'static,
    after_mount: impl FnOnce(fuser::Notifier),
) -> Result<()> {
    let Mounted {
        sigs,
        source,
        mp,
        opts,
        kernel_checks,
    } = m;
    let mut mount_options = vec![
        // The source in /proc/mounts and findmnt.
        MountOption::FSName(source.to_owned()),
        // The type "fuse.ssefs". fuser's own Subtype option only reaches
        // fusermount3; its direct mount(2), which root takes, hard-codes
        // type "fuse". As a kernel option ("subtype=", which the fuse module
        // takes since Linux 5.1) it reaches both: fusermount3 receives the
        // same "-o subtype=ssefs" it would from Subtype.
        MountOption::CUSTOM("subtype=ssefs".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if kernel_checks {
        mount_options.push(MountOption::DefaultPermissions);
    }
    if opts.read_only {
        mount_options.push(MountOption::RO);
    }
    let mut config = Config::default();
    config.mount_options = mount_options;
    config.acl = if opts.allow_other {
        SessionACL::All
    } else if opts.allow_root {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads);
    config.clone_fd = true;
    let rings = if opts.io_uring {
        prepare_rings(opts.threads)
    } else {
        None
    };
    let agreed = rings.as_ref().map(|_| Arc::new(AtomicBool::new(false)));
    let mut session = Session::new(
        SsefsFuse {
            fs: fs.clone(),
            uring: agreed.clone(),
        },
        mp,
        &config,
    )
    .ctx(format!("mount {}", mp.display()))?;
    // INIT is done: if the kernel agreed to io_uring it now holds every
    // request until each CPU's queue has an entry, so the rings start
    // before anything else waits on the mount.
    let running = match (rings, agreed) {
        (Some(rings), Some(agreed)) if agreed.load(Ordering::Acquire) => {
            let ring_fs = fs.clone();
            match rings.start(&session, move || SsefsFuse {
                fs: ring_fs.clone(),
                uring: None,
            }) {
                Ok(r) => Some(r),
                Err(e) => {
                    // The kernel would hold requests for rings that never
                    // come: unmount rather than hang.
                    let _ = session.unmount();
                    return Err(Error::new(
                        OssCode::InternalError,
                        format!("FUSE over io_uring was agreed but its rings could not start: {e}"),
                    ));
                }
            }
        }
        _ => None,
    };
    after_mount(session.notifier());
    let mut unmounter = session.unmount_callable();
    let mp_owned = mp.to_path_buf();
    std::thread::spawn(move || {
        if let Ok(sig) = sigs.wait() {
            tracing::info!(signal = ?sig, mountpoint = %mp_owned.display(), "unmounting");
            on_stopping();
            if unmounter.unmount().is_err() {
                let _ = nix::mount::umount2(&mp_owned, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    });
    tracing::info!(mountpoint = %mp.display(), source, "mounted");
    on_ready();
    let served = session.run().ctx("fuse session");
    if let Some(r) = running {
        r.stop();
    }
    served
}

/// The io_uring queues for `-o io_uring`, or None (and one log line saying
/// why) when this machine cannot have them: the mount then serves over
/// /dev/fuse as without the option.
fn prepare_rings(threads: usize) -> Option<uring::Prepared> {
    if !uring::kernel_enabled() {
        tracing::warn!(
            "FUSE over io_uring not enabled in the kernel (the fuse module's enable_uring is N, or Linux is older than 6.14): serving over /dev/fuse"
        );
        return None;
    }
    match uring::Prepared::new(adapter::MAX_WRITE as usize, threads) {
        Ok(p) => {
            tracing::debug!(queues = p.queues(), "io_uring queues prepared");
            Some(p)
        }
        Err(e) => {
            tracing::warn!("FUSE over io_uring unavailable ({e}): serving over /dev/fuse");
            None
        }
    }
}

/// Disabling a CMK must stop reads of objects under it that are already
/// open. Reads that reach the daemon check the key; pages the kernel has
/// cached would still be served, so whenever the keystore is replaced (by
/// `ssefs kms ...` or any writer) the cached pages of open objects whose
/// key is no longer usable are dropped.
fn watch_key_states(state_dir: &Path, fs: Arc<Fs>, notifier: fuser::Notifier) {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let watch = Inotify::init(InitFlags::IN_CLOEXEC).and_then(|i| {
        i.add_watch(
            state_dir,
            AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
        )
        .map(|_| i)
    });
    let inotify = match watch {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(
                "cannot watch the keystore ({e}): reads of open objects may be served from the page cache after their key is disabled"
            );
            return;
        }
    };
    std::thread::spawn(move || {
        while let Ok(events) = inotify.read_events() {
            let keystore = events
                .iter()
                .any(|e| e.name.as_deref() == Some(std::ffi::OsStr::new(KEYSTORE_FILE)));
            if !keystore {
                continue;
            }
            for ino in fs.open_inodes_with_unusable_keys() {
                // The inode may be gone from the kernel already: nothing
                // cached then.
                let _ = notifier.inval_inode(fuser::INodeNo(ino), 0, 0);
            }
        }
    });
}

/// Threads that send one sweep's FUSE_NOTIFY_INVAL_ENTRYs. The kernel takes
/// the directory's lock for each, so in one large directory every one
/// waited for a lookup in flight there: one thread dropped ~9,000 entries a
/// second against ~20,000 lookups, and a stat of 1M files in one directory
/// grew the table to 233,000-260,000 nodes (52-63 MiB). With four queued
/// behind each lookup it stayed under 126,000 (28 MiB), the stat no slower
/// (bench/results/2026-12-04-memory.md).
const INVAL_THREADS: usize = 4;

/// Keeps the inode table within `max_inodes`: the kernel forgets inodes
/// only under memory pressure, so past the limit it is asked to drop the
/// entries of the least recently used (FUSE_NOTIFY_INVAL_ENTRY), and then
/// forgets their inodes as for any other reason. The kernel takes the
/// directory's lock for each, so this runs on its own threads, never in a
/// request (which may hold that lock already).
fn trim_inodes(fs: Arc<Fs>, notifier: fuser::Notifier) {
    let spawned = std::thread::Builder::new()
        .name("trim-inodes".into())
        .spawn(move || {
            let mut first = true;
            loop {
            let stale = fs.stale_entries();
            if std::mem::take(&mut first) {
                tracing::info!(
                    known = fs.known_inodes(),
                    "more inodes known than max_inodes: asking the kernel to forget the least recently used"
                );
            }
            let asked = stale.len();
            tracing::debug!(known = fs.known_inodes(), asked, "trimming inodes");
            let per = stale.len().div_ceil(INVAL_THREADS).max(1);
            std::thread::scope(|s| {
                for part in stale.chunks(per) {
                    let n = notifier.clone();
                    let spawned = std::thread::Builder::new()
                        .spawn_scoped(s, move || send_inval(&n, part));
                    if spawned.is_err() {
                        // No thread: its share is sent from here.
                        send_inval(&notifier, part);
                    }
                }
            });
            // Let the kernel's FORGETs arrive before looking again, or the
            // same entries would be asked for twice; longer when nothing
            // could be dropped (all directories, open or used just now),
            // so that a full table does not cost a sweep every 20 ms.
            let idle = if asked == 0 { 500 } else { 20 };
            std::thread::sleep(Duration::from_millis(idle));
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the inode trimmer ({e}): the daemon remembers every inode the kernel does");
    }
}

/// Asks the kernel to drop each entry (directory, name).
fn send_inval(notifier: &fuser::Notifier, entries: &[(u64, std::ffi::OsString)]) {
    for (parent, name) in entries {
        // ENOENT: the kernel has dropped the entry already.
        let _ = notifier.inval_entry(fuser::INodeNo(*parent), name);
    }
}

/// Starts the daemon in the background (this binary again, with
/// `--foreground`) and returns once the mount answers.
pub fn spawn_background(
    data_dir: &Path,
    mp: &Path,
    args: &[std::ffi::OsString],
    env: &[(&str, &str)],
) -> Result<()> {
    clear_dead_mount(mp)?;
    // Private whatever the umask: the daemon makes the rest of the state
    // directory itself, but its log goes here first.
    for d in [data_dir.to_path_buf(), data_dir.join(STATE_DIR)] {
        crate::backend::strict::create_private_dir(&d).ctx(d.display())?;
    }
    crate::backend::PosixBackend::check_private(data_dir)?;
    let log_path: PathBuf = data_dir.join(STATE_DIR).join("mount.log");
    spawn_logged(&log_path, mp, args, env)
}

/// Starts `ssefs ARGS --foreground` as a daemon in its own session,
/// logging to `log_path`, and returns once its mount answers at `mp`.
pub fn spawn_logged(
    log_path: &Path,
    mp: &Path,
    args: &[std::ffi::OsString],
    env: &[(&str, &str)],
) -> Result<()> {
    clear_dead_mount(mp)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .ctx(log_path.display())?;
    let exe = std::env::current_exe().ctx("current_exe")?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .envs(env.iter().copied())
        .arg("--foreground")
        // The daemon is not the main process of whatever unit runs us (a
        // mount unit, a shell): it must not speak for it to systemd.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(log.try_clone().ctx("log")?)
        .stderr(log);
    // Its own session: the daemon outlives the shell that started it.
    // SAFETY: setsid is async-signal-safe and touches no Rust state.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        });
    }
    // Waits for a mount that was not there before: one that the daemon
    // still found dead (and clears itself) must not count as ours.
    let before = fuse_mount_ids(mp);
    let mut child = cmd.spawn().ctx("spawn daemon")?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if fuse_mount_ids(mp).iter().any(|id| !before.contains(id)) {
            return Ok(());
        }
        if let Some(status) = child.try_wait().ctx("daemon")? {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let msg = tail.into_iter().rev().collect::<Vec<_>>().join(" | ");
            return Err(Error::new(
                OssCode::InternalError,
                format!("the mount daemon exited ({status}): {msg}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(Error::new(
        OssCode::InternalError,
        "the mount did not come up within 60 s",
    )
    .resource(mp.display().to_string()))
}

/// Known inodes cost no descriptor each where the backend makes file
/// handles (see `crate::fs`), but a backend without them, open objects and
/// the descriptor cache (sized from this limit) still use them: the soft
/// limit goes up to the hard one, as the process may do on its own.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let soft = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!(
                    "cannot raise the open-file limit from {soft} to {}: {}",
                    lim.rlim_max,
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// Keeps the daemon's resident memory close to what it actually holds.
/// Requests allocate buffers of up to 1 MiB; glibc's dynamic mmap threshold
/// would start serving those from per-thread arenas after the first free,
/// where fragmentation keeps them resident. A fixed threshold returns them to
/// the kernel on free.
///
/// One arena: the chunk cache's 16 KiB buffers are allocated by whichever
/// thread serves a request and freed by whichever evicts them, and space
/// freed in one arena serves only the threads bound to it. With two, each
/// arena grew at times to hold most of the 64 MiB cache: peaks of 95-114
/// MiB over /dev/fuse and 138-142 MiB over io_uring (whose pinned ring
/// threads split the work differently), against 76-81 MiB with one, with
/// speed unchanged within the noise on 2 cores
/// (bench/results/2026-12-04-memory.md).
/// `MALLOC_ARENA_MAX` in the environment, if set, is left to glibc, for
/// machines where many threads would contend for the one arena.
fn limit_malloc_growth() {
    let arenas = std::env::var_os("MALLOC_ARENA_MAX").is_none();
    // SAFETY: mallopt only tunes the allocator; called before any worker
    // thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        if arenas {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}
