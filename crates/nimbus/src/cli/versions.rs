//! `nimbus versions SERVICE` and `nimbus version delete SERVICE VERSION`.

use super::table::{self, now_secs, or_dash};
use super::views::VersionView;
use super::{decode_list, print_json, CliError, Ctx};

/// `nimbus version ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum VersionCmd {
    /// Delete a version that takes no traffic (no share of the split, no rule).
    Delete {
        /// Service name.
        service: String,
        /// Version name, e.g. v1.
        version: String,
    },
}

/// `nimbus versions SERVICE`: oldest first, with failure details under the table.
pub async fn list(ctx: &Ctx, service: &str) -> Result<(), CliError> {
    let answer = ctx
        .client
        .get(
            &[
                "v1",
                "namespaces",
                ctx.ns(),
                "services",
                service,
                "versions",
            ],
            &[],
        )
        .await?;
    if ctx.json() {
        print_json(&answer)?;
        return Ok(());
    }
    let versions: Vec<VersionView> = decode_list(&answer, "versions")?;
    if versions.is_empty() {
        outln!("Service {service} has no versions.");
        return Ok(());
    }
    out!("{}", versions_text(&versions, now_secs()));
    Ok(())
}

fn versions_text(versions: &[VersionView], now: u64) -> String {
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                or_dash(&v.status),
                if v.pending_traffic {
                    format!("{}% (pending)", v.traffic)
                } else {
                    format!("{}%", v.traffic)
                },
                format!("{}/{}", v.ready_instances, v.desired_instances),
                or_dash(v.scaling_reason.as_deref().unwrap_or("")),
                format!("{}/{}", v.inflight, v.queued),
                or_dash(&v.url),
                table::age(now, v.created_at),
            ]
        })
        .collect();
    let mut out = table::render(
        &[
            "NAME",
            "STATUS",
            "TRAFFIC",
            "INSTANCES",
            "SCALING",
            "INFLIGHT/QUEUED",
            "URL",
            "CREATED",
        ],
        &rows,
    );
    for v in versions.iter().filter(|v| v.status == "failed") {
        let reason = v.reason.as_deref().unwrap_or("no reason given");
        out.push_str(&format!("\n{} failed: {reason}\n", v.name));
        for line in &v.last_log_lines {
            out.push_str(&format!("  | {line}\n"));
        }
    }
    // What holds a deploying version up, when the server can tell (say, a wrong port).
    for v in versions.iter().filter(|v| v.status == "deploying") {
        if let Some(reason) = &v.reason {
            out.push_str(&format!("\n{} is not ready yet: {reason}\n", v.name));
        }
    }
    out
}

/// `nimbus version delete SERVICE VERSION`.
pub async fn run(ctx: &Ctx, cmd: VersionCmd) -> Result<(), CliError> {
    match cmd {
        VersionCmd::Delete { service, version } => {
            let answer = ctx
                .client
                .delete(&[
                    "v1",
                    "namespaces",
                    ctx.ns(),
                    "services",
                    &service,
                    "versions",
                    &version,
                ])
                .await?;
            if ctx.json() {
                print_json(&answer)?;
            } else {
                outln!("Deleted version {version} of {service}.");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_with_failures() {
        let ok = VersionView {
            name: "v1".into(),
            status: "ready".into(),
            traffic: 100,
            ready_instances: 1,
            desired_instances: 1,
            scaling_reason: Some("stable".into()),
            inflight: 2,
            queued: 1,
            url: "http://v1--hello--default.nimbus.localhost:8000".into(),
            created_at: Some(1000),
            ..Default::default()
        };
        let failed = VersionView {
            name: "v2".into(),
            status: "failed".into(),
            desired_instances: 1,
            url: "http://v2--hello--default.nimbus.localhost:8000".into(),
            reason: Some("exited with status 1 (3 restarts)".into()),
            last_log_lines: vec!["Traceback:".into(), "NameError: x".into()],
            created_at: Some(1090),
            ..Default::default()
        };
        let deploying = VersionView {
            name: "v3".into(),
            status: "deploying".into(),
            pending_traffic: true,
            desired_instances: 1,
            url: "http://v3--hello--default.nimbus.localhost:8000".into(),
            reason: Some("it listens on port 8080 but not on $PORT (40845)".into()),
            created_at: Some(1119),
            ..Default::default()
        };
        let expected = "\
NAME  STATUS     TRAFFIC       INSTANCES  SCALING  INFLIGHT/QUEUED  URL                                              CREATED
v1    ready      100%          1/1        stable   2/1              http://v1--hello--default.nimbus.localhost:8000  2m
v2    failed     0%            0/1        -        0/0              http://v2--hello--default.nimbus.localhost:8000  30s
v3    deploying  0% (pending)  0/1        -        0/0              http://v3--hello--default.nimbus.localhost:8000  1s

v2 failed: exited with status 1 (3 restarts)
  | Traceback:
  | NameError: x

v3 is not ready yet: it listens on port 8080 but not on $PORT (40845)
";
        assert_eq!(versions_text(&[ok, failed, deploying], 1120), expected);
    }
}
