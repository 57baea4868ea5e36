//! Bad input is rejected with the one error shape, the right status, and no change of state.

mod common;

use common::{error_of, sample_command, Server};
use serde_json::{json, Value};

/// Everything a rejected request must leave as it was.
async fn snapshot(server: &Server) -> Value {
    let services = server.api_ok("/v1/namespaces/default/services").await;
    let service = server.api_ok("/v1/namespaces/default/services/good").await;
    let traffic = server
        .api_ok("/v1/namespaces/default/services/good/traffic")
        .await;
    let domains = server.api_ok("/v1/domains").await;
    let versions: Vec<Value> = server
        .versions("good")
        .await
        .iter()
        .map(|v| json!({"name": v["name"], "spec": v["spec"], "traffic": v["traffic"]}))
        .collect();
    json!({
        "services": services,
        "service": service,
        "traffic": traffic,
        "domains": domains,
        "versions": versions,
    })
}

/// One rejected request: what is sent, and what must come back.
struct Case {
    label: &'static str,
    method: &'static str,
    path: &'static str,
    body: Value,
    status: u16,
    code: Option<&'static str>,
    field: Option<&'static str>,
    /// Text the message must contain.
    says: Option<&'static str>,
}

/// What is wrong with the answer to `case`, if anything.
fn check(case: &Case, status: u16, body: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if status != case.status {
        problems.push(format!("status {status}, want {}", case.status));
    }
    let Some(err) = body["error"].as_object() else {
        problems.push("no error object".into());
        return problems;
    };
    let code = err.get("code").and_then(Value::as_str).unwrap_or_default();
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if code.is_empty() || message.is_empty() || !err.contains_key("field") {
        problems.push("error must have code, message and field".into());
    }
    if let Some(want) = case.code {
        if code != want {
            problems.push(format!("code {code:?}, want {want:?}"));
        }
    }
    if let Some(want) = case.field {
        if err.get("field").and_then(Value::as_str) != Some(want) {
            problems.push(format!("field {:?}, want {want:?}", err.get("field")));
        }
    }
    if let Some(says) = case.says {
        if !message.contains(says) {
            problems.push(format!("message should mention {says:?}"));
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_rejected_with_error_shape_and_change_nothing() {
    let server = Server::start().await;
    server.deploy("good", &[]).await;
    server.deploy("good", &["--no-traffic"]).await;
    let before = snapshot(&server).await;

    let cmd = sample_command();
    let deploy = |extra: Value| {
        let mut body = json!({"command": cmd});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };
    let versions = "/v1/namespaces/default/services/good/versions";
    let traffic = "/v1/namespaces/default/services/good/traffic";
    let rule = |version: &str| {
        json!({"split": [{"version": "v1", "percent": 100}],
               "rules": [{"match": {"source": "query", "name": "env", "value": "beta"}, "version": version}]})
    };
    #[rustfmt::skip]
    let cases = vec![
        Case { label: "uppercase service name", method: "POST", path: "/v1/namespaces/default/services/Bad/versions",
               body: deploy(json!({})), status: 400, code: Some("invalid_name"), field: Some("service"), says: Some("'B'") },
        Case { label: "31-character service name", method: "POST", path: "/v1/namespaces/default/services/abcdefghijabcdefghijabcdefghijk/versions",
               body: deploy(json!({})), status: 400, code: Some("invalid_name"), field: Some("service"), says: Some("30") },
        Case { label: "service name starting with a digit", method: "POST", path: "/v1/namespaces/default/services/9lives/versions",
               body: deploy(json!({})), status: 400, code: Some("invalid_name"), field: Some("service"), says: Some("start with") },
        Case { label: "min_instances 51", method: "POST", path: versions,
               body: deploy(json!({"min_instances": 51, "max_instances": 50})), status: 400, code: Some("invalid_min_instances"), field: Some("min_instances"), says: Some("51") },
        Case { label: "max_instances 0", method: "POST", path: versions,
               body: deploy(json!({"max_instances": 0})), status: 400, code: Some("invalid_max_instances"), field: Some("max_instances"), says: None },
        Case { label: "concurrency 0", method: "POST", path: versions,
               body: deploy(json!({"concurrency": 0})), status: 400, code: Some("invalid_concurrency"), field: Some("concurrency"), says: None },
        Case { label: "concurrency 1001", method: "POST", path: versions,
               body: deploy(json!({"concurrency": 1001})), status: 400, code: Some("invalid_concurrency"), field: Some("concurrency"), says: Some("1001") },
        Case { label: "unknown field in deploy body", method: "POST", path: versions,
               body: deploy(json!({"colour": "blue"})), status: 400, code: None, field: None, says: Some("colour") },
        Case { label: "missing command", method: "POST", path: versions,
               body: json!({"env": {}}), status: 400, code: Some("missing_command"), field: Some("command"), says: None },
        Case { label: "reserved env", method: "POST", path: versions,
               body: deploy(json!({"env": {"PORT": "1"}})), status: 400, code: Some("reserved_env"), field: None, says: Some("PORT") },
        Case { label: "traffic sums to 90", method: "PUT", path: traffic,
               body: json!({"split": [{"version": "v1", "percent": 90}]}), status: 400, code: Some("invalid_traffic"), field: Some("traffic.split"), says: Some("90") },
        Case { label: "traffic to unknown version", method: "PUT", path: traffic,
               body: json!({"split": [{"version": "v9", "percent": 100}]}), status: 400, code: Some("unknown_version"), field: Some("traffic.split"), says: Some("v9") },
        Case { label: "rule to unknown version", method: "PUT", path: traffic,
               body: rule("v7"), status: 400, code: Some("unknown_version"), field: Some("traffic.rules[0]"), says: Some("v7") },
        Case { label: "delete a version taking traffic", method: "DELETE", path: "/v1/namespaces/default/services/good/versions/v1",
               body: Value::Null, status: 409, code: Some("version_in_use"), field: Some("version"), says: Some("v1") },
        Case { label: "invalid custom domain", method: "POST", path: "/v1/domains",
               body: json!({"host": "bad_host.example.com", "namespace": "default", "service": "good"}), status: 400, code: Some("invalid_domain"), field: Some("host"), says: None },
        Case { label: "reserved custom domain", method: "POST", path: "/v1/domains",
               body: json!({"host": "x--y.nimbus.localhost", "namespace": "default", "service": "good"}), status: 400, code: Some("reserved_domain"), field: Some("host"), says: None },
        Case { label: "domain for unknown service", method: "POST", path: "/v1/domains",
               body: json!({"host": "ok.example.com", "namespace": "default", "service": "ghost"}), status: 404, code: None, field: None, says: Some("ghost") },
        Case { label: "negative log tail", method: "GET", path: "/v1/namespaces/default/services/good/logs?tail=-1",
               body: Value::Null, status: 400, code: Some("invalid_query"), field: Some("tail"), says: Some("invalid digit") },
        Case { label: "an image name with capitals", method: "POST", path: versions,
               body: json!({"image": "Team/App:1"}), status: 400, code: Some("invalid_image"), field: Some("image"), says: Some("lowercase") },
        Case { label: "a body over the API's limit", method: "POST", path: versions,
               body: json!({"command": "x".repeat(3 << 20)}), status: 413, code: Some("body_too_large"), field: Some("body"), says: None },
        Case { label: "a method the route does not take", method: "PATCH", path: "/v1/namespaces/default/services/good",
               body: json!({}), status: 405, code: Some("method_not_allowed"), field: Some("method"), says: Some("PATCH") },
        Case { label: "events limit not a number", method: "GET", path: "/v1/namespaces/default/services/good/events?limit=many",
               body: Value::Null, status: 400, code: Some("invalid_query"), field: Some("limit"), says: None },
    ];

    let mut failures = Vec::new();
    for case in &cases {
        let (status, body) = match case.method {
            "GET" => server.api_get(case.path).await,
            "POST" => server.api_post(case.path, &case.body).await,
            "PUT" => server.api_put(case.path, &case.body).await,
            "DELETE" => server.api_delete(case.path).await,
            "PATCH" => {
                server
                    .api_call(reqwest::Method::PATCH, case.path, Some(&case.body))
                    .await
            }
            other => panic!("method {other}"),
        };
        let problems = check(case, status, &body);
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {} (answer {status} {body})",
                case.label,
                problems.join("; ")
            ));
        }
        let after = snapshot(&server).await;
        assert_eq!(
            before, after,
            "state changed after rejected case {:?}",
            case.label
        );
    }
    assert!(
        failures.is_empty(),
        "cases answered wrongly:\n{}",
        failures.join("\n")
    );

    // Tokens.
    let path = "/v1/namespaces/default/services";
    for (label, auth) in [
        ("no token", None),
        ("wrong token", Some("Bearer not-the-token")),
        ("not bearer", Some("Basic YWRtaW46YWRtaW4=")),
    ] {
        let (status, body) = server.api_get_with_auth(path, auth).await;
        assert_eq!(status, 401, "{label}: {body}");
        error_of(&body);
    }
    let (status, body) = server.api_get_with_auth("/v1/health", None).await;
    assert_eq!(status, 200, "health needs no token: {body}");

    // The CLI reports the rule and exits non-zero.
    let out = server.cli(&["deploy", "Bad", "--command", &cmd]).await;
    assert!(!out.success(), "{out}");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("lowercase"),
        "CLI should say which rule failed:\n{out}"
    );
    let out = server
        .cli(&["traffic", "good", "--to-versions", "v1=80,v2=10"])
        .await;
    assert!(!out.success(), "{out}");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("100"),
        "{out}"
    );
    assert_eq!(
        before,
        snapshot(&server).await,
        "state changed after rejected CLI commands"
    );
}
