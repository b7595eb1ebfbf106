//! Unit tests of the delivery worker on a paused clock: an in-memory event
//! log, a scripted receiver and a recording progress sink, so the retry
//! schedule, `Retry-After`, 410, failing, pruning, filters, concurrency and
//! operator changes are checked to the millisecond without sockets.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;
use uuid::Uuid;

use super::deliver::{Request, Response, SharedTransport, Transport};
use super::metrics::{EndpointSeries, WebhookMetrics};
use super::model::{Endpoint, FilterTerms, Progress, State};
use super::schedule::{DISABLE_AFTER_FAILING, RETRY_SCHEDULE};
use super::signing::SigningSecret;
use super::worker::{self, Ctx, ProgressSink};
use crate::event::{IdGenerator, SourceType};
use crate::log::{EventLog, LogError, LogRow, ReadScope};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An event log in memory.
#[derive(Default)]
struct MemLog {
    rows: Mutex<Vec<LogRow>>,
    pruned: Mutex<Uuid>,
    ids: Mutex<Option<IdGenerator>>,
}

impl MemLog {
    /// Appends an event of `source` (type rss) with `tags` and `title`.
    fn push(&self, source: &str, tags: &[&str], title: &str) -> Uuid {
        let id = lock(&self.ids)
            .get_or_insert_with(|| IdGenerator::new(None))
            .next_id();
        let json = serde_json::json!({
            "id": id, "source_id": source, "source_type": "rss",
            "title": title, "content": "", "tags": tags,
        })
        .to_string();
        lock(&self.rows).push(LogRow {
            id,
            source_id: source.to_owned(),
            source_type: SourceType::Rss,
            json: json.into(),
        });
        id
    }
}

impl EventLog for MemLog {
    fn read_after(
        &self,
        after: Uuid,
        limit: usize,
        scope: &ReadScope,
    ) -> Result<Vec<LogRow>, LogError> {
        let in_scope = |r: &LogRow| {
            (scope.sources.is_empty() && scope.prefixes.is_empty()
                || scope.sources.contains(&r.source_id)
                || scope
                    .prefixes
                    .iter()
                    .any(|p| r.source_id.starts_with(p.as_str())))
                && (scope.types.is_empty() || scope.types.contains(&r.source_type))
        };
        Ok(lock(&self.rows)
            .iter()
            .filter(|r| r.id > after && in_scope(r))
            .take(limit)
            .cloned()
            .collect())
    }
    fn retention_floor(&self) -> Uuid {
        *lock(&self.pruned)
    }
    fn head(&self) -> Result<Option<Uuid>, LogError> {
        Ok(lock(&self.rows).last().map(|r| r.id))
    }
    fn pruned_below(&self) -> Result<Uuid, LogError> {
        Ok(*lock(&self.pruned))
    }
    fn watermark(&self) -> Result<Uuid, LogError> {
        Ok(lock(&self.rows).last().map_or(Uuid::nil(), |r| r.id))
    }
}

/// How a scripted receiver answers: given the request and how many
/// attempts came before it.
type Answer = Box<dyn Fn(&Request, usize) -> Response + Send + Sync>;

/// A receiver that answers each attempt as `answer` says (given the
/// request and how many attempts came before), after `latency`.
struct Receiver {
    answer: Answer,
    latency: Duration,
    got: Mutex<Vec<(Instant, Request)>>,
    in_flight: Mutex<(usize, usize)>,
}

impl Receiver {
    fn new(answer: impl Fn(&Request, usize) -> Response + Send + Sync + 'static) -> Arc<Self> {
        Arc::new(Self {
            answer: Box::new(answer),
            latency: Duration::from_millis(10),
            got: Mutex::new(Vec::new()),
            in_flight: Mutex::new((0, 0)),
        })
    }

    fn ids(&self) -> Vec<Uuid> {
        lock(&self.got).iter().map(|(_, r)| r.id).collect()
    }

    fn times(&self) -> Vec<Instant> {
        lock(&self.got).iter().map(|(t, _)| *t).collect()
    }

    fn max_in_flight(&self) -> usize {
        lock(&self.in_flight).1
    }
}

struct Shared(Arc<Receiver>);

