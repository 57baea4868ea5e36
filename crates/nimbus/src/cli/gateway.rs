//! `nimbus gateway show SERVICE` and `nimbus gateway set SERVICE [flags]`: a service's gateway
//! policy (load balancing, session affinity, rate limits, access rules, size and time limits,
//! upstream protocol, outlier ejection). `set` reads the current policy, changes only what the
//! flags name, and writes it back in one PUT, which the server checks before storing.

use clap::ArgMatches;
use nimbus_model::gateway::{parse_duration_ms, parse_size, Affinity, UpstreamProtocol};
use nimbus_model::{GatewaySpec, ModelError};
use serde_json::Value;

use super::{decode, print_json, CliError, Ctx};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum GatewayCmd {
    /// Show a service's gateway policy.
    Show {
        /// Service name.
        service: String,
    },
    /// Change a service's gateway policy; flags not given keep their current value.
    Set(Box<SetArgs>),
}

/// Flags of `nimbus gateway set`. `off` turns a limit off.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SetArgs {
    /// Service name.
    pub service: String,
    /// Start from the default policy instead of the current one.
    #[arg(long)]
    pub reset: bool,
    /// Load balancing: least-outstanding (default), round-robin, weighted, least-request,
    /// hash:ip, hash:header:NAME or hash:cookie:NAME.
    #[arg(long, value_name = "ALGORITHM")]
    pub lb: Option<String>,
    /// Session affinity to a version: cookie or none.
    #[arg(long, value_name = "cookie|none")]
    pub affinity: Option<String>,
    /// Rate limit for the whole service, e.g. 100/s (or off); 429 past it.
    #[arg(long, value_name = "N/UNIT")]
    pub rate: Option<String>,
    /// Burst of the service's rate limit [default: one period's worth].
    #[arg(long, value_name = "N")]
    pub burst: Option<u32>,
    /// Rate limit per client IP, e.g. 10/s (or off).
    #[arg(long, value_name = "N/UNIT")]
    pub rate_per_ip: Option<String>,
    /// Burst of the per-IP rate limit.
    #[arg(long, value_name = "N")]
    pub burst_per_ip: Option<u32>,
    /// Allow requests matching RULE: `ip=10.0.0.0/8`, `path=/api`, `header:x-env=prod*`
    /// (space-separated conditions all hold), or `all`. Repeatable; rules keep command-line
    /// order with --deny, the first match decides, and unmatched requests are allowed.
    #[arg(long, value_name = "RULE")]
    pub allow: Vec<String>,
    /// Deny (403) requests matching RULE; see --allow.
    #[arg(long, value_name = "RULE")]
    pub deny: Vec<String>,
    /// Remove every access rule (then --allow/--deny add new ones).
    #[arg(long)]
    pub clear_access: bool,
    /// Largest request body, e.g. 10Mi (or off); 413 past it.
    #[arg(long, value_name = "SIZE")]
    pub max_body: Option<String>,
    /// Longest wait for an instance's response headers once the request is sent, e.g. 30s
    /// (or off); 504 past it.
    #[arg(long, value_name = "DURATION")]
    pub ttfb_timeout: Option<String>,
    /// Close a WebSocket with no traffic either way for this long, e.g. 5m (or off: the
    /// version's request timeout).
    #[arg(long, value_name = "DURATION")]
    pub ws_idle_timeout: Option<String>,
    /// How to talk to instances: http1, or h2c (HTTP/2 cleartext, for gRPC apps).
    #[arg(long, value_name = "http1|h2c")]
    pub upstream_protocol: Option<String>,
    /// Consecutive 5xx or connection failures that take an instance out for a while (0: never).
    #[arg(long, value_name = "N")]
    pub eject_after: Option<u32>,
    /// How long the first ejection lasts, e.g. 10s (doubling while it keeps failing).
    #[arg(long, value_name = "DURATION")]
    pub eject_for: Option<String>,
    /// Active health checks: GET PATH on every ready instance (below 500 passes), or off.
    #[arg(long, value_name = "PATH")]
    pub health_check: Option<String>,
    /// Time between two checks of one instance, e.g. 5s.
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// Failed checks in a row that take an instance out of rotation (default 3).
    #[arg(long, value_name = "N")]
    pub unhealthy_after: Option<u32>,
    /// Passed checks in a row that bring it back (default 2).
    #[arg(long, value_name = "N")]
    pub healthy_after: Option<u32>,
    /// --allow and --deny values in command-line order (see [`ordered_access`]).
    #[arg(skip)]
    pub access: Vec<(&'static str, String)>,
}

