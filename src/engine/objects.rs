//! Whole-object operations: PutObject, GetObject, HeadObject, CopyObject.
//! Each new object is written to a temp file, fsynced and renamed into place,
//! so a reader or a crash sees the old object or the new one, never a mix.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{xattr, Engine, ObjectFile, TempFile};
use crate::backend::{Dir, Ident};
use crate::crypto::Cipher;
use crate::error::{Error, IoContext, OssCode, Result};
use crate::format::{ChunkSize, Header, Method};
use crate::kms::Kms;
use crate::oss::{BucketName, ObjectKey, SseAlgorithm, SseConfig};
use crate::principal::Principal;

/// Copy buffer size: a multiple of the chunk size, large enough that the
/// re-seal of the previous last chunk on each append is ~1.5% of the work.
const IO_BUF: usize = 1 << 20;

/// What HeadObject reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    /// `x-oss-server-side-encryption`; `None` when stored unencrypted.
    pub algorithm: Option<SseAlgorithm>,
    /// `x-oss-server-side-encryption-key-id`: the CMK's id, for KMS.
    pub key_id: Option<String>,
    /// `x-oss-server-side-data-encryption: SM4`, for KMS with SM4.
    pub data_sm4: bool,
}

impl ObjectInfo {
    pub fn from_header(h: &Header, size: u64) -> Self {
        let (algorithm, key_id) = match h.method {
            Method::None => (None, None),
            Method::Oss if h.cipher == Cipher::Sm4Gcm => (Some(SseAlgorithm::Sm4), None),
            Method::Oss => (Some(SseAlgorithm::Aes256), None),
            Method::Kms => (Some(SseAlgorithm::Kms), Some(Kms::key_id_string(&h.key_id))),
        };
        ObjectInfo {
            size,
            algorithm,
            key_id,
            data_sm4: h.method == Method::Kms && h.cipher == Cipher::Sm4Gcm,
        }
    }

    /// An empty object without a header yet, to be stored per `sse`.
    pub fn pending(sse: Option<&SseConfig>) -> Self {
        ObjectInfo {
            size: 0,
            algorithm: sse.map(|c| c.algorithm),
            key_id: sse.and_then(|c| c.kms_key_id.clone()),
            data_sm4: sse.is_some_and(|c| c.kms_data_sm4),
        }
    }

    /// As response-header lines.
    pub fn header_lines(&self) -> String {
        let mut s = format!("content-length: {}\n", self.size);
        if let Some(a) = self.algorithm {
            s.push_str(&format!("x-oss-server-side-encryption: {a}\n"));
        }
        if let Some(k) = &self.key_id {
            s.push_str(&format!("x-oss-server-side-encryption-key-id: {k}\n"));
        }
        if self.data_sm4 {
            s.push_str("x-oss-server-side-data-encryption: SM4\n");
        }
        s
    }
}

