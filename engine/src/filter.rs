//! Event filters, shared by everything that selects events for a reader:
//! `source` (exact or `prefix.*`), `source_type`, `tag`, `keyword`; OR
//! within a name, AND across names.
//!
//! One parser for every door: the edge's `/v1/stream` and `/v1/events`
//! query strings, the webhook endpoints of `livestrom webhook` and
//! `/v1/admin/webhooks`. Each term is added with [`Filter::add`], which
//! checks it exactly as the stream does and says what is wrong naming the
//! parameter ([`FilterError`]); [`Filter::check_cap`] is the cap on terms.
//! The edge turns a [`FilterError`] into its 400 problem, the CLI prints the
//! same words.

use std::borrow::Cow;

use serde::Deserialize;
use uuid::Uuid;

use crate::config::is_valid_id;
use crate::event::{is_uuid_v7, SourceType};
use crate::log::ReadScope;

/// Longest accepted `keyword`, in bytes.
pub const MAX_KEYWORD_BYTES: usize = 256;
/// Longest accepted `tag`, in bytes (the config's limit).
pub const MAX_TAG_BYTES: usize = 64;
/// The filter parameter names, in the order messages list them.
pub const FILTER_NAMES: [&str; 4] = ["source", "source_type", "tag", "keyword"];

/// A filter term or cursor that was refused: which parameter, and why (the
/// detail of the edge's 400 problem, word for word).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct FilterError {
    /// The parameter the value was given for (`source`, `since`, …).
    pub parameter: String,
    /// What is wrong with it.
    pub detail: String,
}

impl FilterError {
    /// A refusal of a value of `parameter`.
    pub fn new(parameter: &str, detail: impl Into<String>) -> Self {
        Self {
            parameter: parameter.to_owned(),
            detail: detail.into(),
        }
    }
}

/// A subscriber's filter. Empty lists mean "no constraint on this name".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Exact source ids.
    pub sources: Vec<String>,
    /// Source id prefixes *including* the trailing dot (`kommun.*` → `kommun.`).
    pub prefixes: Vec<String>,
    /// Source types.
    pub types: Vec<SourceType>,
    /// Tags (exact, case-sensitive, as written in `sources.toml`).
    pub tags: Vec<String>,
    /// Keywords, already case-folded ([`fold`]).
    pub keywords: Vec<String>,
}

/// The text fields keyword filters look at, case-folded once per event and
/// shared by every subscriber that has a keyword.
#[derive(Debug, Clone)]
pub struct Lowered {
    /// `fold(title)`.
    pub title: String,
    /// `fold(content)`.
    pub content: String,
}

impl Lowered {
    /// Case-folds an event's title and content ([`fold`]).
    pub fn new(title: &str, content: &str) -> Self {
        Self {
            title: fold(title),
            content: fold(content),
        }
    }
}

/// Text as keyword matching compares it: Unicode full case folding
/// (`ß` → `ss`, final `ς` → `σ`, `ﬁ` → `fi`) between NFC normalisations, so
/// case and composed/decomposed accents do not matter. ASCII takes a fast path.
pub fn fold(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    let folded = caseless::default_case_fold_str(&nfc(text));
    match nfc(&folded) {
        Cow::Borrowed(_) => folded,
        Cow::Owned(recomposed) => recomposed,
    }
}

/// NFC, skipping the rewrite when a quick check proves the text already is
/// (most real text): folding runs once per event on the hub task.
fn nfc(text: &str) -> Cow<'_, str> {
    use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};
    if is_nfc_quick(text.chars()) == IsNormalized::Yes {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(text.nfc().collect())
    }
}

/// The parts of a stored event's JSON that tag and keyword filters need,
/// borrowed from the JSON text where possible.
#[derive(Debug, Deserialize)]
pub struct BodyFields<'a> {
    /// Title text.
    #[serde(borrow, default)]
    pub title: Cow<'a, str>,
    /// Content text.
    #[serde(borrow, default)]
    pub content: Cow<'a, str>,
    /// Tags.
    #[serde(borrow, default)]
    pub tags: Vec<Cow<'a, str>>,
}

