//! What the engine tells operators: Prometheus metrics (`GET /metrics` on the API port), the
//! per-request hook the gateway calls (metrics, metered egress, the JSON access log), and the
//! metering loop that samples each instance's CPU and memory from `/proc` into the usage tables.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nimbus_gateway::{RequestObserver, RequestRecord};
use nimbus_metering::{GroupBy, Meter, ProcSnapshot, Sample, UsageFilter, UsageKey, UsageStore};
use nimbus_model::status::{InstanceState, RuntimeStatus};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::warn;

use super::access_log::{AccessLogWriter, Reopen};

type Labels = Vec<(String, String)>;

fn version_labels(namespace: &str, service: &str, version: &str) -> Labels {
    vec![
        ("namespace".into(), namespace.into()),
        ("service".into(), service.into()),
        ("version".into(), version.into()),
    ]
}

fn histogram() -> Histogram {
    // 1 ms … ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Where the JSON access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    Off,
    Stdout,
    File(PathBuf),
}

impl std::str::FromStr for AccessLog {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Err("give `off`, `stdout` or a file path".into()),
            "off" => Ok(Self::Off),
            "stdout" | "-" => Ok(Self::Stdout),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

/// The access log file, appended to (and created when missing).
fn open_access_log(path: &Path) -> std::io::Result<Box<dyn Write + Send>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    Ok(Box::new(file))
}

/// Writes one access log line (JSON, keys in alphabetical order, the order the lines always had)
/// into `buf`: the keys are literals and only the values go through serde_json.
fn write_access_line(buf: &mut Vec<u8>, record: &RequestRecord) -> serde_json::Result<()> {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    buf.extend_from_slice(b"{\"bytes\":");
    serde_json::to_writer(&mut *buf, &record.bytes_out)?;
    buf.extend_from_slice(b",\"duration_ms\":");
    serde_json::to_writer(&mut *buf, &ms(record.duration))?;
    buf.extend_from_slice(b",\"host\":");
    serde_json::to_writer(&mut *buf, &*record.host)?;
    buf.extend_from_slice(b",\"instance\":");
    serde_json::to_writer(&mut *buf, &record.instance.as_deref())?;
    buf.extend_from_slice(b",\"method\":");
    serde_json::to_writer(&mut *buf, record.method.as_str())?;
    buf.extend_from_slice(b",\"namespace\":");
    serde_json::to_writer(&mut *buf, &*record.namespace)?;
    buf.extend_from_slice(b",\"path\":");
    serde_json::to_writer(&mut *buf, record.path())?;
    buf.extend_from_slice(b",\"request_id\":");
    serde_json::to_writer(&mut *buf, record.request_id())?;
    buf.extend_from_slice(b",\"service\":");
    serde_json::to_writer(&mut *buf, &*record.service)?;
    buf.extend_from_slice(b",\"status\":");
    serde_json::to_writer(&mut *buf, &record.status)?;
    buf.extend_from_slice(b",\"time_ms\":");
    serde_json::to_writer(&mut *buf, &record.at_ms)?;
    buf.extend_from_slice(b",\"upstream_ms\":");
    serde_json::to_writer(&mut *buf, &record.upstream.map(ms))?;
    buf.extend_from_slice(b",\"version\":");
    serde_json::to_writer(&mut *buf, &*record.version)?;
    buf.extend_from_slice(b"}\n");
    Ok(())
}

/// One version's request metrics, resolved once so a request costs no label allocation or
/// family lookup, and its metered requests of the current minute, folded into the meter when
/// the minute changes or the metering loop samples.
struct VersionHot {
    duration: Histogram,
    egress: Counter,
    /// `requests` by status; a version sees few distinct statuses.
    by_status: Vec<(u16, Counter)>,
    key: UsageKey,
    pending: Option<PendingUsage>,
    /// Closed minutes the request path could not fold in because the metering pass held the
    /// meter; that pass (or the next) takes them, so a request never waits on the meter.
    carried: Vec<PendingUsage>,
}

