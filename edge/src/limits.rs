//! Rate and concurrency limits: per authenticated key (governor, keyed by key
//! id so bogus keys cannot grow memory), a bounded per-IP limiter for failed
//! authentication, and per-key concurrent-stream counters.
//!
//! Memory bounds: the per-key maps hold at most one entry per key that ever
//! authenticated (keys are created by the operator, not by clients); the
//! per-IP map is swept of idle entries at most once per [`SWEEP_EVERY`] and
//! never grows past [`MAX_TRACKED_IPS`] — beyond that, new addresses share one
//! overflow bucket. IPv6 clients are tracked by /64, since one host usually
//! owns a whole /64. The client address is the TCP peer: `X-Forwarded-For` is
//! not trusted (it is client-controlled).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use livestrom_engine::keys::{KeyInfo, DEFAULT_RATE, MAX_RATE, MIN_RATE};

use crate::problem::Problem;

/// Failed authentications an address may make in a burst…
pub const FAILURE_BURST: u32 = 20;
/// …then one more per this period.
pub const FAILURE_PERIOD: Duration = Duration::from_secs(1);
/// Most client addresses tracked by the failed-auth limiter.
pub const MAX_TRACKED_IPS: usize = 100_000;
/// Idle addresses are dropped from the failed-auth limiter this often (at most).
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// `Retry-After` when a key is at its concurrent-stream cap (a slot frees
/// whenever one of its streams ends; we cannot know when).
pub const STREAM_CAP_RETRY_AFTER: u64 = 5;

/// Stand-in address shared by all clients once [`MAX_TRACKED_IPS`] is reached.
const OVERFLOW_IP: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// All limiters of the edge.
pub struct Limits {
    /// Request rate per key id; the limiter is rebuilt when the key's rate changes.
    per_key: Mutex<HashMap<i64, KeyLimiter>>,
    /// Failed authentications per client address.
    failures: DefaultKeyedRateLimiter<IpAddr>,
    /// When `failures` was last swept of idle entries.
    last_sweep: Mutex<Instant>,
    /// Open streams per key id; shared with the guards that decrement it.
    streams: Arc<Mutex<HashMap<i64, usize>>>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("keys", &lock(&self.per_key).len())
            .field("tracked_ips", &self.failures.len())
            .field("open_streams", &lock(&self.streams).values().sum::<usize>())
            .finish()
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new()
    }
}

struct KeyLimiter {
    rate: f64,
    limiter: DefaultDirectRateLimiter,
}

/// Held by an open stream; releases the key's stream slot on drop.
#[derive(Debug)]
pub struct StreamGuard {
    streams: Arc<Mutex<HashMap<i64, usize>>>,
    id: i64,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut streams = lock(&self.streams);
        if let Some(n) = streams.get_mut(&self.id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                streams.remove(&self.id);
            }
        }
    }
}

impl Limits {
    /// Fresh limiters.
    pub fn new() -> Self {
        let failures = Quota::with_period(FAILURE_PERIOD)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(FAILURE_BURST).unwrap_or(NonZeroU32::MIN));
        Self {
            per_key: Mutex::new(HashMap::new()),
            failures: RateLimiter::keyed(failures),
            last_sweep: Mutex::new(Instant::now()),
            streams: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes one of the key's concurrent-stream slots, or 429.
    pub fn stream_guard(&self, key: &Arc<KeyInfo>) -> Result<StreamGuard, Problem> {
        let mut streams = lock(&self.streams);
        let open = streams.entry(key.id).or_insert(0);
        if *open >= key.max_streams {
            let detail = format!(
                "the key `{}` already has {} open stream(s), its limit; close one or raise --max-streams",
                key.name, open
            );
            if *open == 0 {
                streams.remove(&key.id);
            }
            return Err(Problem::too_many(detail, STREAM_CAP_RETRY_AFTER));
        }
        *open += 1;
        Ok(StreamGuard {
            streams: self.streams.clone(),
            id: key.id,
        })
    }

    /// Streams the key has open now.
    pub fn open_streams(&self, key_id: i64) -> usize {
        lock(&self.streams).get(&key_id).copied().unwrap_or(0)
    }

    /// Counts one request of an authenticated key against its rate
    /// (`rate`/s, burst twice that), or 429 with `Retry-After`.
    pub fn check_rate(&self, key: &KeyInfo) -> Result<(), Problem> {
        let rate = sane_rate(key.rate);
        let mut per_key = lock(&self.per_key);
        let entry = per_key.entry(key.id).or_insert_with(|| KeyLimiter {
            rate,
            limiter: key_limiter(rate),
        });
        if entry.rate != rate {
            *entry = KeyLimiter {
                rate,
                limiter: key_limiter(rate),
            };
        }
        match entry.limiter.check() {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(entry.limiter.clock().now());
                Err(Problem::too_many(
                    format!(
                        "the key `{}` is over its rate of {} requests/s (burst {}); retry after the delay",
                        key.name,
                        rate,
                        burst_of(rate)
                    ),
                    ceil_secs(wait),
                ))
            }
        }
    }

