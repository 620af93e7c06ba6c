//! SM4 (GB/T 32907-2016) on AES-NI: sixteen S-box lookups per AESENCLAST.
//!
//! The SM4 and AES S-boxes are both inversion in GF(2^8) wrapped in affine
//! maps, over different but isomorphic fields, so `S_sm4(x) = F2(S_aes(F1(x)))`
//! for two affine maps F1, F2 over GF(2)^8, derived below at compile time from
//! the definitions of both S-boxes. An affine map of a byte is the XOR of two
//! 16-entry lookups, one per nibble, so each map is two PSHUFB; `S_aes` is
//! AESENCLAST with a zero round key. AESENCLAST also applies ShiftRows, which
//! the byte shuffles of the linear layer undo for free.
//!
//! Blocks are word-sliced: register j holds word j of 4 (SSSE3) or 8 (AVX2,
//! with VAES where the CPU has it) blocks, one block per 32-bit lane, so SM4's rotations are lane-wise shifts
//! and byte shuffles. CTR counter blocks are built directly in that layout.
//! The technique follows the Linux kernel's sm4-aesni-avx; the code is ours.
//!
//! x86_64 only. `Sm4Ni::new` returns `None` when the CPU lacks AES-NI or
//! SSSE3, and `Sm4Gcm` then uses the portable `sm4` crate.

// Every `unsafe fn` here is a `#[target_feature]` kernel whose body is
// nothing but SIMD intrinsics, under one contract for all: the caller has
// checked that the CPU has the features (`Tier::supported`, before any
// `Sm4Ni` exists). Wrapping each body in its own `unsafe` block would
// restate that contract a hundred times.
#![allow(unsafe_op_in_unsafe_fn)]

use std::arch::x86_64::*;

use zeroize::{Zeroize, ZeroizeOnDrop};

// ---------------------------------------------------------------------------
// Compile-time derivation of the shuffle tables.

/// GF(2^8) reduction polynomials, x^8 term included: SM4's
/// x^8+x^7+x^6+x^5+x^4+x^2+1 and AES's x^8+x^4+x^3+x+1.
const SM4_POLY: u16 = 0x1f5;
const AES_POLY: u16 = 0x11b;
/// `S_sm4(x) = A(inv(A(x)))` with `A(x) = circulant(x, 0xcb) ^ 0xd3`: the
/// affine map of GB/T 32907 (a circulant matrix, here the XOR of rotations by
/// 0, 1, 3, 6 and 7) with inversion in SM4's field.
const SM4_AFFINE_ROTS: u8 = 0xcb;
const SM4_AFFINE_CONST: u8 = 0xd3;
/// `S_aes(y) = circulant(inv(y), 0x1f) ^ 0x63` (FIPS 197, 5.1.1).
const AES_AFFINE_ROTS: u8 = 0x1f;
const AES_AFFINE_CONST: u8 = 0x63;

/// Product in GF(2^8) modulo `poly`.
const fn gf_mul(a: u8, b: u8, poly: u16) -> u8 {
    let (mut a, mut b, mut r) = (a as u16, b, 0u16);
    while b != 0 {
        if b & 1 != 0 {
            r ^= a;
        }
        b >>= 1;
        a <<= 1;
        if a & 0x100 != 0 {
            a ^= poly;
        }
    }
    r as u8
}

/// The GF(2)-linear map whose matrix is circulant: the XOR of the rotations
/// of `x` selected by the bits of `rots`.
const fn circulant(x: u8, rots: u8) -> u8 {
    let mut r = 0;
    let mut k = 0;
    while k < 8 {
        if (rots >> k) & 1 != 0 {
            r ^= x.rotate_left(k);
        }
        k += 1;
    }
    r
}

/// Inverse of a byte permutation; fails compilation if `t` is not one.
const fn invert(t: &[u8; 256]) -> [u8; 256] {
    let mut inv = [0u8; 256];
    let mut x = 0;
    while x < 256 {
        inv[t[x] as usize] = x as u8;
        x += 1;
    }
    let mut x = 0;
    while x < 256 {
        assert!(inv[t[x] as usize] as usize == x, "not a bijection");
        x += 1;
    }
    inv
}

