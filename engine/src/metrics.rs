//! Prometheus metrics: one registry per process, shared by the engine and
//! the edge ([`Metrics`]), the engine's series ([`EngineMetrics`]) and the
//! scheduler loop's heartbeat that readiness reads.
//!
//! Why explicit registries and not a global recorder: a test process runs
//! many engines and edges side by side, and each must count only its own
//! polls and events. Why handles in arrays: the hot paths (a poll, a
//! commit, an event) increment a pre-created atomic; no label lookup, no
//! allocation. Every label takes values from a fixed set, except `source`
//! on the per-source gauge, which is bounded by the configured sources, and
//! `endpoint` on the webhooks' series ([`WebhookMetrics`]), bounded by the
//! webhooks table.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

use crate::event::SourceType;
use crate::fetch::FetchError;
use crate::runtime::PollError;
use crate::webhooks::WebhookMetrics;

/// Prefix of every series name.
pub const PREFIX: &str = "livestrom";

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The process's metrics: the registry every series is registered in, the
/// engine's series, and the scheduler heartbeat. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// Locked to register (at start) and to render (per scrape) only.
    registry: Mutex<Registry>,
    engine: EngineMetrics,
    webhooks: WebhookMetrics,
    heartbeat: Heartbeat,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh registry with the engine's series registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let engine = EngineMetrics::register(&mut registry);
        let webhooks = WebhookMetrics::register(&mut registry);
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                engine,
                webhooks,
                heartbeat: Heartbeat::new(),
            }),
        }
    }

    /// The engine's series.
    pub fn engine(&self) -> &EngineMetrics {
        &self.inner.engine
    }

    /// The webhooks' series.
    pub fn webhooks(&self) -> &WebhookMetrics {
        &self.inner.webhooks
    }

    /// The scheduler loop's heartbeat.
    pub fn heartbeat(&self) -> &Heartbeat {
        &self.inner.heartbeat
    }

    /// Registers a series (name without the `livestrom_` prefix; a counter's
    /// `_total` is added by the encoder). Call once per series, at start.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry().register(name, help, metric);
    }

    /// Every series in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail; an encoder error would leave a
        // partial text, which a scraper rejects as a whole.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry())
        {
            tracing::error!(error = %e, "cannot render the metrics");
        }
        out
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// When the scheduler loop last went round, for readiness: a loop that
/// stopped turning (stuck, panicked, shut down) goes stale.
#[derive(Debug)]
pub struct Heartbeat {
    base: Instant,
    /// Milliseconds after `base` of the last beat ([`NEVER`]: no beat yet);
    /// signed, so a test can place a beat before `base`.
    last: AtomicI64,
}

/// [`Heartbeat::last`] before the first beat.
const NEVER: i64 = i64::MIN;

impl Heartbeat {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last: AtomicI64::new(NEVER),
        }
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.base.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Records that the loop is turning now.
    pub fn beat(&self) {
        self.last.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Time since the last beat; None if the loop never beat.
    pub fn age(&self) -> Option<Duration> {
        let last = self.last.load(Ordering::Relaxed);
        if last == NEVER {
            return None;
        }
        let ms = self.now_ms().saturating_sub(last).max(0);
        Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
    }

    /// Tests: pretends the last beat was `ago`.
    #[doc(hidden)]
    pub fn set_age_for_tests(&self, ago: Duration) {
        let ago = i64::try_from(ago.as_millis()).unwrap_or(i64::MAX / 2);
        self.last
            .store(self.now_ms().saturating_sub(ago), Ordering::Relaxed);
    }
}

/// How a poll ended (label `outcome` of `livestrom_polls_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// A 200 whose body was parsed and stored.
    Ok,
    /// A 304: nothing changed upstream.
    NotModified,
    /// The poll failed (counted by kind in `livestrom_fetch_errors_total`).
    Error,
    /// Not fetched: the domain is under a `Retry-After`.
    Deferred,
    /// Not fetched: enough polls of the domain were in flight or waiting.
    Skipped,
}

impl PollOutcome {
    const ALL: [Self; 5] = [
        Self::Ok,
        Self::NotModified,
        Self::Error,
        Self::Deferred,
        Self::Skipped,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NotModified => "not_modified",
            Self::Error => "error",
            Self::Deferred => "deferred",
            Self::Skipped => "skipped",
        }
    }
}

/// Why a poll failed (label `kind` of `livestrom_fetch_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The host name did not resolve.
    Dns,
    /// No connection (refused, reset, TLS).
    Connect,
    /// `fetch.timeout` passed.
    Timeout,
    /// An HTTP 4xx status.
    Http4xx,
    /// An HTTP 5xx status.
    Http5xx,
    /// Another non-success status (1xx, 3xx without a usable location).
    HttpOther,
    /// The body was over `fetch.max_body`.
    BodyCap,
    /// The SSRF guard refused the address.
    SsrfRefused,
    /// More redirects than `fetch.max_redirects`.
    Redirects,
    /// An unusable URL.
    BadUrl,
    /// The body could not be turned into items.
    Parse,
    /// The result could not be stored.
    Store,
    /// A task died (a bug) or was cancelled.
    Internal,
    /// Any other transport error.
    Other,
}

