//! The single source of truth: namespaces, services, versions, traffic policies and custom domains
//! in one SQLite file (WAL mode), with schema migrations.
//!
//! Every write is one transaction that re-checks the model's rules against the stored state
//! (version limit, traffic validity, domain uniqueness), so a rejected request changes nothing and
//! a crash mid-write leaves the previous state intact. The store never starts processes; callers
//! notify the reconciler after a successful write.
//!
//! # Layout
//! - [`schema`]: migrations, applied in order on open, tracked by `PRAGMA user_version`.
//! - [`Store`]: the queries and transactions.

#![forbid(unsafe_code)]

mod schema;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use nimbus_model::names::{validate_name, version_name};
use nimbus_model::{
    GatewaySpec, ModelError, ScalingUpdate, TrafficPolicy, TrafficTarget, VersionSpec,
    DEFAULT_NAMESPACE,
};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::Serialize;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request breaks a rule of the model; nothing was written.
    #[error(transparent)]
    Rejected(#[from] ModelError),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error(
        "the database was written by a newer Nimbus (schema {found}, this build knows {known})"
    )]
    TooNew { found: i64, known: i64 },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceRecord {
    pub namespace: String,
    pub name: String,
    pub traffic: TrafficPolicy,
    /// Custom domains, sorted.
    pub domains: Vec<String>,
    /// Version names, oldest first.
    pub versions: Vec<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionRecord {
    pub namespace: String,
    pub service: String,
    pub name: String,
    pub seq: u32,
    pub spec: VersionSpec,
    pub created_at: i64,
    /// Will take 100% of traffic as soon as it is ready (a deploy without `--no-traffic`).
    pub promote_pending: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainRecord {
    pub host: String,
    pub namespace: String,
    pub service: String,
}

/// A scheduled scaling policy as stored; its cron was validated before it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleRecord {
    pub id: i64,
    pub namespace: String,
    pub service: String,
    /// `None`: every version of the service.
    pub version: Option<String>,
    pub cron: String,
    pub min_instances: u32,
    pub max_instances: Option<u32>,
    pub duration_secs: Option<u64>,
    pub created_at: i64,
}

/// A function trigger as stored: a timer (`cron`) or object storage events (`bucket`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TriggerRecord {
    pub id: i64,
    pub namespace: String,
    pub function: String,
    /// `timer` or `storage`.
    pub kind: String,
    pub cron: Option<String>,
    pub bucket: Option<String>,
    /// `created,deleted`
    pub events: Option<String>,
    pub prefix: Option<String>,
    pub created_at: i64,
}

/// A new trigger (validated by the caller).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewTrigger {
    pub kind: String,
    pub cron: Option<String>,
    pub bucket: Option<String>,
    pub events: Option<String>,
    pub prefix: Option<String>,
}

/// A weighted alias of a function, e.g. `live` = v1 90 %, v2 10 %.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AliasRecord {
    pub namespace: String,
    pub function: String,
    pub name: String,
    pub split: Vec<TrafficTarget>,
}

/// An S3 access key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessKeyRecord {
    pub id: String,
    pub created_at: i64,
}

/// What a new schedule asks for (validated by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSchedule {
    pub version: Option<String>,
    pub cron: String,
    pub min_instances: u32,
    pub max_instances: Option<u32>,
    pub duration_secs: Option<u64>,
}

/// Everything the reconciler needs, read in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredState {
    pub services: Vec<ServiceRecord>,
    pub versions: Vec<VersionRecord>,
    pub schedules: Vec<ScheduleRecord>,
    /// Gateway policies of the services that have one (others use the default).
    pub gateway: Vec<GatewayRecord>,
    /// TLS certificates per host, sorted by host.
    pub certificates: Vec<CertificateRecord>,
}

/// A TLS certificate (chain and key, PEM) the gateway serves for `host` (or `*.parent`).
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct CertificateRecord {
    pub host: String,
    pub cert_pem: String,
    #[serde(skip)]
    pub key_pem: String,
    pub created_at: i64,
}

impl std::fmt::Debug for CertificateRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateRecord")
            .field("host", &self.host)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A service's gateway policy as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayRecord {
    pub namespace: String,
    pub service: String,
    pub spec: GatewaySpec,
}

/// What a deploy did.
#[derive(Debug, Clone, PartialEq)]
pub enum Deployed {
    /// A new version was created.
    Created(ServiceRecord, VersionRecord),
    /// Only scaling changed compared to the newest version, which was updated in place.
    ScalingUpdated(ServiceRecord, VersionRecord),
}

/// One entry of the events timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRecord {
    pub id: i64,
    pub at: i64,
    pub namespace: String,
    pub service: String,
    pub kind: String,
    pub message: String,
}

