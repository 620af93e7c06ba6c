use proptest::prelude::*;

use super::*;
use crate::crypto::derive::KeyDeriver;
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

/// A K_plain (§4.2) for tests that need any.
fn plain_key() -> SecretKey {
    SecretKey::from_bytes(&[0x5a; 32])
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
    /// `chunk` in wide slots: every chunk's R is twelve bytes of this.
    wide_r: Option<u8>,
    file: &'static str,
    method: Method,
    cipher: Cipher,
    chunk: ChunkSize,
    key_id: [u8; 16],
    version: u32,
    wrap_nonce: u8,
    plaintext: Vec<u8>,
}

const PLAINTEXT: &[u8] = b"ssefs test vector\n";

/// The content of the 4 KiB vectors (§6): bytes 00 01 .. ff repeated to
/// 4096, then `PLAINTEXT`: a full chunk and a last one of 18 bytes.
fn two_4k_chunks() -> Vec<u8> {
    [
        (0..4096).map(|i| i as u8).collect::<Vec<u8>>(),
        PLAINTEXT.to_vec(),
    ]
    .concat()
}

impl Vector {
    /// The data key: bytes 40 41 … (its cipher's length), or for an
    /// unencrypted object K_plain = bytes 80 81 … 9f (§4.2).
    fn data_key(&self) -> Vec<u8> {
        match self.method {
            Method::None => seq(0x80, 32),
            _ => seq(0x40, self.cipher.key_len()),
        }
    }
}

fn vectors() -> [Vector; 5] {
    [
        Vector {
            wide_r: None,
            file: "aes256-sse-oss.hex",
            method: Method::Oss,
            cipher: Cipher::Aes256Gcm,
            chunk: ChunkSize::KIB16,
            key_id: [0; 16],
            version: 1,
            wrap_nonce: 0x11,
            plaintext: PLAINTEXT.to_vec(),
        },
        Vector {
            wide_r: None,
            file: "sm4-sse-kms.hex",
            method: Method::Kms,
            cipher: Cipher::Sm4Gcm,
            chunk: ChunkSize::KIB16,
            key_id: seq(0xc0, 16).try_into().unwrap(),
            version: 2,
            wrap_nonce: 0x33,
            plaintext: PLAINTEXT.to_vec(),
        },
        // Two 4 KiB chunks (§6).
        Vector {
            wide_r: None,
            file: "aes256-sse-oss-4k.hex",
            method: Method::Oss,
            cipher: Cipher::Aes256Gcm,
            chunk: ChunkSize::KIB4,
            key_id: [0; 16],
            version: 1,
            wrap_nonce: 0x44,
            plaintext: two_4k_chunks(),
        },
        // The same content in wide 4 KiB slots (§3.1, §4.1): both chunks
        // under R = twelve 66 bytes, as one write seals them.
        Vector {
            wide_r: Some(0x66),
            file: "aes256-sse-oss-4k-wide.hex",
            method: Method::Oss,
            cipher: Cipher::Aes256Gcm,
            chunk: ChunkSize::KIB4.wide(),
            key_id: [0; 16],
            version: 1,
            wrap_nonce: 0x55,
            plaintext: two_4k_chunks(),
        },
        // The same content unencrypted, in wide 4 KiB slots with keyed tags
        // under K_plain (§2.5, §4.2); R = twelve 77 bytes.
        Vector {
            wide_r: Some(0x77),
            file: "plain-4k-wide.hex",
            method: Method::None,
            cipher: Cipher::None,
            chunk: ChunkSize::KIB4.wide(),
            key_id: [0; 16],
            version: 0,
            wrap_nonce: 0,
            plaintext: two_4k_chunks(),
        },
    ]
}

