//! The engine's [`Sink`] on a cluster: events published to the JetStream
//! stream, item and source state in key-value buckets, every write fenced.
//!
//! A write of a source's batch:
//! 1. refused unless this engine holds the source's lease and renewed it
//!    recently enough ([`Holdings`], kept by the lease loop);
//! 2. each event published in order with `Nats-Msg-Id` = (source, item,
//!    version) — a repeat inside the duplicate window is dropped — and
//!    `Nats-Expected-Last-Subject-Sequence` = the last sequence this engine
//!    knows on the source's subject: if anyone else published there since,
//!    the publish fails and nothing more of the batch is sent (the fence);
//! 3. each event's id taken from its sequence and stream timestamp;
//! 4. item states written, then the source state, which records the
//!    subject sequence the item states cover (`published_through`).
//!
//! A crash between 2 and 4 loses nothing: reading a source's state
//! ([`Sink::source_state`], the start of every poll) first replays the
//! events on its subject after `published_through` into item state (their
//! fingerprint and aliases travel in a header), so the next holder neither
//! emits them again nor skips what was not published.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use async_nats::header::HeaderMap;
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use bytes::Bytes;
use chrono::Utc;
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::time::Instant;
use uuid::Uuid;

use super::conn::Cluster;
use super::cursor;
use super::scan;
pub use super::stored::StoredSource;
use super::stored::{ItemHeader, StoredItem};
use super::wire::{self, Bucket, STATE_HEADER};
use crate::event::{CommittedEvent, SourceType, StreamEvent};
use crate::sink::Sink;
use crate::store::{item_horizon, ItemState, SourceState, StoreError, WriteBatch, SEEN_REFRESH};

/// Which sources this engine may write, and until when: set by the lease
/// loop after each renewal (`renewed_at + pollable_for`), cleared when a
/// lease is lost or released.
#[derive(Debug, Default)]
pub struct Holdings {
    until: Mutex<HashMap<String, Instant>>,
}

impl Holdings {
    /// Lets this engine write `source` until `until`.
    pub fn hold(&self, source: &str, until: Instant) {
        self.lock().insert(source.to_owned(), until);
    }

    /// No more writes to `source`.
    pub fn drop_source(&self, source: &str) {
        self.lock().remove(source);
    }

    /// Keeps only the sources in `held`.
    pub fn retain(&self, held: &HashSet<String>) {
        self.lock().retain(|s, _| held.contains(s));
    }

    /// True while this engine may write `source`.
    pub fn may_write(&self, source: &str) -> bool {
        self.lock()
            .get(source)
            .is_some_and(|until| Instant::now() < *until)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.until.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The engine's sink on a cluster.
pub struct ClusterSink {
    cluster: Cluster,
    stream: Stream,
    sources: kv::Store,
    items: kv::Store,
    holdings: Arc<Holdings>,
    engine_id: String,
    /// Per source: the last sequence on its subject this engine knows (the
    /// fence of its next publish).
    fences: Mutex<HashMap<String, u64>>,
    /// The process's metrics (shared with the edge of an `all` node).
    metrics: crate::metrics::Metrics,
}

impl std::fmt::Debug for ClusterSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSink")
            .field("engine", &self.engine_id)
            .finish_non_exhaustive()
    }
}

fn cluster_err(action: impl Into<String>, e: impl Into<async_nats::Error>) -> StoreError {
    StoreError::Cluster {
        action: action.into(),
        source: e.into(),
    }
}

impl ClusterSink {
    /// Opens the stream and buckets for engine `engine_id`, whose lease
    /// loop keeps `holdings`.
    pub async fn open(
        cluster: Cluster,
        engine_id: &str,
        holdings: Arc<Holdings>,
        retention: std::time::Duration,
    ) -> Result<Self, super::ClusterError> {
        let stream = cluster.stream().await?;
        let horizon = item_horizon(retention);
        let sources = cluster.bucket(Bucket::Sources, horizon).await?;
        let items = cluster.bucket(Bucket::Items, horizon).await?;
        Ok(Self {
            cluster,
            stream,
            sources,
            items,
            holdings,
            engine_id: engine_id.to_owned(),
            fences: Mutex::default(),
            metrics: crate::metrics::Metrics::new(),
        })
    }

