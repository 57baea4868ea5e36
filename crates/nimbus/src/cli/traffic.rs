//! `nimbus traffic SERVICE`: show the traffic policy, change it in one atomic PUT, or explain
//! how a request would be routed.

use std::collections::BTreeMap;

use clap::ArgMatches;
use nimbus_model::traffic::{parse_rule, parse_split, MatchSource};
use nimbus_model::{RouteRule, TrafficPolicy, TrafficTarget};
use serde_json::{json, Value};

use super::table::{rule_lines, split_text};
use super::views::{ExplainView, ServiceView};
use super::{decode, print_json, CliError, Ctx};

/// Flags of `nimbus traffic`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrafficArgs {
    /// Service name.
    pub service: String,
    /// Replace the percent split, e.g. v1=90,v2=10 (must sum to 100).
    #[arg(long, value_name = "V=PCT,...", conflicts_with = "explain")]
    pub to_versions: Option<String>,
    /// Append a rule on a query parameter, e.g. env=beta:v3 (VALUE may use * globs). Repeatable.
    #[arg(long, value_name = "NAME=VALUE:VERSION", conflicts_with = "explain")]
    pub route_query: Vec<String>,
    /// Append a rule on a request header, e.g. x-canary=1:v2. Repeatable.
    #[arg(long, value_name = "NAME=VALUE:VERSION", conflicts_with = "explain")]
    pub route_header: Vec<String>,
    /// Remove every rule first (then --route-* flags add new ones).
    #[arg(long, conflicts_with = "explain")]
    pub clear_routes: bool,
    /// Show how a request to URL would be routed; changes nothing.
    #[arg(long, value_name = "URL")]
    pub explain: Option<String>,
    /// A request header for --explain, NAME:VALUE. Repeatable.
    #[arg(
        short = 'H',
        long = "header",
        value_name = "NAME:VALUE",
        requires = "explain"
    )]
    pub headers: Vec<String>,
    /// --route-query and --route-header values in command-line order (see [`ordered_routes`]).
    #[arg(skip)]
    pub routes: Vec<(MatchSource, String)>,
}

/// The `--route-query` / `--route-header` values in the order they were typed, so rules are
/// appended in that order even when the two flags interleave.
pub fn ordered_routes(matches: &ArgMatches) -> Vec<(MatchSource, String)> {
    let mut all: Vec<(usize, MatchSource, String)> = Vec::new();
    for (id, source) in [
        ("route_query", MatchSource::Query),
        ("route_header", MatchSource::Header),
    ] {
        let values = matches.try_get_many::<String>(id).ok().flatten();
        if let (Some(indices), Some(values)) = (matches.indices_of(id), values) {
            all.extend(indices.zip(values).map(|(i, v)| (i, source, v.clone())));
        }
    }
    all.sort_by_key(|(i, _, _)| *i);
    all.into_iter().map(|(_, s, v)| (s, v)).collect()
}

/// A change to apply to the current policy, parsed and checked before any request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficChange {
    pub split: Option<Vec<TrafficTarget>>,
    pub clear_routes: bool,
    pub add_rules: Vec<RouteRule>,
}

impl TrafficChange {
    /// `None` when no flag modifies the policy.
    pub fn from_args(args: &TrafficArgs) -> Result<Option<Self>, CliError> {
        let routes: Vec<(MatchSource, String)> = if args.routes.is_empty() {
            let query = args
                .route_query
                .iter()
                .map(|r| (MatchSource::Query, r.clone()));
            let header = args
                .route_header
                .iter()
                .map(|r| (MatchSource::Header, r.clone()));
            query.chain(header).collect()
        } else {
            args.routes.clone()
        };
        if args.to_versions.is_none() && !args.clear_routes && routes.is_empty() {
            return Ok(None);
        }
        let split = match &args.to_versions {
            None => None,
            Some(text) => {
                let split = parse_split(text)?;
                // Sum, range and duplicates can be checked without knowing the versions.
                let named: Vec<String> = split.iter().map(|t| t.version.clone()).collect();
                TrafficPolicy {
                    split: split.clone(),
                    rules: Vec::new(),
                }
                .validate(&named)?;
                Some(split)
            }
        };
        let add_rules = routes
            .iter()
            .map(|(source, text)| parse_rule(*source, text))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Self {
            split,
            clear_routes: args.clear_routes,
            add_rules,
        }))
    }

    /// The policy to PUT: split replaced, rules cleared, then new rules appended in order.
    pub fn apply(&self, mut policy: TrafficPolicy) -> TrafficPolicy {
        if let Some(split) = &self.split {
            policy.split = split.clone();
        }
        if self.clear_routes {
            policy.rules.clear();
        }
        policy.rules.extend(self.add_rules.iter().cloned());
        policy
    }
}

