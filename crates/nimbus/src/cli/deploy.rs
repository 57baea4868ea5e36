//! `nimbus deploy`: create a version from flags and/or a `nimbus.toml` (docs/nimbus-toml.md),
//! then follow it until it is ready, failed, or 10 minutes have passed. With `--image` the image is
//! pulled first when absent; with `--source DIR` the folder is built first (the build output is
//! streamed to stderr as it happens) and the version runs the built image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nimbus_docker::context;
use nimbus_model::names::validate_name;
use nimbus_model::spec::parse_volume;
use nimbus_model::{ByteSize, ScalingInput, VersionInput, VolumeMount};
use serde::Deserialize;
use serde_json::Value;

use super::views::{ServiceView, VersionView};
use super::{decode, print_json, CliError, Ctx};

/// How often a deploying version is polled.
const POLL_EVERY: Duration = Duration::from_millis(150);
/// How long `deploy` waits for a version to leave `deploying` (Knative's progress deadline):
/// a safety net, as the server fails an instance that is not ready by its `--startup-timeout`
/// (120 s by default), and the reason it gives is worth waiting for.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(600);

/// Flags of `nimbus deploy`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DeployArgs {
    /// Service to deploy a new version of; may come from the file's `service` instead.
    pub service: Option<String>,
    /// Read the deploy from a TOML file (see docs/nimbus-toml.md); flags override its values.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Command that starts the app, run with `sh -c`; it must listen on $PORT (or --port). With
    /// --image or --source it replaces the image's entrypoint.
    #[arg(long, value_name = "CMD")]
    pub command: Option<String>,
    /// Run a container of this image (pulled first when it is not present locally).
    #[arg(long, value_name = "REF", conflicts_with = "source")]
    pub image: Option<String>,
    /// Build this folder's Dockerfile into an image and run it; the build output is shown as it
    /// happens.
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// The Dockerfile for --source (default DIR/Dockerfile); may be outside DIR.
    #[arg(long, value_name = "PATH")]
    pub dockerfile: Option<PathBuf>,
    /// Container CPU limit in cores, e.g. 0.5 (containers only).
    #[arg(long, value_name = "CORES")]
    pub cpu: Option<f64>,
    /// Container memory limit, e.g. 256Mi or 1Gi (containers only).
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Size of the container's /tmp, a tmpfs (default 512Mi).
    #[arg(long, value_name = "SIZE")]
    pub tmp_size: Option<String>,
    /// Mount a volume made with `nimbus volumes create NAME`; repeat for more.
    #[arg(long = "volume", value_name = "NAME:/PATH", value_parser = parse_volume)]
    pub volumes: Vec<VolumeMount>,
    /// Environment variable for the app; repeat for more.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env_pair)]
    pub env: Vec<(String, String)>,
    /// Fixed port the app listens on (default: the engine picks one per instance and passes
    /// PORT). A fixed port runs one instance at a time on the machine.
    #[arg(long, value_name = "N")]
    pub port: Option<u32>,
    /// Path polled for readiness (default /).
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
    /// Instances kept running even without traffic (default 0).
    #[arg(long, value_name = "N")]
    pub min_instances: Option<u32>,
    /// Upper bound on instances (default 10).
    #[arg(long, value_name = "N")]
    pub max_instances: Option<u32>,
    /// Concurrent requests per instance (default 80).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<u32>,
    /// Request timeout in seconds (default 300).
    #[arg(long = "timeout", value_name = "SECS")]
    pub timeout_secs: Option<u64>,
    /// Fraction of --concurrency the autoscaler aims each instance at (default 0.7).
    #[arg(long, value_name = "FRACTION")]
    pub target_utilization: Option<f64>,
    /// Seconds a --min-instances 0 version waits to scale to zero once its stable window (60 s,
    /// `nimbus server --scale-stable-window`) has seen no request (default 30).
    #[arg(long = "scale-to-zero-after", value_name = "SECS")]
    pub scale_to_zero_after_secs: Option<u64>,
    /// Requests that may wait for a free slot (default 10 x concurrency x max instances);
    /// beyond it 503.
    #[arg(long, value_name = "N")]
    pub queue_depth: Option<u32>,
    /// Create the version without moving traffic to it (test it on its own URL first).
    #[arg(long)]
    pub no_traffic: bool,
    /// Always create a new version; without it, a deploy that only changes scaling settings
    /// (instances, concurrency, utilization, scale-to-zero, queue) updates the newest version
    /// in place, as Cloud Run does.
    #[arg(long)]
    pub new_version: bool,
    /// Start from this version's settings (`latest` or e.g. `v3`): flags given replace its
    /// values, the rest are kept. The default when no --command, --image or --source is given,
    /// so `nimbus deploy web --env KEY=VALUE` is the latest version with one more variable.
    #[arg(long, value_name = "VERSION")]
    pub from: Option<String>,
    /// Drop an environment variable of the version deployed from; repeat for more.
    #[arg(long = "remove-env", value_name = "KEY")]
    pub remove_env: Vec<String>,
}

/// `KEY=VALUE`; the value may itself contain `=`.
fn parse_env_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} should look like KEY=VALUE")),
    }
}

