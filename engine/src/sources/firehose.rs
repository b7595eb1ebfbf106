//! Firehose APIs: a polled JSON document (`format = "json"`) mapped with JSON
//! pointers, and long-lived NDJSON / SSE upstream streams.
//!
//! CONTRACT (owned by the firehose module's owner).
//!
//! Layout: this file maps JSON values to [`Item`]s (pure) and holds the
//! public entry points; `lines` and `sse` decode bytes (pure); `upstream`
//! holds the connection: batching, idle timeout, reconnect with backoff.

mod lines;
mod sse;
mod upstream;

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{Item, Parsed};
use crate::config::{FieldMap, FirehoseFormat, FirehoseSettings, SourceConfig, SourceKind};
use crate::fetch::{FetchRequest, Fetcher};

pub use sse::{SseDecoder, SseEvent, SseProblems};
pub use upstream::{
    drive_stream, run_upstream_with, Health, StreamDecoder, StreamEnd, UpstreamOptions, RECONNECT,
};

/// Why a firehose document or message could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum FirehoseError {
    /// Not JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The `items` pointer does not point at an array.
    #[error("`items` pointer {0} does not point at an array")]
    NoItems(String),
    /// The array has elements but none maps to an item (a `fields` mapping
    /// that no longer fits the upstream): reported, not passed as empty.
    #[error("the array at {pointer} has {seen} elements but none was kept: none is an object with a value at the mapped id, title, url or content")]
    NothingKept {
        /// Elements in the array.
        seen: usize,
        /// The `items` pointer, as shown to users.
        pointer: String,
    },
}

/// Default JSON pointers for fields the config leaves out.
pub const DEFAULT_FIELDS: [(&str, &str); 4] = [
    ("id", "/id"),
    ("title", "/title"),
    ("url", "/url"),
    ("content", "/content"),
];

/// A mapped JSON document with the count of array elements that were skipped
/// (not objects, or objects with none of the mapped fields).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JsonDocument {
    /// The items, in document order.
    pub parsed: Parsed,
    /// Elements skipped.
    pub skipped: usize,
}

/// Maps a polled JSON document to items (pure). An array whose elements all
/// map to nothing is [`FirehoseError::NothingKept`]; an empty array is fine.
pub fn parse_json(
    body: &[u8],
    settings: &FirehoseSettings,
    base: &Url,
) -> Result<Parsed, FirehoseError> {
    let doc = parse_json_document(body, settings, base)?;
    if doc.parsed.items.is_empty() && doc.skipped > 0 {
        return Err(FirehoseError::NothingKept {
            seen: doc.skipped,
            pointer: display_pointer(settings.items.as_deref().unwrap_or("")),
        });
    }
    if doc.skipped > 0 {
        tracing::debug!(
            skipped = doc.skipped,
            "firehose document: skipped elements that are not objects or map to nothing"
        );
    }
    Ok(doc.parsed)
}

/// [`parse_json`], also reporting how many elements were skipped.
pub fn parse_json_document(
    body: &[u8],
    settings: &FirehoseSettings,
    base: &Url,
) -> Result<JsonDocument, FirehoseError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| FirehoseError::Json(e.to_string()))?;
    let pointer = settings.items.as_deref().unwrap_or("");
    let Some(Value::Array(elements)) = value.pointer(pointer) else {
        return Err(FirehoseError::NoItems(display_pointer(pointer)));
    };
    let mut items = Vec::with_capacity(elements.len());
    let skipped = map_elements(elements, &settings.fields, base, &mut items);
    Ok(JsonDocument {
        parsed: Parsed { items, ttl: None },
        skipped,
    })
}

/// Maps one streamed message (an NDJSON line or an SSE `data`): with an
/// `items` pointer, the array it points at; otherwise an object is one item
/// and an array is one item per element. Returns the number skipped.
pub fn map_message(
    value: &Value,
    settings: &FirehoseSettings,
    base: &Url,
    out: &mut Vec<Item>,
) -> Result<usize, FirehoseError> {
    let target = match settings.items.as_deref() {
        Some(p) => value
            .pointer(p)
            .ok_or_else(|| FirehoseError::NoItems(display_pointer(p)))?,
        None => value,
    };
    match target {
        Value::Array(elements) => Ok(map_elements(elements, &settings.fields, base, out)),
        Value::Object(_) if settings.items.is_none() => Ok(map_elements(
            std::slice::from_ref(target),
            &settings.fields,
            base,
            out,
        )),
        _ if settings.items.is_some() => Err(FirehoseError::NoItems(display_pointer(
            settings.items.as_deref().unwrap_or(""),
        ))),
        _ => Ok(1),
    }
}

