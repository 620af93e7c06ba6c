//! OSS's vocabulary, parsed: encryption algorithms, bucket rules, per-object
//! encryption requests, bucket names and object keys. Every constructor here
//! validates exactly as ../shared/reference/oss-sse.md records the live
//! service doing, and returns the OSS error code it would.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::crypto::Cipher;
use crate::error::{quote, Error, OssCode, Result};

/// The longest key id or alias we accept anywhere.
pub const MAX_KEY_ID_LEN: usize = 256;

/// `SSEAlgorithm` / `x-oss-server-side-encryption`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SseAlgorithm {
    #[serde(rename = "AES256")]
    Aes256,
    #[serde(rename = "SM4")]
    Sm4,
    #[serde(rename = "KMS")]
    Kms,
}

impl SseAlgorithm {
    /// Exact, case-sensitive, as OSS compares it.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "AES256" => Ok(SseAlgorithm::Aes256),
            "SM4" => Ok(SseAlgorithm::Sm4),
            "KMS" => Ok(SseAlgorithm::Kms),
            _ => Err(Error::new(
                OssCode::InvalidEncryptionAlgorithmError,
                format!(
                    "The Encryption request you specified is not valid. Supported value: AES256/SM4/KMS. (got {})",
                    quote(s)
                ),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SseAlgorithm::Aes256 => "AES256",
            SseAlgorithm::Sm4 => "SM4",
            SseAlgorithm::Kms => "KMS",
        }
    }
}

impl fmt::Display for SseAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `KMSDataEncryption` / `x-oss-server-side-data-encryption`: only `SM4` exists.
fn parse_data_encryption(s: &str) -> Result<()> {
    if s == "SM4" {
        Ok(())
    } else {
        Err(Error::new(
            OssCode::InvalidDataEncryptionAlgorithmError,
            format!(
                "The KMS Data Encryption request you specified is not valid. Supported value:SM4 (got {})",
                quote(s)
            ),
        ))
    }
}

/// A key id or alias as written by a user. Syntax only: whether the key
/// exists is the KMS's business, at use time (an unknown CMK is accepted in a
/// bucket rule and refused at the next write). A key id is a UUID in its
/// hyphenated form (any case, as RFC 4122 reads them); an alias is
/// `alias/` and letters, digits, `_`, `/`, `-`.
fn parse_key_ref(s: &str) -> Result<String> {
    let alias = s.strip_prefix("alias/").is_some_and(|rest| {
        !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'/' || b == b'-')
    });
    let uuid = s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if s.len() > MAX_KEY_ID_LEN || !(alias || uuid) {
        return Err(Error::new(
            OssCode::InvalidArgument,
            format!(
                "KMSMasterKeyID must be a key id (a UUID) or an alias (alias/NAME) of at most {MAX_KEY_ID_LEN} characters (got {})",
                quote(s)
            ),
        ));
    }
    Ok(s.to_owned())
}

/// How an object is (or is to be) encrypted: the three OSS fields, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SseConfig {
    pub algorithm: SseAlgorithm,
    /// Only with KMS. `None` means the default managed CMK (`alias/acs/oss`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// Only with KMS: data encrypted with SM4 instead of AES-256.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kms_data_sm4: bool,
}

impl SseConfig {
    /// PutBucketEncryption's validation (reference §2).
    pub fn bucket_rule(
        algorithm: &str,
        kms_key_id: Option<&str>,
        data_encryption: Option<&str>,
    ) -> Result<Self> {
        let algorithm = SseAlgorithm::parse(algorithm)?;
        Self::fields(algorithm, kms_key_id, data_encryption)
    }

    /// The per-object request headers (reference §3). `Ok(None)` means no
    /// encryption header was sent: the bucket's rule applies. A data-encryption
    /// header alone is ignored, as OSS ignores it.
    pub fn object_headers(
        algorithm: Option<&str>,
        kms_key_id: Option<&str>,
        data_encryption: Option<&str>,
    ) -> Result<Option<Self>> {
        match algorithm {
            None => {
                if let Some(k) = kms_key_id {
                    return Err(key_id_not_applicable(k));
                }
                Ok(None)
            }
            Some(a) => {
                let algorithm = SseAlgorithm::parse(a)?;
                Self::fields(algorithm, kms_key_id, data_encryption).map(Some)
            }
        }
    }

