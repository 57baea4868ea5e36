//! `nimbus instances [SERVICE]`: running (and restarting) instances in the namespace.

use super::table::{self, now_secs, or_dash};
use super::views::InstanceView;
use super::{decode_list, print_json, CliError, Ctx};

pub async fn list(ctx: &Ctx, service: Option<&str>) -> Result<(), CliError> {
    let mut query = vec![("namespace", ctx.ns())];
    if let Some(service) = service {
        query.push(("service", service));
    }
    let answer = ctx.client.get(&["v1", "instances"], &query).await?;
    if ctx.json() {
        print_json(&answer)?;
        return Ok(());
    }
    let instances: Vec<InstanceView> = decode_list(&answer, "instances")?;
    if instances.is_empty() {
        match service {
            Some(service) => outln!("No instances of {service} in namespace {}.", ctx.ns()),
            None => outln!("No instances in namespace {}.", ctx.ns()),
        }
        return Ok(());
    }
    out!("{}", instances_table(&instances, now_secs()));
    Ok(())
}

fn instances_table(instances: &[InstanceView], now: u64) -> String {
    let opt = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let rows: Vec<Vec<String>> = instances
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                i.service.clone(),
                i.version.clone(),
                or_dash(&i.state),
                i.inflight.to_string(),
                opt(i.port),
                opt(i.pid),
                i.restarts.to_string(),
                table::age(now, i.started_at),
            ]
        })
        .collect();
    table::render(
        &[
            "ID", "SERVICE", "VERSION", "STATE", "INFLIGHT", "PORT", "PID", "RESTARTS", "AGE",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::cli::decode;

    #[test]
    fn table() {
        let instances: Vec<InstanceView> = decode(&json!([
            {"id": "hello-v1-3f9a2c", "namespace": "default", "service": "hello", "version": "v1",
             "state": "ready", "port": 41234, "pid": 1234, "restarts": 0, "started_at": 1000,
             "inflight": 3},
            {"id": "hello-v2-000001", "namespace": "default", "service": "hello", "version": "v2",
             "state": "crashed", "port": 41235, "pid": null, "restarts": 3, "started_at": 1100}
        ]))
        .unwrap();
        let expected = "\
ID               SERVICE  VERSION  STATE    INFLIGHT  PORT   PID   RESTARTS  AGE
hello-v1-3f9a2c  hello    v1       ready    3         41234  1234  0         2m
hello-v2-000001  hello    v2       crashed  0         41235  -     3         20s
";
        assert_eq!(instances_table(&instances, 1120), expected);
    }
}