/// What FORMAT.md shows of a vector: all of it when it is short; else the
/// header, the last slot and the SHA-256 of the whole file.
fn shown_in_doc(v: &Vector, bytes: &[u8]) -> Vec<String> {
    if bytes.len() <= 512 {
        return vec![hex(bytes)];
    }
    let last = v
        .chunk
        .slot_offset(v.chunk.chunk_count(v.plaintext.len() as u64) - 1) as usize;
    vec![
        hex(&bytes[..HEADER_LEN]),
        hex(&bytes[last..]),
        hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref()),
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
    let data_key = SecretKey::from_bytes(&v.data_key());
    let h = match v.method {
        Method::None => Header::plain_with(v.chunk, object_id, &data_key).unwrap(),
        _ => Header::seal_with(v.method, v.cipher, v.chunk, object_id, &kek, &data_key),
    };
    let mut out = h.encode().to_vec();
    // Narrow slots are sealed under the data key; wide ones under
    // K_R = KDF(data key, R) (§4.1), and begin with R; an unencrypted
    // object's wide slots carry the keyed tag of §4.2.
    let kdf = KeyDeriver::new(v.cipher, &data_key).unwrap();
    let aead = match v.wide_r {
        None => Aead::new(v.cipher, &data_key).unwrap(),
        Some(r) => Aead::new(v.cipher, &kdf.derive(&[r; 12])).unwrap(),
    };
    let chunks: Vec<&[u8]> = v.plaintext.chunks(v.chunk.bytes()).collect();
    for (i, plain) in chunks.iter().enumerate() {
        // Chunk i's nonce (N, when wide) is twelve bytes of 0x22 + i.
        let nonce = Nonce([0x22 + i as u8; 12]);
        let mut body = plain.to_vec();
        let last = i + 1 == chunks.len();
        let ad = chunk_ad(&object_id, i as u64, last);
        let tag = match (v.method, v.wide_r) {
            (Method::None, Some(r)) => kdf.plain_tag(&ad, &[r; 12], &nonce.0, &body),
            _ => aead.seal(&nonce, &ad, &mut body),
        };
        if let Some(r) = v.wide_r {
            out.extend_from_slice(&[r; 12]);
        }
        out.extend_from_slice(&nonce.0);
        out.extend_from_slice(&body);
        out.extend_from_slice(&tag);
    }
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
        for part in shown_in_doc(&v, &want) {
            assert!(
                doc_hex.contains(&part),
                "FORMAT.md does not show {} ({part})",
                v.file
            );
        }

        // And the reader decodes it.
        let h = Header::parse(&want).unwrap();
        assert_eq!(
            (h.method, h.cipher, h.chunk, h.key_version),
            (v.method, v.cipher, v.chunk, v.version)
        );
        let dk = match h.method {
            Method::None => {
                let k = SecretKey::from_bytes(&v.data_key());
                h.check_plain(&k).unwrap();
                k
            }
            _ => h.unwrap_data_key(&kek).unwrap(),
        };
        assert_eq!(dk.expose(), &v.data_key()[..]);
        let keys = ChunkKeys::new(h.cipher, h.chunk, &dk).unwrap();
        let size = h.chunk.plaintext_len(want.len() as u64).unwrap();
        assert_eq!(size, v.plaintext.len() as u64);
        let n = h.chunk.chunk_count(size);
        let mut got = Vec::new();
        for i in 0..n {
            let from = h.chunk.slot_offset(i) as usize;
            let to = (h.chunk.slot_offset(i + 1) as usize).min(want.len());
            let mut slot = want[from..to].to_vec();
            let plain = keys.open(&h.object_id, i, i + 1 == n, &mut slot).unwrap();
            got.extend_from_slice(plain);
        }
        assert_eq!(got, v.plaintext);
    }
}

