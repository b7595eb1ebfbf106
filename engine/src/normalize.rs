//! Identity and versioning: decides which parsed items are new, changed
//! (significantly) or unchanged, and builds the events to store.
//!
//! The exact rules are in docs/NORMALISATION.md; in short:
//! - identity: upstream guid/id, else canonical link, else canonical
//!   enclosure URL, else `hash:` of the significant title+content; duplicates within one document are split
//!   deterministically (`<key>#<12 hex>`, then `-2`, `-3` for identical twins);
//! - an item whose id is unknown but whose alias (`link:<canonical link>` or
//!   `hash:<fingerprint>`) names exactly one known item, unclaimed this poll,
//!   and is unique within the document, *is* that item (churning guids);
//! - significance: a fingerprint of the significant title + content; a
//!   changed fingerprint is version n+1 superseding the previous event;
//! - events are ordered oldest first; the first poll can be capped to the
//!   newest `initial_items` new items, the rest are remembered silently.
//!
//! Work is linear in items + known items (hash maps, one SHA-256 per item).

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::SourceConfig;
use crate::event::StreamEvent;
use crate::sources::Item;
use crate::store::{ItemState, NewEvent, SEEN_REFRESH};

pub mod canonical;

use canonical::{canonical_link, significant_text};

/// Prefix of a canonical-link alias.
pub const ALIAS_LINK: &str = "link:";
/// Prefix of a content-hash alias (and of item ids derived from content).
pub const ALIAS_HASH: &str = "hash:";
/// At most this many aliases are kept per item (current ones first).
pub const MAX_ALIASES: usize = 6;

/// What one poll's items amount to.
#[derive(Debug, Default)]
pub struct Plan {
    /// Events to store, oldest first.
    pub events: Vec<NewEvent>,
    /// Known items to re-store without an event (e.g. new aliases), and items
    /// held back by `initial_items` (stored with version 0 and a nil
    /// `last_event_id`: seen, never emitted).
    pub touch: Vec<ItemState>,
}

/// Plans the events for one poll. `known` is the source's stored item state;
/// `first_poll` is true until the source's first successful poll is stored.
pub fn plan(
    src: &SourceConfig,
    items: Vec<Item>,
    known: &[ItemState],
    first_poll: bool,
    fetched_at: DateTime<Utc>,
) -> Plan {
    plan_identified(src, identify(items), known, first_poll, fetched_at)
}

/// Items with their identities worked out once (ids, made unique within
/// the batch; fingerprints; aliases): what [`Identified::keys`] lists for a
/// lookup and [`plan_identified`] then matches against stored state.
pub struct Identified {
    prepared: Vec<Prepared>,
    /// Ids that de-duplication changed, as they were before it.
    renamed: Vec<String>,
}

/// Works out the identities of a poll's items (document order, as for [`plan`]).
pub fn identify(items: Vec<Item>) -> Identified {
    let mut prepared: Vec<Prepared> = items
        .into_iter()
        .enumerate()
        .filter_map(|(i, it)| prepare(i, it))
        .collect();
    let renamed = disambiguate(&mut prepared);
    Identified { prepared, renamed }
}

impl Identified {
    /// Every key [`plan_identified`] can match these items to stored item
    /// state by (see [`identity_keys`]).
    pub fn keys(&self) -> Vec<String> {
        keys_of(&self.prepared, &self.renamed)
    }
}

