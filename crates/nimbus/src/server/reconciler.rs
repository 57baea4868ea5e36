//! The reconciler: the one task that owns running instances. It converges them to the store's
//! desired state on every change, on a tick and at start-up, rebuilds the gateway's route table
//! and publishes a [`RuntimeStatus`] for the API.
//!
//! Per instance it spawns one watcher task that probes readiness and waits for exit; watchers and
//! drainers report back over a channel, so all state changes happen here, in one place, in order.
//!
//! It also runs the autoscaler loop: every [`SAMPLE_EVERY`] it reads each version's demand from
//! its gateway gate, every scaling tick it asks the decider for each version's instance count,
//! and when a gate holds a request for a version with no instance (the activator's poke) it wants
//! one at once instead of waiting for the tick.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nimbus_api::ChangeTickets;
use nimbus_gateway::outlier::{ActiveCheck, HealthState};
use nimbus_gateway::{
    Endpoint, GateLimits, Gateway, HostRoute, RouteTable, ServicePolicy, ServiceRoute, VersionGate,
    VersionRoute,
};
use nimbus_model::domains::{service_host, version_host};
use nimbus_model::status::{
    InstanceState, InstanceStatus, RuntimeStatus, VersionState, VersionStatus,
};
use nimbus_model::VersionSpec;
use nimbus_runtime::{Driver, ExitStatus, InstanceInfo};
use nimbus_store::{DesiredState, Store, VersionRecord};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{debug, info, warn};

use super::plan::{
    crash_backoff_ms, instance_spec, next_pass_at, plan, Action, LiveInstance, VersionKey,
    FAILED_AFTER,
};
use super::scaling::{schedules_of, Change, LiveCount, Scaler, ScalingTimings, SAMPLE_EVERY};
use super::telemetry::Telemetry;

/// SIGTERM → SIGKILL grace when stopping an instance.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Longest a draining instance waits for its in-flight requests.
const MAX_DRAIN: Duration = Duration::from_secs(300);
/// Lines of a failing instance's log shown with a `failed` version.
const FAILURE_LOG_LINES: usize = 10;
/// A starting instance's listening ports are first looked at after this (most apps are ready
/// sooner, and a slow one may open its port late)...
const HINT_AFTER: Duration = Duration::from_secs(3);
/// ...and then this often.
const HINT_EVERY: Duration = Duration::from_secs(2);

/// What watcher and drainer tasks report.
#[derive(Debug)]
enum Report {
    Ready {
        id: String,
    },
    NeverReady {
        id: String,
        error: String,
    },
    /// What may hold a starting instance up (it listens on another port), or `None` once not.
    StartupHint {
        id: String,
        hint: Option<String>,
    },
    Exited {
        id: String,
        status: String,
    },
    Stopped {
        id: String,
    },
    /// Active health checks moved the instance out of (or back into) rotation.
    Health {
        id: String,
        healthy: bool,
        detail: String,
    },
}

/// The services' active health checks, by (namespace, service), for the watchers.
type ActiveChecks = Arc<HashMap<(String, String), ActiveCheck>>;

struct Instance {
    info: InstanceInfo,
    key: VersionKey,
    state: InstanceState,
    endpoint: Arc<Endpoint>,
    spawned: Instant,
    /// Started while requests were held for a version with no ready instance.
    cold: bool,
    /// While starting: what may hold it up (see [`Report::StartupHint`]).
    startup_hint: Option<String>,
    /// Failed its active health checks: out of the routes while it stays `Ready`.
    unhealthy: bool,
}

/// Cold-start figures per version since the server started.
#[derive(Default)]
struct ColdStats {
    count: u64,
    last_ms: Option<u64>,
}

/// Crash-loop bookkeeping per version.
#[derive(Default)]
struct VersionHealth {
    consecutive_failures: u32,
    hold_until: Option<Instant>,
    failure: Option<String>,
    last_log_lines: Vec<String>,
}

/// Each published version status's gate and the gate's change marker when its figures were
/// read, in the status's order.
type StatusGates = Vec<Option<(Arc<VersionGate>, u64)>>;

/// Ready and running (starting or ready) instances of every version, in one pass over the
/// instances (per-version scans are O(versions × instances), which a table of thousands of
/// versions cannot afford every tick).
fn instance_counts(instances: &HashMap<String, Instance>) -> HashMap<&VersionKey, (usize, u32)> {
    let mut counts: HashMap<&VersionKey, (usize, u32)> = HashMap::new();
    for i in instances.values() {
        let entry = counts.entry(&i.key).or_default();
        if i.state == InstanceState::Ready {
            entry.0 += 1;
        }
        if matches!(i.state, InstanceState::Starting | InstanceState::Ready) {
            entry.1 += 1;
        }
    }
    counts
}

