//! Per registrable-domain politeness: `a.tumblr.com` and `b.tumblr.com` share
//! one rate limiter, one concurrency limit and one Retry-After deadline.
//!
//! Used inside `Fetcher::fetch`: [`Politeness::acquire`] waits for all three
//! and returns a [`Permit`] held for the duration of the request. It is a
//! plain future, so dropping it (cancellation) gives everything back. The
//! domain table is behind a `std::sync::Mutex` that is only ever held for a
//! map lookup, never across an `.await`; idle domains are evicted so memory
//! stays bounded however many domains are polled.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// The registrable domain (eTLD+1) of a host; IP literals and unknown
/// suffixes map to themselves.
pub fn registrable_domain(host: &str) -> String {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(&host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return ip.to_string();
    }
    match psl::domain_str(&host) {
        Some(domain) => domain.to_owned(),
        None => host,
    }
}

/// Shared politeness state for every domain the fetcher talks to. Cheap to clone.
#[derive(Clone)]
pub struct Politeness {
    inner: Arc<Inner>,
}

/// Proof that the caller may send one request to a domain now. Holds one of
/// the domain's concurrency slots until dropped.
pub struct Permit {
    domain: Arc<Domain>,
    /// Released on drop; its presence is what the concurrency limit counts.
    _slot: OwnedSemaphorePermit,
}

impl Politeness {
    /// `per_host_rps` may be fractional (0.5 = one request every 2 s); a
    /// non-positive or non-finite rate disables rate limiting.
    /// `per_host_concurrency` is clamped to at least 1.
    pub fn new(per_host_rps: f64, per_host_concurrency: usize) -> Self {
        let period = (per_host_rps.is_finite() && per_host_rps > 0.0).then(|| {
            Duration::try_from_secs_f64(1.0 / per_host_rps)
                .unwrap_or(MAX_PERIOD)
                .min(MAX_PERIOD)
        });
        let quota = period.and_then(Quota::with_period);
        // An entry idle for longer than one rate period has a fully
        // replenished limiter, so evicting it forgets nothing.
        let idle_after = period.unwrap_or_default().max(MIN_IDLE);
        let now = Instant::now();
        Self {
            inner: Arc::new(Inner {
                quota,
                concurrency: per_host_concurrency.max(1),
                idle_after,
                clock: TokioClock { origin: now },
                table: Mutex::new(Table {
                    domains: HashMap::new(),
                    sweep_at: MIN_SWEEP,
                    next_sweep: now + idle_after,
                }),
            }),
        }
    }

    /// Waits until a request to `host`'s registrable domain is allowed: a free
    /// concurrency slot, no pending Retry-After deadline, and a rate token.
    pub async fn acquire(&self, host: &str) -> Permit {
        let domain = self.inner.entry(&registrable_domain(host));
        let slot = match Arc::clone(&domain.slots).acquire_owned().await {
            Ok(slot) => slot,
            // The semaphores are owned here and never closed.
            Err(closed) => unreachable!("politeness semaphore closed: {closed}"),
        };
        loop {
            if let Some(until) = domain.deadline() {
                if until > Instant::now() {
                    tokio::time::sleep_until(until).await;
                    continue; // a newer Retry-After may have arrived meanwhile
                }
            }
            let Some(limiter) = &domain.limiter else {
                break;
            };
            match limiter.check() {
                Ok(()) => break,
                Err(not_until) => {
                    tokio::time::sleep(not_until.wait_time_from(self.inner.clock.now())).await
                }
            }
        }
        domain.touch();
        Permit {
            domain,
            _slot: slot,
        }
    }

    /// Records an upstream's `Retry-After` for `host`'s registrable domain:
    /// no request to any host of the domain starts before `wait` has passed.
    /// A later deadline already recorded is kept.
    pub fn defer(&self, host: &str, wait: Duration) {
        let domain = self.inner.entry(&registrable_domain(host));
        let until = Instant::now() + wait;
        let mut not_before = lock(&domain.not_before);
        if not_before.is_none_or(|t| t < until) {
            *not_before = Some(until);
        }
    }

    /// When `host`'s registrable domain already has as many requests in
    /// flight or waiting as its concurrency limit plus [`WAITING_SLACK`], a
    /// rough wait before another is worth trying; `None` when one may queue
    /// now. The runtime then reschedules the poll instead of letting it hold
    /// one of its in-flight slots while it waits its turn here, so a domain
    /// with hundreds of sources cannot starve every other domain.
    pub fn crowded(&self, host: &str) -> Option<Duration> {
        let key = registrable_domain(host);
        let domain = lock(&self.inner.table).domains.get(&key).cloned()?;
        // The table and this lookup hold one reference each; every other one
        // is an `acquire` in progress or a held permit.
        let occupancy = Arc::strong_count(&domain).saturating_sub(2);
        if occupancy < self.inner.concurrency + WAITING_SLACK {
            return None;
        }
        let per_request = self
            .inner
            .quota
            .map_or(Duration::from_secs(1), |q| q.replenish_interval());
        let turns = u32::try_from(occupancy).unwrap_or(u32::MAX);
        Some(
            per_request
                .saturating_mul(turns)
                .clamp(Duration::from_secs(1), Duration::from_secs(600)),
        )
    }

