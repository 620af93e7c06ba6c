//! The first open of a data directory made before ssefs authenticated its
//! policy files: every one gets its MAC, the keystore's last, since the
//! keystore's MAC is what says the upgrade is done (from then on a policy
//! file without a MAC is an integrity error). An upgrade interrupted by a
//! crash is finished by the next open. Also the sealing of an operator's
//! edit of the grants (`ssefs kms seal-policy`).

use std::fs;
use std::path::Path;

use super::{bucket, Engine, STATE_DIR};
use crate::error::{Error, IoContext, OssCode, Result};
use crate::kms::{Kms, Policy, RootKeySource};

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
        let state = data_dir.join(STATE_DIR);
        if !state.join("keystore.toml").exists() {
            return Err(Error::new(
                OssCode::KmsServiceNotEnabled,
                "the data directory is not initialised (run `ssefs init`)",
            )
            .resource(data_dir.display().to_string()));
        }
        let owner =
            std::os::unix::fs::MetadataExt::uid(&fs::metadata(data_dir).ctx(data_dir.display())?);
        let config = state.join("config.toml");
        let (policy, grants) = Policy::load_with_text(&config, owner)?;
        let kms = std::sync::Arc::new(Kms::open(&state, root, policy.clone())?);
        let settings = bucket::SettingsCache::new(kms.clone());
        let engine = Engine {
            data_dir: data_dir.to_path_buf(),
            kms,
            cache: None,
            settings,
        };
        engine.upgrade(grants.as_deref())?;
        engine.kms.seal_grants(grants.as_deref())?;
        tracing::info!(config = %config.display(), "sealed the grants and KMS settings");
        Ok(policy)
    }
}
