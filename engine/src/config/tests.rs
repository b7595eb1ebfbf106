//! Unit tests of config loading: every error class at its exact line and
//! field, defaults, every field, overrides, `diff`, and live reload.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;

const FILE: &str = "sources.toml";

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(Path::new(FILE), text)
}

/// The issues of an invalid config; fails the test when it is valid.
fn issues(text: &str) -> Vec<ConfigIssue> {
    match load(text) {
        Ok(_) => panic!("expected the config to be rejected:\n{text}"),
        Err(e) => e.issues().to_vec(),
    }
}

/// 1-based line of the first occurrence of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in test text"));
    text[..at].matches('\n').count() + 1
}

/// Asserts there is an issue for `field` at the line of `needle` whose message
/// contains `fragment`.
#[track_caller]
fn assert_issue(all: &[ConfigIssue], text: &str, field: &str, needle: &str, fragment: &str) {
    let line = line_of(text, needle);
    let found = all
        .iter()
        .any(|i| i.field == field && i.line == Some(line) && i.message.contains(fragment));
    assert!(
        found,
        "no issue `{field}` at line {line} containing {fragment:?}; got:\n{}",
        ConfigError::Invalid(all.to_vec())
    );
}

const MINIMAL: &str = r#"
[[source]]
id = "news.example"
type = "rss"
url = "https://example.com/feed.xml"
"#;

#[test]
fn minimal_config_loads_with_defaults() -> Result<(), ConfigError> {
    let c = load(MINIMAL)?;
    assert_eq!(c.sources.len(), 1);
    let s = &c.sources[0];
    assert_eq!(s.id.as_str(), "news.example");
    assert_eq!(s.source_type, SourceType::Rss);
    assert!(matches!(s.kind, SourceKind::Rss));
    assert_eq!(s.url.as_str(), "https://example.com/feed.xml");
    assert_eq!(
        s.cadence,
        Cadence::Every(Duration::from_secs(120)),
        "rss tier default"
    );
    assert!(s.tags.is_empty() && s.headers.is_empty());
    assert_eq!((s.user_agent.as_deref(), s.initial_items), (None, None));
    Ok(())
}

