//! Per-write chunk keys for wide slots (FORMAT.md §4.1): K_R = KDF(data key,
//! R) for a random 96-bit R, in the manner of AES-GCM-SIV's key derivation
//! (RFC 8452 §4). The data key's own block cipher encrypts the blocks
//! `le32(i) ‖ R` and the first 8 bytes of each block are kept: i = 0..4 for
//! AES-256 (a 32-byte key), i = 0..2 for SM4 (a 16-byte key).

use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use ring::hmac;
use zeroize::{Zeroize, Zeroizing};

use super::{
    checksum16, hmac16, plain_mac_key, Aead, Cipher, IntegrityError, SecretKey, NONCE_LEN, TAG_LEN,
};

/// Length of R, the per-write random value of a wide slot.
pub const R_LEN: usize = 12;

/// The data key's block cipher, keyed once per open object. Both ciphers
/// are built with their `zeroize` features: the key schedules are wiped on
/// drop.
enum BlockKey {
    /// An unencrypted object: no K_R; its slots' tags are keyed with
    /// K_plain (`Some`), or unkeyed checksums in an object from before
    /// keyed tags (`None`).
    None(Option<Box<hmac::Key>>),
    Aes(Box<aes::Aes256>),
    Sm4(Box<sm4::Sm4>),
}

/// Derives the chunk keys K_R of one object from its data key.
pub struct KeyDeriver {
    cipher: Cipher,
    key: BlockKey,
}

impl KeyDeriver {
    /// The key length must fit `cipher`, as for `Aead::new`.
    pub fn new(cipher: Cipher, data_key: &SecretKey) -> Result<Self, IntegrityError> {
        if !cipher.fits_key(data_key.len()) {
            return Err(IntegrityError);
        }
        let key = match cipher {
            Cipher::None if data_key.is_empty() => BlockKey::None(None),
            Cipher::None => BlockKey::None(Some(Box::new(plain_mac_key(data_key)))),
            Cipher::Aes256Gcm => {
                let mut k = Array::try_from(data_key.expose()).map_err(|_| IntegrityError)?;
                let c = aes::Aes256::new(&k);
                k.as_mut_slice().zeroize();
                BlockKey::Aes(Box::new(c))
            }
            Cipher::Sm4Gcm => {
                let mut k = Array::try_from(data_key.expose()).map_err(|_| IntegrityError)?;
                let c = sm4::Sm4::new(&k);
                k.as_mut_slice().zeroize();
                BlockKey::Sm4(Box::new(c))
            }
        };
        Ok(KeyDeriver { cipher, key })
    }

    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// K_R (§4.1): empty for unencrypted objects.
    pub fn derive(&self, r: &[u8; R_LEN]) -> SecretKey {
        let mut out = Zeroizing::new([0u8; 32]);
        let n = self.cipher.key_len();
        match &self.key {
            BlockKey::None(_) => {}
            BlockKey::Aes(c) => kdf_blocks(c.as_ref(), r, &mut out[..n]),
            BlockKey::Sm4(c) => kdf_blocks(c.as_ref(), r, &mut out[..n]),
        }
        SecretKey::from_bytes(&out[..n])
    }

    /// The tag of a wide slot of an unencrypted object (FORMAT.md §4.2): a
    /// narrow one's over R ‖ N in place of the nonce, under its own
    /// domain, so that no wide slot checks as a narrow one. Keyed with
    /// K_plain, or the unkeyed checksum of objects from before keyed tags.
    pub fn plain_tag(
        &self,
        ad: &[u8],
        r: &[u8; R_LEN],
        n: &[u8; NONCE_LEN],
        plain: &[u8],
    ) -> [u8; TAG_LEN] {
        match &self.key {
            BlockKey::None(Some(k)) => hmac16(k, &[b"ssefs-plain-wide-mac-v1", ad, r, n, plain]),
            _ => checksum16(&[b"ssefs-plain-wide-v1", ad, r, n, plain]),
        }
    }

