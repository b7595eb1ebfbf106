//! Operating a node: `GET /metrics` scraped after a fixture run and read by
//! an independent Prometheus text parser, and `GET /readyz` for each thing
//! that can make a node not ready. The real engine (scheduler, fetcher,
//! store) and edge run in process against a replay server on 127.0.0.1.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use livestrom::replay::{ReplayServer, Scenario, Step};
use livestrom_edge::{AppState, Settings};
use livestrom_engine::keys::{self, NewKey};
use livestrom_engine::log::ReadScope;
use livestrom_engine::runtime::{self, EngineHandle};
use livestrom_engine::{Backend, Bus, Config, EventLog, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{temp_db, wait_for, wait_for_value, WAIT};

/// A node: engine (optionally running) and edge on one store.
struct Node {
    _dir: tempfile::TempDir,
    store: Store,
    base: String,
    key: String,
    handle: Option<EngineHandle>,
    cancel: CancellationToken,
    state: AppState,
    http: reqwest::Client,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn feed(items: usize) -> String {
    let mut body = String::from("<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>t</title><link>https://example.org/</link><description>d</description>");
    for i in (1..=items).rev() {
        body.push_str(&format!(
            "<item><guid>story-{i}</guid><title>Story {i}</title><link>https://example.org/{i}</link><description>Body {i}</description></item>"
        ));
    }
    body.push_str("</channel></rss>");
    body
}

/// `/feed.xml`: two items with an ETag (a second poll gets a 304) until the
/// third request, which adds a third item; `/missing.xml` is a 404.
fn upstream() -> ReplayServer {
    let scenario = Scenario::new("ops").dynamic("/feed.xml", |req| {
        let items = if req.hit >= 3 { 3 } else { 2 };
        Step::ok(feed(items))
            .content_type("application/rss+xml")
            .etag(format!("v{items}"))
            .into()
    });
    ReplayServer::start(scenario).unwrap_or_else(|e| panic!("replay server: {e}"))
}

/// Starts a node on `sources` (polled only through `poll_now`: hourly
/// intervals) with `extra_edge` in `[edge]`; the engine runs when `engine`.
async fn node(sources: &str, extra_edge: &str, engine: bool, max_connections: usize) -> Node {
    let (dir, db) = temp_db();
    let toml = format!(
        "[engine]\ndatabase = {db:?}\nretention = \"7d\"\n[edge]\n{extra_edge}\n[fetch]\nallow_private_networks = true\nper_host_rps = 1000\nper_host_concurrency = 16\n{sources}"
    );
    let config = Config::from_toml(Path::new("ops-sources.toml"), &toml)
        .unwrap_or_else(|e| panic!("config: {e}\n{toml}"));
    let key = {
        let conn = livestrom_engine::store::open_and_migrate(&db).unwrap_or_else(|e| panic!("{e}"));
        let mut nk = NewKey::new("ops");
        nk.max_streams = 100;
        nk.rate = 1000.0;
        keys::create(&conn, &nk).unwrap_or_else(|e| panic!("{e}"))
    };
    let store =
        Store::open(&db, config.engine.retention, Bus::new()).unwrap_or_else(|e| panic!("{e}"));
    let cancel = CancellationToken::new();
    let settings = Settings {
        keepalive: Duration::from_secs(25),
        cors_origins: vec!["*".into()],
        metrics_token: config
            .edge
            .metrics_token
            .as_ref()
            .map(|t| t.expose().to_owned()),
    };
    let state = AppState::new(Backend::sqlite(&store), settings, cancel.clone())
        .await
        .unwrap_or_else(|e| panic!("edge: {e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!(
        "http://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let opts = livestrom_edge::server::Options {
        max_connections,
        ..Default::default()
    };
    tokio::spawn(livestrom_edge::server::serve_counted(
        listener,
        livestrom_edge::app(state.clone()),
        cancel.clone(),
        opts,
        state.connections.clone(),
    ));
    let handle = if engine {
        let (handle, commands) = runtime::handle();
        tokio::spawn(runtime::run(
            config,
            store.clone(),
            None,
            Some(commands),
            cancel.clone(),
        ));
        Some(handle)
    } else {
        None
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    Node {
        _dir: dir,
        store,
        base,
        key,
        handle,
        cancel,
        state,
        http,
    }
}

impl Node {
    async fn poll(&self, id: &str) -> Result<(), runtime::PollNowError> {
        match &self.handle {
            Some(h) => h.poll_now(id).await,
            None => panic!("no engine"),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Scrapes `/metrics` and parses it with `prometheus-parse`.
    async fn scrape(&self) -> Scraped {
        let res = self.get("/metrics").await;
        assert_eq!(res.status(), 200);
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        let text = res.text().await.unwrap_or_default();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines)
            .unwrap_or_else(|e| panic!("not the Prometheus text format: {e}\n{text}"));
        Scraped { scrape, text }
    }

    async fn readyz(&self) -> (u16, serde_json::Value) {
        let res = self.get("/readyz").await;
        let status = res.status().as_u16();
        let body = res.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
        )
    }
}

struct Scraped {
    scrape: prometheus_parse::Scrape,
    text: String,
}

impl Scraped {
    /// The value of `name` with exactly these labels (among its labels).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<&prometheus_parse::Value> {
        self.scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| &s.value)
    }

    fn number(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.value(name, labels) {
            Some(
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v),
            ) => *v,
            other => panic!("{name}{labels:?}: {other:?}\n{}", self.text),
        }
    }

    /// A histogram's sample count.
    fn histogram_count(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.value(name, labels) {
            Some(prometheus_parse::Value::Histogram(buckets)) => {
                // The +Inf bucket counts every observation.
                buckets
                    .iter()
                    .find(|b| b.less_than.is_infinite())
                    .map_or(0, |b| b.count as u64)
            }
            other => panic!(
                "{name}{labels:?} is not a histogram: {other:?}\n{}",
                self.text
            ),
        }
    }
}

const SOURCES: &str = "[[source]]\nid = \"news.ok\"\ntype = \"rss\"\nurl = \"URL_OK\"\ninterval = \"1h\"\n\
                       [[source]]\nid = \"news.missing\"\ntype = \"rss\"\nurl = \"URL_MISSING\"\ninterval = \"1h\"\n";

fn sources(up: &ReplayServer) -> String {
    SOURCES
        .replace("URL_OK", &up.url("/feed.xml"))
        .replace("URL_MISSING", &up.url("/missing.xml"))
}

#[tokio::test]
async fn metrics_after_a_fixture_run_count_polls_errors_events_refusals_and_deliveries() {
    let up = upstream();
    let n = node(&sources(&up), "", true, 1000).await;
    // The first automatic polls of both sources are due within seconds:
    // wait for them, so the counts below are exact.
    wait_for("the first polls", WAIT, || async {
        let s = n.scrape().await;
        s.number(
            "livestrom_polls_total",
            &[("type", "rss"), ("outcome", "ok")],
        ) >= 1.0
            && s.number(
                "livestrom_polls_total",
                &[("type", "rss"), ("outcome", "error")],
            ) >= 1.0
    })
    .await;
    // A live stream, then a poll that adds an item (304 before it).
    let res = n
        .http
        .get(format!("{}/v1/stream", n.base))
        .header("X-API-Key", &n.key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    // The `:connected` comment: the stream is registered and live.
    let first = body.next().await;
    assert!(matches!(first, Some(Ok(_))), "{first:?}");
    n.poll("news.ok").await.unwrap_or_else(|e| panic!("{e}")); // 304
    n.poll("news.ok").await.unwrap_or_else(|e| panic!("{e}")); // story-3
    let mut got = String::new();
    while !got.contains("story-3") {
        match tokio::time::timeout(WAIT, body.next()).await {
            Ok(Some(Ok(b))) => got.push_str(&String::from_utf8_lossy(&b)),
            other => panic!("stream ended before story-3: {other:?}"),
        }
    }
    // A refused key, and a replayed page.
    let bad = n
        .http
        .get(format!("{}/v1/stream", n.base))
        .header("X-API-Key", "lstr_not_a_key")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bad.status(), 401);
    let stored = n
        .store
        .read_after(Uuid::nil(), 100, &ReadScope::default())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(stored.len(), 3, "two items, then a third");
    let page = n
        .http
        .get(format!("{}/v1/events?since={}", n.base, stored[0].id))
        .header("X-API-Key", &n.key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status(), 200);

    let s = n.scrape().await;
    let polls = |o: &str| s.number("livestrom_polls_total", &[("type", "rss"), ("outcome", o)]);
    assert_eq!(polls("ok"), 2.0, "the first poll and the one with story-3");
    assert_eq!(polls("not_modified"), 1.0);
    assert_eq!(polls("error"), 1.0, "news.missing");
    let not_modified_ratio =
        polls("not_modified") / (polls("ok") + polls("not_modified") + polls("error"));
    assert!((not_modified_ratio - 0.25).abs() < 1e-9);
    assert_eq!(
        s.number("livestrom_fetch_errors_total", &[("kind", "http_4xx")]),
        1.0
    );
    assert_eq!(
        s.number("livestrom_fetch_errors_total", &[("kind", "dns")]),
        0.0
    );
    assert_eq!(
        s.number("livestrom_events_emitted_total", &[("type", "rss")]),
        stored.len() as f64,
        "events emitted = events stored"
    );
    assert_eq!(
        s.number("livestrom_items_parsed_total", &[("type", "rss")]),
        5.0,
        "2 + 3 items parsed; the 304 parses nothing"
    );
    assert_eq!(
        s.histogram_count("livestrom_poll_duration_seconds", &[("type", "rss")]),
        4
    );
    assert!(s.histogram_count("livestrom_store_commit_duration_seconds", &[]) >= 2);
    assert!(s.histogram_count("livestrom_store_commit_batch_events", &[]) >= 2);
    assert_eq!(
        s.number(
            "livestrom_http_responses_total",
            &[("route", "/v1/stream"), ("status", "401")]
        ),
        1.0
    );
    assert_eq!(
        s.number("livestrom_replay_events_total", &[("endpoint", "events")]),
        2.0
    );
    assert!(
        s.histogram_count("livestrom_delivery_latency_seconds", &[]) >= 1,
        "story-3 went out live"
    );
    assert!(s.histogram_count("livestrom_hub_fanout_delay_seconds", &[]) >= 1);
    assert_eq!(s.number("livestrom_hub_lagged_total", &[]), 0.0);
    assert_eq!(s.number("livestrom_stream_subscribers", &[]), 1.0);
    assert_eq!(
        s.number(
            "livestrom_source_consecutive_failures",
            &[("source", "news.missing")]
        ),
        1.0
    );
    assert_eq!(
        s.number(
            "livestrom_source_consecutive_failures",
            &[("source", "news.ok")]
        ),
        0.0
    );

    // The client goes away: counted as a client disconnect.
    drop(body);
    wait_for("the client's disconnect to be counted", WAIT, || async {
        let s = n.scrape().await;
        s.number(
            "livestrom_stream_disconnects_total",
            &[("reason", "client")],
        ) == 1.0
            && s.number("livestrom_stream_subscribers", &[]) == 0.0
    })
    .await;
}

#[tokio::test]
async fn metrics_behind_a_token_refuse_a_scrape_without_it() {
    let token = "0123456789abcdef0123";
    let n = node("", &format!("metrics_token = \"{token}\""), false, 1000).await;
    assert_eq!(n.get("/metrics").await.status(), 401);
    let wrong = n
        .http
        .get(format!("{}/metrics", n.base))
        .bearer_auth("0123456789abcdef0124")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(wrong.status(), 401);
    let ok = n
        .http
        .get(format!("{}/metrics", n.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.status(), 200);
    let text = ok.text().await.unwrap_or_default();
    assert!(
        text.contains("livestrom_http_responses_total{route=\"/metrics\",status=\"401\"} 2"),
        "{text}"
    );
}

fn checks(body: &serde_json::Value) -> HashMap<String, String> {
    body["checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c["check"].as_str().unwrap_or_default().to_owned(),
                        c["detail"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn readyz_is_503_until_the_scheduler_runs_then_200() {
    let n = node("", "", false, 1000).await;
    let (status, body) = n.readyz().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], 503);
    assert_eq!(body["title"], "Service unavailable");
    let c = checks(&body);
    assert!(c["scheduler"].contains("has not started"), "{body}");
    assert!(!c.contains_key("database"), "{body}");
    // Liveness is not readiness.
    assert_eq!(n.get("/healthz").await.status(), 200);
    // The engine's loop starts: ready.
    let (dir, db) = temp_db();
    let config = Config::from_toml(
        Path::new("x.toml"),
        &format!("[engine]\ndatabase = {db:?}\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let cancel = n.cancel.child_token();
    tokio::spawn(runtime::run(config, n.store.clone(), None, None, cancel));
    wait_for("ready once the scheduler runs", WAIT, || async {
        n.readyz().await.0 == 200
    })
    .await;
    drop(dir);
}

#[tokio::test]
async fn readyz_names_a_database_that_takes_no_writes() {
    let n = node("", "", true, 1000).await;
    wait_for("ready", WAIT, || async { n.readyz().await.0 == 200 }).await;
    // Another connection holds the database's write lock: the writer's
    // probe cannot write.
    let path = n.store.path().to_owned();
    let conn = rusqlite::Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
    conn.execute_batch("BEGIN EXCLUSIVE; INSERT INTO meta (key, value) VALUES ('held', 'x') ON CONFLICT(key) DO UPDATE SET value = excluded.value;")
        .unwrap_or_else(|e| panic!("{e}"));
    let (status, body) = n.readyz().await;
    assert_eq!(status, 503, "{body}");
    let c = checks(&body);
    assert!(c.contains_key("database"), "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .starts_with("not ready: database: "),
        "{body}"
    );
    conn.execute_batch("ROLLBACK;")
        .unwrap_or_else(|e| panic!("{e}"));
    drop(conn);
    wait_for("ready again after the lock is released", WAIT, || async {
        n.readyz().await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn readyz_names_an_edge_that_is_shutting_down() {
    let n = node("", "", true, 1000).await;
    wait_for("ready", WAIT, || async { n.readyz().await.0 == 200 }).await;
    n.cancel.cancel();
    // The listener is closing: ask the handler itself.
    let res = livestrom_edge::ready::handler(axum::extract::State(n.state.clone())).await;
    assert_eq!(res.status(), 503);
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    assert_eq!(
        checks(&body).get("edge").map(String::as_str),
        Some("shutting down"),
        "{body}"
    );
}

/// A raw keep-alive connection that has completed one request.
async fn idle_connection(base: &str) -> tokio::net::TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"ok\n") {
        let k = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no /healthz answer"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(k > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..k]);
    }
    s
}

#[tokio::test]
async fn readyz_names_an_edge_at_its_connection_limit() {
    let n = node("", "", true, 3).await;
    let a = idle_connection(&n.base).await;
    let _b = idle_connection(&n.base).await;
    // Two connections open and this request's own: the next client would
    // be refused.
    let body = wait_for_value("not ready at the limit", WAIT, || async {
        let (status, body) = n.readyz().await;
        (status == 503 && checks(&body).contains_key("edge")).then_some(body)
    })
    .await;
    assert!(
        checks(&body)["edge"].contains("connection limit (3 of 3 open"),
        "{body}"
    );
    drop(a);
    wait_for("ready once a connection closed", WAIT, || async {
        n.readyz().await.0 == 200
    })
    .await;
    let s = n.scrape().await;
    assert_eq!(
        s.number("livestrom_edge_connections", &[]),
        2.0,
        "the idle one and the scrape"
    );
    let _ = Arc::new(());
}