/// [`plan`] of items identified already.
pub fn plan_identified(
    src: &SourceConfig,
    identified: Identified,
    known: &[ItemState],
    first_poll: bool,
    fetched_at: DateTime<Utc>,
) -> Plan {
    let prepared = identified.prepared;
    let matched = match_known(&prepared, known);

    let mut plan = Plan::default();
    let mut candidates: Vec<Candidate> = Vec::new();
    let refresh_before = fetched_at.timestamp() - SEEN_REFRESH.as_secs() as i64;
    for (idx, (p, m)) in prepared.iter().zip(&matched).enumerate() {
        let Some(k) = m.map(|ki| &known[ki]) else {
            candidates.push(Candidate {
                idx,
                item_id: p.item_id.clone(),
                version: 1,
                supersedes: None,
                aliases: p.aliases.clone(),
                new: true,
            });
            continue;
        };
        let aliases = merge_aliases(&p.aliases, &k.aliases);
        if k.fingerprint == p.fingerprint {
            if p.aliases.iter().any(|a| !k.aliases.contains(a)) {
                plan.touch.push(ItemState {
                    aliases,
                    ..k.clone()
                });
            } else if k.seen_at < refresh_before {
                // Still in the feed: keep its state from being pruned.
                plan.touch.push(k.clone());
            }
            continue;
        }
        let (version, supersedes) = if k.last_event_id.is_nil() {
            (1, None)
        } else {
            (k.version.saturating_add(1), Some(k.last_event_id))
        };
        candidates.push(Candidate {
            idx,
            item_id: k.item_id.clone(),
            version,
            supersedes,
            aliases,
            new: false,
        });
    }

    order_oldest_first(&mut candidates, &prepared);

    if first_poll {
        if let Some(cap) = src.initial_items {
            hold_back_oldest_new(&mut candidates, cap, &prepared, &mut plan.touch);
        }
    }

    let mut prepared: Vec<Option<Prepared>> = prepared.into_iter().map(Some).collect();
    for c in candidates {
        let Some(p) = prepared.get_mut(c.idx).and_then(Option::take) else {
            continue;
        };
        plan.events.push(to_event(src, p, c, fetched_at));
    }
    plan
}

/// Every key [`plan`] can match these items to stored item state by: their
/// item ids (after de-duplication), guids, canonical links and content-hash
/// ids. A caller that loads known items selectively (firehoses, whose item
/// tables are large) must look up exactly these, or it would treat items it
/// already stored as new.
pub fn identity_keys(items: &[Item]) -> Vec<String> {
    // Borrowed: only the identities are needed, not copies of the items.
    let mut prepared: Vec<Prepared<&Item>> = items
        .iter()
        .enumerate()
        .filter_map(|(i, it)| prepare(i, it))
        .collect();
    let renamed = disambiguate(&mut prepared);
    keys_of(&prepared, &renamed)
}

/// The keys of [`identity_keys`]: the ids (also as they were before
/// de-duplication), the aliases and the canonical links.
fn keys_of<I>(prepared: &[Prepared<I>], renamed: &[String]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::with_capacity(prepared.len() * 4 + renamed.len());
    keys.extend(renamed.iter().cloned());
    for p in prepared {
        keys.push(p.item_id.clone());
        for a in &p.aliases {
            if let Some(link) = a.strip_prefix(ALIAS_LINK) {
                keys.push(link.to_owned());
            }
            keys.push(a.clone());
        }
    }
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The significance fingerprint of a title and content (hex, 128 bits):
/// equal for texts that differ only in whitespace, typographic quotes or
/// tracking parameters of URLs inside them.
pub fn fingerprint(title: &str, content: &str) -> String {
    fingerprint_sig(&significant_text(title), &significant_text(content))
}

/// An item (owned, or borrowed when only its identity is wanted) with its
/// identity keys computed.
struct Prepared<I = Item> {
    item: I,
    /// Position in the document (0 = first, usually newest).
    doc_idx: usize,
    /// Identity before matching against known items.
    item_id: String,
    fingerprint: String,
    /// `hash:` first (stronger evidence), then `link:` if the item has one.
    aliases: Vec<String>,
}

/// One event to be emitted, before ordering.
struct Candidate {
    idx: usize,
    item_id: String,
    version: u32,
    supersedes: Option<Uuid>,
    aliases: Vec<String>,
    new: bool,
}

/// What an item's identity is worked out from: its canonical link and
/// enclosure, and its significant title and content.
struct Significant {
    canon: Option<String>,
    enclosure: Option<String>,
    title: String,
    content: String,
}

impl Significant {
    fn of(it: &Item) -> Self {
        Significant {
            canon: it.url.as_deref().and_then(canonical_link),
            enclosure: it.enclosure.as_deref().and_then(canonical_link),
            title: significant_text(&it.title),
            content: significant_text(&it.content),
        }
    }

    /// The enclosure of an item without any text (a bare podcast
    /// enclosure), which tells it apart; items with text keep the
    /// fingerprint and twin key they always had, so stored state stays
    /// valid.
    fn bare_enclosure(&self) -> Option<&str> {
        self.enclosure
            .as_deref()
            .filter(|_| self.title.is_empty() && self.content.is_empty())
    }

    /// Short hash of link + title + content (and the bare enclosure), to
    /// split ids several items of a document share.
    fn twin_key(&self) -> String {
        let canon = self.canon.as_deref().unwrap_or("");
        match self.bare_enclosure() {
            Some(enc) => short_hash(&[canon, &self.title, &self.content, enc]),
            None => short_hash(&[canon, &self.title, &self.content]),
        }
    }
}

fn prepare<I: std::borrow::Borrow<Item>>(doc_idx: usize, item: I) -> Option<Prepared<I>> {
    let it = item.borrow();
    let guid = it
        .guid
        .as_deref()
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned);
    let sig = Significant::of(it);
    if guid.is_none()
        && sig.canon.is_none()
        && sig.enclosure.is_none()
        && sig.title.is_empty()
        && sig.content.is_empty()
    {
        return None; // nothing to identify or show
    }
    let fingerprint = fingerprint_parts(&sig.title, &sig.content, sig.bare_enclosure());
    let hash_alias = format!("{ALIAS_HASH}{fingerprint}");
    let mut aliases = vec![hash_alias.clone()];
    if let Some(c) = &sig.canon {
        aliases.push(format!("{ALIAS_LINK}{c}"));
    }
    let item_id = guid.or(sig.canon).or(sig.enclosure).unwrap_or(hash_alias);
    Some(Prepared {
        item,
        doc_idx,
        item_id,
        fingerprint,
        aliases,
    })
}

