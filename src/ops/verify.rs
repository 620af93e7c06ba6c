//! `ssefs verify [BUCKET]`: authenticates every chunk of every object.

use indicatif::ProgressBar;

use super::{walk, Outcome, Report};
use crate::backend::Loc;
use crate::engine::Engine;
use crate::error::Result;
use crate::oss::BucketName;
use crate::principal::Principal;

/// Checks the objects of `bucket` (all buckets when `None`); every object
/// that fails (bad header, data key that will not unwrap, chunk that fails
/// authentication, or a key `p` may not use) is in `failures`.
pub fn verify(
    engine: &Engine,
    p: &Principal,
    bucket: Option<&BucketName>,
    pb: &ProgressBar,
) -> Result<Report> {
    let list = walk::all_objects(engine, bucket)?;
    Ok(Report::run(&list, pb, |obj| {
        // Read front to back: on a store, checked while it arrives.
        let at = Loc {
            bucket: &obj.bucket,
            key: &obj.key,
        };
        let fetched = engine.backend().fetch(at)?;
        if fetched.len == 0 {
            // No header yet (created empty through a mount): nothing to check.
            return Ok(Outcome::Unchanged);
        }
        let chunk = engine.bucket_chunk_size(&obj.bucket)?;
        engine
            .open_slots(p, fetched.slots, obj.name.clone(), chunk)
            .and_then(|o| o.verify())
            .map(|()| Outcome::Unchanged)
    }))
}
