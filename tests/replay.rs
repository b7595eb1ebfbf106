//! Integration tests: the fixture upstream itself (replay server, recorded
//! scenarios, demo upstream), over real HTTP on 127.0.0.1.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use livestrom::replay::{
    self, DemoOptions, ReplayServer, Scenario, ScenarioError, Step, StepBody, StreamLine,
};
use livestrom_engine::config::Config;

use crate::helpers::{fixture_bytes, spawn_fixture_server, spawn_scenario, wait_for_value, WAIT};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .unwrap_or_else(|e| panic!("reqwest client: {e}"))
}

async fn get(url: &str) -> Result<(u16, reqwest::header::HeaderMap, String), reqwest::Error> {
    let res = client().get(url).send().await?;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    Ok((status, headers, res.text().await?))
}

/// Reads a streaming body until `done(text)` holds, the body ends, or it errors.
/// Returns the text and whether the body ended with an error (an aborted connection).
async fn read_stream(res: reqwest::Response, done: impl Fn(&str) -> bool) -> (String, bool) {
    let mut text = String::new();
    let mut body = res.bytes_stream();
    let read = async {
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(b) => {
                    text.push_str(&String::from_utf8_lossy(&b));
                    if done(&text) {
                        return false;
                    }
                }
                Err(_) => return true,
            }
        }
        false
    };
    let errored = tokio::time::timeout(WAIT, read)
        .await
        .unwrap_or_else(|_| panic!("stream did not finish within {WAIT:?}"));
    (text, errored)
}

