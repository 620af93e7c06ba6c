//! An object's metadata on a store, authenticated (FORMAT.md §9).
//!
//! A store's operator can edit user metadata as easily as bytes, so the
//! mode, owner, times, xattrs and encryption override of an object travel
//! in one record with a MAC under a key derived from the root key:
//!
//! ```text
//! x-amz-meta-ssefs: 1.<base64url(record)>.<base64url(tag)>
//! tag = HMAC-SHA256(K_meta, len‖"ssefs-meta-v1" ‖ len‖record)
//! ```
//!
//! The record names the object id of the header it was written with, so a
//! record copied onto another object fails the open (`check_oid`). It is
//! not bound to the key: a rename (copy, delete) keeps it valid, as the
//! local format does not bind objects to names either.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::backend::ObjMeta;
use crate::crypto::{mac_parts, tags_equal, SecretKey};
use crate::error::{Error, OssCode, Result};
use crate::oss::SseConfig;

/// The user-metadata name (`x-amz-meta-ssefs`).
pub const META_NAME: &str = "ssefs";
const VERSION: &str = "1";
const DOMAIN: &[u8] = b"ssefs-meta-v1";

#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Record {
    /// The header's object id, hex; empty for an object without a header.
    oid: String,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    atime: Option<(i64, i64)>,
    mtime: Option<(i64, i64)>,
    ctime: Option<(i64, i64)>,
    sse: Option<SseConfig>,
    /// base64url(name) = base64url(value).
    #[serde(default)]
    xattrs: BTreeMap<String, String>,
    /// "dir" for a directory's record, "link" for a symlink; absent for
    /// an object (records written before mounts on a store had none).
    kind: Option<String>,
    /// A symlink's target, base64url.
    target: Option<String>,
}

/// What a record describes, besides its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// An object whose header has this object id (None: no header).
    Object(Option<[u8; 16]>),
    /// A directory (`DIR/.ssefs-dir`, an empty store object).
    Dir,
    /// A symlink (an empty store object) and its target.
    Link(Vec<u8>),
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The header value for `meta` on an object whose header has `oid`.
pub fn encode(key: &SecretKey, meta: &ObjMeta, oid: Option<&[u8; 16]>) -> Result<String> {
    encode_shape(key, meta, &Shape::Object(oid.copied()))
}

/// The header value for `meta` on a store object of `shape`.
pub fn encode_shape(key: &SecretKey, meta: &ObjMeta, shape: &Shape) -> Result<String> {
    let (oid, kind, target) = match shape {
        Shape::Object(oid) => (oid.as_ref(), None, None),
        Shape::Dir => (None, Some("dir".to_owned()), None),
        Shape::Link(t) => (None, Some("link".to_owned()), Some(B64.encode(t))),
    };
    let r = Record {
        kind,
        target,
        oid: oid.map(|o| hex(o)).unwrap_or_default(),
        mode: meta.mode,
        uid: meta.owner.map(|o| o.0),
        gid: meta.owner.map(|o| o.1),
        atime: meta.times.map(|t| t[0]),
        mtime: meta.times.map(|t| t[1]),
        ctime: meta.ctime,
        sse: meta.sse_override.clone(),
        xattrs: meta
            .xattrs
            .iter()
            .map(|(n, v)| (B64.encode(n), B64.encode(v)))
            .collect(),
    };
    let body =
        toml::to_string(&r).map_err(|e| Error::new(OssCode::InternalError, e.to_string()))?;
    let tag = mac_parts(key, &[DOMAIN, body.as_bytes()]);
    Ok(format!(
        "{VERSION}.{}.{}",
        B64.encode(body.as_bytes()),
        B64.encode(tag)
    ))
}

/// What a verified record holds: the metadata and the object id it names.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub meta: ObjMeta,
    pub oid: Option<[u8; 16]>,
    pub shape: Shape,
}

fn tampered(shown: &str, why: &str) -> Error {
    Error::integrity(format!(
        "the metadata of {shown} on the store {why}: changed outside ssefs?"
    ))
    .resource(shown)
}

