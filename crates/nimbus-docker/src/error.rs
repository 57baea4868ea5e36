//! Errors of the Docker runtime's own calls (images, builds, volumes). The `Driver` methods return
//! [`nimbus_runtime::DriverError`] and carry these inside, so a message always says what to do.

use std::io;
use std::path::PathBuf;

/// Why a call to the engine, or about what lives in it, failed.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The socket is missing or nothing answers on it.
    #[error(
        "Docker is not running: start it with `dockerd` (or `scripts/docker-up.sh`) ({detail})"
    )]
    NotRunning { detail: String },

    /// `DOCKER_HOST` names something other than a unix socket.
    #[error("DOCKER_HOST={0} is not supported: Nimbus talks to Docker over a unix:// socket")]
    UnsupportedHost(String),

    /// The engine answered with an error.
    #[error("Docker could not {action}: {source}")]
    Api {
        action: String,
        #[source]
        source: bollard::errors::Error,
    },

    /// `start` never pulls: the image must be there already.
    #[error("image {0} is not present locally: pull or build it first")]
    ImageMissing(String),

    /// The registry or the engine refused a pull.
    #[error("cannot pull image {image}: {message}")]
    PullFailed { image: String, message: String },

    #[error("volume {0} does not exist: create it with `nimbus volumes create {0}`")]
    VolumeMissing(String),

    #[error("volume {0} already exists")]
    VolumeExists(String),

    /// Deleting a volume a container still mounts.
    #[error("volume {name} is in use by {}: stop them first", containers.join(", "))]
    VolumeInUse {
        name: String,
        containers: Vec<String>,
    },

    /// A volume name or image reference the engine would reject or misread.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },

    /// A file or directory under the data dir could not be used.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Why `build` produced no image.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile is wrong or one of its steps failed. `log` is the build output so far.
    #[error("build failed at {}: {message}", failing_step.as_deref().unwrap_or("the Dockerfile"))]
    StepFailed {
        /// The step that failed, as the builder printed it (`Step 3/4 : RUN make`), when known.
        failing_step: Option<String>,
        message: String,
        log: String,
    },

    /// The source folder or Dockerfile could not be read and packed.
    #[error("cannot pack the build context {}: {source}", path.display())]
    Context {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The engine is unreachable or failed for a reason of its own.
    #[error(transparent)]
    Docker(#[from] DockerError),
}

// === impl DockerError ===

impl DockerError {
    pub(crate) fn api(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Self {
        let action = action.into();
        move |source| Self::Api { action, source }
    }

    /// Whether the engine said 404 (no such container, image or volume).
    pub(crate) fn is_not_found(error: &bollard::errors::Error) -> bool {
        status_code(error) == Some(404)
    }
}

/// The HTTP status of an engine error reply, if it was one.
pub(crate) fn status_code(error: &bollard::errors::Error) -> Option<u16> {
    match error {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}
