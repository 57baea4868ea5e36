//! The server's own lifecycle: state survives SIGTERM and kill -9, instances are adopted rather
//! than duplicated, and nothing is left running after a delete or a shutdown.

mod common;

use std::time::Duration;

use common::{eventually, Server};
use serde_json::{json, Value};

/// Service `keep` with v1=90/v2=10, a query rule to v2 and a custom domain.
async fn configure(server: &Server) {
    server.deploy("keep", &[]).await;
    server.deploy("keep", &["--no-traffic"]).await;
    server.set_split("keep", "v1=90,v2=10").await;
    server
        .cli_ok(&["traffic", "keep", "--route-query", "env=beta:v2"])
        .await;
    server
        .cli_ok(&["domains", "add", "keep", "keep.example.test"])
        .await;
}

/// The durable part of the state: services, versions and their specs, traffic, domains.
async fn durable_state(server: &Server) -> Value {
    let service = server.api_ok("/v1/namespaces/default/services/keep").await;
    let versions: Vec<Value> = server
        .versions("keep")
        .await
        .iter()
        .map(|v| json!({"name": v["name"], "spec": v["spec"], "traffic": v["traffic"]}))
        .collect();
    json!({
        "services": server.api_ok("/v1/namespaces/default/services").await["services"]
            .as_array()
            .map(|s| s.iter().map(|s| s["name"].clone()).collect::<Vec<_>>()),
        "versions": versions,
        "traffic": server.api_ok("/v1/namespaces/default/services/keep/traffic").await,
        "domains": server.api_ok("/v1/domains").await,
        "service_domains": service["domains"],
        "service_traffic": service["traffic"],
        "service_rules": service["rules"],
    })
}

/// After a restart the service answers again through every route it had.
async fn serves_again(server: &Server) {
    server
        .wait_served_by("keep.example.test", "/?env=beta", "v2")
        .await;
    server
        .wait_served_by(&Server::host("keep"), "/?env=beta", "v2")
        .await;
    server
        .wait_served_by(&Server::version_host("v1", "keep"), "/", "v1")
        .await;
    let reply = server.get(&Server::host("keep"), "/").await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

/// Waits until exactly `n` instances are live, then checks it stays so for two seconds.
async fn settles_at(server: &Server, n: usize) {
    eventually(
        &format!("exactly {n} live instances"),
        Duration::from_secs(30),
        async || {
            (server.live_instances(None).len() == n && instances_total(server).await == n)
                .then_some(())
        },
    )
    .await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let live = server.live_instances(None);
        assert_eq!(live.len(), n, "live instances: {live:?}");
        assert_eq!(
            server.live_app_processes(None),
            n,
            "{:?}",
            server.live_processes()
        );
    }
}

/// Instances the API lists, all services (`usize::MAX` when the API does not answer).
async fn instances_total(server: &Server) -> usize {
    let (status, body) = server.api_get("/v1/instances").await;
    if status != 200 {
        return usize::MAX;
    }
    body["instances"].as_array().map_or(usize::MAX, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_sigterm_keeps_state_and_serves() {
    let mut server = Server::start().await;
    configure(&server).await;
    let before = durable_state(&server).await;

    let status = server.sigterm().await;
    assert!(
        status.success(),
        "graceful stop should exit 0, got {status}"
    );
    let left = server.live_processes();
    assert!(left.is_empty(), "SIGTERM left processes behind: {left:?}");

    server.restart().await;
    assert_eq!(
        before,
        durable_state(&server).await,
        "state changed across SIGTERM + restart"
    );
    serves_again(&server).await;
    settles_at(&server, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_kill9_keeps_state_and_adopts_instances() {
    let mut server = Server::start().await;
    configure(&server).await;
    settles_at(&server, 2).await;
    let before = durable_state(&server).await;

    server.kill9().await;
    // Instances live in their own process groups and outlive a crashed server.
    assert_eq!(
        server.live_instances(None).len(),
        2,
        "{:?}",
        server.live_processes()
    );

    server.restart().await;
    assert_eq!(
        before,
        durable_state(&server).await,
        "state changed across kill -9 + restart"
    );
    serves_again(&server).await;
    settles_at(&server, 2).await;

    // And once more, to be sure adoption does not pile up.
    server.kill9().await;
    server.restart().await;
    serves_again(&server).await;
    settles_at(&server, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_orphans_after_service_delete_and_sigterm() {
    let mut server = Server::start().await;
    server.deploy("doomed", &[]).await;
    server.deploy("doomed", &["--no-traffic"]).await;
    server.deploy("stays", &[]).await;
    assert_eq!(server.live_instances(Some("doomed")).len(), 2);
    assert_eq!(server.live_instances(Some("stays")).len(), 1);

    server.cli_ok(&["service", "delete", "doomed"]).await;
    eventually(
        "instances of a deleted service stop",
        Duration::from_secs(20),
        async || {
            server
                .live_instances(Some("doomed"))
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let reply = server.get(&Server::host("doomed"), "/").await;
    assert_eq!(reply.status, 404, "{reply:?}");
    let (status, body) = server
        .api_get("/v1/namespaces/default/services/doomed")
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(server.live_instances(Some("stays")).len(), 1);

    let status = server.sigterm().await;
    assert!(
        status.success(),
        "graceful stop should exit 0, got {status}"
    );
    // The server exits only after its instances are gone; allow the kernel a moment.
    eventually(
        "no processes after SIGTERM",
        Duration::from_secs(2),
        async || server.live_processes().is_empty().then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_killed_at_once_comes_back_and_serves() {
    let server = Server::start().await;
    let services: Vec<String> = (1..=8).map(|i| format!("crowd{i}")).collect();
    for service in &services {
        server.deploy(service, &[]).await;
    }
    for service in &services {
        server
            .wait_served_by(&Server::host(service), "/", "v1")
            .await;
    }
    settles_at(&server, services.len()).await;

    let (_, body) = server.api_get("/v1/instances").await;
    let before: Vec<(String, i32)> = body["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            let id = i["id"].as_str().expect("id").to_string();
            (id, i["pid"].as_i64().expect("pid") as i32)
        })
        .collect();
    assert_eq!(before.len(), services.len(), "{body}");
    // All at once, as an OOM killer or `pkill` would: every report lands in one burst.
    for (_, pid) in &before {
        nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("SIGKILL the instance's group");
    }

    // Each service is served again, by a new instance, and nothing is left over or doubled.
    for service in &services {
        eventually(
            &format!("{service} served by a new instance"),
            Duration::from_secs(30),
            async || {
                let instances = server.instances(service).await;
                let fresh = instances.len() == 1
                    && instances[0]["state"] == "ready"
                    && !before
                        .iter()
                        .any(|(id, _)| instances[0]["id"] == *id.as_str());
                let served = server.get(&Server::host(service), "/").await.status == 200;
                (fresh && served).then_some(())
            },
        )
        .await;
    }
    settles_at(&server, services.len()).await;
}
