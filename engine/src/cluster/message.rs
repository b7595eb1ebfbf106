//! A message of the event stream as readers see it: the event id it gets
//! from its sequence and stream timestamp, the source and type from its
//! subject, and its JSON with the id put in (the log and the live feed
//! decode messages the same way, so every edge gives a message one id).

use uuid::Uuid;

use super::cursor::{self, SequenceTooLarge, StreamTag};
use super::wire::{self, Names, NotAnEvent};
use crate::event::SourceType;

/// A stored message as readers see it: its event id, where it is from and
/// its JSON with the id put in.
pub(crate) struct Message<'a> {
    /// The event id: this stream's tag, the sequence, the stamp's millisecond.
    pub(crate) id: Uuid,
    /// From the subject.
    pub(crate) source_id: &'a str,
    /// From the subject.
    pub(crate) source_type: SourceType,
    /// The published JSON with `id` put in.
    pub(crate) json: String,
}

impl<'a> Message<'a> {
    /// Decodes message `seq` on `subject`, stamped `ms` by the stream.
    pub(crate) fn decode(
        names: &Names,
        tag: StreamTag,
        subject: &'a str,
        seq: u64,
        ms: u64,
        payload: &[u8],
    ) -> Result<Self, BadMessage> {
        let (source_type, source_id) = names
            .parse_subject(subject)
            .ok_or_else(|| BadMessage::Subject(subject.to_owned()))?;
        let body = std::str::from_utf8(payload).map_err(|_| BadMessage::Utf8)?;
        let id = cursor::encode(tag, seq, ms)?;
        let json = wire::with_id(body, id)?;
        Ok(Self {
            id,
            source_id,
            source_type,
            json,
        })
    }
}

/// A message of the event stream that is not an event: reported and passed
/// over (a poison message must not stop every reader of the stream).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadMessage {
    /// Not `<prefix>.ev.<type>.<source id>`.
    #[error("subject {0:?} is not an event subject")]
    Subject(String),
    /// The body is not UTF-8.
    #[error("the body is not UTF-8")]
    Utf8,
    /// The body is not a published StreamEvent.
    #[error(transparent)]
    NotAnEvent(#[from] NotAnEvent),
    /// The sequence does not fit an id.
    #[error(transparent)]
    Sequence(#[from] SequenceTooLarge),
    /// The body with its id is not a StreamEvent.
    #[error("the body is not a StreamEvent: {0}")]
    Json(#[from] serde_json::Error),
}

impl BadMessage {
    /// Logs that message `seq` is passed over, and why.
    pub(crate) fn report(&self, seq: u64) {
        tracing::error!(sequence = seq, error = %self, "event stream message is not an event; passed over");
    }
}

/// Milliseconds since the epoch of a stream timestamp (0 before it).
pub(crate) fn ms_of_nanos(nanos: i128) -> u64 {
    u64::try_from(nanos.div_euclid(1_000_000)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_timestamps_become_milliseconds() {
        assert_eq!(ms_of_nanos(1_795_000_000_123_999_999), 1_795_000_000_123);
        assert_eq!(ms_of_nanos(-5), 0);
    }
}
