//! Extended attributes. The three OSS names choose encryption: on a bucket
//! directory they are the bucket's rule (Put/Get/DeleteBucketEncryption), on
//! a file they show how the object is stored and set a per-object override
//! (which re-encrypts the object). `user.ssefs.chunk-size` is a bucket's
//! chunk size (an ssefs extension; on a file, read-only: how it is stored).
//! Other `user.` names are stored on the backend file unchanged, like
//! `x-oss-meta-*`. Names outside the `user.` namespace (`security.*`,
//! `system.posix_acl_*`, `trusted.*`) are not supported: nothing here would
//! enforce them, so get, set and remove all answer EOPNOTSUPP, without
//! touching the backend. Tools take that answer as "this filesystem has no
//! labels or ACLs" and stop asking: `ls -l` asks for `security.selinux` and
//! the ACL of the first file only, instead of two round trips per file
//! (docs/SEMANTICS.md §9).

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use super::{errno, lock, os_err, sys, Fs, Kind, Role};
use crate::backend::xattr::{self, At};
use crate::backend::{Dir, Found, LocalPlace};
use crate::engine::Engine;
use crate::error::{Error, OssCode, Result};
use crate::format::{ChunkSize, Method};
use crate::kms::Kms;
use crate::oss::{BucketName, SseAlgorithm, SseConfig};
use crate::principal::Principal;

pub const XA_SSE: &str = "user.oss.server-side-encryption";
pub const XA_KEY: &str = "user.oss.server-side-encryption-key-id";
pub const XA_DATA: &str = "user.oss.server-side-data-encryption";
pub const XA_CHUNK: &str = "user.ssefs.chunk-size";
pub(super) const INTERNAL_PREFIX: &[u8] = b"user.ssefs.";
const USER_PREFIX: &[u8] = b"user.";

/// Whether the name is in the only namespace ssefs stores.
pub(super) fn is_user_name(name: &[u8]) -> bool {
    name.starts_with(USER_PREFIX)
}

