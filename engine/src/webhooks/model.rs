//! What a webhook endpoint is: what `webhook create`/`update` ask for and
//! how it is checked ([`NewEndpoint`], [`EndpointUpdate`], [`FilterTerms`],
//! [`Since`]), its state ([`State`]), its delivery progress ([`Progress`],
//! written by the worker), what `webhook list` shows ([`EndpointInfo`],
//! never the secret), what the worker runs on ([`Endpoint`]) and
//! [`WebhookError`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;

use super::signing::SigningSecret;
use crate::filter::{parse_cursor, Filter, FilterError};
use crate::keys::DEFAULT_MAX_FILTERS;

/// A delivery attempt that has not answered in this long failed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest accepted `--timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest accepted `--concurrency`.
pub const MAX_CONCURRENCY: usize = 64;
/// Filter terms an endpoint may have: the stream's default cap per key.
pub const MAX_FILTER_TERMS: usize = DEFAULT_MAX_FILTERS;

/// Webhook errors. The messages are what `livestrom webhook` prints and the
/// admin API's problems carry.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The database could not be opened, read or written. Not `#[source]`:
    /// the message shows it.
    #[error("database: {0}")]
    Storage(Box<dyn std::error::Error + Send + Sync>),
    /// A blocking database task panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Webhooks need the single-node SQLite store.
    #[error("{0}")]
    Unsupported(String),
    /// The name is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid webhook name `{name}`: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL is not an absolute http(s) URL.
    #[error("invalid webhook url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A filter term or cursor, refused with the stream's own words.
    #[error("{0}")]
    Filter(#[from] FilterError),
    /// A setting outside its range.
    #[error("invalid {field}: {reason}")]
    InvalidSetting {
        /// Which setting (`concurrency`, `timeout`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Another endpoint already has this name.
    #[error("a webhook named `{0}` already exists (names are unique; pick another or `webhook update {0}`)")]
    NameTaken(String),
    /// No endpoint has this name.
    #[error("no webhook named `{0}` (see `livestrom webhook list`)")]
    NotFound(String),
    /// The cursor is older than the retained window.
    #[error("`since` {since} is older than the retention window: events after it may have been pruned; the oldest position that can be replayed is {floor}")]
    CursorExpired {
        /// The cursor given.
        since: Uuid,
        /// The oldest resumable position.
        floor: Uuid,
    },
    /// The cursor is a position no event has reached.
    #[error("`since` {0} is ahead of the newest event and of this server's clock")]
    CursorAhead(Uuid),
    /// `update` without a change.
    #[error("nothing to update: pass --url, filters, --no-filters, --concurrency or --timeout")]
    NothingToUpdate,
}

/// An endpoint's filters as the operator gave them, one list per parameter
/// (the same names as `/v1/stream`'s query). Stored as given and parsed by
/// the stream's parser ([`FilterTerms::filter`]) wherever they are used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterTerms {
    /// `source`: exact ids or `prefix.*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source: Vec<String>,
    /// `source_type`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_type: Vec<String>,
    /// `tag`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tag: Vec<String>,
    /// `keyword`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keyword: Vec<String>,
}

impl FilterTerms {
    /// Every term as `(parameter, value)`, in the order the lists are kept.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        fn named<'a>(
            name: &'static str,
            list: &'a [String],
        ) -> impl Iterator<Item = (&'a str, &'a str)> {
            list.iter().map(move |v| (name, v.as_str()))
        }
        named("source", &self.source)
            .chain(named("source_type", &self.source_type))
            .chain(named("tag", &self.tag))
            .chain(named("keyword", &self.keyword))
    }

    /// The filter, checked exactly as `/v1/stream` checks its query, with
    /// its cap of [`MAX_FILTER_TERMS`] terms.
    pub fn filter(&self) -> Result<Filter, FilterError> {
        Filter::from_terms(self.pairs(), MAX_FILTER_TERMS)
    }

    /// True when no term is set (every event is delivered).
    pub fn is_empty(&self) -> bool {
        self.pairs().next().is_none()
    }

    /// `source=a tag=b` (or `all events`), for `webhook list` and logs.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self.pairs().map(|(n, v)| format!("{n}={v}")).collect();
        if parts.is_empty() {
            "all events".to_owned()
        } else {
            parts.join(" ")
        }
    }
}

/// Where a new endpoint's deliveries start (`--since`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// With the first event committed from now on (the default).
    Now,
    /// With the first event after this id (any retained position).
    After(Uuid),
}

impl Since {
    /// `now` or a UUIDv7 event id, refused in the stream's words (parameter `since`).
    pub fn parse(value: &str) -> Result<Self, FilterError> {
        if value.trim() == "now" {
            return Ok(Self::Now);
        }
        parse_cursor("since", value).map(Self::After)
    }
}

/// An endpoint's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Delivering.
    Active,
    /// Its retry schedule ran out: paused with its cursor kept (nothing is
    /// skipped) until `webhook enable`; disabled after 5 days.
    Failing,
    /// Paused because its cursor fell out of the retention window; resume
    /// with `webhook replay --since` from a retained position.
    Paused,
    /// Not delivering: by the operator, a 410 from the receiver, or 5 days failing.
    Disabled,
}

