//! Unit tests of the source kinds through the [`Kind`] trait: what each asks
//! for, how a body becomes items, what it remembers, how its items are
//! looked up — on bytes, no IO.

use std::path::Path;

use url::Url;

use super::*;
use crate::config::Config;

/// The kind of a one-source config (`extra` = the source's own TOML lines).
fn kind_of(ty: &str, extra: &str) -> Arc<dyn Kind> {
    let toml = format!(
        "[[source]]\nid = \"s\"\ntype = \"{ty}\"\nurl = \"https://example.org/x\"\n{extra}\n"
    );
    let config = Config::from_toml(Path::new("sources.toml"), &toml)
        .unwrap_or_else(|e| panic!("config: {e}\n{toml}"));
    let src = config
        .source("s")
        .unwrap_or_else(|| panic!("no source in {toml}"));
    kind(src)
}

fn url() -> Url {
    Url::parse("https://example.org/x").unwrap_or_else(|e| panic!("{e}"))
}

fn parse(kind: &dyn Kind, bytes: &[u8], ct: &str, memory: Option<&str>) -> Parse {
    let url = url();
    let body = Body {
        bytes,
        content_type: Some(ct),
        url: &url,
    };
    kind.parse(&body, memory)
        .unwrap_or_else(|e| panic!("parse: {e}"))
}

#[test]
fn each_configured_type_gets_its_kind() {
    let rss = kind_of("rss", "");
    assert!(rss.accept().starts_with("application/rss+xml"));
    assert_eq!((rss.lookup(), rss.stream().is_some()), (Lookup::All, false));
    let json = kind_of("json", "");
    assert!(json.accept().starts_with("application/feed+json"));
    let html = kind_of("html", "");
    assert!(html.accept().starts_with("text/html"));
    assert_eq!(
        (html.lookup(), html.stream().is_some()),
        (Lookup::All, false)
    );
    let doc = kind_of("firehose", "");
    assert!(doc.accept().starts_with("application/json"));
    assert_eq!(
        (doc.lookup(), doc.stream().is_some()),
        (Lookup::Parsed, false)
    );
    let sse = kind_of("firehose", "format = \"sse\"");
    assert_eq!(sse.accept(), "text/event-stream");
    assert_eq!(sse.lookup(), Lookup::Parsed);
    assert!(sse.stream().is_some_and(StreamSpec::resumes));
    let ndjson = kind_of("firehose", "format = \"ndjson\"");
    assert!(ndjson.accept().starts_with("application/x-ndjson"));
    assert!(ndjson.stream().is_some_and(|s| !s.resumes()));
}

#[test]
fn a_feed_parses_to_its_items_and_remembers_nothing() {
    let rss = b"<rss version=\"2.0\"><channel><title>t</title><ttl>30</ttl><item><guid>a</guid><title>A</title><link>/a</link></item></channel></rss>";
    let parse = parse(&*kind_of("rss", ""), rss, "application/rss+xml", None);
    assert_eq!(parse.items.len(), 1);
    assert_eq!(parse.items[0].guid.as_deref(), Some("a"));
    assert_eq!(parse.items[0].url.as_deref(), Some("https://example.org/a"));
    assert_eq!(parse.ttl, Some(Duration::from_secs(30 * 60)));
    assert_eq!((parse.remember, parse.unchanged), (None, false));
}

#[test]
fn a_broken_body_is_a_typed_source_error_with_the_shown_prefix() {
    let url = url();
    let body = Body {
        bytes: b"not a feed",
        content_type: Some("text/plain"),
        url: &url,
    };
    let e = kind_of("rss", "").parse(&body, None).err();
    assert!(matches!(e, Some(SourceError::Feed(_))), "{e:?}");
    assert!(e.is_some_and(|e| e.to_string().starts_with("parse: ")));
    let e = kind_of("firehose", "").parse(&body, None).err();
    assert!(matches!(e, Some(SourceError::Firehose(_))), "{e:?}");
    assert!(e.is_some_and(|e| e.to_string().starts_with("firehose: ")));
    let body = Body {
        bytes: b"%PDF-1.4",
        content_type: Some("application/pdf"),
        url: &url,
    };
    let e = kind_of("html", "").parse(&body, None).err();
    assert!(matches!(e, Some(SourceError::Html(_))), "{e:?}");
    assert!(e.is_some_and(|e| e.to_string().starts_with("page: ")));
}

#[test]
fn a_page_remembers_its_snapshot_and_reports_a_small_change_as_unchanged() {
    let page = kind_of("html", "selector = \"main\"\nmin_change = 5");
    let v1 = b"<html><head><title>P</title></head><body><main><p>Opening hours 8-16</p></main></body></html>";
    let first = parse(&*page, v1, "text/html", None);
    assert_eq!(first.items.len(), 1);
    assert_eq!(first.items[0].guid.as_deref(), Some("page"));
    assert_eq!(first.items[0].url.as_deref(), Some("https://example.org/x"));
    assert_eq!(first.items[0].diff, None);
    let snapshot = first
        .remember
        .unwrap_or_else(|| panic!("the first parse remembers the page"));
    assert_eq!(snapshot, first.items[0].content);

    // Below min_change: no item, the page is unchanged, the old snapshot stays.
    let v2 = b"<html><head><title>P</title></head><body><main><p>Opening hours 8-17</p></main></body></html>";
    let small = parse(&*page, v2, "text/html", Some(&snapshot));
    assert!(small.items.is_empty());
    assert_eq!((small.unchanged, small.remember), (true, None));

    let v3 = b"<html><head><title>P</title></head><body><main><p>Closed for the summer</p></main></body></html>";
    let changed = parse(&*page, v3, "text/html", Some(&snapshot));
    assert!(!changed.unchanged);
    assert_eq!(changed.items.len(), 1);
    assert!(changed.items[0].diff.is_some());
    assert!(changed.items[0]
        .added
        .as_ref()
        .is_some_and(|a| !a.is_empty()));
    assert_eq!(
        changed.remember.as_deref(),
        Some(changed.items[0].content.as_str())
    );
}

