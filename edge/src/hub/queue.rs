//! A subscriber's bounded queue: what the hub pushes, what its connection
//! drains, and what an overflow means.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::frame::Frame;
use crate::filter::Filter;

/// Outcome of draining a subscriber's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Frames (possibly none) were moved out; the queue is empty.
    Frames,
    /// Frames were moved out up to the byte budget and more remain queued:
    /// drain again without waiting for a wake-up (a push onto a queue that
    /// is not empty does not notify).
    Partial,
    /// The queue exceeded its byte bound since the last rearm; frames were dropped.
    Overflowed,
    /// The hub stopped; no more live events will come.
    Ended,
}

/// A subscriber's shared half: its filter and its queue.
pub(super) struct Subscriber {
    pub(super) filter: Arc<Filter>,
    pub(super) queue: Mutex<Queue>,
    pub(super) notify: Notify,
    /// Set when the queue overflows while live: the connection may be in
    /// the middle of writing an earlier chunk to a client that reads slowly,
    /// and must give up that write rather than finish it first
    /// ([`OverflowSignal`]). A flag and a notify inside the subscriber
    /// rather than a cancellation token of its own: one allocation less
    /// per stream.
    overflowed_live: AtomicBool,
    /// Wakes whoever waits on [`OverflowSignal::wait`] (`notify_waiters`:
    /// no permit is stored, the flag is the state).
    overflow: Notify,
}

/// Set once a subscriber's queue overflowed while it was live (its client
/// reads too slowly): the server gives up a write in progress on it.
#[derive(Clone)]
pub struct OverflowSignal(pub(super) Arc<Subscriber>);

impl OverflowSignal {
    /// Whether the queue overflowed while live.
    pub fn is_set(&self) -> bool {
        self.0.overflowed_live.load(Ordering::Acquire)
    }

    /// Resolves once the queue overflowed while live.
    pub async fn wait(&self) {
        loop {
            let notified = self.0.overflow.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check: a set between the check and the
            // await still wakes this waiter.
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

pub(super) struct Queue {
    /// Oldest first; a drain takes from the front.
    pub(super) frames: VecDeque<Frame>,
    pub(super) bytes: usize,
    pub(super) limit: usize,
    pub(super) overflowed: bool,
    pub(super) ended: bool,
    /// Set by the first successful drain (the connection is live): an
    /// overflow from then on disconnects, so the hub deregisters at once.
    pub(super) live: bool,
}

impl Subscriber {
    /// A subscriber with an empty queue bounded at `limit` bytes.
    pub(super) fn new(filter: Arc<Filter>, limit: usize) -> Self {
        Self {
            filter,
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                bytes: 0,
                limit,
                overflowed: false,
                ended: false,
                live: false,
            }),
            notify: Notify::new(),
            overflowed_live: AtomicBool::new(false),
            overflow: Notify::new(),
        }
    }

    /// Moves the oldest queued frames, up to `max_bytes` of them (at least
    /// one), into `out` (see `Subscription::drain`).
    pub(super) fn drain(&self, out: &mut Vec<Frame>, max_bytes: usize) -> Drained {
        let mut q = lock(&self.queue);
        if q.ended {
            return Drained::Ended;
        }
        if q.overflowed {
            return Drained::Overflowed;
        }
        q.live = true;
        if q.bytes <= max_bytes {
            out.extend(q.frames.drain(..));
            q.bytes = 0;
            return Drained::Frames;
        }
        let mut taken = 0;
        while let Some(len) = q.frames.front().map(|f| f.bytes.len()) {
            if taken > 0 && taken + len > max_bytes {
                break;
            }
            taken += len;
            out.extend(q.frames.pop_front());
        }
        q.bytes = q.bytes.saturating_sub(taken);
        if q.frames.is_empty() {
            Drained::Frames
        } else {
            Drained::Partial
        }
    }

    /// Clears an overflow and anything queued (see `Subscription::rearm`).
    pub(super) fn rearm(&self) {
        let mut q = lock(&self.queue);
        q.overflowed = false;
        q.frames.clear();
        q.bytes = 0;
    }

    /// Queues a frame; never blocks beyond the queue's own short lock.
    /// Returns true when the subscriber overflowed while live: the hub then
    /// drops it from the index (its connection ends at its next poll).
    pub(super) fn push(&self, frame: &Frame) -> bool {
        let mut q = lock(&self.queue);
        if q.overflowed || q.ended {
            return false;
        }
        let len = frame.bytes.len();
        // An empty queue takes any one frame, however large (an html page
        // can be bigger than the bound): the bound is on what piles up.
        if q.bytes > 0 && q.bytes + len > q.limit {
            q.overflowed = true;
            q.frames = VecDeque::new();
            q.bytes = 0;
            let live = q.live;
            drop(q);
            if live {
                self.overflowed_live.store(true, Ordering::Release);
                self.overflow.notify_waiters();
            }
            self.notify.notify_one();
            return live;
        }
        let was_empty = q.frames.is_empty();
        q.frames.push_back(frame.clone());
        q.bytes += len;
        drop(q);
        if was_empty {
            self.notify.notify_one();
        }
        false
    }

    pub(super) fn end(&self) {
        lock(&self.queue).ended = true;
        self.notify.notify_one();
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind
    // (queues, index lists); carrying on is safe.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
