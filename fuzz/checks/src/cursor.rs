//! `cursor`: resume cursors as clients send them (`since=`,
//! `Last-Event-ID`), and how a clustered log decodes one.

use axum::http::{HeaderMap, HeaderValue};
use livestrom_edge::filter::parse_cursor;
use livestrom_edge::stream::cursor_from;
use livestrom_engine::cluster::cursor::{decode, position, Position, StreamTag};
use livestrom_engine::event::{is_uuid_v7, ms_of, uuid_floor_at};
use uuid::Uuid;

/// Input: the cursor text (lossy UTF-8, also tried as raw header bytes);
/// its first 16 bytes are also read as a UUID. An accepted cursor is a v7
/// whose every standard spelling parses to it; a refusal is a 400 naming
/// the parameter; `Last-Event-ID` and `since=` agree on the same text; and
/// every v7 decodes against a cluster stream to a position that encodes
/// back to the same id.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match parse_cursor("since", &text) {
        Ok(id) => {
            assert!(is_uuid_v7(id), "{text:?} accepted as {id}, not a v7");
            let h = id.hyphenated().to_string();
            for spelling in [
                h.clone(),
                h.to_uppercase(),
                id.simple().to_string(),
                id.braced().to_string(),
                id.urn().to_string(),
                format!(" {h}\t"),
            ] {
                let again = parse_cursor("since", &spelling)
                    .unwrap_or_else(|p| panic!("{spelling:?} (of {text:?}) refused: {p:?}"));
                assert_eq!(again, id, "{spelling:?} is another position");
            }
            cluster_round_trip(id);
        }
        Err(p) => {
            assert_eq!(p.status, 400, "{text:?}: not a 400: {p:?}");
            assert_eq!(p.parameter.as_deref(), Some("since"), "{text:?}: {p:?}");
        }
    }

    // The same bytes as a `Last-Event-ID` header (where HTTP can carry them).
    if let Ok(value) = HeaderValue::from_bytes(data) {
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", value.clone());
        let from_header = cursor_from(&headers, None);
        let blank = value.as_bytes().trim_ascii().is_empty();
        match (value.to_str(), from_header) {
            (_, Ok(None)) => assert!(blank, "a non-blank Last-Event-ID was ignored"),
            (Ok(s), Ok(Some(id))) => {
                assert_eq!(
                    parse_cursor("since", s).ok(),
                    Some(id),
                    "header and since= disagree"
                );
            }
            (Ok(s), Err(p)) => {
                assert!(
                    parse_cursor("since", s).is_err(),
                    "header refused, since= accepted"
                );
                assert_eq!(p.parameter.as_deref(), Some("Last-Event-ID"), "{p:?}");
            }
            (Err(_), r) => assert!(r.is_err() || blank, "a non-text Last-Event-ID accepted"),
        }
    }

    if let Ok(id) = Uuid::from_slice(data.get(..16).unwrap_or_default()) {
        if is_uuid_v7(id) {
            cluster_round_trip(id);
        }
    }
}

/// A v7 decodes against a stream to a position that names the same id.
fn cluster_round_trip(id: Uuid) {
    let tag = StreamTag::of("LIVESTROM", 1_780_000_000_000_000_000);
    match decode(tag, id) {
        Position::AfterSeq(seq) => {
            assert_eq!(
                position(tag, seq, ms_of(id)),
                Ok(id),
                "AfterSeq({seq}) of {id}"
            );
        }
        Position::AfterTime(ms) => assert_eq!(uuid_floor_at(ms), id, "AfterTime({ms}) of {id}"),
        Position::Foreign(t) => assert_ne!(t, tag.get(), "{id} is foreign with our own tag"),
    }
}
