//! Stage 1 of config loading: the file as serde sees it, with spans for messages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{
    Cadence, Config, ConfigError, ConfigIssue, EdgeConfig, EngineConfig, FetchConfig, FieldMap,
    FirehoseFormat, FirehoseSettings, HtmlSettings, SourceConfig, SourceId, SourceKind, Tiers,
};
use crate::event::SourceType;

type S<T> = Spanned<T>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    engine: RawEngine,
    #[serde(default)]
    edge: RawEdge,
    #[serde(default)]
    fetch: RawFetch,
    #[serde(default)]
    tiers: RawTiers,
    #[serde(default)]
    source: Vec<S<RawSource>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    /// default `livestrom.db`, relative to the config file's folder
    database: Option<S<String>>,
    /// default `7d`
    retention: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEdge {
    /// default `127.0.0.1:8080`
    listen: Option<S<String>>,
    /// default `25s`
    keepalive: Option<S<String>>,
    /// default `["*"]`
    cors_origins: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFetch {
    user_agent: Option<String>,
    /// default `20s`
    timeout: Option<S<String>>,
    /// default `10s`
    connect_timeout: Option<S<String>>,
    /// default `10MB`
    max_body: Option<S<String>>,
    /// default 1
    per_host_rps: Option<S<f64>>,
    /// default 2
    per_host_concurrency: Option<S<i64>>,
    /// default false
    allow_private_networks: Option<bool>,
    /// default 5
    max_redirects: Option<S<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTiers {
    firehose: Option<S<String>>,
    rss: Option<S<String>>,
    json: Option<S<String>>,
    html: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    id: S<String>,
    #[serde(rename = "type")]
    kind: S<String>,
    url: S<String>,
    #[serde(default)]
    tags: Vec<String>,
    interval: Option<S<String>>,
    schedule: Option<S<String>>,
    user_agent: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    initial_items: Option<S<i64>>,
    // html
    selector: Option<S<String>>,
    ignore: Option<S<Vec<String>>>,
    ignore_text: Option<S<Vec<String>>>,
    min_change: Option<S<i64>>,
    // firehose
    format: Option<S<String>>,
    items: Option<S<String>>,
    fields: Option<S<FieldMap>>,
}

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    issues: Vec<ConfigIssue>,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].bytes().filter(|b| *b == b'\n').count() + 1
    }

    fn push(&mut self, span: Option<std::ops::Range<usize>>, field: impl Into<String>, message: impl Into<String>) {
        let line = span.map(|s| self.line_of(s.start));
        self.issues.push(ConfigIssue {
            file: self.file.to_owned(),
            line,
            field: field.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, v: &Option<S<String>>, field: &str, default: Duration) -> Duration {
        let Some(v) = v else { return default };
        match super::parse_duration(v.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.push(Some(v.span()), field, "must be greater than zero");
                default
            }
            Err(e) => {
                self.push(Some(v.span()), field, e);
                default
            }
        }
    }
}