pub(super) fn is_chunk_name(name: &OsStr) -> bool {
    name.as_bytes() == XA_CHUNK.as_bytes()
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum OssName {
    Sse,
    Key,
    Data,
}

pub(super) fn oss_name(name: &OsStr) -> Option<OssName> {
    match name.as_bytes() {
        b if b == XA_SSE.as_bytes() => Some(OssName::Sse),
        b if b == XA_KEY.as_bytes() => Some(OssName::Key),
        b if b == XA_DATA.as_bytes() => Some(OssName::Data),
        _ => None,
    }
}

pub(super) fn value_str(v: &[u8]) -> Result<&str> {
    std::str::from_utf8(v)
        .map_err(|_| Error::new(OssCode::InvalidArgument, "the value is not valid UTF-8"))
}

/// Reads one field of a configuration as its xattr value.
pub(super) fn field(cfg: Option<&SseConfig>, n: OssName) -> Result<Vec<u8>> {
    let v = cfg.and_then(|c| match n {
        OssName::Sse => Some(c.algorithm.as_str().to_owned()),
        OssName::Key => c.kms_key_id.clone(),
        OssName::Data => c.kms_data_sm4.then(|| "SM4".to_owned()),
    });
    v.map(String::into_bytes)
        .ok_or_else(|| errno(libc::ENODATA))
}

/// A configuration with one field set from an xattr value (the other two
/// kept where they still apply), validated as OSS validates a rule.
pub(super) fn with_field(cur: Option<&SseConfig>, n: OssName, v: &str) -> Result<SseConfig> {
    let cur_kms = cur.filter(|c| c.algorithm == SseAlgorithm::Kms);
    let key = cur_kms.and_then(|c| c.kms_key_id.as_deref());
    let data = cur_kms.filter(|c| c.kms_data_sm4).map(|_| "SM4");
    match n {
        OssName::Sse => {
            let keep = v == "KMS";
            SseConfig::bucket_rule(v, key.filter(|_| keep), data.filter(|_| keep))
        }
        // In a rule an empty KMSMasterKeyID means the default key; as an
        // attribute it would read back as absent: removal says that.
        OssName::Key if v.is_empty() => Err(Error::new(
            OssCode::InvalidArgument,
            "empty key id: remove the attribute (setfattr -x) for the default key",
        )),
        OssName::Key => match cur {
            Some(c) => SseConfig::bucket_rule(c.algorithm.as_str(), Some(v), data),
            None => Err(Error::new(
                OssCode::InvalidArgument,
                "KMSMasterKeyID is not applicable if the default sse algorithm is not KMS.",
            )),
        },
        OssName::Data => match cur {
            Some(c) => SseConfig::bucket_rule(c.algorithm.as_str(), key, Some(v)),
            None => Err(Error::new(
                OssCode::InvalidArgument,
                "set user.oss.server-side-encryption first: the rule needs an SSEAlgorithm",
            )),
        },
    }
}

/// The configuration without one field; `None` when removing the algorithm.
pub(super) fn without_field(cur: &SseConfig, n: OssName) -> Result<Option<SseConfig>> {
    let mut c = cur.clone();
    match n {
        OssName::Sse => return Ok(None),
        OssName::Key if c.kms_key_id.is_some() => c.kms_key_id = None,
        OssName::Data if c.kms_data_sm4 => c.kms_data_sm4 = false,
        _ => return Err(errno(libc::ENODATA)),
    }
    Ok(Some(c))
}

/// How an object with header `h` is stored, as HeadObject reports it.
pub(super) fn sse_of_header(h: &crate::format::Header) -> Option<SseConfig> {
    match h.method {
        Method::None => None,
        Method::Oss => Some(SseConfig {
            algorithm: if h.cipher == crate::crypto::Cipher::Sm4Gcm {
                SseAlgorithm::Sm4
            } else {
                SseAlgorithm::Aes256
            },
            kms_key_id: None,
            kms_data_sm4: false,
        }),
        Method::Kms => Some(SseConfig {
            algorithm: SseAlgorithm::Kms,
            kms_key_id: Some(Kms::key_id_string(&h.key_id)),
            kms_data_sm4: h.cipher == crate::crypto::Cipher::Sm4Gcm,
        }),
    }
}

/// The xattrs of a bucket's top directory, the same on every mount: its
/// rule (the three OSS names) and its chunk size. `None`: `name` is not
/// one of them.
pub(super) fn bucket_get(
    engine: &Engine,
    b: &BucketName,
    name: &OsStr,
    p: &Principal,
) -> Option<Result<Vec<u8>>> {
    if is_chunk_name(name) {
        return Some(
            engine
                .bucket_chunk_size(b)
                .map(|c| c.to_string().into_bytes()),
        );
    }
    let n = oss_name(name)?;
    Some(match engine.get_bucket_encryption(p, b) {
        Ok(rule) => field(Some(&rule), n),
        Err(e) if e.code == OssCode::NoSuchServerSideEncryptionRule => Err(errno(libc::ENODATA)),
        Err(e) => Err(e),
    })
}

/// Sets a bucket's rule field or chunk size (`bucket_get`'s names).
pub(super) fn bucket_set(
    engine: &Engine,
    b: &BucketName,
    name: &OsStr,
    value: &[u8],
    p: &Principal,
) -> Option<Result<()>> {
    if is_chunk_name(name) {
        return Some(
            ChunkSize::parse(value)
                .map_err(|e| e.resource(b.as_str()))
                .and_then(|chunk| engine.put_bucket_chunk_size(p, b, chunk)),
        );
    }
    let n = oss_name(name)?;
    Some((|| {
        let v = value_str(value).map_err(|e| e.resource(b.as_str()))?;
        let cur = engine.bucket_rule(b)?;
        let rule = with_field(cur.as_ref(), n, v).map_err(|e| e.resource(b.as_str()))?;
        engine.put_bucket_encryption(p, b, &rule)
    })())
}

/// Removes a bucket's rule field (the algorithm: the whole rule), or sets
/// its chunk size back to the default.
pub(super) fn bucket_remove(
    engine: &Engine,
    b: &BucketName,
    name: &OsStr,
    p: &Principal,
) -> Option<Result<()>> {
    if is_chunk_name(name) {
        return Some(engine.put_bucket_chunk_size(p, b, ChunkSize::DEFAULT));
    }
    let n = oss_name(name)?;
    Some((|| {
        let cur = engine.bucket_rule(b)?.ok_or_else(|| errno(libc::ENODATA))?;
        match without_field(&cur, n)? {
            None => engine.delete_bucket_encryption(p, b),
            Some(rule) => engine.put_bucket_encryption(p, b, &rule),
        }
    })())
}

/// The OSS names that `cfg` gives a value, as listxattr lists them.
pub(super) fn list_oss_names(cfg: Option<&SseConfig>, out: &mut Vec<u8>) {
    for (n, s) in [
        (OssName::Sse, XA_SSE),
        (OssName::Key, XA_KEY),
        (OssName::Data, XA_DATA),
    ] {
        if field(cfg, n).is_ok() {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
    }
}

/// A bucket's own names (`bucket_get`'s) that have a value.
pub(super) fn list_bucket_names(engine: &Engine, b: &BucketName, p: &Principal, out: &mut Vec<u8>) {
    list_oss_names(engine.get_bucket_encryption(p, b).ok().as_ref(), out);
    // Listed where it was set (as the rule's names are), so that copying
    // a bucket's attributes carries it. (Any slot format: the attribute
    // is the size alone.)
    if engine.bucket_chunk_size(b).ok().map(|c| c.bytes()) != Some(ChunkSize::DEFAULT.bytes()) {
        out.extend_from_slice(XA_CHUNK.as_bytes());
        out.push(0);
    }
}

/// What the inode is, for xattr purposes.
enum Target {
    Root,
    Bucket(Arc<BucketName>),
    Object,
    Dir,
    Other,
}

impl Fs {
    fn xattr_target(
        &self,
        ino: u64,
    ) -> Result<(Target, std::os::fd::RawFd, Arc<std::os::fd::OwnedFd>)> {
        let (fd, role) = self.node(ino)?;
        let st = sys::stat_fd(fd.as_raw_fd()).map_err(os_err)?;
        let (fd, st) = self.current(ino, fd, st);
        let t = match (&role, Kind::from_mode(st.st_mode)) {
            (Role::Root, _) => Target::Root,
            (Role::Bucket(b), _) => Target::Bucket(b.clone()),
            (_, Kind::File) => Target::Object,
            (_, Kind::Dir) => Target::Dir,
            _ => Target::Other,
        };
        Ok((t, fd.as_raw_fd(), fd))
    }

    /// How the object is stored now, as HeadObject reports it. An empty
    /// file has no header yet (a new object gets its header with its first
    /// byte, see `io::ObjState::pending`): it shows what that first write
    /// will use, its override or else its bucket's rule, as the chunk
    /// size does (`stored_chunk`).
    fn stored_sse(&self, ino: u64, fd: std::os::fd::RawFd) -> Result<Option<SseConfig>> {
        let f: File = sys::reopen(fd, libc::O_RDONLY).map_err(os_err)?;
        if f.metadata().map_err(os_err)?.len() == 0 {
            if let Some(over) = Engine::read_override(&f, &self.display_name(fd))? {
                return Ok(Some(over));
            }
            let (_, role) = self.node(ino)?;
            let b = role.bucket().ok_or_else(|| errno(libc::ENOTSUP))?;
            return self.engine.bucket_rule(b);
        }
        let h = Engine::read_header(&f, &self.display_name(fd))?;
        Ok(sse_of_header(&h))
    }

    /// EOPNOTSUPP, without a backend call, for a name outside the `user.`
    /// namespace (of an inode that exists), whatever the operation. Not
    /// ENODATA on get: coreutils' `ls -l` remembers EOPNOTSUPP for the
    /// device and asks no more (security.selinux, the ACLs), while ENODATA
    /// made it ask for every entry, a round trip each.
    fn user_namespace(&self, ino: u64, name: &OsStr) -> Result<()> {
        if is_user_name(name.as_bytes()) {
            return Ok(());
        }
        self.node(ino)?;
        Err(errno(libc::EOPNOTSUPP))
    }

    pub fn getxattr(&self, ino: u64, name: &OsStr, p: &Principal) -> Result<Vec<u8>> {
        self.user_namespace(ino, name)?;
        let (t, fd, _keep) = self.xattr_target(ino)?;
        if let Target::Bucket(b) = &t {
            if let Some(r) = bucket_get(&self.engine, b, name, p) {
                return r;
            }
        }
        if is_chunk_name(name) {
            return match t {
                Target::Object => self
                    .stored_chunk(ino, fd)
                    .map(|c| c.to_string().into_bytes()),
                _ => Err(errno(libc::ENOTSUP)),
            };
        }
        if let Some(n) = oss_name(name) {
            return match t {
                Target::Object => field(self.stored_sse(ino, fd)?.as_ref(), n),
                _ => Err(errno(libc::ENOTSUP)),
            };
        }
        if name.as_bytes().starts_with(INTERNAL_PREFIX) {
            return Err(errno(libc::ENODATA));
        }
        if matches!(t, Target::Other) {
            return Err(errno(libc::ENODATA));
        }
        xattr::get(At::Follow(&sys::proc_path(fd)), name)
            .map_err(os_err)?
            .ok_or_else(|| errno(libc::ENODATA))
    }

    pub fn listxattr(&self, ino: u64, p: &Principal) -> Result<Vec<u8>> {
        let (t, fd, _keep) = self.xattr_target(ino)?;
        let mut out = Vec::new();
        match &t {
            Target::Bucket(b) => list_bucket_names(&self.engine, b, p, &mut out),
            Target::Object => {
                list_oss_names(self.stored_sse(ino, fd).unwrap_or(None).as_ref(), &mut out)
            }
            _ => {}
        }
        if matches!(t, Target::Other) {
            return Ok(out);
        }
        for n in xattr::list(At::Follow(&sys::proc_path(fd))).map_err(os_err)? {
            if is_user_name(&n) && !n.starts_with(INTERNAL_PREFIX) {
                out.extend_from_slice(&n);
                out.push(0);
            }
        }
        Ok(out)
    }

    pub fn setxattr(
        &self,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        p: &Principal,
    ) -> Result<()> {
        self.writable()?;
        self.user_namespace(ino, name)?;
        let (t, fd, _keep) = self.xattr_target(ino)?;
        if let Target::Bucket(b) = &t {
            if let Some(r) = bucket_set(&self.engine, b, name, value, p) {
                return r;
            }
        }
        if is_chunk_name(name) {
            // The chunk size is the bucket's: an object has its bucket's.
            return Err(errno(libc::ENOTSUP));
        }
        if let Some(n) = oss_name(name) {
            return match t {
                Target::Object => {
                    let name = self.display_name(fd);
                    let v = value_str(value).map_err(|e| e.resource(&name))?;
                    let cur = self.current_object_sse(ino, fd)?;
                    let over = with_field(cur.as_ref(), n, v).map_err(|e| e.resource(&name))?;
                    self.apply_override(ino, Some(&over), Some(&over), p)
                }
                _ => Err(errno(libc::ENOTSUP)),
            };
        }
        if name.as_bytes().starts_with(INTERNAL_PREFIX) {
            return Err(errno(libc::EPERM));
        }
        if matches!(t, Target::Other) {
            return Err(errno(libc::EPERM));
        }
        xattr::set(At::Follow(&sys::proc_path(fd)), name, value, flags).map_err(os_err)
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr, p: &Principal) -> Result<()> {
        self.writable()?;
        self.user_namespace(ino, name)?;
        let (t, fd, _keep) = self.xattr_target(ino)?;
        if let Target::Bucket(b) = &t {
            // The chunk size goes back to the default, under the same rule
            // as setting it.
            if let Some(r) = bucket_remove(&self.engine, b, name, p) {
                return r;
            }
        }
        if is_chunk_name(name) {
            return Err(errno(libc::ENOTSUP));
        }
        if let Some(n) = oss_name(name) {
            return match t {
                Target::Object => {
                    let cur = self
                        .current_object_sse(ino, fd)?
                        .ok_or_else(|| errno(libc::ENODATA))?;
                    match without_field(&cur, n)? {
                        // Back to the bucket's current rule.
                        None => {
                            let (_, role) = self.node(ino)?;
                            let b = role.bucket().ok_or_else(|| errno(libc::EPERM))?.clone();
                            let rule = self.engine.bucket_rule(&b)?;
                            self.apply_override(ino, rule.as_ref(), None, p)
                        }
                        Some(over) => self.apply_override(ino, Some(&over), Some(&over), p),
                    }
                }
                _ => Err(errno(libc::ENOTSUP)),
            };
        }
        if name.as_bytes().starts_with(INTERNAL_PREFIX) {
            return Err(errno(libc::EPERM));
        }
        if matches!(t, Target::Other) {
            return Err(errno(libc::EPERM));
        }
        xattr::remove(At::Follow(&sys::proc_path(fd)), name).map_err(os_err)
    }

    /// The chunk size the object is stored with (its header's); an empty
    /// file (no header yet) gets its bucket's at its first write.
    fn stored_chunk(&self, ino: u64, fd: std::os::fd::RawFd) -> Result<ChunkSize> {
        let f: File = sys::reopen(fd, libc::O_RDONLY).map_err(os_err)?;
        if f.metadata().map_err(os_err)?.len() == 0 {
            let (_, role) = self.node(ino)?;
            let b = role.bucket().ok_or_else(|| errno(libc::ENOTSUP))?;
            return self.engine.bucket_chunk_size(b);
        }
        Ok(Engine::read_header(&f, &self.display_name(fd))?.chunk)
    }

    /// The override if one is set, else how the object is stored.
    fn current_object_sse(&self, ino: u64, fd: std::os::fd::RawFd) -> Result<Option<SseConfig>> {
        let f = sys::reopen(fd, libc::O_RDONLY).map_err(os_err)?;
        match Engine::read_override(&f, &self.display_name(fd))? {
            Some(o) => Ok(Some(o)),
            None => self.stored_sse(ino, fd),
        }
    }

    /// Stores the object anew under `sse`, recording `over` as its override:
    /// an empty object just gets a new header; a non-empty one is
    /// re-encrypted into a temp file that is renamed over it (atomic). The
    /// inode number the kernel knows is kept.
    fn apply_override(
        &self,
        ino: u64,
        sse: Option<&SseConfig>,
        over: Option<&SseConfig>,
        p: &Principal,
    ) -> Result<()> {
        // A handle is held meanwhile, so that an open() during the change
        // shares the object locked below, and is moved to the new file with
        // it, instead of setting one up on the file being replaced (writes
        // through it were lost). Re-encryption needs the key anyway; an
        // empty object does not, and goes without when it is refused.
        let held = match self.open(ino, libc::O_RDONLY, p) {
            Ok(fh) => Some(fh),
            Err(_) if self.getattr(ino)?.size == 0 => None,
            Err(e) => return Err(e),
        };
        let r = self.store_anew(ino, sse, over, p);
        if let Some(fh) = held {
            self.release(ino, fh);
        }
        r
    }

    fn store_anew(
        &self,
        ino: u64,
        sse: Option<&SseConfig>,
        over: Option<&SseConfig>,
        p: &Principal,
    ) -> Result<()> {
        let (fd, role) = self.node(ino)?;
        let name = self.display_name(fd.as_raw_fd());
        let bucket = role.bucket().ok_or_else(|| errno(libc::EPERM))?.clone();
        let chunk = self.engine.bucket_chunk_size(&bucket)?;
        let attr = self.getattr(ino)?;
        let size = attr.size;
        if size != 0 && attr.nlink > 1 {
            // A re-encryption is a new file renamed over one name: the
            // object's other names would keep the old file, which the
            // mount would still show as this inode (one inode number for
            // two files, writes through one name seen under the other
            // until a remount). Refused instead; a file made since
            // (between this check and the rename) is split as before.
            tracing::warn!(
                code = OssCode::InvalidArgument.as_str(),
                path = name.as_str(),
                nlink = attr.nlink,
                "an object with several hard links cannot be re-encrypted in place: \
                 copy it, or remove its other names first"
            );
            return Err(errno(libc::EMLINK));
        }
        // The open object (if any) is locked for the whole change so no
        // write slips in between the copy and the rename.
        let open = lock(&self.nodes)
            .get(&ino)
            .and_then(|n| n.open.as_ref().map(|o| o.obj.clone()));
        let mut guard = open.as_ref().map(|o| o.write_lock());
        if size == 0 {
            let (header, key) = self
                .engine
                .new_header(p, sse, chunk)
                .map_err(|e| e.resource(&name))?;
            let f = sys::reopen(fd.as_raw_fd(), libc::O_RDWR).map_err(os_err)?;
            Engine::write_override(&f, &name, over)?;
            crate::engine::ObjectFile::create(f, header, &key, name.clone())?;
            if let Some(g) = guard.as_mut() {
                self.refill(fd.as_raw_fd(), g, (&name, chunk), p)?;
            }
            return Ok(());
        }
        // The new file goes under a name the object was seen under, through
        // the directory's descriptor, and only if that name still holds
        // this inode (checked here to pick the name, and again by the
        // engine at the rename): a user renaming directories or planting
        // symlinks meanwhile cannot steer it anywhere else (issue 12).
        let here = sys::stat_fd(fd.as_raw_fd()).map_err(os_err)?;
        let (pfd, leaf) = self
            .by_link(ino, |pfd, leaf| {
                let st = sys::stat_at(pfd.as_raw_fd(), leaf).ok()?;
                ((st.st_dev, st.st_ino) == (here.st_dev, here.st_ino))
                    .then(|| (pfd.clone(), leaf.to_os_string()))
            })
            .ok_or_else(|| errno(libc::ENOENT))?;
        let dir = Dir::dup(pfd.as_fd()).map_err(os_err)?;
        let src = sys::reopen(fd.as_raw_fd(), libc::O_RDONLY).map_err(os_err)?;
        let found = Found::local(LocalPlace {
            dir,
            leaf,
            file: src,
        })
        .map_err(os_err)?;
        let (_, new_file) = self
            .engine
            .reencrypt_found(p, &bucket, &found, &name, (sse, over))?;
        // The backend inode changed; keep the kernel's inode number for it.
        let new_fd = Arc::new(sys::path_fd_of(new_file.as_raw_fd()).map_err(os_err)?);
        let st = sys::stat_fd(new_fd.as_raw_fd()).map_err(os_err)?;
        {
            let mut nodes = lock(&self.nodes);
            if let Some(n) = nodes.get_mut(&ino) {
                // The node keeps a descriptor of the new file: its backend
                // inode number is no longer the node's (an alias).
                n.backing = super::Backing::Fd(new_fd.clone());
                n.role = role;
                self.fds.remove(ino);
                lock(&self.aliases).moved(ino, st.st_ino, fd.clone());
            }
        }
        if let Some(g) = guard.as_mut() {
            self.refill(new_fd.as_raw_fd(), g, (&name, chunk), p)?;
        }
        Ok(())
    }
}
