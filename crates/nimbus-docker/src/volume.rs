//! Named volumes: the user's `NAME` is the engine's `nimbus-vol-NAME`, labelled with the owning
//! data dir, so `list_volumes` shows only this server's volumes. Data in a volume outlives
//! containers, versions and server restarts; only `delete_volume` removes it, and not while a
//! container still mounts it.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{Volume, VolumeCreateRequest};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveVolumeOptions,
};

use crate::container::{check_volume_name, engine_volume_name, LABEL_DATA, LABEL_VOLUME};
use crate::error::{status_code, DockerError};
use crate::DockerDriver;

/// A volume of this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    /// The user's name.
    pub name: String,
    /// The engine's name, `nimbus-vol-{name}`.
    pub engine_name: String,
    /// RFC 3339, as the engine reports it.
    pub created_at: Option<String>,
    /// Names of the containers (running or not) that mount it, sorted.
    pub used_by: Vec<String>,
}

// === impl DockerDriver ===

impl DockerDriver {
    /// Creates an empty volume. [`DockerError::VolumeExists`] if the name is taken.
    pub async fn create_volume(&self, name: &str) -> Result<VolumeInfo, DockerError> {
        check_name(name)?;
        let engine_name = engine_volume_name(name);
        match self.engine().inspect_volume(&engine_name).await {
            Ok(_) => return Err(DockerError::VolumeExists(name.to_owned())),
            Err(error) if DockerError::is_not_found(&error) => {}
            Err(error) => {
                return Err(DockerError::api(format!("inspect volume {engine_name}"))(
                    error,
                ))
            }
        }
        let request = VolumeCreateRequest {
            name: Some(engine_name.clone()),
            labels: Some(HashMap::from([
                (LABEL_DATA.to_owned(), self.data_label().to_owned()),
                (LABEL_VOLUME.to_owned(), name.to_owned()),
            ])),
            ..VolumeCreateRequest::default()
        };
        let volume = self
            .engine()
            .create_volume(request)
            .await
            .map_err(DockerError::api(format!("create volume {engine_name}")))?;
        tracing::info!(volume = name, "Created volume.");
        Ok(VolumeInfo {
            name: name.to_owned(),
            engine_name,
            created_at: volume.created_at,
            used_by: Vec::new(),
        })
    }

    /// This server's volumes, sorted by name, with the containers that mount each.
    pub async fn list_volumes(&self) -> Result<Vec<VolumeInfo>, DockerError> {
        let filters = self.data_filter();
        let options = ListVolumesOptionsBuilder::new().filters(&filters).build();
        let volumes = self
            .engine()
            .list_volumes(Some(options))
            .await
            .map_err(DockerError::api("list volumes"))?
            .volumes
            .unwrap_or_default();
        let containers = self
            .engine()
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(DockerError::api("list containers"))?;
        let mut used_by: HashMap<String, Vec<String>> = HashMap::new();
        for container in containers {
            let name = summary_name(container.names.as_deref());
            for mount in container.mounts.unwrap_or_default() {
                if let Some(volume) = mount.name {
                    used_by.entry(volume).or_default().push(name.clone());
                }
            }
        }
        let mut listed = BTreeMap::new();
        for volume in volumes {
            let Some(name) = volume.labels.get(LABEL_VOLUME).cloned() else {
                continue;
            };
            let mut users = used_by.remove(&volume.name).unwrap_or_default();
            users.sort();
            listed.insert(
                name.clone(),
                VolumeInfo {
                    name,
                    engine_name: volume.name,
                    created_at: volume.created_at,
                    used_by: users,
                },
            );
        }
        Ok(listed.into_values().collect())
    }

    /// Deletes a volume and its data. Refused with [`DockerError::VolumeInUse`] while any
    /// container (running or stopped but not removed) mounts it.
    pub async fn delete_volume(&self, name: &str) -> Result<(), DockerError> {
        let volume = self.our_volume(name).await?;
        let users = self.volume_users(&volume.name).await?;
        if !users.is_empty() {
            return Err(DockerError::VolumeInUse {
                name: name.to_owned(),
                containers: users,
            });
        }
        match self
            .engine()
            .remove_volume(&volume.name, None::<RemoveVolumeOptions>)
            .await
        {
            Ok(()) => {
                tracing::info!(volume = name, "Deleted volume.");
                Ok(())
            }
            Err(error) if DockerError::is_not_found(&error) => {
                Err(DockerError::VolumeMissing(name.to_owned()))
            }
            // A container took it between our check and the delete.
            Err(error) if status_code(&error) == Some(409) => Err(DockerError::VolumeInUse {
                name: name.to_owned(),
                containers: self.volume_users(&volume.name).await.unwrap_or_default(),
            }),
            Err(error) => Err(DockerError::api(format!("remove volume {}", volume.name))(
                error,
            )),
        }
    }

    /// The engine's volume for a user name, if it exists and is this server's.
    pub(crate) async fn our_volume(&self, name: &str) -> Result<Volume, DockerError> {
        check_name(name)?;
        let engine_name = engine_volume_name(name);
        match self.engine().inspect_volume(&engine_name).await {
            Ok(volume)
                if volume.labels.get(LABEL_DATA).map(String::as_str) == Some(self.data_label()) =>
            {
                Ok(volume)
            }
            Ok(_) => Err(DockerError::VolumeMissing(name.to_owned())),
            Err(error) if DockerError::is_not_found(&error) => {
                Err(DockerError::VolumeMissing(name.to_owned()))
            }
            Err(error) => Err(DockerError::api(format!("inspect volume {engine_name}"))(
                error,
            )),
        }
    }

    /// Names of all containers, of any owner, that mount the engine volume.
    async fn volume_users(&self, engine_name: &str) -> Result<Vec<String>, DockerError> {
        let filters = HashMap::from([("volume", vec![engine_name.to_owned()])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let mut names: Vec<String> = self
            .engine()
            .list_containers(Some(options))
            .await
            .map_err(DockerError::api("list containers"))?
            .into_iter()
            .map(|c| summary_name(c.names.as_deref()))
            .collect();
        names.sort();
        Ok(names)
    }
}

fn check_name(name: &str) -> Result<(), DockerError> {
    check_volume_name(name).map_err(|reason| DockerError::Invalid {
        what: "volume name",
        value: name.to_owned(),
        reason,
    })
}

/// A container's name from a list entry (`/nimbus-x` → `nimbus-x`).
pub(crate) fn summary_name(names: Option<&[String]>) -> String {
    names
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_owned())
        .unwrap_or_default()
}
