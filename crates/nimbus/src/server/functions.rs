//! The function engine: sync invocation through a version's admission gate, the async worker
//! over the durable queue (retries, dead-letter, callbacks), timer triggers and object-storage
//! triggers. Functions are ordinary versions underneath; this only adds the invoke protocol.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http::StatusCode;
use nimbus_api::functions::{FunctionEngine, Invoked};
use nimbus_api::ApiError;
use nimbus_functions::{
    Claim, Completion, ErrorKind, FunctionError, InvocationQueue, InvokeClient, InvokeOutcome,
    InvokeRequest, NewInvocation, ObjectChange, ObjectEventKind, RetryPolicy, Runtime,
    StorageTrigger, TimerFire,
};
use nimbus_gateway::{Gateway, HostRoute};
use nimbus_model::domains::version_host;
use nimbus_model::function::FunctionSpec;
use nimbus_model::status::RuntimeStatus;
use nimbus_model::{RequestView, TrafficPolicy};
use nimbus_store::Store;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tracing::{info, warn};

use super::reconciler::Recycle;
use super::telemetry::Telemetry;

/// Async invocations run at once, at most.
const WORKERS: usize = 8;
/// A claimed async invocation is retried by another worker if not completed within this (only
/// after a hung worker: a server restart puts running ones back at once).
const LEASE: Duration = Duration::from_secs(16 * 60);
/// How often timer triggers are checked.
const TIMER_EVERY: Duration = Duration::from_millis(500);
/// How often a running invocation's instance has its memory read.
const MEMORY_SAMPLE_EVERY: Duration = Duration::from_millis(25);
/// How long a timed-out handler gets to stop after SIGTERM; a handler over its memory gets none.
const TIMEOUT_GRACE: Duration = Duration::from_secs(1);

pub struct Functions {
    store: Arc<Store>,
    gateway: Arc<Gateway>,
    base_domain: String,
    runtimes_dir: Option<PathBuf>,
    queue: InvocationQueue,
    client: InvokeClient,
    telemetry: Arc<Telemetry>,
    /// Instances whose invocation timed out or went over memory: the reconciler replaces them.
    recycle: mpsc::UnboundedSender<Recycle>,
    /// The instances and their pids, to watch an invocation's memory.
    status: watch::Receiver<Arc<RuntimeStatus>>,
    wake: Notify,
}

/// Where the runtime shims are: `$NIMBUS_RUNTIMES_DIR`, else a `runtimes/` folder next to the
/// binary or up to four levels above it (a source checkout's `target/debug/nimbus`), else
/// `/usr/share/nimbus/runtimes`.
pub fn find_runtimes_dir() -> Option<PathBuf> {
    let has_shims = |dir: &Path| dir.join("python").join("nimbus_shim.py").is_file();
    if let Some(dir) = std::env::var_os("NIMBUS_RUNTIMES_DIR").map(PathBuf::from) {
        return has_shims(&dir).then_some(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent().map(Path::to_path_buf);
        for _ in 0..5 {
            let Some(d) = dir else { break };
            let candidate = d.join("runtimes");
            if has_shims(&candidate) {
                return Some(candidate);
            }
            dir = d.parent().map(Path::to_path_buf);
        }
    }
    let system = PathBuf::from("/usr/share/nimbus/runtimes");
    has_shims(&system).then_some(system)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Resolves with the resident bytes of `pid` once they are over `memory_mb`; never for an
/// instance without a process of its own or once the process is gone (the call then fails on
/// its own). Reads one small procfs file per sample, on this thread.
async fn over_memory(pid: Option<u32>, memory_mb: u64) -> u64 {
    let Some(pid) = pid else {
        return std::future::pending().await;
    };
    let mut every = tokio::time::interval(MEMORY_SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match nimbus_metering::sample::resident_bytes(pid) {
            Some(bytes) if nimbus_functions::over_memory(bytes, memory_mb) => return bytes,
            Some(_) => {}
            None => return std::future::pending().await,
        }
    }
}

fn unavailable(message: String) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "function_unavailable",
        message,
        None,
    )
}

impl Functions {
    pub fn new(
        store: Arc<Store>,
        gateway: Arc<Gateway>,
        base_domain: String,
        queue: InvocationQueue,
        telemetry: Arc<Telemetry>,
        recycle: mpsc::UnboundedSender<Recycle>,
        status: watch::Receiver<Arc<RuntimeStatus>>,
    ) -> Self {
        Self {
            store,
            gateway,
            base_domain,
            runtimes_dir: find_runtimes_dir(),
            queue,
            client: InvokeClient::new(),
            telemetry,
            recycle,
            status,
            wake: Notify::new(),
        }
    }

