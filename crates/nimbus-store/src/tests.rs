use nimbus_model::traffic::{parse_rule, parse_split, MatchSource};
use nimbus_model::{ErrorKind, ScalingUpdate, VersionInput};

use super::*;

/// Unwraps a deploy that must have created a version.
fn created(d: Result<Deployed>) -> (ServiceRecord, VersionRecord) {
    match d.unwrap() {
        Deployed::Created(s, v) => (s, v),
        other => panic!("expected a new version, got {other:?}"),
    }
}

fn spec() -> VersionSpec {
    VersionInput {
        command: Some("sleep 100".into()),
        ..Default::default()
    }
    .resolve()
    .unwrap()
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("nimbus.db")).unwrap();
    (dir, store)
}

fn rejected(err: StoreError) -> ModelError {
    match err {
        StoreError::Rejected(e) => e,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn first_deploy_creates_service_and_takes_all_traffic() {
    let (_dir, store) = open();
    let (svc, v) = created(store.deploy_version("default", "hello", &spec(), true, false));
    assert_eq!(v.name, "v1");
    assert_eq!(svc.traffic, TrafficPolicy::single("v1"));
    let (svc, v) = created(store.deploy_version("default", "hello", &spec(), true, false));
    assert_eq!(v.name, "v2");
    assert_eq!(
        svc.traffic,
        TrafficPolicy::single("v1"),
        "--no-traffic keeps v1"
    );
    let (svc, v) = created(store.deploy_version("default", "hello", &spec(), false, false));
    assert_eq!(v.name, "v3");
    assert!(v.promote_pending);
    assert_eq!(
        svc.traffic,
        TrafficPolicy::single("v1"),
        "v3 takes traffic once ready"
    );
    assert_eq!(svc.versions, vec!["v1", "v2", "v3"]);

    assert!(
        !store.promote("default", "hello", "v2").unwrap(),
        "v2 was --no-traffic"
    );
    assert!(store.promote("default", "hello", "v3").unwrap());
    assert!(
        !store.promote("default", "hello", "v3").unwrap(),
        "only once"
    );
    let svc = store.get_service("default", "hello").unwrap();
    assert_eq!(svc.traffic, TrafficPolicy::single("v3"));
}

#[test]
fn explicit_traffic_cancels_pending_promotions_and_newer_supersedes_older() {
    let (_dir, store) = open();
    store
        .deploy_version("default", "hello", &spec(), false, false)
        .unwrap();
    store
        .deploy_version("default", "hello", &spec(), false, false)
        .unwrap(); // v2 pending
    store
        .deploy_version("default", "hello", &spec(), false, false)
        .unwrap(); // v3 pending
    assert!(store.promote("default", "hello", "v3").unwrap());
    assert!(
        !store.promote("default", "hello", "v2").unwrap(),
        "superseded by v3"
    );
    assert_eq!(
        store.get_service("default", "hello").unwrap().traffic,
        TrafficPolicy::single("v3")
    );

    store
        .deploy_version("default", "hello", &spec(), false, false)
        .unwrap(); // v4 pending
    let policy = TrafficPolicy {
        split: parse_split("v1=50,v3=50").unwrap(),
        rules: vec![],
    };
    store.set_traffic("default", "hello", &policy).unwrap();
    assert!(
        !store.promote("default", "hello", "v4").unwrap(),
        "the user's policy wins"
    );
    assert_eq!(
        store.get_service("default", "hello").unwrap().traffic,
        policy
    );
}

#[test]
fn new_namespace_is_created_on_deploy_and_bad_names_write_nothing() {
    let (_dir, store) = open();
    store
        .deploy_version("team-a", "api", &spec(), false, false)
        .unwrap();
    assert_eq!(store.list_namespaces().unwrap(), vec!["default", "team-a"]);
    let err = rejected(
        store
            .deploy_version("default", "Bad", &spec(), false, false)
            .unwrap_err(),
    );
    assert_eq!(err.field.as_deref(), Some("service"));
    let err = rejected(
        store
            .deploy_version("Bad", "ok", &spec(), false, false)
            .unwrap_err(),
    );
    assert_eq!(err.field.as_deref(), Some("namespace"));
    assert_eq!(store.list_services(None).unwrap().len(), 1);
}

#[test]
fn eleventh_version_is_refused_and_numbering_never_reuses_names() {
    let (_dir, store) = open();
    for _ in 0..10 {
        store
            .deploy_version("default", "hello", &spec(), true, false)
            .unwrap();
    }
    let err = rejected(
        store
            .deploy_version("default", "hello", &spec(), true, false)
            .unwrap_err(),
    );
    assert_eq!(err.kind, ErrorKind::Limit);
    assert!(err.message.contains("v2, v3"), "{}", err.message);
    assert_eq!(store.list_versions("default", "hello").unwrap().len(), 10);

    store.delete_version("default", "hello", "v5").unwrap();
    let (_, v) = created(store.deploy_version("default", "hello", &spec(), true, false));
    assert_eq!(v.name, "v11");
}

#[test]
fn traffic_is_validated_against_versions() {
    let (_dir, store) = open();
    store
        .deploy_version("default", "hello", &spec(), false, false)
        .unwrap();
    store
        .deploy_version("default", "hello", &spec(), true, false)
        .unwrap();
    let good = TrafficPolicy {
        split: parse_split("v1=90,v2=10").unwrap(),
        rules: vec![parse_rule(MatchSource::Header, "x-canary=1:v2").unwrap()],
    };
    let svc = store.set_traffic("default", "hello", &good).unwrap();
    assert_eq!(svc.traffic, good);

    let cases = [
        ("v1=90", "invalid_traffic"),
        ("v1=90,v3=10", "unknown_version"),
    ];
    for (split, code) in cases {
        let policy = TrafficPolicy {
            split: parse_split(split).unwrap(),
            rules: vec![],
        };
        let err = rejected(store.set_traffic("default", "hello", &policy).unwrap_err());
        assert_eq!(err.code, code, "{split}");
    }
    assert_eq!(
        store.get_service("default", "hello").unwrap().traffic,
        good,
        "unchanged"
    );

    let err = rejected(store.delete_version("default", "hello", "v2").unwrap_err());
    assert_eq!(err.code, "version_in_use");
}

#[test]
fn domains_are_unique_and_go_with_their_service() {
    let (_dir, store) = open();
    store
        .deploy_version("default", "a", &spec(), false, false)
        .unwrap();
    store
        .deploy_version("default", "b", &spec(), false, false)
        .unwrap();
    store.add_domain("www.example.com", "default", "a").unwrap();
    let err = rejected(
        store
            .add_domain("www.example.com", "default", "b")
            .unwrap_err(),
    );
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(err.message.contains("default/a"), "{}", err.message);
    assert_eq!(
        store.get_service("default", "a").unwrap().domains,
        vec!["www.example.com"]
    );
    let err = rejected(
        store
            .add_domain("x.example.com", "default", "nope")
            .unwrap_err(),
    );
    assert_eq!(err.kind, ErrorKind::NotFound);

    store.delete_service("default", "a").unwrap();
    assert!(store.list_domains().unwrap().is_empty());
    store.add_domain("www.example.com", "default", "b").unwrap();
}

#[test]
fn state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nimbus.db");
    {
        let store = Store::open(&path).unwrap();
        store
            .deploy_version("default", "hello", &spec(), false, false)
            .unwrap();
        store
            .add_domain("hello.example.com", "default", "hello")
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    let snap = store.snapshot().unwrap();
    assert_eq!(snap.services.len(), 1);
    assert_eq!(snap.services[0].domains, vec!["hello.example.com"]);
    assert_eq!(snap.versions.len(), 1);
    assert_eq!(snap.versions[0].spec, spec());
    let events = store
        .list_events(Some(("default", "hello")), 10, None)
        .unwrap();
    assert_eq!(events.first().map(|e| e.kind.as_str()), Some("deploy"));
}

#[test]
fn scaling_only_change_updates_in_place_and_identical_spec_redeploys() {
    let (_dir, store) = open();
    created(store.deploy_version("default", "hello", &spec(), false, false));
    let mut scaled = spec();
    scaled.min_instances = 2;
    match store
        .deploy_version("default", "hello", &scaled, false, false)
        .unwrap()
    {
        Deployed::ScalingUpdated(svc, v) => {
            assert_eq!(v.name, "v1");
            assert_eq!(v.spec.min_instances, 2);
            assert_eq!(svc.versions, vec!["v1"]);
        }
        other => panic!("expected an in-place update, got {other:?}"),
    }
    // The same spec again is a redeploy: a new version.
    let (_, v) = created(store.deploy_version("default", "hello", &scaled, false, false));
    assert_eq!(v.name, "v2");
    // Forcing a new version for a scaling change.
    let mut again = scaled.clone();
    again.max_instances = 3;
    let (_, v) = created(store.deploy_version("default", "hello", &again, false, true));
    assert_eq!(v.name, "v3");

    let update = ScalingUpdate {
        max_instances: Some(7),
        ..Default::default()
    };
    let v = store
        .update_scaling("default", "hello", "v1", &update)
        .unwrap();
    assert_eq!((v.spec.min_instances, v.spec.max_instances), (2, 7));
    let bad = ScalingUpdate {
        max_instances: Some(1),
        ..Default::default()
    };
    let err = rejected(
        store
            .update_scaling("default", "hello", "v1", &bad)
            .unwrap_err(),
    );
    assert_eq!(err.code, "invalid_min_instances");
    let v = store.get_version("default", "hello", "v1").unwrap();
    assert_eq!(v.spec.max_instances, 7, "a rejected update changes nothing");
}

#[test]
fn schedules_are_stored_and_follow_their_service() {
    let (_dir, store) = open();
    created(store.deploy_version("default", "hello", &spec(), false, false));
    let new = NewSchedule {
        version: None,
        cron: "0 9 * * 1-5".into(),
        min_instances: 3,
        max_instances: Some(20),
        duration_secs: None,
    };
    let s = store.add_schedule("default", "hello", &new).unwrap();
    assert_eq!(s.min_instances, 3);
    let pinned = NewSchedule {
        version: Some("v9".into()),
        ..new.clone()
    };
    let err = rejected(store.add_schedule("default", "hello", &pinned).unwrap_err());
    assert_eq!(err.code, "version_not_found");
    assert_eq!(store.list_schedules("default", "hello").unwrap().len(), 1);
    assert_eq!(store.snapshot().unwrap().schedules.len(), 1);
    let err = rejected(store.remove_schedule("default", "hello", 999).unwrap_err());
    assert_eq!(err.code, "schedule_not_found");
    store.remove_schedule("default", "hello", s.id).unwrap();
    store.add_schedule("default", "hello", &new).unwrap();
    store.delete_service("default", "hello").unwrap();
    assert!(store.snapshot().unwrap().schedules.is_empty());
}

#[test]
fn events_follow_after_an_id_and_filter_by_service() {
    let (_dir, store) = open();
    created(store.deploy_version("default", "hello", &spec(), false, false));
    created(store.deploy_version("default", "other", &spec(), false, false));
    store
        .record_event("default", "hello", "scale", "one")
        .unwrap();
    let all = store.list_events(None, 100, None).unwrap();
    assert!(all.len() >= 3, "{all:?}");
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    let mine = store
        .list_events(Some(("default", "hello")), 100, None)
        .unwrap();
    assert!(mine.iter().all(|e| e.service == "hello"), "{mine:?}");
    let last = mine.last().map(|e| e.id).unwrap();
    store
        .record_event("default", "hello", "scale", "two")
        .unwrap();
    let newer = store
        .list_events(Some(("default", "hello")), 100, Some(last))
        .unwrap();
    assert_eq!(newer.len(), 1, "{newer:?}");
    assert_eq!(newer[0].message, "two");
    let limited = store.list_events(None, 1, None).unwrap();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].message, "two", "the newest one");
}