impl Transport for Shared {
    fn send(&self, request: Request) -> BoxFuture<'static, Response> {
        let r = self.0.clone();
        Box::pin(async move {
            let n = {
                let mut got = lock(&r.got);
                got.push((Instant::now(), request.clone()));
                got.len() - 1
            };
            {
                let mut f = lock(&r.in_flight);
                f.0 += 1;
                f.1 = f.1.max(f.0);
            }
            tokio::time::sleep(r.latency).await;
            lock(&r.in_flight).0 -= 1;
            (r.answer)(&request, n)
        })
    }
}

fn status(status: u16) -> Response {
    Response::Status {
        status,
        retry_after: None,
        body: String::new(),
    }
}

/// Every save of the worker.
#[derive(Default)]
struct Saves(Mutex<Vec<Progress>>);

impl Saves {
    fn last(&self) -> Option<Progress> {
        lock(&self.0).last().cloned()
    }
}

impl ProgressSink for Saves {
    fn save(&self, _id: i64, _epoch: i64, progress: &Progress) {
        lock(&self.0).push(progress.clone());
    }
}

struct Harness {
    log: Arc<MemLog>,
    receiver: Arc<Receiver>,
    saves: Arc<Saves>,
    config: watch::Sender<Arc<Endpoint>>,
    head: watch::Sender<u64>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// What the worker sends through; tests replace it.
    transport: SharedTransport,
    /// The worker's series, and the registry they render in.
    series: EndpointSeries,
    registry: prometheus_client::registry::Registry,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.task.abort();
    }
}

fn endpoint(terms: FilterTerms, concurrency: usize, cursor: Uuid) -> Endpoint {
    Endpoint {
        id: 1,
        name: "test".into(),
        url: Url::parse("http://receiver.test/hook").unwrap_or_else(|e| panic!("{e}")),
        filter: terms.filter(),
        concurrency,
        timeout: Duration::from_secs(10),
        secret: SigningSecret::generate(),
        previous: None,
        epoch: 0,
        revision: 0,
        progress: Progress::start(cursor),
    }
}

/// A worker over `log` delivering to `receiver`.
fn start(log: Arc<MemLog>, receiver: Arc<Receiver>, ep: Endpoint) -> Harness {
    let saves = Arc::new(Saves::default());
    let (config, config_rx) = watch::channel(Arc::new(ep));
    let (head, head_rx) = watch::channel(0);
    let cancel = CancellationToken::new();
    let transport = SharedTransport::new(Arc::new(Shared(receiver.clone())));
    let ctx = Ctx {
        log: log.clone(),
        transport: transport.subscribe(),
        sink: saves.clone(),
        head: head_rx,
        cancel: cancel.clone(),
    };
    let mut registry = prometheus_client::registry::Registry::with_prefix("livestrom");
    let series =
        WebhookMetrics::register(&mut registry).endpoint(1, "test", &config_rx.borrow().progress);
    let task = tokio::spawn(worker::run(config_rx, ctx, series.clone()));
    Harness {
        log,
        receiver,
        saves,
        config,
        head,
        cancel,
        task,
        transport,
        series,
        registry,
    }
}

impl Harness {
    /// New events committed: the worker is told.
    fn commit(&self) {
        self.head.send_modify(|n| *n += 1);
    }

