//! `request_head`: the edge's own HTTP/1 request-head parser, as the
//! connection loop calls it on a read buffer that grows read by read.

use axum::http::{header, Version};
use livestrom_edge::server::head::{parse_head, Parsed};

/// Input: a byte `n`, `n % 32` bytes of chunking seed, then the bytes a
/// client sends. Checks:
/// - the verdict the connection loop reaches (the first one that is not
///   `Partial` as the buffer grows chunk by chunk) is the verdict on all the
///   bytes at once — how the client's packets fall never changes what is
///   served, or whether hyper gets it;
/// - a served head is the same parsed from exactly its own bytes, with any
///   bytes after it (a pipelined request) ignored;
/// - a served head never announces a body, is HTTP/1.0 or 1.1, and keeps
///   the connection open exactly as its version and `Connection` say.
pub fn check(data: &[u8]) {
    let ([n], rest) = crate::split_control::<1>(data);
    let n = usize::from(n % 32).min(rest.len());
    let (seed, bytes) = rest.split_at(n);

    let whole = parse_head(bytes);
    let mut grown = 0;
    let mut reached = Parsed::Partial;
    for chunk in crate::chunks(bytes, seed) {
        grown += chunk.len();
        if grown == 0 {
            continue; // the loop parses only a buffer that holds something
        }
        reached = parse_head(&bytes[..grown]);
        if reached != Parsed::Partial {
            break;
        }
    }
    if !bytes.is_empty() {
        assert_eq!(
            reached, whole,
            "the verdict depends on how the bytes arrived"
        );
    }

    let Parsed::Request(head) = whole else {
        return;
    };
    assert!(
        head.len <= bytes.len(),
        "head of {} bytes in a {}-byte buffer",
        head.len,
        bytes.len()
    );
    match parse_head(&bytes[..head.len]) {
        Parsed::Request(own) => assert_eq!(own, head, "the head parses differently alone"),
        other => panic!("the head alone is {other:?}, with what follows it {head:?}"),
    }
    assert!(
        !head.headers.contains_key(header::TRANSFER_ENCODING)
            && !head.headers.contains_key(header::EXPECT)
            && !head.headers.contains_key(header::UPGRADE)
            && head
                .headers
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .all(|v| v == "0"),
        "a served head announces a body: {head:?}"
    );
    let tokens: Vec<String> = head
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
        })
        .collect();
    let close = tokens.iter().any(|t| t == "close");
    let keep = tokens.iter().any(|t| t == "keep-alive");
    let expected = match head.version {
        Version::HTTP_10 => keep && !close,
        Version::HTTP_11 => !close,
        other => panic!("a served head of version {other:?}"),
    };
    assert_eq!(head.keep_alive, expected, "keep-alive of {head:?}");
}