    /// Records into `metrics` (the process's registry) instead of its own.
    pub fn with_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    fn fences(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.fences.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored source and its revision.
    async fn read_source(
        &self,
        source_id: &str,
    ) -> Result<(StoredSource, Option<u64>), StoreError> {
        let entry = self
            .sources
            .entry(source_id)
            .await
            .map_err(|e| cluster_err(format!("read the state of {source_id}"), e))?;
        match entry.filter(|e| e.operation == kv::Operation::Put) {
            Some(e) => {
                let s: StoredSource = serde_json::from_slice(&e.value).map_err(|err| {
                    StoreError::Corrupt(format!("state of source {source_id}: {err}"))
                })?;
                Ok((s, Some(e.revision)))
            }
            None => Ok((StoredSource::default(), None)),
        }
    }

    async fn put_source(&self, source_id: &str, s: &StoredSource) -> Result<(), StoreError> {
        let body = serde_json::to_vec(s)
            .map_err(|e| StoreError::Corrupt(format!("state of source {source_id}: {e}")))?;
        self.sources
            .put(source_id, body.into())
            .await
            .map_err(|e| cluster_err(format!("store the state of {source_id}"), e))?;
        Ok(())
    }

    /// The last sequence on the subject (0: none), from the stream leader.
    async fn last_on_subject(&self, subject: &str) -> Result<u64, StoreError> {
        match self.stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => Ok(m.sequence),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(cluster_err(format!("read the last event of {subject}"), e)),
        }
    }

    /// Replays the events of `subject` after `from` up to `to` into item
    /// state (see the module doc).
    async fn replay_into_items(
        &self,
        source_id: &str,
        subject: &str,
        from: u64,
        to: u64,
    ) -> Result<(u64, u64), StoreError> {
        let consumer = self
            .stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject.to_owned(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: from + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| cluster_err(format!("replay the events of {source_id}"), e))?;
        let mut events = 0;
        let mut new_items = 0;
        if consumer.cached_info().num_pending == 0 {
            return Ok((0, 0));
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| cluster_err(format!("replay the events of {source_id}"), e))?;
        let now = Utc::now().timestamp();
        while let Some(msg) = messages.next().await {
            let msg =
                msg.map_err(|e| cluster_err(format!("replay the events of {source_id}"), e))?;
            let info = msg
                .info()
                .map_err(|e| cluster_err("read a replayed event's metadata", e))?;
            let (seq, pending) = (info.stream_sequence, info.pending);
            let ms = (info.published.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
            if seq > to {
                break;
            }
            let ev: Result<StreamEvent, _> = serde_json::from_slice(&msg.payload);
            let header: Option<ItemHeader> = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(STATE_HEADER))
                .and_then(|v| serde_json::from_str(v.as_str()).ok());
            match (ev, header) {
                (Ok(ev), Some(h)) => {
                    let id = cursor::encode(self.cluster.tag(), seq, ms)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    if ev.version == 1 {
                        new_items += 1;
                    }
                    events += 1;
                    self.put_item(
                        source_id,
                        &StoredItem {
                            item_id: ev.item_id,
                            version: ev.version,
                            last_event_id: id,
                            fingerprint: h.fp,
                            aliases: h.aliases,
                            seen_at: now,
                        },
                    )
                    .await?;
                }
                _ => tracing::warn!(
                    source = source_id,
                    seq,
                    "an event on the source's subject has no item state; skipped"
                ),
            }
            if seq >= to || pending == 0 {
                break;
            }
        }
        Ok((events, new_items))
    }

