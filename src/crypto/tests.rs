use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn nonce(s: &str) -> Nonce {
    Nonce(hex(s).try_into().unwrap())
}

#[test]
fn sm4_block_gbt_32907_example() {
    use sm4::cipher::{Array, BlockCipherEncrypt, KeyInit};
    let key = hex("0123456789abcdeffedcba9876543210");
    let c = sm4::Sm4::new(&Array::try_from(&key[..]).unwrap());
    let mut block = Array::try_from(&key[..]).unwrap();
    c.encrypt_block(&mut block);
    assert_eq!(block.to_vec(), hex("681edf34d206965e86b3e94f536e4246"));
}

/// McGrew & Viega, "The Galois/Counter Mode of Operation", test case 16
/// (AES-256, 96-bit IV, 60-byte plaintext, 20-byte AAD).
#[test]
fn aes256gcm_nist_test_case_16() {
    let key = SecretKey::from_bytes(&hex(
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
    ));
    let a = Aead::new(Cipher::Aes256Gcm, &key).unwrap();
    let ad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let pt = hex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    );
    let n = nonce("cafebabefacedbaddecaf888");
    let mut buf = pt.clone();
    let tag = a.seal(&n, &ad, &mut buf);
    assert_eq!(
        buf,
        hex(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa
             8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
        )
    );
    assert_eq!(tag.to_vec(), hex("76fc6ece0f4e1768cddf8853bb2d551b"));
    a.open(&n, &ad, &mut buf, &tag).unwrap();
    assert_eq!(buf, pt);
}

/// RFC 8998, Appendix A.1 (SM4-GCM).
#[test]
fn sm4gcm_rfc8998_a1() {
    let key = SecretKey::from_bytes(&hex("0123456789ABCDEFFEDCBA9876543210"));
    let a = Aead::new(Cipher::Sm4Gcm, &key).unwrap();
    let ad = hex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2");
    let pt = hex(
        "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD
         EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA",
    );
    let n = nonce("00001234567800000000ABCD");
    let mut buf = pt.clone();
    let tag = a.seal(&n, &ad, &mut buf);
    assert_eq!(
        buf,
        hex(
            "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735
             D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
        )
    );
    assert_eq!(tag.to_vec(), hex("83DE3541E4C2B58177E065A9BF7B62EC"));
    a.open(&n, &ad, &mut buf, &tag).unwrap();
    assert_eq!(buf, pt);
}

#[test]
fn every_cipher_rejects_a_flipped_bit_in_data_ad_nonce_or_tag() {
    for (cipher, len) in [
        (Cipher::None, 0),
        (Cipher::Aes256Gcm, 32),
        (Cipher::Sm4Gcm, 16),
    ] {
        let a = Aead::new(cipher, &SecretKey::random(len)).unwrap();
        let n = Nonce::random();
        let mut buf = b"attack at dawn, bring snacks".to_vec();
        let tag = a.seal(&n, b"ad", &mut buf);
        let sealed = buf.clone();

        let mut b = sealed.clone();
        b[3] ^= 1;
        assert_eq!(
            a.open(&n, b"ad", &mut b, &tag),
            Err(IntegrityError),
            "{cipher:?} data"
        );
        let mut b = sealed.clone();
        assert!(a.open(&n, b"ae", &mut b, &tag).is_err(), "{cipher:?} ad");
        let mut b = sealed.clone();
        let mut n2 = n;
        n2.0[0] ^= 0x80;
        assert!(
            a.open(&n2, b"ad", &mut b, &tag).is_err(),
            "{cipher:?} nonce"
        );
        let mut b = sealed.clone();
        let mut t2 = tag;
        t2[15] ^= 1;
        assert!(a.open(&n, b"ad", &mut b, &t2).is_err(), "{cipher:?} tag");
        let mut b = sealed.clone();
        a.open(&n, b"ad", &mut b, &tag).unwrap();
        assert_eq!(b, b"attack at dawn, bring snacks");
    }
}

#[test]
fn wrong_key_length_is_refused() {
    assert!(Aead::new(Cipher::Aes256Gcm, &SecretKey::random(16)).is_err());
    assert!(Aead::new(Cipher::Sm4Gcm, &SecretKey::random(32)).is_err());
}

