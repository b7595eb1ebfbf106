//! `Content-Encoding: br` bodies, decoded here rather than by the HTTP
//! client: the stream's header says how much history (its sliding window)
//! the decoder must keep, and a window larger than the body cap is refused
//! before anything is allocated for it. Everything else is the mature
//! `brotli-decompressor` crate, fed chunk by chunk as the body arrives.
//!
//! A body cut off at the cap then costs at most the cap (the decoded bytes
//! kept) plus a window no larger than the cap, whatever the stream claims.

use brotli_decompressor::{
    BrotliDecoderErrorCode, BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc,
};
use bytes::{Buf, Bytes, BytesMut};

/// Why a brotli body was refused or could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BrotliError {
    /// The stream's window is larger than the body cap: refused from the
    /// header, before anything is allocated for it.
    #[error(
        "brotli window of {} is larger than the body cap of {} (fetch.max_body)",
        size(*window),
        size(*limit)
    )]
    WindowOverCap {
        /// The window in bytes.
        window: u64,
        /// The cap in bytes.
        limit: u64,
    },
    /// The large-window extension, which HTTP's `br` (RFC 7932) does not allow.
    #[error(
        "the brotli stream uses the large-window extension (a window of {}), \
         which Content-Encoding: br does not allow",
        size(*window)
    )]
    LargeWindow {
        /// The window it declares, in bytes.
        window: u64,
    },
    /// The first bits are no brotli header.
    #[error("not a brotli stream (its first bits are no window size)")]
    NotBrotli,
    /// The decoder found an error in the stream (the reference decoder's
    /// error name, in words).
    #[error("invalid brotli stream ({0})")]
    Invalid(String),
    /// The body was empty.
    #[error("the body is empty, which is no brotli stream")]
    Empty,
    /// The body ended before the stream's end marker.
    #[error("the brotli stream is truncated (the body ended before the stream did)")]
    Truncated,
    /// The decoder asked for room it had (cannot happen; never looped on).
    #[error("the brotli decoder made no progress")]
    Stuck,
}

/// The sliding window a brotli stream declares in its first bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Window {
    /// RFC 7932 section 9.1: WBITS 10 ..= 24. The decoder keeps up to
    /// `1 << WBITS` bytes of history.
    Standard(u8),
    /// The large-window extension (not RFC 7932; HTTP's `br` does not allow
    /// it), with the WBITS it declares (10 ..= 30).
    Large(u8),
}

impl Window {
    /// The bytes of history the decoder allocates for it (its ring buffer).
    pub(crate) fn bytes(self) -> u64 {
        match self {
            Self::Standard(bits) | Self::Large(bits) => 1u64 << bits,
        }
    }
}

/// The first bits are none that a brotli encoder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidHeader;

/// Reads the window from the start of a brotli stream (RFC 7932 section
/// 9.1, the WBITS field, 1 to 7 bits read from the least significant bit
/// of the first byte up). `Ok(None)`: more bytes are needed (there are
/// none, or only the first of the large-window signature's two).
pub(crate) fn read_window(head: &[u8]) -> Result<Option<Window>, InvalidHeader> {
    let Some(&first) = head.first() else {
        return Ok(None);
    };
    if first & 1 == 0 {
        return Ok(Some(Window::Standard(16)));
    }
    let n = (first >> 1) & 0b111;
    if n != 0 {
        return Ok(Some(Window::Standard(17 + n)));
    }
    match (first >> 4) & 0b111 {
        0 => Ok(Some(Window::Standard(17))),
        // The value RFC 7932 leaves invalid: the large-window signature
        // (0x11, then a zero bit, then 6 bits of WBITS) or nothing at all.
        1 => {
            if first & 0x80 != 0 {
                return Err(InvalidHeader);
            }
            let Some(&second) = head.get(1) else {
                return Ok(None);
            };
            match second & 0x3f {
                bits @ 10..=30 => Ok(Some(Window::Large(bits))),
                _ => Err(InvalidHeader),
            }
        }
        m => Ok(Some(Window::Standard(8 + m))),
    }
}

/// Decoded output is handed on in pieces of at most this many bytes, each
/// copied into an allocation of its own size (a piece that kept a larger
/// buffer alive would make the cap count less than the memory it holds).
const PIECE: usize = 64 * 1024;

type State = BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>;

/// An incremental decoder for one `Content-Encoding: br` body.
///
/// [`push`](Self::push) each chunk as it arrives, then take
/// [`next`](Self::next) until it returns `None`; at the end of the body,
/// [`finish`](Self::finish) says whether the stream was complete. The caller
/// counts the decoded pieces against the cap: the decoder only refuses a
/// window larger than `limit`.
pub(crate) struct BrotliBody {
    /// `fetch.max_body`: no window larger than this is accepted.
    limit: u64,
    /// Input not yet handed to the decoder: until the header is read, the
    /// first byte or two.
    input: Bytes,
    /// Created once the header has been read and the window accepted
    /// (boxed: the state is a few kilobytes).
    state: Option<Box<State>>,
    /// Where the decoder writes; each piece is copied out of it.
    out: Vec<u8>,
    /// The decoder stopped at a full output buffer: call it again, even
    /// with no input left.
    more_output: bool,
    /// The stream's end marker was decoded: anything after it is ignored.
    done: bool,
}

