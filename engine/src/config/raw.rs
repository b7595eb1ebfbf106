//! Stage 1 of config loading: the TOML document walked key by key into spanned
//! raw values, so that *every* syntax error, unknown field and wrong value type
//! is reported with its line (serde's `deny_unknown_fields` stops at the first).
//!
//! Each table is read through [`Table`], which remembers the keys it was asked
//! for; whatever is left over when the table is finished is an unknown field.
//! The keys read here *are* the schema: there is no second list to keep in sync.

use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::ConfigIssue;

/// A byte range in the config text.
pub(super) type Span = Range<usize>;

/// A value with the span it was read from.
pub(super) type S<T> = Spanned<T>;

/// The whole file, every value still unvalidated but of the right TOML type.
#[derive(Debug, Default)]
pub(super) struct RawConfig {
    /// `[engine]`.
    pub(super) engine: RawEngine,
    /// `[edge]`.
    pub(super) edge: RawEdge,
    /// `[fetch]`.
    pub(super) fetch: RawFetch,
    /// `[tiers]`.
    pub(super) tiers: RawTiers,
    /// `[[source]]`, in file order.
    pub(super) sources: Vec<RawSource>,
}

/// `[engine]`.
#[derive(Debug, Default)]
pub(super) struct RawEngine {
    /// Default `livestrom.db`, relative to the config file's folder.
    pub(super) database: Option<S<String>>,
    /// Default `7d`.
    pub(super) retention: Option<S<String>>,
}

/// `[edge]`.
#[derive(Debug, Default)]
pub(super) struct RawEdge {
    /// Default `127.0.0.1:8080`.
    pub(super) listen: Option<S<String>>,
    /// Default `25s`.
    pub(super) keepalive: Option<S<String>>,
    /// Default `["*"]`.
    pub(super) cors_origins: Option<Vec<S<String>>>,
    /// Default 50,000.
    pub(super) max_connections: Option<S<i64>>,
}

/// `max_body` may be a size string (`"10MB"`) or a number of bytes.
#[derive(Debug)]
pub(super) enum RawSize {
    /// `"10MB"`, `"512KiB"`.
    Text(String),
    /// `1048576`.
    Bytes(i64),
}

/// `[fetch]`.
#[derive(Debug, Default)]
pub(super) struct RawFetch {
    /// Default `livestrom/<version> (+https://github.com/livestrom/livestrom)`.
    pub(super) user_agent: Option<S<String>>,
    /// Default `20s`.
    pub(super) timeout: Option<S<String>>,
    /// Default `10s` (capped at `timeout`).
    pub(super) connect_timeout: Option<S<String>>,
    /// Default `10MB`.
    pub(super) max_body: Option<S<RawSize>>,
    /// Default 1.
    pub(super) per_host_rps: Option<S<f64>>,
    /// Default 2.
    pub(super) per_host_concurrency: Option<S<i64>>,
    /// Default false.
    pub(super) allow_private_networks: Option<S<bool>>,
    /// Default 5.
    pub(super) max_redirects: Option<S<i64>>,
    /// Default none.
    pub(super) proxy: Option<S<String>>,
}

/// `[tiers]`.
#[derive(Debug, Default)]
pub(super) struct RawTiers {
    /// Default `5s`.
    pub(super) firehose: Option<S<String>>,
    /// Default `2m`.
    pub(super) rss: Option<S<String>>,
    /// Default `2m`.
    pub(super) json: Option<S<String>>,
    /// Default `15m`.
    pub(super) html: Option<S<String>>,
}

/// One `[[source]]`. Required fields are `Option` here: a missing one is
/// reported in stage 1 and the source is then skipped by stage 2.
#[derive(Debug)]
pub(super) struct RawSource {
    /// Position in the `[[source]]` array (for field names).
    pub(super) index: usize,
    pub(super) id: Option<S<String>>,
    pub(super) kind: Option<S<String>>,
    pub(super) url: Option<S<String>>,
    pub(super) tags: Vec<S<String>>,
    pub(super) interval: Option<S<String>>,
    pub(super) schedule: Option<S<String>>,
    pub(super) user_agent: Option<S<String>>,
    pub(super) headers: Vec<(S<String>, S<String>)>,
    pub(super) initial_items: Option<S<i64>>,
    // html
    pub(super) selector: Option<S<String>>,
    pub(super) ignore: Option<S<Vec<S<String>>>>,
    pub(super) ignore_text: Option<S<Vec<S<String>>>>,
    pub(super) min_change: Option<S<i64>>,
    // firehose
    pub(super) format: Option<S<String>>,
    pub(super) items: Option<S<String>>,
    pub(super) fields: Option<S<RawFields>>,
}

