//! The durable queue of async invocations, in SQLite.
//!
//! It lives in the server's database file (`DATA/nimbus.db`) in tables of its own, created with
//! `CREATE TABLE IF NOT EXISTS` (the server store's `user_version` migrations are not touched):
//! - `fn_invocations`: one row per accepted async invocation, from `pending` to `succeeded` or
//!   `dead` (the dead-letter list).
//! - `fn_timer_fires`: per timer trigger, the scheduled time of its latest enqueued fire.
//!
//! # Life of an invocation
//! ```text
//! enqueue ──▶ pending ──claim_next──▶ running ──complete(Ok)──▶ succeeded
//!                ▲                       │
//!                │   complete(Err), attempts left: next_at = now + backoff
//!                ├───────────────────────┤
//!                │   lease lapsed / recover_running (crash): the attempt is not counted
//!                └───────────────────────┘
//!                                        └──complete(Err), last attempt──▶ dead
//! ```
//! - [`InvocationQueue::enqueue`] commits before it returns, so a 202 sent after it survives
//!   `kill -9` (SQLite WAL: a committed transaction survives a process crash).
//! - [`InvocationQueue::claim_next`] is one `UPDATE … RETURNING`: a due `pending` row becomes
//!   `running`, its attempt counted, with a lease. Leases that lapsed (a server that died
//!   mid-attempt, a stuck worker) are first returned to `pending`, the lost attempt not counted:
//!   delivery is at-least-once.
//! - Each claim gets a token; [`InvocationQueue::complete`] with an outdated token (its lease
//!   lapsed and someone else claimed it) changes nothing and says [`Completion::Stale`].
//!
//! Times are Unix milliseconds passed in by the caller, so the tests need no clock.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::invoke::FunctionError;
use crate::retry::{RetryDecision, RetryPolicy, RetryPolicyError};

#[cfg(test)]
mod tests;

/// Most rows one [`InvocationQueue::list`] returns.
pub const MAX_LIST_LIMIT: u32 = 1000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS fn_invocations (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    function TEXT NOT NULL,
    -- The version or alias asked for; NULL = the function's default routing.
    qualifier TEXT,
    -- The version the latest attempt ran on (set by complete).
    version TEXT,
    -- What enqueued it: api, timer:ID, storage:ID, ...
    source TEXT NOT NULL,
    event TEXT NOT NULL,
    callback_url TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'succeeded', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    backoff_base_ms INTEGER NOT NULL,
    backoff_max_ms INTEGER NOT NULL,
    -- Bumped by every claim; a completion must present the current value.
    claim INTEGER NOT NULL DEFAULT 0,
    -- When a pending row is due.
    next_at INTEGER NOT NULL,
    -- When a running claim lapses.
    lease_until INTEGER,
    result TEXT,
    -- The latest failed attempt's FunctionError (kept after a later success).
    error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX IF NOT EXISTS fn_invocations_due ON fn_invocations (status, next_at);
CREATE INDEX IF NOT EXISTS fn_invocations_by_function
    ON fn_invocations (namespace, function, created_at);
CREATE TABLE IF NOT EXISTS fn_timer_fires (
    trigger_id TEXT PRIMARY KEY,
    last_fired_ms INTEGER NOT NULL
);";

const COLUMNS: &str = "id, namespace, function, qualifier, version, source, event, callback_url, \
    status, attempts, max_attempts, backoff_base_ms, backoff_max_ms, claim, next_at, \
    lease_until, result, error, created_at, updated_at, finished_at";

/// Why a queue call failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("invocation queue database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Policy(#[from] RetryPolicyError),
    #[error("invocation {id}: stored {column} is unreadable: {reason}")]
    Corrupt {
        id: String,
        column: &'static str,
        reason: String,
    },
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;

/// Where an async invocation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvocationStatus {
    /// Waiting for its first attempt or a retry (`next_at_ms`).
    Pending,
    /// An attempt is in flight.
    Running,
    Succeeded,
    /// Every attempt failed: the dead-letter list.
    Dead,
}