    /// How long requests to `host`'s registrable domain are still deferred
    /// by a Retry-After, if at all.
    pub fn deferred_for(&self, host: &str) -> Option<Duration> {
        let key = registrable_domain(host);
        let domain = lock(&self.inner.table).domains.get(&key).cloned()?;
        let until = domain.deadline()?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    /// Number of domains currently tracked (idle ones are evicted lazily,
    /// when a new domain is added).
    pub fn tracked_domains(&self) -> usize {
        lock(&self.inner.table).domains.len()
    }
}

impl fmt::Debug for Politeness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Politeness")
            .field("quota", &self.inner.quota)
            .field("concurrency", &self.inner.concurrency)
            .field("tracked_domains", &self.tracked_domains())
            .finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.domain.touch();
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

/// Requests allowed to wait for a domain beyond its concurrency limit before
/// [`Politeness::crowded`] turns newcomers away.
pub const WAITING_SLACK: usize = 2;

/// Longest rate period honoured (a rate below one per day is treated as one per day).
const MAX_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);
/// Entries are kept at least this long after last use.
const MIN_IDLE: Duration = Duration::from_secs(60);
/// The table is not swept below this size.
const MIN_SWEEP: usize = 1024;

struct Inner {
    /// `None` = no rate limit.
    quota: Option<Quota>,
    concurrency: usize,
    idle_after: Duration,
    clock: TokioClock,
    table: Mutex<Table>,
}

/// The domain map plus when the next eviction sweep runs: when the map has
/// doubled since the last sweep (amortised O(1) per new domain) or one idle
/// period later (so a burst of one-off domains is forgotten even if no more
/// new domains arrive to trigger a size-based sweep).
struct Table {
    domains: HashMap<String, Arc<Domain>>,
    sweep_at: usize,
    next_sweep: Instant,
}

type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// One registrable domain's state.
struct Domain {
    /// Request pacing (GCRA, burst 1).
    limiter: Option<DirectLimiter>,
    /// In-flight requests.
    slots: Arc<Semaphore>,
    /// Retry-After deadline shared by every host of the domain.
    not_before: Mutex<Option<Instant>>,
    /// For eviction of idle entries.
    last_used: Mutex<Instant>,
}

impl Domain {
    fn deadline(&self) -> Option<Instant> {
        *lock(&self.not_before)
    }

    fn touch(&self) {
        *lock(&self.last_used) = Instant::now();
    }

    /// Nobody holds or waits on it, its rate limiter has replenished, and no
    /// Retry-After is pending: dropping it loses nothing.
    fn is_idle(self: &Arc<Self>, now: Instant, idle_after: Duration) -> bool {
        Arc::strong_count(self) == 1
            && *lock(&self.last_used) + idle_after <= now
            && self.deadline().is_none_or(|t| t <= now)
    }
}

impl Inner {
    fn entry(&self, key: &str) -> Arc<Domain> {
        let mut table = lock(&self.table);
        if let Some(domain) = table.domains.get(key) {
            return Arc::clone(domain);
        }
        let now = Instant::now();
        if table.domains.len() >= table.sweep_at || now >= table.next_sweep {
            table
                .domains
                .retain(|_, d| !d.is_idle(now, self.idle_after));
            table.sweep_at = (table.domains.len() * 2).max(MIN_SWEEP);
            table.next_sweep = now + self.idle_after;
        }
        let domain = Arc::new(Domain {
            limiter: self
                .quota
                .map(|q| RateLimiter::direct_with_clock(q, self.clock.clone())),
            slots: Arc::new(Semaphore::new(self.concurrency)),
            not_before: Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
        });
        table.domains.insert(key.to_owned(), Arc::clone(&domain));
        domain
    }
}

/// governor clock on tokio's time, so `tokio::time::pause()` drives the rate
/// limiter too (governor's default clock would ignore paused time).
#[derive(Debug, Clone)]
struct TokioClock {
    origin: Instant,
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.origin.elapsed())
    }
}

