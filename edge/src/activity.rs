//! `GET /v1/admin/activity?minutes=N`: events per minute per source type
//! over the last `N` minutes (default 60), counted from the event log — the
//! status page's chart and its events/min figure.
//!
//! Counting reads the log from `N` minutes ago, so it is bounded: at most
//! [`MAX_SCAN`] events are counted per request, and `truncated` says when
//! the window held more (the newest minutes are then the ones missing).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use livestrom_engine::event::{ms_of, uuid_floor_at};
use livestrom_engine::log::{CursorCheck, LogError, ReadScope};
use livestrom_engine::{EventLog, SourceType};
use serde::Serialize;
use uuid::Uuid;

use crate::admin::{no_store, AdminKey};
use crate::problem::Problem;
use crate::stream::internal;
use crate::AppState;

/// Minutes counted when `minutes` is not given.
pub const DEFAULT_MINUTES: u32 = 60;
/// The longest window a request may ask for (a day).
pub const MAX_MINUTES: u32 = 1440;
/// Most events one request counts.
pub const MAX_SCAN: usize = 200_000;
/// Rows per log read.
const PAGE: usize = 2048;

/// One minute of the window.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Minute {
    /// The minute's start (UTC, whole minute).
    pub start: DateTime<Utc>,
    /// Events in it by source type; every type is present, zeros included.
    pub counts: TypeCounts,
}

/// Events per source type.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct TypeCounts {
    /// `rss` events.
    pub rss: u64,
    /// `json` events.
    pub json: u64,
    /// `html` events.
    pub html: u64,
    /// `firehose` events.
    pub firehose: u64,
}

impl TypeCounts {
    fn add(&mut self, t: SourceType) {
        match t {
            SourceType::Rss => self.rss += 1,
            SourceType::Json => self.json += 1,
            SourceType::Html => self.html += 1,
            SourceType::Firehose => self.firehose += 1,
        }
    }
}

/// The body of `GET /v1/admin/activity`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Activity {
    /// The window's length in minutes (= `per_minute.len()`).
    pub minutes: u32,
    /// Oldest first; the last entry is the current, unfinished minute.
    pub per_minute: Vec<Minute>,
    /// Events counted in the window.
    pub events: u64,
    /// Events in the 60 seconds before the answer: the current events/min.
    pub last_minute: u64,
    /// True when the window held more than [`MAX_SCAN`] events and the
    /// newest ones were not counted.
    pub truncated: bool,
}

/// `GET /v1/admin/activity`.
pub async fn handler(
    _: AdminKey,
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, Problem> {
    let minutes = parse_minutes(query.as_deref())?;
    let log = state.log.clone();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64;
    let body = state
        .reads
        .run(move || count(&*log, now_ms, minutes, MAX_SCAN))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    Ok(no_store(Json(body).into_response()))
}

/// `minutes` from the query (the key may also be there: `api_key` is allowed).
fn parse_minutes(raw: Option<&str>) -> Result<u32, Problem> {
    let mut minutes = None;
    for (name, value) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match &*name {
            "minutes" if minutes.is_some() => {
                return Err(Problem::bad_param("minutes", "`minutes` given twice"))
            }
            "minutes" => {
                let n = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_MINUTES).contains(n))
                    .ok_or_else(|| {
                        Problem::bad_param(
                            "minutes",
                            format!("`minutes` must be a whole number from 1 to {MAX_MINUTES}"),
                        )
                    })?;
                minutes = Some(n);
            }
            crate::auth::QUERY_PARAM => {}
            other => {
                return Err(Problem::bad_param(
                    other,
                    format!("unknown parameter `{other}`; this endpoint takes `minutes`"),
                ))
            }
        }
    }
    Ok(minutes.unwrap_or(DEFAULT_MINUTES))
}

