//! Server tests: head parsing, framing, and every liveness limit on both
//! serving paths (own loop and hyper).

use super::*;

fn head(s: &str) -> Parsed {
    parse_head(s.as_bytes())
}

#[test]
fn bodiless_requests_are_served_here() {
    let Parsed::Request(h) =
        head("GET /v1/stream?source=a.*&tag=x HTTP/1.1\r\nHost: h\r\nX-API-Key: k\r\n\r\nrest")
    else {
        panic!("expected the stream path");
    };
    assert_eq!(
        h.len,
        "GET /v1/stream?source=a.*&tag=x HTTP/1.1\r\nHost: h\r\nX-API-Key: k\r\n\r\n".len()
    );
    assert_eq!(h.uri.query(), Some("source=a.*&tag=x"));
    assert_eq!(
        h.headers.get("x-api-key").map(|v| v.as_bytes()),
        Some(&b"k"[..])
    );
    assert!(h.keep_alive);
}

#[test]
fn connection_tokens_decide_keep_alive() {
    let cases = [
        (
            "GET /v1/stream HTTP/1.1\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            "GET /v1/stream HTTP/1.1\r\nConnection: Keep-Alive, Close\r\n\r\n",
            false,
        ),
        ("GET /v1/stream HTTP/1.0\r\n\r\n", false),
        (
            "GET /v1/stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            true,
        ),
        ("GET /v1/stream HTTP/1.1\r\n\r\n", true),
    ];
    for (req, want) in cases {
        match head(req) {
            Parsed::Request(h) => assert_eq!(h.keep_alive, want, "{req:?}"),
            _ => panic!("expected to be served here: {req:?}"),
        }
    }
}

#[test]
fn any_method_without_a_body_is_served_here() {
    for (req, method) in [
        ("POST /v1/stream HTTP/1.1\r\n\r\n", Method::POST),
        ("HEAD /v1/stream HTTP/1.1\r\n\r\n", Method::HEAD),
        ("OPTIONS * HTTP/1.1\r\n\r\n", Method::OPTIONS),
        (
            "GET /v1/events HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            Method::GET,
        ),
        ("DELETE /v1/x HTTP/1.0\r\n\r\n", Method::DELETE),
    ] {
        match head(req) {
            Parsed::Request(h) => assert_eq!(h.method, method, "{req:?}"),
            _ => panic!("expected to be served here: {req:?}"),
        }
    }
}

#[test]
fn bodies_upgrades_and_odd_heads_go_to_hyper() {
    for req in [
        "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
        "GET /v1/stream HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        "GET /v1/stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET /v1/stream HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        "GET /v1/stream HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        "GET /v1/stream HTTP/2.0\r\n\r\n",
        "GET /v1/stream HTTP/1.1\r\nBad Header: x\r\n\r\n",
        "\x16\x03\x01\x02\x00",
    ] {
        assert!(matches!(head(req), Parsed::Other), "{req:?}");
    }
    let many: String = (0..MAX_HEADERS + 1)
        .map(|i| format!("X-{i}: v\r\n"))
        .collect();
    assert!(matches!(
        head(&format!("GET /v1/stream HTTP/1.1\r\n{many}\r\n")),
        Parsed::Other
    ));
}

#[test]
fn mutated_and_random_heads_never_panic() {
    use rand::{Rng, SeedableRng};
    let seeds: [&[u8]; 3] = [
        b"GET /v1/stream?source=a.*&keyword=x HTTP/1.1\r\nHost: h\r\nX-API-Key: k\r\nConnection: keep-alive, close\r\n\r\n",
        b"HEAD /v1/events HTTP/1.0\r\nContent-Length: 0\r\nLast-Event-ID: 01a2\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nOrigin: https://a\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for i in 0..20_000 {
        let mut bytes = seeds[i % seeds.len()].to_vec();
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..bytes.len());
            match rng.random_range(0..4) {
                0 => bytes[at] = rng.random(),
                1 => bytes.insert(at, rng.random()),
                2 => {
                    bytes.remove(at);
                }
                _ => bytes.truncate(at),
            }
            if bytes.is_empty() {
                bytes.push(b'G');
            }
        }
        let _ = parse_head(&bytes);
    }
    for _ in 0..2_000 {
        let len = rng.random_range(0..512);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let _ = parse_head(&bytes);
    }
}

