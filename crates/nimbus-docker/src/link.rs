//! [`DockerLink`]: the Docker driver, connected when the server starts or, if Docker was not
//! running then, the first time something needs it after it comes up. Starting `dockerd` after
//! `nimbus server` then needs no server restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nimbus_runtime::{Driver, DriverError, ExitStatus, InstanceInfo, InstanceSpec};
use tokio::sync::Mutex;

use crate::{DockerConfig, DockerDriver};

/// A failed connect is not retried sooner than this: a missing socket costs a stat, but a socket
/// whose engine does not answer costs the connect timeout, and a burst of calls should pay it once.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The Docker driver once connected, and why it is not yet.
pub struct DockerLink {
    data_dir: PathBuf,
    config: DockerConfig,
    driver: OnceLock<Arc<DockerDriver>>,
    /// The last failed attempt: when, and why. Held while an attempt runs, so callers that
    /// arrive meanwhile wait for its outcome instead of starting their own.
    last_failure: Mutex<Option<(Instant, String)>>,
}

// === impl DockerLink ===

impl DockerLink {
    /// Tries to connect now; if Docker is not there, every later [`Self::get`] tries again
    /// (at most once per [`RETRY_AFTER`]).
    pub async fn connect(data_dir: &Path) -> Self {
        Self::connect_with(data_dir, DockerConfig::default()).await
    }

    /// [`Self::connect`] with explicit tunables.
    pub async fn connect_with(data_dir: &Path, config: DockerConfig) -> Self {
        let link = Self {
            data_dir: data_dir.to_path_buf(),
            config,
            driver: OnceLock::new(),
            last_failure: Mutex::new(None),
        };
        if let Err(reason) = link.get().await {
            tracing::warn!(%reason, "Docker is not available: container versions cannot run until it is.");
        }
        link
    }

    /// The driver if it is connected, without trying.
    pub fn connected(&self) -> Option<&Arc<DockerDriver>> {
        self.driver.get()
    }

    /// The driver, connecting first if need be; `Err` says why Docker cannot be used.
    pub async fn get(&self) -> Result<&Arc<DockerDriver>, String> {
        if let Some(driver) = self.driver.get() {
            return Ok(driver);
        }
        let mut last_failure = self.last_failure.lock().await;
        if let Some(driver) = self.driver.get() {
            return Ok(driver); // connected by the attempt this call waited for
        }
        if let Some((at, reason)) = last_failure.as_ref() {
            if at.elapsed() < RETRY_AFTER {
                return Err(reason.clone());
            }
        }
        match DockerDriver::connect_with(&self.data_dir, self.config.clone()).await {
            Ok(driver) => {
                if last_failure.take().is_some() {
                    tracing::info!("Docker is available now: container versions can run.");
                }
                Ok(self.driver.get_or_init(|| Arc::new(driver)))
            }
            Err(error) => {
                let reason = error.to_string();
                *last_failure = Some((Instant::now(), reason.clone()));
                Err(reason)
            }
        }
    }
}

fn unavailable(reason: String) -> DriverError {
    DriverError::Unavailable {
        runtime: "container",
        reason,
    }
}

/// Instances start once Docker is connected; until then nothing of Docker's is running here, so
/// there is nothing to wait for, stop or adopt.
#[async_trait::async_trait]
impl Driver for DockerLink {
    fn name(&self) -> &'static str {
        "docker"
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<InstanceInfo, DriverError> {
        self.get().await.map_err(unavailable)?.start(spec).await
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, DriverError> {
        match self.connected() {
            Some(driver) => driver.wait(id).await,
            None => Err(DriverError::UnknownInstance(id.to_owned())),
        }
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), DriverError> {
        match self.connected() {
            Some(driver) => driver.stop(id, grace).await,
            None => Ok(()),
        }
    }

    async fn adopt(&self) -> Result<Vec<InstanceInfo>, DriverError> {
        match self.connected() {
            Some(driver) => driver.adopt().await,
            None => Ok(Vec::new()),
        }
    }

    fn log_path(&self, id: &str) -> Option<PathBuf> {
        self.connected()?.log_path(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Until Docker answers, the link runs nothing, so it has nothing to adopt, wait for or
    /// stop, and a start says why containers cannot run.
    #[tokio::test]
    async fn without_docker_it_holds_nothing_and_says_why() {
        let data = tempfile::tempdir().expect("temp dir");
        let socket = data.path().join("docker.sock");
        let config = DockerConfig {
            socket: Some(socket.clone()),
            ..DockerConfig::default()
        };
        let link = DockerLink::connect_with(data.path(), config).await;
        assert!(link.connected().is_none());
        let reason = link.get().await.expect_err("no engine at the socket");
        assert!(reason.contains(&socket.display().to_string()), "{reason}");

        assert!(link.adopt().await.expect("adopt").is_empty());
        assert!(link
            .stop("web-v1-abc123", Duration::from_secs(1))
            .await
            .is_ok());
        assert!(matches!(
            link.wait("web-v1-abc123").await,
            Err(DriverError::UnknownInstance(_))
        ));
        assert_eq!(link.log_path("web-v1-abc123"), None);
        let spec = InstanceSpec {
            id: "web-v1-abc123".into(),
            namespace: "default".into(),
            service: "web".into(),
            version: "v1".into(),
            command: "true".into(),
            env: Default::default(),
            port: 8080,
            container: None,
        };
        match link.start(&spec).await {
            Err(DriverError::Unavailable { runtime, reason }) => {
                assert_eq!(runtime, "container");
                assert!(reason.contains("no socket"), "{reason}");
            }
            other => panic!("a start without Docker: {other:?}"),
        }
    }
}
