//! The brotli window header read against real encodes and the reference
//! decoder, and the incremental decoder: bodies decode byte for byte in any
//! chunking, windows over the cap and the large-window extension are refused
//! before decoding, and broken streams are errors, never panics.

use std::io::Write;

use brotli::enc::BrotliEncoderParams;
use brotli_decompressor::{BrotliDecoderErrorCode, BrotliDecompressStream, BrotliState};

use super::*;
use crate::fetch::FetchError;

/// Some text that compresses like a feed does.
fn text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 100);
    let mut n = 0u64;
    while out.len() < len {
        n += 1;
        out.extend_from_slice(
            format!(
                "<item><title>item {n}</title><guid>urn:x:{}</guid></item>\n",
                n * 7919
            )
            .as_bytes(),
        );
    }
    out.truncate(len);
    out
}

fn encode(data: &[u8], lgwin: u32) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, lgwin);
        w.write_all(data)
            .unwrap_or_else(|e| panic!("encode at lgwin {lgwin}: {e}"));
    }
    out
}

fn encode_large_window(data: &[u8], lgwin: i32) -> Vec<u8> {
    let params = BrotliEncoderParams {
        quality: 5,
        lgwin,
        large_window: true,
        ..BrotliEncoderParams::default()
    };
    let mut out = Vec::new();
    brotli::BrotliCompress(&mut &data[..], &mut out, &params)
        .unwrap_or_else(|e| panic!("encode large window {lgwin}: {e}"));
    out
}

/// Pushes `compressed` in pieces of `step` bytes; the decoded body, or the
/// first error (`finish` included).
fn decode(compressed: &[u8], step: usize, limit: u64) -> Result<Vec<u8>, BrotliError> {
    let mut body = BrotliBody::new(limit);
    let mut out = Vec::new();
    for piece in compressed.chunks(step.max(1)) {
        body.push(Bytes::copy_from_slice(piece))?;
        while let Some(decoded) = body.next()? {
            assert!(decoded.len() <= PIECE, "a piece of {} bytes", decoded.len());
            out.extend_from_slice(&decoded);
        }
        if body.is_done() {
            break;
        }
    }
    body.finish()?;
    Ok(out)
}

#[test]
fn every_standard_window_is_read_from_real_encodes() {
    let data = text(100_000);
    for lgwin in 10..=24u8 {
        let compressed = encode(&data, u32::from(lgwin));
        assert_eq!(
            read_window(&compressed),
            Ok(Some(Window::Standard(lgwin))),
            "lgwin {lgwin}: first byte {:#04x}",
            compressed[0]
        );
        // One byte always suffices for a standard window.
        assert_eq!(
            read_window(&compressed[..1]),
            Ok(Some(Window::Standard(lgwin)))
        );
        assert_eq!(Window::Standard(lgwin).bytes(), 1 << lgwin);
        // And the stream decodes, under a cap that holds its window.
        let got = decode(&compressed, compressed.len(), 1 << 24)
            .unwrap_or_else(|e| panic!("lgwin {lgwin}: {e}"));
        assert!(got == data, "lgwin {lgwin}: decoded body differs");
    }
}

#[test]
fn the_large_window_signature_is_recognised_and_refused() {
    let data = text(10_000);
    for lgwin in [10, 16, 22, 24, 25, 28, 30] {
        let compressed = encode_large_window(&data, lgwin);
        let bits = u8::try_from(lgwin).unwrap_or(0);
        assert_eq!(
            read_window(&compressed),
            Ok(Some(Window::Large(bits))),
            "large window {lgwin}"
        );
        // The signature's first byte alone is not enough to tell.
        assert_eq!(read_window(&compressed[..1]), Ok(None));
        // Refused whatever the cap: HTTP's br is RFC 7932, no extension.
        let refused = decode(&compressed, 1, 1 << 30);
        assert_eq!(
            refused,
            Err(BrotliError::LargeWindow { window: 1 << lgwin }),
            "large window {lgwin}"
        );
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains(&size(1 << lgwin)), "{message}");
    }
}

