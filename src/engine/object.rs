//! Random-access reads and writes on one object's backend file: only the
//! chunks a request touches are read, opened, sealed and written.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::cache::{ChunkCache, Owner};
pub use crate::backend::SlotIo;
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

/// An open object: its backend file (or other [`SlotIo`]), parsed header
/// and chunk keys. Reads take `&self` (positional reads, safe to share);
/// writes take `&mut self`, so callers serialise them (the FUSE layer
/// holds a lock per inode).
pub struct ObjectFile<F: SlotIo = File> {
    file: F,
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
    /// Where the last read ended (plaintext offset), to tell a sequential
    /// stream from random reads.
    read_end: AtomicU64,
    /// The backend offset up to which the kernel was asked to read ahead.
    prefetched: AtomicU64,
}

/// A sequential read of an object has the kernel read the backend file this
/// far beyond it (in plaintext bytes), so the disk works ahead of the
/// worker threads that decrypt: each 1 MiB request of the FUSE readahead
/// then finds its slots in the page cache instead of waiting for the disk.
/// Only ciphertext is fetched ahead: every read still opens, and so
/// authenticates, each chunk it returns, and writes go through the same
/// page cache, so nothing fetched ahead can be stale.
pub const PREFETCH_AHEAD: u64 = 16 << 20;

/// The backend readahead is asked for in steps of at least this much, so a
/// stream of reads costs one fadvise per step, not one per read.
const PREFETCH_STEP: u64 = 4 << 20;

/// Reads this large are part of a stream the kernel reads ahead (its
/// readahead requests are 128 KiB to 1 MiB); smaller ones, e.g. 4 KiB
/// random reads, never start a backend prefetch.
const PREFETCH_MIN_READ: usize = 128 << 10;

thread_local! {
    /// Sealed slots read by `read_at` and `read_with`, reused by each
    /// worker thread: a 1 MiB read then costs no allocation, page faults
    /// or zeroing.
    static SLOT_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Plaintext of `read_with` when part of the range is in the cache.
    static PLAIN_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Slots sealed by `write_at`, reused likewise: with the allocator's
    /// mmap threshold at 128 KiB (fuse::limit_malloc_growth) a fresh 1 MiB
    /// buffer per write cost 256 page faults and the zeroing of each page.
    static SEAL_SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `SEAL_SCRATCH` is dropped after a write that needed more than this
/// (the largest FUSE write is 1 MiB of data).
const SEAL_SCRATCH_KEEP: usize = 2 << 20;

/// A write seals its whole chunks on several threads only when each part
/// gets at least this much: below it, starting a thread costs more than it
/// saves.
const PAR_SEAL_MIN: usize = 256 << 10;

/// Threads sealing one write: the CPUs there are, up to 4.
fn seal_threads() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4)
    })
}

impl<F: SlotIo> ObjectFile<F> {
    /// Wraps an open backend file whose header has been parsed and whose data
    /// key has been unwrapped. The size comes from the file length (§3.2); a
    /// length no valid object has is rounded down to whole chunks, and any
    /// read that reaches the end then fails, so a damaged tail is never
    /// taken for the end of the object (the intact chunks before it stay
    /// readable). With no whole chunk at all there is nothing to read: the
    /// open fails.
    pub fn new(file: F, header: Header, data_key: &SecretKey, name: String) -> Result<Self> {
        let (len, ident) = file.len_and_ident().ctx(&name)?;
        Self::with_stat(file, header, data_key, name, ident, len)
    }

