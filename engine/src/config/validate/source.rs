//! One `[[source]]`: id, type, URL, tags, cadence (`interval` or
//! `schedule`), User-Agent and headers, and the settings of its kind (html
//! selectors, firehose format and pointers); ids used twice across sources.

use std::collections::BTreeMap;

use super::{checked_duration, Validator, MAX_INTERVAL, MIN_INTERVAL};
use crate::config::raw::{truncate, RawSource, Span, S};
use crate::config::{
    Cadence, FieldMap, FirehoseFormat, FirehoseSettings, HtmlSettings, SourceConfig, SourceId,
    SourceKind, Tiers,
};
use crate::event::SourceType;

/// Upper bound of `initial_items`.
const MAX_INITIAL_ITEMS: i64 = 100_000;
/// Upper bound of `min_change`.
const MAX_MIN_CHANGE: i64 = 1_000_000;
/// Longest tag.
const MAX_TAG_LEN: usize = 64;

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

impl Validator<'_, '_> {
    /// The sources without problems, in file order; an id already used by an
    /// earlier source is reported where it is used again.
    pub(super) fn sources(&mut self, raw: &[RawSource], tiers: &Tiers) -> Vec<SourceConfig> {
        let mut sources = Vec::with_capacity(raw.len());
        // id → (index, line) of its first definition.
        let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for s in raw {
            if let Some(id) = &s.id {
                let line = self.issues.line_of(id.span().start);
                if let Some((first, first_line)) = seen.get(id.get_ref()) {
                    self.push(
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
            if let Some(src) = self.source(s, tiers) {
                sources.push(src);
            }
        }
        sources
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
                        self.push(id, &f("id"), e.to_string());
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

/// Why `p` is not an RFC 6901 JSON pointer.
fn pointer_problem(p: &str) -> Option<String> {
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

/// An absolute http(s) URL with a host.
fn check_url(text: &str) -> Result<url::Url, String> {
    // Source URLs may carry credentials; the message shows them redacted.
    let redacted = crate::redact::redact_url_text(text);
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
