//! `GET /v1/events`: a JSON page of events, same filters and cursor rules.
//!
//! For clients that cannot hold a stream open (serverless functions, cron
//! jobs). The response is
//! `{"events":[StreamEvent…],"next_cursor":"<id>","has_more":bool}`:
//! pass `next_cursor` as `since` on the next call. `next_cursor` is always an
//! id: the last event returned, or the last event the filter passed over (so
//! the next call does not rescan it), or — with no cursor given — the log's
//! watermark ("from now on": no event committed later is at or below it).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use livestrom_engine::log::{LogError, ReadScope};
use livestrom_engine::EventLog;
use uuid::Uuid;

use crate::auth::Authenticated;
use crate::filter::{parse_query, Endpoint, Filter, DEFAULT_LIMIT};
use crate::problem::Problem;
use crate::stream::{check_cursor, cursor_from, cursor_param, internal, Start};
use crate::AppState;

/// Most log rows one request scans (bounds the cost of a very selective
/// filter; `has_more` tells the client to continue).
pub const MAX_SCAN: usize = 20_000;
/// A page stops taking events once their JSON reaches this size (it always
/// holds at least one); `has_more` says there is more.
pub const MAX_PAGE_BYTES: usize = 16 << 20;

/// A page of events, as raw stored JSON plus paging state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Matching events' JSON, ascending by id.
    pub events: Vec<Arc<str>>,
    /// Where the next call continues.
    pub next_cursor: Uuid,
    /// Whether the scan stopped before the end of the log.
    pub has_more: bool,
}

/// The handler.
pub async fn handler(
    State(state): State<AppState>,
    Authenticated(key): Authenticated,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let q = parse_query(query.as_deref(), Endpoint::Events, key.max_filters)?;
    let cursor = cursor_from(&headers, q.since)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    let page = match check_cursor(&state, cursor, cursor_param(&headers)).await? {
        Start::Now(_) => {
            // Not the clock (an event minted just before and committed just
            // after would be passed) and not the head (on an idle log it
            // falls out of the retention window): the log's watermark.
            let log = state.log.clone();
            let next = state
                .reads
                .run(move || log.watermark())
                .await
                .map_err(internal)?
                .map_err(internal)?;
            Page {
                events: Vec::new(),
                next_cursor: next,
                has_more: false,
            }
        }
        Start::After(c) => {
            let log = state.log.clone();
            let filter = q.filter;
            state
                .reads
                .run(move || read_page(&*log, &filter, c, limit))
                .await
                .map_err(internal)?
                .map_err(internal)?
        }
    };
    if key.revoked.is_cancelled() {
        return Err(Problem::forbidden("the API key was revoked"));
    }
    state.metrics.replayed_page(page.events.len() as u64);
    let mut res = (StatusCode::OK, render(&page)).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// Reads up to `limit` matching events after `cursor` (blocking; each read
/// is one statement, no transaction spans the loop).
pub fn read_page(
    log: &dyn EventLog,
    filter: &Filter,
    cursor: Uuid,
    limit: usize,
) -> Result<Page, LogError> {
    let scope: ReadScope = filter.read_scope();
    // Without in-Rust filtering every row read is returned: read just enough.
    let chunk = if filter.needs_body() {
        1000
    } else {
        limit.max(1)
    };
    let mut events = Vec::with_capacity(limit.min(1000));
    let mut pos = cursor;
    let mut scanned = 0;
    let mut bytes = 0usize;
    loop {
        let rows = log.read_after(pos, chunk, &scope)?;
        let short = rows.len() < chunk;
        for row in rows {
            if events.len() == limit {
                return Ok(Page {
                    events,
                    next_cursor: pos,
                    has_more: true,
                });
            }
            pos = row.id;
            scanned += 1;
            if filter.matches_json(&row.source_id, row.source_type, &row.json) {
                bytes += row.json.len();
                events.push(row.json);
                if bytes >= MAX_PAGE_BYTES {
                    // Big events (page snapshots): a shorter page, more to come.
                    return Ok(Page {
                        events,
                        next_cursor: pos,
                        has_more: true,
                    });
                }
            }
        }
        if short {
            return Ok(Page {
                events,
                next_cursor: pos,
                has_more: false,
            });
        }
        if events.len() == limit || scanned >= MAX_SCAN {
            return Ok(Page {
                events,
                next_cursor: pos,
                has_more: true,
            });
        }
    }
}

/// `{"events":[…],"next_cursor":"…","has_more":…}` with the stored JSON
/// spliced in as is (never re-serialized).
pub fn render(page: &Page) -> String {
    let size: usize = page.events.iter().map(|e| e.len() + 1).sum::<usize>() + 96;
    let mut out = String::with_capacity(size);
    out.push_str("{\"events\":[");
    for (i, e) in page.events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(e);
    }
    out.push_str("],\"next_cursor\":\"");
    out.push_str(&page.next_cursor.hyphenated().to_string());
    out.push_str("\",\"has_more\":");
    out.push_str(if page.has_more { "true" } else { "false" });
    out.push('}');
    out
}