impl Filter {
    /// Adds one term given as `name=value`, checked as `/v1/stream` checks
    /// it. `Ok(false)`: `name` is not a filter parameter (the caller decides
    /// whether it is another known one). A repeated term is kept once.
    pub fn add(&mut self, name: &str, value: &str) -> Result<bool, FilterError> {
        if !FILTER_NAMES.contains(&name) {
            return Ok(false);
        }
        if value.is_empty() {
            return Err(FilterError::new(
                name,
                format!("`{name}` must not be empty"),
            ));
        }
        match name {
            "source" => {
                if let Some(prefix) = value.strip_suffix(".*") {
                    if !is_valid_id(prefix) {
                        return Err(bad_source(value));
                    }
                    push_unique(&mut self.prefixes, format!("{prefix}."));
                } else if is_valid_id(value) {
                    push_unique(&mut self.sources, value.to_owned());
                } else {
                    return Err(bad_source(value));
                }
            }
            "source_type" => {
                let t: SourceType = value
                    .parse()
                    .map_err(|e: String| FilterError::new(name, e))?;
                if !self.types.contains(&t) {
                    self.types.push(t);
                }
            }
            "tag" => {
                if value.len() > MAX_TAG_BYTES
                    || value.chars().any(|c| c.is_control() || c.is_whitespace())
                {
                    return Err(FilterError::new(
                        name,
                        format!("`{}` is not a valid tag: use 1-{MAX_TAG_BYTES} bytes without spaces or control characters", printable(value)),
                    ));
                }
                push_unique(&mut self.tags, value.to_owned());
            }
            _ => {
                if value.len() > MAX_KEYWORD_BYTES || value.chars().any(char::is_control) {
                    return Err(FilterError::new(
                        name,
                        format!("a keyword is 1-{MAX_KEYWORD_BYTES} bytes of text without control characters"),
                    ));
                }
                push_unique(&mut self.keywords, fold(value));
            }
        }
        Ok(true)
    }

    /// The cap on filter terms (a key's `max_filters`), checked after each
    /// term; `name` is the parameter that went over it.
    pub fn check_cap(&self, name: &str, max_filters: usize) -> Result<(), FilterError> {
        if self.terms() > max_filters {
            return Err(FilterError::new(
                name,
                format!("more than {max_filters} filter terms; this API key allows at most {max_filters}"),
            ));
        }
        Ok(())
    }

