//! [`StorageError`]: everything a storage operation can refuse or fail with.

use std::io;
use std::path::PathBuf;

use crate::layout::KeyError;
use crate::multipart::CompleteError;
use crate::names::BucketNameError;

/// A boxed error from the request body stream (the client went away, or a chunk signature did
/// not verify).
pub type BodyError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a storage operation failed. [`StorageError::kind`] says whose fault it was.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid bucket name {name:?}: {reason}")]
    InvalidBucketName {
        name: String,
        #[source]
        reason: BucketNameError,
    },
    #[error("invalid object key: {0}")]
    InvalidKey(#[from] KeyError),
    #[error("bucket {0:?} already exists")]
    BucketExists(String),
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    #[error("bucket {0:?} is not empty; delete its objects first")]
    BucketNotEmpty(String),
    #[error("object {key:?} does not exist in bucket {bucket:?}")]
    NoSuchKey { bucket: String, key: String },
    #[error("multipart upload {0:?} does not exist (completed, aborted, or for another key)")]
    NoSuchUpload(String),
    #[error("part number {0} is outside 1..=10000")]
    InvalidPartNumber(i32),
    #[error("cannot complete the upload: {0}")]
    Complete(#[from] CompleteError),
    #[error("the request body has {received} bytes, but Content-Length said {expected}")]
    IncompleteBody { expected: u64, received: u64 },
    #[error("reading the request body failed: {0}")]
    Body(#[source] BodyError),
    #[error("the continuation token is not one this server issued")]
    InvalidToken,
    #[error("object metadata {path} is unreadable: {source}")]
    CorruptMetadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whose fault a [`StorageError`] is, for picking an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or breaks a rule (400).
    Invalid,
    /// The bucket, object or upload does not exist (404).
    NotFound,
    /// The request conflicts with the current state: exists already, not empty (409).
    Conflict,
    /// Nimbus or the disk failed (500).
    Internal,
}

// === impl StorageError ===

impl StorageError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidBucketName { .. }
            | Self::InvalidKey(_)
            | Self::InvalidPartNumber(_)
            | Self::Complete(_)
            | Self::IncompleteBody { .. }
            | Self::Body(_)
            | Self::InvalidToken => ErrorKind::Invalid,
            Self::NoSuchBucket(_) | Self::NoSuchKey { .. } | Self::NoSuchUpload(_) => {
                ErrorKind::NotFound
            }
            Self::BucketExists(_) | Self::BucketNotEmpty(_) => ErrorKind::Conflict,
            Self::CorruptMetadata { .. } | Self::Io { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { op, path, source }
    }
}
