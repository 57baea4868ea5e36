//! The reconciler's decision, pure: given what should run and what does, which instances to start
//! and which to stop. Tested with tables; the I/O around it lives in `reconciler.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nimbus_model::{Runtime, VersionSpec};
use nimbus_runtime::{ContainerSpec, InstanceSpec, VolumeMount, DEFAULT_TMP_SIZE_BYTES};

/// `(namespace, service, version)`.
pub type VersionKey = (String, String, String);

/// What the plan knows of one live instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveInstance {
    pub id: String,
    pub version: VersionKey,
    /// Starting instances are stopped before ready ones when scaling down.
    pub ready: bool,
    /// Requests in flight; among ready instances the least busy are stopped first.
    pub inflight: usize,
}

/// One step towards the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start(VersionKey),
    Stop(String),
}

/// `desired` maps each version that should exist to the number of instances it should run;
/// `held` lists versions that must not start anything now (crash backoff). `live` excludes
/// instances already draining. Stops are listed before starts.
pub fn plan(
    desired: &BTreeMap<VersionKey, u32>,
    held: &[VersionKey],
    live: &[LiveInstance],
) -> Vec<Action> {
    let mut stops = Vec::new();
    let mut starts = Vec::new();
    let mut by_version: BTreeMap<&VersionKey, Vec<&LiveInstance>> = BTreeMap::new();
    for instance in live {
        if desired.contains_key(&instance.version) {
            by_version
                .entry(&instance.version)
                .or_default()
                .push(instance);
        } else {
            stops.push(Action::Stop(instance.id.clone()));
        }
    }
    for (key, &want) in desired {
        let mut have = by_version.remove(key).unwrap_or_default();
        let count = have.len() as u32;
        if count > want {
            // Keep ready instances; shed the ones still starting first, then the least busy
            // (less to drain); ties by id so plans are deterministic.
            have.sort_by(|a, b| (a.ready, a.inflight, &a.id).cmp(&(b.ready, b.inflight, &b.id)));
            for extra in have.iter().take((count - want) as usize) {
                stops.push(Action::Stop(extra.id.clone()));
            }
        } else if count < want && !held.contains(key) {
            for _ in count..want {
                starts.push(Action::Start(key.clone()));
            }
        }
    }
    stops.extend(starts);
    stops
}

/// Wait before restarting a version whose instances crashed `failures` times in a row:
/// 0.5 s, 1 s, 2 s, … capped at 30 s.
pub fn crash_backoff_ms(failures: u32) -> u64 {
    let exp = failures.saturating_sub(1).min(16);
    (500u64 << exp).min(30_000)
}

/// When a pass owed to instance reports may run, given when the last route publish started and
/// how long it took: once the control thread has been free of it for as long again. A storm of
/// reports (a thousand instances crashing at once, each pass rebuilding a large route table)
/// then spends at most half the thread on rebuilds and coalesces, while a report after a quick
/// publish (a small table: tens of microseconds) goes at once.
pub fn next_pass_at(last: Option<(Instant, Duration)>, now: Instant) -> Instant {
    match last {
        Some((started, took)) => (started + took * 2).max(now),
        None => now,
    }
}

/// Consecutive crashes after which a version is reported `failed`.
pub const FAILED_AFTER: u32 = 3;

