//! Trigger events as CloudEvents 1.0 in JSON (structured mode): the event a function gets when
//! a timer fires or an object changes.
//!
//! | trigger | `type` | `source` | `subject` | `data` |
//! |---|---|---|---|---|
//! | timer | `com.nimbus.timer.fired` | `/nimbus/namespaces/NS/functions/FN/triggers/ID` | trigger id | `{trigger, cron, scheduled_time}` |
//! | storage | `com.nimbus.storage.object.created` / `.deleted` | `/nimbus/storage/buckets/BUCKET` | object key | `{bucket, key, size, etag}` |
//!
//! `time` is the scheduled fire time or the object change time, RFC 3339 in UTC with
//! milliseconds. A timer event's `id` is derived from the trigger and the scheduled time, so a
//! redelivered fire carries the same id (handlers can deduplicate on it).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::trigger::ObjectEventKind;

#[cfg(test)]
mod tests;

pub const SPEC_VERSION: &str = "1.0";
pub const TIMER_FIRED: &str = "com.nimbus.timer.fired";
pub const OBJECT_CREATED: &str = "com.nimbus.storage.object.created";
pub const OBJECT_DELETED: &str = "com.nimbus.storage.object.deleted";

/// A CloudEvents 1.0 event with a JSON payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    pub data: Value,
}

/// One fire of a timer trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerFire<'a> {
    pub namespace: &'a str,
    pub function: &'a str,
    pub trigger_id: &'a str,
    pub cron: &'a str,
    /// The scheduled time (what [`crate::cron::due_fires`] returned), not when it ran.
    pub scheduled: DateTime<Utc>,
}

/// One object change in a bucket (the storage's event, as the trigger sees it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectChange<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    /// Size in bytes (for a deletion: the size it had).
    pub size: u64,
    /// Without quotes.
    pub etag: &'a str,
    pub kind: ObjectEventKind,
    pub time: DateTime<Utc>,
}

/// RFC 3339 in UTC with milliseconds: `2025-01-01T12:00:00.000Z`.
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The event for a timer fire. Its id is `timer-TRIGGER-SCHEDULEDMS`, stable across redelivery.
pub fn timer_fired(fire: &TimerFire<'_>) -> CloudEvent {
    let scheduled = format_time(fire.scheduled);
    CloudEvent {
        specversion: SPEC_VERSION.into(),
        id: format!(
            "timer-{}-{}",
            fire.trigger_id,
            fire.scheduled.timestamp_millis()
        ),
        source: format!(
            "/nimbus/namespaces/{}/functions/{}/triggers/{}",
            fire.namespace, fire.function, fire.trigger_id
        ),
        event_type: TIMER_FIRED.into(),
        time: Some(scheduled.clone()),
        subject: Some(fire.trigger_id.into()),
        datacontenttype: Some("application/json".into()),
        data: json!({
            "trigger": fire.trigger_id,
            "cron": fire.cron,
            "scheduled_time": scheduled,
        }),
    }
}

/// The event for an object change. `id` is chosen by the caller and should be unique per change
/// (the async invocation's id works).
pub fn object_event(change: &ObjectChange<'_>, id: &str) -> CloudEvent {
    let event_type = match change.kind {
        ObjectEventKind::Created => OBJECT_CREATED,
        ObjectEventKind::Deleted => OBJECT_DELETED,
    };
    CloudEvent {
        specversion: SPEC_VERSION.into(),
        id: id.into(),
        source: format!("/nimbus/storage/buckets/{}", change.bucket),
        event_type: event_type.into(),
        time: Some(format_time(change.time)),
        subject: Some(change.key.into()),
        datacontenttype: Some("application/json".into()),
        data: json!({
            "bucket": change.bucket,
            "key": change.key,
            "size": change.size,
            "etag": change.etag,
        }),
    }
}

// === impl CloudEvent ===

impl CloudEvent {
    /// The event as a JSON value (the function's `event` argument).
    pub fn to_value(&self) -> Value {
        // A struct of strings and a `Value` always serializes.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}