    /// Waits (in paused time: as long as the schedule needs) until `cond`.
    async fn until(&self, what: &str, cond: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(8 * 86_400);
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "never: {what} (got {} attempts, last save {:?})",
                self.receiver.ids().len(),
                self.saves.last()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The value of one series of the worker's metrics, as rendered.
    fn metric(&self, series: &str) -> Option<f64> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .unwrap_or_else(|e| panic!("{e}"));
        let prefix = format!("{series} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
    }

    fn state(&self) -> Option<State> {
        self.saves.last().map(|p| p.state)
    }

    fn cursor(&self) -> Option<Uuid> {
        self.saves.last().map(|p| p.cursor)
    }
}

fn events(log: &MemLog, n: usize) -> Vec<Uuid> {
    (0..n)
        .map(|i| log.push("a.one", &["x"], &format!("event {i}")))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn events_go_out_in_id_order_one_at_a_time_and_the_cursor_follows_the_2xx() {
    let log = Arc::new(MemLog::default());
    let want = events(&log, 20);
    let h = start(
        log,
        Receiver::new(|_, _| status(204)),
        endpoint(FilterTerms::default(), 1, Uuid::nil()),
    );
    h.until("20 deliveries", |h| h.cursor() == want.last().copied())
        .await;
    assert_eq!(h.receiver.ids(), want);
    assert_eq!(h.receiver.max_in_flight(), 1);
    let body = lock(&h.receiver.got)[0].1.clone();
    assert!(body.body.contains("\"event 0\""));
    assert!(body.signature.starts_with("v1,") && !body.signature.contains(' '));
    // Live: a commit wakes the caught-up worker.
    let more = events(&h.log, 3);
    h.commit();
    h.until("3 more", |h| h.cursor() == more.last().copied())
        .await;
    assert_eq!(h.receiver.ids().len(), 23);
    assert_eq!(h.saves.last().map(|p| p.delivered), Some(23));
}

#[tokio::test(start_paused = true)]
async fn failures_then_recovery_deliver_exactly_the_missed_events_in_order_on_the_schedule() {
    let log = Arc::new(MemLog::default());
    let want = events(&log, 5);
    // The first four attempts fail (500, 502, a timeout, 503), then all succeed.
    let receiver = Receiver::new(|_, n| match n {
        0 => status(500),
        1 => status(502),
        2 => Response::Failed("timed out after 10s".into()),
        3 => status(503),
        _ => status(200),
    });
    let h = start(
        log,
        receiver,
        endpoint(FilterTerms::default(), 1, Uuid::nil()),
    );
    h.until("all delivered", |h| h.cursor() == want.last().copied())
        .await;
    let ids = h.receiver.ids();
    let mut expected = vec![want[0]; 5];
    expected.extend_from_slice(&want[1..]);
    assert_eq!(
        ids, expected,
        "the first event five times, then the rest once, in order"
    );
    let t = h.receiver.times();
    let gaps: Vec<Duration> = t.windows(2).take(4).map(|w| w[1] - w[0]).collect();
    // Each gap is the attempt's latency (10 ms) plus the jittered step.
    for (gap, step) in gaps.iter().zip(RETRY_SCHEDULE) {
        let lo = step.mul_f64(0.9) + Duration::from_millis(10);
        let hi = step.mul_f64(1.1) + Duration::from_millis(11);
        assert!(*gap >= lo && *gap <= hi, "gap {gap:?} for step {step:?}");
    }
    let p = h.saves.last().unwrap_or_else(|| panic!("no save"));
    assert_eq!((p.state, p.failures, p.delivered), (State::Active, 0, 5));
    assert!(
        p.last_error
            .as_deref()
            .is_some_and(|e| e.contains("HTTP 503")),
        "{:?}",
        p.last_error
    );
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_schedule_marks_the_endpoint_failing_keeps_the_cursor_then_disables_it() {
    let log = Arc::new(MemLog::default());
    let want = events(&log, 2);
    let cursor = Uuid::nil();
    let started = Instant::now();
    let h = start(
        log,
        Receiver::new(|_, _| status(500)),
        endpoint(FilterTerms::default(), 1, cursor),
    );
    h.until("failing", |h| h.state() == Some(State::Failing))
        .await;
    let ids = h.receiver.ids();
    assert_eq!(
        ids,
        vec![want[0]; 9],
        "nine attempts of the first event, none of the next"
    );
    let total: Duration = RETRY_SCHEDULE.iter().sum();
    let took = h.receiver.times()[8] - started;
    assert!(
        took >= total.mul_f64(0.9) && took <= total.mul_f64(1.1) + Duration::from_secs(1),
        "{took:?}"
    );
    let p = h.saves.last().unwrap_or_else(|| panic!("no save"));
    assert_eq!(p.cursor, cursor, "nothing skipped");
    assert_eq!(p.failures, 9);
    assert!(
        p.state_reason
            .as_deref()
            .is_some_and(|r| r.contains("9 attempts")),
        "{:?}",
        p.state_reason
    );
    // Paused: no attempt while failing, then disabled after 5 days.
    h.until("disabled", |h| h.state() == Some(State::Disabled))
        .await;
    assert_eq!(h.receiver.ids().len(), 9);
    assert!(Instant::now() - started >= DISABLE_AFTER_FAILING - Duration::from_secs(60));
    assert_eq!(h.cursor(), Some(cursor));
}

#[tokio::test(start_paused = true)]
async fn retry_after_of_a_429_or_503_is_the_wait() {
    let log = Arc::new(MemLog::default());
    let want = events(&log, 1);
    let receiver = Receiver::new(|_, n| match n {
        0 => Response::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(120)),
            body: "slow down".into(),
        },
        1 => Response::Status {
            status: 503,
            retry_after: Some(Duration::from_secs(7)),
            body: String::new(),
        },
        _ => status(200),
    });
    let h = start(
        log,
        receiver,
        endpoint(FilterTerms::default(), 1, Uuid::nil()),
    );
    h.until("delivered", |h| h.cursor() == want.last().copied())
        .await;
    let t = h.receiver.times();
    let latency = Duration::from_millis(10);
    assert_eq!(t[1] - t[0], Duration::from_secs(120) + latency);
    assert_eq!(t[2] - t[1], Duration::from_secs(7) + latency);
}

#[tokio::test(start_paused = true)]
async fn a_410_disables_the_endpoint_with_its_cursor_kept() {
    let log = Arc::new(MemLog::default());
    let want = events(&log, 3);
    let receiver = Receiver::new(|_, n| if n == 0 { status(200) } else { status(410) });
    let h = start(
        log,
        receiver,
        endpoint(FilterTerms::default(), 1, Uuid::nil()),
    );
    h.until("disabled", |h| h.state() == Some(State::Disabled))
        .await;
    let p = h.saves.last().unwrap_or_else(|| panic!("no save"));
    assert_eq!(p.cursor, want[0]);
    assert!(p.state_reason.as_deref().is_some_and(|r| r.contains("410")));
    events(&h.log, 2);
    h.commit();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        h.receiver.ids(),
        vec![want[0], want[1]],
        "nothing after the 410"
    );
}

