//! The edge's metrics and `GET /metrics`: refused responses by route,
//! stream disconnects by reason, replayed events, ingest-to-delivery
//! latency, the hub's lag, subscribers and connections — registered once in
//! the process's registry (`Backend::metrics`), every handle created up
//! front so the request and event paths only increment atomics.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use livestrom_engine::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::problem::Problem;
use crate::AppState;

/// Routes a response is counted under (label `route`); anything else is `other`.
pub const ROUTES: [&str; 8] = [
    "/v1/stream",
    "/v1/events",
    "/v1/whoami",
    "/v1/admin/sources",
    "/v1/admin/stats",
    "/metrics",
    "/readyz",
    "other",
];

/// Statuses counted by route (label `status`): the refusals a client or an
/// operator acts on.
pub const STATUSES: [u16; 5] = [400, 401, 403, 410, 429];

/// Why a stream ended (label `reason` of `livestrom_stream_disconnects_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// Its queue overflowed while live: the client reads too slowly.
    Slow,
    /// Its key was revoked.
    Revoked,
    /// The server is shutting down.
    Shutdown,
    /// The client closed the connection.
    Client,
    /// The live feed ended under it (the hub's catch-up read failed).
    HubEnded,
    /// Retention pruned events after its position while it replayed (410).
    Gone,
    /// A replay read failed.
    Error,
}

impl Disconnect {
    const ALL: [Self; 7] = [
        Self::Slow,
        Self::Revoked,
        Self::Shutdown,
        Self::Client,
        Self::HubEnded,
        Self::Gone,
        Self::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slow => "slow",
            Self::Revoked => "revoked",
            Self::Shutdown => "shutdown",
            Self::Client => "client",
            Self::HubEnded => "hub_ended",
            Self::Gone => "gone",
            Self::Error => "error",
        }
    }
}

type Labels = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// The edge's series. Cheap to clone (handles are shared atomics).
#[derive(Clone)]
pub struct EdgeMetrics {
    inner: Arc<Inner>,
}

struct Inner {
    /// `http_responses_total{route, status}`, by `ROUTES` then `STATUSES` position.
    responses: Vec<Counter>,
    /// `stream_disconnects_total{reason}`, by `Disconnect` position.
    disconnects: Vec<Counter>,
    /// `replay_events_total{endpoint="stream"}`.
    replay_stream: Counter,
    /// `replay_events_total{endpoint="events"}`.
    replay_events: Counter,
    /// `delivery_latency_seconds`.
    delivery: Histogram,
    /// `hub_lagged_total`.
    hub_lagged: Counter,
    /// `hub_fanout_delay_seconds`.
    hub_delay: Histogram,
    /// `stream_subscribers`, set at each scrape.
    subscribers: Gauge,
    /// `edge_connections`, set at each scrape.
    connections: Gauge,
    /// `runtime_tasks`, set at each scrape: tasks alive on the process's
    /// async runtime, so a leak (of fetches, streams, connections) shows as
    /// growth that never comes back down.
    tasks: Gauge,
}

impl std::fmt::Debug for EdgeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeMetrics").finish_non_exhaustive()
    }
}

fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl EdgeMetrics {
    /// Registers the edge's series in `registry` (once per process).
    pub fn register(registry: &Metrics) -> Self {
        let responses_family = Family::<Labels2, Counter>::default();
        let mut responses = Vec::with_capacity(ROUTES.len() * STATUSES.len());
        for route in ROUTES {
            for status in STATUSES {
                responses.push(
                    responses_family
                        .get_or_create_owned(&[("route", route), ("status", status_str(status))]),
                );
            }
        }
        registry.register(
            "http_responses",
            "Refused requests (400, 401, 403, 410, 429) by route",
            responses_family,
        );
        let disconnects_family = Family::<Labels, Counter>::default();
        let disconnects = Disconnect::ALL
            .iter()
            .map(|d| disconnects_family.get_or_create_owned(&[("reason", d.as_str())]))
            .collect();
        registry.register(
            "stream_disconnects",
            "Streams ended, by reason (slow, revoked, shutdown, client, hub_ended, gone, error)",
            disconnects_family,
        );
        let replay_family = Family::<Labels, Counter>::default();
        let replay_stream = replay_family.get_or_create_owned(&[("endpoint", "stream")]);
        let replay_events = replay_family.get_or_create_owned(&[("endpoint", "events")]);
        registry.register(
            "replay_events",
            "Events served from the log (a stream's replay, /v1/events pages)",
            replay_family,
        );
        let delivery = latency_buckets();
        registry.register(
            "delivery_latency_seconds",
            "Time from an event's commit to its frame being handed to a live stream's connection",
            delivery.clone(),
        );
        let hub_lagged = Counter::default();
        registry.register(
            "hub_lagged",
            "Times the hub fell behind the live feed and re-read the gap from the log",
            hub_lagged.clone(),
        );
        let hub_delay = latency_buckets();
        registry.register(
            "hub_fanout_delay_seconds",
            "Time from a batch's commit to its fan-out by the hub (the hub's lag)",
            hub_delay.clone(),
        );
        let subscribers = Gauge::default();
        registry.register(
            "stream_subscribers",
            "Streams registered with the hub",
            subscribers.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "edge_connections",
            "Client connections open (any state)",
            connections.clone(),
        );
        let tasks = Gauge::default();
        registry.register(
            "runtime_tasks",
            "Tasks alive on the process's async runtime (growth that never comes back down is a leak)",
            tasks.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                responses,
                disconnects,
                replay_stream,
                replay_events,
                delivery,
                hub_lagged,
                hub_delay,
                subscribers,
                connections,
                tasks,
            }),
        }
    }

    /// Counts a response if its status is one of [`STATUSES`].
    pub fn response(&self, route: &str, status: u16) {
        let Some(s) = STATUSES.iter().position(|x| *x == status) else {
            return;
        };
        let r = ROUTES
            .iter()
            .position(|x| *x == route)
            .unwrap_or(ROUTES.len() - 1);
        if let Some(c) = self.inner.responses.get(r * STATUSES.len() + s) {
            c.inc();
        }
    }

    /// Counts a stream that ended.
    pub fn disconnect(&self, why: Disconnect) {
        let i = Disconnect::ALL.iter().position(|x| *x == why).unwrap_or(0);
        if let Some(c) = self.inner.disconnects.get(i) {
            c.inc();
        }
    }

    /// Counts events a stream replayed from the log.
    pub fn replayed_stream(&self, n: u64) {
        self.inner.replay_stream.inc_by(n);
    }

    /// Counts events a `/v1/events` page served.
    pub fn replayed_page(&self, n: u64) {
        self.inner.replay_events.inc_by(n);
    }

    /// Records a live frame handed to its connection, committed at
    /// `committed_ms` (Unix milliseconds), against `now_ms`.
    pub fn delivered(&self, committed_ms: i64, now_ms: i64) {
        self.inner
            .delivery
            .observe(millis_between(committed_ms, now_ms));
    }

    /// Counts a lag episode of the hub.
    pub fn hub_lagged(&self) {
        self.inner.hub_lagged.inc();
    }

    /// Records the hub's fan-out of an event committed at `committed_ms`.
    pub fn hub_fanned_out(&self, committed_ms: i64, now_ms: i64) {
        self.inner
            .hub_delay
            .observe(millis_between(committed_ms, now_ms));
    }

    /// Sets the gauges read from live state at scrape time.
    pub fn set_gauges(&self, subscribers: usize, connections: usize) {
        self.inner
            .subscribers
            .set(i64::try_from(subscribers).unwrap_or(i64::MAX));
        self.inner
            .connections
            .set(i64::try_from(connections).unwrap_or(i64::MAX));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let alive = rt.metrics().num_alive_tasks();
            self.inner
                .tasks
                .set(i64::try_from(alive).unwrap_or(i64::MAX));
        }
    }
}

/// Seconds from `from_ms` to `to_ms`, never negative (clocks of a
/// cluster's nodes differ a little).
fn millis_between(from_ms: i64, to_ms: i64) -> f64 {
    to_ms.saturating_sub(from_ms).max(0) as f64 / 1000.0
}

fn status_str(status: u16) -> &'static str {
    match status {
        400 => "400",
        401 => "401",
        403 => "403",
        410 => "410",
        _ => "429",
    }
}

/// The wall clock in Unix milliseconds, read once per written chunk.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Open client connections and the most allowed, shared by the server
/// loop (which counts) and readiness and `/metrics` (which read).
#[derive(Debug, Default)]
pub struct Connections {
    open: AtomicU64,
    max: AtomicI64,
}

impl Connections {
    /// A counter for a server allowing `max` connections.
    pub fn new(max: usize) -> Self {
        Self {
            open: AtomicU64::new(0),
            max: AtomicI64::new(i64::try_from(max).unwrap_or(i64::MAX)),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        usize::try_from(self.open.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// The configured maximum (0: unknown, the server was started elsewhere).
    pub fn max(&self) -> usize {
        usize::try_from(self.max.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Sets the maximum (the server's `max_connections`).
    pub fn set_max(&self, max: usize) {
        self.max
            .store(i64::try_from(max).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// A connection opened; it counts until the guard drops.
    pub fn opened(self: &Arc<Self>) -> ConnectionGuard {
        self.open.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(self.clone())
    }
}

/// One open connection (see [`Connections::opened`]).
#[derive(Debug)]
pub struct ConnectionGuard(Arc<Connections>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `GET /metrics`: every series of the process in the Prometheus text
/// format. Open unless `edge.metrics_token` is set; then it needs
/// `Authorization: Bearer <token>`.
pub async fn handler(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    if let Some(token) = &state.settings.metrics_token {
        if !bearer_matches(&headers, token) {
            return Err(Problem::unauthorized(
                "/metrics needs `Authorization: Bearer <edge.metrics_token>`",
            ));
        }
    }
    state
        .metrics
        .set_gauges(state.hub.subscribers(), state.connections.open());
    let text = state.registry.render();
    let mut res = text.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(livestrom_engine::metrics::CONTENT_TYPE),
    );
    Ok(res)
}

/// Whether the request carries `Authorization: Bearer <token>` (compared
/// in constant time).
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim())
        })
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
