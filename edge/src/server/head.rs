//! The request-head parser of the edge's own HTTP/1 loop: which heads it
//! serves itself (bodiless requests on HTTP/1.0 and 1.1) and which go to
//! hyper. Pure: bytes in, a verdict out; public so the fuzz target and the
//! corpus tests can reach it.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};

use super::MAX_HEADERS;

/// A parsed request head the connection loop serves.
#[derive(Debug, PartialEq)]
pub struct Head {
    /// Bytes of the head (including the blank line).
    pub len: usize,
    /// The request method (never `CONNECT`).
    pub method: Method,
    /// The request target.
    pub uri: Uri,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Every header, in order (none that announces a body).
    pub headers: HeaderMap,
    /// The client allows the connection to stay open after the response.
    pub keep_alive: bool,
}

/// What the bytes read so far amount to.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// Not a whole head yet: read more.
    Partial,
    /// For hyper (including malformed heads: hyper produces the error).
    Other,
    /// A request without a body, served by the connection loop.
    Request(Box<Head>),
}

/// Parses the request head at the start of `bytes` (the connection's read
/// buffer; bytes past the head are the next request). Pure, and the same
/// whatever the buffer's length as long as it holds the whole head.
pub fn parse_head(bytes: &[u8]) -> Parsed {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let method = match req.method.map(|m| Method::from_bytes(m.as_bytes())) {
        Some(Ok(m)) if m != Method::CONNECT => m,
        _ => return Parsed::Other,
    };
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Parsed::Other,
    };
    let Some(uri) = req.path.and_then(|p| p.parse::<Uri>().ok()) else {
        return Parsed::Other;
    };
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    let mut close = false;
    let mut keep_alive_token = false;
    for h in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else {
            return Parsed::Other;
        };
        let Ok(value) = HeaderValue::from_bytes(h.value) else {
            return Parsed::Other;
        };
        if name == header::TRANSFER_ENCODING
            || name == header::EXPECT
            || name == header::UPGRADE
            || (name == header::CONTENT_LENGTH && value.as_bytes() != b"0")
        {
            return Parsed::Other;
        }
        if name == header::CONNECTION {
            for token in value.as_bytes().split(|b| *b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        headers.append(name, value);
    }
    let keep_alive = match version {
        Version::HTTP_10 => keep_alive_token && !close,
        _ => !close,
    };
    Parsed::Request(Box::new(Head {
        len,
        method,
        uri,
        version,
        headers,
        keep_alive,
    }))
}
