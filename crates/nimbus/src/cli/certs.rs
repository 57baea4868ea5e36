//! `nimbus certs`, `nimbus certs add HOST --cert FILE --key FILE`, `nimbus certs remove HOST`:
//! the TLS certificates the gateway's HTTPS listener (`nimbus server --https`) serves by SNI.
//! Hosts without one get the self-signed wildcard certificate of the base domain.

use std::path::PathBuf;

use serde_json::json;

use super::table;
use super::{print_json, CliError, Ctx};

/// Flags of `nimbus certs`; without a subcommand it lists the certificates.
#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub cmd: Option<CertsCmd>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CertsCmd {
    /// Serve HOST (or *.DOMAIN) with this certificate chain and key (PEM files).
    Add {
        /// Host name, e.g. www.example.com or *.example.com.
        host: String,
        /// Certificate chain, PEM.
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Stop serving HOST's certificate (it gets the default one again).
    Remove {
        /// Host name.
        host: String,
    },
}

pub async fn run(ctx: &Ctx, args: CertsArgs) -> Result<(), CliError> {
    match args.cmd {
        None => {
            let answer = ctx.client.get(&["v1", "certs"], &[]).await?;
            if ctx.json() {
                return print_json(&answer);
            }
            let now = table::now_secs();
            let rows: Vec<Vec<String>> = answer["certs"]
                .as_array()
                .map(|certs| {
                    certs
                        .iter()
                        .map(|c| {
                            vec![
                                c["host"].as_str().unwrap_or_default().to_string(),
                                table::age(now, c["created_at"].as_u64()),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            if rows.is_empty() {
                outln!("No certificates; every host gets the default self-signed one. Add one: nimbus certs add HOST --cert FILE --key FILE");
            } else {
                out!("{}", table::render(&["HOST", "AGE"], &rows));
            }
        }
        Some(CertsCmd::Add { host, cert, key }) => {
            let read = |path: &PathBuf| {
                std::fs::read_to_string(path)
                    .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", path.display())))
            };
            let body = json!({"host": host, "cert_pem": read(&cert)?, "key_pem": read(&key)?});
            let answer = ctx.client.post(&["v1", "certs"], &body).await?;
            if ctx.json() {
                print_json(&answer)?;
            } else {
                outln!(
                    "Added a certificate for {}.",
                    answer["host"].as_str().unwrap_or(&host)
                );
            }
        }
        Some(CertsCmd::Remove { host }) => {
            let answer = ctx.client.delete(&["v1", "certs", &host]).await?;
            if ctx.json() {
                print_json(&answer)?;
            } else {
                outln!("Removed the certificate of {host}.");
            }
        }
    }
    Ok(())
}
