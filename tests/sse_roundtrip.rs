//! Property test: every SSE byte the edge writes (event frames, id-only
//! checkpoints, comments, `error` events) reads back exactly through a
//! third-party SSE parser (`eventsource-stream`, what a Rust client would
//! use), however the bytes are split into network reads. 10,000 cases.

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use eventsource_stream::{Event, Eventsource};
use futures::StreamExt;
use livestrom_edge::hub::{write_checkpoint, write_comment, write_error_event, write_event};
use livestrom_edge::problem::Problem;
use livestrom_engine::event::compose_v7;
use livestrom_engine::{SourceType, StreamEvent};
use proptest::collection::vec;
use proptest::prelude::*;
use uuid::Uuid;

/// One frame the edge can write.
#[derive(Debug, Clone)]
enum Frame {
    Event(Box<StreamEvent>),
    Checkpoint(Uuid),
    Comment(String),
    Error(String),
}

/// Any text, control characters, NUL, quotes and non-ASCII included, with
/// the pieces that mean something in SSE (line ends, field names, a BOM)
/// mixed in often enough that a frame which let them through would fail.
fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => any::<char>().prop_map(String::from),
        1 => prop::sample::select(vec![
            "\n", "\r", "\r\n", "\n\n", "data: x", "id: 9", "event: e", "retry: 1", ":", " ",
            "\u{feff}", "\0", "\"", "\\", "é", "😀",
        ])
        .prop_map(str::to_owned),
    ];
    vec(piece, 0..16).prop_map(|parts| parts.concat())
}

fn v7() -> impl Strategy<Value = Uuid> {
    (0u64..(1 << 48), any::<u128>()).prop_map(|(ms, tail)| compose_v7(ms, tail & ((1 << 74) - 1)))
}

/// A time the event schema carries exactly: whole seconds, or microseconds.
fn time(micros: bool) -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_102_444_800, 0u32..1_000_000).prop_map(move |(s, us)| {
        let nanos = if micros { us * 1000 } else { 0 };
        DateTime::from_timestamp(s, nanos).unwrap_or_default()
    })
}

fn stream_event() -> impl Strategy<Value = StreamEvent> {
    (
        (
            v7(),
            text(),
            prop::sample::select(SourceType::ALL.to_vec()),
            text(),
            text(),
            text(),
        ),
        (
            vec(text(), 0..3),
            time(false),
            time(true),
            text(),
            any::<u32>(),
        ),
        (
            prop::option::of(v7()),
            prop::option::of(text()),
            prop::option::of(vec(text(), 0..3)),
            prop::option::of(time(false)),
        ),
    )
        .prop_map(
            |(
                (id, source_id, source_type, url, title, content),
                (tags, fetched_at, emitted_at, item_id, version),
                (supersedes, diff, added, published_at),
            )| StreamEvent {
                id,
                schema_version: 1,
                source_id,
                source_type,
                url,
                title,
                content,
                tags,
                fetched_at,
                emitted_at,
                item_id,
                version,
                supersedes,
                diff,
                added,
                published_at,
            },
        )
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        4 => stream_event().prop_map(|e| Frame::Event(Box::new(e))),
        1 => v7().prop_map(Frame::Checkpoint),
        1 => text().prop_map(Frame::Comment),
        1 => text().prop_map(|detail| {
            let json = serde_json::to_string(&Problem::gone(detail)).unwrap_or_default();
            Frame::Error(json)
        }),
    ]
}

/// Renders the frames with the edge's writers; returns the bytes and what a
/// conforming parser must dispatch: (type, data, last-event-id) per event.
fn render(frames: &[Frame]) -> (Bytes, Vec<(String, String, String)>) {
    let mut b = BytesMut::new();
    let mut want = Vec::new();
    let mut last_id = String::new();
    for f in frames {
        match f {
            Frame::Event(e) => {
                let json = serde_json::to_string(e).unwrap_or_default();
                write_event(&mut b, e.id, e.source_type, &json);
                last_id = e.id.to_string();
                want.push((e.source_type.as_str().to_owned(), json, last_id.clone()));
            }
            Frame::Checkpoint(id) => {
                write_checkpoint(&mut b, *id);
                last_id = id.to_string();
            }
            Frame::Comment(t) => write_comment(&mut b, t),
            Frame::Error(json) => {
                write_error_event(&mut b, json);
                want.push(("error".to_owned(), json.clone(), last_id.clone()));
            }
        }
    }
    (b.freeze(), want)
}

/// Splits `bytes` at the given points (taken modulo its length).
fn split(bytes: &Bytes, cuts: &[usize]) -> Vec<Bytes> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.windows(2).map(|w| bytes.slice(w[0]..w[1])).collect()
}

fn parse(chunks: Vec<Bytes>) -> Vec<Event> {
    let stream = futures::stream::iter(
        chunks
            .into_iter()
            .map(Ok::<Bytes, std::convert::Infallible>),
    );
    futures::executor::block_on(stream.eventsource().collect::<Vec<_>>())
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("the parser refused the stream: {e}")))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn sse_frames_round_trip_through_a_third_party_parser_under_any_chunking(
        frames in vec(frame(), 0..8),
        cuts in vec(any::<usize>(), 0..12),
    ) {
        let (bytes, want) = render(&frames);
        let got = parse(split(&bytes, &cuts));
        let got: Vec<(String, String, String)> =
            got.into_iter().map(|e| (e.event, e.data, e.id)).collect();
        prop_assert_eq!(&got, &want);
        // The data of an event frame is the event, exactly.
        let events = frames.iter().filter_map(|f| match f {
            Frame::Event(e) => Some(e),
            _ => None,
        });
        for (e, (ty, data, _)) in events.zip(got.iter().filter(|g| g.0 != "error")) {
            let back: StreamEvent = serde_json::from_str(data)
                .unwrap_or_else(|err| panic!("{data}: {err}"));
            prop_assert_eq!(&back, e.as_ref());
            prop_assert_eq!(ty.as_str(), e.source_type.as_str());
        }
    }
}
