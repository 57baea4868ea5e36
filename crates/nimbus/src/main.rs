//! The `nimbus` binary. `nimbus server` runs the engine (store, reconciler, runtime, gateway and
//! API); every other subcommand is a client of the REST API (docs/api.md), configured by
//! `NIMBUS_API` and `NIMBUS_TOKEN`.
//!
//! Exit codes: 0 success, 1 a refused request, a usage error or a failed deploy, 2 the API
//! could not be reached.

#![forbid(unsafe_code)]

mod cli;
mod paths;
mod server;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use cli::{CliError, Ctx, Output};

/// mimalloc instead of glibc malloc: with a large route table (thousands of versions) glibc's
/// allocator spent several times longer per request in its slow paths (bin searches and
/// consolidation of a fragmented heap); mimalloc's per-thread free lists stay fast at any size.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Nimbus: a self-hosted serverless engine.
#[derive(Debug, Parser)]
#[command(name = "nimbus", version, about)]
struct Cli {
    /// Output format: human-readable tables, or the API's JSON.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Namespace to act in [default: default; for `deploy -f`, the file's namespace].
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Nimbus engine: REST API, gateway and instance supervisor.
    Server(server::ServerArgs),
    /// Deploy a new version of a service and wait until it is ready.
    Deploy(cli::deploy::DeployArgs),
    /// List services.
    Services,
    /// Show or delete one service.
    #[command(subcommand)]
    Service(cli::services::ServiceCmd),
    /// List a service's versions with status, traffic and instances.
    Versions {
        /// Service name.
        service: String,
    },
    /// Delete a version.
    #[command(subcommand)]
    Version(cli::versions::VersionCmd),
    /// Show or change a service's traffic split and routing rules, or explain a request.
    Traffic(cli::traffic::TrafficArgs),
    /// Show or change a service's gateway policy: load balancing, affinity, rate limits,
    /// access rules, body and time limits.
    #[command(subcommand)]
    Gateway(cli::gateway::GatewayCmd),
    /// List instances, optionally of one service.
    Instances {
        /// Service name.
        service: Option<String>,
    },
    /// Print a service's logs; -f follows them.
    Logs(cli::logs::LogsArgs),
    /// List, add or remove custom domains.
    Domains(cli::domains::DomainsArgs),
    /// List, add or remove the TLS certificates the HTTPS listener serves by SNI.
    Certs(cli::certs::CertsArgs),
    /// Change a version's instance range or concurrency in place (no new version).
    Scale(cli::scaling::ScaleArgs),
    /// Scheduled scaling: raise (or cap) instance counts on a cron schedule.
    #[command(subcommand)]
    Scaling(cli::scaling::ScalingCmd),
    /// The events timeline: deploys, traffic changes, scale decisions, cold starts, crashes.
    Events(cli::events::EventsArgs),
    /// Metered usage (CPU-s, memory GB-s, requests, egress, ...) and its cost.
    Usage(cli::usage::UsageArgs),
    /// Access keys for the S3-compatible storage endpoint (`nimbus server --s3 ADDR`).
    #[command(subcommand)]
    Keys(cli::storage::KeysCmd),
    /// Object storage buckets.
    #[command(subcommand)]
    Bucket(cli::storage::BucketCmd),
    /// Functions: deploy, invoke (sync or async), invocations, aliases, triggers.
    #[command(subcommand, name = "fn")]
    Fn(cli::functions::FnCmd),
    /// List, create or delete named volumes for containers (`deploy --volume NAME:/path`).
    Volumes(cli::volumes::VolumesArgs),
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and --version go to stdout and succeed; usage errors exit 1, not clap's 2,
            // because 2 means "the server cannot be reached".
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // `nimbus server` runs its control plane on this thread's current-thread runtime and starts
    // the gateway's own runtime (`server::DataPlane`); client commands use the default one.
    let mut builder = match &cli.command {
        Command::Server(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Server(args) => {
            init_tracing();
            match runtime.block_on(server::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        command => match runtime.block_on(run_client(command, cli.output, cli.namespace)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                e.report(cli.output);
                ExitCode::from(e.exit_code())
            }
        },
    }
}

/// Parses the command line. Goes through `ArgMatches` so `nimbus traffic` can keep its
/// `--route-query` / `--route-header` rules in the order they were typed.
fn parse() -> Result<Cli, clap::Error> {
    let matches = Cli::command().try_get_matches()?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let (Command::Traffic(args), Some(sub)) =
        (&mut cli.command, matches.subcommand_matches("traffic"))
    {
        args.routes = cli::traffic::ordered_routes(sub);
    }
    if let (Command::Gateway(cli::gateway::GatewayCmd::Set(args)), Some(sub)) = (
        &mut cli.command,
        matches
            .subcommand_matches("gateway")
            .and_then(|m| m.subcommand_matches("set")),
    ) {
        args.access = cli::gateway::ordered_access(sub);
    }
    Ok(cli)
}

/// Runs one API client command.
async fn run_client(
    command: Command,
    output: Output,
    namespace: Option<String>,
) -> Result<(), CliError> {
    let ctx = Ctx::from_env(output, namespace)?;
    match command {
        Command::Server(_) => Err(CliError::Usage(
            "`server` is not a client command".to_string(),
        )),
        Command::Deploy(args) => cli::deploy::run(&ctx, args).await,
        Command::Services => cli::services::list(&ctx).await,
        Command::Service(cmd) => cli::services::run(&ctx, cmd).await,
        Command::Versions { service } => cli::versions::list(&ctx, &service).await,
        Command::Version(cmd) => cli::versions::run(&ctx, cmd).await,
        Command::Traffic(args) => cli::traffic::run(&ctx, args).await,
        Command::Gateway(cmd) => cli::gateway::run(&ctx, cmd).await,
        Command::Instances { service } => cli::instances::list(&ctx, service.as_deref()).await,
        Command::Logs(args) => cli::logs::run(&ctx, args).await,
        Command::Domains(args) => cli::domains::run(&ctx, args).await,
        Command::Certs(args) => cli::certs::run(&ctx, args).await,
        Command::Scale(args) => cli::scaling::scale(&ctx, args).await,
        Command::Scaling(cmd) => cli::scaling::run(&ctx, cmd).await,
        Command::Events(args) => cli::events::run(&ctx, args).await,
        Command::Usage(args) => cli::usage::run(&ctx, args).await,
        Command::Keys(cmd) => cli::storage::keys(&ctx, cmd).await,
        Command::Bucket(cmd) => cli::storage::bucket(&ctx, cmd).await,
        Command::Fn(cmd) => cli::functions::run(&ctx, cmd).await,
        Command::Volumes(args) => cli::volumes::run(&ctx, args).await,
    }
}

/// Logs for `nimbus server`: `RUST_LOG` filters, `info` by default. They go to stderr, so stdout
/// carries only the server's ready line.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags() {
        let cases: &[(&[&str], Output, Option<&str>)] = &[
            (&["nimbus", "services"], Output::Table, None),
            (&["nimbus", "-o", "json", "services"], Output::Json, None),
            // Global flags work after the subcommand too.
            (
                &["nimbus", "services", "-o", "json", "-n", "staging"],
                Output::Json,
                Some("staging"),
            ),
            (
                &[
                    "nimbus",
                    "--namespace",
                    "prod",
                    "--output",
                    "table",
                    "versions",
                    "hello",
                ],
                Output::Table,
                Some("prod"),
            ),
        ];
        for (argv, output, namespace) in cases {
            let cli = Cli::try_parse_from(*argv).unwrap();
            assert_eq!(cli.output, *output, "{argv:?}");
            assert_eq!(cli.namespace.as_deref(), *namespace, "{argv:?}");
        }
    }

