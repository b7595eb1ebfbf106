//! `GET /readyz`: 200 when this node can serve — the engine side's checks
//! (`Backend::readiness`: the log takes writes, the scheduler turns, the
//! cluster is connected) and the edge's own (not shutting down, room for
//! another connection) — else 503 with a problem body naming each failed
//! check. `GET /healthz` stays the liveness probe (the process answers).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use livestrom_engine::readiness::NotReady;
use serde::Serialize;

use crate::AppState;

/// The 503 body: a problem (RFC 9457) with the failed checks as an extension.
#[derive(Debug, Serialize)]
struct NotReadyProblem<'a> {
    #[serde(rename = "type")]
    type_: &'static str,
    title: &'static str,
    status: u16,
    detail: String,
    /// Every failed check, `{check, detail}`.
    checks: &'a [NotReady],
}

/// The handler.
pub async fn handler(State(state): State<AppState>) -> Response {
    let mut failed = edge_checks(&state);
    failed.extend(state.readiness.check().await);
    if failed.is_empty() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    let detail = failed
        .iter()
        .map(|n| format!("{}: {}", n.check, n.detail))
        .collect::<Vec<_>>()
        .join("; ");
    let body = NotReadyProblem {
        type_: "https://livestrom.dev/problems/unavailable",
        title: "Service unavailable",
        status: 503,
        detail: format!("not ready: {detail}"),
        checks: &failed,
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut res = (StatusCode::SERVICE_UNAVAILABLE, json).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The edge's own checks: it accepts streams (not shutting down, the hub
/// follows the live feed, room for another connection).
fn edge_checks(state: &AppState) -> Vec<NotReady> {
    let mut out = Vec::new();
    if state.shutdown.is_cancelled() {
        out.push(NotReady {
            check: "edge",
            detail: "shutting down".to_owned(),
        });
    } else if state.hub.is_closed() {
        out.push(NotReady {
            check: "edge",
            detail: "the live feed has stopped".to_owned(),
        });
    }
    // This request holds one connection: at the limit, the next client is
    // refused with a 503.
    let (open, max) = (state.connections.open(), state.connections.max());
    if max > 0 && open >= max {
        out.push(NotReady {
            check: "edge",
            detail: format!("at its connection limit ({open} of {max} open, edge.max_connections)"),
        });
    }
    out
}