#[tokio::test(start_paused = true)]
async fn events_pruned_after_the_cursor_pause_the_endpoint_instead_of_skipping() {
    let log = Arc::new(MemLog::default());
    let old = events(&log, 1);
    *lock(&log.pruned) = log.push("a.one", &[], "newer");
    let h = start(
        log,
        Receiver::new(|_, _| status(200)),
        endpoint(FilterTerms::default(), 1, old[0]),
    );
    h.until("paused", |h| h.state() == Some(State::Paused))
        .await;
    assert!(h.receiver.ids().is_empty());
    let p = h.saves.last().unwrap_or_else(|| panic!("no save"));
    assert_eq!(p.cursor, old[0]);
    assert!(p
        .state_reason
        .as_deref()
        .is_some_and(|r| r.contains("retention") && r.contains("webhook replay")));
}

#[tokio::test(start_paused = true)]
async fn filters_select_what_the_stream_would_and_the_cursor_moves_past_the_rest() {
    let log = Arc::new(MemLog::default());
    let mut want = Vec::new();
    for i in 0..30 {
        let (source, tags) = match i % 3 {
            0 => ("kommun.a", vec!["x"]),
            1 => ("kommun.b", vec!["y"]),
            _ => ("other", vec!["x"]),
        };
        let id = log.push(source, &tags, &format!("Event {i}"));
        if i % 3 == 0 {
            want.push(id);
        }
    }
    let last = log.push("other", &[], "not for this endpoint");
    let terms = FilterTerms {
        source: vec!["kommun.*".into()],
        tag: vec!["x".into()],
        ..Default::default()
    };
    let h = start(
        log,
        Receiver::new(|_, _| status(200)),
        endpoint(terms, 1, Uuid::nil()),
    );
    h.until("all matching", |h| h.receiver.ids().len() == want.len())
        .await;
    assert_eq!(h.receiver.ids(), want);
    // After the last match, the cursor moves past what does not match.
    h.until("cursor past the rest", |h| h.cursor() == Some(last))
        .await;
}

