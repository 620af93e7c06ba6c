//! A whole-object upload that starts while the object is still being
//! written: a writer appending front to back says how far its bytes are
//! settled (`Staged::settled`), and 16 MiB parts of them go to the store
//! as a multipart upload while the rest is encrypted. The commit sends
//! what is left and completes it; a small object is one PUT at the
//! commit. Parts are invisible until the completion, so a reader or a
//! crash still sees the old object or the new one; an upload dropped
//! without a commit is aborted.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as StorePath;
use object_store::{
    Attribute, AttributeValue, Attributes, MultipartUpload, ObjectStore, PutMultipartOptions,
    PutPayload,
};
use tokio::runtime::Handle;

use super::{meta, S3Backend, PART, PARTS_IN_FLIGHT};
use crate::backend::ObjMeta;
use crate::crypto::SecretKey;
use crate::format::HEADER_LEN;

enum Msg {
    Settled(u64),
    /// All written: this many bytes. The reply is the ETag, or why not.
    Done(u64),
}

/// The writer's side.
pub struct EarlyUpload {
    tx: Option<mpsc::Sender<Msg>>,
    thread: Option<std::thread::JoinHandle<Result<Option<String>, String>>>,
    /// The metadata the upload carries (fixed when it began).
    pub(super) meta: ObjMeta,
    pub(super) path: StorePath,
}

impl std::fmt::Debug for EarlyUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarlyUpload")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What the upload thread needs.
pub struct Target {
    pub rt: Handle,
    pub store: Arc<dyn ObjectStore>,
    pub path: StorePath,
    pub meta: ObjMeta,
    pub key: SecretKey,
}

impl EarlyUpload {
    pub fn start(t: Target, file: File) -> std::io::Result<EarlyUpload> {
        let (tx, rx) = mpsc::channel();
        let (meta, path) = (t.meta.clone(), t.path.clone());
        let thread = std::thread::Builder::new()
            .name("ssefs-put".into())
            .spawn(move || run(&t, &file, &rx))?;
        Ok(EarlyUpload {
            tx: Some(tx),
            thread: Some(thread),
            meta,
            path,
        })
    }

    /// Bytes before `off` will not change again.
    pub fn settled(&self, off: u64) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Settled(off));
        }
    }

    /// Everything is written (`len` bytes): the rest goes, and the upload
    /// completes. Returns the new object's ETag.
    pub fn finish(mut self, len: u64) -> Result<Option<String>, String> {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Done(len));
        }
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err("the upload thread failed".into()),
        }
    }
}

impl Drop for EarlyUpload {
    fn drop(&mut self) {
        // Without a Done, the thread aborts what it began.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The upload thread: parts as they settle, the rest at Done.
fn run(t: &Target, file: &File, rx: &mpsc::Receiver<Msg>) -> Result<Option<String>, String> {
    let mut up: Option<Box<dyn MultipartUpload>> = None;
    let mut next = 0u64;
    let mut flying: Vec<tokio::task::JoinHandle<object_store::Result<()>>> = Vec::new();
    let result = (|| loop {
        match rx.recv() {
            Ok(Msg::Settled(off)) => {
                while off >= next + PART as u64 {
                    if up.is_none() {
                        up = Some(begin(t, file)?);
                    }
                    send_part(
                        t,
                        file,
                        up.as_deref_mut(),
                        next..next + PART as u64,
                        &mut flying,
                    )?;
                    next += PART as u64;
                }
            }
            Ok(Msg::Done(len)) => {
                let Some(u) = up.as_deref_mut() else {
                    return single_put(t, file, len);
                };
                while next < len {
                    let end = (next + PART as u64).min(len);
                    send_part(t, file, Some(u), next..end, &mut flying)?;
                    next = end;
                }
                for h in flying.drain(..) {
                    joined(t, h)?;
                }
                let r = t.rt.block_on(u.complete()).map_err(|e| e.to_string())?;
                return Ok(r.e_tag);
            }
            // Dropped without a commit.
            Err(_) => return Err("abandoned".into()),
        }
    })();
    if result.is_err() {
        for h in flying.drain(..) {
            h.abort();
        }
        if let Some(mut u) = up {
            let _ = t.rt.block_on(u.abort());
        }
    }
    result
}

/// The record for the object whose header the file now starts with.
fn record(t: &Target, file: &File, len: u64) -> Result<String, String> {
    let shown = t.path.to_string();
    let oid = S3Backend::header_oid(file, len, &shown).map_err(|e| e.to_string())?;
    meta::encode(&t.key, &t.meta, oid.as_ref()).map_err(|e| e.to_string())
}

fn attributes(record: String) -> Attributes {
    let mut a = Attributes::new();
    a.insert(
        Attribute::Metadata(meta::META_NAME.into()),
        AttributeValue::from(record),
    );
    a
}

fn begin(t: &Target, file: &File) -> Result<Box<dyn MultipartUpload>, String> {
    let opts = PutMultipartOptions {
        attributes: attributes(record(t, file, HEADER_LEN as u64)?),
        ..PutMultipartOptions::default()
    };
    t.rt.block_on(t.store.put_multipart_opts(&t.path, opts))
        .map_err(|e| e.to_string())
}

fn send_part(
    t: &Target,
    file: &File,
    up: Option<&mut (dyn MultipartUpload + 'static)>,
    r: std::ops::Range<u64>,
    flying: &mut Vec<tokio::task::JoinHandle<object_store::Result<()>>>,
) -> Result<(), String> {
    let Some(up) = up else {
        return Err("no upload".into());
    };
    let mut buf = vec![0u8; (r.end - r.start) as usize];
    file.read_exact_at(&mut buf, r.start)
        .map_err(|e| e.to_string())?;
    // On the runtime, so that parts travel while this thread waits for
    // the writer.
    flying.push(t.rt.spawn(up.put_part(PutPayload::from(Bytes::from(buf)))));
    if flying.len() > PARTS_IN_FLIGHT {
        let oldest = flying.remove(0);
        joined(t, oldest)?;
    }
    Ok(())
}

fn joined(t: &Target, h: tokio::task::JoinHandle<object_store::Result<()>>) -> Result<(), String> {
    match t.rt.block_on(h) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

fn single_put(t: &Target, file: &File, len: u64) -> Result<Option<String>, String> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0).map_err(|e| e.to_string())?;
    let opts = object_store::PutOptions {
        attributes: attributes(record(t, file, len)?),
        ..object_store::PutOptions::default()
    };
    let r =
        t.rt.block_on(t.store.put_opts(&t.path, PutPayload::from(buf), opts))
            .map_err(|e| e.to_string())?;
    Ok(r.e_tag)
}
