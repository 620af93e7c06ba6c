//! Integration tests: the built `ssefs` binary, driven as a user would.

mod cli;
mod crash;
mod fullspace;
mod mount;
mod ops;
mod service;
mod stress;
mod util;
