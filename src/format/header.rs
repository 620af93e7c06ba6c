//! The 128-byte object header (FORMAT.md §2).

use crate::crypto::{
    checksum16, fill_random, hmac16, plain_mac_key, tags_equal, Cipher, IntegrityError, SecretKey,
    PLAIN_MAC_KEY_LEN,
};
use crate::error::{Error, Result};

use super::{ChunkSize, SlotFormat};

pub const HEADER_LEN: usize = 128;
const MAGIC: &[u8; 8] = b"SSEFSOBJ";
const VERSION: u8 = 1;
/// Bytes 0..AD_LEN are the associated data of the key wrap (§2.2).
const AD_LEN: usize = 52;
/// Bytes 0..SUM_LEN are covered by the header checksum (§2.3).
const SUM_LEN: usize = 112;
const SUM_DOMAIN: &[u8] = b"ssefs-header-v1";
/// An unencrypted object's header MAC (§2.5) covers bytes 0..PLAIN_MAC_LEN.
const PLAIN_MAC_LEN: usize = 96;
const PLAIN_MAC_DOMAIN: &[u8] = b"ssefs-plain-header-v1";

/// How the data key is protected: the OSS method (§2.1, byte 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Not encrypted: no data key; the header and the chunks carry
    /// HMAC-SHA256 tags under K_plain, a key derived from the root key
    /// (§2.5, §4.2).
    None,
    /// SSE-OSS: wrapped by a version of the service master key.
    Oss,
    /// SSE-KMS: wrapped by a version of a CMK.
    Kms,
}

/// Something that wraps and unwraps data keys: a KMS key-encryption key, or a
/// fixed key in tests.
pub trait KeyWrap {
    fn key_id(&self) -> [u8; 16];
    fn version(&self) -> u32;
    fn wrap(&self, ad: &[u8], data_key: &SecretKey) -> ([u8; 12], Vec<u8>, [u8; 16]);
    fn unwrap(
        &self,
        ad: &[u8],
        nonce: &[u8; 12],
        ct: &[u8],
        tag: &[u8; 16],
    ) -> std::result::Result<SecretKey, IntegrityError>;
}

/// A parsed, checksum-verified header. The data key is still wrapped:
/// `unwrap_data_key` authenticates the header's first 52 bytes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub method: Method,
    pub cipher: Cipher,
    /// The object's chunk size and slot format (§2, bytes 11 and 12; §3).
    /// Both must be its bucket's.
    pub chunk: ChunkSize,
    /// Random per upload; bound into every chunk's associated data.
    pub object_id: [u8; 16],
    /// All zero for SSE-OSS and unencrypted objects; the CMK's UUID for KMS.
    pub key_id: [u8; 16],
    pub key_version: u32,
    wrap_nonce: [u8; 12],
    wrapped_key: [u8; 32],
    wrap_tag: [u8; 16],
}

impl Header {
    /// A header for a new unencrypted object, with its MAC under K_plain
    /// (§2.5).
    pub fn new_plain(chunk: ChunkSize, plain_key: &SecretKey) -> Result<Self> {
        let mut object_id = [0u8; 16];
        fill_random(&mut object_id);
        Self::plain_with(chunk, object_id, plain_key)
    }

    /// `new_plain` with a given object id (and the test vector of §6).
    pub fn plain_with(
        chunk: ChunkSize,
        object_id: [u8; 16],
        plain_key: &SecretKey,
    ) -> Result<Self> {
        let mut h = Self::unkeyed_plain(chunk, object_id);
        h.wrap_tag = h.plain_mac(plain_key)?;
        Ok(h)
    }

    /// A header of an unencrypted object as ssefs wrote them before keyed
    /// tags: no MAC (bytes 96..112 zero). Only tests make these now.
    pub fn unkeyed_plain(chunk: ChunkSize, object_id: [u8; 16]) -> Self {
        Header {
            method: Method::None,
            cipher: Cipher::None,
            chunk,
            object_id,
            key_id: [0; 16],
            key_version: 0,
            wrap_nonce: [0; 12],
            wrapped_key: [0; 32],
            wrap_tag: [0; 16],
        }
    }

    /// The MAC of an unencrypted object's header (§2.5).
    fn plain_mac(&self, plain_key: &SecretKey) -> Result<[u8; 16]> {
        if plain_key.len() != PLAIN_MAC_KEY_LEN {
            return Err(Error::integrity("not a key for unencrypted objects"));
        }
        let b = self.encode();
        Ok(hmac16(
            &plain_mac_key(plain_key),
            &[PLAIN_MAC_DOMAIN, &b[..PLAIN_MAC_LEN]],
        ))
    }

    /// An unencrypted object's header without a MAC: written before keyed
    /// tags (§8.6), or forged.
    pub fn is_unkeyed_plain(&self) -> bool {
        self.method == Method::None && self.wrap_tag == [0; 16]
    }

    /// Checks an unencrypted object's header MAC under K_plain (§2.5).
    pub fn check_plain(&self, plain_key: &SecretKey) -> Result<()> {
        let ok =
            self.method == Method::None && tags_equal(&self.plain_mac(plain_key)?, &self.wrap_tag);
        if ok {
            Ok(())
        } else {
            Err(Error::integrity(
                "unencrypted object's header failed authentication (tampered or forged header)",
            ))
        }
    }

    /// A header for a new encrypted object: draws a fresh data key and object
    /// id, wraps the key under `kek`. Returns the header and the data key.
    pub fn new_sealed(
        method: Method,
        cipher: Cipher,
        chunk: ChunkSize,
        kek: &dyn KeyWrap,
    ) -> (Self, SecretKey) {
        let mut object_id = [0u8; 16];
        fill_random(&mut object_id);
        let data_key = SecretKey::random(cipher.key_len());
        let h = Self::seal_with(method, cipher, chunk, object_id, kek, &data_key);
        (h, data_key)
    }