    /// Which version runs: a version name, an alias's weighted pick, or the traffic split.
    fn resolve(
        &self,
        namespace: &str,
        function: &str,
        qualifier: Option<&str>,
    ) -> Result<(String, FunctionSpec), ApiError> {
        let service = self.store.get_service(namespace, function)?;
        let roll = rand::random_range(0..100u32);
        let headers = http::HeaderMap::new();
        let view = RequestView {
            query: None,
            headers: &headers,
        };
        let pick = |policy: &TrafficPolicy| {
            policy
                .evaluate(&view, roll)
                .map(|d| d.version.to_string())
                .ok_or_else(|| unavailable(format!("function {function} takes no traffic")))
        };
        let version = match qualifier {
            None => pick(&service.traffic)?,
            Some(q) if service.versions.iter().any(|v| v == q) => q.to_string(),
            Some(q) => {
                let alias = self
                    .store
                    .list_aliases(namespace, function)?
                    .into_iter()
                    .find(|a| a.name == q)
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::NOT_FOUND,
                            "qualifier_not_found",
                            format!("function {function} has no version or alias {q:?}"),
                            Some("qualifier"),
                        )
                    })?;
                pick(&TrafficPolicy {
                    split: alias.split,
                    rules: Vec::new(),
                })?
            }
        };
        let record = self.store.get_version(namespace, function, &version)?;
        let spec = record.spec.function.ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "not_a_function",
                format!("{function} {version} is a service version, not a function"),
                Some("qualifier"),
            )
        })?;
        Ok((version, spec))
    }

    /// One invocation on `version`, admitted through its gate (concurrency 1: a free instance,
    /// a queue place, or a cold start).
    async fn invoke_version(
        &self,
        namespace: &str,
        function: &str,
        version: &str,
        spec: &FunctionSpec,
        request_id: String,
        event: Bytes,
    ) -> Result<(Duration, Result<serde_json::Value, FunctionError>), ApiError> {
        let host = version_host(version, function, namespace, &self.base_domain);
        let lookup = || {
            let table = self.gateway.table();
            match table.get(&host) {
                Some(HostRoute::Version { service, version }) => service
                    .versions
                    .get(version)
                    .map(|route| route.gate.clone()),
                _ => None,
            }
        };
        // A version deployed a moment ago reaches the route table with the next reconcile.
        let deadline = Instant::now() + Duration::from_secs(5);
        let gate = loop {
            if let Some(gate) = lookup() {
                break gate;
            }
            if Instant::now() >= deadline {
                return Err(unavailable(format!(
                    "{function} {version} is not deployed yet"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let permit = gate.admit().await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "function_busy",
                format!("{function} {version}: {e}"),
                None,
            )
        })?;
        let endpoint = permit.endpoint().clone();
        let timeout = Duration::from_millis(spec.timeout_ms);
        let pid = self.pid_of(&endpoint.instance);
        let started = Instant::now();
        let request = InvokeRequest {
            request_id,
            function: function.to_string(),
            version: version.to_string(),
            memory_mb: spec.memory_mb,
            timeout,
            event,
        };
        let invoke = self.client.invoke(endpoint.addr, &request);
        let outcome = tokio::select! {
            outcome = invoke => outcome,
            used = over_memory(pid, spec.memory_mb) => InvokeOutcome::MemoryLimit {
                used_mib: used / (1024 * 1024),
                limit_mib: spec.memory_mb,
            },
        };
        let took = started.elapsed();
        let grace = match outcome {
            // The handler may still be running: that instance must not serve again.
            InvokeOutcome::Timeout => Some(TIMEOUT_GRACE),
            // Stopped at once, before it takes more of the machine.
            InvokeOutcome::MemoryLimit { .. } => Some(Duration::ZERO),
            _ => None,
        };
        if let Some(grace) = grace {
            warn!(instance = %endpoint.instance, function, ?outcome, "Replacing the instance.");
            // Before the slot is freed: a queued invocation waits for another instance rather
            // than being handed this one as it is killed.
            endpoint.retire();
            let _ = self.recycle.send(Recycle {
                instance: endpoint.instance.clone(),
                grace,
            });
        }
        drop(permit);
        self.telemetry
            .function_invoked(namespace, function, version, took, spec.memory_mb);
        Ok((took, outcome.into_result(timeout)))
    }

    /// The main process of `instance` (a shim runs the handler in it), if it has one.
    fn pid_of(&self, instance: &str) -> Option<u32> {
        let status = self.status.borrow();
        status
            .instances
            .iter()
            .find(|i| i.id == instance)
            .and_then(|i| i.pid)
    }

    /// The async worker: claims due invocations (at most [`WORKERS`] at once), runs them,
    /// records the outcome (retry or dead-letter), posts callbacks. Runs until shutdown.
    pub async fn run_worker(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        match self.queue.recover_running(now_ms()) {
            Ok(0) => {}
            Ok(n) => info!(
                count = n,
                "Async invocations interrupted by a restart are pending again."
            ),
            Err(error) => warn!(%error, "Cannot recover running invocations."),
        }
        let slots = Arc::new(Semaphore::new(WORKERS));
        loop {
            while let Ok(slot) = slots.clone().try_acquire_owned() {
                match self.queue.claim_next(now_ms(), LEASE) {
                    Ok(Some(claim)) => {
                        let this = self.clone();
                        tokio::spawn(async move {
                            this.run_claim(claim).await;
                            drop(slot);
                        });
                    }
                    Ok(None) => break,
                    Err(error) => {
                        warn!(%error, "Cannot claim an async invocation.");
                        break;
                    }
                }
            }
            let wait = match self.queue.next_due_ms() {
                Ok(Some(due)) => Duration::from_millis(due.saturating_sub(now_ms())),
                _ => Duration::from_secs(1),
            }
            .clamp(Duration::from_millis(20), Duration::from_secs(1));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => break,
            }
        }
    }

    async fn run_claim(&self, claim: Claim) {
        let inv = &claim.invocation;
        let attempt = match self.resolve(&inv.namespace, &inv.function, inv.qualifier.as_deref()) {
            Ok((version, spec)) => {
                let event = Bytes::from(serde_json::to_vec(&inv.event).unwrap_or_default());
                match self
                    .invoke_version(
                        &inv.namespace,
                        &inv.function,
                        &version,
                        &spec,
                        inv.id.clone(),
                        event,
                    )
                    .await
                {
                    Ok((_, outcome)) => (Some(version), outcome),
                    Err(e) => (Some(version), Err(platform_error(e.message))),
                }
            }
            Err(e) => (None, Err(platform_error(e.message))),
        };
        let (version, outcome) = attempt;
        let completion =
            self.queue
                .complete(&claim, version.as_deref(), outcome.as_ref(), now_ms());
        let completion = match completion {
            Ok(c) => c,
            Err(error) => {
                warn!(%error, id = %inv.id, "Cannot record an async invocation's outcome.");
                return;
            }
        };
        if let Completion::Retrying { .. } = completion {
            self.wake.notify_one();
        }
        let finished = matches!(completion, Completion::Succeeded | Completion::DeadLettered);
        if let (true, Some(url)) = (finished, inv.callback_url.as_deref()) {
            let body = match &outcome {
                Ok(result) => {
                    serde_json::json!({"id": inv.id, "status": "succeeded", "result": result})
                }
                Err(error) => serde_json::json!({"id": inv.id, "status": "failed", "error": error}),
            };
            let body = Bytes::from(body.to_string());
            if let Err(error) = self
                .client
                .post_callback(url, body, Duration::from_secs(10))
                .await
            {
                warn!(%error, id = %inv.id, "Callback failed.");
            }
        }
    }

    /// Fires due timer triggers (each scheduled time at most once, even across restarts).
    pub async fn run_timers(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TIMER_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.fire_timers(),
                _ = shutdown.changed() => break,
            }
        }
    }

    fn fire_timers(&self) {
        let triggers = match self.store.list_triggers(None) {
            Ok(t) => t,
            Err(error) => {
                warn!(%error, "Cannot read triggers.");
                return;
            }
        };
        let local_now = chrono::Local::now();
        for t in triggers.iter().filter(|t| t.kind == "timer") {
            let Some(cron_text) = t.cron.as_deref() else {
                continue;
            };
            let Ok(cron) = nimbus_functions::parse_cron(cron_text) else {
                continue;
            };
            let id = t.id.to_string();
            let last_ms = match self.queue.timer_last_fired(&id) {
                Ok(Some(ms)) => ms,
                Ok(None) => u64::try_from(t.created_at).unwrap_or(0) * 1000,
                Err(error) => {
                    warn!(%error, "Cannot read a timer's last fire.");
                    continue;
                }
            };
            let Some(last) = chrono::DateTime::from_timestamp_millis(last_ms as i64) else {
                continue;
            };
            let Some(due) = nimbus_functions::due_fires(&cron, last, &local_now) else {
                continue;
            };
            let event = nimbus_functions::timer_fired(&TimerFire {
                namespace: &t.namespace,
                function: &t.function,
                trigger_id: &id,
                cron: cron_text,
                scheduled: due,
            });
            let new = NewInvocation {
                namespace: t.namespace.clone(),
                function: t.function.clone(),
                qualifier: None,
                source: format!("timer:{id}"),
                event: event.to_value(),
                callback_url: None,
                retry: RetryPolicy::default(),
            };
            match self.queue.enqueue_timer_fire(
                &id,
                due.timestamp_millis().max(0) as u64,
                &new,
                now_ms(),
            ) {
                Ok(Some(inv)) => {
                    let _ = self.store.record_event(
                        &t.namespace,
                        &t.function,
                        "trigger_fired",
                        &format!("timer trigger {id} fired ({cron_text}): invocation {inv}"),
                    );
                    self.wake.notify_one();
                }
                Ok(None) => {}
                Err(error) => warn!(%error, "Cannot enqueue a timer fire."),
            }
        }
    }

    /// Object created/deleted: an async invocation (a CloudEvent) for each matching trigger.
    pub async fn run_object_triggers(
        self: Arc<Self>,
        mut events: mpsc::UnboundedReceiver<nimbus_storage::ObjectEvent>,
    ) {
        while let Some(event) = events.recv().await {
            let kind = match event.kind {
                nimbus_storage::ObjectEventKind::Created => ObjectEventKind::Created,
                nimbus_storage::ObjectEventKind::Deleted => ObjectEventKind::Deleted,
            };
            let triggers = match self.store.list_triggers(None) {
                Ok(t) => t,
                Err(error) => {
                    warn!(%error, "Cannot read triggers.");
                    continue;
                }
            };
            for t in triggers.iter().filter(|t| t.kind == "storage") {
                let (Some(bucket), Some(events)) = (t.bucket.as_deref(), t.events.as_deref())
                else {
                    continue;
                };
                let Ok(trigger) = StorageTrigger::new(bucket, events, t.prefix.as_deref()) else {
                    continue;
                };
                if !trigger.matches(&event.bucket, &event.key, kind) {
                    continue;
                }
                let change = ObjectChange {
                    bucket: &event.bucket,
                    key: &event.key,
                    size: event.size,
                    etag: &event.etag,
                    kind,
                    time: event.time.into(),
                };
                let cloud_id = format!("obj-{}-{}", t.id, rand::random::<u64>());
                let new = NewInvocation {
                    namespace: t.namespace.clone(),
                    function: t.function.clone(),
                    qualifier: None,
                    source: format!("storage:{}", t.id),
                    event: nimbus_functions::object_event(&change, &cloud_id).to_value(),
                    callback_url: None,
                    retry: RetryPolicy::default(),
                };
                match self.queue.enqueue(&new, now_ms()) {
                    Ok(inv) => {
                        let _ = self.store.record_event(
                            &t.namespace,
                            &t.function,
                            "trigger_fired",
                            &format!(
                                "storage trigger {} fired: {} {}/{}: invocation {inv}",
                                t.id,
                                kind.as_str(),
                                event.bucket,
                                event.key
                            ),
                        );
                        self.wake.notify_one();
                    }
                    Err(error) => warn!(%error, "Cannot enqueue a storage event."),
                }
            }
        }
    }
}