/// Maps one element with the field pointers; `None` when it is not an object
/// or none of the fields is present.
pub fn map_item(element: &Value, fields: &FieldMap, base: &Url) -> Option<Item> {
    if !element.is_object() {
        return None;
    }
    let get =
        |ptr: &Option<String>, default: &str| element.pointer(ptr.as_deref().unwrap_or(default));
    let guid = get(&fields.id, DEFAULT_FIELDS[0].1)
        .and_then(scalar_text)
        .filter(|s| !s.is_empty());
    let title = get(&fields.title, DEFAULT_FIELDS[1].1)
        .and_then(scalar_text)
        .unwrap_or_default();
    let url = get(&fields.url, DEFAULT_FIELDS[2].1)
        .and_then(scalar_text)
        .and_then(|u| resolve(base, &u));
    let content = get(&fields.content, DEFAULT_FIELDS[3].1)
        .and_then(scalar_text)
        .unwrap_or_default();
    if guid.is_none() && url.is_none() && title.is_empty() && content.is_empty() {
        return None;
    }
    Some(Item {
        guid,
        url,
        title,
        content,
        ..Item::default()
    })
}

fn map_elements(elements: &[Value], fields: &FieldMap, base: &Url, out: &mut Vec<Item>) -> usize {
    let before = out.len();
    out.extend(elements.iter().filter_map(|e| map_item(e, fields, base)));
    elements.len() - (out.len() - before)
}

/// A JSON value as text: strings as they are, numbers and booleans
/// stringified, objects/arrays as compact JSON, null as absent.
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Bool(_) | Value::Number(_) | Value::Array(_) | Value::Object(_) => {
            Some(v.to_string())
        }
    }
}

/// Resolves a possibly relative URL; only http(s) results are kept.
fn resolve(base: &Url, raw: &str) -> Option<String> {
    let url = base.join(raw.trim()).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.to_string())
}

fn display_pointer(p: &str) -> String {
    if p.is_empty() {
        "\"\" (the document root)".to_owned()
    } else {
        format!("`{p}`")
    }
}

/// Items read from a long-lived upstream, with the upstream's resume cursor
/// after the last of them (SSE `id:`), to be stored in the same transaction.
#[derive(Debug, Clone, Default)]
pub struct UpstreamBatch {
    /// Items in arrival order.
    pub items: Vec<Item>,
    /// The upstream `Last-Event-ID` after these items, if the upstream sends ids.
    pub cursor: Option<String>,
}

/// Holds the upstream connection of an `ndjson`/`sse` source, reconnecting
/// with backoff (resuming SSE with `Last-Event-ID` = `cursor`), and sends
/// batches of items to `out` (bounded: a slow store slows the read, memory stays
/// bounded). Returns when `cancel` fires. Health updates go to `health`.
pub async fn run_upstream(
    source: Arc<SourceConfig>,
    fetcher: Fetcher,
    cursor: Option<String>,
    out: mpsc::Sender<UpstreamBatch>,
    health: mpsc::Sender<Result<(), String>>,
    cancel: CancellationToken,
) {
    let settings = match &source.kind {
        SourceKind::Firehose(s) if s.format != FirehoseFormat::Json => s.clone(),
        _ => {
            let _ = health
                .send(Err(format!(
                    "source {} is not an ndjson/sse firehose; nothing to stream",
                    source.id
                )))
                .await;
            return;
        }
    };
    let accept = match settings.format {
        FirehoseFormat::Sse => "text/event-stream",
        _ => "application/x-ndjson, application/jsonl, application/json;q=0.9, */*;q=0.1",
    };
    let is_sse = settings.format == FirehoseFormat::Sse;
    let connect = |cursor: Option<String>| {
        let fetcher = fetcher.clone();
        let mut req = FetchRequest::get(source.url.clone());
        req.user_agent.clone_from(&source.user_agent);
        req.headers.clone_from(&source.headers);
        req.accept = Some(accept);
        req.last_event_id = if is_sse { cursor } else { None };
        async move {
            let response = fetcher.open_stream(&req).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(response.bytes_stream())
        }
    };
    run_upstream_with(
        settings,
        source.url.clone(),
        cursor,
        connect,
        out,
        health,
        cancel,
        UpstreamOptions::default(),
    )
    .await;
}