    /// Builds the header around a given data key and object id (used by
    /// `new_sealed`, and by the test vector of FORMAT.md §6).
    pub fn seal_with(
        method: Method,
        cipher: Cipher,
        chunk: ChunkSize,
        object_id: [u8; 16],
        kek: &dyn KeyWrap,
        data_key: &SecretKey,
    ) -> Self {
        let mut h = Header {
            method,
            cipher,
            chunk,
            object_id,
            key_id: kek.key_id(),
            key_version: kek.version(),
            wrap_nonce: [0; 12],
            wrapped_key: [0; 32],
            wrap_tag: [0; 16],
        };
        let ad = h.encode();
        let (nonce, ct, tag) = kek.wrap(&ad[..AD_LEN], data_key);
        h.wrap_nonce = nonce;
        h.wrapped_key[..ct.len()].copy_from_slice(&ct);
        h.wrap_tag = tag;
        h
    }

    /// Unwraps the data key, which also authenticates bytes 0..52 (§2.2).
    pub fn unwrap_data_key(&self, kek: &dyn KeyWrap) -> Result<SecretKey> {
        if self.method == Method::None {
            return Ok(SecretKey::from_bytes(&[]));
        }
        let ad = self.encode();
        let n = self.cipher.key_len();
        kek.unwrap(
            &ad[..AD_LEN],
            &self.wrap_nonce,
            &self.wrapped_key[..n],
            &self.wrap_tag,
        )
        .map_err(|_| {
            Error::integrity("object header failed authentication (wrong key or tampered header)")
        })
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8] = VERSION;
        b[9] = match self.method {
            Method::None => 0,
            Method::Oss => 1,
            Method::Kms => 2,
        };
        b[10] = match self.cipher {
            Cipher::None => 0,
            Cipher::Aes256Gcm => 1,
            Cipher::Sm4Gcm => 2,
        };
        b[11] = self.chunk.shift();
        b[12] = self.chunk.format().byte();
        // 13..16 reserved, zero
        b[16..32].copy_from_slice(&self.object_id);
        b[32..48].copy_from_slice(&self.key_id);
        b[48..52].copy_from_slice(&self.key_version.to_le_bytes());
        b[52..64].copy_from_slice(&self.wrap_nonce);
        b[64..96].copy_from_slice(&self.wrapped_key);
        b[96..112].copy_from_slice(&self.wrap_tag);
        let sum = checksum16(&[SUM_DOMAIN, &b[..SUM_LEN]]);
        b[112..128].copy_from_slice(&sum);
        b
    }

    /// Parses and checks a header: checksum, magic, version, known values,
    /// zero reserved bytes and padding (§2.4). Any deviation is an integrity
    /// error; nothing is guessed.
    pub fn parse(b: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::integrity(format!("invalid object header: {why}"));
        if b.len() < HEADER_LEN {
            return Err(bad("shorter than 128 bytes"));
        }
        let b = &b[..HEADER_LEN];
        if &b[0..8] != MAGIC {
            return Err(bad("bad magic"));
        }
        let sum = checksum16(&[SUM_DOMAIN, &b[..SUM_LEN]]);
        if !tags_equal(&sum, &b[112..128]) {
            return Err(bad("checksum mismatch"));
        }
        if b[8] != VERSION {
            return Err(bad("unsupported format version"));
        }
        let method = match b[9] {
            0 => Method::None,
            1 => Method::Oss,
            2 => Method::Kms,
            _ => return Err(bad("unknown method")),
        };
        let cipher = match b[10] {
            0 => Cipher::None,
            1 => Cipher::Aes256Gcm,
            2 => Cipher::Sm4Gcm,
            _ => return Err(bad("unknown cipher")),
        };
        if (method == Method::None) != (cipher == Cipher::None) {
            return Err(bad("method and cipher disagree"));
        }
        let Some(chunk) = ChunkSize::from_shift(b[11]) else {
            return Err(bad("unsupported chunk size"));
        };
        // An older reader refuses byte 12 = 1 as a reserved byte set: it
        // never takes wide slots for narrow ones.
        let Some(format) = SlotFormat::from_byte(b[12]) else {
            return Err(bad("unknown slot format"));
        };
        let chunk = chunk.with_format(format);
        if b[13..16] != [0; 3] {
            return Err(bad("reserved bytes set"));
        }
        let key_len = cipher.key_len();
        let zero_from = if method == Method::None {
            52
        } else {
            64 + key_len
        };
        // An unencrypted object's bytes 96..112 are its MAC (§2.5).
        let zero_to = if method == Method::None {
            PLAIN_MAC_LEN
        } else {
            96
        };
        if b[zero_from..zero_to].iter().any(|&x| x != 0) {
            return Err(bad("padding bytes set"));
        }
        let key_id: [u8; 16] = arr(&b[32..48]);
        if (method == Method::Kms) == (key_id == [0; 16]) {
            return Err(bad("key id does not match the method"));
        }
        let key_version = u32::from_le_bytes(arr(&b[48..52]));
        // An unencrypted object has no key, so no key wrap authenticates
        // this field: it must be zero (§2).
        if method == Method::None && key_version != 0 {
            return Err(bad("key version set on an unencrypted object"));
        }
        Ok(Header {
            method,
            cipher,
            chunk,
            object_id: arr(&b[16..32]),
            key_id,
            key_version,
            wrap_nonce: arr(&b[52..64]),
            wrapped_key: arr(&b[64..96]),
            wrap_tag: arr(&b[96..112]),
        })
    }
}

/// Copies a slice of known length into an array. Callers slice constant
/// ranges of a 128-byte buffer, so the lengths always match.
fn arr<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    a
}
