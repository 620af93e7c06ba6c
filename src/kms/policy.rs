//! Who may use which KMS key and manage which bucket rule: principals (a uid
//! with its groups), the actions OSS and KMS name, and the grant file.
//!
//! Root and the data directory's owner may do everything; the anonymous
//! principal (`nobody`) is never allowed a KMS action; everyone else needs a
//! grant naming them, the action and the resource.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::User;
use serde::Deserialize;

use crate::error::{Error, OssCode, Result};
use crate::principal::Principal;

/// Default period of automatic SSE-OSS master key rotation.
pub const DEFAULT_MASTER_ROTATION_DAYS: u32 = 90;

/// An action a grant can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    KmsGenerateDataKey,
    KmsDecrypt,
    OssPutBucketEncryption,
    OssGetBucketEncryption,
    OssDeleteBucketEncryption,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::KmsGenerateDataKey,
        Action::KmsDecrypt,
        Action::OssPutBucketEncryption,
        Action::OssGetBucketEncryption,
        Action::OssDeleteBucketEncryption,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::KmsGenerateDataKey => "kms:GenerateDataKey",
            Action::KmsDecrypt => "kms:Decrypt",
            Action::OssPutBucketEncryption => "oss:PutBucketEncryption",
            Action::OssGetBucketEncryption => "oss:GetBucketEncryption",
            Action::OssDeleteBucketEncryption => "oss:DeleteBucketEncryption",
        }
    }

    /// The action spelled `s` (exactly as `as_str` spells it).
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn is_kms(self) -> bool {
        matches!(self, Action::KmsGenerateDataKey | Action::KmsDecrypt)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a grant's `actions` entry matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActionPattern {
    Any,
    AnyKms,
    AnyOss,
    Exact(Action),
}

impl ActionPattern {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "*" => Some(ActionPattern::Any),
            "kms:*" => Some(ActionPattern::AnyKms),
            "oss:*" => Some(ActionPattern::AnyOss),
            _ => Action::parse(s).map(ActionPattern::Exact),
        }
    }

    fn matches(self, a: Action) -> bool {
        match self {
            ActionPattern::Any => true,
            ActionPattern::AnyKms => a.is_kms(),
            ActionPattern::AnyOss => !a.is_kms(),
            ActionPattern::Exact(x) => x == a,
        }
    }
}

/// One resolved grant: user names are already uids.
#[derive(Debug, Clone)]
struct Grant {
    uids: Vec<u32>,
    gids: Vec<u32>,
    actions: Vec<ActionPattern>,
    /// Exact names, `*`, or a prefix ending in `*` (`alias/team-*`).
    resources: Vec<String>,
}

impl Grant {
    fn matches_principal(&self, p: &Principal) -> bool {
        self.uids.contains(&p.uid) || self.gids.iter().any(|&g| p.in_group(g))
    }

