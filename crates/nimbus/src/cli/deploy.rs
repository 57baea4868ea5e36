//! `nimbus deploy`: create a version from flags and/or a `nimbus.toml` (docs/nimbus-toml.md),
//! then follow it until it is ready, failed, or 120 s have passed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nimbus_model::names::validate_name;
use nimbus_model::{ScalingInput, VersionInput};
use serde::Deserialize;
use serde_json::Value;

use super::views::{ServiceView, VersionView};
use super::{decode, print_json, CliError, Ctx};

/// How often a deploying version is polled.
const POLL_EVERY: Duration = Duration::from_millis(150);
/// How long `deploy` waits for a version to leave `deploying`.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(120);

/// Flags of `nimbus deploy`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DeployArgs {
    /// Service to deploy a new version of; may come from the file's `service` instead.
    pub service: Option<String>,
    /// Read the deploy from a TOML file (see docs/nimbus-toml.md); flags override its values.
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Command that starts the app, run with `sh -c`; it must listen on $PORT (or --port).
    #[arg(long, value_name = "CMD")]
    pub command: Option<String>,
    /// Environment variable for the app; repeat for more.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env_pair)]
    pub env: Vec<(String, String)>,
    /// Fixed port the app listens on (default: the engine picks one and passes PORT).
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
    /// Idle seconds before a --min-instances 0 version scales to zero (default 30).
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
        Self::parse(&text)
            .map_err(|e| CliError::Usage(format!("{}: {}", path.display(), e.trim_end())))
    }
}

/// A deploy ready to send: where, and the checked body.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployPlan {
    pub namespace: String,
    pub service: String,
    pub input: VersionInput,
    pub no_traffic: bool,
    pub new_version: bool,
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
        let input = VersionInput {
            command: args.command.clone().or(file.command),
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
        input.resolve()?;
        if let Some(gateway) = &file.gateway {
            gateway.validate()?;
        }
        Ok(Self {
            namespace,
            service,
            input,
            no_traffic: args.no_traffic || file.no_traffic.unwrap_or(false),
            new_version: args.new_version,
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
                if !value.is_null() && !empty_env {
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
        Value::Object(body)
    }
}

/// Runs `nimbus deploy`.
pub async fn run(ctx: &Ctx, args: DeployArgs) -> Result<(), CliError> {
    let file = args.file.as_deref().map(DeployFile::load).transpose()?;
    let plan = DeployPlan::new(&args, file, ctx.namespace.as_deref())?;
    let (ns, svc) = (plan.namespace.as_str(), plan.service.as_str());

    let spinner = spinner(ctx.json());
    spinner.set_message(format!("{svc}: creating version"));
    let created = ctx
        .client
        .post(
            &["v1", "namespaces", ns, "services", svc, "versions"],
            &plan.body(),
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
    while version.status == "deploying" {
        spinner.set_message(format!(
            "{svc} {name}: starting ({}/{} instances ready)",
            version.ready_instances, version.desired_instances
        ));
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
        "idle" => format!("✓ {svc} {name} is deployed (idle: no instance is running yet)"),
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
            (&["nimbus", "deploy", "hello"], "missing_command"),
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
