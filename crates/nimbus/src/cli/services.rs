//! `nimbus services`, `nimbus service show NAME`, `nimbus service delete NAME`.

use super::table::{self, now_secs, or_dash, split_text};
use super::views::{ServiceView, VersionView};
use super::{decode, decode_list, print_json, CliError, Ctx};

/// `nimbus service ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ServiceCmd {
    /// Show a service: URL, domains, traffic split and rules, versions, and per version the
    /// ready vs desired instances with the autoscaler's reason.
    Show {
        /// Service name.
        name: String,
    },
    /// Delete a service, its versions and instances; frees its custom domains.
    Delete {
        /// Service name.
        name: String,
    },
}

/// `nimbus services`: one row per service in the namespace.
pub async fn list(ctx: &Ctx) -> Result<(), CliError> {
    let answer = ctx
        .client
        .get(&["v1", "namespaces", ctx.ns(), "services"], &[])
        .await?;
    if ctx.json() {
        print_json(&answer)?;
        return Ok(());
    }
    let services: Vec<ServiceView> = decode_list(&answer, "services")?;
    if services.is_empty() {
        outln!(
            "No services in namespace {}. Deploy one: nimbus deploy NAME --command CMD",
            ctx.ns()
        );
        return Ok(());
    }
    out!("{}", services_table(&services));
    Ok(())
}

fn services_table(services: &[ServiceView]) -> String {
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            let mut traffic = split_text(&s.traffic);
            match s.rules.len() {
                0 => {}
                1 => traffic.push_str(" (+1 rule)"),
                n => traffic.push_str(&format!(" (+{n} rules)")),
            }
            vec![
                s.name.clone(),
                or_dash(&s.url),
                traffic,
                s.versions.len().to_string(),
            ]
        })
        .collect();
    table::render(&["NAME", "URL", "TRAFFIC", "VERSIONS"], &rows)
}

/// `nimbus service show|delete`.
pub async fn run(ctx: &Ctx, cmd: ServiceCmd) -> Result<(), CliError> {
    match cmd {
        ServiceCmd::Show { name } => {
            let answer = ctx
                .client
                .get(&["v1", "namespaces", ctx.ns(), "services", &name], &[])
                .await?;
            if ctx.json() {
                print_json(&answer)?;
            } else {
                out!("{}", service_text(&decode(&answer)?, now_secs()));
                let versions = ctx
                    .client
                    .get(
                        &["v1", "namespaces", ctx.ns(), "services", &name, "versions"],
                        &[],
                    )
                    .await?;
                out!("{}", scaling_text(&decode_list(&versions, "versions")?));
            }
        }
        ServiceCmd::Delete { name } => {
            let answer = ctx
                .client
                .delete(&["v1", "namespaces", ctx.ns(), "services", &name])
                .await?;
            if ctx.json() {
                print_json(&answer)?;
            } else {
                outln!(
                    "Deleted service {name}: its instances are stopping and its domains are free."
                );
            }
        }
    }
    Ok(())
}

fn service_text(s: &ServiceView, now: u64) -> String {
    let list = |items: &[String]| {
        if items.is_empty() {
            "-".to_string()
        } else {
            items.join(", ")
        }
    };
    let mut out = String::new();
    out.push_str(&format!("name:      {}\n", s.name));
    out.push_str(&format!("namespace: {}\n", or_dash(&s.namespace)));
    out.push_str(&format!("url:       {}\n", or_dash(&s.url)));
    out.push_str(&format!("domains:   {}\n", list(&s.domains)));
    out.push_str(&format!("traffic:   {}\n", split_text(&s.traffic)));
    if s.rules.is_empty() {
        out.push_str("rules:     -\n");
    } else {
        out.push_str("rules:\n");
        for line in table::rule_lines(&s.rules) {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out.push_str(&format!("versions:  {}\n", list(&s.versions)));
    if s.created_at.is_some() {
        out.push_str(&format!(
            "created:   {} ago\n",
            table::age(now, s.created_at)
        ));
    }
    out
}

/// Per version: ready vs desired instances and why, load now, cold starts.
fn scaling_text(versions: &[VersionView]) -> String {
    let mut out = String::from("scaling:\n");
    for v in versions {
        let cold = match (v.cold_starts, v.last_cold_start_ms) {
            (0, _) => String::new(),
            (n, Some(ms)) => format!(", {n} cold start(s), last {ms} ms"),
            (n, None) => format!(", {n} cold start(s)"),
        };
        out.push_str(&format!(
            "  {}: {} ready / {} desired ({}), {} in flight, {} queued{cold}\n",
            v.name,
            v.ready_instances,
            v.desired_instances,
            v.scaling_reason.as_deref().unwrap_or("-"),
            v.inflight,
            v.queued,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn service() -> ServiceView {
        decode(&json!({"namespace": "default", "name": "hello", "url": "http://hello--default.nimbus.localhost:8000",
            "domains": ["www.example.com"], "traffic": [{"version": "v1", "percent": 90}, {"version": "v2", "percent": 10}],
            "rules": [{"match": {"source": "query", "name": "env", "value": "beta"}, "version": "v3"}],
            "versions": ["v1", "v2", "v3"], "created_at": 1000}))
        .unwrap()
    }

    #[test]
    fn table() {
        let bare = ServiceView {
            name: "empty".into(),
            ..Default::default()
        };
        let expected = "\
NAME   URL                                          TRAFFIC                   VERSIONS
hello  http://hello--default.nimbus.localhost:8000  v1=90%, v2=10% (+1 rule)  3
empty  -                                            -                         0
";
        assert_eq!(services_table(&[service(), bare]), expected);
    }

    #[test]
    fn scaling_lines() {
        let versions = [
            VersionView {
                name: "v1".into(),
                ready_instances: 2,
                desired_instances: 3,
                scaling_reason: Some("panic".into()),
                inflight: 120,
                queued: 4,
                cold_starts: 2,
                last_cold_start_ms: Some(5),
                ..Default::default()
            },
            VersionView {
                name: "v2".into(),
                scaling_reason: Some("zero".into()),
                ..Default::default()
            },
        ];
        assert_eq!(
            scaling_text(&versions),
            "scaling:\n  v1: 2 ready / 3 desired (panic), 120 in flight, 4 queued, 2 cold start(s), last 5 ms\n  \
             v2: 0 ready / 0 desired (zero), 0 in flight, 0 queued\n"
        );
    }

    #[test]
    fn show() {
        assert_eq!(
            service_text(&service(), 1120),
            "name:      hello\n\
             namespace: default\n\
             url:       http://hello--default.nimbus.localhost:8000\n\
             domains:   www.example.com\n\
             traffic:   v1=90%, v2=10%\n\
             rules:\n  1. query env=beta → v3\n\
             versions:  v1, v2, v3\n\
             created:   2m ago\n"
        );
    }
}