#[test]
fn a_stream_body_decodes_in_arrival_order_and_remembers_the_sse_cursor() {
    let ndjson = kind_of("firehose", "format = \"ndjson\"");
    let parse_nd = parse(
        &*ndjson,
        b"{\"id\":\"1\",\"title\":\"a\"}\nnot json\n{\"id\":\"2\",\"title\":\"b\"}",
        "application/x-ndjson",
        None,
    );
    let ids: Vec<_> = parse_nd.items.iter().map(|i| i.guid.as_deref()).collect();
    assert_eq!(ids, vec![Some("1"), Some("2")]);
    assert_eq!(parse_nd.remember, None);

    let sse = kind_of("firehose", "format = \"sse\"");
    let parse_sse = parse(
        &*sse,
        b"id: 7\ndata: {\"title\":\"a\"}\n\nid: 8\ndata: {\"title\":\"b\"}\n\n",
        "text/event-stream",
        Some("6"),
    );
    let ids: Vec<_> = parse_sse.items.iter().map(|i| i.guid.as_deref()).collect();
    assert_eq!(ids, vec![Some("7"), Some("8")], "an SSE id names its item");
    assert_eq!(parse_sse.remember.as_deref(), Some("8"));
}

#[test]
fn skipped_messages_are_counted_with_the_last_reason_and_taken_once() {
    let Some(spec) = kind_of("firehose", "format = \"ndjson\"").stream().cloned() else {
        panic!("ndjson is streamed")
    };
    let mut decoder = spec.decoder(url(), None, 16);
    let mut out = Vec::new();
    decoder.feed(b"not json\n{\"id\":\"1\"}\n[1]\n", &mut out);
    assert_eq!(out.len(), 1);
    let skipped = decoder
        .take_problem()
        .unwrap_or_else(|| panic!("two lines were skipped"));
    assert_eq!(skipped.count, 2);
    assert!(matches!(
        skipped.last,
        firehose::MessageProblem::NdjsonMapsToNothing
    ));
    assert_eq!(
        skipped.to_string(),
        "skipped 2 malformed messages; last: NDJSON line maps to no item (not an object, or none of the fields)"
    );
    assert!(decoder.take_problem().is_none());
    decoder.feed(b"{\"title\":\"far too long for the limit\"}\n", &mut out);
    let skipped = decoder
        .take_problem()
        .unwrap_or_else(|| panic!("a long line was dropped"));
    assert_eq!(
        skipped.to_string(),
        "skipped a malformed message: dropped an NDJSON line longer than 16 bytes"
    );
}

/// Found by fuzzing: an item's resume cursor and the skip count depended on
/// how the SSE bytes were split into reads (an id-only event between two
/// reads moved the cursor only when it ended a read; dropped lines were
/// counted once per read).
#[test]
fn sse_cursors_and_skip_counts_do_not_depend_on_chunking() {
    let Some(spec) = kind_of("firehose", "format = \"sse\"").stream().cloned() else {
        panic!("sse is streamed")
    };
    let whole: &[u8] = b"id: 1\ndata: {\"id\":\"a\"}\n\nid: 2\n\nid: 3\ndata: [{\"id\":\"b\"},{\"id\":\"c\"}]\n\n\
        data: {\"title\":\"far too long for the limit\"}\n\ndata: {\"title\":\"this one is also far too long\"}\n\n";
    let decode = |parts: &[&[u8]]| {
        let mut decoder = spec.decoder(url(), None, 40);
        let mut out = Vec::new();
        let mut skipped = 0;
        for p in parts {
            decoder.feed(p, &mut out);
            skipped += decoder.take_problem().map_or(0, |s| s.count);
        }
        let cursors: Vec<(Option<String>, Option<String>)> =
            out.into_iter().map(|(item, c)| (item.guid, c)).collect();
        (cursors, skipped)
    };
    let expected = (
        vec![
            (Some("a".into()), Some("1".into())),
            // Not the last item of its event: the cursor from before the
            // event, which the id-only event 2 moved.
            (Some("b".into()), Some("2".into())),
            (Some("c".into()), Some("3".into())),
        ],
        2,
    );
    assert_eq!(decode(&[whole]), expected);
    for cut in 0..=whole.len() {
        assert_eq!(
            decode(&[&whole[..cut], &whole[cut..]]),
            expected,
            "cut at {cut}"
        );
    }
    let bytes: Vec<&[u8]> = whole.chunks(1).collect();
    assert_eq!(decode(&bytes), expected, "byte by byte");
}
