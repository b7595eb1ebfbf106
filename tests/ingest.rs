//! Integration tests: the real engine (scheduler, fetcher, parsers,
//! normaliser, store) against the replay server, asserting the exact events.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use livestrom::replay::{ReplayServer, Scenario, Step};
use livestrom_engine::runtime::{self, EngineHandle};
use livestrom_engine::store::{ReadScope, SourceState};
use livestrom_engine::{Bus, Config, EventLog, Store, StreamEvent};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A running engine on a fresh database.
struct Engine {
    store: Store,
    handle: EngineHandle,
    cancel: CancellationToken,
    task: JoinHandle<Result<(), runtime::RuntimeError>>,
}

impl Engine {
    async fn start(db: &Path, sources: &str) -> Engine {
        Self::start_with_timeout(db, "10s", sources).await
    }

    /// [`Engine::start`] with another `fetch.timeout`.
    async fn start_with_timeout(db: &Path, timeout: &str, sources: &str) -> Engine {
        let toml = format!(
            "[engine]\ndatabase = {db:?}\nretention = \"7d\"\n[fetch]\nallow_private_networks = true\nper_host_rps = 1000\nper_host_concurrency = 16\ntimeout = \"{timeout}\"\n{sources}"
        );
        let config = match Config::from_toml(Path::new("test-sources.toml"), &toml) {
            Ok(c) => c,
            Err(e) => panic!("test config invalid: {e}\n{toml}"),
        };
        let store = match Store::open(&config.engine.database, config.engine.retention, Bus::new())
        {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let (handle, commands) = runtime::handle();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(runtime::run(
            config,
            store.clone(),
            None,
            Some(commands),
            cancel.clone(),
        ));
        Engine {
            store,
            handle,
            cancel,
            task,
        }
    }

    async fn stop(self) -> Store {
        self.cancel.cancel();
        match tokio::time::timeout(Duration::from_secs(30), self.task).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("engine did not stop cleanly: {other:?}"),
        }
        self.store
    }

    async fn state(&self, id: &str) -> SourceState {
        match self.store.source_state(id).await {
            Ok(Some(s)) => s,
            other => panic!("no state for {id}: {other:?}"),
        }
    }