/// `fields = { … }` of a firehose source.
#[derive(Debug, Default)]
pub(super) struct RawFields {
    pub(super) id: Option<S<String>>,
    pub(super) title: Option<S<String>>,
    pub(super) url: Option<S<String>>,
    pub(super) content: Option<S<String>>,
}

/// Collects issues; turns byte offsets into lines.
pub(super) struct Issues<'a> {
    file: &'a Path,
    /// Byte offset of the start of every line.
    line_starts: Vec<usize>,
    pub(super) list: Vec<ConfigIssue>,
}

impl<'a> Issues<'a> {
    pub(super) fn new(file: &'a Path, text: &str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            file,
            line_starts,
            list: Vec::new(),
        }
    }

    /// 1-based line of a byte offset.
    pub(super) fn line_of(&self, offset: usize) -> usize {
        self.line_starts
            .partition_point(|start| *start <= offset)
            .max(1)
    }

    /// Records a problem at `span` (its first line).
    pub(super) fn push(
        &mut self,
        span: Option<Span>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let line = span.map(|s| self.line_of(s.start));
        self.list.push(ConfigIssue {
            file: self.file.to_owned(),
            line,
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Parses `text` into a [`RawConfig`]. Syntax errors stop here (the rest of
/// the document cannot be trusted); otherwise unknown fields and type errors
/// are recorded in `issues` and the well-typed rest is returned.
pub(super) fn read(issues: &mut Issues<'_>, text: &str) -> Option<RawConfig> {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        for e in errors {
            let message = e.message().trim().replace('\n', "; ");
            issues.push(Some(e.span().unwrap_or(0..0)), "syntax", message);
        }
        return None;
    }
    let mut root = Table::new("", doc.span(), doc.get_ref());
    let mut raw = RawConfig::default();

    if let Some(mut t) = root.table(issues, "engine") {
        raw.engine = RawEngine {
            database: t.string(issues, "database", "a file path like \"livestrom.db\""),
            retention: t.string(issues, "retention", DURATION),
        };
        t.finish(issues);
    }
    if let Some(mut t) = root.table(issues, "edge") {
        raw.edge = RawEdge {
            listen: t.string(issues, "listen", "an address like \"127.0.0.1:8080\""),
            keepalive: t.string(issues, "keepalive", DURATION),
            cors_origins: t.strings(issues, "cors_origins").map(Spanned::into_inner),
            max_connections: t.integer(issues, "max_connections"),
        };
        t.finish(issues);
    }
    if let Some(mut t) = root.table(issues, "fetch") {
        raw.fetch = RawFetch {
            user_agent: t.string(issues, "user_agent", "a User-Agent string"),
            timeout: t.string(issues, "timeout", DURATION),
            connect_timeout: t.string(issues, "connect_timeout", DURATION),
            max_body: t.size(issues, "max_body"),
            per_host_rps: t.number(issues, "per_host_rps"),
            per_host_concurrency: t.integer(issues, "per_host_concurrency"),
            allow_private_networks: t.boolean(issues, "allow_private_networks"),
            max_redirects: t.integer(issues, "max_redirects"),
            proxy: t.string(
                issues,
                "proxy",
                "a proxy URL such as \"http://proxy.internal:3128\"",
            ),
        };
        t.finish(issues);
    }
    if let Some(mut t) = root.table(issues, "tiers") {
        raw.tiers = RawTiers {
            firehose: t.string(issues, "firehose", DURATION),
            rss: t.string(issues, "rss", DURATION),
            json: t.string(issues, "json", DURATION),
            html: t.string(issues, "html", DURATION),
        };
        t.finish(issues);
    }
    if let Some(list) = root.take("source") {
        match list.get_ref() {
            DeValue::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    let path = format!("source[{index}]");
                    match item.get_ref() {
                        DeValue::Table(t) => {
                            let mut t = Table::new(&path, item.span(), t);
                            raw.sources.push(read_source(issues, index, &mut t));
                            t.finish(issues);
                        }
                        other => issues.push(
                            Some(item.span()),
                            path,
                            format!("expected a table of source settings, found {}", describe(other)),
                        ),
                    }
                }
            }
            DeValue::Table(_) => issues.push(
                Some(list.span()),
                "source",
                "write each source as an array entry `[[source]]` (double brackets), not `[source]`",
            ),
            other => issues.push(
                Some(list.span()),
                "source",
                format!("expected `[[source]]` tables, found {}", describe(other)),
            ),
        }
    }
    root.finish(issues);
    Some(raw)
}

