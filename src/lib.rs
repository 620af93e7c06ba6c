//! ssefs: Alibaba Cloud OSS server-side encryption on a local data directory.
//!
//! Layers, bottom up; each uses only those above it in this list (no
//! circles):
//!
//! - `error`: the one error type, carrying an OSS error code and an errno.
//! - `settings`, `mountinfo`: small shared parsers (where each TOML setting
//!   belongs; `/proc/self/mountinfo`).
//! - `principal`: who makes a request (uid, groups, CAP_FSETID), for the
//!   KMS grants and the filesystem's permission checks alike.
//! - `crypto`: ciphers, key and nonce newtypes, keyed tags, randomness.
//! - `format`: the on-disk object format of docs/FORMAT.md (header, chunks).
//! - `oss`: rules, names, values and error codes as OSS defines them.
//! - `backend`: where objects live. The `Backend` trait (buckets, keys,
//!   versions, staged writes committed under a condition, claims) with
//!   ssefs's own records beside them (`StateStore`: keystore, grants,
//!   bucket settings). Two implementations: the data directory, reached
//!   only through held descriptors (openat2 beneath, no symlinks), with
//!   its ownership and mode checks; and `backend::s3`, an S3-compatible
//!   store through object_store (authenticated metadata records, the
//!   ticket lock or compare-and-swap, uploads and downloads that overlap
//!   the encryption).
//! - `kms`: the built-in key service (keystore, root key, grants, policy
//!   MACs).
//! - `engine`: buckets and objects on the backend: uploads, reads,
//!   re-encryption, bucket settings, the upgrade of older data directories.
//! - `fs`: the filesystem core, testable without a mount (inodes by file
//!   handle, namespace rules, permissions, setattr, open objects).
//! - `ops`: reencrypt, rewrap, verify, status and migrate over whole
//!   buckets.
//! - `service`: the mount's options and config file, systemd notification,
//!   the mount helper.
//! - `fuse`: the thin adapter between the kernel's FUSE requests and `fs`,
//!   and the mount's life cycle.
//! - `cli`: the command line, on top of all of them.

pub mod backend;
pub mod cli;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod format;
pub mod fs;
pub mod fuse;
pub mod kms;
pub mod mountinfo;
pub mod ops;
pub mod oss;
pub mod principal;
pub mod service;
pub mod settings;
