//! Unit tests of identity and versioning, replaying polls against an
//! in-memory copy of what the store writer would keep.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::config::{Cadence, SourceId, SourceKind};
use crate::event::{IdGenerator, SourceType};

fn src(initial_items: Option<usize>) -> SourceConfig {
    SourceConfig {
        id: SourceId::parse("test.feed").unwrap_or_else(|e| panic!("{e}")),
        source_type: SourceType::Rss,
        kind: SourceKind::Rss,
        url: url::Url::parse("https://example.org/feed.xml").unwrap_or_else(|e| panic!("{e}")),
        tags: vec!["t1".into()],
        cadence: Cadence::Every(Duration::from_secs(60)),
        user_agent: None,
        headers: BTreeMap::new(),
        initial_items,
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-07-01T12:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn item(guid: Option<&str>, url: Option<&str>, title: &str, content: &str) -> Item {
    Item {
        guid: guid.map(str::to_owned),
        url: url.map(str::to_owned),
        title: title.into(),
        content: content.into(),
        ..Item::default()
    }
}

/// What the store keeps between polls, updated the way the writer does.
struct Store {
    src: SourceConfig,
    items: Vec<ItemState>,
    index: HashMap<String, usize>,
    ids: IdGenerator,
    polls: usize,
    log: Vec<StreamEvent>,
}

impl Store {
    fn new(src: SourceConfig) -> Self {
        Self {
            src,
            items: Vec::new(),
            index: HashMap::new(),
            ids: IdGenerator::new(None),
            polls: 0,
            log: Vec::new(),
        }
    }

    /// Plans one poll, applies it, returns the events (with ids assigned).
    fn poll(&mut self, items: Vec<Item>) -> Vec<StreamEvent> {
        let p = plan(&self.src, items, &self.items, self.polls == 0, t0());
        self.polls += 1;
        let mut out = Vec::new();
        for ne in p.events {
            let mut ev = ne.event;
            ev.id = self.ids.next_id();
            self.upsert(ItemState {
                item_id: ev.item_id.clone(),
                version: ev.version,
                last_event_id: ev.id,
                fingerprint: ne.fingerprint,
                aliases: ne.aliases,
                seen_at: t0().timestamp(),
            });
            out.push(ev.clone());
            self.log.push(ev);
        }
        for t in p.touch {
            self.upsert(t);
        }
        out
    }

    fn upsert(&mut self, mut s: ItemState) {
        s.version = s.version.max(1); // as the store loads it
        match self.index.get(&s.item_id) {
            Some(&i) => self.items[i] = s,
            None => {
                self.index.insert(s.item_id.clone(), self.items.len());
                self.items.push(s);
            }
        }
    }
}

#[test]
fn new_item_is_version_1_with_every_field_filled() {
    let mut s = Store::new(src(None));
    let mut it = item(Some("g1"), Some("https://example.org/a"), "Title", "Body");
    it.published = Some(t0() - TimeDelta::hours(1));
    let evs = s.poll(vec![it]);
    assert_eq!(evs.len(), 1);
    let e = &evs[0];
    assert_eq!(
        (e.item_id.as_str(), e.version, e.supersedes),
        ("g1", 1, None)
    );
    assert_eq!(e.source_id, "test.feed");
    assert_eq!(e.source_type, SourceType::Rss);
    assert_eq!(e.url, "https://example.org/a");
    assert_eq!((e.title.as_str(), e.content.as_str()), ("Title", "Body"));
    assert_eq!(e.tags, vec!["t1".to_string()]);
    assert_eq!(e.fetched_at, t0());
    assert_eq!(e.published_at, Some(t0() - TimeDelta::hours(1)));
    assert_eq!(e.schema_version, 1);
}

#[test]
fn item_without_url_uses_the_source_url() {
    let mut s = Store::new(src(None));
    let evs = s.poll(vec![item(Some("g"), None, "T", "")]);
    assert_eq!(evs[0].url, "https://example.org/feed.xml");
}

#[test]
fn unchanged_item_emits_nothing() {
    let mut s = Store::new(src(None));
    let doc = || {
        vec![item(
            Some("g1"),
            Some("https://example.org/a"),
            "Title",
            "Body",
        )]
    };
    assert_eq!(s.poll(doc()).len(), 1);
    assert!(s.poll(doc()).is_empty());
    assert!(s.poll(doc()).is_empty());
}

#[test]
fn whitespace_quotes_and_tracking_params_are_not_a_version() {
    let mut s = Store::new(src(None));
    s.poll(vec![item(
        Some("g1"),
        Some("https://example.org/a"),
        "Say \"hi\"",
        "Read https://x.org/p?id=1 now.\n\nBye",
    )]);
    let evs = s.poll(vec![item(
        Some("g1"),
        Some("https://example.org/a?utm_source=rss#frag"),
        "  Say \u{201c}hi\u{201d} ",
        "Read   https://x.org/p?id=1&utm_campaign=z&fbclid=1 now.\nBye ",
    )]);
    assert!(evs.is_empty(), "{evs:?}");
}

#[test]
fn real_change_is_version_2_superseding_the_first_event() {
    let mut s = Store::new(src(None));
    let v1 = s.poll(vec![item(
        Some("g1"),
        Some("https://example.org/a"),
        "Title",
        "Body",
    )]);
    let v2 = s.poll(vec![item(
        Some("g1"),
        Some("https://example.org/a"),
        "Title (updated)",
        "Body",
    )]);
    assert_eq!(v2.len(), 1);
    assert_eq!(
        (v2[0].item_id.as_str(), v2[0].version, v2[0].supersedes),
        ("g1", 2, Some(v1[0].id))
    );
    let v3 = s.poll(vec![item(
        Some("g1"),
        Some("https://example.org/a"),
        "Title (updated)",
        "New body",
    )]);
    assert_eq!((v3[0].version, v3[0].supersedes), (3, Some(v2[0].id)));
}

#[test]
fn duplicate_guids_stay_distinct_items_and_are_stable() {
    let doc = || -> Vec<Item> {
        let mut v: Vec<Item> = (0..8)
            .map(|i| {
                item(
                    Some("same"),
                    Some(&format!("https://example.org/{i}")),
                    &format!("T{i}"),
                    "b",
                )
            })
            .collect();
        // Two identical twins share everything.
        v.push(item(
            Some("same"),
            Some("https://example.org/twin"),
            "Twin",
            "b",
        ));
        v.push(item(
            Some("same"),
            Some("https://example.org/twin"),
            "Twin",
            "b",
        ));
        v
    };
    let mut s = Store::new(src(None));
    let evs = s.poll(doc());
    assert_eq!(evs.len(), 10);
    let ids: HashSet<&str> = evs.iter().map(|e| e.item_id.as_str()).collect();
    assert_eq!(ids.len(), 10, "{ids:?}");
    assert!(ids.iter().all(|id| id.starts_with("same#")));
    assert!(s.poll(doc()).is_empty());
    // One of them changes: exactly that one gets version 2.
    let mut changed = doc();
    changed[3].content = "different".into();
    let evs2 = s.poll(changed);
    assert_eq!(evs2.len(), 1, "{evs2:?}");
    assert_eq!(evs2[0].title, "T3");
}

#[test]
fn churning_guids_do_not_flood() {
    let doc = |poll: u32, body: &str| -> Vec<Item> {
        (0..5)
            .map(|i| {
                item(
                    Some(&format!("rand-{poll}-{i}")),
                    Some(&format!(
                        "https://example.org/story/{i}?utm_source=feed{poll}"
                    )),
                    &format!("Story {i}"),
                    if i == 2 { body } else { "same" },
                )
            })
            .collect()
    };
    let mut s = Store::new(src(None));
    let first = s.poll(doc(1, "same"));
    assert_eq!(first.len(), 5);
    assert!(s.poll(doc(2, "same")).is_empty());
    assert!(s.poll(doc(3, "same")).is_empty());
    // A real change of story 2 under yet another guid: a new version of the same item.
    let evs = s.poll(doc(4, "edited"));
    assert_eq!(evs.len(), 1, "{evs:?}");
    let original = first
        .iter()
        .find(|e| e.title == "Story 2")
        .map(|e| (e.item_id.clone(), e.id));
    assert_eq!(
        Some((
            evs[0].item_id.clone(),
            evs[0].supersedes.unwrap_or_default()
        )),
        original
    );
    assert_eq!(evs[0].version, 2);
    assert_eq!(s.items.len(), 5);
}

#[test]
fn churning_guid_with_shared_links_matches_by_content() {
    // Every item links to the home page; only the content tells them apart.
    let doc = |poll: u32| -> Vec<Item> {
        (0..3)
            .map(|i| {
                item(
                    Some(&format!("{poll}-{i}")),
                    Some("https://example.org/"),
                    &format!("N{i}"),
                    "x",
                )
            })
            .collect()
    };
    let mut s = Store::new(src(None));
    assert_eq!(s.poll(doc(1)).len(), 3);
    assert!(s.poll(doc(2)).is_empty());
}

#[test]
fn items_without_any_id_are_stable() {
    let doc = || {
        vec![
            item(None, None, "Only a title", "and content"),
            item(None, None, "Another", ""),
            item(
                None,
                Some("https://example.org/x?utm_medium=a"),
                "Linked",
                "c",
            ),
        ]
    };
    let mut s = Store::new(src(None));
    let evs = s.poll(doc());
    assert_eq!(evs.len(), 3);
    assert!(evs.iter().any(|e| e.item_id == "https://example.org/x"));
    assert!(
        evs.iter()
            .filter(|e| e.item_id.starts_with(ALIAS_HASH))
            .count()
            == 2
    );
    assert!(s.poll(doc()).is_empty());
    // A linked item without guid that changes is a new version, not a new item.
    let mut changed = doc();
    changed[2].content = "changed".into();
    let evs = s.poll(changed);
    assert_eq!((evs.len(), evs[0].version), (1, 2));
}

#[test]
fn items_with_only_an_enclosure_are_identified_by_it() {
    let episode = |n: u32| Item {
        enclosure: Some(format!(
            "https://media.example.org/ep-{n}.mp3?utm_source=feed"
        )),
        ..Item::default()
    };
    let mut s = Store::new(src(None));
    // Two bare episodes: two items, ids from their enclosures, the enclosure
    // as the event's url.
    let evs = s.poll(vec![episode(2), episode(1)]);
    let ids: Vec<&str> = evs.iter().map(|e| e.item_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "https://media.example.org/ep-1.mp3",
            "https://media.example.org/ep-2.mp3"
        ]
    );
    assert_eq!(
        evs[0].url,
        "https://media.example.org/ep-1.mp3?utm_source=feed"
    );
    assert!(s.poll(vec![episode(2), episode(1)]).is_empty());
    // A one-episode feed whose episode is replaced: a new item, not matched
    // to the old one by its (empty) text.
    let mut one = Store::new(src(None));
    assert_eq!(one.poll(vec![episode(1)]).len(), 1);
    let evs = one.poll(vec![episode(2)]);
    assert_eq!(
        (evs.len(), evs[0].item_id.as_str(), evs[0].version),
        (1, "https://media.example.org/ep-2.mp3", 1)
    );
    // An episode with text keeps the fingerprint it always had.
    let mut titled = episode(3);
    titled.title = "Episode 3".into();
    let p = plan(&src(None), vec![titled], &[], true, t0());
    assert_eq!(p.events[0].fingerprint, fingerprint("Episode 3", ""));
    assert_eq!(
        p.events[0].event.item_id,
        "https://media.example.org/ep-3.mp3"
    );
}

#[test]
fn empty_items_are_skipped() {
    let mut s = Store::new(src(None));
    assert!(s.poll(vec![item(None, None, "", "  ")]).is_empty());
}

#[test]
fn initial_items_caps_the_first_poll_to_the_newest() {
    let doc = || -> Vec<Item> {
        (0..10)
            .map(|i| item(Some(&format!("g{i}")), None, &format!("T{i}"), ""))
            .collect() // g0 newest
    };
    let mut s = Store::new(src(Some(3)));
    let evs = s.poll(doc());
    let titles: Vec<&str> = evs.iter().map(|e| e.title.as_str()).collect();
    assert_eq!(titles, ["T2", "T1", "T0"]);
    assert!(
        s.poll(doc()).is_empty(),
        "held-back items must not be emitted later"
    );
    // A held-back item that changes is emitted, as its first version.
    let mut changed = doc();
    changed[8].content = "edited".into();
    let evs = s.poll(changed);
    assert_eq!(
        (
            evs.len(),
            evs[0].item_id.as_str(),
            evs[0].version,
            evs[0].supersedes
        ),
        (1, "g8", 1, None)
    );
}

#[test]
fn initial_items_zero_starts_from_now() {
    let mut s = Store::new(src(Some(0)));
    assert!(s.poll(vec![item(Some("a"), None, "A", "")]).is_empty());
    let evs = s.poll(vec![
        item(Some("b"), None, "B", ""),
        item(Some("a"), None, "A", ""),
    ]);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].item_id, "b");
}

