//! Integration tests: auth. API keys over real HTTP on 127.0.0.1 — the three
//! ways to present a key, every refusal (401/403/400/429) as problem+json,
//! revocation and limit changes applied by a running edge, stream caps,
//! the failed-auth limiter, and keys never reaching the log.

use std::time::Duration;

use livestrom_engine::keys::{self, KeyUpdate, NewKey, Scope};
use reqwest::StatusCode;
use serde_json::Value;

use self::app::poll_until;

/// A small harness: a fresh database, the edge served on 127.0.0.1:0, and a
/// probe server whose only route needs [`Authenticated`] (`stream:read`).
pub(crate) mod app {
    use std::future::Future;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use livestrom_edge::auth::Authenticated;
    use livestrom_edge::{AppState, Settings};
    use livestrom_engine::keys::{self, NewKey};
    use livestrom_engine::{Bus, Store};
    use tokio::net::TcpListener;
    use tokio_util::sync::CancellationToken;

    pub(crate) struct App {
        /// The edge (`livestrom_edge::serve`).
        pub(crate) addr: SocketAddr,
        /// A server with one route, `/probe`, behind `Authenticated`.
        pub(crate) probe: SocketAddr,
        pub(crate) db: PathBuf,
        pub(crate) state: AppState,
        /// The store behind the edge (the engine's side, for writing state).
        pub(crate) store: Store,
        pub(crate) http: reqwest::Client,
        cancel: CancellationToken,
        _dir: tempfile::TempDir,
    }

    impl Drop for App {
        fn drop(&mut self) {
            self.cancel.cancel();
        }
    }

    /// Creates `keys` in a fresh database, then starts the edge; returns the
    /// plaintext keys in order.
    pub(crate) async fn spawn(new_keys: &[NewKey]) -> (App, Vec<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("livestrom.db");
        let conn = livestrom_engine::store::open_and_migrate(&db).expect("open db");
        let plain: Vec<String> = new_keys
            .iter()
            .map(|k| keys::create(&conn, k).expect("create key"))
            .collect();
        drop(conn);

        let cancel = CancellationToken::new();
        let store = Store::open(&db, Duration::from_secs(3600), Bus::new()).expect("store");
        let settings = Settings {
            keepalive: Duration::from_secs(25),
            cors_origins: vec!["*".into()],
            metrics_token: None,
        };
        let state = AppState::new(
            livestrom_engine::Backend::sqlite(&store),
            settings,
            cancel.clone(),
        )
        .await
        .expect("state");

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(livestrom_edge::serve(
            listener,
            state.clone(),
            cancel.clone(),
        ));

        let probe_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let probe = probe_listener.local_addr().expect("addr");
        let router = axum::Router::new()
            .route(
                "/probe",
                axum::routing::get(|Authenticated(k): Authenticated| async move { k.name.clone() }),
            )
            .with_state(state.clone())
            .into_make_service_with_connect_info::<SocketAddr>();
        let stop = cancel.clone();
        tokio::spawn(async move {
            axum::serve(probe_listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });

        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        (
            App {
                addr,
                probe,
                db,
                state,
                store,
                http,
                cancel,
                _dir: dir,
            },
            plain,
        )
    }

    impl App {
        pub(crate) fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        pub(crate) fn probe_url(&self) -> String {
            format!("http://{}/probe", self.probe)
        }

        /// GET `path` with `X-API-Key: key`.
        pub(crate) async fn get_with(&self, path: &str, key: &str) -> reqwest::Response {
            self.http
                .get(self.url(path))
                .header("X-API-Key", key)
                .send()
                .await
                .expect("request")
        }

        /// Runs `f` on a second database connection (as the CLI would), off the runtime.
        pub(crate) async fn cli<T: Send + 'static>(
            &self,
            f: impl FnOnce(&rusqlite::Connection) -> T + Send + 'static,
        ) -> T {
            let db = self.db.clone();
            tokio::task::spawn_blocking(move || {
                let conn = livestrom_engine::store::open_and_migrate(&db).expect("cli connection");
                f(&conn)
            })
            .await
            .expect("cli task")
        }
    }

