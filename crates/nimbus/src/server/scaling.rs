//! The reconciler's autoscaling bookkeeping: per version, the demand window the gateway's gates
//! feed, the decider's state and the instance count it chose. The math lives in
//! `nimbus-autoscaler`; this module only keeps its inputs and outputs per version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nimbus_autoscaler::schedule::{self, Schedule};
use nimbus_autoscaler::{decide, DeciderState, SampleWindow, ScalingConfig};
use nimbus_model::VersionSpec;
use nimbus_store::ScheduleRecord;

use super::plan::VersionKey;

/// Server-wide autoscaler timings (`nimbus server --scale-*`); the per-version knobs come from
/// the version's spec.
#[derive(Debug, Clone, Copy)]
pub struct ScalingTimings {
    pub stable_window: Duration,
    pub panic_window: Duration,
    /// How often the decider runs.
    pub tick: Duration,
    /// Scale down only to the highest recommendation of this long ago.
    pub scale_down_delay: Duration,
}

impl Default for ScalingTimings {
    fn default() -> Self {
        let defaults = ScalingConfig::default();
        Self {
            stable_window: defaults.stable_window,
            panic_window: defaults.panic_window,
            tick: defaults.tick,
            scale_down_delay: defaults.scale_down_delay,
        }
    }
}

/// How often the gates' demand is sampled into the windows.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// A change of a version's desired instance count, for the events timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: VersionKey,
    pub from: u32,
    pub to: u32,
    pub reason: &'static str,
    /// Stable-window demand (requests in flight + queued) when the decision was made.
    pub demand: f64,
    /// Requests each instance is aimed at.
    pub target: f64,
}

impl Change {
    pub fn describe(&self) -> String {
        format!(
            "version {}: {} → {} instances ({}; demand {:.2}, target {:.1} per instance)",
            self.key.2, self.from, self.to, self.reason, self.demand, self.target
        )
    }
}

struct VersionScaling {
    config: ScalingConfig,
    window: SampleWindow,
    state: DeciderState,
    desired: u32,
    reason: &'static str,
    /// The version's gateway gate, sampled by [`Scaler::sample_gates`] without a map lookup.
    gate: Option<Arc<nimbus_gateway::VersionGate>>,
    /// A sample was recorded since the entry was made.
    sampled: bool,
    /// The version is on [`Scaler::warm`]: [`Scaler::sample_gates`] visits it.
    warm: bool,
    /// Instances running or starting, as of the current [`Scaler::decide_all`] pass.
    running: u32,
    /// Of those, the ready ones.
    ready: u32,
}

impl VersionScaling {
    /// Puts the version on the sampler's list (once).
    fn warm_up(&mut self, warm: &mut Vec<VersionKey>, key: VersionKey) {
        if !self.warm {
            self.warm = true;
            warm.push(key);
        }
    }
}

/// Per-version autoscaler state, owned by the reconciler.
pub struct Scaler {
    timings: ScalingTimings,
    origin: Instant,
    versions: HashMap<VersionKey, VersionScaling>,
    /// The versions [`Scaler::sample_gates`] visits: new ones, ones whose gate reported demand,
    /// and ones whose window has not yet been quiet for a stable window. A table of thousands
    /// of idle versions costs a pass nothing.
    warm: Vec<VersionKey>,
    /// Versions whose gate reported demand since the last pass (see [`Scaler::demand_hook`]).
    reported: Arc<Mutex<Vec<VersionKey>>>,
    /// When [`Scaler::sample_gates`] last ran.
    last_pass: Option<tokio::time::Instant>,
}

impl Scaler {
    pub fn new(timings: ScalingTimings) -> Self {
        Self {
            timings,
            origin: Instant::now(),
            versions: HashMap::new(),
            warm: Vec::new(),
            reported: Arc::default(),
            last_pass: None,
        }
    }

