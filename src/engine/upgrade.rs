//! The first open of a data directory made before ssefs authenticated its
//! policy files: every one gets its MAC, the keystore's last, since the
//! keystore's MAC is what says the upgrade is done (from then on a policy
//! file without a MAC is an integrity error). An upgrade interrupted by a
//! crash is finished by the next open.

use super::Engine;
use crate::error::Result;

impl Engine {
    /// Upgrades the data directory if it predates MACs; else nothing.
    pub(super) fn upgrade(&self) -> Result<()> {
        if !self.kms.needs_upgrade() {
            return Ok(());
        }
        let buckets = self.seal_legacy_settings()?;
        self.kms.finish_upgrade()?;
        tracing::info!(
            data_dir = %self.data_dir.display(),
            buckets,
            "upgraded the data directory: bucket settings and the keystore now carry MACs"
        );
        Ok(())
    }
}
