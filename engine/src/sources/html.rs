//! Feed-less HTML pages: select the watched region, strip noise, normalise to
//! text, and diff against the previous snapshot. Pure.
//!
//! CONTRACT (owned by the html module's owner).

use crate::config::HtmlSettings;

/// Why a page cannot be used (the source is marked unhealthy with this).
#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    /// The configured selector matched nothing on the page.
    #[error("selector `{0}` matched nothing on the page")]
    SelectorMatchedNothing(String),
    /// The page is a bot challenge / interstitial, not the content.
    #[error("the page is a bot-challenge interstitial ({0}), not the content")]
    Challenge(String),
    /// The page looks like an error page served with 200.
    #[error("the page looks like an error page served with status 200 ({0})")]
    ErrorPage(String),
    /// Not HTML at all.
    #[error("not an HTML page: {0}")]
    NotHtml(String),
}

/// The watched region of a page, normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The page `<title>`, normalised.
    pub title: String,
    /// The normalised text of the watched region (one block per line).
    pub text: String,
}

/// A meaningful change between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Unified diff, old → new.
    pub diff: String,
    /// Lines added by the change.
    pub added: Vec<String>,
}

/// Extracts and normalises the watched region.
pub fn extract(body: &[u8], content_type: Option<&str>, settings: &HtmlSettings) -> Result<Snapshot, HtmlError> {
    let _ = (body, content_type, settings);
    Err(HtmlError::NotHtml("html extraction not built yet".into()))
}

/// `None` when the change is not meaningful (noise only, or below `min_change` characters).
pub fn diff(old: &str, new: &str, min_change: usize) -> Option<Change> {
    let _ = min_change;
    (old != new).then(|| Change { diff: String::new(), added: Vec::new() })
}
