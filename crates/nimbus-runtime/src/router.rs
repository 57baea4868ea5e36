//! [`DriverRouter`]: one [`Driver`] over two runtimes. `start` sends a spec with a
//! [`ContainerSpec`](crate::ContainerSpec) to the container driver and every other spec to the
//! process driver, and remembers which driver owns each instance id, so `wait`, `stop` and
//! `log_path` go to the right one. `adopt` asks both.
//!
//! The container driver says itself when it cannot run anything (the server's is a
//! `nimbus_docker::DockerLink`, which connects once Docker answers): process instances work
//! regardless.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::{Driver, DriverError, ExitStatus, InstanceInfo, InstanceSpec};

#[cfg(test)]
mod tests;

/// Which of the router's drivers runs an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Process,
    Container,
}

/// Where `spec` runs: a container when it names an image, else a process.
pub fn owner_of(spec: &InstanceSpec) -> Owner {
    if spec.container.is_some() {
        Owner::Container
    } else {
        Owner::Process
    }
}

/// Dispatches to the process driver or the container driver; see the module docs.
pub struct DriverRouter {
    process: Arc<dyn Driver>,
    container: Arc<dyn Driver>,
    owners: Mutex<HashMap<String, Owner>>,
}

// === impl DriverRouter ===

impl DriverRouter {
    pub fn new(process: Arc<dyn Driver>, container: Arc<dyn Driver>) -> Self {
        Self {
            process,
            container,
            owners: Mutex::new(HashMap::new()),
        }
    }

    /// The owner of a known instance.
    pub fn owner(&self, id: &str) -> Option<Owner> {
        self.owners().get(id).copied()
    }

    fn owners(&self) -> MutexGuard<'_, HashMap<String, Owner>> {
        self.owners.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn driver(&self, owner: Owner) -> &Arc<dyn Driver> {
        match owner {
            Owner::Process => &self.process,
            Owner::Container => &self.container,
        }
    }

    fn driver_of(&self, id: &str) -> Option<&Arc<dyn Driver>> {
        self.owner(id).map(|owner| self.driver(owner))
    }
}

#[async_trait::async_trait]
impl Driver for DriverRouter {
    fn name(&self) -> &'static str {
        "router"
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<InstanceInfo, DriverError> {
        let owner = owner_of(spec);
        let info = self.driver(owner).start(spec).await?;
        self.owners().insert(info.id.clone(), owner);
        Ok(info)
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, DriverError> {
        match self.driver_of(id) {
            Some(driver) => driver.wait(id).await,
            None => Err(DriverError::UnknownInstance(id.to_owned())),
        }
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), DriverError> {
        let Some(driver) = self.driver_of(id) else {
            return Ok(()); // never started here, or stopped already
        };
        driver.stop(id, grace).await?;
        self.owners().remove(id);
        Ok(())
    }

    async fn adopt(&self) -> Result<Vec<InstanceInfo>, DriverError> {
        let mut adopted = self.process.adopt().await?;
        let mut owners: Vec<(String, Owner)> = adopted
            .iter()
            .map(|i| (i.id.clone(), Owner::Process))
            .collect();
        // A failure here must not keep process instances from coming back.
        match self.container.adopt().await {
            Ok(infos) => {
                owners.extend(infos.iter().map(|i| (i.id.clone(), Owner::Container)));
                adopted.extend(infos);
            }
            Err(error) => {
                tracing::warn!(%error, "Could not adopt the containers of the previous run.")
            }
        }
        self.owners().extend(owners);
        Ok(adopted)
    }

    fn log_path(&self, id: &str) -> Option<PathBuf> {
        self.driver_of(id)?.log_path(id)
    }
}
