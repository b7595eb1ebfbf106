//! `GET /v1/stream`: replay from the log after the cursor, then live.
//!
//! CONTRACT (owned by the stream module's owner).

use axum::response::Response;

use crate::problem::Problem;

/// The handler.
pub async fn handler() -> Result<Response, Problem> {
    Err(Problem::unavailable("stream not built yet"))
}