#[test]
fn access_keys_round_trip() {
    let (_dir, store) = open();
    let key = store.add_access_key("NIMBUSKEY1", "secret-1").unwrap();
    assert_eq!(key.id, "NIMBUSKEY1");
    assert!(
        store.add_access_key("NIMBUSKEY1", "again").is_err(),
        "ids are unique"
    );
    assert_eq!(
        store.access_key_secrets().unwrap(),
        vec![("NIMBUSKEY1".to_string(), "secret-1".to_string())]
    );
    assert_eq!(store.list_access_keys().unwrap().len(), 1);
    store.remove_access_key("NIMBUSKEY1").unwrap();
    assert!(store.list_access_keys().unwrap().is_empty());
    let missing = store.remove_access_key("NIMBUSKEY1").unwrap_err();
    assert!(missing.to_string().contains("no access key"), "{missing}");
}

#[test]
fn triggers_and_aliases() {
    let (_dir, store) = open();
    created(store.deploy_version("default", "hello", &spec(), false, false));
    created(store.deploy_version("default", "hello", &spec(), true, false));
    let timer = store
        .add_trigger(
            "default",
            "hello",
            &NewTrigger {
                kind: "timer".into(),
                cron: Some("*/5 * * * *".into()),
                ..NewTrigger::default()
            },
        )
        .unwrap();
    assert_eq!(timer.kind, "timer");
    assert!(store
        .add_trigger("default", "ghost", &NewTrigger::default())
        .is_err());
    assert_eq!(store.list_triggers(None).unwrap().len(), 1);
    let split = nimbus_model::traffic::parse_split("v1=90,v2=10").unwrap();
    store.set_alias("default", "hello", "live", &split).unwrap();
    let bad = nimbus_model::traffic::parse_split("v1=90,v9=10").unwrap();
    assert!(store.set_alias("default", "hello", "live", &bad).is_err());
    let aliases = store.list_aliases("default", "hello").unwrap();
    assert_eq!(aliases.len(), 1);
    assert_eq!(
        aliases[0].split, split,
        "a rejected change leaves the alias as it was"
    );
    store.remove_trigger("default", "hello", timer.id).unwrap();
    assert!(store.remove_trigger("default", "hello", timer.id).is_err());
    store.delete_service("default", "hello").unwrap();
    assert!(store.list_aliases("default", "hello").unwrap().is_empty());
}

