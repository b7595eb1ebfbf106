//! Operator endpoints for keys with the `admin` scope (SPEC §4):
//! `GET /v1/admin/sources` — each source's health as the engine stored it
//! (what `livestrom sources list` prints, as JSON), with its type and tags
//! from the config — and `GET /v1/admin/stats` — live subscribers, the live
//! position and the resumable window. `GET /v1/admin/activity` (events per
//! minute) is in [`crate::activity`].

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use livestrom_engine::health::{shown_error, Health};
use livestrom_engine::keys::Scope;
use livestrom_engine::SourceType;
use serde::Serialize;
use uuid::Uuid;

use crate::auth::authorize;
use crate::problem::Problem;
use crate::stream::internal;
use crate::AppState;

/// Extractor: a key with the `admin` scope, within its request rate.
#[derive(Debug, Clone)]
pub struct AdminKey;

impl FromRequestParts<AppState> for AdminKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        authorize(parts, state, Some(Scope::Admin))
            .await
            .map(|_| AdminKey)
    }
}

/// One source in `GET /v1/admin/sources`.
#[derive(Debug, Serialize)]
pub struct SourceHealth {
    /// Source id.
    pub source_id: String,
    /// Its type, from the config (None: not in the config the edge was
    /// given, e.g. a source removed since it last ran).
    pub source_type: Option<SourceType>,
    /// Its tags, from the config.
    pub tags: Vec<String>,
    /// `ok` (last poll succeeded), `failing` (it did not) or `new` (never succeeded yet).
    pub health: &'static str,
    /// Start of the last poll (or upstream connect).
    pub last_poll_at: Option<DateTime<Utc>>,
    /// Last successful poll.
    pub last_success_at: Option<DateTime<Utc>>,
    /// When the next poll is due (polled sources).
    pub next_poll_at: Option<DateTime<Utc>>,
    /// Why the last poll failed.
    pub last_error: Option<String>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Events emitted so far.
    pub events: u64,
    /// Items whose state is kept.
    pub items: u64,
}

/// The body of `GET /v1/admin/sources`.
#[derive(Debug, Serialize)]
pub struct Sources {
    /// Every source the engine has stored state for or the config names, by id.
    pub sources: Vec<SourceHealth>,
}

/// `GET /v1/admin/sources`.
pub async fn sources(_: AdminKey, State(state): State<AppState>) -> Result<Response, Problem> {
    let view = state.sources.clone();
    let states = state
        .reads
        .run(move || view.source_states())
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let catalog = state.catalog.snapshot();
    let mut sources: Vec<SourceHealth> = states
        .into_iter()
        .map(|s| {
            let meta = catalog.get(&s.source_id);
            SourceHealth {
                health: Health::of(Some(&s)).as_str(),
                last_error: shown_error(&s),
                source_type: meta.map(|m| m.source_type),
                tags: meta.map(|m| m.tags.clone()).unwrap_or_default(),
                source_id: s.source_id,
                last_poll_at: s.last_poll_at,
                last_success_at: s.last_success_at,
                next_poll_at: s.next_poll_at,
                consecutive_failures: s.consecutive_failures,
                events: s.event_count,
                items: s.item_count,
            }
        })
        .collect();
    // Configured sources that have no state yet (never polled) are still
    // sources: an operator looking for one must find it, as `new`.
    let stored: std::collections::HashSet<String> =
        sources.iter().map(|s| s.source_id.clone()).collect();
    for (id, meta) in catalog.iter() {
        if !stored.contains(id) {
            sources.push(SourceHealth {
                source_id: id.clone(),
                source_type: Some(meta.source_type),
                tags: meta.tags.clone(),
                health: Health::of(None).as_str(),
                last_poll_at: None,
                last_success_at: None,
                next_poll_at: None,
                last_error: None,
                consecutive_failures: 0,
                events: 0,
                items: 0,
            });
        }
    }
    sources.sort_by(|a, b| a.source_id.cmp(&b.source_id));
    Ok(no_store(Json(Sources { sources }).into_response()))
}

/// The body of `GET /v1/admin/stats`.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// Open live subscriptions (streams past their replay, and replays in progress).
    pub subscribers: usize,
    /// Id of the newest event fanned out live (None before the first).
    pub live_position: Option<Uuid>,
    /// Id of the newest stored event (None when the log is empty).
    pub log_head: Option<Uuid>,
    /// Cursors below this get 410 Gone.
    pub retention_floor: Uuid,
}

/// `GET /v1/admin/stats`.
pub async fn stats(_: AdminKey, State(state): State<AppState>) -> Result<Response, Problem> {
    let log = state.log.clone();
    let (head, floor) = state
        .reads
        .run(move || log.head().map(|h| (h, log.retention_floor())))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let body = Stats {
        subscribers: state.hub.subscribers(),
        live_position: state.hub.position().map(|p| p.id),
        log_head: head,
        retention_floor: floor,
    };
    Ok(no_store(Json(body).into_response()))
}

pub(crate) fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
