//! The spanned-table walker: one TOML table read key by key into typed,
//! spanned values, wrong types reported where they are; whatever key was
//! never asked for is an unknown field, with a "did you mean" hint from the
//! keys this table knows or the table the key belongs in.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::issues::{truncate, Issues, Span, S};

/// What a duration looks like, for messages (`Table::string` turns a bare
/// integer given for one into a hint).
pub(super) const DURATION: &str = "a duration like \"30s\", \"2m\" or \"7d\"";

/// `max_body` may be a size string (`"10MB"`) or a number of bytes.
#[derive(Debug)]
pub(in crate::config) enum RawSize {
    /// `"10MB"`, `"512KiB"`.
    Text(String),
    /// `1048576`.
    Bytes(i64),
}

/// "an integer `5`", "a table", … for type-mismatch messages.
pub(super) fn describe(v: &DeValue<'_>) -> String {
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

/// One TOML table being read; remembers which keys were asked for.
pub(super) struct Table<'t, 'i> {
    /// Dotted path of the table (`""` for the root, `source[2].fields`).
    path: String,
    pub(super) span: Span,
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
    pub(super) fn new(path: &str, span: Span, table: &'t DeTable<'i>) -> Self {
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
    pub(super) fn take(&mut self, key: &'static str) -> Option<&'t Spanned<DeValue<'i>>> {
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

    pub(super) fn string(
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

    pub(super) fn required_string(
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

    pub(super) fn integer(&mut self, issues: &mut Issues<'_>, key: &'static str) -> Option<S<i64>> {
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
    pub(super) fn number(&mut self, issues: &mut Issues<'_>, key: &'static str) -> Option<S<f64>> {
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

    pub(super) fn boolean(
        &mut self,
        issues: &mut Issues<'_>,
        key: &'static str,
    ) -> Option<S<bool>> {
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
    pub(super) fn size(
        &mut self,
        issues: &mut Issues<'_>,
        key: &'static str,
    ) -> Option<S<RawSize>> {
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
    pub(super) fn strings(
        &mut self,
        issues: &mut Issues<'_>,
        key: &'static str,
    ) -> Option<S<Vec<S<String>>>> {
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
    pub(super) fn string_map(
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
    pub(super) fn table(
        &mut self,
        issues: &mut Issues<'_>,
        key: &'static str,
    ) -> Option<Table<'t, 'i>> {
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
    pub(super) fn finish(self, issues: &mut Issues<'_>) {
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
        ("[engine]", &["database", "retention", "synchronous"]),
        (
            "[edge]",
            &[
                "listen",
                "keepalive",
                "cors_origins",
                "max_connections",
                "metrics_token",
            ],
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
