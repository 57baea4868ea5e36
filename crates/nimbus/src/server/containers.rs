//! The API's [`ContainerEngine`] over the Docker driver, and the mapping of the driver's errors to
//! the API's one error shape (which status, which code, which field).

use std::path::Path;
use std::sync::Arc;

use axum::http::StatusCode;
use nimbus_api::{
    ApiError, BuildFailure, BuiltImage, ContainerEngine, LineSink, TaggedImage, VolumeInfo,
};
use nimbus_docker::{
    BuildError, DockerDriver, DockerError, DockerLink, PullOutcome, RemoveOutcome,
};

/// The Docker driver, as the API sees it: connected on first use if Docker came up after the
/// server, a 503 `docker_unavailable` saying how to start it while it is not there.
pub struct DockerEngine(pub Arc<DockerLink>);

impl DockerEngine {
    async fn driver(&self) -> Result<&Arc<DockerDriver>, ApiError> {
        self.0
            .get()
            .await
            .map_err(|reason| nimbus_api::containers::unavailable(&reason))
    }
}

#[async_trait::async_trait]
impl ContainerEngine for DockerEngine {
    async fn image_exists(&self, image: &str) -> Result<bool, ApiError> {
        self.driver()
            .await?
            .image_exists(image)
            .await
            .map_err(api_error)
    }

    async fn pull(&self, image: &str, progress: LineSink) -> Result<bool, ApiError> {
        let outcome = self
            .driver()
            .await?
            .pull(image, move |line| {
                let _ = progress.send(line);
            })
            .await
            .map_err(api_error)?;
        Ok(outcome == PullOutcome::Pulled)
    }

    async fn build(
        &self,
        context: &Path,
        dockerfile: Option<&Path>,
        tag: &str,
        output: LineSink,
    ) -> Result<BuiltImage, BuildFailure> {
        let driver = self.driver().await.map_err(|error| BuildFailure {
            error,
            failing_step: None,
        })?;
        let built = driver
            .build(context, dockerfile, tag, move |line| {
                let _ = output.send(line);
            })
            .await;
        match built {
            Ok(outcome) => Ok(BuiltImage {
                image_id: outcome.image_id,
                duration: outcome.duration,
            }),
            Err(error) => Err(build_failure(error)),
        }
    }

    async fn built_images(&self) -> Result<Vec<TaggedImage>, ApiError> {
        // Nothing was built while there is no Docker; the image collector waits for it quietly.
        let Some(driver) = self.0.connected() else {
            return Ok(Vec::new());
        };
        let built = driver.built_images().await.map_err(api_error)?;
        Ok(built
            .into_iter()
            .map(|image| TaggedImage {
                tag: image.tag,
                id: image.id,
            })
            .collect())
    }

    async fn remove_image(&self, image: &str) -> Result<bool, ApiError> {
        match self
            .driver()
            .await?
            .remove_image(image)
            .await
            .map_err(api_error)?
        {
            RemoveOutcome::Removed | RemoveOutcome::Missing => Ok(true),
            RemoveOutcome::InUse => Ok(false),
        }
    }

    async fn create_volume(&self, name: &str) -> Result<VolumeInfo, ApiError> {
        self.driver()
            .await?
            .create_volume(name)
            .await
            .map(volume_info)
            .map_err(api_error)
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>, ApiError> {
        let volumes = self
            .driver()
            .await?
            .list_volumes()
            .await
            .map_err(api_error)?;
        Ok(volumes.into_iter().map(volume_info).collect())
    }

    async fn delete_volume(&self, name: &str) -> Result<(), ApiError> {
        self.driver()
            .await?
            .delete_volume(name)
            .await
            .map_err(api_error)
    }
}

fn volume_info(volume: nimbus_docker::VolumeInfo) -> VolumeInfo {
    VolumeInfo {
        name: volume.name,
        created_at: volume.created_at,
        used_by: volume.used_by,
    }
}

/// Whose fault and which code: a missing engine is 503, a missing thing 404, a clash 409, bad
/// input 400, a registry failure 502, the engine's own trouble 500.
pub fn api_error(error: DockerError) -> ApiError {
    let (status, code, field) = match &error {
        DockerError::NotRunning { .. } | DockerError::UnsupportedHost(_) => {
            return nimbus_api::containers::unavailable(&error.to_string())
        }
        DockerError::ImageMissing(_) => (StatusCode::NOT_FOUND, "image_not_found", "image"),
        DockerError::PullFailed { .. } => (StatusCode::BAD_GATEWAY, "pull_failed", "image"),
        DockerError::VolumeMissing(_) => (StatusCode::NOT_FOUND, "volume_not_found", "name"),
        DockerError::VolumeExists(_) => (StatusCode::CONFLICT, "volume_exists", "name"),
        DockerError::VolumeInUse { .. } => (StatusCode::CONFLICT, "volume_in_use", "name"),
        DockerError::Invalid { what, .. } => {
            let field = if what.contains("volume") {
                "name"
            } else {
                "image"
            };
            (StatusCode::BAD_REQUEST, "invalid_input", field)
        }
        DockerError::Api { .. } | DockerError::Io { .. } => {
            tracing::warn!(%error, "Docker call failed.");
            (StatusCode::INTERNAL_SERVER_ERROR, "docker_error", "image")
        }
    };
    ApiError::new(status, code, error.to_string(), Some(field))
}

fn build_failure(error: BuildError) -> BuildFailure {
    match error {
        BuildError::StepFailed {
            ref failing_step, ..
        } => BuildFailure {
            failing_step: failing_step.clone(),
            error: ApiError::new(
                StatusCode::BAD_REQUEST,
                "build_failed",
                error.to_string(),
                Some("source"),
            ),
        },
        BuildError::Context { .. } => BuildFailure {
            failing_step: None,
            error: ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_context",
                error.to_string(),
                Some("source"),
            ),
        },
        BuildError::Docker(error) => BuildFailure {
            failing_step: None,
            error: api_error(error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_errors_map_to_statuses() {
        let cases = [
            (
                DockerError::NotRunning {
                    detail: "no socket".into(),
                },
                503,
                "docker_unavailable",
            ),
            (
                DockerError::ImageMissing("x".into()),
                404,
                "image_not_found",
            ),
            (
                DockerError::PullFailed {
                    image: "x".into(),
                    message: "no registry".into(),
                },
                502,
                "pull_failed",
            ),
            (
                DockerError::VolumeMissing("d".into()),
                404,
                "volume_not_found",
            ),
            (DockerError::VolumeExists("d".into()), 409, "volume_exists"),
            (
                DockerError::VolumeInUse {
                    name: "d".into(),
                    containers: vec!["nimbus-a".into()],
                },
                409,
                "volume_in_use",
            ),
        ];
        for (error, status, code) in cases {
            let mapped = api_error(error);
            assert_eq!(
                (mapped.status.as_u16(), mapped.code.as_str()),
                (status, code)
            );
        }
        let failure = build_failure(BuildError::StepFailed {
            failing_step: Some("Step 3/4 : RUN exit 3".into()),
            message: "returned a non-zero code: 3".into(),
            log: String::new(),
        });
        assert_eq!(
            failure.failing_step.as_deref(),
            Some("Step 3/4 : RUN exit 3")
        );
        assert!(
            failure.error.message.contains("Step 3/4 : RUN exit 3"),
            "{}",
            failure.error.message
        );
    }
}