/// A `nimbus.toml` file. Every key is optional; unknown keys are an error that names the key.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployFile {
    pub service: Option<String>,
    pub namespace: Option<String>,
    pub command: Option<String>,
    pub image: Option<String>,
    /// Relative to the file's folder.
    pub source: Option<PathBuf>,
    /// Relative to the file's folder.
    pub dockerfile: Option<PathBuf>,
    pub cpu: Option<f64>,
    pub memory: Option<ByteSize>,
    pub tmp_size: Option<ByteSize>,
    /// `["NAME:/path", …]`, as `--volume`.
    #[serde(default)]
    pub volumes: Vec<String>,
    pub port: Option<u32>,
    pub health_path: Option<String>,
    pub min_instances: Option<u32>,
    pub max_instances: Option<u32>,
    pub concurrency: Option<u32>,
    pub timeout_secs: Option<u64>,
    pub target_utilization: Option<f64>,
    pub scale_to_zero_after_secs: Option<u64>,
    pub queue_depth: Option<u32>,
    pub no_traffic: Option<bool>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The service's gateway policy (`[gateway]`, the keys of `nimbus gateway set` as in the
    /// API's `GatewayPolicy`); replaces the current one when given.
    pub gateway: Option<nimbus_model::GatewaySpec>,
}

impl DeployFile {
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    fn load(path: &Path) -> Result<Self, CliError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))?;
        let file = Self::parse(&text)
            .map_err(|e| CliError::Usage(format!("{}: {}", path.display(), e.trim_end())))?;
        Ok(file.relative_to(path.parent().unwrap_or(Path::new("."))))
    }

    /// Makes `source` and `dockerfile` relative to the file's folder, not the working directory.
    fn relative_to(mut self, dir: &Path) -> Self {
        for path in [&mut self.source, &mut self.dockerfile]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
        self
    }
}

/// A folder to build before deploying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePlan {
    pub dir: PathBuf,
    pub dockerfile: Option<PathBuf>,
}

/// A deploy ready to send: where, and the checked body.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployPlan {
    pub namespace: String,
    pub service: String,
    pub input: VersionInput,
    /// Build this first; the built image becomes `input.image`.
    pub source: Option<SourcePlan>,
    pub no_traffic: bool,
    pub new_version: bool,
    /// The version whose settings this deploy starts from (`latest`, `v3`), if any.
    pub from: Option<String>,
    pub remove_env: Vec<String>,
    /// The file's `[gateway]` table, set after the version is created.
    pub gateway: Option<nimbus_model::GatewaySpec>,
}

impl DeployPlan {
    /// Merges the file (if any) with the flags, flags winning, and checks the result with the
    /// model's validators so a bad deploy fails before any request.
    pub fn new(
        args: &DeployArgs,
        file: Option<DeployFile>,
        namespace_flag: Option<&str>,
    ) -> Result<Self, CliError> {
        let file = file.unwrap_or_default();
        let service = args.service.clone().or(file.service).ok_or_else(|| {
            CliError::Usage(
                "which service? use `nimbus deploy SERVICE --command CMD`, or set `service = \"NAME\"` in the file given with -f"
                    .to_string(),
            )
        })?;
        let namespace = namespace_flag
            .map(str::to_string)
            .or(file.namespace)
            .unwrap_or_else(|| nimbus_model::DEFAULT_NAMESPACE.to_string());
        validate_name("service", &service)?;
        validate_name("namespace", &namespace)?;
        let mut env = file.env;
        env.extend(args.env.iter().cloned());
        let (image, source) = image_or_source(args, file.image, file.source, file.dockerfile)?;
        let mut volumes = Vec::new();
        for text in &file.volumes {
            volumes.push(parse_volume(text).map_err(|e| CliError::Usage(format!("volumes: {e}")))?);
        }
        // A --volume flag replaces the file's mount at the same path.
        volumes.retain(|m: &VolumeMount| !args.volumes.iter().any(|f| f.path == m.path));
        volumes.extend(args.volumes.iter().cloned());
        let input = VersionInput {
            command: args.command.clone().or(file.command),
            image,
            cpu: args.cpu.or(file.cpu),
            memory: args.memory.clone().map(ByteSize::Text).or(file.memory),
            tmp_size: args.tmp_size.clone().map(ByteSize::Text).or(file.tmp_size),
            volumes,
            env,
            port: args.port.or(file.port),
            health_path: args.health_path.clone().or(file.health_path),
            min_instances: args.min_instances.or(file.min_instances),
            max_instances: args.max_instances.or(file.max_instances),
            concurrency: args.concurrency.or(file.concurrency),
            timeout_secs: args.timeout_secs.or(file.timeout_secs),
            scaling: ScalingInput {
                target_utilization: args.target_utilization.or(file.target_utilization),
                scale_to_zero_after_secs: args
                    .scale_to_zero_after_secs
                    .or(file.scale_to_zero_after_secs),
                queue_depth: args.queue_depth.or(file.queue_depth),
            },
        };
        // Nothing to run given: the new version is the latest one with these changes.
        let gives_artifact = input.command.is_some() || input.image.is_some() || source.is_some();
        let from = args
            .from
            .clone()
            .or_else(|| (!gives_artifact).then(|| "latest".to_string()));
        match &from {
            // The server checks the merged settings; only it knows the base's.
            Some(from) if from != "latest" => validate_name("from", from)?,
            Some(_) => {}
            None if !args.remove_env.is_empty() => {
                return Err(CliError::Usage(
                    "--remove-env drops variables of the version a deploy starts from: add \
                     --from latest (a deploy with --command, --image or --source starts afresh)"
                        .to_string(),
                ));
            }
            None => {
                // A source deploy runs the image it builds: check it as an image version.
                let mut check = input.clone();
                if source.is_some() {
                    check.image = Some(format!("nimbus/{namespace}/{service}:build"));
                }
                check.resolve()?;
            }
        }
        // Checked in full (compiled as the server compiles it) before anything is deployed:
        // the policy is set after the version is created, and a refusal then would leave the
        // version deployed without it.
        if let Some(gateway) = &file.gateway {
            gateway.validate()?;
            nimbus_gateway::ServicePolicy::compile(gateway)
                .map_err(|e| CliError::Rejected(e.into()))?;
        }
        Ok(Self {
            namespace,
            service,
            input,
            source,
            no_traffic: args.no_traffic || file.no_traffic.unwrap_or(false),
            new_version: args.new_version,
            from,
            remove_env: args.remove_env.clone(),
            gateway: file.gateway,
        })
    }