    /// Waits for the automatic first poll of `id` to be stored.
    async fn first_poll(&self, id: &str) -> SourceState {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = self.store.source_state(id).await {
                if s.last_poll_at.is_some() {
                    return s;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "first poll of {id} never happened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn all_events(store: &Store) -> Vec<StreamEvent> {
    let rows = match store.read_after(Uuid::nil(), 100_000, &ReadScope::default()) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    rows.iter()
        .map(|r| match serde_json::from_str::<StreamEvent>(&r.json) {
            Ok(e) => e,
            Err(e) => panic!("stored event does not parse: {e}: {}", r.json),
        })
        .collect()
}

fn schema() -> jsonschema::Validator {
    let text = include_str!("../docs/stream-event.schema.json");
    let value: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
    jsonschema::validator_for(&value).unwrap_or_else(|e| panic!("{e}"))
}

/// Every stored event validates against the StreamEvent schema.
fn assert_schema_valid(store: &Store) {
    let v = schema();
    let rows = store
        .read_after(Uuid::nil(), 100_000, &ReadScope::default())
        .unwrap_or_else(|e| panic!("{e}"));
    for r in rows {
        let inst: serde_json::Value =
            serde_json::from_str(&r.json).unwrap_or_else(|e| panic!("{e}"));
        let errors: Vec<String> = v.iter_errors(&inst).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "event violates the schema: {errors:?}\n{}",
            r.json
        );
    }
}

fn rss(items: &[(&str, &str, &str)]) -> String {
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel><title>Test feed</title><link>https://example.org/</link><description>d</description>\n",
    );
    for (guid, title, desc) in items {
        s.push_str(&format!(
            "<item><guid isPermaLink=\"false\">{guid}</guid><title>{title}</title><link>https://example.org/{guid}</link><description>{desc}</description></item>\n"
        ));
    }
    s.push_str("</channel></rss>\n");
    s
}

fn titles(events: &[StreamEvent]) -> Vec<(String, u32)> {
    events
        .iter()
        .map(|e| (e.title.clone(), e.version))
        .collect()
}

#[tokio::test]
async fn feed_over_seven_polls_emits_exactly_the_new_and_changed_items() {
    let p1 = rss(&[
        ("b", "Second story", "B body"),
        ("a", "First story", "A body"),
    ]);
    let p2 = rss(&[
        ("c", "Third story", "C body"),
        ("b", "Second story", "B body"),
        ("a", "First story", "A body"),
    ]);
    // a: real title change; b: whitespace-only change (not a new version).
    let p3 = rss(&[
        ("c", "Third story", "C body"),
        ("b", "Second   story", "B  body"),
        ("a", "First story, updated", "A body"),
    ]);
    let p7 = rss(&[
        ("d", "Fourth story", "D body"),
        ("c", "Third story", "C body"),
        ("b", "Second story", "B body"),
        ("a", "First story, updated", "A body"),
    ]);
    let scenario = Scenario::new("lifecycle").route(
        "/feed.xml",
        [
            Step::ok(p1).content_type("application/rss+xml"),
            Step::ok(p2).content_type("application/rss+xml"),
            Step::ok(p3.clone())
                .content_type("application/rss+xml")
                .etag("v3"),
            Step::ok(p3).content_type("application/rss+xml").etag("v3"),
            Step::status(500),
            Step::ok("<rss><channel><item><title>broken").content_type("application/rss+xml"),
            Step::ok(p7).content_type("application/rss+xml"),
        ],
    );
    let server = ReplayServer::start(scenario).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("t.db");
    let src = format!("[[source]]\nid = \"news.test\"\ntype = \"rss\"\nurl = \"{}\"\ntags = [\"t1\"]\ninterval = \"1h\"\n", server.url("/feed.xml"));
    let engine = Engine::start(&db, &src).await;

    // Poll 1 (automatic): both items, oldest first, version 1.
    let st = engine.first_poll("news.test").await;
    assert_eq!(st.last_error, None);
    let ev = all_events(&engine.store);
    assert_eq!(
        titles(&ev),
        vec![("First story".into(), 1), ("Second story".into(), 1)]
    );
    assert!(ev.iter().all(|e| e.source_id == "news.test"
        && e.tags == vec!["t1".to_string()]
        && e.supersedes.is_none()));
    assert_eq!(ev[0].url, "https://example.org/a");

    // Poll 2: one new item.
    engine
        .handle
        .poll_now("news.test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ev = all_events(&engine.store);
    assert_eq!(ev.len(), 3);
    assert_eq!((ev[2].title.as_str(), ev[2].version), ("Third story", 1));

    // Poll 3: a changed significantly (v2 superseding v1); b changed only in whitespace.
    engine
        .handle
        .poll_now("news.test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ev = all_events(&engine.store);
    assert_eq!(ev.len(), 4, "{:?}", titles(&ev));
    assert_eq!(
        (ev[3].title.as_str(), ev[3].version),
        ("First story, updated", 2)
    );
    assert_eq!(ev[3].supersedes, Some(ev[0].id));
    assert_eq!(ev[3].item_id, ev[0].item_id);

    // Poll 4: 304 via If-None-Match — nothing downstream. As if the feed
    // had answered 304 for ten days: its item state is refreshed by the 304
    // (so the hourly sweep never forgets items an unchanged feed still has).
    let ten_days_ago = (chrono::Utc::now() - chrono::Duration::days(10)).timestamp();
    engine.store.flush().await.unwrap_or_else(|e| panic!("{e}"));
    livestrom_engine::store::open_connection(&db)
        .and_then(|c| Ok(c.execute("UPDATE items SET seen_at = ?1", [ten_days_ago])?))
        .unwrap_or_else(|e| panic!("{e}"));
    engine
        .handle
        .poll_now("news.test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all_events(&engine.store).len(), 4);
    let items = engine
        .store
        .items("news.test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(items.len(), 3);
    assert!(
        items.iter().all(|i| i.seen_at > ten_days_ago),
        "a 304 must refresh the items: {items:?}"
    );
    let reqs = server.requests("/feed.xml");
    assert_eq!(
        reqs.last()
            .and_then(|r| r.header("if-none-match").map(str::to_owned))
            .as_deref(),
        Some("\"v3\"")
    );

    // Poll 5: a 500 marks the source unhealthy, emits nothing.
    let err = engine
        .handle
        .poll_now("news.test")
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("500"), "{err}");
    let st = engine.state("news.test").await;
    assert_eq!(st.consecutive_failures, 1);
    assert!(st.last_error.as_deref().unwrap_or_default().contains("500"));

    // Poll 6: a malformed body: a parse error, still nothing emitted.
    let err = engine
        .handle
        .poll_now("news.test")
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("parse"), "{err}");
    assert_eq!(engine.state("news.test").await.consecutive_failures, 2);
    assert_eq!(all_events(&engine.store).len(), 4);

    // Poll 7: recovery: the new item only; failures reset.
    engine
        .handle
        .poll_now("news.test")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ev = all_events(&engine.store);
    assert_eq!(ev.len(), 5);
    assert_eq!(ev[4].title, "Fourth story");
    let st = engine.state("news.test").await;
    assert_eq!((st.consecutive_failures, st.last_error), (0, None));

    // Ids strictly increase and every event satisfies the schema.
    assert!(ev.windows(2).all(|w| w[0].id < w[1].id));
    assert_schema_valid(&engine.store);
    engine.stop().await;
}

#[tokio::test]
async fn a_restart_neither_re_emits_nor_loses_cursors() {
    let body = rss(&[("b", "Two", "2"), ("a", "One", "1")]);
    let scenario = Scenario::new("restart").route(
        "/f.xml",
        [Step::ok(body)
            .content_type("application/rss+xml")
            .etag("e1")],
    );
    let server = ReplayServer::start(scenario).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("t.db");
    let src = format!(
        "[[source]]\nid = \"r\"\ntype = \"rss\"\nurl = \"{}\"\ninterval = \"1h\"\n",
        server.url("/f.xml")
    );

    let engine = Engine::start(&db, &src).await;
    engine.first_poll("r").await;
    let before = all_events(&engine.store);
    assert_eq!(before.len(), 2);
    let store = engine.stop().await;
    drop(store);

    // Restart on the same database: the stored next-poll time is honoured,
    // so force a poll; the ETag is sent (304) and nothing is re-emitted.
    let engine = Engine::start(&db, &src).await;
    engine
        .handle
        .poll_now("r")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let reqs = server.requests("/f.xml");
    assert_eq!(
        reqs.last()
            .and_then(|r| r.header("if-none-match").map(str::to_owned))
            .as_deref(),
        Some("\"e1\"")
    );
    assert_eq!(all_events(&engine.store).len(), 2);

    // Even without the validator (a server that ignores ETags), the same items are not new.
    engine.stop().await;
    let conn = livestrom_engine::store::open_and_migrate(&db).unwrap_or_else(|e| panic!("{e}"));
    conn.execute("UPDATE sources SET etag = NULL, last_modified = NULL", [])
        .unwrap_or_else(|e| panic!("{e}"));
    drop(conn);
    let engine = Engine::start(&db, &src).await;
    engine
        .handle
        .poll_now("r")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let after = all_events(&engine.store);
    assert_eq!(after.len(), 2);
    assert_eq!(after[0].id, before[0].id);

    // New ids after a restart still sort after the old ones.
    let next = engine
        .store
        .write(livestrom_engine::store::WriteBatch {
            events: vec![],
            ..Default::default()
        })
        .await
        .map(|v| v.len())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next, 0);
    engine.stop().await;
}

#[tokio::test]
async fn a_broken_source_is_unhealthy_and_the_others_keep_running() {
    let good = rss(&[("x", "Good item", "fine")]);
    let scenario = Scenario::new("mixed")
        .route(
            "/good.xml",
            [Step::ok(good).content_type("application/rss+xml")],
        )
        .route(
            "/bad.xml",
            [Step::ok("this is not a feed at all").content_type("text/plain")],
        )
        .route("/down.xml", [Step::status(503).retry_after("120")]);
    let server = ReplayServer::start(scenario).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("t.db");
    let src = format!(
        "[[source]]\nid = \"good\"\ntype = \"rss\"\nurl = \"{}\"\ninterval = \"1h\"\n\
         [[source]]\nid = \"bad\"\ntype = \"rss\"\nurl = \"{}\"\ninterval = \"1h\"\n\
         [[source]]\nid = \"down\"\ntype = \"rss\"\nurl = \"{}\"\ninterval = \"1h\"\n",
        server.url("/good.xml"),
        server.url("/bad.xml"),
        // Another host than the others: a 503's Retry-After holds back its whole domain.
        server.url("/down.xml").replace("127.0.0.1", "localhost")
    );
    let engine = Engine::start(&db, &src).await;
    for id in ["good", "bad", "down"] {
        engine.first_poll(id).await;
    }
    let ev = all_events(&engine.store);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].source_id, "good");
    let bad = engine.state("bad").await;
    assert!(
        bad.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("parse"),
        "{bad:?}"
    );
    let down = engine.state("down").await;
    assert!(
        down.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("503"),
        "{down:?}"
    );
    // Retry-After pushes the next poll out at least that far.
    let next = down.next_poll_at.unwrap_or_default();
    let last = down.last_poll_at.unwrap_or_default();
    assert!(
        next - last >= chrono::Duration::seconds(119),
        "next poll {next} after {last}"
    );
    engine.stop().await;
}