    /// Records a failed authentication from `ip`; returns the 429 to send
    /// instead of the 401/403 once the address is over its failure budget.
    pub fn note_auth_failure(&self, ip: IpAddr) -> Option<Problem> {
        let tracked = self.track_key(ip);
        match self.failures.check_key(&tracked) {
            Ok(()) => None,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.failures.clock().now());
                Some(Problem::too_many(
                    "too many failed authentications from this address; check the API key and retry later",
                    ceil_secs(wait),
                ))
            }
        }
    }

    /// Client addresses the failed-auth limiter tracks now.
    pub fn tracked_ips(&self) -> usize {
        self.failures.len()
    }

    /// The limiter key for `ip`, keeping the map bounded.
    fn track_key(&self, ip: IpAddr) -> IpAddr {
        let ip = normalize_ip(ip);
        if self.failures.len() < MAX_TRACKED_IPS {
            self.maybe_sweep(false);
            return ip;
        }
        self.maybe_sweep(true);
        if self.failures.len() < MAX_TRACKED_IPS {
            ip
        } else {
            OVERFLOW_IP
        }
    }

    /// Drops idle entries, at most once per [`SWEEP_EVERY`] so a flood of
    /// new addresses cannot make every request pay for a sweep.
    fn maybe_sweep(&self, full: bool) {
        let mut last = lock(&self.last_sweep);
        if last.elapsed() < SWEEP_EVERY {
            return;
        }
        *last = Instant::now();
        drop(last);
        self.failures.retain_recent();
        if full {
            self.failures.shrink_to_fit();
        }
    }
}

/// Locks a mutex, recovering from poisoning (the maps stay consistent: every
/// critical section is a single insert/update).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A key's rate as stored is validated, but `KeyInfo` is a plain struct:
/// fall back to the default instead of panicking on a nonsensical value.
fn sane_rate(rate: f64) -> f64 {
    if rate.is_finite() && rate > 0.0 {
        rate.clamp(MIN_RATE, MAX_RATE)
    } else {
        DEFAULT_RATE
    }
}

/// Burst of a key: twice its rate, at least one request.
pub fn burst_of(rate: f64) -> u32 {
    let b = (2.0 * sane_rate(rate)).ceil();
    if b >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        (b as u32).max(1)
    }
}

fn key_limiter(rate: f64) -> DefaultDirectRateLimiter {
    let period = Duration::try_from_secs_f64(1.0 / rate).unwrap_or(Duration::from_millis(100));
    let burst = NonZeroU32::new(burst_of(rate)).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(burst))
        .allow_burst(burst);
    RateLimiter::direct(quota)
}

/// IPv4 as is (IPv4-mapped IPv6 folded to IPv4); IPv6 truncated to its /64.
fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// Whole seconds to wait, rounded up, at least 1.
fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    fn key(id: i64, max_streams: usize, rate: f64) -> Arc<KeyInfo> {
        Arc::new(KeyInfo {
            id,
            name: format!("k{id}"),
            scopes: vec![livestrom_engine::keys::Scope::StreamRead],
            max_filters: 20,
            max_streams,
            rate,
            revoked: CancellationToken::new(),
        })
    }

    #[test]
    fn stream_slots_are_capped_and_released_on_drop() {
        let limits = Limits::new();
        let k = key(1, 2, 10.0);
        let a = limits.stream_guard(&k).expect("first");
        let b = limits.stream_guard(&k).expect("second");
        let refused = limits.stream_guard(&k).expect_err("third is over the cap");
        assert_eq!(refused.status, 429);
        assert_eq!(refused.retry_after, Some(STREAM_CAP_RETRY_AFTER));
        // Another key is not affected.
        let _other = limits.stream_guard(&key(2, 1, 10.0)).expect("other key");
        drop(a);
        assert_eq!(limits.open_streams(1), 1);
        let _c = limits.stream_guard(&k).expect("slot freed");
        drop(b);
        drop(_c);
        assert_eq!(limits.open_streams(1), 0);
        assert!(
            !lock(&limits.streams).contains_key(&1),
            "idle entries are removed"
        );
    }

    #[test]
    fn rate_allows_a_burst_of_twice_the_rate_then_429() {
        let limits = Limits::new();
        let k = key(7, 10, 1.0);
        assert!(limits.check_rate(&k).is_ok());
        assert!(limits.check_rate(&k).is_ok());
        let p = limits
            .check_rate(&k)
            .expect_err("third request within the burst window");
        assert_eq!(p.status, 429);
        assert!(p.retry_after.is_some_and(|s| s >= 1));
        // A changed rate takes effect at once (fresh bucket).
        let faster = key(7, 10, 50.0);
        for _ in 0..100 {
            assert!(limits.check_rate(&faster).is_ok());
        }
    }

    #[test]
    fn nonsensical_rates_do_not_panic() {
        let limits = Limits::new();
        for (i, r) in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-12, 1e12]
            .into_iter()
            .enumerate()
        {
            let _ = limits.check_rate(&key(i as i64, 1, r));
            assert!(burst_of(r) >= 1);
        }
    }

    #[test]
    fn failed_auth_is_limited_per_address_and_ipv6_by_64() {
        let limits = Limits::new();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        let refused = (0..FAILURE_BURST * 10)
            .find_map(|_| limits.note_auth_failure(a))
            .expect("limited");
        assert_eq!(refused.status, 429);
        assert!(
            limits.note_auth_failure(b).is_none(),
            "other addresses keep their budget"
        );

        let v6a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert!((0..FAILURE_BURST * 10).any(|_| limits.note_auth_failure(v6a).is_some()));
        assert!(
            limits.note_auth_failure(v6b).is_some(),
            "same /64 shares the budget"
        );
    }

    #[test]
    fn many_addresses_do_not_grow_the_map_past_the_cap() {
        let limits = Limits::new();
        for i in 0..(MAX_TRACKED_IPS as u32 + 5_000) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = limits.note_auth_failure(ip);
        }
        assert!(
            limits.tracked_ips() <= MAX_TRACKED_IPS + 1,
            "{}",
            limits.tracked_ips()
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_secs(Duration::ZERO), 1);
        assert_eq!(ceil_secs(Duration::from_secs(3)), 3);
    }
}
