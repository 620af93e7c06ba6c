//! The first open of a data directory made by an older ssefs.
//!
//! - Before policy MACs: every policy file gets its MAC, the keystore's
//!   last, since the keystore's MAC is what says that step is done (from
//!   then on a policy file without a MAC is an integrity error).
//! - Before keyed tags on unencrypted objects: every such object is
//!   rewritten with them, then the keystore records it (`plain_macs`); from
//!   then on an unencrypted object without them is an integrity error
//!   (FORMAT.md §8.6).
//!
//! An upgrade interrupted by a crash is finished by the next open. Also the
//! sealing of an operator's edit of the grants (`ssefs kms seal-policy`).

use std::path::Path;

use super::walk::{self, ObjectEntry};
use super::{Engine, STATE_DIR};
use crate::error::{OssCode, Result};
use crate::kms::{Policy, RootKeySource};
use crate::principal::Principal;

/// What became of one object in the conversion to keyed tags.
enum Converted {
    /// Encrypted, or already with keyed tags.
    Nothing,
    Rewritten,
    /// Open for writing through a mount, or replaced meanwhile.
    Busy,
}

impl Engine {
    /// Upgrades the data directory if it predates MACs; else nothing.
    /// `grants`: the text of `config.toml` now (`None`: no file).
    pub(super) fn upgrade(&self, grants: Option<&str>) -> Result<()> {
        self.upgrade_policy(grants)?;
        self.upgrade_plain_objects()
    }

    /// Adds the policy MACs (FORMAT.md §8.4) if the keystore has none.
    fn upgrade_policy(&self, grants: Option<&str>) -> Result<()> {
        if !self.kms.needs_upgrade() {
            return Ok(());
        }
        let sealed = self.seal_legacy_settings()?;
        let buckets = sealed.len();
        self.kms.finish_upgrade(grants, sealed)?;
        if self.kms.data_dir_id()?.is_none() {
            self.kms.assign_data_dir_id();
        }
        tracing::info!(
            data_dir = %self.data_dir().display(),
            buckets,
            "upgraded the data directory: bucket settings, grants and the keystore now carry MACs"
        );
        Ok(())
    }

    /// Rewrites every unencrypted object from before keyed tags with them
    /// (FORMAT.md §8.6), then records in the keystore that all have them.
    /// An object that is busy or cannot be converted now is left as it is
    /// and named in a warning; the record then waits for a later open, so
    /// that no object still readable today becomes unreadable.
    fn upgrade_plain_objects(&self) -> Result<()> {
        if self.kms.plain_macs_required()? {
            return Ok(());
        }
        let p = Principal::current();
        let (mut rewritten, mut left) = (0usize, Vec::new());
        for obj in walk::all_objects(self, None)? {
            match self.convert_plain(&p, &obj) {
                Ok(Converted::Nothing) => {}
                Ok(Converted::Rewritten) => rewritten += 1,
                Ok(Converted::Busy) => left.push(format!("{} (busy)", obj.name)),
                Err(e) => left.push(format!("{} ({e})", obj.name)),
            }
        }
        if !left.is_empty() {
            tracing::warn!(
                data_dir = %self.data_dir().display(),
                rewritten,
                left = %left.join(", "),
                "unencrypted objects from before keyed tags are left to convert; the next \
                 start tries again (until then such objects are accepted without a MAC)"
            );
            return Ok(());
        }
        self.kms.finish_plain_upgrade()?;
        tracing::info!(
            data_dir = %self.data_dir().display(),
            rewritten,
            "upgraded the data directory: unencrypted objects now carry keyed tags \
             (FORMAT.md §8.6)"
        );
        Ok(())
    }

    /// Gives one object keyed tags if it is unencrypted without them:
    /// a rewrite to a temp file renamed over it, under a claim, as
    /// `reencrypt` does, keeping its content, attributes and override.
    fn convert_plain(&self, p: &Principal, obj: &ObjectEntry) -> Result<Converted> {
        let found = match obj.find(self) {
            Ok(f) => f,
            // Removed since the listing: nothing left to convert.
            Err(e) if e.code == OssCode::NoSuchKey => return Ok(Converted::Nothing),
            Err(e) => return Err(e),
        };
        if found.headerless() || !Self::read_header(found.file(), &obj.name)?.is_unkeyed_plain() {
            return Ok(Converted::Nothing);
        }
        let Some(_claim) = self.backend.claim(&found, &obj.name)? else {
            return Ok(Converted::Busy);
        };
        // Decide again under the claim: a mount may have rewritten it.
        if !Self::read_header(found.file(), &obj.name)?.is_unkeyed_plain() {
            return Ok(Converted::Nothing);
        }
        let over = self.backend.sse_override(&found, &obj.name)?;
        self.reencrypt_found(p, &obj.bucket, &found, &obj.name, (None, over.as_ref()))?;
        Ok(Converted::Rewritten)
    }

    /// `ssefs kms seal-policy`: validates the data directory's
    /// `.ssefs/config.toml` (grants, master rotation) as every open would,
    /// then records it as the approved one, so that opens stop refusing it.
    /// The operator's way to change grants: edit, then seal (as visudo
    /// does). Returns the policy sealed.
    pub fn seal_policy(data_dir: &Path, root: &RootKeySource) -> Result<Policy> {
        let (engine, grants) = Self::open_unsealed(data_dir, root)?;
        let config = data_dir.join(STATE_DIR).join("config.toml");
        engine.kms.seal_grants(grants.as_deref())?;
        tracing::info!(config = %config.display(), "sealed the grants and KMS settings");
        Ok(engine.kms.policy().clone())
    }

    /// `seal_policy` on a store: `text` (read from the file named with
    /// it), if given, becomes its grants record first (checked as every
    /// open checks it), then the record is approved.
    pub fn seal_store_policy(
        backend: std::sync::Arc<dyn crate::backend::Backend>,
        root: &RootKeySource,
        text: Option<(Vec<u8>, &Path)>,
    ) -> Result<Policy> {
        use crate::backend::State;
        let owner = nix::unistd::geteuid().as_raw();
        let shown = backend.state_shown(State::Grants);
        if let Some((t, from)) = text {
            // Nothing that would not load is stored.
            Policy::from_record(Some(&t), owner, from)?;
            backend.update_state(State::Grants, &mut |_| Ok(Some(t.clone())))?;
        }
        let (engine, grants) = Self::open_on(backend, None, owner, root)?;
        engine.kms.seal_grants(grants.as_deref())?;
        tracing::info!(config = %shown, "sealed the grants and KMS settings");
        Ok(engine.kms.policy().clone())
    }
}