/// Requests of one version within one minute, not yet in the meter.
#[derive(Clone, Copy)]
struct PendingUsage {
    minute: u64,
    at_ms: u64,
    requests: u64,
    egress: u64,
    ingress: u64,
}

impl PendingUsage {
    fn starting(minute: u64, at_ms: u64) -> Self {
        Self {
            minute,
            at_ms,
            requests: 0,
            egress: 0,
            ingress: 0,
        }
    }

    fn add_to(self, meter: &mut Meter, key: &UsageKey) {
        meter.add_requests(key, self.at_ms, self.requests, self.egress, self.ingress);
    }
}

/// Per-version hot entries by namespace, service and version (nested, so a lookup borrows the
/// record's strings instead of building a key).
/// Per version, keyed by (namespace, service, version): one hashed lookup per request.
type HotMap = HashMap<(Arc<str>, Arc<str>, Arc<str>), VersionHot, foldhash::fast::RandomState>;

/// Metrics families, the meter and the access log, shared by the gateway hook, the reconciler,
/// the metering loop and the API.
pub struct Telemetry {
    registry: Registry,
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    egress: Family<Labels, Counter>,
    cold_starts: Family<Labels, Counter>,
    cold_start_seconds: Family<Labels, Histogram>,
    instances: Family<Labels, Gauge>,
    inflight: Family<Labels, Gauge>,
    queued: Family<Labels, Gauge>,
    desired: Family<Labels, Gauge>,
    usage_cpu: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    usage_memory: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    usage_instance: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    usage_egress: Family<Labels, Gauge>,
    usage_requests: Family<Labels, Gauge>,
    meter: Mutex<Meter>,
    usage: Arc<UsageStore>,
    /// `None` when the access log is off.
    access_log: Option<AccessLogWriter>,
    /// The request path's per-version state; lock order: `hot`, then `meter`.
    hot: Mutex<HotMap>,
}