/// The `--allow` / `--deny` values in the order they were typed.
pub fn ordered_access(matches: &ArgMatches) -> Vec<(&'static str, String)> {
    let mut all: Vec<(usize, &'static str, String)> = Vec::new();
    for (id, action) in [("allow", "allow"), ("deny", "deny")] {
        let values = matches.try_get_many::<String>(id).ok().flatten();
        if let (Some(indices), Some(values)) = (matches.indices_of(id), values) {
            all.extend(indices.zip(values).map(|(i, v)| (i, action, v.clone())));
        }
    }
    all.sort_by_key(|(i, _, _)| *i);
    all.into_iter().map(|(_, a, v)| (a, v)).collect()
}

pub async fn run(ctx: &Ctx, cmd: GatewayCmd) -> Result<(), CliError> {
    match cmd {
        GatewayCmd::Show { service } => {
            let answer = ctx.client.get(&path(ctx, &service), &[]).await?;
            show(ctx, &service, &answer)
        }
        GatewayCmd::Set(args) => {
            let current: GatewaySpec = if args.reset {
                GatewaySpec::default()
            } else {
                decode(&ctx.client.get(&path(ctx, &args.service), &[]).await?)?
            };
            let spec = apply(current, &args)?;
            let body = serde_json::to_value(&spec)
                .map_err(|e| CliError::Other(format!("cannot encode the policy: {e}")))?;
            let answer = ctx.client.put(&path(ctx, &args.service), &body).await?;
            show(ctx, &args.service, &answer)
        }
    }
}

fn path<'a>(ctx: &'a Ctx, service: &'a str) -> [&'a str; 6] {
    ["v1", "namespaces", ctx.ns(), "services", service, "gateway"]
}

fn show(ctx: &Ctx, service: &str, answer: &Value) -> Result<(), CliError> {
    if ctx.json() {
        return print_json(answer);
    }
    let spec: GatewaySpec = decode(answer)?;
    outln!("Gateway policy of {service}:");
    for (name, value) in describe(&spec) {
        outln!("  {name:<18}{value}");
    }
    Ok(())
}

/// One line per setting, defaults spelled out.
fn describe(spec: &GatewaySpec) -> Vec<(&'static str, String)> {
    let or = |v: &Option<String>, default: &str| v.clone().unwrap_or_else(|| default.to_string());
    let rate = |rate: &Option<String>, burst: Option<u32>| match (rate, burst) {
        (None, _) => "off".to_string(),
        (Some(r), Some(b)) => format!("{r} burst {b}"),
        (Some(r), None) => r.clone(),
    };
    let access = if spec.access.is_empty() {
        "allow all".to_string()
    } else {
        spec.access.join("; ")
    };
    vec![
        ("lb", or(&spec.lb, "least-outstanding")),
        (
            "affinity",
            match spec.affinity {
                Affinity::None => "none".into(),
                Affinity::Cookie => "cookie".into(),
            },
        ),
        ("rate", rate(&spec.rate, spec.burst)),
        ("rate per ip", rate(&spec.rate_per_ip, spec.burst_per_ip)),
        ("access", access),
        (
            "max body",
            spec.max_body_bytes
                .map_or("off".into(), |b| format!("{b} bytes")),
        ),
        (
            "ttfb timeout",
            spec.ttfb_timeout_ms
                .map_or("off".into(), |ms| format!("{ms} ms")),
        ),
        (
            "ws idle timeout",
            spec.ws_idle_timeout_secs
                .map_or("version timeout".into(), |s| format!("{s}s")),
        ),
        (
            "upstream",
            match spec.upstream_protocol {
                UpstreamProtocol::Http1 => "http1".into(),
                UpstreamProtocol::H2c => "h2c".into(),
            },
        ),
        (
            "health checks",
            match &spec.health_check_path {
                None => "off".into(),
                Some(path) => format!(
                    "GET {path} every {} ms, out after {}, back after {}",
                    spec.health_check_interval_ms
                        .unwrap_or(nimbus_model::gateway::DEFAULT_HEALTH_CHECK_INTERVAL_MS),
                    spec.unhealthy_threshold
                        .unwrap_or(nimbus_model::gateway::DEFAULT_UNHEALTHY_THRESHOLD),
                    spec.healthy_threshold
                        .unwrap_or(nimbus_model::gateway::DEFAULT_HEALTHY_THRESHOLD),
                ),
            },
        ),
        (
            "ejection",
            match spec.eject_after {
                Some(0) => "off".into(),
                n => format!(
                    "after {} failures, {} ms",
                    n.unwrap_or(nimbus_model::gateway::DEFAULT_EJECT_AFTER),
                    spec.eject_for_ms
                        .unwrap_or(nimbus_model::gateway::DEFAULT_EJECT_FOR_MS)
                ),
            },
        ),
    ]
}

