//! What every poll and upstream reader shares: the sink and the HTTP
//! client, and the normaliser run off the async workers.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::task::JoinError;

use crate::config::SourceConfig;
use crate::fetch::Fetcher;
use crate::normalize;
use crate::sink::Sink;
use crate::sources::{Item, Lookup};
use crate::store::{ItemState, StoreError};

/// Shared by every poll and upstream reader.
pub(super) struct Ctx {
    /// Where results are committed.
    pub(super) store: Arc<dyn Sink>,
    /// The HTTP client (politeness, SSRF guard, conditional GET).
    pub(super) fetcher: Fetcher,
}

/// [`normalize::identify`] on a blocking thread: each item's identity
/// takes its text normalised and hashed.
pub(super) async fn identify_off_runtime(
    items: Vec<Item>,
) -> Result<normalize::Identified, JoinError> {
    tokio::task::spawn_blocking(move || normalize::identify(items)).await
}

/// [`normalize::plan_identified`] on a blocking thread: the work grows
/// with the feed, and the async workers also serve the SSE edge.
pub(super) async fn plan_off_runtime(
    src: &Arc<SourceConfig>,
    identified: normalize::Identified,
    known: Vec<ItemState>,
    first_poll: bool,
    at: DateTime<Utc>,
) -> Result<normalize::Plan, JoinError> {
    let src = Arc::clone(src);
    tokio::task::spawn_blocking(move || {
        normalize::plan_identified(&src, identified, &known, first_poll, at)
    })
    .await
}

/// The stored items with these identity keys, or all of the source's when
/// `keys` is None (as its kind looks them up: [`lookup_keys`]).
pub(super) async fn known_by(
    ctx: &Ctx,
    src: &SourceConfig,
    keys: Option<Vec<String>>,
) -> Result<Vec<ItemState>, StoreError> {
    match keys {
        None => ctx.store.items(src.id.as_str()).await,
        Some(keys) => ctx.store.items_by_ids(src.id.as_str(), keys).await,
    }
}

/// The keys a kind looks stored items up by: all of the source's (None),
/// or only the identities in this parse.
pub(super) fn lookup_keys(
    lookup: Lookup,
    identified: &normalize::Identified,
) -> Option<Vec<String>> {
    match lookup {
        Lookup::All => None,
        Lookup::Parsed => Some(identified.keys()),
    }
}
