//! Random-access reads and writes on one object's backend file: only the
//! chunks a request touches are read, opened, sealed and written.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::cache::{ChunkCache, Owner};
use crate::crypto::SecretKey;
use crate::error::{Error, IoContext, Result};
use crate::format::{ChunkKeys, ChunkSize, Header, Method, Sealer, HEADER_LEN};
use crate::kms::Kms;

/// The CMK of an open SSE-KMS object, checked again before every read and
/// write: the data key was unwrapped at open, and the key may have been
/// disabled since.
struct KeyCheck {
    kms: Arc<Kms>,
    /// The keystore epoch at which the key was last found usable.
    epoch: AtomicU64,
}

/// An open object: its backend file, parsed header and chunk keys.
/// Reads take `&self` (positional reads, safe to share); writes take
/// `&mut self`, so callers serialise them (the FUSE layer holds a lock per
/// inode).
pub struct ObjectFile {
    file: File,
    header: Header,
    /// The data key's AEAD (narrow slots) or K_R derivation (wide, §4.1).
    keys: ChunkKeys,
    /// The header's chunk size and slot format, checked against the
    /// bucket's at open.
    chunk: ChunkSize,
    size: u64,
    /// The file length is one no valid object has (§3.2): reads reaching
    /// `size` fail.
    damaged: bool,
    /// Shown in errors and logs: the bucket/key or backend path.
    name: String,
    /// This object's chunks in the cache.
    owner: Owner,
    cache: Option<Arc<ChunkCache>>,
    key_check: Option<KeyCheck>,
}

