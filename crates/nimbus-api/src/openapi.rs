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
        "/v1/namespaces/{ns}/functions",
        "List functions",
        None,
        200,
        "FunctionList",
    ),
    (
        "get",
        "/v1/namespaces/{ns}/functions/{name}",
        "Show a function (settings, aliases, triggers)",
        None,
        200,
        "Function",
    ),
    (
        "delete",
        "/v1/namespaces/{ns}/functions/{name}",
        "Delete a function, its versions, triggers and queued invocations",
        None,
        200,
        "Deleted",
    ),
    (
        "post",
        "/v1/namespaces/{ns}/functions/{name}/versions",
        "Deploy a function version from a code folder",
        Some("FunctionDeploy"),
        201,
        "FunctionDeployed",
    ),
    (
        "post",
        "/v1/namespaces/{ns}/functions/{name}/invoke",
        "Invoke (header x-nimbus-invocation-type: async queues it; query qualifier, callback)",
        Some("Event"),
        200,
        "Invocation",
    ),
    (
        "get",
        "/v1/namespaces/{ns}/functions/{name}/invocations",
        "List async invocations (query status, limit)",
        None,
        200,
        "InvocationList",
    ),
    (
        "get",
        "/v1/invocations/{id}",
        "Show one async invocation",
        None,
        200,
        "Invocation",
    ),
    (
        "put",
        "/v1/namespaces/{ns}/functions/{name}/aliases/{alias}",
        "Create or change a weighted alias",
        Some("Alias"),
        200,
        "Alias",
    ),
    (
        "get",
        "/v1/namespaces/{ns}/functions/{name}/triggers",
        "List triggers",
        None,
        200,
        "TriggerList",
    ),
    (
        "post",
        "/v1/namespaces/{ns}/functions/{name}/triggers",
        "Add a timer (cron) or storage (bucket) trigger",
        Some("NewTrigger"),
        201,
        "Trigger",
    ),
    (
        "delete",
        "/v1/namespaces/{ns}/functions/{name}/triggers/{id}",
        "Remove a trigger",
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
    (
        "post",
        "/v1/namespaces/{ns}/services/{service}/builds",
        "Build the uploaded source folder (a tar; ?dockerfile=PATH) into an image, streaming the output as NDJSON",
        Some("BuildContext"),
        200,
        "BuildStream",
    ),
    (
        "get",
        "/v1/namespaces/{ns}/services/{service}/builds",
        "List the kept builds of a service, oldest first",
        None,
        200,
        "BuildList",
    ),
    (
        "get",
        "/v1/namespaces/{ns}/services/{service}/builds/{build}",
        "Show one build (or `latest`) with its log",
        None,
        200,
        "BuildWithLog",
    ),
    (
        "post",
        "/v1/images/pull",
        "Make an image present locally (pulls when absent), streaming progress as NDJSON",
        Some("Pull"),
        200,
        "PullStream",
    ),
    (
        "get",
        "/v1/volumes",
        "List volumes with the containers and versions that mount them",
        None,
        200,
        "VolumeList",
    ),
    (
        "post",
        "/v1/volumes",
        "Create a named volume",
        Some("NewVolume"),
        201,
        "Volume",
    ),
    (
        "delete",
        "/v1/volumes/{name}",
        "Delete a volume and its data (409 while a version or container mounts it)",
        None,
        200,
        "Deleted",
    ),
];

