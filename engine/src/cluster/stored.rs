//! What the cluster's buckets and message headers hold for the engine:
//! a source's state (`<P>_SOURCES`), an item's state (`<P>_ITEMS`) and the
//! item state carried beside each published event. JSON, unknown fields
//! ignored, missing ones defaulted, so versions can differ across nodes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::{ItemState, SourceState};

/// A source's state as the sources bucket holds it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoredSource {
    /// ETag of the last 200.
    #[serde(default)]
    pub etag: Option<String>,
    /// Last-Modified of the last 200.
    #[serde(default)]
    pub last_modified: Option<String>,
    /// Start of the last poll.
    #[serde(default)]
    pub last_poll_at: Option<DateTime<Utc>>,
    /// End of the last successful poll.
    #[serde(default)]
    pub last_success_at: Option<DateTime<Utc>>,
    /// The last error.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Consecutive failed polls.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// When the next poll is due.
    #[serde(default)]
    pub next_poll_at: Option<DateTime<Utc>>,
    /// Events emitted in total.
    #[serde(default)]
    pub event_count: u64,
    /// Items first seen (new items and held-back ones; item state that
    /// expired is not subtracted).
    #[serde(default)]
    pub item_count: u64,
    /// True once the first successful poll was stored.
    #[serde(default)]
    pub initialized: bool,
    /// html: the last normalised text of the watched region.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// firehose sse/ndjson: the upstream resume cursor.
    #[serde(default)]
    pub upstream_cursor: Option<String>,
    /// The last sequence on the source's subject that item state covers.
    #[serde(default)]
    pub published_through: u64,
    /// When item `seen_at`s were last refreshed (see [`SEEN_REFRESH`]).
    #[serde(default)]
    pub items_refreshed_at: Option<DateTime<Utc>>,
    /// The engine that wrote this state.
    #[serde(default)]
    pub engine: Option<String>,
}

impl StoredSource {
    /// The runtime's view of it.
    pub fn to_state(&self, source_id: &str) -> SourceState {
        SourceState {
            source_id: source_id.to_owned(),
            etag: self.etag.clone(),
            last_modified: self.last_modified.clone(),
            last_poll_at: self.last_poll_at,
            last_success_at: self.last_success_at,
            last_error: self.last_error.clone(),
            consecutive_failures: self.consecutive_failures,
            next_poll_at: self.next_poll_at,
            item_count: self.item_count,
            event_count: self.event_count,
            initialized: self.initialized,
            snapshot: self.snapshot.clone(),
            upstream_cursor: self.upstream_cursor.clone(),
        }
    }
}

/// An item's state as the items bucket holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredItem {
    pub(crate) item_id: String,
    pub(crate) version: u32,
    pub(crate) last_event_id: Uuid,
    pub(crate) fingerprint: String,
    #[serde(default)]
    pub(crate) aliases: Vec<String>,
    pub(crate) seen_at: i64,
}

impl StoredItem {
    pub(crate) fn to_state(&self) -> ItemState {
        ItemState {
            item_id: self.item_id.clone(),
            version: self.version,
            last_event_id: self.last_event_id,
            fingerprint: self.fingerprint.clone(),
            aliases: self.aliases.clone(),
            seen_at: self.seen_at,
        }
    }
}

/// The item-state header of a published event.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ItemHeader {
    pub(crate) fp: String,
    #[serde(default)]
    pub(crate) aliases: Vec<String>,
}
