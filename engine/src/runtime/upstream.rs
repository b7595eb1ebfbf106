//! The long-lived upstream connection of an `ndjson`/`sse` firehose: feed
//! the bytes to the source's decoder as they arrive, batch what arrives
//! while the store is busy (at once when it is idle), send batches on a bounded channel
//! (backpressure reaches the socket), time out an idle connection, and
//! reconnect with capped exponential backoff and jitter, resuming SSE from
//! the last event id.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::poll::PollError;
use crate::config::{SourceConfig, SourceId};
use crate::fetch::{FetchError, FetchRequest, Fetcher};
use crate::scheduler::{Backoff, BackoffPolicy, Jitter};
use crate::sources::firehose::{Skipped, StreamDecoder, MAX_LINE};
use crate::sources::{Item, Kind, StreamSpec};

/// Why a streamed source is unhealthy; reported on the health channel and
/// shown as the source's `last_error`.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The source's kind is polled, not streamed.
    #[error("source {0} is not an ndjson/sse firehose; nothing to stream")]
    NotStreamed(SourceId),
    /// The connection could not be opened.
    #[error("cannot open the upstream stream: {0}")]
    Open(Box<dyn std::error::Error + Send + Sync>),
    /// The upstream ended the stream before sending any item.
    #[error("the upstream closed the stream without sending items; reconnecting")]
    Empty,
    /// The transport failed mid-stream (its message).
    #[error("the upstream stream failed: {0}; reconnecting")]
    Broken(String),
    /// No bytes arrived for this long.
    #[error("no data from the upstream for {}s; reconnecting", .0.as_secs())]
    Idle(Duration),
    /// Messages that could not be mapped were skipped.
    #[error(transparent)]
    Skipped(#[from] Skipped),
    /// The store refused a batch (reported by the runtime's store side
    /// between its retries, not by the connection).
    #[error("cannot store upstream items: {0}")]
    Store(PollError),
}

/// What goes on the health channel: the source works, or why it does not.
pub type HealthReport = Result<(), UpstreamError>;

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
    /// The longest the first item of a batch waits for company while the
    /// store is busy. An item that arrives while the store is idle (nothing
    /// queued for it) is sent at once; items arriving while it is busy
    /// gather into the next batch, sent as soon as the store has taken
    /// everything queued (group commit: batches grow with load, latency
    /// stays low without it).
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
            max_line: MAX_LINE,
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

/// Reports source health on a channel without ever blocking the stream:
/// state changes are sent, repeats of an error at most every `REPEAT`.
#[derive(Debug)]
pub struct Health {
    tx: mpsc::Sender<HealthReport>,
    /// What was last delivered: `Some(true)` ok, `Some(false)` error.
    last: Option<bool>,
    last_error_at: Option<Instant>,
}

impl Health {
    /// Minimum spacing of repeated error reports, and how long a stream must
    /// run clean after an error before it is reported healthy again.
    pub const REPEAT: Duration = Duration::from_secs(10);

