//! Integration tests: config. The repo's `sources.toml` and the SPEC example
//! validate; `Config::load` errors read like compiler output; an edited file
//! is re-loaded (and an invalid edit reported) without a restart.

use std::path::Path;
use std::time::Duration;

use livestrom_engine::config::{self, Cadence, Config, ConfigError, FirehoseFormat, SourceKind};
use livestrom_engine::SourceType;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn repo_sources_toml_is_valid() -> TestResult {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sources.toml");
    let c = Config::load(&path)?;
    assert_eq!(
        c.engine.database,
        Path::new(env!("CARGO_MANIFEST_DIR")).join("livestrom.db")
    );
    assert_eq!(c.engine.retention, Duration::from_secs(7 * 86_400));
    assert_eq!(c.edge.listen.to_string(), "127.0.0.1:8080");
    assert!(
        (8..=14).contains(&c.sources.len()),
        "about ten sources, got {}",
        c.sources.len()
    );
    for id in [
        "news.svt",
        "news.bbc.world",
        "tech.hn",
        "wiki.recentchanges",
        "wiki.stream",
    ] {
        assert!(c.source(id).is_some(), "missing {id}");
    }
    for t in SourceType::ALL {
        assert!(
            c.sources.iter().any(|s| s.source_type == t),
            "no {t} source in the example"
        );
    }
    let stream = c.source("wiki.stream").ok_or("wiki.stream")?;
    let SourceKind::Firehose(f) = &stream.kind else {
        return Err("wiki.stream is not a firehose".into());
    };
    assert_eq!(f.format, FirehoseFormat::Sse);
    assert_eq!(f.fields.id.as_deref(), Some("/meta/id"));
    assert!(
        c.sources
            .iter()
            .any(|s| matches!(s.cadence, Cadence::Cron(_))),
        "shows a schedule"
    );
    Ok(())
}

/// SPEC §1, verbatim.
const SPEC_EXAMPLE: &str = r#"
[engine]
database = "livestrom.db"     # SQLite file (WAL mode)
retention = "7d"              # backfill window kept for resume; older events are pruned

[edge]
listen = "127.0.0.1:8080"
keepalive = "25s"             # SSE comment heartbeat

[fetch]
user_agent = "livestrom/<version> (+https://<your-host>)"
timeout = "20s"
max_body = "10MB"             # larger responses are cut off and reported
per_host_rps = 1              # politeness per registrable domain (*.example.com share it):
per_host_concurrency = 2      #   rate, concurrency, and a shared Retry-After
allow_private_networks = false  # refuse loopback/private targets (SSRF); tests set true

[tiers]                       # default interval per source_type
firehose = "5s"
rss = "2m"
json = "2m"
html = "15m"

[[source]]
id = "svt-nyheter"            # unique, [a-z0-9._-]; dots make prefix groups: "kommun.stockholm"
type = "rss"                  # rss (RSS 0.9x/1.0/2.0 and Atom) | json (JSON Feed) | html | firehose
url = "https://example.se/rss"
tags = ["kommun", "nyheter"]
interval = "1m"               # optional: overrides the tier (the next poll also honours
                              # the feed's <ttl>, Cache-Control/Expires and Retry-After)
# user_agent = "…"            # optional per-source overrides of [fetch]
# headers = { Cookie = "…" }
# schedule = "0 */5 * * * *"  # optional cron expression instead of an interval

[[source]]
id = "kommun.stockholm.press"
type = "html"
url = "https://example.se/press"
tags = ["kommun"]
selector = "main article"     # CSS selector of the watched region
ignore = [".ad", "time"]      # CSS selectors removed before diffing (noise)

[[source]]
id = "wiki.recentchanges"
type = "firehose"
url = "https://example.org/api/recent.json"
format = "json"               # json (poll a JSON document) | ndjson | sse (long-lived upstream stream)
items = "/items"              # JSON pointer to the item array (json format)
fields = { id = "/id", title = "/title", url = "/link", content = "/summary" }  # JSON pointers
"#;

