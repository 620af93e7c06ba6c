//! The error every public operation returns: an OSS error code, a message,
//! the object or key concerned, and the errno the FUSE layer answers with.

use std::fmt;
use std::io;

/// OSS and KMS error codes, spelled as the services spell them
/// (../shared/reference/oss-sse.md §2 and §4), plus the few ssefs adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OssCode {
    InvalidArgument,
    InvalidEncryptionAlgorithmError,
    InvalidDataEncryptionAlgorithmError,
    NoSuchServerSideEncryptionRule,
    KeyNotFound,
    AliasNotFound,
    InvalidParameter,
    AccessDenied,
    /// KMS: the key is disabled.
    RejectedDisabled,
    /// KMS: the key is pending deletion.
    RejectedPendingDeletion,
    /// KMS: an EXTERNAL key whose material has not been imported.
    RejectedPendingImport,
    /// KMS: the state change is not allowed from the key's current state.
    RejectedStateModifiedFailed,
    /// KMS: the alias is already taken.
    AlreadyExistsAlias,
    KmsServiceNotEnabled,
    InvalidBucketName,
    BucketAlreadyExists,
    BucketNotEmpty,
    NoSuchBucket,
    NoSuchKey,
    InvalidObjectName,
    /// A write that must not replace an object found one there (OSS's
    /// answer to `x-oss-forbid-overwrite`).
    FileAlreadyExists,
    /// A write conditional on the version it read found another one: the
    /// object was written, replaced or removed meanwhile.
    PreconditionFailed,
    /// ssefs: a header or chunk failed authentication.
    DataIntegrityError,
    InternalError,
}

impl OssCode {
    pub fn as_str(self) -> &'static str {
        use OssCode::*;
        match self {
            InvalidArgument => "InvalidArgument",
            InvalidEncryptionAlgorithmError => "InvalidEncryptionAlgorithmError",
            InvalidDataEncryptionAlgorithmError => "InvalidDataEncryptionAlgorithmError",
            NoSuchServerSideEncryptionRule => "NoSuchServerSideEncryptionRule",
            KeyNotFound => "KeyNotFound",
            AliasNotFound => "AliasNotFound",
            InvalidParameter => "InvalidParameter",
            AccessDenied => "AccessDenied",
            RejectedDisabled => "Rejected.Disabled",
            RejectedPendingDeletion => "Rejected.PendingDeletion",
            RejectedPendingImport => "Rejected.PendingImport",
            RejectedStateModifiedFailed => "Rejected.StateModifiedFailed",
            AlreadyExistsAlias => "AlreadyExists.Alias",
            KmsServiceNotEnabled => "KmsServiceNotEnabled",
            InvalidBucketName => "InvalidBucketName",
            BucketAlreadyExists => "BucketAlreadyExists",
            BucketNotEmpty => "BucketNotEmpty",
            NoSuchBucket => "NoSuchBucket",
            NoSuchKey => "NoSuchKey",
            InvalidObjectName => "InvalidObjectName",
            FileAlreadyExists => "FileAlreadyExists",
            PreconditionFailed => "PreconditionFailed",
            DataIntegrityError => "DataIntegrityError",
            InternalError => "InternalError",
        }
    }

    /// The errno a filesystem caller sees for this code.
    pub fn errno(self) -> i32 {
        use OssCode::*;
        match self {
            InvalidArgument
            | InvalidEncryptionAlgorithmError
            | InvalidDataEncryptionAlgorithmError
            | InvalidParameter
            | InvalidBucketName
            | InvalidObjectName => libc::EINVAL,
            NoSuchServerSideEncryptionRule => libc::ENODATA,
            KeyNotFound | AliasNotFound => libc::ENOKEY,
            RejectedDisabled | RejectedPendingDeletion | RejectedPendingImport => libc::EKEYREVOKED,
            RejectedStateModifiedFailed => libc::EINVAL,
            AlreadyExistsAlias | BucketAlreadyExists | FileAlreadyExists => libc::EEXIST,
            PreconditionFailed => libc::ESTALE,
            AccessDenied | KmsServiceNotEnabled => libc::EACCES,
            BucketNotEmpty => libc::ENOTEMPTY,
            NoSuchBucket | NoSuchKey => libc::ENOENT,
            DataIntegrityError | InternalError => libc::EIO,
        }
    }
}

