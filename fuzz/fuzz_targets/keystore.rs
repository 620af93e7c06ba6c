//! The keystore loader (DATA_DIR/.ssefs/keystore.toml): parse, then the
//! checks `Kms::open` and every reload make under the root key.
//!
//! Properties, beyond "does not panic":
//! - a parsed keystore written back (as a keystore write does) parses back
//!   equal, and that text is a fixed point;
//! - the written-back keystore gets the same verdict under the root key;
//! - a keystore that verifies still verifies, and still round-trips, after
//!   what every write does (purge expired keys) and a master key rotation,
//!   whose new version is the newest.
//!
//! The seeds were made with the root key below (fuzz/seeds.sh), so their
//! sealed entries authenticate and mutations reach the structural checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

use ssefs::kms::fuzzing::Keystore;

/// The root key of the seed keystores: bytes 00..1f.
const ROOT: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,
];

/// A fixed "now" (2030-03-17) so runs are reproducible; the seeds' keys were
/// created before it.
const NOW: u64 = 1_900_000_000;

fuzz_target!(|data: &[u8]| {
    // The loader refuses non-UTF-8 files before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ks) = Keystore::parse(text) else {
        return;
    };

    let written = ks.to_text().expect("a parsed keystore serialises");
    let back = Keystore::parse(&written).expect("a written keystore parses");
    assert_eq!(back, ks, "round trip changed the keystore:\n{written}");
    assert_eq!(
        back.to_text().expect("serialises"),
        written,
        "not a fixed point"
    );

    let verdict = ks.verify(&ROOT);
    assert_eq!(
        back.verify(&ROOT).is_ok(),
        verdict.is_ok(),
        "round trip changed the verdict"
    );
    if verdict.is_err() {
        return;
    }
    assert!(
        !ks.has_kdf(),
        "a passphrase keystore verified under a fixed key"
    );

    let mut next = ks.clone();
    let before = ks
        .newest_master()
        .expect("a verified keystore has a master key");
    let v = next.purge_and_rotate(&ROOT, NOW);
    assert!(v > before, "rotation made version {v} after {before}");
    assert_eq!(next.newest_master(), Some(v));
    if let Err(e) = next.verify(&ROOT) {
        panic!("rotation {v} broke a verified keystore: {e}");
    }
    let text2 = next.to_text().expect("serialises");
    assert_eq!(
        Keystore::parse(&text2).expect("parses"),
        next,
        "round trip after rotation"
    );
});