#[test]
fn events_are_oldest_first() {
    let mut s = Store::new(src(None));
    let undated = vec![
        item(Some("c"), None, "C", ""),
        item(Some("b"), None, "B", ""),
        item(Some("a"), None, "A", ""),
    ];
    let order: Vec<String> = s.poll(undated).into_iter().map(|e| e.item_id).collect();
    assert_eq!(order, ["a", "b", "c"]);

    // Dates win over document order when every item has one.
    let mut s = Store::new(src(None));
    let mut dated = vec![
        item(Some("x"), None, "X", ""),
        item(Some("y"), None, "Y", ""),
        item(Some("z"), None, "Z", ""),
    ];
    dated[0].published = Some(t0() - TimeDelta::hours(5));
    dated[1].published = Some(t0() - TimeDelta::hours(1));
    dated[2].published = Some(t0() - TimeDelta::hours(3));
    let order: Vec<String> = s.poll(dated).into_iter().map(|e| e.item_id).collect();
    assert_eq!(order, ["x", "z", "y"]);
}

#[test]
fn guid_that_becomes_duplicated_keeps_its_history() {
    let mut s = Store::new(src(None));
    let a = item(Some("g"), Some("https://example.org/a"), "A", "a");
    let first = s.poll(vec![a.clone()]);
    // The publisher reuses the guid for a second, different item.
    let b = item(Some("g"), Some("https://example.org/b"), "B", "b");
    let evs = s.poll(vec![b, a]);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0].title, "B");
    assert_ne!(evs[0].item_id, first[0].item_id);
}

