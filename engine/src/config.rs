//! `sources.toml`: the serde model (stage 1) and validated, typed config (stage 2).
//!
//! Stage 1 (`raw`) walks the spanned TOML document key by key: syntax errors,
//! unknown fields and wrong value types, each with its line. Stage 2
//! (`validate`) turns the raw values into types (`SourceId`, `Url`, `Cadence`,
//! `Regex`, …) and records every semantic problem. `Config::from_toml` returns
//! *all* problems at once, each as `file:line: field: message`, sorted by line.
//! `watch` re-loads the file on change or SIGHUP; `diff` says what changed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::event::SourceType;

/// A validated source id: `[a-z0-9][a-z0-9._-]*`, dots make prefix groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(String);

impl SourceId {
    /// Parses an id, returning why it is not valid.
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        match validate::id_problem(s) {
            None => Ok(Self(s.to_owned())),
            Some(why) => Err(ValueError::SourceId(why)),
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True when `s` is a valid source id (also used by the edge's filters):
/// 1-128 characters of `[a-z0-9._-]`, starting with a letter or digit, and no
/// empty dot-separated group (`a..b`, `a.` are invalid).
pub fn is_valid_id(s: &str) -> bool {
    validate::id_problem(s).is_none()
}

/// How often a source is polled.
#[derive(Debug, Clone, PartialEq)]
pub enum Cadence {
    /// Fixed interval (tier default or per-source override).
    Every(Duration),
    /// A cron expression (`cron` crate syntax, seconds field first).
    Cron(Box<cron::Schedule>),
}

/// `format` of a firehose source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirehoseFormat {
    /// Poll a JSON document.
    Json,
    /// Long-lived newline-delimited JSON stream.
    Ndjson,
    /// Long-lived upstream Server-Sent Events stream.
    Sse,
}

/// JSON pointers mapping a firehose item to event fields.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FieldMap {
    /// Pointer to the item's identity.
    pub id: Option<String>,
    /// Pointer to the title.
    pub title: Option<String>,
    /// Pointer to the item URL.
    pub url: Option<String>,
    /// Pointer to the content.
    pub content: Option<String>,
}

/// Kind-specific settings of a source.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// RSS 0.9x/1.0/2.0 or Atom.
    Rss,
    /// JSON Feed.
    Json,
    /// A feed-less HTML page, diffed between polls.
    Html(HtmlSettings),
    /// A firehose API.
    Firehose(FirehoseSettings),
}

/// Settings of an `html` source.
#[derive(Debug, Clone, Default)]
pub struct HtmlSettings {
    /// CSS selector of the watched region (default: `body`).
    pub selector: Option<String>,
    /// CSS selectors removed before diffing.
    pub ignore: Vec<String>,
    /// Regexes; matching text is removed before diffing.
    pub ignore_text: Vec<regex::Regex>,
    /// Minimum number of changed characters that counts as a change.
    pub min_change: usize,
}

/// Regexes compare by pattern: two configs with the same text are equal.
impl PartialEq for HtmlSettings {
    fn eq(&self, other: &Self) -> bool {
        self.selector == other.selector
            && self.ignore == other.ignore
            && self.min_change == other.min_change
            && self.ignore_text.len() == other.ignore_text.len()
            && self
                .ignore_text
                .iter()
                .zip(&other.ignore_text)
                .all(|(a, b)| a.as_str() == b.as_str())
    }
}

/// Settings of a `firehose` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirehoseSettings {
    /// How the upstream is read.
    pub format: FirehoseFormat,
    /// JSON pointer to the item array (json format); default: the document root.
    pub items: Option<String>,
    /// JSON pointers of the event fields.
    pub fields: FieldMap,
}

/// One validated `[[source]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// Unique id.
    pub id: SourceId,
    /// The source type as it appears in events.
    pub source_type: SourceType,
    /// Kind-specific settings.
    pub kind: SourceKind,
    /// Upstream URL (http/https).
    pub url: url::Url,
    /// Tags copied into every event.
    pub tags: Vec<String>,
    /// When to poll.
    pub cadence: Cadence,
    /// Per-source User-Agent override.
    pub user_agent: Option<String>,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Cap on items emitted by the first poll (newest N).
    pub initial_items: Option<usize>,
}

/// `[engine]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// SQLite file.
    pub database: PathBuf,
    /// How long events are kept for resume.
    pub retention: Duration,
    /// When a commit reaches the disk (`synchronous`): what a power loss
    /// can take back.
    pub synchronous: Synchronous,
}