impl State {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Failing => "failing",
            Self::Paused => "paused",
            Self::Disabled => "disabled",
        }
    }

    /// A stored name; unknown names (a newer version) read as disabled.
    pub fn parse(s: &str) -> Self {
        match s {
            "active" => Self::Active,
            "failing" => Self::Failing,
            "paused" => Self::Paused,
            _ => Self::Disabled,
        }
    }
}

/// What `webhook create` asks for.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    /// Unique name.
    pub name: String,
    /// Where events are POSTed (http or https).
    pub url: String,
    /// Which events.
    pub filters: FilterTerms,
    /// Where deliveries start.
    pub since: Since,
    /// Deliveries in flight at once (1: in id order).
    pub concurrency: usize,
    /// How long an attempt may take.
    pub timeout: Duration,
}

impl NewEndpoint {
    /// An endpoint delivering every event from now on, one at a time.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            filters: FilterTerms::default(),
            since: Since::Now,
            concurrency: 1,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Checks every value; the first problem found.
    pub fn validate(&self) -> Result<Url, WebhookError> {
        validate_name(&self.name)?;
        self.filters.filter()?;
        validate_concurrency(self.concurrency)?;
        validate_timeout(self.timeout)?;
        parse_url(&self.url)
    }
}

/// What `webhook update` changes (None = keep).
#[derive(Debug, Clone, Default)]
pub struct EndpointUpdate {
    /// New URL.
    pub url: Option<String>,
    /// New filters (replacing all of them; empty: every event).
    pub filters: Option<FilterTerms>,
    /// New concurrency.
    pub concurrency: Option<usize>,
    /// New attempt timeout.
    pub timeout: Option<Duration>,
}

impl EndpointUpdate {
    /// Checks every value that is changed; the new URL, parsed.
    pub fn validate(&self) -> Result<Option<Url>, WebhookError> {
        if self.url.is_none()
            && self.filters.is_none()
            && self.concurrency.is_none()
            && self.timeout.is_none()
        {
            return Err(WebhookError::NothingToUpdate);
        }
        if let Some(f) = &self.filters {
            f.filter()?;
        }
        if let Some(c) = self.concurrency {
            validate_concurrency(c)?;
        }
        if let Some(t) = self.timeout {
            validate_timeout(t)?;
        }
        self.url.as_deref().map(parse_url).transpose()
    }
}

/// An endpoint's delivery progress and health: written by the delivery
/// worker as it goes (and reset by `enable`, `disable`, `replay`).
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Every matching event up to here was delivered (a 2xx); delivery
    /// continues after it.
    pub cursor: Uuid,
    /// The endpoint's state.
    pub state: State,
    /// Why it is in that state (for failing, paused and disabled).
    pub state_reason: Option<String>,
    /// Since when.
    pub state_since: Option<DateTime<Utc>>,
    /// The last attempt's start.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The last 2xx.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The last failure's reason.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// Failed attempts since the last 2xx.
    pub failures: u32,
    /// The first failure since the last 2xx.
    pub failing_since: Option<DateTime<Utc>>,
    /// When the next retry is due, while one is.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Events delivered in total.
    pub delivered: u64,
}

impl Progress {
    /// A fresh endpoint's progress: active, delivering after `cursor`.
    pub fn start(cursor: Uuid) -> Self {
        Self {
            cursor,
            state: State::Active,
            state_reason: None,
            state_since: None,
            last_attempt_at: None,
            last_success_at: None,
            last_error: None,
            last_error_at: None,
            failures: 0,
            failing_since: None,
            next_attempt_at: None,
            delivered: 0,
        }
    }
}

/// One endpoint as `webhook list` and `GET /v1/admin/webhooks` show it:
/// everything but its secrets.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointInfo {
    /// Unique name.
    pub name: String,
    /// Where events are POSTed.
    pub url: String,
    /// Which events, as given.
    pub filters: FilterTerms,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Attempt timeout in seconds.
    pub timeout_secs: f64,
    /// `active`, `failing`, `paused` or `disabled`.
    pub state: State,
    /// Why (failing, paused, disabled).
    pub state_reason: Option<String>,
    /// Since when.
    pub state_since: Option<DateTime<Utc>>,
    /// Every matching event up to this id was delivered.
    pub cursor: Uuid,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The last attempt.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The last 2xx.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The last failure's reason.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// Failed attempts in a row.
    pub failures_in_a_row: u32,
    /// When the next retry is due, while one is.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Events delivered in total.
    pub delivered: u64,
    /// While a rotated secret still signs beside the new one: until when.
    pub previous_secret_until: Option<DateTime<Utc>>,
}

