//! The long-lived upstream connection of an `ndjson`/`sse` firehose: decode
//! bytes into items as they arrive, batch what arrives within a few
//! milliseconds, send batches on a bounded channel (backpressure reaches the
//! socket), time out an idle connection, and reconnect with capped
//! exponential backoff and jitter, resuming SSE from the last event id.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::lines::{Line, LineSplitter};
use super::sse::{SseDecoder, SseEvent};
use super::{map_message, UpstreamBatch};
use crate::config::{FirehoseFormat, FirehoseSettings};
use crate::scheduler::{Backoff, BackoffPolicy, Jitter};
use crate::sources::Item;

/// Reconnect backoff of an upstream: 1 s doubling to a minute, with equal
/// jitter so the readers of many sources dropped at once do not reconnect in step.
pub const RECONNECT: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_secs(1),
    max: Duration::from_secs(60),
    factor: 2,
    jitter: Jitter::EQUAL,
};

/// Tunables of an upstream connection; the defaults are what `run_upstream` uses.
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    /// Most items in one batch.
    pub max_batch: usize,
    /// How long the first item of a batch waits for company before it is sent.
    pub batch_window: Duration,
    /// No bytes for this long (SSE comments count) → reconnect.
    pub idle_timeout: Duration,
    /// Longest NDJSON line / SSE line or event, in bytes; longer ones are dropped.
    pub max_line: usize,
    /// Reconnect backoff (an SSE `retry:` replaces its first delay, at least
    /// `min_backoff`).
    pub reconnect: BackoffPolicy,
    /// Floor for an upstream's `retry:` (a `retry: 0` must not spin).
    pub min_backoff: Duration,
    /// A connection open this long (or that delivered items) resets the backoff.
    pub healthy_after: Duration,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        Self {
            max_batch: 1000,
            batch_window: Duration::from_millis(50),
            idle_timeout: Duration::from_secs(90),
            max_line: 1024 * 1024,
            reconnect: RECONNECT,
            min_backoff: Duration::from_millis(100),
            healthy_after: Duration::from_secs(30),
        }
    }
}

/// Why one connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// `cancel` fired.
    Cancelled,
    /// The batch receiver is gone: nobody stores the items any more.
    Closed,
    /// The upstream closed the stream.
    Eof,
    /// The transport failed.
    Error(String),
    /// No bytes within the idle timeout.
    Idle,
}

