//! `[fetch]`: User-Agent, timeouts, body cap, per-host pacing, private
//! networks, redirects and the proxy.

use std::time::Duration;

use super::{short_duration, Validator};
use crate::config::raw::{RawConfig, RawSize, S};
use crate::config::FetchConfig;

/// Bounds of `fetch.timeout` and `fetch.connect_timeout`.
const TIMEOUT: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(600));
/// Bounds of `fetch.max_body` in bytes (1 KiB ..= 1 GiB).
const MAX_BODY: (u64, u64) = (1024, 1 << 30);
/// Bounds of `fetch.per_host_rps`.
const RPS: (f64, f64) = (0.001, 1000.0);
/// Bounds of `fetch.per_host_concurrency`.
const CONCURRENCY: (i64, i64) = (1, 100);
/// Bounds of `fetch.max_redirects`.
const REDIRECTS: (i64, i64) = (0, 20);

impl Validator<'_, '_> {
    /// `[fetch]`.
    pub(super) fn fetch(&mut self, raw: &RawConfig) -> FetchConfig {
        let f = &raw.fetch;
        let user_agent = match &f.user_agent {
            Some(ua) if self.user_agent(ua, "fetch.user_agent") => ua.get_ref().clone(),
            _ => default_user_agent(),
        };
        let timeout = self.duration(
            &f.timeout,
            "fetch.timeout",
            Duration::from_secs(20),
            TIMEOUT,
        );
        let mut connect_timeout = self.duration(
            &f.connect_timeout,
            "fetch.connect_timeout",
            Duration::from_secs(10),
            TIMEOUT,
        );
        match &f.connect_timeout {
            Some(ct) if connect_timeout > timeout => self.push(
                ct,
                "fetch.connect_timeout",
                format!(
                    "{} is longer than fetch.timeout ({}); the whole request would time out first",
                    short_duration(connect_timeout),
                    short_duration(timeout)
                ),
            ),
            // The default connect timeout never exceeds a short explicit total timeout.
            _ => connect_timeout = connect_timeout.min(timeout),
        }
        let max_body = match &f.max_body {
            None => 10_000_000,
            Some(mb) => {
                let bytes = match mb.get_ref() {
                    RawSize::Text(t) => crate::config::parse_size(t).map_err(|e| e.to_string()),
                    RawSize::Bytes(n) => {
                        u64::try_from(*n).map_err(|_| format!("{n} must be a positive size"))
                    }
                };
                match bytes {
                    Ok(b) if (MAX_BODY.0..=MAX_BODY.1).contains(&b) => b,
                    Ok(b) => {
                        self.push(
                            mb,
                            "fetch.max_body",
                            format!("{b} bytes is out of range: must be between 1KiB and 1GiB"),
                        );
                        10_000_000
                    }
                    Err(e) => {
                        self.push(mb, "fetch.max_body", e);
                        10_000_000
                    }
                }
            }
        };
        let per_host_rps = match &f.per_host_rps {
            Some(r) if !(r.get_ref().is_finite() && (RPS.0..=RPS.1).contains(r.get_ref())) => {
                self.push(
                    r,
                    "fetch.per_host_rps",
                    format!(
                        "{} is out of range: must be between {} and {} requests per second",
                        r.get_ref(),
                        RPS.0,
                        RPS.1
                    ),
                );
                1.0
            }
            Some(r) => *r.get_ref(),
            None => 1.0,
        };
        FetchConfig {
            user_agent,
            timeout,
            connect_timeout,
            max_body,
            per_host_rps,
            per_host_concurrency: self.ranged(
                &f.per_host_concurrency,
                "fetch.per_host_concurrency",
                2,
                CONCURRENCY,
            ) as usize,
            allow_private_networks: f
                .allow_private_networks
                .as_ref()
                .is_some_and(|b| *b.get_ref()),
            max_redirects: self.ranged(&f.max_redirects, "fetch.max_redirects", 5, REDIRECTS)
                as usize,
            proxy: f.proxy.as_ref().and_then(|p| self.proxy(p)),
        }
    }

    /// `fetch.proxy`: an absolute http(s) URL with a host and nothing after it.
    fn proxy(&mut self, raw: &S<String>) -> Option<url::Url> {
        let field = "fetch.proxy";
        let text = raw.get_ref().trim();
        // A proxy URL may carry user:password@; messages show it redacted.
        let shown = crate::redact::redact_url_text(text);
        let url = match url::Url::parse(text) {
            Ok(u) => u,
            Err(e) => {
                self.push(
                    raw,
                    field,
                    format!(
                        "`{shown}` is not a URL ({e}); write it like \"http://proxy.internal:3128\""
                    ),
                );
                return None;
            }
        };
        if !matches!(url.scheme(), "http" | "https") {
            self.push(
                raw,
                field,
                format!(
                    "scheme `{}` is not supported: use an http:// or https:// proxy",
                    url.scheme()
                ),
            );
            return None;
        }
        if url.host_str().is_none_or(str::is_empty) {
            self.push(raw, field, format!("`{shown}` has no host"));
            return None;
        }
        if (url.path() != "/" && !url.path().is_empty())
            || url.query().is_some()
            || url.fragment().is_some()
        {
            self.push(raw, field, format!("`{shown}`: a proxy URL is a scheme, an optional user:password@, a host and a port, nothing after"));
            return None;
        }
        Some(url)
    }
}

/// The default User-Agent: product, version and project URL.
pub(crate) fn default_user_agent() -> String {
    format!(
        "livestrom/{} (+https://github.com/livestrom/livestrom)",
        env!("CARGO_PKG_VERSION")
    )
}
