//! One delivery attempt: the request as the Standard Webhooks
//! specification has it (`POST`, the event's JSON as the body,
//! `webhook-id`, `webhook-timestamp`, `webhook-signature`), sent through a
//! [`Transport`] — the fetcher's guarded client in production, a recorder
//! in tests — and the answer as a [`Verdict`] with words for the operator.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use tokio::sync::watch;
use url::Url;
use uuid::Uuid;

use super::model::Endpoint;
use super::schedule::{verdict, Verdict};
use super::signing::signature_header;
use crate::config::FetchConfig;
use crate::fetch::{redact_url, FetchError, Fetcher};

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
    /// What the answer means.
    pub fn verdict(&self) -> Verdict {
        match self {
            Self::Status {
                status,
                retry_after,
                ..
            } => verdict(*status, *retry_after),
            Self::Failed(_) => Verdict::Retry { retry_after: None },
        }
    }

    /// What the answer means, and the operator's words for a failure.
    pub fn judge(&self, url: &Url) -> (Verdict, Option<String>) {
        match self {
            Self::Status {
                status,
                retry_after,
                body,
            } => {
                let v = self.verdict();
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
            Self::Failed(why) => (self.verdict(), Some(why.clone())),
        }
    }
}

/// Sends attempts. A seam so the worker's schedule can be tested on a
/// paused clock without sockets.
pub trait Transport: Send + Sync + 'static {
    /// Sends one attempt; never fails otherwise than as a [`Response`].
    fn send(&self, request: Request) -> BoxFuture<'static, Response>;
}

/// What of `[fetch]` a delivery uses: the user agent, the connect timeout,
/// the SSRF guard and the proxy. Not `timeout` (each endpoint has its own),
/// `max_body` (a receiver's answer is read up to
/// [`crate::fetch::POST_RESPONSE_CAP`]), redirects (never followed) or
/// politeness (a receiver asked to be called).
fn delivery_settings(c: &FetchConfig) -> (&str, Duration, bool, Option<&Url>) {
    (
        &c.user_agent,
        c.connect_timeout,
        c.allow_private_networks,
        c.proxy.as_ref(),
    )
}

/// The transport every worker sends through, replaceable while they run:
/// a config reload that changes `[fetch]` hands the webhooks a new fetcher
/// ([`SharedTransport::reload`]), as it hands the polls one. Cheap to clone.
#[derive(Clone)]
pub struct SharedTransport {
    current: Arc<watch::Sender<Arc<dyn Transport>>>,
    /// The fetch settings the current fetcher was built from (None: a
    /// transport that is not the fetcher, which a reload leaves alone).
    fetch: Arc<Mutex<Option<FetchConfig>>>,
}

impl std::fmt::Debug for SharedTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTransport").finish_non_exhaustive()
    }
}

impl SharedTransport {
    /// Sends through `transport` until [`SharedTransport::replace`]d.
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        Self {
            current: Arc::new(watch::Sender::new(transport)),
            fetch: Arc::new(Mutex::new(None)),
        }
    }

    /// The fetcher built from `config` (the SSRF guard, the proxy, the
    /// user agent and the body cap of `[fetch]`).
    pub fn fetcher(config: &FetchConfig) -> Result<Self, FetchError> {
        let shared = Self::new(Arc::new(Fetcher::new(config)?));
        *shared.fetch_config() = Some(config.clone());
        Ok(shared)
    }

    /// Sends through `transport` from now on: attempts started later use
    /// it, and attempts waiting out a scheduled retry are made at once
    /// (not those waiting out a receiver's `Retry-After`). Attempts in
    /// flight finish on the transport they started with.
    pub fn replace(&self, transport: Arc<dyn Transport>) {
        self.current.send_replace(transport);
    }

    /// A reloaded config's `[fetch]`: when it differs from the running
    /// fetcher's, a new fetcher replaces it ([`SharedTransport::replace`])
    /// and true is returned; when it cannot be built, the running one stays
    /// (logged). A transport that is not the fetcher is left alone.
    pub fn reload(&self, new: &FetchConfig) -> bool {
        let mut running = self.fetch_config();
        let Some(old) = running.as_mut() else {
            return false;
        };
        if delivery_settings(old) == delivery_settings(new) {
            // Politeness and the poll timeout are not the webhooks'.
            *old = new.clone();
            return false;
        }
        match Fetcher::new(new) {
            Ok(fetcher) => {
                *running = Some(new.clone());
                self.replace(Arc::new(fetcher));
                tracing::info!(
                    "config reload: webhooks deliver with the new fetch settings; endpoints waiting to retry try again now"
                );
                true
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "config reload: cannot rebuild the webhooks' HTTP client, keeping the old one"
                );
                false
            }
        }
    }

    /// The current transport, and changes to it.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<dyn Transport>> {
        self.current.subscribe()
    }

    fn fetch_config(&self) -> MutexGuard<'_, Option<FetchConfig>> {
        self.fetch.lock().unwrap_or_else(PoisonError::into_inner)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(toml: &str) -> FetchConfig {
        crate::config::Config::from_toml(std::path::Path::new("t/sources.toml"), toml)
            .unwrap_or_else(|e| panic!("{e}"))
            .fetch
    }

    #[test]
    fn a_reload_replaces_the_fetcher_only_when_what_deliveries_use_changed() {
        let running = fetch("");
        let shared = SharedTransport::fetcher(&running).unwrap_or_else(|e| panic!("{e}"));
        let mut seen = shared.subscribe();
        assert!(!shared.reload(&running), "the same settings");
        // Politeness and the poll timeout are not the webhooks'.
        assert!(!shared.reload(&fetch("[fetch]\nper_host_rps = 5.0\ntimeout = \"25s\"\n")));
        assert!(!seen.has_changed().unwrap_or(true));
        for changed in [
            "[fetch]\nallow_private_networks = true\n",
            "[fetch]\nallow_private_networks = true\nuser_agent = \"other/1\"\n",
            "[fetch]\nallow_private_networks = true\nuser_agent = \"other/1\"\nproxy = \"http://127.0.0.1:3128\"\n",
        ] {
            assert!(shared.reload(&fetch(changed)), "{changed}");
            assert!(seen.has_changed().unwrap_or(false), "{changed}");
            seen.borrow_and_update();
        }
        // A transport that is not the fetcher is left alone.
        let other = SharedTransport::new(seen.borrow().clone());
        assert!(!other.reload(&running));
    }
}
