//! Talking to a running engine: [`EngineHandle::poll_now`] and the command
//! channel the runtime's loop reads.

use tokio::sync::{mpsc, oneshot};

use super::poll::PollFailed;

/// Commands to a running engine.
#[derive(Debug)]
pub(super) enum Command {
    /// Poll a source now (after its in-flight poll, if any); replies with its outcome.
    PollNow(String, Reply),
}

/// Where the outcome of a `poll_now` goes.
pub(super) type Reply = oneshot::Sender<Result<(), PollNowError>>;

/// Why [`EngineHandle::poll_now`] did not end in a stored, successful poll.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PollNowError {
    /// The engine is not running (its command channel is closed).
    #[error("the engine is not running")]
    NotRunning,
    /// The engine stopped before the poll finished.
    #[error("the engine stopped before the poll finished")]
    Stopped,
    /// No source with this id in the running config.
    #[error("no source `{0}` in the running config")]
    UnknownSource(String),
    /// The source is a streaming firehose: it is read, not polled.
    #[error("`{0}` is a streaming firehose; it is not polled")]
    Streaming(String),
    /// The poll ran and failed; the same text is the source's `last_error`.
    #[error(transparent)]
    Failed(#[from] PollFailed),
}

/// Talks to a running engine: created by [`handle`], passed to [`run`](crate::runtime::run).
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
}

/// The receiving side of an [`EngineHandle`], given to [`run`](crate::runtime::run).
#[derive(Debug)]
pub struct Commands {
    pub(super) rx: mpsc::Receiver<Command>,
}

/// A handle and the command stream for [`run`](crate::runtime::run).
pub fn handle() -> (EngineHandle, Commands) {
    let (tx, rx) = mpsc::channel(64);
    (EngineHandle { tx }, Commands { rx })
}

impl EngineHandle {
    /// Polls `source_id` now and waits for the result to be committed. If a
    /// poll of it is in flight, a fresh one starts right after it. Streaming
    /// firehoses cannot be polled.
    pub async fn poll_now(&self, source_id: &str) -> Result<(), PollNowError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::PollNow(source_id.to_owned(), tx))
            .await
            .map_err(|_| PollNowError::NotRunning)?;
        rx.await.map_err(|_| PollNowError::Stopped)?
    }
}