/// Counts the log's events of the `minutes` whole minutes up to `now_ms`
/// (the last one unfinished), at most `max_scan` of them. Blocking.
pub fn count(
    log: &dyn EventLog,
    now_ms: u64,
    minutes: u32,
    max_scan: usize,
) -> Result<Activity, LogError> {
    const MINUTE_MS: u64 = 60_000;
    let minutes = minutes.max(1);
    let current = now_ms - now_ms % MINUTE_MS;
    let start_ms = current.saturating_sub(u64::from(minutes - 1) * MINUTE_MS);
    let mut per_minute: Vec<Minute> = (0..u64::from(minutes))
        .map(|i| Minute {
            start: DateTime::from_timestamp_millis((start_ms + i * MINUTE_MS) as i64)
                .unwrap_or_default(),
            counts: TypeCounts::default(),
        })
        .collect();
    // Where to start reading is the log's call (in a cluster an id's order
    // is its stream sequence): a time cursor, or the oldest retained event
    // when the window reaches back past retention.
    let from = uuid_floor_at(start_ms);
    let mut after = match log.check_cursor(from)? {
        CursorCheck::Ok => from,
        CursorCheck::Expired { floor } => floor,
        CursorCheck::Foreign { .. } | CursorCheck::Ahead { .. } => log.retention_floor(),
    };
    let (mut events, mut last_minute, mut scanned) = (0u64, 0u64, 0usize);
    let last_minute_from = now_ms.saturating_sub(MINUTE_MS);
    let mut truncated = false;
    loop {
        let want = PAGE.min(max_scan - scanned);
        if want == 0 {
            // Only a look-ahead of one row tells whether anything was left out.
            truncated = !log.read_after(after, 1, &ReadScope::default())?.is_empty();
            break;
        }
        let mut last: Option<Uuid> = None;
        let n = log.read_after_with(after, want, &ReadScope::default(), &mut |id, _, t, _| {
            last = Some(id);
            let ms = ms_of(id);
            if ms < start_ms {
                return;
            }
            // A timestamp past `now` (another node's clock) counts in the
            // current minute rather than being dropped.
            let i = ((ms - start_ms) / MINUTE_MS).min(u64::from(minutes) - 1) as usize;
            if let Some(m) = per_minute.get_mut(i) {
                m.counts.add(t);
                events += 1;
            }
            if ms >= last_minute_from {
                last_minute += 1;
            }
        })?;
        scanned += n;
        match last {
            Some(id) if n == want => after = id,
            _ => break,
        }
    }
    Ok(Activity {
        minutes,
        per_minute,
        events,
        last_minute,
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use livestrom_engine::event::compose_v7;
    use livestrom_engine::log::LogRow;

    use super::*;

    /// A log of rows in id order; nothing pruned.
    struct Rows(Vec<LogRow>);

    impl EventLog for Rows {
        fn read_after(
            &self,
            after: Uuid,
            limit: usize,
            _: &ReadScope,
        ) -> Result<Vec<LogRow>, LogError> {
            Ok(self
                .0
                .iter()
                .filter(|r| r.id > after)
                .take(limit)
                .cloned()
                .collect())
        }
        fn retention_floor(&self) -> Uuid {
            Uuid::nil()
        }
        fn head(&self) -> Result<Option<Uuid>, LogError> {
            Ok(self.0.last().map(|r| r.id))
        }
        fn pruned_below(&self) -> Result<Uuid, LogError> {
            Ok(Uuid::nil())
        }
        fn watermark(&self) -> Result<Uuid, LogError> {
            Ok(self.head()?.unwrap_or_default())
        }
    }

    fn log(events: &[(u64, SourceType)]) -> Rows {
        Rows(
            events
                .iter()
                .enumerate()
                .map(|(i, &(ms, t))| LogRow {
                    id: compose_v7(ms, i as u128),
                    source_id: "s".into(),
                    source_type: t,
                    json: Arc::from("{}"),
                })
                .collect(),
        )
    }

    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    #[test]
    fn counts_each_minute_by_type_and_ignores_events_before_the_window() {
        let now = now_ms();
        let minute = now - now % 60_000;
        let rows = log(&[
            (minute - 10 * 60_000, SourceType::Rss), // before a 3-minute window
            (minute - 2 * 60_000, SourceType::Rss),
            (minute - 2 * 60_000 + 59_999, SourceType::Html),
            (minute - 60_000 + 5, SourceType::Rss),
            (minute, SourceType::Firehose),
            (now, SourceType::Json),
        ]);
        let a = count(&rows, now, 3, MAX_SCAN).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.minutes, 3);
        let per: Vec<TypeCounts> = a.per_minute.iter().map(|m| m.counts).collect();
        assert_eq!(
            per,
            [
                TypeCounts {
                    rss: 1,
                    html: 1,
                    ..Default::default()
                },
                TypeCounts {
                    rss: 1,
                    ..Default::default()
                },
                TypeCounts {
                    firehose: 1,
                    json: 1,
                    ..Default::default()
                },
            ]
        );
        assert_eq!(a.per_minute[2].start.timestamp_millis() as u64, minute);
        assert_eq!(a.events, 5);
        assert!(!a.truncated);
        // `last_minute` is the 60 s before `now`, across the minute boundary.
        let expected = [minute - 60_000 + 5, minute, now]
            .iter()
            .filter(|&&ms| ms >= now - 60_000)
            .count() as u64;
        assert_eq!(a.last_minute, expected);
    }

    #[test]
    fn stops_at_the_scan_bound_and_says_so() {
        let now = now_ms();
        let rows = log(&[(now - 1000, SourceType::Rss); 10]);
        let a = count(&rows, now, 60, 4).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.events, 4);
        assert!(a.truncated);
        let exact = count(&rows, now, 60, 10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(exact.events, 10);
        assert!(!exact.truncated);
    }

    #[test]
    fn minutes_are_checked() {
        assert_eq!(parse_minutes(None).ok(), Some(DEFAULT_MINUTES));
        assert_eq!(parse_minutes(Some("minutes=5&api_key=x")).ok(), Some(5));
        for bad in [
            "minutes=0",
            "minutes=1441",
            "minutes=x",
            "minutes=1&minutes=2",
            "hours=1",
        ] {
            let p = parse_minutes(Some(bad))
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert_eq!(p.status, 400, "{bad}");
        }
    }
}
