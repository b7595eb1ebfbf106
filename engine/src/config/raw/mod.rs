//! Stage 1 of config loading: the TOML document walked key by key into spanned
//! raw values, so that *every* syntax error, unknown field and wrong value type
//! is reported with its line (serde's `deny_unknown_fields` stops at the first).
//!
//! Each table is read through [`Table`], which remembers the keys it was asked
//! for; whatever is left over when the table is finished is an unknown field.
//! The keys read here *are* the schema: there is no second list to keep in sync.
//!
//! The walker is `table` ([`Table`] and its unknown-key hints); `issues`
//! collects the problems with their lines. This file holds the raw structs
//! and [`read`], which walks the document into them. Neither `table` nor
//! `issues` uses this file; `table` uses `issues`.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

mod issues;
mod table;

pub(super) use issues::{truncate, Issues, Span, S};
pub(super) use table::RawSize;
use table::{describe, Table, DURATION};

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
    /// `[cluster]`, when present.
    pub(super) cluster: Option<RawCluster>,
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
    /// Default `normal`.
    pub(super) synchronous: Option<S<String>>,
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
    /// Default none (`/metrics` open).
    pub(super) metrics_token: Option<S<String>>,
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

/// `[cluster]`: present means the event log is NATS JetStream.
#[derive(Debug)]
pub(super) struct RawCluster {
    /// Where the table starts (a missing `nats` is reported here).
    pub(super) span: Span,
    /// Required: one or more `nats://` URLs.
    pub(super) nats: Option<Vec<S<String>>>,
    /// Default `LIVESTROM`.
    pub(super) stream: Option<S<String>>,
    /// Default 1.
    pub(super) replicas: Option<S<i64>>,
    /// Default `30s`.
    pub(super) lease: Option<S<String>>,
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
            synchronous: t.string(issues, "synchronous", "\"normal\" or \"full\""),
        };
        t.finish(issues);
    }
    if let Some(mut t) = root.table(issues, "edge") {
        raw.edge = RawEdge {
            listen: t.string(issues, "listen", "an address like \"127.0.0.1:8080\""),
            keepalive: t.string(issues, "keepalive", DURATION),
            cors_origins: t.strings(issues, "cors_origins").map(Spanned::into_inner),
            max_connections: t.integer(issues, "max_connections"),
            metrics_token: t.string(issues, "metrics_token", "a token string"),
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
    if let Some(mut t) = root.table(issues, "cluster") {
        raw.cluster = Some(RawCluster {
            span: t.span.clone(),
            nats: t.strings(issues, "nats").map(Spanned::into_inner),
            stream: t.string(issues, "stream", "a JetStream name like \"LIVESTROM\""),
            replicas: t.integer(issues, "replicas"),
            lease: t.string(issues, "lease", DURATION),
        });
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
