//! HTTP fetching in one place: conditional GET, decompression, a body cap
//! counted after decompression, redirects (followed here, hop by hop),
//! connect + total timeouts, 429/503 Retry-After, per-domain politeness and
//! the SSRF guard.
//!
//! Everything HTTP-specific that a source kind should never have to know
//! lives here (STYLE practice 4); `politeness` holds the per-domain waits,
//! `fetch::ssrf` the address guard, `fetch::redirect` the hop-by-hop
//! redirect loop with its per-hop header rules and `fetch::br` the brotli
//! decoder (gzip and deflate are decoded by the HTTP client; brotli is
//! decoded here, so that a window larger than the cap is refused first).

mod br;
mod headers;
mod post;
mod redirect;
mod ssrf;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderName, CONTENT_ENCODING, CONTENT_TYPE, ETAG, LAST_MODIFIED};
use reqwest::{Client, Response, StatusCode};
use url::Url;

use self::br::{BrotliBody, BrotliError};
pub use self::headers::{parse_http_date, MAX_HEADER_WAIT};
pub use self::post::{Posted, POST_RESPONSE_CAP};
pub use self::ssrf::classify_ip;
use self::ssrf::{Guard, GuardedResolver, Lookup, LookupFailed, Refused, SystemLookup, UrlRefused};
use crate::config::FetchConfig;
use crate::politeness::Politeness;
pub use crate::redact::{redact_url, redact_url_text, redact_urls_in, REDACTED};

/// `Accept` sent when the request names none: feeds first, then HTML.
pub const DEFAULT_ACCEPT: &str =
    "application/atom+xml, application/rss+xml, application/feed+json, \
     application/json;q=0.9, application/xml;q=0.9, text/xml;q=0.9, text/html;q=0.8, */*;q=0.5";

/// `Accept-Encoding` of a fetch, whose body `read_capped` reads: the
/// client decodes gzip and deflate, `read_capped` brotli. Streams and POSTs
/// send the client's own (gzip and deflate).
const ACCEPT_ENCODING_WITH_BR: &str = "gzip, deflate, br";

/// Brotli is offered only under a cap of at least this: the window most
/// encoders use by default (lgwin 22: the reference library, Node, Python,
/// Go's and Rust's encoders). Under a smaller cap such streams would be
/// refused for their window, so the upstream is asked for gzip instead.
const COMMON_BROTLI_WINDOW: u64 = 4 << 20;

/// What to fetch.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// Target (http/https only).
    pub url: Url,
    /// `If-None-Match` value from the last 200.
    pub etag: Option<String>,
    /// `If-Modified-Since` value from the last 200.
    pub last_modified: Option<String>,
    /// Per-source User-Agent override.
    pub user_agent: Option<String>,
    /// Extra headers from the source config. Sent to the configured URL's
    /// origin only: a redirect to another scheme, host or port drops them
    /// for the rest of the chain.
    pub headers: BTreeMap<String, String>,
    /// `Accept` header to send.
    pub accept: Option<&'static str>,
    /// For upstream SSE streams: the `Last-Event-ID` to resume from.
    pub last_event_id: Option<String>,
}

impl FetchRequest {
    /// A plain GET of `url`.
    pub fn get(url: Url) -> Self {
        Self {
            url,
            etag: None,
            last_modified: None,
            user_agent: None,
            headers: BTreeMap::new(),
            accept: None,
            last_event_id: None,
        }
    }
}

/// Caching hints from the response: the next poll should not be sooner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheHints {
    /// From `Cache-Control: max-age` (or `s-maxage`) or `Expires`, capped.
    pub not_before: Option<Duration>,
}

/// A 200 response, fully read.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// URL after redirects (base for relative links).
    pub final_url: Url,
    /// `Content-Type`, if sent.
    pub content_type: Option<String>,
    /// `ETag`, if sent.
    pub etag: Option<String>,
    /// `Last-Modified`, if sent.
    pub last_modified: Option<String>,
    /// The decompressed body (at most `max_body` bytes).
    pub body: Bytes,
    /// Caching hints.
    pub hints: CacheHints,
    /// When the response arrived.
    pub fetched_at: DateTime<Utc>,
}

