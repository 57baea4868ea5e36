//! Collection of built images, so builds do not fill the disk. An image this server built
//! (`nimbus/{ns}/{service}:b{N}`, labelled with its data dir) is kept while a version runs it or
//! its build is still listed (the newest [`KEEP_BUILDS`](crate::builds::KEEP_BUILDS) of the
//! service, so `nimbus deploy --build bN` works for every build `nimbus logs --build` can show);
//! any other is removed. One a container still uses is skipped and tried again shortly.
//! Images the server did not build — pulled ones, another server's builds on the same engine —
//! are never touched.
//!
//! The collector sweeps at start, when woken (a build finished, a version or service was
//! deleted) and every [`SWEEP_EVERY`].

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use tokio::sync::watch;

use crate::builds::{build_number, image_tag};
use crate::{ApiError, ApiState, Containers, TaggedImage};

/// The sweep when nothing wakes the collector (it also catches what a crash left).
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// The next sweep when an image was still used by a container (one being stopped).
const RETRY_IN_USE: Duration = Duration::from_secs(3);
/// Retries for images in use before falling back to [`SWEEP_EVERY`].
const MAX_IN_USE_RETRIES: u32 = 20;

/// The built images nothing needs: the `nimbus/{ns}/{service}:b{N}` tags in `built` that
/// `needed` (the images of versions and of listed builds) names neither by tag nor by id. Other
/// tags are left alone. A version may name the image with Docker Hub's host (the engine lists
/// tags without it), or by its id as the engine accepts one: `sha256:…`, the bare hex, or a
/// prefix of it such as the 12 characters `docker images` shows.
pub fn unneeded_images<'a>(built: &'a [TaggedImage], needed: &HashSet<&str>) -> Vec<&'a str> {
    let by_tag: HashSet<&str> = needed
        .iter()
        .map(|image| {
            ["docker.io/", "index.docker.io/"]
                .iter()
                .find_map(|host| image.strip_prefix(host))
                .unwrap_or(image)
        })
        .collect();
    // Any hex reference counts as a possible id prefix: keeping an image too long is harmless,
    // removing one a version runs is not.
    let by_id: Vec<&str> = needed
        .iter()
        .map(|image| image.strip_prefix("sha256:").unwrap_or(image))
        .filter(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    built
        .iter()
        .filter(|image| {
            let id = image.id.strip_prefix("sha256:").unwrap_or(&image.id);
            is_build_tag(&image.tag)
                && !by_tag.contains(image.tag.as_str())
                && !by_id.iter().any(|prefix| id.starts_with(prefix))
        })
        .map(|image| image.tag.as_str())
        .collect()
}

/// Whether `tag` has the shape [`image_tag`] gives a build's image.
fn is_build_tag(tag: &str) -> bool {
    let Some((repo, id)) = tag.rsplit_once(':') else {
        return false;
    };
    let mut parts = repo.split('/');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("nimbus"), Some(ns), Some(service), None) if !ns.is_empty() && !service.is_empty()
    ) && build_number(id).is_some()
}

/// The image tags of the builds listed under `builds_dir` (`{ns}/{service}/b{N}.json`).
fn listed_build_images(builds_dir: &Path) -> Vec<String> {
    let dirs = |path: &Path| -> Vec<(String, std::path::PathBuf)> {
        std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| Some((entry.file_name().into_string().ok()?, entry.path())))
            // `.incoming` holds contexts being received, not builds.
            .filter(|(name, _)| !name.starts_with('.'))
            .collect()
    };
    let mut tags = Vec::new();
    for (ns, ns_dir) in dirs(builds_dir) {
        for (service, service_dir) in dirs(&ns_dir) {
            for (name, _) in dirs(&service_dir) {
                if let Some(id) = name
                    .strip_suffix(".json")
                    .filter(|id| build_number(id).is_some())
                {
                    tags.push(image_tag(&ns, &service, id));
                }
            }
        }
    }
    tags
}

/// One pass: removes the built images nothing needs. Returns how many of them a container still
/// uses (left for a later pass).
pub async fn sweep(state: &ApiState) -> Result<usize, ApiError> {
    let Containers::Available(engine) = &state.containers else {
        return Ok(0);
    };
    // The engine first, then the records and versions: a build writes its record before its
    // image is tagged, so every image listed here is either needed by what is read next or
    // really unneeded.
    let built = engine.built_images().await?;
    if built.is_empty() {
        return Ok(0);
    }
    // Off the runtime's thread: the gateway shares it, and a big store takes a while to read.
    let (builds_dir, store) = (state.builds_dir.clone(), state.store.clone());
    let (listed, versions) =
        tokio::task::spawn_blocking(move || (listed_build_images(&builds_dir), store.snapshot()))
            .await
            .map_err(|error| {
                ApiError::internal(format!("cannot read the builds and versions: {error}"))
            })?;
    let versions = versions?.versions;
    let needed: HashSet<&str> = listed
        .iter()
        .map(String::as_str)
        .chain(versions.iter().filter_map(|v| v.spec.image.as_deref()))
        .collect();
    let mut in_use = 0;
    for tag in unneeded_images(&built, &needed) {
        if !engine.remove_image(tag).await? {
            in_use += 1;
        }
    }
    Ok(in_use)
}