    #[test]
    fn commands_parse() {
        let ok: &[&[&str]] = &[
            &["nimbus", "server"],
            &["nimbus", "deploy", "hello", "--command", "python3 app.py"],
            &["nimbus", "deploy", "-f", "nimbus.toml"],
            &["nimbus", "services"],
            &["nimbus", "service", "show", "hello"],
            &["nimbus", "service", "delete", "hello"],
            &["nimbus", "versions", "hello"],
            &["nimbus", "version", "delete", "hello", "v1"],
            &["nimbus", "traffic", "hello"],
            &[
                "nimbus",
                "traffic",
                "hello",
                "--explain",
                "http://h/?env=beta",
                "--header",
                "x-canary:1",
            ],
            &["nimbus", "instances"],
            &["nimbus", "instances", "hello"],
            &["nimbus", "logs", "hello", "-f"],
            &["nimbus", "domains"],
            &["nimbus", "domains", "add", "hello", "www.example.com"],
            &["nimbus", "domains", "remove", "www.example.com"],
            &["nimbus", "deploy", "hello", "--image", "busybox:1.36"],
            &[
                "nimbus",
                "deploy",
                "hello",
                "--source",
                ".",
                "--dockerfile",
                "x",
            ],
            &[
                "nimbus",
                "deploy",
                "hello",
                "--image",
                "x",
                "--cpu",
                "0.5",
                "--memory",
                "256Mi",
                "--tmp-size",
                "1Gi",
                "--volume",
                "data:/data",
                "--volume",
                "c:/c",
            ],
            &["nimbus", "logs", "hello", "--build"],
            &["nimbus", "logs", "hello", "--build", "b3"],
            &["nimbus", "volumes"],
            &["nimbus", "volumes", "create", "data"],
            &["nimbus", "volumes", "delete", "data"],
        ];
        for argv in ok {
            assert!(Cli::try_parse_from(*argv).is_ok(), "{argv:?}");
        }
        let bad: &[&[&str]] = &[
            &["nimbus"],
            &["nimbus", "-o", "yaml", "services"],
            &["nimbus", "service", "show"],
            &["nimbus", "version", "delete", "hello"],
            &["nimbus", "domains", "add", "hello"],
            &["nimbus", "versions"],
            &["nimbus", "deploy", "hello", "--image", "x", "--source", "."],
            &[
                "nimbus", "deploy", "hello", "--image", "x", "--volume", "nopath",
            ],
            &["nimbus", "logs", "hello", "--build", "-f"],
            &["nimbus", "volumes", "create"],
        ];
        for argv in bad {
            assert!(Cli::try_parse_from(*argv).is_err(), "{argv:?}");
        }
    }
}