/// A new async invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInvocation {
    pub namespace: String,
    pub function: String,
    /// Version or alias to run; `None` = the function's default routing.
    pub qualifier: Option<String>,
    /// What enqueued it, shown in listings: `api`, `timer:ID`, `storage:ID`.
    pub source: String,
    pub event: Value,
    /// Receives the final result or error (the worker POSTs it).
    pub callback_url: Option<String>,
    pub retry: RetryPolicy,
}

/// An async invocation as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Invocation {
    pub id: String,
    pub namespace: String,
    pub function: String,
    pub qualifier: Option<String>,
    /// The version the latest finished attempt ran on.
    pub version: Option<String>,
    pub source: String,
    pub event: Value,
    pub callback_url: Option<String>,
    pub status: InvocationStatus,
    /// Attempts started (a running one included; one lost to a crash is not counted).
    pub attempts: u32,
    pub retry: RetryPolicy,
    /// When it is due, while `pending`.
    pub next_at_ms: Option<u64>,
    /// When the current claim lapses, while `running`.
    pub lease_until_ms: Option<u64>,
    /// The handler's result, once `succeeded`.
    pub result: Option<Value>,
    /// The latest failed attempt's error (kept after a later success, to show why it retried).
    pub error: Option<FunctionError>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// When it became `succeeded` or `dead`.
    pub finished_at_ms: Option<u64>,
}

/// A claimed invocation: run it, then pass this to [`InvocationQueue::complete`].
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub invocation: Invocation,
    token: i64,
}

/// What [`InvocationQueue::complete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    Succeeded,
    /// Back to `pending`, due at this time.
    Retrying {
        next_at_ms: u64,
    },
    /// The last attempt failed: now on the dead-letter list.
    DeadLettered,
    /// The claim was no longer current (its lease lapsed); nothing changed.
    Stale,
}

/// Which invocations [`InvocationQueue::list`] returns, newest first. `None` matches all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    pub namespace: Option<String>,
    pub function: Option<String>,
    pub status: Option<InvocationStatus>,
    /// At most this many (capped at [`MAX_LIST_LIMIT`]).
    pub limit: u32,
}

/// The async invocation tables in the server's SQLite file.
#[derive(Debug)]
pub struct InvocationQueue {
    conn: Mutex<Connection>,
}

// === impl InvocationStatus ===

impl InvocationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvocationStatus::Pending => "pending",
            InvocationStatus::Running => "running",
            InvocationStatus::Succeeded => "succeeded",
            InvocationStatus::Dead => "dead",
        }
    }

    /// Parses a status; `failed` is accepted for `dead` (`nimbus fn invocations --status failed`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(InvocationStatus::Pending),
            "running" => Some(InvocationStatus::Running),
            "succeeded" => Some(InvocationStatus::Succeeded),
            "dead" | "failed" => Some(InvocationStatus::Dead),
            _ => None,
        }
    }
}

impl std::fmt::Display for InvocationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl ListFilter ===

impl Default for ListFilter {
    fn default() -> Self {
        Self {
            namespace: None,
            function: None,
            status: None,
            limit: 100,
        }
    }
}

// === impl InvocationQueue ===

impl InvocationQueue {
    /// Opens (creating if needed) the database at `path` and the queue tables in it.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
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

    /// Stores a new invocation, due now, and returns its id (`inv-` and 16 hex digits). It is
    /// committed when this returns.
    pub fn enqueue(&self, new: &NewInvocation, now_ms: u64) -> Result<String> {
        new.retry.validate()?;
        let conn = self.lock();
        insert(&conn, new, now_ms)
    }