/// Bytes → items for one connection, in the source's format.
#[derive(Debug)]
pub struct StreamDecoder {
    format: Format,
    settings: FirehoseSettings,
    base: Url,
    /// Messages that could not be mapped since the last `take_problem`, and the last reason.
    problems: usize,
    last_problem: Option<String>,
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
            problems: 0,
            last_problem: None,
            events: Vec::new(),
            max_line,
        }
    }

    /// Feeds one chunk. Each decoded item is appended with the resume cursor
    /// that is safe to store once it (and everything before it) is stored.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<(Item, Option<String>)>) {
        match &mut self.format {
            Format::Ndjson(lines) => {
                let mut problems = Vec::new();
                let (settings, base, max) = (&self.settings, &self.base, self.max_line);
                lines.feed(chunk, |line| {
                    ndjson_line(line, settings, base, max, out, &mut problems)
                });
                for p in problems {
                    self.problem(p);
                }
            }
            Format::Sse(dec) => {
                let before = dec.last_event_id().map(str::to_owned);
                dec.feed(chunk, &mut self.events);
                let too_long = dec.take_problems().too_long;
                if too_long > 0 {
                    self.problem(format!(
                        "dropped {too_long} SSE line(s) longer than {} bytes",
                        self.max_line
                    ));
                }
                let mut cursor = before;
                let events = std::mem::take(&mut self.events);
                for ev in &events {
                    self.sse_event(ev, cursor.as_deref(), out);
                    cursor.clone_from(&ev.id);
                }
                self.events = events;
                self.events.clear();
            }
        }
    }

    /// The end of the stream: an NDJSON line without a final newline still counts.
    pub fn finish(&mut self, out: &mut Vec<(Item, Option<String>)>) {
        if let Format::Ndjson(lines) = &mut self.format {
            let mut problems = Vec::new();
            let (settings, base, max) = (&self.settings, &self.base, self.max_line);
            lines.finish(|line| ndjson_line(line, settings, base, max, out, &mut problems));
            for p in problems {
                self.problem(p);
            }
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

    /// A summary of the messages skipped since the last call, if any.
    pub fn take_problem(&mut self) -> Option<String> {
        let n = std::mem::take(&mut self.problems);
        let last = self.last_problem.take()?;
        Some(if n > 1 {
            format!("skipped {n} malformed messages; last: {last}")
        } else {
            format!("skipped a malformed message: {last}")
        })
    }

    fn problem(&mut self, why: String) {
        self.problems += 1;
        self.last_problem = Some(why);
    }

    fn sse_event(
        &mut self,
        ev: &SseEvent,
        cursor_before: Option<&str>,
        out: &mut Vec<(Item, Option<String>)>,
    ) {
        if ev.data.trim().is_empty() {
            return;
        }
        let value: serde_json::Value = match serde_json::from_str(&ev.data) {
            Ok(v) => v,
            Err(e) => {
                let id = ev
                    .id
                    .as_deref()
                    .map(|i| format!(" (id {i})"))
                    .unwrap_or_default();
                self.problem(format!("SSE event{id} data is not JSON: {e}"));
                return;
            }
        };
        let mut items = Vec::new();
        match map_message(&value, &self.settings, &self.base, &mut items) {
            Ok(skipped) if skipped > 0 && items.is_empty() => self.problem(format!(
                "SSE event data maps to no item ({skipped} skipped)"
            )),
            Ok(_) => {}
            Err(e) => self.problem(format!("SSE event: {e}")),
        }
        // Only the event's last item carries the event's id: storing an earlier
        // one must not let a resume skip the rest of the event.
        let n = items.len();
        let single = n == 1;
        for (i, mut item) in items.into_iter().enumerate() {
            if single && item.guid.is_none() {
                item.guid.clone_from(&ev.id);
            }
            let cursor = if i + 1 == n {
                ev.id.clone()
            } else {
                cursor_before.map(str::to_owned)
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
    problems: &mut Vec<String>,
) {
    let text = match line {
        Line::TooLong => {
            problems.push(format!(
                "dropped an NDJSON line longer than {max_line} bytes"
            ));
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
            problems.push(format!("NDJSON line is not JSON: {e}"));
            return;
        }
    };
    let mut items = Vec::new();
    match map_message(&value, settings, base, &mut items) {
        Ok(skipped) if skipped > 0 && items.is_empty() => problems
            .push("NDJSON line maps to no item (not an object, or none of the fields)".to_owned()),
        Ok(_) => {}
        Err(e) => problems.push(format!("NDJSON line: {e}")),
    }
    out.extend(items.into_iter().map(|i| (i, None)));
}

/// Reports source health on a channel without ever blocking the stream:
/// state changes are sent, repeats of an error at most every `REPEAT`.
#[derive(Debug)]
pub struct Health {
    tx: mpsc::Sender<Result<(), String>>,
    /// What was last delivered: `Some(true)` ok, `Some(false)` error.
    last: Option<bool>,
    last_error_at: Option<Instant>,
}

impl Health {
    /// Minimum spacing of repeated error reports, and how long a stream must
    /// run clean after an error before it is reported healthy again.
    pub const REPEAT: Duration = Duration::from_secs(10);

    /// Wraps the health channel.
    pub fn new(tx: mpsc::Sender<Result<(), String>>) -> Self {
        Self {
            tx,
            last: None,
            last_error_at: None,
        }
    }

    /// The source works.
    pub fn ok(&mut self) {
        if self.last != Some(true) && self.tx.try_send(Ok(())).is_ok() {
            self.last = Some(true);
        }
    }

    /// Healthy again if the last error is older than [`Self::REPEAT`].
    pub fn ok_if_settled(&mut self) {
        if self.last == Some(false)
            && self
                .last_error_at
                .is_some_and(|t| t.elapsed() >= Self::REPEAT)
        {
            self.ok();
        }
    }

    /// The connection failed (these are spaced by the reconnect backoff, so all are sent).
    pub fn error(&mut self, why: String) {
        if self.tx.try_send(Err(why)).is_ok() {
            self.last = Some(false);
            self.last_error_at = Some(Instant::now());
        }
    }

    /// Messages were skipped: reported on the change to unhealthy, then at
    /// most every [`Self::REPEAT`], however fast bad messages arrive.
    pub fn problem(&mut self, why: String) {
        let repeat_due = self
            .last_error_at
            .is_none_or(|t| t.elapsed() >= Self::REPEAT);
        if self.last != Some(false) || repeat_due {
            self.error(why);
        }
    }
}

/// Drives one connection: reads `stream`, decodes, batches (at most
/// `max_batch` items, the first waiting at most `batch_window`) and sends on
/// `out`, until the stream ends, fails, idles out, or `cancel` fires.
/// Items decoded before the end are sent before this returns (unless cancelled).
pub async fn drive_stream<S, E>(
    stream: S,
    decoder: &mut StreamDecoder,
    out: &mpsc::Sender<UpstreamBatch>,
    health: &mut Health,
    opts: &UpstreamOptions,
    cancel: &CancellationToken,
) -> (StreamEnd, u64)
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Display,
{
    let mut stream = std::pin::pin!(stream);
    let mut batch = Batcher {
        pending: Vec::new(),
        pending_bytes: 0,
        cursor: None,
        flush_at: None,
        sent: 0,
    };
    let mut decoded = Vec::new();
    let mut idle_deadline = Instant::now() + opts.idle_timeout;
    loop {
        let flush_at = batch.flush_at;
        let flush_timer = async move {
            match flush_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let end = tokio::select! {
            biased;
            () = cancel.cancelled() => return (StreamEnd::Cancelled, batch.sent),
            () = flush_timer => {
                if let Err(end) = batch.flush(out, cancel).await {
                    return (end, batch.sent);
                }
                // Time spent waiting for the store is not upstream idleness.
                idle_deadline = idle_deadline.max(Instant::now() + opts.idle_timeout);
                health.ok_if_settled();
                continue;
            }
            next = tokio::time::timeout_at(idle_deadline, stream.next()) => match next {
                Err(_) => StreamEnd::Idle,
                Ok(None) => {
                    decoder.finish(&mut decoded);
                    StreamEnd::Eof
                }
                Ok(Some(Err(e))) => StreamEnd::Error(e.to_string()),
                Ok(Some(Ok(bytes))) => {
                    idle_deadline = Instant::now() + opts.idle_timeout;
                    decoder.feed(&bytes, &mut decoded);
                    if let Some(problem) = decoder.take_problem() {
                        health.problem(problem);
                    }
                    if let Err(end) = batch.absorb(&mut decoded, opts.max_batch, out, cancel).await {
                        return (end, batch.sent);
                    }
                    idle_deadline = idle_deadline.max(Instant::now() + opts.idle_timeout);
                    if !batch.pending.is_empty() && batch.flush_at.is_none() {
                        batch.flush_at = Some(Instant::now() + opts.batch_window);
                    }
                    continue;
                }
            },
        };
        if let Some(problem) = decoder.take_problem() {
            health.problem(problem);
        }
        // Whatever arrived before the end is delivered now.
        let r = match batch
            .absorb(&mut decoded, opts.max_batch, out, cancel)
            .await
        {
            Ok(()) => batch.flush(out, cancel).await,
            Err(e) => Err(e),
        };
        return (r.err().unwrap_or(end), batch.sent);
    }
}

/// The batch being assembled.
/// A batch is sent once its items' text reaches this size (so the bounded
/// channel between reader and store holds at most ~16 of these).
pub(super) const MAX_BATCH_BYTES: usize = 4 << 20;

/// An item's text size, for [`MAX_BATCH_BYTES`].
fn item_bytes(item: &Item) -> usize {
    item.title.len()
        + item.content.len()
        + item.url.as_deref().map_or(0, str::len)
        + item.guid.as_deref().map_or(0, str::len)
}

struct Batcher {
    pending: Vec<Item>,
    /// Text bytes of the pending items (title, content, url, guid).
    pending_bytes: usize,
    /// Resume cursor after the last pending item.
    cursor: Option<String>,
    /// When the pending batch must go out.
    flush_at: Option<Instant>,
    /// Items sent so far on this connection.
    sent: u64,
}

impl Batcher {
    /// Moves decoded items into the batch, sending full batches on the way.
    async fn absorb(
        &mut self,
        decoded: &mut Vec<(Item, Option<String>)>,
        max_batch: usize,
        out: &mpsc::Sender<UpstreamBatch>,
        cancel: &CancellationToken,
    ) -> Result<(), StreamEnd> {
        for (item, cursor) in decoded.drain(..) {
            self.pending_bytes += item_bytes(&item);
            self.pending.push(item);
            self.cursor = cursor;
            // Bounded by count and by size: with lines of up to 1 MiB, the
            // channel's 16 batches would otherwise hold gigabytes.
            if self.pending.len() >= max_batch.max(1) || self.pending_bytes >= MAX_BATCH_BYTES {
                self.flush(out, cancel).await?;
            }
        }
        Ok(())
    }

    async fn flush(
        &mut self,
        out: &mpsc::Sender<UpstreamBatch>,
        cancel: &CancellationToken,
    ) -> Result<(), StreamEnd> {
        self.flush_at = None;
        if self.pending.is_empty() {
            return Ok(());
        }
        let items = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let n = items.len() as u64;
        let batch = UpstreamBatch {
            items,
            cursor: self.cursor.clone(),
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => Err(StreamEnd::Cancelled),
            r = out.send(batch) => match r {
                Ok(()) => {
                    self.sent += n;
                    Ok(())
                }
                Err(_) => Err(StreamEnd::Closed),
            },
        }
    }
}

/// The reconnect loop behind `run_upstream`, with the connection step
/// injected: `connect(cursor)` opens the upstream (sending `cursor` as
/// `Last-Event-ID` for SSE) and yields its byte stream. Returns when
/// `cancel` fires or `out` is closed.
#[allow(clippy::too_many_arguments)]
pub async fn run_upstream_with<C, Fut, S, E>(
    settings: FirehoseSettings,
    base: Url,
    mut cursor: Option<String>,
    mut connect: C,
    out: mpsc::Sender<UpstreamBatch>,
    health: mpsc::Sender<Result<(), String>>,
    cancel: CancellationToken,
    opts: UpstreamOptions,
) where
    C: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<S, String>>,
    S: Stream<Item = Result<Bytes, E>>,
    E: Display,
{
    let mut health = Health::new(health);
    let mut backoff = Backoff::new(opts.reconnect);
    loop {
        let opened = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            r = connect(cursor.clone()) => r,
        };
        match opened {
            Err(e) => health.error(format!("cannot open the upstream stream: {e}")),
            Ok(stream) => {
                health.ok();
                let started = Instant::now();
                let mut decoder =
                    StreamDecoder::new(&settings, base.clone(), cursor.clone(), opts.max_line);
                let (end, sent) =
                    drive_stream(stream, &mut decoder, &out, &mut health, &opts, &cancel).await;
                if decoder.cursor().is_some() {
                    cursor = decoder.cursor();
                }
                if let Some(retry) = decoder.retry() {
                    backoff.set_initial(retry.max(opts.min_backoff));
                }
                if sent > 0 || started.elapsed() >= opts.healthy_after {
                    backoff.reset();
                }
                match end {
                    StreamEnd::Cancelled | StreamEnd::Closed => return,
                    StreamEnd::Eof if sent > 0 => tracing::debug!(
                        "upstream closed the stream after {sent} items; reconnecting"
                    ),
                    StreamEnd::Eof => health.error(
                        "the upstream closed the stream without sending items; reconnecting"
                            .to_owned(),
                    ),
                    StreamEnd::Error(e) => {
                        health.error(format!("the upstream stream failed: {e}; reconnecting"))
                    }
                    StreamEnd::Idle => health.error(format!(
                        "no data from the upstream for {}s; reconnecting",
                        opts.idle_timeout.as_secs()
                    )),
                }
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}
