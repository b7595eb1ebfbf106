//! The live feed an edge follows in a cluster: [`JetStreamFeed`] implements
//! the [`LiveFeed`] seam with **one** JetStream consumer per process, fanned
//! out in process to every `follow()` (in practice the edge's hub) the way
//! the single-node bus is.
//!
//! No gap, no silent skip (docs/CLUSTER.md, "Edges: replay and live"):
//! - The feed's position is a stream sequence, `next`, fixed when the feed
//!   starts (after the stream's last message at that moment), before anyone
//!   follows. A message stored after a `follow()` returned is therefore
//!   fanned out after it, and one stored before is at or below the log's
//!   head read after it — what the hub relies on to start after the head.
//! - The consumer is an ephemeral pull consumer without acks created at
//!   `next`. When it fails — missed heartbeats, deleted (a restarted
//!   server), the connection re-established, NATS unreachable — it is
//!   created again at `next` with backoff, so delivery resumes exactly
//!   where it stopped; a message seen twice across that is dropped by
//!   sequence.
//! - A message whose sequence is past `next` means messages were lost in
//!   transit or deleted: followers get [`Live::Lagged`] first, and re-read
//!   the gap from the log (the hub's catch-up) — never a silent skip.
//! - A follower that falls [`CAPACITY`] batches behind gets `Lagged` too.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::log::{stream_info, unavailable, ReadError, CONSUMER_IDLE};
use super::message::{ms_of_nanos, BadMessage, Message};
use super::Cluster;
use crate::bus::{Batch, Live, LiveFeed};
use crate::event::{CommittedEvent, StreamEvent};
use crate::log::LogError;
use crate::scheduler::{Backoff, BackoffPolicy, Jitter};

/// Batches held for a slow follower before it gets `Lagged` (as the bus).
pub const CAPACITY: usize = 4096;

/// Most events in one batch: what arrived together, without waiting.
const MAX_BATCH: usize = 1024;
/// Messages one pull request asks for.
const PULL_BATCH: usize = 1024;
/// The server's idle heartbeat on a waiting pull; two missed ones and the
/// consumer is created again.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long one pull request waits on the server.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// How often the feed looks whether the connection was re-established
/// (one atomic load), to create its consumer again at once.
const RECONNECT_CHECK: Duration = Duration::from_secs(1);

/// Waits between attempts to create the consumer again: 250 ms doubling to
/// 10 s, in the upper half of each step (edges that lost NATS together do
/// not come back together).
const RETRY: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_millis(250),
    max: Duration::from_secs(10),
    factor: 2,
    jitter: Jitter::EQUAL,
};

/// The event stream as a [`LiveFeed`]. Cheap to clone; every clone and
/// every `follow()` shares the one consumer.
#[derive(Debug, Clone)]
pub struct JetStreamFeed {
    /// Weak, so followers' streams end when the consumer task stops
    /// (cancelled, or the stream was recreated).
    tx: broadcast::WeakSender<Live>,
}

impl JetStreamFeed {
    /// Starts the feed's consumer task after the stream's last message now;
    /// it runs until `cancel` fires. Fails when the stream cannot be read.
    pub async fn start(cluster: Cluster, cancel: CancellationToken) -> Result<Self, LogError> {
        let info = stream_info(&cluster).await.map_err(unavailable)?;
        Ok(Self::start_at(
            cluster,
            info.state.last_sequence + 1,
            cancel,
        ))
    }

    /// Starts the feed's consumer task at stream sequence `next` (a reader
    /// that already has everything before it). If the stream no longer
    /// holds `next`, followers get `Lagged` first.
    pub fn start_at(cluster: Cluster, next: u64, cancel: CancellationToken) -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        let feed = Self { tx: tx.downgrade() };
        let pump = Pump {
            cluster,
            tx,
            next: next.max(1),
        };
        tokio::spawn(pump.run(cancel));
        feed
    }
}

impl LiveFeed for JetStreamFeed {
    fn follow(&self) -> BoxStream<'static, Live> {
        let Some(tx) = self.tx.upgrade() else {
            return Box::pin(futures::stream::empty());
        };
        Box::pin(futures::stream::unfold(
            tx.subscribe(),
            |mut rx| async move {
                let next = match rx.recv().await {
                    Ok(live) => live,
                    Err(broadcast::error::RecvError::Lagged(n)) => Live::Lagged(n),
                    Err(broadcast::error::RecvError::Closed) => return None,
                };
                Some((next, rx))
            },
        ))
    }
}

/// The one consumer of the process and its position.
struct Pump {
    cluster: Cluster,
    tx: broadcast::Sender<Live>,
    /// The stream sequence to deliver next.
    next: u64,
}

/// Why a consumer was left.
enum Ended {
    /// Shutting down.
    Cancelled,
    /// Create it again at `next`, for this reason.
    Again(String),
}

impl Pump {
    async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(RETRY);
        let mut failures = 0u32;
        loop {
            let connects = self.connects();
            let created = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                r = self.consume() => r,
            };
            match created {
                Ok((name, messages)) => {
                    if failures > 0 {
                        tracing::info!(
                            failures,
                            next = self.next,
                            "live feed consuming the event stream again"
                        );
                    }
                    failures = 0;
                    backoff.reset();
                    let ended = self.follow(messages, connects, &cancel).await;
                    self.delete(name);
                    match ended {
                        Ended::Cancelled => return,
                        Ended::Again(why) => tracing::warn!(
                            reason = %why,
                            next = self.next,
                            "live feed consumer ended; creating it again where it stopped"
                        ),
                    }
                }
                Err(e @ ReadError::Recreated { .. }) => {
                    // Its ids would name the wrong messages: stop, so open
                    // streams end and new ones are refused until a restart.
                    tracing::error!(error = %e, "live feed stopped");
                    return;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::error!(error = %e, next = self.next, "live feed cannot consume the event stream; retrying");
                    } else {
                        tracing::warn!(error = %e, failures, "live feed still cannot consume the event stream");
                    }
                }
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// Times the client has (re)connected.
    fn connects(&self) -> u64 {
        self.cluster
            .client()
            .statistics()
            .connects
            .load(Ordering::Relaxed)
    }

