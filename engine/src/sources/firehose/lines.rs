//! Splits a byte stream into lines across chunk boundaries: LF, CRLF or a
//! lone CR end a line (the SSE rule; harmless for NDJSON, whose JSON cannot
//! hold a raw CR), a leading UTF-8 BOM is dropped, and a line longer than
//! the limit is discarded as it streams past instead of being buffered.

/// One complete line, or the notice that an over-long line was dropped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// The line's bytes, without the terminator.
    Text(&'a [u8]),
    /// A line longer than the limit was dropped (its bytes were not kept).
    TooLong,
}

/// Buffered capacity kept after a long line, so one big line does not pin memory.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Incremental line splitter.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    /// Bytes of the current, unterminated line.
    buf: Vec<u8>,
    /// Longest line kept, in bytes.
    max: usize,
    /// The previous chunk ended in CR: a LF at the start of the next one belongs to it.
    after_cr: bool,
    /// The current line went over `max`; its bytes are being skipped.
    discarding: bool,
    /// No line has been completed yet (the BOM can only be on the first).
    first: bool,
}

impl LineSplitter {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
            after_cr: false,
            discarding: false,
            first: true,
        }
    }

    /// Feeds one chunk, calling `f` for every line it completes.
    pub(crate) fn feed(&mut self, mut chunk: &[u8], mut f: impl FnMut(Line<'_>)) {
        while !chunk.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if chunk[0] == b'\n' {
                    chunk = &chunk[1..];
                    continue;
                }
            }
            match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    self.after_cr = chunk[i] == b'\r';
                    self.push(&chunk[..i]);
                    self.finish_line(&mut f);
                    chunk = &chunk[i + 1..];
                }
                None => {
                    self.push(chunk);
                    break;
                }
            }
        }
    }

    /// The end of the stream: completes a final line that had no terminator.
    pub(crate) fn finish(&mut self, mut f: impl FnMut(Line<'_>)) {
        if !self.buf.is_empty() || self.discarding {
            self.finish_line(&mut f);
        }
    }

    fn push(&mut self, part: &[u8]) {
        if self.discarding {
            return;
        }
        if self.buf.len() + part.len() > self.max {
            self.discarding = true;
            self.buf.clear();
            self.buf.shrink_to(KEEP_CAPACITY);
        } else {
            self.buf.extend_from_slice(part);
        }
    }

    fn finish_line(&mut self, f: &mut impl FnMut(Line<'_>)) {
        let first = std::mem::replace(&mut self.first, false);
        if std::mem::replace(&mut self.discarding, false) {
            f(Line::TooLong);
            return;
        }
        let line = if first {
            self.buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&self.buf)
        } else {
            &self.buf[..]
        };
        f(Line::Text(line));
        self.buf.clear();
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf.shrink_to(KEEP_CAPACITY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<Option<String>> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        let mut push = |l: Line<'_>| {
            out.push(match l {
                Line::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
                Line::TooLong => None,
            })
        };
        for c in chunks {
            s.feed(c, &mut push);
        }
        s.finish(&mut push);
        out
    }

    #[test]
    fn all_line_endings_across_chunks() {
        let got = split(
            &[b"\xEF\xBB", b"\xBFa\r", b"\nb\rc\n", b"d\r", b"\r\ne"],
            100,
        );
        let want: Vec<Option<String>> = ["a", "b", "c", "d", "", "e"]
            .iter()
            .map(|s| Some((*s).to_owned()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn long_lines_are_dropped_without_buffering() {
        let big = vec![b'x'; 50];
        let got = split(&[b"ok\n", &big, &big, b"\nafter\n"], 64);
        assert_eq!(
            got,
            vec![Some("ok".to_owned()), None, Some("after".to_owned())]
        );
    }
}
