//! Authentication: the API key from `X-API-Key`, `Authorization: Bearer` or
//! `?api_key=`, verified against the key cache; scope and rate checks.
//!
//! CONTRACT (owned by the auth/keys module's owner).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tokio_util::sync::CancellationToken;

use crate::problem::Problem;
use crate::AppState;

/// A permission of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `stream:read`: /v1/stream and /v1/events.
    StreamRead,
    /// `admin`: operator pages.
    Admin,
}

/// A verified, unrevoked key and its limits.
#[derive(Debug)]
pub struct KeyInfo {
    /// Database id (the limiter key).
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Cap on filter terms per request.
    pub max_filters: usize,
    /// Cap on concurrent streams.
    pub max_streams: usize,
    /// Requests per second (burst twice that).
    pub rate: f64,
    /// Fires when the key is revoked (or its limits change): open streams close.
    pub revoked: CancellationToken,
}

impl KeyInfo {
    /// Whether the key has a scope.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// Extractor: a key with `stream:read` that is within its request rate.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Arc<KeyInfo>);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let _ = (parts, state);
        Err(Problem::unauthorized("authentication not built yet"))
    }
}
