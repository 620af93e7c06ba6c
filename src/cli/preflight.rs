//! What `ssefs mount` needs from the machine, checked before anything is
//! created or started: /dev/fuse; and for a user other than root,
//! fusermount3 (fuse3's setuid-root helper, which fuser runs to mount),
//! `user_allow_other` in /etc/fuse.conf for allow_other or allow_root, and
//! write access to the mount point (or, to create it, to its parent). Root
//! needs only /dev/fuse: it mounts with mount(2) itself. Whatever is missing
//! is said in one line with how to get it, where otherwise the background
//! daemon would die with the reason in its log.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::unistd::{access, AccessFlags};

use crate::error::{Error, OssCode, Result};
use crate::fuse::MountOpts;

/// fuse3's helper, as fuser looks for it: $FUSERMOUNT_PATH, else these names
/// on $PATH, else in /sbin and /bin.
const HELPERS: [&str; 2] = ["fusermount3", "fusermount"];

/// fuser's helper on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Helper {
    Missing,
    /// Found, but not setuid root: it cannot mount for a user.
    NotSetuid(PathBuf),
    Usable,
}

/// What the mount needs, as found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Host {
    pub root: bool,
    pub dev_fuse: bool,
    pub helper: Helper,
    pub user_allow_other: bool,
    /// A directory the user must be able to write to and cannot: the mount
    /// point, or its nearest existing ancestor when it is to be created.
    pub unwritable: Option<PathBuf>,
}

impl Host {
    /// Looks at this machine for a mount on `mp`.
    pub(crate) fn probe(mp: &Path) -> Host {
        let root = nix::unistd::geteuid().is_root();
        Host {
            root,
            dev_fuse: std::fs::metadata("/dev/fuse").is_ok_and(|m| m.file_type().is_char_device()),
            helper: find_helper(),
            user_allow_other: std::fs::read_to_string("/etc/fuse.conf")
                .is_ok_and(|t| allows_other(&t)),
            unwritable: if root { None } else { unwritable(mp) },
        }
    }
}