#[test]
fn empty_file_is_all_defaults() -> Result<(), ConfigError> {
    let c = Config::from_toml(Path::new("/etc/livestrom/sources.toml"), "")?;
    assert!(c.sources.is_empty());
    assert_eq!(
        c.engine.database,
        PathBuf::from("/etc/livestrom/livestrom.db"),
        "relative to the file"
    );
    assert_eq!(c.engine.retention, Duration::from_secs(7 * 86_400));
    assert_eq!(c.engine.synchronous, crate::config::Synchronous::Normal);
    assert_eq!(c.edge.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
    assert_eq!(c.edge.keepalive, Duration::from_secs(25));
    assert_eq!(c.edge.cors_origins, vec!["*".to_owned()]);
    assert!(
        c.fetch.user_agent.starts_with("livestrom/"),
        "{}",
        c.fetch.user_agent
    );
    assert_eq!(c.fetch.timeout, Duration::from_secs(20));
    assert_eq!(c.fetch.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.fetch.max_body, 10_000_000);
    assert_eq!(c.fetch.per_host_rps, 1.0);
    assert_eq!(c.fetch.per_host_concurrency, 2);
    assert!(!c.fetch.allow_private_networks);
    assert_eq!(c.fetch.max_redirects, 5);
    let t = &c.tiers;
    assert_eq!(
        [t.firehose, t.rss, t.json, t.html],
        [5, 120, 120, 900].map(Duration::from_secs)
    );
    Ok(())
}

const EVERY_FIELD: &str = r#"
[engine]
database = "/var/lib/livestrom/events.db"
retention = "3d"
synchronous = "full"

[edge]
listen = "0.0.0.0:9090"
keepalive = "15s"
cors_origins = ["https://app.example.com", "http://localhost:3000"]

[fetch]
user_agent = "test-agent/1.0"
timeout = "30s"
connect_timeout = "5s"
max_body = "2MiB"
per_host_rps = 0.5
per_host_concurrency = 4
allow_private_networks = true
max_redirects = 3

[tiers]
firehose = "10s"
rss = "5m"
json = "3m"
html = "30m"

[[source]]
id = "svt-nyheter"
type = "rss"
url = "https://example.se/rss"
tags = ["kommun", "nyheter"]
interval = "1m"
user_agent = "custom/2"
headers = { Cookie = "a=b", "X-Token" = "t" }
initial_items = 10

[[source]]
id = "feeds.jsonfeed"
type = "json"
url = "https://example.org/feed.json"
schedule = "0 */5 * * * *"

[[source]]
id = "kommun.stockholm.press"
type = "html"
url = "https://example.se/press"
tags = ["kommun"]
selector = "main article"
ignore = [".ad", "time"]
ignore_text = ['\d+ minutes ago']
min_change = 20

[[source]]
id = "wiki.recentchanges"
type = "firehose"
url = "https://example.org/api/recent.json"
format = "json"
items = "/items"
fields = { id = "/id", title = "/title", url = "/link", content = "/summary" }

[[source]]
id = "wiki.stream"
type = "firehose"
url = "https://stream.example.org/v2/stream/recentchange"
format = "sse"

[[source]]
id = "atom.alias"
type = "atom"
url = "http://example.net/atom.xml"
"#;

#[test]
fn every_field_is_accepted_and_read() -> Result<(), ConfigError> {
    let c = load(EVERY_FIELD)?;
    assert_eq!(
        c.engine.database,
        PathBuf::from("/var/lib/livestrom/events.db")
    );
    assert_eq!(c.engine.retention, Duration::from_secs(3 * 86_400));
    assert_eq!(c.engine.synchronous, crate::config::Synchronous::Full);
    assert_eq!(c.edge.listen, SocketAddr::from(([0, 0, 0, 0], 9090)));
    assert_eq!(c.edge.keepalive, Duration::from_secs(15));
    assert_eq!(
        c.edge.cors_origins,
        ["https://app.example.com", "http://localhost:3000"]
    );
    assert_eq!(c.fetch.user_agent, "test-agent/1.0");
    assert_eq!(c.fetch.timeout, Duration::from_secs(30));
    assert_eq!(c.fetch.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.fetch.max_body, 2 * 1024 * 1024);
    assert_eq!(c.fetch.per_host_rps, 0.5);
    assert_eq!(c.fetch.per_host_concurrency, 4);
    assert!(c.fetch.allow_private_networks);
    assert_eq!(c.fetch.max_redirects, 3);
    let t = &c.tiers;
    assert_eq!(
        [t.firehose, t.rss, t.json, t.html],
        [10, 300, 180, 1800].map(Duration::from_secs)
    );

    let ids: Vec<&str> = c.sources.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "svt-nyheter",
            "feeds.jsonfeed",
            "kommun.stockholm.press",
            "wiki.recentchanges",
            "wiki.stream",
            "atom.alias"
        ]
    );

    let rss = &c.sources[0];
    assert_eq!(rss.tags, ["kommun", "nyheter"]);
    assert_eq!(rss.cadence, Cadence::Every(Duration::from_secs(60)));
    assert_eq!(rss.user_agent.as_deref(), Some("custom/2"));
    assert_eq!(rss.headers.get("Cookie").map(String::as_str), Some("a=b"));
    assert_eq!(rss.headers.get("X-Token").map(String::as_str), Some("t"));
    assert_eq!(rss.initial_items, Some(10));

    let json = &c.sources[1];
    assert_eq!(json.source_type, SourceType::Json);
    match &json.cadence {
        Cadence::Cron(s) => assert_eq!(s.source(), "0 */5 * * * *"),
        other => panic!("expected a cron cadence, got {other:?}"),
    }

    let SourceKind::Html(h) = &c.sources[2].kind else {
        panic!("expected html settings")
    };
    assert_eq!(h.selector.as_deref(), Some("main article"));
    assert_eq!(h.ignore, [".ad", "time"]);
    assert_eq!(h.ignore_text.len(), 1);
    assert!(h.ignore_text[0].is_match("updated 5 minutes ago"));
    assert_eq!(h.min_change, 20);
    assert_eq!(
        c.sources[2].cadence,
        Cadence::Every(Duration::from_secs(1800)),
        "html tier"
    );

    let SourceKind::Firehose(f) = &c.sources[3].kind else {
        panic!("expected firehose settings")
    };
    assert_eq!(f.format, FirehoseFormat::Json);
    assert_eq!(f.items.as_deref(), Some("/items"));
    assert_eq!(
        f.fields,
        FieldMap {
            id: Some("/id".into()),
            title: Some("/title".into()),
            url: Some("/link".into()),
            content: Some("/summary".into())
        }
    );
    let SourceKind::Firehose(sse) = &c.sources[4].kind else {
        panic!("expected firehose settings")
    };
    assert_eq!(
        (sse.format, sse.items.as_deref()),
        (FirehoseFormat::Sse, None)
    );
    assert_eq!(
        c.sources[5].source_type,
        SourceType::Rss,
        "atom is an alias of rss"
    );
    Ok(())
}

#[test]
fn syntax_error_has_its_line() {
    let text = "[engine]\nretention = \"7d\"\n\n[edge]\nlisten = \"127.0.0.1:8080\n";
    let all = issues(text);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!((all[0].field.as_str(), all[0].line), ("syntax", Some(5)));
    assert!(!all[0].message.contains('\n'));
}