impl Telemetry {
    pub fn new(
        usage: Arc<UsageStore>,
        meter: Meter,
        access_log: &AccessLog,
    ) -> anyhow::Result<Self> {
        let mut registry = Registry::with_prefix("nimbus");
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "requests",
            "Requests the gateway answered, by service, version and status",
            requests.clone(),
        );
        let duration =
            Family::<Labels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "request_duration_seconds",
            "Arrival to the end of the response body",
            duration.clone(),
        );
        let egress = Family::<Labels, Counter>::default();
        registry.register(
            "response_bytes",
            "Response body bytes sent to clients (egress)",
            egress.clone(),
        );
        let cold_starts = Family::<Labels, Counter>::default();
        registry.register(
            "cold_starts",
            "Instances started while requests were held for a version with none ready",
            cold_starts.clone(),
        );
        let cold_start_seconds =
            Family::<Labels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "cold_start_seconds",
            "Spawn to ready of cold starts",
            cold_start_seconds.clone(),
        );
        let instances = Family::<Labels, Gauge>::default();
        registry.register("instances", "Instances by state", instances.clone());
        let inflight = Family::<Labels, Gauge>::default();
        registry.register("inflight_requests", "Requests in flight", inflight.clone());
        let queued = Family::<Labels, Gauge>::default();
        registry.register(
            "queued_requests",
            "Requests waiting for a free instance slot (queue depth)",
            queued.clone(),
        );
        let desired = Family::<Labels, Gauge>::default();
        registry.register(
            "desired_instances",
            "Instances the autoscaler wants",
            desired.clone(),
        );
        let usage_cpu = Family::default();
        registry.register(
            "usage_cpu_seconds",
            "Metered CPU time (last 30 days)",
            usage_cpu.clone(),
        );
        let usage_memory = Family::default();
        registry.register(
            "usage_memory_used_gb_seconds",
            "Metered resident memory x time (last 30 days)",
            usage_memory.clone(),
        );
        let usage_instance = Family::default();
        registry.register(
            "usage_instance_seconds",
            "Metered instance running time (last 30 days)",
            usage_instance.clone(),
        );
        let usage_egress = Family::<Labels, Gauge>::default();
        registry.register(
            "usage_egress_bytes",
            "Metered egress bytes (last 30 days)",
            usage_egress.clone(),
        );
        let usage_requests = Family::<Labels, Gauge>::default();
        registry.register(
            "usage_requests",
            "Metered requests (last 30 days)",
            usage_requests.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped_lines",
            "Access log lines dropped because the log's destination fell behind",
            access_log_dropped.clone(),
        );
        let access_log = match access_log {
            AccessLog::Off => None,
            AccessLog::Stdout => Some(AccessLogWriter::start(
                Box::new(std::io::stdout()),
                None,
                access_log_dropped,
            )),
            AccessLog::File(path) => {
                let sink = open_access_log(path).map_err(|e| {
                    anyhow::anyhow!("cannot open the access log {}: {e}", path.display())
                })?;
                let path = path.clone();
                let reopen: Reopen = Box::new(move || open_access_log(&path));
                Some(AccessLogWriter::start(
                    sink,
                    Some(reopen),
                    access_log_dropped,
                ))
            }
        }
        .transpose()
        .map_err(|e| anyhow::anyhow!("cannot start the access log's writer: {e}"))?;
        Ok(Self {
            registry,
            requests,
            duration,
            egress,
            cold_starts,
            cold_start_seconds,
            instances,
            inflight,
            queued,
            desired,
            usage_cpu,
            usage_memory,
            usage_instance,
            usage_egress,
            usage_requests,
            meter: Mutex::new(meter),
            usage,
            access_log,
            hot: Mutex::new(HotMap::default()),
        })
    }

    fn meter(&self) -> MutexGuard<'_, Meter> {
        self.meter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A cold start became ready after `took` (spawn → ready).
    pub fn cold_start(&self, namespace: &str, service: &str, version: &str, took: Duration) {
        let labels = version_labels(namespace, service, version);
        self.cold_starts.get_or_create(&labels).inc();
        self.cold_start_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// One function invocation: billed as its duration (rounded up to 1 ms) × memory size.
    pub fn function_invoked(
        &self,
        namespace: &str,
        function: &str,
        version: &str,
        took: Duration,
        memory_mb: u64,
    ) {
        let key = UsageKey::new(namespace, function, version);
        self.meter().add_function(&key, unix_ms(), took, memory_mb);
    }

    /// The Prometheus text exposition, with gauges refreshed from `status` and the usage tables.
    pub fn render(&self, status: &RuntimeStatus) -> String {
        self.instances.clear();
        self.inflight.clear();
        self.queued.clear();
        self.desired.clear();
        let mut by_state: BTreeMap<Labels, i64> = BTreeMap::new();
        for v in &status.versions {
            let labels = version_labels(&v.namespace, &v.service, &v.version);
            for state in ["starting", "ready", "draining"] {
                let mut with_state = labels.clone();
                with_state.push(("state".into(), state.into()));
                by_state.insert(with_state, 0);
            }
            // Every version has its cold-start series, at 0 until its first cold start.
            drop(self.cold_starts.get_or_create(&labels));
            drop(self.cold_start_seconds.get_or_create(&labels));
            self.inflight
                .get_or_create(&labels)
                .set(i64::from(v.inflight));
            self.queued.get_or_create(&labels).set(i64::from(v.queued));
            self.desired
                .get_or_create(&labels)
                .set(i64::from(v.desired_instances));
        }
        for i in &status.instances {
            let state = match i.state {
                InstanceState::Starting => "starting",
                InstanceState::Ready => "ready",
                InstanceState::Draining => "draining",
                InstanceState::Crashed => "crashed",
            };
            let mut labels = version_labels(&i.namespace, &i.service, &i.version);
            labels.push(("state".into(), state.into()));
            *by_state.entry(labels).or_default() += 1;
        }
        for (labels, count) in by_state {
            self.instances.get_or_create(&labels).set(count);
        }
        let since = minute_now().saturating_sub(30 * 24 * 60);
        let filter = UsageFilter {
            from_minute: since,
            ..UsageFilter::default()
        };
        match self.usage.usage_by(&filter, GroupBy::Version) {
            Ok(groups) => {
                for g in groups {
                    let labels = version_labels(
                        g.namespace.as_deref().unwrap_or(""),
                        g.service.as_deref().unwrap_or(""),
                        g.version.as_deref().unwrap_or(""),
                    );
                    self.usage_cpu
                        .get_or_create(&labels)
                        .set(g.usage.cpu_seconds());
                    self.usage_memory
                        .get_or_create(&labels)
                        .set(g.usage.memory_used_gb_seconds());
                    self.usage_instance
                        .get_or_create(&labels)
                        .set(g.usage.instance_ms as f64 / 1000.0);
                    self.usage_egress
                        .get_or_create(&labels)
                        .set(i64::try_from(g.usage.egress_bytes).unwrap_or(i64::MAX));
                    self.usage_requests
                        .get_or_create(&labels)
                        .set(i64::try_from(g.usage.requests).unwrap_or(i64::MAX));
                }
            }
            Err(error) => warn!(%error, "Cannot read usage for /metrics."),
        }
        let mut text = String::new();
        if let Err(error) = encode(&mut text, &self.registry) {
            warn!(%error, "Cannot encode metrics.");
        }
        text
    }

    fn log_access(&self, record: &RequestRecord) {
        if let Some(log) = &self.access_log {
            log.append(|buf| write_access_line(buf, record).is_ok());
        }
    }

    /// Opens the access log file afresh (SIGHUP, after logrotate moved it); lines already
    /// logged go to the old file first. False, and nothing done, for `stdout` or `off`.
    pub fn reopen_access_log(&self) -> bool {
        self.access_log
            .as_ref()
            .is_some_and(AccessLogWriter::reopen)
    }

    /// Writes the access log's last lines and stops its writer (at shutdown, once the gateway
    /// has drained).
    pub fn close_access_log(&self) {
        if let Some(log) = &self.access_log {
            if !log.close(Duration::from_secs(5)) {
                warn!("The access log's destination did not take its last lines in time.");
            }
        }
    }

    /// Moves the requests counted on the request path into the meter.
    fn drain_pending_usage(&self) {
        let mut pending: Vec<(UsageKey, PendingUsage)> = Vec::new();
        {
            let mut hot = self.hot.lock().unwrap_or_else(PoisonError::into_inner);
            for v in hot.values_mut() {
                let taken = v.carried.drain(..).chain(v.pending.take());
                pending.extend(taken.map(|p| (v.key.clone(), p)));
            }
        }
        if pending.is_empty() {
            return;
        }
        let mut meter = self.meter();
        for (key, p) in pending {
            p.add_to(&mut meter, &key);
        }
    }

    /// The request metrics of one version, created on its first request. Keyed by the record's
    /// shared names (`Arc` clones), so only a version's first request allocates.
    fn version_hot<'a>(&self, hot: &'a mut HotMap, record: &RequestRecord) -> &'a mut VersionHot {
        let key = (
            Arc::clone(&record.namespace),
            Arc::clone(&record.service),
            Arc::clone(&record.version),
        );
        hot.entry(key).or_insert_with_key(|(ns, service, version)| {
            let labels = version_labels(ns, service, version);
            VersionHot {
                duration: self.duration.get_or_create(&labels).clone(),
                egress: self.egress.get_or_create(&labels).clone(),
                by_status: Vec::new(),
                key: UsageKey::new(ns, service, version),
                pending: None,
                carried: Vec::new(),
            }
        })
    }

    /// One sampling pass over the running instances, then a flush of the meter into the store.
    /// Blocking (reads /proc, writes SQLite): run it on a blocking thread.
    pub fn sample(&self, status: &RuntimeStatus, memory_limit_mib: impl Fn(&UsageKey) -> u64) {
        let snapshot = match ProcSnapshot::read() {
            Ok(snapshot) => Some(snapshot),
            Err(error) => {
                warn!(%error, "Cannot read /proc for metering.");
                None
            }
        };
        let now = unix_ms();
        self.drain_pending_usage();
        let mut meter = self.meter();
        let live: std::collections::HashSet<&str> =
            status.instances.iter().map(|i| i.id.as_str()).collect();
        for id in meter.tracked_instances() {
            if !live.contains(id.as_str()) {
                meter.forget(&id);
            }
        }
        if let Some(snapshot) = snapshot {
            for i in &status.instances {
                let Some(pid) = i.pid else { continue };
                let Ok(pgid) = i32::try_from(pid) else {
                    continue;
                };
                let group = snapshot.process_group(pgid);
                if group.pids.is_empty() {
                    continue;
                }
                let key = UsageKey::new(&i.namespace, &i.service, &i.version);
                let memory_limit_mib = memory_limit_mib(&key);
                meter.record(Sample {
                    instance: i.id.clone(),
                    key,
                    incarnation: format!("{pid}@{}", i.started_at),
                    at_ms: now,
                    cpu_micros: group.cpu_micros,
                    rss_bytes: group.rss_bytes,
                    memory_limit_mib,
                });
            }
        }
        let flush = meter.flush(now);
        drop(meter);
        if let Err(error) = self.usage.commit(&flush) {
            // The flush holds cumulative minute totals: the next one rewrites the same rows.
            warn!(%error, "Cannot write usage; the next flush retries.");
        }
    }

    /// Final flush at shutdown.
    pub fn flush(&self) {
        self.drain_pending_usage();
        let flush = self.meter().flush(unix_ms());
        if let Err(error) = self.usage.commit(&flush) {
            warn!(%error, "Cannot write usage at shutdown.");
        }
    }
}