/// A field isomorphism from SM4's GF(2^8) to AES's, as a table: it maps the
/// generator x of SM4's field to a root `beta` of SM4's polynomial in AES's
/// field, and is linear over GF(2). Being a field isomorphism, it commutes
/// with inversion, which is what lets AES hardware invert SM4 field elements.
const fn sm4_to_aes_field() -> [u8; 256] {
    let mut beta: u16 = 2;
    loop {
        // SM4_POLY is irreducible of degree 8, so all 8 of its roots lie in
        // GF(2^8) and the search ends before 256.
        assert!(beta < 256, "no root of SM4's polynomial in AES's field");
        // Horner's rule, from the x^8 coefficient down.
        let mut acc = 0u8;
        let mut i = 9;
        while i > 0 {
            i -= 1;
            acc = gf_mul(acc, beta as u8, AES_POLY) ^ ((SM4_POLY >> i) & 1) as u8;
        }
        if acc == 0 {
            break;
        }
        beta += 1;
    }
    let mut basis = [1u8; 8];
    let mut i = 1;
    while i < 8 {
        basis[i] = gf_mul(basis[i - 1], beta as u8, AES_POLY);
        i += 1;
    }
    let mut table = [0u8; 256];
    let mut x = 0;
    while x < 256 {
        let mut i = 0;
        while i < 8 {
            if (x >> i) & 1 != 0 {
                table[x] ^= basis[i];
            }
            i += 1;
        }
        x += 1;
    }
    table
}

/// F1 and F2 as full tables: `S_sm4 = F2 . S_aes . F1`, where
/// F1 = phi . A and F2 = A . phi^-1 . (AES affine map)^-1.
const fn affine_maps() -> ([u8; 256], [u8; 256]) {
    let phi = sm4_to_aes_field();
    let phi_inv = invert(&phi);
    let mut aes_linear = [0u8; 256];
    let mut x = 0;
    while x < 256 {
        aes_linear[x] = circulant(x as u8, AES_AFFINE_ROTS);
        x += 1;
    }
    let aes_linear_inv = invert(&aes_linear);
    let (mut f1, mut f2) = ([0u8; 256], [0u8; 256]);
    let mut x = 0;
    while x < 256 {
        f1[x] = phi[(circulant(x as u8, SM4_AFFINE_ROTS) ^ SM4_AFFINE_CONST) as usize];
        let inv = phi_inv[aes_linear_inv[x ^ AES_AFFINE_CONST as usize] as usize];
        f2[x] = circulant(inv, SM4_AFFINE_ROTS) ^ SM4_AFFINE_CONST;
        x += 1;
    }
    (f1, f2)
}

/// An affine map of bytes split into PSHUFB tables: `f(x) = lo[x & 15] ^
/// hi[x >> 4]` (the constant lives in `lo`). Fails compilation if `f` is not
/// affine.
const fn nibble_tables(f: &[u8; 256]) -> [[u8; 16]; 2] {
    let (mut lo, mut hi) = ([0u8; 16], [0u8; 16]);
    let mut n = 0;
    while n < 16 {
        lo[n] = f[n];
        hi[n] = f[n << 4] ^ f[0];
        n += 1;
    }
    let mut x = 0;
    while x < 256 {
        assert!(f[x] == lo[x & 15] ^ hi[x >> 4], "not affine");
        x += 1;
    }
    [lo, hi]
}

const MAPS: ([u8; 256], [u8; 256]) = affine_maps();
/// Input map F1, low- and high-nibble tables.
const F1: [[u8; 16]; 2] = nibble_tables(&MAPS.0);
/// Output map F2, low- and high-nibble tables.
const F2: [[u8; 16]; 2] = nibble_tables(&MAPS.1);

/// PSHUFB mask that undoes AES ShiftRows and then rotates every 32-bit lane
/// left by `8 * k` bits. AESENCLAST moves byte `4c + r` (column c, row r) to
/// column `c - r`; the row, i.e. the byte within the lane, stays.
const fn unshift_rotl(k: usize) -> [u8; 16] {
    let mut m = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        let (c, r) = (i / 4, i % 4);
        // Rotating left by 8k bits puts byte r - k of the lane at byte r.
        let src_r = (r + 4 - k) % 4;
        // After ShiftRows, byte (c, src_r) sits at column c - src_r.
        m[i] = (4 * ((c + 4 - src_r) % 4) + src_r) as u8;
        i += 1;
    }
    m
}

const UNSHIFT: [[u8; 16]; 4] = [
    unshift_rotl(0),
    unshift_rotl(1),
    unshift_rotl(2),
    unshift_rotl(3),
];
/// Byte-swaps every 32-bit lane (SM4 words are big-endian).
const BSWAP32: [u8; 16] = [3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12];

