//! `ssefs verify [BUCKET]`: authenticates every chunk of every object.

use std::fs::File;

use indicatif::ProgressBar;

use super::{walk, Report};
use crate::engine::Engine;
use crate::error::{IoContext, Result};
use crate::kms::Principal;
use crate::oss::BucketName;

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
    let mut report = Report::default();
    pb.set_length(list.len() as u64);
    for obj in &list {
        pb.set_message(obj.name.clone());
        report.checked += 1;
        let res = File::open(&obj.path)
            .ctx(&obj.name)
            .and_then(|f| engine.open_object(p, f, obj.name.clone()))
            .and_then(|o| o.verify());
        if let Err(e) = res {
            report.fail(&obj.name, e);
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(report)
}