    /// Polls `check` until it returns `Some`, failing after a generous bound.
    pub(crate) async fn poll_until<T, F, Fut>(what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn key_named(name: &str) -> NewKey {
    NewKey::new(name)
}

/// Asserts an RFC 9457 body and returns it.
async fn problem(res: reqwest::Response, status: StatusCode, type_suffix: &str) -> Value {
    assert_eq!(res.status(), status);
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(ct, "application/problem+json");
    let body: Value = res.json().await.expect("problem json");
    assert_eq!(body["status"], status.as_u16());
    let t = body["type"].as_str().expect("type");
    assert!(
        t.ends_with(&format!("/{type_suffix}")),
        "type {t}, expected …/{type_suffix}"
    );
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

#[tokio::test]
async fn missing_malformed_and_unknown_keys_get_401() {
    let (app, keys) = app::spawn(&[key_named("app")]).await;

    let res = app
        .http
        .get(app.url("/v1/whoami"))
        .send()
        .await
        .expect("request");
    assert!(res.headers().contains_key("www-authenticate"));
    assert!(res.headers().contains_key("x-request-id"));
    problem(res, StatusCode::UNAUTHORIZED, "missing-api-key").await;

    // One character changed: the checksum catches it.
    let mut typo = keys[0].clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).expect("ascii");
    let body = problem(
        app.get_with("/v1/whoami", &typo).await,
        StatusCode::UNAUTHORIZED,
        "malformed-api-key",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("checksum"),
        "{body}"
    );
    let truncated = &keys[0][..keys[0].len() - 1];
    problem(
        app.get_with("/v1/whoami", truncated).await,
        StatusCode::UNAUTHORIZED,
        "malformed-api-key",
    )
    .await;

    // Well-formed, right checksum, but never issued here.
    problem(
        app.get_with("/v1/whoami", &keys::generate()).await,
        StatusCode::UNAUTHORIZED,
        "unknown-api-key",
    )
    .await;

    let res = app
        .http
        .get(app.url("/v1/whoami"))
        .basic_auth("u", Some("p"))
        .send()
        .await
        .expect("request");
    let body = problem(res, StatusCode::UNAUTHORIZED, "missing-api-key").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("Bearer"),
        "{body}"
    );

    // Bad input: a non-UTF-8 header and a huge query value are refused, not fatal.
    let res = app
        .http
        .get(app.url("/v1/whoami"))
        .header(
            "X-API-Key",
            reqwest::header::HeaderValue::from_bytes(b"lstr_\xff\xfe").expect("header"),
        )
        .send()
        .await
        .expect("request");
    problem(res, StatusCode::UNAUTHORIZED, "malformed-api-key").await;
    let huge = format!("/v1/whoami?api_key=lstr_{}", "A".repeat(20_000));
    let res = app.http.get(app.url(&huge)).send().await.expect("request");
    assert!(res.status().is_client_error(), "{}", res.status());
}

#[tokio::test]
async fn each_of_the_three_forms_authenticates_and_conflicts_are_400() {
    let (app, keys) = app::spawn(&[key_named("app"), key_named("other")]).await;
    let k = &keys[0];

    let forms = [
        app.http.get(app.url("/v1/whoami")).header("X-API-Key", k),
        app.http.get(app.url("/v1/whoami")).bearer_auth(k),
        app.http.get(app.url(&format!("/v1/whoami?api_key={k}"))),
        // The same key in all three places is fine.
        app.http
            .get(app.url(&format!("/v1/whoami?api_key={k}")))
            .header("X-API-Key", k)
            .bearer_auth(k),
    ];
    for req in forms {
        let res = req.send().await.expect("request");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("no-store")
        );
        let text = res.text().await.expect("body");
        assert!(!text.contains(&k[5..]), "whoami must not echo the key");
        let body: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(body["name"], "app");
        assert_eq!(body["scopes"], serde_json::json!(["stream:read"]));
        assert_eq!(body["max_filters"], 20);
        assert_eq!(body["max_streams"], 10);
        assert_eq!(body["rate"], 10.0);
        assert_eq!(body["burst"], 20);
    }

    let res = app
        .http
        .get(app.url("/v1/whoami"))
        .header("X-API-Key", k)
        .bearer_auth(&keys[1])
        .send()
        .await
        .expect("request");
    problem(res, StatusCode::BAD_REQUEST, "conflicting-api-keys").await;

    // The Authenticated extractor (what /v1/stream and /v1/events use) accepts all three too.
    for req in [
        app.http.get(app.probe_url()).header("X-API-Key", k),
        app.http.get(app.probe_url()).bearer_auth(k),
        app.http.get(format!("{}?api_key={k}", app.probe_url())),
    ] {
        let res = req.send().await.expect("request");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.text().await.expect("body"), "app");
    }
}

