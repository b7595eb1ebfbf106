//! Fuzz target `feed`: RSS / Atom / JSON Feed parse, then normalise; the properties are
//! `livestrom_checks::feed::check`.
#![no_main]

use std::sync::Once;

// The feed parser catches a panic inside feed-rs and reports the document
// as unparseable (one poll lost, not the task). libfuzzer-sys's panic hook
// aborts on any panic, caught or not; the default hook lets the product's
// catch work, while a panic that escapes the check still aborts (libfuzzer-sys
// catches it at the boundary and aborts there).
static DEFAULT_HOOK: Once = Once::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    DEFAULT_HOOK.call_once(|| drop(std::panic::take_hook()));
    livestrom_checks::feed::check(data);
});
