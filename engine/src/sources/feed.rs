//! RSS 0.9x/1.0/2.0, Atom and JSON Feed → items, via feed-rs. Pure.
//!
//! CONTRACT (owned by the feed module's owner).

use url::Url;

use super::Parsed;

/// Why a feed could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Not a feed in any supported format.
    #[error("not a valid feed: {0}")]
    Invalid(String),
}

/// Parses a feed body; relative links resolve against `base` (the final URL).
pub fn parse(body: &[u8], content_type: Option<&str>, base: &Url) -> Result<Parsed, FeedError> {
    let _ = (body, content_type, base);
    Err(FeedError::Invalid("parser not built yet".into()))
}
