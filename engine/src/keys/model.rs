//! What a key is and may do: scopes, the verified [`KeyInfo`] the edge hands
//! to handlers, what `apikey create`/`update`/`list` take and show, the
//! limits and their validation, and [`KeyError`].

use tokio_util::sync::CancellationToken;

/// Default filter-term cap of a new key.
pub const DEFAULT_MAX_FILTERS: usize = 20;
/// Default concurrent-stream cap of a new key.
pub const DEFAULT_MAX_STREAMS: usize = 10;
/// Default request rate of a new key (per second; burst twice that).
pub const DEFAULT_RATE: f64 = 10.0;
/// Largest accepted `--max-filters`.
pub const MAX_MAX_FILTERS: usize = 1000;
/// Largest accepted `--max-streams`.
pub const MAX_MAX_STREAMS: usize = 10_000;
/// Largest accepted `--rate` (per second).
pub const MAX_RATE: f64 = 100_000.0;
/// Smallest accepted `--rate` (per second): one request per 1000 s.
pub const MIN_RATE: f64 = 0.001;

/// Key errors. The messages are what `livestrom apikey` prints.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key database could not be opened, read or written. Holds the
    /// backend's own error (a `rusqlite::Error`, a `StoreError`, …) so callers
    /// can inspect it; not marked `#[source]` because the message already
    /// shows it and the CLI prints the whole chain (it would appear twice).
    #[error("database: {0}")]
    Storage(Box<dyn std::error::Error + Send + Sync>),
    /// The cluster's keys bucket could not be read or written (NATS
    /// unreachable, no permission, no answer in time).
    #[error("keys bucket {bucket}: cannot {action}: {source}")]
    Bucket {
        /// The bucket.
        bucket: String,
        /// What was being done.
        action: &'static str,
        /// The client's error.
        #[source]
        source: async_nats::Error,
    },
    /// A key's stored value cannot be read by this version (written by hand
    /// or by an incompatible version); it is left as it is.
    #[error("the stored key `{name}` cannot be read ({reason}); it is left unchanged")]
    Unreadable {
        /// The key's name.
        name: String,
        /// What is wrong with the value.
        reason: String,
    },
    /// Every compare-and-set of a change lost against other writers (other
    /// `apikey` commands, edges recording use) in a row.
    #[error("the key `{0}` kept being changed by others while this change was made; try again")]
    Contended(String),
    /// The blocking task that loads the keys panicked or was cancelled.
    #[error("database: key loader task failed: {0}")]
    Task(tokio::task::JoinError),
    /// The name is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid key name `{name}`: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another key already has this name.
    #[error(
        "a key named `{0}` already exists (names are unique; pick another or `apikey update {0}`)"
    )]
    NameTaken(String),
    /// No key has this name.
    #[error("no key named `{0}` (see `livestrom apikey list`)")]
    NotFound(String),
    /// The key is already revoked.
    #[error("the key `{0}` is already revoked")]
    AlreadyRevoked(String),
    /// A revoked key cannot be changed.
    #[error("the key `{0}` is revoked and cannot be updated; create a new key")]
    Revoked(String),
    /// A scope that does not exist.
    #[error("unknown scope `{0}` (valid scopes: stream:read, admin)")]
    InvalidScope(String),
    /// An empty scope list.
    #[error("a key needs at least one scope (valid scopes: stream:read, admin)")]
    NoScopes,
    /// A rate that is not a positive number of requests per second.
    #[error("invalid rate `{0}`: expected requests per second such as `10/s` or `10` (or per minute: `30/m`), between 0.001/s and 100000/s")]
    InvalidRate(String),
    /// A limit outside its range.
    #[error("invalid {field} {value}: must be between {min} and {max}")]
    InvalidLimit {
        /// Which limit.
        field: &'static str,
        /// The value given.
        value: usize,
        /// Smallest accepted.
        min: usize,
        /// Largest accepted.
        max: usize,
    },
}

/// A permission of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `stream:read`: /v1/stream and /v1/events.
    StreamRead,
    /// `admin`: operator pages.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 2] = [Scope::StreamRead, Scope::Admin];

    /// The scope's name as written in `--scopes` and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::StreamRead => "stream:read",
            Scope::Admin => "admin",
        }
    }

    /// Parses a scope name (exact, lowercase).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|sc| sc.as_str() == s)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified, unrevoked key and its limits.
