//! `[edge]`: the listen address, SSE keep-alive, CORS origins and the
//! connection limit.

use std::net::SocketAddr;
use std::time::Duration;

use super::Validator;
use crate::config::raw::{truncate, RawEdge};
use crate::config::{EdgeConfig, Secret};

/// Bounds of `edge.keepalive`: proxies drop idle connections after about a minute.
const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));
/// Bounds of `edge.max_connections`.
const MAX_CONNECTIONS: (i64, i64) = (1, 10_000_000);
/// Default of `edge.max_connections`.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 50_000;

impl Validator<'_, '_> {
    /// `[edge]`.
    pub(super) fn edge(&mut self, raw: &RawEdge) -> EdgeConfig {
        let listen = match &raw.listen {
            Some(l) => match l.get_ref().trim().parse::<SocketAddr>() {
                Ok(a) => a,
                Err(_) => {
                    self.push(
                        l,
                        "edge.listen",
                        format!(
                            "`{}` is not an IP address with a port; use e.g. \"127.0.0.1:8080\", \"0.0.0.0:8080\" or \"[::]:8080\"",
                            truncate(l.get_ref())
                        ),
                    );
                    default_listen()
                }
            },
            None => default_listen(),
        };
        let cors_origins = match &raw.cors_origins {
            Some(list) => {
                for (i, o) in list.iter().enumerate() {
                    if let Err(e) = check_origin(o.get_ref()) {
                        self.push(o, &format!("edge.cors_origins[{i}]"), e);
                    }
                }
                list.iter().map(|o| o.get_ref().clone()).collect()
            }
            None => vec!["*".to_owned()],
        };
        let metrics_token =
            raw.metrics_token
                .as_ref()
                .and_then(|t| match Secret::metrics_token(t.get_ref()) {
                    Ok(token) => Some(token),
                    Err(e) => {
                        self.push(t, "edge.metrics_token", e);
                        None
                    }
                });
        EdgeConfig {
            listen,
            keepalive: self.duration(
                &raw.keepalive,
                "edge.keepalive",
                Duration::from_secs(25),
                KEEPALIVE,
            ),
            cors_origins,
            max_connections: self.ranged(
                &raw.max_connections,
                "edge.max_connections",
                DEFAULT_MAX_CONNECTIONS as i64,
                MAX_CONNECTIONS,
            ) as usize,
            metrics_token,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// Why `s` is not a CORS origin as browsers send it (`*` allows any).
fn check_origin(s: &str) -> Result<(), String> {
    if s == "*" {
        return Ok(());
    }
    let u = url::Url::parse(s).map_err(|e| {
        format!(
            "`{}` is not an origin ({e}); use \"*\" or e.g. \"https://app.example.com\"",
            truncate(s)
        )
    })?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(format!(
            "`{}` is not an http(s) origin; e.g. \"https://app.example.com\"",
            truncate(s)
        ));
    }
    let canonical = u.origin().ascii_serialization();
    if canonical != s {
        return Err(format!(
            "`{}` is not an origin as browsers send it; write \"{canonical}\" (scheme, host and non-default port only)",
            truncate(s)
        ));
    }
    Ok(())
}
