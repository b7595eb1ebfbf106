//! Loading a recorded scenario from `<dir>/scenario.toml` (+ body files beside it).
//!
//! Every problem is reported with the file, line (when known) and the dotted
//! field, e.g. `fixtures/scenarios/rss-polls/scenario.toml:14: route[0].step[2].body_file: …`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use toml::Spanned;

use super::scenario::{Repeat, Scenario, Step, StreamFormat, StreamLine};

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// `scenario.toml` is missing or unreadable.
    #[error("cannot read scenario file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: io::Error,
    },
    /// The file was read but is not a valid scenario.
    #[error("{}: {field}: {message}", location(.file, *.line))]
    Invalid {
        /// The scenario file.
        file: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// Dotted field path, e.g. `route[0].step[2].body_file`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

fn location(file: &Path, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{}:{l}", file.display()),
        None => file.display().to_string(),
    }
}

impl From<ScenarioError> for io::Error {
    fn from(e: ScenarioError) -> Self {
        let kind = match &e {
            ScenarioError::Read { source, .. } => source.kind(),
            ScenarioError::Invalid { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

impl Scenario {
    /// Loads `<dir>/scenario.toml`; the scenario is named after `name` in the
    /// file, else the directory. Body files are read now, relative to `dir`.
    pub fn load(dir: &Path) -> Result<Self, ScenarioError> {
        let file = dir.join("scenario.toml");
        let text = std::fs::read_to_string(&file).map_err(|source| ScenarioError::Read {
            path: file.clone(),
            source,
        })?;
        let fallback = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "scenario".to_owned());
        parse(&file, dir, &text, &fallback)
    }

    /// Parses scenario text; `file` is used in messages and `dir` resolves body files.
    pub fn from_toml(file: &Path, dir: &Path, text: &str) -> Result<Self, ScenarioError> {
        parse(file, dir, text, "scenario")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    description: Option<String>,
    #[serde(default)]
    route: Vec<Spanned<RawRoute>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path: Spanned<String>,
    /// `last` (default) or `cycle`.
    repeat: Option<Spanned<String>>,
    #[allow(dead_code)]
    note: Option<String>,
    #[serde(default)]
    step: Vec<Spanned<RawStep>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    note: Option<String>,
    /// default 200
    status: Option<Spanned<i64>>,
    /// `body` (default), `ndjson` or `sse`
    kind: Option<Spanned<String>>,
    body: Option<String>,
    body_file: Option<Spanned<String>>,
    content_type: Option<String>,
    etag: Option<String>,
    last_modified: Option<String>,
    cache_control: Option<String>,
    retry_after: Option<StrOrInt>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    gzip: bool,
    delay_ms: Option<Spanned<i64>>,
    #[serde(default)]
    template: bool,
    lines: Option<Vec<String>>,
    events: Option<Vec<RawEvent>>,
    line_delay_ms: Option<Spanned<i64>>,
    drop_after: Option<Spanned<i64>>,
    #[serde(default)]
    hold_open: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StrOrInt {
    Int(i64),
    Str(String),
}

struct Ctx<'a> {
    file: &'a Path,
    dir: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn err(
        &self,
        span: Option<std::ops::Range<usize>>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ScenarioError {
        ScenarioError::Invalid {
            file: self.file.to_owned(),
            line: span.map(|s| line_of(self.text, s.start)),
            field: field.into(),
            message: message.into(),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn parse(
    file: &Path,
    dir: &Path,
    text: &str,
    fallback_name: &str,
) -> Result<Scenario, ScenarioError> {
    let cx = Ctx { file, dir, text };
    let raw: RawScenario = toml::from_str(text).map_err(|e| {
        let field = e
            .message()
            .split('`')
            .nth(1)
            .map(str::to_owned)
            .unwrap_or_else(|| "(syntax)".to_owned());
        cx.err(e.span(), field, e.message().trim().to_owned())
    })?;
    let mut scenario = Scenario::new(raw.name.unwrap_or_else(|| fallback_name.to_owned()));
    scenario.description = raw.description;
    if raw.route.is_empty() {
        return Err(cx.err(None, "route", "a scenario needs at least one [[route]]"));
    }
    for (ri, route) in raw.route.iter().enumerate() {
        let r = route.get_ref();
        let path = r.path.get_ref();
        if !path.starts_with('/') || path.contains('?') || path.contains('#') {
            return Err(cx.err(
                Some(r.path.span()),
                format!("route[{ri}].path"),
                format!("`{path}` must be a URL path starting with `/`, without query or fragment"),
            ));
        }
        if scenario.routes.contains_key(path.as_str()) {
            return Err(cx.err(
                Some(r.path.span()),
                format!("route[{ri}].path"),
                format!("duplicate path `{path}`"),
            ));
        }
        let repeat = match &r.repeat {
            None => Repeat::Last,
            Some(s) => match s.get_ref().as_str() {
                "last" => Repeat::Last,
                "cycle" => Repeat::Cycle,
                other => {
                    return Err(cx.err(
                        Some(s.span()),
                        format!("route[{ri}].repeat"),
                        format!("unknown repeat `{other}`; expected `last` or `cycle`"),
                    ))
                }
            },
        };
        if r.step.is_empty() {
            return Err(cx.err(
                Some(route.span()),
                format!("route[{ri}].step"),
                "a route needs at least one [[route.step]]",
            ));
        }
        let mut steps = Vec::with_capacity(r.step.len());
        for (si, step) in r.step.iter().enumerate() {
            steps.push(parse_step(&cx, &format!("route[{ri}].step[{si}]"), step)?);
        }
        scenario = scenario.route_with(path, repeat, steps);
    }
    Ok(scenario)
}

fn parse_step(cx: &Ctx<'_>, at: &str, spanned: &Spanned<RawStep>) -> Result<Step, ScenarioError> {
    let s = spanned.get_ref();
    let span = spanned.span();
    let here = || Some(span.clone());
    let f = |name: &str| format!("{at}.{name}");

    let status = match &s.status {
        None => 200,
        Some(st) => match u16::try_from(*st.get_ref()) {
            Ok(code) if (100..=599).contains(&code) => code,
            _ => {
                return Err(cx.err(
                    Some(st.span()),
                    f("status"),
                    format!("`{}` is not an HTTP status (100-599)", st.get_ref()),
                ))
            }
        },
    };
    let millis = |v: &Option<Spanned<i64>>, name: &str| -> Result<Duration, ScenarioError> {
        match v {
            None => Ok(Duration::ZERO),
            Some(ms) => match u64::try_from(*ms.get_ref()) {
                Ok(n) if n <= 600_000 => Ok(Duration::from_millis(n)),
                _ => Err(cx.err(
                    Some(ms.span()),
                    f(name),
                    "must be between 0 and 600000 milliseconds",
                )),
            },
        }
    };
    let kind = s
        .kind
        .as_ref()
        .map(|k| k.get_ref().as_str())
        .unwrap_or("body");
    let stream_format = match kind {
        "body" => None,
        "ndjson" => Some(StreamFormat::Ndjson),
        "sse" => Some(StreamFormat::Sse),
        other => {
            let span = s.kind.as_ref().map(|k| k.span());
            return Err(cx.err(
                span,
                f("kind"),
                format!("unknown kind `{other}`; expected body, ndjson or sse"),
            ));
        }
    };

    let sources = [
        s.body.is_some(),
        s.body_file.is_some(),
        s.lines.is_some(),
        s.events.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if sources > 1 {
        return Err(cx.err(
            here(),
            at,
            "set only one of `body`, `body_file`, `lines`, `events`",
        ));
    }
    let file_bytes = match &s.body_file {
        None => None,
        Some(name) => {
            let path = cx.dir.join(name.get_ref());
            match std::fs::read(&path) {
                Ok(b) => Some(b),
                Err(e) => {
                    return Err(cx.err(
                        Some(name.span()),
                        f("body_file"),
                        format!("cannot read `{}` ({}): {e}", name.get_ref(), path.display()),
                    ))
                }
            }
        }
    };

    let mut step = match stream_format {
        None => {
            for (present, name) in [
                (s.lines.is_some(), "lines"),
                (s.events.is_some(), "events"),
                (s.line_delay_ms.is_some(), "line_delay_ms"),
                (s.drop_after.is_some(), "drop_after"),
                (s.hold_open, "hold_open"),
            ] {
                if present {
                    return Err(cx.err(
                        here(),
                        f(name),
                        "only allowed with kind = \"ndjson\" or \"sse\"",
                    ));
                }
            }
            let body = match (&s.body, file_bytes) {
                (Some(b), _) => Bytes::from(b.clone()),
                (None, Some(b)) => Bytes::from(b),
                (None, None) => Bytes::new(),
            };
            let mut step = Step::new(status, body);
            let ct = s.content_type.clone().or_else(|| {
                s.body_file
                    .as_ref()
                    .map(|n| content_type_for(n.get_ref()).to_owned())
                    .or_else(|| {
                        s.body
                            .as_ref()
                            .map(|_| "text/plain; charset=utf-8".to_owned())
                    })
            });
            if let Some(ct) = ct {
                step = step.content_type(ct);
            }
            step
        }
        Some(format) => {
            if s.gzip {
                return Err(cx.err(
                    here(),
                    f("gzip"),
                    "gzip applies to whole bodies only, not to ndjson/sse streams",
                ));
            }
            if s.template {
                return Err(cx.err(
                    here(),
                    f("template"),
                    "template applies to whole bodies only, not to ndjson/sse streams",
                ));
            }
            let lines: Vec<StreamLine> = match (format, &s.lines, &s.events, &s.body, file_bytes) {
                (StreamFormat::Sse, Some(_), ..) => {
                    return Err(cx.err(
                        here(),
                        f("lines"),
                        "sse steps take `events` (or an SSE-format `body_file`), not `lines`",
                    ))
                }
                (StreamFormat::Ndjson, _, Some(_), ..) => {
                    return Err(cx.err(
                        here(),
                        f("events"),
                        "ndjson steps take `lines` (or a `body_file`), not `events`",
                    ))
                }
                (_, Some(lines), ..) => lines.iter().map(StreamLine::data).collect(),
                (_, _, Some(events), ..) => events
                    .iter()
                    .map(|e| StreamLine {
                        id: e.id.clone(),
                        event: e.event.clone(),
                        data: e.data.clone(),
                    })
                    .collect(),
                (StreamFormat::Ndjson, _, _, Some(body), _) => ndjson_lines(body),
                (StreamFormat::Ndjson, _, _, None, Some(bytes)) => {
                    ndjson_lines(&utf8(cx, &f("body_file"), bytes)?)
                }
                (StreamFormat::Sse, _, _, Some(body), _) => {
                    parse_sse(body).map_err(|m| cx.err(here(), f("body"), m))?
                }
                (StreamFormat::Sse, _, _, None, Some(bytes)) => {
                    parse_sse(&utf8(cx, &f("body_file"), bytes)?)
                        .map_err(|m| cx.err(here(), f("body_file"), m))?
                }
                (_, None, None, None, None) => Vec::new(),
            };
            let mut step = match format {
                StreamFormat::Ndjson => Step::ndjson(lines),
                StreamFormat::Sse => Step::sse(lines),
            }
            .with_status(status);
            if let Some(ct) = &s.content_type {
                step = step.content_type(ct.clone());
            }
            step = step.line_delay(millis(&s.line_delay_ms, "line_delay_ms")?);
            if let Some(n) = &s.drop_after {
                match usize::try_from(*n.get_ref()) {
                    Ok(n) => step = step.drop_after(n),
                    Err(_) => {
                        return Err(cx.err(Some(n.span()), f("drop_after"), "must be zero or more"))
                    }
                }
            }
            if s.hold_open {
                step = step.hold_open();
            }
            step
        }
    };

    if let Some(etag) = &s.etag {
        step = step.etag(etag.clone());
    }
    if let Some(lm) = &s.last_modified {
        if chrono::DateTime::parse_from_rfc2822(lm).is_err() {
            return Err(cx.err(
                here(),
                f("last_modified"),
                format!("`{lm}` is not an HTTP date like \"Wed, 01 Jul 2026 08:00:00 GMT\""),
            ));
        }
        step = step.last_modified(lm.clone());
    }
    if let Some(cc) = &s.cache_control {
        step = step.cache_control(cc.clone());
    }
    match &s.retry_after {
        None => {}
        Some(StrOrInt::Int(n)) if *n >= 0 => step = step.retry_after(n.to_string()),
        Some(StrOrInt::Int(n)) => {
            return Err(cx.err(
                here(),
                f("retry_after"),
                format!("`{n}` must be zero or more seconds"),
            ))
        }
        Some(StrOrInt::Str(v)) => step = step.retry_after(v.clone()),
    }
    for (k, v) in &s.headers {
        if axum::http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || axum::http::HeaderValue::from_str(v).is_err()
        {
            return Err(cx.err(
                here(),
                format!("{at}.headers.{k}"),
                "not a valid HTTP header name/value",
            ));
        }
        step = step.header(k.clone(), v.clone());
    }
    for (name, value) in [
        ("etag", &s.etag),
        ("cache_control", &s.cache_control),
        ("content_type", &s.content_type),
    ] {
        if let Some(v) = value {
            if axum::http::HeaderValue::from_str(v).is_err() {
                return Err(cx.err(
                    here(),
                    f(name),
                    format!("`{v}` is not a valid HTTP header value"),
                ));
            }
        }
    }
    if s.gzip {
        step = step.gzip();
    }
    if s.template {
        step = step.templated();
    }
    step = step.delay(millis(&s.delay_ms, "delay_ms")?);
    if let Some(note) = &s.note {
        step = step.note(note.clone());
    }
    Ok(step)
}

fn utf8(cx: &Ctx<'_>, field: &str, bytes: Vec<u8>) -> Result<String, ScenarioError> {
    String::from_utf8(bytes)
        .map_err(|e| cx.err(None, field, format!("stream bodies must be UTF-8: {e}")))
}

fn ndjson_lines(text: &str) -> Vec<StreamLine> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(StreamLine::data)
        .collect()
}

/// Parses SSE text (`id:`/`event:`/`data:` fields, events separated by a blank line).
fn parse_sse(text: &str) -> Result<Vec<StreamLine>, String> {
    let mut out = Vec::new();
    let mut cur: Option<StreamLine> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.is_empty() {
            if let Some(ev) = cur.take() {
                out.push(ev);
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        let ev = cur.get_or_insert_with(|| StreamLine::data(""));
        match name {
            "id" => ev.id = Some(value.to_owned()),
            "event" => ev.event = Some(value.to_owned()),
            "data" => {
                if !ev.data.is_empty() {
                    ev.data.push('\n');
                }
                ev.data.push_str(value);
            }
            "retry" => {}
            other => {
                return Err(format!(
                    "line {} of the SSE body: unknown field `{other}`; expected id, event, data or retry",
                    n + 1
                ))
            }
        }
    }
    if let Some(ev) = cur {
        out.push(ev);
    }
    Ok(out)
}

/// `Content-Type` inferred from a body file's extension.
fn content_type_for(name: &str) -> &'static str {
    let ext = Path::new(name)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "rss" => "application/rss+xml; charset=utf-8",
        "atom" => "application/atom+xml; charset=utf-8",
        "xml" => "application/xml; charset=utf-8",
        "json" => "application/json",
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
