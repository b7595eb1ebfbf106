//! Which engine polls which source: rendezvous hashing over the live
//! engines decides who *should*, a lease in a key-value bucket decides who
//! *may*. This file is the pure decision; the cluster backend carries out
//! its steps against the bucket (create, compare-and-set on the revision,
//! delete) and reports what it saw back.
//!
//! Rules, per source:
//! - Its owner is the live engine with the highest rendezvous score: every
//!   engine computes the same owner from the same engine list, and when an
//!   engine joins or leaves only the sources it wins or held move.
//! - A lease that someone holds and has renewed within the TTL is left
//!   alone, even by the owner: the holder releases it when it sees it is no
//!   longer the owner (rebalance), or it expires (the holder died).
//! - The owner acquires a free or expired lease with compare-and-set on the
//!   revision it saw, so two engines can never both win it.
//! - The holder renews at half the TTL, and polls only while its last
//!   renewal is younger than the TTL minus a safety margin: a paused engine
//!   that wakes up after its lease expired does not fetch or publish until
//!   it has won the lease again (and its publishes are fenced by revision).
//!
//! Times are `tokio::time::Instant`s of this engine's monotonic clock: what
//! it saw, when it saw it. The bucket's own TTL (at least the lease's) is
//! what removes a dead holder's key; this view only needs to be no less
//! patient than that.

use std::collections::HashMap;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// A source's lease as this engine last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The engine holding it.
    pub holder: String,
    /// The bucket revision of the lease key (the fencing token).
    pub revision: u64,
    /// When this engine last saw the lease written (by its holder).
    pub seen_at: Instant,
}

/// What an engine should do about one source's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Take the lease: create it (`expected` None) or replace an expired one
    /// with compare-and-set on the revision seen.
    Acquire {
        /// The source.
        source: String,
        /// The revision to replace, if a key exists.
        expected: Option<u64>,
    },
    /// Extend the lease held (compare-and-set on its revision).
    Renew {
        /// The source.
        source: String,
        /// The revision held.
        revision: u64,
    },
    /// Give the lease up: another engine owns the source now.
    Release {
        /// The source.
        source: String,
        /// The revision held.
        revision: u64,
    },
}

/// The lease timing of a cluster (`[cluster] lease`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// A lease not renewed for this long is expired.
    pub ttl: Duration,
}

impl LeaseTiming {
    /// Renew once a lease is this old.
    pub fn renew_after(self) -> Duration {
        self.ttl / 2
    }

    /// Poll only while the last renewal is younger than this: the TTL minus
    /// a fifth of it, so the holder stops well before anyone may take over.
    pub fn pollable_for(self) -> Duration {
        self.ttl - self.ttl / 5
    }
}

/// The rendezvous score of `engine` for `source` (higher wins).
fn score(engine: &str, source: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(engine.as_bytes());
    h.update([0]);
    h.update(source.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// The live engine that should poll `source` (None without engines).
pub fn owner<'a>(source: &str, engines: &'a [String]) -> Option<&'a str> {
    engines
        .iter()
        .max_by_key(|e| (score(e, source), e.as_str()))
        .map(String::as_str)
}

/// Whether `me` may poll a source under `lease` at `now`.
pub fn pollable(me: &str, lease: Option<&Lease>, now: Instant, timing: LeaseTiming) -> bool {
    lease.is_some_and(|l| {
        l.holder == me && now.saturating_duration_since(l.seen_at) < timing.pollable_for()
    })
}