#[test]
fn spec_example_is_valid() -> TestResult {
    let c = Config::from_toml(Path::new("sources.toml"), SPEC_EXAMPLE)?;
    let ids: Vec<&str> = c.sources.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "svt-nyheter",
            "kommun.stockholm.press",
            "wiki.recentchanges"
        ]
    );
    assert_eq!(
        c.fetch.user_agent,
        "livestrom/<version> (+https://<your-host>)"
    );
    Ok(())
}

#[test]
fn load_reports_every_problem_like_a_compiler() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sources.toml");
    std::fs::write(
        &path,
        "[engine]\nretention = \"30s\"\n\n[[source]]\nid = \"news.svt\"\ntype = \"rss\"\nurl = \"https://www.svt.se/nyheter/rss.xml\"\nintervall = \"1m\"\n\n[[source]]\nid = \"news.svt\"\ntype = \"html\"\nurl = \"ftp://example.com/\"\nselector = \"\"\n",
    )?;
    let err = match Config::load(&path) {
        Ok(_) => return Err("invalid config accepted".into()),
        Err(e) => e,
    };
    let p = path.display();
    let expected = format!(
        "{p}:2: engine.retention: `30s` is too short: the minimum is 1m\n\
         {p}:8: source[0].intervall: unknown field; did you mean `interval`?\n\
         {p}:11: source[1].id: duplicate id `news.svt`: already used by source[0] on line 5\n\
         {p}:13: source[1].url: `ftp://example.com/` has scheme `ftp`; only http and https URLs can be polled\n\
         {p}:14: source[1].selector: must not be empty; leave `selector` out to watch the whole page body\n\
         5 problems found"
    );
    assert_eq!(err.to_string(), expected);
    Ok(())
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let err = Config::load(Path::new("/nonexistent/livestrom/sources.toml"));
    match err {
        Err(e @ ConfigError::Io { .. }) => {
            assert!(
                e.to_string()
                    .starts_with("cannot read /nonexistent/livestrom/sources.toml: "),
                "{e}"
            );
        }
        other => panic!("expected an IO error, got {other:?}"),
    }
}

/// Receives until `pred` matches, failing after a generous timeout.
async fn recv_until(
    rx: &mut mpsc::Receiver<Result<Config, ConfigError>>,
    pred: impl Fn(&Result<Config, ConfigError>) -> bool,
) -> Result<Result<Config, ConfigError>, Box<dyn std::error::Error>> {
    let wait = async {
        while let Some(r) = rx.recv().await {
            if pred(&r) {
                return Some(r);
            }
        }
        None
    };
    match tokio::time::timeout(Duration::from_secs(10), wait).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err("watch channel closed".into()),
        Err(_) => Err("no matching reload within 10s".into()),
    }
}

fn source(id: &str) -> String {
    format!("[[source]]\nid = \"{id}\"\ntype = \"rss\"\nurl = \"https://example.com/{id}.xml\"\n\n")
}

#[tokio::test]
async fn edited_file_is_reloaded_and_an_invalid_edit_reported() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sources.toml");
    std::fs::write(&path, source("a"))?;
    let running = Config::load(&path)?;
    let cancel = CancellationToken::new();
    let mut rx = config::watch(path.clone(), cancel.clone())?;

    std::fs::write(&path, format!("{}{}", source("a"), source("b")))?;
    let next = recv_until(&mut rx, |r| matches!(r, Ok(c) if c.sources.len() == 2)).await??;
    let d = config::diff(&running, &next);
    assert_eq!(
        d.added.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
    assert!(d.removed.is_empty() && d.changed.is_empty());

    std::fs::write(
        &path,
        format!(
            "{}{}",
            source("a"),
            source("b").replace("\"rss\"", "\"podcast\"")
        ),
    )?;
    let bad = recv_until(&mut rx, Result::is_err).await?;
    let Err(err) = bad else {
        return Err("expected an invalid config".into());
    };
    assert!(
        err.to_string()
            .contains("sources.toml:8: source[1].type: unknown type `podcast`"),
        "{err}"
    );

    cancel.cancel();
    Ok(())
}
