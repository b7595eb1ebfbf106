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

/// [`normalize::plan`] on a blocking thread: hashing and text work grow
/// with the feed, and the async workers also serve the SSE edge.
pub(super) async fn plan_off_runtime(
    src: &Arc<SourceConfig>,
    items: Vec<Item>,
    known: Vec<ItemState>,
    first_poll: bool,
    at: DateTime<Utc>,
) -> Result<normalize::Plan, JoinError> {
    let src = Arc::clone(src);
    tokio::task::spawn_blocking(move || normalize::plan(&src, items, &known, first_poll, at)).await
}

/// The stored items a parse is planned against, as its kind looks them up.
pub(super) async fn known_items(
    ctx: &Ctx,
    src: &SourceConfig,
    lookup: Lookup,
    items: &[Item],
) -> Result<Vec<ItemState>, StoreError> {
    let keys = match lookup {
        Lookup::All => None,
        Lookup::Parsed => Some(normalize::identity_keys(items)),
    };
    known_by(ctx, src, keys).await
}

/// The stored items with these identity keys, or all of the source's when
/// `keys` is None.
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