/// Bodies and answers that are not JSON.
fn content_type(schema: &str) -> &'static str {
    match schema {
        "BuildContext" => "application/x-tar",
        "BuildStream" | "PullStream" => "application/x-ndjson",
        _ => "application/json",
    }
}

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
    let mut all = json!({
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
        "Deploy": {"type": "object", "additionalProperties": false, "properties": {"command": s, "image": s, "build": s, "cpu": {"type": "number"}, "memory": {"type": ["string", "integer"]}, "tmp_size": {"type": ["string", "integer"]}, "volumes": {"type": "array", "items": obj(json!({"name": s, "path": s}), &["name", "path"])}, "env": {"type": "object", "additionalProperties": s}, "port": i, "health_path": s, "min_instances": i, "max_instances": i, "concurrency": i, "timeout_secs": i, "target_utilization": {"type": "number"}, "scale_to_zero_after_secs": i, "queue_depth": i, "no_traffic": {"type": "boolean"}, "new_version": {"type": "boolean"}, "from": s, "remove_env": {"type": "array", "items": s}}},
        "Usage": {"type": "object", "properties": {"since_minutes": i, "by": s, "groups": {"type": "array", "items": {"type": "object"}}, "total": {"type": "object"}}, "required": ["groups", "total"]},
        "FunctionList": {"type": "object", "properties": {"functions": {"type": "array", "items": {"$ref": "#/components/schemas/Function"}}}},
        "Function": {"type": "object", "properties": {"name": s, "url": s, "function": {"type": "object"}, "aliases": {"type": "array"}, "triggers": {"type": "array"}, "versions": {"type": "array", "items": s}}},
        "FunctionDeploy": {"type": "object", "additionalProperties": false, "required": ["runtime", "handler", "code_dir"], "properties": {"runtime": {"type": "string", "enum": ["python3", "node", "binary"]}, "handler": s, "code_dir": s, "memory": s, "timeout": s, "env": {"type": "object"}, "max_instances": i, "min_instances": i, "no_traffic": {"type": "boolean"}}},
        "FunctionDeployed": {"type": "object", "properties": {"function": {"type": "object"}, "version": {"type": "object"}}},
        "Event": {"type": "object"},
        "Invocation": {"type": "object", "properties": {"id": s, "status": s, "request_id": s, "version": s, "result": {}, "error": {"type": "object"}}},
        "InvocationList": {"type": "object", "properties": {"invocations": {"type": "array", "items": {"$ref": "#/components/schemas/Invocation"}}}},
        "Alias": {"type": "object", "properties": {"split": s}},
        "NewTrigger": {"type": "object", "additionalProperties": false, "properties": {"cron": s, "bucket": s, "events": s, "prefix": s}},
        "Trigger": {"type": "object", "properties": {"id": i, "kind": s, "cron": {"type": ["string", "null"]}, "bucket": {"type": ["string", "null"]}}},
        "TriggerList": {"type": "object", "properties": {"triggers": {"type": "array", "items": {"$ref": "#/components/schemas/Trigger"}}}},
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
    if let (Some(all), Value::Object(more)) = (all.as_object_mut(), container_schemas()) {
        all.extend(more);
    }
    all["GatewayPolicy"] = gateway;
    all["Certificate"] = obj(
        json!({"host": s, "cert_pem": s, "key_pem": s}),
        &["host", "cert_pem", "key_pem"],
    );
    all
}

/// Builds, image pulls and volumes.
fn container_schemas() -> Value {
    let s = json!({"type": "string"});
    let i = json!({"type": "integer"});
    let maybe_s = json!({"type": ["string", "null"]});
    json!({
        "BuildContext": {"type": "string", "format": "binary", "description": "the source folder as a tar"},
        "Build": obj(json!({"id": s, "namespace": s, "service": s, "status": {"type": "string", "enum": ["running", "succeeded", "failed"]}, "image": s, "image_id": maybe_s, "dockerfile": maybe_s, "started_at": i, "duration_ms": {"type": ["integer", "null"]}, "failing_step": maybe_s, "error": maybe_s}), &["id", "status", "image"]),
        "BuildList": list_of("builds", "Build"),
        "BuildWithLog": {"allOf": [{"$ref": "#/components/schemas/Build"}, obj(json!({"log": {"type": "array", "items": s}}), &["log"])]},
        "BuildStream": {"type": "string", "description": "NDJSON: {\"build\": Build}, then {\"line\": \"...\"} per output line, then {\"result\": Build} or {\"error\": {code, message, field}, \"build\": Build}"},
        "Pull": obj(json!({"image": s}), &["image"]),
        "PullStream": {"type": "string", "description": "NDJSON: {\"line\": \"...\"} per progress message, then {\"result\": {\"image\": \"...\", \"pulled\": true}} or {\"error\": {code, message, field}}"},
        "NewVolume": obj(json!({"name": s}), &["name"]),
        "Volume": obj(json!({"name": s, "created_at": maybe_s, "used_by": {"type": "array", "items": s}, "versions": {"type": "array", "items": s}}), &["name", "used_by", "versions"]),
        "VolumeList": list_of("volumes", "Volume"),
    })
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
                status.to_string(): {"description": "success", "content": {content_type(response): {"schema": {"$ref": format!("#/components/schemas/{response}")}}}},
                "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if let Some(body) = body {
            op["requestBody"] = json!({"required": true, "content": {content_type(body): {"schema": {"$ref": format!("#/components/schemas/{body}")}}}});
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
        assert_eq!(doc["paths"].as_object().unwrap().len(), 40);
    }
}