/// `[engine] synchronous`: SQLite's `PRAGMA synchronous` for the writer,
/// in WAL mode. Neither setting loses or corrupts anything on a crash of
/// the process (kill -9); they differ only on power loss or an OS crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// `NORMAL` (default): the WAL is synced at checkpoints, not at every
    /// commit, so a power loss can roll back the last commits (events
    /// already sent to subscribers); the database stays consistent.
    #[default]
    Normal,
    /// `FULL`: every commit is synced before it is acknowledged and
    /// announced, so a power loss loses nothing acknowledged (one fsync per
    /// commit; the cost is measured in docs/PERFORMANCE.md).
    Full,
}

impl Synchronous {
    /// The pragma's value.
    pub fn pragma(self) -> &'static str {
        match self {
            Self::Normal => "NORMAL",
            Self::Full => "FULL",
        }
    }
}

/// `[edge]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// SSE keep-alive comment interval.
    pub keepalive: Duration,
    /// Allowed CORS origins (`*` = any).
    pub cors_origins: Vec<String>,
    /// Open client connections at most (any state: reading a head,
    /// streaming, idle keep-alive); past it new connections get a 503.
    pub max_connections: usize,
    /// `GET /metrics` needs `Authorization: Bearer <token>` when set; open
    /// when None.
    pub metrics_token: Option<Secret>,
}

/// A configured secret: compared and used, never printed (`Debug` shows
/// `REDACTED`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// A bearer token for `/metrics` (`edge.metrics_token`,
    /// `LIVESTROM_METRICS_TOKEN`): 16 to 256 printable ASCII characters
    /// without spaces. The message never repeats the value.
    pub fn metrics_token(t: &str) -> Result<Self, String> {
        if t.len() < 16 || t.len() > 256 {
            return Err(format!(
                "must be 16 to 256 characters long (it has {}); e.g. the output of `openssl rand -hex 24`",
                t.chars().count()
            ));
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "must be printable ASCII without spaces (it is sent as `Authorization: Bearer <token>`)"
                    .to_owned(),
            );
        }
        Ok(Self(t.to_owned()))
    }

    /// The value, to compare or send.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("REDACTED")
    }
}

/// `[fetch]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchConfig {
    /// Default User-Agent.
    pub user_agent: String,
    /// Total request timeout.
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Maximum body size after decompression.
    pub max_body: u64,
    /// Requests per second per registrable domain.
    pub per_host_rps: f64,
    /// Concurrent requests per registrable domain.
    pub per_host_concurrency: usize,
    /// Allow loopback/private targets (tests).
    pub allow_private_networks: bool,
    /// Maximum redirects followed.
    pub max_redirects: usize,
    /// Forward proxy for every upstream request (`http://` or `https://`);
    /// `None`: connect directly. Environment variables (`HTTPS_PROXY` …) are
    /// not used: the proxy is part of the config.
    pub proxy: Option<url::Url>,
}

/// `[tiers]`: default interval per source type.
#[derive(Debug, Clone, PartialEq)]
pub struct Tiers {
    /// firehose tier.
    pub firehose: Duration,
    /// rss tier.
    pub rss: Duration,
    /// json tier.
    pub json: Duration,
    /// html tier.
    pub html: Duration,
}

impl Tiers {
    /// The tier interval of a source type.
    pub fn for_type(&self, t: SourceType) -> Duration {
        match t {
            SourceType::Firehose => self.firehose,
            SourceType::Rss => self.rss,
            SourceType::Json => self.json,
            SourceType::Html => self.html,
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it was loaded from (for messages and reload).
    pub path: PathBuf,
    /// `[engine]`.
    pub engine: EngineConfig,
    /// `[edge]`.
    pub edge: EdgeConfig,
    /// `[fetch]`.
    pub fetch: FetchConfig,
    /// `[tiers]`.
    pub tiers: Tiers,
    /// `[[source]]`, in file order.
    pub sources: Vec<SourceConfig>,
    /// `[cluster]`: None on one node (SQLite is the event log).
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: several engines and edges on NATS JetStream (docs/CLUSTER.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// NATS server URLs (credentials in the URL or `LIVESTROM_NATS_CREDS`).
    pub nats: Vec<String>,
    /// Prefix of the stream, its subjects and the key-value buckets.
    pub stream: String,
    /// JetStream replicas of the stream and buckets (1–5).
    pub replicas: usize,
    /// Source lease TTL.
    pub lease: Duration,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// File the problem is in.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// Dotted field path, e.g. `source[2].interval`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(
                f,
                "{}:{}: {}: {}",
                self.file.display(),
                l,
                self.field,
                self.message
            ),
            None => write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.field,
                self.message
            ),
        }
    }
}

