//! The subscriber index: each subscriber is filed under one dimension of its
//! filter, so an event visits only candidates, each at most once.

use std::collections::HashMap;
use std::sync::Arc;

use livestrom_engine::CommittedEvent;

use super::frame::{render_event, Frame};
use super::queue::Subscriber;
use crate::filter::{Filter, Lowered};

/// Where a subscriber is indexed (derived from its filter).
pub(super) enum IndexKeys {
    Sources,
    Tags,
    Types,
    All,
}

pub(super) struct Slot {
    pub(super) sub: Arc<Subscriber>,
    /// Sequence number of the last event that visited this slot (de-duplicates
    /// a subscriber indexed under several keys an event hits).
    pub(super) mark: u64,
}

#[derive(Default)]
pub(super) struct Registry {
    pub(super) slots: Vec<Option<Slot>>,
    pub(super) free: Vec<u32>,
    pub(super) count: usize,
    pub(super) all: Vec<u32>,
    pub(super) by_source: HashMap<String, Vec<u32>>,
    pub(super) by_prefix: HashMap<String, Vec<u32>>,
    pub(super) by_tag: HashMap<String, Vec<u32>>,
    pub(super) by_type: [Vec<u32>; 4],
}

fn index_keys(f: &Filter) -> IndexKeys {
    if !f.sources.is_empty() || !f.prefixes.is_empty() {
        IndexKeys::Sources
    } else if !f.tags.is_empty() {
        IndexKeys::Tags
    } else if !f.types.is_empty() {
        IndexKeys::Types
    } else {
        IndexKeys::All
    }
}

fn remove_from(list: &mut Vec<u32>, slot: u32) {
    if let Some(i) = list.iter().position(|s| *s == slot) {
        list.swap_remove(i);
    }
}

fn remove_keyed(map: &mut HashMap<String, Vec<u32>>, key: &str, slot: u32) {
    if let Some(list) = map.get_mut(key) {
        remove_from(list, slot);
        if list.is_empty() {
            map.remove(key);
        }
    }
}

impl Registry {
    pub(super) fn insert(&mut self, sub: Arc<Subscriber>) -> u32 {
        let f = sub.filter.clone();
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(Slot { sub, mark: 0 });
                s
            }
            None => {
                self.slots.push(Some(Slot { sub, mark: 0 }));
                (self.slots.len() - 1) as u32
            }
        };
        self.count += 1;
        match index_keys(&f) {
            IndexKeys::Sources => {
                for s in &f.sources {
                    self.by_source.entry(s.clone()).or_default().push(slot);
                }
                for p in &f.prefixes {
                    self.by_prefix.entry(p.clone()).or_default().push(slot);
                }
            }
            IndexKeys::Tags => {
                for t in &f.tags {
                    self.by_tag.entry(t.clone()).or_default().push(slot);
                }
            }
            IndexKeys::Types => {
                for t in &f.types {
                    self.by_type[t.as_index()].push(slot);
                }
            }
            IndexKeys::All => self.all.push(slot),
        }
        slot
    }

    /// Removes `sub` from `slot` (no-op when the slot was already freed and
    /// perhaps reused by another subscriber).
    pub(super) fn remove(&mut self, slot: u32, sub: &Arc<Subscriber>) {
        let Some(cell) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if !cell.as_ref().is_some_and(|s| Arc::ptr_eq(&s.sub, sub)) {
            return;
        }
        let Some(entry) = cell.take() else {
            return;
        };
        let f = &entry.sub.filter;
        match index_keys(f) {
            IndexKeys::Sources => {
                for s in &f.sources {
                    remove_keyed(&mut self.by_source, s, slot);
                }
                for p in &f.prefixes {
                    remove_keyed(&mut self.by_prefix, p, slot);
                }
            }
            IndexKeys::Tags => {
                for t in &f.tags {
                    remove_keyed(&mut self.by_tag, t, slot);
                }
            }
            IndexKeys::Types => {
                for t in &f.types {
                    remove_from(&mut self.by_type[t.as_index()], slot);
                }
            }
            IndexKeys::All => remove_from(&mut self.all, slot),
        }
        self.free.push(slot);
        self.count -= 1;
    }

    /// Offers one event to every candidate subscriber.
    pub(super) fn fan_out(&mut self, ev: &CommittedEvent, seq: u64) {
        let Registry {
            slots,
            all,
            by_source,
            by_prefix,
            by_tag,
            by_type,
            ..
        } = self;
        let e = &ev.event;
        let mut cx = Offer {
            ev,
            seq,
            frame: None,
            lowered: None,
            dead: Vec::new(),
        };
        for &s in all.iter() {
            cx.visit(slots, s);
        }
        for &s in &by_type[e.source_type.as_index()] {
            cx.visit(slots, s);
        }
        if let Some(list) = by_source.get(e.source_id.as_str()) {
            for &s in list {
                cx.visit(slots, s);
            }
        }
        if !by_prefix.is_empty() {
            for (i, b) in e.source_id.bytes().enumerate() {
                if b == b'.' {
                    if let Some(list) = by_prefix.get(&e.source_id[..=i]) {
                        for &s in list {
                            cx.visit(slots, s);
                        }
                    }
                }
            }
        }
        if !by_tag.is_empty() {
            for t in &e.tags {
                if let Some(list) = by_tag.get(t.as_str()) {
                    for &s in list {
                        cx.visit(slots, s);
                    }
                }
            }
        }
        for (slot, sub) in cx.dead {
            self.remove(slot, &sub);
        }
    }
}

/// One event being offered: its frame and lowercased text, built on first need.
struct Offer<'a> {
    ev: &'a CommittedEvent,
    seq: u64,
    frame: Option<Frame>,
    lowered: Option<Lowered>,
    /// Live subscribers that overflowed on this event (deregistered after it).
    dead: Vec<(u32, Arc<Subscriber>)>,
}

impl Offer<'_> {
    fn visit(&mut self, slots: &mut [Option<Slot>], s: u32) {
        let Some(Some(slot)) = slots.get_mut(s as usize) else {
            return;
        };
        if slot.mark == self.seq {
            return;
        }
        slot.mark = self.seq;
        let f = &slot.sub.filter;
        let e = &self.ev.event;
        if !f.matches_source(&e.source_id, e.source_type)
            || !f.matches_tags(e.tags.iter().map(String::as_str))
        {
            return;
        }
        if !f.keywords.is_empty() {
            let l = self
                .lowered
                .get_or_insert_with(|| Lowered::new(&e.title, &e.content));
            if !f.matches_keywords(l) {
                return;
            }
        }
        let ev = self.ev;
        let seq = self.seq;
        let frame = self.frame.get_or_insert_with(|| Frame {
            id: ev.event.id,
            seq,
            bytes: render_event(ev.event.id, ev.event.source_type, &ev.json),
            committed_ms: ev.event.emitted_at.timestamp_millis(),
        });
        if slot.sub.push(frame) {
            self.dead.push((s, slot.sub.clone()));
        }
    }
}