#[test]
fn partial_heads_wait_for_more() {
    assert!(matches!(head("GET /v1/str"), Parsed::Partial));
    assert!(matches!(
        head("GET /v1/stream HTTP/1.1\r\nHost: x\r\n"),
        Parsed::Partial
    ));
}

#[test]
fn chunk_size_lines_are_lowercase_hex() {
    for (len, want) in [
        (0usize, "0\r\n"),
        (1, "1\r\n"),
        (15, "f\r\n"),
        (16, "10\r\n"),
        (4096, "1000\r\n"),
        (usize::MAX, "ffffffffffffffff\r\n"),
    ] {
        let mut out = [0u8; 18];
        let n = chunk_size_line(&mut out, len);
        assert_eq!(&out[..n], want.as_bytes(), "{len}");
    }
}

/// Serves `app` on 127.0.0.1:0 with `opts`; the token stops it.
async fn spawn(app: Router, opts: Options) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = CancellationToken::new();
    tokio::spawn(serve_with(listener, app, stop.clone(), opts));
    (addr, stop)
}

/// Reads until EOF (discarding), failing after a generous bound.
async fn until_eof(sock: &mut TcpStream) {
    let mut scratch = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(30), async {
        while sock.read(&mut scratch).await.expect("read") > 0 {}
    })
    .await
    .expect("the server closed the connection");
}

#[tokio::test]
async fn slow_heads_and_idle_keep_alive_connections_are_closed() {
    let app = Router::new().route("/x", axum::routing::get(|| async { "x" }));
    let opts = Options {
        header_read_timeout: Duration::from_millis(200),
        ..Options::default()
    };
    let (addr, _stop) = spawn(app, opts).await;
    // Half a head, then nothing (slowloris).
    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /x HTT").await.expect("write");
    until_eof(&mut slow).await;
    // A served request, then an idle keep-alive connection.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut scratch = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\nx") {
        let n = idle.read(&mut scratch).await.expect("read");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&scratch[..n]);
    }
    until_eof(&mut idle).await;
}

/// Fires when dropped.
struct DropSignal(Option<tokio::sync::oneshot::Sender<()>>);
impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// A route whose body never ends, and a receiver that fires once the
/// body was dropped (the server gave up on the response).
fn endless_app() -> (Router, tokio::sync::oneshot::Receiver<()>) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let signal = std::sync::Arc::new(std::sync::Mutex::new(Some(DropSignal(Some(tx)))));
    let app = Router::new().route(
        "/endless",
        axum::routing::get(move || {
            let guard = signal.lock().expect("lock").take();
            async move {
                let chunk = Bytes::from(vec![b'a'; 64 * 1024]);
                let body = futures::stream::unfold(guard, move |g| {
                    let chunk = chunk.clone();
                    async move {
                        tokio::task::yield_now().await;
                        Some((Ok::<_, std::convert::Infallible>(chunk), g))
                    }
                });
                axum::body::Body::from_stream(body)
            }
        }),
    );
    (app, rx)
}

/// The same request in every form the two serving paths take: without a
/// body (served here) and with one (served by hyper).
const ENDLESS_REQUESTS: [&str; 4] = [
    "GET /endless HTTP/1.1\r\nHost: h\r\n\r\n",
    "GET /endless HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\nx",
    "GET /endless HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    "GET /endless HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
];

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_write_stall() {
    for req in ENDLESS_REQUESTS {
        let (app, rx) = endless_app();
        let opts = Options {
            write_stall: Duration::from_millis(300),
            ..Options::default()
        };
        let (addr, _stop) = spawn(app, opts).await;
        let mut sock = TcpStream::connect(addr).await.expect("connect");
        sock.write_all(req.as_bytes()).await.expect("write");
        // Never read: the server's writes stop making progress once the
        // socket buffers are full, and it must give up and drop the body.
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .unwrap_or_else(|_| panic!("the stalled response was never dropped: {req:?}"))
            .expect("signal");
        drop(sock);
    }
}

