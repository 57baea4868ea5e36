//! The OpenAPI 3 document for `/v1`, generated from one table of routes ([`ROUTES`]). The
//! black-box tests request every documented path, so a route missing from the router shows up.

use axum::Json;
use serde_json::{json, Map, Value};

/// `(method, path, summary, request body schema, success status, response schema)`.
pub type RouteDoc = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    u16,
    &'static str,
);

pub const ROUTES: &[RouteDoc] = &[
    (
        "get",
        "/v1/health",
        "Liveness; needs no token",
        None,
        200,
        "Health",
    ),
    (
        "get",
        "/v1/openapi.json",
        "This document",
        None,
        200,
        "Object",
    ),
    (
        "get",
        "/v1/namespaces",
        "List namespaces",
        None,
        200,
        "NamespaceList",
    ),
    (
        "get",
        "/v1/namespaces/{ns}/services",
        "List services",
        None,
        200,
        "ServiceList",
    ),
    (
        "get",
        "/v1/namespaces/{ns}/services/{service}",
        "Show a service",
        None,
        200,
        "Service",
    ),
    (
        "delete",
        "/v1/namespaces/{ns}/services/{service}",
        "Delete a service, its versions, instances and domains",
        None,
        200,
        "Deleted",
    ),
    (
        "get",
        "/v1/namespaces/{ns}/services/{service}/versions",
        "List versions, oldest first",
        None,
        200,
        "VersionList",
    ),
    (
        "post",
        "/v1/namespaces/{ns}/services/{service}/versions",
        "Deploy a new version (creates the service on first deploy)",
        Some("Deploy"),
        201,
        "Deployed",
    ),
    (
        "get",
        "/v1/namespaces/{ns}/services/{service}/versions/{version}",
        "Show a version",
        None,
        200,
        "Version",
    ),
    (
        "delete",
        "/v1/namespaces/{ns}/services/{service}/versions/{version}",
        "Delete a version that takes no traffic",
        None,
        200,
        "Deleted",
    ),
    (
        "patch",
        "/v1/namespaces/{ns}/services/{service}/versions/{version}/scaling",
        "Change a version's scaling in place (no new version)",
        Some("ScalingUpdate"),
        200,
        "Version",
    ),
    (
        "get",
        "/v1/keys",
        "List S3 access keys (ids only)",
        None,
        200,
        "KeyList",
    ),
    (
        "post",
        "/v1/keys",
        "Create an S3 access key; the secret is returned once",
        None,
        201,
        "NewKey",
    ),
    (
        "delete",
        "/v1/keys/{id}",
        "Revoke an S3 access key",
        None,
        200,
        "Deleted",
    ),
    (
        "get",
        "/v1/buckets",
        "List buckets",
        None,
        200,
        "BucketList",
    ),
    (
        "post",
        "/v1/buckets",
        "Create a bucket",
        Some("NewBucket"),
        201,
        "Bucket",
    ),
    (
        "delete",
        "/v1/buckets/{name}",
        "Delete an empty bucket",
        None,
        200,
        "Deleted",
    ),
    (
        "get",
        "/v1/usage",
        "Metered usage and its cost (query: namespace, service, version, since=24h, by=service|version|day)",
        None,
        200,
        "Usage",
    ),
    (
        "get",
        "/v1/namespaces/{ns}/services/{service}/schedules",
        "List scheduled scaling policies",
        None,
        200,
        "ScheduleList",
    ),
    (
        "post",
        "/v1/namespaces/{ns}/services/{service}/schedules",
        "Add a scheduled scaling policy (cron in the server's time zone)",
        Some("NewSchedule"),
        201,
        "Schedule",
    ),
    (
        "delete",
        "/v1/namespaces/{ns}/services/{service}/schedules/{id}",
        "Remove a scheduled scaling policy",
        None,
        200,
        "Deleted",
    ),
    (
        "get",
        "/v1/namespaces/{ns}/services/{service}/traffic",
        "Show the traffic policy",
        None,
        200,
        "TrafficPolicy",
    ),
    (
        "put",
        "/v1/namespaces/{ns}/services/{service}/traffic",
        "Replace the traffic policy",
        Some("TrafficPolicy"),
        200,
        "Service",
    ),
    (
        "get",
        "/v1/certs",
        "List the TLS certificates the HTTPS listener serves by SNI",
        None,
        200,
        "Object",
    ),
    (
        "post",
        "/v1/certs",
        "Add (or replace) the TLS certificate of a host",
        Some("Certificate"),
        201,
        "Object",
    ),
    (
        "delete",
        "/v1/certs/{host}",
        "Remove the TLS certificate of a host",
        None,
        200,
        "Deleted",
    ),
    (
        "get",
        "/v1/namespaces/{ns}/services/{service}/gateway",
        "Show the gateway policy (balancing, affinity, limits, access rules)",
        None,
        200,
        "GatewayPolicy",
    ),
    (
        "put",
        "/v1/namespaces/{ns}/services/{service}/gateway",
        "Replace the gateway policy",
        Some("GatewayPolicy"),
        200,
        "GatewayPolicy",
    ),
    (
        "post",
        "/v1/namespaces/{ns}/services/{service}/traffic/explain",
        "Explain how a request would be routed",
        Some("ExplainRequest"),
        200,
        "Explain",
    ),
    (
        "get",
        "/v1/namespaces/{ns}/services/{service}/logs",
        "Instance logs (tail, or since a cursor)",
        None,
        200,
        "Logs",
    ),
    (
        "get",
        "/v1/namespaces/{ns}/services/{service}/events",
        "Events of one service",
        None,
        200,
        "EventList",
    ),
    (
        "get",
        "/v1/events",
        "Events of all services",
        None,
        200,
        "EventList",
    ),
    (
        "get",
        "/v1/instances",
        "Running instances (filter with ?namespace=&service=)",
        None,
        200,
        "InstanceList",
    ),
    (
        "get",
        "/v1/domains",
        "List custom domains",
        None,
        200,
        "DomainList",
    ),
    (
        "post",
        "/v1/domains",
        "Bind a custom domain to a service",
        Some("Domain"),
        201,
        "Domain",
    ),
    (
        "delete",
        "/v1/domains/{host}",
        "Unbind a custom domain",
        None,
        200,
        "Deleted",
    ),
];