    /// Enqueues the fire of timer `trigger_id` scheduled at `fire_ms`, and records it as the
    /// trigger's latest fire, in one transaction. `None` when that fire (or a later one) was
    /// already enqueued, so a fire is never enqueued twice, even across a crash.
    pub fn enqueue_timer_fire(
        &self,
        trigger_id: &str,
        fire_ms: u64,
        new: &NewInvocation,
        now_ms: u64,
    ) -> Result<Option<String>> {
        new.retry.validate()?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let last: Option<i64> = tx
            .query_row(
                "SELECT last_fired_ms FROM fn_timer_fires WHERE trigger_id = ?1",
                [trigger_id],
                |r| r.get(0),
            )
            .optional()?;
        if last.is_some_and(|last| db_int(fire_ms) <= last) {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO fn_timer_fires (trigger_id, last_fired_ms) VALUES (?1, ?2) \
             ON CONFLICT (trigger_id) DO UPDATE SET last_fired_ms = excluded.last_fired_ms",
            params![trigger_id, db_int(fire_ms)],
        )?;
        let id = insert(&tx, new, now_ms)?;
        tx.commit()?;
        Ok(Some(id))
    }

    /// The scheduled time (Unix ms) of the latest enqueued fire of a timer trigger.
    pub fn timer_last_fired(&self, trigger_id: &str) -> Result<Option<u64>> {
        let conn = self.lock();
        let last: Option<i64> = conn
            .query_row(
                "SELECT last_fired_ms FROM fn_timer_fires WHERE trigger_id = ?1",
                [trigger_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(last.map(from_db))
    }

    /// Forgets a deleted timer trigger's fire record.
    pub fn forget_timer(&self, trigger_id: &str) -> Result<()> {
        let conn = self.lock();
        conn.execute(
            "DELETE FROM fn_timer_fires WHERE trigger_id = ?1",
            [trigger_id],
        )?;
        Ok(())
    }

    /// Claims the invocation due first (oldest `next_at`, then oldest created): it becomes
    /// `running` with one more attempt and a lease until `now + lease`. Lapsed leases are
    /// returned to `pending` first. `None` when nothing is due.
    ///
    /// Pick `lease` longer than the function's timeout plus the time to start an instance, so
    /// a live attempt never loses its claim.
    pub fn claim_next(&self, now_ms: u64, lease: Duration) -> Result<Option<Claim>> {
        let lease_until =
            now_ms.saturating_add(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX));
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        release(&tx, now_ms, true)?;
        let claimed = tx
            .query_row(
                &format!(
                    "UPDATE fn_invocations SET status = 'running', attempts = attempts + 1, \
                     claim = claim + 1, lease_until = ?2, updated_at = ?1 \
                     WHERE id = (SELECT id FROM fn_invocations \
                                 WHERE status = 'pending' AND next_at <= ?1 \
                                 ORDER BY next_at, created_at, rowid LIMIT 1) \
                     RETURNING {COLUMNS}"
                ),
                params![db_int(now_ms), db_int(lease_until)],
                read_row,
            )
            .optional()?;
        tx.commit()?;
        claimed
            .map(|(invocation, token)| {
                Ok(Claim {
                    invocation: invocation?,
                    token,
                })
            })
            .transpose()
    }

    /// Records how a claimed attempt ended. `version` is the version it ran on (if one was
    /// chosen). A failure is retried per the invocation's [`RetryPolicy`] or dead-lettered.
    pub fn complete(
        &self,
        claim: &Claim,
        version: Option<&str>,
        outcome: std::result::Result<&Value, &FunctionError>,
        now_ms: u64,
    ) -> Result<Completion> {
        let id = &claim.invocation.id;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let current: Option<(String, i64, i64, i64, i64, i64)> = tx
            .query_row(
                "SELECT status, claim, attempts, max_attempts, backoff_base_ms, backoff_max_ms \
                 FROM fn_invocations WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .optional()?;
        let Some((status, token, attempts, max_attempts, base_ms, max_ms)) = current else {
            return Ok(Completion::Stale);
        };
        if status != "running" || token != claim.token {
            return Ok(Completion::Stale);
        }
        let now = db_int(now_ms);
        let completion = match outcome {
            Ok(result) => {
                tx.execute(
                    "UPDATE fn_invocations SET status = 'succeeded', result = ?2, version = ?3, \
                     lease_until = NULL, updated_at = ?4, finished_at = ?4 WHERE id = ?1",
                    params![id, result.to_string(), version, now],
                )?;
                Completion::Succeeded
            }
            Err(error) => {
                let error = serde_json::to_string(error).map_err(|e| QueueError::Corrupt {
                    id: id.clone(),
                    column: "error",
                    reason: e.to_string(),
                })?;
                let policy = RetryPolicy {
                    max_attempts: small_int(max_attempts),
                    backoff_base: Duration::from_millis(from_db(base_ms)),
                    backoff_max: Duration::from_millis(from_db(max_ms)),
                };
                match policy.after_failure(small_int(attempts)) {
                    RetryDecision::RetryIn(wait) => {
                        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                        let next_at_ms = now_ms.saturating_add(wait_ms);
                        tx.execute(
                            "UPDATE fn_invocations SET status = 'pending', error = ?2, \
                             version = ?3, next_at = ?4, lease_until = NULL, updated_at = ?5 \
                             WHERE id = ?1",
                            params![id, error, version, db_int(next_at_ms), now],
                        )?;
                        Completion::Retrying { next_at_ms }
                    }
                    RetryDecision::DeadLetter => {
                        tx.execute(
                            "UPDATE fn_invocations SET status = 'dead', error = ?2, version = ?3, \
                             lease_until = NULL, updated_at = ?4, finished_at = ?4 WHERE id = ?1",
                            params![id, error, version, now],
                        )?;
                        Completion::DeadLettered
                    }
                }
            }
        };
        tx.commit()?;
        Ok(completion)
    }

    /// Returns every `running` invocation to `pending`, due now, its in-flight attempt not
    /// counted. Call once at server start, before the worker claims: nothing can be running
    /// then, so these are attempts a previous process lost. Returns how many.
    pub fn recover_running(&self, now_ms: u64) -> Result<usize> {
        let conn = self.lock();
        release(&conn, now_ms, false)
    }

    pub fn get(&self, id: &str) -> Result<Option<Invocation>> {
        let conn = self.lock();
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM fn_invocations WHERE id = ?1"),
                [id],
                read_row,
            )
            .optional()?;
        row.map(|(invocation, _)| invocation).transpose()
    }

    /// Invocations matching `filter`, newest first.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<Invocation>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM fn_invocations \
             WHERE (?1 IS NULL OR namespace = ?1) AND (?2 IS NULL OR function = ?2) \
               AND (?3 IS NULL OR status = ?3) \
             ORDER BY created_at DESC, rowid DESC LIMIT ?4"
        ))?;
        let rows = stmt.query_map(
            params![
                filter.namespace,
                filter.function,
                filter.status.map(InvocationStatus::as_str),
                filter.limit.min(MAX_LIST_LIMIT),
            ],
            read_row,
        )?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row?.0?);
        }
        Ok(out)
    }

    /// When the next `pending` invocation is due, so the worker can sleep until then (or until
    /// it is told of a new one).
    pub fn next_due_ms(&self) -> Result<Option<u64>> {
        let conn = self.lock();
        let next: Option<i64> = conn.query_row(
            "SELECT min(next_at) FROM fn_invocations WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )?;
        Ok(next.map(from_db))
    }

    /// Deletes `succeeded` and `dead` invocations that finished before `before_ms` (retention).
    /// Returns how many rows went.
    pub fn purge_finished(&self, before_ms: u64) -> Result<usize> {
        let conn = self.lock();
        Ok(conn.execute(
            "DELETE FROM fn_invocations \
             WHERE status IN ('succeeded', 'dead') AND finished_at < ?1",
            [db_int(before_ms)],
        )?)
    }

    /// Deletes every invocation of a function (when the function is deleted). Returns how many.
    pub fn delete_function(&self, namespace: &str, function: &str) -> Result<usize> {
        let conn = self.lock();
        Ok(conn.execute(
            "DELETE FROM fn_invocations WHERE namespace = ?1 AND function = ?2",
            params![namespace, function],
        )?)
    }
}

