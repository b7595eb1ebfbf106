//! The configured sources' type and tags, for the operator views: the
//! stored source state (`SourceStates`) says how a source is doing, not what
//! it is, and a source that was never polled has no state at all.
//!
//! Whoever loads the config (`livestrom run`) fills it and replaces it on
//! every reload; an edge that is never told stays empty and its views show
//! only stored state.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use livestrom_engine::config::SourceConfig;
use livestrom_engine::SourceType;

/// What the config says of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMeta {
    /// The type its events carry.
    pub source_type: SourceType,
    /// Tags copied into its events.
    pub tags: Vec<String>,
}

/// The configured sources by id. Cheap to clone; clones share the contents.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Replaced whole on each reload, so a reader holds a consistent snapshot
    /// without holding the lock.
    inner: Arc<RwLock<Arc<BTreeMap<String, SourceMeta>>>>,
}

impl Catalog {
    /// Replaces the contents with `sources` (the config just loaded).
    pub fn set(&self, sources: &[SourceConfig]) {
        let map: BTreeMap<String, SourceMeta> = sources
            .iter()
            .map(|s| {
                (
                    s.id.as_str().to_owned(),
                    SourceMeta {
                        source_type: s.source_type,
                        tags: s.tags.clone(),
                    },
                )
            })
            .collect();
        // A panic while holding this lock cannot leave the map half-written
        // (it is swapped whole), so a poisoned lock is still usable.
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        *guard = Arc::new(map);
    }

    /// The current contents.
    pub fn snapshot(&self) -> Arc<BTreeMap<String, SourceMeta>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