/// A handle on the SQLite file. Cheap operations run under one mutex: the control plane is
/// low-rate, and one writer is what SQLite wants anyway.
pub struct Store {
    conn: Mutex<Connection>,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn not_found_service(namespace: &str, service: &str) -> StoreError {
    ModelError::not_found(
        "service_not_found",
        "service",
        format!("service {service} does not exist in namespace {namespace}"),
    )
    .into()
}

// === impl Store ===

impl Store {
    /// Opens (creating if needed) the database, enables WAL, applies migrations and makes sure
    /// the `default` namespace exists.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Write transactions take the write lock up front, so they wait (busy timeout) for
        // the other connections to the file (metering, the function queue) instead of failing
        // with "database is locked" when a read turns into a write.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        schema::migrate(&mut conn)?;
        conn.execute(
            "INSERT OR IGNORE INTO namespaces (name, created_at) VALUES (?1, ?2)",
            params![DEFAULT_NAMESPACE, now()],
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back on drop), so a poisoned lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn list_namespaces(&self) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT name FROM namespaces ORDER BY name")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn get_service(&self, namespace: &str, service: &str) -> Result<ServiceRecord> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        load_service(&tx, namespace, service)?.ok_or_else(|| not_found_service(namespace, service))
    }

    /// Services of one namespace, or of all when `namespace` is `None`, sorted by name.
    pub fn list_services(&self, namespace: Option<&str>) -> Result<Vec<ServiceRecord>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let keys = service_keys(&tx, namespace)?;
        let mut out = Vec::with_capacity(keys.len());
        for (ns, name) in keys {
            if let Some(s) = load_service(&tx, &ns, &name)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Creates the next version (`v{n}`) of a service, creating the namespace and service on
    /// first deploy, and moves traffic as the model says. When the spec differs from the newest
    /// version's in scaling only, that version is updated in place instead (unless
    /// `new_version`). One transaction.
    pub fn deploy_version(
        &self,
        namespace: &str,
        service: &str,
        spec: &VersionSpec,
        no_traffic: bool,
        new_version: bool,
    ) -> Result<Deployed> {
        validate_name("namespace", namespace)?;
        validate_name("service", service)?;
        let spec_json = serde_json::to_string(spec).map_err(|e| StoreError::Corrupt {
            what: "version spec",
            detail: e.to_string(),
        })?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let at = now();
        tx.execute(
            "INSERT OR IGNORE INTO namespaces (name, created_at) VALUES (?1, ?2)",
            params![namespace, at],
        )?;
        let existing = load_service(&tx, namespace, service)?;
        let (next_seq, current_policy, versions) = match &existing {
            Some(s) => {
                let seq: u32 = tx.query_row(
                    "SELECT next_version FROM services WHERE namespace = ?1 AND name = ?2",
                    params![namespace, service],
                    |r| r.get(0),
                )?;
                (seq, Some(&s.traffic), s.versions.clone())
            }
            None => {
                tx.execute(
                    "INSERT INTO services (namespace, name, created_at, next_version, traffic)
                     VALUES (?1, ?2, ?3, 1, ?4)",
                    params![
                        namespace,
                        service,
                        at,
                        policy_json(&TrafficPolicy::default())?
                    ],
                )?;
                (1, None, Vec::new())
            }
        };
        if let Some(newest) = versions.last() {
            let newest = load_version(&tx, namespace, service, newest)?.ok_or_else(|| {
                StoreError::Corrupt {
                    what: "version",
                    detail: format!("{newest} is listed but missing"),
                }
            })?;
            newest.spec.check_same_kind(spec, service)?;
            // An identical spec is a redeploy (a process app's code may have changed under the
            // same command), so only a pure scaling change is applied in place.
            if !new_version && newest.spec != *spec && newest.spec.same_except_scaling(spec) {
                // Cloud Run does the same: a change of scaling only is no new version.
                update_spec(&tx, &newest, spec)?;
                let service_record = load_service(&tx, namespace, service)?
                    .ok_or_else(|| not_found_service(namespace, service))?;
                let updated = load_version(&tx, namespace, service, &newest.name)?
                    .ok_or_else(|| not_found_service(namespace, service))?;
                tx.commit()?;
                return Ok(Deployed::ScalingUpdated(service_record, updated));
            }
        }
        current_policy
            .cloned()
            .unwrap_or_default()
            .check_version_limit(&versions)?;
        let name = version_name(next_seq);
        // Like Cloud Run, a later version takes traffic only once it is ready, so a deploy that
        // never gets healthy leaves the service serving the old version.
        let first = versions.is_empty();
        let promote_pending = !first && !no_traffic;
        tx.execute(
            "INSERT INTO versions (namespace, service, name, seq, spec, created_at, promote_pending)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![namespace, service, name, next_seq, spec_json, at, promote_pending],
        )?;
        let policy = if first {
            TrafficPolicy::after_deploy(None, &name, no_traffic)
        } else {
            current_policy.cloned().unwrap_or_default()
        };
        tx.execute(
            "UPDATE services SET next_version = ?3, traffic = ?4 WHERE namespace = ?1 AND name = ?2",
            params![namespace, service, next_seq + 1, policy_json(&policy)?],
        )?;
        let traffic_note = if policy.percent_of(&name) > 0 {
            format!(", now taking {}% of traffic", policy.percent_of(&name))
        } else if promote_pending {
            ", taking all traffic once ready".to_string()
        } else {
            ", taking no traffic".to_string()
        };
        record_event(
            &tx,
            namespace,
            service,
            "deploy",
            &format!("version {name} created{traffic_note}"),
        )?;
        let record = load_service(&tx, namespace, service)?
            .ok_or_else(|| not_found_service(namespace, service))?;
        let version =
            load_version(&tx, namespace, service, &name)?.ok_or_else(|| StoreError::Corrupt {
                what: "version",
                detail: format!("{name} vanished inside its own transaction"),
            })?;
        tx.commit()?;
        Ok(Deployed::Created(record, version))
    }

    /// Changes a version's scaling (min/max/concurrency/utilization/…) in place.
    pub fn update_scaling(
        &self,
        namespace: &str,
        service: &str,
        version: &str,
        update: &ScalingUpdate,
    ) -> Result<VersionRecord> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if load_service(&tx, namespace, service)?.is_none() {
            return Err(not_found_service(namespace, service));
        }
        let record = load_version(&tx, namespace, service, version)?.ok_or_else(|| {
            StoreError::from(ModelError::not_found(
                "version_not_found",
                "version",
                format!("service {service} has no version {version}"),
            ))
        })?;
        let spec = record.spec.apply_scaling(update)?;
        update_spec(&tx, &record, &spec)?;
        let updated = load_version(&tx, namespace, service, version)?
            .ok_or_else(|| not_found_service(namespace, service))?;
        tx.commit()?;
        Ok(updated)
    }