fn insert(conn: &Connection, new: &NewInvocation, now_ms: u64) -> Result<String> {
    let now = db_int(now_ms);
    let id: String = conn.query_row(
        "INSERT INTO fn_invocations (id, namespace, function, qualifier, source, event, \
         callback_url, status, max_attempts, backoff_base_ms, backoff_max_ms, next_at, \
         created_at, updated_at) \
         VALUES ('inv-' || lower(hex(randomblob(8))), ?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8, \
                 ?9, ?10, ?10, ?10) \
         RETURNING id",
        params![
            new.namespace,
            new.function,
            new.qualifier,
            new.source,
            new.event.to_string(),
            new.callback_url,
            new.retry.max_attempts,
            duration_ms(new.retry.backoff_base),
            duration_ms(new.retry.backoff_max),
            now,
        ],
        |r| r.get(0),
    )?;
    Ok(id)
}

/// Returns `running` rows to `pending` (only lapsed leases when `lapsed_only`), not counting
/// the lost attempt.
fn release(conn: &Connection, now_ms: u64, lapsed_only: bool) -> Result<usize> {
    let now = db_int(now_ms);
    let sql = if lapsed_only {
        "UPDATE fn_invocations SET status = 'pending', attempts = max(attempts - 1, 0), \
         lease_until = NULL, next_at = ?1, updated_at = ?1 \
         WHERE status = 'running' AND lease_until <= ?1"
    } else {
        "UPDATE fn_invocations SET status = 'pending', attempts = max(attempts - 1, 0), \
         lease_until = NULL, next_at = ?1, updated_at = ?1 WHERE status = 'running'"
    };
    Ok(conn.execute(sql, [now])?)
}

