//! Whole-object put and get throughput through the engine (no mount).
//!
//! `cargo bench --bench engine`

// A benchmark is a test harness: a failed setup step should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use ssefs::engine::Engine;
use ssefs::kms::RootKeySource;
use ssefs::oss::{BucketName, ObjectKey, SseConfig};
use ssefs::principal::Principal;

fn put_get(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let root = RootKeySource::File(dir.path().join("root.key"));
    Engine::init(&data_dir, &root).unwrap();
    let e = Engine::open(&data_dir, &root).unwrap();
    let b = BucketName::parse("bench").unwrap();
    e.create_bucket(&b).unwrap();
    let p = Principal::root();
    let mut g = c.benchmark_group("object");
    g.sample_size(10);
    // SM4 gets a smaller object: without AES-NI it runs at ~80 MB/s (the
    // portable sm4 crate), and the run should stay short there too.
    for (alg, mib) in [("AES256", 256usize), ("SM4", 32), ("none", 256)] {
        let data: Vec<u8> = (0..mib << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
        let sse = (alg != "none").then(|| SseConfig::bucket_rule(alg, None, None).unwrap());
        let key = ObjectKey::parse(&format!("obj-{alg}")).unwrap();
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(BenchmarkId::new("put", format!("{alg}-{mib}MiB")), |bch| {
            bch.iter(|| {
                e.put_object(&p, &b, &key, &mut &data[..], sse.as_ref())
                    .unwrap()
            })
        });
        let mut sink = std::io::sink();
        g.bench_function(BenchmarkId::new("get", format!("{alg}-{mib}MiB")), |bch| {
            bch.iter(|| e.get_object(&p, &b, &key, &mut sink).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, put_get);
criterion_main!(benches);