#[derive(Debug)]
pub struct KeyInfo {
    /// Database id (the limiter key).
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Cap on filter terms per request.
    pub max_filters: usize,
    /// Cap on concurrent streams.
    pub max_streams: usize,
    /// Requests per second (burst twice that).
    pub rate: f64,
    /// Fires when the key is revoked or loses `stream:read`: open streams
    /// close. A change of limits does not fire it (open streams keep the
    /// limits they were opened with; see the `keys` module doc).
    pub revoked: CancellationToken,
}

impl KeyInfo {
    /// Whether the key has a scope.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// What `apikey create` asks for.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Unique name.
    pub name: String,
    /// Scopes (`stream:read`, `admin`).
    pub scopes: Vec<Scope>,
    /// Filter-term cap (default 20).
    pub max_filters: usize,
    /// Concurrent-stream cap (default 10).
    pub max_streams: usize,
    /// Requests per second, burst twice that (default 10).
    pub rate: f64,
}

impl NewKey {
    /// A key with `stream:read` and the default limits.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            scopes: vec![Scope::StreamRead],
            max_filters: DEFAULT_MAX_FILTERS,
            max_streams: DEFAULT_MAX_STREAMS,
            rate: DEFAULT_RATE,
        }
    }

    /// Checks name, scopes and limits, in that order (the first problem is
    /// the one reported).
    pub fn validate(&self) -> Result<(), KeyError> {
        validate_name(&self.name)?;
        validate_scopes(&self.scopes)?;
        validate_limit("max-filters", self.max_filters, 0, MAX_MAX_FILTERS)?;
        validate_limit("max-streams", self.max_streams, 1, MAX_MAX_STREAMS)?;
        validate_rate(self.rate)
    }
}

/// What `apikey update` changes (None = keep).
#[derive(Debug, Clone, Default)]
pub struct KeyUpdate {
    /// New scopes.
    pub scopes: Option<Vec<Scope>>,
    /// New filter cap.
    pub max_filters: Option<usize>,
    /// New stream cap.
    pub max_streams: Option<usize>,
    /// New rate.
    pub rate: Option<f64>,
}

impl KeyUpdate {
    /// Checks every value that is changed, with the same bounds as [`NewKey`].
    pub fn validate(&self) -> Result<(), KeyError> {
        if let Some(s) = &self.scopes {
            validate_scopes(s)?;
        }
        if let Some(v) = self.max_filters {
            validate_limit("max-filters", v, 0, MAX_MAX_FILTERS)?;
        }
        if let Some(v) = self.max_streams {
            validate_limit("max-streams", v, 1, MAX_MAX_STREAMS)?;
        }
        if let Some(r) = self.rate {
            validate_rate(r)?;
        }
        Ok(())
    }
}

/// A key as `apikey list` shows it (never the key itself).
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// Name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Filter cap.
    pub max_filters: usize,
    /// Stream cap.
    pub max_streams: usize,
    /// Rate.
    pub rate: f64,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last used (RFC 3339), if ever.
    pub last_used_at: Option<String>,
    /// Revoked (RFC 3339), if revoked.
    pub revoked_at: Option<String>,
}

/// Checks a key name: 1–64 characters of `[A-Za-z0-9._-]`.
pub fn validate_name(name: &str) -> Result<(), KeyError> {
    let invalid = |reason: &str| KeyError::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.chars().count() > 64 {
        return Err(invalid("it is longer than 64 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(&format!(
            "`{}` is not allowed; use letters, digits, `.`, `_` and `-`",
            c.escape_debug()
        )));
    }
    Ok(())
}

/// Parses `stream:read,admin` (comma-separated, duplicates folded).
pub fn parse_scopes(s: &str) -> Result<Vec<Scope>, KeyError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let scope = Scope::parse(part).ok_or_else(|| KeyError::InvalidScope(part.to_owned()))?;
        if !out.contains(&scope) {
            out.push(scope);
        }
    }
    if out.is_empty() {
        return Err(KeyError::NoScopes);
    }
    Ok(out)
}