#[tokio::test]
async fn an_unreachable_source_reports_why_and_never_stops() {
    // A port nothing listens on: connection refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    drop(listener);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("t.db");
    let src = format!("[[source]]\nid = \"gone\"\ntype = \"rss\"\nurl = \"http://127.0.0.1:{port}/feed\"\ninterval = \"1h\"\n");
    let engine = Engine::start(&db, &src).await;
    let st = engine.first_poll("gone").await;
    assert!(
        st.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("connect"),
        "{st:?}"
    );
    for n in 2..=4u32 {
        let _ = engine.handle.poll_now("gone").await;
        let st = engine.state("gone").await;
        assert_eq!(st.consecutive_failures, n);
        assert!(st.next_poll_at.is_some());
    }
    engine.stop().await;
}

#[tokio::test]
async fn html_page_emits_once_then_only_on_meaningful_change() {
    let page = |main: &str, noise: &str| {
        format!("<html><head><title>Press</title></head><body><div class=\"ad\">{noise}</div><main><h1>Press releases</h1>{main}</main></body></html>")
    };
    let scenario = Scenario::new("page").route(
        "/press",
        [
            Step::ok(page("<p>Release one</p>", "ad 1")).content_type("text/html"),
            Step::ok(page("<p>Release one</p>", "ad 2")).content_type("text/html"),
            Step::ok(page("<p>Release two</p><p>Release one</p>", "ad 3"))
                .content_type("text/html"),
        ],
    );
    let server = ReplayServer::start(scenario).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("t.db");
    let src = format!(
        "[[source]]\nid = \"kommun.press\"\ntype = \"html\"\nurl = \"{}\"\ninterval = \"1h\"\nselector = \"main\"\nignore = [\".ad\"]\n",
        server.url("/press")
    );
    let engine = Engine::start(&db, &src).await;
    engine.first_poll("kommun.press").await;
    let ev = all_events(&engine.store);
    assert_eq!(ev.len(), 1);
    assert!(ev[0].content.contains("Release one"));
    assert_eq!(ev[0].diff, None);

    // The page's item state is as old as the item horizon; an unchanged page
    // still refreshes it, so the next real change is version 2, not a new v1.
    let old = (chrono::Utc::now() - chrono::Duration::days(10)).timestamp();
    engine.store.flush().await.unwrap_or_else(|e| panic!("{e}"));
    livestrom_engine::store::open_connection(&db)
        .and_then(|c| Ok(c.execute("UPDATE items SET seen_at = ?1", [old])?))
        .unwrap_or_else(|e| panic!("{e}"));
    engine
        .handle
        .poll_now("kommun.press")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        all_events(&engine.store).len(),
        1,
        "noise outside the region made an event"
    );
    let items = engine
        .store
        .items("kommun.press")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(items.iter().all(|i| i.seen_at > old), "{items:?}");

    engine
        .handle
        .poll_now("kommun.press")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ev = all_events(&engine.store);
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[1].version, 2);
    assert_eq!(ev[1].supersedes, Some(ev[0].id));
    assert!(
        ev[1]
            .diff
            .as_deref()
            .unwrap_or_default()
            .contains("+Release two"),
        "{:?}",
        ev[1].diff
    );
    assert_eq!(
        ev[1].added.as_deref(),
        Some(&["Release two".to_string()][..])
    );
    assert_schema_valid(&engine.store);
    engine.stop().await;
}

