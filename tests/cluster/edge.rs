//! An edge on JetStream over real HTTP: the same `edge::AppState` as on one
//! node, with the JetStream log and live feed behind `engine::Backend`
//! (keys and source state from a temp SQLite file). Resuming after an id,
//! live hand-over, `/v1/events` paging, the foreign-cursor and expired 410s.

use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use livestrom_edge::{AppState, Settings};
use livestrom_engine::cluster::cursor::{self, StreamTag};
use livestrom_engine::cluster::{Cluster, JetStreamFeed, JetStreamLog};
use livestrom_engine::event::ms_of;
use livestrom_engine::keys::{self, NewKey, SqliteKeys};
use livestrom_engine::{Backend, Bus, SourceType, Store};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::nats::{start_nats, WAIT};
use super::publisher::{assert_is, connect, ids, publish_all, Published};
use super::TestResult;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An edge serving a cluster on 127.0.0.1.
struct Edge {
    base: String,
    key: String,
    http: reqwest::Client,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn spawn_edge(cluster: &Cluster) -> Result<Edge, BoxError> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("edge.db");
    let key = {
        let conn = livestrom_engine::store::open_and_migrate(&db)?;
        keys::create(&conn, &NewKey::new("cluster-edge"))?
    };
    let store = Store::open(&db, Duration::from_secs(3600), Bus::new())?;
    let cancel = CancellationToken::new();
    let backend = Backend {
        log: Arc::new(JetStreamLog::new(cluster.clone(), Handle::current())),
        live: Arc::new(JetStreamFeed::start(cluster.clone(), cancel.clone()).await?),
        keys: Arc::new(SqliteKeys::with_store(&store)),
        readiness: Arc::new(livestrom_engine::readiness::AlwaysReady),
        metrics: store.metrics().clone(),
        webhooks: livestrom_engine::webhooks::WebhookAdmin::unsupported("cluster"),
        sources: Arc::new(store),
    };
    let settings = Settings {
        keepalive: Duration::from_secs(25),
        cors_origins: vec!["*".into()],
        metrics_token: None,
    };
    let state = AppState::new(backend, settings, cancel.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(livestrom_edge::serve(listener, state, cancel.clone()));
    Ok(Edge {
        base,
        key,
        http: reqwest::Client::builder().no_proxy().build()?,
        cancel,
        _dir: dir,
    })
}

impl Edge {
    async fn get(
        &self,
        path: &str,
        last_event_id: Option<Uuid>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut rb = self
            .http
            .get(format!("{}{path}", self.base))
            .header("X-API-Key", &self.key);
        if let Some(id) = last_event_id {
            rb = rb.header("Last-Event-ID", id.to_string());
        }
        rb.send().await
    }

    async fn sse(
        &self,
        query: &str,
        last_event_id: Option<Uuid>,
    ) -> Result<impl Stream<Item = Result<Event, String>> + Unpin, BoxError> {
        let res = self
            .get(&format!("/v1/stream?{query}"), last_event_id)
            .await?;
        if res.status() != 200 {
            return Err(format!("status {}: {}", res.status(), res.text().await?).into());
        }
        Ok(Box::pin(
            res.bytes_stream()
                .eventsource()
                .map(|r| r.map_err(|e| e.to_string())),
        ))
    }

    async fn events(&self, query: &str) -> Result<serde_json::Value, BoxError> {
        let res = self.get(&format!("/v1/events?{query}"), None).await?;
        if res.status() != 200 {
            return Err(format!("status {}: {}", res.status(), res.text().await?).into());
        }
        Ok(res.json().await?)
    }

