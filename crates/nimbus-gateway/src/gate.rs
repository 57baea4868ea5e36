//! Admission to one version: a concurrency limit per instance, a FIFO queue for requests that find
//! every slot taken, the least-outstanding choice of instance, and the activator that holds
//! requests while the version has no ready instance at all (cold start).
//!
//! The reconciler keeps one [`VersionGate`] per version for the version's whole life and puts the
//! same `Arc` into every route table it builds, so queued requests, slot counts and statistics
//! survive table swaps. It calls [`VersionGate::update`] whenever the ready instances or the
//! limits change; the proxy calls [`VersionGate::admit`] once per request and keeps the returned
//! [`Permit`] until the response body (or upgraded tunnel) is done.
//!
//! ```text
//!  admit() ──▶ queue empty and an instance below `concurrency`? ──yes──▶ Permit (fast path)
//!                  │ no
//!                  ├─ no ready instance: call `on_cold` (the activator pokes the autoscaler)
//!                  ├─ queue at `queue_depth`: Err(QueueFull)                    → 503 queue_full
//!                  └─ wait in FIFO order ──▶ a slot frees (Permit dropped, update()) ──▶ Permit
//!                                        └──▶ `timeout` passes first: Err(Timeout) → 504 queue_timeout
//! ```
//!
//! Slots are counted by [`Endpoint::inflight`], which the permit holds through an
//! [`InflightGuard`], so the reconciler's drainer sees the same number the gate limits.
//!
//! Locking: one `std::sync::Mutex` per gate, taken once by `admit` and once when a permit is
//! dropped, never across an `.await`, and never while calling `on_cold` (`on_demand` is called
//! under it, so it must only record the gate, not call back into it). Nothing in the critical
//! sections panics, so a poisoned lock (a panic elsewhere) is recovered rather than propagated.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::debug;

use crate::balance::Algorithm;
use crate::chooser::{Candidate, Chooser, PickHint};
use crate::route::{Endpoint, InflightGuard};

/// Highest per-instance concurrency; [`VersionGate::update`] clamps into `1..=MAX_CONCURRENCY`.
pub const MAX_CONCURRENCY: u32 = 1000;
/// Longest request timeout the gate honours (longer ones are cut to this).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// Most cold-start wait times kept between two [`VersionGate::take_cold_waits`] calls; later ones
/// are dropped so an unread gate cannot grow without bound.
pub const MAX_COLD_WAITS: usize = 1024;

/// The limits of one version, set by the reconciler with [`VersionGate::update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateLimits {
    /// Requests one instance serves at once, `1..=1000` (out-of-range values are clamped).
    pub concurrency: u32,
    /// Requests that may wait for a slot; one more gets `QueueFull`. The caller computes it
    /// (the default is 10 × total capacity, with a floor for versions at zero instances).
    pub queue_depth: usize,
    /// The whole request budget: time waiting in the queue plus time until the instance's
    /// response headers.
    pub timeout: Duration,
}

/// A snapshot of one gate, for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Instances requests may be sent to now.
    pub ready_endpoints: usize,
    /// Permits held now (requests admitted and not finished), including those on instances that
    /// have since been removed and are draining.
    pub inflight: usize,
    /// Requests waiting for a slot now.
    pub queued: usize,
    /// `ready_endpoints × concurrency`.
    pub capacity: usize,
    /// Requests turned away because the queue was full, since the gate was created.
    pub rejected_queue_full: u64,
    /// Requests that waited past their timeout without a slot, since the gate was created.
    pub timed_out: u64,
    /// Requests that arrived while there was no ready instance and were held.
    pub cold_holds: u64,
}

/// Why [`VersionGate::admit`] gave no permit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// Every slot is taken and `depth` requests are already waiting.
    #[error("all instances are busy and {depth} requests are already queued")]
    QueueFull { depth: usize },
    /// No slot freed up within the timeout. `cold`: the request arrived while no instance was
    /// ready (it waited for a cold start that did not finish in time).
    #[error("no {} within {}s", if *cold { "instance became ready" } else { "instance slot freed up" }, waited.as_secs_f64())]
    Timeout { waited: Duration, cold: bool },
    /// The version has no ready instance and its instances keep failing to start (see
    /// [`VersionGate::set_failure`]): a held request would only wait out its timeout.
    #[error("its instances keep failing: {reason}")]
    Failing { reason: Arc<str> },
}