#[test]
fn secret_key_debug_never_prints_bytes() {
    let k = SecretKey::from_bytes(&[0xAB; 32]);
    let s = format!("{k:?}");
    assert!(
        !s.to_lowercase().contains("ab, ") && !s.contains("171"),
        "{s}"
    );
    assert!(s.contains("redacted"));
}

// SM4-GCM: the AES-NI path against the portable `sm4` crate path.

/// Every SM4-GCM implementation this CPU runs for `key`: the portable one
/// first, then the AES-NI kernel at each supported tier.
fn sm4_impls(key: &[u8; 16]) -> Vec<(String, Sm4Gcm)> {
    let portable = ("portable".to_string(), Sm4Gcm::portable(key));
    #[cfg(target_arch = "x86_64")]
    let fast = [sm4ni::Tier::Vaes, sm4ni::Tier::Avx2, sm4ni::Tier::Ssse3]
        .into_iter()
        .filter_map(|t| Sm4Gcm::with_tier(key, t).map(|k| (format!("{t:?}"), k)));
    #[cfg(not(target_arch = "x86_64"))]
    let fast = std::iter::empty();
    std::iter::once(portable).chain(fast).collect()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn sm4gcm_uses_the_fast_path_when_the_cpu_has_aes_ni() {
    let k = Sm4Gcm::new(&[7; 16]);
    assert_eq!(k.is_accelerated(), sm4ni::Tier::best().is_some());
    assert_eq!(k.tier(), sm4ni::Tier::best());
    assert!(!Sm4Gcm::portable(&[7; 16]).is_accelerated());
    // Set by scripts/sm4ni-check.sh where /proc/cpuinfo lists aes and avx.
    if std::env::var_os("SSEFS_REQUIRE_SM4NI").is_some() {
        assert!(
            k.is_accelerated(),
            "SSEFS_REQUIRE_SM4NI: SM4-GCM took the portable path"
        );
    }
}

/// RFC 8998 A.1 through every implementation, including the forced fallback.
#[test]
fn sm4gcm_rfc8998_a1_every_implementation() {
    let key: [u8; 16] = hex("0123456789ABCDEFFEDCBA9876543210").try_into().unwrap();
    let ad = hex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2");
    let pt = hex(
        "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD
         EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA",
    );
    let ct = hex(
        "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735
         D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D",
    );
    let n = nonce("00001234567800000000ABCD");
    for (name, k) in sm4_impls(&key) {
        let mut buf = pt.clone();
        let tag = k.seal(&n, &ad, &mut buf);
        assert_eq!(buf, ct, "{name}");
        assert_eq!(
            tag.to_vec(),
            hex("83DE3541E4C2B58177E065A9BF7B62EC"),
            "{name}"
        );
        k.open(&n, &ad, &mut buf, &tag).unwrap();
        assert_eq!(buf, pt, "{name}");
    }
}

/// A bad tag is refused before any decryption: `Sm4Gcm::open` leaves the
/// ciphertext as it was, and `Aead::open` wipes it.
#[test]
fn sm4gcm_bad_tag_releases_no_plaintext() {
    let key = [0x42; 16];
    let n = Nonce([9; NONCE_LEN]);
    let pt: Vec<u8> = (0..1000u32).map(|i| (i * 31) as u8).collect();
    for (name, k) in sm4_impls(&key) {
        let mut ct = pt.clone();
        let tag = k.seal(&n, b"ad", &mut ct);
        for byte in [0, 7, 15] {
            let mut bad = tag;
            bad[byte] ^= 0x10;
            let mut buf = ct.clone();
            assert_eq!(
                k.open(&n, b"ad", &mut buf, &bad),
                Err(IntegrityError),
                "{name}"
            );
            assert_eq!(buf, ct, "{name}: buffer changed on failure");
        }
    }
    let a = Aead::new(Cipher::Sm4Gcm, &SecretKey::from_bytes(&key)).unwrap();
    let mut buf = pt.clone();
    let mut tag = a.seal(&n, b"ad", &mut buf);
    tag[0] ^= 1;
    assert!(a.open(&n, b"ad", &mut buf, &tag).is_err());
    assert!(buf.iter().all(|&b| b == 0));
}

/// Deterministic filler, so that proptest shrinks a seed, not 70 KB.
fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s as u8
        })
        .collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
    /// Every implementation seals to the same bytes and tag as the portable
    /// one, and opens its own output, for lengths up to past a 64 KiB chunk
    /// and odd tails.
    #[test]
    fn sm4gcm_implementations_agree(
        key in proptest::prelude::any::<[u8; 16]>(),
        n in proptest::prelude::any::<[u8; NONCE_LEN]>(),
        ad_len in 0usize..80,
        len in proptest::prop_oneof![0usize..=70000, 0usize..=300, 16368usize..=16400],
        seed in proptest::prelude::any::<u64>(),
    ) {
        let n = Nonce(n);
        let ad = filler(!seed, ad_len);
        let pt = filler(seed, len);
        let impls = sm4_impls(&key);
        let (_, portable) = &impls[0];
        let mut want = pt.clone();
        let want_tag = portable.seal(&n, &ad, &mut want);
        for (name, k) in &impls {
            let mut buf = pt.clone();
            let tag = k.seal(&n, &ad, &mut buf);
            proptest::prop_assert!(buf == want, "{} ciphertext differs at len {}", name, len);
            proptest::prop_assert_eq!(tag, want_tag, "{} tag", name);
            k.open(&n, &ad, &mut buf, &tag).unwrap();
            proptest::prop_assert!(buf == pt, "{} round trip", name);
        }
    }
}

