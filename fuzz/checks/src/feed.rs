//! `feed`: RSS / Atom / JSON Feed bytes through the real parse, then
//! through `normalize`.

use livestrom_engine::sources::feed;
use livestrom_engine::SourceType;
use url::Url;

/// Reads `data` as an HTML field both ways the feed parser can (same
/// text); parses it as a feed twice (same result, items or error text) — the
/// second time with the structure pass run whatever the scan before it says,
/// so a scan that skips a needed repair shows as a difference — then checks
/// the items' identities ([`crate::normalise::check_items`]).
pub fn check(data: &[u8]) {
    // The same bytes as an HTML field: both ways to its text agree.
    if let Err(e) = feed::html_text_paths_agree(&String::from_utf8_lossy(data)) {
        panic!("{e}");
    }
    let base = Url::parse("https://feeds.example.test/dir/feed.xml")
        .unwrap_or_else(|e| panic!("fixed url: {e}"));
    let first = feed::parse_at(data, None, &base, crate::now());
    let second = feed::parse_at_always_repairing(data, None, &base, crate::now());
    let parsed = match (first, second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "the parse differs with the structure pass always run");
            a
        }
        (Err(a), Err(b)) => {
            assert_eq!(
                a.to_string(),
                b.to_string(),
                "the parse fails differently with the structure pass always run"
            );
            assert!(!a.to_string().is_empty(), "an empty error message");
            return;
        }
        (a, b) => {
            panic!("one parse failed, the other (structure pass always run) did not: {a:?} / {b:?}")
        }
    };
    for item in &parsed.items {
        assert!(!item.is_blank(), "a blank item was kept: {item:?}");
        assert!(
            item.published
                .is_none_or(|p| p <= crate::now() + feed::FUTURE_TOLERANCE),
            "a date beyond the future tolerance: {item:?}"
        );
    }
    crate::normalise::check_items(
        &crate::normalise::source(SourceType::Rss, &base),
        &parsed.items,
    );
}
