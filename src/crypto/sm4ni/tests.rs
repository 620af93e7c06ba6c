//! The AES-NI SM4 kernels against the definitions and the `sm4` crate, at
//! every tier this CPU runs.

use proptest::prelude::*;
use sm4::cipher::{Array, BlockCipherEncrypt, KeyInit};

use super::*;

/// GB/T 32907-2016's S-box table (the same as the `sm4` crate's).
#[rustfmt::skip]
const SBOX: [u8; 256] = [
    0xd6, 0x90, 0xe9, 0xfe, 0xcc, 0xe1, 0x3d, 0xb7, 0x16, 0xb6, 0x14, 0xc2, 0x28, 0xfb, 0x2c, 0x05,
    0x2b, 0x67, 0x9a, 0x76, 0x2a, 0xbe, 0x04, 0xc3, 0xaa, 0x44, 0x13, 0x26, 0x49, 0x86, 0x06, 0x99,
    0x9c, 0x42, 0x50, 0xf4, 0x91, 0xef, 0x98, 0x7a, 0x33, 0x54, 0x0b, 0x43, 0xed, 0xcf, 0xac, 0x62,
    0xe4, 0xb3, 0x1c, 0xa9, 0xc9, 0x08, 0xe8, 0x95, 0x80, 0xdf, 0x94, 0xfa, 0x75, 0x8f, 0x3f, 0xa6,
    0x47, 0x07, 0xa7, 0xfc, 0xf3, 0x73, 0x17, 0xba, 0x83, 0x59, 0x3c, 0x19, 0xe6, 0x85, 0x4f, 0xa8,
    0x68, 0x6b, 0x81, 0xb2, 0x71, 0x64, 0xda, 0x8b, 0xf8, 0xeb, 0x0f, 0x4b, 0x70, 0x56, 0x9d, 0x35,
    0x1e, 0x24, 0x0e, 0x5e, 0x63, 0x58, 0xd1, 0xa2, 0x25, 0x22, 0x7c, 0x3b, 0x01, 0x21, 0x78, 0x87,
    0xd4, 0x00, 0x46, 0x57, 0x9f, 0xd3, 0x27, 0x52, 0x4c, 0x36, 0x02, 0xe7, 0xa0, 0xc4, 0xc8, 0x9e,
    0xea, 0xbf, 0x8a, 0xd2, 0x40, 0xc7, 0x38, 0xb5, 0xa3, 0xf7, 0xf2, 0xce, 0xf9, 0x61, 0x15, 0xa1,
    0xe0, 0xae, 0x5d, 0xa4, 0x9b, 0x34, 0x1a, 0x55, 0xad, 0x93, 0x32, 0x30, 0xf5, 0x8c, 0xb1, 0xe3,
    0x1d, 0xf6, 0xe2, 0x2e, 0x82, 0x66, 0xca, 0x60, 0xc0, 0x29, 0x23, 0xab, 0x0d, 0x53, 0x4e, 0x6f,
    0xd5, 0xdb, 0x37, 0x45, 0xde, 0xfd, 0x8e, 0x2f, 0x03, 0xff, 0x6a, 0x72, 0x6d, 0x6c, 0x5b, 0x51,
    0x8d, 0x1b, 0xaf, 0x92, 0xbb, 0xdd, 0xbc, 0x7f, 0x11, 0xd9, 0x5c, 0x41, 0x1f, 0x10, 0x5a, 0xd8,
    0x0a, 0xc1, 0x31, 0x88, 0xa5, 0xcd, 0x7b, 0xbd, 0x2d, 0x74, 0xd0, 0x12, 0xb8, 0xe5, 0xb4, 0xb0,
    0x89, 0x69, 0x97, 0x4a, 0x0c, 0x96, 0x77, 0x7e, 0x65, 0xb9, 0xf1, 0x09, 0xc5, 0x6e, 0xc6, 0x84,
    0x18, 0xf0, 0x7d, 0xec, 0x3a, 0xdc, 0x4d, 0x20, 0x79, 0xee, 0x5f, 0x3e, 0xd7, 0xcb, 0x39, 0x48,
];

