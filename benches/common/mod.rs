//! What the benches that run the real `livestrom` binary share: which
//! binary, numeric knobs from the environment, a wall clock in µs, a child
//! process killed on drop, a free port on 127.0.0.1.

use std::net::SocketAddr;
use std::process::Child;
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The binary under test: `BENCH_LIVESTROM_BIN` (e.g. an older build, for a
/// before/after comparison), else the one cargo built.
pub(crate) fn bin() -> String {
    std::env::var("BENCH_LIVESTROM_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_livestrom").to_owned())
}

/// A numeric knob from the environment, else `default`.
pub(crate) fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Microseconds since the Unix epoch (the clock every process here shares).
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A process killed on drop.
pub(crate) struct Proc(pub(crate) Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free on 127.0.0.1 right now.
pub(crate) fn free_addr() -> BoxResult<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}
