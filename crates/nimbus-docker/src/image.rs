//! Images: [`DockerDriver::image_exists`], [`DockerDriver::pull`] (skipped when the image is
//! present) and [`DockerDriver::build`] (a source folder packed as a tar, built by the engine's
//! classic builder, its output streamed line by line as it arrives, the image labelled with the
//! server's data dir), [`DockerDriver::built_images`] and [`DockerDriver::remove_image`] for the
//! collection of built images nothing needs any more, plus the pure helpers they use: image
//! references, build output lines, the failing step.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bollard::errors::Error as EngineError;
use bollard::models::{CreateImageInfo, ImageId};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateImageOptionsBuilder, ListImagesOptionsBuilder,
    RemoveImageOptionsBuilder,
};
use futures_util::StreamExt;

use crate::container::LABEL_DATA;
use crate::context::{append_context, dockerfile_in_context, OUTSIDE_DOCKERFILE};
use crate::error::{BuildError, DockerError};
use crate::DockerDriver;

#[cfg(test)]
mod tests;

/// What [`DockerDriver::pull`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullOutcome {
    /// The image was there already; nothing was downloaded.
    AlreadyPresent,
    /// The image was downloaded.
    Pulled,
}

/// What [`DockerDriver::remove_image`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// The tag is gone (and the image with it, when it had no other tag).
    Removed,
    /// A container (running or stopped) still uses the image; nothing changed.
    InUse,
    /// There was no such image.
    Missing,
}

/// One tag of an image this server built, with the image's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedImage {
    /// e.g. `nimbus/default/web:b3`.
    pub tag: String,
    /// The engine's id, `sha256:…`.
    pub id: String,
}

/// A successful build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutcome {
    /// Wall time from packing the context to the tagged image (metering bills build seconds).
    pub duration: Duration,
    /// The engine's id of the image, `sha256:…`.
    pub image_id: String,
    /// The build output, one line per line, as streamed to the caller.
    pub log: String,
}

// === impl DockerDriver ===

