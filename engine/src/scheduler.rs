//! When each source is polled next: tier/interval/cron cadence, jitter,
//! upstream hints (`<ttl>`, Cache-Control/Expires, Retry-After) and capped
//! exponential backoff — plus the due-queue the runtime's one loop sleeps on.
//!
//! [`BackoffPolicy`] is the one backoff rule of the engine: the failure
//! backoff of polls, the upstream reconnect of streaming firehoses and the
//! store retry of upstream batches all use it, each with its own numbers.
//!
//! One timer for all sources: a binary heap of (due, source) entries; the loop
//! sleeps until the earliest, so thousands of idle sources cost nothing.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::config::Cadence;

/// Longest a source ever waits because of failures (it never stops for good).
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Upstream caching hints are honoured up to this long.
pub const MAX_HINT: Duration = Duration::from_secs(24 * 3600);
/// New sources get their first poll within this window (spread, not at once).
pub const FIRST_POLL_SPREAD: Duration = Duration::from_secs(3);

/// Capped exponential backoff: retry `attempt` (0 = the first) waits
/// `initial × factor^attempt`, capped at `max`, then scaled by [`Jitter`].
/// Pure; [`Backoff`] keeps the attempt count of a retry loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// The first delay.
    pub initial: Duration,
    /// No delay is longer than this before jitter.
    pub max: Duration,
    /// Growth per attempt (2 doubles).
    pub factor: u32,
    /// Spreads retries that fail together, so they do not retry together.
    pub jitter: Jitter,
}

/// A random multiplier in `[low, low + width]` applied to a capped delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    /// The smallest multiplier.
    pub low: f64,
    /// How far above `low` the multiplier may go.
    pub width: f64,
}

impl Jitter {
    /// No jitter: the delay as computed (cron times, the store retry).
    pub const NONE: Jitter = Jitter {
        low: 1.0,
        width: 0.0,
    };
    /// ±10 %: sources of one tier drift apart instead of polling in step.
    pub const TEN_PERCENT: Jitter = Jitter {
        low: 0.9,
        width: 0.2,
    };
    /// "Equal jitter": somewhere in the upper half, so reconnects spread out
    /// but none comes sooner than half the delay.
    pub const EQUAL: Jitter = Jitter {
        low: 0.5,
        width: 0.5,
    };

    /// `d` scaled by this jitter; `rand` is a number in [0, 1).
    pub fn apply(self, d: Duration, rand: f64) -> Duration {
        if self == Self::NONE {
            return d;
        }
        let factor = self.low + self.width * rand.clamp(0.0, 1.0);
        // Out-of-range results (negative, overflowing) keep the delay unjittered
        // rather than panic.
        Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(d)
    }
}

impl BackoffPolicy {
    /// The delay before retry `attempt` (0 = the first); `rand` is a number
    /// in [0, 1) (random in production, fixed in tests).
    pub fn delay(&self, attempt: u32, rand: f64) -> Duration {
        let grown = self
            .initial
            .saturating_mul(self.factor.saturating_pow(attempt))
            .min(self.max);
        self.jitter.apply(grown, rand)
    }
}

/// A retry loop's place in its [`BackoffPolicy`]: each [`Backoff::next_delay`] is
/// one attempt later, [`Backoff::reset`] starts over after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
}

impl Backoff {
    /// A loop that has not failed yet.
    pub fn new(policy: BackoffPolicy) -> Self {
        Self { policy, attempt: 0 }
    }

    /// The delay before the next attempt, with random jitter.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.policy.delay(self.attempt, rand::random::<f64>());
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Changes the first delay, at most the cap (an SSE upstream's `retry:`).
    pub fn set_initial(&mut self, initial: Duration) {
        self.policy.initial = initial.min(self.policy.max);
    }
}

/// The failure backoff of a polled source: its cadence doubling per
/// consecutive failure, capped at `max(base, MAX_BACKOFF)` (a source slower
/// than the cap keeps its own interval), ±10 % jitter on fixed intervals
/// and none on cron (it fires at its wall-clock times). Attempt 0 is the
/// plain jittered cadence.
pub fn poll_backoff(cadence: &Cadence, now: DateTime<Utc>) -> BackoffPolicy {
    let base = base_delay(cadence, now);
    BackoffPolicy {
        initial: base,
        max: base.max(MAX_BACKOFF),
        factor: 2,
        jitter: match cadence {
            Cadence::Cron(_) => Jitter::NONE,
            Cadence::Every(_) => Jitter::TEN_PERCENT,
        },
    }
}

/// How a poll ended, as far as timing is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollTiming {
    /// `false` for a failed poll.
    pub ok: bool,
    /// Consecutive failures including this one (0 after a success).
    pub consecutive_failures: u32,
    /// Feed `<ttl>`: no sooner than this.
    pub ttl: Option<Duration>,
    /// Cache-Control / Expires: no sooner than this.
    pub cache: Option<Duration>,
    /// 429/503 Retry-After: no sooner than this.
    pub retry_after: Option<Duration>,
}

