//! Integration tests: fetch. The real fetcher against local axum servers on
//! 127.0.0.1: conditional GET, decompression, body caps, timeouts,
//! redirects, Retry-After, the SSRF guard and upstream streams.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use livestrom_engine::config::FetchConfig;
use livestrom_engine::fetch::{
    FetchError, FetchRequest, FetchResponse, Fetched, Fetcher, DEFAULT_ACCEPT,
};
use reqwest::Url;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn config() -> FetchConfig {
    FetchConfig {
        user_agent: "livestrom-test/1.0 (+https://example.invalid)".into(),
        timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(10),
        max_body: 1 << 20,
        per_host_rps: 1e6,
        per_host_concurrency: 8,
        allow_private_networks: true,
        max_redirects: 5,
        proxy: None,
    }
}

async fn serve(app: Router) -> Result<SocketAddr, std::io::Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

fn request(addr: SocketAddr, path: &str) -> Result<FetchRequest, Box<dyn std::error::Error>> {
    Ok(FetchRequest::get(Url::parse(&format!(
        "http://{addr}{path}"
    ))?))
}

fn body(resp: Result<FetchResponse, FetchError>) -> Result<Fetched, String> {
    match resp {
        Ok(FetchResponse::Body(b)) => Ok(b),
        other => Err(format!("expected a body, got {other:?}")),
    }
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data)?;
    enc.finish()
}

const FEED: &str =
    "<rss version=\"2.0\"><channel><title>t</title><item><guid>1</guid></item></channel></rss>";