#[tokio::test]
async fn admin_keys_see_source_health_and_stats_other_keys_get_403() {
    let admin = NewKey {
        scopes: vec![Scope::Admin],
        ..key_named("ops")
    };
    let (app, keys) = app::spawn(&[admin, key_named("reader")]).await;
    let (ops, reader) = (&keys[0], &keys[1]);
    let now = chrono::Utc::now();
    for (id, error) in [("news.ok", None), ("news.down", Some("fetch: HTTP 503"))] {
        app.store
            .write(livestrom_engine::store::WriteBatch {
                source: Some(livestrom_engine::store::SourceState {
                    source_id: id.into(),
                    last_poll_at: Some(now),
                    last_success_at: error.is_none().then_some(now),
                    last_error: error.map(String::from),
                    consecutive_failures: u32::from(error.is_some()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("write source state");
    }

    let body: Value = app
        .get_with("/v1/admin/sources", ops)
        .await
        .json()
        .await
        .expect("json");
    let health: Vec<(String, String)> = body["sources"]
        .as_array()
        .expect("sources array")
        .iter()
        .map(|s| {
            (
                s["source_id"].as_str().unwrap_or_default().to_owned(),
                s["health"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        health,
        [
            ("news.down".to_owned(), "failing".to_owned()),
            ("news.ok".to_owned(), "ok".to_owned())
        ]
    );
    assert_eq!(body["sources"][0]["last_error"], "fetch: HTTP 503");

    // A stream open with the reader key shows in the stats.
    let stream = app.get_with("/v1/stream", reader).await;
    assert_eq!(stream.status(), StatusCode::OK);
    let stats: Value = poll_until("the open stream to be counted", || async {
        let v: Value = app
            .get_with("/v1/admin/stats", ops)
            .await
            .json()
            .await
            .ok()?;
        (v["subscribers"] == 1).then_some(v)
    })
    .await;
    assert!(stats["retention_floor"].is_string(), "{stats}");
    drop(stream);

    // Without the admin scope: 403 naming it; without a key: 401.
    for path in ["/v1/admin/sources", "/v1/admin/stats"] {
        let body = problem(
            app.get_with(path, reader).await,
            StatusCode::FORBIDDEN,
            "missing-scope",
        )
        .await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("`admin`"),
            "{body}"
        );
        let res = app.http.get(app.url(path)).send().await.expect("request");
        problem(res, StatusCode::UNAUTHORIZED, "missing-api-key").await;
    }
}

#[tokio::test]
async fn a_key_created_while_running_works_on_its_very_first_request() {
    // `KEY=$(livestrom apikey create …) && curl …` must not race the cache.
    let (app, _keys) = app::spawn(&[key_named("first")]).await;
    for i in 0..5 {
        let key = app
            .cli(move |c| keys::create(c, &key_named(&format!("new-{i}"))).expect("create key"))
            .await;
        let res = app.get_with("/v1/whoami", &key).await;
        assert_eq!(res.status(), StatusCode::OK, "key {i} refused on first use");
    }
    // A key that exists nowhere is still refused (after the lookup).
    let bogus = keys::generate();
    let res = app.get_with("/v1/whoami", &bogus).await;
    problem(res, StatusCode::UNAUTHORIZED, "unknown-api-key").await;
}

#[tokio::test]
async fn a_key_without_stream_read_is_403_on_streaming_routes() {
    let admin = NewKey {
        scopes: vec![Scope::Admin],
        ..key_named("ops")
    };
    let (app, keys) = app::spawn(&[admin]).await;
    let res = app
        .http
        .get(app.probe_url())
        .header("X-API-Key", &keys[0])
        .send()
        .await
        .expect("request");
    let body = problem(res, StatusCode::FORBIDDEN, "missing-scope").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("stream:read"),
        "{body}"
    );
    // whoami accepts any valid key and tells what it may do.
    let body: Value = app
        .get_with("/v1/whoami", &keys[0])
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["scopes"], serde_json::json!(["admin"]));
}

#[tokio::test]
async fn a_revoked_key_is_refused_and_its_token_fires() {
    let (app, keys) = app::spawn(&[key_named("app"), key_named("stays")]).await;
    let k = keys[0].clone();
    assert_eq!(
        app.get_with("/v1/whoami", &k).await.status(),
        StatusCode::OK
    );
    let info = app.state.keys.verify(&k).expect("cached");
    let stays = app.state.keys.verify(&keys[1]).expect("cached");

    app.cli(|c| keys::revoke(c, "app")).await.expect("revoke");

    let (a, kr) = (&app, &k);
    let res = poll_until("revoked key refused", || async move {
        let res = a.get_with("/v1/whoami", kr).await;
        (res.status() != StatusCode::OK).then_some(res)
    })
    .await;
    let body = problem(res, StatusCode::FORBIDDEN, "revoked-api-key").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("`app`"),
        "{body}"
    );
    // Open streams select on this token.
    tokio::time::timeout(Duration::from_secs(30), info.revoked.cancelled())
        .await
        .expect("token cancelled");
    assert!(!stays.revoked.is_cancelled(), "other keys are untouched");
    assert_eq!(
        app.get_with("/v1/whoami", &keys[1]).await.status(),
        StatusCode::OK
    );
    let res = app
        .http
        .get(app.probe_url())
        .bearer_auth(&k)
        .send()
        .await
        .expect("request");
    problem(res, StatusCode::FORBIDDEN, "revoked-api-key").await;
}

#[tokio::test]
async fn keys_created_and_updated_while_running_apply_without_closing_streams() {
    let (app, keys) = app::spawn(&[key_named("app")]).await;
    let before = app.state.keys.verify(&keys[0]).expect("cached");

    let fresh = app
        .cli(|c| keys::create(c, &NewKey::new("late")))
        .await
        .expect("create");
    let (a, f, k0) = (&app, &fresh, &keys[0]);
    poll_until("new key accepted", || async move {
        (a.get_with("/v1/whoami", f).await.status() == StatusCode::OK).then_some(())
    })
    .await;

    let change = KeyUpdate {
        max_streams: Some(3),
        rate: Some(50.0),
        ..Default::default()
    };
    app.cli(move |c| keys::update(c, "app", &change))
        .await
        .expect("update");
    let body: Value = poll_until("new limits visible", || async move {
        let body: Value = a.get_with("/v1/whoami", k0).await.json().await.ok()?;
        (body["max_streams"] == 3).then_some(body)
    })
    .await;
    assert_eq!(body["rate"], 50.0);
    assert_eq!(body["burst"], 100);
    let after = app.state.keys.verify(&keys[0]).expect("cached");
    assert_eq!(after.max_streams, 3);
    assert_eq!(before.max_streams, 10, "the old snapshot keeps its limits");
    assert!(
        !before.revoked.is_cancelled(),
        "a limit change does not close open streams"
    );

    // Dropping stream:read closes open streams: the old token fires.
    let change = KeyUpdate {
        scopes: Some(vec![Scope::Admin]),
        ..Default::default()
    };
    app.cli(move |c| keys::update(c, "app", &change))
        .await
        .expect("update");
    tokio::time::timeout(Duration::from_secs(30), before.revoked.cancelled())
        .await
        .expect("token cancelled");
    let res = app
        .http
        .get(app.probe_url())
        .header("X-API-Key", &keys[0])
        .send()
        .await
        .expect("request");
    problem(res, StatusCode::FORBIDDEN, "missing-scope").await;
}

#[tokio::test]
async fn over_its_rate_a_key_gets_429_with_retry_after() {
    let slow = NewKey {
        rate: 1.0,
        ..key_named("slow")
    };
    let (app, keys) = app::spawn(&[slow, key_named("other")]).await;
    // Burst of 2 at 1/s: a few quick requests must hit the limit.
    let (a, k0) = (&app, &keys[0]);
    let res = poll_until("429", || async move {
        let res = a.get_with("/v1/whoami", k0).await;
        (res.status() == StatusCode::TOO_MANY_REQUESTS).then_some(res)
    })
    .await;
    let header: u64 = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After header in seconds");
    assert!(header >= 1);
    let body = problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    assert_eq!(body["retry_after"], header);
    // Limits are per key.
    assert_eq!(
        app.get_with("/v1/whoami", &keys[1]).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn concurrent_streams_are_capped_per_key() {
    let capped = NewKey {
        max_streams: 2,
        ..key_named("capped")
    };
    let (app, keys) = app::spawn(&[capped]).await;
    let key = app.state.keys.verify(&keys[0]).expect("cached");
    let a = app.state.limits.stream_guard(&key).expect("first stream");
    let b = app.state.limits.stream_guard(&key).expect("second stream");
    let refused = app
        .state
        .limits
        .stream_guard(&key)
        .expect_err("third stream");
    assert_eq!(refused.status, 429);
    assert!(refused.retry_after.is_some());
    let body: Value = app
        .get_with("/v1/whoami", &keys[0])
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["open_streams"], 2);
    drop((a, b));
    let body: Value = app
        .get_with("/v1/whoami", &keys[0])
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["open_streams"], 0);
    let _again = app
        .state
        .limits
        .stream_guard(&key)
        .expect("slot freed on drop");
}

#[tokio::test]
async fn repeated_failures_from_one_address_get_429_but_valid_keys_still_work() {
    let (app, keys) = app::spawn(&[key_named("app")]).await;
    let mut statuses = Vec::new();
    let res = loop {
        let res = app.get_with("/v1/whoami", &keys::generate()).await;
        statuses.push(res.status());
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            break res;
        }
        assert!(
            statuses.len() < 10_000,
            "never limited: {:?}",
            &statuses[..20]
        );
    };
    assert!(res.headers().contains_key("retry-after"));
    problem(res, StatusCode::TOO_MANY_REQUESTS, "rate-limited").await;
    assert!(
        statuses
            .iter()
            .take(10)
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    assert_eq!(
        app.get_with("/v1/whoami", &keys[0]).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn last_use_is_recorded_off_the_request_path() {
    let (app, keys) = app::spawn(&[key_named("app")]).await;
    assert!(app.cli(keys::list).await.expect("list")[0]
        .last_used_at
        .is_none());
    assert_eq!(
        app.get_with("/v1/whoami", &keys[0]).await.status(),
        StatusCode::OK
    );
    let a = &app;
    let used = poll_until("last_used_at written", || async move {
        a.cli(keys::list)
            .await
            .ok()?
            .into_iter()
            .next()?
            .last_used_at
    })
    .await;
    assert!(
        chrono::DateTime::parse_from_rfc3339(&used).is_ok(),
        "{used}"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let (app, _) = app::spawn(&[]).await;
    let res = app
        .http
        .get(app.url("/nope"))
        .send()
        .await
        .expect("request");
    problem(res, StatusCode::NOT_FOUND, "not-found").await;
    let res = app
        .http
        .post(app.url("/v1/whoami"))
        .send()
        .await
        .expect("request");
    problem(res, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed").await;
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn keys_never_reach_the_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // A current-thread runtime: every task of the server logs on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);
    // tracing-core caches a callsite's interest from the *registering* thread's
    // dispatcher while only one dispatcher exists, so a log line first reached
    // by a parallel test (no subscriber) would stay disabled for ours. A second
    // live dispatcher makes it combine every dispatcher's interest instead.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (key, revoked_key) = rt.block_on(async {
        let (app, keys) = app::spawn(&[key_named("logged-app"), key_named("gone")]).await;
        let k = &keys[0];
        for url in [
            format!("/v1/whoami?api_key={k}"),
            format!("/v1/whoami?tag=x&api%5Fkey={k}"),
            format!("/v1/{k}"),
            format!("/v1/whoami?api_key={}", keys::generate()),
        ] {
            let _ = app.http.get(app.url(&url)).send().await.expect("request");
        }
        let _ = app.get_with("/v1/whoami", k).await;
        app.cli(|c| keys::revoke(c, "gone")).await.expect("revoke");
        let (a, gone) = (&app, &keys[1]);
        poll_until("revoked", || async move {
            (a.get_with("/v1/whoami", gone).await.status() == StatusCode::FORBIDDEN).then_some(())
        })
        .await;
        (k.clone(), gone.clone())
    });
    let log = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8 log");
    assert!(log.contains("api_key=REDACTED"), "{log}");
    assert!(
        log.contains("logged-app"),
        "the access log names the key: {log}"
    );
    for secret in [&key, &revoked_key] {
        assert!(
            !log.contains(&secret[5..]),
            "a key leaked into the log:\n{log}"
        );
    }
    assert!(
        !log.contains("lstr_"),
        "something key-like leaked into the log:\n{log}"
    );
}