pub struct Reconciler {
    store: Arc<Store>,
    driver: Arc<dyn Driver>,
    gateway: Arc<Gateway>,
    base_domain: String,
    /// How long a new instance gets to answer its health path (`--startup-timeout`).
    startup_timeout: Duration,
    instances: HashMap<String, Instance>,
    health: HashMap<VersionKey, VersionHealth>,
    status_tx: watch::Sender<Arc<RuntimeStatus>>,
    /// Each published version status's gate and that gate's change marker when its figures
    /// were read, in the status's order: [`Reconciler::refresh_live_status`] rereads only the
    /// gates that changed.
    status_gates: StatusGates,
    reports_tx: mpsc::UnboundedSender<Report>,
    reports_rx: mpsc::UnboundedReceiver<Report>,
    /// The last desired state read, so reports can be handled without re-reading the store.
    desired: DesiredState,
    scaler: Scaler,
    /// One admission gate per version for its whole life, shared with every route table.
    gates: HashMap<VersionKey, Arc<VersionGate>>,
    /// Versions whose gate holds a request while no instance is ready (the activator).
    cold_tx: mpsc::UnboundedSender<VersionKey>,
    cold_rx: mpsc::UnboundedReceiver<VersionKey>,
    cold: HashMap<VersionKey, ColdStats>,
    /// Each service's compiled gateway policy, kept while its spec is unchanged so rate-limit
    /// buckets survive table rebuilds.
    policies: HashMap<(String, String), Arc<ServicePolicy>>,
    /// Active health checks per service, watched by every instance's watcher.
    checks_tx: watch::Sender<ActiveChecks>,
    /// The certificates last handed to the gateway's TLS resolver (rebuilt when they change).
    certificates: Vec<nimbus_store::CertificateRecord>,
    /// Cold starts that became ready since the last publish: (version, instance, spawn → ready).
    cold_ready: Vec<(VersionKey, String, Duration)>,
    /// Set after the first reconcile: versions seen later are new deploys.
    booted: bool,
    /// The store changed since `desired` was read (or a read failed).
    store_changed: bool,
    /// When the last route publish started and how long it took: the part of a pass that grows
    /// with the table (waits on the driver do not hold the thread), which paces passes owed to
    /// reports.
    last_publish: Option<(Instant, Duration)>,
    /// Reports were handled and their pass waits for [`next_pass_at`].
    pass_owed: bool,
    telemetry: Arc<Telemetry>,
    /// Instances to replace at once (a function invocation timed out on them).
    recycle_tx: mpsc::UnboundedSender<Recycle>,
    recycle_rx: mpsc::UnboundedReceiver<Recycle>,
}

/// An instance to stop now, its work abandoned: a function instance whose invocation timed out
/// or went over its memory. SIGKILL follows SIGTERM after `grace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recycle {
    pub instance: String,
    pub grace: Duration,
}

/// Runs a ready instance's active health checks for as long as its service has them (waiting
/// while it has none) and reports each change of its health. Never returns: the watcher stops
/// it when the instance exits.
async fn health_checks(
    id: String,
    port: u16,
    service: (String, String),
    mut checks: watch::Receiver<ActiveChecks>,
    reports: mpsc::UnboundedSender<Report>,
) {
    let mut state = HealthState::default();
    loop {
        let check = checks.borrow_and_update().get(&service).cloned();
        let Some(check) = check else {
            if !state.healthy {
                // Checks were turned off: back in rotation.
                state = HealthState::default();
                let _ = reports.send(Report::Health {
                    id: id.clone(),
                    healthy: true,
                    detail: "checks turned off".into(),
                });
            }
            if checks.changed().await.is_err() {
                return std::future::pending().await;
            }
            continue;
        };
        tokio::select! {
            () = tokio::time::sleep(check.interval) => {}
            changed = checks.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
                continue;
            }
        }
        let timeout = check.interval.min(Duration::from_secs(2));
        let result = nimbus_runtime::check_once(port, &check.path, timeout).await;
        let passed = matches!(result, Ok(status) if status < 500);
        if let Some(healthy) = state.record(&check, passed) {
            let detail = match result {
                Ok(status) => format!("HTTP {status} from {}", check.path),
                Err(error) => format!("{}: {error}", check.path),
            };
            let _ = reports.send(Report::Health {
                id: id.clone(),
                healthy,
                detail,
            });
        }
    }
}

/// While an instance starts: from [`HINT_AFTER`] on, every [`HINT_EVERY`], reports whether its
/// process group (`pgid`, when the driver has one) listens on other ports but not on `port`, so
/// the deploy can say so instead of waiting out the startup timeout in silence. Never ends.
async fn startup_hints(
    id: String,
    pgid: Option<i32>,
    port: u16,
    reports: mpsc::UnboundedSender<Report>,
) {
    let Some(pgid) = pgid else {
        return std::future::pending().await;
    };
    tokio::time::sleep(HINT_AFTER).await;
    let mut last = None;
    loop {
        let listening = tokio::task::spawn_blocking(move || {
            nimbus_runtime::listening::group_listening_ports(pgid)
        })
        .await
        .unwrap_or_default();
        let hint = nimbus_runtime::listening::wrong_port_hint(port, &listening);
        if hint != last {
            last = hint.clone();
            let _ = reports.send(Report::StartupHint {
                id: id.clone(),
                hint,
            });
        }
        tokio::time::sleep(HINT_EVERY).await;
    }
}

fn describe_exit(status: &ExitStatus) -> String {
    match status {
        ExitStatus::Code(code) => format!("exited with code {code}"),
        ExitStatus::Signal(sig) => format!("was killed by signal {sig}"),
        ExitStatus::Unknown => "exited".to_string(),
    }
}

impl Reconciler {
    pub fn new(
        store: Arc<Store>,
        driver: Arc<dyn Driver>,
        gateway: Arc<Gateway>,
        base_domain: String,
        timings: ScalingTimings,
        startup_timeout: Duration,
        telemetry: Arc<Telemetry>,
    ) -> (Self, watch::Receiver<Arc<RuntimeStatus>>) {
        let (status_tx, status_rx) = watch::channel(Arc::new(RuntimeStatus::default()));
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let (cold_tx, cold_rx) = mpsc::unbounded_channel();
        let (recycle_tx, recycle_rx) = mpsc::unbounded_channel();
        let reconciler = Self {
            store,
            driver,
            gateway,
            base_domain,
            instances: HashMap::new(),
            health: HashMap::new(),
            status_tx,
            status_gates: Vec::new(),
            reports_tx,
            reports_rx,
            desired: DesiredState::default(),
            scaler: Scaler::new(timings),
            startup_timeout,
            gates: HashMap::new(),
            cold_tx,
            cold_rx,
            cold: HashMap::new(),
            policies: HashMap::new(),
            checks_tx: watch::channel(ActiveChecks::default()).0,
            certificates: Vec::new(),
            cold_ready: Vec::new(),
            booted: false,
            store_changed: true,
            last_publish: None,
            pass_owed: false,
            telemetry,
            recycle_tx,
            recycle_rx,
        };
        (reconciler, status_rx)
    }

