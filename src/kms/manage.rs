//! Key management, as `ssefs kms ...` calls it: creating, describing and
//! changing the state of CMKs, importing material, aliases, and the SSE-OSS
//! master key. These run as whoever can write the keystore; the policy
//! governs only the data path.

use uuid::Uuid;

use super::metadata::{KeyCreator, KeyMetadata, KeyOrigin, KeyState, MasterInfo};
use super::store::{self, CmkEntry, Store, VersionEntry};
use super::{
    default_key_in, names, new_key_id, now_secs, require_enabled, resolve, Kms, DEFAULT_KEY_ALIAS,
    SECS_PER_DAY,
};
use crate::crypto::{tags_equal, SecretKey};
use crate::error::{Error, OssCode, Result};

/// The range KMS allows for a deletion's waiting period.
const PENDING_DAYS: std::ops::RangeInclusive<u32> = 7..=366;
const DESCRIPTION_MAX_LEN: usize = 8192;

impl Kms {
    /// Creates a CMK (and `alias`, if given). `Aliyun_KMS` keys get random
    /// material; `EXTERNAL` keys wait in PendingImport for
    /// `import_key_material`.
    pub fn create_key(
        &self,
        description: Option<&str>,
        origin: KeyOrigin,
        alias: Option<&str>,
    ) -> Result<KeyMetadata> {
        if let Some(a) = alias {
            names::validate_user_alias(a)?;
        }
        let description = description.unwrap_or_default();
        if description.len() > DESCRIPTION_MAX_LEN {
            return Err(Error::new(
                OssCode::InvalidParameter,
                format!("the description is longer than {DESCRIPTION_MAX_LEN} bytes"),
            ));
        }
        // describe-key prints it on one line, as "Description: ...".
        if description.chars().any(char::is_control) {
            return Err(Error::new(
                OssCode::InvalidParameter,
                "the description must not hold control characters (newlines, tabs)",
            ));
        }
        self.modify(|s, now| {
            if let Some(a) = alias {
                if s.aliases.contains_key(a) {
                    return Err(alias_exists(a));
                }
            }
            let id = new_key_id(s);
            let (state, versions) = match origin {
                KeyOrigin::AliyunKms => {
                    let material = SecretKey::random(store::KEY_LEN);
                    (
                        KeyState::Enabled,
                        vec![self.seal_version(&id, 1, now, &material)],
                    )
                }
                KeyOrigin::External => (KeyState::PendingImport, Vec::new()),
            };
            s.cmk.push(CmkEntry {
                id,
                description: description.to_string(),
                origin,
                state,
                creator: KeyCreator::User,
                created: now,
                deletion_date: None,
                versions,
            });
            if let Some(a) = alias {
                s.aliases.insert(a.to_string(), id);
            }
            tracing::info!(key_id = %id, origin = %origin, "created CMK");
            metadata_of(s, &id, &id.hyphenated().to_string())
        })
    }

    /// Every CMK that exists (deleted keys excluded), oldest first.
    pub fn list_keys(&self) -> Result<Vec<KeyMetadata>> {
        let s = self.snapshot()?;
        let now = now_secs();
        Ok(s.cmk
            .iter()
            .filter(|k| !k.is_gone(now))
            .map(|k| metadata(&s, k))
            .collect())
    }

    pub fn describe_key(&self, key_ref: &str) -> Result<KeyMetadata> {
        let s = self.snapshot()?;
        let id = resolve(&s, key_ref, now_secs())?;
        metadata_of(&s, &id, key_ref)
    }

    /// Disabled -> Enabled (Enabled stays Enabled).
    pub fn enable_key(&self, key_ref: &str) -> Result<KeyMetadata> {
        self.change_key(key_ref, |k, _| match k.state {
            KeyState::Enabled | KeyState::Disabled => {
                k.state = KeyState::Enabled;
                Ok(())
            }
            other => Err(state_refused(other, "enabled")),
        })
    }

    /// Enabled -> Disabled; the default managed key cannot be disabled.
    pub fn disable_key(&self, key_ref: &str) -> Result<KeyMetadata> {
        self.change_key(key_ref, |k, _| {
            refuse_default(k, "disabled")?;
            match k.state {
                KeyState::Enabled | KeyState::Disabled => {
                    k.state = KeyState::Disabled;
                    Ok(())
                }
                other => Err(state_refused(other, "disabled")),
            }
        })
    }

