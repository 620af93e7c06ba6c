//! SM4-GCM: GCM (NIST SP 800-38D) over the SM4 block cipher (GB/T 32907-2016),
//! as RFC 8998 defines it.
//!
//! Two implementations with identical output: on x86_64 CPUs with AES-NI, CTR
//! runs on the `sm4ni` kernels and GHASH on the `ghash` crate (PCLMULQDQ);
//! elsewhere, aes-gcm's generic `AesGcm` over the portable `sm4::Sm4`.

use aes_gcm::aead::array::Array;
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadInOut, AesGcm, KeyInit};
use sm4::Sm4;

use super::{IntegrityError, Nonce, TAG_LEN};

type Portable = AesGcm<Sm4, U12>;

/// An SM4-GCM key. Both implementations zeroize their key material on drop
/// (`AesGcm` through the crates' `zeroize` features, `Sm4Ni` and `GHash`
/// themselves).
pub struct Sm4Gcm(Imp);

enum Imp {
    #[cfg(target_arch = "x86_64")]
    Fast(fast::Sm4GcmNi),
    Portable(Portable),
}

impl Sm4Gcm {
    /// The fastest implementation this CPU runs.
    pub fn new(key: &[u8; 16]) -> Self {
        #[cfg(target_arch = "x86_64")]
        if let Some(k) = fast::Sm4GcmNi::new(key) {
            return Sm4Gcm(Imp::Fast(k));
        }
        Self::portable(key)
    }

    /// The portable implementation (the `sm4` crate), whatever the CPU; for
    /// tests and benchmarks that compare the two.
    pub fn portable(key: &[u8; 16]) -> Self {
        Sm4Gcm(Imp::Portable(Portable::new(&Array::from(*key))))
    }

    /// Whether this key runs on the AES-NI kernels.
    pub fn is_accelerated(&self) -> bool {
        !matches!(self.0, Imp::Portable(_))
    }

    pub fn seal(&self, nonce: &Nonce, ad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        match &self.0 {
            #[cfg(target_arch = "x86_64")]
            Imp::Fast(k) => k.seal(nonce, ad, buf),
            Imp::Portable(k) => {
                // GCM only refuses plaintexts over 64 GiB; chunks are far smaller.
                #[allow(clippy::expect_used)]
                let tag = k
                    .encrypt_inout_detached(&Array::from(nonce.0), ad, InOutBuf::from(buf))
                    .expect("chunk within GCM length limit");
                let mut out = [0u8; TAG_LEN];
                out.copy_from_slice(&tag);
                out
            }
        }
    }

    /// Decrypts `buf` in place if `tag` authenticates it. Both implementations
    /// check the tag (in constant time) before decrypting, so a failure leaves
    /// the ciphertext in `buf`, never plaintext.
    pub fn open(
        &self,
        nonce: &Nonce,
        ad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), IntegrityError> {
        match &self.0 {
            #[cfg(target_arch = "x86_64")]
            Imp::Fast(k) => k.open(nonce, ad, buf, tag),
            Imp::Portable(k) => k
                .decrypt_inout_detached(
                    &Array::from(nonce.0),
                    ad,
                    InOutBuf::from(buf),
                    &Array::from(*tag),
                )
                .map_err(|_| IntegrityError),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod fast {
    use ghash::universal_hash::UniversalHash;
    use ghash::GHash;
    use subtle::ConstantTimeEq;
    use zeroize::Zeroize;

    use super::super::sm4ni::Sm4Ni;
    #[cfg(test)]
    use super::super::sm4ni::Tier;
    use super::super::{IntegrityError, Nonce, TAG_LEN};

    /// SP 800-38D's plaintext limit, 2^39 - 256 bits: beyond it the 32-bit
    /// counter would wrap onto J0 and reuse keystream.
    const P_MAX: u64 = (1 << 36) - 32;

    /// GCM over the AES-NI SM4 kernel. `Sm4Ni` zeroizes its round keys and
    /// `GHash` its powers of H on drop (ghash's `zeroize` feature).
    pub(super) struct Sm4GcmNi {
        cipher: Sm4Ni,
        ghash: GHash,
    }

    impl Sm4GcmNi {
        pub(super) fn new(key: &[u8; 16]) -> Option<Self> {
            Sm4Ni::new(key).map(Self::from_cipher)
        }

        /// At a given tier, so that tests cover the narrower one too.
        #[cfg(test)]
        pub(super) fn with_tier(key: &[u8; 16], tier: Tier) -> Option<Self> {
            Sm4Ni::with_tier(key, tier).map(Self::from_cipher)
        }

        fn from_cipher(cipher: Sm4Ni) -> Self {
            let mut h = [[0u8; 16]];
            cipher.encrypt_blocks(&mut h);
            let ghash = GHash::new(&h[0].into());
            h.zeroize();
            Sm4GcmNi { cipher, ghash }
        }

        #[cfg(test)]
        pub(super) fn tier(&self) -> Tier {
            self.cipher.tier()
        }

        pub(super) fn seal(&self, nonce: &Nonce, ad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
            // Same contract as aes-gcm's `expect` on the portable path.
            assert!(buf.len() as u64 <= P_MAX, "chunk within GCM length limit");
            // Counter 1 is J0, which masks the tag; data starts at 2.
            self.cipher.apply_keystream(&nonce.0, 2, buf);
            self.tag(nonce, ad, buf)
        }

        pub(super) fn open(
            &self,
            nonce: &Nonce,
            ad: &[u8],
            buf: &mut [u8],
            tag: &[u8; TAG_LEN],
        ) -> Result<(), IntegrityError> {
            if buf.len() as u64 > P_MAX {
                return Err(IntegrityError);
            }
            let want = self.tag(nonce, ad, buf);
            if bool::from(want.ct_eq(tag)) {
                self.cipher.apply_keystream(&nonce.0, 2, buf);
                Ok(())
            } else {
                Err(IntegrityError)
            }
        }

        /// GHASH(AD, ciphertext, lengths) XOR E(J0).
        fn tag(&self, nonce: &Nonce, ad: &[u8], ct: &[u8]) -> [u8; TAG_LEN] {
            let mut g = self.ghash.clone();
            g.update_padded(ad);
            g.update_padded(ct);
            let mut lens = ghash::Block::default();
            lens[..8].copy_from_slice(&(ad.len() as u64 * 8).to_be_bytes());
            lens[8..].copy_from_slice(&(ct.len() as u64 * 8).to_be_bytes());
            g.update(&[lens]);
            let s = g.finalize();

            let mut j0 = [[0u8; 16]];
            j0[0][..12].copy_from_slice(&nonce.0);
            j0[0][15] = 1;
            self.cipher.encrypt_blocks(&mut j0);
            let mut tag = [0u8; TAG_LEN];
            for ((t, a), b) in tag.iter_mut().zip(s.iter()).zip(j0[0].iter()) {
                *t = a ^ b;
            }
            tag
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
impl Sm4Gcm {
    /// The AES-NI implementation at `tier`, if this CPU runs it.
    pub(super) fn with_tier(key: &[u8; 16], tier: super::sm4ni::Tier) -> Option<Self> {
        fast::Sm4GcmNi::with_tier(key, tier).map(|k| Sm4Gcm(Imp::Fast(k)))
    }

    pub(super) fn tier(&self) -> Option<super::sm4ni::Tier> {
        match &self.0 {
            Imp::Fast(k) => Some(k.tier()),
            Imp::Portable(_) => None,
        }
    }
}
