//! The same buckets on an S3-compatible object store (issue 14;
//! docs/design/s3-backend.md, FORMAT.md §9).
//!
//! Layout under `s3://BUCKET/PREFIX`: an ssefs bucket `B` is the prefix
//! `PREFIX/B/`, marked by `PREFIX/B/.ssefs-bucket`; object `K` is the store
//! object `PREFIX/B/K`, its bytes exactly the local format (FORMAT.md
//! §2–§4), its metadata one authenticated record ([`meta`]). The keystore
//! and the grants are `PREFIX/.ssefs/{keystore,config}.toml`, a bucket's
//! settings `PREFIX/B/.ssefs-bucket.toml`. The root key never goes to the
//! store.
//!
//! Writes are staged in a local file in this host's state directory; a
//! new object's settled bytes go up in 16 MiB parts while the rest is
//! encrypted ([`early`]), and only the completion makes it visible, so a
//! reader or a crash sees the old object or the new one. Reads stream one
//! GET pinned to the version found ([`arriving`]). Where the store honours
//! conditional headers (the probe), `Cond`s ride in the PUT and records
//! change by compare-and-swap; where it ignores them (Garage 2.5), `Cond`
//! is checked by a HEAD just before the PUT, and the keystore and grants
//! change under the ticket lock ([`lock`]).
//!
//! Everything is synchronous to its callers: the backend owns a small
//! tokio runtime and blocks on it, never from inside it.

mod arriving;
pub mod config;
mod early;
mod lock;
pub mod meta;
mod objects;
mod records;
mod tree;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as StorePath;
use object_store::{
    Attribute, AttributeValue, Attributes, BackoffConfig, ClientOptions, GetOptions, ObjectStore,
    ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig, StaticCredentialProvider,
};

use super::state::{State, BUCKET_SETTINGS, GRANTS_FILE, KEYSTORE_FILE};
use super::{Cond, Loc, ObjMeta, SlotIo, Staged, Version};
use crate::crypto::SecretKey;
use crate::error::{Error, IoContext, OssCode, Result};
use crate::format::{Header, HEADER_LEN};
use crate::oss::BucketName;

pub use config::{BackendTable, StoreSpec};
pub use early::EarlyUpload;
pub use tree::{Entry, EntryKind, Stat};

/// The marker object that makes a prefix a bucket; its body records the
/// owner's uid (`owner = N`).
const MARKER: &str = ".ssefs-bucket";
/// Objects up to this size go in one PUT; larger ones in parts of it.
const PART: usize = 16 << 20;
/// Parts in flight at once.
const PARTS_IN_FLIGHT: usize = 4;

/// A store, as a [`Backend`].
pub struct S3Backend {
    /// One client per endpoint of the same store; `current` is the one in
    /// use, and a request that fails for want of an answer moves it on.
    stores: Vec<Arc<dyn ObjectStore>>,
    current: AtomicUsize,
    rt: tokio::runtime::Runtime,
    /// "" or `a/b`.
    prefix: String,
    /// `s3://BUCKET`, the start of every state record's name.
    bucket_url: String,
    shown: String,
    /// This host's state directory for the store (0700, held; the probe's
    /// answer), and its `stage` directory of unnamed staged files.
    state: super::Dir,
    stage: super::Dir,
    /// K_meta, set once the KMS is open (the records need the root key).
    meta_key: OnceLock<SecretKey>,
    /// The store honours If-Match / If-None-Match on PUT: records change
    /// by compare-and-swap, not under the ticket lock.
    conditional: bool,
    /// How long a record's version (the keystore's, a bucket's settings')
    /// is trusted before it is asked again: 0 for the CLI, the metadata TTL
    /// for a mount (which asks on every open and create).
    version_ttl: std::sync::Mutex<Duration>,
    versions:
        std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, Option<Version>)>>,
}

impl std::fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Backend")
            .field("shown", &self.shown)
            .finish_non_exhaustive()
    }
}