/// The outcome of a successful fetch.
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per network round trip; boxing would change the shared contract for no gain"
)]
pub enum FetchResponse {
    /// 304: nothing changed; costs nothing downstream.
    NotModified {
        /// Caching hints of the 304.
        hints: CacheHints,
    },
    /// 200 with a body.
    Body(Fetched),
}

/// Why a fetch failed. Messages are what `sources list` shows.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL resolves to an address the SSRF guard refuses.
    #[error(
        "refused to connect to {addr}: {why} (set fetch.allow_private_networks = true to allow)"
    )]
    Blocked {
        /// The address or host refused.
        addr: String,
        /// Which class it is in (loopback, private, …).
        why: &'static str,
    },
    /// Not http/https, or otherwise unusable.
    #[error("unsupported URL {0}")]
    BadUrl(String),
    /// DNS lookup failed.
    #[error("cannot resolve {host}: {reason}")]
    Dns {
        /// The host.
        host: String,
        /// The resolver's message.
        reason: String,
    },
    /// Could not connect.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The whole request took longer than `fetch.timeout`.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Non-success status.
    #[error("HTTP {status}{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    Status {
        /// The status code.
        status: u16,
        /// `Retry-After` of a 429/503, if sent.
        retry_after: Option<Duration>,
    },
    /// The (decompressed) body exceeded `fetch.max_body`.
    #[error("response body larger than the {limit}-byte limit (fetch.max_body)")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// A brotli body whose window (the history its decoder must keep) is
    /// larger than `fetch.max_body`: refused from its header, before any
    /// of it is decoded.
    #[error("{}", BrotliError::WindowOverCap { window: *window, limit: *limit })]
    BrotliWindow {
        /// The window in bytes.
        window: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// The body cannot be decoded as its `Content-Encoding` says.
    #[error("cannot decode the response body: {0}")]
    Decode(String),
    /// More redirects than allowed.
    #[error("too many redirects (more than {0})")]
    TooManyRedirects(usize),
    /// Any other transport or body error.
    #[error("{0}")]
    Other(String),
}

impl FetchError {
    /// The upstream's requested wait, for 429/503.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The shared HTTP client. Cheap to clone (one connection pool, one
/// politeness table for all clones).
#[derive(Debug, Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: FetchConfig,
    /// Checks IP-literal hosts; the resolver and redirect policy hold copies.
    guard: Guard,
    /// No reqwest-level total timeout: `fetch` wraps the whole exchange
    /// (headers and body) in `tokio::time::timeout`, and `open_stream`
    /// must not have one, so a single client serves both.
    client: Client,
    politeness: Politeness,
}

impl Fetcher {
    /// Builds the client (custom resolver with the SSRF guard, redirect policy, timeouts).
    pub fn new(cfg: &FetchConfig) -> Result<Self, FetchError> {
        Self::with_guard(
            cfg,
            Arc::new(SystemLookup),
            Guard::new(cfg.allow_private_networks),
        )
    }