#[test]
fn duplicate_key_is_a_syntax_error_with_line() {
    let text = "[engine]\nretention = \"7d\"\nretention = \"8d\"\n";
    let all = issues(text);
    assert_eq!(
        (all[0].field.as_str(), all[0].line),
        ("syntax", Some(3)),
        "{all:?}"
    );
}

#[test]
fn unknown_fields_everywhere_are_all_reported() {
    let text = r#"
colour = "blue"

[engine]
retension = "7d"

[edge]
retention = "7d"

[tiers]
atom = "1m"

[[source]]
id = "a"
type = "rss"
url = "https://example.com/feed"
intervall = "1m"

[[source]]
id = "b"
type = "firehose"
url = "https://example.com/api"
fields = { id = "/id", titel = "/title" }

[nonsense]
"#;
    let all = issues(text);
    assert_issue(
        &all,
        text,
        "colour",
        "colour",
        "unknown field; expected one of",
    );
    assert_issue(
        &all,
        text,
        "engine.retension",
        "retension",
        "did you mean `retention`?",
    );
    assert_issue(
        &all,
        text,
        "edge.retention",
        "retention = \"7d\"\n\n[tiers]",
        "belongs in [engine]",
    );
    assert_issue(&all, text, "tiers.atom", "atom", "unknown field");
    assert_issue(
        &all,
        text,
        "source[0].intervall",
        "intervall",
        "did you mean `interval`?",
    );
    assert_issue(
        &all,
        text,
        "source[1].fields.titel",
        "titel",
        "did you mean `title`?",
    );
    assert_issue(&all, text, "nonsense", "[nonsense]", "unknown field");
    assert_eq!(all.len(), 7, "{all:?}");
}

#[test]
fn wrong_value_types_are_all_reported() {
    let text = r#"
[engine]
retention = 7

[fetch]
per_host_rps = "fast"
allow_private_networks = "yes"
per_host_concurrency = 2.5

[[source]]
id = 12
type = "rss"
url = "https://example.com/feed"
tags = "news"

[[source]]
id = "b"
type = "rss"
url = "https://example.com/feed2"
tags = ["ok", 3]
headers = { X-Count = 3 }
"#;
    let all = issues(text);
    assert_issue(
        &all,
        text,
        "engine.retention",
        "retention = 7",
        "expected a duration string like \"7s\" or \"7m\", found an integer 7",
    );
    assert_issue(
        &all,
        text,
        "fetch.per_host_rps",
        "\"fast\"",
        "expected a number, found a string \"fast\"",
    );
    assert_issue(
        &all,
        text,
        "fetch.allow_private_networks",
        "\"yes\"",
        "expected true or false",
    );
    assert_issue(
        &all,
        text,
        "fetch.per_host_concurrency",
        "2.5",
        "expected an integer, found a float 2.5",
    );
    assert_issue(&all, text, "source[0].id", "id = 12", "expected a string");
    assert_issue(
        &all,
        text,
        "source[0].tags",
        "tags = \"news\"",
        "expected an array of strings",
    );
    assert_issue(
        &all,
        text,
        "source[1].tags[1]",
        "[\"ok\", 3]",
        "expected a string, found an integer 3",
    );
    assert_issue(
        &all,
        text,
        "source[1].headers.X-Count",
        "X-Count",
        "expected a string",
    );
    assert_eq!(all.len(), 8, "{all:?}");
}

#[test]
fn single_bracket_source_table_is_explained() {
    let text = "[source]\nid = \"a\"\ntype = \"rss\"\nurl = \"https://example.com/\"\n";
    let all = issues(text);
    assert_issue(&all, text, "source", "[source]", "[[source]]");
}

#[test]
fn missing_required_fields_point_at_the_source() {
    let text =
        "[[source]]\nid = \"a\"\n\n[[source]]\ntype = \"rss\"\nurl = \"https://example.com/\"\n";
    let all = issues(text);
    assert_eq!(all.len(), 3, "{all:?}");
    assert_issue(
        &all,
        text,
        "source[0].type",
        "[[source]]\nid",
        "missing required field `type`",
    );
    assert_issue(
        &all,
        text,
        "source[0].url",
        "[[source]]\nid",
        "missing required field `url`",
    );
    assert_issue(
        &all,
        text,
        "source[1].id",
        "[[source]]\ntype",
        "missing required field `id`",
    );
}

#[test]
fn duplicate_ids_name_the_first_definition() {
    let text = r#"
[[source]]
id = "news.svt"
type = "rss"
url = "https://example.com/a"

[[source]]
id = "news.svt"
type = "rss"
url = "https://example.com/b"
"#;
    let all = issues(text);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].line, Some(8));
    assert_eq!(all[0].field, "source[1].id");
    assert_eq!(
        all[0].message,
        "duplicate id `news.svt`: already used by source[0] on line 3"
    );
}

