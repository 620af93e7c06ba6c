//! The mount's options: `-o` on the command line and in fstab, and the
//! keys of the config file that set the same things. The FUSE layer mounts
//! with them; this layer reads them.

use crate::error::{Error, OssCode, Result};

/// Parsed `-o` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOpts {
    pub allow_other: bool,
    pub allow_root: bool,
    /// Asked for with `-o default_permissions`. The kernel checks mode bits
    /// whenever other users can reach the mount (allow_other, allow_root),
    /// whatever this says; see [`MountOpts::kernel_checks_permissions`].
    pub default_permissions: bool,
    pub read_only: bool,
    /// FUSE worker threads.
    pub threads: usize,
    /// MiB of decrypted chunks kept in memory.
    pub cache_mb: usize,
    /// Inodes the daemon remembers before it asks the kernel to forget the
    /// least recently used (see `crate::fs`).
    pub max_inodes: usize,
    /// Serve FUSE requests over io_uring where the kernel allows it
    /// (`-o io_uring`; see `crate::fuse`).
    pub io_uring: bool,
    /// On a store: how long listings and attributes are trusted before the
    /// store is asked again (`-o meta_ttl_ms=N`; docs/SEMANTICS.md §12).
    pub meta_ttl_ms: u64,
}

impl Default for MountOpts {
    fn default() -> Self {
        MountOpts {
            allow_other: false,
            allow_root: false,
            default_permissions: false,
            read_only: false,
            threads: 4,
            cache_mb: 64,
            max_inodes: crate::fs::DEFAULT_MAX_INODES,
            io_uring: false,
            meta_ttl_ms: 1000,
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
        for opt in list.iter().flat_map(|s| s.split(',')) {
            let (k, v) = opt
                .split_once('=')
                .map(|(k, v)| (k, Some(v)))
                .unwrap_or((opt, None));
            let bad = |why: &str| {
                Error::new(
                    OssCode::InvalidArgument,
                    format!("mount option {}: {why}", crate::error::quote(opt)),
                )
            };
            match (k, v) {
                // The two exclude each other; the later one wins, so `-o`
                // can override the config file's choice.
                ("allow_other", None) => (o.allow_other, o.allow_root) = (true, false),
                ("allow_root", None) => (o.allow_other, o.allow_root) = (false, true),
                ("ro", None) => o.read_only = true,
                ("rw", None) => o.read_only = false,
                ("default_permissions", None) => o.default_permissions = true,
                ("io_uring", None) => o.io_uring = true,
                ("cache_mb", Some(n)) => {
                    o.cache_mb = n
                        .parse()
                        .ok()
                        .filter(|n| *n <= 1 << 20)
                        .ok_or_else(|| bad("a number of MiB"))?
                }
                ("max_inodes", Some(n)) => {
                    o.max_inodes = n
                        .parse()
                        .ok()
                        .filter(|n| *n >= 64)
                        .ok_or_else(|| bad("a number of inodes, at least 64"))?
                }
                ("meta_ttl_ms", Some(n)) => {
                    o.meta_ttl_ms = n
                        .parse()
                        .ok()
                        .filter(|n| *n <= 3_600_000)
                        .ok_or_else(|| bad("0 to 3600000 milliseconds"))?
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
                // `-o ""` or `ro,,rw`: a typo more likely than a wish.
                ("", None) => return Err(bad("empty option")),
                _ => return Err(bad("unknown option")),
            }
        }
        Ok(o)
    }
}

impl MountOpts {
    /// Whether the kernel checks mode bits (FUSE's default_permissions).
    /// It must when users other than the mount's owner can reach it. When
    /// only the owner can (the kernel refuses everyone else), the backend
    /// checks the owner's own access (the daemon runs as the owner), or
    /// there is nothing to check (root). Leaving it off then saves a
    /// GETATTR of the parent directory before every lookup that follows a
    /// change in that directory: one request in ten when unpacking files.
    pub fn kernel_checks_permissions(&self) -> bool {
        self.default_permissions || self.allow_other || self.allow_root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_uring_is_off_unless_asked_and_takes_no_value() {
        assert!(!MountOpts::default().io_uring);
        let o = MountOpts::parse(&["allow_other,io_uring".into()]).unwrap();
        assert!(o.io_uring && o.allow_other);
        assert!(MountOpts::parse(&["io_uring=1".into()]).is_err());
        assert!(MountOpts::parse(&["io-uring".into()]).is_err());
    }
}
