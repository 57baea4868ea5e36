//! [`ObjectEvent`]: what the storage tells the rest of Nimbus (storage triggers) after an object
//! change is durable on disk.

use std::time::SystemTime;

use tokio::sync::mpsc;

/// The channel [`crate::Storage`] sends events on. Unbounded so a slow consumer never stalls an
/// upload; the consumer (the trigger queue) should drain it promptly.
pub type EventSender = mpsc::UnboundedSender<ObjectEvent>;

/// An object was created (put, completed multipart upload, copy) or deleted. Sent after the
/// change is durable (renamed into place and the directory synced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub bucket: String,
    pub key: String,
    /// The object's size in bytes (for a deletion: the size it had).
    pub size: u64,
    /// The object's etag without quotes: the md5 in hex for a single put, `md5-N` for a
    /// multipart upload of N parts.
    pub etag: String,
    pub kind: ObjectEventKind,
    pub time: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectEventKind {
    Created,
    Deleted,
}
