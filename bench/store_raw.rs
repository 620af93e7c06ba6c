//! The baseline of bench/store.sh: object_store alone, no ssefs, moving a
//! file to and from the same store with the same client settings ssefs
//! uses (16 MiB parts, 4 in flight; a plain streaming GET, and 16 MiB
//! ranged GETs 4 at a time, as ssefs reads).
//!
//!   store_raw put FILE KEY | get KEY FILE | get-ranged KEY FILE
//!
//! The store comes from the environment as for ssefs: SSEFS_S3_ENDPOINTS
//! (the first is used), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
//! AWS_REGION, and the bucket from SSEFS_TEST_S3_BUCKET.

// A benchmark tool: any failure should stop it loudly, where it failed.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};

const PART: usize = 16 << 20;
const IN_FLIGHT: usize = 4;

fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    let endpoint = env("SSEFS_S3_ENDPOINTS");
    let endpoint = endpoint.split(',').next().unwrap_or_default();
    let store: Arc<dyn ObjectStore> = Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(env("SSEFS_TEST_S3_BUCKET"))
            .with_endpoint(endpoint)
            .with_region(env("AWS_REGION"))
            .with_access_key_id(env("AWS_ACCESS_KEY_ID"))
            .with_secret_access_key(env("AWS_SECRET_ACCESS_KEY"))
            .with_client_options(ClientOptions::new().with_allow_http(true))
            .build()
            .expect("store"),
    );
    match args.get(1).map(String::as_str) {
        Some("put") => {
            let (file, key) = (&args[2], Path::from(args[3].as_str()));
            let mut f = File::open(file).expect("input");
            let mut up = store.put_multipart(&key).await.expect("multipart");
            let mut pending = Vec::new();
            loop {
                let mut buf = vec![0u8; PART];
                let mut n = 0;
                while n < PART {
                    match f.read(&mut buf[n..]).expect("read") {
                        0 => break,
                        k => n += k,
                    }
                }
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                pending.push(up.put_part(PutPayload::from(buf)));
                if pending.len() == IN_FLIGHT {
                    futures::future::try_join_all(std::mem::take(&mut pending))
                        .await
                        .expect("part");
                }
            }
            futures::future::try_join_all(pending).await.expect("part");
            up.complete().await.expect("complete");
        }
        Some("get") => {
            let (key, file) = (Path::from(args[2].as_str()), &args[3]);
            let mut out = File::create(file).expect("output");
            let mut s = store.get(&key).await.expect("get").into_stream();
            while let Some(b) = s.try_next().await.expect("body") {
                out.write_all(&b).expect("write");
            }
        }
        Some("get-ranged") => {
            let (key, file) = (Path::from(args[2].as_str()), &args[3]);
            let out = File::create(file).expect("output");
            let len = store.head(&key).await.expect("head").size;
            let ranges: Vec<_> = (0..len)
                .step_by(PART)
                .map(|a| a..(a + PART as u64).min(len))
                .collect();
            let mut parts = futures::stream::iter(ranges)
                .map(|r| {
                    let (s, k) = (store.clone(), key.clone());
                    async move {
                        let o = GetOptions {
                            range: Some(GetRange::Bounded(r.clone())),
                            ..GetOptions::default()
                        };
                        let b = s.get_opts(&k, o).await?.bytes().await?;
                        Ok::<_, object_store::Error>((r, b))
                    }
                })
                .buffer_unordered(IN_FLIGHT);
            while let Some((r, b)) = parts.try_next().await.expect("part") {
                out.write_all_at(&b, r.start).expect("write");
            }
        }
        _ => {
            eprintln!("usage: store_raw put FILE KEY | get KEY FILE | get-ranged KEY FILE");
            std::process::exit(2);
        }
    }
}
