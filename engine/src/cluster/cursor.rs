//! Cursors of a clustered log: how the SSE `id` a client holds (a UUIDv7,
//! the same format as on one node) names a message of the JetStream stream,
//! so any edge resumes from it with no gap and no duplicate.
//!
//! The choice: **the stream sequence is carried in the UUID's random bits.**
//! An id is `UUIDv7(ms = the message's stream timestamp, rand = tag ‖ seq)`:
//! 26 bits of a tag naming the stream (12 in `rand_a`, 14 at the top of
//! `rand_b`) and the 48-bit stream sequence below them. An edge decodes a
//! cursor without a lookup:
//! - the tag is this stream's → resume after that sequence (exact, whatever
//!   the clocks did);
//! - every random bit is zero (a cursor a client built from a timestamp, as
//!   `uuid_floor_at` does) → resume by time: the first message at or after
//!   that millisecond;
//! - anything else is an id of another stream (recreated, another cluster,
//!   or a single-node log): `410` with a detail saying so — reading it as a
//!   position here could skip or repeat events.
//!
//! The tag comes from the stream's name and creation time, so a stream that
//! is deleted and recreated gets another tag (a chance of 1 in 67 million to
//! collide). Ids sort by time first; within a stream they also sort by
//! sequence as long as the stream's timestamps do not step back (its leader
//! stamps them). Resuming never compares times: it uses the sequence.

use uuid::Uuid;

use crate::event::{compose_v7, ms_of, tail_of};

/// Bits of the stream sequence in an id: 2.8 × 10^14 messages per stream.
pub const SEQ_BITS: u32 = 48;
/// Bits of the stream tag.
const TAG_BITS: u32 = 74 - SEQ_BITS;
const SEQ_MASK: u128 = (1 << SEQ_BITS) - 1;
const TAG_MASK: u32 = (1 << TAG_BITS) - 1;

/// Names one incarnation of a stream inside its ids (never 0: an all-zero
/// tail is a time cursor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamTag(u32);

impl StreamTag {
    /// The tag of the stream `name` created at `created_unix_nanos` (both as
    /// JetStream reports them in the stream's info).
    pub fn of(name: &str, created_unix_nanos: i128) -> Self {
        let mut h = crc32fast::Hasher::new();
        h.update(name.as_bytes());
        h.update(&created_unix_nanos.to_le_bytes());
        // Two rounds so all 26 bits depend on both inputs.
        let a = h.finalize();
        let b = crc32fast::hash(&a.to_le_bytes());
        let tag = (a ^ (b << 6)) & TAG_MASK;
        Self(if tag == 0 { 1 } else { tag })
    }

    /// The raw tag (for logs and `cluster status`).
    pub fn get(self) -> u32 {
        self.0
    }
}

/// An id cannot carry this sequence: the stream outgrew [`SEQ_BITS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stream sequence {0} does not fit an event id (at most 2^48 - 1)")]
pub struct SequenceTooLarge(pub u64);

/// The event id of message `seq` of the stream tagged `tag`, stamped `ms`.
pub fn encode(tag: StreamTag, seq: u64, ms: u64) -> Result<Uuid, SequenceTooLarge> {
    if u128::from(seq) > SEQ_MASK || seq == 0 {
        return Err(SequenceTooLarge(seq));
    }
    let tail = (u128::from(tag.0) << SEQ_BITS) | u128::from(seq);
    Ok(compose_v7(ms, tail))
}

/// The position "after message `seq`" of the stream tagged `tag`, stamped
/// `ms`: the message's own id when `ms` is its stamp, and with `seq` 0 the
/// position before the stream's first message (no message has sequence 0,
/// so [`encode`] refuses it). Decodes to [`Position::AfterSeq`].
pub fn position(tag: StreamTag, seq: u64, ms: u64) -> Result<Uuid, SequenceTooLarge> {
    if u128::from(seq) > SEQ_MASK {
        return Err(SequenceTooLarge(seq));
    }
    Ok(compose_v7(
        ms,
        (u128::from(tag.0) << SEQ_BITS) | u128::from(seq),
    ))
}

