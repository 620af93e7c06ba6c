//! The mount's configuration file: one TOML file per mount, read with
//! `ssefs --config FILE` (the unit `ssefs@NAME.service` reads
//! `/etc/ssefs/NAME.toml`). Every key is documented, with its default, in
//! packaging/ssefs.toml.example.
//!
//! This file is the mount's; the data directory's own `.ssefs/config.toml`
//! (KMS grants, master key rotation) stays with the data, so that it travels
//! with a backup.
//!
//! Anything the file does not understand stops the start: a typo in a key
//! must not silently leave, say, `read_only` off. The error names the file,
//! the line and the column, and why.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use super::MountOpts;
use crate::error::{Error, OssCode, Result};
use crate::settings::{unknown_field, DATA_DIR_KEYS};

/// The parsed file. Absent keys are `None` (or false) and take their
/// defaults where they are used, so that the command line can still override
/// them and the defaults live in one place (MountOpts, the CLI).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    #[serde(default, deserialize_with = "abs_path")]
    pub data_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "abs_path")]
    pub mountpoint: Option<PathBuf>,
    #[serde(default, deserialize_with = "abs_path")]
    pub root_key: Option<PathBuf>,
    #[serde(default, deserialize_with = "abs_path")]
    pub passphrase_file: Option<PathBuf>,
    #[serde(default)]
    pub allow_other: bool,
    #[serde(default)]
    pub allow_root: bool,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default, deserialize_with = "threads")]
    pub threads: Option<usize>,
    #[serde(default, deserialize_with = "cache_mb")]
    pub cache_mb: Option<usize>,
    #[serde(default, deserialize_with = "max_inodes")]
    pub max_inodes: Option<usize>,
    #[serde(default)]
    pub io_uring: bool,
    /// On a store: how long listings and attributes are trusted (ms).
    #[serde(default)]
    pub meta_ttl_ms: Option<u64>,
    #[serde(default, deserialize_with = "log_level")]
    pub log_level: Option<String>,
    /// Buckets on an S3-compatible store instead of the data directory.
    #[serde(default)]
    pub backend: Option<crate::backend::s3::BackendTable>,
}

impl ServiceConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<ServiceConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::new(
                OssCode::InvalidArgument,
                format!("config {}: {e}", path.display()),
            )
        })?;
        Self::parse(&text, path)
    }

    /// Parses `text`; `path` is only for the error message.
    pub fn parse(text: &str, path: &Path) -> Result<ServiceConfig> {
        let cfg: ServiceConfig = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| line_col(text, s.start))
                .map(|(l, c)| format!(":{l}:{c}"))
                .unwrap_or_default();
            let why = match unknown_field(e.message()) {
                Some(k) if DATA_DIR_KEYS.contains(&k) => format!(
                    "`{k}` is a setting of the data directory, not of the mount: \
                     set it in DATA_DIR/.ssefs/config.toml{}",
                    if k == "master_rotation_days" {
                        " under [kms]"
                    } else {
                        ""
                    }
                ),
                // toml's messages may span lines; the CLI prints one line.
                _ => e.message().split_whitespace().collect::<Vec<_>>().join(" "),
            };
            Error::new(
                OssCode::InvalidArgument,
                format!("config {}{at}: {why}", path.display()),
            )
        })?;
        if cfg.allow_other && cfg.allow_root {
            return Err(Error::new(
                OssCode::InvalidArgument,
                format!(
                    "config {}: allow_other and allow_root exclude each other",
                    path.display()
                ),
            ));
        }
        Ok(cfg)
    }

    /// The mount options this file asks for, before any `-o` on the command
    /// line.
    pub fn mount_opts(&self) -> MountOpts {
        let d = MountOpts::default();
        MountOpts {
            allow_other: self.allow_other,
            allow_root: self.allow_root,
            default_permissions: false,
            read_only: self.read_only,
            threads: self.threads.unwrap_or(d.threads),
            cache_mb: self.cache_mb.unwrap_or(d.cache_mb),
            max_inodes: self.max_inodes.unwrap_or(d.max_inodes),
            io_uring: self.io_uring,
            meta_ttl_ms: self.meta_ttl_ms.unwrap_or(d.meta_ttl_ms),
        }
    }
}

