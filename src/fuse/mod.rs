//! `ssefs mount`: mount options, the daemon's life cycle (background start,
//! signals, clean unmount, stale-mount recovery) and the FUSE adapter.

mod adapter;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, Session, SessionACL};
use nix::sys::signal::{SigSet, Signal};

use crate::engine::{Engine, STATE_DIR};
use crate::error::{Error, IoContext, OssCode, Result};
use crate::fs::{Fs, FsOptions};
use crate::kms::RootKeySource;

pub use adapter::SsefsFuse;

/// Parsed `-o` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOpts {
    pub allow_other: bool,
    pub allow_root: bool,
    pub read_only: bool,
    /// FUSE worker threads.
    pub threads: usize,
    /// MiB of decrypted chunks kept in memory.
    pub cache_mb: usize,
}

impl Default for MountOpts {
    fn default() -> Self {
        MountOpts {
            allow_other: false,
            allow_root: false,
            read_only: false,
            threads: 4,
            cache_mb: 64,
        }
    }
}

impl MountOpts {
    /// Parses comma-separated options. Generic mount(8)/fstab options that
    /// mean nothing to a FUSE filesystem are accepted and ignored; anything
    /// else unknown is an error, so a typo never silently does nothing.
    pub fn parse(list: &[String]) -> Result<MountOpts> {
        MountOpts::default().with(list)
    }

    /// These options with `list` (as for [`MountOpts::parse`]) on top: the
    /// command line's `-o` over the config file's keys.
    pub fn with(self, list: &[String]) -> Result<MountOpts> {
        let mut o = self;
        for opt in list
            .iter()
            .flat_map(|s| s.split(','))
            .filter(|s| !s.is_empty())
        {
            let (k, v) = opt
                .split_once('=')
                .map(|(k, v)| (k, Some(v)))
                .unwrap_or((opt, None));
            let bad = |why: &str| {
                Error::new(
                    OssCode::InvalidArgument,
                    format!("mount option {opt:?}: {why}"),
                )
            };
            match (k, v) {
                // The two exclude each other; the later one wins, so `-o`
                // can override the config file's choice.
                ("allow_other", None) => (o.allow_other, o.allow_root) = (true, false),
                ("allow_root", None) => (o.allow_other, o.allow_root) = (false, true),
                ("ro", None) => o.read_only = true,
                ("rw", None) => o.read_only = false,
                // Always on: the kernel checks mode bits for every caller.
                ("default_permissions", None) => {}
                ("cache_mb", Some(n)) => {
                    o.cache_mb = n
                        .parse()
                        .ok()
                        .filter(|n| *n <= 1 << 20)
                        .ok_or_else(|| bad("a number of MiB"))?
                }
                ("threads", Some(n)) => {
                    o.threads = n
                        .parse()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .ok_or_else(|| bad("1 to 64"))?
                }
                (
                    "defaults" | "_netdev" | "auto" | "noauto" | "nofail" | "user" | "nouser"
                    | "users" | "dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec" | "atime"
                    | "noatime" | "relatime" | "async",
                    None,
                ) => {}
                (k, _) if k.starts_with("x-") || k.starts_with("comment=") => {}
                _ => return Err(bad("unknown option")),
            }
        }
        Ok(o)
    }
}

/// Is `path` the mount point of a live mount of ours? Reads mountinfo.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(canon) = path.canonicalize() else {
        return false;
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines().any(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        let mp = fields.get(4).map(|s| unescape(s)).unwrap_or_default();
        let fstype = l
            .split(" - ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or("");
        Path::new(&mp) == canon && (fstype == "fuse" || fstype.starts_with("fuse."))
    })
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?');
            out.push(v as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Cleans up a dead mount ("Transport endpoint is not connected") left at
/// `mp` by a daemon that died. statfs always asks the daemon; a stat may be
/// answered from the kernel's attribute cache for a while after the death.
fn clear_dead_mount(mp: &Path) -> Result<()> {
    match nix::sys::statfs::statfs(mp) {
        Err(nix::errno::Errno::ENOTCONN) => {
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
pub fn run_foreground(
    data_dir: &Path,
    root: &RootKeySource,
    mp: &Path,
    opts: &MountOpts,
    on_ready: impl FnOnce(),
) -> Result<()> {
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
    let engine = Arc::new(Engine::open_or_init(data_dir, root)?.with_cache(opts.cache_mb << 20));
    let fs = Arc::new(Fs::new(
        engine,
        FsOptions {
            read_only: opts.read_only,
        },
    )?);
    let mut mount_options = vec![
        MountOption::FSName(data_dir.display().to_string()),
        MountOption::Subtype("ssefs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
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
    let mut session =
        Session::new(SsefsFuse { fs }, mp, &config).ctx(format!("mount {}", mp.display()))?;
    let mut unmounter = session.unmount_callable();
    let mp_owned = mp.to_path_buf();
    std::thread::spawn(move || {
        if let Ok(sig) = sigs.wait() {
            tracing::info!(signal = ?sig, mountpoint = %mp_owned.display(), "unmounting");
            crate::service::notify::stopping();
            if unmounter.unmount().is_err() {
                let _ = nix::mount::umount2(&mp_owned, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    });
    tracing::info!(mountpoint = %mp.display(), data_dir = %data_dir.display(), "mounted");
    on_ready();
    session.run().ctx("fuse session")?;
    // Everything was written through; make it durable before exiting.
    if let Ok(d) = std::fs::File::open(data_dir) {
        let _ = nix::unistd::syncfs(&d);
    }
    tracing::info!(mountpoint = %mp.display(), "unmounted");
    Ok(())
}

/// Starts the daemon in the background (this binary again, with
/// `--foreground`) and returns once the mount answers.
pub fn spawn_background(data_dir: &Path, mp: &Path, args: &[String]) -> Result<()> {
    clear_dead_mount(mp)?;
    std::fs::create_dir_all(data_dir.join(STATE_DIR)).ctx(data_dir.display())?;
    let log_path: PathBuf = data_dir.join(STATE_DIR).join("mount.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .ctx(log_path.display())?;
    let exe = std::env::current_exe().ctx("current_exe")?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
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
    let mut child = cmd.spawn().ctx("spawn daemon")?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if is_mounted(mp) {
            return Ok(());
        }
        if let Some(status) = child.try_wait().ctx("daemon")? {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
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

/// Keeps the daemon's resident memory close to what it actually holds.
/// Requests allocate buffers of up to 1 MiB; glibc's dynamic mmap threshold
/// would start serving those from per-thread arenas after the first free,
/// where fragmentation keeps them resident. A fixed threshold returns them to
/// the kernel on free, and two arenas bound the per-thread caches.
fn limit_malloc_growth() {
    // SAFETY: mallopt only tunes the allocator; called before any worker
    // thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