/// GB/T 32907 system parameter FK.
const FK: [u32; 4] = [0xa3b1bac6, 0x56aa3350, 0x677d9197, 0xb27022dc];

/// Fixed parameter CK: byte j of CK_i is `(4i + j) * 7 mod 256`.
const fn ck() -> [u32; 32] {
    let mut ck = [0u32; 32];
    let mut i = 0;
    while i < 32 {
        let mut j = 0;
        while j < 4 {
            ck[i] = (ck[i] << 8) | (((4 * i + j) * 7) % 256) as u32;
            j += 1;
        }
        i += 1;
    }
    ck
}
const CK: [u32; 32] = ck();

// ---------------------------------------------------------------------------
// The key.

/// SM4 round keys. Secret: zeroized on drop, and not `Clone`, so that no
/// stray copy outlives the key.
#[derive(Zeroize, ZeroizeOnDrop)]
struct RoundKeys([u32; 32]);

/// Which vector width the kernel runs at; only ever holds a tier the running
/// CPU supports (see `Sm4Ni::with_tier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tier {
    /// 8 blocks per register and one AESENCLAST for all of them: VAES, AVX2
    /// and AES-NI (Ice Lake, Zen 3 and later).
    Vaes,
    /// 8 blocks per register, AESENCLAST on each 128-bit half: AVX2 and AES-NI.
    Avx2,
    /// 4 blocks per register: SSSE3 and AES-NI.
    Ssse3,
}

impl Tier {
    fn supported(self) -> bool {
        let base = is_x86_feature_detected!("aes") && is_x86_feature_detected!("ssse3");
        match self {
            Tier::Vaes => {
                base && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("vaes")
            }
            Tier::Avx2 => base && is_x86_feature_detected!("avx2"),
            Tier::Ssse3 => base,
        }
    }

    /// The widest tier this CPU runs, if any.
    pub(super) fn best() -> Option<Tier> {
        [Tier::Vaes, Tier::Avx2, Tier::Ssse3]
            .into_iter()
            .find(|t| t.supported())
    }
}

/// An SM4 key schedule for the AES-NI kernels.
pub(super) struct Sm4Ni {
    rk: RoundKeys,
    tier: Tier,
}

impl Sm4Ni {
    /// The key schedule at the best tier, or `None` if this CPU has no
    /// AES-NI (or no SSSE3).
    pub(super) fn new(key: &[u8; 16]) -> Option<Self> {
        Self::with_tier(key, Tier::best()?)
    }

    /// The key schedule at `tier`, or `None` if this CPU cannot run it.
    pub(super) fn with_tier(key: &[u8; 16], tier: Tier) -> Option<Self> {
        if !tier.supported() {
            return None;
        }
        // SAFETY: every tier needs at least AES-NI and SSSE3, which
        // `supported` just confirmed.
        let rk = unsafe { expand_key(key) };
        Some(Sm4Ni { rk, tier })
    }

    #[cfg(test)]
    pub(super) fn tier(&self) -> Tier {
        self.tier
    }

    /// Encrypts each 16-byte block in place (ECB; for H, E(J0) and tests).
    pub(super) fn encrypt_blocks(&self, blocks: &mut [[u8; 16]]) {
        let bytes = blocks.as_flattened_mut();
        // SAFETY: `self.tier` was checked against the running CPU when the
        // key was built; each function needs only its tier's features.
        unsafe {
            match self.tier {
                // ECB is not a hot path; AVX2 does for VAES too.
                Tier::Vaes | Tier::Avx2 => ecb_avx2(&self.rk.0, bytes),
                Tier::Ssse3 => ecb_ssse3(&self.rk.0, bytes),
            }
        }
    }

    /// XORs `buf` with the CTR keystream E(nonce || ctr), E(nonce || ctr+1), ...
    /// where the 32-bit big-endian counter wraps (GCM's inc32).
    pub(super) fn apply_keystream(&self, nonce: &[u8; 12], ctr: u32, buf: &mut [u8]) {
        // SAFETY: as in `encrypt_blocks`.
        unsafe {
            match self.tier {
                Tier::Vaes => ctr_vaes(&self.rk.0, nonce, ctr, buf),
                Tier::Avx2 => ctr_avx2(&self.rk.0, nonce, ctr, buf),
                Tier::Ssse3 => ctr_ssse3(&self.rk.0, nonce, ctr, buf),
            }
        }
    }
}

