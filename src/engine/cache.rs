//! A bounded LRU cache of decrypted chunks, shared by every open object of a
//! mount. Keys are (object id, backend file, chunk index): a new upload
//! draws a new object id, so entries of an object's previous version can
//! never be hit again; and two backend files holding the same object id (a
//! copy made on the backend, or another object's header put on a file)
//! never see each other's chunks. Writers keep it coherent: every chunk
//! sealed is also put here.

use std::sync::{Arc, Mutex};

use lru::LruCache;

/// Whose chunks: the object id and the backend file's (device, inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    pub object_id: [u8; 16],
    pub dev: u64,
    pub ino: u64,
}

type Key = (Owner, u64);

/// What an entry costs beyond its plaintext: the key, the LRU's node and
/// hash slot, the `Arc` and the `Vec` with their allocator headers (about
/// 200 bytes, rounded up). Counted so that a tree of tiny objects, whose
/// chunks hold a few bytes each, cannot fill the memory with millions of
/// entries while the plaintext stays under the cap (measured: 250 MiB of
/// daemon RSS at 900k objects of 8 bytes with a 64 MiB cache).
pub(crate) const ENTRY_COST: usize = 256;

fn cost(plain: &[u8]) -> usize {
    plain.len() + ENTRY_COST
}

/// Objects of different chunk sizes share the cache, so it is bounded in
/// bytes (plaintext and each entry's own cost), not in entries.
struct Inner {
    lru: LruCache<Key, Arc<Vec<u8>>>,
    bytes: usize,
}

impl Inner {
    fn pop(&mut self, k: &Key) {
        if let Some(v) = self.lru.pop(k) {
            self.bytes -= cost(&v);
        }
    }
}

pub struct ChunkCache {
    inner: Mutex<Inner>,
    /// At most this many bytes (plaintext and `ENTRY_COST` per entry) are
    /// held, except that the chunk put last is always kept.
    cap: usize,
}

impl ChunkCache {
    /// A cache holding up to `bytes` (see `cap`).
    pub fn new(bytes: usize) -> ChunkCache {
        ChunkCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            cap: bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Entries and the byte count change together under the lock, and
        // nothing in between can panic; a poisoned lock holds no torn state.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes held now: plaintext and `ENTRY_COST` per entry.
    pub fn held_bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn get(&self, object: &Owner, index: u64) -> Option<Arc<Vec<u8>>> {
        self.lock().lru.get(&(*object, index)).cloned()
    }

    /// Whether chunk `index` of `object` is held (without making it the
    /// most recently used).
    pub fn holds(&self, object: &Owner, index: u64) -> bool {
        self.lock().lru.contains(&(*object, index))
    }

    pub fn put(&self, object: &Owner, index: u64, plain: Vec<u8>) {
        let mut c = self.lock();
        c.bytes += cost(&plain);
        if let Some(old) = c.lru.put((*object, index), Arc::new(plain)) {
            c.bytes -= cost(&old);
        }
        while c.bytes > self.cap && c.lru.len() > 1 {
            match c.lru.pop_lru() {
                Some((_, v)) => c.bytes -= cost(&v),
                None => break,
            }
        }
    }

    /// Drops chunk `index` of `object`, if held.
    pub fn remove(&self, object: &Owner, index: u64) {
        self.lock().pop(&(*object, index));
    }

    /// Drops every chunk of `object` from `first` on (after a truncation).
    pub fn remove_from(&self, object: &Owner, first: u64) {
        let mut c = self.lock();
        let stale: Vec<Key> = c
            .lru
            .iter()
            .filter(|((o, i), _)| o == object && *i >= first)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            c.pop(&k);
        }
    }
}