/// Admission to one version; see the module docs. Create it with [`VersionGate::new`].
pub struct VersionGate {
    shared: Arc<Shared>,
}

/// Holds one slot on one instance until dropped; the proxy keeps it for the whole response body
/// or upgraded tunnel. Dropping it frees the slot and, under the same lock, hands it to the next
/// waiting request (FIFO), so a queued request never waits for a timer.
pub struct Permit {
    /// `None` once the slot was given back under the lock (a grant nobody received).
    shared: Option<Arc<Shared>>,
    guard: InflightGuard,
    deadline: Instant,
    /// The version had another ready instance when this was granted (a retry may go there).
    alternatives: bool,
}

/// One reading of a gate's demand for the autoscaler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemandSample {
    /// Time-weighted average of in-flight plus queued requests over the interval.
    pub average: f64,
    /// [`VersionGate::demand_changes`] at the reading.
    pub changes: u64,
    /// Nothing was held at the end of the interval.
    pub idle: bool,
}

struct Shared {
    namespace: String,
    service: String,
    version: String,
    /// The activator hook: called (outside the lock) for each request that finds no instance.
    on_cold: Arc<dyn Fn() + Send + Sync>,
    /// Called (under the lock) at the first change of demand after a sample found the gate
    /// idle, so the autoscaler's sampler visits only gates that report in.
    on_demand: Arc<dyn Fn() + Send + Sync>,
    /// Bumped (under the lock) whenever demand may change, so the autoscaler's sampler can
    /// pass over an idle gate without taking its lock.
    demand_changes: AtomicU64,
    state: Mutex<State>,
}

struct State {
    endpoints: Vec<Arc<Endpoint>>,
    limits: GateLimits,
    waiters: VecDeque<Waiter>,
    /// The service's balancing algorithm (`None`: least outstanding) and its state.
    algorithm: Option<Algorithm>,
    chooser: Chooser,
    next_waiter: u64,
    /// Permits given out and not yet dropped.
    permits: usize,
    cold_waits: Vec<Duration>,
    rejected_queue_full: u64,
    timed_out: u64,
    cold_holds: u64,
    /// Demand (permits + waiters) integrated over time since `demand_since`, in request-seconds,
    /// so the autoscaler sees short requests that a point sample would miss.
    demand_area: f64,
    demand_since: Instant,
    demand_changed: Instant,
    /// `on_demand` was called since a sample last found the gate idle.
    demand_reported: bool,
    /// Why the version's instances keep failing to start, while they do.
    failure: Option<Arc<str>>,
}

/// One queued request. Each removes itself from the queue when it times out or its request goes
/// away, so every entry has a live receiver (dispatch still skips closed ones, to be safe).
struct Waiter {
    id: u64,
    tx: oneshot::Sender<Permit>,
    arrived: Instant,
    deadline: Instant,
    /// Arrived while there was no ready instance: its wait is a cold-start wait.
    cold: bool,
    /// Its request's hash key and draws, so a queued request is balanced like any other.
    hint: PickHint,
}

/// What one request asks of the instance choice.
#[derive(Debug, Clone, Default)]
pub struct Pick {
    pub hint: PickHint,
    /// Not this instance if another can take the request (a retry after it failed).
    pub avoid: Option<Arc<Endpoint>>,
}

/// The instance for the next request: among those with fewer than `limit` requests in flight,
/// the one with the fewest; ties go to the first at or after `start`, wrapping around (callers
/// pass one past the last pick, which makes ties round-robin). `None` when every instance is at
/// the limit or there is none.
pub fn pick(inflight: &[usize], limit: usize, start: usize) -> Option<usize> {
    pick_by(inflight.len(), limit, start, |i| inflight[i])
}

/// [`pick`] over `len` instances whose loads `load(i)` reads, so the gate needs no scratch vector.
fn pick_by(len: usize, limit: usize, start: usize, load: impl Fn(usize) -> usize) -> Option<usize> {
    if len == 0 {
        return None;
    }
    let start = start % len;
    let mut best: Option<(usize, usize)> = None;
    for k in 0..len {
        let i = (start + k) % len;
        let n = load(i);
        if n < limit && best.is_none_or(|(_, least)| n < least) {
            best = Some((i, n));
            if n == 0 {
                break; // nothing beats an idle instance
            }
        }
    }
    best.map(|(i, _)| i)
}

