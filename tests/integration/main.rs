//! Integration tests: the built `ssefs` binary, driven as a user would.

mod badinput;
mod cli;
mod keylife;
mod mount;
mod ops;
mod service;
mod tamper;
mod util;
