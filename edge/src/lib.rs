//! Livestrom edge: `GET /v1/stream` (SSE) and `GET /v1/events`, authenticated
//! with API keys, filtered server-side, resumable without gaps.
//!
//! Request flow: `auth` (key → [`livestrom_engine::keys::KeyInfo`] through
//! the engine's key cache, rate limit) → `filter` (query → [`filter::Filter`])
//! → `stream` (replay from the event log, then live from the `hub`) → frames.
//! Every error is a `problem` (RFC 9457).
//!
//! The edge reads only through the engine's seams, bundled in a
//! [`livestrom_engine::Backend`]: the event log, the live feed, the key
//! store and the sources' state. It names no store and no database type.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post, MethodRouter};
use axum::Router;
use livestrom_engine::backend::SourceStates;
use livestrom_engine::keys::{KeyCache, KeyError};
use livestrom_engine::log::LogError;
use livestrom_engine::readiness::Readiness;
use livestrom_engine::{Backend, EventLog, Metrics};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod access;
pub mod activity;
pub mod admin;
pub mod auth;
pub mod catalog;
pub mod events;
pub mod filter;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod reads;
pub mod ready;
pub mod server;
pub mod status;
pub mod stream;
pub mod webhooks;
pub mod whoami;

/// Edge settings from `[edge]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// SSE keep-alive comment interval.
    pub keepalive: Duration,
    /// Allowed CORS origins (`*` = any).
    pub cors_origins: Vec<String>,
    /// `GET /metrics` needs `Authorization: Bearer <token>` when set
    /// (`edge.metrics_token`); open when None.
    pub metrics_token: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(25),
            cors_origins: vec!["*".to_owned()],
            metrics_token: None,
        }
    }
}

/// Shared state of every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<StateInner>,
}

/// What handlers share.
pub struct StateInner {
    /// The durable event log (replay, `/v1/events`).
    pub log: Arc<dyn EventLog>,
    /// The bound on blocking reads made for requests (of `log` and
    /// `sources`).
    pub reads: reads::Reads,
    /// The sources' stored state, for operator views (`admin`).
    pub sources: Arc<dyn SourceStates>,
    /// The configured sources' type and tags, for operator views; filled
    /// (and refilled on reload) by whoever loads the config.
    pub catalog: catalog::Catalog,
    /// Live fan-out of committed events to subscribers.
    pub hub: hub::Hub,
    /// API keys, cached and refreshed from the key backend.
    pub keys: KeyCache,
    /// Per-key and per-IP limiters, stream counters.
    pub limits: limits::Limits,
    /// Settings.
    pub settings: Settings,
    /// Fires on shutdown: open streams end cleanly.
    pub shutdown: CancellationToken,
    /// The engine side's readiness checks (`GET /readyz`).
    pub readiness: Arc<dyn Readiness>,
    /// The process's registry, rendered by `GET /metrics`.
    pub registry: Metrics,
    /// The edge's own series.
    pub metrics: metrics::EdgeMetrics,
    /// Webhook endpoints (`/v1/admin/webhooks`), managed through the engine.
    pub webhooks: livestrom_engine::webhooks::WebhookAdmin,
    /// Open connections, counted by the server loop ([`serve`] and
    /// [`server::serve_counted`] with this counter).
    pub connections: Arc<metrics::Connections>,
}

impl std::ops::Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.inner
    }
}

/// Errors starting the edge.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The keys could not be loaded. Not a `#[source]`: the message shows it.
    #[error("api keys: {0}")]
    Keys(KeyError),
    /// The event log could not be read (the hub starts after its head).
    #[error("event log: {0}")]
    Log(#[from] LogError),
}

impl AppState {
    /// Builds the state on the backend's seams (the edge knows nothing else
    /// of it): starts the hub on the live feed and the key cache refresher;
    /// both stop on `shutdown`.
    pub async fn new(
        backend: Backend,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> Result<Self, EdgeError> {
        let edge_metrics = metrics::EdgeMetrics::register(&backend.metrics);
        let hub = hub::Hub::start(&*backend.live, backend.log.clone(), shutdown.clone()).await?;
        hub.set_metrics(edge_metrics.clone());
        hub.start_keepalive(settings.keepalive, shutdown.clone());
        let keys = KeyCache::open(backend.keys, shutdown.clone())
            .await
            .map_err(EdgeError::Keys)?;
        Ok(Self {
            inner: Arc::new(StateInner {
                log: backend.log,
                reads: reads::Reads::default(),
                sources: backend.sources,
                catalog: catalog::Catalog::default(),
                hub,
                keys,
                limits: limits::Limits::new(),
                settings,
                shutdown,
                readiness: backend.readiness,
                registry: backend.metrics,
                metrics: edge_metrics,
                webhooks: backend.webhooks,
                connections: Arc::new(metrics::Connections::default()),
            }),
        })
    }
}

/// Every route of the edge, by path. [`app`] builds its router from this
/// list, and a test checks the OpenAPI document (`/v1/openapi.json`)
/// against it, so a route cannot be added without being documented.
pub fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    vec![
        ("/", get(status::index)),
        (status::SCRIPT_PATH, get(status::script)),
        (status::STYLE_PATH, get(status::style)),
        ("/v1/openapi.json", get(openapi::handler)),
        ("/v1/stream", get(stream::handler)),
        ("/v1/events", get(events::handler)),
        ("/v1/whoami", get(whoami::handler)),
        ("/v1/admin/sources", get(admin::sources)),
        ("/v1/admin/stats", get(admin::stats)),
        ("/v1/admin/activity", get(activity::handler)),
        (
            "/v1/admin/webhooks",
            get(webhooks::list).post(webhooks::create),
        ),
        (
            "/v1/admin/webhooks/{name}",
            get(webhooks::get)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        ),
        ("/v1/admin/webhooks/{name}/enable", post(webhooks::enable)),
        ("/v1/admin/webhooks/{name}/disable", post(webhooks::disable)),
        (
            "/v1/admin/webhooks/{name}/rotate-secret",
            post(webhooks::rotate_secret),
        ),
        ("/v1/admin/webhooks/{name}/replay", post(webhooks::replay)),
        ("/healthz", get(|| async { "ok\n" })),
        ("/readyz", get(ready::handler)),
        ("/metrics", get(metrics::handler)),
    ]
}

/// The edge's router.
pub fn app(state: AppState) -> Router {
    let cors = problem::cors_layer(&state.settings.cors_origins);
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, handler)| {
            router.route(path, handler)
        })
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(cors)
        // Outermost: every response (CORS preflights, 404s) gets a request id
        // and an access-log line with keys redacted.
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            access::middleware,
        ))
        .with_state(state)
}

/// Serves the edge on `listener` until `shutdown` fires; open streams end and
/// in-flight requests finish. See [`server`] for how connections are served.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let connections = state.connections.clone();
    server::serve_counted(
        listener,
        app(state),
        shutdown,
        server::Options::default(),
        connections,
    )
    .await
}