/// The base interval of a cadence at `now` (for cron: time to the next fire).
pub fn base_delay(cadence: &Cadence, now: DateTime<Utc>) -> Duration {
    match cadence {
        Cadence::Every(d) => *d,
        Cadence::Cron(s) => s
            .after(&now)
            .next()
            .and_then(|t| (t - now).to_std().ok())
            .unwrap_or(MAX_BACKOFF),
    }
}

/// The delay until the next poll after a poll that ended at `now`.
///
/// - success: the cadence, but never sooner than ttl / cache hint / Retry-After
///   (each capped at [`MAX_HINT`]), with ±10 % jitter on fixed intervals so
///   sources of one tier drift apart;
/// - failure: `base × 2^(failures-1)`, capped at `max(base, MAX_BACKOFF)`,
///   jittered, and never sooner than Retry-After. A success resets it.
///
/// `jitter` is a number in [0, 1) (random in production, fixed in tests).
pub fn next_delay(cadence: &Cadence, now: DateTime<Utc>, t: &PollTiming, jitter: f64) -> Duration {
    let floor = [
        t.retry_after,
        if t.ok { t.ttl } else { None },
        if t.ok { t.cache } else { None },
    ]
    .into_iter()
    .flatten()
    .map(|d| d.min(MAX_HINT))
    .max()
    .unwrap_or_default();
    let attempt = if t.ok {
        0
    } else {
        t.consecutive_failures.saturating_sub(1)
    };
    let d = poll_backoff(cadence, now).delay(attempt, jitter);
    d.max(floor).max(Duration::from_millis(100))
}

/// The due-queue: which source is polled next. Entries carry a generation so a
/// source that was rescheduled or removed leaves only a stale entry behind,
/// skipped when popped (no O(n) heap removal).
#[derive(Debug, Default)]
pub struct DueQueue {
    heap: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    /// Current generation per slot; an entry whose generation differs is stale.
    generation: HashMap<usize, u64>,
    next_gen: u64,
}

