//! Stream filters from the query string: `source` (exact or `prefix.*`),
//! `source_type`, `tag`, `keyword`; OR within a name, AND across names.
//!
//! The query string is parsed once per request into a [`Query`] (filter,
//! cursor, page size). The filter terms and cursors are checked by the
//! engine's one parser ([`livestrom_engine::filter`], which webhooks use
//! too); every rejection is a 400 [`Problem`] naming the parameter, so a
//! typo (`sources=`) is never silently "match everything".

use livestrom_engine::filter::printable;
pub use livestrom_engine::filter::{
    fold, BodyFields, Filter, FilterError, Lowered, MAX_KEYWORD_BYTES, MAX_TAG_BYTES,
};
use uuid::Uuid;

use crate::problem::Problem;

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

impl From<FilterError> for Problem {
    fn from(e: FilterError) -> Self {
        Problem::bad_param(&e.parameter, e.detail)
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
        if q.filter.add(name, &value)? {
            q.filter.check_cap(name, max_filters)?;
            continue;
        }
        match name {
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
    }
    if endpoint == Endpoint::Events && q.limit.is_none() {
        q.limit = Some(DEFAULT_LIMIT);
    }
    // A stream keeps its filter for as long as it is open.
    q.filter.shrink_to_fit();
    Ok(q)
}

/// Parses a cursor (`since=` or `Last-Event-ID`): a UUIDv7, else 400 naming `param`.
pub fn parse_cursor(param: &str, value: &str) -> Result<Uuid, Problem> {
    Ok(livestrom_engine::filter::parse_cursor(param, value)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use livestrom_engine::SourceType;

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
