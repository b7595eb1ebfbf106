//! The `StreamEvent` (SPEC §2) and the node's strictly increasing UUIDv7 generator.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The four kinds of source; also the SSE `event:` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    /// RSS 0.9x/1.0/2.0 and Atom feeds.
    Rss,
    /// JSON Feed.
    Json,
    /// Feed-less HTML pages, diffed between polls.
    Html,
    /// Firehose APIs and upstream streams.
    Firehose,
}

impl SourceType {
    /// All source types, in a fixed order (index = `as_index`).
    pub const ALL: [SourceType; 4] = [Self::Rss, Self::Json, Self::Html, Self::Firehose];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rss => "rss",
            Self::Json => "json",
            Self::Html => "html",
            Self::Firehose => "firehose",
        }
    }

    /// A dense index 0..4, for bitsets.
    pub fn as_index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for SourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!("`{s}` is not a source type; expected one of rss, json, html, firehose")
            })
    }
}

/// One event of the stream, schema_version 1 (see `stream-event.schema.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEvent {
    /// UUIDv7, strictly increasing per node; the resume cursor.
    pub id: Uuid,
    /// Always 1.
    pub schema_version: u32,
    /// The source's id from `sources.toml`.
    pub source_id: String,
    /// The source's type.
    pub source_type: SourceType,
    /// Absolute URL of the item (the page, for html sources).
    pub url: String,
    /// Title text.
    pub title: String,
    /// Content text.
    pub content: String,
    /// The source's tags.
    pub tags: Vec<String>,
    /// When the upstream response was fetched.
    #[serde(with = "rfc3339_secs")]
    pub fetched_at: DateTime<Utc>,
    /// When the event was committed (microsecond precision).
    #[serde(with = "rfc3339_micros")]
    pub emitted_at: DateTime<Utc>,
    /// Stable identity of the item within its source.
    pub item_id: String,
    /// 1 for a new item, then 2, 3… per significant change.
    pub version: u32,
    /// The item's previous event (absent on version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<Uuid>,
    /// html sources: unified diff of the watched region against the previous version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// html sources: the lines added by this change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added: Option<Vec<String>>,
    /// When the upstream says the item was published or last updated, if it says.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_rfc3339_secs"
    )]
    pub published_at: Option<DateTime<Utc>>,
}

/// A committed event plus its JSON, serialized once at commit and shared by
/// every reader and subscriber (the SSE `data:` line is this string).
#[derive(Debug)]
pub struct CommittedEvent {
    /// The event.
    pub event: StreamEvent,
    /// `serde_json::to_string(&event)`: one line, no raw newlines.
    pub json: Arc<str>,
}

impl CommittedEvent {
    /// Wraps an event, serializing it once.
    pub fn new(event: StreamEvent) -> Self {
        let json: Arc<str> = serde_json::to_string(&event)
            .unwrap_or_else(|e| format!("{{\"error\":\"serialize: {e}\"}}"))
            .into();
        Self { event, json }
    }
}

