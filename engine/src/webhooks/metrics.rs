//! The webhooks' series on `GET /metrics`: attempts by outcome and their
//! durations (counted as they happen, through handles each worker holds),
//! and each endpoint's state, failures in a row and lag (read at scrape
//! time from what the workers last reported, so a failing endpoint's lag
//! keeps growing while nothing happens).
//!
//! The `endpoint` label is the endpoint's name: operators choose names and
//! have few endpoints, so its values are bounded by the webhooks table. No
//! URL or secret is ever a label. An endpoint's series go when it is
//! deleted ([`WebhookMetrics::forget`]).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use uuid::Uuid;

use super::deliver::Response;
use super::model::{Progress, State};
use super::schedule::Verdict;

/// How an attempt ended (label `outcome` of `livestrom_webhook_deliveries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx: the event is delivered.
    Delivered,
    /// No answer (refused, DNS, connect, TLS, timeout) or any status that is
    /// retried (5xx, 429, 3xx, other 4xx).
    Failed,
    /// A 410 Gone: the endpoint is disabled.
    Gone,
}

impl Outcome {
    const ALL: [Self; 3] = [Self::Delivered, Self::Failed, Self::Gone];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed => "failed",
            Self::Gone => "gone",
        }
    }

    /// The outcome of an attempt that got `response`.
    pub fn of(response: &Response) -> Self {
        match response.verdict() {
            Verdict::Delivered => Self::Delivered,
            Verdict::Gone => Self::Gone,
            Verdict::Retry { .. } => Self::Failed,
        }
    }
}

/// The states an endpoint can be in, in the order their series are rendered.
const STATES: [State; 4] = [
    State::Active,
    State::Failing,
    State::Paused,
    State::Disabled,
];

type EndpointLabel = [(&'static str, String); 1];
type EndpointLabel2 = [(&'static str, String); 2];

/// The webhooks' series of one process (one per [`crate::Metrics`]).
/// Cheap to clone.
#[derive(Clone)]
pub struct WebhookMetrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for WebhookMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookMetrics").finish_non_exhaustive()
    }
}

struct Inner {
    /// `webhook_deliveries_total{endpoint, outcome}`.
    deliveries: Family<EndpointLabel2, Counter>,
    /// `webhook_delivery_duration_seconds{endpoint}`.
    duration: Family<EndpointLabel, Histogram, fn() -> Histogram>,
    /// Endpoint id → what its worker last reported; the gauges are
    /// rendered from it at each scrape.
    endpoints: Mutex<BTreeMap<i64, Status>>,
}

/// What the gauges of one endpoint are made of.
#[derive(Debug, Clone)]
struct Status {
    name: String,
    state: State,
    failures: u32,
    /// The oldest matching event not delivered yet, as far as the worker
    /// knows (None: caught up).
    pending: Option<Uuid>,
}

fn duration_buckets() -> Histogram {
    // 5 ms … 41 s: an attempt's timeout is at most 60 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl WebhookMetrics {
    /// Registers the series in `registry` (once per process).
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let inner = Arc::new(Inner {
            deliveries: Family::default(),
            duration: Family::new_with_constructor(duration_buckets),
            endpoints: Mutex::new(BTreeMap::new()),
        });
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by endpoint and outcome (delivered: a 2xx; failed: no answer or a status that is retried; gone: a 410)",
            inner.deliveries.clone(),
        );
        registry.register(
            "webhook_delivery_duration_seconds",
            "Duration of one webhook delivery attempt, sent to answered (or failed), by endpoint",
            inner.duration.clone(),
        );
        registry.register_collector(Box::new(Gauges(inner.clone())));
        Self { inner }
    }

    /// The series of endpoint `id` named `name`, starting from `progress`;
    /// its worker reports through them.
    pub(crate) fn endpoint(&self, id: i64, name: &str, progress: &Progress) -> EndpointSeries {
        self.lock().insert(
            id,
            Status {
                name: name.to_owned(),
                state: progress.state,
                failures: progress.failures,
                pending: None,
            },
        );
        let label = || name.to_owned();
        EndpointSeries {
            id,
            outcomes: Outcome::ALL
                .iter()
                .map(|o| {
                    self.inner.deliveries.get_or_create_owned(&[
                        ("endpoint", label()),
                        ("outcome", o.as_str().into()),
                    ])
                })
                .collect(),
            duration: self
                .inner
                .duration
                .get_or_create_owned(&[("endpoint", label())]),
            metrics: self.clone(),
        }
    }

    /// Drops every series of endpoint `id` (deleted); what its worker
    /// reports later is ignored.
    pub(crate) fn forget(&self, id: i64) {
        let Some(status) = self.lock().remove(&id) else {
            return;
        };
        let name = status.name;
        for o in Outcome::ALL {
            self.inner
                .deliveries
                .remove(&[("endpoint", name.clone()), ("outcome", o.as_str().into())]);
        }
        self.inner.duration.remove(&[("endpoint", name)]);
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<i64, Status>> {
        self.inner
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, id: i64, change: impl FnOnce(&mut Status)) {
        if let Some(s) = self.lock().get_mut(&id) {
            change(s);
        }
    }
}

/// One endpoint's series, held by its worker: counting an attempt is an
/// atomic add on a handle created up front.
#[derive(Clone)]
pub(crate) struct EndpointSeries {
    id: i64,
    /// By [`Outcome::ALL`] position.
    outcomes: Vec<Counter>,
    duration: Histogram,
    metrics: WebhookMetrics,
}

impl EndpointSeries {
    /// Series that count into a registry nobody renders (tests).
    #[cfg(test)]
    pub(crate) fn detached(progress: &Progress) -> Self {
        WebhookMetrics::register(&mut Registry::default()).endpoint(1, "test", progress)
    }

    /// Counts an attempt that took `took` and got `response`.
    pub(crate) fn attempt(&self, response: &Response, took: Duration) {
        let outcome = Outcome::of(response);
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        if let Some(c) = self.outcomes.get(i) {
            c.inc();
        }
        self.duration.observe(took.as_secs_f64());
    }

    /// The endpoint's state and failures in a row, as saved.
    pub(crate) fn progress(&self, progress: &Progress) {
        self.metrics.update(self.id, |s| {
            s.state = progress.state;
            s.failures = progress.failures;
        });
    }

    /// The oldest matching event not delivered yet (None: caught up).
    pub(crate) fn pending(&self, oldest: Option<Uuid>) {
        self.metrics.update(self.id, |s| s.pending = oldest);
    }

    /// What [`EndpointSeries::pending`] last set.
    pub(crate) fn pending_now(&self) -> Option<Uuid> {
        self.metrics.lock().get(&self.id).and_then(|s| s.pending)
    }
}

/// Seconds from event `id`'s commit (its UUIDv7 time) to `now`; 0 for
/// an id without a time.
fn age(id: Uuid, now: DateTime<Utc>) -> f64 {
    let Some((secs, nanos)) = id.get_timestamp().map(|t| t.to_unix()) else {
        return 0.0;
    };
    let at = i64::try_from(secs)
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, nanos));
    at.map_or(0.0, |at| {
        ((now - at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6).max(0.0)
    })
}