impl S3Backend {
    /// Connects to the store of `spec` (nothing is sent yet).
    pub fn open(spec: &StoreSpec) -> Result<S3Backend> {
        // TLS, when an endpoint is https: ring, as for everything else.
        // (Installed once per process; an error means it already is.)
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut stores: Vec<Arc<dyn ObjectStore>> = Vec::new();
        for endpoint in &spec.endpoints {
            let c = &spec.credentials;
            let creds = object_store::aws::AwsCredential {
                key_id: c.access_key_id.clone(),
                secret_key: c.secret_access_key.to_string(),
                token: c.session_token.as_ref().map(|t| t.to_string()),
            };
            let retry = RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                // With other endpoints to try, a dead one is left after a
                // couple of quick retries rather than the full count.
                max_retries: if spec.endpoints.len() > 1 {
                    spec.retries.min(2)
                } else {
                    spec.retries
                },
                retry_timeout: Duration::from_millis(spec.timeout_ms.saturating_mul(2)),
            };
            let store = AmazonS3Builder::new()
                .with_bucket_name(&spec.bucket)
                .with_endpoint(endpoint)
                .with_region(&spec.region)
                .with_virtual_hosted_style_request(spec.virtual_hosted)
                .with_credentials(Arc::new(StaticCredentialProvider::new(creds)))
                .with_retry(retry)
                .with_client_options(
                    ClientOptions::new()
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_timeout(Duration::from_millis(spec.timeout_ms))
                        .with_connect_timeout(Duration::from_secs(5)),
                )
                .build()
                .map_err(|e| {
                    Error::new(
                        OssCode::InvalidArgument,
                        format!("backend {}: {e}", spec.shown()),
                    )
                })?;
            stores.push(Arc::new(store));
        }
        let names = (format!("s3://{}", spec.bucket), spec.shown());
        let mut b = Self::with_stores(stores, &spec.prefix, names, &spec.state_dir)?;
        b.conditional = b.decide_conditional(&spec.conditional)?;
        Ok(b)
    }

    /// A backend over stores already made (InMemory in unit tests).
    pub fn with_stores(
        stores: Vec<Arc<dyn ObjectStore>>,
        prefix: &str,
        (bucket_url, shown): (String, String),
        state_dir: &std::path::Path,
    ) -> Result<S3Backend> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ssefs-s3")
            .enable_all()
            .build()
            .ctx("starting the store client")?;
        let stage_dir = state_dir.join("stage");
        super::strict::create_private_dir(state_dir).ctx(state_dir.display())?;
        super::strict::create_private_dir(&stage_dir).ctx(stage_dir.display())?;
        super::strict::check(state_dir)?;
        // Held from here on: nothing below is reached by path again.
        let state = super::Dir::open(state_dir).ctx(state_dir.display())?;
        super::strict::check_held(state_dir, &state)?;
        let stage = state
            .dir(std::path::Path::new("stage"))
            .ctx(stage_dir.display())?;
        Ok(S3Backend {
            stores,
            current: AtomicUsize::new(0),
            rt,
            prefix: prefix.to_owned(),
            bucket_url,
            shown,
            state,
            stage,
            meta_key: OnceLock::new(),
            conditional: false,
            version_ttl: std::sync::Mutex::new(Duration::ZERO),
            versions: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    fn store(&self) -> &dyn ObjectStore {
        let i = self.current.load(Ordering::Relaxed) % self.stores.len().max(1);
        &*self.stores[i]
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Runs `op` on the current endpoint; when that one does not answer,
    /// on the others in turn.
    fn call<T, F, Fut>(&self, shown: &str, op: F) -> Result<T>
    where
        F: Fn(Arc<dyn ObjectStore>) -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        let n = self.stores.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let idx = (first + i) % n;
            let store = self.stores[idx].clone();
            match self.block_on(op(store)) {
                Ok(v) => {
                    if i > 0 {
                        self.current.store(idx, Ordering::Relaxed);
                    }
                    return Ok(v);
                }
                Err(e) if unanswered(&e) && i + 1 < n => {
                    tracing::warn!(store = %self.shown, "endpoint {idx} failed, trying the next: {e}");
                    last = Some(e);
                }
                Err(e) => return Err(self.error(e, shown)),
            }
        }
        Err(self.error(
            last.unwrap_or(object_store::Error::NotImplemented {
                operation: "no endpoint".into(),
                implementer: "ssefs".into(),
            }),
            shown,
        ))
    }

    /// The store path of `rel` under the prefix.
    fn path(&self, rel: &str) -> Result<StorePath> {
        let full = if self.prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.prefix)
        };
        StorePath::parse(&full).map_err(|e| {
            Error::new(
                OssCode::InvalidObjectName,
                format!("not a name the store can hold: {e}"),
            )
            .resource(rel.to_owned())
        })
    }

    fn object_path(&self, at: Loc<'_>) -> Result<StorePath> {
        // ssefs's own names are never objects.
        if at.key.split('/').any(|c| c.starts_with(".ssefs")) {
            return Err(Error::new(
                OssCode::InvalidObjectName,
                "names starting with .ssefs are reserved for ssefs",
            )
            .resource(at.shown()));
        }
        self.path(&format!("{}/{}", at.bucket, at.key))
    }

    fn state_path(&self, s: State<'_>) -> Result<StorePath> {
        match s {
            State::Keystore => self.path(&format!(".ssefs/{KEYSTORE_FILE}")),
            State::Grants => self.path(&format!(".ssefs/{GRANTS_FILE}")),
            State::BucketSettings(b) => self.path(&format!("{b}/{BUCKET_SETTINGS}")),
        }
    }

    /// A store error as ours: its OSS code, the store and what was asked.
    fn error(&self, e: object_store::Error, shown: &str) -> Error {
        use object_store::Error as E;
        let (code, what) = match &e {
            E::NotFound { .. } => (OssCode::NoSuchKey, "not found"),
            E::Precondition { .. } | E::NotModified { .. } => {
                (OssCode::PreconditionFailed, "changed meanwhile")
            }
            E::AlreadyExists { .. } => (OssCode::FileAlreadyExists, "already exists"),
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => (
                OssCode::AccessDenied,
                "access denied by the store (check the credentials)",
            ),
            _ => (OssCode::InternalError, "the store failed"),
        };
        Error::new(code, format!("{what}: {} ({e})", self.shown)).resource(shown.to_owned())
    }

    fn key(&self) -> Result<&SecretKey> {
        self.meta_key.get().ok_or_else(|| {
            Error::new(
                OssCode::InternalError,
                "object metadata key not set before the first object operation",
            )
        })
    }

    /// A new, unnamed local file in the stage directory.
    fn local_temp(&self, shown: &str) -> Result<File> {
        use std::os::fd::{AsRawFd, FromRawFd};
        // Relative to the held directory itself ("."): no name to resolve.
        // (openat2's RESOLVE_BENEATH answers EXDEV to O_TMPFILE.)
        // SAFETY: a valid directory descriptor we hold and a NUL-terminated
        // literal; the result is checked before it is owned.
        let fd = unsafe {
            libc::openat(
                self.stage.fd().as_raw_fd(),
                c".".as_ptr(),
                libc::O_RDWR | libc::O_TMPFILE | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(Error::io(shown, std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just opened, is valid and owned by nothing else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// HEAD: the version and size of what is at `p`, with its metadata
    /// record's text; None if nothing is there.
    fn head_path(
        &self,
        p: &StorePath,
        shown: &str,
    ) -> Result<Option<(Version, u64, Option<String>)>> {
        let r = self.call(shown, |s| {
            let p = p.clone();
            async move {
                s.get_opts(
                    &p,
                    GetOptions {
                        head: true,
                        ..GetOptions::default()
                    },
                )
                .await
            }
        });
        match r {
            Ok(g) => Ok(Some((
                etag(g.meta.e_tag.as_deref()),
                g.meta.size,
                meta_attr(&g.attributes),
            ))),
            Err(e) if e.code == OssCode::NoSuchKey => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn marker_exists(&self, b: &BucketName) -> Result<bool> {
        let p = self.path(&format!("{b}/{MARKER}"))?;
        Ok(self.head_path(&p, b.as_str())?.is_some())
    }

    fn no_bucket(b: &BucketName) -> Error {
        Error::new(
            OssCode::NoSuchBucket,
            "The specified bucket does not exist.",
        )
        .resource(b.as_str().to_owned())
    }

    /// NoSuchBucket unless `b` exists.
    fn need_bucket(&self, b: &BucketName) -> Result<()> {
        if self.marker_exists(b)? {
            Ok(())
        } else {
            Err(Self::no_bucket(b))
        }
    }

    /// Every store object under the bucket, ssefs's own included.
    fn all_in_bucket(&self, b: &BucketName) -> Result<Vec<object_store::ObjectMeta>> {
        let dir = self.path(b.as_str())?;
        self.call(b.as_str(), |s| {
            let dir = dir.clone();
            async move { s.list(Some(&dir)).try_collect::<Vec<_>>().await }
        })
    }

    /// Checks `cond` against what is at `p` now. The store may ignore
    /// conditional headers, so this is a HEAD before the write: a writer
    /// between the two is not seen (docs/design/s3-backend.md §1.6).
    fn check_cond(&self, p: &StorePath, cond: &Cond, shown: &str) -> Result<()> {
        if matches!(cond, Cond::Any) {
            return Ok(());
        }
        let now = self.head_path(p, shown)?.map(|(v, _, _)| v);
        cond.check(now.as_ref(), shown)
    }

    /// Trusts a record's version for `ttl` after asking (a mount's
    /// metadata TTL): what another host changes shows within it.
    pub fn trust_versions_for(&self, ttl: Duration) {
        *self.version_ttl.lock().unwrap_or_else(|p| p.into_inner()) = ttl;
    }

    /// A record's version asked within the TTL, if there is one.
    fn known_version(&self, shown: &str) -> Option<Option<Version>> {
        let ttl = *self.version_ttl.lock().unwrap_or_else(|p| p.into_inner());
        if ttl.is_zero() {
            return None;
        }
        let v = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        v.get(shown)
            .filter(|(at, _)| at.elapsed() < ttl)
            .map(|(_, v)| v.clone())
    }

    fn remember_version(&self, shown: &str, v: Option<Option<Version>>) {
        let mut m = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        match v {
            Some(v) => m.insert(shown.to_owned(), (std::time::Instant::now(), v)),
            None => m.remove(shown),
        };
    }

    /// Uses conditional writes (true) or the ticket lock (false), whatever
    /// the probe said: for tests on a store that honours both.
    pub fn force_conditional(mut self, on: bool) -> Self {
        self.conditional = on;
        self
    }

    /// The PUT mode that enforces `cond` on a store that honours it.
    fn put_mode(cond: &Cond) -> PutMode {
        match cond {
            Cond::Any => PutMode::Overwrite,
            Cond::Absent => PutMode::Create,
            Cond::Is(Version::ETag(e)) => PutMode::Update(object_store::UpdateVersion {
                e_tag: Some(e.clone()),
                version: None,
            }),
            // A local version cannot match anything here.
            Cond::Is(Version::Local { .. }) => PutMode::Update(object_store::UpdateVersion {
                e_tag: Some(String::new()),
                version: None,
            }),
        }
    }

    /// Writes the staged bytes to `p` only if `cond` holds. With
    /// conditional writes a single PUT enforces it; a multipart upload
    /// (no conditional completion in the client) and a store without them
    /// check by a HEAD just before.
    fn put_checked(
        &self,
        s: Staged,
        p: &StorePath,
        meta: &ObjMeta,
        cond: &Cond,
        shown: &str,
    ) -> Result<Version> {
        let len = s.file.metadata().ctx(shown)?.len();
        let mode = if self.conditional && len <= PART as u64 {
            Self::put_mode(cond)
        } else {
            self.check_cond(p, cond, shown)?;
            PutMode::Overwrite
        };
        let oid = Self::header_oid(&s.file, len, shown)?;
        let record = meta::encode(self.key()?, meta, oid.as_ref())?;
        self.upload(&s.file, p, &record, mode, shown)
            .map_err(|e| match e.code {
                OssCode::FileAlreadyExists => super::already_exists(shown),
                OssCode::PreconditionFailed | OssCode::NoSuchKey if !matches!(cond, Cond::Any) => {
                    super::changed_since_read(shown)
                }
                _ => e,
            })
    }

    /// Uploads the staged file to `p` with `record` as its metadata: one
    /// PUT (with `mode`), or parts of 16 MiB, up to 4 in flight.
    fn upload(
        &self,
        file: &File,
        p: &StorePath,
        record: &str,
        mode: PutMode,
        shown: &str,
    ) -> Result<Version> {
        let len = file.metadata().ctx(shown)?.len();
        let mut attrs = Attributes::new();
        attrs.insert(
            Attribute::Metadata(meta::META_NAME.into()),
            AttributeValue::from(record.to_owned()),
        );
        if len <= PART as u64 {
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, 0).ctx(shown)?;
            let body = Bytes::from(buf);
            let r = self.call(shown, |s| {
                let (p, body, attrs, mode) = (p.clone(), body.clone(), attrs.clone(), mode.clone());
                async move {
                    s.put_opts(
                        &p,
                        PutPayload::from(body),
                        PutOptions {
                            mode,
                            attributes: attrs,
                            ..PutOptions::default()
                        },
                    )
                    .await
                }
            })?;
            return Ok(etag(r.e_tag.as_deref()));
        }
        let opts = object_store::PutMultipartOptions {
            attributes: attrs,
            ..Default::default()
        };
        let mut up = self
            .block_on(self.store().put_multipart_opts(p, opts))
            .map_err(|e| self.error(e, shown))?;
        let result: Result<Version> = (|| {
            let mut off = 0u64;
            let mut pending = Vec::new();
            while off < len {
                let n = (len - off).min(PART as u64) as usize;
                let mut buf = vec![0u8; n];
                file.read_exact_at(&mut buf, off).ctx(shown)?;
                off += n as u64;
                pending.push(up.put_part(PutPayload::from(Bytes::from(buf))));
                if pending.len() >= PARTS_IN_FLIGHT {
                    let batch = std::mem::take(&mut pending);
                    self.block_on(futures::future::try_join_all(batch))
                        .map_err(|e| self.error(e, shown))?;
                }
            }
            self.block_on(futures::future::try_join_all(pending))
                .map_err(|e| self.error(e, shown))?;
            let r = self
                .block_on(up.complete())
                .map_err(|e| self.error(e, shown))?;
            Ok(etag(r.e_tag.as_deref()))
        })();
        if result.is_err() {
            // Nothing half-written becomes visible; the parts are freed.
            let _ = self.block_on(up.abort());
        }
        result
    }

    /// Version `v` (`len` bytes) of the object at `p`, whole, in a local
    /// file nothing else can name: one GET, only while the object is still
    /// that version (If-Match), written as it streams in (memory: the
    /// client's buffers). One stream beat 16 MiB ranged GETs 4 at a time
    /// on Garage (bench/results/2026-12-04-store-put-get.md).
    fn download(&self, p: &StorePath, v: &Version, len: u64, shown: &str) -> Result<File> {
        let Version::ETag(tag) = v else {
            return Err(Error::new(OssCode::InternalError, "not a store version"));
        };
        let file = self.local_temp(shown)?;
        if len == 0 {
            return Ok(file);
        }
        self.call(shown, |s| {
            let (p, tag, file) = (p.clone(), tag.clone(), &file);
            async move {
                // A retry on another endpoint starts over.
                file.set_len(0).map_err(local_error)?;
                let opts = GetOptions {
                    if_match: Some(tag),
                    ..GetOptions::default()
                };
                let mut body = s.get_opts(&p, opts).await?.into_stream();
                let mut off = 0u64;
                while let Some(b) = body.try_next().await? {
                    file.write_all_at(&b, off).map_err(local_error)?;
                    off += b.len() as u64;
                }
                if off != len {
                    return Err(local_error(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the store sent {off} bytes of {len}"),
                    )));
                }
                Ok(())
            }
        })?;
        Ok(file)
    }

    /// Whether the store honours conditional writes: a second create of
    /// one name must fail, and so must an update naming a wrong ETag.
    /// Garage 2.5 ignores both (the ticket lock is used then).
    pub fn probe(&self) -> Result<bool> {
        let p = self.path(&format!(".ssefs/probe/{}", lock::ticket_id()))?;
        let put = |mode: PutMode| {
            let p = p.clone();
            self.block_on(async move {
                self.store()
                    .put_opts(
                        &p,
                        PutPayload::from_static(b"probe"),
                        PutOptions {
                            mode,
                            ..PutOptions::default()
                        },
                    )
                    .await
            })
        };
        use object_store::Error as E;
        let wrong = object_store::UpdateVersion {
            e_tag: Some("\"ssefs-probe-no-such-etag\"".into()),
            version: None,
        };
        // The first write finds an endpoint that answers; the others go
        // to the same one.
        self.call("probe", |s| {
            let p = p.clone();
            async move {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                };
                s.put_opts(&p, PutPayload::from_static(b"probe"), opts)
                    .await
            }
        })?;
        let second = put(PutMode::Create);
        let update = put(PutMode::Update(wrong));
        let answer = matches!(second, Err(E::AlreadyExists { .. }))
            && matches!(update, Err(E::Precondition { .. }));
        let _ = self.block_on(self.store().delete(&p));
        Ok(answer)
    }

    /// Whether conditional writes are used (`conditional` in [backend]:
    /// "etag", "lock", or "auto": the probe's answer, remembered for an
    /// hour in the state directory).
    fn decide_conditional(&self, mode: &str) -> Result<bool> {
        match mode {
            "etag" => return Ok(true),
            "lock" => return Ok(false),
            _ => {}
        }
        let cache = format!("probe-{:016x}", name_hash(&self.shown));
        let cache = std::path::Path::new(&cache);
        let remembered = self
            .state
            .file(cache, libc::O_RDONLY | libc::O_CLOEXEC, 0)
            .and_then(|mut f| {
                let age = f.metadata()?.modified()?.elapsed().unwrap_or_default();
                let mut text = String::new();
                std::io::Read::read_to_string(&mut f, &mut text)?;
                Ok((age, text))
            });
        if let Ok((age, text)) = remembered {
            if age < Duration::from_secs(3600) {
                match text.as_str() {
                    "etag" => return Ok(true),
                    "lock" => return Ok(false),
                    _ => {}
                }
            }
        }
        let answer = match self.probe() {
            Ok(a) => a,
            // Credentials that may not write: nothing will be written
            // anyway, and the lock is always safe. Not remembered.
            Err(e) if e.code == OssCode::AccessDenied => return Ok(false),
            Err(e) => return Err(e),
        };
        // Only a hint: a lost write just means probing again.
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC;
        let _ = self.state.file(cache, flags, 0o600).and_then(|mut f| {
            std::io::Write::write_all(&mut f, if answer { b"etag" } else { b"lock" })
        });
        Ok(answer)
    }

    /// The object id of the header at the start of an object's `len`
    /// bytes (None if there are none: an object created empty, without a
    /// header yet). On an arriving object, waits for the header.
    pub(super) fn header_oid<F: SlotIo + ?Sized>(
        bytes: &F,
        len: u64,
        shown: &str,
    ) -> Result<Option<[u8; 16]>> {
        if len == 0 {
            return Ok(None);
        }
        let mut h = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            match bytes.read_slots(&mut h[got..], got as u64).ctx(shown)? {
                0 => return Err(Error::integrity("object header truncated").resource(shown)),
                n => got += n,
            }
        }
        Ok(Some(
            Header::parse(&h).map_err(|e| e.resource(shown))?.object_id,
        ))
    }

    /// The object at `at`, by HEAD, with its metadata record verified:
    /// nothing of an object whose record does not verify is fetched.
    fn head_verified(&self, at: Loc<'_>) -> Result<(StorePath, Version, u64, meta::Verified)> {
        let shown = at.shown();
        let p = self.object_path(at)?;
        let Some((version, len, record)) = self.head_path(&p, &shown)? else {
            self.need_bucket(at.bucket)?;
            return Err(
                Error::new(OssCode::NoSuchKey, "The specified key does not exist.").resource(shown),
            );
        };
        let verified = meta::decode(self.key()?, record.as_deref(), &shown)?;
        // A symlink made through a mount is not an object.
        if !matches!(verified.shape, meta::Shape::Object(_)) {
            return Err(
                Error::new(OssCode::NoSuchKey, "The specified key does not exist.").resource(shown),
            );
        }
        Ok((p, version, len, verified))
    }

    /// The client of the endpoint in use, to hand to a thread.
    fn store_arc(&self) -> Arc<dyn ObjectStore> {
        self.stores[self.current.load(Ordering::Relaxed) % self.stores.len().max(1)].clone()
    }
}

/// FNV-1a of `s`: a short, stable name for a longer one (a store's, a
/// path's) where a collision costs nothing but a shared name.
pub(crate) fn name_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A local failure inside a store operation, carried as the store's error.
fn local_error(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "ssefs staging file",
        source: Box::new(e),
    }
}

/// Errors after which another endpoint may answer: nothing came back.
fn unanswered(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    !matches!(
        e,
        E::NotFound { .. }
            | E::Precondition { .. }
            | E::NotModified { .. }
            | E::AlreadyExists { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::InvalidPath { .. }
    )
}

fn etag(e: Option<&str>) -> Version {
    Version::ETag(e.unwrap_or_default().to_owned())
}

fn meta_attr(a: &Attributes) -> Option<String> {
    a.get(&Attribute::Metadata(meta::META_NAME.into()))
        .map(|v| v.as_ref().to_owned())
}

#[cfg(test)]
mod tests;
