//! The object format of docs/FORMAT.md: a 128-byte header, then the content
//! in fixed-size chunks, each sealed on its own. Section numbers (§) refer to
//! that document.

mod chunk;
mod header;

pub use chunk::{chunk_ad, open_chunk, seal_chunk};
pub use header::{Header, KeyWrap, Method, HEADER_LEN};

/// Nonce before and tag after every chunk's ciphertext.
pub const CHUNK_OVERHEAD: usize = crate::crypto::NONCE_LEN + crate::crypto::TAG_LEN;

/// The plaintext bytes per chunk of one object, recorded in its header as a
/// log2 (§2, byte 11). Only the sizes of §5 exist: a value of this type is
/// always one of them, so the layout arithmetic below cannot overflow or
/// divide by zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkSize(u8);

impl ChunkSize {
    /// 4 KiB: for buckets of small random writes (§5).
    pub const KIB4: ChunkSize = ChunkSize(12);
    /// 16 KiB: the default (§5).
    pub const KIB16: ChunkSize = ChunkSize(14);
    /// 64 KiB: for large sequential objects (§5).
    pub const KIB64: ChunkSize = ChunkSize(16);
    pub const DEFAULT: ChunkSize = ChunkSize::KIB16;
    /// Every size a header may record.
    pub const ALL: [ChunkSize; 3] = [ChunkSize::KIB4, ChunkSize::KIB16, ChunkSize::KIB64];
    /// The largest chunk, in bytes: what scratch buffers are sized for.
    pub const MAX_BYTES: usize = 1 << 16;

    /// The size whose header byte is `shift`, if it is one of §5's.
    pub fn from_shift(shift: u8) -> Option<ChunkSize> {
        Self::ALL.into_iter().find(|c| c.0 == shift)
    }

    /// The size of `bytes` bytes, if it is one of §5's.
    pub fn from_bytes(bytes: u64) -> Option<ChunkSize> {
        Self::ALL.into_iter().find(|c| c.bytes() as u64 == bytes)
    }

    /// A chunk size given by a user (xattr value, command line): exactly
    /// the decimal byte count of one of §5's sizes ("4096", "16384",
    /// "65536"); no sign, leading zero, whitespace or unit.
    pub fn parse(v: &[u8]) -> crate::error::Result<ChunkSize> {
        Self::ALL
            .into_iter()
            .find(|c| c.to_string().as_bytes() == v)
            .ok_or_else(|| {
                let shown = String::from_utf8_lossy(v);
                crate::error::Error::new(
                    crate::error::OssCode::InvalidArgument,
                    format!(
                        "invalid chunk size {:?}: give 4096, 16384 or 65536 (bytes, in decimal)",
                        crate::error::shown(&shown, 256)
                    ),
                )
            })
    }

    /// The header byte: log2 of the size.
    pub const fn shift(self) -> u8 {
        self.0
    }

    /// Plaintext bytes of a full chunk (C in §3).
    pub const fn bytes(self) -> usize {
        1 << self.0
    }

    /// Bytes one full chunk takes on disk.
    pub const fn slot(self) -> usize {
        self.bytes() + CHUNK_OVERHEAD
    }

    /// Backend offset of chunk `index`'s slot (§3.1).
    pub fn slot_offset(self, index: u64) -> u64 {
        HEADER_LEN as u64 + index * self.slot() as u64
    }

    /// The plaintext size of an object whose backend file is `file_len`
    /// bytes long (§3.2). `None` when no valid object has that length
    /// (shorter than the header, or a last slot too short to hold one
    /// byte): the file is truncated or corrupt.
    pub fn plaintext_len(self, file_len: u64) -> Option<u64> {
        let body = file_len.checked_sub(HEADER_LEN as u64)?;
        let slot = self.slot() as u64;
        let (full, rem) = (body / slot, body % slot);
        match rem {
            0 => Some(full * self.bytes() as u64),
            r if r > CHUNK_OVERHEAD as u64 => {
                Some(full * self.bytes() as u64 + r - CHUNK_OVERHEAD as u64)
            }
            _ => None,
        }
    }

    /// What a reader shows for a file of `file_len` bytes (§3.2): the
    /// plaintext size, or for a length no object has, the whole chunks
    /// before the damaged tail. The flag says the tail is damaged.
    pub fn shown_len(self, file_len: u64) -> (u64, bool) {
        match self.plaintext_len(file_len) {
            Some(n) => (n, false),
            None => {
                let body = file_len.saturating_sub(HEADER_LEN as u64);
                (body / self.slot() as u64 * self.bytes() as u64, true)
            }
        }
    }

    /// The backend file length that holds `plain` bytes of content (§3.2).
    pub fn backend_len(self, plain: u64) -> u64 {
        let c = self.bytes() as u64;
        let (full, rem) = (plain / c, plain % c);
        let last = if rem == 0 {
            0
        } else {
            rem + CHUNK_OVERHEAD as u64
        };
        HEADER_LEN as u64 + full * self.slot() as u64 + last
    }

    /// Number of chunks an object of `plain` bytes has.
    pub fn chunk_count(self, plain: u64) -> u64 {
        plain.div_ceil(self.bytes() as u64)
    }

    /// The chunk holding byte `off`.
    pub fn index_of(self, off: u64) -> u64 {
        off >> self.0
    }

    /// Plaintext offset of chunk `index`.
    pub fn start_of(self, index: u64) -> u64 {
        index << self.0
    }

    /// Plaintext length of chunk `index` in an object of `plain` bytes.
    pub fn chunk_len(self, plain: u64, index: u64) -> usize {
        plain
            .saturating_sub(self.start_of(index))
            .min(self.bytes() as u64) as usize
    }
}

impl Default for ChunkSize {
    fn default() -> Self {
        ChunkSize::DEFAULT
    }
}

impl std::fmt::Display for ChunkSize {
    /// Decimal bytes, as the xattr and the CLI take it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.bytes())
    }
}

#[cfg(test)]
pub(crate) mod tests;
