//! Request ids and the access log: one line per request with the URI's
//! `api_key=` (and anything that looks like a key) redacted, and the
//! authenticated key's *name* instead of the key.
//!
//! The request id comes from a sane incoming `X-Request-Id` (so a proxy's id
//! carries through) or is minted here; handlers get it with the [`RequestId`]
//! extractor (the stream sends it in its `:connected` comment) and clients see
//! it in the `X-Request-Id` response header.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;
use livestrom_engine::keys::KEY_PREFIX;

use crate::auth::{KeyNote, QUERY_PARAM};
use crate::metrics::{EdgeMetrics, ROUTES};

/// The request id header (request and response).
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// What replaces a redacted value.
pub const REDACTED: &str = "REDACTED";

/// The request's id.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(new_id().into())))
    }
}

/// Middleware: assigns the request id, logs one access line per response
/// and counts refusals by route.
pub async fn middleware(
    State(metrics): State<EdgeMetrics>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id: Arc<str> = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| is_sane_id(s))
        .map_or_else(|| new_id().into(), Into::into);
    let note = KeyNote::default();
    req.extensions_mut().insert(RequestId(id.clone()));
    req.extensions_mut().insert(note.clone());
    let method = req.method().clone();
    let uri = redact_uri(req.uri());
    // A fixed set of route labels: a scanner's paths must not make series.
    let route = ROUTES
        .iter()
        .find(|r| **r == req.uri().path())
        .copied()
        .unwrap_or("other");
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip());

    let mut res = next.run(req).await;

    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let status = res.status().as_u16();
    metrics.response(route, status);
    let key = note.name().unwrap_or("-");
    let peer = peer.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if res.status().is_server_error() {
        tracing::error!(target: "livestrom::access", request_id = %id, %method, uri = %uri, status, key, peer = %peer, ms, "request failed");
    } else {
        tracing::info!(target: "livestrom::access", request_id = %id, %method, uri = %uri, status, key, peer = %peer, ms, "request");
    }
    res
}

/// The URI as it may be logged: the value of every `api_key` parameter
/// (however its name is percent-encoded), every parameter value and every
/// path segment that contains a key prefix `lstr_`, are replaced by
/// `REDACTED`. Everything else is kept byte for byte.
pub fn redact_uri(uri: &Uri) -> String {
    let path = uri.path();
    let mut out = String::with_capacity(path.len() + uri.query().map_or(0, str::len) + 1);
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if looks_like_key(seg) { REDACTED } else { seg });
    }
    if let Some(q) = uri.query() {
        out.push('?');
        out.push_str(&redact_query(q));
    }
    out
}

/// Redacts a raw query string (see [`redact_uri`]).
pub fn redact_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (name, value) = match pair.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (pair, None),
        };
        let secret = decode(name).trim() == QUERY_PARAM
            || looks_like_key(name)
            || value.is_some_and(looks_like_key);
        match value {
            Some(_) if secret => {
                if looks_like_key(name) {
                    out.push_str(REDACTED);
                } else {
                    out.push_str(name);
                }
                out.push('=');
                out.push_str(REDACTED);
            }
            Some(v) => {
                out.push_str(name);
                out.push('=');
                out.push_str(v);
            }
            None if looks_like_key(name) => out.push_str(REDACTED),
            None => out.push_str(name),
        }
    }
    out
}

/// Whether a raw (possibly percent-encoded) URI component contains a key prefix.
fn looks_like_key(raw: &str) -> bool {
    decode(raw).to_ascii_lowercase().contains(KEY_PREFIX)
}

/// Form-decodes one component (`+` is a space, `%xx` bytes, lossy UTF-8).
fn decode(raw: &str) -> String {
    url::form_urlencoded::parse(format!("x={raw}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn is_sane_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        redact_uri(&s.parse::<Uri>().expect("uri"))
    }

    #[test]
    fn api_key_parameter_is_redacted_everywhere_it_can_hide() {
        let key = livestrom_engine::keys::generate();
        assert_eq!(
            r(&format!("/v1/stream?api_key={key}")),
            "/v1/stream?api_key=REDACTED"
        );
        assert_eq!(
            r(&format!("/v1/stream?source=a.*&api_key={key}&tag=x")),
            "/v1/stream?source=a.*&api_key=REDACTED&tag=x"
        );
        // Percent-encoded name and value, repeated parameter, empty value.
        assert_eq!(r(&format!("/s?api%5Fkey={key}")), "/s?api%5Fkey=REDACTED");
        assert_eq!(
            r("/s?api_key=lstr%5Fsecret&api_key=x"),
            "/s?api_key=REDACTED&api_key=REDACTED"
        );
        assert_eq!(r("/s?api_key="), "/s?api_key=REDACTED");
        // A key under another parameter name, in the path, or as a bare parameter.
        assert_eq!(r(&format!("/s?key={key}")), "/s?key=REDACTED");
        assert_eq!(r(&format!("/v1/{key}/x")), "/v1/REDACTED/x");
        assert_eq!(r(&format!("/s?{key}")), "/s?REDACTED");
        assert_eq!(r(&format!("/s?{key}=1")), "/s?REDACTED=REDACTED");
        assert_eq!(r(&format!("/s?x=LSTR_{}", &key[5..])), "/s?x=REDACTED");
        for line in [
            r(&format!("/s?api_key={key}")),
            r(&format!("/s?k={key}")),
            r(&format!("/{key}")),
        ] {
            assert!(!line.contains(&key[5..]), "{line}");
        }
    }

    #[test]
    fn other_uris_are_untouched() {
        for u in [
            "/",
            "/v1/stream",
            "/v1/stream?source=kommun.*&tag=a&keyword=b%20c",
            "/x?a&b=&=c",
            "/x?since=018f9c2e",
        ] {
            assert_eq!(r(u), u);
        }
    }

    #[test]
    fn incoming_request_ids_are_checked() {
        assert!(is_sane_id("abc-123_x.y:z"));
        assert!(!is_sane_id(""));
        assert!(!is_sane_id("a b"));
        assert!(!is_sane_id(&"a".repeat(129)));
        assert_eq!(new_id().len(), 32);
    }
}
