//! `/v1/admin/webhooks`: what `livestrom webhook` does, over HTTP, for keys
//! with the `admin` scope. The edge writes nothing itself: every call goes
//! to the engine's `WebhookAdmin` (through the store's writer on one
//! node; refused on a cluster), which checks filters with the stream's
//! parser — a bad filter is the stream's 400, word for word.
//!
//! - `GET /v1/admin/webhooks` — every endpoint (never a secret);
//! - `POST /v1/admin/webhooks` — create: `{"name","url","source":[…],
//!   "source_type":[…],"tag":[…],"keyword":[…],"since","concurrency","timeout"}`
//!   → 201 with the secret, shown once;
//! - `GET|PATCH|DELETE /v1/admin/webhooks/{name}`;
//! - `POST /v1/admin/webhooks/{name}/enable|disable|rotate-secret|replay`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use livestrom_engine::config::parse_duration;
use livestrom_engine::webhooks::{
    EndpointInfo, EndpointUpdate, FilterTerms, NewEndpoint, Since, WebhookError, DEFAULT_TIMEOUT,
};
use serde::{Deserialize, Serialize};

use crate::admin::{no_store, AdminKey};
use crate::problem::Problem;
use crate::AppState;

/// The body of `POST /v1/admin/webhooks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Create {
    name: String,
    url: String,
    source: Option<Vec<String>>,
    source_type: Option<Vec<String>>,
    tag: Option<Vec<String>>,
    keyword: Option<Vec<String>>,
    since: Option<String>,
    concurrency: Option<usize>,
    timeout: Option<String>,
}

/// Filter lists as in a body: the stream's parameter names.
#[derive(Debug, Default)]
struct Filters {
    source: Option<Vec<String>>,
    source_type: Option<Vec<String>>,
    tag: Option<Vec<String>>,
    keyword: Option<Vec<String>>,
}

impl Filters {
    fn given(&self) -> bool {
        self.source.is_some()
            || self.source_type.is_some()
            || self.tag.is_some()
            || self.keyword.is_some()
    }

    fn terms(self) -> FilterTerms {
        FilterTerms {
            source: self.source.unwrap_or_default(),
            source_type: self.source_type.unwrap_or_default(),
            tag: self.tag.unwrap_or_default(),
            keyword: self.keyword.unwrap_or_default(),
        }
    }
}

/// The body of `PATCH /v1/admin/webhooks/{name}`: what changes. Any filter
/// list replaces all of the endpoint's filters (all lists empty: every event).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    url: Option<String>,
    source: Option<Vec<String>>,
    source_type: Option<Vec<String>>,
    tag: Option<Vec<String>>,
    keyword: Option<Vec<String>>,
    concurrency: Option<usize>,
    timeout: Option<String>,
}

/// The body of `POST /v1/admin/webhooks/{name}/replay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    since: String,
}

/// A new secret, shown once.
#[derive(Debug, Serialize)]
struct Created {
    secret: String,
    webhook: EndpointInfo,
}

/// A rotated secret, shown once.
#[derive(Debug, Serialize)]
struct Rotated {
    secret: String,
    previous_secret_until: DateTime<Utc>,
}

/// The body of `GET /v1/admin/webhooks`.
#[derive(Debug, Serialize)]
struct List {
    webhooks: Vec<EndpointInfo>,
}

/// `GET /v1/admin/webhooks`.
pub async fn list(_: AdminKey, State(state): State<AppState>) -> Result<Response, Problem> {
    let webhooks = state.webhooks.list().await.map_err(problem)?;
    Ok(no_store(Json(List { webhooks }).into_response()))
}

