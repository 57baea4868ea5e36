//! `nimbus usage`: metered quantities and their cost, grouped by service, version or day.

use serde::Deserialize;
use serde_json::Value;

use super::table;
use super::{decode, print_json, CliError, Ctx};

/// Flags of `nimbus usage`.
#[derive(Debug, Clone, clap::Args)]
pub struct UsageArgs {
    /// Only this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Only this version (with --service).
    #[arg(long)]
    pub version: Option<String>,
    /// How far back: 30m, 24h, 7d.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Group rows by `service`, `version` or `day` (UTC).
    #[arg(long, default_value = "service")]
    pub by: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Quantities {
    cpu_seconds: f64,
    memory_used_gb_seconds: f64,
    instance_seconds: f64,
    requests: u64,
    egress_bytes: u64,
    build_seconds: f64,
    function_gb_seconds: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Cost {
    currency: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Group {
    service: Option<String>,
    version: Option<String>,
    day: Option<String>,
    usage: Quantities,
    cost: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Total {
    usage: Quantities,
    cost: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UsageAnswer {
    groups: Vec<Group>,
    total: Total,
}

pub async fn run(ctx: &Ctx, args: UsageArgs) -> Result<(), CliError> {
    let mut query = vec![
        ("namespace", ctx.ns().to_string()),
        ("since", args.since.clone()),
        ("by", args.by.clone()),
    ];
    if let Some(service) = &args.service {
        query.push(("service", service.clone()));
    }
    if let Some(version) = &args.version {
        query.push(("version", version.clone()));
    }
    let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let answer = ctx.client.get(&["v1", "usage"], &query).await?;
    if ctx.json() {
        return print_json(&answer);
    }
    let usage: UsageAnswer = decode(&answer)?;
    out!("{}", usage_table(&usage));
    Ok(())
}

/// `Money` is integer micro-units in JSON; shown with 6 decimals and the sheet's currency.
fn cost_text(cost: &Value) -> String {
    let parsed: Cost = serde_json::from_value(cost.clone()).unwrap_or_default();
    let total = match cost.get("total").and_then(Value::as_u64) {
        Some(micros) => format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000),
        None => "-".to_string(),
    };
    if parsed.currency.is_empty() {
        total
    } else {
        format!("{total} {}", parsed.currency)
    }
}

fn usage_table(answer: &UsageAnswer) -> String {
    let row = |name: String, q: &Quantities, cost: &Value| {
        vec![
            name,
            format!("{:.3}", q.cpu_seconds),
            format!("{:.3}", q.memory_used_gb_seconds),
            format!("{:.1}", q.instance_seconds),
            q.requests.to_string(),
            q.egress_bytes.to_string(),
            format!("{:.1}", q.build_seconds),
            format!("{:.3}", q.function_gb_seconds),
            cost_text(cost),
        ]
    };
    let mut rows: Vec<Vec<String>> = answer
        .groups
        .iter()
        .map(|g| {
            let name = match (&g.day, &g.service, &g.version) {
                (Some(day), _, _) => day.clone(),
                (None, Some(s), Some(v)) => format!("{s}/{v}"),
                (None, Some(s), None) => s.clone(),
                _ => "-".to_string(),
            };
            row(name, &g.usage, &g.cost)
        })
        .collect();
    rows.push(row(
        "TOTAL (free tier applied)".to_string(),
        &answer.total.usage,
        &answer.total.cost,
    ));
    table::render(
        &[
            "GROUP", "CPU-S", "MEM-GB-S", "INST-S", "REQUESTS", "EGRESS-B", "BUILD-S", "FN-GB-S",
            "COST",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn table_has_groups_and_total() {
        let answer: UsageAnswer = serde_json::from_value(json!({
            "groups": [{"service": "hello", "usage": {"cpu_seconds": 1.5, "requests": 10,
                        "egress_bytes": 2048}, "cost": {"currency": "USD", "total": 123}}],
            "total": {"usage": {"cpu_seconds": 1.5, "requests": 10, "egress_bytes": 2048},
                      "cost": {"currency": "USD", "total": 0}}
        }))
        .unwrap();
        let text = usage_table(&answer);
        assert!(text.contains("hello"), "{text}");
        assert!(text.contains("1.500"), "{text}");
        assert!(text.contains("0.000123 USD"), "{text}");
        assert!(text.contains("TOTAL"), "{text}");
    }
}
