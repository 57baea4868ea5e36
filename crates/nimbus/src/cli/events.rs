//! `nimbus events [SERVICE] [-f]`: the events timeline (deploys, traffic changes, scale
//! decisions, cold starts, crashes), newest last.

use std::time::Duration;

use serde::Deserialize;

use super::{decode_list, print_json, CliError, Ctx};

/// How often `-f` asks for new events.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Flags of `nimbus events`.
#[derive(Debug, Clone, clap::Args)]
pub struct EventsArgs {
    /// Only this service's events [default: every service].
    pub service: Option<String>,
    /// Keep printing new events as they happen (Ctrl-C stops).
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// How many recent events to show first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

/// `Event`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct EventView {
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    pub namespace: String,
    pub service: String,
    pub kind: String,
    pub message: String,
}

pub async fn run(ctx: &Ctx, args: EventsArgs) -> Result<(), CliError> {
    let path: Vec<&str> = match &args.service {
        Some(service) => vec!["v1", "namespaces", ctx.ns(), "services", service, "events"],
        None => vec!["v1", "events"],
    };
    let limit = args.limit.to_string();
    let mut after: Option<i64> = None;
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let after_text = after.map(|a| a.to_string());
        let mut query = vec![("limit", limit.as_str())];
        if let Some(after) = &after_text {
            query.push(("after", after.as_str()));
        }
        let answer = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            answer = ctx.client.get(&path, &query) => answer?,
        };
        let events: Vec<EventView> = decode_list(&answer, "events")?;
        if ctx.json() && !args.follow {
            return print_json(&answer);
        }
        for event in &events {
            if ctx.json() {
                outln!("{}", event_json(event));
            } else {
                outln!("{}", format_event(event));
            }
        }
        if let Some(last) = events.last() {
            after = Some(last.id);
        } else if after.is_none() {
            after = Some(0);
            if !args.follow {
                outln!("No events yet.");
            }
        }
        if !args.follow {
            return Ok(());
        }
        tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
    }
}

fn event_json(e: &EventView) -> String {
    serde_json::json!({
        "id": e.id, "at": e.at, "namespace": e.namespace, "service": e.service,
        "kind": e.kind, "message": e.message,
    })
    .to_string()
}

/// `2026-11-25T10:00:00Z  hello  scale       version v1: 1 → 3 instances (...)`
fn format_event(e: &EventView) -> String {
    let at = chrono::DateTime::from_timestamp(e.at, 0).map_or_else(
        || e.at.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    );
    format!("{at}  {:<12} {:<14} {}", e.service, e.kind, e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_one_line() {
        let e = EventView {
            id: 1,
            at: 1_700_000_000,
            namespace: "default".into(),
            service: "hello".into(),
            kind: "cold_start".into(),
            message: "cold start of version v1".into(),
        };
        assert_eq!(
            format_event(&e),
            "2023-11-14T22:13:20Z  hello        cold_start     cold start of version v1"
        );
    }
}
