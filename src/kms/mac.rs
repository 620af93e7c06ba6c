//! Keys derived from the root key to authenticate policy that is not itself
//! sealed: bucket settings, the keystore's metadata, the grants. Someone
//! who can write the backend but lacks the root key cannot forge a tag, so
//! an edited policy is an integrity error rather than a silent change
//! (docs/FORMAT.md §8, docs/SECURITY.md).
//!
//! Derivation: HKDF-SHA256 (RFC 5869) with salt `ssefs-policy-mac-v1`, the
//! root key as input keying material and the purpose's label as info, 32
//! bytes. Tags: HMAC-SHA256 over the message's parts, each preceded by its
//! length (8 bytes, little-endian), so that no two lists of parts make the
//! same message.

use std::fmt;
use std::path::Path;

use ring::hkdf;

use super::store::Store;
use crate::crypto::{tags_equal, IntegrityError, SecretKey};
use crate::error::{Error, OssCode, Result};

/// HKDF salt of every policy MAC key.
const SALT: &[u8] = b"ssefs-policy-mac-v1";
/// Length of a policy MAC key and of its tags.
pub const MAC_LEN: usize = 32;

/// What a derived key authenticates: each purpose has its own key, so a tag
/// made for one kind of file never verifies as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacPurpose {
    /// A bucket's `.ssefs-bucket.toml`.
    BucketSettings,
    /// The keystore's unsealed fields (states, aliases, dates, ...).
    Keystore,
    /// The grants and KMS settings of `.ssefs/config.toml`.
    Grants,
    /// The headers and chunks of unencrypted objects (K_plain, FORMAT.md
    /// §2.5, §4.2): their "data key".
    PlainObjects,
    /// The metadata record of an object on a store (`x-amz-meta-ssefs`,
    /// FORMAT.md §9): its mode, owner, times, xattrs and override.
    ObjectMeta,
}

impl MacPurpose {
    /// The HKDF info string (docs/FORMAT.md §8 lists them).
    pub fn label(self) -> &'static [u8] {
        match self {
            MacPurpose::BucketSettings => b"ssefs bucket settings",
            MacPurpose::Keystore => b"ssefs keystore metadata",
            MacPurpose::Grants => b"ssefs grants",
            MacPurpose::PlainObjects => b"ssefs unencrypted objects",
            MacPurpose::ObjectMeta => b"ssefs object metadata",
        }
    }
}

/// A derived MAC key. The bytes are zeroized on drop (by `SecretKey`) and
/// never printed.
pub struct MacKey {
    purpose: MacPurpose,
    key: SecretKey,
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MacKey")
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

/// HKDF's output length for ring.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl MacKey {
    /// The key for `purpose` under `root`.
    pub(crate) fn derive(root: &SecretKey, purpose: MacPurpose) -> MacKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(root.expose());
        let mut out = zeroize::Zeroizing::new([0u8; MAC_LEN]);
        let info = [purpose.label()];
        // Invariant: expand and fill fail only when the output is longer than
        // 255 hash lengths; ours is one.
        #[allow(clippy::expect_used)]
        prk.expand(&info, Len(MAC_LEN))
            .and_then(|okm| okm.fill(&mut out[..]))
            .expect("HKDF output of 32 bytes");
        MacKey {
            purpose,
            key: SecretKey::from_bytes(&out[..]),
        }
    }

    /// The key itself, for a purpose whose tags are made outside this
    /// module (K_plain: the format layer's object tags).
    pub(crate) fn into_secret(self) -> SecretKey {
        self.key
    }

    pub fn purpose(&self) -> MacPurpose {
        self.purpose
    }

    /// HMAC-SHA256 over the length-prefixed `parts`.
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; MAC_LEN] {
        crate::crypto::mac_parts(&self.key, parts)
    }

    /// `tag` as lowercase hex, the way the TOML files store it.
    pub fn tag_hex(&self, parts: &[&[u8]]) -> String {
        super::store::hex_encode(&self.tag(parts))
    }

    /// Whether `tag_hex` (as stored) is the tag of `parts`; constant time in
    /// the tag's bytes.
    pub fn verify_hex(&self, parts: &[&[u8]], tag_hex: &str) -> Result<(), IntegrityError> {
        let given = super::store::hex_decode(tag_hex).ok_or(IntegrityError)?;
        if tags_equal(&given, &self.tag(parts)) {
            Ok(())
        } else {
            Err(IntegrityError)
        }
    }
}