/// Parses a rate: `10`, `10/s`, `2.5/s` or `30/m`; returns requests per second.
pub fn parse_rate(s: &str) -> Result<f64, KeyError> {
    let invalid = || KeyError::InvalidRate(s.to_owned());
    let t = s.trim();
    let (num, per) = match t.split_once('/') {
        None => (t, 1.0),
        Some((n, unit)) => match unit.trim() {
            "s" | "sec" | "second" => (n, 1.0),
            "m" | "min" | "minute" => (n, 60.0),
            _ => return Err(invalid()),
        },
    };
    let n: f64 = num.trim().parse().map_err(|_| invalid())?;
    let rate = n / per;
    validate_rate(rate).map_err(|_| invalid())?;
    Ok(rate)
}

fn validate_rate(rate: f64) -> Result<(), KeyError> {
    if (MIN_RATE..=MAX_RATE).contains(&rate) {
        Ok(())
    } else {
        Err(KeyError::InvalidRate(rate.to_string()))
    }
}

fn validate_limit(
    field: &'static str,
    value: usize,
    min: usize,
    max: usize,
) -> Result<(), KeyError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(KeyError::InvalidLimit {
            field,
            value,
            min,
            max,
        })
    }
}

fn validate_scopes(scopes: &[Scope]) -> Result<(), KeyError> {
    if scopes.is_empty() {
        return Err(KeyError::NoScopes);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_scopes_and_rates_are_validated() {
        assert!(validate_name("my-app.v2_prod").is_ok());
        assert!(validate_name(&"a".repeat(64)).is_ok());
        assert!(matches!(
            validate_name(""),
            Err(KeyError::InvalidName { .. })
        ));
        assert!(matches!(
            validate_name(&"a".repeat(65)),
            Err(KeyError::InvalidName { .. })
        ));
        assert!(matches!(
            validate_name("my app"),
            Err(KeyError::InvalidName { .. })
        ));
        assert!(matches!(
            validate_name("å"),
            Err(KeyError::InvalidName { .. })
        ));

        assert_eq!(
            parse_scopes("stream:read").expect("ok"),
            vec![Scope::StreamRead]
        );
        assert_eq!(
            parse_scopes(" admin , stream:read,admin ").expect("ok"),
            vec![Scope::Admin, Scope::StreamRead]
        );
        assert!(
            matches!(parse_scopes("stream:write"), Err(KeyError::InvalidScope(s)) if s == "stream:write")
        );
        assert!(matches!(parse_scopes(" , "), Err(KeyError::NoScopes)));

        assert_eq!(parse_rate("10/s").expect("ok"), 10.0);
        assert_eq!(parse_rate("10").expect("ok"), 10.0);
        assert_eq!(parse_rate("2.5/s").expect("ok"), 2.5);
        assert_eq!(parse_rate("30/m").expect("ok"), 0.5);
        for bad in [
            "", "0", "-1/s", "ten", "10/h", "NaN", "inf", "1e9", "10/", "0.0001",
        ] {
            assert!(
                matches!(parse_rate(bad), Err(KeyError::InvalidRate(_))),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn new_keys_and_updates_are_checked_in_order() {
        let mut k = NewKey::new("bad name");
        k.max_streams = 0;
        assert!(matches!(k.validate(), Err(KeyError::InvalidName { .. })));
        k.name = "ok".into();
        assert!(matches!(
            k.validate(),
            Err(KeyError::InvalidLimit {
                field: "max-streams",
                ..
            })
        ));
        k.max_streams = 1;
        k.scopes.clear();
        assert!(matches!(k.validate(), Err(KeyError::NoScopes)));
        assert!(NewKey::new("fine").validate().is_ok());

        assert!(KeyUpdate::default().validate().is_ok());
        let bad_rate = KeyUpdate {
            rate: Some(0.0),
            ..KeyUpdate::default()
        };
        assert!(matches!(bad_rate.validate(), Err(KeyError::InvalidRate(_))));
    }

    #[test]
    fn scopes_round_trip() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(Scope::parse("STREAM:READ"), None);
    }
}
