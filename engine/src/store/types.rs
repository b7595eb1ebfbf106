//! What goes into and comes out of the store: events to write and the
//! batches that carry them, stored item and source state, log rows for
//! readers and the scope that narrows a log read.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::StreamEvent;

/// An event to store: everything but `id` and `emitted_at`, which the writer assigns.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The event; its `id` and `emitted_at` are overwritten at commit.
    pub event: StreamEvent,
    /// The item's significance fingerprint after this event (see `normalize`).
    pub fingerprint: String,
    /// Secondary identity keys of the item (canonical link, content hash) used
    /// to recognise the same item when its guid churns.
    pub aliases: Vec<String>,
}

/// Stored state of one item of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemState {
    /// Stable identity within the source.
    pub item_id: String,
    /// Current version.
    pub version: u32,
    /// Id of the item's newest event.
    pub last_event_id: Uuid,
    /// Significance fingerprint of that version.
    pub fingerprint: String,
    /// Secondary identity keys.
    pub aliases: Vec<String>,
    /// When the item was last written: first seen, changed, or refreshed
    /// because a poll still saw it (unix seconds; set by the store on write,
    /// ignored in what is written). Item state not refreshed for
    /// [`item_horizon`](super::item_horizon) is pruned
    /// ([`Store::prune_items`](super::Store::prune_items)).
    pub seen_at: i64,
}

/// An item's aliases as stored (joined with U+001F), one by one.
pub(super) fn split_aliases(s: &str) -> Vec<String> {
    s.split('\u{1f}')
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

/// How often a poll that still sees an unchanged item rewrites its state's
/// `seen_at` (so items that stay in a feed are never pruned).
pub const SEEN_REFRESH: Duration = Duration::from_secs(86_400);

/// Persistent per-source state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceState {
    /// Source id.
    pub source_id: String,
    /// ETag of the last 200.
    pub etag: Option<String>,
    /// Last-Modified of the last 200.
    pub last_modified: Option<String>,
    /// Start of the last poll.
    pub last_poll_at: Option<DateTime<Utc>>,
    /// End of the last successful poll.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The last error, cleared on success.
    pub last_error: Option<String>,
    /// Consecutive failed polls.
    pub consecutive_failures: u32,
    /// When the next poll is due.
    pub next_poll_at: Option<DateTime<Utc>>,
    /// Items known for this source.
    pub item_count: u64,
    /// Events emitted in total.
    pub event_count: u64,
    /// True once the first successful poll has been stored.
    pub initialized: bool,
    /// html sources: the last normalised text of the watched region.
    pub snapshot: Option<String>,
    /// firehose sse/ndjson: the upstream resume cursor (Last-Event-ID).
    pub upstream_cursor: Option<String>,
}

/// One transaction's worth of work from one poll.
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// New events, in the order they should be emitted.
    pub events: Vec<NewEvent>,
    /// The source's state after this poll (upserted), if any.
    pub source: Option<SourceState>,
    /// Items seen again unchanged whose aliases changed (rare), upserted without an event.
    pub touch_items: Vec<ItemState>,
    /// The source's content is what its last 200 had (a 304, or a page
    /// without a significant change): every item of the source whose
    /// `seen_at` is older than [`SEEN_REFRESH`] is refreshed, so item state
    /// of an unchanged feed is never pruned.
    pub refresh_items: bool,
}
