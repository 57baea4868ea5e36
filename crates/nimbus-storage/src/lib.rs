//! Nimbus object storage: an S3-compatible API over plain files in the data directory, and the
//! object events that storage triggers consume.
//!
//! The crate owns the bytes and metadata of objects under one root directory (the server passes
//! `DATA/storage`), their atomic writes, and the S3 endpoint. It does not own access keys (the
//! server keeps them in its store and hands them over as [`AccessKeys`]) and it does not run
//! triggers: it only sends an [`ObjectEvent`] per created or deleted object, after the change is
//! durable. The S3 protocol itself (XML, routing, SigV4 header and presigned-URL checks) is the
//! `s3s` crate's; this crate implements its backend.
//!
//! Writes are crash-safe: bytes go to a temp file that is fsynced and renamed into place, and a
//! small JSON sidecar per object, replaced by one atomic rename, is the commit point (see
//! [`layout`] and `store`).
//!
//! # Layout
//! - `store`: buckets (the functions the REST API calls) and objects on disk, [`Storage`].
//! - [`layout`]: the directory layout and the pure key → path mapping.
//! - [`names`]: bucket name rules, [`validate_bucket_name`].
//! - [`listing`]: the pure ListObjects page choice and continuation tokens.
//! - [`multipart`]: the pure rules for completing a multipart upload.
//! - [`error`]: the error type, [`StorageError`], and its [`ErrorKind`].
//! - [`events`]: what is sent per created or deleted object, [`ObjectEvent`].
//! - `keys`: the access keys requests are signed with, [`AccessKeys`].
//! - `s3` and `server`: the s3s adapter and [`serve`], the accept loop.

#![forbid(unsafe_code)]

pub mod error;
pub mod events;
pub mod layout;
pub mod listing;
pub mod multipart;
pub mod names;

mod keys;
mod object;
mod s3;
mod server;
mod store;

pub use error::{ErrorKind, StorageError};
pub use events::{EventSender, ObjectEvent, ObjectEventKind};
pub use keys::AccessKeys;
pub use names::{validate_bucket_name, BucketNameError};
pub use server::serve;
pub use store::{BucketInfo, Storage};