/// The flags applied to a policy. Text fields are checked by the server (with the gateway's own
/// parser); sizes and durations are parsed here.
pub fn apply(mut spec: GatewaySpec, args: &SetArgs) -> Result<GatewaySpec, CliError> {
    let off = |v: &str| v.eq_ignore_ascii_case("off");
    let field = |mut e: ModelError, name: &str| {
        e.field = Some(name.to_string());
        CliError::from(e)
    };
    if let Some(lb) = &args.lb {
        spec.lb = (lb != "least-outstanding").then(|| lb.clone());
    }
    if let Some(affinity) = &args.affinity {
        spec.affinity = match affinity.as_str() {
            "cookie" => Affinity::Cookie,
            "none" | "off" => Affinity::None,
            other => {
                return Err(CliError::Usage(format!(
                    "--affinity {other:?} must be cookie or none"
                )))
            }
        };
    }
    if let Some(rate) = &args.rate {
        spec.rate = (!off(rate)).then(|| rate.clone());
        if spec.rate.is_none() {
            spec.burst = None;
        }
    }
    if args.burst.is_some() {
        spec.burst = args.burst;
    }
    if let Some(rate) = &args.rate_per_ip {
        spec.rate_per_ip = (!off(rate)).then(|| rate.clone());
        if spec.rate_per_ip.is_none() {
            spec.burst_per_ip = None;
        }
    }
    if args.burst_per_ip.is_some() {
        spec.burst_per_ip = args.burst_per_ip;
    }
    let access: Vec<(&str, String)> = if args.access.is_empty() {
        args.allow
            .iter()
            .map(|r| ("allow", r.clone()))
            .chain(args.deny.iter().map(|r| ("deny", r.clone())))
            .collect()
    } else {
        args.access.clone()
    };
    if args.clear_access || !access.is_empty() {
        spec.access = access
            .into_iter()
            .map(|(action, rule)| {
                let rule = rule.trim();
                if rule.is_empty() || rule == "all" {
                    action.to_string()
                } else {
                    format!("{action} {rule}")
                }
            })
            .collect();
    }
    if let Some(size) = &args.max_body {
        spec.max_body_bytes = if off(size) {
            None
        } else {
            Some(parse_size(size).map_err(|e| field(e, "max_body"))?)
        };
    }
    if let Some(d) = &args.ttfb_timeout {
        spec.ttfb_timeout_ms = if off(d) {
            None
        } else {
            Some(parse_duration_ms(d).map_err(|e| field(e, "ttfb_timeout"))?)
        };
    }
    if let Some(d) = &args.ws_idle_timeout {
        spec.ws_idle_timeout_secs = if off(d) {
            None
        } else {
            let ms = parse_duration_ms(d).map_err(|e| field(e, "ws_idle_timeout"))?;
            Some(ms.div_ceil(1000))
        };
    }
    if let Some(protocol) = &args.upstream_protocol {
        spec.upstream_protocol = match protocol.as_str() {
            "http1" | "http/1.1" => UpstreamProtocol::Http1,
            "h2c" => UpstreamProtocol::H2c,
            other => {
                return Err(CliError::Usage(format!(
                    "--upstream-protocol {other:?} must be http1 or h2c"
                )))
            }
        };
    }
    if args.eject_after.is_some() {
        spec.eject_after = args.eject_after;
    }
    if let Some(d) = &args.eject_for {
        spec.eject_for_ms = Some(parse_duration_ms(d).map_err(|e| field(e, "eject_for"))?);
    }
    if let Some(path) = &args.health_check {
        spec.health_check_path = (!off(path)).then(|| path.clone());
    }
    if let Some(d) = &args.health_interval {
        spec.health_check_interval_ms =
            Some(parse_duration_ms(d).map_err(|e| field(e, "health_interval"))?);
    }
    if args.unhealthy_after.is_some() {
        spec.unhealthy_threshold = args.unhealthy_after;
    }
    if args.healthy_after.is_some() {
        spec.healthy_threshold = args.healthy_after;
    }
    spec.validate()?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut SetArgs)) -> SetArgs {
        let mut args = SetArgs {
            service: "hello".into(),
            ..SetArgs::default()
        };
        f(&mut args);
        args
    }

    #[test]
    fn flags_change_only_what_they_name() {
        let current = GatewaySpec {
            lb: Some("round-robin".into()),
            rate: Some("100/s".into()),
            burst: Some(200),
            access: vec!["deny path=/admin".into()],
            ..GatewaySpec::default()
        };
        // (flags, check)
        type Check = Box<dyn Fn(&GatewaySpec)>;
        let cases: Vec<(SetArgs, Check)> = vec![
            (
                args(|a| a.max_body = Some("10Mi".into())),
                Box::new(|s| {
                    assert_eq!(s.max_body_bytes, Some(10 << 20));
                    assert_eq!(s.lb.as_deref(), Some("round-robin")); // kept
                }),
            ),
            (
                args(|a| a.rate = Some("off".into())),
                Box::new(|s| assert_eq!((s.rate.as_deref(), s.burst), (None, None))),
            ),
            (
                args(|a| a.lb = Some("least-outstanding".into())),
                Box::new(|s| assert_eq!(s.lb, None)),
            ),
            (
                args(|a| {
                    a.access = vec![("allow", "ip=10.0.0.0/8".into()), ("deny", "all".into())]
                }),
                Box::new(|s| assert_eq!(s.access, ["allow ip=10.0.0.0/8", "deny"])),
            ),
            (
                args(|a| a.clear_access = true),
                Box::new(|s| assert!(s.access.is_empty())),
            ),
            (
                args(|a| {
                    a.ttfb_timeout = Some("250ms".into());
                    a.ws_idle_timeout = Some("2m".into());
                    a.upstream_protocol = Some("h2c".into());
                    a.affinity = Some("cookie".into());
                }),
                Box::new(|s| {
                    assert_eq!(s.ttfb_timeout_ms, Some(250));
                    assert_eq!(s.ws_idle_timeout_secs, Some(120));
                    assert_eq!(s.upstream_protocol, UpstreamProtocol::H2c);
                    assert_eq!(s.affinity, Affinity::Cookie);
                }),
            ),
        ];
        for (args, check) in cases {
            check(&apply(current.clone(), &args).unwrap());
        }
        let bad = [
            args(|a| a.max_body = Some("ten".into())),
            args(|a| a.affinity = Some("sticky".into())),
            args(|a| a.burst = Some(0)),
            args(|a| a.upstream_protocol = Some("h3".into())),
        ];
        for args in bad {
            assert!(apply(current.clone(), &args).is_err(), "{args:?}");
        }
    }
}