/// 200 with validators, or 304 when the client sends them back.
async fn conditional(headers: HeaderMap) -> Response {
    let inm = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let ims = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok());
    if inm == Some("\"v1\"") && ims == Some("Wed, 21 Oct 2015 07:28:00 GMT") {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::CACHE_CONTROL, "max-age=60")],
        )
            .into_response();
    }
    (
        [
            (header::ETAG, "\"v1\""),
            (header::LAST_MODIFIED, "Wed, 21 Oct 2015 07:28:00 GMT"),
            (header::CONTENT_TYPE, "application/rss+xml; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        FEED,
    )
        .into_response()
}

#[tokio::test]
async fn etag_then_not_modified() -> TestResult {
    let addr = serve(Router::new().route("/feed", get(conditional))).await?;
    let f = Fetcher::new(&config())?;
    let first = body(f.fetch(&request(addr, "/feed")?).await)?;
    assert_eq!(&first.body[..], FEED.as_bytes());
    assert_eq!(first.etag.as_deref(), Some("\"v1\""));
    assert_eq!(
        first.last_modified.as_deref(),
        Some("Wed, 21 Oct 2015 07:28:00 GMT")
    );
    assert_eq!(
        first.content_type.as_deref(),
        Some("application/rss+xml; charset=utf-8")
    );
    assert_eq!(first.final_url.as_str(), format!("http://{addr}/feed"));
    assert_eq!(first.hints.not_before, Some(Duration::from_secs(300)));

    let mut again = request(addr, "/feed")?;
    again.etag = first.etag.clone();
    again.last_modified = first.last_modified.clone();
    match f.fetch(&again).await? {
        FetchResponse::NotModified { hints } => {
            assert_eq!(hints.not_before, Some(Duration::from_secs(60)))
        }
        other => panic!("expected 304, got {other:?}"),
    }
    Ok(())
}

/// Echoes the request headers the fetcher is responsible for.
async fn echo(headers: HeaderMap) -> String {
    [
        "user-agent",
        "accept",
        "x-token",
        "last-event-id",
        "if-none-match",
    ]
    .iter()
    .map(|name| {
        format!(
            "{name}={}\n",
            headers
                .get(*name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
        )
    })
    .collect()
}

#[tokio::test]
async fn sends_user_agent_accept_and_extra_headers() -> TestResult {
    let addr = serve(Router::new().route("/echo", get(echo))).await?;
    let f = Fetcher::new(&config())?;
    let plain = body(f.fetch(&request(addr, "/echo")?).await)?;
    let text = String::from_utf8(plain.body.to_vec())?;
    assert!(
        text.contains("user-agent=livestrom-test/1.0 (+https://example.invalid)\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("accept={DEFAULT_ACCEPT}\n")),
        "{text}"
    );
    assert!(
        text.contains("x-token=-\n") && text.contains("last-event-id=-\n"),
        "{text}"
    );

    let mut custom = request(addr, "/echo")?;
    custom.user_agent = Some("per-source-agent/2".into());
    custom.accept = Some("application/json");
    custom.headers = BTreeMap::from([("X-Token".to_owned(), "secret".to_owned())]);
    custom.last_event_id = Some("evt-42".into());
    custom.etag = Some("\"abc\"".into());
    let text = String::from_utf8(body(f.fetch(&custom).await)?.body.to_vec())?;
    for want in [
        "user-agent=per-source-agent/2\n",
        "accept=application/json\n",
        "x-token=secret\n",
        "last-event-id=evt-42\n",
        "if-none-match=\"abc\"\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in {text}");
    }
    Ok(())
}

#[tokio::test]
async fn invalid_request_headers_are_errors_not_panics() -> TestResult {
    let addr = serve(Router::new().route("/echo", get(echo))).await?;
    let f = Fetcher::new(&config())?;
    let mut bad_name = request(addr, "/echo")?;
    bad_name.headers.insert("bad header".into(), "x".into());
    assert!(
        matches!(f.fetch(&bad_name).await, Err(FetchError::Other(m)) if m.contains("invalid header name"))
    );
    let mut bad_value = request(addr, "/echo")?;
    bad_value
        .headers
        .insert("X-Ok".into(), "line\r\nInjected: yes".into());
    assert!(
        matches!(f.fetch(&bad_value).await, Err(FetchError::Other(m)) if m.contains("invalid value for header"))
    );
    let mut bad_ua = request(addr, "/echo")?;
    bad_ua.user_agent = Some("agent\n".into());
    assert!(matches!(f.fetch(&bad_ua).await, Err(FetchError::Other(_))));
    Ok(())
}

#[tokio::test]
async fn compressed_bodies_are_decoded() -> TestResult {
    let text = FEED.repeat(50);
    let gz = gzip(text.as_bytes())?;
    let mut br = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
        w.write_all(text.as_bytes())?;
    }
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(text.as_bytes())?;
    let zlib = zlib.finish()?;
    let (gz, br, zlib) = (Bytes::from(gz), Bytes::from(br), Bytes::from(zlib));
    let app = Router::new()
        .route(
            "/gzip",
            get(move || async move { ([(header::CONTENT_ENCODING, "gzip")], gz) }),
        )
        .route(
            "/br",
            get(move || async move { ([(header::CONTENT_ENCODING, "br")], br) }),
        )
        .route(
            "/deflate",
            get(move || async move { ([(header::CONTENT_ENCODING, "deflate")], zlib) }),
        );
    let addr = serve(app).await?;
    // The default cap: the brotli body's 4 MiB window (lgwin 22, what
    // encoders use by default) fits under it. (A window over the cap is
    // refused: `engine fetch::tests::brotli_bodies_are_decoded_here_…`.)
    let f = Fetcher::new(&FetchConfig {
        max_body: 10_000_000,
        ..config()
    })?;
    for path in ["/gzip", "/br", "/deflate"] {
        let got = body(f.fetch(&request(addr, path)?).await)?;
        assert_eq!(got.body.len(), text.len(), "{path}");
        assert_eq!(&got.body[..], text.as_bytes(), "{path}");
    }
    Ok(())
}

#[tokio::test]
async fn body_cap_applies_to_plain_and_streamed_bodies() -> TestResult {
    let app = Router::new()
        .route("/exact", get(|| async { vec![b'a'; 1000] }))
        .route("/big", get(|| async { vec![b'a'; 5000] }))
        .route(
            "/chunked",
            get(|| async {
                // No Content-Length: the cap must trip while streaming.
                let chunks = futures::stream::iter(
                    (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'b'; 300]))),
                );
                Body::from_stream(chunks)
            }),
        );
    let addr = serve(app).await?;
    let f = Fetcher::new(&FetchConfig {
        max_body: 1000,
        ..config()
    })?;
    assert_eq!(
        body(f.fetch(&request(addr, "/exact")?).await)?.body.len(),
        1000
    );
    assert!(matches!(
        f.fetch(&request(addr, "/big")?).await,
        Err(FetchError::TooLarge { limit: 1000 })
    ));
    assert!(matches!(
        f.fetch(&request(addr, "/chunked")?).await,
        Err(FetchError::TooLarge { limit: 1000 })
    ));
    Ok(())
}

