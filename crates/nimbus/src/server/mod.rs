//! `nimbus server`: opens the store, connects the runtimes (processes always, Docker when it runs),
//! adopts leftover instances, starts the reconciler, the gateway and the API, and shuts everything
//! down in order on SIGTERM / Ctrl-C.

mod access_log;
mod containers;
mod dataplane;
mod functions;
mod plan;
mod reconciler;
mod scaling;
mod telemetry;

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nimbus_api::{ApiState, Containers};
use nimbus_docker::DockerLink;
use nimbus_gateway::{Gateway, GatewayConfig};
use nimbus_runtime::{Driver, DriverRouter, ProcessDriver};
use nimbus_store::Store;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use dataplane::DataPlane;
use reconciler::Reconciler;
use scaling::ScalingTimings;
use telemetry::{AccessLog, Telemetry};

/// Flags of `nimbus server`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Data directory (SQLite store, logs, pid files, admin token).
    /// Default: $XDG_DATA_HOME/nimbus or ~/.local/share/nimbus.
    #[arg(long, env = "NIMBUS_DATA")]
    pub data: Option<PathBuf>,
    /// Address of the REST API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub api: SocketAddr,
    /// Address of the HTTP gateway (the front door for services).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub http: SocketAddr,
    /// Also serve the gateway over HTTPS here (HTTP/2 and HTTP/1.1 by ALPN). Hosts without a
    /// certificate from `nimbus certs add` get a self-signed wildcard certificate for the base
    /// domain, made on first start in DATA/tls/.
    #[arg(long, value_name = "ADDR")]
    pub https: Option<SocketAddr>,
    /// Answer plain-HTTP gateway requests with a redirect to HTTPS (needs --https).
    #[arg(long, requires = "https")]
    pub redirect_https: bool,
    /// Base domain of generated service and version hosts.
    #[arg(long, default_value = nimbus_model::domains::DEFAULT_BASE_DOMAIN)]
    pub base_domain: String,
    /// Autoscaler: the window whose average demand sets the steady instance count (seconds).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60.0,
        help_heading = "Autoscaling"
    )]
    pub scale_stable_window: f64,
    /// Autoscaler: the short window that detects bursts (seconds; at most the stable window).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 6.0,
        help_heading = "Autoscaling"
    )]
    pub scale_panic_window: f64,
    /// Autoscaler: how often it decides (seconds).
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 2.0,
        help_heading = "Autoscaling"
    )]
    pub scale_tick: f64,
    /// Autoscaler: scale down only to the highest count wanted within this many seconds.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 30.0,
        help_heading = "Autoscaling"
    )]
    pub scale_down_delay: f64,
    /// How often instances' CPU and memory are sampled for metering (seconds).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub meter_interval: f64,
    /// Serve the S3-compatible object storage API on this address (e.g. 127.0.0.1:9000).
    #[arg(long, value_name = "ADDR")]
    pub s3: Option<SocketAddr>,
    /// Price sheet (TOML) for `nimbus usage` costs; default: docs/pricing.md's sheet.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,
    /// JSON access log, one line per request: `off`, `stdout` or a file path.
    #[arg(long, value_name = "TARGET", default_value = "off")]
    pub access_log: AccessLog,
    /// Threads serving the gateway and S3 traffic [default: the CPUs this process may run on].
    /// The API, reconciler and metering run on one more thread of their own.
    #[arg(long, value_name = "N")]
    pub worker_threads: Option<usize>,
    /// Gateway: largest request head (request line and headers); 431 past it. At least 8Ki.
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "64Ki",
        help_heading = "Gateway"
    )]
    pub max_header_size: String,
    /// Gateway: most header fields in one request; 431 past it.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        help_heading = "Gateway"
    )]
    pub max_headers: usize,
    /// Gateway: a client that takes longer than this to send its request head is disconnected
    /// (slowloris).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "10s",
        help_heading = "Gateway"
    )]
    pub header_read_timeout: String,
    /// How long a new instance gets to answer its health path on $PORT before it counts as a
    /// failed start (and is stopped). A version is not scaled down while its only instances
    /// are still starting.
    #[arg(long, value_name = "DURATION", default_value = "120s")]
    pub startup_timeout: String,
}