/// Reads until `buf` is full or the source ends; returns the bytes read.
fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Splits an object key into the directory it lives in (relative to its
/// bucket) and its last component.
fn split_key(key: &ObjectKey) -> (&Path, &OsStr) {
    let p = Path::new(key.as_str());
    // A parsed key is 1..1023 bytes of non-empty plain components, so it
    // always has a last one; the fallback only keeps this total.
    let leaf = p.file_name().unwrap_or(OsStr::new(key.as_str()));
    (p.parent().unwrap_or(Path::new("")), leaf)
}

/// Opens `leaf` in `dir` for reading if it is a regular file: `None` when
/// it is absent, a symlink, a directory or anything else. Never blocks on
/// a FIFO, never follows a link.
pub fn open_regular(dir: &Dir, leaf: &OsStr) -> io::Result<Option<File>> {
    let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
    match dir.file(Path::new(leaf), flags, 0) {
        Ok(f) if f.metadata()?.is_file() => Ok(Some(f)),
        Ok(_) => Ok(None),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl Engine {
    /// The backend path of an object (for messages and tests; nothing is
    /// opened by it).
    pub fn object_path(&self, bucket: &BucketName, key: &ObjectKey) -> PathBuf {
        self.bucket_dir(bucket).join(key.as_str())
    }

    /// An existing object: its directory, its name there and its file.
    fn existing_object(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
    ) -> Result<(Dir, OsString, File)> {
        self.find_object(bucket, key.as_str(), &format!("{bucket}/{}", key.as_str()))
    }

    /// The object at `key` (a path below its bucket) found by descriptor:
    /// the directory it is in (held), its name there and its file, open for
    /// reading. NoSuchKey (naming `name`) when there is no regular file
    /// there, or a symlink on the way.
    pub fn find_object(
        &self,
        bucket: &BucketName,
        key: &str,
        name: &str,
    ) -> Result<(Dir, OsString, File)> {
        let b = self.bucket(bucket)?;
        let no_key =
            || Error::new(OssCode::NoSuchKey, "The specified key does not exist.").resource(name);
        let rel = Path::new(key);
        let leaf = rel.file_name().ok_or_else(no_key)?;
        let dir = match b.dir(rel.parent().unwrap_or(Path::new(""))) {
            Ok(d) => d,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                ) =>
            {
                return Err(no_key())
            }
            Err(e) => return Err(Error::io(name, e)),
        };
        let f = open_regular(&dir, leaf).ctx(name)?.ok_or_else(no_key)?;
        Ok((dir, leaf.to_owned(), f))
    }

    /// Writes a whole new object from `src` into a temp file with the given
    /// encryption and the chunk size of its destination bucket, and returns
    /// the temp file (fsynced, override recorded). The caller renames it
    /// into place.
    pub fn write_object_temp(
        &self,
        p: &Principal,
        (sse, chunk): (Option<&SseConfig>, ChunkSize),
        over: Option<&SseConfig>,
        src: &mut dyn FnMut(&mut [u8]) -> Result<usize>,
        name: &str,
    ) -> Result<(TempFile, ObjectInfo)> {
        let (header, key) = self
            .new_header(p, sse, chunk)
            .map_err(|e| e.resource(name))?;
        let tmp = self.temp_file(0o644)?;
        let result = (|| {
            let f = tmp.file.try_clone().ctx(name)?;
            let mut obj = ObjectFile::create(f, header, &key, name.to_owned())?;
            let mut buf = vec![0u8; IO_BUF];
            loop {
                let n = src(&mut buf)?;
                if n == 0 {
                    break;
                }
                obj.write_at(obj.size(), &buf[..n])?;
            }
            Engine::write_override(obj.file(), name, over)?;
            obj.sync(false)?;
            Ok(ObjectInfo::from_header(obj.header(), obj.size()))
        })();
        match result {
            Ok(info) => Ok((tmp, info)),
            Err(e) => {
                self.discard_temp(&tmp);
                Err(e)
            }
        }
    }

    /// The directory a new object `key` goes in, made as needed (beneath
    /// the bucket, no symlink followed), and the object's name there.
    fn new_object_place<'k>(
        &self,
        bucket: &BucketName,
        key: &'k ObjectKey,
        name: &str,
    ) -> Result<(Dir, &'k OsStr)> {
        let b = self.bucket(bucket)?;
        let (parent, leaf) = split_key(key);
        let dir = b
            .create_dirs(parent, 0o755)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOTDIR | libc::ELOOP) => Error::new(
                    OssCode::InvalidObjectName,
                    "a part of the key names something that is not a directory",
                )
                .resource(name),
                _ => Error::io(name, e),
            })?;
        if dir
            .stat(leaf)
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        {
            return Err(
                Error::new(OssCode::InvalidObjectName, "a directory exists at this key")
                    .resource(name),
            );
        }
        Ok((dir, leaf))
    }

    /// PutObject: `over` is the request's encryption headers (they win over
    /// the bucket rule and are kept as the object's override).
    pub fn put_object(
        &self,
        p: &Principal,
        bucket: &BucketName,
        key: &ObjectKey,
        src: &mut dyn Read,
        over: Option<&SseConfig>,
    ) -> Result<ObjectInfo> {
        let name = format!("{bucket}/{}", key.as_str());
        let (dir, leaf) = self.new_object_place(bucket, key, &name)?;
        let (sse, chunk) = self.upload_settings(&self.bucket_dir(bucket), over)?;
        let mut fill = |b: &mut [u8]| read_full(src, b).ctx(&name);
        let (tmp, info) =
            self.write_object_temp(p, (sse.as_ref(), chunk), over, &mut fill, &name)?;
        self.commit_temp(&tmp, &dir, leaf, &name)
            .inspect_err(|_| self.discard_temp(&tmp))?;
        Ok(info)
    }

    /// GetObject: streams the plaintext to `dst`; returns the byte count.
    pub fn get_object(
        &self,
        p: &Principal,
        bucket: &BucketName,
        key: &ObjectKey,
        dst: &mut dyn Write,
    ) -> Result<u64> {
        let (_, _, f) = self.existing_object(bucket, key)?;
        let name = format!("{bucket}/{}", key.as_str());
        if f.metadata().ctx(&name)?.len() == 0 {
            // No header yet: an object created empty through the mount.
            dst.flush().ctx(&name)?;
            return Ok(0);
        }
        let obj = self.open_object(p, f, name.clone(), self.bucket_chunk_size(bucket)?)?;
        let mut buf = vec![0u8; IO_BUF];
        let mut off = 0u64;
        loop {
            let n = obj.read_at(off, &mut buf)?;
            if n == 0 {
                break;
            }
            dst.write_all(&buf[..n]).ctx(&name)?;
            off += n as u64;
        }
        dst.flush().ctx(&name)?;
        Ok(off)
    }

    /// HeadObject: size and encryption from the header alone; no key is used.
    pub fn head_object(&self, bucket: &BucketName, key: &ObjectKey) -> Result<ObjectInfo> {
        let (_, _, f) = self.existing_object(bucket, key)?;
        let name = format!("{bucket}/{}", key.as_str());
        if f.metadata().ctx(&name)?.len() == 0 {
            // No header yet (created empty through the mount): the
            // encryption its first write will use, as the mount shows it.
            let sse = match Engine::read_override(&f, &name)? {
                Some(o) => Some(o),
                None => self.bucket_rule(bucket)?,
            };
            return Ok(ObjectInfo::pending(sse.as_ref()));
        }
        let h = Engine::read_header(&f, &name)?;
        Engine::check_chunk(&h, self.bucket_chunk_size(bucket)?, &name)?;
        let len = f.metadata().ctx(&name)?.len();
        let size = h.chunk.plaintext_len(len).ok_or_else(|| {
            Error::integrity("object length is not valid (truncated?)").resource(&name)
        })?;
        Ok(ObjectInfo::from_header(&h, size))
    }

    /// CopyObject: the destination is encrypted per `over`, else per the
    /// destination bucket's rule; the source's encryption is not carried
    /// over. Copying an object over itself re-encrypts it in place; its mode,
    /// owner, times and user metadata are kept.
    pub fn copy_object(
        &self,
        p: &Principal,
        src: (&BucketName, &ObjectKey),
        dst: (&BucketName, &ObjectKey),
        over: Option<&SseConfig>,
    ) -> Result<ObjectInfo> {
        let (_, _, f) = self.existing_object(src.0, src.1)?;
        let src_name = format!("{}/{}", src.0, src.1.as_str());
        // An empty source without a header yet (created empty through the
        // mount) has no key to unwrap and nothing to read.
        let obj = if f.metadata().ctx(&src_name)?.len() == 0 {
            None
        } else {
            let chunk = self.bucket_chunk_size(src.0)?;
            Some(self.open_object(p, f.try_clone().ctx(&src_name)?, src_name.clone(), chunk)?)
        };
        let dst_name = format!("{}/{}", dst.0, dst.1.as_str());
        let (dir, leaf) = self.new_object_place(dst.0, dst.1, &dst_name)?;
        let (sse, chunk) = self.upload_settings(&self.bucket_dir(dst.0), over)?;
        let mut nothing = |_: &mut [u8]| -> Result<usize> { Ok(0) };
        let mut from_obj = obj.as_ref().map(object_source);
        let fill: &mut dyn FnMut(&mut [u8]) -> Result<usize> = match from_obj.as_mut() {
            Some(f) => f,
            None => &mut nothing,
        };
        let (tmp, info) =
            self.write_object_temp(p, (sse.as_ref(), chunk), over, fill, &dst_name)?;
        let finish = || -> Result<()> {
            copy_posix_attrs(&f, &tmp.file).ctx(&dst_name)?;
            self.commit_temp(&tmp, &dir, leaf, &dst_name)
        };
        finish().inspect_err(|_| self.discard_temp(&tmp))?;
        Ok(info)
    }

    /// Re-encrypts the object `leaf` of `dir` (in `bucket`), whose backend
    /// file the caller has open as `src`, under `sse` (None: unencrypted),
    /// atomically, keeping its attributes; records `over` as its override.
    /// The new file takes the name only while the name still holds `src`
    /// (`Dir::replace`): whatever users rename meanwhile, nothing but that
    /// one entry changes. Returns the new file, now in place. Used by
    /// `reencrypt` and by setfattr on a file.
    pub fn reencrypt_at(
        &self,
        p: &Principal,
        bucket: &BucketName,
        (dir, leaf): (&Dir, &OsStr),
        src: File,
        name: &str,
        (sse, over): (Option<&SseConfig>, Option<&SseConfig>),
    ) -> Result<(ObjectInfo, File)> {
        let expect = Ident::of_fd(src.as_fd()).ctx(name)?;
        let chunk = self.bucket_chunk_size(bucket)?;
        let obj = self.open_object(p, src, name.to_owned(), chunk)?;
        let mut fill = object_source(&obj);
        let (tmp, info) = self.write_object_temp(p, (sse, chunk), over, &mut fill, name)?;
        let attrs = || -> Result<()> {
            copy_posix_attrs(obj.file(), &tmp.file).ctx(name)?;
            mark_replaces(&tmp.file, expect).ctx(name)?;
            // The attributes are part of what the rename makes visible.
            tmp.file.sync_all().ctx(name)
        };
        attrs().inspect_err(|_| self.discard_temp(&tmp))?;
        self.replace_with_temp(&tmp, (dir, leaf), expect, name)?;
        Ok((info, tmp.file))
    }
}