#[test]
fn empty_truncated_and_garbage_headers() {
    assert_eq!(read_window(&[]), Ok(None));
    assert_eq!(read_window(&[0x11]), Ok(None));
    // The reserved bit after the signature is set.
    assert_eq!(read_window(&[0x91, 22]), Err(InvalidHeader));
    assert_eq!(read_window(&[0x91]), Err(InvalidHeader));
    // Large-window WBITS outside 10..=30.
    for bits in [0u8, 1, 9, 31, 63] {
        assert_eq!(read_window(&[0x11, bits]), Err(InvalidHeader), "{bits}");
    }
    // The two high bits of the second byte are the next field's.
    assert_eq!(read_window(&[0x11, 0xc0 | 20]), Ok(Some(Window::Large(20))));
}

/// Every first byte (and for the large-window signature every second one)
/// is read as the reference decoder reads it: the same window, or invalid
/// exactly where it fails on the window bits.
#[test]
fn every_header_is_read_as_the_reference_decoder_reads_it() {
    let mut heads: Vec<[u8; 2]> = (0..=255u8).map(|b| [b, 0]).collect();
    for second in 0..=255u8 {
        heads.push([0x11, second]);
        heads.push([0x91, second]);
    }
    for head in heads {
        // The reference, allowing large windows so it reads their bits too.
        let mut state = BrotliState::new(
            StandardAlloc::default(),
            StandardAlloc::default(),
            StandardAlloc::default(),
        );
        let input = [head[0], head[1], 0, 0, 0, 0, 0, 0];
        let (mut avail_in, mut in_off) = (input.len(), 0);
        let mut out = [0u8; 64];
        let (mut avail_out, mut out_off, mut total) = (out.len(), 0, 0);
        let _ = BrotliDecompressStream(
            &mut avail_in,
            &mut in_off,
            &input,
            &mut avail_out,
            &mut out_off,
            &mut out,
            &mut total,
            &mut state,
        );
        let refused = matches!(
            state.error_code,
            BrotliDecoderErrorCode::BROTLI_DECODER_ERROR_FORMAT_WINDOW_BITS
        );
        match read_window(&head) {
            Ok(Some(Window::Standard(bits))) => {
                assert!(!refused, "{head:02x?}");
                assert!(!state.large_window, "{head:02x?}");
                assert_eq!(state.window_bits, u32::from(bits), "{head:02x?}");
            }
            Ok(Some(Window::Large(bits))) => {
                assert!(!refused, "{head:02x?}");
                assert!(state.large_window, "{head:02x?}");
                assert_eq!(state.window_bits, u32::from(bits), "{head:02x?}");
            }
            Err(InvalidHeader) => assert!(refused, "{head:02x?}: {:?}", state.error_code),
            Ok(None) => panic!("{head:02x?}: two bytes always decide"),
        }
    }
}

#[test]
fn an_ordinary_body_decodes_identically_in_any_chunking() {
    let data = text(300_000);
    let compressed = encode(&data, 22);
    for step in [1, 2, 7, 4096, 65_536, compressed.len()] {
        let got =
            decode(&compressed, step, 10_000_000).unwrap_or_else(|e| panic!("step {step}: {e}"));
        assert!(got == data, "step {step}: decoded body differs");
    }
    // Highly compressible: one small chunk gives many pieces.
    let zeros = vec![0u8; 1 << 20];
    let compressed = encode(&zeros, 20);
    assert!(compressed.len() < 1024, "{} bytes", compressed.len());
    let got =
        decode(&compressed, compressed.len(), 1 << 20).unwrap_or_else(|e| panic!("zeros: {e}"));
    assert!(got == zeros);
}

