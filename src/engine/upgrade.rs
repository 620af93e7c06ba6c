//! The first open of a data directory made before ssefs authenticated its
//! policy files: every one gets its MAC, the keystore's last, since the
//! keystore's MAC is what says the upgrade is done (from then on a policy
//! file without a MAC is an integrity error). An upgrade interrupted by a
//! crash is finished by the next open. Also the sealing of an operator's
//! edit of the grants (`ssefs kms seal-policy`).

use std::path::Path;

use super::{Engine, STATE_DIR};
use crate::error::Result;
use crate::kms::{Policy, RootKeySource};

impl Engine {
    /// Upgrades the data directory if it predates MACs; else nothing.
    /// `grants`: the text of `config.toml` now (`None`: no file).
    pub(super) fn upgrade(&self, grants: Option<&str>) -> Result<()> {
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
            data_dir = %self.data_dir.display(),
            buckets,
            "upgraded the data directory: bucket settings, grants and the keystore now carry MACs"
        );
        Ok(())
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
}