#[tokio::test]
async fn firehose_sse_upstream_is_stored_as_it_arrives_and_resumes_after_restart() {
    use livestrom::replay::StreamLine;
    let lines: Vec<StreamLine> = (1..=5)
        .map(|i| StreamLine::sse(format!("{i}"), format!("{{\"id\":\"e{i}\",\"title\":\"Edit {i}\",\"uri\":\"https://wiki.example/{i}\"}}")))
        .collect();
    let scenario = Scenario::new("sse").route("/stream", [Step::sse(lines)]);
    let server = ReplayServer::start(scenario).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("t.db");
    let src = format!(
        "[[source]]\nid = \"wiki.rc\"\ntype = \"firehose\"\nformat = \"sse\"\nurl = \"{}\"\nfields = {{ id = \"/id\", title = \"/title\", url = \"/uri\" }}\n",
        server.url("/stream")
    );
    let engine = Engine::start(&db, &src).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while all_events(&engine.store).len() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "upstream items never arrived: {:?}",
            titles(&all_events(&engine.store))
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ev = all_events(&engine.store);
    assert_eq!(
        ev.iter().map(|e| e.title.as_str()).collect::<Vec<_>>(),
        vec!["Edit 1", "Edit 2", "Edit 3", "Edit 4", "Edit 5"]
    );
    assert_eq!(
        engine.state("wiki.rc").await.upstream_cursor.as_deref(),
        Some("5")
    );
    engine.stop().await;

    // After a restart the reader resumes with Last-Event-ID: 5 and nothing repeats.
    let engine = Engine::start(&db, &src).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let resumed = server
            .requests("/stream")
            .iter()
            .any(|r| r.header("last-event-id") == Some("5"));
        if resumed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no resume with Last-Event-ID: {:?}",
            server
                .requests("/stream")
                .iter()
                .map(|r| r.header("last-event-id").map(str::to_owned))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(all_events(&engine.store).len(), 5);
    engine.stop().await;
}

