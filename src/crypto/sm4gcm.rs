//! SM4-GCM: GCM (NIST SP 800-38D) over the SM4 block cipher (GB/T 32907-2016),
//! as RFC 8998 defines it. Built from aes-gcm's generic `AesGcm` over `sm4::Sm4`.

use aes_gcm::aead::array::Array;
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::inout::InOutBuf;
use aes_gcm::{AeadInOut, AesGcm, KeyInit};
use sm4::Sm4;

use super::{IntegrityError, Nonce, TAG_LEN};

type Inner = AesGcm<Sm4, U12>;

/// An SM4-GCM key schedule. `AesGcm` zeroizes its state on drop (the crate's
/// `zeroize` feature is on).
pub struct Sm4Gcm(Inner);

impl Sm4Gcm {
    /// `key` must be 16 bytes; `Aead::new` checks the length first.
    pub(super) fn new(key: &[u8]) -> Self {
        let mut k: Array<u8, _> = Array::default();
        k.copy_from_slice(key);
        Sm4Gcm(Inner::new(&k))
    }

    pub fn seal(&self, nonce: &Nonce, ad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let n = Array::from(nonce.0);
        // GCM only refuses plaintexts over 64 GiB; chunks are far smaller.
        #[allow(clippy::expect_used)]
        let tag = self
            .0
            .encrypt_inout_detached(&n, ad, InOutBuf::from(buf))
            .expect("chunk within GCM length limit");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&tag);
        out
    }

    pub fn open(
        &self,
        nonce: &Nonce,
        ad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), IntegrityError> {
        let n = Array::from(nonce.0);
        let t = Array::from(*tag);
        self.0
            .decrypt_inout_detached(&n, ad, InOutBuf::from(buf), &t)
            .map_err(|_| IntegrityError)
    }
}