/// 1-based line and column of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Paths must be absolute: a service's working directory is `/`, a shell's
/// is anywhere, and the same file must mean the same thing to both.
fn abs_path<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<PathBuf>, D::Error> {
    let p = PathBuf::deserialize(d)?;
    if p.is_absolute() {
        Ok(Some(p))
    } else {
        Err(serde::de::Error::custom(format!(
            "{} is not an absolute path",
            p.display()
        )))
    }
}

fn ranged<'de, D: Deserializer<'de>>(
    d: D,
    range: std::ops::RangeInclusive<usize>,
    what: &str,
) -> std::result::Result<Option<usize>, D::Error> {
    let n = i64::deserialize(d)?;
    usize::try_from(n)
        .ok()
        .filter(|n| range.contains(n))
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("{what}, not {n}")))
}

fn threads<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<usize>, D::Error> {
    // The same bounds as `-o threads=N` (MountOpts::parse).
    ranged(d, 1..=64, "threads must be 1 to 64")
}

fn cache_mb<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<usize>, D::Error> {
    ranged(d, 0..=1 << 20, "cache_mb must be 0 to 1048576 (MiB)")
}

fn max_inodes<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<usize>, D::Error> {
    // The same bounds as `-o max_inodes=N` (MountOpts::parse).
    ranged(d, 64..=usize::MAX, "max_inodes must be at least 64")
}

