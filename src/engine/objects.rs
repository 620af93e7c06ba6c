//! Whole-object operations: PutObject, GetObject, HeadObject, CopyObject.
//! Each new object is written to a temp file, fsynced and renamed into place,
//! so a reader or a crash sees the old object or the new one, never a mix.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{xattr, Engine, ObjectFile};
use crate::crypto::Cipher;
use crate::error::{Error, IoContext, OssCode, Result};
use crate::format::{ChunkSize, Header, Method};
use crate::kms::{Kms, Principal};
use crate::oss::{BucketName, ObjectKey, SseAlgorithm, SseConfig};

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

impl Engine {
    /// The backend path of an object.
    pub fn object_path(&self, bucket: &BucketName, key: &ObjectKey) -> PathBuf {
        self.bucket_dir(bucket).join(key.as_str())
    }

    fn existing_object(&self, bucket: &BucketName, key: &ObjectKey) -> Result<(PathBuf, File)> {
        self.existing_bucket(bucket)?;
        let path = self.object_path(bucket, key);
        let name = format!("{bucket}/{}", key.as_str());
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => {}
            _ => {
                return Err(
                    Error::new(OssCode::NoSuchKey, "The specified key does not exist.")
                        .resource(name),
                )
            }
        }
        let f = File::open(&path).ctx(&name)?;
        Ok((path, f))
    }

    /// Writes a whole new object from `src` into a temp file with the given
    /// encryption and the chunk size of its destination bucket, and returns
    /// the temp path (fsynced, override recorded). The caller renames it
    /// into place.
    pub fn write_object_temp(
        &self,
        p: &Principal,
        (sse, chunk): (Option<&SseConfig>, ChunkSize),
        over: Option<&SseConfig>,
        src: &mut dyn FnMut(&mut [u8]) -> Result<usize>,
        name: &str,
    ) -> Result<(PathBuf, ObjectInfo)> {
        let (header, key) = self
            .new_header(p, sse, chunk)
            .map_err(|e| e.resource(name))?;
        let (tmp, f) = self.temp_file(0o644)?;
        let result = (|| {
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
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
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
        let dir = self.existing_bucket(bucket)?;
        let name = format!("{bucket}/{}", key.as_str());
        let dest = self.object_path(bucket, key);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).ctx(&name)?;
        }
        if fs::symlink_metadata(&dest)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            return Err(
                Error::new(OssCode::InvalidObjectName, "a directory exists at this key")
                    .resource(name),
            );
        }
        let (sse, chunk) = self.upload_settings(&dir, over)?;
        let mut fill = |b: &mut [u8]| read_full(src, b).ctx(&name);
        let (tmp, info) =
            self.write_object_temp(p, (sse.as_ref(), chunk), over, &mut fill, &name)?;
        self.commit_temp(&tmp, &dest).inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
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
        let (_, f) = self.existing_object(bucket, key)?;
        let name = format!("{bucket}/{}", key.as_str());
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
        let (path, f) = self.existing_object(bucket, key)?;
        let name = format!("{bucket}/{}", key.as_str());
        let h = Engine::read_header(&f, &name)?;
        Engine::check_chunk(&h, self.bucket_chunk_size(bucket)?, &name)?;
        let len = fs::metadata(&path).ctx(&name)?.len();
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
        let (src_path, f) = self.existing_object(src.0, src.1)?;
        let src_name = format!("{}/{}", src.0, src.1.as_str());
        let obj = self.open_object(p, f, src_name.clone(), self.bucket_chunk_size(src.0)?)?;
        let dst_dir = self.existing_bucket(dst.0)?;
        let dst_name = format!("{}/{}", dst.0, dst.1.as_str());
        let dest = self.object_path(dst.0, dst.1);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).ctx(&dst_name)?;
        }
        let (sse, chunk) = self.upload_settings(&dst_dir, over)?;
        let mut fill = object_source(&obj);
        let (tmp, info) =
            self.write_object_temp(p, (sse.as_ref(), chunk), over, &mut fill, &dst_name)?;
        let finish = || -> Result<()> {
            copy_posix_attrs(&src_path, &tmp).ctx(&dst_name)?;
            self.commit_temp(&tmp, &dest)
        };
        finish().inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        Ok(info)
    }

    /// Re-encrypts the object at backend path `path` of bucket `bucket`
    /// under `sse` (None: unencrypted), atomically, keeping its attributes;
    /// records `over` as its override. Used by `reencrypt` and by setfattr
    /// on a file.
    pub fn reencrypt_path(
        &self,
        p: &Principal,
        (bucket, path): (&BucketName, &Path),
        name: &str,
        sse: Option<&SseConfig>,
        over: Option<&SseConfig>,
    ) -> Result<ObjectInfo> {
        let chunk = self.bucket_chunk_size(bucket)?;
        let f = OpenOptions::new().read(true).open(path).ctx(name)?;
        let obj = self.open_object(p, f, name.to_owned(), chunk)?;
        let mut fill = object_source(&obj);
        let (tmp, info) = self.write_object_temp(p, (sse, chunk), over, &mut fill, name)?;
        let finish = || -> Result<()> {
            copy_posix_attrs(path, &tmp).ctx(name)?;
            self.commit_temp(&tmp, path)
        };
        finish().inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
        Ok(info)
    }
}

/// Mode, owner, times and user xattrs (except the override, which the new
/// object sets for itself).
pub(crate) fn copy_posix_attrs(from: &Path, to: &Path) -> io::Result<()> {
    let m = fs::metadata(from)?;
    // Changing the owner needs privilege; as a plain user the owner is
    // already us, so only try when it differs. Before the mode: a chown
    // clears set-id bits.
    let cur = fs::metadata(to)?;
    if cur.uid() != m.uid() || cur.gid() != m.gid() {
        std::os::unix::fs::chown(to, Some(m.uid()), Some(m.gid()))?;
    }
    fs::set_permissions(to, fs::Permissions::from_mode(m.mode() & 0o7777))?;
    for name in xattr::list(xattr::At::Link(from))? {
        if !name.starts_with(b"user.") || name == super::OVERRIDE_XATTR.as_bytes() {
            continue;
        }
        let n = OsStr::from_bytes(&name);
        if let Some(v) = xattr::get(xattr::At::Link(from), n)? {
            xattr::set(xattr::At::Link(to), n, &v, 0)?;
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
    let c = std::ffi::CString::new(to.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: c is a valid path string and times points to two timespecs.
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
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
