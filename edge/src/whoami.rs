//! `GET /v1/whoami`: the presented key's name, scopes and limits (never the
//! key), so a user can check which key a client is using and what it may do.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::auth::AnyKey;
use crate::AppState;

/// The response body.
#[derive(Debug, Serialize)]
pub struct WhoAmI {
    /// The key's name.
    pub name: String,
    /// Its scopes (`stream:read`, `admin`).
    pub scopes: Vec<&'static str>,
    /// Cap on filter terms per request.
    pub max_filters: usize,
    /// Cap on concurrent streams.
    pub max_streams: usize,
    /// Requests per second.
    pub rate: f64,
    /// Requests allowed in a burst.
    pub burst: u32,
    /// Streams the key has open now.
    pub open_streams: usize,
}

/// The handler: any valid key (whatever its scopes), counted against its rate.
pub async fn handler(AnyKey(key): AnyKey, State(state): State<AppState>) -> Response {
    let body = WhoAmI {
        name: key.name.clone(),
        scopes: key.scopes.iter().map(|s| s.as_str()).collect(),
        max_filters: key.max_filters,
        max_streams: key.max_streams,
        rate: key.rate,
        burst: crate::limits::burst_of(key.rate),
        open_streams: state.limits.open_streams(key.id),
    };
    let mut res = Json(body).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
