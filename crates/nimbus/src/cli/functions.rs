//! `nimbus fn ...`: deploy, list, show, delete, invoke (sync or `--async`), invocations, aliases
//! and triggers. Functions are services underneath, so `nimbus versions NAME`, `nimbus logs NAME`
//! and `nimbus events NAME` work on them too.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::table;
use super::{print_json, CliError, Ctx};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum FnCmd {
    /// Deploy a new version of a function from a code folder.
    Deploy {
        /// Function name.
        name: String,
        /// `python3`, `node` or `binary` (a program that speaks the invoke protocol).
        #[arg(long)]
        runtime: String,
        /// `FILE.func`, e.g. `index.main` (index.py / index.js, function main).
        #[arg(long)]
        handler: String,
        /// The code folder.
        #[arg(long, default_value = ".")]
        code: PathBuf,
        /// Memory size, e.g. 128Mi (64Mi-3Gi); billed GB-s use it.
        #[arg(long)]
        memory: Option<String>,
        /// Longest run of one invocation, e.g. 3s, 500ms, 2m (at most 900s).
        #[arg(long)]
        timeout: Option<String>,
        /// Environment, KEY=VALUE (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Most instances (each runs one invocation at a time).
        #[arg(long)]
        max_instances: Option<u32>,
        /// Keep the function's traffic where it is.
        #[arg(long)]
        no_traffic: bool,
    },
    /// List functions.
    List,
    /// Show a function: runtime, handler, memory, timeout, aliases, triggers.
    Show { name: String },
    /// Delete a function with its versions, triggers and pending invocations.
    Delete { name: String },
    /// Invoke a function and print its result (or `--async`: queue it and print the id).
    Invoke {
        name: String,
        /// The event, JSON.
        #[arg(long, default_value = "{}")]
        data: String,
        /// A version or alias [default: the function's traffic split].
        #[arg(long)]
        qualifier: Option<String>,
        /// Queue it (durable, retried twice, then dead-lettered) and return at once.
        #[arg(long = "async")]
        asynchronous: bool,
        /// With --async: an http:// URL that receives the result.
        #[arg(long)]
        callback: Option<String>,
    },
    /// List a function's async invocations, newest first.
    Invocations {
        name: String,
        /// pending, running, succeeded or failed (dead-lettered).
        #[arg(long)]
        status: Option<String>,
    },
    /// Show one async invocation: status, attempts, result or error.
    Invocation { id: String },
    /// Weighted aliases: `nimbus fn alias set NAME live v1=90,v2=10`.
    #[command(subcommand)]
    Alias(AliasCmd),
    /// Triggers: timers (cron) and object storage events.
    #[command(subcommand)]
    Trigger(TriggerCmd),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AliasCmd {
    /// Create or change an alias.
    Set {
        name: String,
        alias: String,
        /// `v1=90,v2=10`
        split: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TriggerCmd {
    /// Add a timer (`--cron`, server time zone) or storage (`--bucket`) trigger.
    Add {
        name: String,
        #[arg(long, conflicts_with = "bucket")]
        cron: Option<String>,
        #[arg(long)]
        bucket: Option<String>,
        /// created, deleted or created,deleted.
        #[arg(long, requires = "bucket")]
        events: Option<String>,
        /// Only keys starting with this.
        #[arg(long, requires = "bucket")]
        prefix: Option<String>,
    },
    /// List a function's triggers.
    List { name: String },
    /// Remove a trigger.
    Remove { name: String, id: i64 },
}

fn path(parts: &[String]) -> Vec<&str> {
    parts.iter().map(String::as_str).collect()
}

fn parse_env(pairs: &[String]) -> Result<serde_json::Map<String, Value>, CliError> {
    let mut env = serde_json::Map::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--env {pair:?} is not KEY=VALUE")))?;
        env.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(env)
}

pub async fn run(ctx: &Ctx, cmd: FnCmd) -> Result<(), CliError> {
    let ns = ctx.ns().to_string();
    let base = |name: &str| -> Vec<String> {
        vec![
            "v1".into(),
            "namespaces".into(),
            ns.clone(),
            "functions".into(),
            name.to_string(),
        ]
    };
    match cmd {
        FnCmd::Deploy {
            name,
            runtime,
            handler,
            code,
            memory,
            timeout,
            env,
            max_instances,
            no_traffic,
        } => {
            let code = code
                .canonicalize()
                .map_err(|e| CliError::Usage(format!("code folder {}: {e}", code.display())))?;
            let mut body = json!({
                "runtime": runtime,
                "handler": handler,
                "code_dir": code.display().to_string(),
                "env": parse_env(&env)?,
                "no_traffic": no_traffic,
            });
            if let Some(m) = memory {
                body["memory"] = json!(m);
            }
            if let Some(t) = timeout {
                body["timeout"] = json!(t);
            }
            if let Some(n) = max_instances {
                body["max_instances"] = json!(n);
            }
            let mut parts = base(&name);
            parts.push("versions".into());
            let answer = ctx.client.post(&path(&parts), &body).await?;
            if ctx.json() {
                return print_json(&answer);
            }
            let version = answer["version"]["name"]
                .as_str()
                .unwrap_or("?")
                .to_string();
            // Wait until the version's first instance loaded the handler (or failed to).
            let version_path = [
                "v1",
                "namespaces",
                ns.as_str(),
                "services",
                name.as_str(),
                "versions",
                version.as_str(),
            ];
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
            let status = loop {
                let v = ctx.client.get(&version_path, &[]).await?;
                let status = v["status"].as_str().unwrap_or("deploying").to_string();
                if status != "deploying" || tokio::time::Instant::now() >= deadline {
                    if status == "failed" {
                        let mut text = format!(
                            "{name} {version} failed to start: {}",
                            v["reason"].as_str().unwrap_or("no reason given")
                        );
                        for line in v["last_log_lines"].as_array().into_iter().flatten() {
                            text.push_str(&format!("\n  | {}", line.as_str().unwrap_or_default()));
                        }
                        return Err(CliError::Failed(text));
                    }
                    break status;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            };
            outln!("Deployed {name} {version} ({status}). Invoke it: nimbus fn invoke {name} --data '{{}}'");
        }
        FnCmd::List => {
            let parts = vec![
                "v1".to_string(),
                "namespaces".into(),
                ns.clone(),
                "functions".into(),
            ];
            let answer = ctx.client.get(&path(&parts), &[]).await?;
            if ctx.json() {
                return print_json(&answer);
            }
            let rows: Vec<Vec<String>> = answer["functions"]
                .as_array()
                .map(|fs| {
                    fs.iter()
                        .map(|f| {
                            let spec = &f["function"];
                            vec![
                                f["name"].as_str().unwrap_or_default().to_string(),
                                spec["runtime"].as_str().unwrap_or_default().to_string(),
                                spec["handler"].as_str().unwrap_or_default().to_string(),
                                format!("{}Mi", spec["memory_mb"]),
                                format!("{}ms", spec["timeout_ms"]),
                                f["versions"].as_array().map_or(0, Vec::len).to_string(),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            if rows.is_empty() {
                outln!("No functions. Deploy one: nimbus fn deploy NAME --runtime python3 --handler index.main --code DIR");
            } else {
                out!(
                    "{}",
                    table::render(
                        &["NAME", "RUNTIME", "HANDLER", "MEMORY", "TIMEOUT", "VERSIONS"],
                        &rows
                    )
                );
            }
        }
        FnCmd::Show { name } => {
            let answer = ctx.client.get(&path(&base(&name)), &[]).await?;
            if ctx.json() {
                return print_json(&answer);
            }
            out!("{}", function_text(&answer));
        }
        FnCmd::Delete { name } => {
            let answer = ctx.client.delete(&path(&base(&name))).await?;
            if ctx.json() {
                return print_json(&answer);
            }
            outln!("Deleted function {name}.");
        }
        FnCmd::Invoke {
            name,
            data,
            qualifier,
            asynchronous,
            callback,
        } => {
            let event: Value = serde_json::from_str(&data)
                .map_err(|e| CliError::Usage(format!("--data is not JSON: {e}")))?;
            let mut parts = base(&name);
            parts.push("invoke".into());
            let mut query: Vec<(&str, &str)> = Vec::new();
            if let Some(q) = qualifier.as_deref() {
                query.push(("qualifier", q));
            }
            if let Some(c) = callback.as_deref() {
                query.push(("callback", c));
            }
            let answer = ctx
                .client
                .invoke(&path(&parts), &query, &event, asynchronous)
                .await?;
            if ctx.json() || asynchronous {
                return print_json(&answer);
            }
            if let Some(error) = answer.get("error") {
                let kind = error["kind"].as_str().unwrap_or("error");
                let message = error["message"].as_str().unwrap_or_default();
                let mut text = format!(
                    "{kind} error in {name} {}: {} {message}",
                    answer["version"].as_str().unwrap_or("?"),
                    error["type"].as_str().unwrap_or_default()
                );
                if let Some(tb) = error["traceback"].as_array() {
                    for line in tb {
                        text.push_str(&format!("\n  {}", line.as_str().unwrap_or_default()));
                    }
                }
                return Err(CliError::Failed(text));
            }
            outln!(
                "{}",
                serde_json::to_string_pretty(&answer["result"]).unwrap_or_default()
            );
        }
        FnCmd::Invocations { name, status } => {
            let mut parts = base(&name);
            parts.push("invocations".into());
            let query: Vec<(&str, &str)> = status
                .as_deref()
                .map(|s| vec![("status", s)])
                .unwrap_or_default();
            let answer = ctx.client.get(&path(&parts), &query).await?;
            if ctx.json() {
                return print_json(&answer);
            }
            let rows: Vec<Vec<String>> = answer["invocations"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|i| {
                            vec![
                                i["id"].as_str().unwrap_or_default().to_string(),
                                i["status"].as_str().unwrap_or_default().to_string(),
                                i["attempts"].to_string(),
                                i["source"].as_str().unwrap_or_default().to_string(),
                                i["version"].as_str().unwrap_or("-").to_string(),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            out!(
                "{}",
                table::render(&["ID", "STATUS", "ATTEMPTS", "SOURCE", "VERSION"], &rows)
            );
        }
        FnCmd::Invocation { id } => {
            let answer = ctx.client.get(&["v1", "invocations", &id], &[]).await?;
            print_json(&answer)?;
        }
        FnCmd::Alias(AliasCmd::Set { name, alias, split }) => {
            let mut parts = base(&name);
            parts.push("aliases".into());
            parts.push(alias.clone());
            let answer = ctx
                .client
                .put(&path(&parts), &json!({"split": split}))
                .await?;
            if ctx.json() {
                return print_json(&answer);
            }
            outln!("Alias {alias} of {name} = {split}.");
        }
        FnCmd::Trigger(TriggerCmd::Add {
            name,
            cron,
            bucket,
            events,
            prefix,
        }) => {
            let mut parts = base(&name);
            parts.push("triggers".into());
            let body = json!({"cron": cron, "bucket": bucket, "events": events, "prefix": prefix});
            let answer = ctx.client.post(&path(&parts), &body).await?;
            if ctx.json() {
                return print_json(&answer);
            }
            outln!(
                "Added {} trigger {} to {name}.",
                answer["kind"].as_str().unwrap_or(""),
                answer["id"]
            );
        }
        FnCmd::Trigger(TriggerCmd::List { name }) => {
            let mut parts = base(&name);
            parts.push("triggers".into());
            let answer = ctx.client.get(&path(&parts), &[]).await?;
            if ctx.json() {
                return print_json(&answer);
            }
            let rows: Vec<Vec<String>> = answer["triggers"]
                .as_array()
                .map(|ts| {
                    ts.iter()
                        .map(|t| vec![t["id"].to_string(), trigger_text(t)])
                        .collect()
                })
                .unwrap_or_default();
            if rows.is_empty() {
                outln!("No triggers. Add one: nimbus fn trigger add {name} --cron \"*/5 * * * *\" (or --bucket NAME)");
            } else {
                out!("{}", table::render(&["ID", "TRIGGER"], &rows));
            }
        }
        FnCmd::Trigger(TriggerCmd::Remove { name, id }) => {
            let mut parts = base(&name);
            parts.push("triggers".into());
            parts.push(id.to_string());
            let answer = ctx.client.delete(&path(&parts)).await?;
            if ctx.json() {
                return print_json(&answer);
            }
            outln!("Removed trigger {id} of {name}.");
        }
    }
    Ok(())
}

/// `nimbus fn show`: the function's settings, where its traffic goes, its aliases and triggers.
fn function_text(f: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let split = |split: &Value| {
        split
            .as_array()
            .map(|parts| {
                parts
                    .iter()
                    .map(|p| format!("{}={}%", text(&p["version"]), p["percent"]))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let spec = &f["function"];
    let versions: Vec<String> = f["versions"]
        .as_array()
        .map(|vs| vs.iter().map(text).collect())
        .unwrap_or_default();
    let mut out = format!(
        "{name} ({namespace})\n  runtime  {runtime}, handler {handler}, memory {memory}Mi, timeout {timeout}ms\n  code     {code}\n  versions {versions}\n  traffic  {traffic}\n",
        name = text(&f["name"]),
        namespace = text(&f["namespace"]),
        runtime = text(&spec["runtime"]),
        handler = text(&spec["handler"]),
        memory = spec["memory_mb"],
        timeout = spec["timeout_ms"],
        code = text(&spec["code_dir"]),
        versions = versions.join(", "),
        traffic = split(&f["traffic"]),
    );
    let aliases: Vec<String> = f["aliases"]
        .as_array()
        .map(|aliases| {
            aliases
                .iter()
                .map(|a| format!("{} = {}", text(&a["name"]), split(&a["split"])))
                .collect()
        })
        .unwrap_or_default();
    labelled(&mut out, "aliases", &aliases);
    let triggers: Vec<String> = f["triggers"]
        .as_array()
        .map(|triggers| {
            triggers
                .iter()
                .map(|t| format!("{}: {}", t["id"], trigger_text(t)))
                .collect()
        })
        .unwrap_or_default();
    labelled(&mut out, "triggers", &triggers);
    out
}

/// `  LABEL    first` and `           next` lines under it, or `  LABEL    none`.
fn labelled(out: &mut String, label: &str, lines: &[String]) {
    if lines.is_empty() {
        out.push_str(&format!("  {label:<8} none\n"));
    }
    for (i, line) in lines.iter().enumerate() {
        let label = if i == 0 { label } else { "" };
        out.push_str(&format!("  {label:<8} {line}\n"));
    }
}

/// One trigger in words: `timer, cron 0 * * * *` or `storage, bucket B, events E, prefix P`.
fn trigger_text(trigger: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    match trigger["kind"].as_str() {
        Some("timer") => format!("timer, cron {}", text(&trigger["cron"])),
        _ => {
            let prefix = trigger["prefix"]
                .as_str()
                .map(|p| format!(", prefix {p}"))
                .unwrap_or_default();
            format!(
                "storage, bucket {}, events {}{prefix}",
                text(&trigger["bucket"]),
                text(&trigger["events"])
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_text() {
        let bare = json!({
            "name": "echo", "namespace": "default", "versions": ["v1"],
            "function": {"runtime": "python3", "handler": "index.main", "memory_mb": 128,
                         "timeout_ms": 3000, "code_dir": "/src/echo"},
            "traffic": [{"version": "v1", "percent": 100}], "aliases": [], "triggers": []
        });
        assert_eq!(
            function_text(&bare),
            "echo (default)\n  runtime  python3, handler index.main, memory 128Mi, timeout 3000ms\n  code     /src/echo\n  versions v1\n  traffic  v1=100%\n  aliases  none\n  triggers none\n"
        );
        let full = json!({
            "name": "lg", "namespace": "default", "versions": ["v1", "v2"],
            "function": {"runtime": "python3", "handler": "index.main", "memory_mb": 256,
                         "timeout_ms": 3000, "code_dir": "/src/lg"},
            "traffic": [{"version": "v2", "percent": 100}],
            "aliases": [{"name": "live", "split": [{"version": "v1", "percent": 90},
                                                   {"version": "v2", "percent": 10}]}],
            "triggers": [
                {"id": 1, "kind": "timer", "cron": "0 * * * *"},
                {"id": 2, "kind": "storage", "bucket": "inbox", "events": "created", "prefix": "in/"},
                {"id": 3, "kind": "storage", "bucket": "inbox", "events": "deleted", "prefix": null}
            ]
        });
        let text = function_text(&full);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[3..],
            [
                "  versions v1, v2",
                "  traffic  v2=100%",
                "  aliases  live = v1=90%, v2=10%",
                "  triggers 1: timer, cron 0 * * * *",
                "           2: storage, bucket inbox, events created, prefix in/",
                "           3: storage, bucket inbox, events deleted",
            ]
        );
    }
}
