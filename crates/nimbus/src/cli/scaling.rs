//! `nimbus scale SERVICE ...` (change a version's scaling in place) and
//! `nimbus scaling schedule add|list|remove` (cron-driven instance ranges).

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::table;
use super::views::VersionView;
use super::{decode, decode_list, print_json, CliError, Ctx};

/// Flags of `nimbus scale`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// Service name.
    pub service: String,
    /// Version to change [default: the newest version].
    #[arg(long)]
    pub version: Option<String>,
    /// Fewest instances (0 lets the version scale to zero when idle).
    #[arg(long, value_name = "N")]
    pub min: Option<u32>,
    /// Most instances (1-50).
    #[arg(long, value_name = "N")]
    pub max: Option<u32>,
    /// Requests one instance serves at once (1-1000).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<u32>,
    /// Share of --concurrency each instance is aimed at, e.g. 0.7.
    #[arg(long, value_name = "FRACTION")]
    pub target_utilization: Option<f64>,
    /// Idle seconds (after the stable window) before scaling to zero.
    #[arg(long, value_name = "SECS")]
    pub scale_to_zero_after: Option<u64>,
    /// Requests that may wait for a free slot before 503s.
    #[arg(long, value_name = "N")]
    pub queue_depth: Option<u32>,
}

impl ScaleArgs {
    fn body(&self) -> Map<String, Value> {
        let mut body = Map::new();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                body.insert(key.to_string(), value);
            }
        };
        put("min_instances", self.min.map(Value::from));
        put("max_instances", self.max.map(Value::from));
        put("concurrency", self.concurrency.map(Value::from));
        put(
            "target_utilization",
            self.target_utilization.map(Value::from),
        );
        put(
            "scale_to_zero_after_secs",
            self.scale_to_zero_after.map(Value::from),
        );
        put("queue_depth", self.queue_depth.map(Value::from));
        body
    }
}

/// `nimbus scaling ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ScalingCmd {
    /// Scheduled instance ranges: cron in the server's local time zone.
    #[command(subcommand)]
    Schedule(ScheduleCmd),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ScheduleCmd {
    /// Add a schedule: from each cron fire, --min (and --max) apply until --duration passes or
    /// another schedule fires. Cron is evaluated in the server's local time zone (TZ); 5 fields
    /// (minute hour day-of-month month day-of-week) or 6 with seconds first.
    Add {
        /// Service name.
        service: String,
        /// When it starts, e.g. "0 9 * * 1-5" (09:00 on weekdays, server time).
        #[arg(long)]
        cron: String,
        /// Fewest instances while active.
        #[arg(long, value_name = "N")]
        min: u32,
        /// Most instances while active [default: the version's own].
        #[arg(long, value_name = "N")]
        max: Option<u32>,
        /// Only this version [default: every version of the service].
        #[arg(long)]
        version: Option<String>,
        /// Seconds it stays active after each fire [default: until another schedule fires].
        #[arg(long, value_name = "SECS")]
        duration: Option<u64>,
    },
    /// List a service's schedules.
    List {
        /// Service name.
        service: String,
    },
    /// Remove a schedule by id.
    Remove {
        /// Service name.
        service: String,
        /// Schedule id (from `list`).
        id: i64,
    },
}

/// `Schedule`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ScheduleView {
    pub id: i64,
    pub version: Option<String>,
    pub cron: String,
    pub min_instances: u32,
    pub max_instances: Option<u32>,
    pub duration_secs: Option<u64>,
}

pub async fn scale(ctx: &Ctx, args: ScaleArgs) -> Result<(), CliError> {
    let body = args.body();
    if body.is_empty() {
        return Err(CliError::Usage(
            "nothing to change: give at least one of --min, --max, --concurrency, \
             --target-utilization, --scale-to-zero-after, --queue-depth"
                .to_string(),
        ));
    }
    let service_path = ["v1", "namespaces", ctx.ns(), "services", &args.service];
    let version = match &args.version {
        Some(version) => version.clone(),
        None => {
            let service = ctx.client.get(&service_path, &[]).await?;
            service["versions"]
                .as_array()
                .and_then(|v| v.last())
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| {
                    CliError::Failed(format!("service {} has no versions", args.service))
                })?
        }
    };
    let answer = ctx
        .client
        .patch(
            &[
                "v1",
                "namespaces",
                ctx.ns(),
                "services",
                &args.service,
                "versions",
                &version,
                "scaling",
            ],
            &Value::Object(body),
        )
        .await?;
    if ctx.json() {
        return print_json(&answer);
    }
    let version: VersionView = decode(&answer)?;
    outln!(
        "Scaled {} {} (no new version): {}",
        args.service,
        version.name,
        scaling_summary(&answer["spec"])
    );
    Ok(())
}