/// Associated data of the root key check value in a keystore that carries
/// a MAC. A keystore written before MACs has its check value sealed under
/// `ssefs-root-check` instead; the first open re-seals it under this one,
/// so that stripping the MAC off a keystore (to pass it off as one from
/// before the upgrade) leaves a check value that no longer verifies.
const CHECK_AD_MACED: &[u8] = b"ssefs-root-check-mac";
const CHECK_MARKER_MACED: &[u8] = b"ssefs root key check v1";

/// The check value of a keystore with a MAC.
pub(super) fn check_value_maced(root: &SecretKey) -> String {
    super::store::seal(root, CHECK_AD_MACED, CHECK_MARKER_MACED)
}

fn check_maced_ok(root: &SecretKey, check: &str) -> bool {
    super::store::open_sealed(root, CHECK_AD_MACED, check)
        .is_ok_and(|p| p.expose() == CHECK_MARKER_MACED)
}

/// The keystore's tag: over its TOML text as ssefs writes it, without the
/// `mac` line.
fn keystore_tag(key: &MacKey, s: &Store, path: &Path) -> Result<String> {
    let mut bare = s.clone();
    bare.mac = None;
    let text = super::store::to_text(&bare, path)?;
    Ok(key.tag_hex(&[text.as_bytes()]))
}

/// Makes `s` a keystore with a MAC under `root`: its check value re-sealed
/// for MACed keystores (if it was not yet) and its tag computed last.
pub(super) fn seal_store(root: &SecretKey, s: &mut Store, path: &Path) -> Result<()> {
    if s.mac.is_none() {
        s.root.check = check_value_maced(root);
    }
    let key = MacKey::derive(root, MacPurpose::Keystore);
    s.mac = Some(keystore_tag(&key, s, path)?);
    Ok(())
}

/// Whether `root` is the keystore's root key and its metadata is as ssefs
/// wrote it. `legacy_ok`: a keystore from before MACs is accepted (only
/// `Kms::open` does, and the engine then upgrades it).
pub(super) fn verify_store_mac(
    root: &SecretKey,
    s: &Store,
    path: &Path,
    legacy_ok: bool,
) -> Result<()> {
    let Some(tag) = &s.mac else {
        if check_maced_ok(root, &s.root.check) {
            return Err(edited(path, "its MAC was removed"));
        }
        super::rootkey::verify_check(root, &s.root.check, path)?;
        if legacy_ok {
            return Ok(());
        }
        return Err(edited(path, "it has no MAC"));
    };
    if !check_maced_ok(root, &s.root.check) {
        return Err(Error::new(
            OssCode::InvalidParameter,
            "the root key does not match this keystore",
        )
        .resource(path.display().to_string()));
    }
    let key = MacKey::derive(root, MacPurpose::Keystore);
    let mut bare = s.clone();
    bare.mac = None;
    let text = super::store::to_text(&bare, path)?;
    key.verify_hex(&[text.as_bytes()], tag)
        .map_err(|_| edited(path, "its MAC does not match (edited outside ssefs?)"))
}

impl super::Kms {
    /// The MACs bucket `bucket`'s settings file may carry now, and the
    /// keystore's epoch they were read at (empty: the bucket is unknown).
    pub fn settings_anchor(&self, bucket: &str) -> Result<(Vec<String>, u64)> {
        let (s, epoch) = self.snapshot_at()?;
        Ok((
            s.bucket_settings.get(bucket).cloned().unwrap_or_default(),
            epoch,
        ))
    }

