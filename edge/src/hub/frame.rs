//! The bytes a subscriber gets: one event's SSE frame, rendered once and
//! shared, the id-only checkpoint frame, comments (the greeting and
//! keep-alives) and the `error` event. Every SSE byte the edge writes is
//! rendered here, so one round-trip test covers them all.

use bytes::{BufMut, Bytes, BytesMut};
use livestrom_engine::SourceType;
use uuid::Uuid;

/// One event's frame as queued for a subscriber.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Event id (for hand-over de-duplication and checkpoints).
    pub id: Uuid,
    /// The hub's sequence number of the event (counts every fanned-out event).
    pub seq: u64,
    /// `id: …\nevent: …\ndata: …\n\n`, shared by every subscriber.
    pub bytes: Bytes,
    /// When the event was committed (its `emitted_at`, Unix milliseconds):
    /// the start of the ingest-to-delivery latency.
    pub committed_ms: i64,
}

/// Renders one event frame: `id: <id>\nevent: <type>\ndata: <json>\n\n`.
/// `json` is one line (serde_json never emits raw newlines), so feed text
/// can only ever appear inside `data:`.
pub fn render_event(id: Uuid, source_type: SourceType, json: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(json.len() + 72);
    write_event(&mut b, id, source_type, json);
    b.freeze()
}

/// Appends one event frame to `b` (see [`render_event`]).
pub fn write_event(b: &mut BytesMut, id: Uuid, source_type: SourceType, json: &str) {
    let mut idbuf = [0u8; 36];
    b.put_slice(b"id: ");
    b.put_slice(id.hyphenated().encode_lower(&mut idbuf).as_bytes());
    b.put_slice(b"\nevent: ");
    b.put_slice(source_type.as_str().as_bytes());
    b.put_slice(b"\ndata: ");
    put_line(b, json);
    b.put_slice(b"\n\n");
}

/// Appends `text` as the rest of one line. Defence in depth (serde_json
/// never emits raw newlines): a stray CR or LF would end the
/// line early and start a field, so each becomes a space. The scan is
/// `memchr`'s (vectorised): on replay it runs over every stored event.
fn put_line(b: &mut BytesMut, text: &str) {
    if memchr::memchr2(b'\n', b'\r', text.as_bytes()).is_some() {
        b.put_slice(text.replace(['\n', '\r'], " ").as_bytes());
    } else {
        b.put_slice(text.as_bytes());
    }
}

/// Appends an id-only frame (`id: <id>\n\n`): it dispatches no event but
/// moves the client's last-event-id forward.
pub fn write_checkpoint(b: &mut BytesMut, id: Uuid) {
    let mut idbuf = [0u8; 36];
    b.put_slice(b"id: ");
    b.put_slice(id.hyphenated().encode_lower(&mut idbuf).as_bytes());
    b.put_slice(b"\n\n");
}

/// Appends a comment frame (`:<text>\n\n`): ignored by clients, it keeps
/// the connection alive and flushes proxies. A CR or LF in `text` would end
/// the comment early and start a field, so each becomes a space.
pub fn write_comment(b: &mut BytesMut, text: &str) {
    b.put_u8(b':');
    put_line(b, text);
    b.put_slice(b"\n\n");
}

/// Appends an `error` event (`event: error\ndata: <json>\n\n`) with no
/// `id:`, so the client's last-event-id stays where it was. `json` is one
/// line, as in [`write_event`].
pub fn write_error_event(b: &mut BytesMut, json: &str) {
    b.put_slice(b"event: error\ndata: ");
    put_line(b, json);
    b.put_slice(b"\n\n");
}