impl fmt::Display for OssCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with its OSS code, the object or bucket concerned and the KMS key
/// concerned. Never holds key material: only ids and aliases.
#[derive(Debug, Clone)]
pub struct Error {
    pub code: OssCode,
    pub message: String,
    /// The bucket, object or file concerned, when there is one.
    pub resource: Option<String>,
    /// The KMS key id or alias concerned, when there is one.
    pub key_id: Option<String>,
    /// For `InternalError`s that came from the OS, its errno.
    pub os_errno: Option<i32>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How much of a value from the user an error repeats: a valid key id or
/// alias whole; a 64 KiB xattr value only in part.
const VALUE_SHOWN: usize = 256;
/// Paths: a bucket, "/" and a 1023-byte object key whole.
const RESOURCE_SHOWN: usize = 1100;
/// Messages, which may hold a path and a value.
const MESSAGE_SHOWN: usize = 2048;

/// `s` as errors and logs show it: control characters escaped, so that an
/// error stays one line whatever it quotes, and cut after `max` characters.
pub fn shown(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push_str(&format!("... ({} bytes)", s.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A value from the user, quoted for an error message (see `shown`).
pub fn quote(s: &str) -> String {
    format!("\"{}\"", shown(s, VALUE_SHOWN))
}

impl Error {
    pub fn new(code: OssCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            resource: None,
            key_id: None,
            os_errno: None,
        }
    }

    /// Names the object, bucket or path concerned (kept if already set, since
    /// the innermost layer knows it best). Shown as `shown` shows it.
    pub fn resource(mut self, r: impl Into<String>) -> Self {
        if self.resource.is_none() {
            self.resource = Some(shown(&r.into(), RESOURCE_SHOWN));
        }
        self
    }

    /// Names the KMS key concerned, as the caller wrote it (shown as `shown`
    /// shows it: it may be any bad input).
    pub fn key(mut self, k: impl Into<String>) -> Self {
        if self.key_id.is_none() {
            self.key_id = Some(shown(&k.into(), VALUE_SHOWN));
        }
        self
    }

    pub fn errno(&self) -> i32 {
        self.os_errno.unwrap_or_else(|| self.code.errno())
    }

    pub fn io(context: impl fmt::Display, e: io::Error) -> Self {
        // The context is often a path the user gave: keep it short.
        let context = shown(&context.to_string(), RESOURCE_SHOWN);
        let mut err = Error::new(OssCode::InternalError, format!("{context}: {e}"));
        err.os_errno = e.raw_os_error();
        err
    }

    pub fn integrity(message: impl Into<String>) -> Self {
        Error::new(OssCode::DataIntegrityError, message)
    }

    pub fn access_denied_kms() -> Self {
        Error::new(OssCode::AccessDenied, "This request is forbidden by kms")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Messages are ours, but some quote paths or values: one line always.
        write!(f, "{}: {}", self.code, shown(&self.message, MESSAGE_SHOWN))?;
        if let Some(r) = &self.resource {
            write!(f, " (resource: {r})")?;
        }
        if let Some(k) = &self.key_id {
            write!(f, " (key id: {k})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Adds context to `io::Result`s.
pub trait IoContext<T> {
    fn ctx(self, context: impl fmt::Display) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::io(context, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 6, part 7: a key id or path holding a newline made a two-line
    /// error, and a 64 KiB value a 64 KiB one.
    #[test]
    fn errors_stay_one_short_line_whatever_they_quote() {
        let long = "k".repeat(65536);
        for (key, path) in [("alias/x\n", "b/o\r\n"), (long.as_str(), long.as_str())] {
            let e = Error::new(OssCode::AliasNotFound, format!("quoting {}", quote(key)))
                .key(key)
                .resource(path);
            let text = e.to_string();
            assert_eq!(text.lines().count(), 1, "{text}");
            assert!(text.len() < 2 * RESOURCE_SHOWN, "{} bytes", text.len());
        }
        let e = Error::new(OssCode::InvalidArgument, "m").key("alias/x\n");
        assert_eq!(e.key_id.as_deref(), Some("alias/x\\n"));
        assert_eq!(shown("ok as is", 10), "ok as is");
        assert_eq!(shown("abcdef", 3), "abc... (6 bytes)");
    }
}
