//! ssefs as a mount(8) helper, so that fstab lines and `mount -t fuse.ssefs`
//! work. Two calling conventions reach us:
//!
//! - mount(8) runs `/sbin/mount.fuse.ssefs SOURCE DIR [-sfnv] [-N NS]
//!   [-o OPTIONS] [-t fuse.ssefs]` (the package installs that name as a
//!   symlink to ssefs, recognised here by argv[0]);
//! - without that helper, mount(8) runs /sbin/mount.fuse (fuse3's
//!   mount.fuse3), which runs `ssefs SOURCE DIR -o OPTIONS` from $PATH.
//!
//! Both become `ssefs --data-dir SOURCE mount DIR -o OPTIONS`, which returns
//! once the mount answers, as mount(8) expects. SOURCE may instead be a
//! config file (`*.toml`) or a store (`s3://BUCKET[/PREFIX]`, which becomes
//! `--backend SOURCE`), and two options name files rather than mount
//! flags: `root_key=PATH` and `config=PATH`. `rw` is dropped: mount(8) always
//! adds it, so it cannot override a config file's `read_only`; `ro` can.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, OssCode, Result};

/// argv[0] names that make us a mount helper.
const HELPER_NAMES: &[&str] = &["mount.fuse.ssefs", "mount.ssefs"];

/// What to do with a helper invocation.
#[derive(Debug, PartialEq, Eq)]
pub enum HelperCall {
    /// Run these arguments (argv for the normal command line).
    Run(Vec<OsString>),
    /// `-f`: mount(8)'s fake mode, do everything but mount.
    Fake,
}

/// Is `argv` a mount-helper call? If so, the equivalent command line.
pub fn translate(argv: &[OsString]) -> Option<Result<HelperCall>> {
    let name = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .unwrap_or_default();
    let as_helper = HELPER_NAMES.iter().any(|h| name == OsStr::new(h));
    // mount.fuse3's convention: `ssefs SOURCE DIR ...`. No subcommand or
    // option contains a '/', and mount(8) always hands over an absolute
    // mount point, so this cannot be taken for an ordinary command line.
    let fuse3_style = argv.len() >= 3
        && argv[1].as_bytes().contains(&b'/')
        && !argv[1].as_bytes().starts_with(b"-");
    (as_helper || fuse3_style).then(|| parse(argv))
}