// === impl GateLimits ===

impl Default for GateLimits {
    /// The model's defaults for one instance: concurrency 80, queue 10 × 80, timeout 300 s.
    fn default() -> Self {
        let concurrency = nimbus_model::spec::DEFAULT_CONCURRENCY;
        Self {
            concurrency,
            queue_depth: 10 * concurrency as usize,
            timeout: Duration::from_secs(nimbus_model::spec::DEFAULT_TIMEOUT_SECS),
        }
    }
}

// === impl VersionGate ===

impl VersionGate {
    /// A gate with no ready instance and [`GateLimits::default`] until the first
    /// [`update`](Self::update). `on_cold` is called for every request that finds no ready
    /// instance; it must be cheap and not block (the callee dedups, e.g. with a `Notify`).
    /// `on_demand` is called when demand first changes after a [`sample_demand`] found the gate
    /// idle (and after creation): at most once per sample, under the gate's lock, so it must
    /// only note the gate somewhere (e.g. push its key to a list).
    ///
    /// [`sample_demand`]: Self::sample_demand
    pub fn new(
        namespace: String,
        service: String,
        version: String,
        on_cold: Arc<dyn Fn() + Send + Sync>,
        on_demand: Arc<dyn Fn() + Send + Sync>,
    ) -> Arc<Self> {
        Arc::new(Self {
            shared: Arc::new(Shared {
                namespace,
                service,
                version,
                on_cold,
                on_demand,
                state: Mutex::new(State {
                    endpoints: Vec::new(),
                    limits: GateLimits::default(),
                    waiters: VecDeque::new(),
                    algorithm: None,
                    chooser: Chooser::default(),
                    next_waiter: 0,
                    permits: 0,
                    cold_waits: Vec::new(),
                    rejected_queue_full: 0,
                    timed_out: 0,
                    cold_holds: 0,
                    demand_area: 0.0,
                    demand_since: Instant::now(),
                    demand_changed: Instant::now(),
                    demand_reported: false,
                    failure: None,
                }),
                demand_changes: AtomicU64::new(0),
            }),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.shared.namespace
    }

    pub fn service(&self) -> &str {
        &self.shared.service
    }

    pub fn version(&self) -> &str {
        &self.shared.version
    }

    /// Sets the ready instances and the limits. Instances left out get no new requests (their
    /// in-flight ones finish normally and still count in [`Endpoint::inflight`]); if slots
    /// appear, queued requests are released at once, in FIFO order. Requests already queued
    /// keep the deadline they arrived with.
    pub fn update(&self, endpoints: Vec<Arc<Endpoint>>, limits: GateLimits) {
        let limits = GateLimits {
            concurrency: limits.concurrency.clamp(1, MAX_CONCURRENCY),
            queue_depth: limits.queue_depth,
            timeout: limits.timeout.min(MAX_TIMEOUT),
        };
        let mut state = self.shared.lock_changing();
        let same = state.endpoints.len() == endpoints.len()
            && state
                .endpoints
                .iter()
                .zip(&endpoints)
                .all(|(a, b)| Arc::ptr_eq(a, b));
        let old = std::mem::replace(&mut state.endpoints, endpoints);
        if !same {
            let state = &mut *state;
            let ids: Vec<&str> = state
                .endpoints
                .iter()
                .map(|e| e.instance.as_str())
                .collect();
            state.chooser.set_instances(&ids);
        }
        state.limits = limits;
        state.dispatch(&self.shared);
        drop(state);
        drop(old);
    }

    /// Marks the version as failing (its instances keep crashing or never become ready), or
    /// not. While it fails and has no ready instance, requests are refused at once with
    /// [`AdmitError::Failing`] instead of being held for an instance that will not come, and
    /// the requests already held are released with it. `on_cold` is still called, so the
    /// activator keeps retrying on its backoff.
    pub fn set_failure(&self, failure: Option<&str>) {
        let mut state = self.shared.lock();
        if state.failure.as_deref() == failure {
            return;
        }
        state.failure = failure.map(Arc::from);
        let held = |state: &State| {
            state.failure.is_some() && state.endpoints.is_empty() && !state.waiters.is_empty()
        };
        if !held(&state) {
            return;
        }
        drop(state);
        let mut state = self.shared.lock_changing(); // the queue shrinks: a change of demand
        if held(&state) {
            // Dropping a waiter's sender wakes its request, which then finds the failure.
            let released = std::mem::take(&mut state.waiters);
            drop(state);
            drop(released);
        }
    }

    /// Admits one request: a slot on the least-outstanding instance that has a free one (ties
    /// rotate round-robin), else a place in the FIFO queue until a slot frees up. With no ready
    /// instance at all, `on_cold` is called and the request is held until one appears.
    ///
    /// # Errors
    /// [`AdmitError::QueueFull`] when `queue_depth` requests already wait;
    /// [`AdmitError::Timeout`] when no slot came within the version's timeout;
    /// [`AdmitError::Failing`] when the version has no ready instance and is failing.
    ///
    /// Cancel-safe: dropping the future gives up the queue place (or a slot granted meanwhile).
    pub async fn admit(&self) -> Result<Permit, AdmitError> {
        self.admit_with(Pick::default()).await
    }

    /// Sets the balancing algorithm (`None`: least outstanding). A change restarts its state.
    pub fn set_algorithm(&self, algorithm: Option<&Algorithm>) {
        let mut state = self.shared.lock();
        if state.algorithm.as_ref() == algorithm {
            return;
        }
        let state = &mut *state;
        state.algorithm = algorithm.cloned();
        state.chooser = Chooser::new(algorithm);
        let ids: Vec<&str> = state
            .endpoints
            .iter()
            .map(|e| e.instance.as_str())
            .collect();
        state.chooser.set_instances(&ids);
    }

    /// True when a ready instance other than `endpoint` exists (a retry has somewhere to go).
    pub fn has_other(&self, endpoint: &Arc<Endpoint>) -> bool {
        let state = self.shared.lock();
        state.endpoints.iter().any(|e| !Arc::ptr_eq(e, endpoint))
    }

    /// [`admit`](Self::admit) with the request's balancing inputs: its hash key and random
    /// draws, and an instance to avoid (a retry). A queued request keeps its hash key but not
    /// the avoidance, so it never blocks the queue waiting for one particular slot.
    pub async fn admit_with(&self, pick: Pick) -> Result<Permit, AdmitError> {
        let arrived = Instant::now();
        let (rx, id, cold, deadline) = {
            let mut state = self.shared.lock_changing();
            let deadline = arrived + state.limits.timeout;
            // FIFO: a newcomer takes a free slot only when nobody is waiting for one.
            if state.waiters.is_empty() {
                if let Some(permit) = state.grant(&self.shared, deadline, &pick) {
                    return Ok(permit);
                }
            }
            let cold = state.endpoints.is_empty();
            if let (true, Some(reason)) = (cold, state.failure.clone()) {
                drop(state);
                (self.shared.on_cold)();
                return Err(AdmitError::Failing { reason });
            }
            if state.waiters.len() >= state.limits.queue_depth {
                state.rejected_queue_full += 1;
                let depth = state.waiters.len();
                drop(state);
                if cold {
                    (self.shared.on_cold)();
                }
                debug!(depth, "Queue full; request rejected.");
                return Err(AdmitError::QueueFull { depth });
            }
            let (tx, rx) = oneshot::channel();
            let id = state.next_waiter;
            state.next_waiter += 1;
            state.waiters.push_back(Waiter {
                id,
                tx,
                arrived,
                deadline,
                cold,
                hint: pick.hint,
            });
            if cold {
                state.cold_holds += 1;
            }
            (rx, id, cold, deadline)
        };
        // From here on, dropping the future (or a panicking hook) gives the place back.
        let mut queued = Queued {
            shared: &self.shared,
            id,
            rx,
            done: false,
        };
        if cold {
            debug!("No ready instance; holding the request.");
            (self.shared.on_cold)();
        } else {
            debug!("All instances busy; request queued.");
        }
        let received = tokio::time::timeout_at(deadline, &mut queued.rx).await;
        if let Ok(Ok(permit)) = received {
            queued.done = true;
            return Ok(permit);
        }
        // Timed out, or released because the version is failing: leave the queue, unless a
        // permit was granted in the meantime, which is then used rather than wasted.
        queued
            .leave()
            .ok_or_else(|| match self.shared.lock().failure.clone() {
                Some(reason) => AdmitError::Failing { reason },
                None => AdmitError::Timeout {
                    waited: arrived.elapsed(),
                    cold,
                },
            })
    }

    /// A snapshot of counts and counters.
    pub fn stats(&self) -> GateStats {
        let state = self.shared.lock();
        GateStats {
            ready_endpoints: state.endpoints.len(),
            inflight: state.permits,
            queued: state.waiters.len(),
            capacity: state.endpoints.len() * state.limits.concurrency as usize,
            rejected_queue_full: state.rejected_queue_full,
            timed_out: state.timed_out,
            cold_holds: state.cold_holds,
        }
    }

    /// Demand for the autoscaler: requests in flight plus requests queued, right now.
    pub fn demand(&self) -> usize {
        let state = self.shared.lock();
        state.permits + state.waiters.len()
    }

    /// A marker that moves whenever the gate's demand may have changed. Equal markers around an
    /// interval in which a [`DemandSample`] found the gate idle mean it stayed idle.
    pub fn demand_changes(&self) -> u64 {
        self.shared.demand_changes.load(AtomicOrdering::Acquire)
    }

    /// The time-weighted average demand (in flight plus queued) since the previous call, or since
    /// the gate was created, and no longer than since `not_before` (the sampler's previous
    /// pass, when it skipped this gate as idle since); with the change marker and whether
    /// nothing is held now. Unlike [`demand`](Self::demand), a 1 ms request between two samples
    /// still counts (as 0.001 request-seconds spread over the interval).
    pub fn sample_demand(&self, not_before: Option<Instant>) -> DemandSample {
        let mut state = self.shared.lock();
        state.account();
        let changes = self.shared.demand_changes.load(AtomicOrdering::Acquire);
        if let Some(not_before) = not_before {
            state.demand_since = state.demand_since.max(not_before).min(state.demand_changed);
        }
        let held = state.permits + state.waiters.len();
        let elapsed = state.demand_changed.duration_since(state.demand_since);
        let average = if elapsed.is_zero() {
            (state.permits + state.waiters.len()) as f64
        } else {
            state.demand_area / elapsed.as_secs_f64()
        };
        state.demand_area = 0.0;
        state.demand_since = state.demand_changed;
        if held == 0 {
            state.demand_reported = false;
        }
        DemandSample {
            average,
            changes,
            idle: held == 0,
        }
    }

    /// How long each request that arrived while there was no ready instance waited before it
    /// got a slot, since the last call (at most [`MAX_COLD_WAITS`]). Requests that timed out
    /// instead are counted in [`GateStats::timed_out`], not listed here.
    pub fn take_cold_waits(&self) -> Vec<Duration> {
        std::mem::take(&mut self.shared.lock().cold_waits)
    }

    /// The current limits (after clamping).
    pub fn limits(&self) -> GateLimits {
        self.shared.lock().limits
    }
}

impl std::fmt::Debug for VersionGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionGate")
            .field("namespace", &self.shared.namespace)
            .field("service", &self.shared.service)
            .field("version", &self.shared.version)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock, for a change of demand: the time-weighted area is brought up to now first.
    fn lock_changing(&self) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        self.demand_changes.fetch_add(1, AtomicOrdering::Release);
        state.account();
        if !state.demand_reported {
            state.demand_reported = true;
            (self.on_demand)();
        }
        state
    }
}

