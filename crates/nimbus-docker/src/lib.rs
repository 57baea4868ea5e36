//! The Docker runtime of Nimbus: runs instances as containers on the local Docker Engine behind the
//! same [`nimbus_runtime::Driver`] trait as the process driver, and manages what containers need:
//! images (pull; build from a source folder), named volumes, and resource limits.
//!
//! It talks to the engine's HTTP API over its unix socket with `bollard`, never through the
//! `docker` CLI. Every container is named `nimbus-{instance id}`, runs with host networking on the
//! loopback port the caller chose (passed as `PORT`), has CPU and memory limits and a size-capped
//! tmpfs at `/tmp`, and carries labels (`nimbus.service`, `nimbus.version`, `nimbus.instance`,
//! `nimbus.namespace`, `nimbus.port`, `nimbus.data` = the server's data dir). The labels are what
//! re-adoption after a server restart relies on: running containers of our data dir come back as
//! instances, everything else of ours is removed.
//!
//! Logs: the engine keeps each container's output (json-file, capped); a follower task per instance
//! copies it into `DATA/logs/NS/SERVICE/VERSION/ID.log`, the process driver's layout, so the same
//! log readers work. It remembers the time of the last entry copied in `DATA/docker/ID.cursor`, so
//! a follower resumed after a restart neither repeats lines nor loses the ones logged meanwhile.
//!
//! # Layout
//! - [`DockerDriver`], [`DockerConfig`] (`driver`): connecting, the `Driver` impl, log followers and
//!   exit watchers.
//! - [`DockerLink`] (`link`): the driver once Docker answers; a server started before `dockerd`
//!   connects the first time a container is asked for after it comes up.
//! - `image`: [`DockerDriver::pull`], [`DockerDriver::build`], [`DockerDriver::image_exists`], and
//!   the pure helpers they use ([`split_image_ref`], [`LineSplitter`], [`failing_step`]).
//! - `volume`: [`DockerDriver::create_volume`], [`DockerDriver::list_volumes`],
//!   [`DockerDriver::delete_volume`] (`NAME` is the engine's `nimbus-vol-NAME`).
//! - [`context`]: the build context tar minus what `.dockerignore` excludes ([`context::IgnoreRules`]
//!   is pure).
//! - [`container`] (pure): spec validation, the engine's container config, labels and back.
//! - [`timestamp`] (pure): the engine's RFC 3339 log timestamps and the follower's cursor.
//! - `error`: [`DockerError`], [`BuildError`].

#![forbid(unsafe_code)]

pub mod container;
pub mod context;
pub mod timestamp;

mod driver;
mod error;
mod image;
mod link;
mod volume;

pub use driver::{resolve_socket, DockerConfig, DockerDriver, DEFAULT_SOCKET};
pub use error::{BuildError, DockerError};
pub use image::{
    failing_step, split_image_ref, BuildOutcome, LineSplitter, PullOutcome, RemoveOutcome,
    TaggedImage,
};
pub use link::DockerLink;
pub use volume::VolumeInfo;