#[allow(dead_code)]
fn _assert_send(_: Arc<Store>) {}

/// Runs `polls` polls of a recorded scenario through the engine and returns
/// the number of new events after each poll (errors count as 0 and are kept).
async fn replay_polls(
    scenario: &str,
    source_type: &str,
    polls: usize,
) -> (Vec<usize>, Vec<Result<(), String>>, Vec<StreamEvent>) {
    replay_polls_with(scenario, source_type, "", polls).await
}

/// As [`replay_polls`], with extra source settings (TOML lines).
async fn replay_polls_with(
    scenario: &str,
    source_type: &str,
    extra: &str,
    polls: usize,
) -> (Vec<usize>, Vec<Result<(), String>>, Vec<StreamEvent>) {
    let scenario = livestrom::replay::load_scenario(scenario).unwrap_or_else(|e| panic!("{e}"));
    let server = ReplayServer::start(scenario).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("t.db");
    let path = server
        .scenario()
        .paths()
        .next()
        .map(str::to_owned)
        .unwrap_or_default();
    let src = format!(
        "[[source]]\nid = \"fx\"\ntype = \"{source_type}\"\nurl = \"{}\"\ninterval = \"1h\"\n{extra}",
        server.url(&path)
    );
    let engine = Engine::start(&db, &src).await;
    let first = engine.first_poll("fx").await;
    let mut counts = vec![all_events(&engine.store).len()];
    let mut results = vec![first.last_error.map_or(Ok(()), Err)];
    for _ in 1..polls {
        let before = all_events(&engine.store).len();
        results.push(
            engine
                .handle
                .poll_now("fx")
                .await
                .map_err(|e| e.to_string()),
        );
        counts.push(all_events(&engine.store).len() - before);
    }
    assert_eq!(server.hits(&path), polls, "one request per poll");
    assert_schema_valid(&engine.store);
    let events = all_events(&engine.store);
    engine.stop().await;
    (counts, results, events)
}

#[tokio::test]
async fn recorded_atom_and_json_feed_stories_emit_exactly_what_changed() {
    for (scenario, ty) in [
        ("atom-polls", "rss"),
        ("jsonfeed-polls", "json"),
        ("rss-polls", "rss"),
    ] {
        let (counts, results, events) = replay_polls(scenario, ty, 7).await;
        // poll 1: 3 new; 2: 2 new; 3: one real edit (v2), one whitespace-only (none);
        // 4: 304; 5: 500; 6: unusable body; 7: 1 new.
        assert_eq!(counts, vec![3, 2, 1, 0, 0, 0, 1], "{scenario}: {results:?}");
        assert!(
            results[4].as_ref().err().is_some_and(|e| e.contains("500")),
            "{scenario}: {results:?}"
        );
        assert!(results[5].is_err(), "{scenario}: {results:?}");
        assert!(results[6].is_ok(), "{scenario}: {results:?}");
        let v2: Vec<&StreamEvent> = events.iter().filter(|e| e.version == 2).collect();
        assert_eq!(v2.len(), 1, "{scenario}");
        assert!(v2[0].supersedes.is_some(), "{scenario}");
    }
}

#[tokio::test]
async fn duplicate_guids_churning_guids_and_missing_ids_do_not_flood() {
    // 10 items sharing one guid stay 10 items, and a re-poll emits nothing.
    let (counts, _, events) = replay_polls("rss-duplicate-guids", "rss", 3).await;
    assert_eq!(counts, vec![10, 0, 0]);
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e.item_id.as_str()).collect();
    assert_eq!(ids.len(), 10);

    // Guids that change on every fetch: the same 3 items, never re-emitted.
    let (counts, _, _) = replay_polls("rss-churning-guids", "rss", 4).await;
    assert_eq!(counts, vec![3, 0, 0, 0]);

    // Items with no guid and no link: stable content-hash identity.
    let (counts, _, _) = replay_polls("rss-no-ids", "rss", 3).await;
    assert_eq!(counts, vec![2, 1, 0]);
}