/// GB/T 32907 key expansion, with the S-box on AES-NI so that it runs in
/// constant time too (no secret-indexed table).
///
/// # Safety
/// The CPU must support AES-NI and SSSE3.
#[target_feature(enable = "aes,ssse3")]
unsafe fn expand_key(key: &[u8; 16]) -> RoundKeys {
    let c = Consts::<__m128i>::new();
    let mut k = [0u32; 4];
    for (i, w) in key.chunks_exact(4).enumerate() {
        k[i] = u32::from_be_bytes([w[0], w[1], w[2], w[3]]) ^ FK[i];
    }
    let mut rk = RoundKeys([0; 32]);
    for i in 0..32 {
        let x = k[(i + 1) % 4] ^ k[(i + 2) % 4] ^ k[(i + 3) % 4] ^ CK[i];
        // With the word in every lane, all four columns are equal and
        // ShiftRows has nothing to move.
        let b = _mm_cvtsi128_si32(sbox(_mm_set1_epi32(x as i32), &c)) as u32;
        k[i % 4] ^= b ^ b.rotate_left(13) ^ b.rotate_left(23);
        rk.0[i] = k[i % 4];
    }
    k.zeroize();
    rk
}

// ---------------------------------------------------------------------------
// The kernel, generic over the register width.

/// The operations the kernel needs from a vector of 32-bit lanes, one block
/// per lane. Every method is unsafe: the implementing type's CPU features
/// must be available, which the `#[target_feature]` entry points guarantee.
trait Vector: Copy {
    /// Blocks per register.
    const LANES: usize;
    unsafe fn splat(w: u32) -> Self;
    /// A 16-byte table in every 128-bit lane.
    unsafe fn table(t: &[u8; 16]) -> Self;
    /// Lanes `ctr, ctr + 1, ...`, wrapping.
    unsafe fn counters(ctr: u32) -> Self;
    unsafe fn xor(self, b: Self) -> Self;
    unsafe fn and(self, b: Self) -> Self;
    /// Shift each 32-bit lane right by 4 (to reach the high nibbles).
    unsafe fn shr4(self) -> Self;
    unsafe fn rotl2(self) -> Self;
    /// PSHUFB with `self` as the table.
    unsafe fn shuffle(self, idx: Self) -> Self;
    /// SubBytes(ShiftRows(self)) per 128-bit lane: AESENCLAST, zero key.
    unsafe fn aesenclast0(self) -> Self;
    /// Loads `LANES` blocks from `src` into word-sliced form.
    unsafe fn load(src: &[u8]) -> [Self; 4];
    /// Stores word-sliced blocks to `dst` (`xor`: XOR into it instead).
    unsafe fn store(w: [Self; 4], dst: &mut [u8], xor: bool);
}

/// Shuffle tables and masks, loaded into registers once per call.
struct Consts<V> {
    f1: [V; 2],
    f2: [V; 2],
    nibble: V,
    unshift: [V; 4],
}

impl<V: Vector> Consts<V> {
    #[inline(always)]
    unsafe fn new() -> Self {
        Consts {
            f1: [V::table(&F1[0]), V::table(&F1[1])],
            f2: [V::table(&F2[0]), V::table(&F2[1])],
            nibble: V::table(&[0x0f; 16]),
            unshift: [
                V::table(&UNSHIFT[0]),
                V::table(&UNSHIFT[1]),
                V::table(&UNSHIFT[2]),
                V::table(&UNSHIFT[3]),
            ],
        }
    }
}

#[inline(always)]
unsafe fn affine<V: Vector>(x: V, t: &[V; 2], nibble: V) -> V {
    let lo = x.and(nibble);
    let hi = x.shr4().and(nibble);
    t[0].shuffle(lo).xor(t[1].shuffle(hi))
}

/// The SM4 S-box on every byte, with the bytes left in ShiftRows order.
#[inline(always)]
unsafe fn sbox<V: Vector>(x: V, c: &Consts<V>) -> V {
    affine(affine(x, &c.f1, c.nibble).aesenclast0(), &c.f2, c.nibble)
}

/// SM4's T: S-box, then L(B) = B ^ B<<<2 ^ B<<<10 ^ B<<<18 ^ B<<<24,
/// computed as B ^ B<<<24 ^ (B ^ B<<<8 ^ B<<<16)<<<2. The byte rotations
/// are shuffles that also undo ShiftRows.
#[inline(always)]
unsafe fn t<V: Vector>(x: V, c: &Consts<V>) -> V {
    let s = sbox(x, c);
    let b = s.shuffle(c.unshift[0]);
    let mid = b.xor(s.shuffle(c.unshift[1])).xor(s.shuffle(c.unshift[2]));
    b.xor(s.shuffle(c.unshift[3])).xor(mid.rotl2())
}