    /// A filter from `(name, value)` terms, each added with [`Filter::add`]
    /// and capped at `max_filters`; a name that is not a filter parameter is
    /// refused as the stream refuses an unknown query parameter.
    pub fn from_terms<'a>(
        terms: impl IntoIterator<Item = (&'a str, &'a str)>,
        max_filters: usize,
    ) -> Result<Self, FilterError> {
        let mut filter = Self::default();
        for (name, value) in terms {
            if !filter.add(name, value)? {
                return Err(FilterError::new(
                    name,
                    format!(
                        "unknown filter `{}`; known filters: {}",
                        printable(name),
                        FILTER_NAMES.join(", ")
                    ),
                ));
            }
            filter.check_cap(name, max_filters)?;
        }
        Ok(filter)
    }

    /// Gives back the lists' spare capacity (a list grown by one term holds
    /// room for four): for a filter kept as long as a stream is open.
    pub fn shrink_to_fit(&mut self) {
        self.sources.shrink_to_fit();
        self.prefixes.shrink_to_fit();
        self.types.shrink_to_fit();
        self.tags.shrink_to_fit();
        self.keywords.shrink_to_fit();
    }

    /// Number of terms (what `max_filters` caps).
    pub fn terms(&self) -> usize {
        self.sources.len()
            + self.prefixes.len()
            + self.types.len()
            + self.tags.len()
            + self.keywords.len()
    }

    /// True when the filter lets everything through.
    pub fn is_empty(&self) -> bool {
        self.terms() == 0
    }

    /// True when matching needs the event's tags, title or content (not just
    /// its source id and type, which log rows carry unparsed).
    pub fn needs_body(&self) -> bool {
        !self.tags.is_empty() || !self.keywords.is_empty()
    }

    /// The `source` and `source_type` conditions.
    pub fn matches_source(&self, source_id: &str, source_type: SourceType) -> bool {
        let source_ok = (self.sources.is_empty() && self.prefixes.is_empty())
            || self.sources.iter().any(|s| s == source_id)
            || self
                .prefixes
                .iter()
                .any(|p| source_id.len() > p.len() && source_id.starts_with(p.as_str()));
        source_ok && (self.types.is_empty() || self.types.contains(&source_type))
    }

    /// The `tag` condition.
    pub fn matches_tags<'t>(&self, mut tags: impl Iterator<Item = &'t str>) -> bool {
        self.tags.is_empty() || tags.any(|t| self.tags.iter().any(|f| f == t))
    }

    /// The `keyword` condition against lowercased title and content.
    pub fn matches_keywords(&self, l: &Lowered) -> bool {
        self.keywords.is_empty()
            || self
                .keywords
                .iter()
                .any(|k| l.title.contains(k.as_str()) || l.content.contains(k.as_str()))
    }

    /// Every condition against a stored event's JSON (parsed only when a tag
    /// or keyword filter needs it). Unparseable JSON never matches a body filter.
    pub fn matches_json(&self, source_id: &str, source_type: SourceType, json: &str) -> bool {
        if !self.matches_source(source_id, source_type) {
            return false;
        }
        if !self.needs_body() {
            return true;
        }
        match serde_json::from_str::<BodyFields<'_>>(json) {
            Ok(b) => {
                self.matches_tags(b.tags.iter().map(|t| t.as_ref()))
                    && (self.keywords.is_empty()
                        || self.matches_keywords(&Lowered::new(&b.title, &b.content)))
            }
            Err(e) => {
                tracing::warn!(error = %e, "stored event json does not parse; filtered out");
                false
            }
        }
    }

    /// What of this filter a log read can do in SQL (sources, prefixes, types).
    pub fn read_scope(&self) -> ReadScope {
        ReadScope {
            sources: self.sources.clone(),
            prefixes: self.prefixes.clone(),
            types: self.types.clone(),
        }
    }
}

/// Parses a cursor (`since=`, `Last-Event-ID`, `--since`): a UUIDv7, else
/// a refusal naming `param`.
pub fn parse_cursor(param: &str, value: &str) -> Result<Uuid, FilterError> {
    match Uuid::try_parse(value.trim()) {
        Ok(id) if is_uuid_v7(id) => Ok(id),
        Ok(_) => Err(FilterError::new(
            param,
            format!("`{param}` must be a UUIDv7 event id; this UUID is not version 7"),
        )),
        Err(_) => Err(FilterError::new(
            param,
            format!(
                "`{param}` must be a UUIDv7 event id such as 018f9c2e-1a2b-7c3d-8e4f-5a6b7c8d9e0f"
            ),
        )),
    }
}

fn bad_source(value: &str) -> FilterError {
    FilterError::new(
        "source",
        format!(
            "`{}` is not a source id or prefix: use 1-128 characters of [a-z0-9._-] starting with a letter or digit, optionally ending in `.*` for a prefix",
            printable(value)
        ),
    )
}

/// Quotes user input safely inside an error message (escapes controls, caps length).
pub fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_are_checked_as_the_stream_checks_them() {
        let f = Filter::from_terms(
            [("source", "kommun.*"), ("tag", "x"), ("keyword", "HEJ")],
            20,
        );
        let f = f.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.prefixes, vec!["kommun.".to_owned()]);
        assert_eq!(f.keywords, vec!["hej".to_owned()]);
        for (name, value) in [
            ("source", "A"),
            ("source", ""),
            ("source_type", "xml"),
            ("tag", "a b"),
            ("keyword", "a\u{0}"),
            ("sources", "a"),
        ] {
            let e = Filter::from_terms([(name, value)], 20).err();
            assert_eq!(
                e.map(|e| e.parameter).as_deref(),
                Some(name),
                "{name}={value}"
            );
        }
        let capped = Filter::from_terms([("source", "a"), ("source", "b")], 1).err();
        assert_eq!(
            capped.map(|e| e.detail).as_deref(),
            Some("more than 1 filter terms; this API key allows at most 1")
        );
    }
}
