//! Rate and concurrency limits: per authenticated key (governor, keyed by key
//! id so bogus keys cannot grow memory), a bounded per-IP limiter for failed
//! authentication, and per-key concurrent-stream counters.
//!
//! CONTRACT (owned by the auth/keys module's owner).

use std::sync::Arc;

use crate::auth::KeyInfo;
use crate::problem::Problem;

/// All limiters of the edge.
#[derive(Debug, Default)]
pub struct Limits {}

/// Held by an open stream; releases the key's stream slot on drop.
#[derive(Debug)]
pub struct StreamGuard {}

impl Limits {
    /// Fresh limiters.
    pub fn new() -> Self {
        Self {}
    }

    /// Takes one of the key's concurrent-stream slots, or 429.
    pub fn stream_guard(&self, key: &Arc<KeyInfo>) -> Result<StreamGuard, Problem> {
        let _ = key;
        Ok(StreamGuard {})
    }
}
