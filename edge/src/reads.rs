//! The blocking reads requests make of the event log and the sources'
//! state, run on at most [`MAX_READS`] blocking threads at once.
//!
//! The log's seams are blocking (SQLite, or JetStream through
//! `Handle::block_on`), so every request's read runs on tokio's blocking
//! pool. Unbounded, a crowd of requests arriving together — 200 subscribers
//! connecting at start-up, a reconnect storm after a restart — starts a
//! blocking thread per read up to the pool's limit (64, `src/main.rs`), and
//! each opens a SQLite connection of its own beyond the store's 8 pooled
//! ones. Those threads live on idle for 10 s, and each keeps its own
//! allocator cache: a process that met such a crowd once stays ~8 MB
//! larger, and its peak under the next burst is ~15 MB higher
//! (docs/PERFORMANCE.md, "Burst: a bounded number of reads").
//!
//! Here a request waits for a slot as an async task (a few hundred bytes)
//! instead of as a thread. The hub's own catch-up reads are not bounded by
//! this: live delivery to every subscriber must not wait behind replays.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::{JoinError, JoinHandle};

/// Most request reads running at once: the store's pool of read
/// connections, so a crowd of requests never opens connections beyond it.
pub const MAX_READS: usize = 8;

/// The bound on request reads. Cheap to clone; clones share the bound.
#[derive(Clone)]
pub struct Reads {
    slots: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
}

impl Default for Reads {
    fn default() -> Self {
        Self::new(MAX_READS)
    }
}

impl Reads {
    /// At most `max` reads at once (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.max(1))),
            waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs `read` on a blocking thread once a slot is free, and waits for it.
    pub async fn run<T, F>(&self, read: F) -> Result<T, JoinError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let queued = Queued::new(&self.waiting);
        // The semaphore is never closed: `slot` is always Ok.
        let slot = Arc::new(self.slots.clone().acquire_owned().await);
        drop(queued);
        // The slot is shared by the thread and this task, and freed when
        // both are done with it: if the request is dropped, when the read
        // ends; otherwise once its result is taken here, by when the thread
        // is idle again and the next read reuses it instead of starting one.
        let held = slot.clone();
        let out = tokio::task::spawn_blocking(move || {
            let _slot = held;
            read()
        })
        .await;
        drop(slot);
        out
    }

    /// [`Reads::run`], started now rather than when the handle is awaited
    /// (a read made ahead of need); dropping the handle does not cancel it.
    pub fn spawn<T, F>(&self, read: F) -> JoinHandle<Result<T, JoinError>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let this = self.clone();
        tokio::spawn(async move { this.run(read).await })
    }

    /// Reads waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// Counts one read as waiting until it is dropped (also when the request
/// is dropped while it waits).
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn new(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::Relaxed);
        Self(waiting)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::sync::{Condvar, Mutex, PoisonError};
    use std::time::Duration;

    use super::*;

    /// Reads that hold their thread until the gate opens, counting how many
    /// run at once.
    #[derive(Default)]
    struct Gate {
        open: Mutex<bool>,
        opened: Condvar,
        running: AtomicUsize,
        most: AtomicUsize,
    }

    impl Gate {
        fn pass(&self) {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            while !*open {
                open = self
                    .opened
                    .wait(open)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
        }

        fn open(&self) {
            *self.open.lock().unwrap_or_else(PoisonError::into_inner) = true;
            self.opened.notify_all();
        }
    }

    /// Opens the gate when dropped, so a failing test does not leave its
    /// reads blocked (the runtime waits for them when it is dropped).
    struct OpensOnDrop(Arc<Gate>);

    impl Drop for OpensOnDrop {
        fn drop(&mut self) {
            self.0.open();
        }
    }

    /// Waits for `done` to hold, checking every millisecond, for at most 30 s.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let wait = async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .is_err()
        {
            panic!("timed out waiting for {what}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_max_reads_hold_a_thread_and_the_rest_wait_as_tasks(
    ) -> Result<(), Box<dyn Error>> {
        let reads = Reads::new(2);
        let gate = Arc::new(Gate::default());
        let _open = OpensOnDrop(gate.clone());
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let g = gate.clone();
                reads.spawn(move || g.pass())
            })
            .collect();
        until("two reads running and four waiting", || {
            gate.running.load(Ordering::SeqCst) == 2 && reads.waiting() == 4
        })
        .await;
        gate.open();
        for h in handles {
            h.await??;
        }
        assert_eq!(gate.most.load(Ordering::SeqCst), 2);
        assert_eq!(reads.waiting(), 0);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_dropped_while_it_waits_leaves_no_trace() -> Result<(), Box<dyn Error>> {
        let reads = Reads::new(1);
        let gate = Arc::new(Gate::default());
        let _open = OpensOnDrop(gate.clone());
        let g = gate.clone();
        let holder = reads.spawn(move || g.pass());
        until("the slot taken", || {
            gate.running.load(Ordering::SeqCst) == 1
        })
        .await;
        {
            let mut waiting = std::pin::pin!(reads.run(|| 1));
            assert!(futures::poll!(waiting.as_mut()).is_pending());
            assert_eq!(reads.waiting(), 1);
        }
        assert_eq!(reads.waiting(), 0);
        gate.open();
        holder.await??;
        assert_eq!(reads.run(|| 2).await?, 2);
        Ok(())
    }

    #[tokio::test]
    async fn a_read_that_panics_is_an_error_and_frees_its_slot() -> Result<(), Box<dyn Error>> {
        let reads = Reads::new(1);
        let err = reads.run(|| panic!("a broken read")).await;
        assert!(err.is_err_and(|e| e.is_panic()));
        assert_eq!(reads.run(|| 3).await?, 3);
        Ok(())
    }
}
