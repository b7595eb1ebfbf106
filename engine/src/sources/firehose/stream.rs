//! A streaming firehose (`ndjson` / `sse`) as a [`Kind`], and its decoder:
//! bytes → items as they arrive, chunk by chunk. Pure: the runtime holds the
//! connection and feeds the decoder whatever the upstream delivers.

use std::time::Duration;

use url::Url;

use super::lines::{Line, LineSplitter};
use super::sse::{SseDecoder, SseEvent};
use super::{map_message, FirehoseError};
use crate::config::{FirehoseFormat, FirehoseSettings};
use crate::sources::{Body, Item, Kind, Lookup, Parse, SourceError};

/// Longest NDJSON line / SSE line or event kept by default, in bytes.
pub const MAX_LINE: usize = 1024 * 1024;

/// A firehose read from a long-lived upstream.
#[derive(Debug, Clone)]
pub struct FirehoseStream {
    spec: StreamSpec,
}

impl FirehoseStream {
    /// A stream decoded with `settings`.
    pub fn new(settings: FirehoseSettings) -> Self {
        Self {
            spec: StreamSpec::new(settings),
        }
    }
}

impl Kind for FirehoseStream {
    fn accept(&self) -> &'static str {
        if self.spec.resumes() {
            "text/event-stream"
        } else {
            "application/x-ndjson, application/jsonl, application/json;q=0.9, */*;q=0.1"
        }
    }

    /// A whole body read as one connection's stream, up to its end: items in
    /// arrival order, remembering the resume cursor after them. (The runtime
    /// streams instead; this is the same decoding, for a body at hand.)
    fn parse(&self, body: &Body<'_>, memory: Option<&str>) -> Result<Parse, SourceError> {
        let mut decoder = self
            .spec
            .decoder(body.url.clone(), memory.map(str::to_owned), MAX_LINE);
        let mut decoded = Vec::new();
        decoder.feed(body.bytes, &mut decoded);
        decoder.finish(&mut decoded);
        Ok(Parse {
            items: decoded.into_iter().map(|(item, _)| item).collect(),
            ttl: None,
            remember: decoder.cursor(),
            unchanged: false,
        })
    }

    fn lookup(&self) -> Lookup {
        Lookup::Parsed
    }

    fn stream(&self) -> Option<&StreamSpec> {
        Some(&self.spec)
    }
}

/// How a streamed kind's upstream is read: whether a reconnect resumes
/// from a cursor, and a fresh decoder per connection.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    settings: FirehoseSettings,
}

impl StreamSpec {
    /// The stream of a firehose with `settings`.
    pub fn new(settings: FirehoseSettings) -> Self {
        Self { settings }
    }

    /// A reconnect sends the cursor after the last stored item as
    /// `Last-Event-ID` (SSE); NDJSON has no cursor.
    pub fn resumes(&self) -> bool {
        self.settings.format == FirehoseFormat::Sse
    }

    /// A decoder for one connection, resuming after `cursor`; lines longer
    /// than `max_line` bytes are dropped.
    pub fn decoder(&self, base: Url, cursor: Option<String>, max_line: usize) -> StreamDecoder {
        StreamDecoder::new(&self.settings, base, cursor, max_line)
    }
}

/// Why a streamed message was skipped (the stream goes on).
#[derive(Debug, thiserror::Error)]
pub enum MessageProblem {
    /// An NDJSON line longer than this many bytes was dropped.
    #[error("dropped an NDJSON line longer than {0} bytes")]
    NdjsonTooLong(usize),
    /// An NDJSON line is not JSON.
    #[error("NDJSON line is not JSON: {0}")]
    NdjsonNotJson(serde_json::Error),
    /// An NDJSON line maps to no item.
    #[error("NDJSON line maps to no item (not an object, or none of the fields)")]
    NdjsonMapsToNothing,
    /// An NDJSON line does not fit the configured `items` pointer.
    #[error("NDJSON line: {0}")]
    NdjsonUnmapped(FirehoseError),
    /// SSE lines over the line limit were dropped.
    #[error("dropped {count} SSE line(s) longer than {max} bytes")]
    SseTooLong {
        /// Lines dropped.
        count: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// An SSE event's data is not JSON.
    #[error(
        "SSE event{} data is not JSON: {error}",
        .id.as_deref().map(|i| format!(" (id {i})")).unwrap_or_default()
    )]
    SseNotJson {
        /// The event's id, if it had one.
        id: Option<String>,
        /// The JSON parser's complaint.
        error: serde_json::Error,
    },
    /// An SSE event's data maps to no item (this many elements skipped).
    #[error("SSE event data maps to no item ({0} skipped)")]
    SseMapsToNothing(usize),
    /// An SSE event's data does not fit the configured `items` pointer.
    #[error("SSE event: {0}")]
    SseUnmapped(FirehoseError),
}

/// The messages a decoder skipped since it was last asked
/// ([`StreamDecoder::take_problem`]).
#[derive(Debug)]
pub struct Skipped {
    /// How many were skipped.
    pub count: usize,
    /// Why the last one was.
    pub last: MessageProblem,
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count > 1 {
            write!(
                f,
                "skipped {} malformed messages; last: {}",
                self.count, self.last
            )
        } else {
            write!(f, "skipped a malformed message: {}", self.last)
        }
    }
}

/// The last problem is part of the message, not a separate cause (a chain
/// printer would repeat it).
impl std::error::Error for Skipped {}

/// Counts skipped messages, keeping the last reason.
#[derive(Debug, Default)]
struct Problems {
    count: usize,
    last: Option<MessageProblem>,
}

impl Problems {
    fn push(&mut self, why: MessageProblem) {
        self.push_many(1, why);
    }

    fn push_many(&mut self, n: usize, why: MessageProblem) {
        self.count += n;
        self.last = Some(why);
    }
}

