//! The architecture's invariants (docs/ARCHITECTURE.md), checked on the
//! source tree so a change that breaks one fails here rather than in review.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The code of a file without its comments (so docs may name what code must
/// not) and without its unit tests (test servers may use anything).
fn code_of(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Files under `dir` whose code names any of `needles`, with the first one found.
fn naming(dir: &str, needles: &[&str]) -> Vec<String> {
    let files = rust_files(&root().join(dir));
    assert!(!files.is_empty(), "no sources under {dir}");
    files
        .iter()
        .filter_map(|f| {
            let code = code_of(f);
            needles
                .iter()
                .find(|n| code.contains(*n))
                .map(|n| format!("{} names `{n}`", f.display()))
        })
        .collect()
}

#[test]
fn the_edge_reads_through_the_seams_and_names_no_store() {
    let found = naming(
        "edge/src",
        &[
            "livestrom_engine::store",
            "livestrom_engine::Store",
            "StoreError",
            "rusqlite",
            "SqliteKeys",
        ],
    );
    assert!(found.is_empty(), "{found:#?}");
    let manifest = std::fs::read_to_string(root().join("edge/Cargo.toml")).unwrap_or_default();
    assert!(
        !manifest.contains("rusqlite"),
        "the edge must not depend on SQLite"
    );
}

#[test]
fn the_engine_knows_nothing_about_http_serving() {
    let found = naming("engine/src", &["axum", "hyper::server", "livestrom_edge"]);
    assert!(found.is_empty(), "{found:#?}");
}
