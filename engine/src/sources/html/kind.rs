//! A feed-less page as a [`Kind`]: polled, its watched region remembered
//! between polls as a snapshot, and one item per meaningful change.

use crate::config::HtmlSettings;
use crate::sources::html::{self, Change};
use crate::sources::{Body, Item, Kind, Lookup, Parse, SourceError};

/// An `html` source.
#[derive(Debug, Clone)]
pub struct HtmlKind {
    settings: HtmlSettings,
}

impl HtmlKind {
    /// A page watched with `settings`.
    pub fn new(settings: HtmlSettings) -> Self {
        Self { settings }
    }
}

impl Kind for HtmlKind {
    fn accept(&self) -> &'static str {
        "text/html, application/xhtml+xml;q=0.9, */*;q=0.5"
    }

    /// The first parse yields the page as one item and remembers its
    /// snapshot; later ones yield an item (with the diff) only when the text
    /// changed by at least `min_change`, and otherwise report the page
    /// unchanged and keep the old snapshot, so small edits add up.
    fn parse(&self, body: &Body<'_>, memory: Option<&str>) -> Result<Parse, SourceError> {
        let snap = html::extract(body.bytes, body.content_type, &self.settings)?;
        let change = match memory {
            None => None,
            Some(prev) => match html::diff(prev, &snap.text, self.settings.min_change) {
                None => {
                    return Ok(Parse {
                        unchanged: true,
                        ..Parse::default()
                    })
                }
                Some(change) => Some(change),
            },
        };
        let html::Snapshot { title, text } = snap;
        let (diff, added) = match change {
            Some(Change { diff, added }) => (Some(diff), Some(added)),
            None => (None, None),
        };
        // One identity ("page") for every version of the page.
        let item = Item {
            guid: Some("page".into()),
            // The fetched page, without credentials its URL may carry.
            url: Some(crate::redact::public_url(body.url)),
            title,
            content: text.clone(),
            published: None,
            diff,
            added,
            ..Item::default()
        };
        Ok(Parse {
            items: vec![item],
            ttl: None,
            remember: Some(text),
            unchanged: false,
        })
    }

    fn lookup(&self) -> Lookup {
        Lookup::All
    }
}