#[tokio::test]
async fn gzip_bomb_is_cut_off_after_decompression() -> TestResult {
    // ~100 KB on the wire, 100 MB once inflated.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..100 {
        enc.write_all(&zeros)?;
    }
    let bomb = Bytes::from(enc.finish()?);
    assert!(bomb.len() < 200 * 1024, "bomb is {} bytes", bomb.len());
    let app = Router::new().route(
        "/bomb",
        get(move || async move { ([(header::CONTENT_ENCODING, "gzip")], bomb) }),
    );
    let addr = serve(app).await?;
    let f = Fetcher::new(&FetchConfig {
        max_body: 1 << 20,
        ..config()
    })?;
    let got = f.fetch(&request(addr, "/bomb")?).await;
    assert!(
        matches!(got, Err(FetchError::TooLarge { limit }) if limit == 1 << 20),
        "{got:?}"
    );
    Ok(())
}

#[tokio::test]
async fn total_timeout_covers_a_body_that_never_ends() -> TestResult {
    let app = Router::new()
        .route(
            "/trickle",
            get(|| async {
                let first = futures::stream::once(async {
                    Ok::<_, std::io::Error>(Bytes::from_static(b"<rss>"))
                });
                Body::from_stream(first.chain(futures::stream::pending()))
            }),
        )
        .route("/stall", get(futures::future::pending::<&'static str>));
    let addr = serve(app).await?;
    let limit = Duration::from_millis(300);
    let f = Fetcher::new(&FetchConfig {
        timeout: limit,
        ..config()
    })?;
    assert!(
        matches!(f.fetch(&request(addr, "/trickle")?).await, Err(FetchError::Timeout(d)) if d == limit)
    );
    assert!(
        matches!(f.fetch(&request(addr, "/stall")?).await, Err(FetchError::Timeout(d)) if d == limit)
    );
    Ok(())
}

async fn hop(Path(n): Path<u32>) -> Response {
    if n == 0 {
        return "landed".into_response();
    }
    Redirect::temporary(&format!("/hop/{}", n - 1)).into_response()
}

#[tokio::test]
async fn redirects_are_followed_up_to_the_limit() -> TestResult {
    let addr = serve(Router::new().route("/hop/{n}", get(hop))).await?;
    let f = Fetcher::new(&FetchConfig {
        max_redirects: 3,
        ..config()
    })?;
    let ok = body(f.fetch(&request(addr, "/hop/3")?).await)?;
    assert_eq!(&ok.body[..], b"landed");
    assert_eq!(ok.final_url.path(), "/hop/0");
    let err = f.fetch(&request(addr, "/hop/4")?).await;
    assert!(
        matches!(err, Err(FetchError::TooManyRedirects(3))),
        "{err:?}"
    );
    let none = Fetcher::new(&FetchConfig {
        max_redirects: 0,
        ..config()
    })?;
    assert!(matches!(
        none.fetch(&request(addr, "/hop/1")?).await,
        Err(FetchError::TooManyRedirects(0))
    ));
    Ok(())
}

/// A redirect loop (a page redirecting to itself, and two pages to each
/// other) and a 20-hop chain stop at the hop cap with the same error, and
/// the loop is not followed further than the cap (counted on the server).
#[tokio::test]
async fn redirect_loops_and_long_chains_fail_at_the_hop_cap() -> TestResult {
    let hits = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/hop/{n}", get(hop))
        .route(
            "/self",
            get(|State(h): State<Arc<AtomicUsize>>| async move {
                h.fetch_add(1, Ordering::SeqCst);
                Redirect::temporary("/self")
            }),
        )
        .route("/ping", get(|| async { Redirect::permanent("/pong") }))
        .route("/pong", get(|| async { Redirect::permanent("/ping") }))
        .with_state(hits.clone());
    let addr = serve(app).await?;
    let f = Fetcher::new(&config())?;
    for path in ["/self", "/ping", "/hop/20"] {
        let err = f.fetch(&request(addr, path)?).await;
        assert!(
            matches!(err, Err(FetchError::TooManyRedirects(5))),
            "{path}: {err:?}"
        );
    }
    // The first request and 5 followed hops.
    assert_eq!(hits.load(Ordering::SeqCst), 6);
    Ok(())
}

async fn limited(Path(kind): Path<String>, State(hits): State<Arc<AtomicUsize>>) -> Response {
    hits.fetch_add(1, Ordering::SeqCst);
    match kind.as_str() {
        "seconds" => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "120")],
            "slow down",
        )
            .into_response(),
        "date" => (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::DATE, "Sun, 06 Nov 1994 08:49:37 GMT"),
                (header::RETRY_AFTER, "Sun, 06 Nov 1994 08:51:17 GMT"),
            ],
            "maintenance",
        )
            .into_response(),
        "bare" => (StatusCode::TOO_MANY_REQUESTS, "no hint").into_response(),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::RETRY_AFTER, "5")],
            "boom",
        )
            .into_response(),
    }
}