const DURATION: &str = "a duration like \"30s\", \"2m\" or \"7d\"";

fn read_source(issues: &mut Issues<'_>, index: usize, t: &mut Table<'_, '_>) -> RawSource {
    let id = t.required_string(issues, "id", "an id like \"news.example\"");
    let kind = t.required_string(
        issues,
        "type",
        "one of \"rss\", \"json\", \"html\", \"firehose\"",
    );
    let url = t.required_string(issues, "url", "an http(s) URL");
    let tags = t
        .strings(issues, "tags")
        .map(Spanned::into_inner)
        .unwrap_or_default();
    let interval = t.string(issues, "interval", DURATION);
    let schedule = t.string(
        issues,
        "schedule",
        "a cron expression like \"0 */5 * * * *\"",
    );
    let user_agent = t.string(issues, "user_agent", "a User-Agent string");
    let headers = t.string_map(issues, "headers");
    let initial_items = t.integer(issues, "initial_items");
    let selector = t.string(issues, "selector", "a CSS selector like \"main article\"");
    let ignore = t.strings(issues, "ignore");
    let ignore_text = t.strings(issues, "ignore_text");
    let min_change = t.integer(issues, "min_change");
    let format = t.string(issues, "format", "one of \"json\", \"ndjson\", \"sse\"");
    let items = t.string(issues, "items", "a JSON pointer like \"/items\"");
    let fields = t.table(issues, "fields").map(|mut f| {
        let span = f.span.clone();
        let fields = RawFields {
            id: f.string(issues, "id", "a JSON pointer like \"/id\""),
            title: f.string(issues, "title", "a JSON pointer like \"/title\""),
            url: f.string(issues, "url", "a JSON pointer like \"/link\""),
            content: f.string(issues, "content", "a JSON pointer like \"/summary\""),
        };
        f.finish(issues);
        Spanned::new(span, fields)
    });
    RawSource {
        index,
        id,
        kind,
        url,
        tags,
        interval,
        schedule,
        user_agent,
        headers,
        initial_items,
        selector,
        ignore,
        ignore_text,
        min_change,
        format,
        items,
        fields,
    }
}

/// "an integer `5`", "a table", … for type-mismatch messages.
fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("a string \"{}\"", truncate(s)),
        DeValue::Integer(i) => format!("an integer {i}"),
        DeValue::Float(x) => format!("a float {x}"),
        DeValue::Boolean(b) => format!("a boolean {b}"),
        DeValue::Datetime(d) => format!("a datetime {d}"),
        DeValue::Array(_) => "an array".to_owned(),
        DeValue::Table(_) => "a table".to_owned(),
    }
}

