//! Usage in SQLite: per-minute rows, meter baselines, and the queries behind `nimbus usage`.
//!
//! It lives in the server's database file (`DATA/nimbus.db`) in tables of its own, created with
//! `CREATE TABLE IF NOT EXISTS` (it does not touch the server store's `user_version` migrations):
//! - `usage_minutes`: one row per (namespace, service, version, minute), replaced on write.
//! - `usage_baselines`: the latest sample per instance (see [`crate::meter`]).
//! - `usage_meter`: the first open minute.
//!
//! SQLite integers are signed: counts above `i64::MAX` are stored as `i64::MAX`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::calendar::{date_of_day, MINUTES_PER_DAY};
use crate::meter::{Flush, MeterState, Rollup, Sample, UsageKey};
use crate::Usage;

#[cfg(test)]
mod tests;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage_minutes (
    ns TEXT NOT NULL,
    service TEXT NOT NULL,
    version TEXT NOT NULL,
    minute INTEGER NOT NULL,
    cpu_micros INTEGER NOT NULL,
    memory_allocated_mib_ms INTEGER NOT NULL,
    memory_used_mib_ms INTEGER NOT NULL,
    instance_ms INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    egress_bytes INTEGER NOT NULL,
    ingress_bytes INTEGER NOT NULL,
    build_ms INTEGER NOT NULL,
    function_mib_ms INTEGER NOT NULL,
    PRIMARY KEY (ns, service, version, minute)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_minutes_by_minute ON usage_minutes (minute);
CREATE TABLE IF NOT EXISTS usage_baselines (
    instance TEXT PRIMARY KEY,
    ns TEXT NOT NULL,
    service TEXT NOT NULL,
    version TEXT NOT NULL,
    incarnation TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    cpu_micros INTEGER NOT NULL,
    rss_bytes INTEGER NOT NULL,
    memory_limit_mib INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS usage_meter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_minute INTEGER NOT NULL
);";

/// The usage columns, in [`Usage`] field order.
const USAGE_COLUMNS: &str = "cpu_micros, memory_allocated_mib_ms, memory_used_mib_ms, \
    instance_ms, requests, egress_bytes, ingress_bytes, build_ms, function_mib_ms";

/// Why a usage store call failed.
#[derive(Debug, thiserror::Error)]
pub enum UsageStoreError {
    #[error("usage database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

pub type Result<T, E = UsageStoreError> = std::result::Result<T, E>;

/// What `nimbus usage --by` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Service,
    Version,
    /// UTC calendar day.
    Day,
}

/// Which rows a query reads. `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    pub namespace: Option<String>,
    pub service: Option<String>,
    pub version: Option<String>,
    /// First minute included ([`crate::minute_of`]).
    pub from_minute: u64,
    /// First minute *not* included; `None`: up to now.
    pub until_minute: Option<u64>,
}

/// One group of a [`UsageStore::usage_by`] answer: the fields of its grouping are set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageGroup {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `YYYY-MM-DD` (UTC) when grouped by day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    pub usage: Usage,
}

/// The usage tables in the server's SQLite file.
#[derive(Debug)]
pub struct UsageStore {
    conn: Mutex<Connection>,
}

// === impl UsageStore ===