fn sse_ids(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn sequence_advances_and_the_last_step_repeats() -> TestResult {
    let server = spawn_scenario(
        Scenario::new("seq").route("/f", [Step::ok("one"), Step::ok("two"), Step::status(500)]),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (status, _, body) = get(&server.url("/f")).await?;
        seen.push(format!("{status} {}", body.trim()));
    }
    assert_eq!(
        seen,
        [
            "200 one",
            "200 two",
            "500 replay: scripted status 500",
            "500 replay: scripted status 500"
        ]
    );
    assert_eq!(server.hits("/f"), 4);
    assert_eq!(server.hits("/other"), 0);
    Ok(())
}

#[tokio::test]
async fn cycling_route_starts_over() -> TestResult {
    let scenario = Scenario::new("cycle").route_with(
        "/c",
        replay::Repeat::Cycle,
        [Step::ok("a"), Step::ok("b")],
    );
    let server = spawn_scenario(scenario).await;
    let mut bodies = Vec::new();
    for _ in 0..5 {
        bodies.push(get(&server.url("/c")).await?.2);
    }
    assert_eq!(bodies, ["a", "b", "a", "b", "a"]);
    Ok(())
}

#[tokio::test]
async fn matching_if_none_match_gets_304_and_counts_as_the_step() -> TestResult {
    let steps = [
        Step::ok("v1").etag("v1"),
        Step::ok("v1").etag("v1"),
        Step::ok("v1").etag("W/\"v1\""),
        Step::ok("v2").etag("v2"),
    ];
    let server = spawn_scenario(Scenario::new("etag").route("/feed", steps)).await;
    let url = server.url("/feed");
    let c = client();

    let first = c.get(&url).send().await?;
    assert_eq!(first.status().as_u16(), 200);
    let etag = first
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .ok_or("no etag on the first response")?;
    assert_eq!(etag, "\"v1\"", "bare etags are quoted");

    let second = c.get(&url).header("If-None-Match", &etag).send().await?;
    assert_eq!(second.status().as_u16(), 304);
    assert_eq!(
        second.headers().get("etag").and_then(|v| v.to_str().ok()),
        Some("\"v1\"")
    );
    assert!(second.bytes().await?.is_empty());

    // Weak comparison: W/"v1" matches "v1".
    let third = c
        .get(&url)
        .header("If-None-Match", "\"zzz\", \"v1\"")
        .send()
        .await?;
    assert_eq!(third.status().as_u16(), 304);

    // The step after the 304s: a new etag, so the old validator no longer matches.
    let fourth = c.get(&url).header("If-None-Match", &etag).send().await?;
    assert_eq!(fourth.status().as_u16(), 200);
    assert_eq!(fourth.text().await?, "v2");
    assert_eq!(server.hits("/feed"), 4);

    let sent: Vec<Option<String>> = server
        .requests("/feed")
        .iter()
        .map(|r| r.header("if-none-match").map(str::to_owned))
        .collect();
    assert_eq!(sent[0], None);
    assert_eq!(sent[1].as_deref(), Some("\"v1\""));
    Ok(())
}

#[tokio::test]
async fn if_modified_since_gets_304_when_not_older() -> TestResult {
    let lm = "Tue, 02 Jun 2026 13:30:00 GMT";
    let server =
        spawn_scenario(Scenario::new("lm").route("/p", [Step::ok("body").last_modified(lm)])).await;
    let c = client();
    let url = server.url("/p");
    let fresh = c.get(&url).header("If-Modified-Since", lm).send().await?;
    assert_eq!(fresh.status().as_u16(), 304);
    let stale = c
        .get(&url)
        .header("If-Modified-Since", "Mon, 01 Jun 2026 00:00:00 GMT")
        .send()
        .await?;
    assert_eq!(stale.status().as_u16(), 200);
    let garbage = c
        .get(&url)
        .header("If-Modified-Since", "yesterday-ish")
        .send()
        .await?;
    assert_eq!(
        garbage.status().as_u16(),
        200,
        "an unparsable date is ignored, not an error"
    );
    assert_eq!(
        stale
            .headers()
            .get("last-modified")
            .and_then(|v| v.to_str().ok()),
        Some(lm)
    );
    Ok(())
}

#[tokio::test]
async fn gzip_steps_are_compressed_on_the_wire() -> TestResult {
    let server = spawn_fixture_server("rss-gzip").await;
    let raw_client = reqwest::Client::builder().no_gzip().timeout(WAIT).build()?;
    let res = raw_client.get(server.url("/feed.xml")).send().await?;
    assert_eq!(
        res.headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );
    let compressed = res.bytes().await?;
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&compressed[..]).read_to_string(&mut plain)?;
    let expected = String::from_utf8(fixture_bytes("fixtures/scenarios/rss-gzip/poll1.xml"))?;
    assert_eq!(plain, expected);

    // A client that accepts gzip sees the plain document.
    let (status, _, body) = get(&server.url("/feed.xml")).await?;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        String::from_utf8(fixture_bytes("fixtures/scenarios/rss-gzip/poll2.xml"))?
    );
    Ok(())
}

#[tokio::test]
async fn unknown_path_is_a_404_naming_the_known_routes() -> TestResult {
    let server = spawn_fixture_server("rss-polls").await;
    let (status, _, body) = get(&server.url("/nope.xml")).await?;
    assert_eq!(status, 404);
    assert!(
        body.contains("/nope.xml") && body.contains("/feed.xml") && body.contains("rss-polls"),
        "{body}"
    );
    assert_eq!(server.hits("/nope.xml"), 1);
    assert_eq!(
        server.hits("/feed.xml"),
        0,
        "a 404 does not advance other routes"
    );
    Ok(())
}

#[tokio::test]
async fn templated_body_changes_per_request() -> TestResult {
    let server = spawn_fixture_server("rss-churning-guids").await;
    let a = get(&server.url("/feed.xml")).await?.2;
    let b = get(&server.url("/feed.xml")).await?.2;
    assert!(a.contains("fetch-1-item-0") && b.contains("fetch-2-item-0"));
    assert_eq!(
        a.replace("fetch-1-", "fetch-2-"),
        b,
        "only the guids change"
    );
    Ok(())
}