/// One round on word `j` of each group of blocks.
#[inline(always)]
unsafe fn round<V: Vector, const G: usize>(x: &mut [[V; 4]; G], j: usize, rk: u32, c: &Consts<V>) {
    let k = V::splat(rk);
    let mut y = [k; G];
    for g in 0..G {
        y[g] = x[g][(j + 1) % 4]
            .xor(x[g][(j + 2) % 4])
            .xor(x[g][(j + 3) % 4])
            .xor(k);
    }
    for g in 0..G {
        x[g][j] = x[g][j].xor(t(y[g], c));
    }
}

/// The 32 rounds, then the final word reversal.
#[inline(always)]
unsafe fn rounds<V: Vector, const G: usize>(x: &mut [[V; 4]; G], rk: &[u32; 32], c: &Consts<V>) {
    for i in (0..32).step_by(4) {
        round(x, 0, rk[i], c);
        round(x, 1, rk[i + 1], c);
        round(x, 2, rk[i + 2], c);
        round(x, 3, rk[i + 3], c);
    }
    for w in x.iter_mut() {
        w.reverse();
    }
}

/// Largest batch (blocks per loop iteration, times 16) any instance uses.
const MAX_BATCH_BYTES: usize = 512;

/// ECB over whole blocks; `G` groups of `V::LANES` blocks per iteration.
#[inline(always)]
unsafe fn ecb<V: Vector, const G: usize>(rk: &[u32; 32], buf: &mut [u8]) {
    let c = Consts::<V>::new();
    let lane_bytes = V::LANES * 16;
    let batch = G * lane_bytes;
    let mut tail = [0u8; MAX_BATCH_BYTES];
    let mut chunks = buf.chunks_exact_mut(batch);
    for chunk in &mut chunks {
        ecb_batch::<V, G>(rk, &c, chunk);
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let pad = &mut tail[..batch];
        pad[..rest.len()].copy_from_slice(rest);
        ecb_batch::<V, G>(rk, &c, pad);
        rest.copy_from_slice(&pad[..rest.len()]);
        tail.zeroize();
    }
}

#[inline(always)]
unsafe fn ecb_batch<V: Vector, const G: usize>(rk: &[u32; 32], c: &Consts<V>, chunk: &mut [u8]) {
    let lane_bytes = V::LANES * 16;
    let mut x = [[V::splat(0); 4]; G];
    for (g, w) in x.iter_mut().enumerate() {
        *w = V::load(&chunk[g * lane_bytes..(g + 1) * lane_bytes]);
    }
    rounds(&mut x, rk, c);
    for (g, w) in x.iter().enumerate() {
        V::store(*w, &mut chunk[g * lane_bytes..(g + 1) * lane_bytes], false);
    }
}

/// CTR: XORs `buf` with the keystream; `G` groups of `V::LANES` blocks per
/// iteration, with the counter blocks built word-sliced (no input transpose).
#[inline(always)]
unsafe fn ctr<V: Vector, const G: usize>(
    rk: &[u32; 32],
    nonce: &[u8; 12],
    first: u32,
    buf: &mut [u8],
) {
    let c = Consts::<V>::new();
    let n = [0, 4, 8].map(|i| {
        V::splat(u32::from_be_bytes([
            nonce[i],
            nonce[i + 1],
            nonce[i + 2],
            nonce[i + 3],
        ]))
    });
    let lane_bytes = V::LANES * 16;
    let batch = G * lane_bytes;
    let mut next = first;
    let mut chunks = buf.chunks_exact_mut(batch);
    for chunk in &mut chunks {
        ctr_batch::<V, G>(rk, &c, &n, next, chunk);
        // Blocks per batch fit in u32; GCM never lets the counter wrap
        // back onto J0 (its length limit), and inc32 wraps by definition.
        next = next.wrapping_add((G * V::LANES) as u32);
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let mut tail = [0u8; MAX_BATCH_BYTES];
        let pad = &mut tail[..batch];
        pad[..rest.len()].copy_from_slice(rest);
        ctr_batch::<V, G>(rk, &c, &n, next, pad);
        rest.copy_from_slice(&pad[..rest.len()]);
        // The unused part of the batch is raw keystream.
        tail.zeroize();
    }
}

