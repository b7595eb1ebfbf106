//! Architecture invariants checked on the source text, so a change that
//! breaks one fails `cargo test` instead of waiting for a reviewer.

use std::path::{Path, PathBuf};

/// What a file under `src/sources` must not mention: parsers are pure
/// (bytes in, items out), so they name no HTTP client, no async runtime and
/// nothing of the fetcher. Connections live in `runtime`.
const NOT_IN_SOURCES: [&str; 4] = ["crate::fetch", "reqwest", "tokio", "Fetcher"];

#[test]
fn sources_do_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/sources");
    let files = rust_files(&root);
    assert!(
        files.len() > 5,
        "found only {} files under {}",
        files.len(),
        root.display()
    );
    let mut offences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        for (n, line) in text.lines().enumerate() {
            for needle in NOT_IN_SOURCES {
                if line.contains(needle) {
                    offences.push(format!("{}:{}: {needle}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "engine/src/sources must stay pure (no IO); found:\n{}",
        offences.join("\n")
    );
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut out = Vec::new();
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}