impl RequestObserver for Telemetry {
    fn finished(&self, record: RequestRecord) {
        {
            let mut hot = self.hot.lock().unwrap_or_else(PoisonError::into_inner);
            let version = self.version_hot(&mut hot, &record);
            version.duration.observe(record.duration.as_secs_f64());
            version.egress.inc_by(record.bytes_out);
            match version
                .by_status
                .iter()
                .find(|(status, _)| *status == record.status)
            {
                Some((_, counter)) => {
                    counter.inc();
                }
                None => {
                    let mut labels =
                        version_labels(&record.namespace, &record.service, &record.version);
                    labels.push(("status".into(), record.status.to_string()));
                    let counter = self.requests.get_or_create(&labels).clone();
                    counter.inc();
                    version.by_status.push((record.status, counter));
                }
            }
            if !record.service.is_empty() {
                // Metered per minute: count here, fold into the meter when the minute turns.
                let minute = nimbus_metering::minute_of(record.at_ms);
                let pending = version
                    .pending
                    .get_or_insert_with(|| PendingUsage::starting(minute, record.at_ms));
                if pending.minute != minute {
                    let closed =
                        std::mem::replace(pending, PendingUsage::starting(minute, record.at_ms));
                    // `hot` before `meter` is the lock order, and try_lock never waits.
                    match self.meter.try_lock() {
                        Ok(mut meter) => closed.add_to(&mut meter, &version.key),
                        Err(TryLockError::Poisoned(poisoned)) => {
                            closed.add_to(&mut poisoned.into_inner(), &version.key)
                        }
                        Err(TryLockError::WouldBlock) => version.carried.push(closed),
                    }
                }
                pending.requests += 1;
                pending.egress += record.bytes_out;
                pending.ingress += record.bytes_in;
            }
        }
        self.log_access(&record);
    }
}