#[test]
fn bad_and_out_of_range_durations() {
    let text = r#"
[engine]
retention = "30s"

[edge]
keepalive = "soon"

[tiers]
firehose = "0s"
html = "500ms"
rss = "1000d"

[[source]]
id = "a"
type = "rss"
url = "https://example.com/a"
interval = "10 parsecs"

[[source]]
id = "b"
type = "rss"
url = "https://example.com/b"
interval = "999ms"

[[source]]
id = "c"
type = "rss"
url = "https://example.com/c"
interval = "30d"
"#;
    let all = issues(text);
    assert_issue(
        &all,
        text,
        "engine.retention",
        "\"30s\"",
        "too short: the minimum is 1m",
    );
    assert_issue(
        &all,
        text,
        "edge.keepalive",
        "\"soon\"",
        "`soon` is not a duration",
    );
    assert_issue(
        &all,
        text,
        "tiers.firehose",
        "\"0s\"",
        "too short: the minimum is 1s",
    );
    assert_issue(&all, text, "tiers.html", "\"500ms\"", "too short");
    assert_issue(
        &all,
        text,
        "tiers.rss",
        "\"1000d\"",
        "too long: the maximum is 7d",
    );
    assert_issue(
        &all,
        text,
        "source[0].interval",
        "10 parsecs",
        "is not a duration",
    );
    assert_issue(
        &all,
        text,
        "source[1].interval",
        "999ms",
        "too short: the minimum is 1s",
    );
    assert_issue(
        &all,
        text,
        "source[2].interval",
        "\"30d\"",
        "for rarer polls use `schedule`",
    );
    assert_eq!(all.len(), 8, "{all:?}");
}

#[test]
fn bad_cron_schedules() {
    let text = r#"
[[source]]
id = "a"
type = "rss"
url = "https://example.com/a"
schedule = "every five minutes"

[[source]]
id = "b"
type = "rss"
url = "https://example.com/b"
schedule = "*/5 * * * *"

[[source]]
id = "c"
type = "rss"
url = "https://example.com/c"
schedule = "0 0 0 1 1 * 2020"

[[source]]
id = "d"
type = "rss"
url = "https://example.com/d"
schedule = "0 0 0 30 2 *"

[[source]]
id = "e"
type = "rss"
url = "https://example.com/e"
interval = "1m"
schedule = "0 * * * * *"
"#;
    let all = issues(text);
    assert_issue(
        &all,
        text,
        "source[0].schedule",
        "every five",
        "is not a cron expression",
    );
    assert_issue(
        &all,
        text,
        "source[1].schedule",
        "*/5 * * * *",
        "add a seconds field first: \"0 */5 * * * *\"",
    );
    assert_issue(
        &all,
        text,
        "source[2].schedule",
        "2020",
        "never fires again",
    );
    assert_issue(
        &all,
        text,
        "source[3].schedule",
        "30 2",
        "never fires again",
    );
    assert_issue(
        &all,
        text,
        "source[4].schedule",
        "0 * * * * *",
        "either `interval` or `schedule`",
    );
    assert_eq!(all.len(), 5, "{all:?}");
}

#[test]
fn bad_urls() {
    let text = r#"
[[source]]
id = "a"
type = "rss"
url = "ftp://example.com/feed"

[[source]]
id = "b"
type = "rss"
url = "example.com/feed"

[[source]]
id = "c"
type = "rss"
url = "https://exa mple.com/"

[[source]]
id = "d"
type = "rss"
url = "file:///etc/passwd"
"#;
    let all = issues(text);
    assert_issue(
        &all,
        text,
        "source[0].url",
        "ftp://",
        "scheme `ftp`; only http and https",
    );
    assert_issue(
        &all,
        text,
        "source[1].url",
        "\"example.com/feed\"",
        "did you mean \"https://example.com/feed\"?",
    );
    assert_issue(&all, text, "source[2].url", "exa mple", "is not a URL");
    assert_issue(&all, text, "source[3].url", "file://", "scheme `file`");
    assert_eq!(all.len(), 4, "{all:?}");
}