impl ErrorKind {
    const ALL: [Self; 14] = [
        Self::Dns,
        Self::Connect,
        Self::Timeout,
        Self::Http4xx,
        Self::Http5xx,
        Self::HttpOther,
        Self::BodyCap,
        Self::SsrfRefused,
        Self::Redirects,
        Self::BadUrl,
        Self::Parse,
        Self::Store,
        Self::Internal,
        Self::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Http4xx => "http_4xx",
            Self::Http5xx => "http_5xx",
            Self::HttpOther => "http_other",
            Self::BodyCap => "body_cap",
            Self::SsrfRefused => "ssrf_refused",
            Self::Redirects => "redirects",
            Self::BadUrl => "bad_url",
            Self::Parse => "parse",
            Self::Store => "store",
            Self::Internal => "internal",
            Self::Other => "other",
        }
    }

    /// The kind of a fetch error.
    pub fn of_fetch(e: &FetchError) -> Self {
        match e {
            FetchError::Blocked { .. } => Self::SsrfRefused,
            FetchError::BadUrl(_) => Self::BadUrl,
            FetchError::Dns { .. } => Self::Dns,
            FetchError::Connect(_) => Self::Connect,
            FetchError::Timeout(_) => Self::Timeout,
            FetchError::Status { status, .. } => match status / 100 {
                4 => Self::Http4xx,
                5 => Self::Http5xx,
                _ => Self::HttpOther,
            },
            FetchError::TooLarge { .. } | FetchError::BrotliWindow { .. } => Self::BodyCap,
            FetchError::TooManyRedirects(_) => Self::Redirects,
            FetchError::Decode(_) | FetchError::Other(_) => Self::Other,
        }
    }

    /// The kind of a failed poll.
    pub fn of_poll(e: &PollError) -> Self {
        match e {
            PollError::Fetch(f) => Self::of_fetch(f),
            PollError::Source(_) => Self::Parse,
            PollError::Store(_) => Self::Store,
            PollError::Task(_)
            | PollError::Panicked(_)
            | PollError::Aborted
            | PollError::Shutdown
            | PollError::Crowded { .. }
            | PollError::Deferred(_) => Self::Internal,
        }
    }
}

type Labels = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];
type SourceLabel = [(&'static str, String); 1];

/// The engine's series, each handle created once (see the module docs).
pub struct EngineMetrics {
    /// `polls_total{type, outcome}`, by `SourceType::as_index` then outcome.
    polls: Vec<Vec<Counter>>,
    /// `fetch_errors_total{kind}`, by `ErrorKind` position.
    errors: Vec<Counter>,
    /// `items_parsed_total{type}`.
    items: Vec<Counter>,
    /// `events_emitted_total{type}`.
    events: Vec<Counter>,
    /// `poll_duration_seconds{type}`.
    poll_seconds: Vec<Histogram>,
    /// `store_commit_duration_seconds`.
    commit_seconds: Histogram,
    /// `store_commit_batch_events`.
    commit_events: Histogram,
    /// `source_consecutive_failures{source}`: one series per configured source.
    failures: Family<SourceLabel, Gauge>,
}

impl std::fmt::Debug for EngineMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineMetrics").finish_non_exhaustive()
    }
}

/// Pre-creates one handle per label set and registers the family.
fn family_of<M, C>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    family: Family<Labels2, M, C>,
    sets: impl Iterator<Item = Labels2>,
) -> Vec<M>
where
    M: Clone + prometheus_client::metrics::TypedMetric + prometheus_client::encoding::EncodeMetric,
    M: Send + Sync + std::fmt::Debug + 'static,
    C: prometheus_client::metrics::family::MetricConstructor<M>
        + Clone
        + Send
        + Sync
        + std::fmt::Debug
        + 'static,
{
    let out = sets.map(|l| family.get_or_create_owned(&l)).collect();
    registry.register(name, help, family);
    out
}

fn by_type<M, C>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    family: Family<Labels, M, C>,
) -> Vec<M>
where
    M: Clone + prometheus_client::metrics::TypedMetric + prometheus_client::encoding::EncodeMetric,
    M: Send + Sync + std::fmt::Debug + 'static,
    C: prometheus_client::metrics::family::MetricConstructor<M>
        + Clone
        + Send
        + Sync
        + std::fmt::Debug
        + 'static,
{
    let out = SourceType::ALL
        .iter()
        .map(|t| family.get_or_create_owned(&[("type", t.as_str())]))
        .collect();
    registry.register(name, help, family);
    out
}