// === impl State ===

impl State {
    /// Adds the demand held since the last change to the integral; call before every change
    /// of `permits` or `waiters` (each locked section calls it once at the start).
    fn account(&mut self) {
        let now = Instant::now();
        let held = (self.permits + self.waiters.len()) as f64;
        self.demand_area += held * now.duration_since(self.demand_changed).as_secs_f64();
        self.demand_changed = now;
    }

    /// A slot on the instance the chooser picks among those below the limit and not ejected
    /// (nor avoided, nor retired), if any. With every instance ejected, ejection is ignored;
    /// retirement never is.
    fn grant(&mut self, shared: &Arc<Shared>, deadline: Instant, pick: &Pick) -> Option<Permit> {
        let endpoints = &self.endpoints;
        let limit = self.limits.concurrency as usize;
        let avoid = pick.avoid.as_ref();
        let candidate = |i: usize, honour_ejection: bool| {
            let endpoint: &Arc<Endpoint> = &endpoints[i];
            let load = endpoint.inflight();
            let ejected = honour_ejection && endpoint.is_ejected();
            let avoided = avoid.is_some_and(|a| Arc::ptr_eq(a, endpoint));
            let usable = load < limit && !endpoint.is_retired() && !ejected && !avoided;
            Candidate {
                load,
                usable,
                weight: endpoint.weight(),
            }
        };
        let len = endpoints.len();
        let i = match self.chooser.pick(len, pick.hint, |i| candidate(i, true)) {
            Some(i) => i,
            None if len > 0 && endpoints.iter().all(|e| e.is_ejected()) => {
                self.chooser.pick(len, pick.hint, |i| candidate(i, false))?
            }
            None => return None,
        };
        let guard = endpoints[i].track();
        self.permits += 1;
        Some(Permit {
            shared: Some(Arc::clone(shared)),
            guard,
            deadline,
            alternatives: len > 1,
        })
    }