fn scaling_summary(spec: &Value) -> String {
    format!(
        "min {}, max {}, concurrency {}",
        spec["min_instances"], spec["max_instances"], spec["concurrency"]
    )
}

pub async fn run(ctx: &Ctx, cmd: ScalingCmd) -> Result<(), CliError> {
    let ScalingCmd::Schedule(cmd) = cmd;
    match cmd {
        ScheduleCmd::Add {
            service,
            cron,
            min,
            max,
            version,
            duration,
        } => {
            let body = json!({
                "cron": cron,
                "min_instances": min,
                "max_instances": max,
                "version": version,
                "duration_secs": duration,
            });
            let answer = ctx
                .client
                .post(&schedules_path(ctx, &service), &body)
                .await?;
            if ctx.json() {
                return print_json(&answer);
            }
            let schedule: ScheduleView = decode(&answer)?;
            outln!(
                "Added schedule {} to {service}: {}",
                schedule.id,
                describe(&schedule)
            );
        }
        ScheduleCmd::List { service } => {
            let answer = ctx.client.get(&schedules_path(ctx, &service), &[]).await?;
            if ctx.json() {
                return print_json(&answer);
            }
            let schedules: Vec<ScheduleView> = decode_list(&answer, "schedules")?;
            if schedules.is_empty() {
                outln!(
                    "No schedules for {service}. Add one: nimbus scaling schedule add {service} --cron \"0 9 * * 1-5\" --min 3"
                );
            } else {
                out!("{}", schedules_table(&schedules));
            }
        }
        ScheduleCmd::Remove { service, id } => {
            let mut path = schedules_path(ctx, &service);
            let id_text = id.to_string();
            path.push(&id_text);
            let answer = ctx.client.delete(&path).await?;
            if ctx.json() {
                return print_json(&answer);
            }
            outln!("Removed schedule {id} of {service}.");
        }
    }
    Ok(())
}

fn schedules_path<'a>(ctx: &'a Ctx, service: &'a str) -> Vec<&'a str> {
    vec![
        "v1",
        "namespaces",
        ctx.ns(),
        "services",
        service,
        "schedules",
    ]
}

fn describe(s: &ScheduleView) -> String {
    let max = s
        .max_instances
        .map_or(String::new(), |m| format!(", max {m}"));
    let until = s
        .duration_secs
        .map_or("until another schedule fires".to_string(), |d| {
            format!("for {d}s")
        });
    let scope = s.version.as_deref().unwrap_or("all versions");
    format!(
        "\"{}\" → min {}{max} on {scope}, {until}",
        s.cron, s.min_instances
    )
}

fn schedules_table(schedules: &[ScheduleView]) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    let rows: Vec<Vec<String>> = schedules
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.cron.clone(),
                s.min_instances.to_string(),
                opt(s.max_instances.map(|m| m.to_string())),
                s.version.clone().unwrap_or_else(|| "*".to_string()),
                opt(s.duration_secs.map(|d| format!("{d}s"))),
            ]
        })
        .collect();
    table::render(&["ID", "CRON", "MIN", "MAX", "VERSION", "DURATION"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_body_has_only_given_flags() {
        let args = ScaleArgs {
            service: "hello".into(),
            version: None,
            min: Some(2),
            max: None,
            concurrency: Some(10),
            target_utilization: None,
            scale_to_zero_after: None,
            queue_depth: None,
        };
        assert_eq!(
            Value::Object(args.body()),
            json!({"min_instances": 2, "concurrency": 10})
        );
    }

    #[test]
    fn schedule_descriptions() {
        let cases = [
            (
                ScheduleView {
                    id: 1,
                    version: None,
                    cron: "0 9 * * 1-5".into(),
                    min_instances: 3,
                    max_instances: None,
                    duration_secs: None,
                },
                "\"0 9 * * 1-5\" → min 3 on all versions, until another schedule fires",
            ),
            (
                ScheduleView {
                    id: 2,
                    version: Some("v2".into()),
                    cron: "@daily".into(),
                    min_instances: 1,
                    max_instances: Some(4),
                    duration_secs: Some(3600),
                },
                "\"@daily\" → min 1, max 4 on v2, for 3600s",
            ),
        ];
        for (schedule, expected) in cases {
            assert_eq!(describe(&schedule), expected);
        }
    }
}