#[test]
fn aliases_are_recorded_and_touched_when_they_grow() {
    let mut s = Store::new(src(None));
    let evs = s.poll(vec![item(Some("g"), None, "T", "c")]);
    assert_eq!(evs.len(), 1);
    let p = plan(
        &s.src,
        vec![item(
            Some("g"),
            Some("https://example.org/now-linked"),
            "T",
            "c",
        )],
        &s.items,
        false,
        t0(),
    );
    assert!(p.events.is_empty());
    assert_eq!(p.touch.len(), 1);
    assert!(p.touch[0]
        .aliases
        .contains(&"link:https://example.org/now-linked".to_string()));
    assert_eq!(p.touch[0].last_event_id, evs[0].id);
}

#[test]
fn ten_thousand_items_plan_and_replan() {
    let doc = || -> Vec<Item> {
        (0..10_000)
            .map(|i| {
                item(
                    Some(&format!("g{i}")),
                    Some(&format!("https://example.org/{i}")),
                    &format!("T{i}"),
                    "body text",
                )
            })
            .collect()
    };
    let mut s = Store::new(src(None));
    assert_eq!(s.poll(doc()).len(), 10_000);
    assert!(s.poll(doc()).is_empty());
}

#[test]
fn an_unchanged_item_refreshes_its_state_once_a_day_so_it_is_never_pruned() {
    let s = src(None);
    let items = vec![item(
        Some("g1"),
        Some("https://example.org/1"),
        "One",
        "body",
    )];
    let first = plan(&s, items.clone(), &[], true, t0());
    assert_eq!(first.events.len(), 1);
    let ne = &first.events[0];
    let known_at = |seen_at: i64| ItemState {
        item_id: ne.event.item_id.clone(),
        version: 1,
        last_event_id: Uuid::from_u128(1),
        fingerprint: ne.fingerprint.clone(),
        aliases: ne.aliases.clone(),
        seen_at,
    };
    // Written an hour ago: nothing to write.
    let fresh = known_at((t0() - TimeDelta::hours(1)).timestamp());
    let p = plan(&s, items.clone(), &[fresh], false, t0());
    assert!(p.events.is_empty() && p.touch.is_empty(), "{:?}", p.touch);
    // Written two days ago: the same state is written again (new seen_at).
    let stale = known_at((t0() - TimeDelta::days(2)).timestamp());
    let p = plan(&s, items, std::slice::from_ref(&stale), false, t0());
    assert!(p.events.is_empty());
    assert_eq!(p.touch, vec![stale]);
}