#[tokio::test]
async fn ndjson_stream_sends_every_line_then_ends() -> TestResult {
    let server = spawn_fixture_server("firehose-ndjson").await;
    let res = client().get(server.url("/stream.ndjson")).send().await?;
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-ndjson")
    );
    let (text, errored) = read_stream(res, |_| false).await;
    assert!(!errored, "a stream without drop_after ends cleanly");
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .map(|v| v["id"].as_str().unwrap_or("").to_owned())
        })
        .collect::<Result<_, _>>()?;
    assert_eq!(ids, ["ev-1", "ev-2", "ev-3", "ev-4", "ev-5"]);
    Ok(())
}

#[tokio::test]
async fn sse_stream_drops_mid_stream_and_resumes_after_last_event_id() -> TestResult {
    let server = spawn_fixture_server("firehose-sse").await;
    let c = client();
    let res = c.get(server.url("/events")).send().await?;
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let (text, errored) = read_stream(res, |_| false).await;
    assert!(
        errored,
        "the connection is aborted mid-stream, not ended cleanly"
    );
    assert_eq!(sse_ids(&text), ["1", "2", "3"]);

    let res = c
        .get(server.url("/events"))
        .header("Last-Event-ID", "3")
        .send()
        .await?;
    let (text, errored) = read_stream(res, |t| sse_ids(t).len() >= 3).await;
    assert!(!errored);
    assert_eq!(sse_ids(&text), ["4", "5", "6"]);
    assert!(text.contains("\"edit-4\""));
    assert_eq!(server.hits("/events"), 2);
    Ok(())
}

#[tokio::test]
async fn builder_streams_honour_drop_after_and_resume() -> TestResult {
    let events =
        (1..=5).map(|i| StreamLine::sse(i.to_string(), format!("{{\"n\":{i}}}")).event("change"));
    let step = Step::sse(events)
        .drop_after(2)
        .line_delay(Duration::from_millis(5));
    let server = spawn_scenario(Scenario::new("sse").route("/s", [step])).await;
    let c = client();
    let (text, errored) = read_stream(c.get(server.url("/s")).send().await?, |_| false).await;
    assert!(errored);
    assert_eq!(sse_ids(&text), ["1", "2"]);
    assert!(text.contains("event: change\ndata: {\"n\":1}\n\n"));
    let res = c
        .get(server.url("/s"))
        .header("Last-Event-ID", "4")
        .send()
        .await?;
    let (text, errored) = read_stream(res, |_| false).await;
    assert!(!errored, "only one line remained: no drop, a clean end");
    assert_eq!(sse_ids(&text), ["5"]);
    Ok(())
}

#[tokio::test]
async fn shutdown_closes_the_port() -> TestResult {
    let server = spawn_scenario(Scenario::new("bye").route("/x", [Step::ok("x")])).await;
    let url = server.url("/x");
    assert_eq!(get(&url).await?.0, 200);
    server.shutdown();
    assert!(get(&url).await.is_err(), "nothing listens after shutdown");
    Ok(())
}

#[test]
fn server_starts_without_a_runtime_and_stops_on_drop() -> TestResult {
    let server = ReplayServer::start(Scenario::new("sync").route("/x", [Step::ok("x")]))?;
    let addr = server.addr();
    assert!(std::net::TcpStream::connect(addr).is_ok());
    drop(server);
    assert!(std::net::TcpStream::connect(addr).is_err());
    Ok(())
}

fn write_scenario(dir: &Path, toml: &str) -> std::io::Result<()> {
    std::fs::write(dir.join("scenario.toml"), toml)
}

fn load_err(toml: &str) -> Result<ScenarioError, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    write_scenario(dir.path(), toml)?;
    match Scenario::load(dir.path()) {
        Ok(s) => Err(format!("expected an error, loaded {s:?}").into()),
        Err(e) => Ok(e),
    }
}