    async fn problem(
        &self,
        path: &str,
        last_event_id: Option<Uuid>,
    ) -> Result<(u16, serde_json::Value), BoxError> {
        let res = self.get(path, last_event_id).await?;
        let status = res.status().as_u16();
        let ct = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert_eq!(ct, "application/problem+json", "{path}");
        Ok((status, res.json().await?))
    }
}

/// The next `n` SSE events carrying data, checked against `want`.
async fn expect_events(
    s: &mut (impl Stream<Item = Result<Event, String>> + Unpin),
    want: &[Published],
) -> TestResult {
    for p in want {
        let e = tokio::time::timeout(WAIT, s.next())
            .await?
            .ok_or("stream ended")??;
        assert_eq!(e.id, p.id.to_string(), "{e:?}");
        assert_eq!(e.event, p.source_type.as_str());
        assert_is(&e.data, p)?;
    }
    Ok(())
}

fn page_ids(v: &serde_json::Value) -> Vec<Uuid> {
    v["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn next_cursor(v: &serde_json::Value) -> Result<Uuid, BoxError> {
    Ok(Uuid::parse_str(
        v["next_cursor"].as_str().ok_or("no next_cursor")?,
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_on_jetstream_resumes_after_an_id_goes_live_and_pages_the_same() -> TestResult {
    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let cluster = connect(&nats).await?;
    let kinds = [SourceType::Rss, SourceType::Html];
    let events: Vec<(String, SourceType)> = (0..8)
        .map(|i| (format!("s{}", i % 3), kinds[i % 2]))
        .collect();
    let refs: Vec<(&str, SourceType)> = events.iter().map(|(s, t)| (s.as_str(), *t)).collect();
    let p = publish_all(&cluster, &refs).await?;
    let edge = spawn_edge(&cluster).await?;

    // Resume after the third event: the fourth to the last, exactly.
    let mut resumed = edge.sse("", Some(p[2].id)).await?;
    expect_events(&mut resumed, &p[3..]).await?;
    // Without a cursor: from now on.
    let mut fresh = edge.sse("", None).await?;
    let mut filtered = edge.sse("source=s1", Some(p[0].id)).await?;
    let s1: Vec<Published> = p[1..]
        .iter()
        .filter(|e| e.source_id == "s1")
        .cloned()
        .collect();
    expect_events(&mut filtered, &s1).await?;

    // Live: what engines publish now reaches every open stream once.
    let live = publish_all(
        &cluster,
        &[("s1", SourceType::Json), ("s2", SourceType::Rss)],
    )
    .await?;
    expect_events(&mut resumed, &live).await?;
    expect_events(&mut fresh, &live).await?;
    expect_events(&mut filtered, &live[..1]).await?;
    let all = [p.clone(), live.clone()].concat();

    // ?since= is the same position as Last-Event-ID.
    let mut since = edge.sse(&format!("since={}", p[5].id), None).await?;
    expect_events(&mut since, &all[6..]).await?;

    // /v1/events pages the same rows.
    let page = edge.events(&format!("since={}&limit=3", p[2].id)).await?;
    assert_eq!(page_ids(&page), ids(&p[3..6]));
    assert_eq!(page["has_more"], true);
    assert_eq!(next_cursor(&page)?, p[5].id);
    let page = edge
        .events(&format!("since={}", next_cursor(&page)?))
        .await?;
    assert_eq!(page_ids(&page), ids(&all[6..]));
    assert_eq!(page["has_more"], false);
    // Without a cursor: an empty page whose cursor misses nothing after it.
    let now = edge.events("").await?;
    assert_eq!(page_ids(&now), Vec::<Uuid>::new());
    let later = publish_all(&cluster, &[("s0", SourceType::Rss)]).await?;
    let page = edge
        .events(&format!("since={}", next_cursor(&now)?))
        .await?;
    assert_eq!(page_ids(&page), ids(&later));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_on_jetstream_refuses_foreign_and_expired_cursors_with_410() -> TestResult {
    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let cluster = connect(&nats).await?;
    let events: Vec<(&str, SourceType)> = (0..5).map(|_| ("a", SourceType::Rss)).collect();
    let p = publish_all(&cluster, &events).await?;
    let edge = spawn_edge(&cluster).await?;

    // An id of another stream (a recreated one, another cluster).
    let foreign = cursor::encode(StreamTag::of("ELSEWHERE", 42), p[2].seq, ms_of(p[2].id))?;
    for (path, header, param) in [
        ("/v1/stream".to_owned(), Some(foreign), "Last-Event-ID"),
        (format!("/v1/stream?since={foreign}"), None, "since"),
        (format!("/v1/events?since={foreign}"), None, "since"),
    ] {
        let (status, problem) = edge.problem(&path, header).await?;
        assert_eq!(status, 410, "{path}: {problem}");
        assert_eq!(
            problem["type"], "https://livestrom.dev/problems/cursor-foreign",
            "{problem}"
        );
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("another stream"), "{detail}");
        assert!(detail.contains(&format!("without `{param}`")), "{detail}");
    }

    // Retention deleted the first three: a cursor before them is gone, the
    // last deleted one's id still resumes exactly.
    cluster.stream().await?.purge().sequence(p[3].seq).await?;
    let (status, problem) = edge.problem("/v1/stream", Some(p[0].id)).await?;
    assert_eq!(status, 410, "{problem}");
    assert_eq!(
        problem["type"],
        "https://livestrom.dev/problems/cursor-expired"
    );
    let mut s = edge.sse("", Some(p[2].id)).await?;
    expect_events(&mut s, &p[3..]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_survive_a_nats_restart_and_miss_nothing() -> TestResult {
    let Some(mut nats) = start_nats() else {
        return Ok(());
    };
    let cluster = connect(&nats).await?;
    let edge = spawn_edge(&cluster).await?;
    let mut s = edge.sse("", None).await?;
    let before = publish_all(&cluster, &[("a", SourceType::Rss), ("b", SourceType::Rss)]).await?;
    expect_events(&mut s, &before).await?;

    // NATS dies and comes back; the stream stays open meanwhile.
    nats.stop();
    nats.start_again();
    let deadline = tokio::time::Instant::now() + WAIT;
    while cluster.stream().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "NATS never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = publish_all(
        &cluster,
        &[("a", SourceType::Json), ("c", SourceType::Html)],
    )
    .await?;
    // The same connection gets exactly what was published since, in order.
    expect_events(&mut s, &after).await?;
    Ok(())
}
