//! Identity checks shared by every source kind's target: what `normalize`
//! makes of a parse must not depend on anything but the items.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use livestrom_engine::config::{Cadence, SourceConfig, SourceId, SourceKind};
use livestrom_engine::normalize;
use livestrom_engine::sources::Item;
use livestrom_engine::store::ItemState;
use livestrom_engine::SourceType;
use uuid::Uuid;

/// A source to plan items for (the kind only names the events' type).
pub fn source(source_type: SourceType, url: &url::Url) -> SourceConfig {
    SourceConfig {
        id: SourceId::parse("fuzz.source").unwrap_or_else(|e| panic!("fixed id: {e}")),
        source_type,
        kind: SourceKind::Rss,
        url: url.clone(),
        tags: vec!["fuzz".to_owned()],
        cadence: Cadence::Every(Duration::from_secs(60)),
        user_agent: None,
        headers: BTreeMap::new(),
        initial_items: None,
    }
}

/// Plans `items` as a first poll and checks:
/// - the plan is the same when done twice (ids, versions, fingerprints);
/// - item ids are unique within the poll;
/// - every event's item id is among [`normalize::identity_keys`] (what a
///   selective lookup of known items reads), and identifying the items once
///   ([`normalize::identify`]) gives the same keys and plan;
/// - a second poll of the same items, against the state the first one
///   stored, emits nothing.
pub fn check_items(src: &SourceConfig, items: &[Item]) {
    let now = crate::now();
    let first = normalize::plan(src, items.to_vec(), &[], true, now);
    let again = normalize::plan(src, items.to_vec(), &[], true, now);
    let summary = |p: &normalize::Plan| -> Vec<(String, u32, String, Vec<String>)> {
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
            .collect()
    };
    assert_eq!(
        summary(&first),
        summary(&again),
        "planning is not deterministic"
    );

    let ids: BTreeSet<&str> = first
        .events
        .iter()
        .map(|e| e.event.item_id.as_str())
        .collect();
    assert_eq!(
        ids.len(),
        first.events.len(),
        "item ids are not unique: {ids:?}"
    );

    let identified = normalize::identify(items.to_vec());
    assert_eq!(
        identified.keys(),
        normalize::identity_keys(items),
        "identifying once gives other lookup keys"
    );
    let planned = normalize::plan_identified(src, identified, &[], true, now);
    assert_eq!(
        summary(&planned),
        summary(&first),
        "planning identified items differs"
    );
    let keys: BTreeSet<String> = normalize::identity_keys(items).into_iter().collect();
    for id in &ids {
        assert!(keys.contains(*id), "item id {id:?} is not an identity key");
    }

    let known: Vec<ItemState> = first
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| ItemState {
            item_id: e.event.item_id.clone(),
            version: e.event.version,
            last_event_id: Uuid::from_u128(i as u128 + 1),
            fingerprint: e.fingerprint.clone(),
            aliases: e.aliases.clone(),
            seen_at: now.timestamp(),
        })
        .collect();
    let second = normalize::plan(src, items.to_vec(), &known, false, now);
    let emitted: Vec<&str> = second
        .events
        .iter()
        .map(|e| e.event.item_id.as_str())
        .collect();
    assert!(
        emitted.is_empty(),
        "a re-poll of the same items emitted {emitted:?}"
    );
}