impl std::fmt::Debug for BrotliBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrotliBody")
            .field("limit", &self.limit)
            .field("pending", &self.input.len())
            .field("started", &self.state.is_some())
            .field("more_output", &self.more_output)
            .field("done", &self.done)
            .finish()
    }
}

impl BrotliBody {
    /// A decoder refusing windows larger than `limit` bytes.
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            input: Bytes::new(),
            state: None,
            out: Vec::new(),
            more_output: false,
            done: false,
        }
    }

    /// Whether the stream has ended: no more input is needed.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Takes the next chunk of the body. Until the stream's header has been
    /// read this checks the window: one larger than the limit, the
    /// large-window extension and bits that are no brotli header are refused
    /// here, before the decoder exists.
    pub(crate) fn push(&mut self, chunk: Bytes) -> Result<(), BrotliError> {
        if self.done || chunk.is_empty() {
            return Ok(());
        }
        self.input = if self.input.is_empty() {
            chunk
        } else {
            let mut joined = BytesMut::with_capacity(self.input.len() + chunk.len());
            joined.extend_from_slice(&self.input);
            joined.extend_from_slice(&chunk);
            joined.freeze()
        };
        if self.state.is_some() {
            return Ok(());
        }
        let window = match read_window(&self.input) {
            Ok(Some(window)) => window,
            Ok(None) => return Ok(()),
            Err(InvalidHeader) => return Err(BrotliError::NotBrotli),
        };
        match window {
            Window::Large(_) => {
                return Err(BrotliError::LargeWindow {
                    window: window.bytes(),
                })
            }
            Window::Standard(_) if window.bytes() > self.limit => {
                return Err(BrotliError::WindowOverCap {
                    window: window.bytes(),
                    limit: self.limit,
                })
            }
            Window::Standard(_) => {}
        }
        // Strict: the decoder itself refuses the large-window extension too.
        self.state = Some(Box::new(State::new_strict(
            StandardAlloc::default(),
            StandardAlloc::default(),
            StandardAlloc::default(),
        )));
        self.out = vec![0; PIECE];
        Ok(())
    }

    /// The next piece of decoded output (at most 64 KiB), or `None` once the
    /// input pushed so far is used up (or the stream has ended).
    pub(crate) fn next(&mut self) -> Result<Option<Bytes>, BrotliError> {
        let Some(state) = self.state.as_deref_mut() else {
            return Ok(None);
        };
        if self.done || (self.input.is_empty() && !self.more_output) {
            return Ok(None);
        }
        let mut available_in = self.input.len();
        let mut consumed = 0;
        let mut available_out = self.out.len();
        let mut produced = 0;
        let mut total_out = 0;
        let result = BrotliDecompressStream(
            &mut available_in,
            &mut consumed,
            &self.input,
            &mut available_out,
            &mut produced,
            &mut self.out,
            &mut total_out,
            state,
        );
        self.input.advance(consumed.min(self.input.len()));
        self.more_output = matches!(result, BrotliResult::NeedsMoreOutput);
        match result {
            BrotliResult::ResultSuccess => {
                self.done = true;
                self.input = Bytes::new();
            }
            BrotliResult::NeedsMoreInput => {}
            // Cannot happen with room to write to; never loop on it.
            BrotliResult::NeedsMoreOutput if produced == 0 => return Err(BrotliError::Stuck),
            BrotliResult::NeedsMoreOutput => {}
            BrotliResult::ResultFailure => {
                return Err(BrotliError::Invalid(describe(state.error_code)))
            }
        }
        let produced = produced.min(self.out.len());
        Ok((produced > 0).then(|| Bytes::copy_from_slice(&self.out[..produced])))
    }

    /// At the end of the body: an error unless the stream's end marker was
    /// decoded (an empty body is no brotli stream either).
    pub(crate) fn finish(&self) -> Result<(), BrotliError> {
        if self.done {
            Ok(())
        } else if self.state.is_none() && self.input.is_empty() {
            Err(BrotliError::Empty)
        } else {
            Err(BrotliError::Truncated)
        }
    }
}

/// `BROTLI_DECODER_ERROR_FORMAT_PADDING_1` as "format padding 1".
fn describe(code: BrotliDecoderErrorCode) -> String {
    let name = format!("{code:?}");
    name.trim_start_matches("BROTLI_DECODER_ERROR_")
        .trim_start_matches("BROTLI_DECODER_")
        .to_ascii_lowercase()
        .replace('_', " ")
}

/// A size for people: `16 MiB`, `512 KiB`, `10 MB`, else `N bytes`.
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 6] = [
        (1 << 30, "GiB"),
        (1_000_000_000, "GB"),
        (1 << 20, "MiB"),
        (1_000_000, "MB"),
        (1 << 10, "KiB"),
        (1_000, "KB"),
    ];
    for (unit, name) in UNITS {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
#[path = "br_tests.rs"]
mod tests;