    pub fn tick(&self) -> Duration {
        self.timings.tick
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn config(&self, spec: &VersionSpec) -> ScalingConfig {
        ScalingConfig {
            concurrency: spec.concurrency,
            target_utilization: spec.target_utilization,
            stable_window: self.timings.stable_window,
            panic_window: self.timings.panic_window.min(self.timings.stable_window),
            scale_to_zero_grace: Duration::from_secs(spec.scale_to_zero_after_secs),
            scale_down_delay: self.timings.scale_down_delay,
            min: spec.min_instances,
            max: spec.max_instances,
            tick: self.timings.tick,
            ..ScalingConfig::default()
        }
    }

    /// Keeps one entry per existing version: new ones start at `initial(key, spec)`, known ones
    /// take the spec's current knobs (scaling changes apply in place), deleted ones are dropped.
    pub fn sync<'a>(
        &mut self,
        versions: impl Iterator<Item = (VersionKey, &'a VersionSpec)>,
        initial: impl Fn(&VersionKey, &VersionSpec) -> u32,
    ) {
        let mut seen = HashMap::new();
        for (key, spec) in versions {
            let config = self.config(spec);
            match self.versions.get_mut(&key) {
                Some(v) => {
                    // A scaling update may move the bounds: honour them at once.
                    if v.desired < config.min {
                        v.desired = config.min;
                        v.reason = "min";
                    } else if v.desired > config.max.max(config.min) {
                        v.desired = config.max.max(config.min);
                        v.reason = "max";
                    }
                    v.config = config;
                }
                None => {
                    let desired = initial(&key, spec).clamp(spec.min_instances, spec.max_instances);
                    let window = config.window();
                    self.versions.insert(
                        key.clone(),
                        VersionScaling {
                            config,
                            window,
                            state: DeciderState::default(),
                            desired,
                            reason: "initial",
                            gate: None,
                            sampled: false,
                            warm: true,
                            running: 0,
                            ready: 0,
                        },
                    );
                    self.warm.push(key.clone());
                }
            }
            seen.insert(key, ());
        }
        self.versions.retain(|key, _| seen.contains_key(key));
    }

    /// Remembers the gate whose demand [`Scaler::sample_gates`] feeds into `key`'s window.
    pub fn attach_gate(&mut self, key: &VersionKey, gate: &Arc<nimbus_gateway::VersionGate>) {
        if let Some(v) = self.versions.get_mut(key) {
            if !v.gate.as_ref().is_some_and(|g| Arc::ptr_eq(g, gate)) {
                v.gate = Some(Arc::clone(gate));
                v.warm_up(&mut self.warm, key.clone());
            }
        }
    }

    /// The `on_demand` hook for `key`'s gate: it puts the version back on the sampler's list.
    pub fn demand_hook(&self, key: &VersionKey) -> Arc<dyn Fn() + Send + Sync> {
        let reported = Arc::clone(&self.reported);
        let key = key.clone();
        Arc::new(move || {
            reported
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(key.clone());
        })
    }

    /// Feeds the demand since the previous pass into the window of every warm version (one
    /// clock read for the pass). A version leaves the list once its gate is idle and its window
    /// has held nothing but zeros for longer than the stable window (a missing bucket averages
    /// as zero, so the decider sees the same numbers); its gate's next request reports it back.
    pub fn sample_gates(&mut self) {
        let now = self.now();
        let pass = tokio::time::Instant::now();
        let previous_pass = self.last_pass.replace(pass);
        let reported =
            std::mem::take(&mut *self.reported.lock().unwrap_or_else(PoisonError::into_inner));
        for key in reported {
            if let Some(v) = self.versions.get_mut(&key) {
                v.warm_up(&mut self.warm, key);
            }
        }
        let versions = &mut self.versions;
        self.warm.retain(|key| {
            let Some(v) = versions.get_mut(key) else {
                return false; // deleted
            };
            let Some(gate) = &v.gate else {
                v.warm = false;
                return false;
            };
            // Since the previous pass at most: a gate back from the cold was last sampled
            // long ago, and its idle time before this pass is already in the window.
            let sample = gate.sample_demand(previous_pass);
            let quiet_for = v.config.stable_window + SampleWindow::DEFAULT_BUCKET * 2;
            let quiet = sample.average == 0.0
                && v.sampled
                && v.window
                    .last_nonzero()
                    .is_none_or(|at| now.saturating_sub(at) > quiet_for);
            if !quiet {
                v.window.record(now, sample.average);
                v.sampled = true;
            }
            v.warm = !(quiet && sample.idle);
            v.warm
        });
    }

    /// Runs the decider for every version in one pass (no key copies). `running` lists the
    /// versions with instances running or starting: how many, and how many of them are ready
    /// (a version is not scaled below what it is starting while none is ready, see
    /// [`starting_floor`]); `current` gives the count a
    /// version with fewer than it desires should be decided with (say, counting crashed
    /// instances waiting out a backoff); `schedules` gives its service's schedules (evaluated
    /// in the server's local time zone). Also says whether any version's scaling reason
    /// changed.
    ///
    /// The counts go in as a list rather than a lookup: the pass then touches only the versions
    /// that have instances, not the map once per version — thousands of probes every tick, on
    /// the thread the gateway shares.
    pub fn decide_all<'k>(
        &mut self,
        running: impl IntoIterator<Item = (&'k VersionKey, LiveCount)>,
        current: impl Fn(&VersionKey, u32, u32) -> u32,
        schedules: impl Fn(&VersionKey) -> Vec<Schedule>,
        local_now: &chrono::DateTime<chrono::Local>,
    ) -> (Vec<Change>, bool) {
        for v in self.versions.values_mut() {
            v.running = 0;
            v.ready = 0;
        }
        for (key, count) in running {
            if let Some(v) = self.versions.get_mut(key) {
                v.running = count.running;
                v.ready = count.ready;
            }
        }
        let now = self.now();
        let mut reasons_changed = false;
        let changes = self
            .versions
            .iter_mut()
            .filter_map(|(key, v)| {
                let running = if v.running < v.desired {
                    current(key, v.running, v.desired)
                } else {
                    v.running
                };
                let schedules = schedules(key);
                // A version at rest (no demand for longer than the stable window, at its floor,
                // running what it wants, no schedule to move the floor) would get the same
                // decision again: skip the math, which thousands of idle versions cannot afford
                // on every tick.
                let at_rest = schedules.is_empty()
                    && running == v.desired
                    && v.desired == v.config.min
                    && v.window.last_nonzero().is_none_or(|at| {
                        now.saturating_sub(at)
                            > v.config.stable_window + SampleWindow::DEFAULT_BUCKET * 2
                    });
                if at_rest && v.sampled {
                    return None;
                }
                let reason = v.reason;
                let floor = starting_floor(v.running, v.ready);
                let change = decide_version(key, v, now, running, floor, &schedules, local_now);
                reasons_changed |= v.reason != reason;
                change
            })
            .collect();
        (changes, reasons_changed)
    }

    /// The activator: requests found no ready instance. Want enough instances for the held
    /// demand at once (one for a burst that fits one instance), within max; the next decision
    /// takes over from there.
    pub fn wake(&mut self, key: &VersionKey, demand: usize) -> Option<Change> {
        let now = self.now();
        let v = self.versions.get_mut(key)?;
        let demand = demand.max(1);
        v.window.record(now, demand as f64);
        let needed = wake_count(demand, v.config.target(), v.config.max);
        if needed <= v.desired {
            return None;
        }
        let from = v.desired;
        v.desired = needed;
        v.reason = "activator";
        Some(Change {
            key: key.clone(),
            from,
            to: needed,
            reason: v.reason,
            demand: demand as f64,
            target: v.config.target(),
        })
    }

    pub fn desired(&self, key: &VersionKey) -> Option<u32> {
        self.versions.get(key).map(|v| v.desired)
    }

    pub fn reason(&self, key: &VersionKey) -> Option<&'static str> {
        self.versions.get(key).map(|v| v.reason)
    }
}

