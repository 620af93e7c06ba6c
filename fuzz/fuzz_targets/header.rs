//! The object reader's first steps on an arbitrary backend file: header
//! parse (FORMAT.md §2.4), data key unwrap (§2.2), size arithmetic (§3.2)
//! and chunk opening (§4).
//!
//! Properties, beyond "does not panic":
//! - only the first 128 bytes matter to the parser;
//! - an accepted header is canonical: encoding it gives back exactly the
//!   bytes it was parsed from, which parse to the same header;
//! - sizes: a file length that holds a valid object maps to a plaintext size
//!   whose backend length is that file length, and back;
//! - with the test KEK (FORMAT.md §6), an unwrapped data key has the cipher's
//!   length and survives a re-wrap; a chunk that opens has the length the
//!   file size says, and sealing it again opens to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

use ssefs::crypto::{checksum16, Aead, Cipher, IntegrityError, Nonce, SecretKey};
use ssefs::format::{
    backend_len, chunk_count, chunk_len, open_chunk, plaintext_len, seal_chunk, slot_offset,
    Header, KeyWrap, Method, HEADER_LEN, SLOT_SIZE,
};

/// The KEK of the test vectors: bytes 00..1f, under whatever key id and
/// version the header names.
struct TestKek {
    key_id: [u8; 16],
    version: u32,
}

fn kek_key() -> SecretKey {
    SecretKey::from_bytes(&(0u8..32).collect::<Vec<_>>())
}

impl KeyWrap for TestKek {
    fn key_id(&self) -> [u8; 16] {
        self.key_id
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn wrap(&self, ad: &[u8], data_key: &SecretKey) -> ([u8; 12], Vec<u8>, [u8; 16]) {
        let aead = Aead::new(Cipher::Aes256Gcm, &kek_key()).expect("32-byte KEK");
        let nonce = Nonce::random();
        let mut ct = data_key.expose().to_vec();
        let tag = aead.seal(&nonce, ad, &mut ct);
        (nonce.0, ct, tag)
    }

    fn unwrap(
        &self,
        ad: &[u8],
        nonce: &[u8; 12],
        ct: &[u8],
        tag: &[u8; 16],
    ) -> Result<SecretKey, IntegrityError> {
        let aead = Aead::new(Cipher::Aes256Gcm, &kek_key())?;
        let mut buf = ct.to_vec();
        aead.open(&Nonce(*nonce), ad, &mut buf, tag)?;
        Ok(SecretKey::from_bytes(&buf))
    }
}

fn check_sizes(file_len: u64) {
    if let Some(plain) = plaintext_len(file_len) {
        assert_eq!(backend_len(plain), file_len, "size {plain} from {file_len}");
    }
    // Every plaintext size a file can have (up to i64::MAX, the largest
    // file) has a backend length that maps back to it.
    let plain = file_len & (i64::MAX as u64);
    let back = backend_len(plain);
    assert_eq!(
        plaintext_len(back),
        Some(plain),
        "backend length {back} of {plain}"
    );
}

fn check(data: &[u8]) {
    check_sizes(data.len() as u64);
    if data.len() >= 8 {
        let mut n = [0u8; 8];
        n.copy_from_slice(&data[data.len() - 8..]);
        check_sizes(u64::from_le_bytes(n));
    }

    let parsed = Header::parse(data);
    let first = Header::parse(&data[..data.len().min(HEADER_LEN)]);
    assert_eq!(
        parsed.is_ok(),
        first.is_ok(),
        "bytes past the header changed the verdict"
    );
    let Ok(h) = parsed else { return };
    assert_eq!(first.ok().as_ref(), Some(&h));
    let enc = h.encode();
    assert_eq!(
        &enc[..],
        &data[..HEADER_LEN],
        "accepted a non-canonical header"
    );
    assert_eq!(
        Header::parse(&enc).ok().as_ref(),
        Some(&h),
        "re-parse differs"
    );
    assert_eq!(h.method == Method::None, h.cipher == Cipher::None);
    assert_eq!(h.method == Method::Kms, h.key_id != [0; 16]);

    let kek = TestKek {
        key_id: h.key_id,
        version: h.key_version,
    };
    let Ok(dk) = h.unwrap_data_key(&kek) else {
        return;
    };
    assert_eq!(dk.len(), h.cipher.key_len(), "unwrapped key length");
    if h.method != Method::None {
        let again = Header::seal_with(h.method, h.cipher, h.object_id, &kek, &dk);
        let again = Header::parse(&again.encode()).expect("a freshly sealed header parses");
        let dk2 = again.unwrap_data_key(&kek).expect("a fresh wrap unwraps");
        assert_eq!(dk2.expose(), dk.expose(), "re-wrapped data key differs");
    }

    let Some(plain) = plaintext_len(data.len() as u64) else {
        return;
    };
    let aead = Aead::new(h.cipher, &dk).expect("the unwrapped key has the cipher's length");
    let chunks = chunk_count(plain);
    for i in 0..chunks {
        let last = i + 1 == chunks;
        let start = slot_offset(i) as usize;
        let end = (start + SLOT_SIZE).min(data.len());
        let mut slot = data[start..end].to_vec();
        let Ok(p) = open_chunk(&aead, &h.object_id, i, last, &mut slot) else {
            continue;
        };
        let p = p.to_vec();
        assert_eq!(p.len(), chunk_len(plain, i), "chunk {i} length");
        let mut resealed = Vec::new();
        seal_chunk(&aead, &h.object_id, i, last, &p, &mut resealed);
        assert_eq!(resealed.len(), end - start, "resealed slot {i} length");
        let back = open_chunk(&aead, &h.object_id, i, last, &mut resealed)
            .expect("a freshly sealed chunk opens");
        assert_eq!(back, &p[..], "chunk {i} round trip");
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    // The unkeyed checksum (bytes 112..128) rejects almost every mutation
    // before the field checks; the same input with its checksum made right
    // reaches them.
    if data.len() >= HEADER_LEN {
        let mut fixed = data.to_vec();
        let sum = checksum16(&[b"ssefs-header-v1", &data[..112]]);
        fixed[112..HEADER_LEN].copy_from_slice(&sum);
        check(&fixed);
    }
});