fn platform_error(message: String) -> FunctionError {
    FunctionError {
        kind: ErrorKind::Platform,
        error_type: "PlatformError".into(),
        message,
        traceback: Vec::new(),
    }
}

#[async_trait::async_trait]
impl FunctionEngine for Functions {
    fn launch_line(
        &self,
        runtime: Runtime,
        handler: &str,
        code_dir: &Path,
    ) -> Result<String, String> {
        let runtimes = self.runtimes_dir.as_deref().ok_or_else(|| {
            "the runtime shims were not found: set NIMBUS_RUNTIMES_DIR to the `runtimes` folder of a Nimbus checkout".to_string()
        })?;
        nimbus_functions::launch_command(runtime, handler, runtimes)
            .and_then(|cmd| cmd.shell_line_in(code_dir))
            .map_err(|e| e.to_string())
    }

    async fn invoke(
        &self,
        namespace: &str,
        function: &str,
        qualifier: Option<&str>,
        event: Bytes,
    ) -> Result<Invoked, ApiError> {
        let (version, spec) = self.resolve(namespace, function, qualifier)?;
        let request_id = format!("{:032x}", rand::random::<u128>());
        let (duration, outcome) = self
            .invoke_version(
                namespace,
                function,
                &version,
                &spec,
                request_id.clone(),
                event,
            )
            .await?;
        Ok(Invoked {
            request_id,
            version,
            duration,
            outcome,
        })
    }

    fn queue(&self) -> &InvocationQueue {
        &self.queue
    }

    fn wake(&self) {
        self.wake.notify_one();
    }
}
