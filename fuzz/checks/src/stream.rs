//! `stream_decoders`: the NDJSON and SSE upstream decoders, fed the same
//! bytes whole and under random chunking.

use livestrom_engine::config::FirehoseFormat;
use livestrom_engine::sources::firehose::{StreamDecoder, MAX_LINE};
use livestrom_engine::sources::Item;

/// Line limits a control byte chooses from: the real one and small ones, so
/// the over-long-line paths run on small inputs.
const LIMITS: [usize; 4] = [MAX_LINE, 64, 16, 1];

/// Everything a decoder produced for one stream.
#[derive(Debug, PartialEq)]
struct Decoded {
    /// Items with the resume cursor that comes with each.
    items: Vec<(Item, Option<String>)>,
    /// The cursor after the whole stream.
    cursor: Option<String>,
    /// The upstream's `retry:`.
    retry: Option<std::time::Duration>,
    /// Messages skipped, in total.
    skipped: usize,
}

fn decode(mut decoder: StreamDecoder, parts: &[&[u8]]) -> Decoded {
    let mut items = Vec::new();
    let mut skipped = 0;
    for part in parts {
        decoder.feed(part, &mut items);
        skipped += decoder.take_problem().map_or(0, |p| p.count);
    }
    decoder.finish(&mut items);
    skipped += decoder.take_problem().map_or(0, |p| p.count);
    Decoded {
        items,
        cursor: decoder.cursor(),
        retry: decoder.retry(),
        skipped,
    }
}

/// Input: a control byte (bit 0: SSE or NDJSON; bits 1-2: line limit; bits
/// 3-5: the field mapping of [`crate::firehose::settings`]; bit 6: resume
/// from a cursor), a byte `n`, `n % 32` bytes of chunking seed, then the
/// stream. Checks that the decoders give the same items, cursors, `retry`
/// and skip count whole, chunked by the seed, and byte by byte; and that
/// an SSE item's cursor is always one the stream sent (or the resume one).
pub fn check(data: &[u8]) {
    let ([control, n], rest) = crate::split_control::<2>(data);
    let n = usize::from(n % 32).min(rest.len());
    let (seed, body) = rest.split_at(n);
    let format = if control & 1 == 0 {
        FirehoseFormat::Sse
    } else {
        FirehoseFormat::Ndjson
    };
    let max_line = LIMITS[usize::from((control >> 1) & 3)];
    let settings = crate::firehose::settings(control >> 3, format);
    let resume = (control & 64 != 0).then(|| "resume-0".to_owned());
    let base = crate::firehose::base();
    let decoder = || StreamDecoder::new(&settings, base.clone(), resume.clone(), max_line);

    let whole = decode(decoder(), &[body]);
    let chunked = decode(decoder(), &crate::chunks(body, seed));
    assert_eq!(whole, chunked, "chunking changed what was decoded");
    if body.len() <= 4096 {
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(
            whole,
            decode(decoder(), &bytes),
            "byte-by-byte decoding differs"
        );
    }

    for (item, cursor) in &whole.items {
        assert!(!item.is_blank(), "a blank item was decoded: {item:?}");
        match format {
            FirehoseFormat::Ndjson | FirehoseFormat::Json => {
                assert_eq!(cursor, &None, "an NDJSON item with a cursor");
            }
            FirehoseFormat::Sse => {
                if let Some(c) = cursor {
                    // Ids are read lossily: one with invalid UTF-8 has U+FFFD.
                    let sent = resume.as_deref() == Some(c.as_str())
                        || c.contains('\u{fffd}')
                        || body.windows(c.len()).any(|w| w == c.as_bytes());
                    assert!(sent, "cursor {c:?} is not in the stream");
                }
            }
        }
    }
}
