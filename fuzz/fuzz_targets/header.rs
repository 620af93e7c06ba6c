//! The object reader's first steps on an arbitrary backend file: header
//! parse (FORMAT.md §2.4), data key unwrap (§2.2) or, unencrypted, the
//! header MAC (§2.5), size arithmetic (§3.2) and chunk opening, narrow and
//! wide slots (§4, §4.1, §4.2).
//!
//! Properties, beyond "does not panic":
//! - only the first 128 bytes matter to the parser;
//! - an accepted header is canonical: encoding it gives back exactly the
//!   bytes it was parsed from, which parse to the same header;
//! - sizes, for every chunk size and slot format: a file length that holds
//!   a valid object maps to a plaintext size whose backend length is that
//!   file length, and back; a length no object has shows whole chunks
//!   only, flagged as damaged;
//! - with the test vectors' keys (FORMAT.md §6: KEK 00..1f, K_plain
//!   80..9f), an unwrapped data key has the cipher's length and survives a
//!   re-wrap, and an unencrypted header's MAC is the one `plain_with`
//!   makes; a chunk that opens has the length the file size says, and
//!   sealing it again opens to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

use ssefs::crypto::{checksum16, Aead, Cipher, IntegrityError, Nonce, SecretKey};
use ssefs::format::{ChunkKeys, ChunkSize, Header, KeyWrap, Method, SlotFormat, HEADER_LEN};

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

/// K_plain of the test vectors' unencrypted object: bytes 80..9f.
fn plain_key() -> SecretKey {
    SecretKey::from_bytes(&(0x80u8..0xa0).collect::<Vec<_>>())
}

/// Every chunk size a header may record, in both slot formats.
fn all_chunks() -> impl Iterator<Item = ChunkSize> {
    ChunkSize::ALL
        .into_iter()
        .flat_map(|c| [SlotFormat::Narrow, SlotFormat::Wide].map(|f| c.with_format(f)))
}

fn check_sizes(c: ChunkSize, file_len: u64) {
    let (shown, damaged) = c.shown_len(file_len);
    match c.plaintext_len(file_len) {
        Some(plain) => {
            assert_eq!(
                c.backend_len(plain),
                file_len,
                "{c:?}: size {plain} from {file_len}"
            );
            assert_eq!(
                (shown, damaged),
                (plain, false),
                "{c:?}: shown of {file_len}"
            );
        }
        None => {
            assert!(damaged, "{c:?}: {file_len} not flagged");
            assert_eq!(
                shown % c.bytes() as u64,
                0,
                "{c:?}: shown {shown} of {file_len}"
            );
            assert!(c.backend_len(shown) <= file_len.max(HEADER_LEN as u64));
        }
    }
    // Every plaintext size a file can have (up to i64::MAX, the largest
    // file) has a backend length that maps back to it.
    let plain = file_len & (i64::MAX as u64);
    let back = c.backend_len(plain);
    assert_eq!(
        c.plaintext_len(back),
        Some(plain),
        "{c:?}: backend length {back} of {plain}"
    );
}

/// The key the object's chunks are under, if the test keys open it: the
/// unwrapped data key, K_plain for an unencrypted object with a MAC, or
/// none (empty) for one without (§8.6).
fn chunk_key(h: &Header, header: &[u8]) -> Option<SecretKey> {
    if h.method == Method::None {
        if h.is_unkeyed_plain() {
            return Some(SecretKey::from_bytes(&[]));
        }
        h.check_plain(&plain_key()).ok()?;
        let again =
            Header::plain_with(h.chunk, h.object_id, &plain_key()).expect("K_plain has its length");
        assert_eq!(&again.encode()[..], header, "plain_with made another MAC");
        return Some(plain_key());
    }
    let kek = TestKek {
        key_id: h.key_id,
        version: h.key_version,
    };
    let dk = h.unwrap_data_key(&kek).ok()?;
    assert_eq!(dk.len(), h.cipher.key_len(), "unwrapped key length");
    let again = Header::seal_with(h.method, h.cipher, h.chunk, h.object_id, &kek, &dk);
    let again = Header::parse(&again.encode()).expect("a freshly sealed header parses");
    let dk2 = again.unwrap_data_key(&kek).expect("a fresh wrap unwraps");
    assert_eq!(dk2.expose(), dk.expose(), "re-wrapped data key differs");
    Some(dk)
}

fn check(data: &[u8]) {
    let len = data.len() as u64;
    let tail = data.last_chunk::<8>().map(|n| u64::from_le_bytes(*n));
    for c in all_chunks() {
        check_sizes(c, len);
        if let Some(n) = tail {
            check_sizes(c, n);
        }
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

    let Some(key) = chunk_key(&h, &data[..HEADER_LEN]) else {
        return;
    };
    let c = h.chunk;
    let Some(plain) = c.plaintext_len(len) else {
        return;
    };
    let keys = ChunkKeys::new(h.cipher, c, &key).expect("the key fits the header's cipher");
    let chunks = c.chunk_count(plain);
    for i in 0..chunks {
        let last = i + 1 == chunks;
        let start = c.slot_offset(i) as usize;
        let end = (start + c.slot()).min(data.len());
        let mut slot = data[start..end].to_vec();
        let Ok(p) = keys.open(&h.object_id, i, last, &mut slot) else {
            continue;
        };
        let p = p.to_vec();
        assert_eq!(p.len(), c.chunk_len(plain, i), "chunk {i} length");
        let mut resealed = Vec::new();
        keys.sealer()
            .seal(&h.object_id, i, last, &p, &mut resealed)
            .expect("a chunk of an open object seals");
        assert_eq!(resealed.len(), end - start, "resealed slot {i} length");
        let back = keys
            .open(&h.object_id, i, last, &mut resealed)
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