/// Runs `nimbus traffic`.
pub async fn run(ctx: &Ctx, args: TrafficArgs) -> Result<(), CliError> {
    let path = [
        "v1",
        "namespaces",
        ctx.ns(),
        "services",
        &args.service,
        "traffic",
    ];
    if let Some(url) = &args.explain {
        let body = explain_body(url, &args.headers)?;
        let mut explain_path = path.to_vec();
        explain_path.push("explain");
        let answer = ctx.client.post(&explain_path, &body).await?;
        if ctx.json() {
            print_json(&answer)?;
        } else {
            out!("{}", explain_text(&decode(&answer)?));
        }
        return Ok(());
    }
    let change = TrafficChange::from_args(&args)?;
    let current = ctx.client.get(&path, &[]).await?;
    let Some(change) = change else {
        if ctx.json() {
            print_json(&current)?;
        } else {
            out!("{}", policy_text(&decode(&current)?));
        }
        return Ok(());
    };
    let policy = change.apply(decode(&current)?);
    let body = serde_json::to_value(&policy)
        .map_err(|e| CliError::Other(format!("cannot encode the traffic policy: {e}")))?;
    let answer = ctx.client.put(&path, &body).await?;
    if ctx.json() {
        print_json(&answer)?;
        return Ok(());
    }
    // The answer is the updated Service; fall back to what was sent if it lacks the fields.
    let shown = match decode::<ServiceView>(&answer) {
        Ok(service) if answer.get("traffic").is_some() => TrafficPolicy {
            split: service.traffic,
            rules: service.rules,
        },
        _ => policy,
    };
    out!("{}", policy_text(&shown));
    Ok(())
}

