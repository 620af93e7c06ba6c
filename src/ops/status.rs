//! `ssefs status`: where the data directory is mounted, its buckets with
//! their rule and object count, and the keys with their states.

use std::fmt;
use std::path::{Path, PathBuf};

use super::walk;
use crate::engine::Engine;
use crate::error::Result;
use crate::format::ChunkSize;
use crate::kms::{KeyMetadata, MasterInfo};
use crate::oss::{BucketName, SseAlgorithm, SseConfig};

/// A live mount of the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mountpoint: PathBuf,
    /// The per-mount options (`rw`, `ro`, ...).
    pub options: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketStatus {
    pub name: BucketName,
    pub rule: Option<SseConfig>,
    pub objects: u64,
    pub chunk: ChunkSize,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub data_dir: PathBuf,
    pub mounts: Vec<MountInfo>,
    pub buckets: Vec<BucketStatus>,
    pub master_versions: Vec<MasterInfo>,
    /// Automatic master key rotation period (0 = never), and the file that
    /// sets it: the data directory's `.ssefs/config.toml`.
    pub master_rotation_days: u32,
    pub policy_file: Option<PathBuf>,
    pub keys: Vec<KeyMetadata>,
}

/// Gathers the status of the engine's data directory.
pub fn status(engine: &Engine) -> Result<Status> {
    let data_dir = engine.data_dir().to_path_buf();
    // Not being able to read mountinfo (no /proc) just means no mounts shown.
    // Bytes, not text: one mount point anywhere on the host that is not
    // UTF-8 must not hide the others.
    let mounts = std::fs::read("/proc/self/mountinfo")
        .map(|t| mounts_of(&t, &data_dir))
        .unwrap_or_default();
    let mut buckets = Vec::new();
    for name in engine.list_buckets()? {
        let rule = engine.bucket_rule(&name)?;
        let chunk = engine.bucket_chunk_size(&name)?;
        let objects = walk::objects(engine, &name, None)?.len() as u64;
        buckets.push(BucketStatus {
            name,
            rule,
            objects,
            chunk,
        });
    }
    Ok(Status {
        data_dir,
        mounts,
        buckets,
        master_versions: engine.kms().master_versions()?,
        master_rotation_days: engine.kms().policy().master_rotation_days(),
        policy_file: engine.kms().policy().source().map(Path::to_path_buf),
        keys: engine.kms().list_keys()?,
    })
}

/// The FUSE mounts in `mountinfo` (proc(5) format) whose source is
/// `data_dir` (the mount names its source after the data directory).
pub fn mounts_of(mountinfo: &[u8], data_dir: &Path) -> Vec<MountInfo> {
    let canon = std::fs::canonicalize(data_dir).ok();
    crate::mountinfo::parse(mountinfo)
        .into_iter()
        .filter(|e| e.is_fuse() && (e.source == data_dir || Some(&e.source) == canon.as_ref()))
        .map(|e| MountInfo {
            mountpoint: e.mount_point,
            options: e.options,
        })
        .collect()
}

/// A bucket rule in one line: `AES256`, `SM4`, `KMS (key: ..., data: SM4)`.
fn describe(rule: Option<&SseConfig>) -> String {
    let Some(r) = rule else {
        return "none".into();
    };
    if r.algorithm != SseAlgorithm::Kms {
        return r.algorithm.to_string();
    }
    let key = r.kms_key_id.as_deref().unwrap_or("default managed key");
    let data = if r.kms_data_sm4 { ", data: SM4" } else { "" };
    format!("KMS (key: {key}{data})")
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.data_dir.to_string_lossy().starts_with("s3://") {
            "store"
        } else {
            "data directory"
        };
        writeln!(f, "{what}: {}", self.data_dir.display())?;
        if self.mounts.is_empty() {
            writeln!(f, "mounts: none")?;
        } else {
            writeln!(f, "mounts:")?;
            for m in &self.mounts {
                writeln!(f, "  {} ({})", m.mountpoint.display(), m.options)?;
            }
        }
        writeln!(f, "buckets: {}", self.buckets.len())?;
        for b in &self.buckets {
            writeln!(
                f,
                "  {}\trule: {}\tobjects: {}\tchunk size: {}",
                b.name,
                describe(b.rule.as_ref()),
                b.objects,
                b.chunk
            )?;
        }
        let newest = self.master_versions.iter().map(|m| m.version).max();
        match newest {
            Some(v) => writeln!(
                f,
                "master key: version {v} ({} versions)",
                self.master_versions.len()
            )?,
            None => writeln!(f, "master key: none")?,
        }
        // Where the period is set, since it is not in the mount's config.
        let from = self.policy_file.as_ref().map_or_else(
            || "the default".to_owned(),
            |p| format!("[kms] master_rotation_days in {}", p.display()),
        );
        match self.master_rotation_days {
            0 => writeln!(f, "  rotated automatically: never ({from})")?,
            n => writeln!(f, "  rotated automatically: every {n} days ({from})")?,
        }
        writeln!(f, "keys: {}", self.keys.len())?;
        for k in &self.keys {
            let primary = k
                .primary_version
                .map_or_else(|| "-".to_owned(), |v| v.to_string());
            let aliases = if k.aliases.is_empty() {
                String::new()
            } else {
                format!("\t{}", k.aliases.join(", "))
            };
            writeln!(
                f,
                "  {}\t{}\tprimary version: {primary}{aliases}",
                k.key_id.hyphenated(),
                k.state
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_matches_source() {
        let text = "36 35 98:0 / /mnt/a\\040b rw,nosuid - fuse.ssefs /data/dir rw,user_id=0\n\
                    37 35 98:0 / /mnt/c rw - ext4 /data/dir rw\n\
                    38 35 98:0 / /mnt/d ro,relatime shared:1 - fuse.ssefs /other rw\n";
        let m = mounts_of(text.as_bytes(), Path::new("/data/dir"));
        assert_eq!(
            m,
            vec![MountInfo {
                mountpoint: PathBuf::from("/mnt/a b"),
                options: "rw,nosuid".into()
            }]
        );
    }

    #[test]
    fn a_mount_point_that_is_not_utf8_hides_no_other_mount() {
        // mountinfo escapes only space, tab, newline and backslash: other
        // bytes of a mount point come raw, valid UTF-8 or not.
        let mut text = b"36 35 98:0 / /mnt/\xff\xfe rw - tmpfs tmpfs rw\n".to_vec();
        text.extend_from_slice(b"37 35 98:0 / /mnt/ours rw - fuse.ssefs /data/dir rw\n");
        let m = mounts_of(&text, Path::new("/data/dir"));
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].mountpoint, PathBuf::from("/mnt/ours"));
    }
}