#[tokio::test(start_paused = true)]
async fn concurrency_allows_several_in_flight_and_the_cursor_waits_for_the_slowest() {
    let log = Arc::new(MemLog::default());
    let want = events(&log, 40);
    let slow = want[3];
    // One event fails twice; the others go through around it.
    let tries = Mutex::new(0);
    let receiver = Receiver::new(move |r, _| {
        if r.id != slow {
            return status(200);
        }
        let mut t = lock(&tries);
        *t += 1;
        if *t <= 2 {
            status(500)
        } else {
            status(200)
        }
    });
    let h = start(
        log,
        receiver,
        endpoint(FilterTerms::default(), 4, Uuid::nil()),
    );
    h.until("past the slow one", |h| h.cursor() > Some(slow))
        .await;
    // The others went through during its retry waits, but the cursor stayed
    // before it until it was delivered, then jumped past all of them.
    let first_past = lock(&h.saves.0)
        .iter()
        .find(|p| p.cursor >= slow)
        .map(|p| (p.cursor, p.delivered));
    assert_eq!(first_past, Some((want[39], 40)));
    h.until("all", |h| h.cursor() == want.last().copied()).await;
    assert_eq!(h.receiver.max_in_flight(), 4);
    let mut got = h.receiver.ids();
    assert_eq!(got.iter().filter(|id| **id == slow).count(), 3);
    got.sort();
    got.dedup();
    assert_eq!(got, want);
}

#[tokio::test(start_paused = true)]
async fn an_operator_replay_starts_over_from_the_new_cursor() {
    let log = Arc::new(MemLog::default());
    let want = events(&log, 6);
    let ep = endpoint(FilterTerms::default(), 1, Uuid::nil());
    let h = start(log, Receiver::new(|_, _| status(200)), ep.clone());
    h.until("all", |h| h.cursor() == want.last().copied()).await;
    let mut replay = ep;
    replay.epoch = 1;
    replay.revision = 1;
    replay.progress = Progress::start(want[2]);
    h.config.send_replace(Arc::new(replay));
    h.until("replayed", |h| h.receiver.ids().len() == 9).await;
    assert_eq!(&h.receiver.ids()[6..], &want[3..]);
}

#[tokio::test(start_paused = true)]
async fn a_rotated_secret_signs_beside_the_new_one_until_its_overlap_ends() {
    let log = Arc::new(MemLog::default());
    events(&log, 1);
    let mut ep = endpoint(FilterTerms::default(), 1, Uuid::nil());
    let old = SigningSecret::generate();
    ep.previous = Some((old.clone(), chrono::Utc::now() + chrono::Duration::hours(1)));
    let new = ep.secret.clone();
    let h = start(log, Receiver::new(|_, _| status(200)), ep);
    h.until("delivered", |h| h.receiver.ids().len() == 1).await;
    let r = lock(&h.receiver.got)[0].1.clone();
    let id = r.id.to_string();
    assert_eq!(
        r.signature,
        format!(
            "{} {}",
            new.sign(&id, r.timestamp, r.body.as_bytes()),
            old.sign(&id, r.timestamp, r.body.as_bytes())
        )
    );
}

/// A transport that never answers: one endpoint stuck on it does not hold
/// up another (each has its own worker).
#[tokio::test(start_paused = true)]
async fn a_dead_endpoint_does_not_delay_another() {
    let log = Arc::new(MemLog::default());
    let want = events(&log, 10);
    let stuck = Receiver::new(|_, _| status(200));
    let dead = {
        struct Never;
        impl Transport for Never {
            fn send(&self, _: Request) -> BoxFuture<'static, Response> {
                Box::pin(futures::future::pending())
            }
        }
        let (_config, rx) =
            watch::channel(Arc::new(endpoint(FilterTerms::default(), 1, Uuid::nil())));
        let (_head, head_rx) = watch::channel(0);
        let cancel = CancellationToken::new();
        let ctx = Ctx {
            log: log.clone(),
            transport: SharedTransport::new(Arc::new(Never)).subscribe(),
            sink: Arc::new(Saves::default()),
            head: head_rx,
            cancel: cancel.clone(),
        };
        let series = EndpointSeries::detached(&rx.borrow().progress);
        (
            tokio::spawn(worker::run(rx, ctx, series)),
            cancel,
            _config,
            _head,
        )
    };
    let h = start(log, stuck, endpoint(FilterTerms::default(), 1, Uuid::nil()));
    h.until("all", |h| h.cursor() == want.last().copied()).await;
    dead.1.cancel();
}