/// Records on a rewritten object's new file which backend file it replaces
/// (`REPLACES_XATTR`), for mounts that hold the old one.
pub(crate) fn mark_replaces(f: &File, old: Ident) -> io::Result<()> {
    xattr::set(
        xattr::At::File(f),
        OsStr::new(super::REPLACES_XATTR),
        &old.to_bytes(),
        0,
    )
}

/// Mode, owner, times and user xattrs, from one open backend file to
/// another (except ssefs's own `user.ssefs.*`, which the new object sets
/// for itself).
pub(crate) fn copy_posix_attrs(from: &File, to: &File) -> io::Result<()> {
    let m = from.metadata()?;
    // Changing the owner needs privilege; as a plain user the owner is
    // already us, so only try when it differs. Before the mode: a chown
    // clears set-id bits.
    let cur = to.metadata()?;
    if cur.uid() != m.uid() || cur.gid() != m.gid() {
        std::os::unix::fs::fchown(to, Some(m.uid()), Some(m.gid()))?;
    }
    to.set_permissions(fs::Permissions::from_mode(m.mode() & 0o7777))?;
    for name in xattr::list(xattr::At::File(from))? {
        if !name.starts_with(b"user.") || name.starts_with(b"user.ssefs.") {
            continue;
        }
        let n = OsStr::from_bytes(&name);
        if let Some(v) = xattr::get(xattr::At::File(from), n)? {
            xattr::set(xattr::At::File(to), n, &v, 0)?;
        }
    }
    let times = [
        libc::timespec {
            tv_sec: m.atime(),
            tv_nsec: m.atime_nsec(),
        },
        libc::timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec(),
        },
    ];
    // SAFETY: `to` is an open descriptor and times points to two timespecs.
    let r = unsafe { libc::futimens(to.as_raw_fd(), times.as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads an object's plaintext front to back, a buffer at a time.
fn object_source(obj: &ObjectFile) -> impl FnMut(&mut [u8]) -> Result<usize> + '_ {
    let mut off = 0u64;
    move |buf| {
        let n = obj.read_at(off, buf)?;
        off += n as u64;
        Ok(n)
    }
}