impl DockerDriver {
    /// Whether the engine has `image` locally (by reference or id).
    pub async fn image_exists(&self, image: &str) -> Result<bool, DockerError> {
        match self.engine().inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(error) if DockerError::is_not_found(&error) => Ok(false),
            Err(error) => Err(DockerError::api(format!("inspect image {image}"))(error)),
        }
    }

    /// Every tag of the images this server built (labelled with its data dir), with its image's
    /// id.
    pub async fn built_images(&self) -> Result<Vec<TaggedImage>, DockerError> {
        let filters = self.data_filter();
        let options = ListImagesOptionsBuilder::new().filters(&filters).build();
        let images = self
            .engine()
            .list_images(Some(options))
            .await
            .map_err(DockerError::api("list images"))?;
        Ok(images
            .into_iter()
            .flat_map(|image| {
                let id = image.id;
                image
                    .repo_tags
                    .into_iter()
                    .filter(|tag| tag != "<none>:<none>")
                    .map(move |tag| TaggedImage {
                        tag,
                        id: id.clone(),
                    })
            })
            .collect())
    }

    /// Removes the tag `image` (the image too once no tag is left), unless a container uses it.
    pub async fn remove_image(&self, image: &str) -> Result<RemoveOutcome, DockerError> {
        let options = RemoveImageOptionsBuilder::new().build();
        match self.engine().remove_image(image, Some(options), None).await {
            Ok(_) => {
                tracing::info!(image, "Removed an image nothing uses.");
                Ok(RemoveOutcome::Removed)
            }
            Err(error) if DockerError::is_not_found(&error) => Ok(RemoveOutcome::Missing),
            Err(error) if crate::error::status_code(&error) == Some(409) => {
                Ok(RemoveOutcome::InUse)
            }
            Err(error) => Err(DockerError::api(format!("remove image {image}"))(error)),
        }
    }

    /// Makes `image` present locally: returns at once when it already is, else pulls it from its
    /// registry, calling `progress` with one line per progress message.
    pub async fn pull(
        &self,
        image: &str,
        mut progress: impl FnMut(String) + Send,
    ) -> Result<PullOutcome, DockerError> {
        if self.image_exists(image).await? {
            return Ok(PullOutcome::AlreadyPresent);
        }
        let (repo, tag) = split_image_ref(image).map_err(|reason| DockerError::Invalid {
            what: "image reference",
            value: image.to_owned(),
            reason,
        })?;
        tracing::info!(image, "Pulling image.");
        let options = CreateImageOptionsBuilder::new()
            .from_image(&repo)
            .tag(&tag)
            .build();
        let failed = |message: String| DockerError::PullFailed {
            image: image.to_owned(),
            message,
        };
        let mut stream = self.engine().create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(line) = progress_line(&info) {
                        progress(line);
                    }
                }
                Err(EngineError::DockerStreamError { error }) => return Err(failed(error)),
                Err(EngineError::DockerResponseServerError { message, .. }) => {
                    return Err(failed(message))
                }
                Err(error) => return Err(DockerError::api(format!("pull image {image}"))(error)),
            }
        }
        if !self.image_exists(image).await? {
            return Err(failed("the engine finished without the image".to_owned()));
        }
        Ok(PullOutcome::Pulled)
    }

    /// Builds `context_dir` into an image tagged `tag`, streaming each output line to `output` as
    /// it arrives. `dockerfile` defaults to `Dockerfile` in the context; a relative path is taken
    /// inside the context; a file outside the context is packed along with it.
    ///
    /// The whole context (`.dockerignore` applied) is packed in memory.
    pub async fn build(
        &self,
        context_dir: &Path,
        dockerfile: Option<&Path>,
        tag: &str,
        mut output: impl FnMut(String) + Send,
    ) -> Result<BuildOutcome, BuildError> {
        let started = Instant::now();
        let (context, dockerfile) = (context_dir.to_path_buf(), dockerfile.map(Path::to_path_buf));
        let (tar, dockerfile_name) =
            tokio::task::spawn_blocking(move || pack_context(&context, dockerfile.as_deref()))
                .await
                .map_err(|error| BuildError::Context {
                    path: context_dir.to_path_buf(),
                    source: std::io::Error::other(error),
                })??;
        tracing::info!(tag, context = %context_dir.display(), bytes = tar.len(), "Building image.");

        // The label says which server built the image, so its collection never touches another
        // server's images on a shared engine.
        let labels = HashMap::from([(LABEL_DATA, self.data_label())]);
        let options = BuildImageOptionsBuilder::new()
            .dockerfile(&dockerfile_name)
            .t(tag)
            .labels(&labels)
            .rm(true)
            // Remove intermediate containers of failed steps too: nothing leaks.
            .forcerm(true)
            .build();
        let mut stream =
            self.engine()
                .build_image(options, None, Some(bollard::body_full(tar.into())));
        let mut lines = LineSplitter::default();
        let mut log: Vec<String> = Vec::new();
        let mut image_id = None;
        let mut emit = |line: String, log: &mut Vec<String>| {
            output(line.clone());
            log.push(line);
        };
        while let Some(item) = stream.next().await {
            let message = match item {
                Ok(info) => {
                    for line in info.stream.iter().flat_map(|text| lines.push(text)) {
                        emit(line, &mut log);
                    }
                    if let Some(status) = info.status.filter(|s| !s.trim().is_empty()) {
                        emit(status.trim_end().to_owned(), &mut log);
                    }
                    if let Some(ImageId { id: Some(id) }) = info.aux {
                        image_id = Some(id);
                    }
                    continue;
                }
                // The Dockerfile is wrong or a step failed; the engine says which in the stream
                // or, for a Dockerfile it cannot even read, in the reply.
                Err(EngineError::DockerStreamError { error }) => error,
                Err(EngineError::DockerResponseServerError {
                    status_code: 400 | 500,
                    message,
                }) => message,
                Err(error) => return Err(DockerError::api(format!("build {tag}"))(error).into()),
            };
            if let Some(rest) = lines.finish() {
                emit(rest, &mut log);
            }
            let failing_step = failing_step(&log);
            emit(format!("ERROR: {}", message.trim_end()), &mut log);
            return Err(BuildError::StepFailed {
                failing_step,
                message: message.trim_end().to_owned(),
                log: log.join("\n"),
            });
        }
        if let Some(rest) = lines.finish() {
            emit(rest, &mut log);
        }
        let image_id = match image_id {
            Some(id) => id,
            // Older engines announce the id only in the text ("Successfully built …").
            None => self
                .engine()
                .inspect_image(tag)
                .await
                .map_err(DockerError::api(format!("inspect the built image {tag}")))?
                .id
                .unwrap_or_default(),
        };
        let duration = started.elapsed();
        tracing::info!(tag, %image_id, ?duration, "Built image.");
        Ok(BuildOutcome {
            duration,
            image_id,
            log: log.join("\n"),
        })
    }
}

