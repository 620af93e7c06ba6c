//! ssefs: Alibaba Cloud OSS server-side encryption on a local data directory.
//!
//! Layers, bottom up: `crypto` (ciphers and key newtypes), `format` (the
//! on-disk object format of docs/FORMAT.md), `kms` (the built-in key service
//! and permissions), `oss` (rules, names and error codes as OSS defines
//! them), `engine` (buckets and objects on the backend), `ops` (reencrypt,
//! rewrap, verify and status over whole buckets), `cli`.

pub mod backend;
pub mod cli;
pub mod crypto;
pub mod engine;
pub mod error;
pub mod format;
pub mod fs;
pub mod fuse;
pub mod kms;
pub mod ops;
pub mod oss;
pub mod service;
