//! Who makes a request: a uid with its primary and supplementary groups,
//! and what the kernel lets that process do to set-id bits. The KMS grants,
//! the filesystem's permission checks and the CLI all name requesters this
//! way, so it sits below all of them.

use std::fs;
use std::sync::OnceLock;

use nix::unistd::{getegid, geteuid, getgroups};

/// The uid of `nobody`, which ssefs treats as the anonymous requester.
pub const NOBODY_UID: u32 = 65534;

/// A requester: a uid with its primary and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub uid: u32,
    pub gid: u32,
    groups: Groups,
}

/// Supplementary groups, known up front or read from the requesting
/// process only when a grant by gid needs them: most requests never do, and
/// reading /proc/PID/status costs more than the rest of a create.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Groups {
    Known(Vec<u32>),
    OfProcess { pid: u32, read: OnceLock<Vec<u32>> },
}

impl Principal {
    pub fn new(uid: u32, gid: u32) -> Self {
        Principal {
            uid,
            gid,
            groups: Groups::Known(Vec::new()),
        }
    }

    pub fn root() -> Self {
        Principal::new(0, 0)
    }

    /// A request's caller: its uid and gid, and the supplementary groups of
    /// process `pid`, read lazily.
    pub fn of_process(uid: u32, gid: u32, pid: u32) -> Self {
        Principal {
            uid,
            gid,
            groups: Groups::OfProcess {
                pid,
                read: OnceLock::new(),
            },
        }
    }

    /// This process's effective uid and gid and its supplementary groups.
    pub fn current() -> Self {
        let groups = getgroups()
            .map(|gs| gs.into_iter().map(|g| g.as_raw()).collect())
            // getgroups only fails on a list longer than NGROUPS_MAX; fewer
            // groups can only narrow what the principal is granted.
            .unwrap_or_default();
        Principal::new(geteuid().as_raw(), getegid().as_raw()).with_groups(groups)
    }

    pub fn with_groups(mut self, groups: Vec<u32>) -> Self {
        self.groups = Groups::Known(groups);
        self
    }

    pub fn is_anonymous(&self) -> bool {
        self.uid == NOBODY_UID
    }

    fn groups(&self) -> &[u32] {
        match &self.groups {
            Groups::Known(g) => g,
            Groups::OfProcess { pid, read } => read.get_or_init(|| process_groups(*pid)),
        }
    }

    /// Whether `gid` is the principal's group or one of its supplementary ones.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups().contains(&gid)
    }

    /// Whether the requesting process holds CAP_FSETID in the initial user
    /// namespace, which lets set-id bits survive its changes to a file's
    /// bytes (the rule the kernel leaves to us under
    /// FUSE_HANDLE_KILLPRIV_V2). Read from /proc only when a set-id file
    /// changes. A capability held in another user namespace (`unshare -r`
    /// gives any user a full set there) does not count, nor does a process
    /// that is gone, nor a principal that is not a FUSE caller: the bits are
    /// then cleared, the safe direction.
    pub fn holds_cap_fsetid(&self) -> bool {
        match &self.groups {
            Groups::Known(_) => false,
            Groups::OfProcess { pid, .. } => {
                in_our_user_namespace(*pid) && process_has_cap(*pid, CAP_FSETID)
            }
        }
    }
}

/// Whether process `pid` is in this daemon's user namespace (the daemon
/// runs in the initial one).
fn in_our_user_namespace(pid: u32) -> bool {
    match (
        fs::read_link(format!("/proc/{pid}/ns/user")),
        fs::read_link("/proc/self/ns/user"),
    ) {
        (Ok(theirs), Ok(ours)) => theirs == ours,
        _ => false,
    }
}

/// linux/capability.h
const CAP_FSETID: u32 = 4;

/// Bit `cap` of the `CapEff:` line of /proc/PID/status.
fn process_has_cap(pid: u32, cap: u32) -> bool {
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|bits| bits & (1 << cap) != 0)
}

/// The `Groups:` line of /proc/PID/status. A process that is gone (or a
/// line that does not parse) yields no groups, which can only narrow what
/// the principal is granted.
fn process_groups(pid: u32) -> Vec<u32> {
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    s.lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
