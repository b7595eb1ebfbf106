//! Redirects followed hop by hop: each hop's headers (the source's
//! configured headers only while the chain stays at the configured URL's
//! origin), the SSRF check of each target and the `fetch.max_redirects` count.

use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, ACCEPT_ENCODING, IF_MODIFIED_SINCE, IF_NONE_MATCH,
    LOCATION, USER_AGENT,
};
use reqwest::{Response, StatusCode};
use url::Url;

use super::{redact_url, redact_url_text, ssrf, FetchError, FetchRequest, Fetcher, DEFAULT_ACCEPT};
use crate::config::FetchConfig;

impl Fetcher {
    /// Builds the headers and sends, following redirects; returns once the
    /// final response's headers arrive. `accept_encoding`, when given, is
    /// sent instead of the client's own (which names only the encodings the
    /// client decodes itself).
    ///
    /// Each hop is checked by the SSRF guard (IP literals here, host names by
    /// the resolver when it connects) and counted against
    /// `fetch.max_redirects`. The source's configured headers are sent while
    /// the chain stays at the configured URL's origin (scheme, host and
    /// port); after a hop elsewhere, including an https → http downgrade on
    /// the same host, they are dropped for the rest of the chain.
    pub(super) async fn send(
        &self,
        req: &FetchRequest,
        accept_encoding: Option<&'static str>,
    ) -> Result<Response, FetchError> {
        let configured = configured_headers(req)?;
        let mut url = req.url.clone();
        let mut forward = true;
        let mut hops = 0;
        loop {
            let mut headers =
                request_headers(req, &self.inner.cfg, forward.then_some(&configured))?;
            if let Some(encodings) = accept_encoding {
                headers.insert(ACCEPT_ENCODING, HeaderValue::from_static(encodings));
            }
            let resp = self
                .inner
                .client
                .get(url.clone())
                .headers(headers)
                .send()
                .await
                .map_err(|e| self.map_error(e, &url))?;
            let Some(next) = redirect_target(&resp, &url)? else {
                return Ok(resp);
            };
            if hops >= self.inner.cfg.max_redirects {
                return Err(FetchError::TooManyRedirects(self.inner.cfg.max_redirects));
            }
            hops += 1;
            ssrf::check_url(&next, &self.inner.guard)?;
            if forward && !same_origin(&req.url, &next) {
                forward = false;
                if !configured.is_empty() {
                    tracing::debug!(
                        from = %redact_url(&req.url),
                        to = %redact_url(&next),
                        "redirect to another origin: configured headers are not sent there"
                    );
                }
            }
            url = next;
        }
    }
}

/// The source's configured headers, parsed (bad names and values are errors).
fn configured_headers(req: &FetchRequest) -> Result<HeaderMap, FetchError> {
    let mut headers = HeaderMap::new();
    for (name, value) in &req.headers {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| FetchError::Other(format!("invalid header name {name:?}: {e}")))?;
        headers.insert(parsed, header_value(name, value)?);
    }
    Ok(headers)
}

/// The headers of one hop: User-Agent and Accept, then the configured
/// headers (they may override those two) when `configured` is given, then
/// the validators and the SSE resume id.
fn request_headers(
    req: &FetchRequest,
    cfg: &FetchConfig,
    configured: Option<&HeaderMap>,
) -> Result<HeaderMap, FetchError> {
    let mut headers = HeaderMap::new();
    let ua = req.user_agent.as_deref().unwrap_or(&cfg.user_agent);
    headers.insert(USER_AGENT, header_value("User-Agent", ua)?);
    headers.insert(
        ACCEPT,
        header_value("Accept", req.accept.unwrap_or(DEFAULT_ACCEPT))?,
    );
    for (name, value) in configured.into_iter().flatten() {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(etag) = &req.etag {
        headers.insert(IF_NONE_MATCH, header_value("If-None-Match", etag)?);
    }
    if let Some(last_modified) = &req.last_modified {
        headers.insert(
            IF_MODIFIED_SINCE,
            header_value("If-Modified-Since", last_modified)?,
        );
    }
    if let Some(id) = &req.last_event_id {
        headers.insert(
            HeaderName::from_static("last-event-id"),
            header_value("Last-Event-ID", id)?,
        );
    }
    Ok(headers)
}

/// Where a redirect response points, if it is one to follow (301, 302, 303,
/// 307, 308 with a `Location`; a fetch is always a GET, so all five are
/// followed alike). Anything else, a 304 included, is the answer itself.
fn redirect_target(resp: &Response, from: &Url) -> Result<Option<Url>, FetchError> {
    if !matches!(
        resp.status(),
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    ) {
        return Ok(None);
    }
    let Some(location) = resp.headers().get(LOCATION) else {
        return Ok(None);
    };
    let unusable =
        |why: String| FetchError::BadUrl(format!("{why} (redirect from {})", redact_url(from)));
    let location = location
        .to_str()
        .map_err(|_| unusable("a Location header that is not text".to_owned()))?;
    let next = from
        .join(location)
        .map_err(|e| unusable(format!("`{}` is not a URL: {e}", redact_url_text(location))))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(unusable(format!(
            "{}: only http and https are followed",
            redact_url(&next)
        )));
    }
    Ok(Some(next))
}

/// Same scheme, host and port: where configured headers may go. An
/// https → http downgrade on the same host is another origin.
pub(super) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host() == b.host()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The value is not repeated in the error: configured headers often hold
/// credentials.
fn header_value(name: &str, value: &str) -> Result<HeaderValue, FetchError> {
    HeaderValue::from_str(value).map_err(|_| {
        FetchError::Other(format!(
            "invalid value for header {name} (not a valid HTTP header value)"
        ))
    })
}