/// A new transport (a config reload that changed `[fetch]`) ends a wait of
/// the retry schedule at once, and the retry goes through it; a wait a
/// receiver asked for (`Retry-After`) is waited out whatever changes here.
#[tokio::test(start_paused = true)]
async fn a_new_transport_ends_a_scheduled_retry_wait_but_not_a_retry_after() {
    let log = Arc::new(MemLog::default());
    let want = events(&log, 2);
    let refused = Receiver::new(|_, _| Response::Failed("refused to connect".into()));
    let h = start(
        log.clone(),
        refused,
        endpoint(FilterTerms::default(), 1, Uuid::nil()),
    );
    // Failed at once, at once again, then after 5 s: now waiting 5 min.
    h.until("three attempts", |h| h.receiver.ids().len() == 3)
        .await;
    h.until("the retry scheduled", |h| {
        h.saves.last().is_some_and(|p| p.failures == 3)
    })
    .await;
    let replaced_at = Instant::now();
    let works = Receiver::new(|_, _| status(204));
    h.transport.replace(Arc::new(Shared(works.clone())));
    h.until("both delivered", |h| h.cursor() == want.last().copied())
        .await;
    assert_eq!(works.ids(), want, "the waiting event first, then the next");
    assert!(
        works.times()[0] - replaced_at < Duration::from_secs(5),
        "the 5 min wait ended with the new transport ({:?})",
        works.times()[0] - replaced_at
    );
    assert_eq!(h.receiver.ids().len(), 3, "the old transport got no more");

    // A receiver's Retry-After is its own: a new transport does not cut it.
    let log = Arc::new(MemLog::default());
    let want = events(&log, 1);
    let busy = Receiver::new(|_, _| Response::Status {
        status: 503,
        retry_after: Some(Duration::from_secs(600)),
        body: String::new(),
    });
    let h = start(log, busy, endpoint(FilterTerms::default(), 1, Uuid::nil()));
    h.until("the 503", |h| {
        h.saves.last().is_some_and(|p| p.failures == 1)
    })
    .await;
    let answered = h.receiver.times()[0];
    let works = Receiver::new(|_, _| status(204));
    h.transport.replace(Arc::new(Shared(works.clone())));
    h.until("delivered", |h| h.cursor() == want.last().copied())
        .await;
    assert!(works.times()[0] - answered >= Duration::from_secs(600));
}

/// The worker's series: attempts by outcome, its state and failures in a
/// row, and the oldest event it has not delivered (the lag's start).
#[tokio::test(start_paused = true)]
async fn the_series_follow_the_worker() {
    let log = Arc::new(MemLog::default());
    let want = events(&log, 3);
    let receiver = Receiver::new(|_, n| if n < 2 { status(500) } else { status(200) });
    let h = start(
        log,
        receiver,
        endpoint(FilterTerms::default(), 1, Uuid::nil()),
    );
    h.until("two failures", |h| {
        h.saves.last().is_some_and(|p| p.failures == 2)
    })
    .await;
    assert_eq!(h.series.pending_now(), Some(want[0]));
    assert_eq!(
        h.metric("livestrom_webhook_consecutive_failures{endpoint=\"test\"}"),
        Some(2.0)
    );
    h.until("all delivered", |h| h.cursor() == want.last().copied())
        .await;
    assert_eq!(h.series.pending_now(), None, "caught up");
    for (series, want) in [
        (
            "livestrom_webhook_deliveries_total{endpoint=\"test\",outcome=\"delivered\"}",
            3.0,
        ),
        (
            "livestrom_webhook_deliveries_total{endpoint=\"test\",outcome=\"failed\"}",
            2.0,
        ),
        (
            "livestrom_webhook_deliveries_total{endpoint=\"test\",outcome=\"gone\"}",
            0.0,
        ),
        (
            "livestrom_webhook_delivery_duration_seconds_count{endpoint=\"test\"}",
            5.0,
        ),
        (
            "livestrom_webhook_consecutive_failures{endpoint=\"test\"}",
            0.0,
        ),
        (
            "livestrom_webhook_endpoint_state{endpoint=\"test\",state=\"active\"}",
            1.0,
        ),
        (
            "livestrom_webhook_endpoint_state{endpoint=\"test\",state=\"failing\"}",
            0.0,
        ),
        ("livestrom_webhook_lag_seconds{endpoint=\"test\"}", 0.0),
    ] {
        assert_eq!(h.metric(series), Some(want), "{series}");
    }
}