#[test]
fn a_window_larger_than_the_cap_is_refused_before_decoding() {
    let data = text(1000);
    // 16 MiB window, the default 10 MB cap: the wording sources show.
    let err = decode(&encode(&data, 24), 1, 10_000_000).err();
    assert_eq!(
        err,
        Some(BrotliError::WindowOverCap {
            window: 16_777_216,
            limit: 10_000_000
        })
    );
    // As a fetch error (what the source's reason shows), in the same words.
    let fetch_error = err.map(FetchError::from);
    assert!(
        matches!(
            fetch_error,
            Some(FetchError::BrotliWindow {
                window: 16_777_216,
                limit: 10_000_000
            })
        ),
        "{fetch_error:?}"
    );
    assert_eq!(
        fetch_error.map(|e| e.to_string()).unwrap_or_default(),
        "brotli window of 16 MiB is larger than the body cap of 10 MB (fetch.max_body)"
    );
    // Refused on the first chunk, so nothing was decoded or allocated.
    let mut body = BrotliBody::new(1_000_000);
    let refused = body.push(Bytes::from(encode(&data, 21)));
    assert_eq!(
        refused,
        Err(BrotliError::WindowOverCap {
            window: 2 << 20,
            limit: 1_000_000
        })
    );
    assert!(body.state.is_none() && body.out.is_empty());
    // A window equal to the cap is accepted.
    let got = decode(&encode(&data, 20), 3, 1 << 20).unwrap_or_else(|e| panic!("{e}"));
    assert!(got == data);
}

#[test]
fn empty_and_truncated_streams_are_errors() {
    assert_eq!(decode(&[], 1, 1 << 20), Err(BrotliError::Empty));
    // The large-window signature's first byte, then nothing.
    assert_eq!(decode(&[0x11], 1, 1 << 20), Err(BrotliError::Truncated));
    let compressed = encode(&text(50_000), 22);
    for cut in [1, 2, 10, compressed.len() / 2, compressed.len() - 1] {
        match decode(&compressed[..cut], 5, 1 << 24) {
            Err(BrotliError::Truncated | BrotliError::Invalid(_)) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn garbage_is_an_error_and_bytes_after_the_end_are_ignored() {
    // Not brotli at all: a feed sent with the wrong Content-Encoding.
    let feed = b"<?xml version=\"1.0\"?><rss version=\"2.0\"><channel></channel></rss>";
    // '<' is 0x3c: WBITS 16, then bits no encoder writes.
    match decode(feed, 16, 1 << 24) {
        Err(e @ BrotliError::Invalid(_)) => {
            assert!(e.to_string().starts_with("invalid brotli stream ("), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(decode(&[0x91, 0], 1, 1 << 24), Err(BrotliError::NotBrotli));
    let mut compressed = encode(b"hello", 16);
    compressed.extend_from_slice(b"trailing junk");
    let got = decode(&compressed, 1, 1 << 16).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, b"hello");
}

/// Flipped bytes anywhere in a real stream: each decode ends in the body
/// or an error, never a panic or a decoder that stops making progress.
#[test]
fn corrupted_streams_never_panic() {
    let data = text(20_000);
    let compressed = encode(&data, 18);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..500 {
        let mut broken = compressed.clone();
        for _ in 0..=(next() % 4) {
            let at = usize::try_from(next() % broken.len() as u64).unwrap_or(0);
            broken[at] ^= u8::try_from(next() % 255 + 1).unwrap_or(1);
        }
        let step = usize::try_from(next() % 300 + 1).unwrap_or(1);
        match decode(&broken, step, 1 << 24) {
            Ok(_)
            | Err(
                BrotliError::Invalid(_)
                | BrotliError::Truncated
                | BrotliError::NotBrotli
                | BrotliError::LargeWindow { .. },
            ) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
}

#[test]
fn sizes_read_as_people_write_them() {
    assert_eq!(size(1 << 24), "16 MiB");
    assert_eq!(size(1 << 10), "1 KiB");
    assert_eq!(size(1 << 30), "1 GiB");
    assert_eq!(size(10_000_000), "10 MB");
    assert_eq!(size(1_500_000), "1500 KB");
    assert_eq!(size(1_000_001), "1000001 bytes");
}
