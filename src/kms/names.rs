//! How keys are named: a key ref is a CMK id (UUID) or an alias
//! (`alias/...`); what alias names are allowed.

use uuid::Uuid;

use super::DEFAULT_KEY_ALIAS;
use crate::error::{quote, Error, OssCode, Result};

const ALIAS_PREFIX: &str = "alias/";
/// Aliases under this prefix belong to the service (the default managed key).
const RESERVED_PREFIX: &str = "alias/acs/";
const ALIAS_MAX_LEN: usize = 255;

/// A parsed key ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KeyRef<'a> {
    Id(Uuid),
    Alias(&'a str),
}

/// Parses `s` as a UUID (canonical hyphenated form, any case) or an alias.
/// An alias that no alias could be (bad characters, too long) is malformed,
/// not merely unknown.
pub(super) fn parse_key_ref(s: &str) -> Result<KeyRef<'_>> {
    if let Some(rest) = s.strip_prefix(ALIAS_PREFIX) {
        if rest.is_empty() || rest.len() > ALIAS_MAX_LEN || !rest.bytes().all(alias_byte) {
            return Err(Error::new(
                OssCode::InvalidParameter,
                "the specified alias is malformed: alias/ and 1 to 255 letters, digits, '_', '/' or '-'",
            )
            .key(s));
        }
        return Ok(KeyRef::Alias(s));
    }
    // Uuid::try_parse also takes the simple, braced and URN forms; key ids
    // are only ever shown hyphenated, so accept only that (36 chars).
    match Uuid::try_parse(s) {
        Ok(u) if s.len() == 36 => Ok(KeyRef::Id(u)),
        _ => Err(Error::new(
            OssCode::InvalidParameter,
            "the specified key id is malformed",
        )
        .key(s)),
    }
}

/// Checks a user-chosen alias: `alias/` then 1..=255 of [A-Za-z0-9_/-],
/// outside the service's reserved `alias/acs/` space.
pub(super) fn validate_user_alias(alias: &str) -> Result<()> {
    let bad = |why: &str| {
        Error::new(
            OssCode::InvalidParameter,
            format!("invalid alias {}: {why}", quote(alias)),
        )
        .key(alias)
    };
    let Some(rest) = alias.strip_prefix(ALIAS_PREFIX) else {
        return Err(bad("an alias starts with \"alias/\""));
    };
    if rest.is_empty() || rest.len() > ALIAS_MAX_LEN {
        return Err(bad("the name after \"alias/\" must be 1 to 255 characters"));
    }
    if !rest.bytes().all(alias_byte) {
        return Err(bad("only letters, digits, '_', '/' and '-' are allowed"));
    }
    if alias.starts_with(RESERVED_PREFIX) || alias == DEFAULT_KEY_ALIAS {
        return Err(bad("aliases under alias/acs/ are reserved for the service"));
    }
    Ok(())
}

fn alias_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'/' || b == b'-'
}
