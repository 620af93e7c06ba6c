//! Whole-object operations: PutObject, GetObject, HeadObject, CopyObject.
//! Each new object is written to a temp file, fsynced and renamed into place,
//! so a reader or a crash sees the old object or the new one, never a mix.

use std::fs::File;
use std::io::{self, Read, Write};

use std::path::PathBuf;

use super::{Engine, ObjectFile, Staged};
use crate::backend::{Cond, Found, Loc, ObjMeta};
use crate::crypto::Cipher;
use crate::error::{Error, IoContext, Result};
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

impl Engine {
    /// The backend path of an object (for messages and tests; nothing is
    /// opened by it).
    pub fn object_path(&self, bucket: &BucketName, key: &ObjectKey) -> PathBuf {
        self.bucket_dir(bucket).join(key.as_str())
    }

    /// The object at `key` (a path below its bucket), found through the
    /// backend: NoSuchBucket, or NoSuchKey when there is no regular file
    /// there, or a symlink on the way.
    pub fn find_object(&self, bucket: &BucketName, key: &str) -> Result<Found> {
        self.backend.find(Loc { bucket, key })
    }

    /// Writes a whole new object from `src` into a staged file with the
    /// given encryption and the chunk size of its destination bucket, and
    /// returns it, not yet synced: the caller commits it (which syncs) or
    /// discards it.
    pub fn write_object_temp(
        &self,
        p: &Principal,
        (sse, chunk): (Option<&SseConfig>, ChunkSize),
        src: &mut dyn FnMut(&mut [u8]) -> Result<usize>,
        name: &str,
    ) -> Result<(Staged, ObjectInfo)> {
        let tmp = self.backend.stage(name)?;
        self.write_staged(p, (sse, chunk), src, name, tmp)
    }

    /// `write_object_temp` into `tmp`, telling it how far its bytes are
    /// settled as they are written (all but the last chunk's slot, which
    /// the next append seals again), so that a store can upload them while
    /// the rest is encrypted.
    fn write_staged(
        &self,
        p: &Principal,
        (sse, chunk): (Option<&SseConfig>, ChunkSize),
        src: &mut dyn FnMut(&mut [u8]) -> Result<usize>,
        name: &str,
        tmp: Staged,
    ) -> Result<(Staged, ObjectInfo)> {
        let result = tmp.file.try_clone().ctx(name).and_then(|f| {
            let obj = self.encrypt_into(p, (sse, chunk), src, name, f, &|off| tmp.settled(off))?;
            Ok(ObjectInfo::from_header(obj.header(), obj.size()))
        });
        match result {
            Ok(info) => Ok((tmp, info)),
            Err(e) => {
                self.backend.discard(tmp);
                Err(e)
            }
        }
    }

