//! `GET /v1/events`: a JSON page of events, same filters and cursor rules.
//!
//! CONTRACT (owned by the stream module's owner).

use axum::response::Response;

use crate::problem::Problem;

/// The handler.
pub async fn handler() -> Result<Response, Problem> {
    Err(Problem::unavailable("events not built yet"))
}