    /// Gives free slots to queued requests, oldest first, until either runs out.
    fn dispatch(&mut self, shared: &Arc<Shared>) {
        while let Some(front) = self.waiters.front() {
            if front.tx.is_closed() {
                self.waiters.pop_front();
                continue;
            }
            let deadline = front.deadline;
            let pick = Pick {
                hint: front.hint,
                avoid: None,
            };
            let Some(permit) = self.grant(shared, deadline, &pick) else {
                return;
            };
            let Some(waiter) = self.waiters.pop_front() else {
                return;
            };
            match waiter.tx.send(permit) {
                Ok(()) => {
                    if waiter.cold && self.cold_waits.len() < MAX_COLD_WAITS {
                        self.cold_waits.push(waiter.arrived.elapsed());
                    }
                }
                // The request went away after the check above: take the slot back here (the
                // permit's own drop would lock again) and offer it to the next one.
                Err(mut permit) => {
                    permit.shared = None;
                    self.permits -= 1;
                }
            }
        }
    }
}

/// A queue place owned by one `admit` call; leaving (timeout or cancellation) removes it.
struct Queued<'a> {
    shared: &'a Arc<Shared>,
    id: u64,
    rx: oneshot::Receiver<Permit>,
    /// Set once the request got its permit or left the queue.
    done: bool,
}