/// The steps engine `me` takes now, given the live `engines` (including
/// `me`), the configured `sources` and the leases as last seen.
pub fn plan(
    me: &str,
    engines: &[String],
    sources: &[String],
    leases: &HashMap<String, Lease>,
    now: Instant,
    timing: LeaseTiming,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for source in sources {
        let mine = owner(source, engines) == Some(me);
        match leases.get(source) {
            Some(l) if now.saturating_duration_since(l.seen_at) < timing.ttl => {
                if l.holder != me {
                    continue;
                }
                if !mine {
                    steps.push(Step::Release {
                        source: source.clone(),
                        revision: l.revision,
                    });
                } else if now.saturating_duration_since(l.seen_at) >= timing.renew_after() {
                    steps.push(Step::Renew {
                        source: source.clone(),
                        revision: l.revision,
                    });
                }
            }
            expired => {
                if mine {
                    steps.push(Step::Acquire {
                        source: source.clone(),
                        expected: expired.map(|l| l.revision),
                    });
                }
            }
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: LeaseTiming = LeaseTiming {
        ttl: Duration::from_secs(30),
    };

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i}")).collect()
    }

    /// Applies an engine's steps to the bucket as the backend would:
    /// compare-and-set on the revision, a new revision per write.
    struct Bucket {
        leases: HashMap<String, Lease>,
        revision: u64,
    }

    impl Bucket {
        fn new() -> Self {
            Self {
                leases: HashMap::new(),
                revision: 0,
            }
        }

        /// Returns how many writes were refused (lost compare-and-set).
        fn apply(&mut self, me: &str, steps: &[Step], now: Instant) -> usize {
            let mut refused = 0;
            for s in steps {
                match s {
                    Step::Acquire { source, expected } => {
                        let current = self.leases.get(source).map(|l| l.revision);
                        if current != *expected {
                            refused += 1;
                            continue;
                        }
                        self.revision += 1;
                        self.leases.insert(
                            source.clone(),
                            Lease {
                                holder: me.into(),
                                revision: self.revision,
                                seen_at: now,
                            },
                        );
                    }
                    Step::Renew { source, revision } => match self.leases.get_mut(source) {
                        Some(l) if l.revision == *revision && l.holder == me => {
                            self.revision += 1;
                            l.revision = self.revision;
                            l.seen_at = now;
                        }
                        _ => refused += 1,
                    },
                    Step::Release { source, revision } => {
                        if self.leases.get(source).map(|l| l.revision) == Some(*revision) {
                            self.leases.remove(source);
                        } else {
                            refused += 1;
                        }
                    }
                }
            }
            refused
        }

        fn held_by(&self, me: &str, now: Instant) -> usize {
            self.leases
                .values()
                .filter(|l| pollable(me, Some(l), now, TTL))
                .count()
        }
    }

    #[test]
    fn every_source_has_one_owner_and_a_joining_engine_moves_only_its_share() {
        let sources = names("src.", 3000);
        let three = names("engine-", 3);
        let four = names("engine-", 4);
        let mut per = HashMap::new();
        let mut moved = 0;
        for s in &sources {
            let a = owner(s, &three).expect("owner");
            let b = owner(s, &four).expect("owner");
            *per.entry(a).or_insert(0) += 1;
            if a != b {
                moved += 1;
                assert_eq!(b, "engine-3", "only moves to the new engine");
            }
        }
        // Roughly a third each, and about a quarter moves to the newcomer.
        assert!(per.values().all(|n| (800..1200).contains(n)), "{per:?}");
        assert!((600..900).contains(&moved), "{moved}");
        assert_eq!(owner("x", &[]), None);
    }

    #[tokio::test(start_paused = true)]
    async fn owners_acquire_renew_at_half_ttl_and_hold_exclusively() {
        let engines = names("e", 2);
        let sources = names("s.", 100);
        let mut bucket = Bucket::new();
        let t0 = Instant::now();
        for e in &engines {
            let steps = plan(e, &engines, &sources, &bucket.leases, t0, TTL);
            assert_eq!(bucket.apply(e, &steps, t0), 0);
        }
        let held: usize = engines.iter().map(|e| bucket.held_by(e, t0)).sum();
        assert_eq!(held, 100, "every source held by exactly one engine");
        // Before half the TTL nothing to do; after it, renewals.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(plan(
            "e0",
            &engines,
            &sources,
            &bucket.leases,
            Instant::now(),
            TTL
        )
        .is_empty());
        tokio::time::advance(Duration::from_secs(6)).await;
        let now = Instant::now();
        let steps = plan("e0", &engines, &sources, &bucket.leases, now, TTL);
        assert!(!steps.is_empty() && steps.iter().all(|s| matches!(s, Step::Renew { .. })));
        assert_eq!(bucket.apply("e0", &steps, now), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_engines_sources_are_taken_over_after_the_ttl_and_not_before() {
        let both = names("e", 2);
        let sources = names("s.", 50);
        let mut bucket = Bucket::new();
        let t0 = Instant::now();
        for e in &both {
            let steps = plan(e, &both, &sources, &bucket.leases, t0, TTL);
            bucket.apply(e, &steps, t0);
        }
        let e1_had = bucket.held_by("e1", t0);
        assert!(e1_had > 0);
        // e1 is killed: it stops renewing and leaves the live list.
        let alive = names("e", 1);
        let mut now = t0;
        while now.duration_since(t0) < TTL.ttl {
            tokio::time::advance(Duration::from_secs(5)).await;
            now = Instant::now();
            let steps = plan("e0", &alive, &sources, &bucket.leases, now, TTL);
            bucket.apply("e0", &steps, now);
            if now.duration_since(t0) < TTL.ttl {
                assert_eq!(
                    bucket.held_by("e0", now),
                    50 - e1_had,
                    "no takeover before the TTL"
                );
            }
        }
        // At the TTL every source is e0's.
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        let steps = plan("e0", &alive, &sources, &bucket.leases, now, TTL);
        assert_eq!(bucket.apply("e0", &steps, now), 0);
        assert_eq!(bucket.held_by("e0", now), 50);
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_engine_stops_polling_before_its_lease_can_be_taken() {
        let engines = names("e", 1);
        let sources = names("s.", 1);
        let mut bucket = Bucket::new();
        let t0 = Instant::now();
        let steps = plan("e0", &engines, &sources, &bucket.leases, t0, TTL);
        bucket.apply("e0", &steps, t0);
        let lease = bucket.leases.get("s.0").cloned();
        assert!(pollable("e0", lease.as_ref(), t0, TTL));
        // Paused (GC, SIGSTOP) past 80 % of the TTL: no more polls, although
        // nobody else may take the lease yet.
        tokio::time::advance(TTL.pollable_for()).await;
        assert!(!pollable("e0", lease.as_ref(), Instant::now(), TTL));
        // Meanwhile another engine took it over after the TTL: the woken
        // engine's renewal is refused by compare-and-set.
        tokio::time::advance(TTL.ttl).await;
        let now = Instant::now();
        let other = names("x", 1);
        let steps = plan("x0", &other, &sources, &bucket.leases, now, TTL);
        assert_eq!(bucket.apply("x0", &steps, now), 0);
        let stale = Step::Renew {
            source: "s.0".into(),
            revision: lease.map(|l| l.revision).unwrap_or_default(),
        };
        assert_eq!(bucket.apply("e0", &[stale], now), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_joining_engine_gets_its_share_after_the_holder_releases_it() {
        let one = names("e", 1);
        let two = names("e", 2);
        let sources = names("s.", 60);
        let mut bucket = Bucket::new();
        let t0 = Instant::now();
        let steps = plan("e0", &one, &sources, &bucket.leases, t0, TTL);
        bucket.apply("e0", &steps, t0);
        // e1 joins: it owns some sources but may not take held leases.
        let steps = plan("e1", &two, &sources, &bucket.leases, t0, TTL);
        assert!(steps.is_empty(), "{steps:?}");
        // e0 sees the new list and releases e1's share; e1 then acquires it.
        let steps = plan("e0", &two, &sources, &bucket.leases, t0, TTL);
        let released = steps
            .iter()
            .filter(|s| matches!(s, Step::Release { .. }))
            .count();
        assert!(released > 0);
        assert_eq!(bucket.apply("e0", &steps, t0), 0);
        let steps = plan("e1", &two, &sources, &bucket.leases, t0, TTL);
        assert_eq!(steps.len(), released);
        assert_eq!(bucket.apply("e1", &steps, t0), 0);
        assert_eq!(bucket.held_by("e0", t0) + bucket.held_by("e1", t0), 60);
    }
}