/// Renders the gauges from the endpoints' last reports at each scrape.
#[derive(Debug)]
struct Gauges(Arc<Inner>);

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("webhooks").finish_non_exhaustive()
    }
}

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let endpoints: Vec<Status> = self
            .0
            .endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        if endpoints.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let state = Family::<EndpointLabel2, Gauge>::default();
        let failures = Family::<EndpointLabel, Gauge>::default();
        let lag = Family::<EndpointLabel, Gauge<f64, AtomicU64>>::default();
        for e in &endpoints {
            for s in STATES {
                state
                    .get_or_create(&[("endpoint", e.name.clone()), ("state", s.as_str().into())])
                    .set(i64::from(s == e.state));
            }
            failures
                .get_or_create(&[("endpoint", e.name.clone())])
                .set(i64::from(e.failures));
            lag.get_or_create(&[("endpoint", e.name.clone())])
                .set(e.pending.map_or(0.0, |id| age(id, now)));
        }
        let gauges: [(&str, &str, &dyn EncodeMetric); 3] = [
            (
                "webhook_endpoint_state",
                "1 for each webhook endpoint's current state (active, failing, paused, disabled), 0 for the others",
                &state,
            ),
            (
                "webhook_consecutive_failures",
                "Failed delivery attempts of each webhook endpoint since its last 2xx",
                &failures,
            ),
            (
                "webhook_lag_seconds",
                "Age of the oldest event a webhook endpoint matches and has not delivered yet (0 when caught up)",
                &lag,
            ),
        ];
        for (name, help, metric) in gauges {
            let m = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            metric.encode(m)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
            .unwrap_or_else(|e| panic!("{e}"));
        out
    }

    #[test]
    fn an_endpoints_series_render_and_go_when_it_is_forgotten() {
        let mut registry = Registry::with_prefix("livestrom");
        let m = WebhookMetrics::register(&mut registry);
        let mut progress = Progress::start(Uuid::nil());
        let series = m.endpoint(7, "orders", &progress);
        series.attempt(
            &Response::Status {
                status: 204,
                retry_after: None,
                body: String::new(),
            },
            Duration::from_millis(20),
        );
        series.attempt(&Response::Failed("refused".into()), Duration::ZERO);
        series.attempt(
            &Response::Status {
                status: 410,
                retry_after: None,
                body: String::new(),
            },
            Duration::ZERO,
        );
        progress.state = State::Failing;
        progress.failures = 9;
        series.progress(&progress);
        let old = Uuid::now_v7();
        series.pending(Some(old));
        let text = render(&registry);
        for want in [
            "livestrom_webhook_deliveries_total{endpoint=\"orders\",outcome=\"delivered\"} 1",
            "livestrom_webhook_deliveries_total{endpoint=\"orders\",outcome=\"failed\"} 1",
            "livestrom_webhook_deliveries_total{endpoint=\"orders\",outcome=\"gone\"} 1",
            "livestrom_webhook_delivery_duration_seconds_count{endpoint=\"orders\"} 3",
            "livestrom_webhook_endpoint_state{endpoint=\"orders\",state=\"failing\"} 1",
            "livestrom_webhook_endpoint_state{endpoint=\"orders\",state=\"active\"} 0",
            "livestrom_webhook_consecutive_failures{endpoint=\"orders\"} 9",
            "# TYPE livestrom_webhook_lag_seconds gauge",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
        assert!(age(old, Utc::now() + chrono::Duration::seconds(5)) >= 5.0);
        assert_eq!(age(Uuid::nil(), Utc::now()), 0.0);
        series.pending(None);
        assert!(render(&registry).contains("livestrom_webhook_lag_seconds{endpoint=\"orders\"} 0"));

        m.forget(7);
        // A late report of the deleted endpoint's worker changes nothing.
        series.progress(&progress);
        series.attempt(&Response::Failed("late".into()), Duration::ZERO);
        let text = render(&registry);
        assert!(!text.contains("orders"), "{text}");
    }
}
