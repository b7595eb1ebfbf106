//! Integration tests: the fuzz corpora on stable. Every file under
//! `fuzz/corpus/<target>/` (seeds, and each input a fuzzing run found
//! interesting or crashing) goes through that target's property check from
//! `livestrom-checks`, the same function the cargo-fuzz target runs.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The files of one target's corpus, sorted.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target`'s check on each file of its corpus; fails naming every
/// file whose check panicked.
fn replay(target: &str) {
    let (_, check) = livestrom_checks::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no target {target}"));
    let files = corpus(target);
    assert!(!files.is_empty(), "fuzz/corpus/{target} is empty");
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(f.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} corpus files fail: {failed:#?}",
        failed.len(),
        files.len()
    );
}

#[test]
fn every_target_has_a_corpus_and_a_fuzz_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, _) in livestrom_checks::TARGETS {
        let target = root.join("fuzz_targets").join(format!("{name}.rs"));
        assert!(target.is_file(), "{} is missing", target.display());
        assert!(!corpus(name).is_empty(), "fuzz/corpus/{name} is empty");
    }
}

#[test]
fn fuzz_corpus_feed() {
    replay("feed");
}

#[test]
fn fuzz_corpus_firehose_json() {
    replay("firehose_json");
}

#[test]
fn fuzz_corpus_stream_decoders() {
    replay("stream_decoders");
}

#[test]
fn fuzz_corpus_html() {
    replay("html");
}

#[test]
fn fuzz_corpus_filter_query() {
    replay("filter_query");
}

#[test]
fn fuzz_corpus_cursor() {
    replay("cursor");
}

#[test]
fn fuzz_corpus_api_key() {
    replay("api_key");
}

#[test]
fn fuzz_corpus_sources_toml() {
    replay("sources_toml");
}

#[test]
fn fuzz_corpus_request_head() {
    replay("request_head");
}
