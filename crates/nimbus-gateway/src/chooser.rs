//! The gate's instance choice: a service's load-balancing algorithm ([`crate::balance`]), run
//! only over the instances that can take the request now (a free concurrency slot, not ejected,
//! not the instance a retry is moving away from).
//!
//! [`Chooser`] keeps the little state an algorithm needs between picks (the round-robin turn,
//! the smooth-weighted scores, the hash ring of the current instances) and lives inside the
//! version's gate, under its lock. It never reads a clock or an RNG: the request's hash key and
//! random draws come in a [`PickHint`], so every choice is a pure function of its inputs.

use crate::balance::{power_of_two, Algorithm, HashOn, HashRing, SmoothWeighted};

/// What one request brings to the choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PickHint {
    /// The request's key hash for `hash:*` balancing; `None` when it lacks the key (no such
    /// header or cookie), and then the least-outstanding instance is taken.
    pub hash: Option<u64>,
    /// Random bits for `least-request` (two draws, one per half).
    pub draws: u64,
}

/// A balancing algorithm with its state; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct Chooser {
    kind: Kind,
    /// Where the next least-outstanding scan (or round-robin turn) starts, so ties rotate.
    cursor: usize,
    /// Reused buffers, so a pick allocates nothing once warm.
    scratch: Vec<usize>,
    loads: Vec<usize>,
    weights: Vec<u32>,
}

#[derive(Debug, Clone, Default)]
enum Kind {
    #[default]
    LeastOutstanding,
    RoundRobin,
    Weighted(SmoothWeighted),
    LeastRequest,
    Hash(HashOn, HashRing),
}

/// One instance as the chooser sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Requests in flight to it now.
    pub load: usize,
    /// It may take this request (free slot, not ejected, not avoided).
    pub usable: bool,
    /// Its weight for `weighted` (at least 1).
    pub weight: u32,
}

// === impl Chooser ===

impl Chooser {
    /// A chooser for `algorithm`; `None` is the default, least outstanding requests.
    pub fn new(algorithm: Option<&Algorithm>) -> Self {
        let kind = match algorithm {
            None => Kind::LeastOutstanding,
            Some(Algorithm::RoundRobin) => Kind::RoundRobin,
            Some(Algorithm::Weighted) => Kind::Weighted(SmoothWeighted::new()),
            Some(Algorithm::LeastRequest) => Kind::LeastRequest,
            Some(Algorithm::Hash(on)) => Kind::Hash(on.clone(), HashRing::default()),
        };
        Self {
            kind,
            ..Self::default()
        }
    }

    /// What the request must carry for a hash pick, if this is a hash chooser.
    pub fn hash_on(&self) -> Option<&HashOn> {
        match &self.kind {
            Kind::Hash(on, _) => Some(on),
            _ => None,
        }
    }

    /// True when picks use [`PickHint::draws`].
    pub fn wants_draws(&self) -> bool {
        matches!(self.kind, Kind::LeastRequest)
    }

    /// Tells the chooser the instance ids, in gate order, whenever they change (the hash ring
    /// is built over them, so a key keeps its instance while others come and go).
    pub fn set_instances<S: AsRef<str>>(&mut self, ids: &[S]) {
        if let Kind::Hash(_, ring) = &mut self.kind {
            *ring = HashRing::new(ids);
        }
    }

    /// The instance for the next request among `len` candidates described by `candidate(i)`;
    /// `None` when none is usable.
    pub fn pick(
        &mut self,
        len: usize,
        hint: PickHint,
        candidate: impl Fn(usize) -> Candidate,
    ) -> Option<usize> {
        if len == 0 {
            return None;
        }
        let chosen = match &mut self.kind {
            Kind::LeastOutstanding => least_outstanding(len, self.cursor, &candidate),
            Kind::RoundRobin => {
                let start = self.cursor % len;
                (0..len)
                    .map(|k| (start + k) % len)
                    .find(|&i| candidate(i).usable)
            }
            Kind::Weighted(smooth) => {
                self.weights.clear();
                self.weights.extend((0..len).map(|i| {
                    let c = candidate(i);
                    if c.usable {
                        c.weight.max(1)
                    } else {
                        0
                    }
                }));
                smooth.pick(&self.weights)
            }
            Kind::LeastRequest => {
                self.scratch.clear();
                self.loads.clear();
                for i in 0..len {
                    let c = candidate(i);
                    if c.usable {
                        self.scratch.push(i);
                        self.loads.push(c.load);
                    }
                }
                let first = hint.draws as u32;
                let second = (hint.draws >> 32) as u32;
                power_of_two(&self.loads, first, second).map(|k| self.scratch[k])
            }
            Kind::Hash(_, ring) => {
                let owner = hint
                    .hash
                    .and_then(|h| ring.pick(h))
                    .filter(|&i| i < len && candidate(i).usable);
                // The key's instance is full (or the key is missing): least outstanding, so the
                // request is not refused while others have room.
                owner.or_else(|| least_outstanding(len, self.cursor, &candidate))
            }
        };
        if let Some(i) = chosen {
            self.cursor = i + 1;
        }
        chosen
    }
}

/// Among usable candidates, the one with the fewest in flight; ties go to the first at or after
/// `start`, wrapping around.
fn least_outstanding(
    len: usize,
    start: usize,
    candidate: &impl Fn(usize) -> Candidate,
) -> Option<usize> {
    let start = start % len;
    let mut best: Option<(usize, usize)> = None;
    for k in 0..len {
        let i = (start + k) % len;
        let c = candidate(i);
        if c.usable && best.is_none_or(|(_, least)| c.load < least) {
            best = Some((i, c.load));
            if c.load == 0 {
                break; // nothing beats an idle instance
            }
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests;
