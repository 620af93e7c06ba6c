//! Which files a store mount has changed but not uploaded yet, on this
//! host's disk, so that a daemon killed in between (kill -9, a crash)
//! leaves a trace: the next mount of the store reports each such file,
//! once, in its log (docs/SEMANTICS.md §12). The changes themselves are
//! lost with the daemon, as unflushed writes are on any filesystem.
//!
//! One small file per changed open file in `STATE_DIR/dirty/STORE/`, named
//! `PID-INO`, holding `PATH\nSINCE\n` (the mount path and the Unix time of
//! the first unsent change). Written when a file becomes dirty, renamed
//! along with it, and removed once it is uploaded, unlinked or closed
//! clean. Not fsynced: it answers a daemon that died, not a machine that
//! lost power (whose page cache goes with it).

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::backend::Dir;

pub(super) struct Journal {
    dir: Dir,
    pid: u32,
}

/// One entry left by a daemon that is gone.
pub(super) struct Left {
    pub path: String,
    pub since: u64,
    pub pid: u32,
}

impl Journal {
    pub(super) fn new(dir: Dir) -> Journal {
        Journal {
            dir,
            pid: std::process::id(),
        }
    }

    fn name(&self, ino: u64) -> OsString {
        OsString::from(format!("{}-{ino}", self.pid))
    }

    /// Records that `ino`, at `path`, has changes not on the store yet.
    /// Best effort: a journal that cannot be written costs only the report.
    pub(super) fn dirty(&self, ino: u64, path: &str) {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC;
        let r = self
            .dir
            .file(Path::new(&self.name(ino)), flags, 0o600)
            .and_then(|mut f| f.write_all(format!("{path}\n{since}\n").as_bytes()));
        if let Err(e) = r {
            tracing::warn!(
                path,
                "cannot note an unsent change in the state directory: {e}"
            );
        }
    }

    /// `ino` is uploaded, removed or closed clean.
    pub(super) fn clean(&self, ino: u64) {
        let _ = self.dir.remove_file(&self.name(ino));
    }

    /// Entries of daemons that are no longer running (not this one, whose
    /// pid is ours, nor another live mount's), removed as they are read.
    pub(super) fn left_behind(&self) -> Vec<Left> {
        let mut out = Vec::new();
        let Ok(entries) = self.dir.entries() else {
            return out;
        };
        for e in entries {
            let Some((pid, _)) = e.name.to_str().and_then(|n| n.split_once('-')) else {
                continue;
            };
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            if pid == self.pid || alive(pid) {
                continue;
            }
            let text = self
                .dir
                .file(Path::new(&e.name), libc::O_RDONLY | libc::O_CLOEXEC, 0)
                .and_then(|mut f| {
                    let mut s = String::new();
                    std::io::Read::read_to_string(&mut f, &mut s)?;
                    Ok(s)
                })
                .unwrap_or_default();
            let mut lines = text.lines();
            let path = lines.next().unwrap_or("?").to_owned();
            let since = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
            out.push(Left { path, since, pid });
            let _ = self.dir.remove_file(OsStr::from_bytes(e.name.as_bytes()));
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }
}

/// Whether process `pid` still runs (signal 0; EPERM means it exists).
fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}