#[tokio::test]
async fn a_response_that_never_ends_is_closed_after_the_shutdown_grace() {
    for req in ENDLESS_REQUESTS {
        let (app, rx) = endless_app();
        let opts = Options {
            shutdown_write_grace: Duration::from_millis(200),
            ..Options::default()
        };
        let (addr, stop) = spawn(app, opts).await;
        let mut sock = TcpStream::connect(addr).await.expect("connect");
        sock.write_all(req.as_bytes()).await.expect("write");
        let mut scratch = [0u8; 4096];
        let n = sock.read(&mut scratch).await.expect("read");
        assert!(n > 0);
        // A reading client, a body that does not stop by itself: the
        // connection still ends once shutdown's grace is over.
        stop.cancel();
        until_eof(&mut sock).await;
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .unwrap_or_else(|_| panic!("the response outlived shutdown: {req:?}"))
            .expect("signal");
    }
}

/// Sends `req` and reads the whole answer (the server closes after it).
async fn exchange(addr: SocketAddr, req: &[u8]) -> String {
    let mut sock = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before it read everything.
    let _ = sock.write_all(req).await;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut scratch = [0u8; 4096];
        loop {
            match sock.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&scratch[..n]),
            }
        }
    })
    .await
    .expect("the server closed the connection");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn head_limits_are_the_same_whichever_path_serves_the_request() {
    let app = Router::new().route("/x", axum::routing::get(|| async { "x" }));
    let (addr, _stop) = spawn(app, Options::default()).await;
    let many: String = (0..MAX_HEADERS).map(|i| format!("X-H{i}: v\r\n")).collect();
    let pad = "a".repeat(MAX_HEAD);
    for body in ["", "Content-Length: 1\r\n"] {
        let tail = if body.is_empty() { "" } else { "x" };
        let over_count = format!("GET /x HTTP/1.1\r\nHost: h\r\n{body}{many}\r\n{tail}");
        let over_size = format!("GET /x HTTP/1.1\r\nHost: h\r\n{body}X-Pad: {pad}\r\n\r\n{tail}");
        for req in [over_count, over_size] {
            let got = exchange(addr, req.as_bytes()).await;
            assert!(
                got.starts_with("HTTP/1.1 431 "),
                "{:?} -> {:?}",
                &req[..60],
                got.lines().next()
            );
        }
    }
    // Within the limits both paths serve it.
    let fits: String = (0..MAX_HEADERS - 4)
        .map(|i| format!("X-H{i}: v\r\n"))
        .collect();
    for body in ["", "Content-Length: 1\r\n"] {
        let tail = if body.is_empty() { "" } else { "x" };
        let req =
            format!("GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n{body}{fits}\r\n{tail}");
        let got = exchange(addr, req.as_bytes()).await;
        assert!(got.starts_with("HTTP/1.1 200 "), "{:?}", got.lines().next());
    }
}

#[test]
fn the_over_capacity_answer_is_well_framed() {
    let text = std::str::from_utf8(OVER_CAPACITY).expect("ascii");
    let (head, body) = text.split_once("\r\n\r\n").expect("head");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.parse().ok())
        .expect("content-length");
    assert_eq!(len, body.len());
    let v: serde_json::Value = serde_json::from_str(body).expect("json");
    assert_eq!(v["status"], 503);
}

#[tokio::test]
async fn connections_past_the_cap_get_503_and_a_freed_slot_is_reused() {
    let app = Router::new().route("/x", axum::routing::get(|| async { "x" }));
    let opts = Options {
        max_connections: 2,
        ..Options::default()
    };
    let (addr, _stop) = spawn(app, opts).await;
    // Two sockets that never send a head hold both slots.
    let a = TcpStream::connect(addr).await.expect("connect");
    let b = TcpStream::connect(addr).await.expect("connect");
    // The third is refused with a problem, whatever it sends.
    let got = exchange(addr, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 503 "), "{got:?}");
    assert!(
        got.contains("maximum number of open connections"),
        "{got:?}"
    );
    // A slot freed by a client that leaves is taken by the next one.
    drop(a);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = exchange(
            addr,
            b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        )
        .await;
        if got.starts_with("HTTP/1.1 200 ") {
            break;
        }
        // The server notices the close when it next reads that socket.
        assert!(got.starts_with("HTTP/1.1 503 "), "{got:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the freed slot was never reused"
        );
        tokio::task::yield_now().await;
    }
    drop(b);
}
