//! Livestrom engine: polls sources, normalises items into versioned
//! `StreamEvent`s and appends them to the SQLite event log.
//!
//! Data flow, one module per step:
//! `config` → `scheduler` (when) → `fetch` (HTTP, politeness, SSRF) →
//! `sources::{feed,html,firehose}` (bytes → items, pure) → `normalize`
//! (identity, versions) → `store` (commit, ids) → `bus` (live feed).
//! `keys` holds everything about API keys (format, model, the SQLite side,
//! the cache the edge verifies against); `webhooks` pushes the same events,
//! filtered, to signed HTTP endpoints.

pub mod backend;
pub mod bus;
pub mod cluster;
pub mod config;
pub mod event;
pub mod fetch;
pub mod filter;
pub mod health;
#[cfg(test)]
mod invariants;
pub mod keys;
pub mod log;
pub mod metrics;
pub mod normalize;
pub mod politeness;
pub mod readiness;
pub mod redact;
pub mod runtime;
pub mod scheduler;
pub mod sink;
pub mod sources;
pub mod store;
pub mod webhooks;

pub use backend::Backend;
pub use bus::Bus;
pub use config::Config;
pub use event::{CommittedEvent, SourceType, StreamEvent};
pub use log::EventLog;
pub use metrics::Metrics;
pub use sink::Sink;
pub use store::Store;
