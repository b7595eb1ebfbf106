//! RSS/Atom and JSON Feed as a [`Kind`]: polled, every item of the source
//! looked up, nothing remembered between polls.

use crate::sources::{feed, Body, Kind, Lookup, Parse, SourceError};

/// A feed source (`type = "rss"` or `"json"`); both parse the same way and
/// differ only in what they ask for.
#[derive(Debug, Clone, Copy)]
pub struct FeedKind {
    accept: &'static str,
}

impl FeedKind {
    /// RSS 0.9x/1.0/2.0 or Atom.
    pub fn rss() -> Self {
        Self {
            accept: "application/rss+xml, application/atom+xml, application/rdf+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5",
        }
    }

    /// JSON Feed.
    pub fn json() -> Self {
        Self {
            accept: "application/feed+json, application/json;q=0.9, */*;q=0.5",
        }
    }
}

impl Kind for FeedKind {
    fn accept(&self) -> &'static str {
        self.accept
    }

    fn parse(&self, body: &Body<'_>, _memory: Option<&str>) -> Result<Parse, SourceError> {
        Ok(feed::parse(body.bytes, body.content_type, body.url)?.into())
    }

    fn lookup(&self) -> Lookup {
        Lookup::All
    }
}
