//! The object format of docs/FORMAT.md: a 128-byte header, then the content
//! in fixed-size chunks, each sealed on its own. Section numbers (§) refer to
//! that document.

mod chunk;
mod header;

#[cfg(test)]
pub(crate) use chunk::TEST_MAX_CHUNKS_PER_R;
pub use chunk::{
    chunk_ad, max_chunks_per_r, open_chunk, seal_chunk, ChunkKeys, Sealer, MAX_CHUNKS_PER_R,
};
pub use header::{Header, KeyWrap, Method, HEADER_LEN};

/// Nonce before and tag after every narrow slot's ciphertext (§3.1).
pub const CHUNK_OVERHEAD: usize = crate::crypto::NONCE_LEN + crate::crypto::TAG_LEN;
/// R and N before and the tag after every wide slot's ciphertext (§3.1).
pub const WIDE_OVERHEAD: usize =
    crate::crypto::derive::R_LEN + crate::crypto::NONCE_LEN + crate::crypto::TAG_LEN;

/// How a bucket's slots are laid out (§3.1), recorded in each header
/// (§2, byte 12) and in the bucket's settings (§3.2).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SlotFormat {
    /// nonce (12) ‖ ciphertext ‖ tag (16), sealed under the data key:
    /// every bucket made before wide slots existed.
    #[default]
    Narrow,
    /// R (12) ‖ N (12) ‖ ciphertext ‖ tag (16), sealed under a key
    /// derived from the data key and R (§4.1).
    Wide,
}

impl SlotFormat {
    /// The header byte (§2, byte 12).
    pub const fn byte(self) -> u8 {
        match self {
            SlotFormat::Narrow => 0,
            SlotFormat::Wide => 1,
        }
    }

    pub fn from_byte(b: u8) -> Option<SlotFormat> {
        match b {
            0 => Some(SlotFormat::Narrow),
            1 => Some(SlotFormat::Wide),
            _ => None,
        }
    }

    /// Bytes a slot adds to its chunk's plaintext.
    pub const fn overhead(self) -> usize {
        match self {
            SlotFormat::Narrow => CHUNK_OVERHEAD,
            SlotFormat::Wide => WIDE_OVERHEAD,
        }
    }
}

/// The plaintext bytes per chunk of one object, recorded in its header as a
/// log2 (§2, byte 11), and the layout of its slots (§2, byte 12). Both are
/// its bucket's. Only the sizes of §5 exist: a value of this type is always
/// one of them, so the layout arithmetic below cannot overflow or divide by
/// zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkSize {
    shift: u8,
    format: SlotFormat,
}

impl ChunkSize {
    /// 4 KiB: for buckets of small random writes (§5).
    pub const KIB4: ChunkSize = ChunkSize::narrow(12);
    /// 16 KiB: the default (§5).
    pub const KIB16: ChunkSize = ChunkSize::narrow(14);
    /// 64 KiB: for large sequential objects (§5).
    pub const KIB64: ChunkSize = ChunkSize::narrow(16);
    pub const DEFAULT: ChunkSize = ChunkSize::KIB16;
    /// Every size a header may record (in narrow slots; `with_format`
    /// gives the others).
    pub const ALL: [ChunkSize; 3] = [ChunkSize::KIB4, ChunkSize::KIB16, ChunkSize::KIB64];
    /// The largest chunk, in bytes: what scratch buffers are sized for.
    pub const MAX_BYTES: usize = 1 << 16;

    const fn narrow(shift: u8) -> ChunkSize {
        ChunkSize {
            shift,
            format: SlotFormat::Narrow,
        }
    }

    /// The same chunk size with slots in `format`.
    pub const fn with_format(self, format: SlotFormat) -> ChunkSize {
        ChunkSize {
            shift: self.shift,
            format,
        }
    }

    /// The same chunk size in wide slots.
    pub const fn wide(self) -> ChunkSize {
        self.with_format(SlotFormat::Wide)
    }

    pub const fn format(self) -> SlotFormat {
        self.format
    }

    /// Bytes a slot adds to its plaintext: 28 narrow, 40 wide (§3.1).
    pub const fn overhead(self) -> usize {
        self.format.overhead()
    }

    /// The size whose header byte is `shift`, if it is one of §5's.
    pub fn from_shift(shift: u8) -> Option<ChunkSize> {
        Self::ALL.into_iter().find(|c| c.shift == shift)
    }

    /// The size of `bytes` bytes (in narrow slots), if it is one of §5's.
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
        self.shift
    }

    /// Plaintext bytes of a full chunk (C in §3).
    pub const fn bytes(self) -> usize {
        1 << self.shift
    }

    /// Bytes one full chunk takes on disk.
    pub const fn slot(self) -> usize {
        self.bytes() + self.overhead()
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
            r if r > self.overhead() as u64 => {
                Some(full * self.bytes() as u64 + r - self.overhead() as u64)
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
            rem + self.overhead() as u64
        };
        HEADER_LEN as u64 + full * self.slot() as u64 + last
    }

    /// Number of chunks an object of `plain` bytes has.
    pub fn chunk_count(self, plain: u64) -> u64 {
        plain.div_ceil(self.bytes() as u64)
    }

    /// The chunk holding byte `off`.
    pub fn index_of(self, off: u64) -> u64 {
        off >> self.shift
    }

    /// Plaintext offset of chunk `index`.
    pub fn start_of(self, index: u64) -> u64 {
        index << self.shift
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
