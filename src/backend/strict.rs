//! Refusing state someone else could change, as OpenSSH's StrictModes does:
//! a data directory, state directory, keystore or key file that another
//! user owns or that group or others may write could be swapped for one
//! holding keys an attacker knows. Each refusal is one line naming the path
//! and the command that fixes it.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, IoContext, OssCode, Result};

/// Who may own what we trust: root, and the user we run as.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

fn refuse(path: &Path, why: String, fix: String) -> Error {
    Error::new(
        OssCode::AccessDenied,
        format!(
            "refusing {}: {why}; fix it with `{fix}`, or choose another directory",
            path.display()
        ),
    )
    .resource(path.display().to_string())
}

/// Checks the metadata `m` of `path` (a state directory, keystore or key
/// file): owned by root or by us, and not writable by group or others.
fn check_meta(path: &Path, m: &fs::Metadata) -> Result<()> {
    check_owner_mode(path, m.uid(), m.mode())
}

/// The directory actually held (opened after `check` looked at its path):
/// the same rules, on what the descriptor refers to, so that nothing
/// swapped in between the check and the open is used.
pub fn check_held(path: &Path, dir: &super::Dir) -> Result<()> {
    let st = dir.stat(std::ffi::OsStr::new("")).ctx(path.display())?;
    check_owner_mode(path, st.st_uid, st.st_mode)
}

fn check_owner_mode(path: &Path, uid: u32, mode: u32) -> Result<()> {
    if !trusted_owner(uid) {
        let me = nix::unistd::geteuid().as_raw();
        return Err(refuse(
            path,
            format!("it is owned by uid {uid}, not by uid {me} or root"),
            format!("chown {me} {}", path.display()),
        ));
    }
    if mode & 0o022 != 0 {
        return Err(refuse(
            path,
            format!(
                "it is writable by group or others (mode {:04o})",
                mode & 0o7777
            ),
            format!("chmod go-w {}", path.display()),
        ));
    }
    Ok(())
}

/// `path` itself (not followed if it is a symlink): see `check_meta`. A
/// symlink is refused: what it points to could change under us.
pub fn check(path: &Path) -> Result<()> {
    let m = fs::symlink_metadata(path).ctx(path.display())?;
    if m.file_type().is_symlink() {
        return Err(refuse(
            path,
            "it is a symbolic link".into(),
            format!("mv \"$(readlink -f {0})\" {0}", path.display()),
        ));
    }
    check_meta(path, &m)
}

/// Opens a file holding a secret (the store's credentials) for reading:
/// the rules of `check`, and not readable by group or others either.
/// Opened without following a symlink and judged on the descriptor, so
/// that nothing swapped in after the check is what gets read.
pub fn open_secret_file(path: &Path) -> Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refuse(
                path,
                "it is a symbolic link".into(),
                format!("mv \"$(readlink -f {0})\" {0}", path.display()),
            ),
            _ => Error::io(path.display(), e),
        })?;
    let m = f.metadata().ctx(path.display())?;
    check_meta(path, &m)?;
    if m.mode() & 0o077 != 0 {
        return Err(refuse(
            path,
            format!(
                "it holds secrets and group or others may read it (mode {:04o})",
                m.mode() & 0o7777
            ),
            format!("chmod 600 {}", path.display()),
        ));
    }
    Ok(f)
}

/// `check` when `path` exists; a missing file is not refused (it is made
/// later, with the right mode).
pub fn check_if_present(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        _ => check(path),
    }
}

/// The directories above `dir`: each owned by root or by us, and not
/// writable by group or others unless sticky (like /tmp, where others may
/// not rename what is ours). Any of them could otherwise be used to swap
/// the data directory for another. Symlinks on the way are resolved
/// first, as the path is opened once at start and held.
pub fn check_ancestors(dir: &Path) -> Result<()> {
    let full = fs::canonicalize(dir).ctx(dir.display())?;
    for a in full.ancestors().skip(1) {
        let m = fs::metadata(a).ctx(a.display())?;
        let sticky = m.mode() & libc::S_ISVTX != 0;
        if !trusted_owner(m.uid()) {
            return Err(refuse(
                a,
                format!(
                    "this directory above {} is owned by uid {}",
                    dir.display(),
                    m.uid()
                ),
                format!("chown root {}", a.display()),
            ));
        }
        if m.mode() & 0o022 != 0 && !sticky {
            return Err(refuse(
                a,
                format!(
                    "this directory above {} is writable by group or others (mode {:04o})",
                    dir.display(),
                    m.mode() & 0o7777
                ),
                format!("chmod go-w {}", a.display()),
            ));
        }
    }
    Ok(())
}

/// Creates `dir` (and missing parents, with the default modes) with mode
/// 0700 whatever the umask; an existing directory is left as it is, for
/// `check` to judge.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        // The umask may have taken bits away; never added any. Set the mode
        // we mean explicitly.
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o700)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_others_can_write_are_refused_in_one_line() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = t.path().join("data");
        create_private_dir(&d).expect("create");
        assert_eq!(
            fs::metadata(&d).expect("stat").mode() & 0o7777,
            0o700,
            "made private whatever the umask"
        );
        check(&d).expect("a private directory passes");
        for mode in [0o777, 0o775, 0o757, 0o720, 0o702] {
            fs::set_permissions(&d, fs::Permissions::from_mode(mode)).expect("chmod");
            let e = check(&d).expect_err("refused");
            let text = e.to_string();
            assert_eq!(text.lines().count(), 1);
            assert!(text.contains(&d.display().to_string()), "{text}");
            assert!(text.contains("chmod go-w"), "{text}");
        }
        for mode in [0o755, 0o711, 0o700] {
            fs::set_permissions(&d, fs::Permissions::from_mode(mode)).expect("chmod");
            check(&d).expect("not writable by others: accepted");
        }
        // Another user's directory (the suite runs as root, which may chown).
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&d, Some(54321), None).expect("chown");
            let e = check(&d).expect_err("owned by someone else");
            assert!(e.to_string().contains("uid 54321"), "{e}");
        }
    }

    #[test]
    fn a_symlink_is_refused_and_a_missing_file_is_not() {
        let t = tempfile::tempdir().expect("tempdir");
        let l = t.path().join("link");
        std::os::unix::fs::symlink(t.path(), &l).expect("symlink");
        assert!(check(&l).is_err());
        check_if_present(&t.path().join("absent")).expect("missing is fine");
    }

    #[test]
    fn a_writable_ancestor_is_refused_unless_sticky() {
        let t = tempfile::tempdir().expect("tempdir");
        let open = t.path().join("open");
        let d = open.join("data");
        create_private_dir(&d).expect("create");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = check_ancestors(&d).expect_err("world-writable parent");
        assert!(e.to_string().contains(&open.display().to_string()), "{e}");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).expect("chmod");
        check_ancestors(&d).expect("sticky, like /tmp");
    }
}
