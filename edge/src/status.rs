//! The status page at `GET /`: an operator's view of the sources, the
//! stream's state, events per minute and a live tail of the stream.
//!
//! Three files embedded in the binary (`status/index.html`, `app.js`,
//! `style.css`): no build step, nothing fetched from elsewhere. The page
//! itself is public and holds no data; everything it shows comes from the
//! admin endpoints and `/v1/stream`, called with an `admin` key the user
//! types in (kept in the tab's `sessionStorage`, sent as `X-API-Key`).
//! The Content-Security-Policy allows only this origin: no inline script or
//! style, no other host, no framing.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// Where the page's script is served.
pub const SCRIPT_PATH: &str = "/status/app.js";
/// Where the page's style sheet is served.
pub const STYLE_PATH: &str = "/status/style.css";

const INDEX_HTML: &str = include_str!("status/index.html");
const APP_JS: &str = include_str!("status/app.js");
const STYLE_CSS: &str = include_str!("status/style.css");

/// The policy of every status-page response: this origin only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /`.
pub async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

/// `GET /status/app.js`.
pub async fn script() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

/// `GET /status/style.css`.
pub async fn style() -> Response {
    asset(STYLE_CSS, "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Revalidated on each load, so a new binary's page is picked up at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}
