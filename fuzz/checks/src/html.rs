//! `html`: a page through the real extraction (region, noise, text), and
//! the snapshot diff.

use livestrom_engine::config::HtmlSettings;
use livestrom_engine::sources::html::{self, DIFF_HEADER};

/// Separates the two versions of a page in one fuzz input.
pub const NEXT_VERSION: &[u8] = b"<!--next-version-->";

/// Region selectors a control byte chooses from (`None`: the body).
const SELECTORS: [Option<&str>; 4] = [
    None,
    Some("main"),
    Some("#content, article"),
    Some("div > p"),
];

/// Settings chosen by one control byte: the region selector (bits 0-1),
/// `ignore` selectors (bit 2), an `ignore_text` regex (bit 3) and
/// `min_change` (bits 4-5: 0, 1, 10, 100).
pub fn settings(control: u8) -> HtmlSettings {
    let ignore = if control & 4 == 0 {
        vec![]
    } else {
        vec!["nav".to_owned(), ".ad, footer".to_owned()]
    };
    let ignore_text = if control & 8 == 0 {
        vec![]
    } else {
        vec![regex_of(r"\d+ views"), regex_of(r"(?i)updated .*ago")]
    };
    HtmlSettings {
        selector: SELECTORS[usize::from(control & 3)].map(str::to_owned),
        ignore,
        ignore_text,
        min_change: [0, 1, 10, 100][usize::from((control >> 4) & 3)],
    }
}

fn regex_of(pattern: &str) -> regex::Regex {
    regex::Regex::new(pattern).unwrap_or_else(|e| panic!("fixed regex: {e}"))
}

/// Input: one control byte ([`settings`]), then a page, optionally followed
/// by [`NEXT_VERSION`] and its next version. Checks that extraction is
/// deterministic, that `diff(x, x)` is empty for every snapshot, and that a
/// diff between the two versions is well formed: its header, `+` lines that
/// are the added lines, each a line of the new text.
pub fn check(data: &[u8]) {
    let ([control], pages) = crate::split_control::<1>(data);
    let settings = settings(control);
    let (old, new) = match find(pages, NEXT_VERSION) {
        Some(at) => (&pages[..at], Some(&pages[at + NEXT_VERSION.len()..])),
        None => (pages, None),
    };
    let Some(old) = snapshot(old, &settings) else {
        return;
    };
    let Some(new) = new.and_then(|n| snapshot(n, &settings)) else {
        return;
    };
    let Some(change) = html::diff(&old, &new, settings.min_change) else {
        return;
    };
    assert_ne!(old, new, "a diff between equal texts");
    let header = format!("--- {}\n+++ {}\n", DIFF_HEADER.0, DIFF_HEADER.1);
    assert!(
        change.diff.starts_with(&header),
        "diff header: {:?}",
        change.diff
    );
    let new_lines: Vec<&str> = new.lines().collect();
    for line in &change.added {
        assert!(
            new_lines.contains(&line.as_str()),
            "added line {line:?} is not in the new text"
        );
    }
    let plus: Vec<&str> = change
        .diff
        .lines()
        .skip(2)
        .filter_map(|l| l.strip_prefix('+'))
        .filter(|l| !l.is_empty())
        .collect();
    let added: Vec<&str> = change.added.iter().map(String::as_str).collect();
    assert_eq!(plus, added, "the diff's + lines are not the added lines");
}

/// Extracts a page twice (same result) and checks `diff(x, x)` is empty.
fn snapshot(page: &[u8], settings: &HtmlSettings) -> Option<String> {
    let first = html::extract(page, Some("text/html; charset=utf-8"), settings);
    let second = html::extract(page, Some("text/html; charset=utf-8"), settings);
    match (first, second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "two extractions of the same page differ");
            assert!(!a.text.is_empty(), "an empty snapshot was accepted");
            for min_change in [0, 1, settings.min_change] {
                assert_eq!(
                    html::diff(&a.text, &a.text, min_change),
                    None,
                    "diff(x, x) is not empty"
                );
            }
            assert_eq!(
                html::diff(&a.title, &a.title, 0),
                None,
                "diff(x, x) is not empty"
            );
            Some(a.text)
        }
        (Err(a), Err(b)) => {
            // Both failed; the message may differ only when the parse hit
            // its wall-clock budget (a slow moment on a loaded machine).
            if !a.to_string().contains("too complex") {
                assert_eq!(
                    a.to_string(),
                    b.to_string(),
                    "two extractions fail differently"
                );
            }
            None
        }
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => {
            assert!(
                e.to_string().contains("too complex"),
                "one extraction failed: {e}"
            );
            None
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
