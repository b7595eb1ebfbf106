//! Source kinds: each turns an upstream response into [`Item`]s. Parsers are
//! pure: bytes in, items out, no IO and no async runtime (the
//! `invariants` test holds every file here to that).
//!
//! A kind is one small [`Kind`]: what it asks for, whether it is polled or
//! streamed, how a body becomes items, what it remembers between polls, how
//! its stored items are looked up. The runtime drives any kind through that
//! trait; [`kind`] is the one place that maps a configured source to its kind.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use url::Url;

use crate::config::{FirehoseFormat, SourceConfig, SourceKind};

pub mod feed;
pub mod firehose;
pub mod html;

pub use feed::FeedKind;
pub use firehose::{FirehoseDocument, FirehoseStream, StreamSpec};
pub use html::HtmlKind;

/// One kind of source, as the runtime drives it.
pub trait Kind: Send + Sync + fmt::Debug {
    /// The `Accept` header of a request for this kind (a poll, or the
    /// upstream connection of a streamed kind).
    fn accept(&self) -> &'static str;

    /// Turns one response body into items. `memory` is what the previous
    /// parse asked to remember ([`Parse::remember`]), if anything. Pure and
    /// possibly CPU-heavy: the runtime calls it on a blocking thread.
    fn parse(&self, body: &Body<'_>, memory: Option<&str>) -> Result<Parse, SourceError>;

    /// Which stored items a parse is compared with.
    fn lookup(&self) -> Lookup;

    /// `Some` for a kind read from a long-lived upstream instead of polled.
    fn stream(&self) -> Option<&StreamSpec> {
        None
    }
}

/// The kind of a configured source; the only place that looks at
/// [`SourceKind`].
pub fn kind(src: &SourceConfig) -> Arc<dyn Kind> {
    match &src.kind {
        SourceKind::Rss => Arc::new(FeedKind::rss()),
        SourceKind::Json => Arc::new(FeedKind::json()),
        SourceKind::Html(settings) => Arc::new(HtmlKind::new(settings.clone())),
        SourceKind::Firehose(settings) => match settings.format {
            FirehoseFormat::Json => Arc::new(FirehoseDocument::new(settings.clone())),
            FirehoseFormat::Ndjson | FirehoseFormat::Sse => {
                Arc::new(FirehoseStream::new(settings.clone()))
            }
        },
    }
}

/// A response body, as a kind reads it.
#[derive(Debug, Clone, Copy)]
pub struct Body<'a> {
    /// The (decompressed) bytes.
    pub bytes: &'a [u8],
    /// `Content-Type`, if sent.
    pub content_type: Option<&'a str>,
    /// The URL after redirects: the base of relative links, and a page's own URL.
    pub url: &'a Url,
}

/// What a [`Kind::parse`] yields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parse {
    /// Items in document order (usually newest first).
    pub items: Vec<Item>,
    /// The upstream's own `<ttl>` (or equivalent): poll no sooner than this.
    pub ttl: Option<Duration>,
    /// What to hand the next parse as its memory (html: the new snapshot);
    /// `None` keeps what is remembered.
    pub remember: Option<String>,
    /// The content is what the previous parse saw (a page below the change
    /// threshold): no item came out, but the stored ones are still there.
    pub unchanged: bool,
}

impl From<Parsed> for Parse {
    fn from(Parsed { items, ttl }: Parsed) -> Self {
        Self {
            items,
            ttl,
            ..Self::default()
        }
    }
}

/// Which stored items a parse is planned against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// All of the source's items: a feed or a page shows its whole state.
    All,
    /// Only the items with the identities in this parse: a firehose is
    /// unbounded, and reading all its items on every batch would not be.
    Parsed,
}

/// Why a response could not be turned into items; shown as the source's
/// `last_error`.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The feed did not parse.
    #[error("parse: {0}")]
    Feed(#[from] feed::FeedError),
    /// The page is unusable.
    #[error("page: {0}")]
    Html(#[from] html::HtmlError),
    /// The firehose document did not map.
    #[error("firehose: {0}")]
    Firehose(#[from] firehose::FirehoseError),
}

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

#[cfg(test)]
mod tests;
