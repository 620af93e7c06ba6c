//! Sealing and opening chunk slots (§3, §4): narrow ones, nonce ‖
//! ciphertext ‖ tag under the data key, and wide ones, R ‖ N ‖ ciphertext ‖
//! tag under a key derived from the data key and R (§4.1).

use std::sync::{Arc, Mutex};

use crate::crypto::derive::{KeyDeriver, R_LEN};
use crate::crypto::{
    fill_random, tags_equal, Aead, Cipher, IntegrityError, Nonce, SecretKey, NONCE_LEN, TAG_LEN,
};

use super::{ChunkSize, SlotFormat, CHUNK_OVERHEAD, WIDE_OVERHEAD};

/// Bytes before a wide slot's ciphertext: R, then N.
const WIDE_PREFIX: usize = R_LEN + NONCE_LEN;

/// Associated data of chunk `index` (§4): the object id, the index and
/// whether it is the last chunk. Binding the index stops chunks moving within
/// an object, the object id stops them moving between objects, and the last
/// flag makes truncation at a chunk boundary detectable.
pub fn chunk_ad(object_id: &[u8; 16], index: u64, last: bool) -> [u8; 25] {
    let mut ad = [0u8; 25];
    ad[..16].copy_from_slice(object_id);
    ad[16..24].copy_from_slice(&index.to_le_bytes());
    ad[24] = u8::from(last);
    ad
}

/// Seals `plain` as chunk `index` in a narrow slot, under a fresh random
/// nonce, and appends the slot to `out`.
pub fn seal_chunk(
    aead: &Aead,
    object_id: &[u8; 16],
    index: u64,
    last: bool,
    plain: &[u8],
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.resize(start + plain.len() + CHUNK_OVERHEAD, 0);
    // The length is the one seal_chunk_into asks for, just made so: it
    // cannot refuse it.
    let _ = seal_chunk_into(aead, object_id, index, last, plain, &mut out[start..]);
}

/// `seal_chunk` into `out`, which must be exactly the slot's length
/// (`plain.len() + CHUNK_OVERHEAD`).
pub fn seal_chunk_into(
    aead: &Aead,
    object_id: &[u8; 16],
    index: u64,
    last: bool,
    plain: &[u8],
    out: &mut [u8],
) -> Result<(), IntegrityError> {
    if out.len() != plain.len() + CHUNK_OVERHEAD {
        return Err(IntegrityError);
    }
    let nonce = Nonce::random();
    let (head, rest) = out.split_at_mut(NONCE_LEN);
    head.copy_from_slice(&nonce.0);
    let (body, tag_out) = rest.split_at_mut(plain.len());
    body.copy_from_slice(plain);
    let tag = aead.seal(&nonce, &chunk_ad(object_id, index, last), body);
    tag_out.copy_from_slice(&tag);
    Ok(())
}

/// Opens a narrow chunk slot in place and returns its plaintext, a
/// sub-slice of `slot`. An all-zero full slot (of `chunk`'s size) that is
/// not the last chunk is a hole (§3.3) and reads as zeros.
pub fn open_chunk<'a>(
    aead: &Aead,
    chunk: ChunkSize,
    object_id: &[u8; 16],
    index: u64,
    last: bool,
    slot: &'a mut [u8],
) -> Result<&'a [u8], IntegrityError> {
    if slot.len() <= CHUNK_OVERHEAD {
        return Err(IntegrityError);
    }
    // Check the nonce first: a real slot's random nonce is almost never zero,
    // so the full scan only runs on actual holes.
    if !last
        && slot.len() == chunk.slot()
        && slot[..NONCE_LEN].iter().all(|&b| b == 0)
        && slot.iter().all(|&b| b == 0)
    {
        return Ok(&slot[NONCE_LEN..chunk.slot() - TAG_LEN]);
    }
    let (nonce, rest) = slot.split_at_mut(NONCE_LEN);
    let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(nonce);
    let mut t = [0u8; TAG_LEN];
    t.copy_from_slice(tag);
    aead.open(&Nonce(n), &chunk_ad(object_id, index, last), body, &t)?;
    Ok(body)
}

/// How many chunks one write seals under one R before it draws another
/// (§4.1). With random 96-bit N, the chunks sharing an R add at most
/// 2^16 · (their number) / 2^97 to the chance of a repeated (key, nonce);
/// FORMAT.md §4.1 works the bound.
pub const MAX_CHUNKS_PER_R: u64 = 1 << 16;

#[cfg(test)]
thread_local! {
    /// Test hook: a smaller `MAX_CHUNKS_PER_R` for the calling thread
    /// (engine tests set it to watch one write draw several R).
    pub(crate) static TEST_MAX_CHUNKS_PER_R: std::cell::Cell<Option<u64>> =
        const { std::cell::Cell::new(None) };
}