    /// Stores a scheduled scaling policy (its cron and bounds already validated).
    pub fn add_schedule(
        &self,
        namespace: &str,
        service: &str,
        schedule: &NewSchedule,
    ) -> Result<ScheduleRecord> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let svc = load_service(&tx, namespace, service)?
            .ok_or_else(|| not_found_service(namespace, service))?;
        if let Some(version) = &schedule.version {
            if !svc.versions.contains(version) {
                return Err(ModelError::not_found(
                    "version_not_found",
                    "version",
                    format!("service {service} has no version {version}"),
                )
                .into());
            }
        }
        tx.execute(
            "INSERT INTO schedules (namespace, service, version, cron, min_instances,
                                    max_instances, duration_secs, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                namespace,
                service,
                schedule.version,
                schedule.cron,
                schedule.min_instances,
                schedule.max_instances,
                schedule.duration_secs.map(|d| d as i64),
                now()
            ],
        )?;
        let id = tx.last_insert_rowid();
        record_event(
            &tx,
            namespace,
            service,
            "schedule_add",
            &format!(
                "schedule {id} added: {:?} min {}",
                schedule.cron, schedule.min_instances
            ),
        )?;
        let record = schedules_of(&tx, Some((namespace, service)))?
            .into_iter()
            .find(|s| s.id == id)
            .ok_or_else(|| StoreError::Corrupt {
                what: "schedule",
                detail: format!("{id} vanished inside its own transaction"),
            })?;
        tx.commit()?;
        Ok(record)
    }

    pub fn list_schedules(&self, namespace: &str, service: &str) -> Result<Vec<ScheduleRecord>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if load_service(&tx, namespace, service)?.is_none() {
            return Err(not_found_service(namespace, service));
        }
        schedules_of(&tx, Some((namespace, service)))
    }

    pub fn remove_schedule(&self, namespace: &str, service: &str, id: i64) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let removed = tx.execute(
            "DELETE FROM schedules WHERE namespace = ?1 AND service = ?2 AND id = ?3",
            params![namespace, service, id],
        )?;
        if removed == 0 {
            return Err(ModelError::not_found(
                "schedule_not_found",
                "id",
                format!("service {service} has no schedule {id}"),
            )
            .into());
        }
        record_event(
            &tx,
            namespace,
            service,
            "schedule_remove",
            &format!("schedule {id} removed"),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes events older than `before` (Unix seconds); returns how many went.
    pub fn prune_events(&self, before: i64) -> Result<usize> {
        let conn = self.lock();
        Ok(conn.execute("DELETE FROM events WHERE at < ?1", params![before])?)
    }

    /// Stores a function trigger. The function must exist.
    pub fn add_trigger(
        &self,
        namespace: &str,
        function: &str,
        trigger: &NewTrigger,
    ) -> Result<TriggerRecord> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if load_service(&tx, namespace, function)?.is_none() {
            return Err(not_found_service(namespace, function));
        }
        tx.execute(
            "INSERT INTO fn_triggers (namespace, function, kind, cron, bucket, events, prefix, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                namespace,
                function,
                trigger.kind,
                trigger.cron,
                trigger.bucket,
                trigger.events,
                trigger.prefix,
                now()
            ],
        )?;
        let id = tx.last_insert_rowid();
        record_event(
            &tx,
            namespace,
            function,
            "trigger_add",
            &format!("{} trigger {id} added", trigger.kind),
        )?;
        tx.commit()?;
        drop(conn);
        self.list_triggers(Some((namespace, function)))?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| {
                StoreError::Rejected(ModelError::not_found(
                    "trigger_not_found",
                    "id",
                    "the new trigger vanished",
                ))
            })
    }

    /// Triggers of one function, or of all.
    pub fn list_triggers(&self, function: Option<(&str, &str)>) -> Result<Vec<TriggerRecord>> {
        let conn = self.lock();
        let (ns, name) = function.unwrap_or(("", ""));
        let mut stmt = conn.prepare(
            "SELECT id, namespace, function, kind, cron, bucket, events, prefix, created_at
             FROM fn_triggers WHERE (?1 = 0 OR (namespace = ?2 AND function = ?3)) ORDER BY id",
        )?;
        let rows = stmt.query_map(params![function.is_some(), ns, name], |r| {
            Ok(TriggerRecord {
                id: r.get(0)?,
                namespace: r.get(1)?,
                function: r.get(2)?,
                kind: r.get(3)?,
                cron: r.get(4)?,
                bucket: r.get(5)?,
                events: r.get(6)?,
                prefix: r.get(7)?,
                created_at: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn remove_trigger(&self, namespace: &str, function: &str, id: i64) -> Result<()> {
        let conn = self.lock();
        let removed = conn.execute(
            "DELETE FROM fn_triggers WHERE namespace = ?1 AND function = ?2 AND id = ?3",
            params![namespace, function, id],
        )?;
        if removed == 0 {
            return Err(ModelError::not_found(
                "trigger_not_found",
                "id",
                format!("function {function} has no trigger {id}"),
            )
            .into());
        }
        Ok(())
    }

    /// Creates or replaces a weighted alias; every version named must exist.
    pub fn set_alias(
        &self,
        namespace: &str,
        function: &str,
        name: &str,
        split: &[TrafficTarget],
    ) -> Result<AliasRecord> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let Some(service) = load_service(&tx, namespace, function)? else {
            return Err(not_found_service(namespace, function));
        };
        let policy = TrafficPolicy {
            split: split.to_vec(),
            rules: Vec::new(),
        };
        policy.validate(&service.versions)?;
        let text = serde_json::to_string(split).map_err(|e| StoreError::Corrupt {
            what: "alias",
            detail: e.to_string(),
        })?;
        tx.execute(
            "INSERT INTO fn_aliases (namespace, function, name, split) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (namespace, function, name) DO UPDATE SET split = excluded.split",
            params![namespace, function, name, text],
        )?;
        record_event(
            &tx,
            namespace,
            function,
            "alias",
            &format!("alias {name} = {text}"),
        )?;
        tx.commit()?;
        Ok(AliasRecord {
            namespace: namespace.to_string(),
            function: function.to_string(),
            name: name.to_string(),
            split: split.to_vec(),
        })
    }

    pub fn list_aliases(&self, namespace: &str, function: &str) -> Result<Vec<AliasRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT name, split FROM fn_aliases WHERE namespace = ?1 AND function = ?2 ORDER BY name",
        )?;
        let rows = stmt.query_map(params![namespace, function], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut aliases = Vec::new();
        for row in rows {
            let (name, split) = row?;
            let split: Vec<TrafficTarget> =
                serde_json::from_str(&split).map_err(|e| StoreError::Corrupt {
                    what: "alias",
                    detail: e.to_string(),
                })?;
            aliases.push(AliasRecord {
                namespace: namespace.to_string(),
                function: function.to_string(),
                name,
                split,
            });
        }
        Ok(aliases)
    }

    /// Stores a new S3 access key (id and secret generated by the caller).
    pub fn add_access_key(&self, id: &str, secret: &str) -> Result<AccessKeyRecord> {
        let conn = self.lock();
        let created_at = now();
        conn.execute(
            "INSERT INTO access_keys (id, secret, created_at) VALUES (?1, ?2, ?3)",
            params![id, secret, created_at],
        )?;
        Ok(AccessKeyRecord {
            id: id.to_string(),
            created_at,
        })
    }

    /// Every access key with its secret (for the S3 endpoint's signature checks).
    pub fn access_key_secrets(&self) -> Result<Vec<(String, String)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare("SELECT id, secret FROM access_keys ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Access keys without their secrets, oldest first.
    pub fn list_access_keys(&self) -> Result<Vec<AccessKeyRecord>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT id, created_at FROM access_keys ORDER BY created_at, id")?;
        let rows = stmt.query_map([], |r| {
            Ok(AccessKeyRecord {
                id: r.get(0)?,
                created_at: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn remove_access_key(&self, id: &str) -> Result<()> {
        let conn = self.lock();
        let removed = conn.execute("DELETE FROM access_keys WHERE id = ?1", params![id])?;
        if removed == 0 {
            return Err(ModelError::not_found(
                "access_key_not_found",
                "id",
                format!("there is no access key {id}; `nimbus keys list` shows them"),
            )
            .into());
        }
        Ok(())
    }

    pub fn list_versions(&self, namespace: &str, service: &str) -> Result<Vec<VersionRecord>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if load_service(&tx, namespace, service)?.is_none() {
            return Err(not_found_service(namespace, service));
        }
        versions_of(&tx, Some((namespace, service)))
    }

    pub fn get_version(
        &self,
        namespace: &str,
        service: &str,
        version: &str,
    ) -> Result<VersionRecord> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if load_service(&tx, namespace, service)?.is_none() {
            return Err(not_found_service(namespace, service));
        }
        load_version(&tx, namespace, service, version)?.ok_or_else(|| {
            ModelError::not_found(
                "version_not_found",
                "version",
                format!("service {service} has no version {version}"),
            )
            .into()
        })
    }

    /// Deletes a version that takes no traffic.
    pub fn delete_version(&self, namespace: &str, service: &str, version: &str) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let svc = load_service(&tx, namespace, service)?
            .ok_or_else(|| not_found_service(namespace, service))?;
        if !svc.versions.iter().any(|v| v == version) {
            return Err(ModelError::not_found(
                "version_not_found",
                "version",
                format!("service {service} has no version {version}"),
            )
            .into());
        }
        svc.traffic.check_delete(version)?;
        tx.execute(
            "DELETE FROM versions WHERE namespace = ?1 AND service = ?2 AND name = ?3",
            params![namespace, service, version],
        )?;
        tx.execute(
            "DELETE FROM schedules WHERE namespace = ?1 AND service = ?2 AND version = ?3",
            params![namespace, service, version],
        )?;
        record_event(
            &tx,
            namespace,
            service,
            "version_delete",
            &format!("version {version} deleted"),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces a service's traffic policy after validating it against its versions.
    pub fn set_traffic(
        &self,
        namespace: &str,
        service: &str,
        policy: &TrafficPolicy,
    ) -> Result<ServiceRecord> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let svc = load_service(&tx, namespace, service)?
            .ok_or_else(|| not_found_service(namespace, service))?;
        policy.validate(&svc.versions)?;
        tx.execute(
            "UPDATE services SET traffic = ?3 WHERE namespace = ?1 AND name = ?2",
            params![namespace, service, policy_json(policy)?],
        )?;
        // An explicit policy is the user's last word: pending promotions no longer apply.
        tx.execute(
            "UPDATE versions SET promote_pending = 0 WHERE namespace = ?1 AND service = ?2",
            params![namespace, service],
        )?;
        let split: Vec<String> = policy
            .split
            .iter()
            .map(|t| format!("{}={}", t.version, t.percent))
            .collect();
        record_event(
            &tx,
            namespace,
            service,
            "traffic",
            &format!(
                "traffic set to {} with {} rule(s)",
                split.join(","),
                policy.rules.len()
            ),
        )?;
        let updated = load_service(&tx, namespace, service)?
            .ok_or_else(|| not_found_service(namespace, service))?;
        tx.commit()?;
        Ok(updated)
    }

    /// Moves all traffic to a version whose deploy asked for it, now that it is ready. Returns
    /// false when there is nothing to do (no longer pending, superseded, or deleted). Clears the
    /// pending flag of this and every older version.
    pub fn promote(&self, namespace: &str, service: &str, version: &str) -> Result<bool> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let Some(record) = load_version(&tx, namespace, service, version)? else {
            return Ok(false);
        };
        if !record.promote_pending {
            return Ok(false);
        }
        let svc = load_service(&tx, namespace, service)?
            .ok_or_else(|| not_found_service(namespace, service))?;
        let policy = TrafficPolicy::after_deploy(Some(&svc.traffic), version, false);
        tx.execute(
            "UPDATE services SET traffic = ?3 WHERE namespace = ?1 AND name = ?2",
            params![namespace, service, policy_json(&policy)?],
        )?;
        tx.execute(
            "UPDATE versions SET promote_pending = 0
             WHERE namespace = ?1 AND service = ?2 AND seq <= ?3",
            params![namespace, service, record.seq],
        )?;
        record_event(
            &tx,
            namespace,
            service,
            "traffic",
            &format!("version {version} is ready and now takes 100% of traffic"),
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Deletes a service with its versions and domains.
    pub fn delete_service(&self, namespace: &str, service: &str) -> Result<()> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if load_service(&tx, namespace, service)?.is_none() {
            return Err(not_found_service(namespace, service));
        }
        tx.execute(
            "DELETE FROM domains WHERE namespace = ?1 AND service = ?2",
            params![namespace, service],
        )?;
        tx.execute(
            "DELETE FROM schedules WHERE namespace = ?1 AND service = ?2",
            params![namespace, service],
        )?;
        tx.execute(
            "DELETE FROM fn_triggers WHERE namespace = ?1 AND function = ?2",
            params![namespace, service],
        )?;
        tx.execute(
            "DELETE FROM fn_aliases WHERE namespace = ?1 AND function = ?2",
            params![namespace, service],
        )?;
        tx.execute(
            "DELETE FROM versions WHERE namespace = ?1 AND service = ?2",
            params![namespace, service],
        )?;
        tx.execute(
            "DELETE FROM services WHERE namespace = ?1 AND name = ?2",
            params![namespace, service],
        )?;
        record_event(
            &tx,
            namespace,
            service,
            "service_delete",
            &format!("service {service} deleted"),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Binds a custom domain (already validated and normalised) to a service; a host bound
    /// anywhere else is a conflict naming its owner.
    pub fn add_domain(&self, host: &str, namespace: &str, service: &str) -> Result<DomainRecord> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if load_service(&tx, namespace, service)?.is_none() {
            return Err(not_found_service(namespace, service));
        }
        if let Some(owner) = load_domain(&tx, host)? {
            return Err(ModelError::conflict(
                "domain_taken",
                "host",
                format!(
                    "domain {host} is already bound to service {}/{}",
                    owner.namespace, owner.service
                ),
            )
            .into());
        }
        tx.execute(
            "INSERT INTO domains (host, namespace, service, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![host, namespace, service, now()],
        )?;
        record_event(
            &tx,
            namespace,
            service,
            "domain_add",
            &format!("domain {host} added"),
        )?;
        tx.commit()?;
        Ok(DomainRecord {
            host: host.to_string(),
            namespace: namespace.to_string(),
            service: service.to_string(),
        })
    }

    pub fn remove_domain(&self, host: &str) -> Result<DomainRecord> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let owner = load_domain(&tx, host)?.ok_or_else(|| {
            StoreError::from(ModelError::not_found(
                "domain_not_found",
                "host",
                format!("domain {host} is not bound to any service"),
            ))
        })?;
        tx.execute("DELETE FROM domains WHERE host = ?1", params![host])?;
        record_event(
            &tx,
            &owner.namespace,
            &owner.service,
            "domain_remove",
            &format!("domain {host} removed"),
        )?;
        tx.commit()?;
        Ok(owner)
    }

    pub fn list_domains(&self) -> Result<Vec<DomainRecord>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT host, namespace, service FROM domains ORDER BY host")?;
        let rows = stmt.query_map([], |r| {
            Ok(DomainRecord {
                host: r.get(0)?,
                namespace: r.get(1)?,
                service: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The whole desired state, consistent as of one instant.
    pub fn snapshot(&self) -> Result<DesiredState> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let keys = service_keys(&tx, None)?;
        let mut services = Vec::with_capacity(keys.len());
        for (ns, name) in keys {
            if let Some(s) = load_service(&tx, &ns, &name)? {
                services.push(s);
            }
        }
        let versions = versions_of(&tx, None)?;
        let schedules = schedules_of(&tx, None)?;
        let gateway = gateway_policies(&tx)?;
        let certificates = certificates(&tx)?;
        Ok(DesiredState {
            services,
            versions,
            schedules,
            gateway,
            certificates,
        })
    }

    /// A service's gateway policy; the default when none was set.
    pub fn gateway_policy(&self, namespace: &str, service: &str) -> Result<GatewaySpec> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if load_service(&tx, namespace, service)?.is_none() {
            return Err(not_found_service(namespace, service));
        }
        let spec: Option<String> = tx
            .query_row(
                "SELECT spec FROM gateway_policies WHERE namespace = ?1 AND service = ?2",
                params![namespace, service],
                |r| r.get(0),
            )
            .optional()?;
        match spec {
            None => Ok(GatewaySpec::default()),
            Some(json) => parse_gateway(namespace, service, &json),
        }
    }

    /// Replaces a service's gateway policy (validated by the caller, numbers re-checked here).
    /// The default spec removes the row.
    pub fn set_gateway_policy(
        &self,
        namespace: &str,
        service: &str,
        spec: &GatewaySpec,
    ) -> Result<GatewaySpec> {
        spec.validate()?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if load_service(&tx, namespace, service)?.is_none() {
            return Err(not_found_service(namespace, service));
        }
        if *spec == GatewaySpec::default() {
            tx.execute(
                "DELETE FROM gateway_policies WHERE namespace = ?1 AND service = ?2",
                params![namespace, service],
            )?;
        } else {
            let json = serde_json::to_string(spec).map_err(|e| StoreError::Corrupt {
                what: "gateway policy",
                detail: e.to_string(),
            })?;
            tx.execute(
                "INSERT INTO gateway_policies (namespace, service, spec, updated_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (namespace, service) DO UPDATE SET spec = ?3, updated_at = ?4",
                params![namespace, service, json, now()],
            )?;
        }
        record_event(
            &tx,
            namespace,
            service,
            "gateway",
            &format!("gateway policy set: {}", describe_gateway(spec)),
        )?;
        tx.commit()?;
        Ok(spec.clone())
    }

    /// Adds or replaces the certificate of `host` (already validated by the caller).
    pub fn put_certificate(
        &self,
        host: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<CertificateRecord> {
        let conn = self.lock();
        let created_at = now();
        conn.execute(
            "INSERT INTO gateway_certificates (host, cert_pem, key_pem, created_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (host) DO UPDATE SET cert_pem = ?2, key_pem = ?3, created_at = ?4",
            params![host, cert_pem, key_pem, created_at],
        )?;
        Ok(CertificateRecord {
            host: host.to_string(),
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            created_at,
        })
    }

    /// Every certificate, sorted by host.
    pub fn list_certificates(&self) -> Result<Vec<CertificateRecord>> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        certificates(&tx)
    }

    /// Removes the certificate of `host`.
    pub fn remove_certificate(&self, host: &str) -> Result<()> {
        let conn = self.lock();
        let removed = conn.execute(
            "DELETE FROM gateway_certificates WHERE host = ?1",
            params![host],
        )?;
        if removed == 0 {
            return Err(ModelError::not_found(
                "certificate_not_found",
                "host",
                format!("no certificate for host {host}"),
            )
            .into());
        }
        Ok(())
    }

    /// Appends to the events timeline (e.g. crashes seen by the reconciler).
    pub fn record_event(
        &self,
        namespace: &str,
        service: &str,
        kind: &str,
        message: &str,
    ) -> Result<()> {
        let conn = self.lock();
        record_event(&conn, namespace, service, kind, message)
    }

    /// Newest events last; at most `limit`.
    /// The newest `limit` events (of one service, or all), oldest first; with `after`, only
    /// events with a larger id (for following).
    pub fn list_events(
        &self,
        service: Option<(&str, &str)>,
        limit: u32,
        after: Option<i64>,
    ) -> Result<Vec<EventRecord>> {
        let conn = self.lock();
        let map = |r: &rusqlite::Row<'_>| {
            Ok(EventRecord {
                id: r.get(0)?,
                at: r.get(1)?,
                namespace: r.get(2)?,
                service: r.get(3)?,
                kind: r.get(4)?,
                message: r.get(5)?,
            })
        };
        let (ns, name) = service.unwrap_or(("", ""));
        let mut stmt = conn.prepare(
            "SELECT id, at, namespace, service, kind, message FROM events
             WHERE (?1 = 0 OR (namespace = ?2 AND service = ?3)) AND id > ?4
             ORDER BY id DESC LIMIT ?5",
        )?;
        let rows = stmt.query_map(
            params![service.is_some(), ns, name, after.unwrap_or(0), limit],
            map,
        )?;
        let mut events: Vec<EventRecord> = rows.collect::<rusqlite::Result<_>>()?;
        events.reverse();
        Ok(events)
    }
}

fn update_spec(tx: &Transaction<'_>, record: &VersionRecord, spec: &VersionSpec) -> Result<()> {
    let spec_json = serde_json::to_string(spec).map_err(|e| StoreError::Corrupt {
        what: "version spec",
        detail: e.to_string(),
    })?;
    tx.execute(
        "UPDATE versions SET spec = ?4 WHERE namespace = ?1 AND service = ?2 AND name = ?3",
        params![record.namespace, record.service, record.name, spec_json],
    )?;
    record_event(
        tx,
        &record.namespace,
        &record.service,
        "scaling",
        &format!(
            "version {} scaling set to min {} max {} concurrency {}",
            record.name, spec.min_instances, spec.max_instances, spec.concurrency
        ),
    )
}

fn schedules_of(
    tx: &Transaction<'_>,
    service: Option<(&str, &str)>,
) -> Result<Vec<ScheduleRecord>> {
    let (ns, name) = service.unzip();
    let mut stmt = tx.prepare(
        "SELECT id, namespace, service, version, cron, min_instances, max_instances,
                duration_secs, created_at
         FROM schedules
         WHERE (?1 IS NULL OR namespace = ?1) AND (?2 IS NULL OR service = ?2)
         ORDER BY id",
    )?;
    let rows = stmt.query_map(params![ns, name], |r| {
        Ok(ScheduleRecord {
            id: r.get(0)?,
            namespace: r.get(1)?,
            service: r.get(2)?,
            version: r.get(3)?,
            cron: r.get(4)?,
            min_instances: r.get(5)?,
            max_instances: r.get(6)?,
            duration_secs: r.get::<_, Option<i64>>(7)?.map(|d| d.max(0) as u64),
            created_at: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn gateway_policies(tx: &Transaction<'_>) -> Result<Vec<GatewayRecord>> {
    let mut stmt = tx.prepare(
        "SELECT namespace, service, spec FROM gateway_policies ORDER BY namespace, service",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(namespace, service, json)| {
            let spec = parse_gateway(&namespace, &service, &json)?;
            Ok(GatewayRecord {
                namespace,
                service,
                spec,
            })
        })
        .collect()
}

fn certificates(tx: &Transaction<'_>) -> Result<Vec<CertificateRecord>> {
    let mut stmt = tx.prepare(
        "SELECT host, cert_pem, key_pem, created_at FROM gateway_certificates ORDER BY host",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(CertificateRecord {
            host: r.get(0)?,
            cert_pem: r.get(1)?,
            key_pem: r.get(2)?,
            created_at: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn parse_gateway(namespace: &str, service: &str, json: &str) -> Result<GatewaySpec> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
        what: "gateway policy",
        detail: format!("{namespace}/{service}: {e}"),
    })
}

/// A one-line summary for the events timeline, e.g. `lb=hash:ip rate=100/s`.
fn describe_gateway(spec: &GatewaySpec) -> String {
    let json = serde_json::to_value(spec).unwrap_or_default();
    let parts: Vec<String> = json
        .as_object()
        .map(|fields| {
            fields
                .iter()
                .filter(|(_, v)| !matches!(v, serde_json::Value::Null))
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect()
        })
        .unwrap_or_default();
    if parts.is_empty() {
        "defaults".to_string()
    } else {
        parts.join(" ")
    }
}

fn policy_json(policy: &TrafficPolicy) -> Result<String> {
    serde_json::to_string(policy).map_err(|e| StoreError::Corrupt {
        what: "traffic policy",
        detail: e.to_string(),
    })
}

fn record_event(
    conn: &Connection,
    namespace: &str,
    service: &str,
    kind: &str,
    message: &str,
) -> Result<()> {
    conn.execute(
        "INSERT INTO events (at, namespace, service, kind, message) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now(), namespace, service, kind, message],
    )?;
    Ok(())
}

fn service_keys(tx: &Transaction<'_>, namespace: Option<&str>) -> Result<Vec<(String, String)>> {
    let mut stmt = tx.prepare(
        "SELECT namespace, name FROM services WHERE ?1 IS NULL OR namespace = ?1
         ORDER BY namespace, name",
    )?;
    let rows = stmt.query_map(params![namespace], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn load_service(
    tx: &Transaction<'_>,
    namespace: &str,
    service: &str,
) -> Result<Option<ServiceRecord>> {
    let row: Option<(String, i64)> = tx
        .query_row(
            "SELECT traffic, created_at FROM services WHERE namespace = ?1 AND name = ?2",
            params![namespace, service],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((traffic_json, created_at)) = row else {
        return Ok(None);
    };
    let traffic: TrafficPolicy =
        serde_json::from_str(&traffic_json).map_err(|e| StoreError::Corrupt {
            what: "traffic policy",
            detail: format!("{namespace}/{service}: {e}"),
        })?;
    let mut stmt =
        tx.prepare("SELECT name FROM versions WHERE namespace = ?1 AND service = ?2 ORDER BY seq")?;
    let versions = stmt
        .query_map(params![namespace, service], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    let mut stmt =
        tx.prepare("SELECT host FROM domains WHERE namespace = ?1 AND service = ?2 ORDER BY host")?;
    let domains = stmt
        .query_map(params![namespace, service], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(Some(ServiceRecord {
        namespace: namespace.to_string(),
        name: service.to_string(),
        traffic,
        domains,
        versions,
        created_at,
    }))
}

/// A version row as stored; the spec is still JSON so a corrupt row becomes a typed error.
type VersionRow = (String, String, String, u32, String, i64, bool);

fn version_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VersionRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn parse_spec(
    (namespace, service, name, seq, spec_json, created_at, promote_pending): VersionRow,
) -> Result<VersionRecord> {
    let spec = serde_json::from_str(&spec_json).map_err(|e| StoreError::Corrupt {
        what: "version spec",
        detail: format!("{namespace}/{service}/{name}: {e}"),
    })?;
    Ok(VersionRecord {
        namespace,
        service,
        name,
        seq,
        spec,
        created_at,
        promote_pending,
    })
}

fn versions_of(tx: &Transaction<'_>, service: Option<(&str, &str)>) -> Result<Vec<VersionRecord>> {
    let (ns, name) = service.unzip();
    let mut stmt = tx.prepare(
        "SELECT namespace, service, name, seq, spec, created_at, promote_pending FROM versions
         WHERE (?1 IS NULL OR namespace = ?1) AND (?2 IS NULL OR service = ?2)
         ORDER BY namespace, service, seq",
    )?;
    let rows = stmt
        .query_map(params![ns, name], version_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter().map(parse_spec).collect()
}

fn load_version(
    tx: &Transaction<'_>,
    namespace: &str,
    service: &str,
    version: &str,
) -> Result<Option<VersionRecord>> {
    let row = tx
        .query_row(
            "SELECT namespace, service, name, seq, spec, created_at, promote_pending FROM versions
             WHERE namespace = ?1 AND service = ?2 AND name = ?3",
            params![namespace, service, version],
            version_from_row,
        )
        .optional()?;
    row.map(parse_spec).transpose()
}

fn load_domain(tx: &Transaction<'_>, host: &str) -> Result<Option<DomainRecord>> {
    Ok(tx
        .query_row(
            "SELECT host, namespace, service FROM domains WHERE host = ?1",
            params![host],
            |r| {
                Ok(DomainRecord {
                    host: r.get(0)?,
                    namespace: r.get(1)?,
                    service: r.get(2)?,
                })
            },
        )
        .optional()?)
}

#[cfg(test)]
mod tests;
