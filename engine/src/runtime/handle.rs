//! Talking to a running engine: [`EngineHandle::poll_now`] and the command
//! channel the runtime's loop reads.

use tokio::sync::{mpsc, oneshot};

/// Commands to a running engine.
#[derive(Debug)]
pub(super) enum Command {
    /// Poll a source now (after its in-flight poll, if any); replies with its outcome.
    PollNow(String, oneshot::Sender<Result<(), String>>),
}

/// Talks to a running engine: created by [`handle`], passed to [`run`].
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
}

/// The receiving side of an [`EngineHandle`], given to [`run`].
#[derive(Debug)]
pub struct Commands {
    pub(super) rx: mpsc::Receiver<Command>,
}

/// A handle and the command stream for [`run`].
pub fn handle() -> (EngineHandle, Commands) {
    let (tx, rx) = mpsc::channel(64);
    (EngineHandle { tx }, Commands { rx })
}

impl EngineHandle {
    /// Polls `source_id` now and waits for the result to be committed. If a
    /// poll of it is in flight, a fresh one starts right after it. Streaming
    /// firehoses cannot be polled.
    pub async fn poll_now(&self, source_id: &str) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::PollNow(source_id.to_owned(), tx))
            .await
            .map_err(|_| "the engine is not running".to_owned())?;
        rx.await
            .map_err(|_| "the engine stopped before the poll finished".to_owned())?
    }
}
