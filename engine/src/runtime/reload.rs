//! Live config reload: sources added, changed (epoch bumped, restarted)
//! and removed, applied to the running slots.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ctx::Ctx;
use super::slots::{jitter_within, start_slot, Slot};
use crate::config::Config;
use crate::scheduler::{self, DueQueue};

pub(super) fn apply_reload(
    ctx: &Arc<Ctx>,
    new: Config,
    slots: &mut Vec<Option<Slot>>,
    by_id: &mut HashMap<String, usize>,
    queue: &mut DueQueue,
    upstreams: &mut JoinSet<()>,
    cancel: &CancellationToken,
) {
    let (mut added, mut changed, mut removed) = (0, 0, 0);
    let mut keep: HashMap<String, ()> = HashMap::new();
    for src in new.sources {
        let id = src.id.as_str().to_owned();
        keep.insert(id.clone(), ());
        match by_id.get(&id).copied() {
            Some(slot) => {
                let Some(s) = slots.get_mut(slot).and_then(Option::as_mut) else {
                    continue;
                };
                if *s.src == src {
                    continue;
                }
                changed += 1;
                s.replace(src);
                if let Some(t) = s.upstream.take() {
                    t.cancel();
                }
                // A poll of the old config still running keeps the slot busy
                // (no second poll of the same source alongside it); when it
                // finishes it schedules the new config at once.
                if s.polling && !s.streaming() {
                    continue;
                }
                start_slot(
                    ctx,
                    slots,
                    slot,
                    Instant::now() + jitter_within(scheduler::FIRST_POLL_SPREAD),
                    queue,
                    upstreams,
                    cancel,
                );
            }
            None => {
                added += 1;
                let slot = slots.len();
                slots.push(Some(Slot {
                    reported: true,
                    ..Slot::new(src)
                }));
                by_id.insert(id, slot);
                start_slot(
                    ctx,
                    slots,
                    slot,
                    Instant::now() + jitter_within(scheduler::FIRST_POLL_SPREAD),
                    queue,
                    upstreams,
                    cancel,
                );
            }
        }
    }
    by_id.retain(|id, slot| {
        if keep.contains_key(id) {
            return true;
        }
        removed += 1;
        queue.remove(*slot);
        if let Some(s) = slots.get_mut(*slot).and_then(Option::take) {
            if let Some(t) = s.upstream {
                t.cancel();
            }
        }
        false
    });
    tracing::info!(added, changed, removed, "config reloaded");
}
