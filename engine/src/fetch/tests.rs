//! Fetcher tests against a local server with simulated DNS: the guarded
//! resolver, DNS and rebinding errors, redirects to internal addresses,
//! configured headers across origins, per-domain concurrency and Retry-After.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::State;
use axum::http::{header, StatusCode as AxumStatus};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;
use tokio::sync::{watch, Semaphore};

use super::redirect::same_origin;
use super::ssrf::FakeDns;
use super::*;

fn config(allow_private: bool) -> FetchConfig {
    FetchConfig {
        user_agent: "livestrom-test/1".into(),
        timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(10),
        max_body: 1 << 20,
        per_host_rps: 1e6,
        per_host_concurrency: 2,
        allow_private_networks: allow_private,
        max_redirects: 5,
        proxy: None,
    }
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn loopback() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

/// Every `*.example.test` name resolves to the local server; a few
/// names resolve to internal addresses, as a rebinding attacker would.
fn dns() -> Arc<FakeDns> {
    Arc::new(FakeDns(HashMap::from([
        ("a.example.test", vec![loopback()]),
        ("b.example.test", vec![loopback()]),
        ("rebind.test", vec![loopback()]),
        ("internal.test", vec![IpAddr::from([10, 0, 0, 1])]),
    ])))
}

/// Refuses everything internal except the test server's own address.
fn guarded_fetcher(cfg: &FetchConfig) -> Fetcher {
    let guard = Guard {
        allow_private: false,
        exempt: Some(loopback()),
    };
    Fetcher::with_guard(cfg, dns(), guard).unwrap_or_else(|e| panic!("fetcher: {e}"))
}

fn url(s: &str) -> Url {
    Url::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn configured_headers_stay_within_the_configured_origin() {
    let from = url("https://feeds.example.org/a?token=x");
    for (to, same) in [
        ("https://feeds.example.org/b", true),
        ("https://FEEDS.example.org:443/c", true),
        ("http://feeds.example.org/a", false), // downgrade
        ("https://feeds.example.org:8443/a", false),
        ("https://other.example.org/a", false),
        ("https://example.org/a", false),
    ] {
        assert_eq!(same_origin(&from, &url(to)), same, "{to}");
    }
}

#[tokio::test]
async fn host_names_connect_through_the_guarded_resolver() {
    let addr = serve(Router::new().route("/", get(|| async { "hello" }))).await;
    let f = guarded_fetcher(&config(false));
    let got = f
        .fetch(&FetchRequest::get(url(&format!(
            "http://a.example.test:{}/",
            addr.port()
        ))))
        .await;
    match got {
        Ok(FetchResponse::Body(b)) => assert_eq!(&b.body[..], b"hello"),
        other => panic!("expected body, got {other:?}"),
    }
}

#[tokio::test]
async fn dns_failure_and_rebinding_map_to_specific_errors() {
    let addr = serve(Router::new().route("/", get(|| async { "hello" }))).await;
    // Without the exemption, a name resolving to loopback is refused at connect time.
    let f = Fetcher::with_guard(&config(false), dns(), Guard::new(false))
        .unwrap_or_else(|e| panic!("{e}"));
    let err = f
        .fetch(&FetchRequest::get(url(&format!(
            "http://rebind.test:{}/",
            addr.port()
        ))))
        .await;
    match err {
        Err(FetchError::Blocked { addr, why }) => {
            assert_eq!(why, "loopback");
            assert!(addr.contains("rebind.test"), "{addr}");
        }
        other => panic!("expected blocked, got {other:?}"),
    }
    let err = f
        .fetch(&FetchRequest::get(url("http://nowhere.test/")))
        .await;
    match err {
        Err(FetchError::Dns { host, reason }) => {
            assert_eq!(host, "nowhere.test");
            assert!(reason.contains("no such host"), "{reason}");
        }
        other => panic!("expected dns error, got {other:?}"),
    }
}

#[tokio::test]
async fn redirects_to_internal_addresses_are_refused() {
    let app = Router::new()
        .route(
            "/to-literal",
            get(|| async { Redirect::temporary("http://127.0.0.2/") }),
        )
        .route(
            "/to-ipv6",
            get(|| async {
                Redirect::temporary("http://[::ffff:169.254.169.254]/latest/meta-data")
            }),
        )
        .route(
            "/to-name",
            get(|| async { Redirect::temporary("http://internal.test/admin") }),
        )
        .route(
            "/to-file",
            get(|| async { Redirect::temporary("file:///etc/passwd") }),
        );
    let addr = serve(app).await;
    let f = guarded_fetcher(&config(false));
    let get =
        |path: &str| FetchRequest::get(url(&format!("http://127.0.0.1:{}{path}", addr.port())));
    match f.fetch(&get("/to-literal")).await {
        Err(FetchError::Blocked {
            addr,
            why: "loopback",
        }) => assert_eq!(addr, "127.0.0.2"),
        other => panic!("expected blocked loopback, got {other:?}"),
    }
    assert!(matches!(
        f.fetch(&get("/to-ipv6")).await,
        Err(FetchError::Blocked {
            why: "link-local",
            ..
        })
    ));
    match f.fetch(&get("/to-name")).await {
        Err(FetchError::Blocked {
            addr,
            why: "private",
        }) => assert!(addr.contains("internal.test"), "{addr}"),
        other => panic!("expected blocked private, got {other:?}"),
    }
    let file = f.fetch(&get("/to-file")).await;
    assert!(matches!(file, Err(FetchError::BadUrl(_))), "{file:?}");
}

/// Counts requests in flight; each handler waits for a release permit.
#[derive(Clone)]
struct Gate {
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    arrived: watch::Sender<usize>,
    release: Arc<Semaphore>,
}

async fn gated(State(gate): State<Gate>) -> impl IntoResponse {
    let now = gate.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    gate.max_in_flight.fetch_max(now, Ordering::SeqCst);
    gate.arrived.send_modify(|n| *n += 1);
    if let Ok(permit) = gate.release.acquire().await {
        permit.forget();
    }
    gate.in_flight.fetch_sub(1, Ordering::SeqCst);
    "done"
}

#[tokio::test]
async fn subdomains_share_the_concurrency_limit() {
    let (arrived, mut arrivals) = watch::channel(0usize);
    let gate = Gate {
        in_flight: Arc::default(),
        max_in_flight: Arc::default(),
        arrived,
        release: Arc::new(Semaphore::new(0)),
    };
    let addr = serve(
        Router::new()
            .route("/", get(gated))
            .with_state(gate.clone()),
    )
    .await;
    let f = guarded_fetcher(&config(false)); // per_host_concurrency = 2
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..6 {
        let host = if i % 2 == 0 {
            "a.example.test"
        } else {
            "b.example.test"
        };
        let req = FetchRequest::get(url(&format!("http://{host}:{}/", addr.port())));
        let f = f.clone();
        tasks.spawn(async move { f.fetch(&req).await });
    }
    // Release one request at a time, each after the next one arrived.
    for released in 0..6usize {
        let want = (released + 2).min(6);
        let arrived = matches!(
            tokio::time::timeout(Duration::from_secs(30), arrivals.wait_for(|n| *n >= want)).await,
            Ok(Ok(_))
        );
        assert!(
            arrived,
            "only {} of {want} requests arrived",
            *arrivals.borrow()
        );
        gate.release.add_permits(1);
    }
    while let Some(done) = tasks.join_next().await {
        assert!(matches!(done, Ok(Ok(FetchResponse::Body(_)))), "{done:?}");
    }
    assert_eq!(
        gate.max_in_flight.load(Ordering::SeqCst),
        2,
        "a.* and b.* share one limit of 2"
    );
}

#[tokio::test]
async fn retry_after_is_recorded_for_the_registrable_domain() {
    let app = Router::new().route(
        "/",
        get(|| async {
            (
                AxumStatus::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "120")],
                "slow down",
            )
        }),
    );
    let addr = serve(app).await;
    let f = guarded_fetcher(&config(false));
    let err = f
        .fetch(&FetchRequest::get(url(&format!(
            "http://a.example.test:{}/",
            addr.port()
        ))))
        .await;
    assert!(
        matches!(err, Err(FetchError::Status { status: 429, retry_after: Some(d) }) if d == Duration::from_secs(120))
    );
    let left = f.politeness().deferred_for("b.example.test");
    assert!(
        left.is_some_and(|d| d > Duration::from_secs(60)),
        "sibling host waits too: {left:?}"
    );
    assert_eq!(f.politeness().deferred_for("example.org"), None);
}

