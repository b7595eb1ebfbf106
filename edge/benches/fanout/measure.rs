//! The fan-out bench client's measuring tools: a latency histogram and a
//! decoder of HTTP/1.1 chunked framing fed in pieces.

use std::sync::atomic::{AtomicU64, Ordering};

/// Latency histogram: 100 µs buckets up to 60 s.
pub(crate) struct Hist {
    buckets: Vec<AtomicU64>,
}

impl Hist {
    pub(crate) fn new() -> Self {
        Self {
            buckets: (0..600_000).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    pub(crate) fn record(&self, micros: i64) {
        let b = (micros.max(0) / 100) as usize;
        let b = b.min(self.buckets.len() - 1);
        self.buckets[b].fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn reset(&self) {
        for b in &self.buckets {
            b.store(0, Ordering::Relaxed);
        }
    }
    /// (count, p50 ms, p99 ms, max ms)
    pub(crate) fn summary(&self) -> (u64, f64, f64, f64) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let at = |q: f64| {
            let target = ((total as f64) * q).ceil() as u64;
            let mut acc = 0;
            for (i, c) in counts.iter().enumerate() {
                acc += c;
                if acc >= target.max(1) {
                    return (i as f64 + 1.0) * 0.1;
                }
            }
            0.0
        };
        let max = counts
            .iter()
            .rposition(|c| *c > 0)
            .map_or(0.0, |i| (i as f64 + 1.0) * 0.1);
        (total, at(0.50), at(0.99), max)
    }
}

/// Removes HTTP/1.1 chunked framing from a byte stream, fed in pieces.
#[derive(Default)]
pub(crate) struct Dechunk {
    /// Bytes of chunk data still to pass through.
    data_left: usize,
    /// Inside a chunk-size line (hex digits, then up to `\n`).
    in_size: bool,
    size: usize,
    /// Bytes of the CRLF after chunk data still to skip.
    crlf_left: usize,
}

impl Dechunk {
    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            if self.data_left > 0 {
                let n = self.data_left.min(input.len());
                out.extend_from_slice(&input[..n]);
                self.data_left -= n;
                input = &input[n..];
                if self.data_left == 0 {
                    self.crlf_left = 2;
                }
            } else if self.crlf_left > 0 {
                self.crlf_left -= 1;
                input = &input[1..];
            } else {
                if !self.in_size {
                    self.in_size = true;
                    self.size = 0;
                }
                let b = input[0];
                input = &input[1..];
                if b == b'\n' {
                    self.in_size = false;
                    self.data_left = self.size;
                } else if let Some(v) = (b as char).to_digit(16) {
                    self.size = self.size * 16 + v as usize;
                }
            }
        }
    }
}