/// What the delivery worker runs on: the operator's settings, the secrets
/// that sign now, and the progress stored when the settings were read.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Row id (names can be reused after a delete; ids are not).
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Where events are POSTed.
    pub url: Url,
    /// Which events; `Err` when the stored terms no longer parse (the
    /// endpoint is paused with that error rather than delivering everything).
    pub filter: Result<Filter, FilterError>,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Attempt timeout.
    pub timeout: Duration,
    /// The secret that signs every delivery.
    pub secret: SigningSecret,
    /// The secret before the last rotation, and until when it still signs
    /// beside [`Endpoint::secret`].
    pub previous: Option<(SigningSecret, DateTime<Utc>)>,
    /// Bumped by every operator change of the progress (enable, disable,
    /// replay): the worker starts over from [`Endpoint::progress`], and a
    /// progress write of an older epoch is ignored.
    pub epoch: i64,
    /// Bumped by every operator change at all.
    pub revision: i64,
    /// The progress as stored when this was read.
    pub progress: Progress,
}

impl Endpoint {
    /// The secrets that sign a delivery attempted at `now`: the current
    /// one, and the rotated one until its overlap ends.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> Vec<SigningSecret> {
        let mut out = vec![self.secret.clone()];
        if let Some((previous, until)) = &self.previous {
            if now < *until {
                out.push(previous.clone());
            }
        }
        out
    }
}

/// Checks an endpoint name: the rules of API key names.
pub fn validate_name(name: &str) -> Result<(), WebhookError> {
    crate::keys::validate_name(name).map_err(|e| WebhookError::InvalidName {
        name: name.to_owned(),
        reason: match e {
            crate::keys::KeyError::InvalidName { reason, .. } => reason,
            other => other.to_string(),
        },
    })
}

/// An absolute http(s) URL with a host; no credentials in it are refused
/// (Basic auth to a receiver is common).
pub fn parse_url(raw: &str) -> Result<Url, WebhookError> {
    let invalid = |reason: String| WebhookError::InvalidUrl {
        url: crate::redact::redact_url_text(raw),
        reason,
    };
    let url = Url::parse(raw.trim()).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "the scheme is `{}`; webhooks are POSTed over http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host".to_owned()));
    }
    if url.fragment().is_some() {
        return Err(invalid(
            "a fragment (`#…`) is never sent; remove it".to_owned(),
        ));
    }
    Ok(url)
}

fn validate_concurrency(c: usize) -> Result<(), WebhookError> {
    if (1..=MAX_CONCURRENCY).contains(&c) {
        return Ok(());
    }
    Err(WebhookError::InvalidSetting {
        field: "concurrency",
        reason: format!("{c} is not between 1 and {MAX_CONCURRENCY}"),
    })
}

fn validate_timeout(t: Duration) -> Result<(), WebhookError> {
    if t >= Duration::from_secs(1) && t <= MAX_TIMEOUT {
        return Ok(());
    }
    Err(WebhookError::InvalidSetting {
        field: "timeout",
        reason: format!(
            "{} is not between 1s and {}s",
            humantime::format_duration(t),
            MAX_TIMEOUT.as_secs()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_endpoints_are_checked() {
        let ok = NewEndpoint::new("hook-1", "https://example.com/in");
        assert!(ok.validate().is_ok());
        let mut bad = ok.clone();
        bad.url = "ftp://example.com/".into();
        assert!(matches!(
            bad.validate(),
            Err(WebhookError::InvalidUrl { .. })
        ));
        bad.url = "not a url".into();
        assert!(matches!(
            bad.validate(),
            Err(WebhookError::InvalidUrl { .. })
        ));
        let mut bad = ok.clone();
        bad.name = "a b".into();
        assert!(matches!(
            bad.validate(),
            Err(WebhookError::InvalidName { .. })
        ));
        let mut bad = ok.clone();
        bad.concurrency = 0;
        assert!(matches!(
            bad.validate(),
            Err(WebhookError::InvalidSetting {
                field: "concurrency",
                ..
            })
        ));
        let mut bad = ok.clone();
        bad.timeout = Duration::from_secs(61);
        assert!(matches!(
            bad.validate(),
            Err(WebhookError::InvalidSetting {
                field: "timeout",
                ..
            })
        ));
        let mut bad = ok;
        bad.filters.source_type = vec!["xml".into()];
        let Err(WebhookError::Filter(e)) = bad.validate() else {
            panic!("a bad source_type is a filter error");
        };
        assert_eq!(e.parameter, "source_type");
        assert_eq!(
            e.detail,
            "`xml` is not a source type; expected one of rss, json, html, firehose"
        );
    }

    #[test]
    fn since_and_describe() {
        assert_eq!(Since::parse("now"), Ok(Since::Now));
        assert_eq!(
            Since::parse("nope").map_err(|e| e.parameter),
            Err("since".to_owned())
        );
        let terms = FilterTerms {
            source: vec!["a.*".into()],
            tag: vec!["x".into()],
            ..Default::default()
        };
        assert_eq!(terms.describe(), "source=a.* tag=x");
        assert_eq!(FilterTerms::default().describe(), "all events");
        assert!(FilterTerms::default().is_empty());
    }
}
