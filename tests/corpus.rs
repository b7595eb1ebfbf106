//! Integration tests: corpus. Every real-world feed in `fixtures/corpus` is
//! parsed; none may panic; where the oracle (Python feedparser, see
//! `fixtures/corpus/SOURCES.md`) read a document cleanly we must find the
//! same items, ids and links, except for the differences listed (with their
//! reasons) in [`ALLOWED`] and docs/CORPUS.md. A new difference, or an
//! allowed one that went away, fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use livestrom_engine::config::{Cadence, SourceConfig, SourceId, SourceKind};
use livestrom_engine::normalize::{self, canonical::canonical_link};
use livestrom_engine::sources::feed;
use livestrom_engine::store::ItemState;
use livestrom_engine::SourceType;
use url::Url;

/// What kind of disagreement with the oracle a file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Diff {
    /// The oracle read it; we refuse it as not a feed.
    Rejected,
    /// Different number of items.
    Count,
    /// An item id differs (or we have none where the oracle has one).
    Id,
    /// An item link differs.
    Link,
}

/// Deliberate differences: (origin/file, kind, reason). Keep in sync with docs/CORPUS.md.
const ALLOWED: &[(&str, Diff, &str)] = &[
    (
        "capyreader/feed-test-ru.xml",
        Diff::Link,
        "items carry nested <yandex:related><link url=…> elements; the oracle takes the last nested one, we take the item's own <link>",
    ),
    ("feed-rs/atom_example_7.xml", Diff::Link, "entry has no link; the oracle uses its tag: id as the link, we only use http(s) ids"),
    ("feed-rs/atom_pub_spec_1.xml", Diff::Link, "entry has no link; the oracle uses its urn:uuid id as the link, we only use http(s) ids"),
    ("rss-parser/missing-fields.atom", Diff::Link, "entry has no link; the oracle uses its tag: id as the link, we only use http(s) ids"),
    (
        "gofeed/rss__rss_channel_item_guid_no_permalink.xml",
        Diff::Link,
        "guid isPermaLink=\"false\" (\"abc123\"); the oracle still uses it as a (relative) link, we do not",
    ),
    ("gofeed/universal__unknown_feed.xml", Diff::Rejected, "root <note> is not a feed; the oracle reports 0 entries without bozo, we refuse it"),
    ("miniflux/xml__iso88591.xml", Diff::Rejected, "root <note> is not a feed; the oracle reports 0 entries without bozo, we refuse it"),
    (
        "feedparser/wellformed__namespace__unknown-namespace.xml",
        Diff::Count,
        "an RSS-style <item> inside an Atom <feed> is not an Atom entry; the oracle accepts it",
    ),
    // Items with nothing to identify or show (no id, link, enclosure, title
    // or text — only a date, a category, an empty author or extension
    // elements): the oracle lists them; we report that the document's items
    // were all unusable instead of passing an empty success.
    ("feedparser/wellformed__atom10__entry_category_term_non_ascii.xml", Diff::Rejected, "the only entry has just a <category>: nothing to identify or show"),
    ("feedparser/wellformed__itunes__itunes_item_duration.xml", Diff::Rejected, "the only item has just <itunes:duration>: nothing to identify or show"),
    ("feedparser/wellformed__rss__item_pubDate.xml", Diff::Rejected, "the only item has just a <pubDate>: nothing to identify or show"),
    ("gofeed/rss__issue_275_channel_item_extensions.xml", Diff::Rejected, "the only item has just extension elements (itunes:author, dc:subject): nothing to identify or show"),
    ("rss-parser/incomplete-fields.atom", Diff::Rejected, "the only entry has just an empty <author>: nothing to identify or show"),
    (
        "prof18-rss-parser/atom-link-alternate-href.xml",
        Diff::Link,
        "entry has an image/jpeg alternate and a text/html alternate; the oracle takes the image, we take the HTML page",
    ),
    (
        "rss-parser/reddit-home.rss",
        Diff::Id,
        "Atom ids like t3_42tizy: the oracle resolves them as relative URIs (/t3_42tizy), we keep ids opaque",
    ),
];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/corpus")
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-07-01T12:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

/// Every feed file as (`origin/file`, path), sorted.
fn feed_files() -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let root = corpus().join("feeds");
    let origins = std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    for origin in origins.flatten() {
        let files = std::fs::read_dir(origin.path())
            .unwrap_or_else(|e| panic!("{}: {e}", origin.path().display()));
        for f in files.flatten() {
            let name = format!(
                "{}/{}",
                origin.file_name().to_string_lossy(),
                f.file_name().to_string_lossy()
            );
            out.push((name, f.path()));
        }
    }
    out.sort();
    out
}

/// The URL a corpus file is pretended to be served from.
fn base_of(name: &str) -> Url {
    Url::parse(&format!("https://corpus.test/{name}")).unwrap_or_else(|e| panic!("{e}"))
}

/// A link compared after resolution against the same base and canonicalisation.
fn norm_link(link: &str, base: &Url) -> String {
    let abs = Url::parse(link)
        .or_else(|_| base.join(link))
        .map(|u| u.to_string())
        .unwrap_or_else(|_| link.to_owned());
    canonical_link(&abs).unwrap_or(abs)
}

