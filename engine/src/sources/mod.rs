//! Source kinds: each turns an upstream response into [`Item`]s. Parsers are
//! pure: bytes in, items out, no IO and no async runtime (the
//! `invariants` test holds every file here to that).

use std::time::Duration;

use chrono::{DateTime, Utc};

pub mod feed;
pub mod firehose;
pub mod html;

/// An item as a source kind extracted it, before identity and versioning.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Item {
    /// The upstream's own identity (guid, Atom id, JSON Feed id), if any.
    pub guid: Option<String>,
    /// Absolute URL of the item, resolved against the feed URL.
    pub url: Option<String>,
    /// Title as plain text.
    pub title: String,
    /// Content as plain text (markup stripped, entities decoded).
    pub content: String,
    /// Published/updated time, clamped to not be in the far future.
    pub published: Option<DateTime<Utc>>,
    /// Absolute URL of the item's attached file (RSS enclosure, Media RSS
    /// content, Atom `rel="enclosure"`, JSON Feed attachment), if any: what
    /// identifies a podcast episode that has no id, link or text.
    pub enclosure: Option<String>,
    /// html sources: unified diff against the previous snapshot.
    pub diff: Option<String>,
    /// html sources: lines added by this change.
    pub added: Option<Vec<String>>,
}

impl Item {
    /// Nothing to identify it by and nothing to show: no guid, link or
    /// enclosure, and no title or text. Such an item is not kept.
    pub fn is_blank(&self) -> bool {
        let none = |s: &Option<String>| s.as_deref().is_none_or(|s| s.trim().is_empty());
        none(&self.guid)
            && none(&self.url)
            && none(&self.enclosure)
            && self.title.trim().is_empty()
            && self.content.trim().is_empty()
    }
}

/// What a parse of one response yields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// Items in document order (usually newest first).
    pub items: Vec<Item>,
    /// The feed's own `<ttl>` (or equivalent): poll no sooner than this.
    pub ttl: Option<Duration>,
}