    /// The `Deploy` body: fields left out are omitted so the server applies its defaults.
    pub fn body(&self) -> Value {
        let mut body = serde_json::Map::new();
        if let Ok(Value::Object(fields)) = serde_json::to_value(&self.input) {
            for (key, value) in fields {
                if key == "scaling" {
                    // The API takes the scaling knobs at the top level.
                    if let Value::Object(knobs) = value {
                        body.extend(knobs.into_iter().filter(|(_, v)| !v.is_null()));
                    }
                    continue;
                }
                let empty_env = key == "env" && value.as_object().is_some_and(|m| m.is_empty());
                let no_volumes = key == "volumes" && value.as_array().is_some_and(|v| v.is_empty());
                if !value.is_null() && !empty_env && !no_volumes {
                    body.insert(key, value);
                }
            }
        }
        if self.no_traffic {
            body.insert("no_traffic".to_string(), Value::Bool(true));
        }
        if self.new_version {
            body.insert("new_version".to_string(), Value::Bool(true));
        }
        if let Some(from) = &self.from {
            body.insert("from".to_string(), Value::String(from.clone()));
        }
        if !self.remove_env.is_empty() {
            body.insert("remove_env".to_string(), serde_json::json!(self.remove_env));
        }
        Value::Object(body)
    }
}

/// Image and source from flags and file: a flag beats the file, and one of them is enough.
fn image_or_source(
    args: &DeployArgs,
    file_image: Option<String>,
    file_source: Option<PathBuf>,
    file_dockerfile: Option<PathBuf>,
) -> Result<(Option<String>, Option<SourcePlan>), CliError> {
    let (image, source) = match (&args.image, &args.source) {
        (Some(image), _) => (Some(image.clone()), None),
        (None, Some(dir)) => (None, Some(dir.clone())),
        (None, None) => {
            if file_image.is_some() && file_source.is_some() {
                return Err(CliError::Usage(
                    "the file sets both `image` and `source`: keep one (or override with --image / --source)"
                        .to_string(),
                ));
            }
            (file_image, file_source)
        }
    };
    let dockerfile = args.dockerfile.clone().or(file_dockerfile);
    match source {
        Some(dir) => Ok((image, Some(SourcePlan { dir, dockerfile }))),
        None if dockerfile.is_some() && args.dockerfile.is_some() => Err(CliError::Usage(
            "--dockerfile needs --source DIR (the folder to build)".to_string(),
        )),
        None => Ok((image, None)),
    }
}