/// `MAX_CHUNKS_PER_R`, or in tests the thread's smaller limit.
pub fn max_chunks_per_r() -> u64 {
    #[cfg(test)]
    if let Some(n) = TEST_MAX_CHUNKS_PER_R.with(|c| c.get()) {
        return n.max(1);
    }
    MAX_CHUNKS_PER_R
}

/// The keys of one object's chunks: the data key's AEAD for narrow slots;
/// for wide slots the derivation of K_R (§4.1) and the last K_R used, so
/// that sequential reads derive once per run of chunks sharing an R.
pub struct ChunkKeys {
    chunk: ChunkSize,
    keys: Keys,
}

enum Keys {
    Narrow(Aead),
    Wide { kdf: KeyDeriver, recent: Recent },
}

/// The last R used with this object and its K_R.
type Recent = Mutex<Option<([u8; R_LEN], Arc<Aead>)>>;

/// K_R for `r`: the recent one when it has the same R, else derived now
/// (and kept as the recent one).
fn wide_aead(
    kdf: &KeyDeriver,
    recent: &Recent,
    r: &[u8; R_LEN],
) -> Result<Arc<Aead>, IntegrityError> {
    if let Some((lr, a)) = recent.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        if lr == r {
            return Ok(a.clone());
        }
    }
    let a = Arc::new(kdf.aead(r)?);
    *recent.lock().unwrap_or_else(|e| e.into_inner()) = Some((*r, a.clone()));
    Ok(a)
}

impl ChunkKeys {
    /// The keys for an object of `cipher` under `data_key`, in `chunk`'s
    /// slot format. A key of the wrong length is refused.
    pub fn new(
        cipher: Cipher,
        chunk: ChunkSize,
        data_key: &SecretKey,
    ) -> Result<Self, IntegrityError> {
        let keys = match chunk.format() {
            SlotFormat::Narrow => Keys::Narrow(Aead::new(cipher, data_key)?),
            SlotFormat::Wide => Keys::Wide {
                kdf: KeyDeriver::new(cipher, data_key)?,
                recent: Mutex::new(None),
            },
        };
        Ok(ChunkKeys { chunk, keys })
    }

    /// What seals the chunks of one write: a wide write draws one R for up
    /// to `max_chunks_per_r()` chunks.
    pub fn sealer(&self) -> Sealer<'_> {
        Sealer {
            keys: self,
            current: None,
            left: 0,
        }
    }

    /// Opens a slot of this object in place (§4) and returns its
    /// plaintext, a sub-slice of `slot`. An all-zero full slot that is not
    /// the last chunk is a hole (§3.3) and reads as zeros.
    pub fn open<'a>(
        &self,
        object_id: &[u8; 16],
        index: u64,
        last: bool,
        slot: &'a mut [u8],
    ) -> Result<&'a [u8], IntegrityError> {
        let (kdf, recent) = match &self.keys {
            Keys::Narrow(aead) => {
                return open_chunk(aead, self.chunk, object_id, index, last, slot)
            }
            Keys::Wide { kdf, recent } => (kdf, recent),
        };
        if slot.len() <= WIDE_OVERHEAD {
            return Err(IntegrityError);
        }
        let full = self.chunk.slot();
        // As for narrow slots: R of a real slot is almost never zero.
        if !last
            && slot.len() == full
            && slot[..R_LEN].iter().all(|&b| b == 0)
            && slot.iter().all(|&b| b == 0)
        {
            return Ok(&slot[WIDE_PREFIX..full - TAG_LEN]);
        }
        let (prefix, rest) = slot.split_at_mut(WIDE_PREFIX);
        let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let mut r = [0u8; R_LEN];
        r.copy_from_slice(&prefix[..R_LEN]);
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&prefix[R_LEN..]);
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag);
        let ad = chunk_ad(object_id, index, last);
        if kdf.cipher() == Cipher::None {
            // No K_R: the tag covers R (§4.2).
            if !tags_equal(&kdf.plain_tag(&ad, &r, &n, body), &t) {
                return Err(IntegrityError);
            }
            return Ok(body);
        }
        let aead = wide_aead(kdf, recent, &r)?;
        aead.open(&Nonce(n), &ad, body, &t)?;
        Ok(body)
    }
}

