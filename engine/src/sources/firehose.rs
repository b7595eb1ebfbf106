//! Firehose APIs: a polled JSON document (`format = "json"`) mapped with JSON
//! pointers, and long-lived NDJSON / SSE upstream streams.
//!
//! CONTRACT (owned by the firehose module's owner).
//!
//! Layout: this file maps JSON values to [`Item`]s; `lines` and `sse`
//! decode bytes; `document` (polled) and `stream` (ndjson / sse) are the two
//! kinds. All pure: the upstream connection (batching, idle timeout,
//! reconnect with backoff) is the runtime's (`runtime::upstream`).

mod document;
mod lines;
mod sse;
mod stream;

use serde_json::Value;
use url::Url;

use super::{Item, Parsed};
use crate::config::{FieldMap, FirehoseSettings};

pub use document::FirehoseDocument;
pub use sse::{SseDecoder, SseEvent, SseProblems};
pub use stream::{FirehoseStream, MessageProblem, Skipped, StreamDecoder, StreamSpec, MAX_LINE};

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
