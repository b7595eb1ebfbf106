//! Stream filters from the query string: `source` (exact or `prefix.*`),
//! `source_type`, `tag`, `keyword`; OR within a name, AND across names.
//!
//! The query string is parsed once per request into a [`Query`] (filter,
//! cursor, page size). Every rejection is a 400 [`Problem`] naming the
//! parameter, so a typo (`sources=`) is never silently "match everything".

use std::borrow::Cow;

use livestrom_engine::config::is_valid_id;
use livestrom_engine::event::is_uuid_v7;
use livestrom_engine::log::ReadScope;
use livestrom_engine::SourceType;
use serde::Deserialize;
use uuid::Uuid;

use crate::problem::Problem;

/// Longest accepted `keyword`, in bytes.
pub const MAX_KEYWORD_BYTES: usize = 256;
/// Longest accepted `tag`, in bytes (the config's limit).
pub const MAX_TAG_BYTES: usize = 64;
/// `/v1/events` page size when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `/v1/events` page.
pub const MAX_LIMIT: usize = 1000;

/// Which endpoint a query is for: `limit` is only accepted by `/v1/events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /v1/stream`.
    Stream,
    /// `GET /v1/events`.
    Events,
}

/// A parsed, validated query string.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// The event filter.
    pub filter: Filter,
    /// `since=`: the cursor (validated UUIDv7).
    pub since: Option<Uuid>,
    /// `limit=` (only `/v1/events`; defaulted there).
    pub limit: Option<usize>,
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
        std::borrow::Cow::Borrowed(_) => folded,
        std::borrow::Cow::Owned(recomposed) => recomposed,
    }
}

/// NFC, skipping the rewrite when a quick check proves the text already is
/// (most real text): folding runs once per event on the hub task.
fn nfc(text: &str) -> std::borrow::Cow<'_, str> {
    use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};
    if is_nfc_quick(text.chars()) == IsNormalized::Yes {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(text.nfc().collect())
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

/// Parses a raw query string (without `?`). `max_filters` is the key's cap
/// on filter terms. Percent-decoding follows `application/x-www-form-urlencoded`.
pub fn parse_query(
    raw: Option<&str>,
    endpoint: Endpoint,
    max_filters: usize,
) -> Result<Query, Problem> {
    let mut q = Query::default();
    let mut seen_api_key = false;
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        let name: &str = &name;
        if value.is_empty() {
            return Err(Problem::bad_param(
                name,
                format!("`{name}` must not be empty"),
            ));
        }
        match name {
            "source" => {
                if let Some(prefix) = value.strip_suffix(".*") {
                    if !is_valid_id(prefix) {
                        return Err(bad_source(&value));
                    }
                    push_unique(&mut q.filter.prefixes, format!("{prefix}."));
                } else if is_valid_id(&value) {
                    push_unique(&mut q.filter.sources, value.into_owned());
                } else {
                    return Err(bad_source(&value));
                }
            }
            "source_type" => {
                let t: SourceType = value
                    .parse()
                    .map_err(|e: String| Problem::bad_param(name, e))?;
                if !q.filter.types.contains(&t) {
                    q.filter.types.push(t);
                }
            }
            "tag" => {
                if value.len() > MAX_TAG_BYTES
                    || value.chars().any(|c| c.is_control() || c.is_whitespace())
                {
                    return Err(Problem::bad_param(
                        name,
                        format!("`{}` is not a valid tag: use 1-{MAX_TAG_BYTES} bytes without spaces or control characters", printable(&value)),
                    ));
                }
                push_unique(&mut q.filter.tags, value.into_owned());
            }
            "keyword" => {
                if value.len() > MAX_KEYWORD_BYTES || value.chars().any(char::is_control) {
                    return Err(Problem::bad_param(
                        name,
                        format!("a keyword is 1-{MAX_KEYWORD_BYTES} bytes of text without control characters"),
                    ));
                }
                push_unique(&mut q.filter.keywords, fold(&value));
            }
            "since" => {
                if q.since.is_some() {
                    return Err(Problem::bad_param(name, "`since` given more than once"));
                }
                q.since = Some(parse_cursor(name, &value)?);
            }
            "limit" if endpoint == Endpoint::Events => {
                if q.limit.is_some() {
                    return Err(Problem::bad_param(name, "`limit` given more than once"));
                }
                let n = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        Problem::bad_param(
                            name,
                            format!("`limit` must be an integer from 1 to {MAX_LIMIT}"),
                        )
                    })?;
                q.limit = Some(n);
            }
            "api_key" => {
                // Verified by the auth extractor; accepted here so it is not "unknown".
                if seen_api_key {
                    return Err(Problem::bad_param(name, "`api_key` given more than once"));
                }
                seen_api_key = true;
            }
            other => {
                let known = match endpoint {
                    Endpoint::Stream => "source, source_type, tag, keyword, since, api_key",
                    Endpoint::Events => "source, source_type, tag, keyword, since, limit, api_key",
                };
                return Err(Problem::bad_param(
                    other,
                    format!(
                        "unknown query parameter `{}`; known parameters: {known}",
                        printable(other)
                    ),
                ));
            }
        }
        if q.filter.terms() > max_filters {
            return Err(Problem::bad_param(
                name,
                format!("more than {max_filters} filter terms; this API key allows at most {max_filters}"),
            ));
        }
    }
    if endpoint == Endpoint::Events && q.limit.is_none() {
        q.limit = Some(DEFAULT_LIMIT);
    }
    Ok(q)
}