    fn matches_resource(&self, names: &[&str]) -> bool {
        self.resources.iter().any(|pat| {
            names.iter().any(|name| match pat.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => pat == name,
            })
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    kms: KmsSection,
    #[serde(default)]
    grant: Vec<GrantFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KmsSection {
    #[serde(default = "default_rotation_days")]
    master_rotation_days: u32,
}

impl Default for KmsSection {
    fn default() -> Self {
        KmsSection {
            master_rotation_days: DEFAULT_MASTER_ROTATION_DAYS,
        }
    }
}

fn default_rotation_days() -> u32 {
    DEFAULT_MASTER_ROTATION_DAYS
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantFile {
    #[serde(default)]
    uids: Vec<u32>,
    #[serde(default)]
    gids: Vec<u32>,
    #[serde(default)]
    users: Vec<String>,
    actions: Vec<String>,
    resources: Vec<String>,
}

/// The permission policy and KMS settings of one data directory.
#[derive(Debug, Clone)]
pub struct Policy {
    owner_uid: u32,
    master_rotation_days: u32,
    grants: Vec<Grant>,
    /// The file it was loaded from, for messages.
    source: Option<PathBuf>,
}

impl Policy {
    /// No grants: only root and `owner_uid` may use KMS keys.
    pub fn empty(owner_uid: u32) -> Self {
        Policy {
            owner_uid,
            master_rotation_days: DEFAULT_MASTER_ROTATION_DAYS,
            grants: Vec::new(),
            source: None,
        }
    }

    /// Loads the policy file at `path`; a missing file is an empty policy.
    pub fn load(path: &Path, owner_uid: u32) -> Result<Policy> {
        Policy::load_with_text(path, owner_uid).map(|(p, _)| p)
    }

    /// `load`, and the text it parsed (`None`: no file), which the caller
    /// checks against the MAC sealed in the keystore (`Kms::check_grants`):
    /// the very bytes the policy came from.
    pub fn load_with_text(path: &Path, owner_uid: u32) -> Result<(Policy, Option<String>)> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut p = Policy::empty(owner_uid);
                p.source = Some(path.to_path_buf());
                return Ok((p, None));
            }
            Err(e) => {
                return Err(
                    Error::io(format!("reading policy file {}", path.display()), e)
                        .resource(path.display().to_string()),
                )
            }
        };
        // A world-writable policy would let anyone grant themselves any key.
        let meta = fs::metadata(path)
            .map_err(|e| Error::io(format!("reading policy file {}", path.display()), e))?;
        if meta.permissions().mode() & 0o002 != 0 {
            return Err(invalid(path, "the file is world-writable; chmod o-w it"));
        }
        Policy::from_record(Some(text.as_bytes()), owner_uid, path)
    }

    /// The policy in the grants record `bytes` (`None`: there is none,
    /// an empty policy), and its text, as `load_with_text`. Who may write
    /// the record is the backend's to check (`strict` locally).
    pub fn from_record(
        bytes: Option<&[u8]>,
        owner_uid: u32,
        origin: &Path,
    ) -> Result<(Policy, Option<String>)> {
        let Some(bytes) = bytes else {
            let mut p = Policy::empty(owner_uid);
            p.source = Some(origin.to_path_buf());
            return Ok((p, None));
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|_| invalid(origin, "the file is not UTF-8"))?
            .to_owned();
        Policy::parse(&text, owner_uid, origin).map(|p| (p, Some(text)))
    }

    /// Parses policy text; `origin` names the file in errors.
    pub fn parse(text: &str, owner_uid: u32, origin: &Path) -> Result<Policy> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            // One home for each setting; a misplaced one says where it goes.
            let line = e.span().map_or(0, |s| {
                let before = &text.as_bytes()[..s.start.min(text.len())];
                before.iter().filter(|&&b| b == b'\n').count() + 1
            });
            match crate::settings::unknown_field(e.message()) {
                Some("master_rotation_days") => invalid(
                    origin,
                    format!("line {line}: `master_rotation_days` goes under [kms]"),
                ),
                Some(k) if crate::settings::MOUNT_KEYS.contains(&k) => invalid(
                    origin,
                    format!(
                        "line {line}: `{k}` is a mount setting: it goes in the mount's \
                         config file (ssefs --config FILE), not in the data directory"
                    ),
                ),
                _ => invalid(origin, e),
            }
        })?;
        let mut grants = Vec::with_capacity(file.grant.len());
        for (i, g) in file.grant.into_iter().enumerate() {
            let n = i + 1;
            if g.uids.is_empty() && g.gids.is_empty() && g.users.is_empty() {
                return Err(invalid(
                    origin,
                    format!("grant #{n} names no principal (give uids, gids or users)"),
                ));
            }
            let mut actions = Vec::with_capacity(g.actions.len());
            for a in &g.actions {
                let pat = ActionPattern::parse(a).ok_or_else(|| {
                    invalid(
                        origin,
                        format!(
                            "grant #{n}: unknown action {a:?} (known: {}, kms:*, oss:*, *)",
                            Action::ALL.map(Action::as_str).join(", ")
                        ),
                    )
                })?;
                actions.push(pat);
            }
            let mut uids = g.uids;
            for name in &g.users {
                match User::from_name(name) {
                    Ok(Some(u)) => uids.push(u.uid.as_raw()),
                    Ok(None) => {
                        return Err(invalid(
                            origin,
                            format!("grant #{n}: unknown user {name:?}"),
                        ))
                    }
                    Err(e) => {
                        return Err(invalid(
                            origin,
                            format!("grant #{n}: looking up user {name:?}: {e}"),
                        ))
                    }
                }
            }
            let resources = g.resources.iter().map(|r| canonical_resource(r)).collect();
            grants.push(Grant {
                uids,
                gids: g.gids,
                actions,
                resources,
            });
        }
        Ok(Policy {
            owner_uid,
            master_rotation_days: file.kms.master_rotation_days,
            grants,
            source: Some(origin.to_path_buf()),
        })
    }

    /// The same policy with another automatic rotation period (0 = never).
    pub fn with_master_rotation_days(mut self, days: u32) -> Self {
        self.master_rotation_days = days;
        self
    }

    /// How many grants the policy holds.
    pub fn grant_count(&self) -> usize {
        self.grants.len()
    }

    pub fn master_rotation_days(&self) -> u32 {
        self.master_rotation_days
    }

    pub fn owner_uid(&self) -> u32 {
        self.owner_uid
    }

    /// The file this policy came from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Whether `p` may perform `action` on a resource known by any of
    /// `resources` (for a KMS key: its id and every alias; for a bucket: its
    /// name).
    pub fn allows(&self, p: &Principal, action: Action, resources: &[&str]) -> bool {
        if action.is_kms() && p.is_anonymous() {
            return false;
        }
        if p.uid == 0 || p.uid == self.owner_uid {
            return true;
        }
        let resources: Vec<String> = resources.iter().map(|r| canonical_resource(r)).collect();
        let resources: Vec<&str> = resources.iter().map(String::as_str).collect();
        self.grants.iter().any(|g| {
            g.matches_principal(p)
                && g.actions.iter().any(|a| a.matches(action))
                && g.matches_resource(&resources)
        })
    }
}

/// Key ids compare case-insensitively; everything else exactly.
fn canonical_resource(r: &str) -> String {
    match uuid::Uuid::try_parse(r) {
        Ok(u) if r.len() == 36 => u.hyphenated().to_string(),
        _ => r.to_string(),
    }
}

fn invalid(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::new(
        OssCode::InvalidParameter,
        format!("policy file {}: {reason}", path.display()),
    )
    .resource(path.display().to_string())
}