impl DueQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `slot` at `at`, replacing any earlier schedule of it.
    pub fn schedule(&mut self, slot: usize, at: Instant) {
        self.next_gen += 1;
        self.generation.insert(slot, self.next_gen);
        self.heap.push(Reverse((at, self.next_gen, slot)));
    }

    /// Forgets `slot` (its entries become stale).
    pub fn remove(&mut self, slot: usize) {
        self.generation.remove(&slot);
    }

    /// The earliest live due time.
    pub fn peek(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, gen, slot))) = self.heap.peek().copied() {
            if self.generation.get(&slot) == Some(&gen) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Pops one slot due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<usize> {
        let at = self.peek()?;
        if at > now {
            return None;
        }
        let Reverse((_, _, slot)) = self.heap.pop()?;
        self.generation.remove(&slot);
        Some(slot)
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.generation.len()
    }

    /// True when nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.generation.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(s: u64) -> Cadence {
        Cadence::Every(Duration::from_secs(s))
    }

    #[test]
    fn success_uses_interval_with_bounded_jitter() {
        let now = Utc::now();
        let ok = PollTiming {
            ok: true,
            ..Default::default()
        };
        assert_eq!(
            next_delay(&every(100), now, &ok, 0.0),
            Duration::from_secs(90)
        );
        assert_eq!(
            next_delay(&every(100), now, &ok, 0.5),
            Duration::from_secs(100)
        );
        assert!(next_delay(&every(100), now, &ok, 0.999) <= Duration::from_secs(110));
    }

    #[test]
    fn hints_push_the_next_poll_out_but_are_capped() {
        let now = Utc::now();
        let t = PollTiming {
            ok: true,
            ttl: Some(Duration::from_secs(600)),
            ..Default::default()
        };
        assert_eq!(
            next_delay(&every(60), now, &t, 0.5),
            Duration::from_secs(600)
        );
        let t = PollTiming {
            ok: true,
            cache: Some(Duration::from_secs(10 * 86400)),
            ..Default::default()
        };
        assert_eq!(next_delay(&every(60), now, &t, 0.5), MAX_HINT);
        let t = PollTiming {
            ok: false,
            consecutive_failures: 1,
            retry_after: Some(Duration::from_secs(900)),
            ..Default::default()
        };
        assert_eq!(
            next_delay(&every(60), now, &t, 0.5),
            Duration::from_secs(900)
        );
    }

    #[test]
    fn backoff_doubles_is_capped_and_resets() {
        let now = Utc::now();
        let fail = |n| PollTiming {
            ok: false,
            consecutive_failures: n,
            ..Default::default()
        };
        assert_eq!(
            next_delay(&every(60), now, &fail(1), 0.5),
            Duration::from_secs(60)
        );
        assert_eq!(
            next_delay(&every(60), now, &fail(2), 0.5),
            Duration::from_secs(120)
        );
        assert_eq!(
            next_delay(&every(60), now, &fail(3), 0.5),
            Duration::from_secs(240)
        );
        assert_eq!(next_delay(&every(60), now, &fail(40), 0.5), MAX_BACKOFF);
        // A source slower than the cap keeps its own interval, never stops.
        assert_eq!(
            next_delay(&every(7200), now, &fail(40), 0.5),
            Duration::from_secs(7200)
        );
        let ok = PollTiming {
            ok: true,
            ..Default::default()
        };
        assert_eq!(
            next_delay(&every(60), now, &ok, 0.5),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn a_backoff_policy_grows_caps_and_jitters_within_its_range() {
        let policy = BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            factor: 2,
            jitter: Jitter::EQUAL,
        };
        for attempt in 0..40 {
            let full = Duration::from_secs(1u64 << attempt.min(6)).min(Duration::from_secs(60));
            assert_eq!(policy.delay(attempt, 0.0), full / 2, "attempt {attempt}");
            assert_eq!(policy.delay(attempt, 1.0), full, "attempt {attempt}");
        }
        let plain = BackoffPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            factor: 2,
            jitter: Jitter::NONE,
        };
        let delays: Vec<u64> = (0..8)
            .map(|a| plain.delay(a, 0.7).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            vec![500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
        assert_eq!(
            Jitter::TEN_PERCENT.apply(Duration::from_secs(100), 0.0),
            Duration::from_secs(90)
        );
    }

    #[test]
    fn a_backoff_counts_attempts_and_starts_over_on_reset() {
        let mut b = Backoff::new(BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            factor: 2,
            jitter: Jitter::NONE,
        });
        let delays: Vec<u64> = (0..5).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 8]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
        b.set_initial(Duration::from_secs(3));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(3));
        b.set_initial(Duration::from_secs(100));
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(8), "capped at max");
    }

    #[test]
    fn cron_fires_at_its_next_time() {
        let sched: cron::Schedule = match "0 */5 * * * *".parse() {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:01:30Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let d = next_delay(
            &Cadence::Cron(Box::new(sched)),
            now,
            &PollTiming {
                ok: true,
                ..Default::default()
            },
            0.9,
        );
        assert_eq!(d, Duration::from_secs(210));
    }

    #[tokio::test(start_paused = true)]
    async fn due_queue_orders_and_skips_stale_entries() {
        let mut q = DueQueue::new();
        let t0 = Instant::now();
        q.schedule(1, t0 + Duration::from_secs(5));
        q.schedule(2, t0 + Duration::from_secs(1));
        q.schedule(1, t0 + Duration::from_secs(3)); // reschedule: old entry stale
        q.schedule(3, t0 + Duration::from_secs(2));
        q.remove(3);
        assert_eq!(q.len(), 2);
        assert_eq!(q.peek(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(q.pop_due(t0), None);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(q.pop_due(later), Some(2));
        assert_eq!(q.pop_due(later), Some(1));
        assert_eq!(q.pop_due(later), None);
        assert!(q.is_empty());
    }
}
