//! `ssefs migrate SRC DST`: a data directory's buckets onto a store, or a
//! store's back onto a data directory (issue 14).
//!
//! Objects move as they are stored: the same bytes (FORMAT.md §2–§4) and
//! the same metadata (mode, owner, times, user xattrs, override), with the
//! keystore, the grants and each bucket's settings copied as records. So
//! nothing is decrypted or re-encrypted on the way, and the same root key
//! opens the copy (its file is named after the keystore's id, which moves
//! with it). Each object is committed whole; a run that stops anywhere
//! leaves DST with whole objects only, and the next run skips those whose
//! length and header already match. At the end every object copied is
//! verified in DST, chunk by chunk, through a fresh open of DST.

use std::io::Read;
use std::os::unix::fs::FileExt;

use indicatif::ProgressBar;

use super::Failure;
use crate::backend::{Backend, Cond, Loc, SlotIo, State};
use crate::engine::Engine;
use crate::error::{Error, IoContext, OssCode, Result};
use crate::format::HEADER_LEN;
use crate::kms::MacPurpose;
use crate::oss::BucketName;

/// What a migration did.
#[derive(Debug, Default)]
pub struct Migrated {
    /// Copied this run.
    pub copied: u64,
    /// Already in DST with the same length and header (an earlier run).
    pub present: u64,
    pub buckets: u64,
    pub failures: Vec<Failure>,
}

/// Copies everything of `src` (opened as `engine`) into `dst`.
pub fn migrate(src: &Engine, dst: &dyn Backend, pb: &ProgressBar) -> Result<Migrated> {
    let from = src.backend();
    copy_state(from, dst)?;
    // DST's metadata records (on a store) are keyed from the same root key.
    dst.use_meta_key(
        src.kms()
            .policy_mac_key(MacPurpose::ObjectMeta)
            .into_secret(),
    );
    let mut m = Migrated::default();
    let buckets = from.list_buckets()?;
    let mut all = Vec::new();
    for b in &buckets {
        all.extend(super::walk::objects(src, b, None)?);
    }
    pb.set_length(all.len() as u64);
    for b in &buckets {
        copy_bucket(from, dst, b)?;
        m.buckets += 1;
    }
    for obj in &all {
        pb.set_message(obj.name.clone());
        match copy_object(from, dst, &obj.bucket, &obj.key, &obj.name) {
            Ok(true) => m.copied += 1,
            Ok(false) => m.present += 1,
            Err(e) => m.failures.push(Failure {
                name: obj.name.clone(),
                reason: e.to_string(),
            }),
        }
        pb.inc(1);
    }
    Ok(m)
}

/// The keystore and the grants, as records. A DST that already has a
/// keystore must be a copy of SRC's (the same data directory id): its
/// records are brought up to SRC's.
fn copy_state(from: &dyn Backend, dst: &dyn Backend) -> Result<()> {
    let ks = from
        .get_state(State::Keystore)?
        .map(|(b, _)| b)
        .ok_or_else(|| Error::new(OssCode::KmsServiceNotEnabled, "SRC has no keystore"))?;
    if dst.state_version(State::Keystore)?.is_some() {
        let id = crate::kms::recorded_data_dir_id(from);
        if id.is_none() || crate::kms::recorded_data_dir_id(dst) != id {
            return Err(Error::new(
                OssCode::InvalidArgument,
                "DST already holds another keystore (another data directory's id): \
                 migrate into an empty place",
            )
            .resource(dst.describe()));
        }
    }
    dst.update_state(State::Keystore, &mut |_| Ok(Some(ks.clone())))?;
    let grants = from.get_state(State::Grants)?.map(|(b, _)| b);
    if let Some(g) = grants {
        dst.update_state(State::Grants, &mut |_| Ok(Some(g.clone())))?;
    }
    Ok(())
}

/// The bucket, and its settings record as it is.
fn copy_bucket(from: &dyn Backend, dst: &dyn Backend, b: &BucketName) -> Result<()> {
    match dst.create_bucket(b) {
        Ok(()) => {}
        Err(e) if e.code == OssCode::BucketAlreadyExists => {}
        Err(e) => return Err(e),
    }
    if let Some((s, _)) = from.get_state(State::BucketSettings(b))? {
        dst.update_state(State::BucketSettings(b), &mut |_| Ok(Some(s.clone())))?;
    }
    Ok(())
}

/// One object; false if DST already has it (same length and header).
fn copy_object(
    from: &dyn Backend,
    dst: &dyn Backend,
    bucket: &BucketName,
    key: &str,
    name: &str,
) -> Result<bool> {
    let at = Loc { bucket, key };
    let found = from.find(at)?;
    let meta = from.meta(&found)?;
    // Only the header of what DST has is read (a store streams no further).
    if let Ok(there) = dst.fetch(at) {
        if there.len == found.len && same_header(found.file(), &*there.slots, found.len, name)? {
            return Ok(false);
        }
    }
    let staged = dst.stage(name)?;
    let copied = (|| {
        let mut src = found.file();
        let mut buf = vec![0u8; 1 << 20];
        let mut off = 0u64;
        loop {
            let n = src.read(&mut buf).ctx(name)?;
            if n == 0 {
                break;
            }
            staged.file.write_all_at(&buf[..n], off).ctx(name)?;
            off += n as u64;
        }
        if off != found.len {
            return Err(Error::new(
                OssCode::InternalError,
                format!("read {off} bytes of {}: changed while copied?", found.len),
            )
            .resource(name));
        }
        Ok(())
    })();
    if let Err(e) = copied {
        dst.discard(staged);
        return Err(e);
    }
    dst.commit(staged, at, &meta, Cond::Any)?;
    Ok(true)
}

fn same_header(a: &std::fs::File, b: &dyn SlotIo, len: u64, name: &str) -> Result<bool> {
    let n = (len as usize).min(HEADER_LEN);
    let (mut x, mut y) = (vec![0u8; n], vec![0u8; n]);
    a.read_exact_at(&mut x, 0).ctx(name)?;
    let mut got = 0;
    while got < n {
        match b.read_slots(&mut y[got..], got as u64).ctx(name)? {
            0 => return Ok(false),
            k => got += k,
        }
    }
    Ok(x == y)
}
