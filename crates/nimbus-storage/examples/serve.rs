//! Runs the S3 endpoint alone, for trying clients against it:
//!
//! ```text
//! cargo run -p nimbus-storage --example serve -- DIR 127.0.0.1:9000 ACCESS_KEY SECRET_KEY
//! AWS_ACCESS_KEY_ID=ACCESS_KEY AWS_SECRET_ACCESS_KEY=SECRET_KEY \
//!     aws --endpoint-url http://127.0.0.1:9000 s3 mb s3://photos
//! ```
//!
//! Object events are printed, one per line. Ctrl-C stops it.

use std::error::Error;

use nimbus_storage::{serve, AccessKeys, Storage};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, addr, access_key, secret_key] = args.as_slice() else {
        return Err("usage: serve DIR ADDR ACCESS_KEY SECRET_KEY".into());
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let storage = Storage::open(dir, Some(events_tx)).await?;
    let keys = AccessKeys::from_pairs([(access_key.clone(), secret_key.clone())]);
    let listener = TcpListener::bind(addr).await?;
    println!("S3 endpoint on http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            println!("{event:?}");
        }
    });
    serve(listener, storage, keys, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