/// Shortens user text quoted back in a message.
pub(super) fn truncate(s: &str) -> String {
    const MAX: usize = 60;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// One TOML table being read; remembers which keys were asked for.
struct Table<'t, 'i> {
    /// Dotted path of the table (`""` for the root, `source[2].fields`).
    path: String,
    span: Span,
    entries: Vec<Entry<'t, 'i>>,
    /// Keys this table knows (every key asked for), for "did you mean".
    known: Vec<&'static str>,
}

struct Entry<'t, 'i> {
    key: &'t str,
    key_span: Span,
    value: &'t Spanned<DeValue<'i>>,
    used: bool,
}

impl<'t, 'i> Table<'t, 'i> {
    fn new(path: &str, span: Span, table: &'t DeTable<'i>) -> Self {
        let mut entries: Vec<Entry<'t, 'i>> = table
            .iter()
            .map(|(k, v)| Entry {
                key: k.get_ref().as_ref(),
                key_span: k.span(),
                value: v,
                used: false,
            })
            .collect();
        // Report leftovers in file order, not key order.
        entries.sort_by_key(|e| e.key_span.start);
        Self {
            path: path.to_owned(),
            span,
            entries,
            known: Vec::new(),
        }
    }

    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The value under `key`, marking the key as known.
    fn take(&mut self, key: &'static str) -> Option<&'t Spanned<DeValue<'i>>> {
        self.known.push(key);
        let e = self.entries.iter_mut().find(|e| e.key == key)?;
        e.used = true;
        Some(e.value)
    }

    fn mismatch(
        &self,
        issues: &mut Issues<'_>,
        key: &str,
        v: &Spanned<DeValue<'_>>,
        expected: &str,
    ) {
        issues.push(
            Some(v.span()),
            self.field(key),
            format!("expected {expected}, found {}", describe(v.get_ref())),
        );
    }

    fn string(
        &mut self,
        issues: &mut Issues<'_>,
        key: &'static str,
        expected: &str,
    ) -> Option<S<String>> {
        let v = self.take(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(Spanned::new(v.span(), s.to_string())),
            DeValue::Integer(n) if expected == DURATION => {
                issues.push(
                    Some(v.span()),
                    self.field(key),
                    format!("expected a duration string like \"{n}s\" or \"{n}m\", found an integer {n}"),
                );
                None
            }
            _ => {
                self.mismatch(issues, key, v, &format!("a string ({expected})"));
                None
            }
        }
    }

    fn required_string(
        &mut self,
        issues: &mut Issues<'_>,
        key: &'static str,
        expected: &str,
    ) -> Option<S<String>> {
        let present = self.entries.iter().any(|e| e.key == key);
        if !present {
            self.known.push(key);
            issues.push(
                Some(self.span.clone()),
                self.field(key),
                format!("missing required field `{key}` ({expected})"),
            );
            return None;
        }
        self.string(issues, key, expected)
    }

    fn integer(&mut self, issues: &mut Issues<'_>, key: &'static str) -> Option<S<i64>> {
        let v = self.take(key)?;
        match v.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(Spanned::new(v.span(), n)),
                Err(_) => {
                    issues.push(
                        Some(v.span()),
                        self.field(key),
                        format!("{i} does not fit in a 64-bit integer"),
                    );
                    None
                }
            },
            _ => {
                self.mismatch(issues, key, v, "an integer");
                None
            }
        }
    }

    /// An integer or a float.
    fn number(&mut self, issues: &mut Issues<'_>, key: &'static str) -> Option<S<f64>> {
        let v = self.take(key)?;
        let n = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            DeValue::Float(x) => x.as_str().parse::<f64>().ok(),
            _ => {
                self.mismatch(issues, key, v, "a number");
                return None;
            }
        };
        match n {
            Some(n) => Some(Spanned::new(v.span(), n)),
            None => {
                issues.push(
                    Some(v.span()),
                    self.field(key),
                    "not a representable number",
                );
                None
            }
        }
    }

    fn boolean(&mut self, issues: &mut Issues<'_>, key: &'static str) -> Option<S<bool>> {
        let v = self.take(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(Spanned::new(v.span(), *b)),
            _ => {
                self.mismatch(issues, key, v, "true or false");
                None
            }
        }
    }

    /// A size string (`"10MB"`) or a byte count.
    fn size(&mut self, issues: &mut Issues<'_>, key: &'static str) -> Option<S<RawSize>> {
        let v = self.take(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(Spanned::new(v.span(), RawSize::Text(s.to_string()))),
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(Spanned::new(v.span(), RawSize::Bytes(n))),
                Err(_) => {
                    issues.push(
                        Some(v.span()),
                        self.field(key),
                        format!("{i} does not fit in a 64-bit integer"),
                    );
                    None
                }
            },
            _ => {
                self.mismatch(issues, key, v, "a size like \"10MB\" or a number of bytes");
                None
            }
        }
    }

    /// An array of strings; each wrong element is reported on its own.
    fn strings(&mut self, issues: &mut Issues<'_>, key: &'static str) -> Option<S<Vec<S<String>>>> {
        let v = self.take(key)?;
        let DeValue::Array(items) = v.get_ref() else {
            self.mismatch(issues, key, v, "an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Spanned::new(item.span(), s.to_string())),
                other => issues.push(
                    Some(item.span()),
                    format!("{}[{i}]", self.field(key)),
                    format!("expected a string, found {}", describe(other)),
                ),
            }
        }
        Some(Spanned::new(v.span(), out))
    }

    /// A table of string values (`headers`), in file order.
    fn string_map(
        &mut self,
        issues: &mut Issues<'_>,
        key: &'static str,
    ) -> Vec<(S<String>, S<String>)> {
        let Some(v) = self.take(key) else {
            return Vec::new();
        };
        let DeValue::Table(t) = v.get_ref() else {
            self.mismatch(issues, key, v, "a table like { Name = \"value\" }");
            return Vec::new();
        };
        let mut out: Vec<(S<String>, S<String>)> = Vec::with_capacity(t.len());
        for (k, val) in t.iter() {
            match val.get_ref() {
                DeValue::String(s) => out.push((
                    Spanned::new(k.span(), k.get_ref().to_string()),
                    Spanned::new(val.span(), s.to_string()),
                )),
                other => issues.push(
                    Some(val.span()),
                    format!("{}.{}", self.field(key), k.get_ref()),
                    format!("expected a string, found {}", describe(other)),
                ),
            }
        }
        out.sort_by_key(|(k, _)| k.span().start);
        out
    }

    /// A sub-table, read with its own [`Table`].
    fn table(&mut self, issues: &mut Issues<'_>, key: &'static str) -> Option<Table<'t, 'i>> {
        let v = self.take(key)?;
        match v.get_ref() {
            DeValue::Table(t) => Some(Table::new(&self.field(key), v.span(), t)),
            _ => {
                let expected = if self.path.is_empty() {
                    format!("a table `[{key}]`")
                } else {
                    "a table like { id = \"/id\" }".to_owned()
                };
                self.mismatch(issues, key, v, &expected);
                None
            }
        }
    }

    /// Reports every key that was never asked for.
    fn finish(self, issues: &mut Issues<'_>) {
        for e in self.entries.iter().filter(|e| !e.used) {
            let mut message = "unknown field".to_owned();
            if let Some(s) = suggest(e.key, &self.known) {
                message.push_str(&format!("; did you mean `{s}`?"));
            } else if let Some(home) = belongs_elsewhere(&self.path, e.key) {
                message.push_str(&format!("; `{}` belongs in {home}", e.key));
            } else {
                let mut known = self.known.clone();
                known.sort_unstable();
                known.dedup();
                message.push_str(&format!("; expected one of {}", known.join(", ")));
            }
            issues.push(Some(e.key_span.clone()), self.field(e.key), message);
        }
    }
}