    /// Schedules deletion `pending_days` (7..=366) from now. Until then the
    /// key can neither encrypt nor decrypt; afterwards it is gone.
    pub fn schedule_key_deletion(&self, key_ref: &str, pending_days: u32) -> Result<KeyMetadata> {
        if !PENDING_DAYS.contains(&pending_days) {
            return Err(Error::new(
                OssCode::InvalidParameter,
                format!(
                    "the pending window must be {} to {} days, not {pending_days}",
                    PENDING_DAYS.start(),
                    PENDING_DAYS.end()
                ),
            )
            .key(key_ref));
        }
        self.change_key(key_ref, |k, now| {
            refuse_default(k, "scheduled for deletion")?;
            if k.state == KeyState::PendingDeletion {
                return Err(state_refused(k.state, "scheduled for deletion"));
            }
            k.state = KeyState::PendingDeletion;
            k.deletion_date = Some(now + u64::from(pending_days) * SECS_PER_DAY);
            Ok(())
        })
    }

    /// PendingDeletion -> Enabled (PendingImport for an EXTERNAL key that
    /// never received material).
    pub fn cancel_key_deletion(&self, key_ref: &str) -> Result<KeyMetadata> {
        self.change_key(key_ref, |k, _| {
            if k.state != KeyState::PendingDeletion {
                return Err(state_refused(k.state, "restored from deletion"));
            }
            k.state = if k.versions.is_empty() {
                KeyState::PendingImport
            } else {
                KeyState::Enabled
            };
            k.deletion_date = None;
            Ok(())
        })
    }

    /// Adds a version with fresh material, which becomes primary; older
    /// versions keep decrypting.
    pub fn rotate_key(&self, key_ref: &str) -> Result<KeyMetadata> {
        self.change_key(key_ref, |k, now| {
            if k.origin == KeyOrigin::External {
                return Err(Error::new(
                    OssCode::InvalidParameter,
                    "keys with imported material (origin EXTERNAL) cannot be rotated: \
                     ssefs cannot make new material for them",
                ));
            }
            require_enabled(k.state, key_ref)?;
            let version = k.versions.last().map_or(1, |v| v.version + 1);
            let material = SecretKey::random(store::KEY_LEN);
            let v = self.seal_version(&k.id, version, now, &material);
            k.versions.push(v);
            tracing::info!(key_id = %k.id, version, "rotated CMK");
            Ok(())
        })
    }

    /// Imports 32 bytes of material into an EXTERNAL key: PendingImport ->
    /// Enabled. Importing again is allowed only with the same material.
    pub fn import_key_material(&self, key_ref: &str, material: SecretKey) -> Result<KeyMetadata> {
        if material.len() != store::KEY_LEN {
            return Err(Error::new(
                OssCode::InvalidParameter,
                format!(
                    "key material must be {} bytes, got {}",
                    store::KEY_LEN,
                    material.len()
                ),
            )
            .key(key_ref));
        }
        self.change_key(key_ref, |k, now| {
            if k.origin != KeyOrigin::External {
                return Err(Error::new(
                    OssCode::InvalidParameter,
                    "key material can only be imported into keys whose origin is EXTERNAL",
                ));
            }
            match k.state {
                KeyState::PendingDeletion => Err(Error::new(
                    OssCode::RejectedPendingDeletion,
                    "The specified key is pending deletion",
                )),
                KeyState::PendingImport => {
                    let v = self.seal_version(&k.id, 1, now, &material);
                    k.versions.push(v);
                    k.state = KeyState::Enabled;
                    tracing::info!(key_id = %k.id, "imported key material");
                    Ok(())
                }
                KeyState::Enabled | KeyState::Disabled => {
                    let v = k.versions.last().ok_or_else(|| {
                        store::corrupt(&self.keystore, format!("CMK {} has no material", k.id))
                    })?;
                    let current =
                        store::open_sealed(&self.root, &store::cmk_ad(&k.id, v.version), &v.sealed)
                            .map_err(|_| {
                                store::corrupt(
                                    &self.keystore,
                                    format!(
                                        "CMK {} version {} fails to authenticate",
                                        k.id, v.version
                                    ),
                                )
                            })?;
                    if tags_equal(current.expose(), material.expose()) {
                        Ok(())
                    } else {
                        Err(Error::new(
                            OssCode::InvalidParameter,
                            "this key already holds different key material; only the same \
                             material can be imported again",
                        ))
                    }
                }
            }
        })
    }

    /// Points a new alias at a key.
    pub fn create_alias(&self, alias: &str, key_ref: &str) -> Result<()> {
        names::validate_user_alias(alias)?;
        self.modify(|s, now| {
            if s.aliases.contains_key(alias) {
                return Err(alias_exists(alias));
            }
            let id = resolve(s, key_ref, now)?;
            s.aliases.insert(alias.to_string(), id);
            Ok(())
        })
    }