/// Runs the metering loop every `every` until shutdown, then flushes once more.
pub async fn run_metering(
    telemetry: Arc<Telemetry>,
    mut status: watch::Receiver<Arc<RuntimeStatus>>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let current = status.borrow_and_update().clone();
                let t = telemetry.clone();
                let _ = tokio::task::spawn_blocking(move || t.sample(&current, |_| 0)).await;
            }
            _ = shutdown.changed() => break,
        }
    }
    let current = status.borrow().clone();
    let t = telemetry.clone();
    let _ = tokio::task::spawn_blocking(move || t.sample(&current, |_| 0)).await;
    let _ = tokio::task::spawn_blocking(move || telemetry.flush()).await;
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn minute_now() -> u64 {
    nimbus_metering::minute_of(unix_ms())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_targets() {
        let cases = [
            ("off", Ok(AccessLog::Off)),
            ("stdout", Ok(AccessLog::Stdout)),
            ("-", Ok(AccessLog::Stdout)),
            (
                "/var/log/a.json",
                Ok(AccessLog::File("/var/log/a.json".into())),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<AccessLog>(), expected, "{text}");
        }
        assert!("".parse::<AccessLog>().is_err());
    }

    /// A request as the gateway reports it; tests override fields.
    fn served() -> RequestRecord {
        RequestRecord {
            at_ms: 1_764_000_000_123,
            host: "hello--default.nimbus.localhost".into(),
            method: axum::http::Method::POST,
            uri: "/a\"quoted\"\\path?q=1".parse().unwrap(),
            namespace: Arc::from("default"),
            service: Arc::from("hello"),
            version: Arc::from("v1"),
            instance: Some(Arc::from("hello-v1-a")),
            status: 201,
            bytes_out: 42,
            bytes_in: 7,
            duration: Duration::from_micros(1500),
            upstream: Some(Duration::from_micros(1200)),
            request_id: axum::http::HeaderValue::from_static("abc"),
        }
    }

    #[test]
    fn access_line_is_the_json_object_with_sorted_keys() {
        // (record, what serde_json makes of the same fields)
        for r in [
            served(),
            RequestRecord {
                instance: None, // no instance answered
                upstream: None,
                ..served()
            },
        ] {
            let mut buf = Vec::new();
            write_access_line(&mut buf, &r).unwrap();
            let want = serde_json::json!({
                "time_ms": r.at_ms, "host": &*r.host, "method": "POST", "path": "/a\"quoted\"\\path",
                "service": "hello", "namespace": "default", "version": "v1",
                "instance": r.instance.as_deref(), "status": 201, "bytes": 42,
                "duration_ms": 1.5, "upstream_ms": r.upstream.map(|u| u.as_secs_f64() * 1000.0),
                "request_id": "abc",
            });
            assert_eq!(String::from_utf8(buf).unwrap(), format!("{want}\n"));
        }
    }

    #[test]
    fn a_minute_closing_while_the_metering_pass_holds_the_meter_waits_for_nothing_and_is_kept() {
        let dir = std::env::temp_dir().join(format!("nimbus-telemetry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let usage = Arc::new(UsageStore::open(&dir.join("usage.db")).unwrap());
        let telemetry = Telemetry::new(usage, Meter::new(), &AccessLog::Off).unwrap();
        let minute = |m: u64| m * 60_000 + 1;

        let metering_pass = telemetry.meter();
        telemetry.finished(RequestRecord {
            at_ms: minute(10),
            ..served()
        });
        // Closes minute 10. A blocking lock here would deadlock this thread, which holds it.
        telemetry.finished(RequestRecord {
            at_ms: minute(11),
            bytes_out: 5,
            ..served()
        });
        drop(metering_pass);

        telemetry.drain_pending_usage();
        let rows = telemetry.meter().flush(minute(12)).rows;
        let got: Vec<(u64, u64, u64)> = rows
            .iter()
            .map(|r| (r.minute, r.usage.requests, r.usage.egress_bytes))
            .collect();
        assert_eq!(got, [(10, 1, 42), (11, 1, 5)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
