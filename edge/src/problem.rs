//! RFC 9457 `application/problem+json` errors: every non-2xx of the edge.

use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// A problem response.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short, stable summary of the type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What exactly was wrong with this request.
    pub detail: String,
    /// The offending query parameter, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    /// Seconds to wait before retrying (429); also sent as `Retry-After`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem with a slug type (`https://livestrom.dev/problems/<slug>`).
    pub fn new(status: StatusCode, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            type_: format!("https://livestrom.dev/problems/{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            parameter: None,
            retry_after: None,
        }
    }

    /// 400 about one query parameter.
    pub fn bad_param(parameter: &str, detail: impl Into<String>) -> Self {
        let mut p = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-parameter",
            "Invalid query parameter",
            detail,
        );
        p.parameter = Some(parameter.to_owned());
        p
    }

    /// 401.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid API key",
            detail,
        )
    }

    /// 403.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 410: the cursor is older than the retained window.
    pub fn gone(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::GONE,
            "cursor-expired",
            "Cursor older than the retention window",
            detail,
        )
    }

    /// 410: the cursor is an id of another stream (recreated, another
    /// cluster, a single-node server): not a position here at all.
    pub fn gone_foreign(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::GONE,
            "cursor-foreign",
            "Cursor from another stream",
            detail,
        )
    }

    /// 429 with `Retry-After`.
    pub fn too_many(detail: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut p = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            detail,
        );
        p.retry_after = Some(retry_after_secs.max(1));
        p
    }

    /// 500; the detail is generic, the cause is logged by the caller.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "the server failed to handle the request; it was logged",
        )
    }

    /// 503 while shutting down.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (status, body).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                h.insert(header::RETRY_AFTER, v);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"livestrom\""),
            );
        }
        res
    }
}

/// Fallback for unknown paths.
pub async fn not_found(uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        format!(
            "no resource at {}; the stream is GET /v1/stream",
            uri.path()
        ),
    )
}

/// Fallback for a known path with the wrong method.
pub async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!("{method} is not allowed on {}; use GET", uri.path()),
    )
}

/// CORS for `edge.cors_origins` (`*` = any origin; no credentials are used).
pub fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, Any, CorsLayer};
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::OPTIONS])
        // Any request header: no cookies or credentials are used, and SSE
        // clients add their own (Last-Event-ID, Cache-Control, X-Requested-With…).
        .allow_headers(Any)
        .expose_headers([
            header::RETRY_AFTER,
            header::HeaderName::from_static("x-request-id"),
        ]);
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        layer.allow_origin(AllowOrigin::list(list))
    }
}