/// What the driver runs for one instance of a version: a process for a command, a container (with
/// its limits, `/tmp` size and volumes) for an image.
pub fn instance_spec(key: &VersionKey, id: String, port: u16, spec: &VersionSpec) -> InstanceSpec {
    let container = match spec.runtime() {
        Runtime::Process => None,
        Runtime::Container => Some(ContainerSpec {
            image: spec.image.clone().unwrap_or_default(),
            cpu: spec.cpu,
            memory_bytes: spec.memory_bytes,
            tmp_size_bytes: spec.tmp_size_bytes.unwrap_or(DEFAULT_TMP_SIZE_BYTES),
            volumes: spec
                .volumes
                .iter()
                .map(|m| VolumeMount {
                    name: m.name.clone(),
                    path: m.path.clone(),
                })
                .collect(),
        }),
    };
    InstanceSpec {
        id,
        namespace: key.0.clone(),
        service: key.1.clone(),
        version: key.2.clone(),
        command: spec.command.clone(),
        env: spec.env.clone(),
        port,
        container,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_owed_to_reports_leave_the_thread_free_half_the_time() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let cases = [
            // (last publish: started before now, took), wait from now
            (None, ms(0)),                      // first pass: at once
            (Some((ms(1), ms(0))), ms(0)),      // an instant pass: at once
            (Some((ms(10), ms(1))), ms(0)),     // free long enough already
            (Some((ms(20), ms(10))), ms(0)),    // exactly as long as it took
            (Some((ms(12), ms(10))), ms(8)),    // 2 ms free of the 10 owed
            (Some((ms(150), ms(100))), ms(50)), // a slow pass over a big table
            (Some((ms(30), ms(30))), ms(30)),   // ... that ended just now
        ];
        for (last, wait) in cases {
            let last = last.map(|(ago, took)| (now - ago, took));
            assert_eq!(next_pass_at(last, now), now + wait, "{last:?}");
        }
    }

    fn key(v: &str) -> VersionKey {
        ("default".into(), "hello".into(), v.into())
    }

    fn live(id: &str, v: &str, ready: bool) -> LiveInstance {
        busy(id, v, ready, 0)
    }

    fn busy(id: &str, v: &str, ready: bool, inflight: usize) -> LiveInstance {
        LiveInstance {
            id: id.into(),
            version: key(v),
            ready,
            inflight,
        }
    }

    #[test]
    fn plans() {
        type Case = (
            &'static str,
            Vec<(&'static str, u32)>,
            Vec<&'static str>,
            Vec<LiveInstance>,
            Vec<Action>,
        );
        let cases: Vec<Case> = vec![
            (
                "nothing to do",
                vec![("v1", 1)],
                vec![],
                vec![live("a", "v1", true)],
                vec![],
            ),
            (
                "first start",
                vec![("v1", 1)],
                vec![],
                vec![],
                vec![Action::Start(key("v1"))],
            ),
            (
                "two to start",
                vec![("v1", 2)],
                vec![],
                vec![],
                vec![Action::Start(key("v1")), Action::Start(key("v1"))],
            ),
            (
                "held by backoff",
                vec![("v1", 1)],
                vec!["v1"],
                vec![],
                vec![],
            ),
            (
                "deleted version stops",
                vec![],
                vec![],
                vec![live("a", "v1", true)],
                vec![Action::Stop("a".into())],
            ),
            (
                "scale down sheds starting first",
                vec![("v1", 1)],
                vec![],
                vec![live("a", "v1", true), live("b", "v1", false)],
                vec![Action::Stop("b".into())],
            ),
            (
                "scale down sheds the least busy ready ones",
                vec![("v1", 1)],
                vec![],
                vec![
                    busy("a", "v1", true, 5),
                    busy("b", "v1", true, 0),
                    busy("c", "v1", true, 2),
                ],
                vec![Action::Stop("b".into()), Action::Stop("c".into())],
            ),
            (
                "scale down ties go by id",
                vec![("v1", 2)],
                vec![],
                vec![
                    busy("b", "v1", true, 1),
                    busy("a", "v1", true, 1),
                    busy("c", "v1", true, 1),
                ],
                vec![Action::Stop("a".into())],
            ),
            (
                "stops before starts",
                vec![("v2", 1)],
                vec![],
                vec![live("a", "v1", true)],
                vec![Action::Stop("a".into()), Action::Start(key("v2"))],
            ),
            (
                "zero wanted",
                vec![("v1", 0)],
                vec![],
                vec![live("a", "v1", true)],
                vec![Action::Stop("a".into())],
            ),
        ];
        for (label, desired, held, instances, expected) in cases {
            let desired: BTreeMap<_, _> = desired.into_iter().map(|(v, n)| (key(v), n)).collect();
            let held: Vec<_> = held.into_iter().map(key).collect();
            assert_eq!(plan(&desired, &held, &instances), expected, "{label}");
        }
    }

    #[test]
    fn backoff() {
        let cases = [
            (0, 500),
            (1, 500),
            (2, 1000),
            (3, 2000),
            (7, 30_000),
            (100, 30_000),
        ];
        for (failures, ms) in cases {
            assert_eq!(crash_backoff_ms(failures), ms, "{failures}");
        }
    }

    #[test]
    fn instance_specs_by_runtime() {
        let key: VersionKey = ("default".into(), "hello".into(), "v2".into());
        let process = nimbus_model::VersionInput {
            command: Some("./app".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let got = instance_spec(&key, "hello-v2-1".into(), 4000, &process);
        assert_eq!(
            (got.command.as_str(), got.port, got.container),
            ("./app", 4000, None)
        );
        assert_eq!(
            (got.service.as_str(), got.version.as_str()),
            ("hello", "v2")
        );

        let container = nimbus_model::VersionInput {
            image: Some("nimbus/default/hello:b1".into()),
            cpu: Some(0.5),
            memory: Some(nimbus_model::ByteSize::Text("64Mi".into())),
            volumes: vec![nimbus_model::VolumeMount {
                name: "data".into(),
                path: "/data".into(),
            }],
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let got = instance_spec(&key, "hello-v2-2".into(), 4001, &container);
        let c = got.container.expect("a container spec");
        assert_eq!(c.image, "nimbus/default/hello:b1");
        assert_eq!((c.cpu, c.memory_bytes), (Some(0.5), Some(64 << 20)));
        assert_eq!(c.tmp_size_bytes, DEFAULT_TMP_SIZE_BYTES);
        assert_eq!(
            c.volumes,
            [VolumeMount {
                name: "data".into(),
                path: "/data".into()
            }]
        );
        assert_eq!(got.command, "", "the image's own entrypoint");
    }
}
