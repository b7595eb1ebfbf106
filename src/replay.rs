//! The fixture upstream: recorded responses replayed over HTTP on 127.0.0.1.
//!
//! Integration tests and `livestrom demo` point sources at a [`ReplayServer`]
//! instead of the internet, so every run is deterministic and offline.
//!
//! - [`Scenario`]: per URL path, a sequence of [`Step`]s (status, headers,
//!   body, gzip, delay, conditional GET, ndjson/SSE streams), loaded from
//!   `fixtures/scenarios/<name>/scenario.toml` or built in code.
//! - [`ReplayServer`]: serves a scenario, counts hits per path, records requests.
//! - [`demo_upstream`] / [`demo_sources_toml`]: a live-looking offline upstream
//!   and the `sources.toml` that watches it.
//!
//! The file format is documented in `fixtures/README.md`.

mod demo;
mod load;
mod scenario;
mod server;

pub use demo::{
    demo_sources_toml, demo_upstream, demo_upstream_with, DemoOptions, BLOG_PATH, FIREHOSE_PATH,
    NEWS_PATH, PAGE_PATH,
};
pub use load::ScenarioError;
pub use scenario::{
    LineStream, Repeat, ReplayRequest, Reply, Scenario, Step, StepBody, StreamFormat, StreamLine,
};
pub use server::ReplayServer;

use std::path::{Path, PathBuf};

/// `fixtures/scenarios` of this source tree (compile-time path; for tests and tools).
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("scenarios")
}

/// Loads the recorded scenario `fixtures/scenarios/<name>` of this source tree.
pub fn load_scenario(name: &str) -> Result<Scenario, ScenarioError> {
    Scenario::load(&scenarios_dir().join(name))
}
