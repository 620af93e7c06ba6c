use proptest::prelude::*;

use super::*;
use crate::crypto::{Aead, Cipher, IntegrityError, Nonce, SecretKey};
use crate::format::header::KeyWrap;

/// A key-encryption key with a fixed wrap nonce, for test vectors.
pub(crate) struct FixedKek {
    pub key_id: [u8; 16],
    pub version: u32,
    pub key: SecretKey,
    pub nonce: [u8; 12],
}

impl KeyWrap for FixedKek {
    fn key_id(&self) -> [u8; 16] {
        self.key_id
    }
    fn version(&self) -> u32 {
        self.version
    }
    fn wrap(&self, ad: &[u8], dk: &SecretKey) -> ([u8; 12], Vec<u8>, [u8; 16]) {
        let a = Aead::new(Cipher::Aes256Gcm, &self.key).unwrap();
        let mut ct = dk.expose().to_vec();
        let tag = a.seal(&Nonce(self.nonce), ad, &mut ct);
        (self.nonce, ct, tag)
    }
    fn unwrap(
        &self,
        ad: &[u8],
        n: &[u8; 12],
        ct: &[u8],
        tag: &[u8; 16],
    ) -> Result<SecretKey, IntegrityError> {
        let a = Aead::new(Cipher::Aes256Gcm, &self.key).unwrap();
        let mut b = ct.to_vec();
        a.open(&Nonce(*n), ad, &mut b, tag)?;
        Ok(SecretKey::from_bytes(&b))
    }
}

fn seq(start: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| start.wrapping_add(i as u8)).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The inputs of the test vectors in FORMAT.md §6.
struct Vector {
    file: &'static str,
    method: Method,
    cipher: Cipher,
    key_id: [u8; 16],
    version: u32,
    wrap_nonce: u8,
}

const PLAINTEXT: &[u8] = b"ssefs test vector\n";

fn vectors() -> [Vector; 2] {
    [
        Vector {
            file: "aes256-sse-oss.hex",
            method: Method::Oss,
            cipher: Cipher::Aes256Gcm,
            key_id: [0; 16],
            version: 1,
            wrap_nonce: 0x11,
        },
        Vector {
            file: "sm4-sse-kms.hex",
            method: Method::Kms,
            cipher: Cipher::Sm4Gcm,
            key_id: seq(0xc0, 16).try_into().unwrap(),
            version: 2,
            wrap_nonce: 0x33,
        },
    ]
}

/// Builds a vector's bytes from FORMAT.md's description, step by step.
fn build(v: &Vector) -> (Vec<u8>, FixedKek) {
    let kek = FixedKek {
        key_id: v.key_id,
        version: v.version,
        key: SecretKey::from_bytes(&seq(0x00, 32)),
        nonce: [v.wrap_nonce; 12],
    };
    let object_id: [u8; 16] = seq(0xa0, 16).try_into().unwrap();
    let data_key = SecretKey::from_bytes(&seq(0x40, v.cipher.key_len()));
    let h = Header::seal_with(v.method, v.cipher, object_id, &kek, &data_key);
    let mut out = h.encode().to_vec();
    let aead = Aead::new(v.cipher, &data_key).unwrap();
    let nonce = Nonce([0x22; 12]);
    let mut body = PLAINTEXT.to_vec();
    let tag = aead.seal(&nonce, &chunk_ad(&object_id, 0, true), &mut body);
    out.extend_from_slice(&nonce.0);
    out.extend_from_slice(&body);
    out.extend_from_slice(&tag);
    (out, kek)
}

#[test]
fn test_vectors_match_the_files_and_the_spec() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/FORMAT.md")).unwrap();
    let doc_hex: String = doc.chars().filter(|c| !c.is_whitespace()).collect();
    for v in vectors() {
        let path = format!("{}/tests/vectors/{}", env!("CARGO_MANIFEST_DIR"), v.file);
        let want = unhex(&std::fs::read_to_string(&path).unwrap());
        let (built, kek) = build(&v);
        assert_eq!(
            hex(&built),
            hex(&want),
            "{} differs from the spec's construction",
            v.file
        );
        assert!(
            doc_hex.contains(&hex(&want)),
            "FORMAT.md does not show {}",
            v.file
        );

        // And the reader decodes it.
        let h = Header::parse(&want).unwrap();
        assert_eq!(
            (h.method, h.cipher, h.key_version),
            (v.method, v.cipher, v.version)
        );
        let dk = h.unwrap_data_key(&kek).unwrap();
        assert_eq!(dk.expose(), &seq(0x40, v.cipher.key_len())[..]);
        let aead = Aead::new(h.cipher, &dk).unwrap();
        assert_eq!(
            plaintext_len(want.len() as u64),
            Some(PLAINTEXT.len() as u64)
        );
        let mut slot = want[HEADER_LEN..].to_vec();
        let plain = open_chunk(&aead, &h.object_id, 0, true, &mut slot).unwrap();
        assert_eq!(plain, PLAINTEXT);
    }
}

