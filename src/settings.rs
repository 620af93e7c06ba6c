//! Where each setting of ssefs's two TOML files belongs: the mount's config
//! file (the service layer) and the data directory's `.ssefs/config.toml`
//! (grants and KMS settings, the KMS layer). Each file points a misplaced
//! setting to its home; the lists live here, below both, so that neither
//! layer depends on the other.

/// Every key of the mount's config file (`ssefs --config FILE`), in the
/// order the example documents them.
pub const MOUNT_KEYS: &[&str] = &[
    "data_dir",
    "mountpoint",
    "root_key",
    "passphrase_file",
    "allow_other",
    "allow_root",
    "read_only",
    "threads",
    "cache_mb",
    "max_inodes",
    "io_uring",
    "meta_ttl_ms",
    "log_level",
];

/// Keys of the data directory's own `.ssefs/config.toml` (KMS grants and
/// settings). They stay there, with the keystore they govern, because the
/// CLI uses them as much as the mount; the mount's file gives an error
/// saying so.
pub const DATA_DIR_KEYS: &[&str] = &["kms", "grant", "master_rotation_days"];

/// The key of serde's "unknown field `KEY`, expected ..." message.
pub fn unknown_field(msg: &str) -> Option<&str> {
    msg.strip_prefix("unknown field `")?
        .split_once('`')
        .map(|(k, _)| k)
}