fn log_level<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    let s = String::deserialize(d)?;
    // A level, or TARGET=LEVEL directives like "ssefs=debug,warn". Stricter
    // than RUST_LOG, which takes a typo ("inf") for a target name and then
    // silently logs nothing.
    let ok = !s.is_empty()
        && s.split(',').all(|dir| {
            let level = dir.rsplit_once('=').map_or(
                dir,
                |(target, l)| {
                    if target.is_empty() {
                        ""
                    } else {
                        l
                    }
                },
            );
            LEVELS.contains(&level.to_ascii_lowercase().as_str())
        });
    if !ok {
        return Err(serde::de::Error::custom(format!(
            "log_level {s:?}: expected one of {} or TARGET=LEVEL directives",
            LEVELS.join(", ")
        )));
    }
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::MOUNT_KEYS;

    fn parse(text: &str) -> Result<ServiceConfig> {
        ServiceConfig::parse(text, Path::new("/etc/ssefs/t.toml"))
    }

    #[track_caller]
    fn rejects(text: &str, at: &str, why: &str) {
        let e = parse(text).expect_err("accepted a bad file");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("/etc/ssefs/t.toml{at}")),
            "no file:line in {msg}"
        );
        assert!(msg.contains(why), "no reason {why:?} in {msg}");
        assert!(!msg.contains('\n'), "not one line: {msg}");
    }

    #[test]
    fn a_good_file() {
        let c = parse(
            "data_dir = \"/var/lib/ssefs/oss\"\nmountpoint = \"/mnt/oss\"\n\
             root_key = \"/etc/ssefs/oss.key\"\nallow_other = true\nread_only = true\n\
             threads = 8\ncache_mb = 0\nlog_level = \"ssefs=debug,warn\"\n",
        )
        .unwrap();
        assert_eq!(c.data_dir.as_deref(), Some(Path::new("/var/lib/ssefs/oss")));
        assert_eq!(c.mountpoint.as_deref(), Some(Path::new("/mnt/oss")));
        assert_eq!(c.root_key.as_deref(), Some(Path::new("/etc/ssefs/oss.key")));
        assert_eq!(c.log_level.as_deref(), Some("ssefs=debug,warn"));
        assert_eq!(
            c.mount_opts(),
            MountOpts {
                allow_other: true,
                allow_root: false,
                default_permissions: false,
                read_only: true,
                threads: 8,
                cache_mb: 0,
                max_inodes: crate::fs::DEFAULT_MAX_INODES,
                io_uring: false,
                meta_ttl_ms: 1000,
            }
        );
    }

    #[test]
    fn io_uring_is_a_key_of_the_file() {
        // It was only `-o io_uring`: a mount started from its file (the
        // systemd unit) could not have it.
        let on = parse("io_uring = true\n").unwrap().mount_opts();
        assert!(on.io_uring);
        assert_eq!(
            on,
            MountOpts {
                io_uring: true,
                ..MountOpts::default()
            }
        );
        // Other options on the command line leave it on.
        let with = on.with(&["threads=2,rw".into()]).unwrap();
        assert!(with.io_uring && with.threads == 2);
        assert!(!parse("io_uring = false\n").unwrap().mount_opts().io_uring);
        rejects("io_uring = \"yes\"\n", ":1:12", "invalid type");
        rejects("io_uring = 1\n", ":1:12", "invalid type");
    }

    #[test]
    fn an_empty_file_means_the_defaults() {
        let c = parse("# nothing\n").unwrap();
        assert_eq!(c, ServiceConfig::default());
        assert_eq!(c.mount_opts(), MountOpts::default());
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        rejects(
            "mountpoint = \"/mnt/oss\"\n\nreadonly = true\n",
            ":3:1",
            "unknown field `readonly`",
        );
        rejects("[mount]\nthreads = 4\n", ":1:", "unknown field `mount`");
    }

    #[test]
    fn bad_values_are_rejected_with_their_line() {
        rejects("threads = 0\n", ":1:11", "threads must be 1 to 64, not 0");
        rejects("\nthreads = 65\n", ":2:11", "not 65");
        rejects("cache_mb = -1\n", ":1:12", "cache_mb must be 0 to");
        rejects(
            "max_inodes = 10\n",
            ":1:14",
            "max_inodes must be at least 64",
        );
        rejects("log_level = \"loud=\"\n", ":1:13", "log_level \"loud=\"");
        rejects(
            "log_level = \"inf\"\n",
            ":1:13",
            "expected one of off, error",
        );
        rejects("log_level = \"=info\"\n", ":1:13", "TARGET=LEVEL");
        assert!(parse("log_level = \"DEBUG\"\n").is_ok());
        rejects(
            "allow_other = true\nallow_root = true\n",
            "",
            "exclude each other",
        );
    }

    #[test]
    fn data_dir_settings_are_refused_with_where_they_belong() {
        rejects(
            "mountpoint = \"/mnt/oss\"\nmaster_rotation_days = 30\n",
            ":2:1",
            "`master_rotation_days` is a setting of the data directory, not of the mount: \
             set it in DATA_DIR/.ssefs/config.toml under [kms]",
        );
        rejects(
            "[kms]\nmaster_rotation_days = 30\n",
            ":1:",
            "`kms` is a setting of the data directory",
        );
        rejects(
            "[[grant]]\nuids = [1]\n",
            ":1:",
            "set it in DATA_DIR/.ssefs/config.toml",
        );
    }

    #[test]
    fn wrong_types_are_rejected_with_their_line() {
        rejects("read_only = \"yes\"\n", ":1:13", "invalid type");
        rejects("\n\nthreads = \"4\"\n", ":3:11", "invalid type");
        rejects("data_dir = 5\n", ":1:12", "invalid type");
        rejects("root_key = \"k\"\n", ":1:12", "k is not an absolute path");
        rejects("mountpoint = \n", ":1:", "");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = ServiceConfig::load(Path::new("/nonexistent/ssefs.toml")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ssefs.toml"), "{e}");
    }

    /// The example documents every key, each with its real default: its
    /// commented-out `# key = value` lines, uncommented, must parse to the
    /// same mount options as an empty file.
    #[test]
    fn the_example_documents_every_key_with_its_default() {
        let example = include_str!("../../packaging/ssefs.toml.example");
        let mut uncommented = String::new();
        let mut seen = Vec::new();
        for line in example.lines() {
            let Some(rest) = line.strip_prefix("#") else {
                uncommented.push_str(line);
                uncommented.push('\n');
                continue;
            };
            let rest = rest.trim_start();
            match rest.split_once(" = ") {
                Some((k, _)) if MOUNT_KEYS.contains(&k) => {
                    seen.push(k.to_owned());
                    uncommented.push_str(rest);
                }
                _ => {}
            }
            uncommented.push('\n');
        }
        for line in example.lines().filter(|l| !l.starts_with('#')) {
            if let Some((k, _)) = line.split_once(" = ") {
                seen.push(k.trim().to_owned());
            }
        }
        for k in MOUNT_KEYS {
            assert!(seen.iter().any(|s| s == k), "{k} is not documented");
        }
        let c = parse(&uncommented).unwrap();
        let d = MountOpts::default();
        assert_eq!(c.threads, Some(d.threads), "threads default");
        assert_eq!(c.cache_mb, Some(d.cache_mb), "cache_mb default");
        assert_eq!(c.max_inodes, Some(d.max_inodes), "max_inodes default");
        assert!(!c.allow_other && !c.allow_root && !c.read_only);
        assert_eq!(c.io_uring, d.io_uring, "io_uring default");
    }
}