thread_local! {
    /// Sealed slots read by `read_at`, reused by each worker thread: a
    /// 1 MiB read then costs no allocation, page faults or zeroing.
    static SLOT_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl ObjectFile {
    /// Wraps an open backend file whose header has been parsed and whose data
    /// key has been unwrapped. The size comes from the file length (§3.2); a
    /// length no valid object has is rounded down to whole chunks, and any
    /// read that reaches the end then fails, so a damaged tail is never
    /// taken for the end of the object (the intact chunks before it stay
    /// readable). With no whole chunk at all there is nothing to read: the
    /// open fails.
    pub fn new(file: File, header: Header, data_key: &SecretKey, name: String) -> Result<Self> {
        let meta = file.metadata().ctx(&name)?;
        Self::with_stat(file, header, data_key, name, &meta, meta.len())
    }

    /// `new` with the backend file's stat in hand and its length `len`.
    fn with_stat(
        file: File,
        header: Header,
        data_key: &SecretKey,
        name: String,
        meta: &std::fs::Metadata,
        len: u64,
    ) -> Result<Self> {
        let keys = ChunkKeys::new(header.cipher, header.chunk, data_key).map_err(|_| {
            Error::integrity("data key does not fit the header's cipher").resource(&name)
        })?;
        let owner = Owner {
            object_id: header.object_id,
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let chunk = header.chunk;
        let (size, damaged) = chunk.shown_len(len);
        if damaged && size == 0 {
            // The kernel never reads a file whose size is 0, so only the
            // open can say it is not the empty object it would look like.
            return Err(Error::integrity(format!(
                "the backend file is {len} bytes long, which no object is"
            ))
            .resource(&name));
        }
        Ok(ObjectFile {
            file,
            header,
            keys,
            chunk,
            size,
            damaged,
            name,
            owner,
            cache: None,
            key_check: None,
        })
    }

    /// Uses `cache` for decrypted chunks.
    pub fn with_cache(mut self, cache: Option<Arc<ChunkCache>>) -> Self {
        self.cache = cache;
        self
    }

    /// Re-checks the CMK's state before each read and write (SSE-KMS only).
    pub fn with_key_check(mut self, kms: Arc<Kms>) -> Self {
        if self.header.method == Method::Kms {
            self.key_check = Some(KeyCheck {
                kms,
                epoch: AtomicU64::new(0),
            });
        }
        self
    }

    /// Fails (EKEYREVOKED, ENOKEY) when the object's CMK is no longer
    /// usable. Runs before the cache is consulted, so cached plaintext does
    /// not outlive the key.
    fn check_key(&self) -> Result<()> {
        let Some(k) = &self.key_check else {
            return Ok(());
        };
        let known = k.epoch.load(Ordering::Relaxed);
        let now = k
            .kms
            .check_cmk_usable(&self.header.key_id, known)
            .map_err(|e| e.resource(&self.name))?;
        k.epoch.store(now, Ordering::Relaxed);
        Ok(())
    }

    fn cached(&self, index: u64) -> Option<Arc<Vec<u8>>> {
        self.cache.as_ref()?.get(&self.owner, index)
    }

    fn remember(&self, index: u64, plain: &[u8]) {
        if let Some(c) = &self.cache {
            c.put(&self.owner, index, plain.to_vec());
        }
    }

    /// Seals `plain` as chunk `index` with `sealer` (one per write call),
    /// appends the slot to `out`, and keeps the cache coherent.
    fn seal(
        &self,
        sealer: &mut Sealer<'_>,
        index: u64,
        last: bool,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.seal_only(sealer, index, last, plain, out)?;
        self.remember(index, plain);
        Ok(())
    }

    /// `seal` for a chunk not worth keeping: any cached copy is dropped.
    fn seal_uncached(
        &self,
        sealer: &mut Sealer<'_>,
        index: u64,
        last: bool,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        self.seal_only(sealer, index, last, plain, out)?;
        if let Some(c) = &self.cache {
            c.remove(&self.owner, index);
        }
        Ok(())
    }

    fn seal_only(
        &self,
        sealer: &mut Sealer<'_>,
        index: u64,
        last: bool,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        sealer
            .seal(&self.header.object_id, index, last, plain, out)
            .map_err(|_| {
                Error::integrity("data key does not fit the header's cipher").resource(&self.name)
            })
    }

    /// Writes `header` at offset 0 of an empty or to-be-replaced file and
    /// truncates it to an empty object.
    pub fn create(file: File, header: Header, data_key: &SecretKey, name: String) -> Result<Self> {
        // Truncate first: a crash before the header lands leaves an empty
        // file (an empty object), never a new header over old chunks. A new
        // file is already empty, and a stat is cheaper than a truncation.
        let meta = file.metadata().ctx(&name)?;
        if meta.len() != 0 {
            file.set_len(0).ctx(&name)?;
        }
        file.write_all_at(&header.encode(), 0).ctx(&name)?;
        Self::with_stat(file, header, data_key, name, &meta, HEADER_LEN as u64)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    fn last_index(&self) -> Option<u64> {
        self.chunk.chunk_count(self.size).checked_sub(1)
    }

    fn integrity_err(&self, index: u64) -> Error {
        Error::integrity(format!("chunk {index} failed authentication")).resource(&self.name)
    }

    /// Reads the sealed slots of chunks `first..=last` in one positional read.
    fn read_slots(&self, first: u64, last: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let n = self.read_slots_into(first, last, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Reads the sealed slots of chunks `first..=last` into the front of
    /// `buf` (grown as needed, never shrunk, so a reused buffer is neither
    /// reallocated nor zeroed again) and returns their length.
    fn read_slots_into(&self, first: u64, last: u64, buf: &mut Vec<u8>) -> Result<usize> {
        let start = self.chunk.slot_offset(first);
        let end = self
            .chunk
            .slot_offset(last + 1)
            .min(self.chunk.backend_len(self.size));
        let len = (end - start) as usize;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let mut done = 0;
        while done < len {
            let n = self
                .file
                .read_at(&mut buf[done..len], start + done as u64)
                .ctx(&self.name)?;
            if n == 0 {
                // The file is shorter than its own length said a moment ago:
                // truncated underneath us.
                return Err(self.integrity_err(first + (done / self.chunk.slot()) as u64));
            }
            done += n;
        }
        Ok(len)
    }

    /// Opens one chunk's plaintext (of its current length).
    fn load_chunk(&self, index: u64) -> Result<Vec<u8>> {
        if let Some(c) = self.cached(index) {
            return Ok(c.as_ref().clone());
        }
        let mut slot = self.read_slots(index, index)?;
        let last = Some(index) == self.last_index();
        let plain = self
            .keys
            .open(&self.header.object_id, index, last, &mut slot)
            .map_err(|_| self.integrity_err(index))?;
        self.remember(index, plain);
        Ok(plain.to_vec())
    }

    /// Reads up to `buf.len()` bytes at `off`; returns how many were read
    /// (short only at the end of the object). Chunks in the cache are not
    /// read again; the others are read in one positional read and opened.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<usize> {
        self.check_key()?;
        if off >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let end = (off + buf.len() as u64).min(self.size);
        if self.damaged && end == self.size {
            return Err(Error::integrity(
                "the backend file's length is one no object has: its tail is damaged",
            )
            .resource(&self.name));
        }
        let c = self.chunk;
        let first = c.index_of(off);
        let last = c.index_of(end - 1);
        let hits: Vec<Option<Arc<Vec<u8>>>> = (first..=last).map(|i| self.cached(i)).collect();
        let misses: Vec<u64> = (first..=last)
            .filter(|i| hits[(i - first) as usize].is_none())
            .collect();
        SLOT_SCRATCH.with_borrow_mut(|scratch| {
            // (first missing chunk, length of its slots read into scratch)
            let slots = match (misses.first(), misses.last()) {
                (Some(&lo), Some(&hi)) => Some((lo, self.read_slots_into(lo, hi, scratch)?)),
                _ => None,
            };
            let object_last = self.last_index();
            let mut out = 0usize;
            for index in first..=last {
                let chunk_start = c.start_of(index);
                let opened;
                let (plain, cached): (&[u8], bool) = match &hits[(index - first) as usize] {
                    Some(c) => (c, true),
                    None => {
                        let (lo, len) = slots.ok_or_else(|| self.integrity_err(index))?;
                        let at = (index - lo) as usize * c.slot();
                        let slot = &mut scratch[at..(at + c.slot()).min(len)];
                        opened = self
                            .keys
                            .open(
                                &self.header.object_id,
                                index,
                                Some(index) == object_last,
                                slot,
                            )
                            .map_err(|_| self.integrity_err(index))?;
                        (opened, false)
                    }
                };
                let from = (off.max(chunk_start) - chunk_start) as usize;
                let to = (end.min(chunk_start + plain.len() as u64) - chunk_start) as usize;
                // Keep a chunk only when this read takes part of it: the rest
                // is likely read (or rewritten) next. Whole chunks live on in
                // the kernel's page cache; copying them into ours too would
                // cost more than it saves on sequential reads.
                if !cached && (from > 0 || to < plain.len()) {
                    self.remember(index, plain);
                }
                buf[out..out + (to - from)].copy_from_slice(&plain[from..to]);
                out += to - from;
            }
            Ok(out)
        })
    }

    /// Writes `data` at `off`, growing the object if needed. Touches only the
    /// chunks in the range, plus the old last chunk when the object grows
    /// past it (it is sealed again as a full, non-last chunk). Chunks skipped
    /// over by a write past the end stay holes.
    pub fn write_at(&mut self, off: u64, data: &[u8]) -> Result<()> {
        self.check_key()?;
        if data.is_empty() {
            return Ok(());
        }
        let end = off
            .checked_add(data.len() as u64)
            .ok_or_else(|| Error::io(&self.name, std::io::Error::from_raw_os_error(libc::EFBIG)))?;
        let old_size = self.size;
        let new_size = old_size.max(end);
        let old_last = self.last_index();
        let c = self.chunk;
        let new_last = c.index_of(new_size - 1);
        let first = c.index_of(off);
        let last_w = c.index_of(end - 1);

        let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
        // One R for the chunks of this write (wide slots, §4.1).
        let mut sealer = self.keys.sealer();
        // A write that grows the object rewrites its old last chunk: kept,
        // to be restored if the write fails. When the chunk stops being
        // last, it is sealed again, padded to a full chunk, unless the write
        // itself rewrites it below.
        let old_last_plain = match old_last {
            Some(ol) if new_size > old_size => Some((ol, self.load_chunk(ol)?)),
            _ => None,
        };
        if let Some((ol, plain)) = &old_last_plain {
            if new_last > *ol && *ol < first {
                let mut plain = plain.clone();
                plain.resize(c.bytes(), 0);
                let mut slot = Vec::with_capacity(c.slot());
                self.seal(&mut sealer, *ol, false, &plain, &mut slot)?;
                runs.push((*ol, slot));
            }
        }

        let mut sealed = Vec::with_capacity(((last_w - first + 1) as usize) * c.slot());
        let mut scratch = Vec::with_capacity(c.bytes());
        for index in first..=last_w {
            let chunk_start = c.start_of(index);
            let len = c.chunk_len(new_size, index);
            let from = off.max(chunk_start);
            let to = end.min(chunk_start + len as u64);
            let piece = &data[(from - off) as usize..(to - off) as usize];
            let is_last = index == new_last;
            if from == chunk_start && piece.len() == len {
                // Whole chunk overwritten: nothing to read. A full chunk
                // stays in the kernel's page cache, so ours drops it rather
                // than copy it (a sequential write would otherwise fill the
                // whole cache); a short last chunk is kept for the append
                // that is likely to follow.
                if len == c.bytes() {
                    self.seal_uncached(&mut sealer, index, is_last, piece, &mut sealed)?;
                } else {
                    self.seal(&mut sealer, index, is_last, piece, &mut sealed)?;
                }
                continue;
            }
            scratch.clear();
            match &old_last_plain {
                Some((ol, plain)) if *ol == index => scratch.extend_from_slice(plain),
                _ if chunk_start < old_size => scratch.extend_from_slice(&self.load_chunk(index)?),
                _ => {}
            }
            scratch.resize(len, 0);
            let at = (from - chunk_start) as usize;
            scratch[at..at + piece.len()].copy_from_slice(piece);
            self.seal(&mut sealer, index, is_last, &scratch, &mut sealed)?;
        }
        runs.push((first, sealed));

        let written = runs
            .iter()
            .try_for_each(|(index, bytes)| self.file.write_all_at(bytes, c.slot_offset(*index)));
        if let Err(e) = written {
            let from = old_last.map_or(first, |ol| ol.min(first));
            self.undo_write(old_size, from, old_last_plain);
            return Err(e).ctx(&self.name);
        }
        // Growing writes a whole last slot over any damaged tail.
        self.damaged &= new_size == old_size;
        self.size = new_size;
        Ok(())
    }

    /// After a write failed part way (a full disk): cuts the file back to
    /// the old size and seals the old last chunk as last again, so the
    /// object reads as before rather than failing authentication; chunks
    /// inside the old size may hold the new data. Drops the cached chunks
    /// from `from` on, which the write sealed but may not have stored.
    fn undo_write(&self, old_size: u64, from: u64, old_last: Option<(u64, Vec<u8>)>) {
        if let Some(c) = &self.cache {
            c.remove_from(&self.owner, from);
        }
        // Shrinking and rewriting allocated blocks need no free space.
        let _ = self.file.set_len(self.chunk.backend_len(old_size));
        if let Some((ol, plain)) = old_last {
            let mut slot = Vec::with_capacity(self.chunk.slot());
            let sealed =
                self.keys
                    .sealer()
                    .seal(&self.header.object_id, ol, true, &plain, &mut slot);
            if sealed.is_ok() {
                let _ = self.file.write_all_at(&slot, self.chunk.slot_offset(ol));
            }
        }
    }

    /// Sets the object's size. Shrinking seals the new last chunk again (cut,
    /// marked last) and then cuts the file; growing is a write of one zero
    /// byte at the new end, which leaves the chunks in between as holes.
    pub fn set_len(&mut self, new_size: u64) -> Result<()> {
        self.check_key()?;
        let old_size = self.size;
        if new_size == old_size {
            return Ok(());
        }
        if new_size > old_size {
            return self.write_at(new_size - 1, &[0]);
        }
        if new_size > 0 {
            let c = self.chunk;
            let k = c.index_of(new_size - 1);
            let mut plain = self.load_chunk(k)?;
            plain.truncate(c.chunk_len(new_size, k));
            let mut slot = Vec::with_capacity(c.slot());
            self.seal(&mut self.keys.sealer(), k, true, &plain, &mut slot)?;
            self.file
                .write_all_at(&slot, c.slot_offset(k))
                .ctx(&self.name)?;
        }
        self.file
            .set_len(self.chunk.backend_len(new_size))
            .ctx(&self.name)?;
        // Chunks past the new end become holes if the object grows again.
        if let Some(c) = &self.cache {
            c.remove_from(&self.owner, self.chunk.chunk_count(new_size));
        }
        self.damaged = false;
        self.size = new_size;
        Ok(())
    }

    /// fsync (or fdatasync) the backend file.
    pub fn sync(&self, data_only: bool) -> Result<()> {
        if data_only {
            self.file.sync_data().ctx(&self.name)
        } else {
            self.file.sync_all().ctx(&self.name)
        }
    }

    /// Authenticates every chunk (for `ssefs verify` and copies).
    pub fn verify(&self) -> Result<()> {
        // 1 MiB, a multiple of every chunk size.
        let mut buf = vec![0u8; 16 * ChunkSize::MAX_BYTES];
        let mut off = 0;
        while off < self.size {
            let n = self.read_at(off, &mut buf)?;
            off += n as u64;
        }
        Ok(())
    }
}