/// Checks and parses a header value; `None` (no record at all) is an
/// integrity error too: every object ssefs writes has one.
pub fn decode(key: &SecretKey, value: Option<&str>, shown: &str) -> Result<Verified> {
    let value = value.ok_or_else(|| tampered(shown, "is missing"))?;
    let mut parts = value.split('.');
    let (Some(v), Some(body), Some(tag), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(tampered(shown, "is not a record"));
    };
    if v != VERSION {
        return Err(tampered(shown, "has an unknown version"));
    }
    let body = B64
        .decode(body)
        .map_err(|_| tampered(shown, "is not base64"))?;
    let tag = B64
        .decode(tag)
        .map_err(|_| tampered(shown, "is not base64"))?;
    // The MAC first: nothing of an unauthenticated record is parsed.
    if !tags_equal(&mac_parts(key, &[DOMAIN, &body]), &tag) {
        return Err(tampered(shown, "does not authenticate"));
    }
    let text = std::str::from_utf8(&body).map_err(|_| tampered(shown, "is not UTF-8"))?;
    let r: Record = toml::from_str(text).map_err(|_| tampered(shown, "does not parse"))?;
    let oid = if r.oid.is_empty() {
        None
    } else {
        let mut o = [0u8; 16];
        if r.oid.len() != 32 {
            return Err(tampered(shown, "names a bad object id"));
        }
        for (i, b) in o.iter_mut().enumerate() {
            *b = u8::from_str_radix(&r.oid[2 * i..2 * i + 2], 16)
                .map_err(|_| tampered(shown, "names a bad object id"))?;
        }
        Some(o)
    };
    let owner = match (r.uid, r.gid) {
        (Some(u), Some(g)) => Some((u, g)),
        _ => None,
    };
    let times = match (r.atime, r.mtime) {
        (Some(a), Some(m)) => Some([a, m]),
        _ => None,
    };
    let mut xattrs = Vec::with_capacity(r.xattrs.len());
    for (n, v) in &r.xattrs {
        let n = B64
            .decode(n)
            .map_err(|_| tampered(shown, "has a bad xattr"))?;
        let v = B64
            .decode(v)
            .map_err(|_| tampered(shown, "has a bad xattr"))?;
        xattrs.push((n, v));
    }
    let shape = match (r.kind.as_deref(), &r.target) {
        (None, None) => Shape::Object(oid),
        (Some("dir"), None) if oid.is_none() => Shape::Dir,
        (Some("link"), Some(t)) if oid.is_none() => Shape::Link(
            B64.decode(t)
                .map_err(|_| tampered(shown, "has a bad link target"))?,
        ),
        _ => return Err(tampered(shown, "has an unknown kind")),
    };
    Ok(Verified {
        shape,
        meta: ObjMeta {
            mode: r.mode,
            owner,
            times,
            xattrs,
            sse_override: r.sse,
            ctime: r.ctime,
        },
        oid,
    })
}

/// The record must name the header it travels with: metadata moved from
/// one object onto another is refused.
pub fn check_oid(v: &Verified, header_oid: Option<&[u8; 16]>, shown: &str) -> Result<()> {
    if v.oid.as_ref() == header_oid {
        Ok(())
    } else {
        Err(tampered(shown, "belongs to another object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::{MacKey, MacPurpose};
    use crate::oss::SseAlgorithm;

    fn key(b: u8) -> SecretKey {
        MacKey::derive(&SecretKey::from_bytes(&[b; 32]), MacPurpose::ObjectMeta).into_secret()
    }

    fn sample() -> ObjMeta {
        ObjMeta {
            mode: Some(0o640),
            owner: Some((1000, 100)),
            times: Some([(1, 2), (3, 4)]),
            xattrs: vec![(b"user.a".to_vec(), vec![0, 255, 10])],
            sse_override: Some(SseConfig {
                algorithm: SseAlgorithm::Sm4,
                kms_key_id: None,
                kms_data_sm4: false,
            }),
            ctime: Some((5, 6)),
        }
    }

    #[test]
    fn a_record_round_trips_and_names_its_object() {
        let oid = [7u8; 16];
        let v = encode(&key(1), &sample(), Some(&oid)).unwrap();
        let d = decode(&key(1), Some(&v), "b/k").unwrap();
        assert_eq!(d.meta, sample());
        check_oid(&d, Some(&oid), "b/k").unwrap();
        let e = check_oid(&d, Some(&[8u8; 16]), "b/k").unwrap_err();
        assert_eq!(e.code, OssCode::DataIntegrityError);
    }

    #[test]
    fn the_spec_vector_verifies() {
        // FORMAT.md §9.2, computed with Python's hmac and hashlib.
        let root = SecretKey::from_bytes(&(0u8..32).collect::<Vec<_>>());
        let k = MacKey::derive(&root, MacPurpose::ObjectMeta).into_secret();
        let v = "1.b2lkID0gIjAwMDEwMjAzMDQwNTA2MDcwODA5MGEwYjBjMGQwZTBmIgptb2RlID0gNDIwCg.\
                 dvkziw07gx1Yd7bUKEDV0QZfODFZ5Fn8Bnl0gT1vKPM";
        let d = decode(&k, Some(v), "b/k").unwrap();
        assert_eq!(d.meta.mode, Some(420));
        let oid: Vec<u8> = (0u8..16).collect();
        assert_eq!(d.oid.map(|o| o.to_vec()), Some(oid));
        // Under another purpose's key it does not.
        let g = MacKey::derive(&root, MacPurpose::Grants).into_secret();
        assert!(decode(&g, Some(v), "b/k").is_err());
    }

    #[test]
    fn an_edited_forged_or_missing_record_is_an_integrity_error() {
        let v = encode(&key(1), &sample(), Some(&[7u8; 16])).unwrap();
        // Another root key.
        assert!(decode(&key(2), Some(&v), "b/k").is_err());
        // A record edited to another mode, with the old tag.
        let (head, tag) = v.rsplit_once('.').unwrap();
        let body = B64.decode(head.split('.').nth(1).unwrap()).unwrap();
        let edited = String::from_utf8(body).unwrap().replace("416", "511");
        let forged = format!("1.{}.{tag}", B64.encode(edited));
        for bad in [Some(forged.as_str()), Some("1.x.y"), Some("junk"), None] {
            let e = decode(&key(1), bad, "b/k").unwrap_err();
            assert_eq!(e.code, OssCode::DataIntegrityError, "{bad:?}");
        }
    }
}