/// An endpoint that starts out not delivering (failing, disabled) finds
/// its oldest matching event for the lag, and one caught up when it
/// stopped finds the first that arrives later.
#[tokio::test(start_paused = true)]
async fn an_endpoint_not_delivering_still_knows_its_oldest_pending_event() {
    let log = Arc::new(MemLog::default());
    log.push("b.other", &[], "not matched");
    let first = log.push("a.one", &[], "matched");
    let terms = FilterTerms {
        source: vec!["a.*".into()],
        ..Default::default()
    };
    let mut ep = endpoint(terms.clone(), 1, Uuid::nil());
    ep.progress.state = State::Failing;
    ep.progress.failing_since = Some(chrono::Utc::now());
    let h = start(log.clone(), Receiver::new(|_, _| status(200)), ep);
    h.until("the pending event found", |h| {
        h.series.pending_now() == Some(first)
    })
    .await;
    assert_eq!(
        h.metric("livestrom_webhook_endpoint_state{endpoint=\"test\",state=\"failing\"}"),
        Some(1.0)
    );
    assert!(
        h.receiver.ids().is_empty(),
        "a failing endpoint sends nothing"
    );

    let log = Arc::new(MemLog::default());
    let mut ep = endpoint(terms, 1, Uuid::nil());
    ep.progress.state = State::Disabled;
    let h = start(log.clone(), Receiver::new(|_, _| status(200)), ep);
    log.push("b.other", &[], "not matched");
    h.commit();
    let later = log.push("a.one", &[], "matched");
    h.commit();
    h.until("the new event pending", |h| {
        h.series.pending_now() == Some(later)
    })
    .await;
}

/// A transport replaced while an attempt is in flight on the old one: the
/// retry of that attempt does not wait out the schedule either.
#[tokio::test(start_paused = true)]
async fn a_transport_replaced_during_an_attempt_ends_its_retrys_wait() {
    struct Gate {
        calls: Mutex<usize>,
        release: tokio::sync::Notify,
    }
    struct Gated(Arc<Gate>);
    impl Transport for Gated {
        fn send(&self, _: Request) -> BoxFuture<'static, Response> {
            let gate = self.0.clone();
            Box::pin(async move {
                let n = {
                    let mut calls = lock(&gate.calls);
                    *calls += 1;
                    *calls
                };
                // The second attempt (whose retry waits 5 s) hangs until released.
                if n == 2 {
                    gate.release.notified().await;
                }
                Response::Failed("refused to connect".into())
            })
        }
    }
    let log = Arc::new(MemLog::default());
    let want = events(&log, 1);
    let gate = Arc::new(Gate {
        calls: Mutex::new(0),
        release: tokio::sync::Notify::new(),
    });
    let h = start(
        log,
        Receiver::new(|_, _| status(500)),
        endpoint(FilterTerms::default(), 1, Uuid::nil()),
    );
    h.transport.replace(Arc::new(Gated(gate.clone())));
    h.until("the second attempt in flight", |_| *lock(&gate.calls) == 2)
        .await;
    let works = Receiver::new(|_, _| status(204));
    h.transport.replace(Arc::new(Shared(works.clone())));
    let released = Instant::now();
    gate.release.notify_one();
    h.until("delivered", |h| h.cursor() == want.last().copied())
        .await;
    assert!(
        works.times()[0] - released < Duration::from_secs(5),
        "{:?}",
        works.times()[0] - released
    );
    assert_eq!(*lock(&gate.calls), 2);
}
