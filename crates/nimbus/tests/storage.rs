//! The S3-compatible storage endpoint through the real binary: keys from `nimbus keys create`,
//! buckets from `nimbus bucket`, objects written and read with boto3, a presigned GET with curl,
//! a bad signature refused, and keys kept across a restart.

mod common;

use std::process::Command;

use common::Server;

/// Runs a boto3 script against the endpoint; returns its stdout. Installs boto3 if missing.
fn boto3(endpoint: &str, key: &str, secret: &str, script: &str) -> (bool, String) {
    let prelude = format!(
        "import boto3, sys\n\
from botocore.config import Config\n\
s3 = boto3.client('s3', endpoint_url='{endpoint}', aws_access_key_id='{key}',\n\
    aws_secret_access_key='{secret}', region_name='us-east-1',\n\
    config=Config(s3={{'addressing_style': 'path'}}, retries={{'max_attempts': 1}}))\n"
    );
    let run = || {
        Command::new("python3")
            .args(["-c", &format!("{prelude}{script}")])
            .output()
            .expect("run python3")
    };
    let mut out = run();
    if String::from_utf8_lossy(&out.stderr).contains("No module named 'boto3'") {
        let ok = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "boto3"])
            .status()
            .expect("pip");
        assert!(ok.success(), "pip install boto3 failed");
        out = run();
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_endpoint_with_keys_buckets_and_presigned_urls() {
    let mut server = Server::start_with(&["--s3", "127.0.0.1:0"]).await;
    let endpoint = server
        .s3
        .clone()
        .expect("the ready line names the s3 address");

    let created = server
        .cli_ok(&["-o", "json", "keys", "create"])
        .await
        .json();
    let key = created["access_key"]
        .as_str()
        .expect("access_key")
        .to_string();
    let secret = created["secret_key"]
        .as_str()
        .expect("secret_key")
        .to_string();
    // The answer names the endpoint the keys are for, and the table output shows it.
    assert_eq!(
        created["endpoint"].as_str(),
        Some(endpoint.as_str()),
        "{created}"
    );
    let shown = server.cli_ok(&["keys", "create"]).await;
    assert!(
        shown
            .stdout
            .contains(&format!("--endpoint-url {endpoint} ")),
        "{shown}"
    );
    let listed = server.cli_ok(&["keys", "list"]).await;
    assert!(listed.stdout.contains(&key), "{listed}");
    assert!(
        !listed.stdout.contains(&secret),
        "the secret is shown once only"
    );

    // Bad bucket names are refused with the field named.
    let out = server.cli(&["bucket", "create", "Bad_Name"]).await;
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("name") || out.stdout.contains("name"),
        "{out}"
    );
    server.cli_ok(&["bucket", "create", "photos"]).await;

    let (ok, out) = boto3(
        &endpoint,
        &key,
        &secret,
        "s3.put_object(Bucket='photos', Key='cats/tom.txt', Body=b'meow')\n\
print(s3.get_object(Bucket='photos', Key='cats/tom.txt')['Body'].read().decode())\n\
print(s3.generate_presigned_url('get_object', Params={'Bucket': 'photos', 'Key': 'cats/tom.txt'}, ExpiresIn=300))\n",
    );
    assert!(ok, "{out}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("meow"), "{out}");
    let url = lines.next().expect("a presigned URL").to_string();
    let curl = Command::new("curl")
        .args(["-s", "--noproxy", "*", &url])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "meow");

    // A wrong secret is refused.
    let (ok, out) = boto3(
        &endpoint,
        &key,
        "not-the-secret-not-the-secret-not-the-se",
        "s3.list_objects_v2(Bucket='photos')\n",
    );
    assert!(!ok, "a bad signature must fail: {out}");
    assert!(
        out.contains("403")
            || out.contains("SignatureDoesNotMatch")
            || out.contains("AccessDenied"),
        "{out}"
    );

    // A non-empty bucket is not deleted.
    let out = server.cli(&["bucket", "delete", "photos"]).await;
    assert!(!out.success(), "{out}");

    // Keys and objects survive a restart.
    server.restart().await;
    let endpoint = server.s3.clone().expect("s3 address after restart");
    let (ok, out) = boto3(
        &endpoint,
        &key,
        &secret,
        "print(s3.get_object(Bucket='photos', Key='cats/tom.txt')['Body'].read().decode())\n\
s3.delete_object(Bucket='photos', Key='cats/tom.txt')\n",
    );
    assert!(ok, "{out}");
    assert!(out.starts_with("meow"), "{out}");
    server.cli_ok(&["bucket", "delete", "photos"]).await;

    // A revoked key stops working at once.
    server.cli_ok(&["keys", "delete", &key]).await;
    let (ok, out) = boto3(&endpoint, &key, &secret, "s3.list_buckets()\n");
    assert!(!ok, "revoked key still works: {out}");
}