#[inline(always)]
unsafe fn ctr_batch<V: Vector, const G: usize>(
    rk: &[u32; 32],
    c: &Consts<V>,
    nonce: &[V; 3],
    ctr: u32,
    chunk: &mut [u8],
) {
    let lane_bytes = V::LANES * 16;
    let mut x = [[nonce[0]; 4]; G];
    for (g, w) in x.iter_mut().enumerate() {
        *w = [
            nonce[0],
            nonce[1],
            nonce[2],
            V::counters(ctr.wrapping_add((g * V::LANES) as u32)),
        ];
    }
    rounds(&mut x, rk, c);
    for (g, w) in x.iter().enumerate() {
        V::store(*w, &mut chunk[g * lane_bytes..(g + 1) * lane_bytes], true);
    }
}

// Entry points: the only functions compiled with the tier's features, into
// which the generic kernel is inlined. A round is a ~20-cycle dependency chain
// (AESENCLAST and five shuffle/shift steps), so CTR runs four independent
// groups per iteration: on the EPYC (Zen 3) we measured AVX2 CTR+GHASH at
// 576, 720 and 810 MB/s per core for 2, 3 and 4 groups, no better beyond
// (the spills cost less than the idle cycles); VAES takes it to ~970. ECB only serves H, E(J0) and
// tests, so it takes one group to waste less on a single block.

/// # Safety
/// The CPU must support AVX2 and AES-NI.
#[target_feature(enable = "avx2,aes")]
unsafe fn ecb_avx2(rk: &[u32; 32], buf: &mut [u8]) {
    ecb::<__m256i, 1>(rk, buf)
}

/// # Safety
/// The CPU must support SSSE3 and AES-NI.
#[target_feature(enable = "ssse3,aes")]
unsafe fn ecb_ssse3(rk: &[u32; 32], buf: &mut [u8]) {
    ecb::<__m128i, 1>(rk, buf)
}

/// # Safety
/// The CPU must support AVX2 and AES-NI.
#[target_feature(enable = "avx2,aes")]
unsafe fn ctr_avx2(rk: &[u32; 32], nonce: &[u8; 12], ctr0: u32, buf: &mut [u8]) {
    ctr::<__m256i, 4>(rk, nonce, ctr0, buf)
}

/// # Safety
/// The CPU must support VAES, AVX2 and AES-NI. (No `vaes` here: that target
/// feature needs Rust 1.89; `vaesenclast0` emits the instruction itself.)
#[target_feature(enable = "avx2,aes")]
unsafe fn ctr_vaes(rk: &[u32; 32], nonce: &[u8; 12], ctr0: u32, buf: &mut [u8]) {
    ctr::<Vaes, 4>(rk, nonce, ctr0, buf)
}

/// # Safety
/// The CPU must support SSSE3 and AES-NI.
#[target_feature(enable = "ssse3,aes")]
unsafe fn ctr_ssse3(rk: &[u32; 32], nonce: &[u8; 12], ctr0: u32, buf: &mut [u8]) {
    ctr::<__m128i, 4>(rk, nonce, ctr0, buf)
}

/// Transposes a 4x4 matrix of 32-bit words (rows are registers), so that
/// blocks become word-slices and back.
#[inline(always)]
unsafe fn transpose4_128(r: [__m128i; 4]) -> [__m128i; 4] {
    let t0 = _mm_unpacklo_epi32(r[0], r[1]);
    let t1 = _mm_unpacklo_epi32(r[2], r[3]);
    let t2 = _mm_unpackhi_epi32(r[0], r[1]);
    let t3 = _mm_unpackhi_epi32(r[2], r[3]);
    [
        _mm_unpacklo_epi64(t0, t1),
        _mm_unpackhi_epi64(t0, t1),
        _mm_unpacklo_epi64(t2, t3),
        _mm_unpackhi_epi64(t2, t3),
    ]
}

impl Vector for __m128i {
    const LANES: usize = 4;

