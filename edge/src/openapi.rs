//! `GET /v1/openapi.json`: the OpenAPI 3.1 description of every endpoint.
//!
//! The document is checked in (`openapi.json` beside this file) and the
//! StreamEvent schema is spliced in from `docs/stream-event.schema.json`
//! — the file the ingest tests validate every event against — so the two
//! cannot drift. Tests check the document against the router's routes and
//! the problem types the code emits, and validate it against the official
//! OpenAPI 3.1 schema (tests/openapi.rs).
//!
//! Served without a key: it describes the API and holds no data, and a
//! client generating code needs it before it has a key.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::Value;

use crate::problem::Problem;

const TEMPLATE: &str = include_str!("openapi.json");
const STREAM_EVENT_SCHEMA: &str = include_str!("../../docs/stream-event.schema.json");

/// Why the embedded document could not be built (a defect of the build,
/// caught by the tests; served as a logged 500).
#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    /// One of the embedded files is not JSON.
    #[error("embedded {file} is not valid JSON: {source}")]
    Json {
        /// Which file.
        file: &'static str,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The template lacks the place the StreamEvent schema goes.
    #[error("openapi.json has no components.schemas object")]
    NoSchemas,
}

/// The document as served: the template with this build's version and the
/// StreamEvent schema.
pub fn document() -> Result<Value, OpenApiError> {
    let mut doc: Value = serde_json::from_str(TEMPLATE).map_err(|source| OpenApiError::Json {
        file: "edge/src/openapi.json",
        source,
    })?;
    let event: Value =
        serde_json::from_str(STREAM_EVENT_SCHEMA).map_err(|source| OpenApiError::Json {
            file: "docs/stream-event.schema.json",
            source,
        })?;
    if let Some(info) = doc.get_mut("info").and_then(Value::as_object_mut) {
        info.insert("version".into(), Value::from(env!("CARGO_PKG_VERSION")));
    }
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .ok_or(OpenApiError::NoSchemas)?;
    schemas.insert("StreamEvent".into(), event);
    Ok(doc)
}

/// `GET /v1/openapi.json`.
pub async fn handler() -> Response {
    static RENDERED: OnceLock<Result<Bytes, String>> = OnceLock::new();
    let rendered = RENDERED.get_or_init(|| {
        document()
            .map_err(|e| e.to_string())
            .and_then(|doc| serde_json::to_vec(&doc).map_err(|e| e.to_string()))
            .map(Bytes::from)
    });
    match rendered {
        Ok(body) => {
            let mut res = body.clone().into_response();
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            res
        }
        Err(e) => {
            tracing::error!(error = %e, "the embedded OpenAPI document is broken");
            Problem::internal().into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_builds_with_the_stream_event_schema_and_version() {
        let doc = document().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            doc["components"]["schemas"]["StreamEvent"],
            serde_json::from_str::<Value>(STREAM_EVENT_SCHEMA).unwrap_or_default()
        );
    }
}
