//! Stage 2 of config loading: raw spanned values become typed settings
//! (`SourceId`, `Url`, `Duration`, `cron::Schedule`, `Regex`, …); every
//! semantic problem is recorded at its line and a default stands in, so one
//! pass reports everything that is wrong.
//!
//! One file per part of the document, each adding its checks to the
//! `Validator` (this file holds it, the checks they share and `build`,
//! which runs them in document order — the order issues are reported in):
//! - `engine`: `[engine]`.
//! - `edge`: `[edge]`.
//! - `cluster`: `[cluster]`.
//! - `fetch`: `[fetch]`.
//! - `source`: each `[[source]]` (id, type, URL, tags, cadence, headers and
//!   its kind's settings) and ids used twice.
//!
//! Dependencies point one way: the table files use this file's `Validator`
//! and shared checks, never each other.

use std::path::Path;
use std::time::Duration;

use super::raw::{truncate, Issues, RawConfig, Span, S};
use super::{Config, Tiers};

mod cluster;
mod edge;
mod engine;
mod fetch;
mod source;

/// Shortest poll interval (`interval`, tiers).
pub(super) const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest poll interval; rarer polls are a `schedule`.
pub(super) const MAX_INTERVAL: Duration = Duration::from_secs(7 * 86_400);
/// Longest User-Agent.
const MAX_USER_AGENT_LEN: usize = 512;

/// Builds the typed config. Problems go to `issues`; the caller rejects the
/// result when there are any.
pub(super) fn build(issues: &mut Issues<'_>, path: &Path, raw: RawConfig) -> Config {
    let mut v = Validator { issues };
    let engine = v.engine(path, &raw.engine);
    let edge = v.edge(&raw.edge);
    let fetch = v.fetch(&raw);
    let tier = |v: &mut Validator<'_, '_>, value: &Option<S<String>>, name: &str, default: u64| {
        v.duration(
            value,
            &format!("tiers.{name}"),
            Duration::from_secs(default),
            (MIN_INTERVAL, MAX_INTERVAL),
        )
    };
    let tiers = Tiers {
        firehose: tier(&mut v, &raw.tiers.firehose, "firehose", 5),
        rss: tier(&mut v, &raw.tiers.rss, "rss", 120),
        json: tier(&mut v, &raw.tiers.json, "json", 120),
        html: tier(&mut v, &raw.tiers.html, "html", 900),
    };
    let sources = v.sources(&raw.sources, &tiers);
    let cluster = v.cluster(raw.cluster.as_ref());

    Config {
        path: path.to_owned(),
        engine,
        edge,
        fetch,
        tiers,
        sources,
        cluster,
    }
}

/// Why `s` is not a valid source id (`None` when it is).
pub(super) fn id_problem(s: &str) -> Option<String> {
    let len = s.chars().count();
    let quoted = truncate(s);
    if s.is_empty() {
        return Some("must not be empty; use e.g. \"news.example\"".to_owned());
    }
    if len > 128 {
        return Some(format!(
            "`{quoted}` is {len} characters long; the maximum is 128"
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        let why = if c.is_ascii_uppercase() {
            format!("`{c}` is uppercase; ids are lowercase")
        } else {
            format!("`{}` is not allowed", c.escape_debug())
        };
        return Some(format!(
            "`{quoted}` is not a valid source id: {why} (allowed: a-z, 0-9, `.`, `_`, `-`)"
        ));
    }
    if !s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Some(format!(
            "`{quoted}` is not a valid source id: it must start with a letter or digit"
        ));
    }
    if s.split('.').any(str::is_empty) {
        return Some(format!(
            "`{quoted}` is not a valid source id: dots separate non-empty groups, as in \"news.bbc.world\""
        ));
    }
    None
}

/// Records each problem at its span; the table files add their checks to
/// it as methods.
struct Validator<'v, 'a> {
    issues: &'v mut Issues<'a>,
}

impl Validator<'_, '_> {
    fn push<T>(&mut self, at: &S<T>, field: &str, message: impl Into<String>) {
        self.issues.push(Some(at.span()), field, message);
    }

    fn push_span(&mut self, at: Span, field: &str, message: impl Into<String>) {
        self.issues.push(Some(at), field, message);
    }

    /// A duration within `bounds`, or `default` (absent or invalid).
    fn duration(
        &mut self,
        value: &Option<S<String>>,
        field: &str,
        default: Duration,
        bounds: (Duration, Duration),
    ) -> Duration {
        let Some(value) = value else { return default };
        match checked_duration(value.get_ref(), bounds) {
            Ok(d) => d,
            Err(e) => {
                self.push(value, field, e);
                default
            }
        }
    }

    /// A number within bounds, or `default`.
    fn ranged(
        &mut self,
        value: &Option<S<i64>>,
        field: &str,
        default: i64,
        (lo, hi): (i64, i64),
    ) -> i64 {
        match value {
            Some(n) if !(lo..=hi).contains(n.get_ref()) => {
                self.push(
                    n,
                    field,
                    format!(
                        "{} is out of range: must be between {lo} and {hi}",
                        n.get_ref()
                    ),
                );
                default
            }
            Some(n) => *n.get_ref(),
            None => default,
        }
    }

    fn user_agent(&mut self, value: &S<String>, field: &str) -> bool {
        let ua = value.get_ref();
        let problem = if ua.trim().is_empty() {
            Some("must not be empty".to_owned())
        } else if ua.len() > MAX_USER_AGENT_LEN {
            Some(format!(
                "is {} bytes long; the maximum is {MAX_USER_AGENT_LEN}",
                ua.len()
            ))
        } else if reqwest::header::HeaderValue::from_str(ua).is_err() {
            Some("contains characters not allowed in an HTTP header (control characters or non-ASCII)".to_owned())
        } else {
            None
        };
        match problem {
            Some(p) => {
                self.push(value, field, p);
                false
            }
            None => true,
        }
    }
}

/// Parses a duration and checks it is within `bounds`.
fn checked_duration(text: &str, (min, max): (Duration, Duration)) -> Result<Duration, String> {
    let d = super::parse_duration(text).map_err(|e| e.to_string())?;
    if d < min {
        return Err(format!(
            "`{}` is too short: the minimum is {}",
            text.trim(),
            short_duration(min)
        ));
    }
    if d > max {
        return Err(format!(
            "`{}` is too long: the maximum is {}",
            truncate(text.trim()),
            short_duration(max)
        ));
    }
    Ok(d)
}

/// `7d`, `5m`, `1s`, `1500ms`: the largest unit that divides the duration.
fn short_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms >= size && (ms / size) * size == ms {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}
