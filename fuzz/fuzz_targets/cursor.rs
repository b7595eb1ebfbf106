//! Fuzz target `cursor`: resume cursors (since=, Last-Event-ID, cluster positions); the properties are
//! `livestrom_checks::cursor::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| livestrom_checks::cursor::check(data));
