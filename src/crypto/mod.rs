//! Cryptographic primitives: key and nonce newtypes, the two chunk ciphers
//! (AES-256-GCM from ring; SM4-GCM on our AES-NI kernel where the CPU has
//! AES-NI, else aes-gcm's generic GCM over `sm4`),
//! the keyed tags of unencrypted objects (and the unkeyed checksums they
//! carried before), and the randomness source.
//!
//! Nothing here knows about objects or headers; `format` builds on it.

pub mod derive;
mod secmem;
mod sm4gcm;
#[cfg(target_arch = "x86_64")]
mod sm4ni;

use std::fmt;

use ring::aead::{self, Aad, LessSafeKey, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac};
use zeroize::{Zeroize, ZeroizeOnDrop};

pub use sm4gcm::Sm4Gcm;

/// Length of every nonce we use (GCM's 96-bit IV).
pub const NONCE_LEN: usize = 12;
/// Length of every tag we store (GCM's full 128-bit tag, or a truncated SHA-256).
pub const TAG_LEN: usize = 16;

/// Length of the key of an unencrypted object's tags (FORMAT.md §4.2):
/// K_plain, derived from the root key; its "data key".
pub const PLAIN_MAC_KEY_LEN: usize = 32;

/// Failed authentication. Deliberately carries no detail: the caller knows
/// which object and chunk it was opening and adds that context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct IntegrityError;

/// The data cipher of an object, as recorded in its header (FORMAT.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// No encryption: chunks carry an HMAC-SHA256 tag instead of a GCM
    /// tag (a SHA-256 checksum in objects from before keyed tags).
    None,
    Aes256Gcm,
    Sm4Gcm,
}

impl Cipher {
    pub fn key_len(self) -> usize {
        match self {
            Cipher::None => 0,
            Cipher::Aes256Gcm => 32,
            Cipher::Sm4Gcm => 16,
        }
    }

    /// Whether a key of `len` bytes keys this cipher: `key_len()`, and for
    /// `None` also K_plain (keyed tags, FORMAT.md §4.2; length 0 gives the
    /// unkeyed checksums of objects from before them).
    pub fn fits_key(self, len: usize) -> bool {
        len == self.key_len() || (self == Cipher::None && len == PLAIN_MAC_KEY_LEN)
    }

    pub fn name(self) -> &'static str {
        match self {
            Cipher::None => "none",
            Cipher::Aes256Gcm => "AES-256-GCM",
            Cipher::Sm4Gcm => "SM4-GCM",
        }
    }
}

/// Secret key bytes (a data key, a master key version, a CMK version, the root
/// key). Zeroized on drop; `Debug` never prints the bytes.
pub struct SecretKey(Storage);

enum Storage {
    Heap(Vec<u8>),
    /// Long-lived keys: a page of their own, kept out of core dumps and
    /// swap (`SecretKey::locked`).
    Locked(secmem::LockedBuf),
}

impl SecretKey {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        SecretKey(Storage::Heap(bytes.to_vec()))
    }

    /// A fresh random key of `len` bytes.
    pub fn random(len: usize) -> Self {
        let mut k = vec![0u8; len];
        fill_random(&mut k);
        SecretKey(Storage::Heap(k))
    }

    /// The same key moved to memory excluded from core dumps and, where
    /// RLIMIT_MEMLOCK allows, locked in RAM: for keys held for the life of
    /// the process. If the kernel refuses a mapping the key stays as it is.
    pub fn locked(self) -> Self {
        match secmem::LockedBuf::new(self.expose()) {
            Some(b) => SecretKey(Storage::Locked(b)),
            None => self,
        }
    }

    pub fn expose(&self) -> &[u8] {
        match &self.0 {
            Storage::Heap(v) => v,
            Storage::Locked(b) => b.as_slice(),
        }
    }

    pub fn len(&self) -> usize {
        self.expose().len()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    #[cfg(test)]
    fn locked_buf(&self) -> Option<&secmem::LockedBuf> {
        match &self.0 {
            Storage::Heap(_) => None,
            Storage::Locked(b) => Some(b),
        }
    }
}

