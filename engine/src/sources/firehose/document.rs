//! A firehose polled as one JSON document (`format = "json"`) as a
//! [`Kind`]: items mapped with the configured JSON pointers, and only the
//! stored items with the identities in this document looked up.

use crate::config::FirehoseSettings;
use crate::sources::{firehose, Body, Kind, Lookup, Parse, SourceError};

/// A polled firehose API.
#[derive(Debug, Clone)]
pub struct FirehoseDocument {
    settings: FirehoseSettings,
}

impl FirehoseDocument {
    /// A document mapped with `settings`.
    pub fn new(settings: FirehoseSettings) -> Self {
        Self { settings }
    }
}

impl Kind for FirehoseDocument {
    fn accept(&self) -> &'static str {
        "application/json, application/x-ndjson;q=0.9, */*;q=0.5"
    }

    fn parse(&self, body: &Body<'_>, _memory: Option<&str>) -> Result<Parse, SourceError> {
        Ok(firehose::parse_json(body.bytes, &self.settings, body.url)?.into())
    }

    fn lookup(&self) -> Lookup {
        Lookup::Parsed
    }
}