/// Parses a cursor (`since=` or `Last-Event-ID`): a UUIDv7, else 400 naming `param`.
pub fn parse_cursor(param: &str, value: &str) -> Result<Uuid, Problem> {
    match Uuid::try_parse(value.trim()) {
        Ok(id) if is_uuid_v7(id) => Ok(id),
        Ok(_) => Err(Problem::bad_param(
            param,
            format!("`{param}` must be a UUIDv7 event id; this UUID is not version 7"),
        )),
        Err(_) => Err(Problem::bad_param(
            param,
            format!(
                "`{param}` must be a UUIDv7 event id such as 018f9c2e-1a2b-7c3d-8e4f-5a6b7c8d9e0f"
            ),
        )),
    }
}

fn bad_source(value: &str) -> Problem {
    Problem::bad_param(
        "source",
        format!(
            "`{}` is not a source id or prefix: use 1-128 characters of [a-z0-9._-] starting with a letter or digit, optionally ending in `.*` for a prefix",
            printable(value)
        ),
    )
}

/// Quotes user input safely inside an error message (escapes controls, caps length).
fn printable(s: &str) -> String {
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

    fn parse(q: &str) -> Result<Query, Problem> {
        parse_query(Some(q), Endpoint::Stream, 20)
    }

    fn param_of(q: &str) -> Option<String> {
        parse(q).err().and_then(|p| {
            assert_eq!(p.status, 400, "{q}");
            p.parameter
        })
    }

    #[test]
    fn prefix_matches_descendants_only() -> Result<(), Problem> {
        let f = parse("source=kommun.*")?.filter;
        assert_eq!(f.prefixes, vec!["kommun.".to_string()]);
        assert!(f.matches_source("kommun.stockholm", SourceType::Rss));
        assert!(f.matches_source("kommun.stockholm.press", SourceType::Html));
        assert!(!f.matches_source("kommun", SourceType::Rss));
        assert!(!f.matches_source("kommunal", SourceType::Rss));
        assert!(!f.matches_source("kommun.", SourceType::Rss));
        Ok(())
    }

    #[test]
    fn or_within_and_across_names() -> Result<(), Problem> {
        let f = parse("source=a&source=b.*&source_type=rss&source_type=json")?.filter;
        assert!(f.matches_source("a", SourceType::Rss));
        assert!(f.matches_source("b.x", SourceType::Json));
        assert!(!f.matches_source("a", SourceType::Html));
        assert!(!f.matches_source("c", SourceType::Rss));
        let f = parse("tag=x&tag=y&keyword=Hej")?.filter;
        assert!(f.matches_tags(["z", "y"].into_iter()));
        assert!(!f.matches_tags(["z"].into_iter()));
        assert!(f.matches_keywords(&Lowered::new("sa HEJ", "")));
        assert!(!f.matches_keywords(&Lowered::new("nej", "nope")));
        Ok(())
    }

    #[test]
    fn keywords_match_by_full_case_folding_and_normalisation() -> Result<(), Problem> {
        let f = parse("keyword=STRASSE&keyword=caf%C3%A9")?.filter;
        for (title, hit) in [
            ("Die Straße ist gesperrt", true),
            ("DIE STRASSE", true),
            ("Cafe\u{301} du monde", true), // decomposed é
            ("CAFÉ", true),
            ("cafe", false),
            ("Strasbourg", false),
        ] {
            assert_eq!(f.matches_keywords(&Lowered::new(title, "")), hit, "{title}");
        }
        assert_eq!(fold("ΣΟΦΟΣ"), fold("σοφος"));
        assert_eq!(fold("Ǆ ﬁ"), "ǆ fi");
        Ok(())
    }

    #[test]
    fn keywords_lowercase_unicode_and_percent_decode() -> Result<(), Problem> {
        let f = parse("keyword=%C3%85TERV%C3%84NDER+NU")?.filter;
        assert_eq!(f.keywords, vec!["återvänder nu".to_string()]);
        assert!(f.matches_json(
            "s",
            SourceType::Rss,
            r#"{"title":"Han ÅTERVÄNDER NU","content":"","tags":[]}"#
        ));
        assert!(!f.matches_json(
            "s",
            SourceType::Rss,
            r#"{"title":"x","content":"återvänder\nnu","tags":[]}"#
        ));
        Ok(())
    }

    #[test]
    fn bad_queries_name_the_parameter() {
        assert_eq!(param_of("sources=a").as_deref(), Some("sources"));
        assert_eq!(param_of("source=A").as_deref(), Some("source"));
        assert_eq!(param_of("source=kommun*").as_deref(), Some("source"));
        assert_eq!(param_of("source=.*").as_deref(), Some("source"));
        assert_eq!(param_of("source=").as_deref(), Some("source"));
        assert_eq!(param_of("source=a%0Ab").as_deref(), Some("source"));
        assert_eq!(param_of("source_type=xml").as_deref(), Some("source_type"));
        assert_eq!(param_of("tag=a%20b").as_deref(), Some("tag"));
        assert_eq!(param_of("keyword=a%00").as_deref(), Some("keyword"));
        assert_eq!(param_of("since=nope").as_deref(), Some("since"));
        assert_eq!(
            param_of("since=550e8400-e29b-41d4-a716-446655440000").as_deref(),
            Some("since")
        );
        assert_eq!(param_of("limit=5").as_deref(), Some("limit"));
        assert!(parse_query(Some("limit=0"), Endpoint::Events, 20).is_err());
        assert!(parse_query(Some("limit=1001"), Endpoint::Events, 20).is_err());
        assert_eq!(
            parse_query(None, Endpoint::Events, 20)
                .ok()
                .and_then(|q| q.limit),
            Some(DEFAULT_LIMIT)
        );
        assert_eq!(
            parse_query(Some("%FF%FE=1"), Endpoint::Stream, 20)
                .err()
                .map(|p| p.status),
            Some(400)
        );
    }

    #[test]
    fn term_cap_counts_every_name() {
        let q = "source=a&tag=b&keyword=c&source_type=rss";
        assert!(parse_query(Some(q), Endpoint::Stream, 4).is_ok());
        let p = parse_query(Some(q), Endpoint::Stream, 3).err();
        assert_eq!(p.and_then(|p| p.parameter).as_deref(), Some("source_type"));
        // api_key, since and limit are not filter terms.
        assert!(parse_query(Some("source=a&api_key=lstr_x&limit=3"), Endpoint::Events, 1).is_ok());
    }

    #[test]
    fn mutated_queries_are_accepted_or_a_400_never_a_panic() {
        use rand::{Rng, SeedableRng};
        let seeds = [
            "source=news.*&source=a.b&source_type=rss&tag=x&keyword=Stra%C3%9Fe+nu&since=01a2071f-aae0-742e-a6f9-3b6f17808d85",
            "keyword=%F0%9F%98%80&tag=%E2%80%8B&api_key=lstr_x&limit=10",
            "source=kommun.*&source=.&source=a..b&source=*&keyword=%&since=",
        ];
        let alphabet = b"=&%+.*_-aZ09\x00\xff/?#";
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for i in 0..20_000 {
            let mut q = seeds[i % seeds.len()].as_bytes().to_vec();
            for _ in 0..rng.random_range(1..5) {
                let at = rng.random_range(0..q.len());
                match rng.random_range(0..3) {
                    0 => q[at] = alphabet[rng.random_range(0..alphabet.len())],
                    1 => q.insert(at, alphabet[rng.random_range(0..alphabet.len())]),
                    _ => q.truncate(at.max(1)),
                }
            }
            let q = String::from_utf8_lossy(&q);
            for endpoint in [Endpoint::Stream, Endpoint::Events] {
                if let Err(p) = parse_query(Some(&q), endpoint, 20) {
                    assert_eq!(p.status, 400, "{q}");
                    assert!(p.parameter.is_some(), "no parameter named for {q}");
                }
            }
        }
    }
}