fn fingerprint_sig(title: &str, content: &str) -> String {
    fingerprint_parts(title, content, None)
}

/// The fingerprint of significant title and content, and of the enclosure
/// for items that have no text at all.
fn fingerprint_parts(title: &str, content: &str, enclosure: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(b"title\0");
    h.update(title.as_bytes());
    h.update(b"\0content\0");
    h.update(content.as_bytes());
    if let Some(enc) = enclosure {
        h.update(b"\0enclosure\0");
        h.update(enc.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..6])
}

/// Makes item ids unique within the document: ids shared by several items
/// become `<id>#<twin_key>`; identical twins then get `-2`, `-3`… in
/// document order. Deterministic, so a re-poll maps each to the same id.
/// Returns the ids it changed, as they were.
fn disambiguate<I: std::borrow::Borrow<Item>>(prepared: &mut [Prepared<I>]) -> Vec<String> {
    let mut counts: HashMap<&str, usize> = HashMap::with_capacity(prepared.len());
    for p in prepared.iter() {
        *counts.entry(p.item_id.as_str()).or_default() += 1;
    }
    let shared: HashSet<String> = counts
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, _)| k.to_owned())
        .collect();
    let mut taken: HashSet<String> = HashSet::with_capacity(prepared.len());
    // Next suffix to try per id: k identical twins cost O(k), not O(k²).
    let mut next_suffix: HashMap<String, u32> = HashMap::new();
    let mut renamed = Vec::new();
    for p in prepared.iter_mut() {
        if shared.contains(&p.item_id) {
            // Only items whose ids clash need it: worked out again here,
            // not kept for all.
            let id = format!(
                "{}#{}",
                p.item_id,
                Significant::of(p.item.borrow()).twin_key()
            );
            renamed.push(std::mem::replace(&mut p.item_id, id));
        }
        if !taken.insert(p.item_id.clone()) {
            let n = next_suffix.entry(p.item_id.clone()).or_insert(2);
            let id = loop {
                let candidate = format!("{}-{n}", p.item_id);
                *n += 1;
                if taken.insert(candidate.clone()) {
                    break candidate;
                }
            };
            renamed.push(std::mem::replace(&mut p.item_id, id));
        }
    }
    renamed
}

