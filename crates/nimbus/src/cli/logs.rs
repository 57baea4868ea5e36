//! `nimbus logs SERVICE`: recent log lines, and with `-f`, new ones as they are written.
//! `nimbus logs SERVICE --build [ID]`: the output of a build from source (default: the latest).

use std::time::Duration;

use super::views::LogsView;
use super::{decode, print_json, CliError, Ctx};

/// How often `-f` asks for new lines.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// Flags of `nimbus logs`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// Service name.
    pub service: String,
    /// Only this version's instances.
    #[arg(long)]
    pub version: Option<String>,
    /// Only this instance.
    #[arg(long)]
    pub instance: Option<String>,
    /// How many recent lines to start with, per instance [default: 100; with --since, all of
    /// them up to 10,000].
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    /// Only lines written in this last stretch of time: 30s, 10m, 2h, 7d (to within a second
    /// or two: when a line was written is marked beside the log every second or two).
    #[arg(long, value_name = "DURATION", conflicts_with = "build")]
    pub since: Option<String>,
    /// Keep printing new lines until Ctrl-C.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only lines containing this text (case-sensitive; applied to followed lines too).
    #[arg(long, value_name = "TEXT")]
    pub grep: Option<String>,
    /// Show a build's output instead (`nimbus deploy --source`): the latest, or build ID.
    #[arg(
        long,
        value_name = "ID",
        num_args = 0..=1,
        default_missing_value = "latest",
        conflicts_with_all = ["follow", "version", "instance"]
    )]
    pub build: Option<String>,
}

impl LogsArgs {
    fn wanted(&self, line: &str) -> bool {
        self.grep.as_deref().is_none_or(|text| line.contains(text))
    }
}

impl LogsArgs {
    /// Query parameters: the filters, then `tail` on the first request or `cursor` after it.
    fn query(&self, cursor: Option<&str>) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if let Some(version) = &self.version {
            query.push(("version", version.clone()));
        }
        if let Some(instance) = &self.instance {
            query.push(("instance", instance.clone()));
        }
        match cursor {
            Some(cursor) => query.push(("cursor", cursor.to_string())),
            None => {
                if let Some(since) = &self.since {
                    query.push(("since", since.clone()));
                }
                if let Some(tail) = self.tail {
                    query.push(("tail", tail.to_string()));
                }
            }
        }
        query
    }
}

/// Runs `nimbus logs`. With `-o json`, one `Logs` answer is printed pretty; with `-f`, each new
/// line is printed as one compact JSON object per line.
pub async fn run(ctx: &Ctx, args: LogsArgs) -> Result<(), CliError> {
    if let Some(build) = &args.build {
        return build_log(ctx, &args.service, build).await;
    }
    let path = [
        "v1",
        "namespaces",
        ctx.ns(),
        "services",
        args.service.as_str(),
        "logs",
    ];
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut cursor: Option<String> = None;
    loop {
        let query = args.query(cursor.as_deref());
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            answer = ctx.client.get(&path, &query) => answer?,
        };
        if ctx.json() && !args.follow {
            print_json(&answer)?;
            return Ok(());
        }
        let logs: LogsView = decode(&answer)?;
        if ctx.json() {
            if let Some(lines) = answer.get("lines").and_then(|l| l.as_array()) {
                for line in lines {
                    let text = line
                        .get("line")
                        .and_then(|l| l.as_str())
                        .unwrap_or_default();
                    if args.wanted(text) {
                        outln!("{line}");
                    }
                }
            }
        } else {
            for line in logs.lines.iter().filter(|l| args.wanted(&l.line)) {
                outln!("{}", format_line(&line.instance, &line.line));
            }
        }
        if !args.follow {
            return Ok(());
        }
        match logs.cursor_param() {
            Some(next) => cursor = Some(next),
            None if cursor.is_some() => {}
            None => {
                return Err(CliError::Other(
                    "the API gave no cursor to follow the logs with".to_string(),
                ))
            }
        }
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
    }
}

/// Prints one build's record line and its output.
async fn build_log(ctx: &Ctx, service: &str, build: &str) -> Result<(), CliError> {
    let path = [
        "v1",
        "namespaces",
        ctx.ns(),
        "services",
        service,
        "builds",
        build,
    ];
    let answer = ctx.client.get(&path, &[]).await?;
    if ctx.json() {
        return print_json(&answer);
    }
    let text = |key: &str| answer[key].as_str().unwrap_or("?").to_string();
    let seconds = answer["duration_ms"]
        .as_u64()
        .map(|ms| format!(" in {:.1}s", ms as f64 / 1000.0))
        .unwrap_or_default();
    outln!(
        "# build {} of {service}: {}{seconds}, image {}",
        text("id"),
        text("status"),
        text("image")
    );
    if let Some(step) = answer["failing_step"].as_str() {
        outln!("# failed at: {step}");
    }
    for line in answer["log"].as_array().into_iter().flatten() {
        outln!("{}", line.as_str().unwrap_or_default());
    }
    Ok(())
}

fn format_line(instance: &str, line: &str) -> String {
    format!("[{instance}] {line}")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    #[test]
    fn queries() {
        type Case<'a> = (&'a [&'a str], Option<&'a str>, &'a [(&'a str, &'a str)]);
        let cases: &[Case<'_>] = &[
            // The server's default tail (100, or every line since).
            (&["nimbus", "logs", "hello"], None, &[]),
            (
                &["nimbus", "logs", "hello", "--since", "10m"],
                None,
                &[("since", "10m")],
            ),
            (
                &["nimbus", "logs", "hello", "--since", "1h", "--tail", "3"],
                None,
                &[("since", "1h"), ("tail", "3")],
            ),
            (
                &[
                    "nimbus",
                    "logs",
                    "hello",
                    "--version",
                    "v2",
                    "--instance",
                    "i1",
                    "--tail",
                    "5",
                ],
                None,
                &[("version", "v2"), ("instance", "i1"), ("tail", "5")],
            ),
            // Following: the cursor replaces tail, filters stay.
            (
                &[
                    "nimbus",
                    "logs",
                    "hello",
                    "-f",
                    "--version",
                    "v2",
                    "--since",
                    "5m",
                ],
                Some("c42"),
                &[("version", "v2"), ("cursor", "c42")],
            ),
        ];
        for (argv, cursor, expected) in cases {
            let Command::Logs(args) = Cli::try_parse_from(*argv).unwrap().command else {
                panic!("not logs: {argv:?}");
            };
            let got = args.query(*cursor);
            let got: Vec<(&str, &str)> = got.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(got, *expected, "{argv:?}");
        }
    }

    #[test]
    fn lines() {
        assert_eq!(
            format_line("hello-v1-3f9a2c", "listening"),
            "[hello-v1-3f9a2c] listening"
        );
        let logs: LogsView = decode(&serde_json::json!({"lines": [], "cursor": 17})).unwrap();
        assert_eq!(logs.cursor_param().as_deref(), Some("17"));
        let logs: LogsView = decode(&serde_json::json!({"lines": []})).unwrap();
        assert_eq!(logs.cursor_param(), None);
    }
}