    /// As `new`, resolving host names with `lookup` and guarding with `guard`
    /// (unit tests simulate DNS and exempt their local server).
    fn with_guard(
        cfg: &FetchConfig,
        lookup: Arc<dyn Lookup>,
        guard: Guard,
    ) -> Result<Self, FetchError> {
        let mut builder = Client::builder()
            .connect_timeout(cfg.connect_timeout)
            // Redirects are followed by `send`, which decides per hop which
            // headers go along (reqwest would forward custom headers to any
            // host, and a Referer carrying the configured URL).
            .redirect(reqwest::redirect::Policy::none());
        builder = match &cfg.proxy {
            // Environment proxies are ignored: one would resolve and connect
            // for us, silently bypassing the guard.
            None => builder
                .dns_resolver(Arc::new(GuardedResolver::new(lookup, guard)))
                .no_proxy(),
            // An explicit proxy resolves upstream names itself; the guard
            // still refuses IP-literal targets and bad schemes (also on
            // redirects), but which hosts the proxy reaches is its policy.
            // Our resolver is not installed: it would only see the proxy's
            // own (often private) address.
            Some(proxy) => {
                let p = reqwest::Proxy::all(proxy.as_str()).map_err(|e| {
                    FetchError::BadUrl(format!(
                        "fetch.proxy {}: {}",
                        redact_url(proxy),
                        error_chain(&e.without_url())
                    ))
                })?;
                builder.proxy(p)
            }
        };
        // Brotli is not the client's: `read_capped` decodes it (see `br`).
        let client = builder
            .gzip(true)
            .deflate(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(60))
            .build()
            .map_err(|e| {
                FetchError::Other(format!(
                    "cannot build the http client: {}",
                    error_chain(&e.without_url())
                ))
            })?;
        let politeness = Politeness::new(cfg.per_host_rps, cfg.per_host_concurrency);
        Ok(Self {
            inner: Arc::new(Inner {
                cfg: cfg.clone(),
                guard,
                client,
                politeness,
            }),
        })
    }

    /// One GET, with politeness (waits for the domain's rate/concurrency/Retry-After).
    ///
    /// The politeness wait is not part of `fetch.timeout`; the exchange
    /// (connect, redirects, headers, whole body) is. Dropping the future
    /// cancels the wait or the request.
    pub async fn fetch(&self, req: &FetchRequest) -> Result<FetchResponse, FetchError> {
        let host = self.checked_host(&req.url)?;
        let _permit = self.inner.politeness.acquire(host).await;
        let limit = self.inner.cfg.timeout;
        match tokio::time::timeout(limit, self.exchange(req)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(FetchError::Timeout(limit)),
        }
    }

    /// Opens a long-lived streaming GET (ndjson / SSE upstreams): status checked,
    /// SSRF guard applied, connect timeout but no total timeout; the caller
    /// reads `bytes_stream()` and enforces its own idle timeout.
    ///
    /// The connection is paced by the domain's rate limit and Retry-After
    /// like any fetch, but does not hold a concurrency slot for its lifetime.
    /// Only the wait for the response headers is bounded (by `fetch.timeout`).
    pub async fn open_stream(&self, req: &FetchRequest) -> Result<reqwest::Response, FetchError> {
        let host = self.checked_host(&req.url)?;
        drop(self.inner.politeness.acquire(host).await);
        let limit = self.inner.cfg.timeout;
        let resp = match tokio::time::timeout(limit, self.send(req, None)).await {
            Ok(resp) => resp?,
            Err(_elapsed) => return Err(FetchError::Timeout(limit)),
        };
        if !resp.status().is_success() {
            return Err(self.status_error(&req.url, &resp));
        }
        // Streams are offered gzip and deflate only (the client decodes
        // those); a brotli stream was not asked for and would read as junk.
        if is_brotli(resp.headers()) {
            return Err(FetchError::Decode(
                "the upstream sent a brotli-encoded stream, which was not asked for \
                 (streams accept gzip and deflate)"
                    .to_owned(),
            ));
        }
        Ok(resp)
    }

    /// The per-domain politeness state (e.g. to see a pending Retry-After).
    pub fn politeness(&self) -> &Politeness {
        &self.inner.politeness
    }

    /// The configuration the fetcher was built with.
    pub fn config(&self) -> &FetchConfig {
        &self.inner.cfg
    }