impl ServerArgs {
    /// The data plane's worker threads: the flag (at least 1), else the CPUs this process may
    /// use (`taskset` counts).
    pub fn worker_threads(&self) -> usize {
        self.worker_threads
            .map(|n| n.clamp(1, 1024))
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(1)
    }

    fn gateway_config(
        &self,
        observer: Option<Arc<dyn nimbus_gateway::RequestObserver>>,
    ) -> anyhow::Result<GatewayConfig> {
        let max_header_bytes = nimbus_model::gateway::parse_size(&self.max_header_size)
            .map_err(|e| anyhow::anyhow!("--max-header-size: {e}"))?;
        let max_header_bytes = usize::try_from(max_header_bytes)
            .ok()
            .filter(|n| (8 * 1024..=16 * 1024 * 1024).contains(n))
            .ok_or_else(|| anyhow::anyhow!("--max-header-size must be between 8Ki and 16Mi"))?;
        let timeout_ms = nimbus_model::gateway::parse_duration_ms(&self.header_read_timeout)
            .map_err(|e| anyhow::anyhow!("--header-read-timeout: {e}"))?;
        if !(100..=3_600_000).contains(&timeout_ms) {
            anyhow::bail!("--header-read-timeout must be between 100ms and 1h");
        }
        if !(1..=10_000).contains(&self.max_headers) {
            anyhow::bail!("--max-headers must be between 1 and 10000");
        }
        Ok(GatewayConfig {
            observer,
            max_header_bytes,
            max_headers: self.max_headers,
            header_read_timeout: Duration::from_millis(timeout_ms),
            ..GatewayConfig::default()
        })
    }

    fn startup_timeout(&self) -> anyhow::Result<Duration> {
        let ms = nimbus_model::gateway::parse_duration_ms(&self.startup_timeout)
            .map_err(|e| anyhow::anyhow!("--startup-timeout: {e}"))?;
        if !(1_000..=3_600_000).contains(&ms) {
            anyhow::bail!("--startup-timeout must be between 1s and 1h");
        }
        Ok(Duration::from_millis(ms))
    }

    fn scaling_timings(&self) -> anyhow::Result<ScalingTimings> {
        let secs = |value: f64, flag: &str, min: f64| {
            if value.is_finite() && value >= min && value <= 86_400.0 {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(anyhow::anyhow!(
                    "{flag} must be a number of seconds between {min} and 86400, not {value}"
                ))
            }
        };
        let timings = ScalingTimings {
            stable_window: secs(self.scale_stable_window, "--scale-stable-window", 1.0)?,
            panic_window: secs(self.scale_panic_window, "--scale-panic-window", 1.0)?,
            tick: secs(self.scale_tick, "--scale-tick", 0.05)?,
            scale_down_delay: secs(self.scale_down_delay, "--scale-down-delay", 0.0)?,
        };
        if timings.panic_window > timings.stable_window {
            anyhow::bail!("--scale-panic-window must not be longer than --scale-stable-window");
        }
        Ok(timings)
    }
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let timings = args.scaling_timings()?;
    let startup_timeout = args.startup_timeout()?;
    let data = args
        .data
        .clone()
        .unwrap_or_else(crate::paths::default_data_dir);
    std::fs::create_dir_all(&data)
        .with_context(|| format!("creating the data directory {}", data.display()))?;
    let data = data.canonicalize().unwrap_or(data);
    let token = admin_token(&data)?;
    let store = Arc::new(
        Store::open(&data.join("nimbus.db"))
            .with_context(|| format!("opening the store in {}", data.display()))?,
    );
    let process = ProcessDriver::new(&data).context("starting the process runtime")?;
    // Containers are optional: without Docker, process versions work and container deploys are
    // refused with how to start it; once it runs, the next container call connects.
    let docker = Arc::new(DockerLink::connect(&data).await);
    nimbus_api::builds::recover(&data.join("builds"));
    let containers = Containers::Available(Arc::new(containers::DockerEngine(docker.clone())));
    let driver: Arc<dyn Driver> = Arc::new(DriverRouter::new(process, docker as Arc<dyn Driver>));
    if !(args.meter_interval.is_finite() && (0.1..=3600.0).contains(&args.meter_interval)) {
        anyhow::bail!(
            "--meter-interval must be between 0.1 and 3600 seconds, not {}",
            args.meter_interval
        );
    }
    let usage = Arc::new(
        nimbus_metering::UsageStore::open(&data.join("nimbus.db"))
            .context("opening the usage tables")?,
    );
    let meter = nimbus_metering::Meter::resume(
        usage
            .load_state()
            .context("reading the meter's state of the previous run")?,
    );
    let telemetry = Arc::new(Telemetry::new(usage.clone(), meter, &args.access_log)?);

