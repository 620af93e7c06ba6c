//! The local backend, reached only through descriptors.
//!
//! The daemon runs as root and serves users who may rename directories and
//! plant symlinks through the mount while it works. So nothing here takes a
//! path below the data directory and hands it to the kernel whole: names
//! are resolved relative to directory descriptors that are held open, with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (or `O_NOFOLLOW` one
//! component at a time on kernels without it), and whole files are replaced
//! by an exchange against the parent descriptor that checks the identity
//! (device and inode) of what it replaced ([`Dir::replace`]). docs/SECURITY.md
//! §"Local users attacking the root daemon" lists what this guarantees and
//! the tests that show it.
//!
//! [`strict`] holds the other half: refusing a data directory, state
//! directory or key file that someone else could swap or write.

mod dir;
pub mod strict;

pub use dir::{Dir, Ident};