#[tokio::test]
async fn retry_after_seconds_and_http_date() -> TestResult {
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = serve(
        Router::new()
            .route("/limited/{kind}", get(limited))
            .with_state(Arc::clone(&hits)),
    )
    .await?;
    let f = Fetcher::new(&config())?;
    let err = f.fetch(&request(addr, "/limited/seconds")?).await;
    assert!(
        matches!(err, Err(FetchError::Status { status: 429, retry_after: Some(d) }) if d == Duration::from_secs(120)),
        "{err:?}"
    );
    assert_eq!(
        err.as_ref().err().and_then(FetchError::retry_after),
        Some(Duration::from_secs(120))
    );
    assert!(err
        .as_ref()
        .err()
        .is_some_and(|e| e.to_string() == "HTTP 429 (retry after 120s)"));

    // A separate fetcher, so the first one's deferral does not delay this.
    let g = Fetcher::new(&config())?;
    let err = g.fetch(&request(addr, "/limited/date")?).await;
    assert!(
        matches!(err, Err(FetchError::Status { status: 503, retry_after: Some(d) }) if d == Duration::from_secs(100)),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn retry_after_defers_later_fetches_to_the_same_domain() -> TestResult {
    let hits = Arc::new(AtomicUsize::new(0));
    let addr = serve(
        Router::new()
            .route("/limited/{kind}", get(limited))
            .with_state(Arc::clone(&hits)),
    )
    .await?;
    let f = Fetcher::new(&config())?;
    let host = addr.ip().to_string();
    // Statuses without a usable Retry-After record nothing.
    assert!(matches!(
        f.fetch(&request(addr, "/limited/bare")?).await,
        Err(FetchError::Status {
            status: 429,
            retry_after: None
        })
    ));
    assert!(matches!(
        f.fetch(&request(addr, "/limited/other")?).await,
        Err(FetchError::Status {
            status: 500,
            retry_after: None
        })
    ));
    assert_eq!(f.politeness().deferred_for(&host), None);

    assert!(f.fetch(&request(addr, "/limited/seconds")?).await.is_err());
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    let left = f.politeness().deferred_for(&host);
    assert!(
        left.is_some_and(|d| d > Duration::from_secs(60)),
        "{left:?}"
    );
    // The next fetch to the domain waits (the deadline is two minutes away)
    // and never reaches the server.
    let next = tokio::time::timeout(
        Duration::from_millis(200),
        f.fetch(&request(addr, "/limited/seconds")?),
    )
    .await;
    assert!(
        next.is_err(),
        "fetch should still be waiting for Retry-After"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    Ok(())
}

#[tokio::test]
async fn ssrf_guard_refuses_loopback_unless_allowed() -> TestResult {
    let addr = serve(Router::new().route("/", get(|| async { "internal" }))).await?;
    let port = addr.port();
    let guarded = Fetcher::new(&FetchConfig {
        allow_private_networks: false,
        ..config()
    })?;
    let open = Fetcher::new(&config())?;
    for target in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
    ] {
        let req = FetchRequest::get(Url::parse(&target)?);
        match guarded.fetch(&req).await {
            Err(
                e @ FetchError::Blocked {
                    why: "loopback", ..
                },
            ) => {
                assert!(e.to_string().contains("allow_private_networks"), "{e}");
            }
            other => panic!("{target}: expected blocked, got {other:?}"),
        }
        assert_eq!(
            &body(open.fetch(&req).await)?.body[..],
            b"internal",
            "{target}"
        );
        match guarded.open_stream(&req).await {
            Err(FetchError::Blocked {
                why: "loopback", ..
            }) => {}
            other => panic!("{target}: expected blocked stream, got {other:?}"),
        }
    }
    for target in [
        "http://[::1]/",
        "http://10.0.0.1/",
        "http://169.254.169.254/",
        "http://[::ffff:127.0.0.1]/",
        "http://0.0.0.0/",
    ] {
        let got = guarded.fetch(&FetchRequest::get(Url::parse(target)?)).await;
        assert!(
            matches!(got, Err(FetchError::Blocked { .. })),
            "{target}: {got:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn transport_errors_are_specific() -> TestResult {
    let f = Fetcher::new(&config())?;
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let refused = f
        .fetch(&FetchRequest::get(Url::parse(&format!(
            "http://127.0.0.1:{port}/"
        ))?))
        .await;
    assert!(
        matches!(&refused, Err(FetchError::Connect(m)) if m.contains("connection refused")),
        "{refused:?}"
    );
    // https to a plain-HTTP server: the TLS handshake fails.
    let addr = serve(Router::new().route("/", get(|| async { "plain" }))).await?;
    let tls = f
        .fetch(&FetchRequest::get(Url::parse(&format!("https://{addr}/"))?))
        .await;
    assert!(
        matches!(&tls, Err(FetchError::Connect(m)) if m.contains("tls")),
        "{tls:?}"
    );
    let ftp = f
        .fetch(&FetchRequest::get(Url::parse("ftp://example.com/feed")?))
        .await;
    assert!(matches!(ftp, Err(FetchError::BadUrl(_))));
    Ok(())
}

#[tokio::test]
async fn open_stream_returns_after_headers_and_checks_status() -> TestResult {
    let app = Router::new()
        .route(
            "/sse",
            get(|headers: HeaderMap| async move {
                let id = headers
                    .get("last-event-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                let first = futures::stream::once(async move {
                    Ok::<_, std::io::Error>(Bytes::from(format!("data: resumed after {id}\n\n")))
                });
                // An endless stream: open_stream must not wait for its end.
                (
                    [(header::CONTENT_TYPE, "text/event-stream")],
                    Body::from_stream(first.chain(futures::stream::pending())),
                )
            }),
        )
        .route(
            "/busy",
            get(|| async {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "30")],
                    "",
                )
            }),
        );
    let addr = serve(app).await?;
    let f = Fetcher::new(&FetchConfig {
        timeout: Duration::from_millis(300),
        ..config()
    })?;
    let mut req = request(addr, "/sse")?;
    req.last_event_id = Some("41".into());
    let resp = f.open_stream(&req).await?;
    assert_eq!(
        resp.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut stream = resp.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next()).await?;
    let chunk = first.ok_or("stream ended")??;
    assert_eq!(&chunk[..], b"data: resumed after 41\n\n");
    // Still open (no error, no end) well past fetch.timeout: streams have no
    // total timeout; the caller owns idle timeouts.
    let idle = tokio::time::timeout(Duration::from_millis(800), stream.next()).await;
    assert!(idle.is_err(), "stream should still be open, got {idle:?}");
    let busy = f.open_stream(&request(addr, "/busy")?).await;
    assert!(
        matches!(busy, Err(FetchError::Status { status: 429, retry_after: Some(d) }) if d == Duration::from_secs(30))
    );
    Ok(())
}