    #[inline(always)]
    unsafe fn splat(w: u32) -> Self {
        _mm_set1_epi32(w as i32)
    }
    #[inline(always)]
    unsafe fn table(t: &[u8; 16]) -> Self {
        _mm_loadu_si128(t.as_ptr().cast())
    }
    #[inline(always)]
    unsafe fn counters(ctr: u32) -> Self {
        _mm_add_epi32(_mm_set1_epi32(ctr as i32), _mm_setr_epi32(0, 1, 2, 3))
    }
    #[inline(always)]
    unsafe fn xor(self, b: Self) -> Self {
        _mm_xor_si128(self, b)
    }
    #[inline(always)]
    unsafe fn and(self, b: Self) -> Self {
        _mm_and_si128(self, b)
    }
    #[inline(always)]
    unsafe fn shr4(self) -> Self {
        _mm_srli_epi32::<4>(self)
    }
    #[inline(always)]
    unsafe fn rotl2(self) -> Self {
        _mm_or_si128(_mm_slli_epi32::<2>(self), _mm_srli_epi32::<30>(self))
    }
    #[inline(always)]
    unsafe fn shuffle(self, idx: Self) -> Self {
        _mm_shuffle_epi8(self, idx)
    }
    #[inline(always)]
    unsafe fn aesenclast0(self) -> Self {
        _mm_aesenclast_si128(self, _mm_setzero_si128())
    }
    #[inline(always)]
    unsafe fn load(src: &[u8]) -> [Self; 4] {
        let src = &src[..64];
        let bswap = Self::table(&BSWAP32);
        // In bounds: `src` has just been sliced to 4 blocks.
        let r = [0, 16, 32, 48]
            .map(|o| _mm_shuffle_epi8(_mm_loadu_si128(src[o..].as_ptr().cast()), bswap));
        transpose4_128(r)
    }
    #[inline(always)]
    unsafe fn store(w: [Self; 4], dst: &mut [u8], xor: bool) {
        let dst = &mut dst[..64];
        let bswap = Self::table(&BSWAP32);
        let r = transpose4_128(w);
        for (i, blk) in r.into_iter().enumerate() {
            // In bounds: `dst` has just been sliced to 4 blocks.
            let p: *mut __m128i = dst[16 * i..].as_mut_ptr().cast();
            let mut v = _mm_shuffle_epi8(blk, bswap);
            if xor {
                v = _mm_xor_si128(v, _mm_loadu_si128(p));
            }
            _mm_storeu_si128(p, v);
        }
    }
}