    /// A new object in `file` (emptied first): a fresh data key and header
    /// per `sse` (KMS permission and key state checked here), then what
    /// `src` gives, encrypted in chunks of `chunk`. `settled(off)` hears
    /// how far the bytes will not change again (all but the last chunk's
    /// slot) as they are written.
    pub(crate) fn encrypt_into(
        &self,
        p: &Principal,
        (sse, chunk): (Option<&SseConfig>, ChunkSize),
        src: &mut dyn FnMut(&mut [u8]) -> Result<usize>,
        name: &str,
        file: File,
        settled: &dyn Fn(u64),
    ) -> Result<ObjectFile> {
        let (header, key) = self
            .new_header(p, sse, chunk)
            .map_err(|e| e.resource(name))?;
        let mut obj = ObjectFile::create(file, header, &key, name.to_owned())?;
        let mut buf = vec![0u8; IO_BUF];
        loop {
            let n = src(&mut buf)?;
            if n == 0 {
                break;
            }
            obj.write_at(obj.size(), &buf[..n])?;
            let chunks = chunk.chunk_count(obj.size());
            if chunks > 1 {
                settled(chunk.slot_offset(chunks - 1));
            }
        }
        Ok(obj)
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
        let at = Loc {
            bucket,
            key: key.as_str(),
        };
        let name = at.shown();
        self.check_bucket(bucket)?;
        let (sse, chunk) = self.upload_settings(bucket, over)?;
        let mut fill = |b: &mut [u8]| read_full(src, b).ctx(&name);
        let meta = ObjMeta {
            sse_override: over.cloned(),
            ctime: None,
            ..ObjMeta::default()
        };
        let tmp = self.backend.stage_for(at, &meta)?;
        let (tmp, info) = self.write_staged(p, (sse.as_ref(), chunk), &mut fill, &name, tmp)?;
        self.backend.commit(tmp, at, &meta, Cond::Any)?;
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
        let fetched = self.backend.fetch(Loc {
            bucket,
            key: key.as_str(),
        })?;
        let name = format!("{bucket}/{}", key.as_str());
        if fetched.len == 0 {
            // No header yet: an object created empty through the mount.
            dst.flush().ctx(&name)?;
            return Ok(0);
        }
        let chunk = self.bucket_chunk_size(bucket)?;
        let obj = self.open_slots(p, fetched.slots, name.clone(), chunk)?;
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
        let found = self.find_object(bucket, key.as_str())?;
        let f = found.file();
        let name = format!("{bucket}/{}", key.as_str());
        if found.len == 0 {
            // No header yet (created empty through the mount): the
            // encryption its first write will use, as the mount shows it.
            let sse = match self.backend.sse_override(&found, &name)? {
                Some(o) => Some(o),
                None => self.bucket_rule(bucket)?,
            };
            return Ok(ObjectInfo::pending(sse.as_ref()));
        }
        let h = Engine::read_header(f, &name)?;
        Engine::check_chunk(&h, self.bucket_chunk_size(bucket)?, &name)?;
        let size = h.chunk.plaintext_len(found.len).ok_or_else(|| {
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
        let found = self.find_object(src.0, src.1.as_str())?;
        let src_name = format!("{}/{}", src.0, src.1.as_str());
        // Mode, owner, times and user metadata go with the bytes; the
        // encryption is the destination's.
        let meta = ObjMeta {
            sse_override: over.cloned(),
            ctime: None,
            ..self.backend.meta(&found)?
        };
        // An empty source without a header yet (created empty through the
        // mount) has no key to unwrap and nothing to read.
        let obj = if found.len == 0 {
            None
        } else {
            let chunk = self.bucket_chunk_size(src.0)?;
            let f = found.into_file();
            Some(self.open_object(p, f, src_name.clone(), chunk)?)
        };
        let at = Loc {
            bucket: dst.0,
            key: dst.1.as_str(),
        };
        let dst_name = at.shown();
        self.check_bucket(dst.0)?;
        let (sse, chunk) = self.upload_settings(dst.0, over)?;
        let mut nothing = |_: &mut [u8]| -> Result<usize> { Ok(0) };
        let mut from_obj = obj.as_ref().map(object_source);
        let fill: &mut dyn FnMut(&mut [u8]) -> Result<usize> = match from_obj.as_mut() {
            Some(f) => f,
            None => &mut nothing,
        };
        let (tmp, info) = self.write_object_temp(p, (sse.as_ref(), chunk), fill, &dst_name)?;
        self.backend.commit(tmp, at, &meta, Cond::Any)?;
        Ok(info)
    }

    /// Re-encrypts the object found as `found` (in `bucket`) under `sse`
    /// (None: unencrypted), atomically, keeping its attributes; records
    /// `over` as its override. The new object takes the old one's place
    /// only while that is still the version found (`Backend::replace`):
    /// whatever users rename meanwhile, nothing but that one entry
    /// changes. Returns the new backend file, now in place. Used by
    /// `reencrypt`, the upgrade, and setfattr on a file.
    pub fn reencrypt_found(
        &self,
        p: &Principal,
        bucket: &BucketName,
        found: &Found,
        name: &str,
        (sse, over): (Option<&SseConfig>, Option<&SseConfig>),
    ) -> Result<(ObjectInfo, File)> {
        let chunk = self.bucket_chunk_size(bucket)?;
        let src = found.file().try_clone().ctx(name)?;
        let obj = self.open_object(p, src, name.to_owned(), chunk)?;
        let mut fill = object_source(&obj);
        let (staged, info) = self.write_object_temp(p, (sse, chunk), &mut fill, name)?;
        // Mode, owner, times and user metadata stay the object's.
        let meta = self.backend.meta(found).and_then(|mut m| {
            m.sse_override = over.cloned();
            // The caller gets the file that takes the object's place.
            let kept = staged.file.try_clone().ctx(name)?;
            Ok((m, kept))
        });
        let (meta, kept) = match meta {
            Ok(m) => m,
            Err(e) => {
                self.backend.discard(staged);
                return Err(e);
            }
        };
        self.backend.replace(staged, found, &meta, name)?;
        Ok((info, kept))
    }
}

/// Reads an object's plaintext front to back, a buffer at a time.
pub(crate) fn object_source(obj: &ObjectFile) -> impl FnMut(&mut [u8]) -> Result<usize> + '_ {
    let mut off = 0u64;
    move |buf| {
        let n = obj.read_at(off, buf)?;
        off += n as u64;
        Ok(n)
    }
}