    let (object_events_tx, object_events) = tokio::sync::mpsc::unbounded_channel();
    let storage = nimbus_storage::Storage::open(data.join("storage"), Some(object_events_tx))
        .await
        .context("opening the object storage")?;
    let s3_keys = nimbus_storage::AccessKeys::from_pairs(
        store
            .access_key_secrets()
            .context("reading the S3 access keys")?,
    );
    let dataplane = DataPlane::start(args.worker_threads())?;
    let s3_listener = match args.s3 {
        Some(addr) => Some(dataplane.bind(addr, "--s3").await?),
        None => None,
    };
    let api_listener = bind(args.api, "--api").await?;
    let http_listener = dataplane.bind(args.http, "--http").await?;
    let https_listener = match args.https {
        Some(addr) => Some(dataplane.bind(addr, "--https").await?),
        None => None,
    };
    let api_addr = api_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let https_addr = match &https_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };

    let mut gateway_config = args.gateway_config(Some(telemetry.clone()))?;
    if args.redirect_https {
        gateway_config.redirect_https = https_addr.map(|a| a.port());
    }
    let gateway = Gateway::new(gateway_config);
    if https_addr.is_some() {
        let key = default_certificate(&data, &args.base_domain)?;
        gateway.tls().set_default(Arc::new(key));
    }
    let (mut reconciler, status) = Reconciler::new(
        store.clone(),
        driver.clone(),
        gateway.clone(),
        args.base_domain.clone(),
        timings,
        startup_timeout,
        telemetry.clone(),
    );
    let adopted = driver
        .adopt()
        .await
        .context("adopting instances of the previous run")?;
    reconciler.adopt(adopted);
    reconciler.reconcile().await;
    let functions = Arc::new(functions::Functions::new(
        store.clone(),
        gateway.clone(),
        args.base_domain.clone(),
        nimbus_functions::InvocationQueue::open(&data.join("nimbus.db"))
            .context("opening the async invocation queue")?,
        telemetry.clone(),
        reconciler.recycler(),
        status.clone(),
    ));

    let changed = Arc::new(Notify::new());
    let tickets = Arc::new(nimbus_api::ChangeTickets::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let status_for_metering = status.clone();
    let metrics = {
        let telemetry = telemetry.clone();
        let status = status.clone();
        Arc::new(move || telemetry.render(&status.borrow().clone()))
    };
    let prices = match &args.prices {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the price sheet {}", path.display()))?;
            nimbus_metering::PriceSheet::from_toml(&text)
                .with_context(|| format!("in the price sheet {}", path.display()))?
        }
        None => nimbus_metering::PriceSheet::default(),
    };
    let api_state = ApiState {
        store: store.clone(),
        token: token.into(),
        base_domain: args.base_domain.clone().into(),
        gateway_port: http_addr.port(),
        logs_dir: data.join("logs"),
        builds_dir: data.join("builds"),
        containers,
        status,
        reconcile: changed.clone(),
        tickets: tickets.clone(),
        collect_images: Arc::new(Notify::new()),
        metrics,
        usage: usage.clone(),
        prices: Arc::new(prices),
        storage: storage.clone(),
        s3_keys: s3_keys.clone(),
        s3_endpoint: match &s3_listener {
            Some(listener) => Some(format!("http://{}", listener.local_addr()?)),
            None => None,
        },
        functions: functions.clone(),
    };
    let images_task = tokio::spawn(nimbus_api::images::run_collector(
        api_state.clone(),
        shutdown_rx.clone(),
    ));
    let api = nimbus_api::router(api_state);
    let mut s3_addr = None;
    let s3_task = match s3_listener {
        Some(listener) => {
            s3_addr = Some(listener.local_addr()?);
            Some(dataplane.spawn(nimbus_storage::serve(
                listener,
                storage.clone(),
                s3_keys.clone(),
                wait_for(shutdown_rx.clone()),
            )))
        }
        None => None,
    };
    let object_events_task = tokio::spawn(functions.clone().run_object_triggers(object_events));
    let worker_task = tokio::spawn(functions.clone().run_worker(shutdown_rx.clone()));
    let housekeeping_task = tokio::spawn(housekeeping(
        store.clone(),
        usage.clone(),
        functions.clone(),
        data.join("logs"),
        shutdown_rx.clone(),
    ));
    let timers_task = tokio::spawn(functions.clone().run_timers(shutdown_rx.clone()));

    let metering_task = tokio::spawn(telemetry::run_metering(
        telemetry.clone(),
        status_for_metering,
        Duration::from_secs_f64(args.meter_interval),
        shutdown_rx.clone(),
    ));
    let reconciler_task = tokio::spawn(reconciler.run(changed, tickets, shutdown_rx.clone()));
    let https_task = https_listener.map(|listener| {
        dataplane.spawn(
            gateway
                .clone()
                .serve_tls(listener, wait_for(shutdown_rx.clone())),
        )
    });
    let gateway_task = dataplane.spawn(gateway.serve(http_listener, wait_for(shutdown_rx.clone())));
    let api_task = tokio::spawn(async move {
        axum::serve(
            api_listener,
            api.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(wait_for(shutdown_rx))
        .await
    });

    let hangup_task = reopen_on_hangup(telemetry.clone());
    info!(api = %api_addr, gateway = %http_addr, data = %data.display(), "Nimbus is up.");
    let s3_field = s3_addr.map_or(String::new(), |a| format!(" s3=http://{a}"));
    let https_field = https_addr.map_or(String::new(), |a| format!(" https=https://{a}"));
    println!(
        "nimbus ready: api=http://{api_addr} gateway=http://{http_addr}{https_field}{s3_field} data={}",
        data.display()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();

    shutdown_signal().await;
    hangup_task.abort();
    info!("Shutting down: draining instances.");
    let _ = shutdown_tx.send(true);
    if let Err(error) = reconciler_task.await {
        warn!(%error, "The reconciler ended abnormally.");
    }
    if let Err(error) = metering_task.await {
        warn!(%error, "The metering loop ended abnormally.");
    }
    // Both listeners stop accepting at once; give open connections a bounded moment.
    let _ = tokio::time::timeout(Duration::from_secs(5), gateway_task).await;
    if let Some(task) = https_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    // The drained connections' last lines; a stalled destination gets a bounded wait.
    let closing = telemetry.clone();
    let _ = tokio::task::spawn_blocking(move || closing.close_access_log()).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), api_task).await;
    if let Some(task) = s3_task {
        let _ = tokio::time::timeout(Duration::from_secs(6), task).await;
    }
    object_events_task.abort();
    let _ = tokio::time::timeout(Duration::from_secs(5), worker_task).await;
    let _ = timers_task.await;
    let _ = housekeeping_task.await;
    // A sweep in progress ends with its engine call.
    let _ = tokio::time::timeout(Duration::from_secs(5), images_task).await;
    drop(dataplane);
    info!("Stopped.");
    Ok(())
}

async fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} ({flag}): is another nimbus server running? Pick another address with {flag}")
    })
}

/// The HTTPS listener's default certificate: `DATA/tls/default.{crt,key}`, a self-signed
/// wildcard for the base domain made on first start (and again if the base domain changes).
fn default_certificate(
    data: &Path,
    base_domain: &str,
) -> anyhow::Result<rustls::sign::CertifiedKey> {
    let dir = data.join("tls");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (cert_path, key_path, domain_path) = (
        dir.join("default.crt"),
        dir.join("default.key"),
        dir.join("default.domain"),
    );
    let same_domain = std::fs::read_to_string(&domain_path).is_ok_and(|d| d.trim() == base_domain);
    if same_domain {
        if let (Ok(cert), Ok(key)) = (std::fs::read(&cert_path), std::fs::read(&key_path)) {
            match nimbus_gateway::tls::certified_key(&cert, &key) {
                Ok(key) => return Ok(key),
                Err(error) => {
                    warn!(%error, "The stored default certificate is unusable; making a new one.")
                }
            }
        }
    }
    let (cert, key) = nimbus_gateway::tls::self_signed(base_domain)
        .context("generating the default TLS certificate")?;
    std::fs::write(&cert_path, &cert)
        .with_context(|| format!("writing {}", cert_path.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key_path)
        .with_context(|| format!("writing {}", key_path.display()))?;
    use std::io::Write;
    file.write_all(key.as_bytes())
        .with_context(|| format!("writing {}", key_path.display()))?;
    std::fs::write(&domain_path, base_domain)
        .with_context(|| format!("writing {}", domain_path.display()))?;
    info!(path = %cert_path.display(), "Made a self-signed certificate for *.{base_domain}.");
    nimbus_gateway::tls::certified_key(cert.as_bytes(), key.as_bytes())
        .context("loading the new default TLS certificate")
}

/// Reads the admin token, creating it (random, mode 0600) on first start.
fn admin_token(data: &Path) -> anyhow::Result<String> {
    let path = crate::paths::admin_token_path(data);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    use std::io::Write;
    writeln!(file, "{token}").with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

/// How long history is kept: events, usage rollups, finished async invocations, and the logs
/// of versions that no longer exist.
const EVENTS_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);
const USAGE_KEPT: Duration = Duration::from_secs(400 * 24 * 3600);
const INVOCATIONS_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
const DELETED_LOGS_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Hourly retention: prunes what is older than it is kept for.
async fn housekeeping(
    store: Arc<Store>,
    usage: Arc<nimbus_metering::UsageStore>,
    functions: Arc<functions::Functions>,
    logs: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let (store, usage, functions, logs) = (
            store.clone(),
            usage.clone(),
            functions.clone(),
            logs.clone(),
        );
        let _ = tokio::task::spawn_blocking(move || {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let ago = |kept: Duration| now.saturating_sub(kept);
            if let Err(error) = store.prune_events(ago(EVENTS_KEPT).as_secs() as i64) {
                warn!(%error, "Cannot prune old events.");
            }
            let minute = ago(USAGE_KEPT).as_secs() / 60;
            if let Err(error) = usage.prune_before(minute) {
                warn!(%error, "Cannot prune old usage.");
            }
            let before = ago(INVOCATIONS_KEPT).as_millis() as u64;
            if let Err(error) = nimbus_api::functions::FunctionEngine::queue(functions.as_ref())
                .purge_finished(before)
            {
                warn!(%error, "Cannot prune old invocations.");
            }
            prune_deleted_logs(&store, &logs, ago(DELETED_LOGS_KEPT));
        })
        .await;
    }
}