pub(super) fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let mut cx = Ctx { file: path, text, issues: Vec::new() };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let field = e
                .message()
                .split('`')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_else(|| "(syntax)".into());
            cx.push(e.span(), field, e.message().trim().to_owned());
            return Err(ConfigError::Invalid(cx.issues));
        }
    };

    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let database = match &raw.engine.database {
        Some(d) if d.get_ref().trim().is_empty() => {
            cx.push(Some(d.span()), "engine.database", "must not be empty");
            PathBuf::from("livestrom.db")
        }
        Some(d) => PathBuf::from(d.get_ref()),
        None => PathBuf::from("livestrom.db"),
    };
    let database = if database.is_absolute() { database } else { base.join(database) };
    let engine = EngineConfig {
        database,
        retention: cx.duration(&raw.engine.retention, "engine.retention", Duration::from_secs(7 * 86400)),
    };

    let listen = match &raw.edge.listen {
        Some(l) => match l.get_ref().parse() {
            Ok(a) => a,
            Err(_) => {
                cx.push(Some(l.span()), "edge.listen", format!("`{}` is not a socket address like 127.0.0.1:8080", l.get_ref()));
                default_listen()
            }
        },
        None => default_listen(),
    };
    let edge = EdgeConfig {
        listen,
        keepalive: cx.duration(&raw.edge.keepalive, "edge.keepalive", Duration::from_secs(25)),
        cors_origins: raw.edge.cors_origins.clone().unwrap_or_else(|| vec!["*".into()]),
    };

    let max_body = match &raw.fetch.max_body {
        Some(m) => match super::parse_size(m.get_ref()) {
            Ok(n) => n,
            Err(e) => {
                cx.push(Some(m.span()), "fetch.max_body", e);
                10_000_000
            }
        },
        None => 10_000_000,
    };
    let per_host_rps = match &raw.fetch.per_host_rps {
        Some(r) if !(r.get_ref().is_finite() && *r.get_ref() > 0.0) => {
            cx.push(Some(r.span()), "fetch.per_host_rps", "must be a positive number");
            1.0
        }
        Some(r) => *r.get_ref(),
        None => 1.0,
    };
    let per_host_concurrency = match &raw.fetch.per_host_concurrency {
        Some(c) if *c.get_ref() < 1 || *c.get_ref() > 1000 => {
            cx.push(Some(c.span()), "fetch.per_host_concurrency", "must be between 1 and 1000");
            2
        }
        Some(c) => *c.get_ref() as usize,
        None => 2,
    };
    let max_redirects = match &raw.fetch.max_redirects {
        Some(c) if *c.get_ref() < 0 || *c.get_ref() > 20 => {
            cx.push(Some(c.span()), "fetch.max_redirects", "must be between 0 and 20");
            5
        }
        Some(c) => *c.get_ref() as usize,
        None => 5,
    };
    let fetch = FetchConfig {
        user_agent: raw.fetch.user_agent.clone().unwrap_or_else(default_user_agent),
        timeout: cx.duration(&raw.fetch.timeout, "fetch.timeout", Duration::from_secs(20)),
        connect_timeout: cx.duration(&raw.fetch.connect_timeout, "fetch.connect_timeout", Duration::from_secs(10)),
        max_body,
        per_host_rps,
        per_host_concurrency,
        allow_private_networks: raw.fetch.allow_private_networks.unwrap_or(false),
        max_redirects,
    };
    let tiers = Tiers {
        firehose: cx.duration(&raw.tiers.firehose, "tiers.firehose", Duration::from_secs(5)),
        rss: cx.duration(&raw.tiers.rss, "tiers.rss", Duration::from_secs(120)),
        json: cx.duration(&raw.tiers.json, "tiers.json", Duration::from_secs(120)),
        html: cx.duration(&raw.tiers.html, "tiers.html", Duration::from_secs(900)),
    };

    let mut sources = Vec::with_capacity(raw.source.len());
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, s) in raw.source.iter().enumerate() {
        let line = cx.line_of(s.span().start);
        if let Some(src) = source(&mut cx, i, s.get_ref(), &tiers) {
            if let Some(prev) = seen.insert(src.id.as_str().to_owned(), line) {
                let span = s.get_ref().id.span();
                cx.push(
                    Some(span),
                    format!("source[{i}].id"),
                    format!("duplicate id `{}` (first defined on line {prev})", src.id),
                );
            }
            sources.push(src);
        }
    }

    if !cx.issues.is_empty() {
        return Err(ConfigError::Invalid(cx.issues));
    }
    Ok(Config { path: path.to_owned(), engine, edge, fetch, tiers, sources })
}