    /// Scheme and IP-literal checks before anything else; the host to pace on.
    fn checked_host<'u>(&self, url: &'u Url) -> Result<&'u str, FetchError> {
        ssrf::check_url(url, &self.inner.guard).map_err(FetchError::from)?;
        url.host_str()
            .ok_or_else(|| FetchError::BadUrl(format!("{} (no host)", redact_url(url))))
    }

    /// Request, status handling and capped body read: everything the total
    /// timeout covers.
    async fn exchange(&self, req: &FetchRequest) -> Result<FetchResponse, FetchError> {
        let offer_br = self.inner.cfg.max_body >= COMMON_BROTLI_WINDOW;
        let mut resp = self
            .send(req, offer_br.then_some(ACCEPT_ENCODING_WITH_BR))
            .await?;
        let hints = CacheHints {
            not_before: headers::freshness(resp.headers(), Utc::now()),
        };
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(FetchResponse::NotModified { hints });
        }
        if !resp.status().is_success() {
            return Err(self.status_error(&req.url, &resp));
        }
        let fetched_at = Utc::now();
        let header = |name: HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (content_type, etag, last_modified) =
            (header(CONTENT_TYPE), header(ETAG), header(LAST_MODIFIED));
        let final_url = resp.url().clone();
        let body = read_capped(&mut resp, self.inner.cfg.max_body).await?;
        Ok(FetchResponse::Body(Fetched {
            final_url,
            content_type,
            etag,
            last_modified,
            body,
            hints,
            fetched_at,
        }))
    }

    /// A non-success status as an error; a 429/503 `Retry-After` is also
    /// recorded on the politeness state of the requested and the final domain.
    fn status_error(&self, requested: &Url, resp: &Response) -> FetchError {
        let status = resp.status();
        let retry_after = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        )
        .then(|| headers::retry_after(resp.headers(), Utc::now()))
        .flatten();
        if let Some(wait) = retry_after {
            for host in [requested.host_str(), resp.url().host_str()]
                .into_iter()
                .flatten()
            {
                self.inner.politeness.defer(host, wait);
            }
        }
        FetchError::Status {
            status: status.as_u16(),
            retry_after,
        }
    }

    /// Turns a reqwest error into the most specific `FetchError`. The URL is
    /// shown redacted (source URLs carry credentials), and reqwest's own copy
    /// of it is dropped from the error before its text is used.
    fn map_error(&self, e: reqwest::Error, url: &Url) -> FetchError {
        let e = e.without_url();
        let e = &e;
        // Our own refusals travel inside reqwest's error chain.
        let mut source: Option<&(dyn StdError + 'static)> = Some(e);
        while let Some(err) = source {
            if let Some(r) = err.downcast_ref::<Refused>() {
                return FetchError::Blocked {
                    addr: r.addr.clone(),
                    why: r.why,
                };
            }
            if let Some(l) = err.downcast_ref::<LookupFailed>() {
                return FetchError::Dns {
                    host: l.host.clone(),
                    reason: l.reason.clone(),
                };
            }
            source = err.source();
        }
        let target = match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            _ => redact_url(url),
        };
        let detail = error_chain(e);
        if e.is_connect() {
            return FetchError::Connect(if e.is_timeout() {
                format!(
                    "timed out connecting to {target} after {:?} (fetch.connect_timeout)",
                    self.inner.cfg.connect_timeout
                )
            } else if has_io_kind(e, io::ErrorKind::ConnectionRefused) {
                format!("connection refused by {target}")
            } else if url.scheme() == "https" && looks_like_tls(e, &detail) {
                format!("tls handshake with {target} failed: {detail}")
            } else {
                format!("{target}: {detail}")
            });
        }
        if e.is_builder() {
            return FetchError::BadUrl(format!("{} ({detail})", redact_url(url)));
        }
        FetchError::Other(format!("request to {} failed: {detail}", redact_url(url)))
    }
}

impl From<BrotliError> for FetchError {
    fn from(e: BrotliError) -> Self {
        match e {
            BrotliError::WindowOverCap { window, limit } => Self::BrotliWindow { window, limit },
            other => Self::Decode(other.to_string()),
        }
    }
}

impl From<UrlRefused> for FetchError {
    fn from(e: UrlRefused) -> Self {
        match e {
            UrlRefused::BadUrl(url) => Self::BadUrl(url),
            UrlRefused::Blocked(Refused { addr, why }) => Self::Blocked { addr, why },
        }
    }
}

