//! Firehose APIs: a polled JSON document (`format = "json"`) mapped with JSON
//! pointers, and long-lived NDJSON / SSE upstream streams.
//!
//! CONTRACT (owned by the firehose module's owner).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{Item, Parsed};
use crate::config::{FirehoseSettings, SourceConfig};
use crate::fetch::Fetcher;

/// Why a firehose document or message could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum FirehoseError {
    /// Not JSON.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The `items` pointer does not point at an array.
    #[error("`items` pointer {0} does not point at an array")]
    NoItems(String),
}

/// Maps a polled JSON document to items (pure).
pub fn parse_json(body: &[u8], settings: &FirehoseSettings, base: &Url) -> Result<Parsed, FirehoseError> {
    let _ = (body, settings, base);
    Err(FirehoseError::Json("firehose parser not built yet".into()))
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
    let _ = (source, fetcher, cursor, out, health);
    cancel.cancelled().await;
}