/// Where a cursor points in this stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// After this stream sequence (an id this stream gave out).
    AfterSeq(u64),
    /// After this millisecond (a cursor built from a timestamp).
    AfterTime(u64),
    /// An id of another stream: its tag, for the 410's detail.
    Foreign(u32),
}

/// Decodes a (UUIDv7) cursor against the stream tagged `tag`.
pub fn decode(tag: StreamTag, cursor: Uuid) -> Position {
    let tail = tail_of(cursor);
    if tail == 0 {
        return Position::AfterTime(ms_of(cursor));
    }
    let their = (tail >> SEQ_BITS) as u32;
    if their == tag.0 {
        Position::AfterSeq((tail & SEQ_MASK) as u64)
    } else {
        Position::Foreign(their)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{is_uuid_v7, uuid_floor_at, IdGenerator};

    const NOW: u64 = 1_795_000_000_000;

    #[test]
    fn ids_round_trip_and_are_uuid_v7() {
        let tag = StreamTag::of("LIVESTROM", 1_795_000_000_000_000_000);
        for seq in [1, 2, 1000, (1 << 48) - 1] {
            let id = encode(tag, seq, NOW).expect("fits");
            assert!(is_uuid_v7(id), "{id}");
            assert_eq!(ms_of(id), NOW);
            assert_eq!(decode(tag, id), Position::AfterSeq(seq));
        }
        assert_eq!(encode(tag, 1 << 48, NOW), Err(SequenceTooLarge(1 << 48)));
        assert_eq!(encode(tag, 0, NOW), Err(SequenceTooLarge(0)));
        // A position is a message's id, or the start of the stream.
        assert_eq!(position(tag, 7, NOW), encode(tag, 7, NOW));
        let start = position(tag, 0, NOW).expect("fits");
        assert!(is_uuid_v7(start));
        assert_eq!(decode(tag, start), Position::AfterSeq(0));
    }

    #[test]
    fn ids_of_one_stream_sort_by_sequence_when_time_does_not_step_back() {
        let tag = StreamTag::of("LIVESTROM", 7);
        let ids: Vec<Uuid> = (1..=500u64)
            .map(|seq| encode(tag, seq, NOW + seq / 7).expect("fits"))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        // Same millisecond: the sequence decides.
        assert!(encode(tag, 9, NOW).expect("fits") < encode(tag, 10, NOW).expect("fits"));
    }

    #[test]
    fn a_timestamp_cursor_resumes_by_time() {
        let tag = StreamTag::of("LIVESTROM", 7);
        assert_eq!(decode(tag, uuid_floor_at(NOW)), Position::AfterTime(NOW));
    }

    #[test]
    fn ids_of_another_stream_or_a_single_node_are_foreign() {
        let here = StreamTag::of("LIVESTROM", 7);
        // The same name, recreated.
        let recreated = StreamTag::of("LIVESTROM", 8);
        assert_ne!(here, recreated);
        let id = encode(recreated, 42, NOW).expect("fits");
        assert_eq!(decode(here, id), Position::Foreign(recreated.get()));
        // Another cluster's stream name.
        let other = StreamTag::of("OTHER", 7);
        assert!(matches!(
            decode(here, encode(other, 42, NOW).expect("fits")),
            Position::Foreign(_)
        ));
        // Random single-node ids: foreign unless the 26-bit tag collides.
        let mut g = IdGenerator::new(None);
        let collisions = (0..20_000)
            .filter(|_| !matches!(decode(here, g.next_at(NOW)), Position::Foreign(_)))
            .count();
        assert!(collisions <= 1, "{collisions}");
    }

    #[test]
    fn tags_are_never_zero_and_spread() {
        let tags: std::collections::HashSet<u32> = (0..5_000i128)
            .map(|n| StreamTag::of("S", n).get())
            .collect();
        assert!(!tags.contains(&0));
        assert!(tags.len() > 4_990, "{}", tags.len());
    }
}
