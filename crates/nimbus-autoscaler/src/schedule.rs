//! Scheduled scaling: cron rules that raise (or cap) a version's instance range for a while.
//!
//! A [`Schedule`] becomes active at each of its cron fire times and stays active
//!
//! - for `duration_secs`, when set, or
//! - when not set, until any *other* schedule that applies to the same version fires later
//!   (its own next fire simply restarts it).
//!
//! When several are active, the one that started most recently wins (the higher `id` on a tie).
//! A schedule with `version: None` applies to every version of its service; one with
//! `version: Some(v)` only to `v`, and both kinds compete with each other for `v`.
//!
//! Cron expressions have 5 fields (`minute hour day-of-month month day-of-week`) or 6 with
//! seconds first (`*/2 * * * * *`); `@hourly`, `@daily`, `@weekly`, `@monthly` and `@yearly`
//! work too. Day-of-month and day-of-week combine with OR, as in Vixie cron. They are evaluated in
//! the time zone of the `now` the caller passes (`DateTime<Local>`, `<Utc>`, `<FixedOffset>`…),
//! daylight-saving gaps and folds handled by croner.
//!
//! # Lookback
//! [`active`] finds each schedule's latest fire ≤ now with croner's backward search (field by
//! field, not second by second), but looks back at most `lookback`. A schedule whose latest fire
//! is older than that counts as not active, even without a duration. [`DEFAULT_LOOKBACK`] is
//! 32 days, enough for daily, weekly and monthly rules; pass more for yearly ones.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use croner::{
    errors::CronError,
    parser::{CronParser, Seconds},
    Cron,
};
use nimbus_model::spec::MAX_INSTANCES_LIMIT;
use serde::{Deserialize, Serialize};

use crate::decider::Bounds;

/// How far back [`active`] looks for a schedule's latest fire by default: 32 days.
pub const DEFAULT_LOOKBACK: Duration = Duration::from_secs(32 * 24 * 3600);

/// A scheduled scaling rule, as stored and shown by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub id: i64,
    /// 5-field cron, or 6 fields with seconds first.
    pub cron: String,
    /// Fewest instances while active, 0–50.
    pub min: u32,
    /// Most instances while active, 1–50; `None` keeps the version's max.
    #[serde(default)]
    pub max: Option<u32>,
    /// The version it applies to; `None` = every version of the service.
    #[serde(default)]
    pub version: Option<String>,
    /// How long it stays active after each fire; `None` = until another schedule fires.
    #[serde(default)]
    pub duration_secs: Option<u64>,
}

/// The schedule in force for one version at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveSchedule {
    pub id: i64,
    pub min: u32,
    pub max: Option<u32>,
    /// The fire time that started it.
    pub started_at: DateTime<Utc>,
    /// When it stops, if it has a duration.
    pub ends_at: Option<DateTime<Utc>>,
}

/// A schedule that cannot be accepted; the message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("cron expression is empty")]
    EmptyCron,
    #[error(
        "cron expression `{expr}` has {fields} fields; expected 5 \
         (minute hour day-of-month month day-of-week) or 6 (second first)"
    )]
    FieldCount { expr: String, fields: usize },
    #[error("cron expression `{expr}` is invalid: {reason}")]
    InvalidCron { expr: String, reason: String },
    #[error("schedule min {0} is out of range 0-{MAX_INSTANCES_LIMIT}")]
    Min(u32),
    #[error("schedule max {0} is out of range 1-{MAX_INSTANCES_LIMIT}")]
    Max(u32),
    #[error("schedule min {min} is above its max {max}")]
    MinAboveMax { min: u32, max: u32 },
    #[error("schedule duration must be at least 1 second")]
    ZeroDuration,
}

/// Parses a 5-field cron expression, or a 6-field one with seconds first.
pub fn parse_cron(expr: &str) -> Result<Cron, ScheduleError> {
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err(ScheduleError::EmptyCron);
    }
    let fields = trimmed.split_whitespace().count();
    let nickname = trimmed.starts_with('@');
    if !nickname && !(5..=6).contains(&fields) {
        return Err(ScheduleError::FieldCount {
            expr: trimmed.to_owned(),
            fields,
        });
    }
    let parser = CronParser::builder().seconds(Seconds::Optional).build();
    parser
        .parse(trimmed)
        .map_err(|e| ScheduleError::InvalidCron {
            expr: trimmed.to_owned(),
            reason: explain(&parser, trimmed, &e),
        })
}