#[test]
fn locked_key_keeps_its_bytes_on_a_dontdump_page() {
    let k = SecretKey::random(32);
    let bytes = k.expose().to_vec();
    let l = k.locked();
    assert_eq!(l.expose(), &bytes[..]);
    let buf = l.locked_buf().expect("the kernel gave a mapping");
    assert!(super::secmem::is_dontdump(buf.as_slice().as_ptr()));
    // Whether mlock worked depends on RLIMIT_MEMLOCK; the key must read the
    // same either way.
    let _ = buf.is_locked();
    let c = l.clone();
    assert!(c.locked_buf().is_some());
    assert_eq!(c, l);
    // Heap memory is not marked.
    let h = SecretKey::random(32);
    assert!(!super::secmem::is_dontdump(h.expose().as_ptr()));
}

/// `open_shifted` gives `open`'s plaintext at the front of the buffer, for
/// every cipher and shift (0, less than a block, more than the data), and
/// wipes the buffer when the tag does not verify.
#[test]
fn open_shifted_matches_open_and_wipes_on_failure() {
    let mut cases = vec![
        (Cipher::Aes256Gcm, SecretKey::random(32)),
        (Cipher::Sm4Gcm, SecretKey::random(16)),
        (Cipher::None, SecretKey::random(PLAIN_MAC_KEY_LEN)),
    ];
    cases.push((Cipher::None, SecretKey::from_bytes(&[])));
    for (cipher, key) in cases {
        let aead = Aead::new(cipher, &key).unwrap();
        let n = Nonce::random();
        let plain: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut sealed = plain.clone();
        let tag = aead.seal(&n, b"ad", &mut sealed);
        for shift in [0usize, 5, 40, 1500] {
            let mut buf = vec![0xAAu8; shift];
            buf.extend_from_slice(&sealed);
            aead.open_shifted(&n, b"ad", &mut buf, shift, &tag).unwrap();
            assert_eq!(&buf[..plain.len()], &plain[..], "{cipher:?} shift {shift}");
            let mut bad = vec![0xAAu8; shift];
            bad.extend_from_slice(&sealed);
            let mut wrong = tag;
            wrong[3] ^= 1;
            assert!(aead
                .open_shifted(&n, b"ad", &mut bad, shift, &wrong)
                .is_err());
            assert!(
                bad.iter().all(|&b| b == 0),
                "{cipher:?} shift {shift}: not wiped"
            );
        }
    }
}