#[test]
fn old_events_are_pruned() {
    let (_dir, store) = open();
    created(store.deploy_version("default", "hello", &spec(), false, false));
    assert!(!store.list_events(None, 10, None).unwrap().is_empty());
    assert_eq!(
        store.prune_events(0).unwrap(),
        0,
        "nothing is older than 1970"
    );
    let removed = store.prune_events(i64::MAX).unwrap();
    assert!(removed >= 1);
    assert!(store.list_events(None, 10, None).unwrap().is_empty());
}

#[test]
fn gateway_policy_round_trip_and_cascade() {
    let (_dir, store) = open();
    let missing = rejected(store.gateway_policy("default", "hello").unwrap_err());
    assert_eq!(missing.kind, ErrorKind::NotFound);
    created(store.deploy_version("default", "hello", &spec(), true, false));
    assert_eq!(
        store.gateway_policy("default", "hello").unwrap(),
        GatewaySpec::default()
    );
    let policy = GatewaySpec {
        lb: Some("round-robin".into()),
        rate: Some("100/s".into()),
        burst: Some(200),
        ..GatewaySpec::default()
    };
    store
        .set_gateway_policy("default", "hello", &policy)
        .unwrap();
    assert_eq!(store.gateway_policy("default", "hello").unwrap(), policy);
    let snapshot = store.snapshot().unwrap();
    assert_eq!(snapshot.gateway.len(), 1);
    assert_eq!(snapshot.gateway[0].spec, policy);
    // Bad numbers change nothing.
    let bad = GatewaySpec {
        burst: Some(0),
        ..policy.clone()
    };
    assert!(store.set_gateway_policy("default", "hello", &bad).is_err());
    assert_eq!(store.gateway_policy("default", "hello").unwrap(), policy);
    // The default removes the row; deleting the service removes it too.
    store
        .set_gateway_policy("default", "hello", &GatewaySpec::default())
        .unwrap();
    assert!(store.snapshot().unwrap().gateway.is_empty());
    store
        .set_gateway_policy("default", "hello", &policy)
        .unwrap();
    store.delete_service("default", "hello").unwrap();
    assert!(store.snapshot().unwrap().gateway.is_empty());
    created(store.deploy_version("default", "hello", &spec(), true, false));
    assert_eq!(
        store.gateway_policy("default", "hello").unwrap(),
        GatewaySpec::default()
    );
}

#[test]
fn certificates_round_trip() {
    let (_dir, store) = open();
    store
        .put_certificate("www.example.com", "CERT", "KEY")
        .unwrap();
    store.put_certificate("*.example.com", "C2", "K2").unwrap();
    store
        .put_certificate("www.example.com", "CERT2", "KEY2")
        .unwrap();
    let all = store.list_certificates().unwrap();
    let hosts: Vec<&str> = all.iter().map(|c| c.host.as_str()).collect();
    assert_eq!(hosts, ["*.example.com", "www.example.com"]);
    assert_eq!(all[1].cert_pem, "CERT2");
    assert_eq!(store.snapshot().unwrap().certificates, all);
    assert!(
        !format!("{:?}", all[1]).contains("KEY2"),
        "Debug hides the key"
    );
    store.remove_certificate("*.example.com").unwrap();
    let missing = rejected(store.remove_certificate("*.example.com").unwrap_err());
    assert_eq!(missing.kind, ErrorKind::NotFound);
}