/// A public→private redirect matrix: the test server stands in for a public
/// host (its address is exempt), and every hop it redirects to is a private
/// target that is refused by default and reached when private networks are
/// allowed (a landing server on 127.0.0.2, which the exemption does not cover).
#[tokio::test]
async fn public_to_private_redirects_are_refused_unless_private_networks_are_allowed() {
    let landing = {
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
            .await
            .unwrap_or_else(|e| panic!("bind 127.0.0.2: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let app = Router::new().fallback(get(|| async { "landed" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    };
    let port = landing.port();
    let targets = [
        format!("http://127.0.0.2:{port}/"),
        format!("http://2130706434:{port}/"),
        format!("http://0x7f.2:{port}/"),
        format!("http://127.2:{port}/"),
        format!("http://0177.0.0.2:{port}/"),
        format!("http://[::ffff:127.0.0.2]:{port}/"),
        format!("http://internal2.test:{port}/"),
    ];
    let app = Router::new().route(
        "/go/{n}",
        get(
            |axum::extract::Path(n): axum::extract::Path<usize>,
             State(targets): State<Arc<Vec<String>>>| async move {
                Redirect::temporary(&targets[n])
            },
        ),
    );
    let public = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let app = app.with_state(Arc::new(targets.to_vec()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    };
    let dns = Arc::new(FakeDns(HashMap::from([(
        "internal2.test",
        vec![IpAddr::from([127, 0, 0, 2])],
    )])));
    let exempt = |allow_private| Guard {
        allow_private,
        exempt: Some(loopback()),
    };
    let guarded = Fetcher::with_guard(&config(false), dns.clone(), exempt(false))
        .unwrap_or_else(|e| panic!("{e}"));
    let open =
        Fetcher::with_guard(&config(true), dns, exempt(true)).unwrap_or_else(|e| panic!("{e}"));
    for (n, target) in targets.iter().enumerate() {
        let req = FetchRequest::get(url(&format!("http://{public}/go/{n}")));
        match guarded.fetch(&req).await {
            Err(FetchError::Blocked {
                why: "loopback", ..
            }) => {}
            other => panic!("{target}: expected blocked loopback, got {other:?}"),
        }
        match guarded.open_stream(&req).await {
            Err(FetchError::Blocked {
                why: "loopback", ..
            }) => {}
            other => panic!("{target} (stream): expected blocked loopback, got {other:?}"),
        }
        match open.fetch(&req).await {
            Ok(FetchResponse::Body(b)) => assert_eq!(&b.body[..], b"landed", "{target}"),
            other => panic!("{target}: expected the landing page, got {other:?}"),
        }
    }
}

fn brotli(data: &[u8], lgwin: u32) -> Bytes {
    let mut out = Vec::new();
    {
        use std::io::Write as _;
        let mut w = ::brotli::CompressorWriter::new(&mut out, 4096, 5, lgwin);
        w.write_all(data)
            .unwrap_or_else(|e| panic!("brotli encode: {e}"));
    }
    Bytes::from(out)
}

/// Fetches offer brotli and decode it themselves (in chunks as they
/// arrive); a window over the cap is refused by name, a decoded size over
/// it is cut off as any body is, and a body that is not brotli is an error.
#[tokio::test]
async fn brotli_bodies_are_decoded_here_with_their_window_checked_against_the_cap() {
    let text: Vec<u8> = (0..20_000)
        .flat_map(|n| format!("<item><title>{n}</title></item>\n").into_bytes())
        .collect();
    let fits = brotli(&text, 20); // 1 MiB window, the cap below
    let wide = brotli(&text, 21); // 2 MiB window
    let bomb = brotli(&vec![0u8; 8 << 20], 20); // 8 MiB of zeros
    assert!(bomb.len() < 64 * 1024, "bomb is {} bytes", bomb.len());
    let br = |body: Bytes| {
        // Dribbled out in small chunks, as a network would.
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(1000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        (
            [(header::CONTENT_ENCODING, "br")],
            axum::body::Body::from_stream(futures::stream::iter(chunks)),
        )
    };
    let app = Router::new()
        .route(
            "/accept-encoding",
            get(|headers: axum::http::HeaderMap| async move {
                headers
                    .get(header::ACCEPT_ENCODING)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            }),
        )
        .route("/fits", get(move || async move { br(fits) }))
        .route("/wide", get(move || async move { br(wide) }))
        .route("/bomb", get(move || async move { br(bomb) }))
        .route(
            "/junk",
            get(|| async { ([(header::CONTENT_ENCODING, "br")], "<rss>not brotli</rss>") }),
        );
    let addr = serve(app).await;
    let get =
        |path: &str| FetchRequest::get(url(&format!("http://127.0.0.1:{}{path}", addr.port())));
    // Brotli is offered under a cap that holds the usual 4 MiB window (the
    // default cap, 10 MB), not under a smaller one.
    let default_cap = guarded_fetcher(&FetchConfig {
        max_body: 10_000_000,
        ..config(false)
    });
    let f = guarded_fetcher(&config(false)); // max_body = 1 MiB
    for (fetcher, offered) in [(&default_cap, "gzip,deflate,br"), (&f, "gzip,deflate")] {
        match fetcher.fetch(&get("/accept-encoding")).await {
            Ok(FetchResponse::Body(b)) => {
                assert_eq!(String::from_utf8_lossy(&b.body).replace(' ', ""), offered);
            }
            other => panic!("expected the header back, got {other:?}"),
        }
    }
    // An upstream may send brotli unasked: decoded all the same.
    match f.fetch(&get("/fits")).await {
        Ok(FetchResponse::Body(b)) => assert!(b.body[..] == text[..], "decoded body differs"),
        other => panic!("expected the decoded body, got {other:?}"),
    }
    let wide = f.fetch(&get("/wide")).await;
    match &wide {
        Err(e @ FetchError::BrotliWindow { window, limit }) => {
            assert_eq!((*window, *limit), (2 << 20, 1 << 20));
            assert_eq!(
                e.to_string(),
                "brotli window of 2 MiB is larger than the body cap of 1 MiB (fetch.max_body)"
            );
        }
        other => panic!("expected the window refused, got {other:?}"),
    }
    let bomb = f.fetch(&get("/bomb")).await;
    match &bomb {
        Err(e @ FetchError::TooLarge { limit }) => {
            assert_eq!(*limit, 1 << 20);
            assert_eq!(
                e.to_string(),
                "response body larger than the 1048576-byte limit (fetch.max_body)"
            );
        }
        other => panic!("expected the bomb cut off, got {other:?}"),
    }
    match f.fetch(&get("/junk")).await {
        Err(FetchError::Decode(m)) => assert!(m.contains("brotli"), "{m}"),
        other => panic!("expected a decode error, got {other:?}"),
    }
}

/// Streams and POSTs are offered only what the client decodes itself; a
/// brotli answer anyway is refused (stream) or its body not kept (POST).
#[tokio::test]
async fn streams_and_posts_are_not_offered_brotli() {
    let app = Router::new()
        .route(
            "/accept-encoding",
            get(|headers: axum::http::HeaderMap| async move {
                headers
                    .get(header::ACCEPT_ENCODING)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            }),
        )
        .route(
            "/br",
            get(|| async { ([(header::CONTENT_ENCODING, "br")], "\u{b}\u{0}junk") })
                .post(|| async { ([(header::CONTENT_ENCODING, "br")], "\u{b}\u{0}junk") }),
        );
    let addr = serve(app).await;
    let f = guarded_fetcher(&config(false));
    let at = |path: &str| url(&format!("http://127.0.0.1:{}{path}", addr.port()));

    let offered = match f
        .open_stream(&FetchRequest::get(at("/accept-encoding")))
        .await
    {
        Ok(resp) => resp.text().await.unwrap_or_else(|e| panic!("read: {e}")),
        Err(e) => panic!("open_stream: {e}"),
    };
    assert!(
        offered.contains("gzip") && !offered.contains("br"),
        "{offered}"
    );
    match f.open_stream(&FetchRequest::get(at("/br"))).await {
        Err(FetchError::Decode(m)) => assert!(m.contains("brotli"), "{m}"),
        Err(e) => panic!("expected a decode error, got {e}"),
        Ok(_) => panic!("expected a decode error, got a stream"),
    }
    let posted = f
        .post(
            &at("/br"),
            axum::http::HeaderMap::new(),
            Bytes::from_static(b"{}"),
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|e| panic!("post: {e}"));
    assert_eq!(posted.status, 200);
    assert!(posted.body.is_empty(), "{:?}", posted.body);
}
