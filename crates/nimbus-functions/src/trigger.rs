//! Storage triggers: which object changes invoke a function
//! (`nimbus fn trigger add NAME --bucket B --events created,deleted [--prefix p/]`).
//!
//! Pure: the server keeps the triggers, and for each object event asks every trigger whether it
//! [`matches`](StorageTrigger::matches); each match is one async invocation with the event from
//! [`crate::cloudevents::object_event`].

use std::fmt;

use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// Longest accepted key prefix (S3 keys are at most 1024 bytes).
pub const MAX_PREFIX_LEN: usize = 1024;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectEventKind {
    /// Put, completed multipart upload or copy.
    Created,
    Deleted,
}

/// A storage trigger's filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageTrigger {
    pub bucket: String,
    /// Sorted, no duplicates, not empty.
    pub events: Vec<ObjectEventKind>,
    /// Only keys starting with this; `None` = every key.
    #[serde(default)]
    pub prefix: Option<String>,
}

/// A trigger that cannot be accepted; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("unknown object event `{0}`; expected created and/or deleted, e.g. created,deleted")]
    UnknownEvent(String),
    #[error("name at least one object event: created, deleted or created,deleted")]
    NoEvents,
    #[error("the bucket name is empty")]
    EmptyBucket,
    #[error("the key prefix is {0} bytes long; the limit is {MAX_PREFIX_LEN}")]
    PrefixTooLong(usize),
}

// === impl ObjectEventKind ===

impl ObjectEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectEventKind::Created => "created",
            ObjectEventKind::Deleted => "deleted",
        }
    }
}

impl fmt::Display for ObjectEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses `--events`: a comma-separated list of `created` and `deleted` (spaces and repeats
/// tolerated). The result is sorted and deduplicated.
pub fn parse_events(list: &str) -> Result<Vec<ObjectEventKind>, TriggerError> {
    let mut events = Vec::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let kind = match word {
            "created" => ObjectEventKind::Created,
            "deleted" => ObjectEventKind::Deleted,
            other => return Err(TriggerError::UnknownEvent(other.to_owned())),
        };
        events.push(kind);
    }
    events.sort();
    events.dedup();
    if events.is_empty() {
        return Err(TriggerError::NoEvents);
    }
    Ok(events)
}

// === impl StorageTrigger ===

impl StorageTrigger {
    /// Builds and checks a trigger from the CLI's words. An empty prefix means every key.
    pub fn new(bucket: &str, events: &str, prefix: Option<&str>) -> Result<Self, TriggerError> {
        if bucket.is_empty() {
            return Err(TriggerError::EmptyBucket);
        }
        let prefix = prefix.filter(|p| !p.is_empty());
        if let Some(p) = prefix {
            if p.len() > MAX_PREFIX_LEN {
                return Err(TriggerError::PrefixTooLong(p.len()));
            }
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            events: parse_events(events)?,
            prefix: prefix.map(str::to_owned),
        })
    }

    /// Whether a change of `key` in `bucket` fires this trigger.
    pub fn matches(&self, bucket: &str, key: &str, kind: ObjectEventKind) -> bool {
        self.bucket == bucket
            && self.events.contains(&kind)
            && self.prefix.as_deref().is_none_or(|p| key.starts_with(p))
    }
}
