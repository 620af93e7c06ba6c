//! `ssefs reencrypt BUCKET[/PREFIX]`: brings objects to their target
//! encryption, as CopyObject over itself does in OSS.
//!
//! The target of an object is its per-object override (the encryption it
//! was uploaded with explicitly, kept in the backend xattr) if it has one,
//! else the bucket rule, else none: an explicit choice made at upload wins
//! over the bucket default in OSS, and a rewrite keeps it. Only objects
//! whose stored method, cipher or CMK differ from the target are rewritten;
//! key versions are `rewrap`'s business.

use indicatif::ProgressBar;

use super::{walk, Found, Outcome, Report};
use crate::crypto::Cipher;
use crate::engine::Engine;
use crate::error::Result;
use crate::format::{Header, Method};
use crate::kms::WrapTarget;
use crate::oss::{BucketName, SseAlgorithm, SseConfig};
use crate::principal::Principal;

/// What an object's header must say to match its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stored {
    method: Method,
    cipher: Cipher,
    /// Only compared for KMS (SSE-OSS has the one master key).
    key_id: [u8; 16],
}

impl Stored {
    fn of(h: &Header) -> Self {
        Stored {
            method: h.method,
            cipher: h.cipher,
            key_id: if h.method == Method::Kms {
                h.key_id
            } else {
                [0; 16]
            },
        }
    }
}

/// Resolves targets to what the header must hold, once per distinct target
/// (a CMK alias or the default managed key resolves through the KMS).
struct Targets<'a> {
    engine: &'a Engine,
    p: &'a Principal,
    seen: Vec<(Option<SseConfig>, Stored)>,
}

impl Targets<'_> {
    fn resolve(&mut self, sse: Option<&SseConfig>) -> Result<Stored> {
        if let Some((_, s)) = self.seen.iter().find(|(c, _)| c.as_ref() == sse) {
            return Ok(*s);
        }
        let s = match sse {
            None => Stored {
                method: Method::None,
                cipher: Cipher::None,
                key_id: [0; 16],
            },
            Some(c) if c.algorithm == SseAlgorithm::Kms => {
                let kek = self
                    .engine
                    .kms()
                    .encryptor(self.p, &WrapTarget::Cmk(c.kms_key_id.clone()))?;
                Stored {
                    method: Method::Kms,
                    cipher: c.cipher(),
                    key_id: kek.key_id(),
                }
            }
            Some(c) => Stored {
                method: Method::Oss,
                cipher: c.cipher(),
                key_id: [0; 16],
            },
        };
        self.seen.push((sse.cloned(), s));
        Ok(s)
    }
}

/// Rewrites the objects of `bucket` under `prefix` whose encryption differs
/// from their target; reports each object it could not check or rewrite.
pub fn reencrypt(
    engine: &Engine,
    p: &Principal,
    bucket: &BucketName,
    prefix: Option<&str>,
    pb: &ProgressBar,
) -> Result<Report> {
    let list = walk::objects(engine, bucket, prefix)?;
    let rule = engine.bucket_rule(bucket)?;
    let mut targets = Targets {
        engine,
        p,
        seen: Vec::new(),
    };
    Ok(Report::run(&list, pb, |obj| {
        one(engine, p, &mut targets, rule.as_ref(), obj)
    }))
}

/// Rewrites one object if needed.
fn one(
    engine: &Engine,
    p: &Principal,
    targets: &mut Targets<'_>,
    rule: Option<&SseConfig>,
    obj: &walk::ObjectEntry,
) -> Result<Outcome> {
    let found = obj.find(engine)?;
    if needs_rewrite(targets, rule, obj, &found)?.is_none() {
        return Ok(Outcome::Unchanged);
    }
    // Held until the new file is renamed into place.
    let Some(_claim) = engine.backend().claim(&found, &obj.name)? else {
        return Ok(Outcome::Busy);
    };
    // Decide again under the claim: the object may have changed since.
    let Some(over) = needs_rewrite(targets, rule, obj, &found)? else {
        return Ok(Outcome::Unchanged);
    };
    let target = over.as_ref().or(rule);
    engine.reencrypt_found(p, &obj.bucket, &found, &obj.name, (target, over.as_ref()))?;
    Ok(Outcome::Changed)
}

/// `Some(override)` when the object's stored encryption differs from its
/// target (its override, else `rule`).
fn needs_rewrite(
    targets: &mut Targets<'_>,
    rule: Option<&SseConfig>,
    obj: &walk::ObjectEntry,
    found: &Found,
) -> Result<Option<Option<SseConfig>>> {
    if found.headerless() {
        return Ok(None);
    }
    let f = found.file();
    let header = Engine::read_header(f, &obj.name)?;
    // Not ours to fix: an object in the wrong bucket's chunk size fails.
    Engine::check_chunk(
        &header,
        targets.engine.bucket_chunk_size(&obj.bucket)?,
        &obj.name,
    )?;
    let over = targets.engine.backend().sse_override(found, &obj.name)?;
    let want = targets
        .resolve(over.as_ref().or(rule))
        .map_err(|e| e.resource(&obj.name))?;
    Ok((Stored::of(&header) != want).then_some(over))
}