#[test]
fn bad_scenario_files_are_clear_errors_naming_file_and_field() -> TestResult {
    let e = load_err("[[route]]\npath = \"/f\"\n\n[[route.step]]\nstatuss = 200\n")?.to_string();
    assert!(
        e.contains("scenario.toml:5") && e.contains("statuss"),
        "{e}"
    );

    let e = load_err("[[route]]\npath = \"/f\"\n\n[[route.step]]\nbody_file = \"missing.xml\"\n")?
        .to_string();
    assert!(
        e.contains("route[0].step[0].body_file") && e.contains("missing.xml"),
        "{e}"
    );

    let e = load_err("[[route]]\npath = \"/f\"\n\n[[route.step]]\nstatus = 1000\n")?.to_string();
    assert!(e.contains("route[0].step[0].status"), "{e}");

    let e = load_err("[[route]]\npath = \"f\"\n\n[[route.step]]\n")?.to_string();
    assert!(e.contains("route[0].path"), "{e}");

    let e =
        load_err("[[route]]\npath = \"/f\"\n\n[[route.step]]\nbody = \"x\"\nlines = [\"y\"]\n")?
            .to_string();
    assert!(
        e.contains("route[0].step[0]") && e.contains("only one of"),
        "{e}"
    );

    let e = load_err("[[route]]\npath = \"/f\"\n")?.to_string();
    assert!(e.contains("route[0].step"), "{e}");

    let e = load_err(
        "[[route]]\npath = \"/f\"\n\n[[route.step]]\nkind = \"sse\"\nbody = \"bogus: 1\\n\"\n",
    )?
    .to_string();
    assert!(e.contains("bogus"), "{e}");

    let e = load_err("this is not toml")?.to_string();
    assert!(e.contains("scenario.toml:1"), "{e}");

    let missing = Scenario::load(Path::new("/nonexistent/scenario-dir"));
    assert!(matches!(missing, Err(ScenarioError::Read { .. })));
    Ok(())
}

