//! An incremental Server-Sent Events parser following the WHATWG
//! "interpreting an event stream" rules: fields, comments, multi-line `data:`
//! joined with LF, `id:` (ignored if it contains NUL) as the last-event-id,
//! `retry:` (digits only), CR/LF/CRLF line endings, a leading BOM, events
//! split anywhere across chunks, and an unterminated event at the end of the
//! stream discarded.

use std::time::Duration;

use super::lines::{Line, LineSplitter};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type (`message` unless `event:` said otherwise).
    pub event: String,
    /// The data lines joined with LF.
    pub data: String,
    /// The last-event-id after this event (what a reconnect sends).
    pub id: Option<String>,
    /// The last-event-id before this event: what a reconnect sends to get
    /// this event again. An id-only event before it moves it too, so it is
    /// not always the previous dispatched event's `id`.
    pub previous_id: Option<String>,
}

/// What feeding bytes produced besides events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SseProblems {
    /// Lines dropped because they exceeded the line limit (their event is dropped too).
    pub too_long: usize,
}

/// Incremental SSE parser.
#[derive(Debug)]
pub struct SseDecoder {
    lines: LineSplitter,
    /// Longest `data` of one event, in bytes.
    max_event: usize,
    data: String,
    event: String,
    /// The last event ID buffer (set by `id:`, persists across events).
    id_buffer: Option<String>,
    /// The id of the last dispatched event (what to resume from).
    last_id: Option<String>,
    retry: Option<Duration>,
    /// The current event lost a line to the size limit: drop it at dispatch.
    poisoned: bool,
    problems: SseProblems,
}

impl SseDecoder {
    /// A parser resuming after `last_id`; lines and event data are capped at `max_bytes`.
    pub fn new(max_bytes: usize, last_id: Option<String>) -> Self {
        Self {
            lines: LineSplitter::new(max_bytes),
            max_event: max_bytes,
            data: String::new(),
            event: String::new(),
            id_buffer: last_id.clone(),
            last_id,
            retry: None,
            poisoned: false,
            problems: SseProblems::default(),
        }
    }

    /// Feeds one chunk, appending the events it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) {
        let mut lines = std::mem::replace(&mut self.lines, LineSplitter::new(0));
        lines.feed(chunk, |line| self.line(line, out));
        self.lines = lines;
    }

    /// The id to send as `Last-Event-ID` on reconnect.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The reconnection time the upstream asked for with `retry:`.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Problems seen since the last call.
    pub fn take_problems(&mut self) -> SseProblems {
        std::mem::take(&mut self.problems)
    }

    fn line(&mut self, line: Line<'_>, out: &mut Vec<SseEvent>) {
        let line = match line {
            Line::TooLong => {
                self.problems.too_long += 1;
                self.poisoned = true;
                return;
            }
            Line::Text(t) => String::from_utf8_lossy(t),
        };
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (&*line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if self.data.len() + value.len() + 1 > self.max_event {
                    self.problems.too_long += 1;
                    self.poisoned = true;
                    self.data.clear();
                } else if !self.poisoned {
                    self.data.push_str(value);
                    self.data.push('\n');
                }
            }
            "id" if !value.contains('\0') => {
                self.id_buffer = (!value.is_empty()).then(|| value.to_owned())
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse::<u64>().ok().map(Duration::from_millis);
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let previous_id = std::mem::replace(&mut self.last_id, self.id_buffer.clone());
        let event = std::mem::take(&mut self.event);
        let mut data = std::mem::take(&mut self.data);
        if std::mem::replace(&mut self.poisoned, false) || data.is_empty() {
            return;
        }
        data.pop();
        out.push(SseEvent {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
            id: self.last_id.clone(),
            previous_id,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(chunks: &[&[u8]]) -> (Vec<SseEvent>, SseDecoder) {
        let mut d = SseDecoder::new(1 << 20, None);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out);
        }
        (out, d)
    }

    #[test]
    fn spec_examples() {
        let (ev, d) = parse(&[
            b"\xEF\xBB\xBF: comment\r\ndata: YHOO\ndata: +2\r\ndata: 10\r\n\r\n",
            b"id: 7\revent: add\rdata\r\rretry: 250\nretry: x\n",
        ]);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].data, "YHOO\n+2\n10");
        assert_eq!(ev[0].event, "message");
        assert_eq!(ev[0].id, None);
        assert_eq!(
            ev[1],
            SseEvent {
                event: "add".into(),
                data: String::new(),
                id: Some("7".into()),
                previous_id: None,
            }
        );
        assert_eq!(d.retry(), Some(Duration::from_millis(250)));
        assert_eq!(d.last_event_id(), Some("7"));
    }

    #[test]
    fn split_anywhere_and_unterminated_event_dropped() {
        let whole = b"id: 1\ndata: {\"a\":1}\n\nid: 2\ndata: x\n\ndata: partial";
        for cut in 0..whole.len() {
            let (ev, d) = parse(&[&whole[..cut], &whole[cut..]]);
            assert_eq!(
                ev.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
                vec!["{\"a\":1}", "x"],
                "cut at {cut}"
            );
            assert_eq!(d.last_event_id(), Some("2"));
        }
    }

    #[test]
    fn id_only_event_moves_cursor_and_nul_ids_are_ignored() {
        let (ev, d) = parse(&[b"id: 5\n\nid: a\0b\ndata: y\n\n"]);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].id.as_deref(), Some("5"));
        assert_eq!(d.last_event_id(), Some("5"));
    }

    #[test]
    fn previous_id_counts_id_only_events_whatever_the_chunking() {
        let whole: &[u8] = b"id: 1\ndata: a\n\nid: 2\n\nid: 3\ndata: b\n\ndata: c\n\n";
        for cut in 0..=whole.len() {
            let (ev, _) = parse(&[&whole[..cut], &whole[cut..]]);
            let ids: Vec<_> = ev
                .iter()
                .map(|e| (e.previous_id.as_deref(), e.id.as_deref()))
                .collect();
            assert_eq!(
                ids,
                vec![
                    (None, Some("1")),
                    (Some("2"), Some("3")),
                    (Some("3"), Some("3"))
                ],
                "cut at {cut}"
            );
        }
    }
}