fn parse(argv: &[OsString]) -> Result<HelperCall> {
    let bad = |why: String| Error::new(OssCode::InvalidArgument, format!("mount helper: {why}"));
    let mut positional = Vec::new();
    let mut options: Vec<String> = Vec::new();
    let mut fake = false;
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        match s.as_ref() {
            "-o" => {
                let v = it.next().ok_or_else(|| bad("-o needs a value".into()))?;
                options.push(v.to_string_lossy().into_owned());
            }
            // The type is ours (fuse.ssefs) whatever it says.
            "-t" => {
                it.next();
            }
            "-N" => return Err(bad("mount namespaces (-N) are not supported".into())),
            "-f" => fake = true,
            // sloppy, no mtab, verbose: nothing to do differently.
            "-s" | "-n" | "-v" => {}
            o if o.starts_with("-o") => options.push(o[2..].to_owned()),
            o if o.starts_with('-') => return Err(bad(format!("unknown flag {o}"))),
            _ => positional.push(a.clone()),
        }
    }
    let [source, dir] = <[OsString; 2]>::try_from(positional).map_err(|_| {
        bad("usage: mount.fuse.ssefs DATA_DIR|CONFIG.toml MOUNTPOINT [-o OPTIONS]".into())
    })?;
    let mut globals: Vec<OsString> = Vec::new();
    let mut mount_opts = Vec::new();
    for o in options.iter().flat_map(|o| o.split(',')) {
        match o.split_once('=') {
            Some(("root_key", p)) => globals.extend(["--root-key".into(), p.into()]),
            Some(("config", p)) => globals.extend(["--config".into(), p.into()]),
            // mount(8) passes rw unless told ro: it says nothing, and must
            // not undo a config file's `read_only = true`.
            None if o == "rw" || o.is_empty() => {}
            _ => mount_opts.push(o),
        }
    }
    if Path::new(&source).extension() == Some(OsStr::new("toml")) {
        globals.extend(["--config".into(), source]);
    } else if source.as_bytes().starts_with(b"s3://") {
        // A store (credentials from a credentials file: mount(8) passes
        // no environment worth the name).
        globals.extend(["--backend".into(), source]);
    } else {
        globals.extend(["--data-dir".into(), source]);
    }
    if fake {
        return Ok(HelperCall::Fake);
    }
    let mut out: Vec<OsString> = vec!["ssefs".into()];
    out.extend(globals);
    out.extend(["mount".into(), dir]);
    if !mount_opts.is_empty() {
        out.extend(["-o".into(), mount_opts.join(",").into()]);
    }
    Ok(HelperCall::Run(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    fn run(s: &[&str]) -> Vec<String> {
        match translate(&argv(s)) {
            Some(Ok(HelperCall::Run(v))) => {
                v.into_iter().map(|a| a.into_string().unwrap()).collect()
            }
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn ordinary_command_lines_are_not_helper_calls() {
        for s in [
            &["ssefs", "mount", "/mnt/oss"][..],
            &["ssefs", "--data-dir", "/d", "mount", "/mnt"],
            &["/usr/bin/ssefs", "bucket", "list"],
            &["ssefs"],
        ] {
            assert!(translate(&argv(s)).is_none(), "{s:?}");
        }
    }

    #[test]
    fn mount8_calls_the_helper_with_fstab_options() {
        assert_eq!(
            run(&[
                "/sbin/mount.fuse.ssefs",
                "/var/lib/ssefs",
                "/mnt/oss",
                "-o",
                "rw,allow_other,_netdev,x-systemd.automount",
                "-n",
                "-t",
                "fuse.ssefs",
            ]),
            [
                "ssefs",
                "--data-dir",
                "/var/lib/ssefs",
                "mount",
                "/mnt/oss",
                "-o",
                "allow_other,_netdev,x-systemd.automount"
            ]
        );
    }

    #[test]
    fn mount_fuse3_runs_us_by_the_type_name() {
        assert_eq!(
            run(&["ssefs", "/d", "/mnt", "-o", "allow_other,dev,suid"]),
            [
                "ssefs",
                "--data-dir",
                "/d",
                "mount",
                "/mnt",
                "-o",
                "allow_other,dev,suid"
            ]
        );
    }

    #[test]
    fn a_store_source_becomes_backend() {
        assert_eq!(
            run(&[
                "mount.fuse.ssefs",
                "s3://bkt/pre",
                "/mnt",
                "-o",
                "rw,allow_other,root_key=/k"
            ]),
            vec![
                "ssefs",
                "--root-key",
                "/k",
                "--backend",
                "s3://bkt/pre",
                "mount",
                "/mnt",
                "-o",
                "allow_other"
            ]
        );
    }

    #[test]
    fn file_options_and_config_sources() {
        assert_eq!(
            run(&[
                "mount.fuse.ssefs",
                "/etc/ssefs/oss.toml",
                "/mnt",
                "-oro,root_key=/etc/ssefs/k"
            ]),
            [
                "ssefs",
                "--root-key",
                "/etc/ssefs/k",
                "--config",
                "/etc/ssefs/oss.toml",
                "mount",
                "/mnt",
                "-o",
                "ro"
            ]
        );
        assert_eq!(
            run(&["mount.ssefs", "/d", "/mnt", "-o", "config=/c.toml"]),
            [
                "ssefs",
                "--config",
                "/c.toml",
                "--data-dir",
                "/d",
                "mount",
                "/mnt"
            ]
        );
    }

    #[test]
    fn fake_mode_and_bad_calls() {
        assert_eq!(
            translate(&argv(&["mount.fuse.ssefs", "/d", "/m", "-f"]))
                .unwrap()
                .unwrap(),
            HelperCall::Fake
        );
        for s in [
            &["mount.fuse.ssefs", "/d"][..],
            &["mount.fuse.ssefs", "/d", "/m", "/x"],
            &["mount.fuse.ssefs", "/d", "/m", "-N", "/proc/1/ns/mnt"],
            &["mount.fuse.ssefs", "/d", "/m", "-o"],
            &["mount.fuse.ssefs", "/d", "/m", "--bogus"],
        ] {
            assert!(matches!(translate(&argv(s)), Some(Err(_))), "{s:?}");
        }
    }
}
