//! An object read while it arrives: one GET streams into an unnamed local
//! file on a thread of its own, and reads wait until the bytes they want
//! are there. GetObject decrypts the front of an object while the rest is
//! still on the wire (bench/results/2026-12-04-store-put-get.md).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{GetOptions, ObjectStore};

use crate::backend::SlotIo;

/// How far the download got.
#[derive(Default)]
struct Progress {
    ready: u64,
    failed: Option<String>,
}

struct Shared {
    progress: Mutex<Progress>,
    moved: Condvar,
    cancel: AtomicBool,
}

/// The object's bytes, `len` of them once all have arrived.
pub struct Arriving {
    file: File,
    len: u64,
    ident: (u64, u64),
    shared: Arc<Shared>,
}

impl Arriving {
    /// Starts the GET of version `etag` of `p` (`len` bytes) into `file`
    /// on a thread of its own, driven by `rt`.
    pub fn start(
        rt: tokio::runtime::Handle,
        store: Arc<dyn ObjectStore>,
        p: StorePath,
        (etag, len): (String, u64),
        file: File,
    ) -> io::Result<Arriving> {
        let m = file.metadata()?;
        let shared = Arc::new(Shared {
            progress: Mutex::new(Progress::default()),
            moved: Condvar::new(),
            cancel: AtomicBool::new(false),
        });
        let (sink, state) = (file.try_clone()?, shared.clone());
        std::thread::Builder::new()
            .name("ssefs-get".into())
            .spawn(move || {
                let r = rt.block_on(fill(&*store, &p, &etag, len, &sink, &state));
                let mut g = state.progress.lock().unwrap_or_else(|e| e.into_inner());
                if let Err(e) = r {
                    g.failed = Some(e);
                }
                drop(g);
                state.moved.notify_all();
            })?;
        Ok(Arriving {
            file,
            len,
            ident: (m.dev(), m.ino()),
            shared,
        })
    }
}

/// The GET itself; each piece written where it goes and announced.
async fn fill(
    store: &dyn ObjectStore,
    p: &StorePath,
    etag: &str,
    len: u64,
    sink: &File,
    state: &Shared,
) -> Result<(), String> {
    let opts = GetOptions {
        // Only the version found: a newer one fails the GET, never mixes.
        if_match: Some(etag.to_owned()),
        ..GetOptions::default()
    };
    let mut body = store
        .get_opts(p, opts)
        .await
        .map_err(|e| format!("reading from the store: {e}"))?
        .into_stream();
    let mut off = 0u64;
    while let Some(b) = body
        .try_next()
        .await
        .map_err(|e| format!("reading from the store: {e}"))?
    {
        if state.cancel.load(Ordering::Relaxed) {
            return Ok(());
        }
        sink.write_all_at(&b, off)
            .map_err(|e| format!("staging file: {e}"))?;
        off += b.len() as u64;
        state
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ready = off;
        state.moved.notify_all();
    }
    if off != len {
        return Err(format!("the store sent {off} bytes of {len}"));
    }
    Ok(())
}

impl Drop for Arriving {
    fn drop(&mut self) {
        // Nobody reads on: the download stops at its next piece.
        self.shared.cancel.store(true, Ordering::Relaxed);
    }
}

impl SlotIo for Arriving {
    fn read_slots(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let want = off.saturating_add(buf.len() as u64).min(self.len);
        let mut g = self
            .shared
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while g.ready < want && g.failed.is_none() {
            g = self.shared.moved.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(e) = &g.failed {
            return Err(io::Error::other(e.clone()));
        }
        drop(g);
        self.file.read_at(buf, off)
    }

    fn write_slots(&self, _buf: &[u8], _off: u64) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::PermissionDenied))
    }

    fn truncate_to(&self, _len: u64) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::PermissionDenied))
    }

    fn len_and_ident(&self) -> io::Result<(u64, (u64, u64))> {
        Ok((self.len, self.ident))
    }

    fn sync_slots(&self, _data_only: bool) -> io::Result<()> {
        Ok(())
    }
}