impl Vector for __m256i {
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn splat(w: u32) -> Self {
        _mm256_set1_epi32(w as i32)
    }
    #[inline(always)]
    unsafe fn table(t: &[u8; 16]) -> Self {
        _mm256_broadcastsi128_si256(_mm_loadu_si128(t.as_ptr().cast()))
    }
    #[inline(always)]
    unsafe fn counters(ctr: u32) -> Self {
        _mm256_add_epi32(
            _mm256_set1_epi32(ctr as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
    #[inline(always)]
    unsafe fn xor(self, b: Self) -> Self {
        _mm256_xor_si256(self, b)
    }
    #[inline(always)]
    unsafe fn and(self, b: Self) -> Self {
        _mm256_and_si256(self, b)
    }
    #[inline(always)]
    unsafe fn shr4(self) -> Self {
        _mm256_srli_epi32::<4>(self)
    }
    #[inline(always)]
    unsafe fn rotl2(self) -> Self {
        _mm256_or_si256(_mm256_slli_epi32::<2>(self), _mm256_srli_epi32::<30>(self))
    }
    #[inline(always)]
    unsafe fn shuffle(self, idx: Self) -> Self {
        _mm256_shuffle_epi8(self, idx)
    }
    #[inline(always)]
    unsafe fn aesenclast0(self) -> Self {
        // Without VAES, one AESENCLAST per 128-bit half.
        let zero = _mm_setzero_si128();
        let lo = _mm_aesenclast_si128(_mm256_castsi256_si128(self), zero);
        let hi = _mm_aesenclast_si128(_mm256_extracti128_si256::<1>(self), zero);
        _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi)
    }
    #[inline(always)]
    unsafe fn load(src: &[u8]) -> [Self; 4] {
        let src = &src[..128];
        let bswap = Self::table(&BSWAP32);
        // In bounds: `src` has just been sliced to 8 blocks. y[i] holds
        // blocks 2i and 2i+1.
        let y = [0, 32, 64, 96].map(|o| _mm256_loadu_si256(src[o..].as_ptr().cast()));
        // Row i of each 128-bit half's transpose: blocks i and i + 4.
        let r = [
            _mm256_permute2x128_si256::<0x20>(y[0], y[2]),
            _mm256_permute2x128_si256::<0x31>(y[0], y[2]),
            _mm256_permute2x128_si256::<0x20>(y[1], y[3]),
            _mm256_permute2x128_si256::<0x31>(y[1], y[3]),
        ]
        .map(|v| _mm256_shuffle_epi8(v, bswap));
        transpose4_256(r)
    }
    #[inline(always)]
    unsafe fn store(w: [Self; 4], dst: &mut [u8], xor: bool) {
        let dst = &mut dst[..128];
        let bswap = Self::table(&BSWAP32);
        // r[i] holds blocks i and i + 4.
        let r = transpose4_256(w).map(|v| _mm256_shuffle_epi8(v, bswap));
        let y = [
            _mm256_permute2x128_si256::<0x20>(r[0], r[1]),
            _mm256_permute2x128_si256::<0x20>(r[2], r[3]),
            _mm256_permute2x128_si256::<0x31>(r[0], r[1]),
            _mm256_permute2x128_si256::<0x31>(r[2], r[3]),
        ];
        for (i, v) in y.into_iter().enumerate() {
            // In bounds: `dst` has just been sliced to 8 blocks.
            let p: *mut __m256i = dst[32 * i..].as_mut_ptr().cast();
            let v = if xor {
                _mm256_xor_si256(v, _mm256_loadu_si256(p))
            } else {
                v
            };
            _mm256_storeu_si256(p, v);
        }
    }
}

/// AVX2 registers for CPUs with VAES: everything as `__m256i` but
/// AESENCLAST, which takes the whole register at once.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct Vaes(__m256i);

impl Vector for Vaes {
    const LANES: usize = 8;

    #[inline(always)]
    unsafe fn splat(w: u32) -> Self {
        Vaes(__m256i::splat(w))
    }
    #[inline(always)]
    unsafe fn table(t: &[u8; 16]) -> Self {
        Vaes(__m256i::table(t))
    }
    #[inline(always)]
    unsafe fn counters(ctr: u32) -> Self {
        Vaes(__m256i::counters(ctr))
    }
    #[inline(always)]
    unsafe fn xor(self, b: Self) -> Self {
        Vaes(self.0.xor(b.0))
    }
    #[inline(always)]
    unsafe fn and(self, b: Self) -> Self {
        Vaes(self.0.and(b.0))
    }
    #[inline(always)]
    unsafe fn shr4(self) -> Self {
        Vaes(self.0.shr4())
    }
    #[inline(always)]
    unsafe fn rotl2(self) -> Self {
        Vaes(self.0.rotl2())
    }
    #[inline(always)]
    unsafe fn shuffle(self, idx: Self) -> Self {
        Vaes(self.0.shuffle(idx.0))
    }
    #[inline(always)]
    unsafe fn aesenclast0(self) -> Self {
        Vaes(vaesenclast0(self.0))
    }
    #[inline(always)]
    unsafe fn load(src: &[u8]) -> [Self; 4] {
        __m256i::load(src).map(Vaes)
    }
    #[inline(always)]
    unsafe fn store(w: [Self; 4], dst: &mut [u8], xor: bool) {
        __m256i::store(w.map(|v| v.0), dst, xor)
    }
}

/// VEX.256 AESENCLAST with a zero round key. Through `asm!` because the
/// `vaes` target feature and `_mm256_aesenclast_epi128` need Rust 1.89 and
/// our MSRV is 1.85.
///
/// # Safety
/// The CPU must support VAES.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn vaesenclast0(mut v: __m256i) -> __m256i {
    // SAFETY: the caller guarantees VAES; the instruction reads and writes
    // only the two registers named, no memory, stack or flags.
    unsafe {
        std::arch::asm!(
            "vaesenclast {v}, {v}, {zero}",
            v = inout(ymm_reg) v,
            zero = in(ymm_reg) _mm256_setzero_si256(),
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    v
}

/// `transpose4_128` on each 128-bit half.
#[inline(always)]
unsafe fn transpose4_256(r: [__m256i; 4]) -> [__m256i; 4] {
    let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
    let t1 = _mm256_unpacklo_epi32(r[2], r[3]);
    let t2 = _mm256_unpackhi_epi32(r[0], r[1]);
    let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    [
        _mm256_unpacklo_epi64(t0, t1),
        _mm256_unpackhi_epi64(t0, t1),
        _mm256_unpacklo_epi64(t2, t3),
        _mm256_unpackhi_epi64(t2, t3),
    ]
}

#[cfg(test)]
mod tests;