    /// Wraps the health channel.
    pub fn new(tx: mpsc::Sender<HealthReport>) -> Self {
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
    pub fn error(&mut self, why: UpstreamError) {
        if self.tx.try_send(Err(why)).is_ok() {
            self.last = Some(false);
            self.last_error_at = Some(Instant::now());
        }
    }

    /// Messages were skipped: reported on the change to unhealthy, then at
    /// most every [`Self::REPEAT`], however fast bad messages arrive.
    pub fn problem(&mut self, why: Skipped) {
        let repeat_due = self
            .last_error_at
            .is_none_or(|t| t.elapsed() >= Self::REPEAT);
        if self.last != Some(false) || repeat_due {
            self.error(why.into());
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
        deadline: None,
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
                if !batch.due(out) {
                    continue;
                }
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
                    if !batch.pending.is_empty() {
                        if batch.deadline.is_none() {
                            batch.deadline = Some(Instant::now() + opts.batch_window);
                        }
                        if batch.due(out) {
                            if let Err(end) = batch.flush(out, cancel).await {
                                return (end, batch.sent);
                            }
                        }
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

/// A batch is sent once its items' text reaches this size (so the bounded
/// channel between reader and store holds at most ~16 of these).
const MAX_BATCH_BYTES: usize = 4 << 20;

/// An item's text size, for [`MAX_BATCH_BYTES`].
fn item_bytes(item: &Item) -> usize {
    item.title.len()
        + item.content.len()
        + item.url.as_deref().map_or(0, str::len)
        + item.guid.as_deref().map_or(0, str::len)
}

/// The batch being assembled.
struct Batcher {
    pending: Vec<Item>,
    /// Text bytes of the pending items (title, content, url, guid).
    pending_bytes: usize,
    /// Resume cursor after the last pending item.
    cursor: Option<String>,
    /// When to look again whether the pending batch can go out.
    flush_at: Option<Instant>,
    /// When the pending batch goes out at the latest (the batch window).
    deadline: Option<Instant>,
    /// Items sent so far on this connection.
    sent: u64,
}

/// While the store is busy, how often a pending batch checks whether it
/// has taken everything queued.
const STORE_BUSY_RECHECK: Duration = Duration::from_millis(1);

impl Batcher {
    /// True when the pending batch should go out now: the store has taken
    /// everything queued for it (idle, or about to be), or the batch window
    /// is over. Otherwise schedules the next look.
    fn due(&mut self, out: &mpsc::Sender<UpstreamBatch>) -> bool {
        let now = Instant::now();
        let idle = out.capacity() == out.max_capacity();
        if idle || self.deadline.is_some_and(|d| now >= d) {
            return true;
        }
        let next = now + STORE_BUSY_RECHECK;
        self.flush_at = Some(self.deadline.map_or(next, |d| d.min(next)));
        false
    }

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
        self.deadline = None;
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
pub async fn run_upstream_with<C, Fut, S, E, CE>(
    spec: StreamSpec,
    base: Url,
    mut cursor: Option<String>,
    mut connect: C,
    out: mpsc::Sender<UpstreamBatch>,
    health: mpsc::Sender<HealthReport>,
    cancel: CancellationToken,
    opts: UpstreamOptions,
) where
    C: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<S, CE>>,
    CE: Into<Box<dyn std::error::Error + Send + Sync>>,
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
            Err(e) => health.error(UpstreamError::Open(e.into())),
            Ok(stream) => {
                health.ok();
                let started = Instant::now();
                let mut decoder = spec.decoder(base.clone(), cursor.clone(), opts.max_line);
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
                    StreamEnd::Eof => health.error(UpstreamError::Empty),
                    StreamEnd::Error(e) => health.error(UpstreamError::Broken(e)),
                    StreamEnd::Idle => health.error(UpstreamError::Idle(opts.idle_timeout)),
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

/// Items read from a long-lived upstream, with the upstream's resume cursor
/// after the last of them (SSE `id:`), to be stored in the same transaction.
#[derive(Debug, Clone, Default)]
pub struct UpstreamBatch {
    /// Items in arrival order.
    pub items: Vec<Item>,
    /// The upstream `Last-Event-ID` after these items, if the upstream sends ids.
    pub cursor: Option<String>,
}

/// Holds the upstream connection of an `ndjson`/`sse` source, reconnecting
/// with backoff (resuming SSE with `Last-Event-ID` = `cursor`), and sends
/// batches of items to `out` (bounded: a slow store slows the read, memory stays
/// bounded). Returns when `cancel` fires. Health updates go to `health`.
pub async fn run_upstream(
    source: Arc<SourceConfig>,
    kind: Arc<dyn Kind>,
    fetcher: Fetcher,
    cursor: Option<String>,
    out: mpsc::Sender<UpstreamBatch>,
    health: mpsc::Sender<HealthReport>,
    cancel: CancellationToken,
) {
    let Some(spec) = kind.stream() else {
        let _ = health
            .send(Err(UpstreamError::NotStreamed(source.id.clone())))
            .await;
        return;
    };
    let accept = kind.accept();
    let resumes = spec.resumes();
    let connect = |cursor: Option<String>| {
        let fetcher = fetcher.clone();
        let mut req = FetchRequest::get(source.url.clone());
        req.user_agent.clone_from(&source.user_agent);
        req.headers.clone_from(&source.headers);
        req.accept = Some(accept);
        req.last_event_id = if resumes { cursor } else { None };
        async move {
            let response = fetcher.open_stream(&req).await?;
            Ok::<_, FetchError>(response.bytes_stream())
        }
    };
    run_upstream_with(
        spec.clone(),
        source.url.clone(),
        cursor,
        connect,
        out,
        health,
        cancel,
        UpstreamOptions::default(),
    )
    .await;
}
