//! Timer triggers: when a cron rule is due.
//!
//! The rule, exactly: [`due_fires`] returns the **latest** scheduled time `T` with
//! `last_fired < T ≤ now`, or `None`. The caller enqueues one invocation for `T` and records `T`
//! (not `now`) as the new `last_fired`, in one transaction
//! ([`crate::InvocationQueue::enqueue_timer_fire`] does both). So:
//!
//! - each scheduled time fires at most once, even across a crash (the record and the enqueue
//!   commit together);
//! - after downtime that missed several ticks, **one** fire happens at start-up, for the latest
//!   missed tick (stamped with its scheduled time); the older missed ticks are skipped, never
//!   replayed;
//! - a new trigger starts with `last_fired` = its creation time, so it never fires for a tick
//!   from before it existed;
//! - a clock that moved backwards (`now < last_fired`) fires nothing until it passes
//!   `last_fired` again.
//!
//! Expressions are those of scaling schedules ([`parse_cron`]): 5 fields, or 6 with seconds
//! first, or `@hourly`…; evaluated in the time zone of the `now` the caller passes.

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;

pub use nimbus_autoscaler::{parse_cron, ScheduleError};

#[cfg(test)]
mod tests;

/// The scheduled time to fire now, if any (see the module docs for the rule).
pub fn due_fires<Tz: TimeZone>(
    cron: &Cron,
    last_fired: DateTime<Utc>,
    now: &DateTime<Tz>,
) -> Option<DateTime<Utc>> {
    let latest = cron.find_previous_occurrence(now, true).ok()?;
    let latest = latest.with_timezone(&Utc);
    (latest > last_fired).then_some(latest)
}

/// The first scheduled time after `now`, so a timer loop can sleep until then.
pub fn next_fire<Tz: TimeZone>(cron: &Cron, now: &DateTime<Tz>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(now, false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
