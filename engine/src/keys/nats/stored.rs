//! One key as the cluster's keys bucket holds it: the entry's KV key (from
//! the key's name) and its value, a JSON object with the hash (never the
//! key), scopes, limits, times and a stable numeric id.
//!
//! ```json
//! {"id":4120938411234,"name":"my-app","hash":"<sha256 of the key, 64 hex>",
//!  "scopes":["stream:read"],"max_filters":20,"max_streams":10,"rate":10.0,
//!  "created_at":"2025-01-02T03:04:05Z","last_used_at":null,"revoked_at":null}
//! ```
//!
//! Forward compatible both ways: fields this version does not know are kept
//! when it rewrites a value (`extra`), and scope names it does not know are
//! kept in the value but left out of what the cache sees, as SQLite's
//! `scopes_from_text` does.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::keys::backend::KeyRow;
use crate::keys::model::{KeyRecord, NewKey, Scope, DEFAULT_RATE};

/// The KV key of the entry of the key named `name` (a validated name:
/// 1–64 of `[A-Za-z0-9._-]`). A dot separates subject tokens in NATS, so a
/// name such as `.app` or `a..b` would be an invalid KV key; dots become
/// `/`, which is valid in KV keys and never in a name, so the mapping is
/// one to one and readable in `nats kv ls`.
pub(crate) fn kv_key(name: &str) -> String {
    name.replace('.', "/")
}

/// Why a stored value cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoredError {
    /// Not the JSON object above.
    #[error("not a key record: {0}")]
    Json(#[from] serde_json::Error),
    /// `hash` is not 64 hex digits.
    #[error("its hash is not a hex sha256")]
    Hash,
}

/// The value of one entry of the keys bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredKey {
    /// Stable across nodes and rewrites: the cache tracks limiters and open
    /// streams by it. Random in `1..2^63` at creation (no counter to share).
    pub(crate) id: i64,
    /// The key's name (its entry's KV key is [`kv_key`] of it).
    pub(crate) name: String,
    /// `sha256` of the whole key, lowercase hex.
    pub(crate) hash: String,
    /// Scope names as written, unknown ones included.
    pub(crate) scopes: Vec<String>,
    /// Cap on filter terms per request.
    pub(crate) max_filters: usize,
    /// Cap on concurrent streams.
    pub(crate) max_streams: usize,
    /// Requests per second.
    pub(crate) rate: f64,
    /// RFC 3339, seconds.
    pub(crate) created_at: String,
    /// RFC 3339, seconds; written by the edges' usage flushers.
    #[serde(default)]
    pub(crate) last_used_at: Option<String>,
    /// RFC 3339, seconds; a revoked key stays (refused with 403, not 401).
    #[serde(default)]
    pub(crate) revoked_at: Option<String>,
    /// Fields a newer version wrote, kept as they are on a rewrite.
    #[serde(flatten)]
    pub(crate) extra: serde_json::Map<String, serde_json::Value>,
}

impl StoredKey {
    /// A new, unused, unrevoked key with the given hash.
    pub(crate) fn new(new: &NewKey, hash: &[u8; 32], created_at: DateTime<Utc>) -> Self {
        Self {
            id: new_id(),
            name: new.name.clone(),
            hash: hex::encode(hash),
            scopes: new.scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            max_filters: new.max_filters,
            max_streams: new.max_streams,
            rate: new.rate,
            created_at: rfc3339(created_at),
            last_used_at: None,
            revoked_at: None,
            extra: serde_json::Map::new(),
        }
    }

    /// Parses an entry's value.
    pub(crate) fn decode(value: &[u8]) -> Result<Self, StoredError> {
        Ok(serde_json::from_slice(value)?)
    }

    /// The entry's value.
    pub(crate) fn encode(&self) -> Result<Bytes, StoredError> {
        Ok(Bytes::from(serde_json::to_vec(self)?))
    }

    /// The scopes this version knows (unknown names left out).
    pub(crate) fn known_scopes(&self) -> Vec<Scope> {
        self.scopes.iter().filter_map(|s| Scope::parse(s)).collect()
    }

    /// Replaces the scopes.
    pub(crate) fn set_scopes(&mut self, scopes: &[Scope]) {
        self.scopes = scopes.iter().map(|s| s.as_str().to_owned()).collect();
    }

    /// When the key was last used, if it was and the time is readable.
    pub(crate) fn last_used(&self) -> Option<DateTime<Utc>> {
        self.last_used_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    }

    /// What the key cache needs.
    pub(crate) fn row(&self) -> Result<KeyRow, StoredError> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&self.hash, &mut hash).map_err(|_| StoredError::Hash)?;
        Ok(KeyRow {
            id: self.id,
            name: self.name.clone(),
            hash,
            scopes: self.known_scopes(),
            max_filters: self.max_filters,
            max_streams: self.max_streams,
            // As SQLite's loader: a stored rate the limiter cannot use is the default.
            rate: if self.rate.is_finite() && self.rate > 0.0 {
                self.rate
            } else {
                DEFAULT_RATE
            },
            revoked: self.revoked_at.is_some(),
        })
    }

    /// What `apikey list` shows.
    pub(crate) fn record(&self) -> KeyRecord {
        KeyRecord {
            name: self.name.clone(),
            scopes: self.known_scopes(),
            max_filters: self.max_filters,
            max_streams: self.max_streams,
            rate: self.rate,
            created_at: self.created_at.clone(),
            last_used_at: self.last_used_at.clone(),
            revoked_at: self.revoked_at.clone(),
        }
    }
}