mod rfc3339_secs {
    use super::*;
    pub(super) fn serialize<S: serde::Serializer>(
        t: &DateTime<Utc>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
    }
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

mod rfc3339_micros {
    use super::*;
    pub(super) fn serialize<S: serde::Serializer>(
        t: &DateTime<Utc>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }
    pub(super) use super::rfc3339_secs::deserialize;
}

mod opt_rfc3339_secs {
    use super::*;
    pub(super) fn serialize<S: serde::Serializer>(
        t: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            None => s.serialize_none(),
        }
    }
    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.map(|s| {
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

/// Generates UUIDv7 ids that strictly increase, also when the wall clock steps
/// backwards and across restarts (seed it with the newest stored id).
///
/// Layout (RFC 9562 method 2, "monotonic random"): 48-bit unix ms, version 7,
/// then 74 bits of counter+random. When the clock has not advanced past the
/// last id's millisecond, the 74-bit tail is incremented instead.
#[derive(Debug, Clone)]
pub struct IdGenerator {
    last: u128,
}

const VER_MASK: u128 = 0xF << 76;
const VAR_MASK: u128 = 0x3 << 62;

impl IdGenerator {
    /// A generator that will only produce ids greater than `last` (if any).
    pub fn new(last: Option<Uuid>) -> Self {
        Self {
            last: last.map(|u| u.as_u128()).unwrap_or(0),
        }
    }

    /// Moves the generator to at least `floor` and returns where it is:
    /// every id generated afterwards is greater than the returned one.
    pub fn advance_to(&mut self, floor: Uuid) -> Uuid {
        self.last = self.last.max(floor.as_u128());
        Uuid::from_u128(self.last)
    }

    /// The next id for the current wall-clock time.
    pub fn next_id(&mut self) -> Uuid {
        let now_ms = Utc::now().timestamp_millis().max(0) as u64;
        self.next_at(now_ms)
    }

    /// The next id at `now_ms` (exposed for tests of clock steps).
    pub fn next_at(&mut self, now_ms: u64) -> Uuid {
        let last_ms = (self.last >> 80) as u64;
        let v = if now_ms > last_ms || self.last == 0 {
            // Fresh millisecond: random tail with the top counter bit clear,
            // leaving room to increment within the millisecond.
            let r: u128 = rand::random::<u128>();
            let tail = r & ((1u128 << 74) - 1) & !(1u128 << 73);
            compose(now_ms, tail)
        } else {
            let tail = extract_tail(self.last) + 1 + (rand::random::<u32>() as u128 & 0xFF);
            if tail >> 74 != 0 {
                compose(last_ms + 1, rand::random::<u128>() & ((1u128 << 73) - 1))
            } else {
                compose(last_ms, tail)
            }
        };
        debug_assert!(v > self.last);
        self.last = v;
        Uuid::from_u128(v)
    }
}

/// A UUIDv7 from a millisecond timestamp and the 74 bits after the version
/// and variant (12 of `rand_a`, then 62 of `rand_b`).
pub fn compose_v7(ms: u64, tail74: u128) -> Uuid {
    Uuid::from_u128(compose(ms, tail74))
}

/// The 74 bits of a UUIDv7 after its version and variant (see [`compose_v7`]).
pub fn tail_of(id: Uuid) -> u128 {
    extract_tail(id.as_u128())
}

/// The millisecond timestamp of a UUIDv7.
pub fn ms_of(id: Uuid) -> u64 {
    (id.as_u128() >> 80) as u64
}

fn compose(ms: u64, tail74: u128) -> u128 {
    let ms = (ms as u128 & ((1u128 << 48) - 1)) << 80;
    let rand_a = (tail74 >> 62) & 0xFFF; // 12 bits
    let rand_b = tail74 & ((1u128 << 62) - 1); // 62 bits
    ms | (0x7 << 76) | (rand_a << 64) | (0x2 << 62) | rand_b
}

fn extract_tail(v: u128) -> u128 {
    let rand_a = (v >> 64) & 0xFFF;
    let rand_b = v & ((1u128 << 62) - 1);
    let _ = (VER_MASK, VAR_MASK);
    (rand_a << 62) | rand_b
}

/// The unix-millisecond timestamp of a UUIDv7.
pub fn uuid_millis(id: Uuid) -> u64 {
    (id.as_u128() >> 80) as u64
}

/// The smallest UUIDv7 at a given millisecond (a cursor meaning "from this time").
pub fn uuid_floor_at(ms: u64) -> Uuid {
    Uuid::from_u128(compose(ms, 0))
}

/// True when `id` has the UUIDv7 version and RFC 4122 variant bits.
pub fn is_uuid_v7(id: Uuid) -> bool {
    id.get_version_num() == 7 && matches!(id.get_variant(), uuid::Variant::RFC4122)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_within_a_millisecond_and_when_clock_steps_back() {
        let mut g = IdGenerator::new(None);
        let a = g.next_at(1_700_000_000_000);
        let b = g.next_at(1_700_000_000_000);
        let c = g.next_at(1_699_999_000_000); // clock stepped back a second
        let d = g.next_at(1_700_000_000_001);
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
        for id in [a, b, c, d] {
            assert!(is_uuid_v7(id), "{id} is not a v7");
        }
    }

    #[test]
    fn seeded_generator_continues_after_the_seed() {
        let seed = Uuid::from_u128(compose(4_000_000_000_000, (1u128 << 74) - 1));
        let mut g = IdGenerator::new(Some(seed));
        let n = g.next_at(1_000);
        assert!(n > seed);
        assert!(is_uuid_v7(n));
    }

    #[test]
    fn event_serializes_to_one_line_with_micros() {
        let e = StreamEvent {
            id: IdGenerator::new(None).next_id(),
            schema_version: 1,
            source_id: "a.b".into(),
            source_type: SourceType::Rss,
            url: "https://x/".into(),
            title: "t\n\nid: 9".into(),
            content: "c".into(),
            tags: vec!["x".into()],
            fetched_at: Utc::now(),
            emitted_at: DateTime::parse_from_rfc3339("2026-07-01T12:00:01.123456Z")
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default(),
            item_id: "i".into(),
            version: 1,
            supersedes: None,
            diff: None,
            added: None,
            published_at: None,
        };
        let c = CommittedEvent::new(e.clone());
        assert!(!c.json.contains('\n'));
        assert!(c
            .json
            .contains("\"emitted_at\":\"2026-07-01T12:00:01.123456Z\""));
        let back: StreamEvent = serde_json::from_str(&c.json).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(back, e.clone_with_truncated_fetch());
    }

    impl StreamEvent {
        fn clone_with_truncated_fetch(&self) -> Self {
            let mut e = self.clone();
            e.fetched_at =
                DateTime::from_timestamp(e.fetched_at.timestamp(), 0).unwrap_or_default();
            e
        }
    }
}
