//! Operations commands, safe to run while the data directory is mounted:
//! `reencrypt` (bring objects to their bucket rule), `rewrap` (move data keys
//! to the newest key versions), `verify` (authenticate every chunk) and
//! `status`.
//!
//! Every change is a whole new file written in `.ssefs/tmp`, fsynced and
//! renamed over the object, so an interruption at any point (Ctrl-C, kill -9,
//! power loss) leaves each object either old or new, never half; a leftover
//! temp file is removed by the next `Engine::open` once it is stale.
//!
//! Writes through a mount are never lost to a rewrite: the daemon holds a
//! shared flock(2) on the backend file of every object open for writing
//! (fs::io), and `reencrypt` and `rewrap` replace an object only under an
//! exclusive one taken without waiting (`Backend::claim`). A busy object is
//! skipped and reported ("busy"), for a later run. A writer that opens the
//! object during a rewrite waits for the rename, then finds its file
//! replaced and has the kernel look the name up again.

mod migrate;
mod reencrypt;
mod rewrap;
mod status;
mod verify;

use std::fmt;

use indicatif::{ProgressBar, ProgressStyle};

use crate::error::Result;

pub use crate::backend::Found;
pub(crate) use crate::engine::walk;
pub use migrate::{migrate, Migrated};
pub use reencrypt::reencrypt;
pub use rewrap::rewrap;
pub use status::{status, BucketStatus, MountInfo, Status};
pub use verify::verify;
pub use walk::{objects, ObjectEntry};

/// An object an operation could not handle, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `BUCKET/KEY`.
    pub name: String,
    pub reason: String,
}

/// What an operation did, for its summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub checked: u64,
    /// Rewritten (reencrypt), re-wrapped (rewrap); always 0 for verify.
    pub changed: u64,
    /// `BUCKET/KEY` of objects skipped because they were open for writing
    /// through a mount.
    pub busy: Vec<String>,
    pub failures: Vec<Failure>,
}

/// What an operation did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Unchanged,
    Changed,
    /// Open for writing through a mount: left alone.
    Busy,
}

impl Report {
    /// The summary line, e.g. `reencrypt: 12 objects checked, 5 rewritten,
    /// 0 failed` (with `, 1 busy` before `failed` when objects were skipped).
    pub fn summary(&self, op: &str, changed_word: &str) -> String {
        let mut s = format!("{op}: {} objects checked", self.checked);
        if !changed_word.is_empty() {
            s.push_str(&format!(", {} {changed_word}", self.changed));
        }
        if !self.busy.is_empty() {
            s.push_str(&format!(", {} busy", self.busy.len()));
        }
        s.push_str(&format!(", {} failed", self.failures.len()));
        s
    }

    /// Runs `one` on every object of `list` with progress on `pb`: an error
    /// is a failure of that object (the run goes on with the next one).
    fn run(
        list: &[ObjectEntry],
        pb: &ProgressBar,
        mut one: impl FnMut(&ObjectEntry) -> Result<Outcome>,
    ) -> Report {
        let mut report = Report::default();
        pb.set_length(list.len() as u64);
        for obj in list {
            pb.set_message(obj.name.clone());
            report.checked += 1;
            match one(obj) {
                Ok(Outcome::Changed) => report.changed += 1,
                Ok(Outcome::Unchanged) => {}
                Ok(Outcome::Busy) => report.busy.push(obj.name.clone()),
                Err(e) => report.fail(&obj.name, e),
            }
            pb.inc(1);
        }
        pb.finish_and_clear();
        report
    }

    fn fail(&mut self, name: &str, reason: impl fmt::Display) {
        self.failures.push(Failure {
            name: name.to_owned(),
            reason: reason.to_string(),
        });
    }
}

/// A progress bar on stderr for `len` objects. indicatif draws nothing when
/// stderr is not a terminal, so logs and pipes stay clean.
pub fn progress_bar(len: u64, op: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    // The template is a constant known to parse; fall back to the default
    // style rather than fail an operation over its progress display.
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} {wide_msg}") {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(op.to_owned());
    pb
}

#[cfg(test)]
mod tests;
