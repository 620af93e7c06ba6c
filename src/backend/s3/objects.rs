//! Buckets and objects on a store: `Backend` for [`S3Backend`].

use std::ffi::OsString;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};

use super::{arriving, early, etag, meta, EarlyUpload, S3Backend, MARKER};
use crate::backend::state::BUCKET_SETTINGS;
use crate::backend::{
    Backend, Caps, Claim, Cond, Fetched, Found, Loc, ObjMeta, Page, Staged, Version,
};
use crate::crypto::SecretKey;
use crate::error::{Error, IoContext, OssCode, Result};
use crate::oss::{BucketName, SseConfig};

impl Backend for S3Backend {
    fn describe(&self) -> String {
        let how = if self.conditional {
            "conditional writes"
        } else {
            "ticket lock"
        };
        format!("{} ({how})", self.shown)
    }

    fn caps(&self) -> Caps {
        Caps {
            conditional: self.conditional,
            claims: false,
            posix_tree: false,
        }
    }

    fn use_meta_key(&self, key: SecretKey) {
        let _ = self.meta_key.set(key);
    }

    fn list_buckets(&self) -> Result<Vec<BucketName>> {
        let root = if self.prefix.is_empty() {
            None
        } else {
            Some(self.path("")?)
        };
        let listed = self.call(&self.shown, |s| {
            let root = root.clone();
            async move { s.list_with_delimiter(root.as_ref()).await }
        })?;
        let mut out = Vec::new();
        for p in listed.common_prefixes {
            let Some(name) = p.filename() else { continue };
            let Ok(b) = BucketName::parse(name) else {
                continue;
            };
            if self.marker_exists(&b)? {
                out.push(b);
            }
        }
        out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(out)
    }

    fn create_bucket(&self, b: &BucketName) -> Result<()> {
        let held = self.lock("state")?;
        let r = (|| {
            if self.marker_exists(b)? {
                return Err(Error::new(
                    OssCode::BucketAlreadyExists,
                    "The requested bucket name is not available.",
                )
                .resource(b.as_str().to_owned()));
            }
            let p = self.path(&format!("{b}/{MARKER}"))?;
            let body = Bytes::from(format!("owner = {}\n", nix::unistd::geteuid().as_raw()));
            self.call(b.as_str(), |s| {
                let (p, body) = (p.clone(), body.clone());
                async move { s.put(&p, PutPayload::from(body)).await }
            })?;
            Ok(())
        })();
        self.unlock(held);
        r
    }

    fn delete_bucket(&self, b: &BucketName) -> Result<()> {
        let held = self.lock("state")?;
        let r = (|| {
            self.need_bucket(b)?;
            if !self.bucket_is_empty(b)? {
                return Err(Error::new(
                    OssCode::BucketNotEmpty,
                    "The bucket you tried to delete is not empty.",
                )
                .resource(b.as_str().to_owned()));
            }
            // Settings first: a bucket without them is still a bucket
            // (with the defaults); one without its marker is gone. The
            // top's directory record (a mount's) goes with it.
            for rel in [super::tree::DIR_RECORD, BUCKET_SETTINGS, MARKER] {
                let p = self.path(&format!("{b}/{rel}"))?;
                match self.call(b.as_str(), |s| {
                    let p = p.clone();
                    async move { s.delete(&p).await }
                }) {
                    Ok(()) => {}
                    Err(e) if e.code == OssCode::NoSuchKey => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })();
        self.unlock(held);
        r
    }

    fn bucket_is_empty(&self, b: &BucketName) -> Result<bool> {
        let dir = self.path(b.as_str())?;
        let own = [
            self.path(&format!("{b}/{MARKER}"))?,
            self.path(&format!("{b}/{BUCKET_SETTINGS}"))?,
            self.path(&format!("{b}/{}", super::tree::DIR_RECORD))?,
        ];
        Ok(self
            .all_in_bucket(b)?
            .iter()
            .all(|m| own.contains(&m.location) || !m.location.prefix_matches(&dir)))
    }

    fn bucket_owner(&self, b: &BucketName) -> Result<u32> {
        let p = self.path(&format!("{b}/{MARKER}"))?;
        let r = self.call(b.as_str(), |s| {
            let p = p.clone();
            async move { s.get(&p).await?.bytes().await }
        });
        let body = match r {
            Ok(b) => b,
            Err(e) if e.code == OssCode::NoSuchKey => return Err(Self::no_bucket(b)),
            Err(e) => return Err(e),
        };
        std::str::from_utf8(&body)
            .ok()
            .and_then(|t| t.trim().strip_prefix("owner = "))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                Error::integrity("the bucket's marker does not name its owner")
                    .resource(b.as_str().to_owned())
            })
    }