/// The closest known key within a small edit distance (typos like `intervall`).
fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let key = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, for suggestions only (short keys).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Where a key that is unknown in `path` would be valid, for the hint.
fn belongs_elsewhere(path: &str, key: &str) -> Option<&'static str> {
    const HOMES: &[(&str, &[&str])] = &[
        ("[engine]", &["database", "retention"]),
        (
            "[edge]",
            &["listen", "keepalive", "cors_origins", "max_connections"],
        ),
        (
            "[fetch]",
            &[
                "timeout",
                "connect_timeout",
                "max_body",
                "per_host_rps",
                "per_host_concurrency",
                "allow_private_networks",
                "max_redirects",
                "proxy",
            ],
        ),
        ("[tiers]", &["firehose", "rss", "json", "html"]),
        (
            "[[source]]",
            &[
                "id",
                "type",
                "url",
                "tags",
                "interval",
                "schedule",
                "headers",
                "initial_items",
                "selector",
                "ignore",
                "ignore_text",
                "min_change",
                "format",
                "items",
                "fields",
            ],
        ),
    ];
    let bare = |s: &str| s.trim_matches(['[', ']']).to_owned();
    let here = if path.starts_with("source[") {
        if path.ends_with(".fields") {
            "fields".to_owned()
        } else {
            "source".to_owned()
        }
    } else {
        path.to_owned()
    };
    HOMES
        .iter()
        .find(|(home, keys)| bare(home) != here && keys.contains(&key))
        .map(|(home, _)| *home)
}