#[test]
fn invalid_ids_say_why() {
    for (id, why) in [
        ("News.SVT", "`N` is uppercase"),
        ("news svt", "` ` is not allowed"),
        ("news..svt", "non-empty groups"),
        ("news.", "non-empty groups"),
        ("-news", "must start with a letter or digit"),
        ("", "must not be empty"),
        ("kommun/stockholm", "`/` is not allowed"),
    ] {
        let text =
            format!("[[source]]\nid = \"{id}\"\ntype = \"rss\"\nurl = \"https://example.com/\"\n");
        let all = issues(&text);
        assert_eq!(all.len(), 1, "{id}: {all:?}");
        assert_eq!(
            (all[0].field.as_str(), all[0].line),
            ("source[0].id", Some(2)),
            "{id}"
        );
        assert!(all[0].message.contains(why), "{id}: {}", all[0].message);
    }
    let long = "a".repeat(129);
    assert!(SourceId::parse(&long).is_err());
    assert!(SourceId::parse(&"a".repeat(128)).is_ok());
    for ok in [
        "a",
        "0",
        "kommun.stockholm.press",
        "svt-nyheter",
        "a_b.c-d.9",
    ] {
        assert!(is_valid_id(ok), "{ok}");
    }
}

#[test]
fn fields_of_another_source_type_are_rejected() {
    let text = r#"
[[source]]
id = "a"
type = "rss"
url = "https://example.com/a"
selector = "main"
items = "/items"

[[source]]
id = "b"
type = "html"
url = "https://example.com/b"
format = "sse"
fields = { id = "/id" }

[[source]]
id = "c"
type = "firehose"
url = "https://example.com/c"
min_change = 3
"#;
    let all = issues(text);
    assert_issue(
        &all,
        text,
        "source[0].selector",
        "selector = \"main\"",
        "only allowed on `type = \"html\"` sources (this source is `rss`)",
    );
    assert_issue(
        &all,
        text,
        "source[0].items",
        "items =",
        "only allowed on `type = \"firehose\"`",
    );
    assert_issue(
        &all,
        text,
        "source[1].format",
        "format = \"sse\"",
        "only allowed on `type = \"firehose\"`",
    );
    assert_issue(
        &all,
        text,
        "source[1].fields",
        "fields =",
        "only allowed on `type = \"firehose\"`",
    );
    assert_issue(
        &all,
        text,
        "source[2].min_change",
        "min_change",
        "only allowed on `type = \"html\"`",
    );
    assert_eq!(all.len(), 5, "{all:?}");
}

#[test]
fn html_selectors_and_regexes() {
    let text = r#"
[[source]]
id = "a"
type = "html"
url = "https://example.com/a"
selector = "  "

[[source]]
id = "b"
type = "html"
url = "https://example.com/b"
selector = "main >> article"
ignore = [".ok",
  "div[",
]
ignore_text = ["fine",
  "(unclosed",
]
"#;
    let all = issues(text);
    assert_issue(
        &all,
        text,
        "source[0].selector",
        "\"  \"",
        "must not be empty",
    );
    assert_issue(
        &all,
        text,
        "source[1].selector",
        "main >> article",
        "is not a CSS selector: dangling combinator",
    );
    assert_issue(
        &all,
        text,
        "source[1].ignore[1]",
        "\"div[\"",
        "is not a CSS selector",
    );
    assert_issue(
        &all,
        text,
        "source[1].ignore_text[1]",
        "(unclosed",
        "unclosed group",
    );
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(all.iter().all(|i| !i.message.contains('\n')), "{all:?}");
}

#[test]
fn bad_json_pointers_and_format() {
    let text = r#"
[[source]]
id = "a"
type = "firehose"
url = "https://example.com/a"
format = "xml"
items = "query.recentchanges"
fields = {
  id = "/meta/id",
  title = "title",
  url = "/a~2b",
}
"#;
    let all = issues(text);
    assert_issue(
        &all,
        text,
        "source[0].format",
        "\"xml\"",
        "expected json, ndjson or sse",
    );
    assert_issue(
        &all,
        text,
        "source[0].items",
        "query.recentchanges",
        "did you mean \"/query/recentchanges\"?",
    );
    assert_issue(
        &all,
        text,
        "source[0].fields.title",
        "title = \"title\"",
        "must be empty or start with `/`",
    );
    assert_issue(
        &all,
        text,
        "source[0].fields.url",
        "/a~2b",
        "`~` must be followed by 0 or 1",
    );
    assert_eq!(all.len(), 4, "{all:?}");
}

