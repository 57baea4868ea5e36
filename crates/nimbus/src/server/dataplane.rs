//! The data plane's own runtime: the gateway's listeners (HTTP, HTTPS) and the S3 endpoint run
//! on `--worker-threads` threads that do nothing else, while the control plane (API, store,
//! reconciler, autoscaler, metering, functions) runs on the server's main thread — Envoy's
//! split of workers and main thread. A reconcile of a large table, an API write's SQLite
//! transaction or a metering pass then never sits in the event loop between two requests.

use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A running data-plane runtime; stops (and joins its thread) when dropped.
pub struct DataPlane {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DataPlane {
    /// Starts the runtime: tokio's current-thread scheduler on one thread of its own when
    /// `workers` is 1, else the multi-thread one with `workers` workers.
    pub fn start(workers: usize) -> anyhow::Result<Self> {
        let mut builder = if workers <= 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers).thread_name("nimbus-worker");
            builder
        };
        let runtime = builder
            .enable_all()
            .build()
            .context("starting the gateway's runtime")?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        // The current-thread runtime runs its tasks only while this thread blocks on it; the
        // multi-thread one runs them on its workers and this thread just owns it.
        let thread = std::thread::Builder::new()
            .name("nimbus-gateway".into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
                // A blocking file operation of S3 still running gets a bounded moment.
                runtime.shutdown_timeout(std::time::Duration::from_secs(5));
            })
            .context("starting the gateway's thread")?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs `task` on the data plane.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(task)
    }

    /// Binds a listener whose readiness the data plane's reactor watches.
    pub async fn bind(&self, addr: SocketAddr, flag: &'static str) -> anyhow::Result<TcpListener> {
        self.spawn(super::bind(addr, flag))
            .await
            .context("the gateway's runtime stopped")?
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
