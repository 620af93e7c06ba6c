//! The object format of docs/FORMAT.md: a 128-byte header, then the content
//! in fixed-size chunks, each sealed on its own. Section numbers (§) refer to
//! that document.

mod chunk;
mod header;

pub use chunk::{chunk_ad, open_chunk, seal_chunk};
pub use header::{Header, KeyWrap, Method, HEADER_LEN};

/// Plaintext bytes per chunk (§5: chosen by measurement).
pub const CHUNK_SIZE: usize = 16 * 1024;
/// log2(CHUNK_SIZE), as recorded in the header.
pub const CHUNK_SHIFT: u8 = 14;
/// Nonce before and tag after every chunk's ciphertext.
pub const CHUNK_OVERHEAD: usize = crate::crypto::NONCE_LEN + crate::crypto::TAG_LEN;
/// Bytes one full chunk takes on disk.
pub const SLOT_SIZE: usize = CHUNK_SIZE + CHUNK_OVERHEAD;

const _: () = assert!(1usize << CHUNK_SHIFT == CHUNK_SIZE);

/// Backend offset of chunk `index`'s slot (§3).
pub fn slot_offset(index: u64) -> u64 {
    HEADER_LEN as u64 + index * SLOT_SIZE as u64
}

/// The plaintext size of an object whose backend file is `file_len` bytes
/// long (§3.2). Returns `None` when no valid object has that length (shorter
/// than the header, or a last slot too short to hold one byte): the file is
/// truncated or corrupt.
pub fn plaintext_len(file_len: u64) -> Option<u64> {
    let body = file_len.checked_sub(HEADER_LEN as u64)?;
    let full = body / SLOT_SIZE as u64;
    let rem = body % SLOT_SIZE as u64;
    match rem {
        0 => Some(full * CHUNK_SIZE as u64),
        r if r > CHUNK_OVERHEAD as u64 => {
            Some(full * CHUNK_SIZE as u64 + r - CHUNK_OVERHEAD as u64)
        }
        _ => None,
    }
}

/// The backend file length that holds `plain` bytes of content (§3.2).
pub fn backend_len(plain: u64) -> u64 {
    let full = plain / CHUNK_SIZE as u64;
    let rem = plain % CHUNK_SIZE as u64;
    let last = if rem == 0 {
        0
    } else {
        rem + CHUNK_OVERHEAD as u64
    };
    HEADER_LEN as u64 + full * SLOT_SIZE as u64 + last
}

/// Number of chunks an object of `plain` bytes has.
pub fn chunk_count(plain: u64) -> u64 {
    plain.div_ceil(CHUNK_SIZE as u64)
}

/// Plaintext length of chunk `index` in an object of `plain` bytes.
pub fn chunk_len(plain: u64, index: u64) -> usize {
    let start = index * CHUNK_SIZE as u64;
    plain.saturating_sub(start).min(CHUNK_SIZE as u64) as usize
}

#[cfg(test)]
pub(crate) mod tests;