    /// Where to send instances that must be replaced at once.
    pub fn recycler(&self) -> mpsc::UnboundedSender<Recycle> {
        self.recycle_tx.clone()
    }

    /// Stops an instance without draining (its in-flight work is abandoned on purpose), SIGKILL
    /// after `grace`; the next reconcile starts a replacement if one is still wanted.
    fn recycle(&mut self, id: &str, grace: Duration) {
        let Some(instance) = self.instances.get_mut(id) else {
            return;
        };
        if instance.state == InstanceState::Draining {
            return;
        }
        instance.state = InstanceState::Draining;
        self.publish();
        let driver = self.driver.clone();
        let reports = self.reports_tx.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if let Err(error) = driver.stop(&id, grace).await {
                warn!(instance = %id, %error, "Stopping an instance failed.");
            }
            let _ = reports.send(Report::Stopped { id });
        });
    }

    /// Takes over instances a previous run left alive; the next reconcile keeps those whose
    /// version still exists and stops the rest.
    pub fn adopt(&mut self, adopted: Vec<InstanceInfo>) {
        for info in adopted {
            info!(instance = %info.id, port = info.port, "Adopted a running instance.");
            let key = (
                info.namespace.clone(),
                info.service.clone(),
                info.version.clone(),
            );
            self.track(info, key);
        }
    }

    /// One full pass: read the store, start and stop instances, publish routes and status.
    pub async fn reconcile(&mut self) {
        self.store_changed = true;
        self.reconcile_known().await;
    }

    /// A pass on the desired state already read, unless something marked it stale: reports and
    /// activator pokes change only live state, and skipping the store read keeps a cold start's
    /// path short.
    async fn reconcile_known(&mut self) {
        self.pass_owed = false;
        if std::mem::take(&mut self.store_changed) {
            match self.store.snapshot() {
                Ok(desired) => self.desired = desired,
                Err(error) => {
                    self.store_changed = true;
                    warn!(%error, "Could not read desired state; keeping the last one.");
                }
            }
        }
        let now = Instant::now();
        self.sync_scaler();
        let mut wanted: BTreeMap<VersionKey, u32> = BTreeMap::new();
        let mut specs: HashMap<VersionKey, VersionSpec> = HashMap::new();
        for v in &self.desired.versions {
            let key = (v.namespace.clone(), v.service.clone(), v.name.clone());
            let count = self.scaler.desired(&key).unwrap_or(v.spec.min_instances);
            wanted.insert(key.clone(), count);
            specs.insert(key, v.spec.clone());
        }
        // Forget health of versions that no longer exist.
        self.health.retain(|key, _| wanted.contains_key(key));
        let held: Vec<VersionKey> = self
            .health
            .iter()
            .filter(|(_, h)| h.hold_until.is_some_and(|t| t > now))
            .map(|(k, _)| k.clone())
            .collect();
        let live: Vec<LiveInstance> = self
            .instances
            .values()
            .filter(|i| matches!(i.state, InstanceState::Starting | InstanceState::Ready))
            .map(|i| LiveInstance {
                id: i.info.id.clone(),
                version: i.key.clone(),
                ready: i.state == InstanceState::Ready,
                inflight: i.endpoint.inflight(),
            })
            .collect();
        let actions = plan(&wanted, &held, &live);
        let stops_first = actions.iter().any(|a| matches!(a, Action::Stop(_)));
        if stops_first {
            // Take stopping instances out of the routes before anything else happens.
            for action in &actions {
                if let Action::Stop(id) = action {
                    if let Some(instance) = self.instances.get_mut(id) {
                        instance.state = InstanceState::Draining;
                    }
                }
            }
            self.publish();
        }
        for action in actions {
            match action {
                Action::Stop(id) => self.drain_and_stop(&id),
                Action::Start(key) => {
                    if let Some(spec) = specs.get(&key) {
                        self.start(key, spec).await;
                    }
                }
            }
        }
        self.publish();
    }

    async fn start(&mut self, key: VersionKey, spec: &VersionSpec) {
        let (_, service, version) = &key;
        let id = format!(
            "{service}-{version}-{:06x}",
            rand::random::<u32>() & 0xff_ffff
        );
        let port = match spec.port {
            Some(port) => {
                // Another instance of the service holding the port would make this one die on
                // its bind, and its readiness probe reach the holder instead (a redeploy on a
                // fixed port). A port held by a process Nimbus does not run is left alone, and
                // so is one shared by *other* services: pointing versions at a server started
                // elsewhere (`--command 'exec sleep infinity' --port 5432`, as bench/gateway
                // fronts its backend with a thousand services) is a use, not a mistake Nimbus
                // can tell apart.
                let same_service = |i: &&Instance| (&i.key.0, &i.key.1) == (&key.0, &key.1);
                if let Some(holder) = self
                    .instances
                    .values()
                    .filter(same_service)
                    .find(|i| i.info.port == port)
                {
                    if holder.key == key {
                        // One instance is all a fixed port allows, and this version has it (a
                        // spec stored before deploys capped max_instances can ask for more).
                        debug!(port, version = %version, "A fixed port caps this version at one instance.");
                        return;
                    }
                    let (_, holder_service, holder_version) = &holder.key;
                    let reason = format!(
                        "port {port} is held by instance {} ({holder_service} {holder_version}): \
                         a fixed --port runs one instance at a time on this machine; leave \
                         --port out so each instance gets its own $PORT",
                        holder.info.id
                    );
                    self.record_failure(&key, reason, None, FAILED_AFTER);
                    return;
                }
                port
            }
            None => match nimbus_runtime::pick_free_port() {
                Ok(port) => port,
                Err(error) => {
                    self.record_failure(&key, format!("no free port: {error}"), None, FAILED_AFTER);
                    return;
                }
            },
        };
        let instance_spec = instance_spec(&key, id.clone(), port, spec);
        // Spawn → ready counts from here: creating a container takes most of a cold start.
        let spawned = Instant::now();
        match self.driver.start(&instance_spec).await {
            Ok(info) => {
                info!(instance = %id, port, "Started an instance.");
                let cold = self.ready_count(&key) == 0
                    && self.gates.get(&key).is_some_and(|g| g.stats().queued > 0);
                self.track(info, key);
                if let Some(instance) = self.instances.get_mut(&id) {
                    instance.cold = cold;
                    instance.spawned = spawned;
                }
            }
            Err(error) => {
                warn!(instance = %id, %error, "Could not start an instance.");
                self.record_failure(
                    &key,
                    format!("could not start: {error}"),
                    None,
                    FAILED_AFTER,
                );
            }
        }
    }

    /// Registers an instance and spawns its watcher: readiness probe, then wait for exit.
    fn track(&mut self, info: InstanceInfo, key: VersionKey) {
        let health_path = self
            .desired
            .versions
            .iter()
            .find(|v| (&v.namespace, &v.service, &v.name) == (&key.0, &key.1, &key.2))
            .map(|v| v.spec.health_path.clone())
            .unwrap_or_else(|| "/".to_string());
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, info.port));
        let endpoint = Arc::new(Endpoint::new(info.id.clone(), addr));
        let driver = self.driver.clone();
        let reports = self.reports_tx.clone();
        let id = info.id.clone();
        let port = info.port;
        let checks = self.checks_tx.subscribe();
        let service = (key.0.clone(), key.1.clone());
        let startup_timeout = self.startup_timeout;
        let pgid = info.pid.and_then(|pid| i32::try_from(pid).ok());
        tokio::spawn(async move {
            let wait_id = id.clone();
            let exit = driver.wait(&wait_id);
            tokio::pin!(exit);
            let hints = startup_hints(id.clone(), pgid, port, reports.clone());
            let ready = tokio::select! {
                () = hints => false, // never ends
                ready = nimbus_runtime::wait_ready(port, &health_path, startup_timeout) => {
                    let report = match ready {
                        Ok(took) => {
                            debug!(instance = %id, ms = took.as_millis() as u64, "Instance is ready.");
                            Report::Ready { id: id.clone() }
                        }
                        Err(error) => Report::NeverReady { id: id.clone(), error: error.to_string() },
                    };
                    let ready = matches!(report, Report::Ready { .. });
                    let _ = reports.send(report);
                    ready
                }
                status = &mut exit => {
                    let status = status.map(|s| describe_exit(&s)).unwrap_or_else(|e| e.to_string());
                    let _ = reports.send(Report::Exited { id, status });
                    return;
                }
            };
            let status = if ready {
                // Ready: active health checks (when the service has them) until it exits.
                tokio::select! {
                    status = &mut exit => status,
                    () = health_checks(id.clone(), port, service, checks, reports.clone()) => exit.await,
                }
            } else {
                exit.await
            };
            let status = status
                .map(|s| describe_exit(&s))
                .unwrap_or_else(|e| e.to_string());
            let _ = reports.send(Report::Exited { id, status });
        });
        self.instances.insert(
            info.id.clone(),
            Instance {
                info,
                key,
                state: InstanceState::Starting,
                endpoint,
                spawned: Instant::now(),
                cold: false,
                unhealthy: false,
                startup_hint: None,
            },
        );
    }

    /// Out of the routes already; wait for in-flight requests, then stop the process group.
    fn drain_and_stop(&mut self, id: &str) {
        let Some(instance) = self.instances.get_mut(id) else {
            return;
        };
        instance.state = InstanceState::Draining;
        let timeout = self
            .desired
            .versions
            .iter()
            .find(|v| {
                (&v.namespace, &v.service, &v.name)
                    == (&instance.key.0, &instance.key.1, &instance.key.2)
            })
            .map(|v| Duration::from_secs(v.spec.timeout_secs))
            .unwrap_or(MAX_DRAIN)
            .min(MAX_DRAIN);
        let endpoint = instance.endpoint.clone();
        let driver = self.driver.clone();
        let reports = self.reports_tx.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let deadline = Instant::now() + timeout;
            while endpoint.inflight() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if let Err(error) = driver.stop(&id, STOP_GRACE).await {
                warn!(instance = %id, %error, "Stopping an instance failed.");
            }
            info!(instance = %id, "Stopped an instance.");
            let _ = reports.send(Report::Stopped { id });
        });
    }

    /// Counts a failed start or a crash of `key`'s instance (restarts wait out a backoff); the
    /// version is reported failed from the `failed_after`th in a row.
    fn record_failure(
        &mut self,
        key: &VersionKey,
        reason: String,
        log: Option<Vec<String>>,
        failed_after: u32,
    ) {
        let health = self.health.entry(key.clone()).or_default();
        health.consecutive_failures += 1;
        let wait = Duration::from_millis(crash_backoff_ms(health.consecutive_failures));
        health.hold_until = Some(Instant::now() + wait);
        if let Some(lines) = log {
            health.last_log_lines = lines;
        }
        if health.consecutive_failures >= failed_after {
            let reason = match health.consecutive_failures {
                1 => reason,
                n => format!(
                    "{reason} ({n} times in a row; retrying every {}s)",
                    wait.as_secs().max(1)
                ),
            };
            if health.failure.as_deref() != Some(reason.as_str())
                && health.consecutive_failures == failed_after
            {
                let _ = self.store.record_event(
                    &key.0,
                    &key.1,
                    "version_failed",
                    &format!("version {} failed: {reason}", key.2),
                );
            }
            health.failure = Some(reason);
        }
    }

    /// Applies one report from a watcher or drainer.
    fn handle(&mut self, report: Report) {
        match report {
            Report::Ready { id } => {
                let Some(instance) = self.instances.get_mut(&id) else {
                    return;
                };
                if instance.state != InstanceState::Starting {
                    return;
                }
                instance.state = InstanceState::Ready;
                let key = instance.key.clone();
                if instance.cold {
                    let took = instance.spawned.elapsed();
                    let stats = self.cold.entry(key.clone()).or_default();
                    stats.count += 1;
                    stats.last_ms = Some(took.as_millis() as u64);
                    self.cold_ready.push((key.clone(), id.clone(), took));
                }
                self.health.insert(key.clone(), VersionHealth::default());
                let pending = self.desired.versions.iter().any(|v| {
                    v.promote_pending
                        && (&v.namespace, &v.service, &v.name) == (&key.0, &key.1, &key.2)
                });
                if pending {
                    // The deploy asked for all traffic once ready; the next reconcile re-reads it.
                    match self.store.promote(&key.0, &key.1, &key.2) {
                        Ok(true) => {
                            self.store_changed = true;
                            info!(service = %key.1, version = %key.2, "Version is ready and takes all traffic.")
                        }
                        Ok(false) => {}
                        Err(error) => warn!(%error, "Could not move traffic to a ready version."),
                    }
                }
            }
            Report::NeverReady { id, error } => {
                let Some(instance) = self.instances.get(&id) else {
                    return;
                };
                if instance.state != InstanceState::Starting {
                    return;
                }
                let key = instance.key.clone();
                let log = self.log_tail(&id);
                warn!(instance = %id, %error, "Instance never became ready.");
                let port = instance.info.port;
                let reason = match &instance.startup_hint {
                    Some(hint) => format!("did not become ready: {error}; {hint}"),
                    None => format!(
                        "did not become ready: {error}; the app must serve HTTP on \
                         127.0.0.1:$PORT (PORT={port} here); `nimbus server --startup-timeout` \
                         sets how long it may take"
                    ),
                };
                // It had the whole startup window: one is a failed deploy (Cloud Run's startup
                // probe fails a revision the same way), not a crash loop to count to three.
                self.record_failure(&key, reason, log, 1);
                self.drain_and_stop(&id);
            }
            Report::StartupHint { id, hint } => {
                if let Some(instance) = self.instances.get_mut(&id) {
                    if instance.startup_hint != hint {
                        if let Some(hint) = &hint {
                            info!(instance = %id, %hint, "Instance is not ready yet.");
                        }
                        instance.startup_hint = hint;
                    }
                }
            }
            Report::Exited { id, status } => {
                let Some(instance) = self.instances.get(&id) else {
                    return;
                };
                if instance.state == InstanceState::Draining {
                    return; // We stopped it; the drainer reports `Stopped`.
                }
                let key = instance.key.clone();
                let log = self.log_tail(&id);
                warn!(instance = %id, %status, "Instance exited unexpectedly.");
                let _ = self.store.record_event(
                    &key.0,
                    &key.1,
                    "crash",
                    &format!("instance {id} of {} {status}", key.2),
                );
                self.record_failure(&key, format!("instance {status}"), log, FAILED_AFTER);
                // Reap anything left in its process group, then forget it.
                self.drain_and_stop(&id);
            }
            Report::Stopped { id } => {
                self.instances.remove(&id);
            }
            Report::Health {
                id,
                healthy,
                detail,
            } => {
                let Some(instance) = self.instances.get_mut(&id) else {
                    return;
                };
                if instance.unhealthy != healthy {
                    return; // no change
                }
                instance.unhealthy = !healthy;
                let key = instance.key.clone();
                let message = if healthy {
                    format!(
                        "instance {id} of {} passes its health checks again; back in rotation",
                        key.2
                    )
                } else {
                    format!(
                        "instance {id} of {} fails its health checks ({detail}); out of rotation",
                        key.2
                    )
                };
                warn!(service = %key.1, "{message}");
                let _ = self.store.record_event(&key.0, &key.1, "health", &message);
            }
        }
    }

    fn log_tail(&self, id: &str) -> Option<Vec<String>> {
        self.driver
            .log_path(id)
            .map(|path| nimbus_runtime::tail_lines(&path, FAILURE_LOG_LINES))
    }

    /// Rebuilds the route table from the desired state and ready instances, updates each
    /// version's gate, and publishes the status.
    fn publish(&mut self) {
        let started = Instant::now();
        let mut ready: HashMap<&VersionKey, Vec<Arc<Endpoint>>> = HashMap::new();
        for instance in self.instances.values() {
            if instance.state == InstanceState::Ready && !instance.unhealthy {
                ready
                    .entry(&instance.key)
                    .or_default()
                    .push(instance.endpoint.clone());
            }
        }
        // Each service's versions, in one pass: filtering the whole list per service made a
        // publish O(services × versions), a tenth of a second with 1,000 services of 10.
        let mut versions_of: HashMap<(&str, &str), Vec<&VersionRecord>> = HashMap::new();
        for v in &self.desired.versions {
            versions_of
                .entry((&v.namespace, &v.service))
                .or_default()
                .push(v);
        }
        let mut gates = HashMap::new();
        let mut table = RouteTable::default();
        let mut policies = HashMap::new();
        for service in &self.desired.services {
            let service_key = (service.namespace.clone(), service.name.clone());
            let policy = self.gateway_policy(&service_key);
            policies.insert(service_key, policy.clone());
            let mut versions = HashMap::new();
            let service_versions =
                versions_of.get(&(service.namespace.as_str(), service.name.as_str()));
            for v in service_versions.into_iter().flatten() {
                let key = (v.namespace.clone(), v.service.clone(), v.name.clone());
                let mut endpoints = ready.get(&key).cloned().unwrap_or_default();
                endpoints.sort_by(|a, b| a.instance.cmp(&b.instance));
                let gate = self.gates.remove(&key).unwrap_or_else(|| {
                    let cold_tx = self.cold_tx.clone();
                    let poke = key.clone();
                    VersionGate::new(
                        v.namespace.clone(),
                        v.service.clone(),
                        v.name.clone(),
                        Arc::new(move || {
                            let _ = cold_tx.send(poke.clone());
                        }),
                        self.scaler.demand_hook(&key),
                    )
                });
                // The queue absorbs a burst while the version scales up to its max, so its
                // default depth is 10x the capacity the version can reach.
                let instances = (endpoints.len() as u32).max(v.spec.max_instances);
                gate.update(
                    endpoints,
                    GateLimits {
                        concurrency: v.spec.concurrency,
                        queue_depth: v.spec.effective_queue_depth(instances),
                        timeout: Duration::from_secs(v.spec.timeout_secs),
                    },
                );
                gate.set_algorithm(policy.algorithm.as_ref());
                gate.set_failure(self.health.get(&key).and_then(|h| h.failure.as_deref()));
                self.scaler.attach_gate(&key, &gate);
                versions.insert(v.name.clone(), Arc::new(VersionRoute::new(gate.clone())));
                gates.insert(key, gate);
            }
            let route = Arc::new(ServiceRoute {
                namespace: service.namespace.clone(),
                name: service.name.clone(),
                policy: service.traffic.clone(),
                versions,
                gateway: policy,
            });
            table.insert(
                service_host(&service.name, &service.namespace, &self.base_domain),
                HostRoute::Service(route.clone()),
            );
            for domain in &service.domains {
                table.insert(domain.clone(), HostRoute::Service(route.clone()));
            }
            for version in &service.versions {
                table.insert(
                    version_host(
                        version,
                        &service.name,
                        &service.namespace,
                        &self.base_domain,
                    ),
                    HostRoute::Version {
                        service: route.clone(),
                        version: version.clone(),
                    },
                );
            }
        }
        // Gates of deleted versions go with their last table; their held requests time out.
        self.gates = gates;
        let checks: HashMap<(String, String), ActiveCheck> = policies
            .iter()
            .filter_map(|(service, p)| p.active.clone().map(|c| (service.clone(), c)))
            .collect();
        self.checks_tx.send_if_modified(|current| {
            let changed = **current != checks;
            if changed {
                *current = Arc::new(checks);
            }
            changed
        });
        self.policies = policies;
        self.publish_certificates();
        self.gateway.swap(table);
        self.record_cold_starts();
        self.publish_status();
        self.last_publish = Some((started, started.elapsed()));
    }

    /// Hands the stored TLS certificates to the gateway when they changed. One that does not
    /// parse (the API checks before storing) is skipped with a warning.
    fn publish_certificates(&mut self) {
        if self.desired.certificates == self.certificates {
            return;
        }
        let mut hosts = HashMap::new();
        for cert in &self.desired.certificates {
            match nimbus_gateway::tls::certified_key(
                cert.cert_pem.as_bytes(),
                cert.key_pem.as_bytes(),
            ) {
                Ok(key) => {
                    hosts.insert(cert.host.clone(), Arc::new(key));
                }
                Err(error) => warn!(host = %cert.host, %error, "Skipping an unusable certificate."),
            }
        }
        info!(count = hosts.len(), "TLS certificates loaded.");
        self.gateway.tls().set_hosts(hosts);
        self.certificates = self.desired.certificates.clone();
    }

    /// The compiled gateway policy of a service: the one already in use while its spec is
    /// unchanged, else compiled afresh. A spec that no longer compiles (the API checks before
    /// storing, so only a hand-edited database) falls back to the default policy.
    fn gateway_policy(&self, key: &(String, String)) -> Arc<ServicePolicy> {
        let spec = self
            .desired
            .gateway
            .iter()
            .find(|g| g.namespace == key.0 && g.service == key.1)
            .map(|g| g.spec.clone())
            .unwrap_or_default();
        if let Some(current) = self.policies.get(key) {
            if *current.spec() == spec {
                return current.clone();
            }
        }
        match ServicePolicy::compile(&spec) {
            Ok(policy) => Arc::new(policy),
            Err(error) => {
                warn!(service = %key.1, %error, "Stored gateway policy does not compile; using the default.");
                Arc::new(ServicePolicy::default())
            }
        }
    }

    /// Events for cold starts that just became ready, with how long the held requests waited
    /// (the gate released them in the `update` just made).
    fn record_cold_starts(&mut self) {
        for (key, id, took) in std::mem::take(&mut self.cold_ready) {
            self.telemetry.cold_start(&key.0, &key.1, &key.2, took);
            let waits = self
                .gates
                .get(&key)
                .map(|g| g.take_cold_waits())
                .unwrap_or_default();
            let held = match waits.iter().max() {
                Some(longest) => format!(
                    "; {} held request(s) waited up to {} ms",
                    waits.len(),
                    longest.as_millis()
                ),
                None => String::new(),
            };
            let message = format!(
                "cold start of version {}: instance {id} ready {} ms after spawn{held}",
                key.2,
                took.as_millis()
            );
            info!(service = %key.1, "{message}");
            let _ = self
                .store
                .record_event(&key.0, &key.1, "cold_start", &message);
        }
    }

    /// Keeps the autoscaler's per-version entries in line with the desired state.
    fn sync_scaler(&mut self) {
        let booted = self.booted;
        self.booted = true;
        let live: HashMap<VersionKey, u32> =
            self.instances
                .values()
                .fold(HashMap::new(), |mut counts, i| {
                    if matches!(i.state, InstanceState::Starting | InstanceState::Ready) {
                        *counts.entry(i.key.clone()).or_default() += 1;
                    }
                    counts
                });
        let serving: HashSet<VersionKey> = self
            .desired
            .services
            .iter()
            .flat_map(|s| {
                s.versions
                    .iter()
                    .filter(|v| s.traffic.routes_to(v))
                    .map(|v| (s.namespace.clone(), s.name.clone(), v.clone()))
            })
            .collect();
        let versions = self.desired.versions.iter().map(|v| {
            (
                (v.namespace.clone(), v.service.clone(), v.name.clone()),
                &v.spec,
            )
        });
        self.scaler.sync(versions, |key, _| {
            let running = live.get(key).copied().unwrap_or(0);
            if !booted && !serving.contains(key) {
                // At start-up, versions without traffic keep what survived and no more.
                running
            } else {
                // A new deploy starts one instance to prove it works (Cloud Run does too);
                // at start-up, versions taking traffic are warmed the same way.
                running.max(1)
            }
        });
    }

    fn ready_count(&self, key: &VersionKey) -> usize {
        self.instances
            .values()
            .filter(|i| &i.key == key && i.state == InstanceState::Ready)
            .count()
    }

    /// Feeds each version's demand since the last sample into its window.
    fn sample_demand(&mut self) {
        self.scaler.sample_gates();
    }

    /// Runs the decider for every version: whether any count changed, and whether any
    /// version's scaling reason did.
    fn decide_all(&mut self) -> (bool, bool) {
        let local_now = chrono::Local::now();
        let counts = instance_counts(&self.instances);
        let health = &self.health;
        let schedules = &self.desired.schedules;
        let (changes, reasons_changed) = self.scaler.decide_all(
            counts.iter().map(|(key, c)| {
                let live = LiveCount {
                    running: c.1,
                    ready: c.0 as u32,
                };
                (*key, live)
            }),
            |key, current, desired| {
                if health.get(key).is_some_and(|h| h.consecutive_failures > 0) {
                    // Crashed instances waiting out a backoff still count: a crash is not a
                    // reason to scale down (which would stop the restarts and hide the failure).
                    current.max(desired)
                } else {
                    current
                }
            },
            |key| schedules_of(schedules, &key.0, &key.1),
            &local_now,
        );
        self.record_changes(&changes);
        (!changes.is_empty(), reasons_changed)
    }

    /// The activator's pokes: versions with held requests and no instance want one now. The
    /// caller starts them first and records the events after (a store write is not free).
    fn wake(&mut self, keys: Vec<VersionKey>) -> Vec<Change> {
        let mut changes = Vec::new();
        for key in keys {
            let demand = self.gates.get(&key).map_or(1, |g| g.demand());
            if let Some(change) = self.scaler.wake(&key, demand) {
                changes.push(change);
            }
        }
        changes
    }

    fn record_changes(&self, changes: &[Change]) {
        for change in changes {
            let message = change.describe();
            info!(service = %change.key.1, "Scaling: {message}");
            let _ = self
                .store
                .record_event(&change.key.0, &change.key.1, "scale", &message);
        }
    }

    /// Builds and publishes the whole status.
    fn publish_status(&mut self) {
        let (status, gates) = self.status();
        self.status_gates = gates;
        self.status_tx.send_replace(Arc::new(status));
    }

    /// Updates the published status's in-flight and queue figures in place: each instance's,
    /// and each version's whose gate changed since it was read. Nothing else moves between
    /// reconciles, and rebuilding the status of thousands of versions every tick would stall
    /// the gateway sharing this thread.
    fn refresh_live_status(&mut self) {
        let gates = &mut self.status_gates;
        let instances = &self.instances;
        self.status_tx.send_modify(|status| {
            let status = Arc::make_mut(status);
            for (version, slot) in status.versions.iter_mut().zip(gates.iter_mut()) {
                let Some((gate, marker)) = slot else {
                    continue;
                };
                let now = gate.demand_changes();
                if now != *marker {
                    let stats = gate.stats();
                    version.inflight = stats.inflight as u32;
                    version.queued = stats.queued as u32;
                    *marker = now;
                }
            }
            for instance in &mut status.instances {
                if let Some(known) = instances.get(&instance.id) {
                    instance.inflight = known.endpoint.inflight() as u32;
                }
            }
        });
    }

    /// The whole status, with each version's gate (and its change marker) in the same order.
    fn status(&self) -> (RuntimeStatus, StatusGates) {
        let mut instances: Vec<InstanceStatus> = self
            .instances
            .values()
            .map(|i| InstanceStatus {
                id: i.info.id.clone(),
                namespace: i.key.0.clone(),
                service: i.key.1.clone(),
                version: i.key.2.clone(),
                state: i.state,
                port: i.info.port,
                pid: i.info.pid,
                restarts: self
                    .health
                    .get(&i.key)
                    .map_or(0, |h| h.consecutive_failures),
                started_at: i.info.started_at,
                inflight: i.endpoint.inflight() as u32,
            })
            .collect();
        instances.sort_by(|a, b| {
            (&a.namespace, &a.service, &a.version, &a.id).cmp(&(
                &b.namespace,
                &b.service,
                &b.version,
                &b.id,
            ))
        });
        let counts = instance_counts(&self.instances);
        let hints: HashMap<&VersionKey, &String> = self
            .instances
            .values()
            .filter(|i| i.state == InstanceState::Starting)
            .filter_map(|i| Some((&i.key, i.startup_hint.as_ref()?)))
            .collect();
        let mut gates = Vec::with_capacity(self.desired.versions.len());
        let versions = self
            .desired
            .versions
            .iter()
            .map(|v| {
                let key = (v.namespace.clone(), v.service.clone(), v.name.clone());
                let ready = counts.get(&key).map_or(0, |c| c.0) as u32;
                let desired = self.scaler.desired(&key).unwrap_or(0);
                let version_gate = self.gates.get(&key);
                // The marker before the figures: a change in between is reread next time.
                gates.push(version_gate.map(|g| (Arc::clone(g), g.demand_changes())));
                let gate = version_gate.map(|g| g.stats()).unwrap_or_default();
                let cold = self.cold.get(&key);
                let scaling_reason = self.scaler.reason(&key).map(str::to_string);
                let health = self.health.get(&key);
                let failure = health.and_then(|h| h.failure.clone());
                let state = if ready > 0 {
                    VersionState::Ready
                } else if failure.is_some() {
                    VersionState::Failed
                } else if desired == 0 {
                    VersionState::Idle
                } else {
                    VersionState::Deploying
                };
                // While deploying, what holds its instances up, if Nimbus can tell.
                let reason = failure.or_else(|| {
                    (state == VersionState::Deploying)
                        .then(|| hints.get(&key).map(|h| h.to_string()))
                        .flatten()
                });
                VersionStatus {
                    namespace: key.0,
                    service: key.1,
                    version: key.2,
                    state,
                    ready_instances: ready,
                    desired_instances: desired,
                    reason,
                    last_log_lines: health.map(|h| h.last_log_lines.clone()).unwrap_or_default(),
                    scaling_reason,
                    inflight: gate.inflight as u32,
                    queued: gate.queued as u32,
                    cold_starts: cold.map_or(0, |c| c.count),
                    last_cold_start_ms: cold.and_then(|c| c.last_ms),
                }
            })
            .collect();
        (
            RuntimeStatus {
                instances,
                versions,
            },
            gates,
        )
    }

    /// Runs until `shutdown` fires, then drains and stops every instance.
    pub async fn run(
        mut self,
        changed: Arc<Notify>,
        tickets: Arc<ChangeTickets>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut sample = tokio::time::interval(SAMPLE_EVERY);
        let mut decide = tokio::time::interval(self.scaler.tick());
        for timer in [&mut tick, &mut sample, &mut decide] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            let owed_at =
                tokio::time::Instant::from_std(next_pass_at(self.last_publish, Instant::now()));
            tokio::select! {
                _ = tokio::time::sleep_until(owed_at), if self.pass_owed => {
                    self.reconcile_known().await;
                }
                _ = changed.notified() => {
                    let ticket = tickets.latest();
                    self.reconcile().await;
                    // A failed store read leaves the pass's writes unapplied (and retried).
                    if !self.store_changed {
                        tickets.applied(ticket);
                    }
                }
                Some(key) = self.cold_rx.recv() => {
                    // One poke per held request: take the whole burst at once.
                    let mut keys = vec![key];
                    while let Ok(key) = self.cold_rx.try_recv() {
                        if !keys.contains(&key) {
                            keys.push(key);
                        }
                    }
                    let changes = self.wake(keys);
                    if !changes.is_empty() {
                        self.reconcile_known().await;
                        self.record_changes(&changes);
                    }
                }
                Some(Recycle { instance, grace }) = self.recycle_rx.recv() => {
                    self.recycle(&instance, grace);
                    self.reconcile_known().await;
                }
                _ = sample.tick() => self.sample_demand(),
                _ = decide.tick() => {
                    let (changed, reasons_changed) = self.decide_all();
                    if changed {
                        self.reconcile_known().await;
                    } else if reasons_changed {
                        self.publish_status();
                    } else {
                        // In-flight and queue figures in the status stay fresh.
                        self.refresh_live_status();
                    }
                }
                Some(report) = self.reports_rx.recv() => {
                    self.handle(report);
                    // Batch whatever else already arrived before touching routes.
                    while let Ok(report) = self.reports_rx.try_recv() {
                        self.handle(report);
                    }
                    let now = Instant::now();
                    if next_pass_at(self.last_publish, now) <= now {
                        self.reconcile_known().await;
                    } else {
                        self.pass_owed = true;
                    }
                }
                _ = tick.tick() => {
                    // Restarts after a crash backoff run from here.
                    let due = self.health.values().any(|h| h.hold_until.is_some_and(|t| t <= Instant::now()));
                    if due {
                        for h in self.health.values_mut() {
                            if h.hold_until.is_some_and(|t| t <= Instant::now()) {
                                h.hold_until = None;
                            }
                        }
                        self.reconcile().await;
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        self.stop_all().await;
    }

    async fn stop_all(&mut self) {
        info!(count = self.instances.len(), "Stopping all instances.");
        let ids: Vec<String> = self.instances.keys().cloned().collect();
        for id in &ids {
            if let Some(i) = self.instances.get_mut(id) {
                i.state = InstanceState::Draining;
            }
        }
        self.desired = DesiredState::default();
        self.publish();
        let stops = ids.into_iter().map(|id| {
            let driver = self.driver.clone();
            async move {
                if let Err(error) = driver.stop(&id, STOP_GRACE).await {
                    warn!(instance = %id, %error, "Stopping an instance failed.");
                }
            }
        });
        futures_util::future::join_all(stops).await;
        self.instances.clear();
        self.status_tx
            .send_replace(Arc::new(RuntimeStatus::default()));
    }
}
