//! The ticket lock: read-modify-write of ssefs's records across processes
//! and hosts on a store that ignores conditional writes (Garage 2.5 does;
//! docs/design/s3-backend.md §1.6).
//!
//! It needs only PUT and LIST to be linearizable (Garage's default
//! read-after-write at quorum):
//! 1. PUT `PREFIX/.ssefs/locks/NAME/UUID` (body: host, pid);
//! 2. LIST the prefix; a ticket is live if its LastModified is after ours
//!    minus the lease; expired ones are deleted;
//! 3. ours the only live one: held. Else DELETE ours, wait a random,
//!    doubling while, back to 1.
//!
//! Two takers can never both see only themselves: if A's LIST missed B's
//! ticket, B's PUT finished after A's LIST began, so after A's PUT, and
//! B's LIST sees A's. A holder that crashed blocks others for one lease.
//! The holder must finish within a quarter of the lease (`Held::fresh`),
//! so that its ticket cannot expire under it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};

use super::S3Backend;
use crate::crypto::fill_random;
use crate::error::{Error, OssCode, Result};

/// How long a ticket counts as live after its PUT.
pub const LEASE: Duration = Duration::from_secs(60);
/// Give up waiting after this long (a holder that crashed costs one lease).
const PATIENCE: Duration = Duration::from_secs(180);

/// A lock held: its ticket, and when the LIST that granted it began.
pub struct Held {
    ticket: StorePath,
    since: Instant,
}

impl Held {
    /// Whether the holder may still write: a quarter of the lease has not
    /// passed since it was granted.
    pub fn fresh(&self) -> bool {
        self.since.elapsed() < LEASE / 4
    }
}

pub(super) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    fill_random(&mut b);
    u64::from_le_bytes(b)
}

pub(super) fn ticket_id() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

impl S3Backend {
    /// Takes the lock `name`, waiting for its holder if there is one.
    pub(super) fn lock(&self, name: &str) -> Result<Held> {
        let dir = self.path(&format!(".ssefs/locks/{name}"))?;
        let start = Instant::now();
        let mut wait_ms = 50u64;
        loop {
            let ticket = StorePath::from(format!("{dir}/{}", ticket_id()));
            let body = format!("host={} pid={}\n", hostname(), std::process::id());
            let since = Instant::now();
            let all = self.call(&format!("lock {name}"), |s| {
                let (ticket, dir, body) = (ticket.clone(), dir.clone(), body.clone());
                async move {
                    s.put(&ticket, PutPayload::from(Bytes::from(body))).await?;
                    s.list(Some(&dir)).try_collect::<Vec<_>>().await
                }
            })?;
            let Some(mine) = all.iter().find(|m| m.location == ticket) else {
                // Our own PUT not listed: the store is not read-after-write
                // consistent for LIST, which this lock needs.
                self.unlock_path(&ticket);
                return Err(Error::new(
                    OssCode::InternalError,
                    format!(
                        "lock {name}: the store did not list a ticket just written; \
                         it is not consistent enough for ssefs's records"
                    ),
                )
                .resource(self.shown.clone()));
            };
            let lease = chrono_ms(LEASE);
            let floor = mine.last_modified.timestamp_millis() - lease;
            let mut others = 0;
            for m in &all {
                if m.location == ticket {
                    continue;
                }
                if m.last_modified.timestamp_millis() <= floor {
                    // Expired: its holder died. Anyone may clear it.
                    tracing::warn!(ticket = %m.location, "removing an expired lock ticket");
                    self.unlock_path(&m.location);
                } else {
                    others += 1;
                }
            }
            if others == 0 {
                return Ok(Held { ticket, since });
            }
            self.unlock_path(&ticket);
            if start.elapsed() > PATIENCE {
                return Err(Error::new(
                    OssCode::InternalError,
                    format!(
                        "lock {name}: still held by another process after {} s; if it \
                         crashed, its ticket expires {} s after it was taken",
                        PATIENCE.as_secs(),
                        LEASE.as_secs()
                    ),
                )
                .resource(self.shown.clone()));
            }
            // Random, so that two takers that saw each other do not meet
            // again at once; doubling up to 800 ms.
            let ms = wait_ms / 2 + random_u64() % (wait_ms / 2 + 1);
            std::thread::sleep(Duration::from_millis(ms));
            wait_ms = (wait_ms * 2).min(800);
        }
    }

    /// Releases a lock.
    pub(super) fn unlock(&self, h: Held) {
        self.unlock_path(&h.ticket);
    }

    fn unlock_path(&self, p: &StorePath) {
        // A ticket left behind expires with its lease.
        let r = self.call("lock ticket", |s| {
            let p = p.clone();
            async move { s.delete(&p).await }
        });
        if let Err(e) = r {
            tracing::warn!(ticket = %p, "could not remove a lock ticket: {e}");
        }
    }
}

fn chrono_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "?".into())
}
