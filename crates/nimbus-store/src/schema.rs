//! Schema migrations. Each entry runs once, in order, inside a transaction; `PRAGMA user_version`
//! records how many have run. Append new migrations; never edit a released one.

use rusqlite::Connection;

use crate::{Result, StoreError};

const MIGRATIONS: &[&str] = &[
    // 1: the engine spine.
    "CREATE TABLE namespaces (
        name TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE services (
        namespace TEXT NOT NULL REFERENCES namespaces(name),
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        next_version INTEGER NOT NULL,
        traffic TEXT NOT NULL,
        PRIMARY KEY (namespace, name)
    );
    CREATE TABLE versions (
        namespace TEXT NOT NULL,
        service TEXT NOT NULL,
        name TEXT NOT NULL,
        seq INTEGER NOT NULL,
        spec TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        -- Deployed to take all traffic once it is ready (traffic stays put until then).
        promote_pending INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (namespace, service, name),
        FOREIGN KEY (namespace, service) REFERENCES services(namespace, name)
    );
    CREATE TABLE domains (
        host TEXT PRIMARY KEY,
        namespace TEXT NOT NULL,
        service TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        FOREIGN KEY (namespace, service) REFERENCES services(namespace, name)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        namespace TEXT NOT NULL,
        service TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX events_by_service ON events (namespace, service, id);",
    // 2: scheduled scaling.
    "CREATE TABLE schedules (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        namespace TEXT NOT NULL,
        service TEXT NOT NULL,
        version TEXT,
        cron TEXT NOT NULL,
        min_instances INTEGER NOT NULL,
        max_instances INTEGER,
        duration_secs INTEGER,
        created_at INTEGER NOT NULL,
        FOREIGN KEY (namespace, service) REFERENCES services(namespace, name)
    );",
    // 3: S3 access keys. SigV4 needs the secret itself on the server, so it is stored as is
    // (the database file is 0600 inside the data dir, like the admin token).
    "CREATE TABLE access_keys (
        id TEXT PRIMARY KEY,
        secret TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );",
    // 4: function triggers (timer and object storage) and weighted aliases.
    "CREATE TABLE fn_triggers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        namespace TEXT NOT NULL,
        function TEXT NOT NULL,
        kind TEXT NOT NULL,
        cron TEXT,
        bucket TEXT,
        events TEXT,
        prefix TEXT,
        created_at INTEGER NOT NULL,
        FOREIGN KEY (namespace, function) REFERENCES services(namespace, name)
    );
    CREATE TABLE fn_aliases (
        namespace TEXT NOT NULL,
        function TEXT NOT NULL,
        name TEXT NOT NULL,
        split TEXT NOT NULL,
        PRIMARY KEY (namespace, function, name),
        FOREIGN KEY (namespace, function) REFERENCES services(namespace, name)
    );",
    // 5: per-service gateway policy (load balancing, affinity, limits, access rules) as the
    // JSON of `nimbus_model::GatewaySpec`; one row per service that has one, gone with it.
    "CREATE TABLE IF NOT EXISTS gateway_policies (
        namespace TEXT NOT NULL,
        service TEXT NOT NULL,
        spec TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, service),
        FOREIGN KEY (namespace, service) REFERENCES services(namespace, name) ON DELETE CASCADE
    );",
    // 6: TLS certificates per host for the gateway's HTTPS listener (chosen by SNI). The key is
    // stored as PEM, like the S3 secrets: the database file lives in the 0700 data dir.
    "CREATE TABLE IF NOT EXISTS gateway_certificates (
        host TEXT PRIMARY KEY,
        cert_pem TEXT NOT NULL,
        key_pem TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );",
];

pub fn migrate(conn: &mut Connection) -> Result<()> {
    let applied: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if applied > known {
        return Err(StoreError::TooNew {
            found: applied,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}