fn source(cx: &mut Ctx<'_>, i: usize, s: &RawSource, tiers: &Tiers) -> Option<SourceConfig> {
    let f = |name: &str| format!("source[{i}].{name}");
    let before = cx.issues.len();
    let id = match SourceId::parse(s.id.get_ref()) {
        Ok(id) => Some(id),
        Err(e) => {
            cx.push(Some(s.id.span()), f("id"), e);
            None
        }
    };
    let source_type = match s.kind.get_ref().as_str() {
        "rss" | "atom" => Some(SourceType::Rss),
        "json" => Some(SourceType::Json),
        "html" => Some(SourceType::Html),
        "firehose" => Some(SourceType::Firehose),
        other => {
            cx.push(Some(s.kind.span()), f("type"), format!("unknown type `{other}`; expected rss, json, html or firehose"));
            None
        }
    };
    let url = match url::Url::parse(s.url.get_ref()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
        Ok(u) => {
            cx.push(Some(s.url.span()), f("url"), format!("`{}`: only http and https URLs with a host are allowed (got scheme `{}`)", s.url.get_ref(), u.scheme()));
            None
        }
        Err(e) => {
            cx.push(Some(s.url.span()), f("url"), format!("`{}` is not a URL: {e}", s.url.get_ref()));
            None
        }
    };
    for (ti, t) in s.tags.iter().enumerate() {
        if t.is_empty() || t.len() > 64 || t.chars().any(|c| c.is_control() || c.is_whitespace()) {
            cx.push(Some(s.id.span()), format!("source[{i}].tags[{ti}]"), format!("`{t}` is not a valid tag (1-64 characters, no spaces or control characters)"));
        }
    }
    let cadence = match (&s.interval, &s.schedule) {
        (Some(_), Some(sch)) => {
            cx.push(Some(sch.span()), f("schedule"), "set either `interval` or `schedule`, not both");
            None
        }
        (None, Some(sch)) => match sch.get_ref().parse::<cron::Schedule>() {
            Ok(c) => Some(Cadence::Cron(Box::new(c))),
            Err(e) => {
                cx.push(Some(sch.span()), f("schedule"), format!("`{}` is not a cron expression ({e}); use six fields, seconds first, e.g. \"0 */5 * * * *\"", sch.get_ref()));
                None
            }
        },
        (Some(_), None) => Some(Cadence::Every(cx.duration(&s.interval, &f("interval"), Duration::from_secs(60)))),
        (None, None) => source_type.map(|t| Cadence::Every(tiers.for_type(t))),
    };
    let initial_items = match &s.initial_items {
        Some(n) if *n.get_ref() < 0 => {
            cx.push(Some(n.span()), f("initial_items"), "must be zero or more");
            None
        }
        Some(n) => Some(*n.get_ref() as usize),
        None => None,
    };
    for (k, v) in &s.headers {
        if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err()
            || reqwest::header::HeaderValue::from_str(v).is_err()
        {
            cx.push(Some(s.id.span()), format!("source[{i}].headers.{k}"), "not a valid HTTP header name/value");
        }
    }

    let html_only = [("selector", s.selector.as_ref().map(|x| x.span())), ("ignore", s.ignore.as_ref().map(|x| x.span())), ("ignore_text", s.ignore_text.as_ref().map(|x| x.span())), ("min_change", s.min_change.as_ref().map(|x| x.span()))];
    let firehose_only = [("format", s.format.as_ref().map(|x| x.span())), ("items", s.items.as_ref().map(|x| x.span())), ("fields", s.fields.as_ref().map(|x| x.span()))];
    let kind = match source_type {
        Some(SourceType::Html) => {
            reject_fields(cx, &f, &firehose_only, "firehose");
            let mut h = HtmlSettings::default();
            if let Some(sel) = &s.selector {
                if let Err(e) = scraper::Selector::parse(sel.get_ref()) {
                    cx.push(Some(sel.span()), f("selector"), format!("`{}` is not a CSS selector: {e}", sel.get_ref()));
                }
                h.selector = Some(sel.get_ref().clone());
            }
            if let Some(ig) = &s.ignore {
                for sel in ig.get_ref() {
                    if let Err(e) = scraper::Selector::parse(sel) {
                        cx.push(Some(ig.span()), f("ignore"), format!("`{sel}` is not a CSS selector: {e}"));
                    }
                }
                h.ignore = ig.get_ref().clone();
            }
            if let Some(it) = &s.ignore_text {
                for re in it.get_ref() {
                    match regex::Regex::new(re) {
                        Ok(r) => h.ignore_text.push(r),
                        Err(e) => cx.push(Some(it.span()), f("ignore_text"), format!("`{re}` is not a regex: {e}")),
                    }
                }
            }
            if let Some(m) = &s.min_change {
                if *m.get_ref() < 0 {
                    cx.push(Some(m.span()), f("min_change"), "must be zero or more");
                } else {
                    h.min_change = *m.get_ref() as usize;
                }
            }
            Some(SourceKind::Html(h))
        }
        Some(SourceType::Firehose) => {
            reject_fields(cx, &f, &html_only, "html");
            let format = match &s.format {
                None => Some(FirehoseFormat::Json),
                Some(fm) => match fm.get_ref().as_str() {
                    "json" => Some(FirehoseFormat::Json),
                    "ndjson" => Some(FirehoseFormat::Ndjson),
                    "sse" => Some(FirehoseFormat::Sse),
                    other => {
                        cx.push(Some(fm.span()), f("format"), format!("unknown format `{other}`; expected json, ndjson or sse"));
                        None
                    }
                },
            };
            let check_ptr = |cx: &mut Ctx<'_>, name: &str, p: &str, span| {
                if !(p.is_empty() || p.starts_with('/')) {
                    cx.push(Some(span), f(name), format!("`{p}` is not a JSON pointer (it must be empty or start with `/`)"));
                }
            };
            if let Some(it) = &s.items {
                check_ptr(cx, "items", it.get_ref(), it.span());
            }
            let fields = s.fields.as_ref().map(|x| x.get_ref().clone()).unwrap_or_default();
            if let Some(fs) = &s.fields {
                for (n, p) in [("fields.id", &fields.id), ("fields.title", &fields.title), ("fields.url", &fields.url), ("fields.content", &fields.content)] {
                    if let Some(p) = p {
                        check_ptr(cx, n, p, fs.span());
                    }
                }
            }
            format.map(|format| SourceKind::Firehose(FirehoseSettings { format, items: s.items.as_ref().map(|x| x.get_ref().clone()), fields }))
        }
        Some(SourceType::Rss) => {
            reject_fields(cx, &f, &html_only, "html");
            reject_fields(cx, &f, &firehose_only, "firehose");
            Some(SourceKind::Rss)
        }
        Some(SourceType::Json) => {
            reject_fields(cx, &f, &html_only, "html");
            reject_fields(cx, &f, &firehose_only, "firehose");
            Some(SourceKind::Json)
        }
        None => None,
    };
    if cx.issues.len() != before {
        return None;
    }
    Some(SourceConfig {
        id: id?,
        source_type: source_type?,
        kind: kind?,
        url: url?,
        tags: s.tags.clone(),
        cadence: cadence?,
        user_agent: s.user_agent.clone(),
        headers: s.headers.clone(),
        initial_items,
    })
}

fn reject_fields(
    cx: &mut Ctx<'_>,
    f: &dyn Fn(&str) -> String,
    fields: &[(&str, Option<std::ops::Range<usize>>)],
    only_for: &str,
) {
    for (name, span) in fields {
        if let Some(span) = span {
            cx.push(Some(span.clone()), f(name), format!("only allowed on `type = \"{only_for}\"` sources"));
        }
    }
}

fn default_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// The default User-Agent: product, version and project URL.
pub(crate) fn default_user_agent() -> String {
    format!("livestrom/{} (+https://github.com/livestrom/livestrom)", env!("CARGO_PKG_VERSION"))
}