    fn find(&self, at: Loc<'_>) -> Result<Found> {
        let shown = at.shown();
        // An object replaced between the HEAD and the GET fails it
        // (If-Match): look again, a few times, rather than mix versions.
        let mut tries = 0;
        loop {
            tries += 1;
            let (p, version, len, verified) = self.head_verified(at)?;
            let file = match self.download(&p, &version, len, &shown) {
                Ok(f) => f,
                Err(e) if e.code == OssCode::PreconditionFailed && tries < 4 => continue,
                Err(e) => return Err(e),
            };
            let oid = Self::header_oid(&file, len, &shown)?;
            meta::check_oid(&verified, oid.as_ref(), &shown)?;
            return Ok(Found::stored(
                version,
                len,
                file,
                verified.meta,
                p.to_string(),
            ));
        }
    }

    fn fetch(&self, at: Loc<'_>) -> Result<Fetched> {
        let shown = at.shown();
        let (p, version, len, verified) = self.head_verified(at)?;
        let Version::ETag(tag) = &version else {
            return Err(Error::new(OssCode::InternalError, "not a store version"));
        };
        let slots = arriving::Arriving::start(
            self.rt.handle().clone(),
            self.store_arc(),
            p,
            (tag.clone(), len),
            self.local_temp(&shown)?,
        )
        .ctx(&shown)?;
        // The record must name this header (waits for its 128 bytes).
        let oid = Self::header_oid(&slots, len, &shown)?;
        meta::check_oid(&verified, oid.as_ref(), &shown)?;
        Ok(Fetched {
            version,
            len,
            slots: Box::new(slots),
        })
    }

    fn meta(&self, f: &Found) -> Result<ObjMeta> {
        f.stored_meta().cloned().ok_or_else(|| {
            Error::new(
                OssCode::InternalError,
                "an object found elsewhere given to the store",
            )
        })
    }

    fn sse_override(&self, f: &Found, _shown: &str) -> Result<Option<SseConfig>> {
        Ok(self.meta(f)?.sse_override)
    }