#[tokio::test]
async fn a_configured_proxy_carries_every_request() -> TestResult {
    // A forward proxy on 127.0.0.1: it receives the absolute-form request
    // for a host that resolves nowhere, and answers for it.
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let proxy = serve(Router::new().fallback(move |uri: axum::http::Uri| {
        let log = log.clone();
        async move {
            if let Ok(mut l) = log.lock() {
                l.push(uri.to_string());
            }
            ([(header::CONTENT_TYPE, "application/rss+xml")], FEED)
        }
    }))
    .await?;
    let f = Fetcher::new(&FetchConfig {
        // The guard stays on: the proxy's own loopback address is not a target.
        allow_private_networks: false,
        proxy: Some(Url::parse(&format!("http://{proxy}"))?),
        ..config()
    })?;
    let got = body(
        f.fetch(&FetchRequest::get(Url::parse(
            "http://feeds.example.invalid/feed.xml",
        )?))
        .await,
    )?;
    assert_eq!(&got.body[..], FEED.as_bytes());
    let seen = seen.lock().map(|l| l.clone()).unwrap_or_default();
    assert_eq!(seen, ["http://feeds.example.invalid/feed.xml"]);
    // IP-literal targets are still refused before any request is made.
    let refused = f
        .fetch(&FetchRequest::get(Url::parse("http://10.0.0.1/feed.xml")?))
        .await;
    assert!(
        matches!(refused, Err(FetchError::Blocked { .. })),
        "{refused:?}"
    );
    Ok(())
}

