//! `nimbus keys create|list|delete` (S3 access keys) and `nimbus bucket create|list|delete`.

use serde_json::json;

use super::table;
use super::{print_json, CliError, Ctx};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCmd {
    /// Create an access key for the S3 endpoint; the secret is printed once.
    Create,
    /// List access keys (ids only).
    List,
    /// Revoke an access key.
    Delete {
        /// Access key id.
        id: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BucketCmd {
    /// Create a bucket (S3 naming rules: 3-63 chars, lowercase letters, digits, '-', '.').
    Create {
        /// Bucket name.
        name: String,
    },
    /// List buckets.
    List,
    /// Delete an empty bucket.
    Delete {
        /// Bucket name.
        name: String,
    },
}

pub async fn keys(ctx: &Ctx, cmd: KeysCmd) -> Result<(), CliError> {
    match cmd {
        KeysCmd::Create => {
            let answer = ctx.client.post(&["v1", "keys"], &json!({})).await?;
            if ctx.json() {
                return print_json(&answer);
            }
            let id = answer["access_key"].as_str().unwrap_or_default();
            let secret = answer["secret_key"].as_str().unwrap_or_default();
            outln!("Access key: {id}");
            outln!("Secret key: {secret}");
            outln!("The secret is shown only now.");
            match answer["endpoint"].as_str() {
                Some(endpoint) => {
                    outln!("Use them with any S3 client, e.g.:");
                    outln!("  AWS_ACCESS_KEY_ID={id} AWS_SECRET_ACCESS_KEY=... aws --endpoint-url {endpoint} s3 ls");
                }
                None => outln!(
                    "This server has no S3 endpoint: start it with `nimbus server --s3 127.0.0.1:9000` to use them."
                ),
            }
        }
        KeysCmd::List => {
            let answer = ctx.client.get(&["v1", "keys"], &[]).await?;
            if ctx.json() {
                return print_json(&answer);
            }
            let rows: Vec<Vec<String>> = answer["keys"]
                .as_array()
                .map(|keys| {
                    keys.iter()
                        .map(|k| {
                            vec![
                                k["id"].as_str().unwrap_or_default().to_string(),
                                table::age(table::now_secs(), k["created_at"].as_u64()),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            if rows.is_empty() {
                outln!("No access keys. Create one: nimbus keys create");
            } else {
                out!("{}", table::render(&["ACCESS KEY", "CREATED"], &rows));
            }
        }
        KeysCmd::Delete { id } => {
            let answer = ctx.client.delete(&["v1", "keys", &id]).await?;
            if ctx.json() {
                return print_json(&answer);
            }
            outln!("Revoked {id}.");
        }
    }
    Ok(())
}

pub async fn bucket(ctx: &Ctx, cmd: BucketCmd) -> Result<(), CliError> {
    match cmd {
        BucketCmd::Create { name } => {
            let answer = ctx
                .client
                .post(&["v1", "buckets"], &json!({"name": name}))
                .await?;
            if ctx.json() {
                return print_json(&answer);
            }
            outln!("Created bucket {name}.");
        }
        BucketCmd::List => {
            let answer = ctx.client.get(&["v1", "buckets"], &[]).await?;
            if ctx.json() {
                return print_json(&answer);
            }
            let rows: Vec<Vec<String>> = answer["buckets"]
                .as_array()
                .map(|buckets| {
                    buckets
                        .iter()
                        .map(|b| {
                            vec![
                                b["name"].as_str().unwrap_or_default().to_string(),
                                table::age(table::now_secs(), b["created_at"].as_u64()),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            if rows.is_empty() {
                outln!("No buckets. Create one: nimbus bucket create NAME");
            } else {
                out!("{}", table::render(&["BUCKET", "CREATED"], &rows));
            }
        }
        BucketCmd::Delete { name } => {
            let answer = ctx.client.delete(&["v1", "buckets", &name]).await?;
            if ctx.json() {
                return print_json(&answer);
            }
            outln!("Deleted bucket {name}.");
        }
    }
    Ok(())
}
