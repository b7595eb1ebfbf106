//! Authentication: the API key from `X-API-Key`, `Authorization: Bearer` or
//! `?api_key=`, verified against the key cache; scope and rate checks.
//!
//! Decisions a client can rely on:
//! - The key may come from any of the three places. If it comes from several
//!   and the values differ, the request is refused with 400
//!   (`conflicting-api-keys`): guessing which one was meant would hide a
//!   client bug. The same key in several places is fine.
//! - Order of checks: missing (401) → malformed or bad checksum (401, no
//!   lookup) → unknown (401) → revoked (403) → missing scope (403) → over the
//!   key's rate (429 with `Retry-After`).
//! - Failed authentications (missing, malformed, unknown, revoked key) count
//!   against the client address; past its budget it gets 429 instead.
//! - The presented key is never logged; the access log shows the key's name.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::keys::Verdict;
use crate::problem::Problem;
use crate::AppState;

/// The query parameter that may carry the key.
pub const QUERY_PARAM: &str = "api_key";
/// The header that may carry the key.
pub const HEADER: &str = "x-api-key";

/// A permission of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `stream:read`: /v1/stream and /v1/events.
    StreamRead,
    /// `admin`: operator pages.
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 2] = [Scope::StreamRead, Scope::Admin];

    /// The scope's name as written in `--scopes` and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::StreamRead => "stream:read",
            Scope::Admin => "admin",
        }
    }

    /// Parses a scope name (exact, lowercase).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|sc| sc.as_str() == s)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verified, unrevoked key and its limits.
#[derive(Debug)]
pub struct KeyInfo {
    /// Database id (the limiter key).
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Cap on filter terms per request.
    pub max_filters: usize,
    /// Cap on concurrent streams.
    pub max_streams: usize,
    /// Requests per second (burst twice that).
    pub rate: f64,
    /// Fires when the key is revoked or loses `stream:read`: open streams
    /// close. A change of limits does not fire it (open streams keep the
    /// limits they were opened with; see `keys`).
    pub revoked: CancellationToken,
}

impl KeyInfo {
    /// Whether the key has a scope.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// Extractor: a key with `stream:read` that is within its request rate.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Arc<KeyInfo>);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        authorize(parts, state, Some(Scope::StreamRead))
            .await
            .map(Authenticated)
    }
}

/// Extractor: any valid, unrevoked key (whatever its scopes) within its
/// request rate. For endpoints about the key itself (`/v1/whoami`).
#[derive(Debug, Clone)]
pub struct AnyKey(pub Arc<KeyInfo>);

impl FromRequestParts<AppState> for AnyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        authorize(parts, state, None).await.map(AnyKey)
    }
}

/// What every key extractor does: a valid key ([`authenticate`]), with
/// `scope` if one is required (403), within its request rate (429).
pub async fn authorize(
    parts: &Parts,
    state: &AppState,
    scope: Option<Scope>,
) -> Result<Arc<KeyInfo>, Problem> {
    let key = authenticate(parts, state).await?;
    if let Some(scope) = scope {
        require(&key, scope)?;
    }
    state.limits.check_rate(&key)?;
    Ok(key)
}

/// 403 unless the key has `scope`.
pub fn require(key: &KeyInfo, scope: Scope) -> Result<(), Problem> {
    if key.has(scope) {
        return Ok(());
    }
    Err(Problem::new(
        StatusCode::FORBIDDEN,
        "missing-scope",
        "Forbidden",
        format!("the key `{}` lacks the `{scope}` scope (add it with `livestrom apikey update {} --scopes …`)", key.name, key.name),
    ))
}

/// Finds and verifies the request's key; failures count against the client
/// address. Does not check scopes or rates.
pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<Arc<KeyInfo>, Problem> {
    let refused = match presented_key(parts) {
        Err(p) => p,
        Ok(None) => {
            let detail = if parts.headers.contains_key(header::AUTHORIZATION) {
                "the Authorization header must use the Bearer scheme: `Authorization: Bearer lstr_…`"
            } else {
                "no API key: send `X-API-Key: lstr_…`, `Authorization: Bearer lstr_…` or `?api_key=lstr_…`"
            };
            Problem::new(
                StatusCode::UNAUTHORIZED,
                "missing-api-key",
                "Missing or invalid API key",
                detail,
            )
        }
        Ok(Some(presented)) => match state.keys.check_fresh(&presented).await {
            Verdict::Valid(info) => {
                crate::access::note_key(parts, &info.name);
                return Ok(info);
            }
            Verdict::Malformed(e) => Problem::new(
                StatusCode::UNAUTHORIZED,
                "malformed-api-key",
                "Missing or invalid API key",
                format!("malformed key: {e}"),
            ),
            Verdict::Unknown => Problem::new(
                StatusCode::UNAUTHORIZED,
                "unknown-api-key",
                "Missing or invalid API key",
                "unknown key: it is well-formed but not a key of this server",
            ),
            Verdict::Revoked { name } => {
                crate::access::note_key(parts, &name);
                Problem::new(
                    StatusCode::FORBIDDEN,
                    "revoked-api-key",
                    "Forbidden",
                    format!("the key `{name}` has been revoked"),
                )
            }
        },
    };
    if refused.status == StatusCode::BAD_REQUEST.as_u16() {
        return Err(refused);
    }
    Err(state
        .limits
        .note_auth_failure(client_ip(parts))
        .unwrap_or(refused))
}