    /// Creates the consumer at `next` and starts pulling.
    async fn consume(&self) -> Result<(String, pull::Stream), ReadError> {
        // Also checks the stream is still the one our ids are made for.
        stream_info(&self.cluster).await?;
        let names = self.cluster.names();
        let config = pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: self.next,
            },
            ack_policy: AckPolicy::None,
            filter_subject: names.all_events(),
            inactive_threshold: CONSUMER_IDLE,
            memory_storage: true,
            num_replicas: 1,
            description: Some("livestrom edge live feed".to_owned()),
            ..Default::default()
        };
        let consumer: PullConsumer = self
            .cluster
            .js()
            .create_consumer_on_stream(config, names.stream())
            .await
            .map_err(|e| ReadError::js("create the live feed's consumer", e))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH)
            .heartbeat(HEARTBEAT)
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(|e| ReadError::js("pull from the live feed's consumer", e))?;
        Ok((consumer.cached_info().name.clone(), messages))
    }

    /// Delivers from one consumer until it fails or the connection was
    /// re-established (`connects` changed).
    async fn follow(
        &mut self,
        mut messages: pull::Stream,
        connects: u64,
        cancel: &CancellationToken,
    ) -> Ended {
        let mut check = tokio::time::interval(RECONNECT_CHECK);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch: Vec<Arc<CommittedEvent>> = Vec::new();
        loop {
            let first = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ended::Cancelled,
                m = messages.next() => m,
                _ = check.tick() => {
                    if self.connects() != connects {
                        // Messages sent while the connection was down are
                        // lost in transit: start again where we are.
                        return Ended::Again("the NATS connection was re-established".to_owned());
                    }
                    continue;
                }
            };
            let mut ended = None;
            match first {
                Some(Ok(m)) => self.take(&m, &mut batch),
                Some(Err(e)) => return Ended::Again(e.to_string()),
                None => return Ended::Again("the consumer's messages ended".to_owned()),
            }
            // Whatever else already arrived goes in the same batch.
            while batch.len() < MAX_BATCH {
                match messages.next().now_or_never() {
                    Some(Some(Ok(m))) => self.take(&m, &mut batch),
                    Some(Some(Err(e))) => {
                        ended = Some(Ended::Again(e.to_string()));
                        break;
                    }
                    Some(None) => {
                        ended = Some(Ended::Again("the consumer's messages ended".to_owned()));
                        break;
                    }
                    None => break,
                }
            }
            self.flush(&mut batch);
            if let Some(e) = ended {
                return e;
            }
        }
    }

    /// Adds one message to `batch`, in sequence: an old one (seen before
    /// the consumer was created again) is dropped, one past a gap first
    /// tells followers to re-read the gap from the log.
    fn take(&mut self, msg: &async_nats::jetstream::Message, batch: &mut Vec<Arc<CommittedEvent>>) {
        let info = match msg.info() {
            Ok(i) => i,
            Err(e) => {
                // Without its sequence it cannot be placed; the next message
                // shows the gap and followers re-read it from the log.
                tracing::error!(subject = %msg.subject, error = %e, "live feed message without JetStream info");
                return;
            }
        };
        let seq = info.stream_sequence;
        if seq < self.next {
            return;
        }
        if seq > self.next {
            let missed = seq - self.next;
            tracing::warn!(
                from = self.next,
                missed,
                "live feed skipped sequences (lost in transit or deleted); followers re-read them from the log"
            );
            self.flush(batch);
            let _ = self.tx.send(Live::Lagged(missed));
        }
        self.next = seq + 1;
        let ms = ms_of_nanos(info.published.unix_timestamp_nanos());
        let decoded = Message::decode(
            self.cluster.names(),
            self.cluster.tag(),
            &msg.subject,
            seq,
            ms,
            &msg.payload,
        )
        .and_then(|m| {
            let event: StreamEvent = serde_json::from_str(&m.json).map_err(BadMessage::from)?;
            Ok(CommittedEvent {
                event,
                json: Arc::from(m.json),
            })
        });
        match decoded {
            Ok(ev) => batch.push(Arc::new(ev)),
            Err(e) => e.report(seq),
        }
    }

    /// Sends what `batch` holds to every follower.
    fn flush(&self, batch: &mut Vec<Arc<CommittedEvent>>) {
        if batch.is_empty() {
            return;
        }
        let b: Batch = std::mem::take(batch).into();
        // No followers is fine: nobody is listening live.
        let _ = self.tx.send(Live::Batch(b));
    }

    /// Deletes a consumer left behind, without waiting (the server also
    /// removes it once idle).
    fn delete(&self, name: String) {
        let js = self.cluster.js().clone();
        let stream = self.cluster.names().stream().to_owned();
        tokio::spawn(async move {
            if let Err(e) = js.delete_consumer_from_stream(&name, &stream).await {
                tracing::debug!(consumer = %name, error = %e, "old live consumer not deleted; it expires by itself");
            }
        });
    }
}
