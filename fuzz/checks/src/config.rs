//! `sources_toml`: the config file through both stages (TOML with spans,
//! then validation into types).

use std::path::Path;

use livestrom_engine::config::{diff, Config};

/// Input: a `sources.toml` (lossy UTF-8). Loading is deterministic (the
/// same config, or the same problems); a valid config differs from itself
/// in nothing; every problem names a line inside the file (or none) and a
/// field, and says something.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/etc/livestrom/sources.toml");
    let first = Config::from_toml(path, &text);
    let second = Config::from_toml(path, &text);
    match (first, second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "two loads of the same file differ");
            let d = diff(&a, &b);
            assert!(d.is_empty(), "a config differs from itself: {d:?}");
            for s in &a.sources {
                assert!(
                    a.source(s.id.as_str()).is_some(),
                    "source {} not found by id",
                    s.id
                );
            }
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.issues(), b.issues(), "two loads fail differently");
            assert!(!a.issues().is_empty(), "invalid without a problem: {a}");
            let lines = text.lines().count().max(1);
            for issue in a.issues() {
                assert!(
                    issue.line.is_none_or(|l| (1..=lines + 1).contains(&l)),
                    "line {:?} outside a {lines}-line file: {issue}",
                    issue.line
                );
                assert!(
                    !issue.message.trim().is_empty(),
                    "a problem with no message"
                );
                assert!(!issue.to_string().is_empty());
            }
        }
        (a, b) => panic!("one load failed, the other did not: {a:?} / {b:?}"),
    }
}
