//! Cipher throughput and the chunk-size trade-off (FORMAT.md §5).
//!
//! `cargo bench --bench crypto`

// A benchmark is a test harness: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use ssefs::crypto::{fill_random, Aead, Cipher, Nonce, SecretKey, Sm4Gcm};

fn aead(cipher: Cipher) -> Aead {
    Aead::new(cipher, &SecretKey::random(cipher.key_len())).unwrap()
}

/// Seal and open throughput on 64 KiB buffers, per cipher.
fn seal_open_64k(c: &mut Criterion) {
    let mut g = c.benchmark_group("seal_open_64k");
    g.throughput(Throughput::Bytes(65536));
    for cipher in [Cipher::Aes256Gcm, Cipher::Sm4Gcm, Cipher::None] {
        let a = aead(cipher);
        let mut buf = vec![7u8; 65536];
        g.bench_function(BenchmarkId::new("seal", cipher.name()), |b| {
            b.iter(|| a.seal(&Nonce::random(), b"ad", &mut buf))
        });
        let n = Nonce::random();
        let mut sealed = vec![7u8; 65536];
        let tag = a.seal(&n, b"ad", &mut sealed);
        g.bench_function(BenchmarkId::new("open", cipher.name()), |b| {
            b.iter(|| {
                buf.copy_from_slice(&sealed);
                a.open(&n, b"ad", &mut buf, &tag).unwrap()
            })
        });
    }
    g.finish();
}

/// SM4-GCM on the AES-NI kernel (`fast`; the portable path again on CPUs
/// without AES-NI) against the `sm4` crate (`portable`), at the chunk size
/// (16 KiB) and at 64 KiB.
fn sm4gcm_fast_vs_portable(c: &mut Criterion) {
    let mut key = [0u8; 16];
    fill_random(&mut key);
    let fast = Sm4Gcm::new(&key);
    let portable = Sm4Gcm::portable(&key);
    let fast_name = if fast.is_accelerated() {
        "fast"
    } else {
        "fast-unavailable"
    };
    let mut g = c.benchmark_group("sm4gcm");
    for size in [16384usize, 65536] {
        g.throughput(Throughput::Bytes(size as u64));
        for (name, k) in [(fast_name, &fast), ("portable", &portable)] {
            let mut buf = vec![7u8; size];
            g.bench_function(BenchmarkId::new(format!("seal/{name}"), size), |b| {
                b.iter(|| k.seal(&Nonce::random(), b"ad", &mut buf))
            });
            let n = Nonce::random();
            let mut sealed = vec![7u8; size];
            let tag = k.seal(&n, b"ad", &mut sealed);
            g.bench_function(BenchmarkId::new(format!("open/{name}"), size), |b| {
                b.iter(|| {
                    buf.copy_from_slice(&sealed);
                    k.open(&n, b"ad", &mut buf, &tag).unwrap()
                })
            });
        }
    }
    g.finish();
}

/// For each candidate chunk size: the crypto cost of a 4 KiB random write
/// (open the chunk, patch it, seal it again) and of sealing 1 MiB sequentially.
fn chunk_size(c: &mut Criterion) {
    let a = aead(Cipher::Aes256Gcm);
    let mut g = c.benchmark_group("chunk_size");
    for size in [4096usize, 16384, 32768, 65536, 131072] {
        let n = Nonce::random();
        let mut sealed = vec![1u8; size];
        let tag = a.seal(&n, b"ad", &mut sealed);
        let mut buf = vec![0u8; size];
        g.throughput(Throughput::Bytes(4096));
        g.bench_function(BenchmarkId::new("rmw_4k", size), |b| {
            b.iter(|| {
                buf.copy_from_slice(&sealed);
                a.open(&n, b"ad", &mut buf, &tag).unwrap();
                buf[..4096].fill(9);
                a.seal(&Nonce::random(), b"ad", &mut buf)
            })
        });
        let mut mib = vec![3u8; 1 << 20];
        g.throughput(Throughput::Bytes(1 << 20));
        g.bench_function(BenchmarkId::new("seq_seal_1m", size), |b| {
            b.iter(|| {
                for ch in mib.chunks_mut(size) {
                    a.seal(&Nonce::random(), b"ad", ch);
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = seal_open_64k, sm4gcm_fast_vs_portable, chunk_size
}
criterion_main!(benches);