impl EngineMetrics {
    fn register(r: &mut Registry) -> Self {
        let polls: Vec<Counter> = family_of(
            r,
            "polls",
            "Polls by source type and outcome (ok, not_modified, error, deferred, skipped)",
            Family::<Labels2, Counter>::default(),
            SourceType::ALL.iter().flat_map(|t| {
                PollOutcome::ALL
                    .iter()
                    .map(move |o| [("type", t.as_str()), ("outcome", o.as_str())])
            }),
        );
        let polls = polls
            .chunks(PollOutcome::ALL.len())
            .map(<[Counter]>::to_vec)
            .collect();
        let errors_family = Family::<Labels, Counter>::default();
        let errors = ErrorKind::ALL
            .iter()
            .map(|k| errors_family.get_or_create_owned(&[("kind", k.as_str())]))
            .collect();
        r.register(
            "fetch_errors",
            "Failed polls by kind (dns, connect, timeout, http_4xx, http_5xx, body_cap, ssrf_refused, parse, …)",
            errors_family,
        );
        let items = by_type(
            r,
            "items_parsed",
            "Items parsed from upstream responses, by source type",
            Family::<Labels, Counter>::default(),
        );
        let events = by_type(
            r,
            "events_emitted",
            "Events committed to the log, by source type",
            Family::<Labels, Counter>::default(),
        );
        let poll_seconds = by_type(
            r,
            "poll_duration_seconds",
            "Duration of a poll (fetch, parse, plan, commit), by source type",
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 2.0, 14))
            }),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        r.register(
            "store_commit_duration_seconds",
            "Duration of one store transaction (group commit), BEGIN to COMMIT",
            commit_seconds.clone(),
        );
        let commit_events = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        r.register(
            "store_commit_batch_events",
            "Events written by one store transaction",
            commit_events.clone(),
        );
        let failures = Family::<SourceLabel, Gauge>::default();
        r.register(
            "source_consecutive_failures",
            "Consecutive failed polls of each configured source (0 after a success)",
            failures.clone(),
        );
        Self {
            polls,
            errors,
            items,
            events,
            poll_seconds,
            commit_seconds,
            commit_events,
            failures,
        }
    }

    /// Counts a poll of a `t` source that ended in `outcome`.
    pub fn poll(&self, t: SourceType, outcome: PollOutcome) {
        let o = PollOutcome::ALL
            .iter()
            .position(|x| *x == outcome)
            .unwrap_or(0);
        if let Some(c) = self.polls.get(t.as_index()).and_then(|v| v.get(o)) {
            c.inc();
        }
    }

    /// Counts a failed poll by its kind.
    pub fn error(&self, kind: ErrorKind) {
        let i = ErrorKind::ALL.iter().position(|x| *x == kind).unwrap_or(0);
        if let Some(c) = self.errors.get(i) {
            c.inc();
        }
    }

    /// Counts items parsed from one response.
    pub fn items_parsed(&self, t: SourceType, n: usize) {
        if let Some(c) = self.items.get(t.as_index()) {
            c.inc_by(n as u64);
        }
    }

    /// Counts events committed.
    pub fn events_emitted(&self, t: SourceType, n: usize) {
        if let Some(c) = self.events.get(t.as_index()) {
            c.inc_by(n as u64);
        }
    }

    /// Records how long a poll took.
    pub fn poll_duration(&self, t: SourceType, d: Duration) {
        if let Some(h) = self.poll_seconds.get(t.as_index()) {
            h.observe(d.as_secs_f64());
        }
    }

    /// Records one store transaction: its duration and events.
    pub fn commit(&self, d: Duration, events: usize) {
        self.commit_seconds.observe(d.as_secs_f64());
        self.commit_events.observe(events as f64);
    }

    /// Sets a source's consecutive failures (once per poll, not per event).
    pub fn source_failures(&self, source: &str, n: u32) {
        self.failures
            .get_or_create(&[("source", source.to_owned())])
            .set(i64::from(n));
    }

    /// Drops the series of a source no longer configured.
    pub fn forget_source(&self, source: &str) {
        self.failures.remove(&[("source", source.to_owned())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_renders_with_its_labels() {
        let m = Metrics::new();
        m.engine().poll(SourceType::Rss, PollOutcome::NotModified);
        m.engine().error(ErrorKind::of_fetch(&FetchError::Status {
            status: 503,
            retry_after: None,
        }));
        m.engine().source_failures("news.a", 3);
        let text = m.render();
        assert!(
            text.contains("livestrom_polls_total{type=\"rss\",outcome=\"not_modified\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("livestrom_fetch_errors_total{kind=\"http_5xx\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("livestrom_source_consecutive_failures{source=\"news.a\"} 3"),
            "{text}"
        );
        m.engine().forget_source("news.a");
        assert!(!m.render().contains("news.a"));
    }

    #[test]
    fn a_heartbeat_ages() {
        let m = Metrics::new();
        assert_eq!(m.heartbeat().age(), None);
        m.heartbeat().beat();
        assert!(m.heartbeat().age() < Some(Duration::from_secs(5)));
        m.heartbeat().set_age_for_tests(Duration::from_secs(120));
        assert!(m.heartbeat().age() >= Some(Duration::from_secs(120)));
    }
}
