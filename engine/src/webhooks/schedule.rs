//! When a delivery is tried again, as pure functions: the Standard Webhooks
//! retry schedule with jitter, a receiver's `Retry-After`, and the other
//! clocks of an endpoint (how long a failing endpoint waits before it is
//! disabled, how long a rotated secret still signs).

use std::time::Duration;

use crate::scheduler::Jitter;

const MIN: u64 = 60;
const HOUR: u64 = 3600;

/// The delay before each retry of a failed delivery, in order: the first
/// retry is immediate, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
/// (nine attempts in all, about 27.6 hours).
pub const RETRY_SCHEDULE: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * MIN),
    Duration::from_secs(30 * MIN),
    Duration::from_secs(2 * HOUR),
    Duration::from_secs(5 * HOUR),
    Duration::from_secs(10 * HOUR),
    Duration::from_secs(10 * HOUR),
];

/// ±10 %: endpoints that failed together do not all retry in the same second.
pub(super) const RETRY_JITTER: Jitter = Jitter::TEN_PERCENT;

/// The longest `Retry-After` honoured as given; a longer one waits this long
/// (the schedule's longest step).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10 * HOUR);

/// A failing endpoint (its schedule exhausted, paused) is disabled when its
/// first failure is this old.
pub const DISABLE_AFTER_FAILING: Duration = Duration::from_secs(5 * 24 * HOUR);

/// After `rotate-secret`, the previous secret keeps signing beside the new
/// one this long, so receivers can switch without a gap.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * HOUR);

/// The wait before the next attempt after `failures` failed attempts in a
/// row (1 = the first attempt failed), or `None` when the schedule is
/// exhausted and the endpoint is to be marked failing. A receiver's
/// `Retry-After` (429, 503) replaces the scheduled wait, capped at
/// [`MAX_RETRY_AFTER`]; it does not add attempts. `rand` is a number in
/// [0, 1) for the jitter (random in production, fixed in tests).
pub fn retry_delay(failures: u32, retry_after: Option<Duration>, rand: f64) -> Option<Duration> {
    let index = usize::try_from(failures.checked_sub(1)?).ok()?;
    let scheduled = *RETRY_SCHEDULE.get(index)?;
    Some(match retry_after {
        Some(wait) => wait.min(MAX_RETRY_AFTER),
        None => RETRY_JITTER.apply(scheduled, rand),
    })
}

/// What a receiver's answer means for the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delivered, the cursor moves past the event.
    Delivered,
    /// 410 Gone: the receiver asks never to be called again; the endpoint
    /// is disabled.
    Gone,
    /// Anything else (3xx too: redirects are not followed): try again
    /// later, after `Retry-After` when a 429 or 503 sent one.
    Retry {
        /// The receiver's `Retry-After`.
        retry_after: Option<Duration>,
    },
}

/// The verdict on an HTTP status (and the `Retry-After` of a 429 or 503).
pub fn verdict(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Gone,
        429 | 503 => Verdict::Retry { retry_after },
        _ => Verdict::Retry { retry_after: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_the_standard_one_then_exhausted() {
        let got: Vec<Option<Duration>> = (1..=9).map(|n| retry_delay(n, None, 0.5)).collect();
        let want: Vec<Option<Duration>> = RETRY_SCHEDULE
            .iter()
            .map(|d| Some(*d))
            .chain([None])
            .collect();
        assert_eq!(got, want, "rand 0.5 is the middle of the jitter: no change");
        assert_eq!(retry_delay(0, None, 0.5), None);
        assert_eq!(retry_delay(1, None, 0.99), Some(Duration::ZERO));
        assert_eq!(retry_delay(2, None, 0.0), Some(Duration::from_millis(4500)));
        let high = retry_delay(8, None, 0.999_999).unwrap_or_default();
        assert!(high <= Duration::from_secs(11 * HOUR) && high > Duration::from_secs(10 * HOUR));
    }

    #[test]
    fn retry_after_replaces_the_wait_but_not_the_count() {
        let wait = Some(Duration::from_secs(120));
        assert_eq!(retry_delay(1, wait, 0.3), wait);
        assert_eq!(retry_delay(9, wait, 0.3), None);
        assert_eq!(
            retry_delay(3, Some(Duration::from_secs(86_400)), 0.3),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn statuses() {
        let wait = Some(Duration::from_secs(3));
        assert_eq!(verdict(200, None), Verdict::Delivered);
        assert_eq!(verdict(204, wait), Verdict::Delivered);
        assert_eq!(verdict(410, None), Verdict::Gone);
        assert_eq!(verdict(429, wait), Verdict::Retry { retry_after: wait });
        assert_eq!(verdict(503, wait), Verdict::Retry { retry_after: wait });
        assert_eq!(verdict(500, wait), Verdict::Retry { retry_after: None });
        assert_eq!(verdict(301, None), Verdict::Retry { retry_after: None });
        assert_eq!(verdict(404, None), Verdict::Retry { retry_after: None });
    }
}
