//! Stage 2 of config loading: raw spanned values become typed settings
//! (`SourceId`, `Url`, `Duration`, `cron::Schedule`, `Regex`, …); every
//! semantic problem is recorded at its line and a default stands in, so one
//! pass reports everything that is wrong.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{truncate, Issues, RawConfig, RawSize, RawSource, Span, S};
use super::{
    Cadence, Config, EdgeConfig, EngineConfig, FetchConfig, FieldMap, FirehoseFormat,
    FirehoseSettings, HtmlSettings, SourceConfig, SourceId, SourceKind, Tiers,
};
use crate::event::SourceType;

/// Shortest poll interval (`interval`, tiers).
pub(super) const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest poll interval; rarer polls are a `schedule`.
pub(super) const MAX_INTERVAL: Duration = Duration::from_secs(7 * 86_400);
/// Shortest retention: resume needs a window.
pub(super) const MIN_RETENTION: Duration = Duration::from_secs(60);
/// Longest retention (ten years).
pub(super) const MAX_RETENTION: Duration = Duration::from_secs(3650 * 86_400);
/// Bounds of `edge.keepalive`: proxies drop idle connections after about a minute.
const KEEPALIVE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));
/// Bounds of `fetch.timeout` and `fetch.connect_timeout`.
const TIMEOUT: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(600));
/// Bounds of `fetch.max_body` in bytes (1 KiB ..= 1 GiB).
const MAX_BODY: (u64, u64) = (1024, 1 << 30);
/// Bounds of `fetch.per_host_rps`.
const RPS: (f64, f64) = (0.001, 1000.0);
/// Bounds of `fetch.per_host_concurrency`.
const CONCURRENCY: (i64, i64) = (1, 100);
/// Bounds of `edge.max_connections`.
const MAX_CONNECTIONS: (i64, i64) = (1, 10_000_000);
/// Default of `edge.max_connections`.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 50_000;
/// Bounds of `fetch.max_redirects`.
const REDIRECTS: (i64, i64) = (0, 20);
/// Upper bound of `initial_items`.
const MAX_INITIAL_ITEMS: i64 = 100_000;
/// Upper bound of `min_change`.
const MAX_MIN_CHANGE: i64 = 1_000_000;
/// Longest tag.
const MAX_TAG_LEN: usize = 64;
/// Longest User-Agent.
const MAX_USER_AGENT_LEN: usize = 512;

/// Headers a source may not set: the fetcher owns them.
const RESERVED_HEADERS: &[(&str, &str)] = &[
    ("host", "it is taken from `url`"),
    ("user-agent", "set `user_agent` on the source instead"),
    ("content-length", "the fetcher sets it"),
    ("transfer-encoding", "the fetcher sets it"),
    ("connection", "the fetcher manages connections"),
    ("if-none-match", "the fetcher sends it for conditional GET"),
    (
        "if-modified-since",
        "the fetcher sends it for conditional GET",
    ),
    ("accept-encoding", "the fetcher negotiates compression"),
];