    fn fields(
        algorithm: SseAlgorithm,
        kms_key_id: Option<&str>,
        data_encryption: Option<&str>,
    ) -> Result<Self> {
        let kms_key_id = match kms_key_id {
            None | Some("") => None,
            Some(k) if algorithm != SseAlgorithm::Kms => return Err(key_id_not_applicable(k)),
            Some(k) => Some(parse_key_ref(k)?),
        };
        // Unlike the key id, an empty data encryption does not mean "none":
        // SM4 is its only value.
        let kms_data_sm4 = match data_encryption {
            None => false,
            Some(d) => {
                parse_data_encryption(d)?;
                // With AES256 or SM4 the field is accepted and dropped.
                algorithm == SseAlgorithm::Kms
            }
        };
        Ok(SseConfig {
            algorithm,
            kms_key_id,
            kms_data_sm4,
        })
    }

    /// The data cipher this configuration encrypts with.
    pub fn cipher(&self) -> Cipher {
        match self.algorithm {
            SseAlgorithm::Aes256 => Cipher::Aes256Gcm,
            SseAlgorithm::Sm4 => Cipher::Sm4Gcm,
            SseAlgorithm::Kms if self.kms_data_sm4 => Cipher::Sm4Gcm,
            SseAlgorithm::Kms => Cipher::Aes256Gcm,
        }
    }

    /// Response-header lines as GetBucketEncryption would list the rule.
    pub fn describe_rule(&self) -> String {
        let mut s = format!("SSEAlgorithm: {}\n", self.algorithm);
        if let Some(k) = &self.kms_key_id {
            s.push_str(&format!("KMSMasterKeyID: {k}\n"));
        }
        if self.kms_data_sm4 {
            s.push_str("KMSDataEncryption: SM4\n");
        }
        s
    }
}

fn key_id_not_applicable(k: &str) -> Error {
    Error::new(
        OssCode::InvalidArgument,
        "KMSMasterKeyID is not applicable if the default sse algorithm is not KMS.",
    )
    .key(k)
}

/// A validated bucket name: 3 to 63 characters of lowercase letters, digits
/// and hyphens, starting and ending with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketName(String);

impl BucketName {
    pub fn parse(s: &str) -> Result<Self> {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        let ok = (3..=63).contains(&s.len())
            && s.chars().all(|c| alnum(c) || c == '-')
            && s.starts_with(alnum)
            && s.ends_with(alnum);
        if ok {
            Ok(BucketName(s.to_owned()))
        } else {
            Err(Error::new(
                OssCode::InvalidBucketName,
                "The specified bucket is not valid: use 3 to 63 lowercase letters, digits and hyphens, starting and ending with a letter or digit",
            )
            .resource(s.escape_debug().to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BucketName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Names ssefs keeps for itself inside buckets (settings, temp files).
pub const RESERVED_PREFIX: &str = ".ssefs";

/// Checks one path component of an object key.
pub fn check_name_component(c: &str) -> Result<()> {
    let bad = c.is_empty()
        || c == "."
        || c == ".."
        || c.len() > 255
        || c.contains('\0')
        || c.starts_with(RESERVED_PREFIX);
    if bad {
        Err(Error::new(
            OssCode::InvalidObjectName,
            format!("invalid object key component {} (names starting with {RESERVED_PREFIX} are reserved)", quote(c)),
        ))
    } else {
        Ok(())
    }
}

/// A validated object key: `/`-separated components, none empty, `.`, `..`
/// or reserved. At most 1023 bytes, as in OSS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > 1023 {
            return Err(Error::new(
                OssCode::InvalidObjectName,
                "object keys are 1 to 1023 bytes",
            ));
        }
        for c in s.split('/') {
            check_name_component(c).map_err(|e| e.resource(s))?;
        }
        Ok(ObjectKey(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Splits `BUCKET/KEY`.
pub fn split_object_path(s: &str) -> Result<(BucketName, ObjectKey)> {
    let (b, k) = s
        .split_once('/')
        .ok_or_else(|| Error::new(OssCode::InvalidObjectName, "expected BUCKET/KEY").resource(s))?;
    Ok((BucketName::parse(b)?, ObjectKey::parse(k)?))
}

#[cfg(test)]
mod tests;