/// Bytes → items for one connection, in the source's format.
#[derive(Debug)]
pub struct StreamDecoder {
    format: Format,
    settings: FirehoseSettings,
    base: Url,
    /// Messages that could not be mapped since the last `take_problem`, and the last reason.
    problems: Problems,
    /// Scratch buffer of SSE events of one chunk.
    events: Vec<SseEvent>,
    /// Line limit, for messages.
    max_line: usize,
}

#[derive(Debug)]
enum Format {
    Ndjson(LineSplitter),
    Sse(SseDecoder),
}

impl StreamDecoder {
    /// A decoder for one connection; `cursor` is the SSE id resumed from.
    pub fn new(
        settings: &FirehoseSettings,
        base: Url,
        cursor: Option<String>,
        max_line: usize,
    ) -> Self {
        let format = match settings.format {
            FirehoseFormat::Sse => Format::Sse(SseDecoder::new(max_line, cursor)),
            FirehoseFormat::Ndjson | FirehoseFormat::Json => {
                Format::Ndjson(LineSplitter::new(max_line))
            }
        };
        Self {
            format,
            settings: settings.clone(),
            base,
            problems: Problems::default(),
            events: Vec::new(),
            max_line,
        }
    }

    /// Feeds one chunk. Each decoded item is appended with the resume cursor
    /// that is safe to store once it (and everything before it) is stored.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<(Item, Option<String>)>) {
        match &mut self.format {
            Format::Ndjson(lines) => {
                let (settings, base, max) = (&self.settings, &self.base, self.max_line);
                let problems = &mut self.problems;
                lines.feed(chunk, |line| {
                    ndjson_line(line, settings, base, max, out, problems)
                });
            }
            Format::Sse(dec) => {
                dec.feed(chunk, &mut self.events);
                let too_long = dec.take_problems().too_long;
                if too_long > 0 {
                    // One skip per dropped line, so the count does not
                    // depend on how many reads the lines arrived in.
                    self.problems.push_many(
                        too_long,
                        MessageProblem::SseTooLong {
                            count: too_long,
                            max: self.max_line,
                        },
                    );
                }
                let events = std::mem::take(&mut self.events);
                for ev in &events {
                    self.sse_event(ev, out);
                }
                self.events = events;
                self.events.clear();
            }
        }
    }

    /// The end of the stream: an NDJSON line without a final newline still counts.
    pub fn finish(&mut self, out: &mut Vec<(Item, Option<String>)>) {
        if let Format::Ndjson(lines) = &mut self.format {
            let (settings, base, max) = (&self.settings, &self.base, self.max_line);
            let problems = &mut self.problems;
            lines.finish(|line| ndjson_line(line, settings, base, max, out, problems));
        }
    }

    /// The SSE last-event-id after everything decoded so far.
    pub fn cursor(&self) -> Option<String> {
        match &self.format {
            Format::Sse(d) => d.last_event_id().map(str::to_owned),
            Format::Ndjson(_) => None,
        }
    }

    /// The upstream's requested reconnection delay (SSE `retry:`).
    pub fn retry(&self) -> Option<Duration> {
        match &self.format {
            Format::Sse(d) => d.retry(),
            Format::Ndjson(_) => None,
        }
    }

    /// The messages skipped since the last call, if any.
    pub fn take_problem(&mut self) -> Option<Skipped> {
        let Problems { count, last } = std::mem::take(&mut self.problems);
        Some(Skipped { count, last: last? })
    }

    fn sse_event(&mut self, ev: &SseEvent, out: &mut Vec<(Item, Option<String>)>) {
        if ev.data.trim().is_empty() {
            return;
        }
        let value: serde_json::Value = match serde_json::from_str(&ev.data) {
            Ok(v) => v,
            Err(error) => {
                self.problems.push(MessageProblem::SseNotJson {
                    id: ev.id.clone(),
                    error,
                });
                return;
            }
        };
        let mut items = Vec::new();
        match map_message(&value, &self.settings, &self.base, &mut items) {
            Ok(skipped) if skipped > 0 && items.is_empty() => self
                .problems
                .push(MessageProblem::SseMapsToNothing(skipped)),
            Ok(_) => {}
            Err(e) => self.problems.push(MessageProblem::SseUnmapped(e)),
        }
        // Only the event's last item carries the event's id: storing an earlier
        // one must not let a resume skip the rest of the event, so the earlier
        // ones carry the id from before the event.
        let n = items.len();
        let single = n == 1;
        for (i, mut item) in items.into_iter().enumerate() {
            if single && item.guid.is_none() {
                item.guid.clone_from(&ev.id);
            }
            let cursor = if i + 1 == n {
                ev.id.clone()
            } else {
                ev.previous_id.clone()
            };
            out.push((item, cursor));
        }
    }
}

fn ndjson_line(
    line: Line<'_>,
    settings: &FirehoseSettings,
    base: &Url,
    max_line: usize,
    out: &mut Vec<(Item, Option<String>)>,
    problems: &mut Problems,
) {
    let text = match line {
        Line::TooLong => {
            problems.push(MessageProblem::NdjsonTooLong(max_line));
            return;
        }
        Line::Text(t) => t,
    };
    if text.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    let value: serde_json::Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => {
            problems.push(MessageProblem::NdjsonNotJson(e));
            return;
        }
    };
    let mut items = Vec::new();
    match map_message(&value, settings, base, &mut items) {
        Ok(skipped) if skipped > 0 && items.is_empty() => {
            problems.push(MessageProblem::NdjsonMapsToNothing)
        }
        Ok(_) => {}
        Err(e) => problems.push(MessageProblem::NdjsonUnmapped(e)),
    }
    out.extend(items.into_iter().map(|i| (i, None)));
}