/// Names the field croner rejected, when one field alone is at fault:
/// "minute field `61`: Number out of bounds (allowed 0-59)".
fn explain(parser: &CronParser, expr: &str, error: &CronError) -> String {
    let reason = match error {
        CronError::ComponentError(m) | CronError::InvalidPattern(m) => m.clone(),
        CronError::IllegalCharacters(m) => m.replace("CronPattern contains", "contains"),
        other => other.to_string(),
    };
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let names: &[(&str, &str)] = match fields.len() {
        5 => &FIELDS[1..],
        6 => &FIELDS,
        _ => return reason,
    };
    // Parse each field with every other one a wildcard: the first that fails alone is at fault.
    let culprit = (0..fields.len()).find(|&i| {
        let probe: Vec<&str> = (0..fields.len())
            .map(|j| if j == i { fields[j] } else { "*" })
            .collect();
        parser.parse(&probe.join(" ")).is_err()
    });
    match culprit {
        Some(i) => {
            let (name, allowed) = names[i];
            format!("{name} field `{}`: {reason} (allowed {allowed})", fields[i])
        }
        None => reason,
    }
}

/// Cron fields, seconds first, with what each accepts.
const FIELDS: [(&str, &str); 6] = [
    ("second", "0-59"),
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, L, W"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT, L, #"),
];

/// Checks a new or changed schedule: min 0–50, max 1–50, min ≤ max, a duration of at least 1 s,
/// and a cron expression that parses.
pub fn validate(schedule: &Schedule) -> Result<(), ScheduleError> {
    if schedule.min > MAX_INSTANCES_LIMIT {
        return Err(ScheduleError::Min(schedule.min));
    }
    if let Some(max) = schedule.max {
        if !(1..=MAX_INSTANCES_LIMIT).contains(&max) {
            return Err(ScheduleError::Max(max));
        }
        if schedule.min > max {
            return Err(ScheduleError::MinAboveMax {
                min: schedule.min,
                max,
            });
        }
    }
    if schedule.duration_secs == Some(0) {
        return Err(ScheduleError::ZeroDuration);
    }
    parse_cron(&schedule.cron).map(|_| ())
}

/// The schedule in force for `version` at `now`, if any (see the module docs for the rules).
///
/// Schedules whose cron does not parse are skipped ([`validate`] rejects them up front).
pub fn active<Tz: TimeZone>(
    schedules: &[Schedule],
    version: &str,
    now: &DateTime<Tz>,
    lookback: Duration,
) -> Option<ActiveSchedule> {
    let lookback = TimeDelta::from_std(lookback).unwrap_or(TimeDelta::MAX);
    let oldest = now.clone().checked_sub_signed(lookback);
    let now_utc = now.with_timezone(&Utc);

    // Each applicable schedule with its latest start ≤ now.
    let started: Vec<(&Schedule, DateTime<Utc>)> = schedules
        .iter()
        .filter(|s| s.version.as_deref().is_none_or(|v| v == version))
        .filter_map(|s| {
            let cron = parse_cron(&s.cron).ok()?;
            let start = cron.find_previous_occurrence(now, true).ok()?;
            if oldest.as_ref().is_some_and(|oldest| start < *oldest) {
                return None;
            }
            Some((s, start.with_timezone(&Utc)))
        })
        .collect();

    started
        .iter()
        .filter_map(|&(s, start)| {
            let ends_at = match s.duration_secs {
                Some(secs) => {
                    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
                    let end = TimeDelta::try_seconds(secs)
                        .and_then(|d| start.checked_add_signed(d))
                        .unwrap_or(DateTime::<Utc>::MAX_UTC);
                    if now_utc >= end {
                        return None;
                    }
                    Some(end)
                }
                None => {
                    // Superseded once any other schedule for this version fired after it.
                    let superseded = started
                        .iter()
                        .any(|&(other, other_start)| other.id != s.id && other_start > start);
                    if superseded {
                        return None;
                    }
                    None
                }
            };
            Some(ActiveSchedule {
                id: s.id,
                min: s.min,
                max: s.max,
                started_at: start,
                ends_at,
            })
        })
        .max_by_key(|a| (a.started_at, a.id))
}

/// The bounds for one decision: the version's `min`/`max`, or the active schedule's.
///
/// A schedule's `min` replaces the version's; its `max` replaces the version's when set. If that
/// leaves `max < min` (a schedule raising `min` above the version's `max`), `max` is raised to
/// `min`: the schedule is the more recent, explicit wish. Both are capped at 50.
pub fn effective_bounds(
    version_min: u32,
    version_max: u32,
    active: Option<&ActiveSchedule>,
) -> Bounds {
    let (min, max, min_from_schedule, mut max_from_schedule) = match active {
        None => (version_min, version_max, false, false),
        Some(a) => (a.min, a.max.unwrap_or(version_max), true, a.max.is_some()),
    };
    let min = min.min(MAX_INSTANCES_LIMIT);
    let mut max = max.min(MAX_INSTANCES_LIMIT);
    if max < min {
        max = min;
        max_from_schedule = min_from_schedule;
    }
    Bounds {
        min,
        max,
        min_from_schedule,
        max_from_schedule,
    }
}

#[cfg(test)]
mod tests;
