//! A bounded LRU cache of decrypted chunks, shared by every open object of a
//! mount. Keys are (object id, backend file, chunk index): a new upload
//! draws a new object id, so entries of an object's previous version can
//! never be hit again; and two backend files holding the same object id (a
//! copy made on the backend, or another object's header put on a file)
//! never see each other's chunks. Writers keep it coherent: every chunk
//! sealed is also put here.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::format::CHUNK_SIZE;

/// Whose chunks: the object id and the backend file's (device, inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    pub object_id: [u8; 16],
    pub dev: u64,
    pub ino: u64,
}

type Key = (Owner, u64);

pub struct ChunkCache {
    inner: Mutex<LruCache<Key, Arc<Vec<u8>>>>,
}

impl ChunkCache {
    /// A cache holding about `bytes` of plaintext (at least one chunk).
    pub fn new(bytes: usize) -> ChunkCache {
        let n = NonZeroUsize::new((bytes / CHUNK_SIZE).max(1)).unwrap_or(NonZeroUsize::MIN);
        ChunkCache {
            inner: Mutex::new(LruCache::new(n)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Key, Arc<Vec<u8>>>> {
        // Entries are whole values; a panic mid-update cannot tear one.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, object: &Owner, index: u64) -> Option<Arc<Vec<u8>>> {
        self.lock().get(&(*object, index)).cloned()
    }

    pub fn put(&self, object: &Owner, index: u64, plain: Vec<u8>) {
        self.lock().put((*object, index), Arc::new(plain));
    }

    /// Drops chunk `index` of `object`, if held.
    pub fn remove(&self, object: &Owner, index: u64) {
        self.lock().pop(&(*object, index));
    }

    /// Drops every chunk of `object` from `first` on (after a truncation).
    pub fn remove_from(&self, object: &Owner, first: u64) {
        let mut c = self.lock();
        let stale: Vec<Key> = c
            .iter()
            .filter(|((o, i), _)| o == object && *i >= first)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            c.pop(&k);
        }
    }
}
