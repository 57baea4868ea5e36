//! `nimbus volumes`, `nimbus volumes create NAME`, `nimbus volumes delete NAME`: named volumes
//! that containers mount with `nimbus deploy --volume NAME:/path`.

use serde_json::json;

use super::table;
use super::{print_json, CliError, Ctx};

/// Flags of `nimbus volumes`; without a subcommand it lists the volumes.
#[derive(Debug, Clone, clap::Args)]
pub struct VolumesArgs {
    #[command(subcommand)]
    pub cmd: Option<VolumesCmd>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum VolumesCmd {
    /// Create an empty volume; its data outlives instances, versions and server restarts.
    Create {
        /// Volume name: letters, digits, '_', '.', '-'.
        name: String,
    },
    /// Delete a volume and its data (refused while a version or container mounts it).
    Delete {
        /// Volume name.
        name: String,
    },
}

pub async fn run(ctx: &Ctx, args: VolumesArgs) -> Result<(), CliError> {
    match args.cmd {
        None => {
            let answer = ctx.client.get(&["v1", "volumes"], &[]).await?;
            if ctx.json() {
                return print_json(&answer);
            }
            let volumes = answer["volumes"].as_array().cloned().unwrap_or_default();
            if volumes.is_empty() {
                outln!("No volumes. Create one: nimbus volumes create NAME");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = volumes
                .iter()
                .map(|v| {
                    let list = |key: &str| {
                        let items: Vec<&str> = v[key]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|x| x.as_str())
                            .collect();
                        if items.is_empty() {
                            "-".to_string()
                        } else {
                            items.join(",")
                        }
                    };
                    vec![
                        v["name"].as_str().unwrap_or_default().to_string(),
                        list("versions"),
                        list("used_by"),
                        v["created_at"].as_str().unwrap_or("-").to_string(),
                    ]
                })
                .collect();
            out!(
                "{}",
                table::render(&["NAME", "VERSIONS", "CONTAINERS", "CREATED"], &rows)
            );
        }
        Some(VolumesCmd::Create { name }) => {
            let answer = ctx
                .client
                .post(&["v1", "volumes"], &json!({ "name": name }))
                .await?;
            if ctx.json() {
                print_json(&answer)?;
            } else {
                outln!("Created volume {name}. Mount it: nimbus deploy SERVICE --image REF --volume {name}:/data");
            }
        }
        Some(VolumesCmd::Delete { name }) => {
            let answer = ctx.client.delete(&["v1", "volumes", &name]).await?;
            if ctx.json() {
                print_json(&answer)?;
            } else {
                outln!("Deleted volume {name} and its data.");
            }
        }
    }
    Ok(())
}