    pub fn delete_alias(&self, alias: &str) -> Result<()> {
        if alias == DEFAULT_KEY_ALIAS {
            return Err(Error::new(
                OssCode::InvalidParameter,
                "the alias of the default managed key cannot be deleted",
            )
            .key(alias));
        }
        names::parse_key_ref(alias)?;
        self.modify(|s, _| match s.aliases.remove(alias) {
            Some(_) => Ok(()),
            None => Err(
                Error::new(OssCode::AliasNotFound, "The specified alias is not found").key(alias),
            ),
        })
    }

    /// (alias, key id) pairs, sorted by alias.
    pub fn list_aliases(&self) -> Result<Vec<(String, Uuid)>> {
        let s = self.snapshot()?;
        let now = now_secs();
        Ok(s.aliases
            .iter()
            .filter(|(_, id)| s.cmk(id).is_some_and(|k| !k.is_gone(now)))
            .map(|(a, id)| (a.clone(), *id))
            .collect())
    }

    /// Adds a master key version; new SSE-OSS objects use it.
    pub fn rotate_master(&self) -> Result<u32> {
        self.modify(|s, now| {
            let v = s.add_master_version(&self.root, now);
            tracing::info!(version = v, "rotated the SSE-OSS master key");
            Ok(v)
        })
    }

    pub fn master_versions(&self) -> Result<Vec<MasterInfo>> {
        let s = self.snapshot()?;
        let mut v: Vec<MasterInfo> = s
            .master
            .iter()
            .map(|m| MasterInfo {
                version: m.version,
                created: m.created,
            })
            .collect();
        v.sort_by_key(|m| m.version);
        Ok(v)
    }

    /// The default managed key's id, if it has been created.
    pub fn default_key_id(&self) -> Result<Option<Uuid>> {
        Ok(default_key_in(&*self.snapshot()?, now_secs()))
    }

    /// Resolves `key_ref` under the write lock, applies `f` to the key and
    /// returns its new metadata. Errors name `key_ref`.
    fn change_key(
        &self,
        key_ref: &str,
        mut f: impl FnMut(&mut CmkEntry, u64) -> Result<()>,
    ) -> Result<KeyMetadata> {
        self.modify(|s, now| {
            let id = resolve(s, key_ref, now)?;
            let k = s
                .cmk_mut(&id)
                .ok_or_else(|| super::key_not_found(key_ref))?;
            f(k, now)?;
            metadata_of(s, &id, key_ref)
        })
        .map_err(|e| e.key(key_ref))
    }

    fn seal_version(
        &self,
        id: &Uuid,
        version: u32,
        now: u64,
        material: &SecretKey,
    ) -> VersionEntry {
        VersionEntry {
            version,
            created: now,
            sealed: store::seal(&self.root, &store::cmk_ad(id, version), material.expose()),
        }
    }
}

/// What the user sees of `k`.
fn metadata(s: &Store, k: &CmkEntry) -> KeyMetadata {
    KeyMetadata {
        key_id: k.id,
        description: k.description.clone(),
        origin: k.origin,
        state: k.state,
        creator: k.creator,
        creation_date: k.created,
        deletion_date: k.deletion_date,
        primary_version: k.primary().map(|v| v.version),
        versions: k.versions.len() as u32,
        aliases: s.aliases_of(&k.id),
    }
}

/// The metadata of the key `id` just resolved from `key_ref`.
fn metadata_of(s: &Store, id: &Uuid, key_ref: &str) -> Result<KeyMetadata> {
    s.cmk(id)
        .map(|k| metadata(s, k))
        .ok_or_else(|| super::key_not_found(key_ref))
}

fn refuse_default(k: &CmkEntry, what: &str) -> Result<()> {
    if k.creator == KeyCreator::Oss {
        return Err(Error::new(
            OssCode::InvalidParameter,
            format!("the default managed key ({DEFAULT_KEY_ALIAS}) cannot be {what}"),
        ));
    }
    Ok(())
}

fn state_refused(state: KeyState, what: &str) -> Error {
    Error::new(
        OssCode::RejectedStateModifiedFailed,
        format!("a key in state {state} cannot be {what}"),
    )
}

fn alias_exists(alias: &str) -> Error {
    Error::new(
        OssCode::AlreadyExistsAlias,
        format!("the alias {alias} already exists"),
    )
    .key(alias)
}
