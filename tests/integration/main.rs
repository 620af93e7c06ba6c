//! Integration tests: the built `ssefs` binary, driven as a user would.

mod badinput;
mod chunks;
mod cli;
mod confine;
mod crash;
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
mod stress;
mod tamper;
mod util;
