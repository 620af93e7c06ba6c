//! `ssefs kms ...`: key management commands, named as the KMS API names them.

use std::path::PathBuf;

use clap::Subcommand;

use super::{out, GlobalArgs};
use crate::crypto::SecretKey;
use crate::engine::{Engine, STATE_DIR};
use crate::error::{Error, IoContext, OssCode, Result};
use crate::kms::KeyOrigin;

#[derive(Subcommand, Debug)]
pub enum KmsCmd {
    /// CreateKey: a new CMK (origin EXTERNAL for BYOK: unusable until its material is imported).
    CreateKey {
        #[arg(long)]
        alias: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// Aliyun_KMS (generated) or EXTERNAL (imported)
        #[arg(long, default_value = "Aliyun_KMS")]
        origin: String,
    },
    /// ListKeys
    ListKeys,
    /// DescribeKey: KEY is a key id or an alias.
    DescribeKey { key: String },
    /// EnableKey
    EnableKey { key: String },
    /// DisableKey: objects under the key become unreadable and unwritable until enabled.
    DisableKey { key: String },
    /// ScheduleKeyDeletion: the key is deleted for good after 7 to 366 days.
    ScheduleKeyDeletion {
        key: String,
        #[arg(long)]
        pending_days: u32,
    },
    /// CancelKeyDeletion
    CancelKeyDeletion { key: String },
    /// RotateKey: a new key version; old versions keep decrypting.
    RotateKey { key: String },
    /// ImportKeyMaterial: 32 bytes of key material (raw, or 64 hex digits) for an EXTERNAL key.
    ImportKeyMaterial {
        key: String,
        #[arg(long, value_name = "FILE")]
        material_file: PathBuf,
    },
    /// CreateAlias: ALIAS is alias/NAME.
    CreateAlias { alias: String, key: String },
    /// DeleteAlias
    DeleteAlias { alias: String },
    /// ListAliases
    ListAliases,
    /// Add a version of the SSE-OSS master key (new objects use it).
    RotateMaster,
    /// List the SSE-OSS master key versions.
    ListMaster,
    /// Check DATA_DIR/.ssefs/config.toml (grants, master_rotation_days) and
    /// approve it. Every open refuses a config.toml other than the one last
    /// approved, so a change takes effect only once sealed: edit, then seal.
    /// On a store, FILE is the new config.toml: checked, stored as
    /// PREFIX/.ssefs/config.toml and approved in one step.
    SealPolicy {
        /// The new config.toml (on a store only)
        file: Option<PathBuf>,
    },
}

/// Reads key material from a file: exactly 32 raw bytes, or 64 hex digits.
fn read_material(path: &PathBuf) -> Result<SecretKey> {
    let raw = zeroize::Zeroizing::new(std::fs::read(path).ctx(path.display())?);
    if raw.len() == 32 {
        return Ok(SecretKey::from_bytes(&raw));
    }
    let text = std::str::from_utf8(&raw).unwrap_or("").trim();
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let bytes: zeroize::Zeroizing<Vec<u8>> = zeroize::Zeroizing::new(
            (0..64)
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
                .collect(),
        );
        return Ok(SecretKey::from_bytes(&bytes));
    }
    Err(Error::new(
        OssCode::InvalidParameter,
        "key material must be 32 raw bytes or 64 hex digits",
    )
    .resource(path.display().to_string()))
}

pub fn run(g: &GlobalArgs, cmd: KmsCmd) -> Result<()> {
    if let KmsCmd::SealPolicy { file } = &cmd {
        // Before any open, which would refuse the edit being approved.
        if let Some(store) = g.store()? {
            let text = match file {
                Some(f) => Some((std::fs::read(f).ctx(f.display())?, f.as_path())),
                None => None,
            };
            let p = Engine::seal_store_policy(store.clone(), &g.store_root_source(false)?, text)?;
            return out(&format!(
                "sealed {}: {} grant(s)\n",
                store.state_shown(crate::backend::State::Grants),
                p.grant_count()
            ));
        }
        if file.is_some() {
            return Err(Error::new(
                OssCode::InvalidArgument,
                "on a data directory, edit DATA_DIR/.ssefs/config.toml, then seal it without FILE",
            ));
        }
        let dir = g.data_dir();
        let p = Engine::seal_policy(&dir, &g.root_source(&dir, false)?)?;
        let days = match p.master_rotation_days() {
            0 => "never".to_string(),
            d => format!("every {d} days"),
        };
        let src = dir.join(STATE_DIR).join("config.toml");
        return out(&format!(
            "sealed {}: {} grant(s), master key rotated {days}\n",
            src.display(),
            p.grant_count()
        ));
    }
    let e = g.open_engine()?;
    let k = e.kms();
    match cmd {
        KmsCmd::CreateKey {
            alias,
            description,
            origin,
        } => {
            let origin: KeyOrigin = origin.parse()?;
            out(&k
                .create_key(description.as_deref(), origin, alias.as_deref())?
                .to_string())
        }
        KmsCmd::ListKeys => {
            let mut s = String::new();
            for m in k.list_keys()? {
                s.push_str(&format!(
                    "{}\t{}\t{}\n",
                    m.key_id,
                    m.state.as_str(),
                    m.aliases.join(",")
                ));
            }
            out(&s)
        }
        KmsCmd::DescribeKey { key } => out(&k.describe_key(&key)?.to_string()),
        KmsCmd::EnableKey { key } => k.enable_key(&key).map(|_| ()),
        KmsCmd::DisableKey { key } => k.disable_key(&key).map(|_| ()),
        KmsCmd::ScheduleKeyDeletion { key, pending_days } => {
            out(&k.schedule_key_deletion(&key, pending_days)?.to_string())
        }
        KmsCmd::CancelKeyDeletion { key } => k.cancel_key_deletion(&key).map(|_| ()),
        KmsCmd::RotateKey { key } => out(&k.rotate_key(&key)?.to_string()),
        KmsCmd::ImportKeyMaterial { key, material_file } => {
            let m = read_material(&material_file)?;
            out(&k.import_key_material(&key, m)?.to_string())
        }
        KmsCmd::CreateAlias { alias, key } => k.create_alias(&alias, &key),
        KmsCmd::DeleteAlias { alias } => k.delete_alias(&alias),
        KmsCmd::ListAliases => {
            let s: String = k
                .list_aliases()?
                .iter()
                .map(|(a, id)| format!("{a}\t{id}\n"))
                .collect();
            out(&s)
        }
        // Handled above, before the open.
        KmsCmd::SealPolicy { .. } => Ok(()),
        KmsCmd::RotateMaster => out(&format!("master key version {}\n", k.rotate_master()?)),
        KmsCmd::ListMaster => {
            let s: String = k
                .master_versions()?
                .iter()
                .map(|m| format!("{m}\n"))
                .collect();
            out(&s)
        }
    }
}
