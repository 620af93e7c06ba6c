//! `ssefs rewrap [BUCKET]`: re-wraps data keys under the newest master key
//! version (SSE-OSS) or the CMK's primary version (SSE-KMS), without
//! re-encrypting the data.
//!
//! The new header keeps the object id, method, cipher and data key, so the
//! chunks, whose associated data binds the object id, stay valid byte for
//! byte. The header is still never overwritten in place: a torn 128-byte
//! write would make the data key unrecoverable and lose the object. Instead
//! the whole file is copied behind the new header into a temp file, fsynced
//! and renamed over the object (attributes and override kept).

use std::fs::Metadata;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use indicatif::ProgressBar;

use super::{claim, walk, Outcome, Report};
use crate::backend::Ident;
use crate::engine::{copy_posix_attrs, mark_replaces, Engine};
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
    let src = &found.file;
    let before = src.metadata().ctx(name)?;
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
    // Held until the new file is renamed into place. A write that ended
    // before it still shows in `changed` below (`before` is from the open).
    let Some(_claim) = claim(&found, name)? else {
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
    let over = Engine::read_override(src, name)?;
    let expect = Ident::of_fd(src.as_fd()).ctx(name)?;

    let mut tmp = engine.temp_file(0o644)?;
    let res = (|| -> Result<()> {
        let f = &mut tmp.file;
        f.write_all(&new.encode()).ctx(name)?;
        let mut from = src;
        from.seek(SeekFrom::Start(HEADER_LEN as u64)).ctx(name)?;
        io::copy(&mut from, f).ctx(name)?;
        Engine::write_override(f, name, over.as_ref())?;
        copy_posix_attrs(src, f).ctx(name)?;
        mark_replaces(f, expect).ctx(name)?;
        f.sync_all().ctx(name)?;
        // The claim keeps writers through a mount out; a write by anything
        // else during the copy (the CLI's put or copy, another tool) would
        // leave a mix of old and new chunks in the temp file: give up on
        // this object rather than install that (a later run picks it up).
        let after = src.metadata().ctx(name)?;
        if changed(&before, &after) {
            return Err(Error::new(
                OssCode::InternalError,
                "object changed during rewrap; left as it was, run rewrap again",
            )
            .resource(name));
        }
        Ok(())
    })();
    if let Err(e) = res {
        engine.discard_temp(&tmp);
        return Err(e);
    }
    engine.replace_with_temp(&tmp, (&found.dir, &found.leaf), expect, name)?;
    Ok(Outcome::Changed)
}

fn changed(a: &Metadata, b: &Metadata) -> bool {
    (
        a.ino(),
        a.dev(),
        a.size(),
        a.mtime(),
        a.mtime_nsec(),
        a.ctime(),
        a.ctime_nsec(),
    ) != (
        b.ino(),
        b.dev(),
        b.size(),
        b.mtime(),
        b.mtime_nsec(),
        b.ctime(),
        b.ctime_nsec(),
    )
}
