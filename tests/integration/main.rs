//! Integration tests: the built `ssefs` binary, driven as a user would.

// Test code: a failed step should stop the test loudly, where it failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod badinput;
mod chunks;
mod cli;
mod confine;
mod crash;
mod fallback;
mod fullspace;
mod hardening;
mod keylife;
mod mount;
mod ops;
mod plainmac;
mod policy;
mod rootkey;
mod scale;
mod service;
mod store;
mod store_hosts;
mod store_mount;
mod stress;
mod tamper;
mod uring;
mod util;
