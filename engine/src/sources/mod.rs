//! Source kinds: each turns an upstream response into [`Item`]s. Parsers are
//! pure (bytes in, items out, no IO, no tokio).

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
    /// html sources: unified diff against the previous snapshot.
    pub diff: Option<String>,
    /// html sources: lines added by this change.
    pub added: Option<Vec<String>>,
}

/// What a parse of one response yields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// Items in document order (usually newest first).
    pub items: Vec<Item>,
    /// The feed's own `<ttl>` (or equivalent): poll no sooner than this.
    pub ttl: Option<Duration>,
}
