//! `ssefs rewrap [BUCKET]`: re-wraps data keys under the newest master key
//! version (SSE-OSS) or the CMK's primary version (SSE-KMS), without
//! re-encrypting the data.
//!
//! The new header keeps the object id, method, cipher and data key, so the
//! chunks, whose associated data binds the object id, stay valid byte for
//! byte. The header is still never overwritten in place: a torn 128-byte
//! write would make the data key unrecoverable and lose the object. Instead
//! the whole file is copied behind the new header into a staged write that
//! the backend commits only over the version read (attributes and override
//! kept).

use std::io::{self, Seek, SeekFrom, Write};

use indicatif::ProgressBar;

use super::{walk, Outcome, Report};
use crate::engine::Engine;
use crate::error::{Error, IoContext, OssCode, Result};
use crate::format::{Header, Method, HEADER_LEN};
use crate::kms::{Kms, WrapTarget};
use crate::oss::BucketName;
use crate::principal::Principal;

/// Re-wraps the objects of `bucket` (all buckets when `None`) whose data key
/// is not wrapped under the current version of its key.
pub fn rewrap(
    engine: &Engine,
    p: &Principal,
    bucket: Option<&BucketName>,
    pb: &ProgressBar,
) -> Result<Report> {
    let list = walk::all_objects(engine, bucket)?;
    Ok(Report::run(&list, pb, |obj| one(engine, p, obj)))
}

/// Re-wraps one object if its key version is not current.
fn one(engine: &Engine, p: &Principal, obj: &walk::ObjectEntry) -> Result<Outcome> {
    let found = obj.find(engine)?;
    if found.headerless() {
        return Ok(Outcome::Unchanged);
    }
    let name = obj.name.as_str();
    let src = found.file();
    let header = Engine::read_header(src, name)?;
    // The chunks are copied byte for byte, so the chunk size stays the
    // header's; one that is not the bucket's is refused, not carried on.
    Engine::check_chunk(&header, engine.bucket_chunk_size(&obj.bucket)?, name)?;
    let target = match header.method {
        // No data key, nothing to wrap.
        Method::None => return Ok(Outcome::Unchanged),
        Method::Oss => WrapTarget::Master,
        Method::Kms => WrapTarget::Cmk(Some(Kms::key_id_string(&header.key_id))),
    };
    let kek = engine
        .kms()
        .encryptor(p, &target)
        .map_err(|e| e.resource(name))?;
    if kek.key_id() == header.key_id && kek.version() == header.key_version {
        return Ok(Outcome::Unchanged);
    }
    // Held until the new file takes the object's place.
    let Some(_claim) = engine.backend().claim(&found, name)? else {
        return Ok(Outcome::Busy);
    };
    // Unwrapping also authenticates the old header.
    let key = engine
        .unwrap_key(p, &header)
        .map_err(|e| e.resource(name))?;
    let new = Header::seal_with(
        header.method,
        header.cipher,
        header.chunk,
        header.object_id,
        &kek,
        &key,
    );
    let backend = engine.backend();
    // Mode, owner, times, user metadata and override stay the object's.
    let meta = backend.meta(&found)?;
    let mut staged = backend.stage(name)?;
    let copied = (|| -> Result<()> {
        let f = &mut staged.file;
        f.write_all(&new.encode()).ctx(name)?;
        let mut from = src;
        from.seek(SeekFrom::Start(HEADER_LEN as u64)).ctx(name)?;
        io::copy(&mut from, f).ctx(name).map(drop)
    })();
    if let Err(e) = copied {
        backend.discard(staged);
        return Err(e);
    }
    // Only over the version read: the claim keeps writers through a mount
    // out, but a write by anything else during the copy (the CLI's put or
    // copy, another tool) would leave a mix of old and new chunks in the
    // copy. Then this object is left as it is (a later run picks it up).
    backend.replace(staged, &found, &meta, name).map_err(|e| {
        if e.code == OssCode::PreconditionFailed {
            Error::new(
                OssCode::PreconditionFailed,
                "object changed during rewrap; left as it was, run rewrap again",
            )
            .resource(name)
        } else {
            e
        }
    })?;
    Ok(Outcome::Changed)
}