/// Every recorded scenario loads, and every path is served.
#[tokio::test]
async fn every_recorded_scenario_loads_and_serves() -> TestResult {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(replay::scenarios_dir())? {
        let entry = entry?;
        if entry.path().is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    assert!(names.len() >= 13, "{names:?}");
    for name in &names {
        let scenario = replay::load_scenario(name)?;
        let paths: Vec<String> = scenario.paths().map(str::to_owned).collect();
        assert!(!paths.is_empty(), "{name}");
        let server = ReplayServer::start(scenario)?;
        for path in paths {
            let res = client().get(server.url(&path)).send().await?;
            assert!(
                res.status().as_u16() < 400,
                "{name} {path}: {}",
                res.status()
            );
            // Read a little of streams, all of whole bodies.
            let _ = read_stream(res, |t| !t.is_empty()).await;
        }
    }
    Ok(())
}

fn step_body(scenario: &Scenario, path: &str, i: usize) -> Result<bytes::Bytes, String> {
    let steps = scenario.steps(path).ok_or(format!("no route {path}"))?;
    match steps.get(i).map(Step::body) {
        Some(StepBody::Bytes(b)) => Ok(b.clone()),
        _ => Err(format!("step {i} of {path} has no whole body")),
    }
}

fn parse_feed(bytes: &[u8]) -> Result<feed_rs::model::Feed, feed_rs::parser::ParseFeedError> {
    feed_rs::parser::parse(bytes)
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The feed-poll fixtures say what their notes promise, checked with an independent parser.
#[test]
fn feed_poll_fixtures_have_the_documented_shape() -> TestResult {
    for (name, path) in [
        ("rss-polls", "/feed.xml"),
        ("atom-polls", "/feed.atom"),
        ("jsonfeed-polls", "/feed.json"),
    ] {
        let s = replay::load_scenario(name)?;
        let steps = s.steps(path).ok_or("no route")?;
        assert_eq!(steps.len(), 7, "{name}");
        let polls: Vec<Option<feed_rs::model::Feed>> = (0..7)
            .map(|i| {
                step_body(&s, path, i)
                    .ok()
                    .and_then(|b| parse_feed(&b).ok())
            })
            .collect();
        let count = |i: usize| polls[i].as_ref().map(|f| f.entries.len());
        assert_eq!(count(0), Some(3), "{name} poll 1");
        assert_eq!(count(1), Some(5), "{name} poll 2");
        assert_eq!(count(2), Some(5), "{name} poll 3");
        assert_eq!(
            steps[3].etag_value(),
            steps[2].etag_value(),
            "{name} poll 4 repeats poll 3's etag"
        );
        assert_eq!(steps[4].status_code(), 500, "{name} poll 5");
        assert!(polls[5].is_none(), "{name} poll 6 must not parse as a feed");
        assert_eq!(count(6), Some(6), "{name} poll 7");

        let (p2, p3) = match (&polls[1], &polls[2]) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(format!("{name}: polls 2/3 must parse").into()),
        };
        let text = |f: &feed_rs::model::Feed, id: &str| {
            let e = f.entries.iter().find(|e| e.id == id)?;
            let title = e
                .title
                .as_ref()
                .map(|t| t.content.clone())
                .unwrap_or_default();
            let summary = e
                .summary
                .as_ref()
                .map(|t| t.content.clone())
                .unwrap_or_default();
            let content = e
                .content
                .as_ref()
                .and_then(|c| c.body.clone())
                .unwrap_or_default();
            Some((title, summary, content))
        };
        let mut edited = 0;
        let mut whitespace_only = 0;
        for e in &p2.entries {
            let (a, b) = (text(p2, &e.id), text(p3, &e.id));
            let (Some(a), Some(b)) = (a, b) else {
                return Err(format!("{name}: entry {} missing in poll 3", e.id).into());
            };
            if a == b {
                continue;
            }
            let squashed =
                |t: &(String, String, String)| (squash(&t.0), squash(&t.1), squash(&t.2));
            if squashed(&a) == squashed(&b) {
                whitespace_only += 1;
            } else {
                assert_ne!(
                    squash(&a.0),
                    squash(&b.0),
                    "{name}: the edited entry's title changes"
                );
                edited += 1;
            }
        }
        assert_eq!(
            (edited, whitespace_only),
            (1, 1),
            "{name}: one real edit and one whitespace-only change in poll 3"
        );
    }
    Ok(())
}

#[test]
fn edge_case_feed_fixtures_have_the_documented_shape() -> TestResult {
    let feed = |name: &str,
                path: &str,
                i: usize|
     -> Result<feed_rs::model::Feed, Box<dyn std::error::Error>> {
        Ok(parse_feed(&step_body(
            &replay::load_scenario(name)?,
            path,
            i,
        )?)?)
    };
    let dup = feed("rss-duplicate-guids", "/feed.xml", 0)?;
    assert_eq!(dup.entries.len(), 10);
    let links: std::collections::BTreeSet<_> = dup
        .entries
        .iter()
        .map(|e| e.links[0].href.clone())
        .collect();
    assert_eq!(links.len(), 10, "distinct links");
    let raw = String::from_utf8(
        step_body(
            &replay::load_scenario("rss-duplicate-guids")?,
            "/feed.xml",
            0,
        )?
        .to_vec(),
    )?;
    assert_eq!(
        raw.matches("<guid isPermaLink=\"false\">https://www.harbourtown.example/news/?p=1</guid>")
            .count(),
        10
    );

    let no_ids = String::from_utf8(
        step_body(&replay::load_scenario("rss-no-ids")?, "/feed.xml", 1)?.to_vec(),
    )?;
    assert!(!no_ids.contains("<guid"), "no guids");
    assert_eq!(
        no_ids.matches("<link>").count(),
        1,
        "only the channel has a link"
    );
    assert_eq!(no_ids.matches("<item>").count(), 3);

    let ttl =
        String::from_utf8(step_body(&replay::load_scenario("rss-ttl")?, "/ttl.xml", 0)?.to_vec())?;
    assert!(ttl.contains("<ttl>30</ttl>"));
    let s = replay::load_scenario("rss-ttl")?;
    assert_eq!(
        s.steps("/max-age.xml")
            .and_then(|st| st[0].header_value("cache-control")),
        Some("public, max-age=600")
    );

    let s = replay::load_scenario("rss-429")?;
    let steps = s.steps("/feed.xml").ok_or("no route")?;
    assert_eq!(
        (steps[1].status_code(), steps[1].header_value("retry-after")),
        (429, Some("120"))
    );
    assert_eq!(feed("rss-429", "/feed.xml", 2)?.entries.len(), 2);
    assert!(replay::load_scenario("rss-gzip")?
        .steps("/feed.xml")
        .is_some_and(|s| s.iter().all(Step::is_gzip)));
    Ok(())
}

#[tokio::test]
async fn demo_upstream_serves_live_looking_sources() -> TestResult {
    let options = DemoOptions {
        news_every: Duration::from_millis(200),
        blog_every: Duration::from_millis(200),
        page_every: Duration::from_millis(200),
        firehose_every: Duration::from_millis(50),
        ..DemoOptions::default()
    };
    let server = replay::demo_upstream_with(options).await?;

    let news = |body: String| parse_feed(body.as_bytes()).map(|f| f.entries.len());
    let (status, headers, body) = get(&server.url(replay::NEWS_PATH)).await?;
    assert_eq!(status, 200);
    assert!(headers.get("etag").is_some());
    let first = news(body)?;
    assert!(first >= 5);
    let url = server.url(replay::NEWS_PATH);
    wait_for_value("the demo news feed to gain an item", WAIT, || {
        let url = url.clone();
        async move {
            let body = get(&url).await.ok()?.2;
            let n = parse_feed(body.as_bytes()).ok()?.entries.len();
            (n > first).then_some(())
        }
    })
    .await;

    let (status, _, blog) = get(&server.url(replay::BLOG_PATH)).await?;
    assert_eq!(status, 200);
    assert!(parse_feed(blog.as_bytes())?.entries.len() >= 3);

    let (status, _, page) = get(&server.url(replay::PAGE_PATH)).await?;
    assert_eq!(status, 200);
    assert!(page.contains("<main>") && page.contains("class=\"ad\""));

    let res = client()
        .get(server.url(replay::FIREHOSE_PATH))
        .send()
        .await?;
    let (text, _) = read_stream(res, |t| sse_ids(t).len() >= 2).await;
    let ids: Vec<u64> = sse_ids(&text)
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    assert!(ids.len() >= 2 && ids[1] == ids[0] + 1, "{ids:?}");
    let res = client()
        .get(server.url(replay::FIREHOSE_PATH))
        .header("Last-Event-ID", ids[1].to_string())
        .send()
        .await?;
    let (text, _) = read_stream(res, |t| !sse_ids(t).is_empty()).await;
    assert_eq!(
        sse_ids(&text).first(),
        Some(&(ids[1] + 1).to_string()),
        "resumes right after Last-Event-ID"
    );
    Ok(())
}

#[test]
fn demo_sources_toml_is_a_valid_config() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("demo.db");
    let text = replay::demo_sources_toml("http://127.0.0.1:4567", &db, "127.0.0.1:8099");
    let config = Config::from_toml(&dir.path().join("sources.toml"), &text)
        .map_err(|e| format!("{e}\n{text}"))?;
    let ids: Vec<&str> = config.sources.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        ["demo.news", "demo.blog", "demo.page", "demo.firehose"]
    );
    assert!(config.fetch.allow_private_networks);
    assert_eq!(config.engine.database, db);
    assert_eq!(config.edge.listen.to_string(), "127.0.0.1:8099");
    assert!(config
        .sources
        .iter()
        .all(|s| s.url.as_str().starts_with("http://127.0.0.1:4567/")));
    Ok(())
}
