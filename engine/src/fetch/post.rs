//! POSTs for webhook deliveries, on the fetcher's guarded client: the SSRF
//! guard at connect (and on IP-literal URLs before it), no redirects (a
//! 3xx is returned as it is), a total timeout and a cap on how much of the
//! response body is read. No politeness: a receiver asked to be called.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use reqwest::header::{HeaderMap, USER_AGENT};
use reqwest::StatusCode;
use url::Url;

use super::{headers, FetchError, Fetcher};

/// At most this much of a response body is read (the rest is dropped with
/// the connection): enough for an error message, bounded whatever a
/// receiver sends.
pub const POST_RESPONSE_CAP: usize = 16 * 1024;

/// A receiver's answer.
#[derive(Debug, Clone)]
pub struct Posted {
    /// The status code.
    pub status: u16,
    /// `Retry-After` of a 429 or 503.
    pub retry_after: Option<Duration>,
    /// The start of the body, at most [`POST_RESPONSE_CAP`] bytes.
    pub body: Bytes,
}

impl Fetcher {
    /// POSTs `body` with `headers` (plus the configured User-Agent) to
    /// `url`; the whole exchange is bounded by `timeout`.
    pub async fn post(
        &self,
        url: &Url,
        mut headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Posted, FetchError> {
        self.checked_host(url)?;
        if !headers.contains_key(USER_AGENT) {
            if let Ok(ua) = self.inner.cfg.user_agent.parse() {
                headers.insert(USER_AGENT, ua);
            }
        }
        let exchange = async {
            let mut resp = self
                .inner
                .client
                .post(url.clone())
                .headers(headers)
                .body(body)
                .send()
                .await
                .map_err(|e| self.map_error(e, url))?;
            let status = resp.status();
            let retry_after = matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            )
            .then(|| headers::retry_after(resp.headers(), Utc::now()))
            .flatten();
            let mut body = BytesMut::new();
            // A body that fails half-way still leaves the status: the
            // answer counts, the text is only for the operator. A POST is
            // offered gzip and deflate (the client decodes them); a brotli
            // body was not asked for and is not kept (it would read as junk).
            let unasked = super::is_brotli(resp.headers());
            while !unasked && body.len() < POST_RESPONSE_CAP {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = POST_RESPONSE_CAP - body.len();
                        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            Ok(Posted {
                status: status.as_u16(),
                retry_after,
                body: body.freeze(),
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_elapsed) => Err(FetchError::Timeout(timeout)),
        }
    }
}