    /// The AEAD keyed with K_R.
    pub fn aead(&self, r: &[u8; R_LEN]) -> Result<Aead, IntegrityError> {
        Aead::new(self.cipher, &self.derive(r))
    }
}

/// Fills `out` 8 bytes at a time: bytes 0..8 of E(`le32(i) ‖ R`) for
/// i = 0, 1, ... (RFC 8452 §4).
fn kdf_blocks<C: BlockCipherEncrypt>(c: &C, r: &[u8; R_LEN], out: &mut [u8]) {
    for (i, part) in out.chunks_mut(8).enumerate() {
        let mut block = Array::default();
        block[..4].copy_from_slice(&(i as u32).to_le_bytes());
        block[4..].copy_from_slice(r);
        c.encrypt_block(&mut block);
        part.copy_from_slice(&block[..8]);
        block.as_mut_slice().zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 8452 Appendix C.2, the first AEAD_AES_256_GCM_SIV vector: its
    /// "record authentication key" is our blocks 0 and 1, and the first
    /// half of its "record encryption key" our blocks 2 and 3.
    #[test]
    fn aes256_kdf_matches_rfc_8452() {
        let mut key = [0u8; 32];
        key[0] = 1;
        let mut r = [0u8; R_LEN];
        r[0] = 3;
        let d = KeyDeriver::new(Cipher::Aes256Gcm, &SecretKey::from_bytes(&key)).unwrap();
        let want = unhex(concat!(
            "b5d3c529dfafac43136d2d11be284d7f",
            "b914f4742be9e1d7a2f84addbf96dec3"
        ));
        assert_eq!(d.derive(&r).expose(), &want[..]);
    }

    /// The construction, block by block, with the block ciphers used
    /// directly, for both ciphers and an arbitrary key and R.
    #[test]
    fn kdf_is_the_truncated_block_encryptions() {
        let r: [u8; R_LEN] = std::array::from_fn(|i| 0x90 + i as u8);
        let expect = |enc: &dyn Fn(&mut [u8; 16]), blocks: u32| -> Vec<u8> {
            let mut out = Vec::new();
            for i in 0..blocks {
                let mut b = [0u8; 16];
                b[..4].copy_from_slice(&i.to_le_bytes());
                b[4..].copy_from_slice(&r);
                enc(&mut b);
                out.extend_from_slice(&b[..8]);
            }
            out
        };

        let key: Vec<u8> = (0..32).map(|i| 0x40 + i as u8).collect();
        let aes = aes::Aes256::new(&Array::try_from(&key[..]).unwrap());
        let want = expect(
            &|b| {
                let mut a = Array::from(*b);
                aes.encrypt_block(&mut a);
                b.copy_from_slice(&a);
            },
            4,
        );
        let d = KeyDeriver::new(Cipher::Aes256Gcm, &SecretKey::from_bytes(&key)).unwrap();
        assert_eq!(d.derive(&r).expose(), &want[..]);
        assert_eq!(want.len(), 32);

        let key = &key[..16];
        let sm4 = sm4::Sm4::new(&Array::try_from(key).unwrap());
        let want = expect(
            &|b| {
                let mut a = Array::from(*b);
                sm4.encrypt_block(&mut a);
                b.copy_from_slice(&a);
            },
            2,
        );
        let d = KeyDeriver::new(Cipher::Sm4Gcm, &SecretKey::from_bytes(key)).unwrap();
        assert_eq!(d.derive(&r).expose(), &want[..]);
        assert_eq!(want.len(), 16);

        // Another R, another key; unencrypted objects have none.
        let mut r2 = r;
        r2[11] ^= 1;
        assert_ne!(d.derive(&r2).expose(), d.derive(&r).expose());
        let none = KeyDeriver::new(Cipher::None, &SecretKey::from_bytes(&[])).unwrap();
        assert!(none.derive(&r).is_empty());
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused() {
        assert!(KeyDeriver::new(Cipher::Aes256Gcm, &SecretKey::from_bytes(&[0; 16])).is_err());
        assert!(KeyDeriver::new(Cipher::Sm4Gcm, &SecretKey::from_bytes(&[0; 32])).is_err());
    }
}
