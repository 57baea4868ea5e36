//! The HTTPS listener and HTTP/2: the self-signed default certificate, per-host certificates
//! chosen by SNI, ALPN h2 and http/1.1, the HTTP → HTTPS redirect, h2c from clients, and h2c to
//! upstreams that ask for it. TLS clients are `curl` (with `--resolve` and `--cacert`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{write_file, Server};

/// `curl` over HTTPS to `host` at the server's HTTPS port, trusting only `ca`. Returns the exit
/// status, the body and the HTTP version curl negotiated (`2` or `1.1`).
fn curl(
    server: &Server,
    host: &str,
    path: &str,
    ca: &Path,
    extra: &[&str],
) -> (bool, String, String) {
    let https = server
        .https
        .as_deref()
        .expect("server started with --https");
    let port = https.rsplit(':').next().expect("port");
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca)
        .args(["-w", "\n%{http_version}"])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("run curl");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, version) = stdout.rsplit_once('\n').unwrap_or((&stdout, ""));
    (
        output.status.success(),
        body.to_string(),
        version.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_sni_certificates_and_h2() {
    let server = Server::start_with(&["--https", "127.0.0.1:0"]).await;
    server.deploy("secure", &[]).await;
    let default_ca = server.data.join("tls/default.crt");
    let host = Server::host("secure");

    // The generated wildcard certificate covers every generated host; ALPN picks h2.
    let (ok, body, version) = curl(&server, &host, "/", &default_ca, &[]);
    assert!(ok, "{body}");
    assert!(body.starts_with("hello from secure v1"), "{body}");
    assert_eq!(version, "2");
    let (ok, body, version) = curl(&server, &host, "/headers", &default_ca, &["--http1.1"]);
    assert!(ok, "{body}");
    assert_eq!(version, "1.1");
    assert!(body.contains(r#""x-forwarded-proto":"https""#), "{body}");

    // A custom domain with its own certificate: SNI picks it (curl trusts only that one).
    let domain = "www.secure.test";
    let custom = rcgen::generate_simple_self_signed(vec![domain.to_string()]).expect("rcgen");
    let work = server.root.join("work");
    let cert = write_file(&work, "www.crt", &custom.cert.pem());
    let key = write_file(&work, "www.key", &custom.signing_key.serialize_pem());
    let cert_arg = cert.display().to_string();
    let key_arg = key.display().to_string();
    server.cli_ok(&["domains", "add", "secure", domain]).await;
    let (ok, _, _) = curl(&server, domain, "/", &cert, &[]);
    assert!(
        !ok,
        "before `certs add`, the default certificate does not name {domain}"
    );
    server
        .cli_ok(&[
            "certs", "add", domain, "--cert", &cert_arg, "--key", &key_arg,
        ])
        .await;
    common::eventually(
        "SNI picks the new certificate",
        Duration::from_secs(10),
        async || {
            let (ok, body, _) = curl(&server, domain, "/", &cert, &[]);
            (ok && body.starts_with("hello from secure v1")).then_some(())
        },
    )
    .await;
    // The generated host still gets the default certificate, which the custom CA does not sign.
    let (ok, _, _) = curl(&server, &host, "/", &cert, &[]);
    assert!(!ok, "the custom certificate is only for {domain}");
    let listed = server.cli_ok(&["certs"]).await;
    assert!(listed.stdout.contains(domain), "{listed}");

    // A key that does not match its certificate is refused, and nothing changes.
    let other = rcgen::generate_simple_self_signed(vec!["x.test".into()]).expect("rcgen");
    let wrong_key = write_file(&work, "wrong.key", &other.signing_key.serialize_pem());
    let out = server
        .cli(&[
            "certs",
            "add",
            domain,
            "--cert",
            &cert_arg,
            "--key",
            &wrong_key.display().to_string(),
        ])
        .await;
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("does not belong"), "{out}");
    let (ok, _, _) = curl(&server, domain, "/", &cert, &[]);
    assert!(ok, "the stored certificate still serves");

    server.cli_ok(&["certs", "remove", domain]).await;
    common::eventually(
        "the default certificate again",
        Duration::from_secs(10),
        async || {
            let (ok, _, _) = curl(&server, domain, "/", &cert, &[]);
            (!ok).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_redirects_to_https() {
    let server = Server::start_with(&["--https", "127.0.0.1:0", "--redirect-https"]).await;
    server.deploy("moved", &[]).await;
    let host = Server::host("moved");
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let reply = http
        .get(format!("http://{}/a?b=c", server.gateway))
        .header("host", &host)
        .send()
        .await
        .expect("plain request");
    assert_eq!(reply.status(), 308);
    let port = server
        .https
        .as_deref()
        .and_then(|a| a.rsplit(':').next())
        .unwrap_or_default();
    assert_eq!(
        reply.headers()["location"],
        format!("https://{host}:{port}/a?b=c").as_str()
    );
    let (ok, body, _) = curl(
        &server,
        &host,
        "/",
        &server.data.join("tls/default.crt"),
        &[],
    );
    assert!(ok && body.starts_with("hello from moved"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_from_clients_and_to_upstreams() {
    let server = Server::start().await;
    server.deploy("grpcish", &["--env", "H2C=1"]).await;
    let host = Server::host("grpcish");
    // HTTP/2 carries the host in `:authority`, so the URL names it and `resolve` points it at
    // the gateway.
    let gateway: std::net::SocketAddr = server.gateway.parse().expect("gateway address");
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .resolve(&host, gateway)
        .build()
        .expect("h2 client");
    let get = async |path: &str| {
        let reply = h2
            .get(format!("http://{host}:{}{path}", gateway.port()))
            .send()
            .await
            .expect("h2c request");
        assert_eq!(reply.version(), reqwest::Version::HTTP_2);
        assert_eq!(reply.status(), 200);
        reply.text().await.unwrap_or_default()
    };
    // HTTP/2 from the client; HTTP/1.1 to the instance by default.
    assert_eq!(get("/proto").await, "HTTP/1.1\n");
    assert!(get("/").await.starts_with("hello from grpcish v1"));

    // The service asks for h2c upstream: the instance now sees HTTP/2.
    server
        .cli_ok(&["gateway", "set", "grpcish", "--upstream-protocol", "h2c"])
        .await;
    assert_eq!(get("/proto").await, "HTTP/2.0\n");
    assert!(get("/").await.starts_with("hello from grpcish v1"));
    // And an HTTP/1.1 client is still served over the h2c upstream.
    let plain = server.get(&host, "/proto").await;
    assert_eq!(plain.body, "HTTP/2.0\n", "{plain:?}");

    // A gRPC-style call: `TE: trailers` reaches the instance, and the trailer fields that end
    // its response reach the client, over HTTP/2 and over HTTP/1.1 (after the last chunk).
    let (body, trailers) = h2_get_with_trailers(gateway, &host, "/trailers").await;
    assert_eq!(body, "ok\n");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(b"0".as_slice())
    );
    assert_eq!(
        trailers.get("x-te").map(|v| v.as_bytes()),
        Some(b"trailers".as_slice())
    );
    // The instance's HTTP/2 trailers also carry `set-cookie`, which only a head may carry.
    assert_eq!(trailers.get("set-cookie"), None, "{trailers:?}");
    let raw = raw_http1(
        gateway,
        &format!("GET /trailers HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"),
    )
    .await;
    assert!(raw.contains("transfer-encoding: chunked\r\n"), "{raw}");
    assert!(
        raw.ends_with("\r\n0\r\ngrpc-status: 0\r\nx-te: none\r\n\r\n"),
        "{raw}"
    );
}

/// `GET path` over HTTP/2 (prior knowledge) with `TE: trailers`, as a gRPC client sends it:
/// the body and the trailer fields after it.
async fn h2_get_with_trailers(
    gateway: std::net::SocketAddr,
    host: &str,
    path: &str,
) -> (String, http::HeaderMap) {
    use http_body_util::{BodyExt, Empty};
    let tcp = tokio::net::TcpStream::connect(gateway)
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let request = http::Request::get(format!("http://{host}{path}"))
        .version(http::Version::HTTP_2)
        .header("te", "trailers")
        .body(Empty::<hyper::body::Bytes>::new())
        .expect("a request");
    let response = sender.send_request(request).await.expect("h2 response");
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.expect("h2 body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    (
        String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        trailers,
    )
}

/// Sends `request` as written and reads until the gateway closes the connection.
async fn raw_http1(gateway: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(gateway)
        .await
        .expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut reply = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tcp.read_to_end(&mut reply),
    )
    .await
    .expect("the gateway answered in time")
    .expect("read");
    String::from_utf8_lossy(&reply).into_owned()
}