/// One version's decision; see [`Scaler::decide_all`].
fn decide_version(
    key: &VersionKey,
    v: &mut VersionScaling,
    now: Duration,
    current: u32,
    floor: u32,
    schedules: &[Schedule],
    local_now: &chrono::DateTime<chrono::Local>,
) -> Option<Change> {
    let active = schedule::active(schedules, &key.2, local_now, schedule::DEFAULT_LOOKBACK);
    let bounds = v.config.bounds(active.as_ref());
    let (decision, state) = decide(&v.config, bounds, &v.window, &v.state, now, current);
    v.state = state;
    let from = v.desired;
    if decision.desired < floor {
        v.desired = floor;
        v.reason = STARTING;
    } else {
        v.desired = decision.desired;
        v.reason = decision.reason.as_str();
    }
    (from != v.desired).then(|| Change {
        key: key.clone(),
        from,
        to: v.desired,
        reason: v.reason,
        demand: decision.stable_demand,
        target: decision.target,
    })
}

/// The scaling reason of a version held at what it is starting (see [`starting_floor`]).
pub const STARTING: &str = "starting";

/// Instances of one version, for [`Scaler::decide_all`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveCount {
    /// Running or starting.
    pub running: u32,
    pub ready: u32,
}

/// The fewest instances a version may be scaled down to now: all it is starting while none is
/// ready. A version's first start proves it works (or fails it at the startup deadline); scaled
/// away before that, a deploy of an app that never listens would end "idle" with nothing
/// proven, and a slow starter would be killed just before it was ready.
fn starting_floor(running: u32, ready: u32) -> u32 {
    if ready == 0 {
        running
    } else {
        0
    }
}