/// Reads the body, decoded, failing as soon as it exceeds `limit`: at most
/// `limit` bytes plus one chunk are ever held, whatever the compression
/// ratio. gzip and deflate arrive decoded by the client; a brotli body is
/// decoded here, after its window was checked against `limit` (see `br`),
/// so a brotli body cut off at the cap holds at most the cap twice.
async fn read_capped(resp: &mut Response, limit: u64) -> Result<Bytes, FetchError> {
    let mut body = CappedBody::new(limit);
    if is_brotli(resp.headers()) {
        // Content-Length is the compressed size: only the decoded one counts.
        let mut decoder = BrotliBody::new(limit);
        while let Some(chunk) = next_chunk(resp).await? {
            decoder.push(chunk)?;
            while let Some(piece) = decoder.next()? {
                body.push(piece)?;
                // A small chunk may decode to megabytes: let other tasks
                // run between pieces.
                tokio::task::yield_now().await;
            }
            if decoder.is_done() {
                // Whatever follows the stream's end is not read.
                break;
            }
        }
        decoder.finish()?;
        return Ok(body.into_bytes());
    }
    if resp.content_length().is_some_and(|len| len > limit) {
        return Err(FetchError::TooLarge { limit });
    }
    while let Some(chunk) = next_chunk(resp).await? {
        body.push(chunk)?;
    }
    Ok(body.into_bytes())
}

/// Whether the response's body is brotli-encoded (`Content-Encoding: br`).
fn is_brotli(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("br"))
}

/// The next chunk of the body as the client hands it over (gzip and deflate
/// decoded), `None` at its end.
async fn next_chunk(resp: &mut Response) -> Result<Option<Bytes>, FetchError> {
    resp.chunk().await.map_err(|e| {
        let e = e.without_url();
        if e.is_decode() {
            FetchError::Decode(error_chain(&e))
        } else {
            FetchError::Other(format!(
                "error reading the response body: {}",
                error_chain(&e)
            ))
        }
    })
}

/// A body being read, counted against the cap. Chunks are kept as they
/// arrive and joined once at the end (a body that grew by reallocation
/// would hold its old and new buffers at once, and the allocator keeps
/// freed ones for a while: a body cut off at the cap would then cost about
/// twice the cap).
#[derive(Debug)]
struct CappedBody {
    limit: u64,
    chunks: Vec<Bytes>,
    len: u64,
}

impl CappedBody {
    fn new(limit: u64) -> Self {
        Self {
            limit,
            chunks: Vec::new(),
            len: 0,
        }
    }

    /// Adds a chunk; `TooLarge` once the body is over the cap.
    fn push(&mut self, chunk: Bytes) -> Result<(), FetchError> {
        self.len += chunk.len() as u64;
        if self.len > self.limit {
            return Err(FetchError::TooLarge { limit: self.limit });
        }
        if !chunk.is_empty() {
            self.chunks.push(chunk);
        }
        Ok(())
    }

    fn into_bytes(mut self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.pop().unwrap_or_default(),
            _ => {
                let mut body = BytesMut::with_capacity(usize::try_from(self.len).unwrap_or(0));
                for c in self.chunks.drain(..) {
                    body.extend_from_slice(&c);
                }
                body.freeze()
            }
        }
    }
}

/// "outer: inner: innermost", skipping links that repeat their predecessor.
fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(err) = source {
        let text = err.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        source = err.source();
    }
    parts.join(": ")
}

fn has_io_kind(e: &(dyn StdError + 'static), kind: io::ErrorKind) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = source {
        if err
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == kind)
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// rustls surfaces through reqwest as `io::ErrorKind::InvalidData` or a
/// message about certificates; reqwest exposes no typed TLS error.
fn looks_like_tls(e: &(dyn StdError + 'static), detail: &str) -> bool {
    let detail = detail.to_ascii_lowercase();
    has_io_kind(e, io::ErrorKind::InvalidData)
        || ["certificate", "tls", "handshake", "corrupt message", "peer"]
            .iter()
            .any(|w| detail.contains(w))
}