/// Builds the typed config. Problems go to `issues`; the caller rejects the
/// result when there are any.
pub(super) fn build(issues: &mut Issues<'_>, path: &Path, raw: RawConfig) -> Config {
    let mut v = Validator { issues };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();

    let database = match &raw.engine.database {
        Some(d) if d.get_ref().trim().is_empty() => {
            v.push(
                d,
                "engine.database",
                "must not be empty; e.g. \"livestrom.db\"",
            );
            PathBuf::from("livestrom.db")
        }
        Some(d) => PathBuf::from(d.get_ref()),
        None => PathBuf::from("livestrom.db"),
    };
    let engine = EngineConfig {
        database: if database.is_absolute() {
            database
        } else {
            base.join(database)
        },
        retention: v.duration(
            &raw.engine.retention,
            "engine.retention",
            Duration::from_secs(7 * 86_400),
            (MIN_RETENTION, MAX_RETENTION),
        ),
    };

    let listen = match &raw.edge.listen {
        Some(l) => match l.get_ref().trim().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                v.push(
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
    let cors_origins = match &raw.edge.cors_origins {
        Some(list) => {
            for (i, o) in list.iter().enumerate() {
                if let Err(e) = check_origin(o.get_ref()) {
                    v.push(o, &format!("edge.cors_origins[{i}]"), e);
                }
            }
            list.iter().map(|o| o.get_ref().clone()).collect()
        }
        None => vec!["*".to_owned()],
    };
    let edge = EdgeConfig {
        listen,
        keepalive: v.duration(
            &raw.edge.keepalive,
            "edge.keepalive",
            Duration::from_secs(25),
            KEEPALIVE,
        ),
        cors_origins,
        max_connections: v.ranged(
            &raw.edge.max_connections,
            "edge.max_connections",
            DEFAULT_MAX_CONNECTIONS as i64,
            MAX_CONNECTIONS,
        ) as usize,
    };

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

    let mut sources = Vec::with_capacity(raw.sources.len());
    // id → (index, line) of its first definition.
    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for s in &raw.sources {
        if let Some(id) = &s.id {
            let line = v.issues.line_of(id.span().start);
            if let Some((first, first_line)) = seen.get(id.get_ref()) {
                v.push(
                    id,
                    &format!("source[{}].id", s.index),
                    format!(
                        "duplicate id `{}`: already used by source[{first}] on line {first_line}",
                        id.get_ref()
                    ),
                );
            } else {
                seen.insert(id.get_ref().clone(), (s.index, line));
            }
        }
        if let Some(src) = v.source(s, &tiers) {
            sources.push(src);
        }
    }

    Config {
        path: path.to_owned(),
        engine,
        edge,
        fetch,
        tiers,
        sources,
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

/// Why `p` is not an RFC 6901 JSON pointer.
pub(super) fn pointer_problem(p: &str) -> Option<String> {
    if p.is_empty() {
        return None;
    }
    if !p.starts_with('/') {
        let fixed = format!("/{}", p.replace('.', "/"));
        return Some(format!(
            "`{}` is not a JSON pointer: it must be empty or start with `/` (did you mean \"{}\"?)",
            truncate(p),
            truncate(&fixed)
        ));
    }
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Some(format!(
                "`{}` is not a JSON pointer: `~` must be followed by 0 or 1 (`~0` means `~`, `~1` means `/`)",
                truncate(p)
            ));
        }
    }
    None
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

    fn fetch(&mut self, raw: &RawConfig) -> FetchConfig {
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
                    RawSize::Text(t) => super::parse_size(t),
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
        let shown = crate::fetch::redact_url_text(text);
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

    /// One source; `None` when it has any problem (already recorded).
    fn source(&mut self, s: &RawSource, tiers: &Tiers) -> Option<SourceConfig> {
        let before = self.issues.list.len();
        let f = |name: &str| format!("source[{}].{name}", s.index);

        let id =
            s.id.as_ref()
                .and_then(|id| match SourceId::parse(id.get_ref()) {
                    Ok(parsed) => Some(parsed),
                    Err(e) => {
                        self.push(id, &f("id"), e);
                        None
                    }
                });
        let source_type = s.kind.as_ref().and_then(|k| match k.get_ref().as_str() {
            "rss" | "atom" => Some(SourceType::Rss),
            "json" => Some(SourceType::Json),
            "html" => Some(SourceType::Html),
            "firehose" => Some(SourceType::Firehose),
            other => {
                self.push(
                    k,
                    &f("type"),
                    format!("unknown type `{}`; expected rss (also Atom), json (JSON Feed), html or firehose", truncate(other)),
                );
                None
            }
        });
        let url = s.url.as_ref().and_then(|u| match check_url(u.get_ref()) {
            Ok(url) => Some(url),
            Err(e) => {
                self.push(u, &f("url"), e);
                None
            }
        });
        for (i, t) in s.tags.iter().enumerate() {
            let tag = t.get_ref();
            if tag.is_empty()
                || tag.chars().count() > MAX_TAG_LEN
                || tag.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                self.push(
                    t,
                    &format!("source[{}].tags[{i}]", s.index),
                    format!(
                        "`{}` is not a valid tag: use 1-{MAX_TAG_LEN} characters without spaces",
                        truncate(tag)
                    ),
                );
            }
        }
        let cadence = self.cadence(s, &f, source_type, tiers);
        let initial_items = s.initial_items.as_ref().and_then(|n| {
            let v = *n.get_ref();
            if (0..=MAX_INITIAL_ITEMS).contains(&v) {
                Some(v as usize)
            } else {
                self.push(
                    n,
                    &f("initial_items"),
                    format!("{v} is out of range: must be between 0 and {MAX_INITIAL_ITEMS}"),
                );
                None
            }
        });
        let user_agent = match &s.user_agent {
            Some(ua) if self.user_agent(ua, &f("user_agent")) => Some(ua.get_ref().clone()),
            _ => None,
        };
        let headers = self.headers(s, &f);
        let kind = source_type.and_then(|t| self.kind(s, &f, t));

        if self.issues.list.len() != before {
            return None;
        }
        Some(SourceConfig {
            id: id?,
            source_type: source_type?,
            kind: kind?,
            url: url?,
            tags: s.tags.iter().map(|t| t.get_ref().clone()).collect(),
            cadence: cadence?,
            user_agent,
            headers,
            initial_items,
        })
    }

    fn cadence(
        &mut self,
        s: &RawSource,
        f: &dyn Fn(&str) -> String,
        source_type: Option<SourceType>,
        tiers: &Tiers,
    ) -> Option<Cadence> {
        match (&s.interval, &s.schedule) {
            (Some(_), Some(sch)) => {
                self.push(
                    sch,
                    &f("schedule"),
                    "set either `interval` or `schedule`, not both",
                );
                None
            }
            (None, Some(sch)) => match parse_schedule(sch.get_ref()) {
                Ok(c) => Some(Cadence::Cron(Box::new(c))),
                Err(e) => {
                    self.push(sch, &f("schedule"), e);
                    None
                }
            },
            (Some(iv), None) => {
                match checked_duration(iv.get_ref(), (MIN_INTERVAL, MAX_INTERVAL)) {
                    Ok(d) => Some(Cadence::Every(d)),
                    Err(e) => {
                        let e = if e.contains("too long") {
                            format!("{e}; for rarer polls use `schedule`")
                        } else {
                            e
                        };
                        self.push(iv, &f("interval"), e);
                        None
                    }
                }
            }
            (None, None) => source_type.map(|t| Cadence::Every(tiers.for_type(t))),
        }
    }

    fn headers(&mut self, s: &RawSource, f: &dyn Fn(&str) -> String) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        // lowercase name → line of first definition
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (k, val) in &s.headers {
            let name = k.get_ref();
            let field = f(&format!("headers.{name}"));
            let lower = name.to_ascii_lowercase();
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.push(
                    k,
                    &field,
                    format!("`{}` is not a valid HTTP header name", truncate(name)),
                );
                continue;
            }
            if let Some((_, why)) = RESERVED_HEADERS.iter().find(|(h, _)| *h == lower) {
                self.push(
                    k,
                    &field,
                    format!("`{name}` cannot be set per source: {why}"),
                );
                continue;
            }
            if let Some(first) = seen.get(&lower) {
                self.push(k, &field, format!("header `{name}` is already set on line {first} (names are case-insensitive)"));
                continue;
            }
            seen.insert(lower, self.issues.line_of(k.span().start));
            if reqwest::header::HeaderValue::from_str(val.get_ref()).is_err() {
                self.push(val, &field, "the value contains characters not allowed in an HTTP header (control characters or non-ASCII)");
                continue;
            }
            out.insert(name.clone(), val.get_ref().clone());
        }
        out
    }

    fn kind(
        &mut self,
        s: &RawSource,
        f: &dyn Fn(&str) -> String,
        t: SourceType,
    ) -> Option<SourceKind> {
        let html_only = [
            ("selector", s.selector.as_ref().map(|x| x.span())),
            ("ignore", s.ignore.as_ref().map(|x| x.span())),
            ("ignore_text", s.ignore_text.as_ref().map(|x| x.span())),
            ("min_change", s.min_change.as_ref().map(|x| x.span())),
        ];
        let firehose_only = [
            ("format", s.format.as_ref().map(|x| x.span())),
            ("items", s.items.as_ref().map(|x| x.span())),
            ("fields", s.fields.as_ref().map(|x| x.span())),
        ];
        let reject = |v: &mut Self, fields: &[(&str, Option<Span>)], only: &str| {
            for (name, span) in fields {
                if let Some(span) = span {
                    v.push_span(
                        span.clone(),
                        &f(name),
                        format!(
                            "only allowed on `type = \"{only}\"` sources (this source is `{}`)",
                            t.as_str()
                        ),
                    );
                }
            }
        };
        match t {
            SourceType::Rss => {
                reject(self, &html_only, "html");
                reject(self, &firehose_only, "firehose");
                Some(SourceKind::Rss)
            }
            SourceType::Json => {
                reject(self, &html_only, "html");
                reject(self, &firehose_only, "firehose");
                Some(SourceKind::Json)
            }
            SourceType::Html => {
                reject(self, &firehose_only, "firehose");
                self.html(s, f).map(SourceKind::Html)
            }
            SourceType::Firehose => {
                reject(self, &html_only, "html");
                self.firehose(s, f).map(SourceKind::Firehose)
            }
        }
    }

    fn html(&mut self, s: &RawSource, f: &dyn Fn(&str) -> String) -> Option<HtmlSettings> {
        let mut ok = true;
        let mut h = HtmlSettings::default();
        if let Some(sel) = &s.selector {
            match css_problem(sel.get_ref()) {
                Some(e) => {
                    let e = if sel.get_ref().trim().is_empty() {
                        "must not be empty; leave `selector` out to watch the whole page body"
                            .to_owned()
                    } else {
                        e
                    };
                    self.push(sel, &f("selector"), e);
                    ok = false;
                }
                None => h.selector = Some(sel.get_ref().clone()),
            }
        }
        if let Some(ig) = &s.ignore {
            for (i, sel) in ig.get_ref().iter().enumerate() {
                if let Some(e) = css_problem(sel.get_ref()) {
                    self.push(sel, &f(&format!("ignore[{i}]")), e);
                    ok = false;
                }
            }
            h.ignore = ig.get_ref().iter().map(|x| x.get_ref().clone()).collect();
        }
        if let Some(it) = &s.ignore_text {
            for (i, re) in it.get_ref().iter().enumerate() {
                let field = f(&format!("ignore_text[{i}]"));
                if re.get_ref().is_empty() {
                    self.push(
                        re,
                        &field,
                        "must not be empty: an empty pattern removes nothing",
                    );
                    ok = false;
                    continue;
                }
                match regex::Regex::new(re.get_ref()) {
                    Ok(r) => h.ignore_text.push(r),
                    Err(e) => {
                        self.push(
                            re,
                            &field,
                            format!(
                                "`{}` is not a regex: {}",
                                truncate(re.get_ref()),
                                regex_reason(&e)
                            ),
                        );
                        ok = false;
                    }
                }
            }
        }
        if let Some(m) = &s.min_change {
            let v = *m.get_ref();
            if (0..=MAX_MIN_CHANGE).contains(&v) {
                h.min_change = v as usize;
            } else {
                self.push(
                    m,
                    &f("min_change"),
                    format!(
                        "{v} is out of range: must be between 0 and {MAX_MIN_CHANGE} characters"
                    ),
                );
                ok = false;
            }
        }
        ok.then_some(h)
    }

    fn firehose(&mut self, s: &RawSource, f: &dyn Fn(&str) -> String) -> Option<FirehoseSettings> {
        let mut ok = true;
        let format = match &s.format {
            None => FirehoseFormat::Json,
            Some(fm) => match fm.get_ref().as_str() {
                "json" => FirehoseFormat::Json,
                "ndjson" => FirehoseFormat::Ndjson,
                "sse" => FirehoseFormat::Sse,
                other => {
                    self.push(
                        fm,
                        &f("format"),
                        format!(
                            "unknown format `{}`; expected json, ndjson or sse",
                            truncate(other)
                        ),
                    );
                    ok = false;
                    FirehoseFormat::Json
                }
            },
        };
        let mut pointer = |v: &mut Self, name: &str, p: &Option<S<String>>| -> Option<String> {
            let p = p.as_ref()?;
            if let Some(e) = pointer_problem(p.get_ref()) {
                v.push(p, &f(name), e);
                ok = false;
            }
            Some(p.get_ref().clone())
        };
        let items = pointer(self, "items", &s.items);
        let fields = match &s.fields {
            Some(fs) => {
                let fs = fs.get_ref();
                FieldMap {
                    id: pointer(self, "fields.id", &fs.id),
                    title: pointer(self, "fields.title", &fs.title),
                    url: pointer(self, "fields.url", &fs.url),
                    content: pointer(self, "fields.content", &fs.content),
                }
            }
            None => FieldMap::default(),
        };
        ok.then_some(FirehoseSettings {
            format,
            items,
            fields,
        })
    }
}