/// Deletes `logs/NS/SERVICE/VERSION` folders of versions that no longer exist and were last
/// written before `before` (Unix time): logs outlive their version by the retention period.
fn prune_deleted_logs(store: &Store, logs: &Path, before: Duration) {
    let Ok(desired) = store.snapshot() else {
        return;
    };
    let live: std::collections::HashSet<(String, String, String)> = desired
        .versions
        .iter()
        .map(|v| (v.namespace.clone(), v.service.clone(), v.name.clone()))
        .collect();
    let dirs = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().to_string());
    for ns in dirs(logs) {
        for svc in dirs(&ns) {
            for ver in dirs(&svc) {
                let (Some(n), Some(s), Some(v)) = (name(&ns), name(&svc), name(&ver)) else {
                    continue;
                };
                if live.contains(&(n, s, v)) {
                    continue;
                }
                let modified = std::fs::metadata(&ver)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
                if modified.is_some_and(|m| m < before) {
                    if let Err(error) = std::fs::remove_dir_all(&ver) {
                        warn!(%error, dir = %ver.display(), "Cannot remove old logs.");
                    }
                }
            }
        }
    }
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Reopens the access log file on every SIGHUP, so logrotate can move it away
/// (`postrotate kill -HUP`), as nginx reopens its logs on USR1. It also means a hangup no
/// longer ends the server.
fn reopen_on_hangup(telemetry: Arc<Telemetry>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(error) => {
                warn!(%error, "Cannot listen for SIGHUP; the access log cannot be reopened.");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            if telemetry.reopen_access_log() {
                info!("SIGHUP: reopening the access log.");
            } else {
                info!("SIGHUP: the access log is not a file; nothing to reopen.");
            }
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