/// Tars the context (symlinks kept as links, `.dockerignore` applied) and returns it with the
/// Dockerfile's name in it.
fn pack_context(
    context_dir: &Path,
    dockerfile: Option<&Path>,
) -> Result<(Vec<u8>, String), BuildError> {
    let context_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BuildError::Context { path, source }
    };
    let context = std::fs::canonicalize(context_dir).map_err(context_err(context_dir))?;
    if !context.is_dir() {
        return Err(context_err(context_dir)(std::io::Error::other(
            "not a directory",
        )));
    }
    let dockerfile = match dockerfile {
        None => context.join("Dockerfile"),
        Some(path) if path.is_relative() => context.join(path),
        Some(path) => path.to_path_buf(),
    };
    let dockerfile = std::fs::canonicalize(&dockerfile).map_err(context_err(&dockerfile))?;
    let inside = dockerfile_in_context(&context, &dockerfile);
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    append_context(&mut builder, &context, inside.as_deref()).map_err(context_err(&context))?;
    let name = match inside {
        Some(name) => name,
        None => {
            builder
                .append_path_with_name(&dockerfile, OUTSIDE_DOCKERFILE)
                .map_err(context_err(&dockerfile))?;
            OUTSIDE_DOCKERFILE.to_owned()
        }
    };
    let tar = builder.into_inner().map_err(context_err(&context))?;
    Ok((tar, name))
}

/// Splits a reference into what the engine's pull wants: repository and tag (or digest).
/// Without a tag the engine would pull *every* tag, so `latest` is made explicit.
pub fn split_image_ref(reference: &str) -> Result<(String, String), String> {
    if reference.is_empty()
        || reference
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("must be a non-empty image reference without spaces".to_owned());
    }
    if let Some((repo, digest)) = reference.split_once('@') {
        if repo.is_empty() || digest.is_empty() {
            return Err("a digest reference must be NAME@DIGEST".to_owned());
        }
        return Ok((repo.to_owned(), digest.to_owned()));
    }
    // A colon after the last slash separates the tag; one before it is a registry port.
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].rfind(':') {
        Some(i) => {
            let (repo, tag) = (
                &reference[..last_slash + i],
                &reference[last_slash + i + 1..],
            );
            if repo.is_empty() || tag.is_empty() {
                return Err("must be NAME[:TAG]".to_owned());
            }
            Ok((repo.to_owned(), tag.to_owned()))
        }
        None => Ok((reference.to_owned(), "latest".to_owned())),
    }
}

/// One pull progress message as a line: `ID: STATUS [CURRENT/TOTAL MB]`.
pub fn progress_line(info: &CreateImageInfo) -> Option<String> {
    let status = info
        .status
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())?;
    let mut line = match info.id.as_deref().filter(|s| !s.is_empty()) {
        Some(id) => format!("{id}: {status}"),
        None => status.to_owned(),
    };
    if let Some(detail) = &info.progress_detail {
        match (detail.current, detail.total) {
            (Some(current), Some(total)) if total > 0 => {
                line.push_str(&format!(" {}/{} MB", mb(current), mb(total)))
            }
            (Some(current), _) if current > 0 => line.push_str(&format!(" {} MB", mb(current))),
            _ => {}
        }
    }
    Some(line)
}

/// Bytes as megabytes with one decimal, for progress lines.
fn mb(bytes: i64) -> String {
    format!("{:.1}", bytes as f64 / 1_000_000.0)
}

/// The step the classic builder was running when it failed: the last `Step N/M : …` line.
pub fn failing_step(log: &[String]) -> Option<String> {
    log.iter()
        .rev()
        .find(|line| line.starts_with("Step "))
        .map(|line| line.trim().to_owned())
}

/// Reassembles lines from the engine's text chunks, which may end mid-line.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: String,
}

// === impl LineSplitter ===

impl LineSplitter {
    /// The complete lines `chunk` finishes, without line ends; blank lines are dropped.
    pub fn push(&mut self, chunk: &str) -> Vec<String> {
        self.partial.push_str(chunk);
        let Some(last_newline) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        complete
            .split('\n')
            .map(|line| line.trim_end_matches('\r'))
            .filter(|line| !line.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The unterminated rest, if any.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.partial);
        let rest = rest.trim_end_matches('\r');
        (!rest.trim().is_empty()).then(|| rest.to_owned())
    }
}