/// For each prepared item, the index of the known item it is, if any.
/// Direct id matches first (they claim their known item); then, for the
/// rest, an alias that is unique in this document and names exactly one
/// known item not claimed yet.
fn match_known(prepared: &[Prepared], known: &[ItemState]) -> Vec<Option<usize>> {
    let by_id: HashMap<&str, usize> = known
        .iter()
        .enumerate()
        .map(|(i, k)| (k.item_id.as_str(), i))
        .collect();
    let mut owner: HashMap<&str, Option<usize>> = HashMap::with_capacity(known.len() * 2);
    for (i, k) in known.iter().enumerate() {
        for a in &k.aliases {
            owner
                .entry(a.as_str())
                .and_modify(|o| {
                    if *o != Some(i) {
                        *o = None
                    }
                })
                .or_insert(Some(i));
        }
    }
    let mut in_doc: HashMap<&str, u32> = HashMap::with_capacity(prepared.len() * 2);
    for p in prepared {
        for a in &p.aliases {
            *in_doc.entry(a.as_str()).or_default() += 1;
        }
    }

    let mut claimed = vec![false; known.len()];
    let mut out: Vec<Option<usize>> = prepared
        .iter()
        .map(|p| {
            let hit = by_id.get(p.item_id.as_str()).copied();
            if let Some(i) = hit {
                claimed[i] = true;
            }
            hit
        })
        .collect();
    for (p, slot) in prepared.iter().zip(out.iter_mut()) {
        if slot.is_some() {
            continue;
        }
        let hit = p.aliases.iter().find_map(|a| {
            let i = (*owner.get(a.as_str())?)?;
            (in_doc.get(a.as_str()) == Some(&1) && !claimed[i]).then_some(i)
        });
        if let Some(i) = hit {
            claimed[i] = true;
            *slot = Some(i);
        }
    }
    out
}

/// Current aliases first, then older ones still worth keeping, capped.
fn merge_aliases(current: &[String], old: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(MAX_ALIASES);
    for a in current.iter().chain(old) {
        if out.len() == MAX_ALIASES {
            break;
        }
        if !out.contains(a) {
            out.push(a.clone());
        }
    }
    out
}

/// Oldest first: by date when every candidate has one (ties: later in the
/// document = older), else reverse document order (feeds list newest first).
fn order_oldest_first(candidates: &mut [Candidate], prepared: &[Prepared]) {
    let all_dated = candidates
        .iter()
        .all(|c| prepared[c.idx].item.published.is_some());
    if all_dated {
        candidates.sort_by_key(|c| {
            (
                prepared[c.idx].item.published,
                Reverse(prepared[c.idx].doc_idx),
            )
        });
    } else {
        candidates.sort_by_key(|c| Reverse(prepared[c.idx].doc_idx));
    }
}

/// First poll with `initial_items = cap`: keeps the `cap` newest new items;
/// older new items are stored as seen-never-emitted so the next poll does
/// not emit them either. Changed known items are never held back.
fn hold_back_oldest_new(
    candidates: &mut Vec<Candidate>,
    cap: usize,
    prepared: &[Prepared],
    touch: &mut Vec<ItemState>,
) {
    let new_total = candidates.iter().filter(|c| c.new).count();
    let mut to_drop = new_total.saturating_sub(cap);
    if to_drop == 0 {
        return;
    }
    candidates.retain(|c| {
        if !c.new || to_drop == 0 {
            return true;
        }
        to_drop -= 1;
        touch.push(ItemState {
            item_id: c.item_id.clone(),
            version: 0,
            last_event_id: Uuid::nil(),
            fingerprint: prepared[c.idx].fingerprint.clone(),
            aliases: c.aliases.clone(),
            seen_at: 0,
        });
        false
    });
}

fn to_event(src: &SourceConfig, p: Prepared, c: Candidate, fetched_at: DateTime<Utc>) -> NewEvent {
    // The item's page, else its attached file, else the feed — without the
    // credentials a configured URL may carry (every subscriber sees it).
    let url = p
        .item
        .url
        .clone()
        .or_else(|| p.item.enclosure.clone())
        .unwrap_or_else(|| crate::redact::public_url(&src.url));
    NewEvent {
        event: StreamEvent {
            id: Uuid::nil(),
            schema_version: 1,
            source_id: src.id.as_str().to_owned(),
            source_type: src.source_type,
            url,
            title: p.item.title,
            content: p.item.content,
            tags: src.tags.clone(),
            fetched_at,
            emitted_at: fetched_at,
            item_id: c.item_id,
            version: c.version,
            supersedes: c.supersedes,
            diff: p.item.diff,
            added: p.item.added,
            published_at: p.item.published,
        },
        fingerprint: p.fingerprint,
        aliases: c.aliases,
    }
}

#[cfg(test)]
mod tests;