/// `{"url": URL, "headers": {name: value}}` from `--explain` and `--header NAME:VALUE`.
fn explain_body(url: &str, headers: &[String]) -> Result<Value, CliError> {
    let mut map = BTreeMap::new();
    for header in headers {
        match header.split_once(':') {
            Some((name, value)) if !name.trim().is_empty() => {
                map.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
            _ => {
                return Err(CliError::Usage(format!(
                    "--header {header:?} should look like NAME:VALUE, e.g. x-canary:1"
                )))
            }
        }
    }
    Ok(json!({"url": url, "headers": map}))
}

fn policy_text(policy: &TrafficPolicy) -> String {
    let mut out = format!("split: {}\n", split_text(&policy.split));
    if policy.rules.is_empty() {
        out.push_str("rules: none\n");
    } else {
        out.push_str("rules (checked in order, before the split):\n");
        for line in rule_lines(&policy.rules) {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}

fn explain_text(explain: &ExplainView) -> String {
    let mut out = String::new();
    for step in &explain.steps {
        out.push_str(&format!("  {step}\n"));
    }
    match (&explain.version, explain.rule) {
        (Some(version), Some(rule)) => {
            out.push_str(&format!("→ version {version} (rule {rule})\n"))
        }
        (Some(version), None) => out.push_str(&format!("→ version {version}\n")),
        (None, _) => out.push_str("→ the split decides, by percent, per request\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;
    use crate::{Cli, Command};

    /// Parses a command line the way `main` does, including the rule order.
    fn parse(argv: &[&str]) -> Result<TrafficArgs, clap::Error> {
        let matches = Cli::command().try_get_matches_from(argv)?;
        let cli = Cli::from_arg_matches(&matches)?;
        match cli.command {
            Command::Traffic(mut args) => {
                if let Some(sub) = matches.subcommand_matches("traffic") {
                    args.routes = ordered_routes(sub);
                }
                Ok(args)
            }
            other => panic!("not traffic: {other:?}"),
        }
    }

    fn policy(json: Value) -> TrafficPolicy {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn changes_to_policies() {
        let current = policy(json!({
            "split": [{"version": "v1", "percent": 100}],
            "rules": [{"match": {"source": "query", "name": "env", "value": "beta"}, "version": "v1"}]
        }));
        let cases: &[(&[&str], Value)] = &[
            // Split replaced, rules kept.
            (
                &[
                    "nimbus",
                    "traffic",
                    "hello",
                    "--to-versions",
                    "v1=90, v2=10",
                ],
                json!({"split": [{"version": "v1", "percent": 90}, {"version": "v2", "percent": 10}],
                       "rules": [{"match": {"source": "query", "name": "env", "value": "beta"}, "version": "v1"}]}),
            ),
            // Rules appended in the order typed, across both flags; header names lowercased.
            (
                &[
                    "nimbus",
                    "traffic",
                    "hello",
                    "--route-header",
                    "X-Canary=1:v2",
                    "--route-query",
                    "env=b*:v3",
                ],
                json!({"split": [{"version": "v1", "percent": 100}],
                       "rules": [{"match": {"source": "query", "name": "env", "value": "beta"}, "version": "v1"},
                                 {"match": {"source": "header", "name": "x-canary", "value": "1"}, "version": "v2"},
                                 {"match": {"source": "query", "name": "env", "value": "b*"}, "version": "v3"}]}),
            ),
            // --clear-routes empties the rules before new ones are added, wherever it is typed.
            (
                &[
                    "nimbus",
                    "traffic",
                    "hello",
                    "--route-query",
                    "env=beta:v2",
                    "--clear-routes",
                ],
                json!({"split": [{"version": "v1", "percent": 100}],
                       "rules": [{"match": {"source": "query", "name": "env", "value": "beta"}, "version": "v2"}]}),
            ),
            (
                &[
                    "nimbus",
                    "traffic",
                    "hello",
                    "--clear-routes",
                    "--to-versions",
                    "v2=100",
                ],
                json!({"split": [{"version": "v2", "percent": 100}], "rules": []}),
            ),
        ];
        for (argv, expected) in cases {
            let args = parse(argv).unwrap();
            let change = TrafficChange::from_args(&args).unwrap().expect("a change");
            let got = serde_json::to_value(change.apply(current.clone())).unwrap();
            assert_eq!(got, *expected, "{argv:?}");
        }
    }

    #[test]
    fn no_change_without_modifying_flags() {
        let args = parse(&["nimbus", "traffic", "hello"]).unwrap();
        assert_eq!(TrafficChange::from_args(&args).unwrap(), None);
    }

    #[test]
    fn local_rejections() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["nimbus", "traffic", "hello", "--to-versions", "v1"],
                "invalid_traffic",
            ),
            (
                &["nimbus", "traffic", "hello", "--to-versions", "v1=ninety"],
                "invalid_traffic",
            ),
            (
                &["nimbus", "traffic", "hello", "--to-versions", "v1=90,v2=5"],
                "invalid_traffic",
            ),
            (
                &["nimbus", "traffic", "hello", "--to-versions", "v1=50,v1=50"],
                "invalid_traffic",
            ),
            (
                &["nimbus", "traffic", "hello", "--to-versions", ""],
                "invalid_traffic",
            ),
            (
                &["nimbus", "traffic", "hello", "--route-query", "env=beta"],
                "invalid_rule",
            ),
            (
                &["nimbus", "traffic", "hello", "--route-header", "=1:v2"],
                "invalid_rule",
            ),
        ];
        for (argv, code) in cases {
            let args = parse(argv).unwrap();
            match TrafficChange::from_args(&args) {
                Err(CliError::Rejected(e)) => assert_eq!(e.code, *code, "{argv:?}"),
                other => panic!("{argv:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn flag_conflicts() {
        let cases: &[&[&str]] = &[
            // --explain changes nothing, so it does not mix with changes.
            &[
                "nimbus",
                "traffic",
                "hello",
                "--explain",
                "http://x/",
                "--to-versions",
                "v1=100",
            ],
            &[
                "nimbus",
                "traffic",
                "hello",
                "--explain",
                "http://x/",
                "--clear-routes",
            ],
            // --header only means something with --explain.
            &["nimbus", "traffic", "hello", "--header", "x-canary:1"],
        ];
        for argv in cases {
            assert!(parse(argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn explain_bodies() {
        let headers = vec!["X-Canary: 1".to_string(), "accept:text/html".to_string()];
        assert_eq!(
            explain_body("http://hello/?env=beta", &headers).unwrap(),
            json!({"url": "http://hello/?env=beta", "headers": {"x-canary": "1", "accept": "text/html"}})
        );
        assert!(matches!(
            explain_body("http://x/", &["nocolon".to_string()]),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn texts() {
        let p = policy(json!({
            "split": [{"version": "v1", "percent": 90}, {"version": "v2", "percent": 10}],
            "rules": [{"match": {"source": "header", "name": "x-canary", "value": "1"}, "version": "v2"}]
        }));
        assert_eq!(
            policy_text(&p),
            "split: v1=90%, v2=10%\nrules (checked in order, before the split):\n  1. header x-canary=1 → v2\n"
        );
        assert_eq!(
            policy_text(&TrafficPolicy::single("v1")),
            "split: v1=100%\nrules: none\n"
        );
        let explain: ExplainView = decode(&json!({"version": "v2", "rule": 2, "steps": [
            "rule 1 (query env=beta) does not match",
            "rule 2 (header x-canary=1) matches → version v2"]}))
        .unwrap();
        assert_eq!(
            explain_text(&explain),
            "  rule 1 (query env=beta) does not match\n  rule 2 (header x-canary=1) matches → version v2\n→ version v2 (rule 2)\n"
        );
        let split: ExplainView = decode(&json!({"version": null, "rule": null,
            "steps": ["no rules; the split decides: v1=100%"]}))
        .unwrap();
        assert_eq!(
            explain_text(&split),
            "  no rules; the split decides: v1=100%\n→ the split decides, by percent, per request\n"
        );
    }
}
