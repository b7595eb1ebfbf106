//! Live config reload: sources added, changed (epoch bumped, restarted)
//! and removed, applied to the running slots; the HTTP client rebuilt when
//! the fetch settings changed.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ctx::Ctx;
use super::slots::{jitter_within, start_slot, Slot, Slots};
use crate::config::{Config, FetchConfig};
use crate::fetch::Fetcher;
use crate::scheduler::{self, DueQueue};

/// A new context when `new` fetch settings differ from `running`; the old
/// one stays (with an error logged) if the new client cannot be built.
/// Polls in flight finish with the context they started with.
pub(super) fn rebuild_ctx(ctx: &mut Arc<Ctx>, running: &mut FetchConfig, new: &FetchConfig) {
    if new == running {
        return;
    }
    match Fetcher::new(new) {
        Ok(fetcher) => {
            *ctx = Arc::new(Ctx {
                store: ctx.store.clone(),
                fetcher,
            });
            *running = new.clone();
        }
        Err(e) => tracing::error!(
            error = %e,
            "config reload: cannot rebuild the HTTP client, keeping the old one"
        ),
    }
}

/// Applies the sources of `new`: unchanged ones keep running, changed ones
/// restart with the new config, new ones start, missing ones stop.
pub(super) fn apply_reload(
    ctx: &Arc<Ctx>,
    new: Config,
    slots: &mut Slots,
    queue: &mut DueQueue,
    upstreams: &mut JoinSet<()>,
    cancel: &CancellationToken,
) {
    let (mut added, mut changed, mut removed) = (0, 0, 0);
    let mut keep: HashSet<String> = HashSet::new();
    for src in new.sources {
        keep.insert(src.id.as_str().to_owned());
        let soon = || Instant::now() + jitter_within(scheduler::FIRST_POLL_SPREAD);
        match slots.find(src.id.as_str()) {
            Some(slot) => {
                let Some(s) = slots.get_mut(slot) else {
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
                start_slot(ctx, s, slot, soon(), queue, upstreams, cancel);
            }
            None => {
                added += 1;
                // Sources added later are not part of the first round.
                let slot = slots.insert(Slot {
                    reported: true,
                    ..Slot::new(src)
                });
                if let Some(s) = slots.get_mut(slot) {
                    start_slot(ctx, s, slot, soon(), queue, upstreams, cancel);
                }
            }
        }
    }
    slots.retain(
        |id| keep.contains(id),
        |slot, s| {
            removed += 1;
            queue.remove(slot);
            // Its per-source series goes with it (bounded by the config).
            ctx.store
                .metrics()
                .engine()
                .forget_source(s.src.id.as_str());
            if let Some(t) = s.upstream {
                t.cancel();
            }
        },
    );
    tracing::info!(added, changed, removed, "config reloaded");
}