/// Fails with one line saying what is missing for a mount on `mp`.
pub(crate) fn check(mp: &Path, opts: &MountOpts) -> Result<()> {
    match problem(&Host::probe(mp), opts, mp) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What keeps `host` from mounting on `mp` with `opts`, as one error.
pub(crate) fn problem(host: &Host, opts: &MountOpts, mp: &Path) -> Option<Error> {
    if !host.dev_fuse {
        return Some(Error::new(
            OssCode::InternalError,
            "mounting needs /dev/fuse, which this machine lacks: load the module \
             (modprobe fuse, as root), or give a container the device (--device /dev/fuse)",
        ));
    }
    if host.root {
        return None;
    }
    let mut lacks = Vec::new();
    match &host.helper {
        Helper::Missing => lacks.push(
            "fusermount3, which is not installed (sudo apt-get install -y fuse3)".to_string(),
        ),
        Helper::NotSetuid(p) => lacks.push(format!(
            "{} to be setuid root, which it is not (sudo chmod u+s {})",
            p.display(),
            p.display()
        )),
        Helper::Usable => {}
    }
    if (opts.allow_other || opts.allow_root) && !host.user_allow_other {
        lacks.push(
            "user_allow_other in /etc/fuse.conf for -o allow_other or allow_root \
             (add that line as root)"
                .to_string(),
        );
    }
    if let Some(d) = &host.unwritable {
        let what = if d == mp {
            format!("write access to the mount point {}", d.display())
        } else {
            format!("write access to {} to create {}", d.display(), mp.display())
        };
        lacks.push(format!("{what} (use one you own, or sudo chown it to you)"));
    }
    if lacks.is_empty() {
        return None;
    }
    Some(Error::new(
        OssCode::AccessDenied,
        format!(
            "mounting as uid {} (not root) needs {}; or mount as root",
            nix::unistd::geteuid(),
            lacks.join("; and ")
        ),
    ))
}

fn find_helper() -> Helper {
    let candidates: Vec<PathBuf> = match std::env::var_os("FUSERMOUNT_PATH") {
        Some(p) => vec![PathBuf::from(p)],
        None => {
            let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
            let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
            dirs.extend([PathBuf::from("/sbin"), PathBuf::from("/bin")]);
            dirs.iter()
                .flat_map(|d| HELPERS.iter().map(move |h| d.join(h)))
                .collect()
        }
    };
    let mut found = None;
    for c in candidates {
        let Ok(m) = std::fs::metadata(&c) else {
            continue;
        };
        if !m.is_file() {
            continue;
        }
        if m.uid() == 0 && m.mode() & 0o4000 != 0 {
            return Helper::Usable;
        }
        found.get_or_insert(c);
    }
    found.map_or(Helper::Missing, Helper::NotSetuid)
}

/// Whether fuse.conf's text sets user_allow_other (as fusermount3 reads it:
/// whole lines, `#` starts a comment, surrounding blanks ignored).
fn allows_other(conf: &str) -> bool {
    conf.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .any(|l| l == "user_allow_other")
}

/// The directory this (non-root) user lacks write access to for a mount on
/// `mp`: `mp` itself (fusermount3 requires it), or, when `mp` is still to be
/// created, its nearest existing ancestor. None when all is well or when it
/// cannot be told here (a dead mount: the stale-mount cleanup sees to it).
fn unwritable(mp: &Path) -> Option<PathBuf> {
    let mut dir = mp.to_path_buf();
    loop {
        match std::fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {
                let ok = access(&dir, AccessFlags::W_OK | AccessFlags::X_OK).is_ok();
                return (!ok).then_some(dir);
            }
            Ok(_) => return None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                dir = dir.parent()?.to_path_buf();
                if dir.as_os_str().is_empty() {
                    dir = PathBuf::from(".");
                }
            }
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> Host {
        Host {
            root: false,
            dev_fuse: true,
            helper: Helper::Usable,
            user_allow_other: false,
            unwritable: None,
        }
    }

    fn msg(h: &Host, opts: &MountOpts) -> Option<String> {
        problem(h, opts, Path::new("/mnt/oss")).map(|e| e.to_string())
    }

    #[test]
    fn a_user_with_fuse3_and_a_mount_point_of_their_own_mounts() {
        assert_eq!(msg(&user(), &MountOpts::default()), None);
    }

    #[test]
    fn root_needs_only_dev_fuse() {
        let root = Host {
            root: true,
            helper: Helper::Missing,
            unwritable: Some("/mnt".into()),
            ..user()
        };
        let opts = MountOpts::parse(&["allow_other".into()]).unwrap();
        assert_eq!(msg(&root, &opts), None);
        let m = msg(
            &Host {
                dev_fuse: false,
                ..root
            },
            &opts,
        )
        .unwrap();
        assert!(
            m.starts_with("InternalError: mounting needs /dev/fuse"),
            "{m}"
        );
        assert!(m.contains("modprobe fuse"), "{m}");
    }

    #[test]
    fn a_user_without_fuse3_is_told_the_package_and_the_command() {
        let h = Host {
            helper: Helper::Missing,
            ..user()
        };
        let m = msg(&h, &MountOpts::default()).unwrap();
        assert!(m.starts_with("AccessDenied: mounting as uid "), "{m}");
        assert!(m.contains("fusermount3, which is not installed"), "{m}");
        assert!(m.contains("sudo apt-get install -y fuse3"), "{m}");
        assert!(m.ends_with("; or mount as root"), "{m}");
        assert_eq!(m.lines().count(), 1);
    }

    #[test]
    fn every_lack_is_in_the_one_line() {
        let h = Host {
            helper: Helper::NotSetuid("/usr/bin/fusermount3".into()),
            unwritable: Some("/mnt".into()),
            ..user()
        };
        let opts = MountOpts::parse(&["allow_root".into()]).unwrap();
        let m = msg(&h, &opts).unwrap();
        assert_eq!(m.lines().count(), 1, "{m}");
        assert!(m.contains("sudo chmod u+s /usr/bin/fusermount3"), "{m}");
        assert!(m.contains("user_allow_other in /etc/fuse.conf"), "{m}");
        assert!(m.contains("write access to /mnt to create /mnt/oss"), "{m}");
        // The mount point itself, when it exists.
        let h = Host {
            unwritable: Some("/mnt/oss".into()),
            ..user()
        };
        let m = msg(&h, &MountOpts::default()).unwrap();
        assert!(
            m.contains("write access to the mount point /mnt/oss"),
            "{m}"
        );
        assert!(!m.contains("fuse.conf"), "{m}");
    }

    #[test]
    fn allow_other_needs_user_allow_other_only_when_asked_for() {
        let opts = MountOpts::parse(&["allow_other".into()]).unwrap();
        assert!(msg(&user(), &opts).unwrap().contains("user_allow_other"));
        let h = Host {
            user_allow_other: true,
            ..user()
        };
        assert_eq!(msg(&h, &opts), None);
    }

    #[test]
    fn fuse_conf_is_read_as_fusermount3_reads_it() {
        assert!(allows_other("# comment\n  user_allow_other  \n"));
        assert!(allows_other("mount_max = 1000\nuser_allow_other # yes\n"));
        assert!(!allows_other("#user_allow_other\n"));
        assert!(!allows_other("user_allow_others\n"));
        assert!(!allows_other(""));
    }

    /// The walk up from a mount point still to be created, and what is not
    /// a directory. (Root may write anywhere, and `probe` does not ask for
    /// root; a user meets this in tests/integration/cli.rs.)
    #[test]
    fn a_missing_mount_point_is_judged_by_its_nearest_existing_ancestor() {
        use std::os::unix::fs::PermissionsExt;
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("file"), b"").unwrap();
        assert_eq!(unwritable(&t.path().join("file")), None);
        assert_eq!(unwritable(&t.path().join("a/b/mnt")), None);
        let ro = t.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let want = (!nix::unistd::geteuid().is_root()).then(|| ro.clone());
        assert_eq!(unwritable(&ro.join("a/b/mnt")), want);
        assert_eq!(unwritable(&ro), want);
    }
}
