//! ssefs's own records on a store (the keystore, the grants, bucket
//! settings): read, and changed by compare-and-swap or under the ticket
//! lock (FORMAT.md §9.4).

use std::time::Duration;

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{etag, lock, S3Backend};
use crate::backend::state::{
    State, StateStore, Update, BUCKET_SETTINGS, GRANTS_FILE, KEYSTORE_FILE,
};
use crate::backend::{Cond, Version};
use crate::error::{Error, OssCode, Result};

impl S3Backend {
    /// `update_state` on a store that honours conditional writes: read,
    /// change, write only if nothing was written meanwhile (If-Match, or
    /// If-None-Match: * for a record not there yet), else again.
    fn update_by_etag(&self, s: State<'_>, f: &mut Update<'_>) -> Result<Option<Version>> {
        let p = self.state_path(s)?;
        let shown = self.state_shown(s);
        let mut wait_ms = 10u64;
        for _ in 0..64 {
            let current = self.get_state(s)?;
            let Some(bytes) = f(current.as_ref().map(|(b, _)| &b[..]))? else {
                return Ok(current.map(|(_, v)| v));
            };
            let mode = match &current {
                None => PutMode::Create,
                Some((_, v)) => Self::put_mode(&Cond::Is(v.clone())),
            };
            let body = Bytes::from(bytes);
            let put = self.call(&shown, |st| {
                let (p, body, mode) = (p.clone(), body.clone(), mode.clone());
                async move {
                    let opts = PutOptions {
                        mode,
                        ..PutOptions::default()
                    };
                    st.put_opts(&p, PutPayload::from(body), opts).await
                }
            });
            match put {
                Ok(r) => return Ok(Some(etag(r.e_tag.as_deref()))),
                Err(e)
                    if matches!(
                        e.code,
                        OssCode::FileAlreadyExists | OssCode::PreconditionFailed
                    ) =>
                {
                    // Someone else's change went first: apply ours to it.
                    let ms = wait_ms / 2 + lock::random_u64() % (wait_ms / 2 + 1);
                    std::thread::sleep(Duration::from_millis(ms));
                    wait_ms = (wait_ms * 2).min(400);
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::new(
            OssCode::InternalError,
            "the record kept changing under this change; nothing was written, run it again",
        )
        .resource(shown))
    }
}

impl StateStore for S3Backend {
    fn state_shown(&self, s: State<'_>) -> String {
        let rel = match s {
            State::Keystore => format!(".ssefs/{KEYSTORE_FILE}"),
            State::Grants => format!(".ssefs/{GRANTS_FILE}"),
            State::BucketSettings(b) => format!("{b}/{BUCKET_SETTINGS}"),
        };
        let p = if self.prefix.is_empty() {
            rel
        } else {
            format!("{}/{rel}", self.prefix)
        };
        format!("{}/{p}", self.bucket_url)
    }

    fn get_state(&self, s: State<'_>) -> Result<Option<(Vec<u8>, Version)>> {
        let p = self.state_path(s)?;
        let shown = self.state_shown(s);
        let r = self.call(&shown, |st| {
            let p = p.clone();
            async move {
                let g = st.get(&p).await?;
                let v = etag(g.meta.e_tag.as_deref());
                Ok((g.bytes().await?.to_vec(), v))
            }
        });
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.code == OssCode::NoSuchKey => {
                // No settings, or no bucket: only then is the marker asked.
                if let State::BucketSettings(b) = s {
                    self.need_bucket(b)?;
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn state_version(&self, s: State<'_>) -> Result<Option<Version>> {
        let p = self.state_path(s)?;
        let shown = self.state_shown(s);
        if let Some(v) = self.known_version(&shown) {
            return Ok(v);
        }
        let v = self.head_path(&p, &shown)?.map(|(v, _, _)| v);
        self.remember_version(&shown, Some(v.clone()));
        Ok(v)
    }

    fn forget_versions(&self) {
        self.versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// The keystore and the grants change under the ticket lock. A bucket's
    /// settings are written without one: their writers already serialise
    /// on the keystore, which records the MAC each may carry.
    fn update_state(&self, s: State<'_>, f: &mut Update<'_>) -> Result<Option<Version>> {
        // Our own change shows at once.
        self.remember_version(&self.state_shown(s), None);
        if self.conditional {
            return self.update_by_etag(s, f);
        }
        let p = self.state_path(s)?;
        let shown = self.state_shown(s);
        let held = match s {
            State::BucketSettings(_) => None,
            _ => Some(self.lock("state")?),
        };
        let r = (|| {
            let current = self.get_state(s)?;
            let Some(bytes) = f(current.as_ref().map(|(b, _)| &b[..]))? else {
                return Ok(current.map(|(_, v)| v));
            };
            if held.as_ref().is_some_and(|h| !h.fresh()) {
                return Err(Error::new(
                    OssCode::InternalError,
                    "the change took longer than the lock allows; nothing was written, run it again",
                )
                .resource(shown.clone()));
            }
            let body = Bytes::from(bytes);
            let r = self.call(&shown, |st| {
                let (p, body) = (p.clone(), body.clone());
                async move { st.put(&p, PutPayload::from(body)).await }
            })?;
            Ok(Some(etag(r.e_tag.as_deref())))
        })();
        if let Some(h) = held {
            self.unlock(h);
        }
        r
    }
}