/// Errors loading a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file was read but is invalid; every problem is listed, one per
    /// line, sorted by line, followed by a count when there are several.
    #[error("{}", display_issues(.0))]
    Invalid(Vec<ConfigIssue>),
    /// The file (its folder) could not be watched for changes.
    #[error("cannot watch {path} for changes: {source}")]
    Watch {
        /// The file.
        path: PathBuf,
        /// Why (inotify limits, missing folder, no tokio runtime, …).
        source: std::io::Error,
    },
}

impl ConfigError {
    /// The problems of an invalid config (empty for IO/watch errors).
    pub fn issues(&self) -> &[ConfigIssue] {
        match self {
            Self::Invalid(list) => list,
            _ => &[],
        }
    }
}

fn display_issues(issues: &[ConfigIssue]) -> String {
    let mut out = issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    if issues.len() > 1 {
        out.push_str(&format!("\n{} problems found", issues.len()));
    }
    out
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(path, &text)
    }

    /// Validates config text; `path` is only used in messages.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut issues = raw::Issues::new(path, text);
        let config =
            raw::read(&mut issues, text).map(|raw| validate::build(&mut issues, path, raw));
        let mut list = issues.list;
        match config {
            Some(config) if list.is_empty() => Ok(config),
            _ => {
                // Compiler-style: in file order; issues without a line last.
                list.sort_by_key(|i| i.line.unwrap_or(usize::MAX));
                Err(ConfigError::Invalid(list))
            }
        }
    }

    /// Applies settings given outside the file (command-line flag, else
    /// environment variable, as resolved by the CLI): they win over the file.
    /// A relative `database` here is relative to the working directory, like
    /// any command-line path (in the file it is relative to the file's folder).
    pub fn apply_overrides(&mut self, database: Option<PathBuf>, listen: Option<SocketAddr>) {
        if let Some(database) = database {
            self.engine.database = database;
        }
        if let Some(listen) = listen {
            self.edge.listen = listen;
        }
    }

    /// Looks a source up by id.
    pub fn source(&self, id: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.id.as_str() == id)
    }
}

/// One configuration value that does not parse; the message says what to
/// write instead (it is shown with the file, line and field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A source id outside the id alphabet (the reason says which rule).
    #[error("{0}")]
    SourceId(String),
    /// An empty duration.
    #[error("empty duration; use e.g. \"30s\", \"2m\", \"7d\"")]
    EmptyDuration,
    /// Not humantime syntax.
    #[error(
        "`{value}` is not a duration ({reason}); use e.g. \"30s\", \"2m\", \"1h 30m\", \"7d\""
    )]
    Duration {
        /// The value as written (shortened).
        value: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A size whose number does not parse.
    #[error("`{0}` is not a size; use e.g. \"10MB\" or \"512KiB\"")]
    SizeNumber(String),
    /// A size with a unit other than B, KB, MB, GB, KiB, MiB, GiB.
    #[error("`{0}` has an unknown size unit; use B, KB, MB, GB, KiB, MiB or GiB")]
    SizeUnit(String),
    /// A size of zero or less.
    #[error("`{0}` must be a positive size")]
    SizeNotPositive(String),
}

/// Parses `"7d"`, `"2m"`, `"25s"`, `"1h 30m"` (humantime syntax).
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    if s.trim().is_empty() {
        return Err(ValueError::EmptyDuration);
    }
    humantime::parse_duration(s.trim()).map_err(|e| ValueError::Duration {
        value: raw::truncate(s.trim()),
        reason: e.to_string(),
    })
}

/// Parses `"10MB"`, `"512KiB"`, `"1048576"` into bytes.
pub fn parse_size(s: &str) -> Result<u64, ValueError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| ValueError::SizeNumber(s.to_owned()))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(ValueError::SizeUnit(s.to_owned())),
    };
    if !(n.is_finite() && n > 0.0) {
        return Err(ValueError::SizeNotPositive(s.to_owned()));
    }
    Ok((n * mult) as u64)
}

mod raw;
#[cfg(test)]
mod tests;
mod validate;
pub mod watch;

pub use watch::{diff, watch, ConfigDiff};