#[test]
fn fetch_and_edge_values_are_capped() {
    let text = r#"
[edge]
listen = "localhost:8080"
keepalive = "1h"
cors_origins = ["*", "https://app.example.com/", "app.example.com"]

[fetch]
user_agent = ""
timeout = "5s"
connect_timeout = "10s"
max_body = "10 parsecs"
per_host_rps = 0
per_host_concurrency = 100000
max_redirects = -1
"#;
    let all = issues(text);
    assert_issue(
        &all,
        text,
        "edge.listen",
        "localhost",
        "not an IP address with a port",
    );
    assert_issue(
        &all,
        text,
        "edge.keepalive",
        "\"1h\"",
        "too long: the maximum is 5m",
    );
    assert_issue(
        &all,
        text,
        "edge.cors_origins[1]",
        "cors_origins",
        "write \"https://app.example.com\"",
    );
    assert_issue(
        &all,
        text,
        "edge.cors_origins[2]",
        "cors_origins",
        "is not an origin",
    );
    assert_issue(
        &all,
        text,
        "fetch.user_agent",
        "user_agent",
        "must not be empty",
    );
    assert_issue(
        &all,
        text,
        "fetch.connect_timeout",
        "connect_timeout",
        "longer than fetch.timeout (5s)",
    );
    assert_issue(
        &all,
        text,
        "fetch.max_body",
        "10 parsecs",
        "unknown size unit",
    );
    assert_issue(
        &all,
        text,
        "fetch.per_host_rps",
        "per_host_rps",
        "out of range",
    );
    assert_issue(
        &all,
        text,
        "fetch.per_host_concurrency",
        "100000",
        "must be between 1 and 100",
    );
    assert_issue(
        &all,
        text,
        "fetch.max_redirects",
        "-1",
        "must be between 0 and 20",
    );
    assert_eq!(all.len(), 10, "{all:?}");
}

#[test]
fn short_timeout_caps_default_connect_timeout() -> Result<(), ConfigError> {
    let c = load("[fetch]\ntimeout = \"3s\"\n")?;
    assert_eq!(c.fetch.connect_timeout, Duration::from_secs(3));
    let c = load("[fetch]\nmax_body = 4096\n")?;
    assert_eq!(c.fetch.max_body, 4096);
    Ok(())
}

#[test]
fn headers_are_checked() {
    let text = r#"
[[source]]
id = "a"
type = "rss"
url = "https://example.com/a"
headers = { "Bad Name" = "x", Host = "evil.example", "User-Agent" = "x", Accept = "a", accept = "b", X-Ctl = "a\u0001b" }
"#;
    let all = issues(text);
    assert_issue(
        &all,
        text,
        "source[0].headers.Bad Name",
        "headers",
        "not a valid HTTP header name",
    );
    assert_issue(
        &all,
        text,
        "source[0].headers.Host",
        "headers",
        "taken from `url`",
    );
    assert_issue(
        &all,
        text,
        "source[0].headers.User-Agent",
        "headers",
        "set `user_agent`",
    );
    assert_issue(
        &all,
        text,
        "source[0].headers.accept",
        "headers",
        "already set on line 6",
    );
    assert_issue(
        &all,
        text,
        "source[0].headers.X-Ctl",
        "headers",
        "not allowed in an HTTP header",
    );
    assert_eq!(all.len(), 5, "{all:?}");
}

#[test]
fn many_problems_at_once_sorted_with_display() {
    let text = r#"[engine]
retention = "forever"

[[source]]
id = "Bad Id"
type = "rss"
url = "gopher://example.com/"
colour = "red"

[[source]]
id = "ok"
type = "podcast"
url = "https://example.com/"
"#;
    let err = match load(text) {
        Ok(_) => panic!("invalid config accepted"),
        Err(e) => e,
    };
    let lines: Vec<Option<usize>> = err.issues().iter().map(|i| i.line).collect();
    assert_eq!(lines, [Some(2), Some(5), Some(7), Some(8), Some(12)]);
    let shown = err.to_string();
    let expected_start = "sources.toml:2: engine.retention: `forever` is not a duration";
    assert!(shown.starts_with(expected_start), "{shown}");
    assert!(
        shown.contains("\nsources.toml:8: source[0].colour: unknown field"),
        "{shown}"
    );
    assert!(
        shown.contains("\nsources.toml:12: source[1].type: unknown type `podcast`; expected rss"),
        "{shown}"
    );
    assert!(shown.ends_with("\n5 problems found"), "{shown}");
}

#[test]
fn truncated_and_garbled_input_never_panics() {
    // Every prefix of a full config is either valid or a list of issues that
    // all carry a line; no prefix panics or hangs.
    let mut cuts: Vec<usize> = EVERY_FIELD.char_indices().map(|(i, _)| i).collect();
    cuts.push(EVERY_FIELD.len());
    for cut in cuts {
        if let Err(e) = load(&EVERY_FIELD[..cut]) {
            assert!(!e.issues().is_empty(), "cut {cut}: {e}");
            assert!(
                e.issues().iter().all(|i| i.line.is_some()),
                "cut {cut}: {e}"
            );
        }
    }
    for garbage in [
        "\u{feff}",
        "\0\0\0",
        "[[[",
        "a = [1, 2",
        "source = 5",
        "[[source]]\n[[source]]",
        "x=\"\\u{d800}\"",
    ] {
        let _ = load(garbage);
    }
}