/// Runs `nimbus deploy`.
pub async fn run(ctx: &Ctx, args: DeployArgs) -> Result<(), CliError> {
    let file = args.file.as_deref().map(DeployFile::load).transpose()?;
    let plan = DeployPlan::new(&args, file, ctx.namespace.as_deref())?;
    let (ns, svc) = (plan.namespace.as_str(), plan.service.as_str());

    let mut body = plan.body();
    if let Some(source) = &plan.source {
        let build = build_source(ctx, ns, svc, source).await?;
        body["build"] = Value::String(build);
    } else if let Some(image) = &plan.input.image {
        pull_image(ctx, image).await?;
    }

    let spinner = spinner(ctx.json());
    spinner.set_message(format!("{svc}: creating version"));
    let created = ctx
        .client
        .post(
            &["v1", "namespaces", ns, "services", svc, "versions"],
            &body,
        )
        .await;
    let created = match created {
        Ok(created) => created,
        Err(e) => {
            spinner.finish_and_clear();
            return Err(e);
        }
    };
    if let Some(gateway) = &plan.gateway {
        spinner.set_message(format!("{svc}: setting the gateway policy"));
        let body = serde_json::to_value(gateway)
            .map_err(|e| CliError::Other(format!("cannot encode the gateway policy: {e}")))?;
        if let Err(e) = ctx
            .client
            .put(&["v1", "namespaces", ns, "services", svc, "gateway"], &body)
            .await
        {
            spinner.finish_and_clear();
            return Err(e);
        }
    }
    let service: ServiceView = decode(&created["service"])?;
    let mut version_json = created["version"].clone();
    let mut version: VersionView = decode(&version_json)?;
    let name = version.name.clone();

    let deadline = tokio::time::Instant::now() + DEPLOY_TIMEOUT;
    let mut told: Option<String> = None;
    while version.status == "deploying" {
        spinner.set_message(format!(
            "{svc} {name}: starting ({}/{} instances ready)",
            version.ready_instances, version.desired_instances
        ));
        // What holds it up (it listens on another port), said once, while the deploy waits.
        if version.reason.is_some() && version.reason != told && !ctx.json() {
            told = version.reason.clone();
            let hint = told.as_deref().unwrap_or_default();
            spinner.suspend(|| eprintln!("! {svc} {name} is not ready yet: {hint}"));
        }
        if tokio::time::Instant::now() >= deadline {
            spinner.finish_and_clear();
            if ctx.json() {
                print_json(&version_json)?;
            }
            return Err(CliError::Failed(format!(
                "{svc} {name} is still deploying after {}s; see `nimbus logs {svc} --version {name}` and `nimbus versions {svc}`",
                DEPLOY_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(POLL_EVERY).await;
        let polled = ctx
            .client
            .get(
                &["v1", "namespaces", ns, "services", svc, "versions", &name],
                &[],
            )
            .await;
        version_json = match polled {
            Ok(v) => v,
            Err(e) => {
                spinner.finish_and_clear();
                return Err(e);
            }
        };
        version = decode(&version_json)?;
    }
    spinner.finish_and_clear();

    if ctx.json() {
        print_json(&version_json)?;
    }
    match version.status.as_str() {
        "failed" => {
            if !ctx.json() {
                out!("{}", failure_text(&version));
            }
            Err(CliError::Failed(format!("{svc} {name} failed to start")))
        }
        // A deploy's first instance runs until it is ready or fails; at zero with neither, the
        // version proved nothing (it crashed and was then scaled away).
        "idle" => Err(CliError::Failed(format!(
            "{svc} {name} was scaled to zero before any instance became ready; see \
             `nimbus logs {svc} --version {name}` and `nimbus events {svc}`"
        ))),
        _ if ctx.json() => Ok(()),
        status => {
            out!(
                "{}",
                success_text(&service, &version, plan.no_traffic, status)
            );
            Ok(())
        }
    }
}

/// Builds the source folder on the server, printing its output as it comes; the build's id.
async fn build_source(
    ctx: &Ctx,
    ns: &str,
    svc: &str,
    source: &SourcePlan,
) -> Result<String, CliError> {
    let (dir, dockerfile) = (source.dir.clone(), source.dockerfile.clone());
    let packed = tokio::task::spawn_blocking(move || pack_source(&dir, dockerfile.as_deref()))
        .await
        .map_err(|e| CliError::Other(format!("packing the source folder failed: {e}")))??;
    eprintln!(
        "Building {} ({} KiB) for {svc}…",
        source.dir.display(),
        packed.tar.len().div_ceil(1024)
    );
    let query: Vec<(&str, &str)> = packed
        .dockerfile
        .as_deref()
        .map(|d| ("dockerfile", d))
        .into_iter()
        .collect();
    let result = ctx
        .client
        .stream(
            &["v1", "namespaces", ns, "services", svc, "builds"],
            &query,
            packed.tar,
            "application/x-tar",
            |event| {
                if let Some(line) = event.get("line").and_then(Value::as_str) {
                    eprintln!("{line}");
                }
            },
        )
        .await;
    let build = match result {
        Ok(build) => build,
        Err(CliError::Rejected(mut e)) if e.code == "build_failed" => {
            e.message = format!(
                "{}; no version was created (the log: nimbus logs {svc} --build)",
                e.message
            );
            return Err(CliError::Rejected(e));
        }
        Err(e) => return Err(e),
    };
    let id = build["id"]
        .as_str()
        .ok_or_else(|| CliError::Other("the build answered without an id".to_string()))?;
    let seconds = build["duration_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
    eprintln!(
        "✓ built {} in {seconds:.1}s (build {id})",
        build["image"].as_str().unwrap_or("the image")
    );
    Ok(id.to_string())
}

/// Makes the image present on the server, printing pull progress.
async fn pull_image(ctx: &Ctx, image: &str) -> Result<(), CliError> {
    let body = serde_json::to_vec(&serde_json::json!({ "image": image }))
        .map_err(|e| CliError::Other(e.to_string()))?;
    let result = ctx
        .client
        .stream(
            &["v1", "images", "pull"],
            &[],
            body,
            "application/json",
            |event| {
                if let Some(line) = event.get("line").and_then(Value::as_str) {
                    eprintln!("{line}");
                }
            },
        )
        .await?;
    if result["pulled"] == Value::Bool(true) {
        eprintln!("✓ pulled {image}");
    }
    Ok(())
}

/// A source folder as a tar, and where its Dockerfile is inside it.
#[derive(Debug)]
pub struct PackedSource {
    pub tar: Vec<u8>,
    /// `None` = `Dockerfile` at the top of the folder.
    pub dockerfile: Option<String>,
}

/// Packs `dir` (symlinks kept as links; what its `.dockerignore` excludes left out). A
/// `dockerfile` inside the folder is named by its path in it; one outside is added as
/// `.nimbus.Dockerfile`.
pub fn pack_source(dir: &Path, dockerfile: Option<&Path>) -> Result<PackedSource, CliError> {
    let usage = |what: &str, path: &Path, e: std::io::Error| {
        CliError::Usage(format!("{what} {}: {e}", path.display()))
    };
    let dir =
        std::fs::canonicalize(dir).map_err(|e| usage("cannot read the source folder", dir, e))?;
    if !dir.is_dir() {
        return Err(CliError::Usage(format!(
            "--source {} is not a folder",
            dir.display()
        )));
    }
    let dockerfile = dockerfile
        .map(|path| {
            std::fs::canonicalize(path).map_err(|e| usage("cannot read the Dockerfile", path, e))
        })
        .transpose()?;
    let inside = dockerfile
        .as_ref()
        .and_then(|path| context::dockerfile_in_context(&dir, path));
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    context::append_context(
        &mut builder,
        &dir,
        Some(inside.as_deref().unwrap_or("Dockerfile")),
    )
    .map_err(|e| usage("cannot pack the source folder", &dir, e))?;
    let dockerfile = match (dockerfile, inside) {
        (None, _) => None,
        (Some(_), Some(inside)) => Some(inside),
        (Some(path), None) => {
            builder
                .append_path_with_name(&path, context::OUTSIDE_DOCKERFILE)
                .map_err(|e| usage("cannot pack the Dockerfile", &path, e))?;
            Some(context::OUTSIDE_DOCKERFILE.to_string())
        }
    };
    let tar = builder
        .into_inner()
        .map_err(|e| usage("cannot pack the source folder", &dir, e))?;
    Ok(PackedSource { tar, dockerfile })
}

/// An animated spinner on stderr; indicatif hides it when stderr is not a terminal, and it is
/// hidden for `-o json`.
fn spinner(hidden: bool) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if hidden {
        bar.set_draw_target(ProgressDrawTarget::hidden());
        return bar;
    }
    let style = ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// What a finished deploy prints.
fn success_text(
    service: &ServiceView,
    version: &VersionView,
    no_traffic: bool,
    status: &str,
) -> String {
    let (svc, name) = (&version.service, &version.name);
    let svc = if svc.is_empty() { &service.name } else { svc };
    let mut out = match status {
        "ready" => format!("✓ {svc} {name} is ready"),
        other => format!("✓ {svc} {name} is deployed (status {other})"),
    };
    if no_traffic && version.traffic == 0 {
        out.push_str(", taking no traffic\n");
        out.push_str(&format!("  test URL: {}\n", version.url));
        out.push_str(&format!(
            "  send traffic to it: nimbus traffic {svc} --to-versions {name}=100\n"
        ));
    } else {
        out.push('\n');
        out.push_str(&format!("  URL: {}\n", service.url));
    }
    out
}

/// What a failed deploy prints before the error line.
fn failure_text(version: &VersionView) -> String {
    let reason = version.reason.as_deref().unwrap_or("no reason given");
    let mut out = format!("✗ {} {} failed: {reason}\n", version.service, version.name);
    if !version.last_log_lines.is_empty() {
        out.push_str("  last log lines:\n");
        for line in &version.last_log_lines {
            out.push_str(&format!("  | {line}\n"));
        }
    }
    if version.traffic == 0 {
        out.push_str("  traffic stays on the versions that had it\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;
    use crate::{Cli, Command};

    /// Parses a `nimbus deploy ...` command line.
    fn parse(argv: &[&str]) -> (DeployArgs, Option<String>) {
        let cli = Cli::try_parse_from(argv).unwrap();
        match cli.command {
            Command::Deploy(args) => (args, cli.namespace),
            other => panic!("not a deploy: {other:?}"),
        }
    }

    #[test]
    fn flags_to_body() {
        let cases: &[(&[&str], Value)] = &[
            (
                &["nimbus", "deploy", "hello", "--command", "python3 app.py"],
                json!({"command": "python3 app.py"}),
            ),
            (
                &[
                    "nimbus",
                    "deploy",
                    "hello",
                    "--command",
                    "./app",
                    "--env",
                    "A=1",
                    "--env",
                    "B=x=y",
                    "--port",
                    "8080",
                    "--health-path",
                    "/healthz",
                    "--min-instances",
                    "1",
                    "--max-instances",
                    "3",
                    "--concurrency",
                    "5",
                    "--timeout",
                    "60",
                    "--no-traffic",
                ],
                json!({"command": "./app", "env": {"A": "1", "B": "x=y"}, "port": 8080,
                       "health_path": "/healthz", "min_instances": 1, "max_instances": 3,
                       "concurrency": 5, "timeout_secs": 60, "no_traffic": true}),
            ),
            // A repeated env key: the last one wins.
            (
                &[
                    "nimbus",
                    "deploy",
                    "hello",
                    "--command",
                    "x",
                    "--env",
                    "A=1",
                    "--env",
                    "A=2",
                ],
                json!({"command": "x", "env": {"A": "2"}}),
            ),
        ];
        for (argv, expected) in cases {
            let (args, ns) = parse(argv);
            let plan = DeployPlan::new(&args, None, ns.as_deref()).unwrap();
            assert_eq!(plan.body(), *expected, "{argv:?}");
            assert_eq!(plan.service, "hello");
            assert_eq!(plan.namespace, "default");
        }
    }

    #[test]
    fn local_rejections() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["nimbus", "deploy", "hello", "--from", "V1"],
                "invalid_name",
            ),
            (
                &["nimbus", "deploy", "Hello", "--command", "x"],
                "invalid_name",
            ),
            (
                &["nimbus", "-n", "Bad", "deploy", "hello", "--command", "x"],
                "invalid_name",
            ),
            (
                &[
                    "nimbus",
                    "deploy",
                    "hello",
                    "--command",
                    "x",
                    "--port",
                    "70000",
                ],
                "invalid_port",
            ),
            (
                &[
                    "nimbus",
                    "deploy",
                    "hello",
                    "--command",
                    "x",
                    "--env",
                    "PORT=1",
                ],
                "reserved_env",
            ),
            (
                &[
                    "nimbus",
                    "deploy",
                    "hello",
                    "--command",
                    "x",
                    "--max-instances",
                    "0",
                ],
                "invalid_max_instances",
            ),
        ];
        for (argv, code) in cases {
            let (args, ns) = parse(argv);
            match DeployPlan::new(&args, None, ns.as_deref()) {
                Err(CliError::Rejected(e)) => {
                    assert_eq!(e.code, *code, "{argv:?}");
                    assert_eq!(e.status, None, "{argv:?}");
                }
                other => panic!("{argv:?}: {other:?}"),
            }
        }
        // Nothing to run: the latest version with the changes given, checked by the server.
        let (args, ns) = parse(&[
            "nimbus",
            "deploy",
            "hello",
            "--env",
            "A=1",
            "--remove-env",
            "B",
        ]);
        let plan = DeployPlan::new(&args, None, ns.as_deref()).expect("a deploy from latest");
        assert_eq!(
            plan.body(),
            json!({"env": {"A": "1"}, "from": "latest", "remove_env": ["B"]})
        );
        // --remove-env has nothing to remove from on a deploy that starts afresh.
        let (args, ns) = parse(&[
            "nimbus",
            "deploy",
            "hello",
            "--command",
            "x",
            "--remove-env",
            "B",
        ]);
        assert!(
            matches!(DeployPlan::new(&args, None, ns.as_deref()), Err(CliError::Usage(m)) if m.contains("--from latest")),
        );
        // No service anywhere is a usage error.
        let (args, ns) = parse(&["nimbus", "deploy", "--command", "x"]);
        assert!(matches!(
            DeployPlan::new(&args, None, ns.as_deref()),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        let cases: &[&[&str]] = &[
            &["nimbus", "deploy", "hello", "--env", "NOEQUALS"],
            &["nimbus", "deploy", "hello", "--env", "=v"],
            &["nimbus", "deploy", "hello", "--port", "http"],
            &["nimbus", "deploy", "hello", "--min-instances", "-1"],
        ];
        for argv in cases {
            assert!(Cli::try_parse_from(*argv).is_err(), "{argv:?}");
        }
    }

    const FILE: &str = r#"
service = "hello"
namespace = "staging"
command = "python3 app.py"
port = 8080
health_path = "/"
min_instances = 0
max_instances = 10
concurrency = 80
timeout_secs = 300
no_traffic = true
[env]
GREETING = "hello"
"#;

    #[test]
    fn file_parsing() {
        let file = DeployFile::parse(FILE).unwrap();
        assert_eq!(file.service.as_deref(), Some("hello"));
        assert_eq!(file.namespace.as_deref(), Some("staging"));
        assert_eq!(file.port, Some(8080));
        assert_eq!(file.no_traffic, Some(true));
        assert_eq!(file.env.get("GREETING").map(String::as_str), Some("hello"));
        assert_eq!(DeployFile::parse("").unwrap(), DeployFile::default());

        let errors = &[
            ("servce = \"hello\"", "servce"),    // unknown key, named
            ("[env]\nA = 1", "invalid type"),    // env values are strings
            ("port = \"8080\"", "invalid type"), // numbers are numbers
            ("[limits]\ncpu = 1", "limits"),     // unknown table, named
            ("service = ", "TOML parse error"),  // not TOML
            ("[gateway]\nlbb = \"x\"", "lbb"),   // unknown gateway key, named
        ];
        for (text, needle) in errors {
            let err = DeployFile::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
        let with_gateway =
            DeployFile::parse("[gateway]\nlb = \"round-robin\"\naccess = [\"deny path=/admin\"]")
                .unwrap();
        let gateway = with_gateway.gateway.unwrap();
        assert_eq!(gateway.lb.as_deref(), Some("round-robin"));
        assert_eq!(gateway.access, ["deny path=/admin"]);
    }

    #[test]
    fn flags_override_file() {
        type Check = fn(&DeployPlan);
        let cases: &[(&[&str], Check)] = &[
            // The file alone.
            (&["nimbus", "deploy", "-f", "x.toml"], |p| {
                assert_eq!(p.service, "hello");
                assert_eq!(p.namespace, "staging");
                assert_eq!(p.input.command.as_deref(), Some("python3 app.py"));
                assert!(p.no_traffic);
            }),
            // SERVICE, -n and --command win.
            (
                &[
                    "nimbus",
                    "-n",
                    "prod",
                    "deploy",
                    "other",
                    "-f",
                    "x.toml",
                    "--command",
                    "./run",
                ],
                |p| {
                    assert_eq!(p.service, "other");
                    assert_eq!(p.namespace, "prod");
                    assert_eq!(p.input.command.as_deref(), Some("./run"));
                },
            ),
            // --env adds to and overrides the file's [env].
            (
                &[
                    "nimbus",
                    "deploy",
                    "-f",
                    "x.toml",
                    "--env",
                    "GREETING=hi",
                    "--env",
                    "X=1",
                ],
                |p| {
                    assert_eq!(p.input.env.get("GREETING").map(String::as_str), Some("hi"));
                    assert_eq!(p.input.env.get("X").map(String::as_str), Some("1"));
                },
            ),
            // Numeric flags win.
            (
                &[
                    "nimbus",
                    "deploy",
                    "-f",
                    "x.toml",
                    "--port",
                    "9000",
                    "--timeout",
                    "5",
                ],
                |p| {
                    assert_eq!(p.input.port, Some(9000));
                    assert_eq!(p.input.timeout_secs, Some(5));
                    assert_eq!(p.input.max_instances, Some(10));
                },
            ),
        ];
        for (argv, check) in cases {
            let (args, ns) = parse(argv);
            let file = DeployFile::parse(FILE).unwrap();
            let plan = DeployPlan::new(&args, Some(file), ns.as_deref()).unwrap();
            check(&plan);
        }
    }

    #[test]
    fn container_flags_to_body() {
        let cases: &[(&[&str], Value)] = &[
            (
                &["nimbus", "deploy", "web", "--image", "nginx:1.27"],
                json!({"image": "nginx:1.27"}),
            ),
            (
                &[
                    "nimbus",
                    "deploy",
                    "web",
                    "--image",
                    "app:1",
                    "--command",
                    "serve",
                    "--cpu",
                    "0.5",
                    "--memory",
                    "256Mi",
                    "--tmp-size",
                    "64Mi",
                    "--volume",
                    "data:/data",
                    "--volume",
                    "cache:/cache",
                ],
                json!({"image": "app:1", "command": "serve", "cpu": 0.5, "memory": "256Mi",
                       "tmp_size": "64Mi",
                       "volumes": [{"name": "data", "path": "/data"}, {"name": "cache", "path": "/cache"}]}),
            ),
            // A source deploy sends no image: the build's comes with its id.
            (
                &[
                    "nimbus", "deploy", "web", "--source", "app", "--memory", "1Gi",
                ],
                json!({"memory": "1Gi"}),
            ),
        ];
        for (argv, expected) in cases {
            let (args, ns) = parse(argv);
            let plan = DeployPlan::new(&args, None, ns.as_deref()).unwrap();
            assert_eq!(plan.body(), *expected, "{argv:?}");
        }
        let (args, ns) = parse(&[
            "nimbus",
            "deploy",
            "web",
            "--source",
            "app",
            "--dockerfile",
            "d/F",
        ]);
        let plan = DeployPlan::new(&args, None, ns.as_deref()).unwrap();
        assert_eq!(
            plan.source,
            Some(SourcePlan {
                dir: "app".into(),
                dockerfile: Some("d/F".into())
            })
        );
    }

    #[test]
    fn container_rejections() {
        let cases: &[(&[&str], &str)] = &[
            // Process versions cannot take container limits.
            (
                &[
                    "nimbus",
                    "deploy",
                    "p",
                    "--command",
                    "x",
                    "--memory",
                    "256Mi",
                ],
                "unsupported_by_runtime",
            ),
            (
                &["nimbus", "deploy", "p", "--command", "x", "--cpu", "1"],
                "unsupported_by_runtime",
            ),
            (
                &[
                    "nimbus",
                    "deploy",
                    "p",
                    "--command",
                    "x",
                    "--volume",
                    "d:/d",
                ],
                "unsupported_by_runtime",
            ),
            (
                &["nimbus", "deploy", "c", "--image", "x", "--memory", "256m"],
                "invalid_memory",
            ),
            (
                &["nimbus", "deploy", "c", "--source", ".", "--tmp-size", "0"],
                "invalid_tmp_size",
            ),
            (
                &[
                    "nimbus", "deploy", "c", "--image", "x", "--volume", "d:/tmp",
                ],
                "invalid_volume",
            ),
        ];
        for (argv, code) in cases {
            let (args, ns) = parse(argv);
            match DeployPlan::new(&args, None, ns.as_deref()) {
                Err(CliError::Rejected(e)) => assert_eq!(e.code, *code, "{argv:?}"),
                other => panic!("{argv:?}: {other:?}"),
            }
        }
        // --dockerfile without anything to build is a usage error.
        let (args, ns) = parse(&["nimbus", "deploy", "c", "--image", "x", "--dockerfile", "F"]);
        assert!(matches!(
            DeployPlan::new(&args, None, ns.as_deref()),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn container_file_keys() {
        let text = r#"
service = "web"
source = "app"
dockerfile = "docker/Dockerfile"
cpu = 0.5
memory = "256Mi"
tmp_size = 1073741824
volumes = ["data:/data"]
"#;
        let file = DeployFile::parse(text)
            .unwrap()
            .relative_to(Path::new("/srv/proj"));
        assert_eq!(file.source, Some(PathBuf::from("/srv/proj/app")));
        assert_eq!(
            file.dockerfile,
            Some(PathBuf::from("/srv/proj/docker/Dockerfile"))
        );
        assert_eq!(file.tmp_size, Some(ByteSize::Bytes(1 << 30)));

        // The file's source, with a --volume that replaces its mount at /data.
        let (args, ns) = parse(&["nimbus", "deploy", "-f", "x", "--volume", "other:/data"]);
        let plan = DeployPlan::new(&args, Some(file.clone()), ns.as_deref()).unwrap();
        assert_eq!(
            plan.source.as_ref().map(|s| s.dir.clone()),
            Some("/srv/proj/app".into())
        );
        assert_eq!(
            plan.body(),
            json!({"cpu": 0.5, "memory": "256Mi", "tmp_size": 1073741824,
                   "volumes": [{"name": "other", "path": "/data"}]})
        );
        // --image beats the file's source.
        let (args, ns) = parse(&["nimbus", "deploy", "-f", "x", "--image", "nginx"]);
        let plan = DeployPlan::new(&args, Some(file), ns.as_deref()).unwrap();
        assert_eq!(
            (plan.source, plan.input.image.as_deref()),
            (None, Some("nginx"))
        );

        // Both in the file: say which to keep.
        let both = DeployFile::parse("service = \"w\"\nimage = \"a\"\nsource = \".\"").unwrap();
        let (args, ns) = parse(&["nimbus", "deploy"]);
        assert!(matches!(
            DeployPlan::new(&args, Some(both), ns.as_deref()),
            Err(CliError::Usage(_))
        ));
        let bad =
            DeployFile::parse("volumes = [\"nopath\"]\nimage = \"a\"\nservice = \"w\"").unwrap();
        assert!(matches!(
            DeployPlan::new(&args, Some(bad), ns.as_deref()),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn packing_the_source() {
        let dir = std::env::temp_dir().join(format!("nimbus-pack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("app/docker")).unwrap();
        std::fs::write(dir.join("app/Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(dir.join("app/docker/prod"), "FROM scratch\n").unwrap();
        std::fs::write(dir.join("Outside"), "FROM scratch\n").unwrap();
        let names = |tar: &[u8]| -> Vec<String> {
            let mut archive = tar::Archive::new(tar);
            let mut names: Vec<String> = archive
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().display().to_string())
                .collect();
            names.sort();
            names
        };
        let cases: &[(Option<PathBuf>, Option<&str>, bool)] = &[
            (None, None, false), // the default
            (
                Some(dir.join("app/docker/prod")),
                Some("docker/prod"),
                false,
            ), // inside
            (Some(dir.join("Outside")), Some(".nimbus.Dockerfile"), true), // outside: added
        ];
        for (dockerfile, expected, added) in cases {
            let packed = pack_source(&dir.join("app"), dockerfile.as_deref()).unwrap();
            assert_eq!(packed.dockerfile.as_deref(), *expected, "{dockerfile:?}");
            let names = names(&packed.tar);
            assert!(
                names
                    .iter()
                    .any(|n| n.ends_with("Dockerfile") && !n.contains("nimbus")),
                "{names:?}"
            );
            assert_eq!(
                names.iter().any(|n| n.ends_with(".nimbus.Dockerfile")),
                *added,
                "{names:?}"
            );
        }
        assert!(matches!(
            pack_source(&dir.join("missing"), None),
            Err(CliError::Usage(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn result_text() {
        let service = ServiceView {
            name: "hello".into(),
            url: "http://hello--default.nimbus.localhost:8000".into(),
            ..Default::default()
        };
        let version = VersionView {
            service: "hello".into(),
            name: "v2".into(),
            url: "http://v2--hello--default.nimbus.localhost:8000".into(),
            status: "ready".into(),
            traffic: 0,
            ..Default::default()
        };
        assert_eq!(
            success_text(&service, &version, false, "ready"),
            "✓ hello v2 is ready\n  URL: http://hello--default.nimbus.localhost:8000\n"
        );
        assert_eq!(
            success_text(&service, &version, true, "ready"),
            "✓ hello v2 is ready, taking no traffic\n  test URL: http://v2--hello--default.nimbus.localhost:8000\n  send traffic to it: nimbus traffic hello --to-versions v2=100\n"
        );
        let failed = VersionView {
            status: "failed".into(),
            reason: Some("exited with status 1".into()),
            last_log_lines: vec!["boom".into()],
            ..version
        };
        assert_eq!(
            failure_text(&failed),
            "✗ hello v2 failed: exited with status 1\n  last log lines:\n  | boom\n  traffic stays on the versions that had it\n"
        );
    }
}