    fn list(
        &self,
        bucket: &BucketName,
        prefix: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Page> {
        self.need_bucket(bucket)?;
        let dir = self.path(bucket.as_str())?;
        let skip = format!("{dir}/");
        // From just after `after` (or the prefix), lazily: a page costs
        // what it lists, not the whole bucket.
        let start = match after {
            Some(a) if a >= prefix => Some(self.path(&format!("{bucket}/{a}"))?),
            _ => None,
        };
        let listed = self.call(bucket.as_str(), |s| {
            let (dir, start, skip) = (dir.clone(), start.clone(), skip.clone());
            async move {
                let mut stream = match &start {
                    Some(o) => s.list_with_offset(Some(&dir), o),
                    None => s.list(Some(&dir)),
                };
                let mut keys: Vec<(String, u64)> = Vec::new();
                while let Some(m) = stream.try_next().await? {
                    let full = m.location.to_string();
                    let Some(key) = full.strip_prefix(&skip) else {
                        continue;
                    };
                    if key.split('/').any(|c| c.starts_with(".ssefs")) {
                        continue;
                    }
                    if !key.starts_with(prefix) {
                        continue;
                    }
                    if after.is_some_and(|a| key <= a) {
                        continue;
                    }
                    keys.push((key.to_owned(), m.size));
                    // One more than asked: whether there is a next page.
                    if keys.len() > max {
                        break;
                    }
                }
                Ok(keys)
            }
        })?;
        let mut listed = listed;
        let next = if listed.len() > max {
            listed.truncate(max);
            listed.last().map(|(k, _)| k.clone())
        } else {
            None
        };
        // Empty store objects are symlinks made through a mount, not
        // objects (but for objects migrated without a header): their
        // records say which.
        let mut keys = Vec::with_capacity(listed.len());
        for (key, size) in listed {
            if size == 0 {
                if let Some(st) = self.stat_key(bucket, &key)? {
                    if !matches!(st.shape, meta::Shape::Object(_)) {
                        continue;
                    }
                }
            }
            keys.push(key);
        }
        Ok(Page { keys, next })
    }

    fn stage(&self, shown: &str) -> Result<Staged> {
        Ok(Staged {
            file: self.local_temp(shown)?,
            name: OsString::new(),
            early: None,
        })
    }

    fn stage_for(&self, at: Loc<'_>, meta: &ObjMeta) -> Result<Staged> {
        let shown = at.shown();
        let path = self.object_path(at)?;
        self.need_bucket(at.bucket)?;
        let file = self.local_temp(&shown)?;
        let target = early::Target {
            rt: self.rt.handle().clone(),
            store: self.store_arc(),
            path,
            meta: meta.clone(),
            key: self.key()?.clone(),
        };
        let early = EarlyUpload::start(target, file.try_clone().ctx(&shown)?).ctx(&shown)?;
        Ok(Staged {
            file,
            name: OsString::new(),
            early: Some(early),
        })
    }

    fn commit(&self, mut s: Staged, at: Loc<'_>, meta: &ObjMeta, cond: Cond) -> Result<Version> {
        let shown = at.shown();
        let p = self.object_path(at)?;
        if let Some(early) = s.early.take() {
            // Begun for exactly this: finish it. Otherwise drop it (which
            // aborts it) and upload as below.
            if early.meta == *meta && early.path == p && matches!(cond, Cond::Any) {
                let len = s.file.metadata().ctx(&shown)?.len();
                return early
                    .finish(len)
                    .map(|e| etag(e.as_deref()))
                    .map_err(|why| {
                        Error::new(
                            OssCode::InternalError,
                            format!("upload to {}: {why}", self.shown),
                        )
                        .resource(shown)
                    });
            }
        }
        self.need_bucket(at.bucket)?;
        self.put_checked(s, &p, meta, &cond, &shown)
    }

    fn replace(&self, s: Staged, f: &Found, meta: &ObjMeta, shown: &str) -> Result<Version> {
        let key = f.stored_key().ok_or_else(|| {
            Error::new(
                OssCode::InternalError,
                "an object found elsewhere given to the store",
            )
        })?;
        let p = StorePath::from(key);
        self.put_checked(s, &p, meta, &Cond::Is(f.version.clone()), shown)
    }

    fn discard(&self, s: Staged) {
        // An unnamed file: closing it frees it.
        drop(s);
    }

    /// No mount of a store keeps objects open for writing yet, so a
    /// rewrite needs no lock; its commit checks the version found.
    fn claim(&self, _f: &Found, _shown: &str) -> Result<Option<Claim>> {
        Ok(Some(Claim { _lock: None }))
    }

    fn delete(&self, at: Loc<'_>, cond: Cond) -> Result<()> {
        let shown = at.shown();
        let p = self.object_path(at)?;
        let Some((now, _, _)) = self.head_path(&p, &shown)? else {
            self.need_bucket(at.bucket)?;
            return Err(
                Error::new(OssCode::NoSuchKey, "The specified key does not exist.").resource(shown),
            );
        };
        // The HEAD that found it is the one the condition is checked on.
        cond.check(Some(&now), &shown)?;
        self.call(&shown, |s| {
            let p = p.clone();
            async move { s.delete(&p).await }
        })
    }
}