#[test]
fn many_identical_twins_get_consecutive_suffixes() {
    // 2,000 copies of one item: ids `<id>#<twin>`, then -2 … -2000, in order
    // (a per-id counter, not a rescan from -2 for each copy).
    let items: Vec<Item> = (0..2000)
        .map(|_| item(Some("x"), None, "Same", "same"))
        .collect();
    let p = plan(&src(None), items, &[], false, t0());
    assert_eq!(p.events.len(), 2000);
    let mut ids: Vec<String> = p.events.iter().map(|e| e.event.item_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 2000, "ids must stay unique");
    assert!(p.events.iter().any(|e| e.event.item_id.ends_with("-2000")));
}

#[test]
fn identity_keys_cover_ids_links_and_content_hashes() {
    let items = vec![
        item(
            Some(" g1 "),
            Some("https://example.org/a?utm_source=x#top"),
            "A",
            "a",
        ),
        item(None, Some("https://example.org/b?utm_medium=y"), "B", "b"),
        item(None, None, "C", "c"),
    ];
    let keys = identity_keys(&items);
    let p = plan(&src(None), items, &[], false, t0());
    for ne in &p.events {
        assert!(
            keys.contains(&ne.event.item_id),
            "{} not in {keys:?}",
            ne.event.item_id
        );
    }
    assert!(keys.contains(&"g1".to_owned()));
}