/// Locks a mutex that only guards plain data (no invariants can be broken
/// by a panic mid-update), so a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrable_domains() {
        assert_eq!(registrable_domain("a.tumblr.com"), "tumblr.com");
        assert_eq!(registrable_domain("B.Tumblr.com."), "tumblr.com");
        assert_eq!(registrable_domain("www.bbc.co.uk"), "bbc.co.uk");
        assert_eq!(registrable_domain("example.se"), "example.se");
        // github.io is a public suffix: each user's site is its own domain.
        assert_eq!(registrable_domain("alice.github.io"), "alice.github.io");
        assert_ne!(
            registrable_domain("alice.github.io"),
            registrable_domain("bob.github.io")
        );
        assert_eq!(registrable_domain("127.0.0.1"), "127.0.0.1");
        assert_eq!(registrable_domain("10.1.2.3"), "10.1.2.3");
        assert_eq!(registrable_domain("[::1]"), "::1");
        assert_eq!(registrable_domain("::1"), "::1");
        assert_eq!(registrable_domain("localhost"), "localhost");
        assert_eq!(registrable_domain("co.uk"), "co.uk");
        assert_eq!(registrable_domain(""), "");
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_rate_paces_requests_per_domain() {
        let p = Politeness::new(0.5, 10);
        let start = Instant::now();
        drop(p.acquire("a.example.com").await);
        assert_eq!(Instant::now(), start, "first request is immediate");
        drop(p.acquire("b.example.com").await);
        assert!(
            Instant::now() - start >= Duration::from_secs(2),
            "same registrable domain waits one period"
        );
        let before_other = Instant::now();
        drop(p.acquire("other.org").await);
        assert_eq!(
            Instant::now(),
            before_other,
            "another domain is not delayed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_shared_by_subdomains() {
        let p = Politeness::new(f64::INFINITY, 2);
        let first = p.acquire("a.tumblr.com").await;
        let _second = p.acquire("b.tumblr.com").await;
        let mut third = Box::pin(p.acquire("c.tumblr.com"));
        assert!(
            futures::poll!(third.as_mut()).is_pending(),
            "third slot must wait"
        );
        let _other = p.acquire("tumblr.org").await; // unaffected
        drop(first);
        let got = tokio::time::timeout(Duration::from_secs(5), third).await;
        assert!(got.is_ok(), "released slot is handed to the waiter");
    }

    #[tokio::test(start_paused = true)]
    async fn a_domain_is_crowded_once_its_slots_and_queue_are_taken() {
        // 2 in flight + WAITING_SLACK waiting, at 1 request/s.
        let p = Politeness::new(1.0, 2);
        assert_eq!(p.crowded("a.tumblr.com"), None, "unknown domain");
        let a = p.acquire("a.tumblr.com").await;
        let b = p.acquire("b.tumblr.com").await; // waits out its rate turn
        let mut waiting: Vec<_> = (0..WAITING_SLACK)
            .map(|_| Box::pin(p.acquire("c.tumblr.com")))
            .collect();
        for w in &mut waiting {
            assert!(futures::poll!(w.as_mut()).is_pending());
        }
        let wait = p.crowded("d.tumblr.com").expect("crowded");
        assert_eq!(
            wait,
            Duration::from_secs(4),
            "one rate period per request ahead"
        );
        assert_eq!(p.crowded("tumblr.org"), None, "other domains unaffected");
        // A cancelled waiter and a finished request make room again.
        waiting.pop();
        assert_eq!(p.crowded("a.tumblr.com"), None);
        drop((a, b));
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_waiter_releases_nothing_it_did_not_get() {
        let p = Politeness::new(f64::INFINITY, 1);
        let held = p.acquire("x.example").await;
        let mut waiter = Box::pin(p.acquire("x.example"));
        assert!(futures::poll!(waiter.as_mut()).is_pending());
        drop(waiter); // cancellation
        drop(held);
        let again = tokio::time::timeout(Duration::from_secs(5), p.acquire("x.example")).await;
        assert!(again.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_defers_the_whole_domain() {
        let p = Politeness::new(f64::INFINITY, 4);
        p.defer("api.example.com", Duration::from_secs(30));
        p.defer("api.example.com", Duration::from_secs(5)); // shorter does not shorten
        let left = p.deferred_for("www.example.com");
        assert_eq!(left, Some(Duration::from_secs(30)));
        assert_eq!(p.deferred_for("example.org"), None);
        let start = Instant::now();
        drop(p.acquire("feeds.example.com").await);
        assert!(Instant::now() - start >= Duration::from_secs(30));
        assert_eq!(p.deferred_for("example.com"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_domains_are_evicted() {
        let p = Politeness::new(1.0, 2);
        for i in 0..5000 {
            drop(p.acquire(&format!("host{i}.example{i}.com")).await);
        }
        let peak = p.tracked_domains();
        assert!(peak <= 5000, "{peak}");
        let busy = p.acquire("busy.example").await;
        p.defer("deferred.example", Duration::from_secs(3600));
        tokio::time::advance(Duration::from_secs(120)).await;
        drop(p.acquire("newcomer.example").await);
        let tracked = p.tracked_domains();
        assert!(tracked <= 3, "old idle entries are gone: {tracked}");
        assert!(
            p.deferred_for("deferred.example").is_some(),
            "pending Retry-After survives eviction"
        );
        assert!(
            lock(&p.inner.table).domains.contains_key("busy.example"),
            "held entries survive eviction"
        );
        drop(busy);
    }

    #[tokio::test(start_paused = true)]
    async fn table_stays_bounded_under_a_stream_of_new_domains() {
        let p = Politeness::new(f64::INFINITY, 1);
        let mut max_seen = 0;
        for i in 0..20_000u32 {
            drop(p.acquire(&format!("d{i}.example")).await);
            if i % 10 == 0 {
                tokio::time::advance(Duration::from_secs(1)).await;
            }
            max_seen = max_seen.max(p.tracked_domains());
        }
        // 10 new domains per second, idle after 60 s: the table holds a
        // couple of idle periods' worth, never all 20 000.
        assert!(max_seen < 4 * MIN_SWEEP, "{max_seen}");
    }
}