fn compare(name: &str, path: &Path, expected: &serde_json::Value) -> BTreeMap<Diff, Vec<String>> {
    let mut diffs: BTreeMap<Diff, Vec<String>> = BTreeMap::new();
    let body = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let base = base_of(name);
    let parsed = match feed::parse_at(&body, None, &base, now()) {
        Ok(p) => p,
        Err(e) => {
            diffs.entry(Diff::Rejected).or_default().push(e.to_string());
            return diffs;
        }
    };
    let entries = expected["entries"].as_array().cloned().unwrap_or_default();
    if entries.len() != parsed.items.len() {
        diffs.entry(Diff::Count).or_default().push(format!(
            "oracle {} items, engine {}",
            entries.len(),
            parsed.items.len()
        ));
        return diffs;
    }
    for (i, (want, got)) in entries.iter().zip(&parsed.items).enumerate() {
        if let Some(id) = want["id"].as_str().map(str::trim).filter(|s| !s.is_empty()) {
            if got.guid.as_deref() != Some(id) {
                diffs
                    .entry(Diff::Id)
                    .or_default()
                    .push(format!("#{i}: oracle {id:?}, engine {:?}", got.guid));
            }
        }
        let want_link = want["link"]
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|l| norm_link(l, &base));
        let got_link = got.url.as_deref().map(|l| norm_link(l, &base));
        if want_link != got_link {
            diffs
                .entry(Diff::Link)
                .or_default()
                .push(format!("#{i}: oracle {want_link:?}, engine {got_link:?}"));
        }
    }
    diffs
}

#[test]
fn corpus_feeds_match_the_oracle_except_the_allow_list() {
    let mut found: BTreeMap<(String, Diff), Vec<String>> = BTreeMap::new();
    let mut checked = 0;
    for (name, path) in feed_files() {
        let exp_path = corpus().join("expected").join(format!("{name}.json"));
        let text = std::fs::read_to_string(&exp_path)
            .unwrap_or_else(|e| panic!("{}: {e}", exp_path.display()));
        let expected: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", exp_path.display()));
        if expected["bozo"].as_bool() != Some(false) {
            continue;
        }
        checked += 1;
        for (kind, details) in compare(&name, &path, &expected) {
            found.insert((name.clone(), kind), details);
        }
    }
    assert!(
        checked > 150,
        "only {checked} clean oracle files found: is fixtures/corpus complete?"
    );

    let allowed: BTreeSet<(String, Diff)> = ALLOWED
        .iter()
        .map(|(f, k, _)| ((*f).to_owned(), *k))
        .collect();
    let new: Vec<String> = found
        .iter()
        .filter(|(key, _)| !allowed.contains(*key))
        .map(|((f, k), d)| {
            format!(
                "{f} [{k:?}]: {}",
                d.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
            )
        })
        .collect();
    let stale: Vec<String> = allowed
        .iter()
        .filter(|key| !found.contains_key(*key))
        .map(|(f, k)| format!("{f} [{k:?}]"))
        .collect();
    assert!(
        new.is_empty() && stale.is_empty(),
        "new differences from the oracle ({}):\n  {}\nallowed differences that no longer occur ({}):\n  {}",
        new.len(),
        new.join("\n  "),
        stale.len(),
        stale.join("\n  ")
    );
}

#[test]
fn corpus_every_file_parses_or_fails_cleanly_and_replans_to_nothing() {
    let src = SourceConfig {
        id: SourceId::parse("corpus").unwrap_or_else(|e| panic!("{e}")),
        source_type: SourceType::Rss,
        kind: SourceKind::Rss,
        url: base_of("feed"),
        tags: vec![],
        cadence: Cadence::Every(Duration::from_secs(60)),
        user_agent: None,
        headers: BTreeMap::new(),
        initial_items: None,
    };
    let mut parsed_ok = 0;
    for (name, path) in feed_files() {
        let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Whole, truncated at several points, and with a flipped byte: never a panic.
        for cut in [body.len() / 2, body.len() / 3, 1] {
            let _ = feed::parse_at(&body[..cut.min(body.len())], None, &base_of(&name), now());
        }
        let mut flipped = body.clone();
        if let Some(b) = flipped.get_mut(body.len() / 2) {
            *b ^= 0xA5;
        }
        let _ = feed::parse_at(&flipped, None, &base_of(&name), now());
        let parsed = match feed::parse_at(&body, None, &base_of(&name), now()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("refused {name}: {e}");
                continue;
            }
        };
        parsed_ok += 1;
        // Identity is deterministic: a second poll of the same document emits nothing.
        let first = normalize::plan(&src, parsed.items.clone(), &[], true, now());
        let known: Vec<ItemState> = first
            .events
            .iter()
            .enumerate()
            .map(|(i, ne)| ItemState {
                item_id: ne.event.item_id.clone(),
                version: ne.event.version,
                last_event_id: uuid::Uuid::from_u128(i as u128 + 1),
                fingerprint: ne.fingerprint.clone(),
                aliases: ne.aliases.clone(),
                seen_at: now().timestamp(),
            })
            .collect();
        let ids: BTreeSet<&str> = known.iter().map(|k| k.item_id.as_str()).collect();
        assert_eq!(ids.len(), known.len(), "{name}: item ids not unique");
        let again = feed::parse_at(&body, None, &base_of(&name), now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let second = normalize::plan(&src, again.items, &known, false, now());
        assert!(
            second.events.is_empty(),
            "{name}: re-poll emitted {} events",
            second.events.len()
        );
    }
    eprintln!("{parsed_ok} corpus feeds parsed");
    assert!(parsed_ok > 150, "only {parsed_ok} corpus feeds parsed");
}
