//! Integration tests: the edge's HTTP/1 wire behaviour, over raw TCP on
//! 127.0.0.1 — framing of the stream on HTTP/1.1 (chunked) and HTTP/1.0
//! (close-delimited), a disconnect noticed while the stream is idle (also on
//! a connection reused after a CORS preflight), keep-alive, HEAD and
//! pipelining, and requests handed to hyper (bodies, long or malformed heads).

use std::time::Duration;

use livestrom_engine::keys::NewKey;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::auth::app::{self, poll_until};

/// Generous bound for anything the test waits on (slow shared CI box).
const WAIT: Duration = Duration::from_secs(60);

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Reads until `needle` has arrived; returns everything read.
async fn read_until(sock: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) -> TestResult {
    tokio::time::timeout(WAIT, async {
        while !buf.windows(needle.len()).any(|w| w == needle) {
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Err(format!(
                    "connection closed before {:?}; got {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(buf)
                )
                .into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    })
    .await?
}

/// Reads to EOF.
async fn read_to_end(sock: &mut TcpStream, buf: &mut Vec<u8>) -> TestResult {
    tokio::time::timeout(WAIT, sock.read_to_end(buf)).await??;
    Ok(())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The response head (lowercased) and what follows it.
fn split_head(b: &[u8]) -> (String, Vec<u8>) {
    let at = b
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(b.len(), |p| p + 4);
    (text(&b[..at]).to_ascii_lowercase(), b[at..].to_vec())
}

#[tokio::test]
async fn http11_stream_is_chunked_and_ends_with_the_last_chunk_on_shutdown() -> TestResult {
    let (app, keys) = app::spawn(&[NewKey::new("wire")]).await;
    let mut sock = TcpStream::connect(app.addr).await?;
    sock.write_all(
        format!(
            "GET /v1/stream HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nX-API-Key: {}\r\n\r\n",
            keys[0]
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    read_until(&mut sock, &mut buf, b"\n\n\r\n").await?;
    let (head, body) = split_head(&buf);
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for h in [
        "content-type: text/event-stream",
        "cache-control: no-cache",
        "x-accel-buffering: no",
        "transfer-encoding: chunked",
        "x-request-id: ",
        "date: ",
    ] {
        assert!(head.contains(h), "missing {h:?} in {head}");
    }
    assert!(!head.contains("content-encoding"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    // One chunk: `<hex size>\r\n:connected request_id=…\n\n\r\n`.
    let body = text(&body);
    let (size, rest) = body.split_once("\r\n").ok_or("no chunk size line")?;
    let frame = rest.strip_suffix("\r\n").ok_or("chunk not terminated")?;
    assert_eq!(usize::from_str_radix(size, 16)?, frame.len(), "{body:?}");
    assert!(frame.starts_with(":connected request_id="), "{frame:?}");

    // Shutdown ends the stream cleanly: the last chunk, then EOF.
    drop(app);
    let mut tail = Vec::new();
    read_to_end(&mut sock, &mut tail).await?;
    assert_eq!(text(&tail), "0\r\n\r\n");
    Ok(())
}

#[tokio::test]
async fn http10_stream_is_delimited_by_close() -> TestResult {
    let (app, keys) = app::spawn(&[NewKey::new("wire")]).await;
    let mut sock = TcpStream::connect(app.addr).await?;
    sock.write_all(format!("GET /v1/stream?api_key={} HTTP/1.0\r\n\r\n", keys[0]).as_bytes())
        .await?;
    let mut buf = Vec::new();
    read_until(&mut sock, &mut buf, b"\n\n").await?;
    let (head, body) = split_head(&buf);
    assert!(head.starts_with("http/1.0 200 ok\r\n"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(
        text(&body).starts_with(":connected request_id="),
        "{body:?}"
    );
    drop(app);
    let mut tail = Vec::new();
    read_to_end(&mut sock, &mut tail).await?;
    assert_eq!(text(&tail), "", "nothing after the stream on HTTP/1.0");
    Ok(())
}

#[tokio::test]
async fn a_client_that_disconnects_while_idle_frees_its_stream_slot() -> TestResult {
    // One stream allowed; keep-alives every 25 s would be far too late to
    // notice the disconnect within the bound below.
    let one = NewKey {
        max_streams: 1,
        ..NewKey::new("one-stream")
    };
    let (app, keys) = app::spawn(&[one]).await;
    let mut sock = TcpStream::connect(app.addr).await?;
    // A CORS preflight first, as a browser's fetch() with a key header
    // sends it: the stream then runs on the same (reused) connection.
    sock.write_all(
        b"OPTIONS /v1/stream HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\
          Access-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: authorization\r\n\r\n",
    )
    .await?;
    let mut buf = Vec::new();
    read_until(&mut sock, &mut buf, b"\r\n\r\n").await?;
    let (head, rest) = split_head(&buf);
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(head.contains("access-control-allow-origin: "), "{head}");
    assert!(head.contains("content-length: 0"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert!(rest.is_empty(), "{rest:?}");
    sock.write_all(
        format!(
            "GET /v1/stream HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\nAuthorization: Bearer {}\r\n\r\n",
            keys[0]
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    read_until(&mut sock, &mut buf, b":connected").await?;
    assert!(
        text(&buf).starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        text(&buf)
    );
    let open = app
        .get_with("/v1/whoami", &keys[0])
        .await
        .json::<Value>()
        .await?;
    assert_eq!(open["open_streams"], 1);
    drop(sock);
    poll_until("the stream slot to be released", || async {
        let res = app.get_with("/v1/whoami", &keys[0]).await;
        let body = res.json::<Value>().await.ok()?;
        (body["open_streams"] == 0).then_some(())
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn a_refused_stream_request_keeps_the_connection_for_the_next_request() -> TestResult {
    let (app, _keys) = app::spawn(&[NewKey::new("wire")]).await;
    let mut sock = TcpStream::connect(app.addr).await?;
    // Two pipelined requests: the stream path answers the first (401, with a
    // length) and hyper the second, on the same connection.
    sock.write_all(
        b"GET /v1/stream HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await?;
    let mut buf = Vec::new();
    read_to_end(&mut sock, &mut buf).await?;
    let all = text(&buf);
    let first = all
        .find("HTTP/1.1 401 Unauthorized\r\n")
        .ok_or(all.clone())?;
    let second = all.find("HTTP/1.1 200 OK\r\n").ok_or(all.clone())?;
    assert!(first < second, "{all}");
    let (head, rest) = split_head(&buf);
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    let problem: Value = serde_json::from_slice(&rest[..content_length(&head)?])?;
    assert_eq!(problem["status"], 401);
    assert!(all.ends_with("ok\n"), "{all}");
    Ok(())
}

#[tokio::test]
async fn heads_the_stream_path_does_not_take_are_served_by_hyper() -> TestResult {
    let (app, keys) = app::spawn(&[NewKey::new("wire")]).await;

    // A head longer than the stream path reads (16 KiB) is refused by
    // hyper with the same limit: 431, whichever path reads it.
    let mut sock = TcpStream::connect(app.addr).await?;
    let pad = "a".repeat(20 * 1024);
    let _ = sock
        .write_all(
            format!(
                "GET /v1/stream HTTP/1.1\r\nHost: x\r\nX-Pad: {pad}\r\nX-API-Key: {}\r\n\r\n",
                keys[0]
            )
            .as_bytes(),
        )
        .await;
    let mut buf = Vec::new();
    read_to_end(&mut sock, &mut buf).await?;
    assert!(text(&buf).starts_with("HTTP/1.1 431 "), "{}", text(&buf));

    // A stream request with a body is served by hyper and still streams.
    let mut sock = TcpStream::connect(app.addr).await?;
    sock.write_all(
        format!(
            "GET /v1/stream HTTP/1.1\r\nHost: x\r\nX-API-Key: {}\r\nContent-Length: 1\r\n\r\nx",
            keys[0]
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    read_until(&mut sock, &mut buf, b":connected").await?;
    let (head, _) = split_head(&buf);
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");

    // A malformed head gets hyper's 400 and the connection closes.
    let mut sock = TcpStream::connect(app.addr).await?;
    sock.write_all(b"GET /v1/stream HTTP/1.1\r\nBad Header: x\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    read_to_end(&mut sock, &mut buf).await?;
    assert!(
        text(&buf).starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{}",
        text(&buf)
    );

    // A body on the stream path is hyper's too: still the same route.
    let mut sock = TcpStream::connect(app.addr).await?;
    sock.write_all(
        format!(
            "GET /v1/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-API-Key: {}\r\n\r\nhi",
            keys[0]
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    read_until(&mut sock, &mut buf, b":connected").await?;
    assert!(
        text(&buf).starts_with("HTTP/1.1 200 OK\r\n"),
        "{}",
        text(&buf)
    );
    Ok(())
}

#[tokio::test]
async fn keep_alive_requests_head_and_pipelining_are_answered_in_order() -> TestResult {
    let (app, keys) = app::spawn(&[NewKey::new("wire")]).await;
    let mut sock = TcpStream::connect(app.addr).await?;
    let key = &keys[0];
    sock.write_all(
        format!(
            "GET /v1/events?limit=5 HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n\r\n\
             HEAD /v1/events?limit=5 HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n\r\n\
             GET /v1/whoami HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    read_to_end(&mut sock, &mut buf).await?;

    // 1: GET, length-framed JSON.
    let (head1, rest) = split_head(&buf);
    assert!(head1.starts_with("http/1.1 200 ok\r\n"), "{head1}");
    let len = content_length(&head1)?;
    let page: Value = serde_json::from_slice(&rest[..len])?;
    assert!(page["events"].is_array(), "{page}");
    // 2: HEAD, the same length and no body.
    let (head2, rest) = split_head(&rest[len..]);
    assert!(head2.starts_with("http/1.1 200 ok\r\n"), "{head2}");
    assert_eq!(content_length(&head2)?, len, "{head2}");
    // 3: the last request asked to close.
    let (head3, rest) = split_head(&rest);
    assert!(head3.starts_with("http/1.1 200 ok\r\n"), "{head3}");
    assert!(head3.contains("connection: close"), "{head3}");
    let who: Value = serde_json::from_slice(&rest[..content_length(&head3)?])?;
    assert_eq!(who["name"], "wire");
    Ok(())
}

#[tokio::test]
async fn a_request_with_a_body_is_answered_by_hyper_with_a_problem() -> TestResult {
    let (app, _keys) = app::spawn(&[NewKey::new("wire")]).await;
    let mut sock = TcpStream::connect(app.addr).await?;
    sock.write_all(
        b"POST /v1/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    )
    .await?;
    let mut buf = Vec::new();
    read_to_end(&mut sock, &mut buf).await?;
    let (head, rest) = split_head(&buf);
    assert!(
        head.starts_with("http/1.1 405 method not allowed\r\n"),
        "{head}"
    );
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    let problem: Value = serde_json::from_slice(&rest[..content_length(&head)?])?;
    assert_eq!(problem["status"], 405);
    Ok(())
}

fn content_length(head: &str) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    Ok(head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .ok_or_else(|| format!("no content-length in {head}"))?
        .trim()
        .parse()?)
}