/// RFC 3339 with seconds, as SQLite stores the times.
pub(crate) fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A random id in `1..2^63`: unique across nodes without coordination
/// (two keys share one with probability ~n²/2^64).
fn new_id() -> i64 {
    let id = rand::random::<u64>() >> 1;
    i64::try_from(id).unwrap_or(i64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::format::{generate, hash_key};

    fn sample() -> (String, StoredKey) {
        let key = generate();
        let mut new = NewKey::new("news.app-2");
        new.scopes = vec![Scope::StreamRead, Scope::Admin];
        new.max_streams = 3;
        new.rate = 2.5;
        (
            key.clone(),
            StoredKey::new(&new, &hash_key(&key), Utc::now()),
        )
    }

    #[test]
    fn a_value_round_trips_and_holds_the_hash_never_the_key() {
        let (key, stored) = sample();
        let bytes = stored.encode().expect("ok");
        let text = std::str::from_utf8(&bytes).expect("ok");
        assert!(
            !text.contains(&key[5..]),
            "the key itself is stored: {text}"
        );
        assert!(text.contains(&hex::encode(hash_key(&key))));
        let back = StoredKey::decode(&bytes).expect("ok");
        assert_eq!(back, stored);
        assert!(back.id >= 1);

        let row = back.row().expect("ok");
        assert_eq!(row.hash, hash_key(&key));
        assert_eq!(row.scopes, vec![Scope::StreamRead, Scope::Admin]);
        assert_eq!((row.max_filters, row.max_streams, row.rate), (20, 3, 2.5));
        assert!(!row.revoked);
        let record = back.record();
        assert_eq!(record.name, "news.app-2");
        assert!(record.last_used_at.is_none() && record.revoked_at.is_none());
        assert!(DateTime::parse_from_rfc3339(&record.created_at).is_ok());
    }

    /// A value from a newer version: an unknown scope is left out of what
    /// this version enforces and shows, and both it and an unknown field
    /// survive a rewrite.
    #[test]
    fn unknown_scopes_and_fields_from_a_newer_version_are_ignored_and_kept() {
        let (_, stored) = sample();
        let mut json: serde_json::Value =
            serde_json::from_slice(&stored.encode().expect("ok")).expect("ok");
        json["scopes"] = serde_json::json!(["stream:read", "stream:write"]);
        json["webhooks"] = serde_json::json!({"max": 3});
        let mut newer = StoredKey::decode(json.to_string().as_bytes()).expect("ok");
        assert_eq!(newer.known_scopes(), vec![Scope::StreamRead]);
        assert_eq!(
            newer.row().map(|r| r.scopes).ok(),
            Some(vec![Scope::StreamRead])
        );
        assert_eq!(newer.record().scopes, vec![Scope::StreamRead]);

        newer.revoked_at = Some(rfc3339(Utc::now()));
        let rewritten: serde_json::Value =
            serde_json::from_slice(&newer.encode().expect("ok")).expect("ok");
        assert_eq!(rewritten["webhooks"], serde_json::json!({"max": 3}));
        assert_eq!(
            rewritten["scopes"],
            serde_json::json!(["stream:read", "stream:write"])
        );
        assert!(rewritten["revoked_at"].is_string());
    }

    #[test]
    fn unusable_values_are_refused_and_odd_rates_fall_back() {
        assert!(matches!(
            StoredKey::decode(b"not json"),
            Err(StoredError::Json(_))
        ));
        assert!(matches!(
            StoredKey::decode(br#"{"name":"x"}"#),
            Err(StoredError::Json(_))
        ));
        let (_, mut stored) = sample();
        stored.hash = "abc".into();
        assert!(matches!(stored.row(), Err(StoredError::Hash)));
        let (_, mut stored) = sample();
        stored.rate = 0.0;
        assert_eq!(stored.row().map(|r| r.rate).ok(), Some(DEFAULT_RATE));
        // Older values without the optional times still read.
        let mut json: serde_json::Value =
            serde_json::from_slice(&stored.encode().expect("ok")).expect("ok");
        if let Some(o) = json.as_object_mut() {
            o.remove("last_used_at");
            o.remove("revoked_at");
        }
        let back = StoredKey::decode(json.to_string().as_bytes()).expect("ok");
        assert!(back.last_used_at.is_none() && back.revoked_at.is_none());
    }

    #[test]
    fn every_valid_name_maps_to_a_valid_distinct_kv_key() {
        let names = ["app", ".app", "app.", "a..b", "news.bbc", "news/bbc", "-_-"];
        let valid: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| crate::keys::model::validate_name(n).is_ok())
            .collect();
        assert_eq!(valid, ["app", ".app", "app.", "a..b", "news.bbc", "-_-"]);
        let keys: Vec<String> = valid.iter().map(|n| kv_key(n)).collect();
        for k in &keys {
            // The client's rule: `[-/_=.a-zA-Z0-9]+`, no leading or trailing dot.
            assert!(
                !k.is_empty()
                    && !k.starts_with('.')
                    && !k.ends_with('.')
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c)),
                "{k} is not a valid KV key"
            );
            assert!(!k.contains(".."), "{k} has an empty subject token");
        }
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len());
    }
}
