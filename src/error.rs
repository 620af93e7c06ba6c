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
            AlreadyExistsAlias | BucketAlreadyExists => libc::EEXIST,
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
    /// the innermost layer knows it best).
    pub fn resource(mut self, r: impl Into<String>) -> Self {
        if self.resource.is_none() {
            self.resource = Some(r.into());
        }
        self
    }

    pub fn key(mut self, k: impl Into<String>) -> Self {
        if self.key_id.is_none() {
            self.key_id = Some(k.into());
        }
        self
    }

    pub fn errno(&self) -> i32 {
        self.os_errno.unwrap_or_else(|| self.code.errno())
    }

    pub fn io(context: impl fmt::Display, e: io::Error) -> Self {
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
        write!(f, "{}: {}", self.code, self.message)?;
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