#[test]
fn overrides_win_over_the_file() -> Result<(), ConfigError> {
    let mut c = load(EVERY_FIELD)?;
    c.apply_overrides(None, None);
    assert_eq!(
        c.engine.database,
        PathBuf::from("/var/lib/livestrom/events.db")
    );
    let listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 7000));
    c.apply_overrides(Some(PathBuf::from("other.db")), Some(listen));
    assert_eq!(
        c.engine.database,
        PathBuf::from("other.db"),
        "relative to the working directory"
    );
    assert_eq!(c.edge.listen, listen);
    Ok(())
}

#[test]
fn diff_reports_added_removed_changed_and_settings() -> Result<(), ConfigError> {
    let old = load(EVERY_FIELD)?;
    assert!(
        diff(&old, &load(EVERY_FIELD)?).is_empty(),
        "regexes and cron compare by text"
    );

    let edited = EVERY_FIELD
        .replace("id = \"atom.alias\"", "id = \"atom.renamed\"")
        .replace("min_change = 20", "min_change = 21")
        .replace("json = \"3m\"", "json = \"4m\"")
        .replace("retention = \"3d\"", "retention = \"4d\"");
    let new = load(&edited)?;
    let d = diff(&old, &new);
    let ids = |v: &[SourceId]| v.iter().map(|s| s.as_str().to_owned()).collect::<Vec<_>>();
    assert_eq!(ids(&d.added), ["atom.renamed"]);
    assert_eq!(ids(&d.removed), ["atom.alias"]);
    // feeds.jsonfeed has a schedule: the json tier does not change it.
    assert_eq!(ids(&d.changed), ["kommun.stockholm.press"]);
    assert_eq!(d.settings, ["engine.retention", "tiers.json"]);

    let tier_only = load(&MINIMAL.replace("[[source]]", "[tiers]\nrss = \"3m\"\n\n[[source]]"))?;
    let d = diff(&load(MINIMAL)?, &tier_only);
    assert_eq!(
        ids(&d.changed),
        ["news.example"],
        "a tier change changes the sources using it"
    );
    Ok(())
}

/// Receives until `pred` matches, failing after a generous timeout.
async fn recv_until(
    rx: &mut mpsc::Receiver<Result<Config, ConfigError>>,
    what: &str,
    pred: impl Fn(&Result<Config, ConfigError>) -> bool,
) -> Result<Config, ConfigError> {
    let wait = async {
        loop {
            match rx.recv().await {
                Some(r) if pred(&r) => return r,
                Some(_) => continue,
                None => panic!("watch channel closed while waiting for {what}"),
            }
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), wait).await {
        Ok(r) => r,
        Err(_) => panic!("no reload with {what} within 10s"),
    }
}

fn with_sources(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[[source]]\nid = \"s{i}\"\ntype = \"rss\"\nurl = \"https://example.com/{i}\"\n\n"
            )
        })
        .collect()
}

#[tokio::test]
async fn reload_on_edit_rename_and_invalid_edit() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sources.toml");
    std::fs::write(&path, with_sources(1))?;
    let cancel = CancellationToken::new();
    let mut rx = watch(path.clone(), cancel.clone())?;

    std::fs::write(&path, with_sources(2))?;
    let c = recv_until(
        &mut rx,
        "2 sources",
        |r| matches!(r, Ok(c) if c.sources.len() == 2),
    )
    .await?;
    assert_eq!(c.path, path);

    // An invalid edit arrives as Err with the exact line.
    std::fs::write(&path, format!("{}interval = \"0s\"\n", with_sources(2)))?;
    let err = recv_until(&mut rx, "an error", |r| r.is_err())
        .await
        .err()
        .ok_or("expected an error")?;
    assert_eq!(err.issues().len(), 1, "{err}");
    assert_eq!(
        (err.issues()[0].line, err.issues()[0].field.as_str()),
        (Some(11), "source[1].interval")
    );

    // Editors save by renaming a temporary file over the original.
    let tmp = dir.path().join(".sources.toml.swp");
    std::fs::write(&tmp, with_sources(3))?;
    std::fs::rename(&tmp, &path)?;
    recv_until(
        &mut rx,
        "3 sources",
        |r| matches!(r, Ok(c) if c.sources.len() == 3),
    )
    .await?;

    cancel.cancel();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while rx.recv().await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "the channel closes after cancel");
    Ok(())
}

#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_even_without_a_change() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sources.toml");
    std::fs::write(&path, with_sources(4))?;
    let cancel = CancellationToken::new();
    let mut rx = watch(path.clone(), cancel.clone())?;
    // The handler is installed by `watch`, so the signal cannot kill us.
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()?;
    assert!(status.success());
    recv_until(
        &mut rx,
        "4 sources",
        |r| matches!(r, Ok(c) if c.sources.len() == 4),
    )
    .await?;
    cancel.cancel();
    Ok(())
}