/// Polls a recorded feed `want.len()` times through the engine: every poll
/// succeeds and emits `want[i]` new events (all first versions).
async fn assert_new_per_poll(scenario: &str, ty: &str, want: &[usize]) -> Vec<StreamEvent> {
    let (counts, results, events) = replay_polls(scenario, ty, want.len()).await;
    assert_eq!(counts, want, "{scenario}: {results:?}");
    assert!(results.iter().all(Result::is_ok), "{scenario}: {results:?}");
    assert!(events.iter().all(|e| e.version == 1), "{scenario}");
    events
}

#[tokio::test]
async fn rss_090_rdf_feed_emits_its_items() {
    // heise-style RSS 0.90: used to be 0 items and a healthy source.
    let events = assert_new_per_poll("rss-090-rdf", "rss", &[3, 1, 0]).await;
    assert_eq!(
        events.last().map(|e| e.title.as_str()),
        Some("Landesregierung startet Förderprogramm für Rechenzentren")
    );
}

#[tokio::test]
async fn json_feed_with_wrong_typed_fields_emits_its_items() {
    // `tags` as a string used to fail the whole feed.
    let events = assert_new_per_poll("jsonfeed-lenient", "json", &[3, 1, 0]).await;
    let ids: Vec<&str> = events.iter().map(|e| e.item_id.as_str()).collect();
    assert_eq!(ids, ["1040", "1041", "1042", "1043"]);
}

#[tokio::test]
async fn atom_with_legacy_text_construct_types_emits_its_items() {
    // `type="application/xhtml+xml"` (and friends) used to fail the whole feed.
    assert_new_per_poll("atom-legacy-types", "rss", &[3, 0]).await;
    assert_new_per_poll("atom03-modes", "rss", &[2, 0]).await;
}

#[tokio::test]
async fn podcast_items_with_only_an_enclosure_or_a_description_are_emitted() {
    // Bare enclosures used to be dropped silently.
    let events = assert_new_per_poll("rss-podcast-enclosures", "rss", &[3, 1, 0]).await;
    // A bare episode is identified by, and links to, its enclosure.
    let mp3 = "https://media.hamnradion.example/avsnitt/hamnradion-013.mp3";
    assert_eq!(
        events.last().map(|e| (e.item_id.as_str(), e.url.as_str())),
        Some((mp3, mp3))
    );
}

#[tokio::test]
async fn a_document_whose_items_are_all_unusable_is_reported_not_healthy() {
    // Every poll finds 3 <item>s with nothing to identify or show: the source
    // fails with a message naming the count and the reason (what
    // `livestrom sources list` and /v1/admin/sources show), not a silent
    // healthy poll with no events.
    let (counts, results, _) = replay_polls("rss-unusable-items", "rss", 2).await;
    assert_eq!(counts, vec![0, 0]);
    for r in &results {
        let err = r.as_ref().err().cloned().unwrap_or_default();
        assert!(
            err.contains("the document has 3 <item> elements but none was kept")
                && err.contains("every one is empty"),
            "{results:?}"
        );
    }
}

#[tokio::test]
async fn firehose_items_without_ids_are_not_re_emitted_on_every_poll() {
    // No id mapped: items are identified by their link, or with no link by
    // a hash of their content; a re-poll must find them stored.
    for fields in [
        "items = \"/items\"\nfields = { id = \"/no-id\", title = \"/title\", url = \"/link\", content = \"/summary\" }\n",
        "items = \"/items\"\nfields = { id = \"/no-id\", url = \"/no-url\", title = \"/title\", content = \"/summary\" }\n",
    ] {
        let (counts, results, _) = replay_polls_with("firehose-json", "firehose", fields, 3).await;
        assert_eq!(counts, vec![3, 2, 0], "{fields}: {results:?}");
    }
}

#[tokio::test]
async fn firehose_json_document_polls_emit_only_new_items_in_order() {
    let fields = "items = \"/items\"\nfields = { id = \"/id\", title = \"/title\", url = \"/link\", content = \"/summary\" }\n";
    let (counts, results, events) = replay_polls_with("firehose-json", "firehose", fields, 3).await;
    assert_eq!(counts, vec![3, 2, 0], "{results:?}");
    let ids: Vec<&str> = events.iter().map(|e| e.item_id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["rc-90001", "rc-90002", "rc-90003", "rc-90004", "rc-90005"]
    );
    assert!(events
        .iter()
        .all(|e| e.url.starts_with("https://wiki.example/w/") && !e.content.is_empty()));
}

