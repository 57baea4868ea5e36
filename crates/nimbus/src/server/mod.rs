//! `nimbus server`: opens the store, connects the runtimes (processes always, Docker when it runs),
//! adopts leftover instances, starts the reconciler, the gateway and the API, and shuts everything
//! down in order on SIGTERM / Ctrl-C.

mod containers;
mod plan;
mod reconciler;
mod scaling;

use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nimbus_api::{ApiState, Containers};
use nimbus_docker::DockerDriver;
use nimbus_gateway::{Gateway, GatewayConfig};
use nimbus_runtime::{Driver, DriverRouter, ProcessDriver};
use nimbus_store::Store;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use reconciler::Reconciler;
use scaling::ScalingTimings;

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
}

impl ServerArgs {
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
    // refused with how to start it.
    let docker = match DockerDriver::connect(&data).await {
        Ok(docker) => Ok(Arc::new(docker)),
        Err(error) => {
            warn!(%error, "Docker is not available: container versions cannot run.");
            Err(error.to_string())
        }
    };
    nimbus_api::builds::recover(&data.join("builds"));
    let containers = match &docker {
        Ok(docker) => Containers::Available(Arc::new(containers::DockerEngine(docker.clone()))),
        Err(reason) => Containers::Unavailable(reason.as_str().into()),
    };
    let driver: Arc<dyn Driver> = Arc::new(DriverRouter::new(
        process,
        docker.map(|d| d as Arc<dyn Driver>),
    ));

    let api_listener = bind(args.api, "--api").await?;
    let http_listener = bind(args.http, "--http").await?;
    let api_addr = api_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    let gateway = Gateway::new(GatewayConfig::default());
    let (mut reconciler, status) = Reconciler::new(
        store.clone(),
        driver.clone(),
        gateway.clone(),
        args.base_domain.clone(),
        timings,
    );
    let adopted = driver
        .adopt()
        .await
        .context("adopting instances of the previous run")?;
    reconciler.adopt(adopted);
    reconciler.reconcile().await;

    let changed = Arc::new(Notify::new());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let api = nimbus_api::router(ApiState {
        store: store.clone(),
        token: token.into(),
        base_domain: args.base_domain.clone().into(),
        gateway_port: http_addr.port(),
        logs_dir: data.join("logs"),
        builds_dir: data.join("builds"),
        containers,
        status,
        reconcile: changed.clone(),
    });

    let reconciler_task = tokio::spawn(reconciler.run(changed, shutdown_rx.clone()));
    let gateway_task = tokio::spawn(gateway.serve(http_listener, wait_for(shutdown_rx.clone())));
    let api_task = tokio::spawn(async move {
        axum::serve(api_listener, api)
            .with_graceful_shutdown(wait_for(shutdown_rx))
            .await
    });

    info!(api = %api_addr, gateway = %http_addr, data = %data.display(), "Nimbus is up.");
    println!(
        "nimbus ready: api=http://{api_addr} gateway=http://{http_addr} data={}",
        data.display()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();

    shutdown_signal().await;
    info!("Shutting down: draining instances.");
    let _ = shutdown_tx.send(true);
    if let Err(error) = reconciler_task.await {
        warn!(%error, "The reconciler ended abnormally.");
    }
    // Both listeners stop accepting at once; give open connections a bounded moment.
    let _ = tokio::time::timeout(Duration::from_secs(5), gateway_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), api_task).await;
    info!("Stopped.");
    Ok(())
}

async fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} ({flag}): is another nimbus server running? Pick another address with {flag}")
    })
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

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
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