/// Every tier this CPU runs (none without AES-NI: the tests below then check
/// nothing, and `Sm4Gcm` falls back to the `sm4` crate). Where the test
/// command finds aes and avx in /proc/cpuinfo it sets SSEFS_REQUIRE_SM4NI
/// (scripts/sm4ni-check.sh): there no tier at all is a failure, not a skip.
fn tiers() -> Vec<Tier> {
    let t: Vec<Tier> = [Tier::Vaes, Tier::Avx2, Tier::Ssse3]
        .into_iter()
        .filter(|t| t.supported())
        .collect();
    assert!(
        !t.is_empty() || std::env::var_os("SSEFS_REQUIRE_SM4NI").is_none(),
        "SSEFS_REQUIRE_SM4NI is set but no SM4-NI tier runs here: the kernels went untested"
    );
    t
}

/// The CPU flags the kernel reports for the first processor, if any.
fn cpuinfo_flags() -> Option<Vec<String>> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("flags"))?;
    let (_, flags) = line.split_once(':')?;
    Some(flags.split_whitespace().map(str::to_owned).collect())
}

/// Issue 12, item 5: the run-time detection picks the tier the kernel's own
/// view of the CPU allows, so a CPU with AES-NI and AVX never quietly takes
/// the portable path (and never a tier it lacks).
#[cfg(target_os = "linux")]
#[test]
fn detection_agrees_with_proc_cpuinfo() {
    let flags = cpuinfo_flags().expect("/proc/cpuinfo has a flags line on Linux x86_64");
    let has = |f: &str| flags.iter().any(|x| x == f);
    let base = has("aes") && has("ssse3");
    let want = if base && has("avx2") && has("vaes") {
        Some(Tier::Vaes)
    } else if base && has("avx2") {
        Some(Tier::Avx2)
    } else if base {
        Some(Tier::Ssse3)
    } else {
        None
    };
    assert_eq!(Tier::best(), want, "flags: {}", flags.join(" "));
    if has("aes") && has("avx") {
        assert!(
            Sm4Ni::new(&[0; 16]).is_some(),
            "aes and avx, yet no SM4-NI key"
        );
    }
}

fn reference(key: &[u8; 16]) -> sm4::Sm4 {
    sm4::Sm4::new(&Array::from(*key))
}

fn reference_block(c: &sm4::Sm4, block: &[u8; 16]) -> [u8; 16] {
    let mut b = Array::from(*block);
    c.encrypt_block(&mut b);
    b.into()
}