/// One row in [`COLUMNS`] order, with its claim token. The inner `Result` reports unreadable
/// JSON or status values without failing the whole query.
fn read_row(r: &Row<'_>) -> rusqlite::Result<(Result<Invocation>, i64)> {
    let id: String = r.get(0)?;
    let event: String = r.get(6)?;
    let status: String = r.get(8)?;
    let result: Option<String> = r.get(16)?;
    let error: Option<String> = r.get(17)?;
    let token: i64 = r.get(13)?;
    let next_at: i64 = r.get(14)?;
    let lease_until: Option<i64> = r.get(15)?;
    let corrupt = |column: &'static str, reason: String| QueueError::Corrupt {
        id: id.clone(),
        column,
        reason,
    };
    let parsed = (|| {
        let status = InvocationStatus::parse(&status)
            .ok_or_else(|| corrupt("status", format!("unknown status {status:?}")))?;
        let event = serde_json::from_str(&event).map_err(|e| corrupt("event", e.to_string()))?;
        let result = result
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| corrupt("result", e.to_string()))?;
        let error = error
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| corrupt("error", e.to_string()))?;
        Ok::<_, QueueError>((status, event, result, error))
    })();
    let invocation = match parsed {
        Err(e) => Err(e),
        Ok((status, event, result, error)) => Ok(Invocation {
            id: id.clone(),
            namespace: r.get(1)?,
            function: r.get(2)?,
            qualifier: r.get(3)?,
            version: r.get(4)?,
            source: r.get(5)?,
            event,
            callback_url: r.get(7)?,
            status,
            attempts: small_int(r.get(9)?),
            retry: RetryPolicy {
                max_attempts: small_int(r.get(10)?),
                backoff_base: Duration::from_millis(from_db(r.get(11)?)),
                backoff_max: Duration::from_millis(from_db(r.get(12)?)),
            },
            next_at_ms: (status == InvocationStatus::Pending).then(|| from_db(next_at)),
            lease_until_ms: if status == InvocationStatus::Running {
                lease_until.map(from_db)
            } else {
                None
            },
            result,
            error,
            created_at_ms: from_db(r.get(18)?),
            updated_at_ms: from_db(r.get(19)?),
            finished_at_ms: r.get::<_, Option<i64>>(20)?.map(from_db),
        }),
    };
    Ok((invocation, token))
}

/// SQLite integers are signed: times past `i64::MAX` ms are stored as `i64::MAX`.
fn db_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn small_int(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
