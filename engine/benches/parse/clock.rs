//! Time on a core beside wall time: the box the benchmark runs on is shared.

use std::time::{Duration, Instant};

/// Wall time and this thread's time on a core since [`Clock::start`]: the
/// box is shared, and a measure that waited for a core reads slower by
/// wall time than it ran.
pub(super) struct Clock {
    wall: Instant,
    cpu: Option<Duration>,
}

impl Clock {
    pub(super) fn start() -> Self {
        Self {
            wall: Instant::now(),
            cpu: thread_cpu(),
        }
    }

    /// (seconds on a core, seconds of wall time), where the kernel tells.
    pub(super) fn on_cpu(&self) -> Option<(f64, f64)> {
        let cpu = thread_cpu()?.checked_sub(self.cpu?)?;
        Some((cpu.as_secs_f64(), self.wall.elapsed().as_secs_f64()))
    }
}

/// This thread's time on a core so far (Linux `schedstat`, nanoseconds).
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}
