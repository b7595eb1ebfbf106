//! Livestrom edge: `GET /v1/stream` (SSE) and `GET /v1/events`, authenticated
//! with API keys, filtered server-side, resumable without gaps.
//!
//! Request flow: `auth` (key → [`auth::KeyInfo`], rate limit) → `filter`
//! (query → [`filter::Filter`]) → `stream` (replay from the event log, then
//! live from the `hub`) → frames. Every error is a `problem` (RFC 9457).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use livestrom_engine::{EventLog, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod access;
pub mod auth;
pub mod events;
pub mod filter;
pub mod hub;
pub mod keys;
pub mod limits;
pub mod problem;
pub mod stream;
pub mod whoami;

/// Edge settings from `[edge]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// SSE keep-alive comment interval.
    pub keepalive: Duration,
    /// Allowed CORS origins (`*` = any).
    pub cors_origins: Vec<String>,
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
    /// Live fan-out of committed events to subscribers.
    pub hub: hub::Hub,
    /// API keys, cached and refreshed from the database.
    pub keys: keys::KeyStore,
    /// Per-key and per-IP limiters, stream counters.
    pub limits: limits::Limits,
    /// Settings.
    pub settings: Settings,
    /// Fires on shutdown: open streams end cleanly.
    pub shutdown: CancellationToken,
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
    /// The key store could not be read.
    #[error("api keys: {0}")]
    Keys(String),
}

impl AppState {
    /// Builds the state on top of a store: starts the hub (live feed from the
    /// store's bus) and the key cache refresher; both stop on `shutdown`.
    pub async fn new(
        store: &Store,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> Result<Self, EdgeError> {
        let log: Arc<dyn EventLog> = Arc::new(store.clone());
        let hub = hub::Hub::start(store.bus(), log.clone(), shutdown.clone());
        let keys = keys::KeyStore::open(store, shutdown.clone())
            .await
            .map_err(|e| EdgeError::Keys(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(StateInner {
                log,
                hub,
                keys,
                limits: limits::Limits::new(),
                settings,
                shutdown,
            }),
        })
    }
}

/// The edge's router.
pub fn app(state: AppState) -> Router {
    let cors = problem::cors_layer(&state.settings.cors_origins);
    Router::new()
        .route("/v1/stream", axum::routing::get(stream::handler))
        .route("/v1/events", axum::routing::get(events::handler))
        .route("/v1/whoami", axum::routing::get(whoami::handler))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(cors)
        // Outermost: every response (CORS preflights, 404s) gets a request id
        // and an access-log line with keys redacted.
        .layer(axum::middleware::from_fn(access::middleware))
        .with_state(state)
}

/// Serves the edge on `listener` until `shutdown` fires; open streams end and
/// in-flight requests finish.
///
/// A plain HTTP/1.1 accept loop (hyper's `http1` connection builder): per
/// connection it keeps only hyper's HTTP/1 state, the router clone and the
/// peer address (`ConnectInfo<SocketAddr>` for the handlers). Response
/// bodies are queued to the socket with vectored writes rather than copied
/// into hyper's write buffer, and `TCP_NODELAY` is set so a frame goes out
/// as soon as it is written.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = app(state);
    let conns = tokio_util::task::TaskTracker::new();
    loop {
        let (sock, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Per-connection failures (reset before accept) and
                    // descriptor exhaustion are transient: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(e) = sock.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
        let app = app.clone();
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                tower::ServiceExt::oneshot(app.clone(), req)
            });
        let stop = shutdown.clone();
        conns.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .writev(true)
                .serve_connection(hyper_util::rt::TokioIo::new(sock), svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    conns.close();
    conns.wait().await;
    Ok(())
}