/// The key the request presents, from `X-API-Key`, `Authorization: Bearer`
/// or `?api_key=`; `Ok(None)` when there is none, 400 when they disagree.
pub fn presented_key(parts: &Parts) -> Result<Option<String>, Problem> {
    let mut found: Vec<String> = Vec::new();
    for v in parts.headers.get_all(HEADER) {
        // A non-UTF-8 header cannot be a key: keep it so it is refused as malformed.
        let s = v.to_str().map(str::trim).unwrap_or("\u{fffd}");
        if !s.is_empty() {
            found.push(s.to_owned());
        }
    }
    for v in parts.headers.get_all(header::AUTHORIZATION) {
        let Ok(s) = v.to_str() else { continue };
        let s = s.trim();
        if let Some((scheme, token)) = s.split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() {
                found.push(token.trim().to_owned());
            }
        }
    }
    if let Some(q) = parts.uri.query() {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            if k == QUERY_PARAM && !v.is_empty() {
                found.push(v.into_owned());
            }
        }
    }
    let Some(first) = found.first() else {
        return Ok(None);
    };
    if found.iter().any(|k| k != first) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "conflicting-api-keys",
            "Conflicting API keys",
            "the request carries different API keys (in X-API-Key, Authorization and/or ?api_key=); send one",
        ));
    }
    Ok(Some(first.clone()))
}

/// The TCP peer's address (unspecified when served without connect info).
fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ci| ci.0.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn each_place_yields_the_key() {
        let k = "lstr_abc";
        assert_eq!(
            presented_key(&parts("/", &[("X-API-Key", k)]))
                .expect("ok")
                .as_deref(),
            Some(k)
        );
        assert_eq!(
            presented_key(&parts("/", &[("Authorization", "Bearer lstr_abc")]))
                .expect("ok")
                .as_deref(),
            Some(k)
        );
        assert_eq!(
            presented_key(&parts("/", &[("Authorization", "bearer  lstr_abc ")]))
                .expect("ok")
                .as_deref(),
            Some(k)
        );
        assert_eq!(
            presented_key(&parts("/?a=1&api_key=lstr_abc", &[]))
                .expect("ok")
                .as_deref(),
            Some(k)
        );
        assert_eq!(
            presented_key(&parts("/?api_key=lstr%5Fabc", &[]))
                .expect("ok")
                .as_deref(),
            Some(k)
        );
        assert_eq!(
            presented_key(&parts("/?api%5Fkey=lstr_abc", &[]))
                .expect("ok")
                .as_deref(),
            Some(k)
        );
    }

    #[test]
    fn none_same_and_conflicting() {
        assert!(presented_key(&parts("/", &[])).expect("ok").is_none());
        assert!(presented_key(&parts("/?api_key=", &[("X-API-Key", "")]))
            .expect("ok")
            .is_none());
        assert!(
            presented_key(&parts("/", &[("Authorization", "Basic dXNlcjpwdw==")]))
                .expect("ok")
                .is_none()
        );
        let same = parts(
            "/?api_key=lstr_a",
            &[("X-API-Key", "lstr_a"), ("Authorization", "Bearer lstr_a")],
        );
        assert_eq!(presented_key(&same).expect("ok").as_deref(), Some("lstr_a"));
        let differ = parts("/?api_key=lstr_b", &[("X-API-Key", "lstr_a")]);
        assert_eq!(presented_key(&differ).expect_err("conflict").status, 400);
        let two_queries = parts("/?api_key=lstr_a&api_key=lstr_b", &[]);
        assert_eq!(
            presented_key(&two_queries).expect_err("conflict").status,
            400
        );
    }

    #[test]
    fn scopes_round_trip() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(Scope::parse("STREAM:READ"), None);
    }
}