impl ChunkKeys {
    /// `open` of the slot that fills `region[at..]`, with its plaintext
    /// landing at the front of `region` instead of inside the slot: the
    /// slots of a run read into one buffer, opened in order, leave their
    /// plaintexts contiguous (each plaintext ends before the next slot
    /// starts). Returns the plaintext's length. A hole (§3.3) reads as
    /// zeros. On failure the plaintext is never exposed: `region` is wiped
    /// up to the end of the slot's body.
    pub fn open_shifted(
        &self,
        object_id: &[u8; 16],
        index: u64,
        last: bool,
        region: &mut [u8],
        at: usize,
    ) -> Result<usize, IntegrityError> {
        let slot = region.get(at..).ok_or(IntegrityError)?;
        let (overhead, prefix) = match &self.keys {
            Keys::Narrow(_) => (CHUNK_OVERHEAD, NONCE_LEN),
            Keys::Wide { .. } => (WIDE_OVERHEAD, WIDE_PREFIX),
        };
        if slot.len() <= overhead {
            return Err(IntegrityError);
        }
        let body_len = slot.len() - overhead;
        // As in `open`: the first bytes of a real slot are almost never
        // zero, so the full scan only runs on actual holes.
        if !last
            && slot.len() == self.chunk.slot()
            && slot[..prefix].iter().all(|&b| b == 0)
            && slot.iter().all(|&b| b == 0)
        {
            region[..body_len].fill(0);
            return Ok(body_len);
        }
        let mut head = [0u8; WIDE_PREFIX];
        head[..prefix].copy_from_slice(&slot[..prefix]);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&slot[slot.len() - TAG_LEN..]);
        let ad = chunk_ad(object_id, index, last);
        let src = at + prefix;
        let buf = &mut region[..src + body_len];
        match &self.keys {
            Keys::Narrow(aead) => {
                let mut n = [0u8; NONCE_LEN];
                n.copy_from_slice(&head[..NONCE_LEN]);
                aead.open_shifted(&Nonce(n), &ad, buf, src, &tag)?;
            }
            Keys::Wide { kdf, recent } => {
                let mut r = [0u8; R_LEN];
                r.copy_from_slice(&head[..R_LEN]);
                let mut n = [0u8; NONCE_LEN];
                n.copy_from_slice(&head[R_LEN..WIDE_PREFIX]);
                if kdf.cipher() == Cipher::None {
                    // No K_R: the tag covers R (§4.2).
                    if !tags_equal(&kdf.plain_tag(&ad, &r, &n, &buf[src..]), &tag) {
                        buf.fill(0);
                        return Err(IntegrityError);
                    }
                    buf.copy_within(src.., 0);
                } else {
                    let aead = wide_aead(kdf, recent, &r).inspect_err(|_| buf.fill(0))?;
                    aead.open_shifted(&Nonce(n), &ad, buf, src, &tag)?;
                }
            }
        }
        Ok(body_len)
    }
}

/// Seals the chunks of one write (`ChunkKeys::sealer`).
pub struct Sealer<'a> {
    keys: &'a ChunkKeys,
    /// The write's current R and K_R (wide slots).
    current: Option<([u8; R_LEN], Arc<Aead>)>,
    /// Chunks the current R may still seal.
    left: u64,
}

impl Sealer<'_> {
    /// Seals `plain` as chunk `index` and appends the slot to `out`: a
    /// fresh random nonce (N), under the data key (narrow) or under K_R
    /// for the write's R (wide, §4.1).
    pub fn seal(
        &mut self,
        object_id: &[u8; 16],
        index: u64,
        last: bool,
        plain: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), IntegrityError> {
        let overhead = match self.keys.keys {
            Keys::Narrow(_) => CHUNK_OVERHEAD,
            Keys::Wide { .. } => WIDE_OVERHEAD,
        };
        let start = out.len();
        out.resize(start + plain.len() + overhead, 0);
        let sealed = self.seal_into(object_id, index, last, plain, &mut out[start..]);
        if sealed.is_err() {
            out.truncate(start);
        }
        sealed
    }

    /// `seal` into `out`, which must be exactly the slot's length (the
    /// plaintext's and the slot overhead), instead of appending.
    pub fn seal_into(
        &mut self,
        object_id: &[u8; 16],
        index: u64,
        last: bool,
        plain: &[u8],
        out: &mut [u8],
    ) -> Result<(), IntegrityError> {
        let (kdf, recent) = match &self.keys.keys {
            Keys::Narrow(aead) => {
                return seal_chunk_into(aead, object_id, index, last, plain, out);
            }
            Keys::Wide { kdf, recent } => (kdf, recent),
        };
        if out.len() != plain.len() + WIDE_OVERHEAD {
            return Err(IntegrityError);
        }
        if self.left == 0 || self.current.is_none() {
            let mut r = [0u8; R_LEN];
            fill_random(&mut r);
            // Kept as the recent K_R too: a read of what this write sealed
            // finds the key ready.
            let a = wide_aead(kdf, recent, &r)?;
            self.current = Some((r, a));
            self.left = max_chunks_per_r();
        }
        self.left -= 1;
        let (r, aead) = self.current.as_ref().ok_or(IntegrityError)?;
        let n = Nonce::random();
        let (head, rest) = out.split_at_mut(WIDE_PREFIX);
        head[..R_LEN].copy_from_slice(r);
        head[R_LEN..].copy_from_slice(&n.0);
        let (body, tag_out) = rest.split_at_mut(plain.len());
        body.copy_from_slice(plain);
        let ad = chunk_ad(object_id, index, last);
        let tag = if kdf.cipher() == Cipher::None {
            kdf.plain_tag(&ad, r, &n.0, body)
        } else {
            aead.seal(&n, &ad, body)
        };
        tag_out.copy_from_slice(&tag);
        Ok(())
    }
}
