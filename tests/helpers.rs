//! Shared test helpers: fixture paths, fresh databases, fixture servers,
//! test configs and waiting on a condition without fixed sleeps.
#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use livestrom::replay::{ReplayServer, Scenario};
use livestrom_engine::config::Config;

/// A generous default bound for [`wait_for`] on a slow, shared 2-core box.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// `rel` resolved against the repository root (`CARGO_MANIFEST_DIR`),
/// e.g. `fixture_path("fixtures/scenarios/rss-polls/poll1.xml")`.
pub(crate) fn fixture_path(rel: impl AsRef<Path>) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The bytes of a fixture file (panics with the path if unreadable).
pub(crate) fn fixture_bytes(rel: impl AsRef<Path>) -> Vec<u8> {
    let path = fixture_path(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", path.display()))
}

/// A fresh directory and the path of a not-yet-created SQLite file in it.
/// Keep the `TempDir` alive for as long as the database is used.
pub(crate) fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
    let db = dir.path().join("livestrom.db");
    (dir, db)
}

/// Starts a replay server for `fixtures/scenarios/<name>` (panics naming the
/// file and field if the scenario is invalid).
pub(crate) async fn spawn_fixture_server(name: &str) -> ReplayServer {
    let dir = fixture_path("fixtures/scenarios").join(name);
    let scenario =
        Scenario::load(&dir).unwrap_or_else(|e| panic!("fixture scenario `{name}`: {e}"));
    spawn_scenario(scenario).await
}

/// Starts a replay server for a scenario built in code.
pub(crate) async fn spawn_scenario(scenario: Scenario) -> ReplayServer {
    let name = scenario.name().to_owned();
    ReplayServer::start(scenario)
        .unwrap_or_else(|e| panic!("cannot start replay server for `{name}`: {e}"))
}

/// Polls `condition` until it is true; panics naming `what` after `timeout`
/// (real time, so it also bounds tests that pause tokio's clock). Between
/// checks it yields and naps briefly; the nap is not synchronisation — the
/// condition is.
pub(crate) async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for_value(what, timeout, move || {
        let fut = condition();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Like [`wait_for`], for a condition that produces a value once met.
pub(crate) async fn wait_for_value<T, F, Fut>(what: &str, timeout: Duration, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = condition().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

/// A validated config from `toml_body`, for tests against local servers.
///
/// Unless the body sets them, `[fetch]` gets `allow_private_networks = true`
/// (fixture servers are on 127.0.0.1), `per_host_rps = 1000` and
/// `per_host_concurrency = 64` (every fixture server shares the host
/// 127.0.0.1, so the production politeness defaults would serialise tests).
/// Everything else is as written; set `[engine] database` (see [`temp_db`]).
/// Panics with every config issue listed if the body is invalid.
pub(crate) fn test_config(toml_body: &str) -> Config {
    let text = with_test_defaults(toml_body);
    Config::from_toml(Path::new("test/sources.toml"), &text)
        .unwrap_or_else(|e| panic!("invalid test config:\n{e}\n--- config ---\n{text}"))
}

/// `toml_body` with the `[fetch]` test defaults of [`test_config`] added where unset.
pub(crate) fn with_test_defaults(toml_body: &str) -> String {
    let mut table: toml::Table = toml_body
        .parse()
        .unwrap_or_else(|e| panic!("test config is not TOML: {e}\n--- config ---\n{toml_body}"));
    let fetch = table
        .entry("fetch")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(fetch) = fetch {
        fetch
            .entry("allow_private_networks")
            .or_insert(toml::Value::Boolean(true));
        fetch
            .entry("per_host_rps")
            .or_insert(toml::Value::Float(1000.0));
        fetch
            .entry("per_host_concurrency")
            .or_insert(toml::Value::Integer(64));
    }
    toml::to_string(&table).unwrap_or_else(|e| panic!("cannot re-serialise the test config: {e}"))
}

/// The value of one series (`name` or `name{labels}` exactly as exposed)
/// in `GET /metrics` of the server at `addr`; None if unreachable or absent.
pub(crate) async fn metric(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    series: &str,
) -> Option<f64> {
    let text = metrics_text(http, addr).await?;
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// The body of `GET /metrics` of the server at `addr`; None if unreachable.
pub(crate) async fn metrics_text(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
) -> Option<String> {
    http.get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// Prints a failing test's view of a node's log: its last `lines`.
pub(crate) fn print_log_tail<S: AsRef<str>>(what: &str, lines: &[S]) {
    eprintln!("--- the last {} lines of {what} ---", lines.len());
    for line in lines {
        eprintln!("{}", line.as_ref());
    }
}
