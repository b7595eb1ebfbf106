//! One delivery attempt: the request as the Standard Webhooks
//! specification has it (`POST`, the event's JSON as the body,
//! `webhook-id`, `webhook-timestamp`, `webhook-signature`), sent through a
//! [`Transport`] — the fetcher's guarded client in production, a recorder
//! in tests — and the answer as a [`Verdict`] with words for the operator.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use url::Url;
use uuid::Uuid;

use super::model::Endpoint;
use super::schedule::{verdict, Verdict};
use super::signing::signature_header;
use crate::fetch::{redact_url, Fetcher};

/// One attempt, ready to send.
#[derive(Debug, Clone)]
pub struct Request {
    /// Where.
    pub url: Url,
    /// The event's id: `webhook-id`, the same on every attempt.
    pub id: Uuid,
    /// `webhook-timestamp`: Unix seconds of this attempt.
    pub timestamp: i64,
    /// `webhook-signature`: `v1,<base64>` per valid secret, space-separated.
    pub signature: String,
    /// The StreamEvent JSON, byte for byte as stored (a stream frame's `data`).
    pub body: Arc<str>,
    /// The attempt fails if it has not answered within this.
    pub timeout: Duration,
}

impl Request {
    /// The attempt at `now` of delivering event `id` (`body`) to `endpoint`.
    pub fn new(endpoint: &Endpoint, id: Uuid, body: Arc<str>, now: DateTime<Utc>) -> Self {
        let timestamp = now.timestamp();
        let signature = signature_header(
            &endpoint.signing_secrets(now),
            &id.to_string(),
            timestamp,
            body.as_bytes(),
        );
        Self {
            url: endpoint.url.clone(),
            id,
            timestamp,
            signature,
            body,
            timeout: endpoint.timeout,
        }
    }

    /// The request's headers (besides the transport's own, such as User-Agent).
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut put = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        put("webhook-id", &self.id.to_string());
        put("webhook-timestamp", &self.timestamp.to_string());
        put("webhook-signature", &self.signature);
        h
    }
}

/// What came back from one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// The receiver answered.
    Status {
        /// The status code.
        status: u16,
        /// `Retry-After` of a 429 or 503.
        retry_after: Option<Duration>,
        /// The start of the body (for the operator's error message).
        body: String,
    },
    /// No answer: refused by the SSRF guard, DNS, connect, TLS, timeout.
    Failed(String),
}

impl Response {
    /// What the answer means, and the operator's words for a failure.
    pub fn judge(&self, url: &Url) -> (Verdict, Option<String>) {
        match self {
            Self::Status {
                status,
                retry_after,
                body,
            } => {
                let v = verdict(*status, *retry_after);
                if v == Verdict::Delivered {
                    return (v, None);
                }
                let mut why = format!("HTTP {status} from {}", redact_url(url));
                if let Some(wait) = retry_after {
                    why.push_str(&format!(" (Retry-After {}s)", wait.as_secs()));
                }
                if (300..400).contains(status) {
                    why.push_str(
                        " (redirects are not followed: point the webhook at the final url)",
                    );
                }
                let text: String = body.chars().filter(|c| !c.is_control()).take(200).collect();
                if !text.trim().is_empty() {
                    why.push_str(": ");
                    why.push_str(text.trim());
                }
                (v, Some(why))
            }
            Self::Failed(why) => (Verdict::Retry { retry_after: None }, Some(why.clone())),
        }
    }
}

/// Sends attempts. A seam so the worker's schedule can be tested on a
/// paused clock without sockets.
pub trait Transport: Send + Sync + 'static {
    /// Sends one attempt; never fails otherwise than as a [`Response`].
    fn send(&self, request: Request) -> BoxFuture<'static, Response>;
}

impl Transport for Fetcher {
    fn send(&self, request: Request) -> BoxFuture<'static, Response> {
        let fetcher = self.clone();
        Box::pin(async move {
            let body = Bytes::copy_from_slice(request.body.as_bytes());
            match fetcher
                .post(&request.url, request.headers(), body, request.timeout)
                .await
            {
                Ok(posted) => Response::Status {
                    status: posted.status,
                    retry_after: posted.retry_after,
                    body: String::from_utf8_lossy(&posted.body).into_owned(),
                },
                Err(e) => Response::Failed(e.to_string()),
            }
        })
    }
}