/// Identifying once (for the lookup) and planning from that gives what
/// `identity_keys` and `plan` give, twins and shared ids included: the
/// keys of a renamed item also hold the id it had before.
#[test]
fn identified_items_give_the_same_keys_and_plan() {
    let items = vec![
        item(Some("dup"), Some("https://example.org/1"), "One", "1"),
        item(Some("dup"), Some("https://example.org/2"), "Two", "2"),
        item(Some("twin"), None, "Same", "same"),
        item(Some("twin"), None, "Same", "same"),
        item(Some("twin"), None, "Same", "same"),
        item(None, Some("https://example.org/b?utm_medium=y"), "B", "b"),
        item(None, None, "C", "c"),
    ];
    let identified = identify(items.clone());
    let keys = identified.keys();
    assert_eq!(keys, identity_keys(&items));
    for before in ["dup", "twin"] {
        assert!(
            keys.contains(&before.to_owned()),
            "{before} not in {keys:?}"
        );
    }
    let known = [ItemState {
        item_id: "c-old".into(),
        version: 1,
        last_event_id: Uuid::from_u128(1),
        fingerprint: "f".into(),
        aliases: vec![],
        seen_at: 0,
    }];
    let a = plan(&src(None), items, &known, false, t0());
    let b = plan_identified(&src(None), identified, &known, false, t0());
    let view = |p: &Plan| {
        p.events
            .iter()
            .map(|e| {
                (
                    e.event.item_id.clone(),
                    e.event.version,
                    e.fingerprint.clone(),
                    e.aliases.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(view(&a), view(&b));
    assert_eq!(a.events.len(), 7);
    assert_eq!(a.touch, b.touch);
}

#[test]
fn an_item_without_a_link_does_not_send_the_feeds_credentials_to_subscribers() {
    let mut s = src(None);
    s.url = url::Url::parse("https://bot:hunter2@example.org/feed.xml?token=s3cret&page=2")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut store = Store::new(s);
    let evs = store.poll(vec![item(Some("g1"), None, "No link", "text")]);
    assert_eq!(evs.len(), 1);
    assert_eq!(
        evs[0].url,
        "https://example.org/feed.xml?token=REDACTED&page=2"
    );
}
