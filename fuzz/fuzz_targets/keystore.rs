//! The keystore loader (DATA_DIR/.ssefs/keystore.toml): parse, then the
//! checks `Kms::open` and every reload make under the root key.
//!
//! Properties, beyond "does not panic":
//! - a parsed keystore written back (as a keystore write does) parses back
//!   equal, and that text is a fixed point;
//! - the written-back keystore gets the same verdict under the root key;
//! - a keystore that verifies has the shape the rest of the KMS relies on,
//!   checked here independently: master versions present, unique, non-zero;
//!   CMK ids unique; every alias names a CMK; key material exactly when the
//!   state says so; a deletion date exactly for pending deletion; versions
//!   increasing;
//! - a keystore that verifies still verifies, and still round-trips, after
//!   what every write does (purge expired keys) and a master key rotation,
//!   whose new version is the newest; exactly the expired keys and their
//!   aliases are gone.
//!
//! The seeds were made with the root key below (fuzz/seeds.sh), so their
//! sealed entries authenticate and mutations reach the structural checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

use std::collections::BTreeSet;

use ssefs::kms::fuzzing::{CmkShape, Keystore, Shape};
use ssefs::kms::KeyState;

/// The root key of the seed keystores: bytes 00..1f.
const ROOT: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,
];

/// A fixed "now" (2030-03-17) so runs are reproducible; the seeds' keys were
/// created before it.
const NOW: u64 = 1_900_000_000;

fn check_shape(s: &Shape) {
    let masters: BTreeSet<u32> = s.master_versions.iter().copied().collect();
    assert!(!masters.is_empty(), "verified without a master key");
    assert_eq!(
        masters.len(),
        s.master_versions.len(),
        "master versions repeat"
    );
    assert!(!masters.contains(&0), "master version 0");
    let ids: BTreeSet<[u8; 16]> = s.cmks.iter().map(|k| k.id).collect();
    assert_eq!(ids.len(), s.cmks.len(), "CMK ids repeat");
    for (alias, id) in &s.aliases {
        assert!(ids.contains(id), "alias {alias} names no CMK");
    }
    for k in &s.cmks {
        let material = !k.versions.is_empty();
        match k.state {
            KeyState::Enabled | KeyState::Disabled => assert!(material, "{k:?}"),
            KeyState::PendingImport => assert!(!material, "{k:?}"),
            KeyState::PendingDeletion => {}
        }
        assert_eq!(
            k.deletion_date.is_some(),
            k.state == KeyState::PendingDeletion,
            "{k:?}"
        );
        assert!(k.versions.windows(2).all(|w| w[0] < w[1]), "{k:?}");
    }
}

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
    let shape = ks.shape();
    check_shape(&shape);

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
    let after = next.shape();
    check_shape(&after);
    let mut masters = shape.master_versions.clone();
    masters.push(v);
    assert_eq!(
        after.master_versions, masters,
        "master versions after rotation"
    );
    let expired = |k: &CmkShape| {
        k.state == KeyState::PendingDeletion && k.deletion_date.is_some_and(|d| d <= NOW)
    };
    let kept: Vec<_> = shape.cmks.iter().filter(|k| !expired(k)).cloned().collect();
    assert_eq!(after.cmks, kept, "purge kept or dropped the wrong keys");
    let gone: BTreeSet<[u8; 16]> = shape
        .cmks
        .iter()
        .filter(|k| expired(k))
        .map(|k| k.id)
        .collect();
    let aliases: Vec<_> = shape
        .aliases
        .iter()
        .filter(|(_, id)| !gone.contains(id))
        .cloned()
        .collect();
    assert_eq!(
        after.aliases, aliases,
        "purge kept or dropped the wrong aliases"
    );
    let text2 = next.to_text().expect("serialises");
    assert_eq!(
        Keystore::parse(&text2).expect("parses"),
        next,
        "round trip after rotation"
    );
});