fn obj(props: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": props, "required": required})
}

fn list_of(key: &str, item: &str) -> Value {
    obj(
        json!({key: {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}}}),
        &[key],
    )
}

fn schemas() -> Value {
    let s = json!({"type": "string"});
    let i = json!({"type": "integer"});
    let target = obj(json!({"version": s, "percent": i}), &["version", "percent"]);
    let rule = obj(
        json!({"match": obj(json!({"source": {"type": "string", "enum": ["query", "header"]}, "name": s, "value": s}), &["source", "name", "value"]), "version": s}),
        &["match", "version"],
    );
    let gateway = json!({"type": "object", "additionalProperties": false, "properties": {"lb": s, "affinity": {"type": "string", "enum": ["none", "cookie"]}, "rate": s, "burst": i, "rate_per_ip": s, "burst_per_ip": i, "access": {"type": "array", "items": s}, "max_body_bytes": i, "ttfb_timeout_ms": i, "ws_idle_timeout_secs": i, "upstream_protocol": {"type": "string", "enum": ["http1", "h2c"]}, "eject_after": i, "eject_for_ms": i, "health_check_path": s, "health_check_interval_ms": i, "unhealthy_threshold": i, "healthy_threshold": i}});
    let mut schemas = json!({
        "Error": obj(json!({"error": obj(json!({"code": s, "message": s, "field": {"type": ["string", "null"]}}), &["code", "message", "field"])}), &["error"]),
        "Health": obj(json!({"status": s}), &["status"]),
        "Object": {"type": "object"},
        "Deleted": obj(json!({"deleted": s}), &["deleted"]),
        "NamespaceList": obj(json!({"namespaces": {"type": "array", "items": s}}), &["namespaces"]),
        "TrafficTarget": target,
        "RouteRule": rule,
        "TrafficPolicy": obj(json!({"split": {"type": "array", "items": {"$ref": "#/components/schemas/TrafficTarget"}}, "rules": {"type": "array", "items": {"$ref": "#/components/schemas/RouteRule"}}}), &["split"]),
        "Service": obj(json!({"namespace": s, "name": s, "url": s, "domains": {"type": "array", "items": s}, "traffic": {"type": "array", "items": {"$ref": "#/components/schemas/TrafficTarget"}}, "rules": {"type": "array", "items": {"$ref": "#/components/schemas/RouteRule"}}, "versions": {"type": "array", "items": s}, "created_at": i}), &["namespace", "name", "url", "domains", "traffic"]),
        "ServiceList": list_of("services", "Service"),
        "Deploy": {"type": "object", "additionalProperties": false, "properties": {"command": s, "env": {"type": "object", "additionalProperties": s}, "port": i, "health_path": s, "min_instances": i, "max_instances": i, "concurrency": i, "timeout_secs": i, "target_utilization": {"type": "number"}, "scale_to_zero_after_secs": i, "queue_depth": i, "no_traffic": {"type": "boolean"}, "new_version": {"type": "boolean"}}, "required": ["command"]},
        "Usage": {"type": "object", "properties": {"since_minutes": i, "by": s, "groups": {"type": "array", "items": {"type": "object"}}, "total": {"type": "object"}}, "required": ["groups", "total"]},
        "KeyList": {"type": "object", "properties": {"keys": {"type": "array", "items": {"type": "object", "properties": {"id": s, "created_at": i}}}}},
        "NewKey": {"type": "object", "properties": {"access_key": s, "secret_key": s, "created_at": i}, "required": ["access_key", "secret_key"]},
        "NewBucket": {"type": "object", "additionalProperties": false, "required": ["name"], "properties": {"name": s}},
        "Bucket": {"type": "object", "properties": {"name": s, "created_at": i}, "required": ["name"]},
        "BucketList": {"type": "object", "properties": {"buckets": {"type": "array", "items": {"$ref": "#/components/schemas/Bucket"}}}},
        "NewSchedule": {"type": "object", "additionalProperties": false, "required": ["cron", "min_instances"], "properties": {"cron": s, "min_instances": i, "max_instances": {"type": ["integer", "null"]}, "version": {"type": ["string", "null"]}, "duration_secs": {"type": ["integer", "null"]}}},
        "Schedule": obj(json!({"id": i, "namespace": s, "service": s, "version": {"type": ["string", "null"]}, "cron": s, "min_instances": i, "max_instances": {"type": ["integer", "null"]}, "duration_secs": {"type": ["integer", "null"]}, "created_at": i}), &["id", "cron", "min_instances"]),
        "ScheduleList": obj(json!({"schedules": {"type": "array", "items": {"$ref": "#/components/schemas/Schedule"}}}), &["schedules"]),
        "ScalingUpdate": {"type": "object", "additionalProperties": false, "properties": {"min_instances": i, "max_instances": i, "concurrency": i, "target_utilization": {"type": "number"}, "scale_to_zero_after_secs": i, "queue_depth": i}},
        "Version": obj(json!({"namespace": s, "service": s, "name": s, "url": s, "status": {"type": "string", "enum": ["deploying", "ready", "failed", "idle"]}, "traffic": i, "ready_instances": i, "desired_instances": i, "reason": {"type": ["string", "null"]}, "last_log_lines": {"type": "array", "items": s}, "scaling_reason": {"type": ["string", "null"]}, "inflight": i, "queued": i, "cold_starts": i, "last_cold_start_ms": {"type": ["integer", "null"]}, "spec": {"type": "object"}, "created_at": i}), &["name", "url", "status", "traffic"]),
        "VersionList": list_of("versions", "Version"),
        "Deployed": obj(json!({"service": {"$ref": "#/components/schemas/Service"}, "version": {"$ref": "#/components/schemas/Version"}, "created": {"type": "boolean"}}), &["service", "version", "created"]),
        "ExplainRequest": obj(json!({"url": s, "headers": {"type": "object", "additionalProperties": s}}), &["url"]),
        "Explain": obj(json!({"version": {"type": ["string", "null"]}, "rule": {"type": ["integer", "null"]}, "split": {"type": "array"}, "steps": {"type": "array", "items": s}}), &["steps"]),
        "Logs": obj(json!({"lines": {"type": "array", "items": obj(json!({"instance": s, "version": s, "line": s}), &["instance", "version", "line"])}, "cursor": s}), &["lines", "cursor"]),
        "Event": obj(json!({"id": i, "at": i, "namespace": s, "service": s, "kind": s, "message": s}), &["id", "at", "kind", "message"]),
        "EventList": list_of("events", "Event"),
        "Instance": obj(json!({"id": s, "namespace": s, "service": s, "version": s, "state": {"type": "string", "enum": ["starting", "ready", "draining", "crashed"]}, "port": i, "pid": {"type": ["integer", "null"]}, "restarts": i, "started_at": i, "inflight": i}), &["id", "state"]),
        "InstanceList": list_of("instances", "Instance"),
        "Domain": obj(json!({"host": s, "namespace": s, "service": s}), &["host", "service"]),
        "DomainList": list_of("domains", "Domain"),
    });
    schemas["GatewayPolicy"] = gateway;
    schemas["Certificate"] = obj(
        json!({"host": s, "cert_pem": s, "key_pem": s}),
        &["host", "cert_pem", "key_pem"],
    );
    schemas
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, body, status, response) in ROUTES {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": summary,
            "parameters": params,
            "responses": {
                status.to_string(): {"description": "success", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{response}")}}}},
                "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if let Some(body) = body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}});
        }
        if *path != "/v1/health" {
            op["security"] = json!([{"bearer": []}]);
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Nimbus API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

pub async fn serve() -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
        assert_eq!(doc["paths"].as_object().unwrap().len(), 26);
    }
}