impl Clone for SecretKey {
    fn clone(&self) -> Self {
        let k = SecretKey::from_bytes(self.expose());
        match self.0 {
            Storage::Heap(_) => k,
            Storage::Locked(_) => k.locked(),
        }
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        tags_equal(self.expose(), other.expose())
    }
}

impl Eq for SecretKey {}

impl Drop for SecretKey {
    fn drop(&mut self) {
        // A LockedBuf zeroes its own page when dropped.
        if let Storage::Heap(v) = &mut self.0 {
            v.zeroize();
        }
    }
}

impl ZeroizeOnDrop for SecretKey {}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(<{} bytes redacted>)", self.len())
    }
}

/// A 96-bit GCM nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nonce(pub [u8; NONCE_LEN]);

impl Nonce {
    /// A fresh random nonce. Every chunk write draws one, so rewriting a chunk
    /// in place never reuses a (key, nonce) pair (up to the 2^-32 birthday
    /// bound after 2^32 writes under one data key; FORMAT.md §4).
    pub fn random() -> Self {
        let mut n = [0u8; NONCE_LEN];
        fill_random(&mut n);
        Nonce(n)
    }
}

/// Domain of a narrow slot's keyed tag in an unencrypted object (§4.2).
const PLAIN_MAC_DOMAIN: &[u8] = b"ssefs-plain-mac-v1";

/// Fills `buf` from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) {
    // SystemRandom reads getrandom(2); it fails only if the kernel cannot
    // provide randomness at all, in which case no key we could make is safe.
    #[allow(clippy::expect_used)]
    SystemRandom::new()
        .fill(buf)
        .expect("the kernel's random number generator failed");
}

/// First 16 bytes of SHA-256 over the concatenation of `parts`.
pub fn checksum16(parts: &[&[u8]]) -> [u8; TAG_LEN] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let d = ctx.finish();
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&d.as_ref()[..TAG_LEN]);
    out
}

/// First 16 bytes of HMAC-SHA256 under `key` over the concatenation of
/// `parts`: the keyed tags of unencrypted objects (FORMAT.md §4.2).
pub fn hmac16(key: &hmac::Key, parts: &[&[u8]]) -> [u8; TAG_LEN] {
    let mut ctx = hmac::Context::with_key(key);
    for p in parts {
        ctx.update(p);
    }
    let d = ctx.sign();
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&d.as_ref()[..TAG_LEN]);
    out
}

/// The HMAC key of an unencrypted object's tags, from K_plain.
pub(crate) fn plain_mac_key(key: &SecretKey) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, key.expose())
}