    /// Before a settings file with MAC `tag` replaces the bucket's: the new
    /// MAC is allowed beside the current ones, so a crash between this and
    /// the file's rename leaves a bucket that still works.
    pub fn begin_settings_change(&self, bucket: &str, tag: &str) -> Result<()> {
        self.modify(|s, _| {
            let e = s.bucket_settings.entry(bucket.to_string()).or_default();
            if !e.iter().any(|t| t == tag) {
                e.push(tag.to_string());
            }
            Ok(())
        })
    }

    /// Once the file with MAC `tag` is in place: only it is allowed.
    pub fn end_settings_change(&self, bucket: &str, tag: &str) -> Result<()> {
        self.modify(|s, _| {
            s.bucket_settings
                .insert(bucket.to_string(), vec![tag.to_string()]);
            Ok(())
        })
    }

    /// The bucket is gone: none of its settings files is valid any more.
    pub fn forget_settings(&self, bucket: &str) -> Result<()> {
        self.modify(|s, _| {
            s.bucket_settings.remove(bucket);
            Ok(())
        })
    }
}

/// The integrity error for a keystore whose metadata is not as ssefs wrote
/// it: the file is named, and nothing of it is used.
fn edited(path: &Path, why: &str) -> Error {
    Error::integrity(format!(
        "keystore {} fails authentication: {why}; restore it from a backup",
        path.display()
    ))
    .resource(path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors of docs/FORMAT.md §8.5, computed there with an
    /// independent HKDF and HMAC (Python's hmac module).
    #[test]
    fn derived_keys_and_tags_match_the_spec() {
        let root = SecretKey::from_bytes(&(0u8..32).collect::<Vec<_>>());
        let k = MacKey::derive(&root, MacPurpose::BucketSettings);
        assert_eq!(
            crate::kms::store::hex_encode(k.key.expose()),
            "0ec36aa5cd7abfac1dd4b6136a2dfc8d9975ac66cd47e9bf75156d16850364de"
        );
        let tag = k.tag_hex(&[b"bkt", b"chunk_size = 4096\n"]);
        assert_eq!(
            tag,
            "4751d175d61bd9b2becda1d224a04de24a619aa694b80902ee6bf17e5310371c"
        );
        assert!(k
            .verify_hex(&[b"bkt", b"chunk_size = 4096\n"], &tag)
            .is_ok());
        // Another bucket, another body, or parts split differently: no.
        assert!(k
            .verify_hex(&[b"bkx", b"chunk_size = 4096\n"], &tag)
            .is_err());
        assert!(k
            .verify_hex(&[b"bkt", b"chunk_size = 4097\n"], &tag)
            .is_err());
        assert!(k
            .verify_hex(&[b"bktc", b"hunk_size = 4096\n"], &tag)
            .is_err());
        assert!(k.verify_hex(&[b"bkt", b"chunk_size = 4096\n"], "").is_err());
        let plain = MacKey::derive(&root, MacPurpose::PlainObjects).into_secret();
        assert_eq!(
            crate::kms::store::hex_encode(plain.expose()),
            "1a43a6ee25e890a4665ff9a2de81eb452f2cc373560bf3e83ee68b4e83a0af28"
        );
        let g = MacKey::derive(&root, MacPurpose::Grants);
        assert_eq!(
            g.tag_hex(&[b"[kms]\nmaster_rotation_days = 30\n"]),
            "d164859e5b531df9b5d15ffc17b659b30931e8e4fcd803dfec9830bd435748bb"
        );
        // Each purpose its own key.
        assert_ne!(g.tag_hex(&[b"bkt", b"chunk_size = 4096\n"]), tag,);
        assert!(!format!("{k:?}").contains("0ec3"));
    }
}