#[tokio::test]
async fn firehose_ndjson_upstream_is_stored_in_arrival_order() {
    let scenario =
        livestrom::replay::load_scenario("firehose-ndjson").unwrap_or_else(|e| panic!("{e}"));
    let server = ReplayServer::start(scenario).unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("t.db");
    let src = format!(
        "[[source]]\nid = \"fh.nd\"\ntype = \"firehose\"\nformat = \"ndjson\"\nurl = \"{}\"\n",
        server.url("/stream.ndjson")
    );
    let engine = Engine::start(&db, &src).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while all_events(&engine.store).len() < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ndjson items never arrived"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The stream ends and is reconnected; the same ids seen again are not new.
    let reconnects = tokio::time::Instant::now() + Duration::from_secs(30);
    while server.hits("/stream.ndjson") < 2 {
        assert!(
            tokio::time::Instant::now() < reconnects,
            "the ended upstream was never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ev = all_events(&engine.store);
    let ids: Vec<&str> = ev.iter().map(|e| e.item_id.as_str()).collect();
    assert_eq!(ids, vec!["ev-1", "ev-2", "ev-3", "ev-4", "ev-5"]);
    assert_schema_valid(&engine.store);
    engine.stop().await;
}

#[tokio::test]
async fn a_reload_while_a_source_is_polling_never_polls_it_twice_at_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // The feed's handler counts requests in flight and holds each until
    // released, so overlapping polls of the source would be seen.
    #[derive(Clone)]
    struct Gate {
        now: Arc<AtomicUsize>,
        max: Arc<AtomicUsize>,
        arrived: Arc<tokio::sync::Notify>,
        release: Arc<tokio::sync::Semaphore>,
    }
    let gate = Gate {
        now: Arc::default(),
        max: Arc::default(),
        arrived: Arc::default(),
        release: Arc::new(tokio::sync::Semaphore::new(0)),
    };
    let g = gate.clone();
    let app = axum::Router::new()
        .route(
            "/slow.xml",
            axum::routing::get(move || {
                let g = g.clone();
                async move {
                    let n = g.now.fetch_add(1, Ordering::SeqCst) + 1;
                    g.max.fetch_max(n, Ordering::SeqCst);
                    g.arrived.notify_one();
                    if let Ok(p) = g.release.acquire().await {
                        p.forget();
                    }
                    g.now.fetch_sub(1, Ordering::SeqCst);
                    rss(&[("a", "A", "a")])
                }
            }),
        )
        .route(
            "/quick.xml",
            axum::routing::get(|| async { rss(&[("q", "Q", "q")]) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("t.db");
    let toml = |extra: &str| {
        format!(
            "[engine]\ndatabase = {db:?}\n[fetch]\nallow_private_networks = true\nper_host_rps = 1000\nper_host_concurrency = 16\ntimeout = \"60s\"\n\
             [[source]]\nid = \"slow\"\ntype = \"rss\"\nurl = \"http://{addr}/slow.xml\"\ninterval = \"1h\"\n{extra}"
        )
    };
    let config = |text: String| {
        Config::from_toml(Path::new("test-sources.toml"), &text).unwrap_or_else(|e| panic!("{e}"))
    };
    let first = config(toml(""));
    let store = Store::open(&first.engine.database, first.engine.retention, Bus::new())
        .unwrap_or_else(|e| panic!("{e}"));
    let (handle, commands) = runtime::handle();
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(runtime::run(
        first,
        store.clone(),
        Some(reload_rx),
        Some(commands),
        cancel.clone(),
    ));

    // The first poll is in flight and held.
    tokio::time::timeout(Duration::from_secs(30), gate.arrived.notified())
        .await
        .unwrap_or_else(|_| panic!("the first poll never arrived"));
    // Change the polling source and add another; the new source answering
    // poll_now proves the reload was applied.
    let changed = toml(&format!(
        "tags = [\"changed\"]\n[[source]]\nid = \"quick\"\ntype = \"rss\"\nurl = \"http://{addr}/quick.xml\"\ninterval = \"1h\"\n"
    ));
    reload_tx
        .send(Ok(config(changed)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while handle.poll_now("quick").await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reload was never applied"
        );
        tokio::task::yield_now().await;
    }
    // Ask for a poll of the busy source, then let every request finish.
    let h = handle.clone();
    let asked = tokio::spawn(async move { h.poll_now("slow").await });
    // Give an overlapping request the chance to show up (correct code never
    // sends one, so this wait cannot make the test fail spuriously).
    let _ = tokio::time::timeout(Duration::from_secs(2), gate.arrived.notified()).await;
    assert_eq!(
        gate.max.load(Ordering::SeqCst),
        1,
        "a second poll of the source started while the first was running"
    );
    gate.release.add_permits(1000);
    tokio::time::timeout(Duration::from_secs(30), asked)
        .await
        .unwrap_or_else(|_| panic!("poll_now never answered"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        gate.max.load(Ordering::SeqCst),
        1,
        "two polls of one source overlapped across the reload"
    );
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
}

/// Everything logged while it is the default subscriber, as text.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Source URLs carry credentials (`?token=…`, `user:password@`): however a
/// source fails, neither its `last_error` (what `sources list` and the admin
/// API show) nor the log repeats them.
#[tokio::test]
async fn secrets_in_source_urls_never_reach_errors_or_logs() {
    const TOKEN: &str = "s3cret-token";
    const PASSWORD: &str = "s3cret-pass";
    let logs = CapturedLogs::default();
    // The test runtime runs every engine task on this thread, so a
    // thread-local default subscriber sees all of their logs.
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,livestrom_engine=debug",
            ))
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish(),
    );

    let app = axum::Router::new()
        .route(
            "/500",
            axum::routing::get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no") }),
        )
        .route(
            "/garbage",
            axum::routing::get(|| async { "this is not a feed at all" }),
        )
        .route(
            "/stall",
            axum::routing::get(futures::future::pending::<&'static str>),
        )
        .route(
            "/to-file",
            axum::routing::get(|| async {
                axum::response::Redirect::temporary("file:///etc/passwd")
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let web = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    // Accepts and hangs up at once: the request fails after connecting.
    let hangup = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let hangup_addr = hangup.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        while let Ok((socket, _)) = hangup.accept().await {
            drop(socket);
        }
    });
    // Nothing listens here: connection refused.
    let refused_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));

    let q = format!("?token={TOKEN}&page=2");
    let polled = [
        (
            "refused",
            format!("http://127.0.0.1:{refused_port}/feed{q}"),
        ),
        ("status", format!("http://{web}/500{q}")),
        ("garbage", format!("http://{web}/garbage{q}")),
        ("timeout", format!("http://{web}/stall{q}")),
        ("tls", format!("https://reader:{PASSWORD}@{web}/feed{q}")),
        ("hangup", format!("http://{hangup_addr}/feed{q}")),
        ("redirect", format!("http://{web}/to-file{q}")),
    ];
    let mut sources: String = polled
        .iter()
        .map(|(id, url)| {
            format!(
                "[[source]]\nid = \"{id}\"\ntype = \"rss\"\nurl = \"{url}\"\ninterval = \"1h\"\n"
            )
        })
        .collect();
    sources.push_str(&format!(
        "[[source]]\nid = \"stream\"\ntype = \"firehose\"\nformat = \"sse\"\nurl = \"http://reader:{PASSWORD}@{hangup_addr}/events{q}\"\n"
    ));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("t.db");
    let engine = Engine::start_with_timeout(&db, "2s", &sources).await;

    let leaks = |text: &str| text.contains(TOKEN) || text.contains(PASSWORD);
    for (id, _) in &polled {
        let outcome = tokio::time::timeout(Duration::from_secs(60), engine.handle.poll_now(id))
            .await
            .unwrap_or_else(|_| panic!("poll of {id} never finished"));
        let Err(shown) = outcome.map_err(|e| e.to_string()) else {
            panic!("{id} should fail")
        };
        assert!(
            !leaks(&shown),
            "{id} answered poll_now with a secret: {shown}"
        );
        let error = engine.state(id).await.last_error.unwrap_or_default();
        assert!(
            !error.is_empty() && !leaks(&error),
            "{id}: last_error {error:?}"
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let stream_error = loop {
        if let Ok(Some(s)) = engine.store.source_state("stream").await {
            if let Some(e) = s.last_error {
                break e;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream source never reported its failure"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!leaks(&stream_error), "stream: last_error {stream_error:?}");
    engine.stop().await;

    let logged = logs.text();
    assert!(
        logged.contains("poll failed"),
        "the failures were not captured:\n{logged}"
    );
    let leaked: Vec<&str> = logged.lines().filter(|l| leaks(l)).collect();
    assert!(
        leaked.is_empty(),
        "secrets in the log:\n{}",
        leaked.join("\n")
    );
}