impl Queued<'_> {
    /// Leaves the queue after a timeout. If the request was granted a slot just before, returns
    /// that permit instead.
    fn leave(&mut self) -> Option<Permit> {
        self.done = true;
        {
            let mut state = self.shared.lock_changing();
            let before = state.waiters.len();
            let id = self.id;
            state.waiters.retain(|w| w.id != id);
            if state.waiters.len() < before {
                state.timed_out += 1;
                return None;
            }
        }
        // Not queued any more, so a dispatch popped it and sent (under the lock) a permit.
        self.rx.try_recv().ok()
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        {
            let mut state = self.shared.lock_changing();
            let id = self.id;
            state.waiters.retain(|w| w.id != id);
        }
        // A permit granted just before the request went away: dropping it (outside the lock)
        // frees the slot for the next waiter.
        drop(self.rx.try_recv());
    }
}

// === impl Permit ===

impl Permit {
    /// The instance this request goes to.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        self.guard.endpoint()
    }

    /// When the request's time runs out: arrival plus the version's timeout. Time spent queued
    /// counts, so the upstream gets what is left.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// True when the version had another ready instance at admission.
    pub fn has_alternatives(&self) -> bool {
        self.alternatives
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(shared) = self.shared.take() else {
            return; // given back under the lock already; the guard only decrements
        };
        let mut state = shared.lock_changing();
        state.permits = state.permits.saturating_sub(1);
        self.guard.release();
        if !state.waiters.is_empty() {
            state.dispatch(&shared);
        }
    }
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("instance", &self.endpoint().instance)
            .field("deadline", &self.deadline)
            .finish()
    }
}

#[cfg(test)]
mod tests;