/// The vector files are exactly what the construction writes, byte for
/// byte, layout included (the test above compares decoded bytes only, so a
/// hand edit that reflows a file would pass it). After a deliberate format
/// change, `SSEFS_WRITE_VECTORS=1 cargo test --lib vector_files` rewrites
/// them; the comparison still runs, so a missing write fails.
#[test]
fn vector_files_are_the_generators_output() {
    let write = std::env::var_os("SSEFS_WRITE_VECTORS").is_some();
    for v in vectors() {
        let (b, _) = build(&v);
        let path = format!("{}/tests/vectors/{}", env!("CARGO_MANIFEST_DIR"), v.file);
        let text: String = b.chunks(32).map(|c| hex(c) + "\n").collect();
        if write {
            std::fs::write(&path, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert!(
            on_disk == text,
            "{} is not the generator's output (SSEFS_WRITE_VECTORS=1 rewrites it)",
            v.file
        );
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
    for c in ChunkSize::ALL {
        let h = Header::new_plain(c, &plain_key()).unwrap();
        let p = Header::parse(&h.encode()).unwrap();
        assert_eq!(p, h);
        assert_eq!((p.method, p.chunk), (Method::None, c));
    }
}

/// Byte 11 (§2, §2.4): 12, 14 and 16 are the only chunk sizes; any other
/// value, even under a valid checksum, is refused, and an accepted one is
/// covered by the key wrap (changing it fails the unwrap).
#[test]
fn only_4_16_and_64_kib_chunks_are_accepted() {
    let (b, kek) = build(&vectors()[0]);
    let good: [u8; HEADER_LEN] = b[..HEADER_LEN].try_into().unwrap();
    assert_eq!(good[11], 14);
    let mut accepted = Vec::new();
    for v in 0..=255u8 {
        let mut h = good;
        h[11] = v;
        let sum = crate::crypto::checksum16(&[b"ssefs-header-v1", &h[..112]]);
        h[112..].copy_from_slice(&sum);
        match Header::parse(&h) {
            Ok(p) => {
                assert_eq!(p.chunk.shift(), v);
                assert_eq!(p.chunk.bytes(), 1 << v);
                if v != 14 {
                    assert!(
                        p.unwrap_data_key(&kek).is_err(),
                        "byte 11 = {v} not authenticated"
                    );
                }
                accepted.push(v);
            }
            Err(e) => assert_eq!(e.code, crate::error::OssCode::DataIntegrityError),
        }
    }
    assert_eq!(accepted, vec![12, 14, 16]);
    assert_eq!(ChunkSize::ALL.map(|c| c.bytes()), [4096, 16384, 65536]);
    for c in ChunkSize::ALL {
        assert_eq!(ChunkSize::from_bytes(c.bytes() as u64), Some(c));
        assert_eq!(ChunkSize::parse(c.to_string().as_bytes()).unwrap(), c);
        assert!(c.bytes() <= ChunkSize::MAX_BYTES);
    }
    for bad in [
        "", "0", "4097", "8192", "32768", "131072", "04096", "+4096", " 4096", "4096\n", "4k",
        "0x1000",
    ] {
        assert!(ChunkSize::parse(bad.as_bytes()).is_err(), "{bad:?}");
    }
}

/// Tamper test (issue 6): a plain header's key version, changed with the
/// checksum recomputed, was accepted although nothing authenticates it.
#[test]
fn regression_a_plain_header_with_a_key_version_is_refused() {
    let mut b = Header::new_plain(ChunkSize::DEFAULT, &plain_key())
        .unwrap()
        .encode();
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
    assert!(open_chunk(&a, ChunkSize::DEFAULT, &id, 3, true, &mut slot.clone()).is_err());
    assert!(open_chunk(&a, ChunkSize::DEFAULT, &id, 4, false, &mut slot.clone()).is_err());
    assert!(open_chunk(
        &a,
        ChunkSize::DEFAULT,
        &[8u8; 16],
        3,
        false,
        &mut slot.clone()
    )
    .is_err());
    assert_eq!(
        open_chunk(&a, ChunkSize::DEFAULT, &id, 3, false, &mut slot).unwrap(),
        b"hello"
    );
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
    for c in ChunkSize::ALL {
        let mut z = vec![0u8; c.slot()];
        assert_eq!(
            open_chunk(&a, c, &[0; 16], 0, false, &mut z).unwrap(),
            &vec![0u8; c.bytes()][..]
        );
        assert!(open_chunk(&a, c, &[0; 16], 0, true, &mut vec![0u8; c.slot()]).is_err());
        assert!(open_chunk(&a, c, &[0; 16], 0, false, &mut [0u8; 100]).is_err());
        // A zero slot of another chunk size is no hole here.
        for other in ChunkSize::ALL.into_iter().filter(|o| *o != c) {
            let mut z = vec![0u8; other.slot()];
            assert!(open_chunk(&a, c, &[0; 16], 0, false, &mut z).is_err());
        }
    }
}

/// The sizes of §3.2 for C = 4096, worked by hand.
#[test]
fn sizes_of_4_kib_chunks() {
    let c = ChunkSize::KIB4;
    assert_eq!(c.slot(), 4124);
    assert_eq!(c.backend_len(0), 128);
    assert_eq!(c.backend_len(1), 128 + 29);
    assert_eq!(c.backend_len(4096), 128 + 4124);
    assert_eq!(c.backend_len(4097), 128 + 4124 + 29);
    assert_eq!(c.plaintext_len(128 + 2 * 4124 + 28), None);
    assert_eq!(c.plaintext_len(128 + 2 * 4124 + 29), Some(8193));
    assert_eq!(c.shown_len(128 + 2 * 4124 + 10), (8192, true));
    assert_eq!((c.index_of(4095), c.index_of(4096)), (0, 1));
    assert_eq!(c.chunk_len(4097, 1), 1);
    // The same file length means another size under another chunk size:
    // why an object must have its bucket's (§3.2).
    assert_eq!(c.plaintext_len(128 + 2 * 4124), Some(8192));
    assert_eq!(
        ChunkSize::KIB16.plaintext_len(128 + 2 * 4124),
        Some(8192 + 28)
    );
}

/// Every chunk size, in both slot formats.
fn all_chunks() -> Vec<ChunkSize> {
    ChunkSize::ALL
        .into_iter()
        .flat_map(|c| [c, c.wide()])
        .collect()
}

fn any_chunk() -> impl Strategy<Value = ChunkSize> {
    prop::sample::select(all_chunks())
}

proptest! {
    #[test]
    fn size_maps_round_trip(c in any_chunk(), plain in 0u64..(1 << 40)) {
        let len = c.backend_len(plain);
        prop_assert_eq!(c.plaintext_len(len), Some(plain));
        prop_assert_eq!(c.shown_len(len), (plain, false));
        prop_assert_eq!(c.chunk_count(plain), plain.div_ceil(c.bytes() as u64));
    }

    #[test]
    fn invalid_lengths_are_refused(
        c in any_chunk(),
        full in 0u64..1000,
        rem in 1u64..=WIDE_OVERHEAD as u64,
    ) {
        prop_assume!(rem <= c.overhead() as u64);
        let len = HEADER_LEN as u64 + full * c.slot() as u64 + rem;
        prop_assert_eq!(c.plaintext_len(len), None);
        prop_assert_eq!(c.shown_len(len), (full * c.bytes() as u64, true));
    }
}

// ------------------------------------------------------------ wide slots

fn wide_keys(cipher: Cipher, c: ChunkSize) -> ChunkKeys {
    ChunkKeys::new(cipher, c.wide(), &SecretKey::random(cipher.key_len())).unwrap()
}

/// Seals chunk 3 of object 7.. (not last) in one write and returns the slot.
fn sealed_wide(keys: &ChunkKeys, plain: &[u8]) -> Vec<u8> {
    let mut slot = Vec::new();
    keys.sealer()
        .seal(&[7; 16], 3, false, plain, &mut slot)
        .unwrap();
    slot
}

/// §3.1, §4.1: a wide slot is R ‖ N ‖ ciphertext ‖ tag, opens back, and
/// any change to R, N, the ciphertext, the tag or the associated data
/// fails, for each cipher (and the checksum of unencrypted objects).
#[test]
fn wide_slots_round_trip_and_bind_r_and_n() {
    for cipher in [Cipher::Aes256Gcm, Cipher::Sm4Gcm, Cipher::None] {
        let keys = wide_keys(cipher, ChunkSize::KIB4);
        let plain = b"wide slot plaintext";
        let slot = sealed_wide(&keys, plain);
        assert_eq!(slot.len(), plain.len() + 40);
        assert_eq!(
            keys.open(&[7; 16], 3, false, &mut slot.clone()).unwrap(),
            plain
        );
        if cipher != Cipher::None {
            assert_ne!(
                &slot[24..24 + plain.len()],
                plain,
                "{cipher:?}: not encrypted"
            );
        }
        for at in [0, 11, 12, 23, 24, slot.len() - 1] {
            let mut bad = slot.clone();
            bad[at] ^= 1;
            assert!(
                keys.open(&[7; 16], 3, false, &mut bad).is_err(),
                "{cipher:?}: byte {at} changed undetected"
            );
        }
        assert!(keys.open(&[7; 16], 4, false, &mut slot.clone()).is_err());
        assert!(keys.open(&[7; 16], 3, true, &mut slot.clone()).is_err());
        assert!(keys.open(&[8; 16], 3, false, &mut slot.clone()).is_err());
        // Under another data key it does not open.
        let other = wide_keys(cipher, ChunkSize::KIB4);
        if cipher != Cipher::None {
            assert!(other.open(&[7; 16], 3, false, &mut slot.clone()).is_err());
        }
        // Nor as a narrow slot of the same key length.
        let narrow = ChunkKeys::new(
            cipher,
            ChunkSize::KIB4,
            &SecretKey::random(cipher.key_len()),
        )
        .unwrap();
        assert!(narrow.open(&[7; 16], 3, false, &mut slot.clone()).is_err());
    }
}

/// One write shares an R; another write draws a new one; N is new for
/// every chunk. With a test limit of 2 chunks per R, a write of five
/// chunks uses three R.
#[test]
fn a_write_shares_one_r_up_to_the_limit() {
    let keys = wide_keys(Cipher::Aes256Gcm, ChunkSize::KIB4);
    let seal_run = |n: u64| -> Vec<Vec<u8>> {
        let mut s = keys.sealer();
        (0..n)
            .map(|i| {
                let mut slot = Vec::new();
                s.seal(&[1; 16], i, false, b"x", &mut slot).unwrap();
                slot
            })
            .collect()
    };
    let distinct = |slots: &[Vec<u8>], range: std::ops::Range<usize>| {
        slots
            .iter()
            .map(|s| s[range.clone()].to_vec())
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let a = seal_run(5);
    assert_eq!(distinct(&a, 0..12), 1);
    assert_eq!(distinct(&a, 12..24), 5);
    let b = seal_run(1);
    assert_ne!(a[0][..12], b[0][..12], "a new write draws a new R");

    super::chunk::TEST_MAX_CHUNKS_PER_R.with(|c| c.set(Some(2)));
    let c = seal_run(5);
    super::chunk::TEST_MAX_CHUNKS_PER_R.with(|c| c.set(None));
    assert_eq!(distinct(&c, 0..12), 3);
    for (i, s) in c.iter().enumerate() {
        assert_eq!(
            keys.open(&[1; 16], i as u64, false, &mut s.clone())
                .unwrap(),
            b"x"
        );
    }
    assert_eq!(max_chunks_per_r(), MAX_CHUNKS_PER_R);
}

/// §3.3 in wide slots: an all-zero full slot (C + 40 bytes) that is not
/// last reads as zeros; a zero slot of narrow size, or a last one, fails.
#[test]
fn a_zero_wide_slot_is_a_hole_only_when_not_last() {
    for cipher in [Cipher::Aes256Gcm, Cipher::Sm4Gcm, Cipher::None] {
        for c in ChunkSize::ALL {
            let keys = wide_keys(cipher, c);
            let mut z = vec![0u8; c.wide().slot()];
            assert_eq!(z.len(), c.bytes() + 40);
            assert_eq!(
                keys.open(&[0; 16], 0, false, &mut z).unwrap(),
                &vec![0u8; c.bytes()][..]
            );
            let mut z = vec![0u8; c.wide().slot()];
            assert!(keys.open(&[0; 16], 0, true, &mut z).is_err());
            let mut z = vec![0u8; c.slot()];
            assert!(keys.open(&[0; 16], 0, false, &mut z).is_err());
            assert!(keys.open(&[0; 16], 0, false, &mut [0u8; 40]).is_err());
        }
    }
}

/// §2, byte 12: 0 narrow, 1 wide; other values are refused even under a
/// valid checksum, and the byte is authenticated by the key wrap.
#[test]
fn header_byte_12_is_the_slot_format() {
    let (b, kek) = build(&vectors()[0]);
    let good: [u8; HEADER_LEN] = b[..HEADER_LEN].try_into().unwrap();
    assert_eq!(good[12], 0);
    let (bw, kekw) = build(&vectors()[3]);
    let wide = Header::parse(&bw).unwrap();
    assert_eq!(bw[12], 1);
    assert_eq!(wide.chunk, ChunkSize::KIB4.wide());
    assert_eq!(wide.chunk.format(), SlotFormat::Wide);
    wide.unwrap_data_key(&kekw).unwrap();
    let mut accepted = Vec::new();
    for v in 0..=255u8 {
        let mut h = good;
        h[12] = v;
        let sum = crate::crypto::checksum16(&[b"ssefs-header-v1", &h[..112]]);
        h[112..].copy_from_slice(&sum);
        match Header::parse(&h) {
            Ok(p) => {
                assert_eq!(p.chunk.format().byte(), v);
                assert_eq!(p.chunk.bytes(), 16384);
                assert_eq!(Header::parse(&p.encode()).unwrap(), p);
                if v != 0 {
                    assert!(
                        p.unwrap_data_key(&kek).is_err(),
                        "byte 12 not authenticated"
                    );
                }
                accepted.push(v);
            }
            Err(e) => assert_eq!(e.code, crate::error::OssCode::DataIntegrityError),
        }
    }
    assert_eq!(accepted, vec![0, 1]);
    for c in all_chunks() {
        let h = Header::new_plain(c, &plain_key()).unwrap();
        assert_eq!(Header::parse(&h.encode()).unwrap().chunk, c);
    }
}

/// The sizes of §3.2 for wide 4 KiB slots, worked by hand.
#[test]
fn sizes_of_wide_4_kib_chunks() {
    let c = ChunkSize::KIB4.wide();
    assert_eq!((c.slot(), c.overhead()), (4136, 40));
    assert_eq!(c.backend_len(0), 128);
    assert_eq!(c.backend_len(1), 128 + 41);
    assert_eq!(c.backend_len(4096), 128 + 4136);
    assert_eq!(c.backend_len(4097), 128 + 4136 + 41);
    assert_eq!(c.slot_offset(2), 128 + 2 * 4136);
    assert_eq!(c.plaintext_len(128 + 2 * 4136 + 40), None);
    assert_eq!(c.plaintext_len(128 + 2 * 4136 + 41), Some(8193));
    assert_eq!(c.shown_len(128 + 2 * 4136 + 30), (8192, true));
    // A narrow object's length read as wide is another size, or none.
    assert_eq!(ChunkSize::KIB4.plaintext_len(128 + 4124 + 29), Some(4097));
    assert_eq!(c.plaintext_len(128 + 4124 + 29), None);
}

/// Issue 12: an unencrypted object's header carries a MAC under K_plain
/// (§2.5). Without K_plain no header can be made to pass: every bit of
/// bytes 0..112, flipped with the checksum recomputed (as anyone can), is
/// refused by the parser or by the MAC; another K_plain refuses it whole.
#[test]
fn an_unencrypted_header_is_authenticated_under_k_plain() {
    for c in all_chunks() {
        let h = Header::new_plain(c, &plain_key()).unwrap();
        assert!(!h.is_unkeyed_plain());
        let good = h.encode();
        Header::parse(&good)
            .unwrap()
            .check_plain(&plain_key())
            .unwrap();
        let other = SecretKey::from_bytes(&[0xa5; 32]);
        assert!(Header::parse(&good).unwrap().check_plain(&other).is_err());
        for i in 0..112 {
            for bit in [0x01u8, 0x80] {
                let mut b = good;
                b[i] ^= bit;
                let sum = crate::crypto::checksum16(&[b"ssefs-header-v1", &b[..112]]);
                b[112..].copy_from_slice(&sum);
                if let Ok(p) = Header::parse(&b) {
                    assert!(
                        p.check_plain(&plain_key()).is_err(),
                        "byte {i} bit {bit:#x} of a plain header undetected"
                    );
                }
            }
        }
        // Stripping the MAC makes a header of the old, unkeyed kind: the
        // parser takes it (the engine decides whether that kind is still
        // accepted), but it never passes as keyed.
        let mut b = good;
        b[96..112].fill(0);
        let sum = crate::crypto::checksum16(&[b"ssefs-header-v1", &b[..112]]);
        b[112..].copy_from_slice(&sum);
        let p = Header::parse(&b).unwrap();
        assert!(p.is_unkeyed_plain());
        assert!(p.check_plain(&plain_key()).is_err());
    }
}

/// Issue 12: an unencrypted object's chunk tags are keyed (§4.2), narrow
/// and wide. A slot whose content was changed, or forged with the unkeyed
/// checksum (all that was needed before), or sealed under another K_plain,
/// does not open; one sealed under K_plain does.
#[test]
fn unencrypted_chunks_are_authenticated_under_k_plain() {
    let id = [3u8; 16];
    let unkeyed = SecretKey::from_bytes(&[]);
    let other = SecretKey::from_bytes(&[0xa5; 32]);
    for c in all_chunks() {
        let keys = ChunkKeys::new(Cipher::None, c, &plain_key()).unwrap();
        let seal = |k: &SecretKey, body: &[u8]| {
            let ks = ChunkKeys::new(Cipher::None, c, k).unwrap();
            let mut out = Vec::new();
            ks.sealer().seal(&id, 5, true, body, &mut out).unwrap();
            out
        };
        let slot = seal(&plain_key(), b"the real content");
        let mut s = slot.clone();
        assert_eq!(
            keys.open(&id, 5, true, &mut s).unwrap(),
            b"the real content"
        );
        // The content sits in the clear; change one byte of it.
        let mut s = slot.clone();
        let at = c.overhead() - TAG_LEN_FOR_TEST;
        s[at] ^= 1;
        assert!(keys.open(&id, 5, true, &mut s).is_err(), "{c:?}");
        // Moved to another index, or marked not last.
        assert!(keys.open(&id, 6, true, &mut slot.clone()).is_err());
        assert!(keys.open(&id, 5, false, &mut slot.clone()).is_err());
        for forged in [
            seal(&unkeyed, b"forged content!!"),
            seal(&other, b"forged content!!"),
        ] {
            assert!(
                keys.open(&id, 5, true, &mut forged.clone()).is_err(),
                "{c:?}: a slot without K_plain opened"
            );
        }
        // And a keyed slot is not an unkeyed one either.
        let old = ChunkKeys::new(Cipher::None, c, &unkeyed).unwrap();
        assert!(old.open(&id, 5, true, &mut slot.clone()).is_err());
    }
}

/// Tag length, for finding the content in a slot (its tag comes last).
const TAG_LEN_FOR_TEST: usize = crate::crypto::TAG_LEN;
