//! Sealing and opening one chunk slot: nonce || ciphertext || tag (§3, §4).

use crate::crypto::{Aead, IntegrityError, Nonce, NONCE_LEN, TAG_LEN};

use super::{ChunkSize, CHUNK_OVERHEAD};

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

/// Seals `plain` as chunk `index` under a fresh random nonce and appends the
/// slot to `out`.
pub fn seal_chunk(
    aead: &Aead,
    object_id: &[u8; 16],
    index: u64,
    last: bool,
    plain: &[u8],
    out: &mut Vec<u8>,
) {
    let nonce = Nonce::random();
    out.extend_from_slice(&nonce.0);
    let start = out.len();
    out.extend_from_slice(plain);
    let tag = aead.seal(&nonce, &chunk_ad(object_id, index, last), &mut out[start..]);
    out.extend_from_slice(&tag);
}

/// Opens a chunk slot in place and returns its plaintext, a sub-slice of
/// `slot`. An all-zero full slot (of `chunk`'s size) that is not the last
/// chunk is a hole (§3.3) and reads as zeros.
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