#[test]
fn watch_outside_a_runtime_is_an_error_not_a_panic() {
    let err = watch(PathBuf::from("sources.toml"), CancellationToken::new());
    assert!(matches!(err, Err(ConfigError::Watch { .. })));
}

#[tokio::test]
async fn watching_a_missing_folder_fails_cleanly() {
    let err = watch(
        PathBuf::from("/nonexistent-livestrom-dir/sources.toml"),
        CancellationToken::new(),
    );
    match err {
        Err(e @ ConfigError::Watch { .. }) => {
            assert!(e.to_string().starts_with("cannot watch /nonexistent"))
        }
        other => panic!("expected a watch error, got {other:?}"),
    }
}

#[test]
fn deeply_nested_values_do_not_overflow_the_stack() {
    for depth in [100, 10_000, 200_000] {
        let arrays = format!("x = {}{}\n", "[".repeat(depth), "]".repeat(depth));
        assert!(load(&arrays).is_err(), "depth {depth}");
        let tables = format!("x = {}{}\n", "{a = ".repeat(depth), "}".repeat(depth));
        assert!(load(&tables).is_err(), "depth {depth}");
    }
}

#[test]
fn fetch_proxy_is_an_http_url_with_a_host_and_nothing_after() -> Result<(), ConfigError> {
    let c = load("[fetch]\nproxy = \"http://user:pw@proxy.internal:3128\"\n")?;
    assert_eq!(
        c.fetch.proxy.as_ref().map(url::Url::as_str),
        Some("http://user:pw@proxy.internal:3128/")
    );
    assert_eq!(load("")?.fetch.proxy, None);
    for (value, message) in [
        ("socks5://proxy:1080", "scheme `socks5` is not supported"),
        ("proxy.internal:3128", "not supported"),
        ("http://proxy.internal:3128/path", "nothing after"),
        ("not a url", "is not a URL"),
    ] {
        let text = format!("[fetch]\nproxy = \"{value}\"\n");
        let all = issues(&text);
        assert_issue(&all, &text, "fetch.proxy", value, message);
        assert_eq!(all.len(), 1, "{all:?}");
    }
    Ok(())
}

#[test]
fn a_cluster_table_is_read_with_its_defaults() -> Result<(), ConfigError> {
    let c = load("[cluster]\nnats = [\"nats://a:4222\", \"tls://u:p@b:4222\"]\n")?;
    let cl = c.cluster.unwrap_or_else(|| panic!("no cluster"));
    assert_eq!(cl.nats, vec!["nats://a:4222", "tls://u:p@b:4222"]);
    assert_eq!(cl.stream, "LIVESTROM");
    assert_eq!(cl.replicas, 1);
    assert_eq!(cl.lease, Duration::from_secs(30));
    let c = load(
        "[cluster]\nnats = [\"nats://a\"]\nstream = \"EV_1-x\"\nreplicas = 3\nlease = \"5s\"\n",
    )?;
    let cl = c.cluster.unwrap_or_else(|| panic!("no cluster"));
    assert_eq!(
        (cl.stream.as_str(), cl.replicas, cl.lease),
        ("EV_1-x", 3, Duration::from_secs(5))
    );
    assert!(load("")?.cluster.is_none(), "no table, no cluster");
    Ok(())
}

#[test]
fn every_cluster_problem_is_reported_at_its_line() {
    let text = "[cluster]\nstream = \"my.stream\"\nreplicas = 7\nlease = \"0s\"\nleases = \"1s\"\n";
    let all = issues(text);
    assert_issue(&all, text, "cluster.nats", "[cluster]", "is required");
    assert_issue(
        &all,
        text,
        "cluster.stream",
        "my.stream",
        "`.` is not allowed",
    );
    assert_issue(
        &all,
        text,
        "cluster.replicas",
        "replicas = 7",
        "between 1 and 5",
    );
    assert_issue(&all, text, "cluster.lease", "lease = \"0s\"", "");
    assert_issue(&all, text, "cluster.leases", "leases", "unknown field");
    let text = "[cluster]\nnats = [\"http://a:4222\", \"nats://\"]\n";
    let all = issues(text);
    assert_issue(&all, text, "cluster.nats[0]", "http://a", "nats://, tls://");
    assert_eq!(all.len(), 2, "{all:?}");
    let text = "[cluster]\nnats = []\n";
    assert_issue(
        &issues(text),
        text,
        "cluster.nats",
        "[cluster]",
        "at least one server",
    );
}

#[test]
fn synchronous_is_normal_or_full_and_anything_else_is_named() {
    let err = Config::from_toml(
        Path::new("sources.toml"),
        "[engine]\nsynchronous = \"always\"\n",
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("sources.toml:2: engine.synchronous: must be \"normal\""),
        "{err}"
    );
}