/// Instances for `demand` held requests at `target` requests each: at least one, at most `max`.
fn wake_count(demand: usize, target: f64, max: u32) -> u32 {
    let n = (demand as f64 / target.max(0.01) - 1e-9).ceil();
    let n = if n.is_finite() && n >= 1.0 {
        n.min(f64::from(max)) as u32
    } else {
        1
    };
    n.clamp(1, max.max(1))
}

/// The stored schedules of one service, as the autoscaler reads them.
pub fn schedules_of(records: &[ScheduleRecord], namespace: &str, service: &str) -> Vec<Schedule> {
    records
        .iter()
        .filter(|r| r.namespace == namespace && r.service == service)
        .map(|r| Schedule {
            id: r.id,
            cron: r.cron.clone(),
            min: r.min_instances,
            max: r.max_instances,
            version: r.version.clone(),
            duration_secs: r.duration_secs,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> VersionKey {
        ("default".into(), "hello".into(), "v1".into())
    }

    fn spec(min: u32, max: u32) -> VersionSpec {
        let mut spec = nimbus_model::VersionInput {
            command: Some("true".into()),
            ..Default::default()
        }
        .resolve()
        .expect("valid spec");
        spec.min_instances = min;
        spec.max_instances = max;
        spec
    }

    #[test]
    fn a_pass_reads_the_running_counts_it_is_given() {
        let mut scaler = Scaler::new(ScalingTimings::default());
        let s = spec(2, 5);
        let name = |v: &str| -> VersionKey { ("default".into(), "hello".into(), v.into()) };
        let versions = ["full", "short", "gone"].map(name);
        scaler.sync(versions.iter().map(|k| (k.clone(), &s)), |_, _| 2);
        // `full` runs what it wants; `short` runs fewer; `gone` has no instance, and a count
        // for a version the scaler does not know is ignored.
        let unknown = name("deleted");
        let live = |running, ready| LiveCount { running, ready };
        let running = [
            (&versions[0], live(2, 2)),
            (&versions[1], live(1, 1)),
            (&unknown, live(7, 7)),
        ];
        let asked = std::cell::RefCell::new(Vec::new());
        scaler.decide_all(
            running,
            |key, current, desired| {
                asked.borrow_mut().push((key.2.clone(), current, desired));
                desired // as if the missing ones were crashed instances in a backoff
            },
            |_| Vec::new(),
            &chrono::Local::now(),
        );
        let mut asked = asked.into_inner();
        asked.sort();
        assert_eq!(
            asked,
            [("gone".to_string(), 0, 2), ("short".to_string(), 1, 2)],
            "only versions running fewer than they want are asked about"
        );
        for key in &versions {
            assert_eq!(scaler.desired(key), Some(2), "{key:?}");
        }
        assert_eq!(scaler.versions[&versions[0]].running, 2);
        assert_eq!(scaler.versions[&versions[2]].running, 0);

        // Counts are per pass: one missing from the next list is zero.
        scaler.decide_all(
            [],
            |_, current, _| current,
            |_| Vec::new(),
            &chrono::Local::now(),
        );
        assert_eq!(scaler.versions[&versions[0]].running, 0);
    }

    #[test]
    fn a_version_is_not_scaled_below_what_it_starts_while_none_is_ready() {
        // (running, ready) → floor
        let cases = [
            ((0, 0), 0),
            ((1, 0), 1),
            ((3, 0), 3),
            ((1, 1), 0),
            ((3, 1), 0),
        ];
        for ((running, ready), floor) in cases {
            assert_eq!(
                starting_floor(running, ready),
                floor,
                "{running} running, {ready} ready"
            );
        }

        // A deploy with no traffic whose instance never answers: long past the stable window
        // and the grace, it keeps its instance (until the startup deadline fails it).
        let timings = ScalingTimings {
            stable_window: Duration::from_millis(1),
            panic_window: Duration::from_millis(1),
            scale_down_delay: Duration::from_millis(1),
            ..ScalingTimings::default()
        };
        let mut scaler = Scaler::new(timings);
        let mut s = spec(0, 3);
        s.scale_to_zero_after_secs = 0;
        scaler.sync([(key(), &s)].into_iter(), |_, _| 1);
        if let Some(v) = scaler.versions.get_mut(&key()) {
            v.window.record(Duration::ZERO, 0.0); // no demand since the deploy
        }
        let decide = |scaler: &mut Scaler, count: LiveCount| {
            let key = key();
            scaler.decide_all(
                [(&key, count)],
                |_, current, _| current,
                |_| Vec::new(),
                &chrono::Local::now(),
            );
            (scaler.desired(&key), scaler.reason(&key))
        };
        // As if the deploy were a second old: far past the windows and the grace.
        scaler.origin = scaler
            .origin
            .checked_sub(Duration::from_secs(1))
            .expect("a monotonic clock older than a second");
        let starting = LiveCount {
            running: 1,
            ready: 0,
        };
        assert_eq!(decide(&mut scaler, starting), (Some(1), Some(STARTING)));
        let ready = LiveCount {
            running: 1,
            ready: 1,
        };
        assert_eq!(decide(&mut scaler, ready), (Some(0), Some("zero")));
    }

    #[test]
    fn new_versions_start_at_initial_clamped_and_follow_bound_changes() {
        let mut scaler = Scaler::new(ScalingTimings::default());
        let s = spec(2, 5);
        scaler.sync([(key(), &s)].into_iter(), |_, _| 1);
        assert_eq!(scaler.desired(&key()), Some(2), "raised to min");
        assert_eq!(scaler.reason(&key()), Some("initial"));

        let s = spec(3, 5);
        scaler.sync([(key(), &s)].into_iter(), |_, _| 9);
        assert_eq!(scaler.desired(&key()), Some(3), "raised to the new min");
        assert_eq!(scaler.reason(&key()), Some("min"));

        let s = spec(0, 1);
        scaler.sync([(key(), &s)].into_iter(), |_, _| 9);
        assert_eq!(scaler.desired(&key()), Some(1), "lowered to the new max");
        assert_eq!(scaler.reason(&key()), Some("max"));

        scaler.sync(std::iter::empty(), |_, _| 1);
        assert_eq!(
            scaler.desired(&key()),
            None,
            "deleted versions are forgotten"
        );
    }

    #[tokio::test]
    async fn the_sampler_visits_only_versions_with_recent_demand() {
        use nimbus_gateway::{Endpoint, GateLimits, VersionGate};
        let mut scaler = Scaler::new(ScalingTimings::default());
        let s = spec(0, 3);
        let keys: Vec<VersionKey> = (0..3)
            .map(|i| ("default".into(), "hello".into(), format!("v{i}")))
            .collect();
        scaler.sync(keys.iter().map(|k| (k.clone(), &s)), |_, _| 0);
        let endpoint = Arc::new(Endpoint::new("a".into(), ([127, 0, 0, 1], 9).into()));
        let gates: Vec<_> = keys
            .iter()
            .map(|key| {
                let gate = VersionGate::new(
                    key.0.clone(),
                    key.1.clone(),
                    key.2.clone(),
                    Arc::new(|| {}),
                    scaler.demand_hook(key),
                );
                gate.update(vec![endpoint.clone()], GateLimits::default());
                scaler.attach_gate(key, &gate);
                gate
            })
            .collect();
        assert_eq!(scaler.warm.len(), 3, "new versions are sampled");
        scaler.sample_gates();
        assert!(scaler.versions.values().all(|v| v.sampled));
        scaler.sample_gates();
        assert!(scaler.warm.is_empty(), "idle and quiet: not visited");

        let permit = gates[1].admit().await.expect("a slot");
        scaler.sample_gates();
        assert_eq!(scaler.warm, [keys[1].clone()], "the gate reported in");
        assert!(scaler.versions[&keys[1]].window.last_nonzero().is_some());
        drop(permit);
        scaler.sample_gates();
        scaler.sample_gates();
        assert_eq!(
            scaler.warm,
            [keys[1].clone()],
            "visited until its window has been quiet for the stable window"
        );
    }

    #[test]
    fn wake_wants_enough_for_the_held_requests() {
        let mut scaler = Scaler::new(ScalingTimings::default());
        let s = spec(0, 3);
        scaler.sync([(key(), &s)].into_iter(), |_, _| 0);
        // Concurrency 80, target 56: four held requests fit one instance.
        let change = scaler.wake(&key(), 4).expect("woken");
        assert_eq!((change.from, change.to, change.reason), (0, 1, "activator"));
        assert_eq!(scaler.wake(&key(), 4), None, "already waking");
    }

    #[test]
    fn wake_counts() {
        let cases = [
            (1, 56.0, 10, 1),
            (20, 56.0, 10, 1),
            (100, 56.0, 10, 2),
            (5, 1.0, 10, 5),
            (5, 0.7, 10, 8),
            (50, 1.0, 3, 3),
            (0, 1.0, 3, 1),
        ];
        for (demand, target, max, want) in cases {
            assert_eq!(
                wake_count(demand, target, max),
                want,
                "{demand} at {target}, max {max}"
            );
        }
    }

    #[test]
    fn schedules_are_filtered_by_service() {
        let record = |id, service: &str| ScheduleRecord {
            id,
            namespace: "default".into(),
            service: service.into(),
            version: None,
            cron: "* * * * *".into(),
            min_instances: 2,
            max_instances: None,
            duration_secs: None,
            created_at: 0,
        };
        let records = vec![record(1, "hello"), record(2, "other")];
        let mine = schedules_of(&records, "default", "hello");
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].id, 1);
    }
}
