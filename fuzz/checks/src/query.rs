//! `filter_query`: the `/v1/stream` and `/v1/events` query strings.

use livestrom_edge::filter::{
    fold, parse_query, Endpoint, Filter, Lowered, Query, MAX_KEYWORD_BYTES, MAX_LIMIT,
    MAX_TAG_BYTES,
};
use livestrom_engine::config::is_valid_id;
use livestrom_engine::SourceType;

/// Input: a raw query string (lossy UTF-8), parsed for both endpoints with
/// several term caps. A refusal is a 400 naming a parameter. An accepted
/// query respects every documented bound, writes back to a query string
/// that parses to the same query, and its filter matches what its terms
/// say: a source it names, a prefix's member, a tag, a keyword's own text
/// in a title (case-folding is idempotent).
pub fn check(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    for endpoint in [Endpoint::Stream, Endpoint::Events] {
        for max_filters in [0, 3, 64] {
            match parse_query(Some(&raw), endpoint, max_filters) {
                Ok(q) => accepted(&q, endpoint, max_filters),
                Err(p) => {
                    assert_eq!(p.status, 400, "a refusal that is not a 400: {p:?}");
                    assert!(p.parameter.is_some(), "a 400 naming no parameter: {p:?}");
                }
            }
        }
    }
}

fn accepted(q: &Query, endpoint: Endpoint, max_filters: usize) {
    let f = &q.filter;
    assert!(
        f.terms() <= max_filters,
        "{} terms over a cap of {max_filters}",
        f.terms()
    );
    match endpoint {
        Endpoint::Stream => assert_eq!(q.limit, None, "a limit on /v1/stream"),
        Endpoint::Events => assert!(
            q.limit.is_some_and(|l| (1..=MAX_LIMIT).contains(&l)),
            "limit {:?} outside 1..={MAX_LIMIT}",
            q.limit
        ),
    }
    if let Some(since) = q.since {
        assert!(
            livestrom_engine::event::is_uuid_v7(since),
            "a since that is not v7"
        );
    }
    for s in &f.sources {
        assert!(is_valid_id(s), "source {s:?} is not a valid id");
    }
    for p in &f.prefixes {
        let stem = p
            .strip_suffix('.')
            .unwrap_or_else(|| panic!("prefix {p:?} without its dot"));
        assert!(is_valid_id(stem), "prefix {p:?} is not a valid id");
    }
    for t in &f.tags {
        assert!(
            !t.is_empty()
                && t.len() <= MAX_TAG_BYTES
                && !t.chars().any(|c| c.is_control() || c.is_whitespace()),
            "tag {t:?} out of bounds"
        );
    }
    for k in &f.keywords {
        assert!(
            !k.is_empty() && !k.chars().any(char::is_control),
            "keyword {k:?}"
        );
        assert_eq!(&fold(k), k, "case folding is not idempotent on {k:?}");
    }
    for list in [&f.sources, &f.prefixes, &f.tags, &f.keywords] {
        let mut sorted = list.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), list.len(), "duplicate terms in {list:?}");
    }

    matching(f);

    // Written back and parsed again: the same query. (Folding can lengthen
    // a keyword past the bound on what a client sends: `ΐ` is 2 bytes, its
    // folding 6; such a query has no written-back form.)
    if f.keywords.iter().any(|k| k.len() > MAX_KEYWORD_BYTES) {
        return;
    }
    let text = write_back(q, endpoint);
    let again = parse_query(Some(&text), endpoint, max_filters)
        .unwrap_or_else(|p| panic!("{text:?} (written back) is refused: {p:?}"));
    assert_eq!(again.filter, q.filter, "{text:?} parses to another filter");
    assert_eq!(again.since, q.since, "{text:?} parses to another cursor");
    assert_eq!(again.limit, q.limit, "{text:?} parses to another limit");
}

/// The query string a client would send for `q`.
fn write_back(q: &Query, endpoint: Endpoint) -> String {
    let mut w = url::form_urlencoded::Serializer::new(String::new());
    for s in &q.filter.sources {
        w.append_pair("source", s);
    }
    for p in &q.filter.prefixes {
        w.append_pair("source", &format!("{p}*"));
    }
    for t in &q.filter.types {
        w.append_pair("source_type", t.as_str());
    }
    for t in &q.filter.tags {
        w.append_pair("tag", t);
    }
    for k in &q.filter.keywords {
        w.append_pair("keyword", k);
    }
    if let Some(since) = q.since {
        w.append_pair("since", &since.to_string());
    }
    // Written even when it is the default (the default is then explicit).
    if let (Endpoint::Events, Some(limit)) = (endpoint, q.limit) {
        w.append_pair("limit", &limit.to_string());
    }
    w.finish()
}

/// What the filter's terms promise about matching.
fn matching(f: &Filter) {
    let ty = f.types.first().copied().unwrap_or(SourceType::Rss);
    let tag = f.tags.first().map(String::as_str);
    let keyword = f.keywords.first().map(String::as_str).unwrap_or("");
    let mut ids: Vec<String> = f.sources.clone();
    ids.extend(f.prefixes.iter().map(|p| format!("{p}member")));
    if ids.is_empty() {
        ids.push("any.source".to_owned());
    }
    for id in &ids {
        assert!(
            f.matches_source(id, ty),
            "{id:?} ({ty}) does not match {f:?}"
        );
        let json = serde_json::json!({
            "title": keyword,
            "content": "",
            "tags": tag.into_iter().collect::<Vec<_>>(),
        })
        .to_string();
        assert!(
            f.matches_json(id, ty, &json),
            "{json} from {id:?} does not match {f:?}"
        );
        assert!(f.matches_keywords(&Lowered::new(keyword, "")) || f.keywords.is_empty());
    }
    // A prefix names its members, never itself.
    for p in &f.prefixes {
        let stem = &p[..p.len() - 1];
        if !f.sources.iter().any(|s| s == stem)
            && !f.prefixes.iter().any(|q| stem.starts_with(q.as_str()))
        {
            assert!(!f.matches_source(stem, ty), "prefix {p:?} matches its stem");
        }
    }
}