    async fn put_item(&self, source_id: &str, item: &StoredItem) -> Result<(), StoreError> {
        let body = serde_json::to_vec(item)
            .map_err(|e| StoreError::Corrupt(format!("item state of {source_id}: {e}")))?;
        self.items
            .put(wire::item_key(source_id, &item.item_id), body.into())
            .await
            .map_err(|e| cluster_err(format!("store item state of {source_id}"), e))?;
        Ok(())
    }

    async fn load_items(&self, source_id: &str) -> Result<Vec<StoredItem>, StoreError> {
        let values = scan::latest(&self.items, &wire::item_keys_of(source_id))
            .await
            .map_err(|e| cluster_err(format!("read the items of {source_id}"), e))?;
        let mut out = Vec::with_capacity(values.len());
        for (key, v) in values {
            match serde_json::from_slice::<StoredItem>(&v) {
                Ok(i) => out.push(i),
                Err(e) => tracing::warn!(key, error = %e, "undecodable item state skipped"),
            }
        }
        Ok(out)
    }

    /// Publishes one event behind the fence; returns its sequence.
    async fn publish_one(
        &self,
        subject: &str,
        source_id: &str,
        fence: u64,
        json: &str,
        ev: &StreamEvent,
        header: &ItemHeader,
    ) -> Result<(u64, bool), StoreError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            wire::msg_id(source_id, &ev.item_id, ev.version).as_str(),
        );
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            fence.to_string().as_str(),
        );
        let state = serde_json::to_string(header)
            .map_err(|e| StoreError::Corrupt(format!("item state header: {e}")))?;
        headers.insert(STATE_HEADER, state.as_str());
        let ack = self
            .cluster
            .js()
            .publish_with_headers(
                subject.to_owned(),
                headers,
                Bytes::copy_from_slice(json.as_bytes()),
            )
            .await
            .map_err(|e| cluster_err(format!("publish an event of {source_id}"), e))?
            .await;
        match ack {
            Ok(ack) => Ok((ack.sequence, ack.duplicate)),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                self.fences().remove(source_id);
                Err(StoreError::Fenced {
                    source_id: source_id.to_owned(),
                    reason: "another engine published to it since this engine last read it",
                })
            }
            Err(e) => Err(cluster_err(format!("publish an event of {source_id}"), e)),
        }
    }

    /// The stream timestamp of message `seq`, in ms.
    async fn stamp(&self, seq: u64) -> Result<u64, StoreError> {
        let m = self
            .stream
            .get_raw_message(seq)
            .await
            .map_err(|e| cluster_err("read a published event's timestamp", e))?;
        Ok((m.time.unix_timestamp_nanos() / 1_000_000).max(0) as u64)
    }

    async fn write_batch(&self, batch: WriteBatch) -> Result<Vec<Arc<CommittedEvent>>, StoreError> {
        let Some(source_id) = batch
            .source
            .as_ref()
            .map(|s| s.source_id.clone())
            .or_else(|| batch.events.first().map(|e| e.event.source_id.clone()))
        else {
            return Ok(Vec::new());
        };
        if !self.holdings.may_write(&source_id) {
            return Err(StoreError::Fenced {
                source_id,
                reason: "this engine does not hold its lease",
            });
        }
        let now = Utc::now();
        let (mut stored, _) = self.read_source(&source_id).await?;
        let mut out = Vec::with_capacity(batch.events.len());
        let mut new_items = 0u64;
        if let Some(first) = batch.events.first() {
            let subject = self
                .cluster
                .names()
                .subject(first.event.source_type, &source_id);
            let known = self.fences().get(&source_id).copied();
            let mut fence = match known {
                Some(f) => f,
                None => self.last_on_subject(&subject).await?,
            };
            let mut published = Vec::with_capacity(batch.events.len());
            for ne in batch.events {
                if !self.holdings.may_write(&source_id) {
                    return Err(StoreError::Fenced {
                        source_id,
                        reason: "its lease expired during the write",
                    });
                }
                let mut ev = ne.event;
                ev.id = Uuid::nil();
                ev.emitted_at = now;
                ev.schema_version = 1;
                let committed = CommittedEvent::new(ev);
                let header = ItemHeader {
                    fp: ne.fingerprint,
                    aliases: ne.aliases,
                };
                let (seq, duplicate) = self
                    .publish_one(
                        &subject,
                        &source_id,
                        fence,
                        &committed.json,
                        &committed.event,
                        &header,
                    )
                    .await?;
                if duplicate {
                    // Stored before (a repeated poll): the subject may have
                    // moved on since, so the fence is read again.
                    fence = self.last_on_subject(&subject).await?;
                } else {
                    fence = seq;
                }
                published.push((seq, committed, header));
            }
            self.fences().insert(source_id.clone(), fence);
            let stamps =
                futures::future::try_join_all(published.iter().map(|(seq, _, _)| self.stamp(*seq)))
                    .await?;
            let mut items = Vec::with_capacity(published.len());
            for ((seq, committed, header), ms) in published.into_iter().zip(stamps) {
                let id = cursor::encode(self.cluster.tag(), seq, ms)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let json = wire::with_id(&committed.json, id)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let mut ev = committed.event;
                ev.id = id;
                if ev.version == 1 {
                    new_items += 1;
                }
                items.push(StoredItem {
                    item_id: ev.item_id.clone(),
                    version: ev.version,
                    last_event_id: id,
                    fingerprint: header.fp,
                    aliases: header.aliases,
                    seen_at: now.timestamp(),
                });
                out.push(Arc::new(CommittedEvent {
                    event: ev,
                    json: json.into(),
                }));
            }
            // Item states are independent keys: written concurrently.
            futures::future::try_join_all(items.iter().map(|i| self.put_item(&source_id, i)))
                .await?;
            stored.published_through = stored.published_through.max(fence);
        }
        for it in &batch.touch_items {
            if it.version == 0 && it.last_event_id.is_nil() {
                new_items += 1;
            }
            self.put_item(
                &source_id,
                &StoredItem {
                    item_id: it.item_id.clone(),
                    version: it.version,
                    last_event_id: it.last_event_id,
                    fingerprint: it.fingerprint.clone(),
                    aliases: it.aliases.clone(),
                    seen_at: now.timestamp(),
                },
            )
            .await?;
        }
        if batch.refresh_items {
            let due = stored.items_refreshed_at.is_none_or(|t| {
                now - t > chrono::Duration::from_std(SEEN_REFRESH / 2).unwrap_or_default()
            });
            if due {
                let floor = now.timestamp() - SEEN_REFRESH.as_secs() as i64;
                for mut item in self.load_items(&source_id).await? {
                    if item.seen_at < floor {
                        item.seen_at = now.timestamp();
                        self.put_item(&source_id, &item).await?;
                    }
                }
                stored.items_refreshed_at = Some(now);
            }
        }
        if let Some(s) = batch.source {
            stored.etag = s.etag;
            stored.last_modified = s.last_modified;
            stored.last_poll_at = s.last_poll_at;
            stored.last_success_at = s.last_success_at;
            stored.last_error = s.last_error;
            stored.consecutive_failures = s.consecutive_failures;
            stored.next_poll_at = s.next_poll_at;
            stored.initialized = s.initialized;
            stored.snapshot = s.snapshot;
            stored.upstream_cursor = s.upstream_cursor;
        }
        stored.event_count += out.len() as u64;
        stored.item_count += new_items;
        stored.engine = Some(self.engine_id.clone());
        self.put_source(&source_id, &stored).await?;
        Ok(out)
    }

    /// The state of a source, after replaying into item state whatever was
    /// published on its subject and not yet covered (only by the lease
    /// holder: others just read).
    async fn reconciled_state(&self, source_id: &str) -> Result<Option<SourceState>, StoreError> {
        let (mut stored, revision) = self.read_source(source_id).await?;
        if self.holdings.may_write(source_id) {
            let mut last = 0;
            let mut subject_of = None;
            for ty in SourceType::ALL {
                let subject = self.cluster.names().subject(ty, source_id);
                let l = self.last_on_subject(&subject).await?;
                if l > last {
                    last = l;
                    subject_of = Some(subject);
                }
            }
            if let Some(subject) = subject_of.filter(|_| last > stored.published_through) {
                let (events, new_items) = self
                    .replay_into_items(source_id, &subject, stored.published_through, last)
                    .await?;
                tracing::info!(
                    source = source_id,
                    events,
                    "item state caught up with events published before the last holder stored it"
                );
                stored.published_through = last;
                stored.event_count += events;
                stored.item_count += new_items;
                self.put_source(source_id, &stored).await?;
            }
            self.fences().insert(source_id.to_owned(), last);
        }
        Ok(revision.map(|_| stored.to_state(source_id)))
    }
}

