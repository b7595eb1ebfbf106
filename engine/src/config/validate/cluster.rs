//! `[cluster]`: the NATS servers, the JetStream name prefix, replicas and
//! the source lease TTL. Present means the event log is JetStream.

use std::time::Duration;

use super::Validator;
use crate::config::raw::{truncate, RawCluster};
use crate::config::ClusterConfig;

/// Bounds of `cluster.lease`: short enough for a test's failover, long
/// enough that renewals (at half the TTL) are not a storm.
const LEASE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));
/// Bounds of `cluster.replicas` (JetStream allows 1 to 5).
const REPLICAS: (i64, i64) = (1, 5);
/// Longest `cluster.stream`: bucket names add a suffix of up to 8.
const MAX_STREAM_LEN: usize = 32;

impl Validator<'_, '_> {
    /// `[cluster]`, if the file has one.
    pub(super) fn cluster(&mut self, raw: Option<&RawCluster>) -> Option<ClusterConfig> {
        let raw = raw?;
        let mut nats = Vec::new();
        match &raw.nats {
            None => self.push_span(
                raw.span.clone(),
                "cluster.nats",
                "is required: the NATS servers, e.g. nats = [\"nats://127.0.0.1:4222\"]",
            ),
            Some(list) if list.is_empty() => self.push_span(
                raw.span.clone(),
                "cluster.nats",
                "must name at least one server, e.g. \"nats://127.0.0.1:4222\"",
            ),
            Some(list) => {
                for (i, u) in list.iter().enumerate() {
                    match check_nats_url(u.get_ref()) {
                        Ok(()) => nats.push(u.get_ref().trim().to_owned()),
                        Err(e) => self.push(u, &format!("cluster.nats[{i}]"), e),
                    }
                }
            }
        }
        let stream = match &raw.stream {
            Some(s) => match check_stream_name(s.get_ref()) {
                Ok(()) => s.get_ref().clone(),
                Err(e) => {
                    self.push(s, "cluster.stream", e);
                    DEFAULT_STREAM.to_owned()
                }
            },
            None => DEFAULT_STREAM.to_owned(),
        };
        Some(ClusterConfig {
            nats,
            stream,
            replicas: self.ranged(&raw.replicas, "cluster.replicas", 1, REPLICAS) as usize,
            lease: self.duration(&raw.lease, "cluster.lease", Duration::from_secs(30), LEASE),
        })
    }
}

/// Default `cluster.stream`.
const DEFAULT_STREAM: &str = "LIVESTROM";

/// Why `s` is not a NATS server URL the client can dial.
fn check_nats_url(s: &str) -> Result<(), String> {
    let s = s.trim();
    let u = url::Url::parse(s).map_err(|e| {
        format!(
            "`{}` is not a URL ({e}); use e.g. \"nats://127.0.0.1:4222\"",
            truncate(s)
        )
    })?;
    if !matches!(u.scheme(), "nats" | "tls" | "ws" | "wss") {
        return Err(format!(
            "`{}` has scheme `{}`; NATS URLs start with nats://, tls://, ws:// or wss://",
            truncate(s),
            u.scheme()
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{}` names no host", truncate(s)));
    }
    Ok(())
}

/// Why `s` cannot prefix the JetStream stream, subjects and buckets.
fn check_stream_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty; the default is \"LIVESTROM\"".to_owned());
    }
    if s.len() > MAX_STREAM_LEN {
        return Err(format!(
            "`{}` is {} characters long; the maximum is {MAX_STREAM_LEN}",
            truncate(s),
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
    {
        return Err(format!(
            "`{}` is not a valid JetStream name: `{}` is not allowed (allowed: A-Z, a-z, 0-9, `_`, `-`)",
            truncate(s),
            c.escape_debug()
        ));
    }
    Ok(())
}
