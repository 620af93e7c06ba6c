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
//! A write through the mount racing with a rewrite of the same object can
//! be lost (the rename replaces the file the writer had open), as with
//! CopyObject over itself in OSS; `rewrap` detects a change during its copy
//! and leaves that object for a later run.

mod reencrypt;
mod rewrap;
mod status;
mod verify;
mod walk;

use std::fmt;

use indicatif::{ProgressBar, ProgressStyle};

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
    pub failures: Vec<Failure>,
}

impl Report {
    /// The summary line, e.g. `reencrypt: 12 objects checked, 5 rewritten, 0 failed`.
    pub fn summary(&self, op: &str, changed_word: &str) -> String {
        let mut s = format!("{op}: {} objects checked", self.checked);
        if !changed_word.is_empty() {
            s.push_str(&format!(", {} {changed_word}", self.changed));
        }
        s.push_str(&format!(", {} failed", self.failures.len()));
        s
    }

    /// Runs `one` on every object of `list` with progress on `pb`: `Ok(true)`
    /// counts as changed, an error as a failure of that object (the run goes
    /// on with the next one).
    fn run(
        list: &[ObjectEntry],
        pb: &ProgressBar,
        mut one: impl FnMut(&ObjectEntry) -> crate::error::Result<bool>,
    ) -> Report {
        let mut report = Report::default();
        pb.set_length(list.len() as u64);
        for obj in list {
            pb.set_message(obj.name.clone());
            report.checked += 1;
            match one(obj) {
                Ok(true) => report.changed += 1,
                Ok(false) => {}
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