/// HMAC-SHA256 under `key` over `parts`, each preceded by its length (8
/// bytes, little-endian), so that no two lists of parts make the same
/// message: the tag of FORMAT.md §8 and §9.2.
pub fn mac_parts(key: &SecretKey, parts: &[&[u8]]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
    let mut ctx = hmac::Context::with_key(&k);
    for p in parts {
        ctx.update(&(p.len() as u64).to_le_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// Constant-time comparison of two tags.
pub fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A keyed AEAD (or, for `Cipher::None`, the keyed tag or the unkeyed
/// checksum of FORMAT.md §4.2) that seals and opens buffers in place with a
/// detached tag.
pub enum Aead {
    /// Unencrypted, unkeyed checksums: only objects from before keyed tags,
    /// read once by the upgrade that converts them.
    None,
    /// Unencrypted, HMAC-SHA256 tags under K_plain.
    PlainMac(Box<hmac::Key>),
    Aes(Box<LessSafeKey>),
    Sm4(Box<Sm4Gcm>),
}

impl Aead {
    /// Builds the AEAD for `cipher` from `key`. The key length must fit
    /// (`Cipher::fits_key`); a mismatch is a bug in the caller or a corrupt
    /// header, reported as an integrity error.
    pub fn new(cipher: Cipher, key: &SecretKey) -> Result<Self, IntegrityError> {
        if !cipher.fits_key(key.len()) {
            return Err(IntegrityError);
        }
        Ok(match cipher {
            Cipher::None if key.is_empty() => Aead::None,
            Cipher::None => Aead::PlainMac(Box::new(plain_mac_key(key))),
            Cipher::Aes256Gcm => {
                let k = UnboundKey::new(&aead::AES_256_GCM, key.expose())
                    .map_err(|_| IntegrityError)?;
                Aead::Aes(Box::new(LessSafeKey::new(k)))
            }
            Cipher::Sm4Gcm => {
                let k: &[u8; 16] = key.expose().try_into().map_err(|_| IntegrityError)?;
                Aead::Sm4(Box::new(Sm4Gcm::new(k)))
            }
        })
    }

    pub fn cipher(&self) -> Cipher {
        match self {
            Aead::None | Aead::PlainMac(_) => Cipher::None,
            Aead::Aes(_) => Cipher::Aes256Gcm,
            Aead::Sm4(_) => Cipher::Sm4Gcm,
        }
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal(&self, nonce: &Nonce, ad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        match self {
            Aead::None => checksum16(&[b"ssefs-plain-v1", ad, &nonce.0, buf]),
            Aead::PlainMac(k) => hmac16(k, &[PLAIN_MAC_DOMAIN, ad, &nonce.0, buf]),
            Aead::Aes(k) => {
                // Sealing only fails for inputs longer than GCM's 64 GiB limit;
                // chunks are at most ChunkSize::MAX_BYTES (64 KiB).
                #[allow(clippy::expect_used)]
                let tag = k
                    .seal_in_place_separate_tag(
                        aead::Nonce::assume_unique_for_key(nonce.0),
                        Aad::from(ad),
                        buf,
                    )
                    .expect("chunk within GCM length limit");
                let mut out = [0u8; TAG_LEN];
                out.copy_from_slice(tag.as_ref());
                out
            }
            Aead::Sm4(k) => k.seal(nonce, ad, buf),
        }
    }

    /// Decrypts `buf` in place if `tag` authenticates it. On failure the
    /// contents of `buf` are unspecified and must not be used.
    pub fn open(
        &self,
        nonce: &Nonce,
        ad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), IntegrityError> {
        match self {
            Aead::None | Aead::PlainMac(_) => {
                let want = match self {
                    Aead::PlainMac(k) => hmac16(k, &[PLAIN_MAC_DOMAIN, ad, &nonce.0, buf]),
                    _ => checksum16(&[b"ssefs-plain-v1", ad, &nonce.0, buf]),
                };
                if tags_equal(&want, tag) {
                    Ok(())
                } else {
                    Err(IntegrityError)
                }
            }
            // A shift of zero; it wipes `buf` on failure (ring leaves
            // unauthenticated plaintext there).
            Aead::Aes(_) => self.open_shifted(nonce, ad, buf, 0, tag),
            Aead::Sm4(k) => k.open(nonce, ad, buf, tag).inspect_err(|_| buf.zeroize()),
        }
    }

    /// `open` of the ciphertext at `buf[src..]`, whose plaintext lands at
    /// `buf[..buf.len() - src]` (the ciphertext shifted down by `src`
    /// bytes): a run of slots read into one buffer is opened into
    /// contiguous plaintext without a second copy. AES-256-GCM shifts as
    /// it decrypts; the other ciphers open in place and then move the
    /// bytes. On failure the whole of `buf` is wiped.
    pub fn open_shifted(
        &self,
        nonce: &Nonce,
        ad: &[u8],
        buf: &mut [u8],
        src: usize,
        tag: &[u8; TAG_LEN],
    ) -> Result<(), IntegrityError> {
        if src > buf.len() {
            return Err(IntegrityError);
        }
        let opened = match self {
            Aead::Aes(k) => k
                .open_in_place_separate_tag(
                    aead::Nonce::assume_unique_for_key(nonce.0),
                    Aad::from(ad),
                    aead::Tag::from(*tag),
                    buf,
                    src..,
                )
                .map(|_| ())
                .map_err(|_| IntegrityError),
            _ => self.open(nonce, ad, &mut buf[src..], tag).map(|()| {
                buf.copy_within(src.., 0);
            }),
        };
        opened.inspect_err(|_| buf.zeroize())
    }
}

#[cfg(test)]
mod tests;