/// Sweeps until shutdown: at start, when woken (`ApiState::collect_images`), every
/// [`SWEEP_EVERY`], and soon again while an unneeded image is still in use. Returns at once
/// without a container engine.
pub async fn run_collector(state: ApiState, mut shutdown: watch::Receiver<bool>) {
    if matches!(state.containers, Containers::Unavailable(_)) {
        return;
    }
    let mut in_use_retries = 0;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = state.collect_images.notified() => in_use_retries = 0,
            _ = shutdown.changed() => return,
        }
        wait = match sweep(&state).await {
            Ok(in_use) if in_use > 0 && in_use_retries < MAX_IN_USE_RETRIES => {
                in_use_retries += 1;
                RETRY_IN_USE
            }
            Ok(_) => SWEEP_EVERY,
            Err(error) => {
                tracing::warn!(code = %error.code, message = %error.message, "Cannot collect unneeded images; trying again later.");
                SWEEP_EVERY
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tag` with an id made from `n` (64 hex digits, as the engine gives them).
    fn tagged(tag: &str, n: u8) -> TaggedImage {
        TaggedImage {
            tag: tag.to_string(),
            id: format!("sha256:{}", format!("{n:02x}").repeat(32)),
        }
    }

    #[test]
    fn which_built_images_are_unneeded() {
        let built: Vec<TaggedImage> = [
            "nimbus/default/web:b1",  // unneeded: not listed, no version
            "nimbus/default/web:b2",  // a version runs it
            "nimbus/default/web:b3",  // listed build
            "nimbus/team/api:b12",    // unneeded, another namespace
            "nimbus/default/web:v1",  // not a build tag
            "nimbus/web:b1",          // not a build tag (no namespace)
            "nimbus/a/b/c:b1",        // not a build tag (too deep)
            "nimbus/default/web:b01", // not a build id
            "busybox:latest",         // pulled
            "nimbus/default/web",     // no tag
        ]
        .iter()
        .zip(1..)
        .map(|(tag, n)| tagged(tag, n))
        .collect();
        let needed = HashSet::from([
            "docker.io/nimbus/default/web:b2", // as a version may name it
            "nimbus/default/web:b3",
        ]);
        assert_eq!(
            unneeded_images(&built, &needed),
            ["nimbus/default/web:b1", "nimbus/team/api:b12"]
        );
        assert!(unneeded_images(&[], &needed).is_empty());
        let all_needed = HashSet::from([
            "nimbus/default/web:b1",
            "nimbus/default/web:b2",
            "nimbus/default/web:b3",
            "nimbus/team/api:b12",
        ]);
        assert_eq!(
            unneeded_images(&built, &all_needed),
            Vec::<&str>::new(),
            "an image a version or a listed build needs stays"
        );
    }

    #[test]
    fn an_image_a_version_names_by_id_stays() {
        let built = [
            tagged("nimbus/default/web:b1", 0xab),
            tagged("nimbus/default/web:b2", 0xcd),
            tagged("nimbus/default/web:b3", 0xef),
        ];
        let full = format!("sha256:{}", "ab".repeat(32));
        let bare = "cd".repeat(32);
        for (needed, left) in [
            // The full id, the bare hex, the short id `docker images` shows.
            (
                vec![full.as_str()],
                vec!["nimbus/default/web:b2", "nimbus/default/web:b3"],
            ),
            (
                vec![bare.as_str()],
                vec!["nimbus/default/web:b1", "nimbus/default/web:b3"],
            ),
            (
                vec!["efefefefefef"],
                vec!["nimbus/default/web:b1", "nimbus/default/web:b2"],
            ),
            (
                vec!["sha256:efef"],
                vec!["nimbus/default/web:b1", "nimbus/default/web:b2"],
            ),
            // Not an id of these images, or not hex at all.
            (
                vec!["sha256:0000", "abz", "web", "sha256:"],
                vec![
                    "nimbus/default/web:b1",
                    "nimbus/default/web:b2",
                    "nimbus/default/web:b3",
                ],
            ),
        ] {
            let needed: HashSet<&str> = needed.into_iter().collect();
            assert_eq!(unneeded_images(&built, &needed), left, "needed: {needed:?}");
        }
    }

    #[test]
    fn listed_builds_are_read_from_the_record_files() {
        let dir = std::env::temp_dir().join(format!("nimbus-images-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for file in [
            "default/web/b1.json",
            "default/web/b1.log",
            "default/web/b2.json",
            "team/api/b7.json",
            "team/api/notes.json",
        ] {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "{}").unwrap();
        }
        std::fs::create_dir_all(dir.join(".incoming")).unwrap();
        let mut tags = listed_build_images(&dir);
        tags.sort();
        assert_eq!(
            tags,
            [
                "nimbus/default/web:b1",
                "nimbus/default/web:b2",
                "nimbus/team/api:b7"
            ]
        );
        assert!(listed_build_images(&dir.join("missing")).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
