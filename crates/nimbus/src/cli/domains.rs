//! `nimbus domains`, `nimbus domains add SERVICE HOST`, `nimbus domains remove HOST`.

use serde_json::json;

use super::table::{self};
use super::views::DomainView;
use super::{decode_list, print_json, CliError, Ctx};

/// Flags of `nimbus domains`; without a subcommand it lists every custom domain.
#[derive(Debug, Clone, clap::Args)]
pub struct DomainsArgs {
    #[command(subcommand)]
    pub cmd: Option<DomainsCmd>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DomainsCmd {
    /// Route HOST to SERVICE (in the -n namespace); point its DNS at the gateway.
    Add {
        /// Service name.
        service: String,
        /// Host name, e.g. www.example.com.
        host: String,
    },
    /// Stop routing HOST.
    Remove {
        /// Host name.
        host: String,
    },
}

pub async fn run(ctx: &Ctx, args: DomainsArgs) -> Result<(), CliError> {
    match args.cmd {
        None => {
            let answer = ctx.client.get(&["v1", "domains"], &[]).await?;
            if ctx.json() {
                print_json(&answer)?;
                return Ok(());
            }
            let domains: Vec<DomainView> = decode_list(&answer, "domains")?;
            if domains.is_empty() {
                outln!("No custom domains. Add one: nimbus domains add SERVICE HOST");
            } else {
                out!("{}", domains_table(&domains));
            }
        }
        Some(DomainsCmd::Add { service, host }) => {
            let body = json!({"host": host, "namespace": ctx.ns(), "service": service});
            let answer = ctx.client.post(&["v1", "domains"], &body).await?;
            if ctx.json() {
                print_json(&answer)?;
            } else {
                let host = answer["host"].as_str().unwrap_or(&host);
                outln!("Added {host} → {service} (namespace {}).", ctx.ns());
            }
        }
        Some(DomainsCmd::Remove { host }) => {
            let answer = ctx.client.delete(&["v1", "domains", &host]).await?;
            if ctx.json() {
                print_json(&answer)?;
            } else {
                outln!("Removed {host}.");
            }
        }
    }
    Ok(())
}

fn domains_table(domains: &[DomainView]) -> String {
    let rows: Vec<Vec<String>> = domains
        .iter()
        .map(|d| vec![d.host.clone(), d.service.clone(), d.namespace.clone()])
        .collect();
    table::render(&["HOST", "SERVICE", "NAMESPACE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let d = |h: &str, s: &str| DomainView {
            host: h.into(),
            service: s.into(),
            namespace: "default".into(),
        };
        assert_eq!(
            domains_table(&[d("www.example.com", "hello"), d("a.io", "api")]),
            "HOST             SERVICE  NAMESPACE\nwww.example.com  hello    default\na.io             api      default\n"
        );
    }
}