/// `POST /v1/admin/webhooks`.
pub async fn create(
    _: AdminKey,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, Problem> {
    let c: Create = parse(&body)?;
    let since = match c.since.as_deref() {
        None => Since::Now,
        Some(s) => Since::parse(s)?,
    };
    let new = NewEndpoint {
        name: c.name,
        url: c.url,
        filters: Filters {
            source: c.source,
            source_type: c.source_type,
            tag: c.tag,
            keyword: c.keyword,
        }
        .terms(),
        since,
        concurrency: c.concurrency.unwrap_or(1),
        timeout: timeout(c.timeout.as_deref())?.unwrap_or(DEFAULT_TIMEOUT),
    };
    let (secret, webhook) = state.webhooks.create(new).await.map_err(problem)?;
    let body = Created {
        secret: secret.expose().to_owned(),
        webhook,
    };
    Ok(no_store((StatusCode::CREATED, Json(body)).into_response()))
}

/// `GET /v1/admin/webhooks/{name}`.
pub async fn get(
    _: AdminKey,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    one(state.webhooks.get(&name).await)
}

/// `PATCH /v1/admin/webhooks/{name}`.
pub async fn update(
    _: AdminKey,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let u: Update = parse(&body)?;
    let filters = Filters {
        source: u.source,
        source_type: u.source_type,
        tag: u.tag,
        keyword: u.keyword,
    };
    let change = EndpointUpdate {
        url: u.url,
        filters: filters.given().then(|| filters.terms()),
        concurrency: u.concurrency,
        timeout: timeout(u.timeout.as_deref())?,
    };
    one(state.webhooks.update(&name, change).await)
}

/// `DELETE /v1/admin/webhooks/{name}`.
pub async fn delete(
    _: AdminKey,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    state.webhooks.delete(&name).await.map_err(problem)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/admin/webhooks/{name}/enable`.
pub async fn enable(
    _: AdminKey,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    one(state.webhooks.set_enabled(&name, true).await)
}

/// `POST /v1/admin/webhooks/{name}/disable`.
pub async fn disable(
    _: AdminKey,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    one(state.webhooks.set_enabled(&name, false).await)
}

/// `POST /v1/admin/webhooks/{name}/rotate-secret`.
pub async fn rotate_secret(
    _: AdminKey,
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let r = state.webhooks.rotate_secret(&name).await.map_err(problem)?;
    let body = Rotated {
        secret: r.secret.expose().to_owned(),
        previous_secret_until: r.previous_until,
    };
    Ok(no_store(Json(body).into_response()))
}

/// `POST /v1/admin/webhooks/{name}/replay`.
pub async fn replay(
    _: AdminKey,
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let r: Replay = parse(&body)?;
    let since = Since::parse(&r.since)?;
    one(state.webhooks.replay(&name, since).await)
}

fn one(result: Result<EndpointInfo, WebhookError>) -> Result<Response, Problem> {
    let info = result.map_err(problem)?;
    Ok(no_store(Json(info).into_response()))
}

/// A JSON body, or a 400 saying what is wrong with it.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body)
        .map_err(|e| invalid_body(format!("the request body is not the expected JSON: {e}")))
}

fn timeout(raw: Option<&str>) -> Result<Option<std::time::Duration>, Problem> {
    raw.map(|t| parse_duration(t).map_err(|e| invalid_body(format!("timeout: {e}"))))
        .transpose()
}

fn invalid_body(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-body",
        "Invalid request body",
        detail,
    )
}

/// A webhook error as the problem a client gets.
fn problem(e: WebhookError) -> Problem {
    match e {
        WebhookError::Filter(f) => f.into(),
        WebhookError::CursorExpired { .. } => Problem::gone(e.to_string()),
        WebhookError::CursorAhead(_) => Problem::bad_param("since", e.to_string()),
        WebhookError::InvalidName { .. }
        | WebhookError::InvalidUrl { .. }
        | WebhookError::InvalidSetting { .. }
        | WebhookError::NothingToUpdate => invalid_body(e.to_string()),
        WebhookError::NameTaken(_) => Problem::new(
            StatusCode::CONFLICT,
            "webhook-exists",
            "Webhook name taken",
            e.to_string(),
        ),
        WebhookError::NotFound(_) => Problem::new(
            StatusCode::NOT_FOUND,
            "webhook-not-found",
            "No such webhook",
            e.to_string(),
        ),
        WebhookError::Unsupported(_) => Problem::new(
            StatusCode::NOT_IMPLEMENTED,
            "webhooks-unsupported",
            "Webhooks not available",
            e.to_string(),
        ),
        WebhookError::Storage(_) | WebhookError::Task(_) => crate::stream::internal(e),
    }
}