/// Every request header a server saw, one map per request.
type SeenHeaders = Arc<std::sync::Mutex<Vec<HeaderMap>>>;

async fn serve_on(ip: &str, app: Router) -> Result<SocketAddr, std::io::Error> {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// A server that records the headers of every request and answers 200.
async fn recording_server(ip: &str) -> Result<(SocketAddr, SeenHeaders), std::io::Error> {
    let seen: SeenHeaders = Arc::default();
    let log = seen.clone();
    let addr = serve_on(
        ip,
        Router::new().fallback(move |headers: HeaderMap| {
            let log = log.clone();
            async move {
                if let Ok(mut l) = log.lock() {
                    l.push(headers);
                }
                "landed"
            }
        }),
    )
    .await?;
    Ok((addr, seen))
}

fn seen(headers: &SeenHeaders) -> Vec<HeaderMap> {
    headers.lock().map(|l| l.clone()).unwrap_or_default()
}

/// Configured headers (often credentials) go to the configured origin only:
/// a redirect to another host (127.0.0.1 → 127.0.0.2) drops them, nor does
/// the other host learn the configured URL (with its `?token=`) from a
/// Referer. A same-origin redirect keeps them.
#[tokio::test]
async fn configured_headers_do_not_follow_a_redirect_to_another_origin() -> TestResult {
    let (other, other_seen) = recording_server("127.0.0.2").await?;
    let home_seen: SeenHeaders = Arc::default();
    let log = home_seen.clone();
    let away = format!("http://{other}/landing");
    let start = serve(
        Router::new()
            .route(
                "/away",
                get(move || async move { Redirect::temporary(&away) }),
            )
            .route("/home", get(|| async { Redirect::permanent("/landing") }))
            .route(
                "/landing",
                get(move |headers: HeaderMap| async move {
                    if let Ok(mut l) = log.lock() {
                        l.push(headers);
                    }
                    "home"
                }),
            ),
    )
    .await?;
    let f = Fetcher::new(&config())?;
    let with_key = |path: &str| -> Result<FetchRequest, Box<dyn std::error::Error>> {
        let mut req = FetchRequest::get(Url::parse(&format!("http://{start}{path}?token=s3cret"))?);
        req.headers = BTreeMap::from([("X-Api-Key".to_owned(), "k-s3cret".to_owned())]);
        Ok(req)
    };

    let landed = body(f.fetch(&with_key("/away")?).await)?;
    assert_eq!(&landed.body[..], b"landed");
    assert_eq!(landed.final_url.as_str(), format!("http://{other}/landing"));
    let other_saw = seen(&other_seen);
    assert_eq!(other_saw.len(), 1);
    for (name, value) in other_saw.iter().flat_map(|h| h.iter()) {
        let value = value.to_str().unwrap_or_default();
        assert!(
            name != "x-api-key" && !value.contains("s3cret"),
            "the other origin saw {name}: {value}"
        );
    }
    // The long-lived upstream streams follow redirects the same way.
    let stream = f.open_stream(&with_key("/away")?).await?;
    assert_eq!(stream.url().as_str(), format!("http://{other}/landing"));
    drop(stream);
    let other_saw = seen(&other_seen);
    assert_eq!(other_saw.len(), 2);
    assert!(
        other_saw.iter().all(|h| !h.contains_key("x-api-key")),
        "{other_saw:?}"
    );

    // Same scheme, host and port: the headers stay.
    let homed = body(f.fetch(&with_key("/home")?).await)?;
    assert_eq!(&homed.body[..], b"home");
    let home_saw = seen(&home_seen);
    assert_eq!(home_saw.len(), 1);
    assert_eq!(
        home_saw[0].get("x-api-key").and_then(|v| v.to_str().ok()),
        Some("k-s3cret")
    );
    Ok(())
}

/// One SSRF target: a URL template (`{port}` is the local server's port)
/// and the reason class the guard must name when it refuses it.
struct Target {
    url: &'static str,
    why: &'static str,
    /// Whether, with private networks allowed, a direct fetch lands on the
    /// local server on 127.0.0.1 (loopback spellings). The others are
    /// checked through a forward proxy on 127.0.0.1, since nothing listens
    /// on them.
    reaches_local: bool,
}

const fn t(url: &'static str, why: &'static str, reaches_local: bool) -> Target {
    Target {
        url,
        why,
        reaches_local,
    }
}

/// The SSRF matrix of docs/RELIABILITY.md: special ranges of both families,
/// embedded-IPv4 forms, odd IPv4 spellings and local names.
const SSRF_TARGETS: &[Target] = &[
    // IPv4 special ranges.
    t("http://0.0.0.0:{port}/", "unspecified", false),
    t("http://0.1.2.3/", "this-network (0.0.0.0/8)", false),
    t("http://10.0.0.1/", "private", false),
    t("http://10.255.255.254/", "private", false),
    t("http://100.64.0.1/", "shared address space (cgnat)", false),
    t(
        "http://100.127.255.254/",
        "shared address space (cgnat)",
        false,
    ),
    t("http://127.0.0.1:{port}/", "loopback", true),
    t("http://127.255.255.254/", "loopback", false),
    t(
        "http://169.254.169.254/latest/meta-data/",
        "link-local",
        false,
    ),
    t("http://169.254.0.1/", "link-local", false),
    t("http://172.16.0.1/", "private", false),
    t("http://172.31.255.254/", "private", false),
    t("http://192.168.0.1/", "private", false),
    t("http://192.168.255.254/", "private", false),
    t("http://198.18.0.1/", "reserved (benchmarking)", false),
    t("http://198.19.255.254/", "reserved (benchmarking)", false),
    t("http://224.0.0.1/", "multicast", false),
    t("http://239.255.255.250/", "multicast", false),
    t("http://240.0.0.1/", "reserved", false),
    t("http://255.255.255.255/", "broadcast", false),
    t(
        "http://192.0.0.8/",
        "reserved (ietf protocol assignments)",
        false,
    ),
    t("http://192.0.2.1/", "documentation", false),
    // IPv6 special ranges and IPv4 embedded in IPv6.
    t("http://[::1]/", "loopback", false),
    t("http://[::]/", "unspecified", false),
    t("http://[fc00::1]/", "private (unique local)", false),
    t("http://[fd00:ec2::254]/", "private (unique local)", false),
    t("http://[fe80::1]/", "link-local", false),
    t("http://[ff02::1]/", "multicast", false),
    t("http://[ff05::1:3]/", "multicast", false),
    t("http://[::ffff:127.0.0.1]:{port}/", "loopback", true),
    t("http://[::ffff:169.254.169.254]/", "link-local", false),
    t("http://[::ffff:a00:1]/", "private", false),
    t("http://[::127.0.0.1]/", "loopback", false),
    t("http://[64:ff9b::7f00:1]/", "loopback", false),
    t("http://[64:ff9b::a9fe:a9fe]/", "link-local", false),
    t("http://[2002:7f00:1::]/", "loopback", false),
    t("http://[2002:c0a8:1::1]/", "private", false),
    t(
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
        "reserved (ietf protocol assignments, teredo)",
        false,
    ),
    // Decimal, octal, hex and short spellings of IPv4 addresses.
    t("http://2130706433:{port}/", "loopback", true),
    t("http://0x7f.1:{port}/", "loopback", true),
    t("http://0177.0.0.1:{port}/", "loopback", true),
    t("http://127.1:{port}/", "loopback", true),
    t("http://0x7f000001:{port}/", "loopback", true),
    t("http://017700000001:{port}/", "loopback", true),
    t("http://0/", "unspecified", false),
    t("http://3232235521/", "private", false),
    t("http://0xa9.0xfe.0xa9.0xfe/", "link-local", false),
    t("http://0xA.1/", "private", false),
    // Names that resolve to loopback (the system resolver's /etc/hosts).
    t("http://localhost:{port}/", "loopback", true),
    t("http://LOCALHOST:{port}/", "loopback", true),
    t("http://LocalHost.:{port}/", "loopback", true),
    t("http://localhost.:{port}/", "loopback", true),
    t("http://app.localhost:{port}/", "loopback", true),
];

#[tokio::test]
async fn ssrf_matrix_is_refused_by_default_and_allowed_when_private_networks_are() -> TestResult {
    assert!(SSRF_TARGETS.len() >= 40, "{} targets", SSRF_TARGETS.len());
    let (local, local_seen) = recording_server("127.0.0.1").await?;
    let (proxy, proxy_seen) = recording_server("127.0.0.1").await?;
    let guarded = Fetcher::new(&FetchConfig {
        allow_private_networks: false,
        timeout: Duration::from_secs(10),
        ..config()
    })?;
    let open = Fetcher::new(&FetchConfig {
        timeout: Duration::from_secs(10),
        ..config()
    })?;
    let open_via_proxy = Fetcher::new(&FetchConfig {
        proxy: Some(Url::parse(&format!("http://{proxy}"))?),
        ..config()
    })?;
    let mut direct = 0;
    for target in SSRF_TARGETS {
        let url = Url::parse(&target.url.replace("{port}", &local.port().to_string()))?;
        let req = FetchRequest::get(url.clone());
        // Refused by default, for polls and for upstream streams (firehose
        // sources open theirs with open_stream), naming the class and the
        // setting that would allow it.
        for (kind, got) in [
            ("fetch", guarded.fetch(&req).await.map(|_| ())),
            ("stream", guarded.open_stream(&req).await.map(|_| ())),
        ] {
            match got {
                Err(e @ FetchError::Blocked { why, .. }) => {
                    assert_eq!(why, target.why, "{kind} {url}");
                    let msg = e.to_string();
                    assert!(
                        msg.contains(target.why) && msg.contains("allow_private_networks"),
                        "{kind} {url}: {msg}"
                    );
                }
                other => panic!("{kind} {url}: expected blocked, got {other:?}"),
            }
        }
        // Allowed when private networks are: the request leaves the fetcher
        // (through the proxy, which answers for any target).
        let got =
            body(open_via_proxy.fetch(&req).await).map_err(|e| format!("{url} via proxy: {e}"))?;
        assert_eq!(&got.body[..], b"landed", "{url} via proxy");
        // Loopback spellings reach the local server directly, by poll and by stream.
        if target.reaches_local {
            let before = seen(&local_seen).len();
            let got = body(open.fetch(&req).await).map_err(|e| format!("{url}: {e}"))?;
            assert_eq!(&got.body[..], b"landed", "{url}");
            let resp = open.open_stream(&req).await?;
            assert_eq!(&resp.bytes().await?[..], b"landed", "{url} stream");
            assert_eq!(seen(&local_seen).len(), before + 2, "{url}");
            direct += 1;
        }
    }
    assert_eq!(seen(&proxy_seen).len(), SSRF_TARGETS.len());
    assert!(direct >= 10, "{direct} direct targets");
    Ok(())
}