impl Sink for ClusterSink {
    fn write(
        &self,
        batch: WriteBatch,
    ) -> BoxFuture<'_, Result<Vec<Arc<CommittedEvent>>, StoreError>> {
        Box::pin(self.write_batch(batch))
    }

    /// Every write is acknowledged by JetStream before it returns.
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn items<'a>(
        &'a self,
        source_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ItemState>, StoreError>> {
        Box::pin(async move {
            Ok(self
                .load_items(source_id)
                .await?
                .iter()
                .map(StoredItem::to_state)
                .collect())
        })
    }

    fn items_by_ids<'a>(
        &'a self,
        source_id: &'a str,
        ids: Vec<String>,
    ) -> BoxFuture<'a, Result<Vec<ItemState>, StoreError>> {
        Box::pin(async move {
            let gets = ids.iter().map(|id| async move {
                let entry = self
                    .items
                    .entry(wire::item_key(source_id, id))
                    .await
                    .map_err(|e| cluster_err(format!("read item state of {source_id}"), e))?;
                Ok::<_, StoreError>(
                    entry
                        .filter(|e| e.operation == kv::Operation::Put)
                        .and_then(|e| serde_json::from_slice::<StoredItem>(&e.value).ok())
                        .filter(|i| i.item_id == *id)
                        .map(|i| i.to_state()),
                )
            });
            Ok(futures::future::try_join_all(gets)
                .await?
                .into_iter()
                .flatten()
                .collect())
        })
    }

    fn source_state<'a>(
        &'a self,
        source_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SourceState>, StoreError>> {
        Box::pin(self.reconciled_state(source_id))
    }

    fn source_states(&self) -> BoxFuture<'_, Result<Vec<SourceState>, StoreError>> {
        Box::pin(async move { source_states(&self.sources).await })
    }

    /// JetStream expires events itself (the stream's max age).
    fn prune(&self) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async { Ok(0) })
    }

    /// The items bucket expires item state itself (its max age is the
    /// item horizon; polls that still see an item refresh it).
    fn prune_items<'a>(
        &'a self,
        _configured: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async { Ok(0) })
    }

    fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }
}

/// Every source state in the sources bucket, by id.
pub async fn source_states(sources: &kv::Store) -> Result<Vec<SourceState>, StoreError> {
    let values = scan::latest(sources, ">")
        .await
        .map_err(|e| cluster_err("read the sources' state", e))?;
    let mut out: Vec<SourceState> = values
        .into_iter()
        .filter_map(|(key, v)| {
            serde_json::from_slice::<StoredSource>(&v)
                .ok()
                .map(|s| s.to_state(&key))
        })
        .collect();
    out.sort_by(|a, b| a.source_id.cmp(&b.source_id));
    Ok(out)
}