impl UsageStore {
    /// Opens (creating if needed) the database at `path` and the usage tables in it.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Writers wait for each other instead of failing when a read turns into a write.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back on drop), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a [`Flush`] in one transaction: forgotten baselines deleted, then baselines and
    /// rows replaced, then the first open minute (never moved back). Idempotent.
    pub fn commit(&self, flush: &Flush) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        {
            let mut forget =
                tx.prepare_cached("DELETE FROM usage_baselines WHERE instance = ?1")?;
            for instance in &flush.forgotten {
                forget.execute([instance])?;
            }
            let mut baseline = tx.prepare_cached(
                "INSERT OR REPLACE INTO usage_baselines (instance, ns, service, version, \
                 incarnation, at_ms, cpu_micros, rss_bytes, memory_limit_mib) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?;
            for b in &flush.baselines {
                baseline.execute(params![
                    b.instance,
                    b.key.namespace,
                    b.key.service,
                    b.key.version,
                    b.incarnation,
                    db_int(b.at_ms),
                    db_int(b.cpu_micros),
                    db_int(b.rss_bytes),
                    db_int(b.memory_limit_mib),
                ])?;
            }
            let mut row = tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO usage_minutes (ns, service, version, minute, \
                 {USAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
            ))?;
            for r in &flush.rows {
                let u = &r.usage;
                row.execute(params![
                    r.key.namespace,
                    r.key.service,
                    r.key.version,
                    db_int(r.minute),
                    db_int(u.cpu_micros),
                    db_int(u.memory_allocated_mib_ms),
                    db_int(u.memory_used_mib_ms),
                    db_int(u.instance_ms),
                    db_int(u.requests),
                    db_int(u.egress_bytes),
                    db_int(u.ingress_bytes),
                    db_int(u.build_ms),
                    db_int(u.function_mib_ms),
                ])?;
            }
            tx.execute(
                "INSERT INTO usage_meter (id, next_minute) VALUES (1, ?1) \
                 ON CONFLICT (id) DO UPDATE SET next_minute = max(next_minute, excluded.next_minute)",
                [db_int(flush.next_minute)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// What a restarted [`crate::Meter`] continues from ([`crate::Meter::resume`]).
    pub fn load_state(&self) -> Result<MeterState> {
        let conn = self.lock();
        let next_minute: i64 = conn
            .query_row(
                "SELECT next_minute FROM usage_meter WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let mut stmt = conn.prepare(
            "SELECT instance, ns, service, version, incarnation, at_ms, cpu_micros, rss_bytes, \
             memory_limit_mib FROM usage_baselines ORDER BY instance",
        )?;
        let baselines = stmt
            .query_map([], |r| {
                Ok(Sample {
                    instance: r.get(0)?,
                    key: UsageKey {
                        namespace: r.get(1)?,
                        service: r.get(2)?,
                        version: r.get(3)?,
                    },
                    incarnation: r.get(4)?,
                    at_ms: from_db(r.get(5)?),
                    cpu_micros: from_db(r.get(6)?),
                    rss_bytes: from_db(r.get(7)?),
                    memory_limit_mib: from_db(r.get(8)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT ns, service, version, minute, {USAGE_COLUMNS} FROM usage_minutes \
             WHERE minute >= ?1 ORDER BY ns, service, version, minute"
        ))?;
        let open_rows = stmt
            .query_map([next_minute], |r| {
                Ok(Rollup {
                    key: UsageKey {
                        namespace: r.get(0)?,
                        service: r.get(1)?,
                        version: r.get(2)?,
                    },
                    minute: from_db(r.get(3)?),
                    usage: usage_at(r, 4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(MeterState {
            next_minute: from_db(next_minute),
            baselines,
            open_rows,
        })
    }

    /// Usage matching `filter`, summed per service, version or UTC day, sorted by group.
    pub fn usage_by(&self, filter: &UsageFilter, group_by: GroupBy) -> Result<Vec<UsageGroup>> {
        let mut groups: BTreeMap<(String, String, String, u64), Usage> = BTreeMap::new();
        for (key, day, usage) in self.daily(filter)? {
            let group = match group_by {
                GroupBy::Service => (key.namespace, key.service, String::new(), 0),
                GroupBy::Version => (key.namespace, key.service, key.version, 0),
                GroupBy::Day => (String::new(), String::new(), String::new(), day),
            };
            *groups.entry(group).or_default() += usage;
        }
        Ok(groups
            .into_iter()
            .map(|((namespace, service, version, day), usage)| {
                let by_key = group_by != GroupBy::Day;
                UsageGroup {
                    namespace: by_key.then_some(namespace),
                    service: by_key.then_some(service),
                    version: (group_by == GroupBy::Version).then_some(version),
                    day: (group_by == GroupBy::Day).then(|| date_of_day(day)),
                    usage,
                }
            })
            .collect())
    }

    /// All usage matching `filter`, summed.
    pub fn usage_total(&self, filter: &UsageFilter) -> Result<Usage> {
        Ok(self.daily(filter)?.into_iter().map(|(_, _, u)| u).sum())
    }

    /// Deletes rows of minutes before `minute` (retention). Returns how many went.
    pub fn prune_before(&self, minute: u64) -> Result<usize> {
        Ok(self.lock().execute(
            "DELETE FROM usage_minutes WHERE minute < ?1",
            [db_int(minute)],
        )?)
    }

    /// Sums per (key, day) in SQL; the caller regroups in Rust with saturating adds.
    fn daily(&self, filter: &UsageFilter) -> Result<Vec<(UsageKey, u64, Usage)>> {
        let sums = USAGE_COLUMNS
            .split(", ")
            .map(|c| format!("SUM({c})"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT ns, service, version, minute / {MINUTES_PER_DAY} AS day, {sums} \
             FROM usage_minutes \
             WHERE (?1 IS NULL OR ns = ?1) AND (?2 IS NULL OR service = ?2) \
               AND (?3 IS NULL OR version = ?3) AND minute >= ?4 AND (?5 IS NULL OR minute < ?5) \
             GROUP BY ns, service, version, day"
        );
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt
            .query_map(
                params![
                    filter.namespace,
                    filter.service,
                    filter.version,
                    db_int(filter.from_minute),
                    filter.until_minute.map(db_int),
                ],
                |r| {
                    let key = UsageKey {
                        namespace: r.get(0)?,
                        service: r.get(1)?,
                        version: r.get(2)?,
                    };
                    Ok((key, from_db(r.get(3)?), usage_at(r, 4)?))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

/// The nine usage columns starting at column `first`.
fn usage_at(r: &Row<'_>, first: usize) -> rusqlite::Result<Usage> {
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(from_db(r.get(first + i)?)) };
    Ok(Usage {
        cpu_micros: n(0)?,
        memory_allocated_mib_ms: n(1)?,
        memory_used_mib_ms: n(2)?,
        instance_ms: n(3)?,
        requests: n(4)?,
        egress_bytes: n(5)?,
        ingress_bytes: n(6)?,
        build_ms: n(7)?,
        function_mib_ms: n(8)?,
    })
}

fn db_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn from_db(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