    /// `new` with the backend file's identity in hand and its length `len`.
    fn with_stat(
        file: F,
        header: Header,
        data_key: &SecretKey,
        name: String,
        (dev, ino): (u64, u64),
        len: u64,
    ) -> Result<Self> {
        let keys = ChunkKeys::new(header.cipher, header.chunk, data_key).map_err(|_| {
            Error::integrity("data key does not fit the header's cipher").resource(&name)
        })?;
        let owner = Owner {
            object_id: header.object_id,
            dev,
            ino,
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
            read_end: AtomicU64::new(u64::MAX),
            prefetched: AtomicU64::new(0),
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
    pub fn create(file: F, header: Header, data_key: &SecretKey, name: String) -> Result<Self> {
        // Truncate first: a crash before the header lands leaves an empty
        // file (an empty object), never a new header over old chunks. A new
        // file is already empty, and a stat is cheaper than a truncation.
        let (len, ident) = file.len_and_ident().ctx(&name)?;
        if len != 0 {
            file.truncate_to(0).ctx(&name)?;
        }
        file.write_slots(&header.encode(), 0).ctx(&name)?;
        Self::with_stat(file, header, data_key, name, ident, HEADER_LEN as u64)
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

    pub fn file(&self) -> &F {
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
                .read_slots(&mut buf[done..len], start + done as u64)
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

    /// Where a read of `len` bytes at `off` ends (short at the end of the
    /// object), or None when it reads nothing. Checks first that the key
    /// is usable and that the range does not reach a damaged tail.
    fn read_end(&self, off: u64, len: usize) -> Result<Option<u64>> {
        self.check_key()?;
        if off >= self.size || len == 0 {
            return Ok(None);
        }
        let end = (off + len as u64).min(self.size);
        if self.damaged && end == self.size {
            return Err(Error::integrity(
                "the backend file's length is one no object has: its tail is damaged",
            )
            .resource(&self.name));
        }
        Ok(Some(end))
    }

    /// Reads up to `buf.len()` bytes at `off`; returns how many were read
    /// (short only at the end of the object). Chunks in the cache are not
    /// read again; the others are read in one positional read and opened.
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<usize> {
        let Some(end) = self.read_end(off, buf.len())? else {
            return Ok(0);
        };
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

    /// Reads up to `len` bytes at `off` and hands them to `f` (a FUSE
    /// reply); returns what `f` returns. The bytes are short only at the
    /// end of the object. When no chunk of the range is in the cache (a
    /// cold sequential read) the slots are read in one positional read and
    /// each is opened straight to its place in the plaintext (no copy after
    /// decryption); otherwise this is `read_at` into a buffer of the
    /// thread's. Either way every chunk is authenticated before any byte
    /// of the range reaches `f`.
    pub fn read_with<R>(&self, off: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        let Some(end) = self.read_end(off, len)? else {
            return Ok(f(&[]));
        };
        let c = self.chunk;
        let first = c.index_of(off);
        let last = c.index_of(end - 1);
        self.prefetch(off, end, len);
        if let Some(cache) = &self.cache {
            if (first..=last).any(|i| cache.holds(&self.owner, i)) {
                return PLAIN_SCRATCH.with_borrow_mut(|buf| {
                    let want = (end - off) as usize;
                    if buf.len() < want {
                        buf.resize(want, 0);
                    }
                    let n = self.read_at(off, &mut buf[..want])?;
                    Ok(f(&buf[..n]))
                });
            }
        }
        SLOT_SCRATCH.with_borrow_mut(|scratch| {
            let n = self.read_slots_into(first, last, scratch)?;
            let object_last = self.last_index();
            let base = c.start_of(first);
            let mut plain_end = 0usize;
            for index in first..=last {
                let k = (index - first) as usize;
                let at = k * c.slot();
                let dest = k * c.bytes();
                let slot_end = (at + c.slot()).min(n);
                if at >= slot_end {
                    return Err(self.integrity_err(index));
                }
                let got = self
                    .keys
                    .open_shifted(
                        &self.header.object_id,
                        index,
                        Some(index) == object_last,
                        &mut scratch[dest..slot_end],
                        at - dest,
                    )
                    .map_err(|_| self.integrity_err(index))?;
                // As in `read_at`: keep a chunk only when this read takes
                // part of it.
                let chunk_start = c.start_of(index);
                if (index == first && off > chunk_start)
                    || (index == last && end < chunk_start + got as u64)
                {
                    self.remember(index, &scratch[dest..dest + got]);
                }
                plain_end = dest + got;
            }
            let from = (off - base) as usize;
            let to = (end - base) as usize;
            if to > plain_end {
                return Err(self.integrity_err(last));
            }
            Ok(f(&scratch[from..to]))
        })
    }

    /// The backend offset the prefetch has reached (tests).
    #[cfg(test)]
    pub(crate) fn prefetched_to(&self) -> u64 {
        self.prefetched.load(Ordering::Relaxed)
    }

    /// Asks the kernel to read the backend file ahead of a sequential
    /// stream of reads (see `PREFETCH_AHEAD`). Reads that are small or far
    /// from where the last one ended start nothing. Concurrent readers of
    /// one object may each issue a step; the kernel skips pages it holds.
    fn prefetch(&self, off: u64, end: u64, len: usize) {
        let prev = self.read_end.swap(end, Ordering::Relaxed);
        if len < PREFETCH_MIN_READ || prev == u64::MAX || off.abs_diff(prev) > PREFETCH_AHEAD {
            return;
        }
        let c = self.chunk;
        let backend_end = c.backend_len(self.size);
        let from = c.slot_offset(c.index_of(end)).min(backend_end);
        let to = c
            .slot_offset(c.index_of(end.saturating_add(PREFETCH_AHEAD)))
            .min(backend_end);
        let done = self.prefetched.load(Ordering::Relaxed);
        // Behind the stream, or far ahead of it (it went back): start anew.
        let start = if done < from || done > to { from } else { done };
        if to <= start || (to - start < PREFETCH_STEP && to < backend_end) {
            return;
        }
        if self
            .prefetched
            .compare_exchange(done, to, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.file.will_need(start, to - start);
        }
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
        let first = self.chunk.index_of(off);

        // A write that grows the object rewrites its old last chunk: kept,
        // to be restored if the write fails. When the chunk stops being
        // last, it is sealed again, padded to a full chunk, unless the write
        // itself rewrites it below.
        let old_last_plain = match old_last {
            Some(ol) if new_size > old_size => Some((ol, self.load_chunk(ol)?)),
            _ => None,
        };
        let written = SEAL_SCRATCH.with_borrow_mut(|sealed| {
            let r = self.seal_write(off, data, new_size, &old_last_plain, sealed);
            if sealed.len() > SEAL_SCRATCH_KEEP {
                // One large copy_file_range must not pin its buffer.
                *sealed = Vec::new();
            }
            r
        });
        if let Err(e) = written {
            let from = old_last.map_or(first, |ol| ol.min(first));
            self.undo_write(old_size, from, old_last_plain);
            return Err(e);
        }
        // Growing writes a whole last slot over any damaged tail.
        self.damaged &= new_size == old_size;
        self.size = new_size;
        Ok(())
    }

    /// `write_at`'s sealing and writing: the slots of the chunks
    /// `index_of(off)..` the write touches (and the old last chunk, when it
    /// stops being last) are sealed into `sealed` and written with one
    /// positional write per run of adjacent slots. Whole chunks are sealed
    /// on several threads when there are enough of them (`PAR_SEAL_MIN`).
    fn seal_write(
        &self,
        off: u64,
        data: &[u8],
        new_size: u64,
        old_last_plain: &Option<(u64, Vec<u8>)>,
        sealed: &mut Vec<u8>,
    ) -> Result<()> {
        let c = self.chunk;
        let end = off + data.len() as u64;
        let old_size = self.size;
        let new_last = c.index_of(new_size - 1);
        let first = c.index_of(off);
        let last_w = c.index_of(end - 1);
        let overhead = c.slot() - c.bytes();
        // The slots from `run_from` on go to `sealed` back to back.
        let mut run_from = first;
        let mut used = 0usize;
        let mut lone: Option<(u64, Vec<u8>)> = None;
        let need = ((last_w - first + 2) as usize) * c.slot();
        if sealed.len() < need {
            sealed.resize(need, 0);
        }
        // One R for the chunks sealed on this thread (wide slots, §4.1).
        let mut sealer = self.keys.sealer();
        if let Some((ol, plain)) = old_last_plain {
            if new_last > *ol && *ol < first {
                let mut plain = plain.clone();
                plain.resize(c.bytes(), 0);
                if *ol + 1 == first {
                    // Appending: its slot goes in front of the run.
                    self.seal_into(&mut sealer, *ol, false, &plain, &mut sealed[..c.slot()])?;
                    self.remember(*ol, &plain);
                    run_from = *ol;
                    used = c.slot();
                } else {
                    let mut slot = Vec::with_capacity(c.slot());
                    self.seal(&mut sealer, *ol, false, &plain, &mut slot)?;
                    lone = Some((*ol, slot));
                }
            }
        }
        // A partial chunk: its old plaintext (or zeros) with the piece
        // written over it.
        let partial = |index: u64,
                       used: &mut usize,
                       sealer: &mut Sealer<'_>,
                       sealed: &mut [u8]|
         -> Result<()> {
            let chunk_start = c.start_of(index);
            let len = c.chunk_len(new_size, index);
            let from = off.max(chunk_start);
            let to = end.min(chunk_start + len as u64);
            let piece = &data[(from - off) as usize..(to - off) as usize];
            let mut scratch = match old_last_plain {
                Some((ol, plain)) if *ol == index => plain.clone(),
                _ if chunk_start < old_size => self.load_chunk(index)?,
                _ => Vec::new(),
            };
            scratch.resize(len, 0);
            let at = (from - chunk_start) as usize;
            scratch[at..at + piece.len()].copy_from_slice(piece);
            let out = &mut sealed[*used..*used + len + overhead];
            self.seal_into(sealer, index, index == new_last, &scratch, out)?;
            self.remember(index, &scratch);
            *used += len + overhead;
            Ok(())
        };
        let whole = |index: u64| {
            let chunk_start = c.start_of(index);
            let len = c.chunk_len(new_size, index);
            off <= chunk_start && end >= chunk_start + len as u64
        };
        let mut lo = first;
        let mut hi = last_w;
        if !whole(first) {
            partial(first, &mut used, &mut sealer, sealed)?;
            lo = first + 1;
        }
        if hi >= lo && !whole(hi) {
            hi -= 1;
        }
        if hi >= lo {
            // Chunks lo..=hi are overwritten whole: nothing to read.
            let bytes = (c.start_of(hi) + c.chunk_len(new_size, hi) as u64) - c.start_of(lo);
            let slots = (bytes as usize) + (hi - lo + 1) as usize * overhead;
            let out = &mut sealed[used..used + slots];
            let plain = &data[(c.start_of(lo) - off) as usize..][..bytes as usize];
            self.seal_whole(&mut sealer, lo, new_last, plain, out)?;
            used += slots;
        }
        if last_w > first && !whole(last_w) {
            partial(last_w, &mut used, &mut sealer, sealed)?;
        }
        if let Some((ol, slot)) = &lone {
            self.file
                .write_slots(slot, c.slot_offset(*ol))
                .ctx(&self.name)?;
        }
        self.file
            .write_slots(&sealed[..used], c.slot_offset(run_from))
            .ctx(&self.name)
    }

    /// Seals the whole chunks `lo..` holding `plain` into `out`, their slots
    /// back to back. A full chunk that is not the last stays in the
    /// kernel's page cache, so ours drops it rather than copy it (a
    /// sequential write would otherwise fill the whole cache); the last
    /// chunk is kept for the append that is likely to follow. Large runs
    /// are cut in parts sealed on their own threads, each part under its
    /// own R (wide slots): as §4.1 allows, R is per sealer, and a write
    /// may draw several.
    fn seal_whole(
        &self,
        sealer: &mut Sealer<'_>,
        lo: u64,
        new_last: u64,
        plain: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        let c = self.chunk;
        let seal_part = |sealer: &mut Sealer<'_>, lo: u64, plain: &[u8], out: &mut [u8]| {
            let mut at = 0usize;
            for (k, piece) in plain.chunks(c.bytes()).enumerate() {
                let index = lo + k as u64;
                let is_last = index == new_last;
                let n = piece.len() + c.slot() - c.bytes();
                self.seal_into(sealer, index, is_last, piece, &mut out[at..at + n])?;
                if piece.len() == c.bytes() && !is_last {
                    if let Some(cache) = &self.cache {
                        cache.remove(&self.owner, index);
                    }
                } else {
                    self.remember(index, piece);
                }
                at += n;
            }
            Ok(())
        };
        let parts = seal_threads().min(plain.len() / PAR_SEAL_MIN).max(1);
        if parts == 1 {
            return seal_part(sealer, lo, plain, out);
        }
        // Whole chunks per part; the last part takes the rest.
        let per = plain.len().div_ceil(c.bytes()).div_ceil(parts);
        std::thread::scope(|s| {
            let mut handles = Vec::new();
            let (mut plain, mut out, mut index) = (plain, out, lo);
            let mut mine = None;
            for p in 0..parts {
                let take = if p + 1 == parts {
                    plain.len()
                } else {
                    (per * c.bytes()).min(plain.len())
                };
                let (pp, prest) = plain.split_at(take);
                let slots = take + take.div_ceil(c.bytes()) * (c.slot() - c.bytes());
                let (po, orest) = std::mem::take(&mut out).split_at_mut(slots);
                let at = index;
                if p == 0 {
                    mine = Some((at, pp, po));
                } else {
                    let seal_part = &seal_part;
                    handles.push(s.spawn(move || seal_part(&mut self.keys.sealer(), at, pp, po)));
                }
                plain = prest;
                out = orest;
                index += take.div_ceil(c.bytes()) as u64;
            }
            let mut r = match mine {
                Some((at, pp, po)) => seal_part(sealer, at, pp, po),
                None => Ok(()),
            };
            for h in handles {
                let part = h.join().unwrap_or_else(|_| {
                    Err(Error::integrity("a sealing thread panicked").resource(&self.name))
                });
                r = r.and(part);
            }
            r
        })
    }

    /// `seal` into `out`, which is exactly the slot's length.
    fn seal_into(
        &self,
        sealer: &mut Sealer<'_>,
        index: u64,
        last: bool,
        plain: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        sealer
            .seal_into(&self.header.object_id, index, last, plain, out)
            .map_err(|_| {
                Error::integrity("data key does not fit the header's cipher").resource(&self.name)
            })
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
        let _ = self.file.truncate_to(self.chunk.backend_len(old_size));
        if let Some((ol, plain)) = old_last {
            let mut slot = Vec::with_capacity(self.chunk.slot());
            let sealed =
                self.keys
                    .sealer()
                    .seal(&self.header.object_id, ol, true, &plain, &mut slot);
            if sealed.is_ok() {
                let _ = self.file.write_slots(&slot, self.chunk.slot_offset(ol));
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
                .write_slots(&slot, c.slot_offset(k))
                .ctx(&self.name)?;
        }
        self.file
            .truncate_to(self.chunk.backend_len(new_size))
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
        self.file.sync_slots(data_only).ctx(&self.name)
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