/// Writes the vector files (run with --ignored after a deliberate format change).
#[test]
#[ignore]
fn regenerate_test_vectors() {
    for v in vectors() {
        let (b, _) = build(&v);
        let path = format!("{}/tests/vectors/{}", env!("CARGO_MANIFEST_DIR"), v.file);
        let text: String = b.chunks(32).map(|c| hex(c) + "\n").collect();
        std::fs::write(path, text).unwrap();
    }
}

#[test]
fn every_header_byte_is_checked() {
    let (b, kek) = build(&vectors()[1]);
    let good: [u8; HEADER_LEN] = b[..HEADER_LEN].try_into().unwrap();
    Header::parse(&good).unwrap();
    for i in 0..HEADER_LEN {
        for bit in [0x01u8, 0x80] {
            let mut h = good;
            h[i] ^= bit;
            // Either parsing refuses it, or (bytes the checksum covers cannot
            // all be caught without the key) the key unwrap does.
            if let Ok(parsed) = Header::parse(&h) {
                assert!(
                    parsed.unwrap_data_key(&kek).is_err(),
                    "byte {i} bit {bit:#x} undetected"
                );
            }
        }
    }
}

#[test]
fn a_plain_header_round_trips_and_has_no_key() {
    let h = Header::new_plain();
    let p = Header::parse(&h.encode()).unwrap();
    assert_eq!(p, h);
    assert_eq!(p.method, Method::None);
}

/// Tamper test (issue 6): a plain header's key version, changed with the
/// checksum recomputed, was accepted although nothing authenticates it.
#[test]
fn regression_a_plain_header_with_a_key_version_is_refused() {
    let mut b = Header::new_plain().encode();
    b[48] = 1;
    let sum = crate::crypto::checksum16(&[b"ssefs-header-v1", &b[..112]]);
    b[112..].copy_from_slice(&sum);
    let e = Header::parse(&b).unwrap_err();
    assert_eq!(e.code, crate::error::OssCode::DataIntegrityError);
}

#[test]
fn last_chunk_flag_and_index_are_bound() {
    let a = Aead::new(Cipher::Aes256Gcm, &SecretKey::random(32)).unwrap();
    let id = [7u8; 16];
    let mut slot = Vec::new();
    seal_chunk(&a, &id, 3, false, b"hello", &mut slot);
    assert!(open_chunk(&a, &id, 3, true, &mut slot.clone()).is_err());
    assert!(open_chunk(&a, &id, 4, false, &mut slot.clone()).is_err());
    assert!(open_chunk(&a, &[8u8; 16], 3, false, &mut slot.clone()).is_err());
    assert_eq!(open_chunk(&a, &id, 3, false, &mut slot).unwrap(), b"hello");
}

#[test]
fn rewriting_a_chunk_gives_different_ciphertext() {
    let a = Aead::new(Cipher::Sm4Gcm, &SecretKey::random(16)).unwrap();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    seal_chunk(&a, &[1; 16], 0, true, b"same plaintext", &mut x);
    seal_chunk(&a, &[1; 16], 0, true, b"same plaintext", &mut y);
    assert_ne!(x, y);
    assert_ne!(x[..12], y[..12], "nonces must differ");
}

#[test]
fn a_zero_slot_is_a_hole_only_when_not_last() {
    let a = Aead::new(Cipher::Aes256Gcm, &SecretKey::random(32)).unwrap();
    let mut z = vec![0u8; SLOT_SIZE];
    assert_eq!(
        open_chunk(&a, &[0; 16], 0, false, &mut z).unwrap(),
        &vec![0u8; CHUNK_SIZE][..]
    );
    assert!(open_chunk(&a, &[0; 16], 0, true, &mut vec![0u8; SLOT_SIZE]).is_err());
    assert!(open_chunk(&a, &[0; 16], 0, false, &mut [0u8; 100]).is_err());
}

proptest! {
    #[test]
    fn size_maps_round_trip(plain in 0u64..(1 << 40)) {
        let len = backend_len(plain);
        prop_assert_eq!(plaintext_len(len), Some(plain));
        prop_assert_eq!(chunk_count(plain), plain.div_ceil(CHUNK_SIZE as u64));
    }

    #[test]
    fn invalid_lengths_are_refused(full in 0u64..1000, rem in 1u64..=CHUNK_OVERHEAD as u64) {
        let len = HEADER_LEN as u64 + full * SLOT_SIZE as u64 + rem;
        prop_assert_eq!(plaintext_len(len), None);
    }
}