fn hex16(s: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

/// AES's S-box from its definition (FIPS 197, 5.1.1), to check the
/// derivation without trusting AES-NI.
fn aes_sbox(y: u8) -> u8 {
    let mut inv = 1u8;
    for _ in 0..254 {
        inv = gf_mul(inv, y, AES_POLY);
    }
    circulant(inv, AES_AFFINE_ROTS) ^ AES_AFFINE_CONST
}

fn apply(t: &[[u8; 16]; 2], x: u8) -> u8 {
    t[0][(x & 15) as usize] ^ t[1][(x >> 4) as usize]
}

#[test]
fn derived_tables_compose_to_the_sm4_sbox() {
    for x in 0..=255u8 {
        assert_eq!(
            apply(&F2, aes_sbox(apply(&F1, x))),
            SBOX[x as usize],
            "x = {x:#04x}"
        );
    }
}

#[test]
fn sm4_sbox_definition_matches_the_table() {
    // The affine-inverse-affine form the derivation starts from.
    for x in 0..=255u8 {
        let a = circulant(x, SM4_AFFINE_ROTS) ^ SM4_AFFINE_CONST;
        let mut inv = 1u8;
        for _ in 0..254 {
            inv = gf_mul(inv, a, SM4_POLY);
        }
        let s = circulant(inv, SM4_AFFINE_ROTS) ^ SM4_AFFINE_CONST;
        assert_eq!(s, SBOX[x as usize], "x = {x:#04x}");
    }
}

#[test]
fn ck_matches_the_standard() {
    assert_eq!(CK[0], 0x00070e15);
    assert_eq!(CK[1], 0x1c232a31);
    assert_eq!(CK[31], 0x646b7279);
}

/// The vector S-box (with ShiftRows undone) on `bytes`, 16 at a time.
#[target_feature(enable = "ssse3,aes")]
unsafe fn sbox_ssse3(bytes: &mut [u8; 256]) {
    let c = Consts::<__m128i>::new();
    for chunk in bytes.chunks_exact_mut(16) {
        let p: *mut __m128i = chunk.as_mut_ptr().cast();
        _mm_storeu_si128(p, sbox(_mm_loadu_si128(p), &c).shuffle(c.unshift[0]));
    }
}

/// The same, 32 bytes at a time.
#[target_feature(enable = "avx2,aes")]
unsafe fn sbox_avx2(bytes: &mut [u8; 256]) {
    let c = Consts::<__m256i>::new();
    for chunk in bytes.chunks_exact_mut(32) {
        let p: *mut __m256i = chunk.as_mut_ptr().cast();
        _mm256_storeu_si256(p, sbox(_mm256_loadu_si256(p), &c).shuffle(c.unshift[0]));
    }
}

/// The same with VAES.
#[target_feature(enable = "avx2,aes")]
unsafe fn sbox_vaes(bytes: &mut [u8; 256]) {
    let c = Consts::<Vaes>::new();
    for chunk in bytes.chunks_exact_mut(32) {
        let p: *mut __m256i = chunk.as_mut_ptr().cast();
        let s = sbox(Vaes(_mm256_loadu_si256(p)), &c).shuffle(c.unshift[0]);
        _mm256_storeu_si256(p, s.0);
    }
}

#[test]
fn vector_sbox_matches_on_all_256_inputs() {
    for tier in tiers() {
        let mut bytes: [u8; 256] = std::array::from_fn(|i| i as u8);
        // SAFETY: `tiers` only lists tiers whose features this CPU has.
        unsafe {
            match tier {
                Tier::Vaes => sbox_vaes(&mut bytes),
                Tier::Avx2 => sbox_avx2(&mut bytes),
                Tier::Ssse3 => sbox_ssse3(&mut bytes),
            }
        }
        assert_eq!(bytes, SBOX, "{tier:?}");
    }
}

/// GB/T 32907-2016, Appendix A: one encryption, and a million in a row.
#[test]
fn gbt_32907_examples() {
    let key = hex16("0123456789abcdeffedcba9876543210");
    for tier in tiers() {
        let k = Sm4Ni::with_tier(&key, tier).unwrap();
        let mut b = [key];
        k.encrypt_blocks(&mut b);
        assert_eq!(b[0], hex16("681edf34d206965e86b3e94f536e4246"), "{tier:?}");
        let mut b = [key];
        for _ in 0..1_000_000 {
            k.encrypt_blocks(&mut b);
        }
        assert_eq!(b[0], hex16("595298c7c6fd271f0402f804c33d3f66"), "{tier:?}");
    }
}

#[test]
fn unsupported_tier_is_refused() {
    for tier in [Tier::Vaes, Tier::Avx2, Tier::Ssse3] {
        assert_eq!(Sm4Ni::with_tier(&[0; 16], tier).is_some(), tier.supported());
    }
}

proptest! {
    #[test]
    fn blocks_match_the_sm4_crate(
        key in any::<[u8; 16]>(),
        blocks in prop::collection::vec(any::<[u8; 16]>(), 0..40),
    ) {
        let r = reference(&key);
        let want: Vec<[u8; 16]> = blocks.iter().map(|b| reference_block(&r, b)).collect();
        for tier in tiers() {
            let mut got = blocks.clone();
            Sm4Ni::with_tier(&key, tier).unwrap().encrypt_blocks(&mut got);
            prop_assert_eq!(&got, &want, "{:?}", tier);
        }
    }

    /// CTR keystream = E(nonce || ctr + i), the 32-bit counter wrapping.
    #[test]
    fn ctr_matches_the_sm4_crate(
        key in any::<[u8; 16]>(),
        nonce in any::<[u8; 12]>(),
        ctr in prop_oneof![any::<u32>(), (u32::MAX - 40)..=u32::MAX],
        data in prop::collection::vec(any::<u8>(), 0..700),
    ) {
        let r = reference(&key);
        let mut want = data.clone();
        for (i, chunk) in want.chunks_mut(16).enumerate() {
            let mut cb = [0u8; 16];
            cb[..12].copy_from_slice(&nonce);
            cb[12..].copy_from_slice(&ctr.wrapping_add(i as u32).to_be_bytes());
            let ks = reference_block(&r, &cb);
            for (d, k) in chunk.iter_mut().zip(ks) {
                *d ^= k;
            }
        }
        for tier in tiers() {
            let mut got = data.clone();
            Sm4Ni::with_tier(&key, tier).unwrap().apply_keystream(&nonce, ctr, &mut got);
            prop_assert_eq!(&got, &want, "{:?}", tier);
        }
    }
}