/// Parses a duration and checks it is within `bounds`.
fn checked_duration(text: &str, (min, max): (Duration, Duration)) -> Result<Duration, String> {
    let d = super::parse_duration(text)?;
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

/// An absolute http(s) URL with a host.
fn check_url(text: &str) -> Result<url::Url, String> {
    // Source URLs may carry credentials; the message shows them redacted.
    let redacted = crate::fetch::redact_url_text(text);
    let shown = truncate(&redacted);
    match url::Url::parse(text.trim()) {
        Ok(u) if !matches!(u.scheme(), "http" | "https") => Err(format!(
            "`{shown}` has scheme `{}`; only http and https URLs can be polled",
            u.scheme()
        )),
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Err(format!("`{shown}` has no host")),
        Ok(u) => Ok(u),
        Err(url::ParseError::RelativeUrlWithoutBase) => Err(format!(
            "`{shown}` is not an absolute URL; did you mean \"https://{}\"?",
            truncate(redacted.trim().trim_start_matches('/'))
        )),
        Err(e) => Err(format!("`{shown}` is not a URL: {e}")),
    }
}

/// Parses a cron expression (`cron` crate: seconds first, optional year) that
/// fires at least once more.
fn parse_schedule(text: &str) -> Result<cron::Schedule, String> {
    let t = text.trim();
    let shown = truncate(t);
    let schedule: cron::Schedule = t.parse().map_err(|e| {
        let hint = if t.split_whitespace().count() == 5 {
            format!("this looks like a 5-field crontab line; add a seconds field first: \"0 {shown}\"")
        } else {
            "use 6 fields (sec min hour day-of-month month day-of-week) or 7 with a year, e.g. \"0 */5 * * * *\"".to_owned()
        };
        format!("`{shown}` is not a cron expression ({e}); {hint}")
    })?;
    if schedule.upcoming(chrono::Utc).next().is_none() {
        return Err(format!(
            "`{shown}` never fires again: no future time matches it"
        ));
    }
    Ok(schedule)
}

/// Why `s` is not a CSS selector scraper can use.
fn css_problem(s: &str) -> Option<String> {
    if s.trim().is_empty() {
        return Some("an empty CSS selector matches nothing".to_owned());
    }
    scraper::Selector::parse(s).err().map(|e| {
        format!(
            "`{}` is not a CSS selector: {}",
            truncate(s),
            css_reason(&e.to_string())
        )
    })
}

/// scraper's error text on one line, without its "please report" boilerplate
/// and with bare variant names (`DanglingCombinator`) as words.
fn css_reason(text: &str) -> String {
    let parts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Unexpected error occurred"))
        .map(|l| {
            if l.chars().all(|c| c.is_ascii_alphanumeric()) {
                let mut words = String::new();
                for (i, c) in l.chars().enumerate() {
                    if c.is_ascii_uppercase() && i > 0 {
                        words.push(' ');
                    }
                    words.push(c.to_ascii_lowercase());
                }
                words
            } else {
                l.to_owned()
            }
        })
        .collect();
    if parts.is_empty() {
        "invalid selector".to_owned()
    } else {
        parts.join("; ")
    }
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

/// The one-line reason of a regex error (its Display spans several lines).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
        })
}

/// The default User-Agent: product, version and project URL.
pub(crate) fn default_user_agent() -> String {
    format!(
        "livestrom/{} (+https://github.com/livestrom/livestrom)",
        env!("CARGO_PKG_VERSION")
    )
}
