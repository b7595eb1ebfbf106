//! Integration tests: CORS per SPEC §3 — a page on another origin can read
//! the stream (`EventSource` with `?api_key=`, or fetch with headers).

use std::time::Duration;

use livestrom_edge::{AppState, Settings};
use livestrom_engine::keys::{self, NewKey};
use livestrom_engine::{Bus, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

struct Edge {
    base: String,
    key: String,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn edge(origins: &[&str]) -> Edge {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("c.db");
    let conn = livestrom_engine::store::open_and_migrate(&db).unwrap_or_else(|e| panic!("{e}"));
    let key = keys::create(&conn, &NewKey::new("web")).unwrap_or_else(|e| panic!("{e}"));
    drop(conn);
    let store =
        Store::open(&db, Duration::from_secs(3600), Bus::new()).unwrap_or_else(|e| panic!("{e}"));
    let cancel = CancellationToken::new();
    let settings = Settings {
        keepalive: Duration::from_secs(25),
        cors_origins: origins.iter().map(|s| s.to_string()).collect(),
        metrics_token: None,
    };
    let state = AppState::new(
        livestrom_engine::Backend::sqlite(&store),
        settings,
        cancel.clone(),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(livestrom_edge::serve(listener, state, cancel.clone()));
    Edge {
        base: format!("http://{addr}"),
        key,
        cancel,
        _dir: dir,
    }
}

fn header(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn any_origin_can_preflight_and_read_the_stream_with_a_query_key() {
    let e = edge(&["*"]).await;
    let http = reqwest::Client::new();
    // fetch-event-source style: custom headers trigger a preflight.
    let pre = http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/stream", e.base))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "GET")
        .header(
            "Access-Control-Request-Headers",
            "x-api-key, last-event-id, cache-control, x-requested-with",
        )
        .send()
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(pre.status().is_success(), "{}", pre.status());
    assert_eq!(
        header(&pre, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert!(header(&pre, "access-control-allow-methods")
        .unwrap_or_default()
        .contains("GET"));
    assert!(header(&pre, "access-control-allow-headers").is_some());

    // Bare EventSource style: a simple GET with the key in the query.
    let res = http
        .get(format!("{}/v1/stream?api_key={}", e.base, e.key))
        .header("Origin", "https://app.example")
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(res.status(), 200);
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(
        header(&res, "content-type").as_deref(),
        Some("text/event-stream")
    );

    // Errors are readable cross-origin too (the page can show the problem).
    let res = http
        .get(format!("{}/v1/stream?api_key=lstr_nope", e.base))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(res.status(), 401);
    assert_eq!(
        header(&res, "access-control-allow-origin").as_deref(),
        Some("*")
    );
    assert_eq!(
        header(&res, "content-type").as_deref(),
        Some("application/problem+json")
    );
}

#[tokio::test]
async fn a_configured_origin_list_allows_only_those_origins() {
    let e = edge(&["https://dash.example"]).await;
    let http = reqwest::Client::new();
    let get = |origin: &'static str| {
        http.get(format!("{}/v1/stream?api_key={}", e.base, e.key))
            .header("Origin", origin)
            .send()
    };
    let ok = get("https://dash.example")
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(
        header(&ok, "access-control-allow-origin").as_deref(),
        Some("https://dash.example")
    );
    let other = get("https://evil.example")
        .await
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(header(&other, "access-control-allow-origin"), None);
}
