//! Property checks on every parser that reads untrusted bytes, one plain
//! function per fuzz target: `fn(&[u8])` that panics when a property fails.
//!
//! The same functions run in two places: the cargo-fuzz targets under
//! `fuzz/` (nightly, libFuzzer) and `tests/fuzz_corpus.rs`, which replays
//! every file of `fuzz/corpus/<target>/` through them on stable. A crash the
//! fuzzer finds is added to the corpus and stays a regression test there.
//!
//! Properties checked (beyond "never panics"): parsing is deterministic,
//! identity survives a re-parse (a re-poll of the same document emits
//! nothing), streaming decoders give the same items however the bytes are
//! chunked, `diff(x, x)` is empty, and parse → display → parse is stable
//! where a type has a display form.

use chrono::{DateTime, Utc};

pub mod config;
pub mod cursor;
pub mod feed;
pub mod firehose;
pub mod head;
pub mod html;
pub mod keys;
pub mod normalise;
pub mod query;
pub mod stream;

/// A fuzz target: its name (the folder under `fuzz/corpus/` and the binary
/// under `fuzz/fuzz_targets/`) and its check.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order the docs list them.
pub const TARGETS: [Target; 9] = [
    ("feed", feed::check),
    ("firehose_json", firehose::check),
    ("stream_decoders", stream::check),
    ("html", html::check),
    ("filter_query", query::check),
    ("cursor", cursor::check),
    ("api_key", keys::check),
    ("sources_toml", config::check),
    ("request_head", head::check),
];

/// The fixed "now" every check parses at (feeds clamp future dates to it).
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_780_000_000, 0).unwrap_or_default()
}

/// Splits `data` into chunks whose lengths come from `seed`, one seed byte
/// per chunk, cycling: lengths 0 (an empty read) to 63 bytes, so splits land
/// inside line endings, UTF-8 sequences and field names. An empty seed
/// yields `data` whole.
pub fn chunks<'a>(data: &'a [u8], seed: &[u8]) -> Vec<&'a [u8]> {
    if seed.is_empty() {
        return vec![data];
    }
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let mut want = usize::from(seed[i % seed.len()] % 64);
        i += 1;
        // Never two empty reads in a row: an all-zero seed still ends.
        if want == 0 && out.last().is_some_and(|c: &&[u8]| c.is_empty()) {
            want = 1;
        }
        let (head, tail) = rest.split_at(want.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}

/// Splits a fuzz input into a control prefix of `n` bytes (zeros if the
/// input is shorter) and the payload after it.
pub fn split_control<const N: usize>(data: &[u8]) -> ([u8; N], &[u8]) {
    let mut control = [0u8; N];
    let n = N.min(data.len());
    control[..n].copy_from_slice(&data[..n]);
    (control, &data[n..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_data_in_order() {
        let data: Vec<u8> = (0..=255).collect();
        for seed in [&[][..], &[0, 1], &[63, 200, 7], &[0], &[0, 0, 64]] {
            let parts = chunks(&data, seed);
            assert_eq!(parts.concat(), data, "{seed:?}");
        }
        assert_eq!(chunks(b"abc", &[]), vec![&b"abc"[..]]);
    }

    #[test]
    fn control_prefix_is_zero_padded() {
        assert_eq!(split_control::<2>(b"a"), ([b'a', 0], &b""[..]));
        assert_eq!(split_control::<1>(b"ab"), ([b'a'], &b"b"[..]));
    }
}
