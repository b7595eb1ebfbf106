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
use std::sync::{Arc, OnceLock};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use livestrom_engine::keys::{KeyInfo, Scope, Verdict};

use crate::problem::Problem;
use crate::AppState;

/// The query parameter that may carry the key.
pub const QUERY_PARAM: &str = "api_key";
/// The header that may carry the key.
pub const HEADER: &str = "x-api-key";

/// Where authentication leaves the key's name for the access log: the
/// access middleware puts an empty note in the request's extensions before
/// the handler runs and reads it when the response is ready. Defined here,
/// beside the code that fills it, so the access log depends on `auth` and
/// not the other way round.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyNote(Arc<OnceLock<String>>);

impl KeyNote {
    /// The authenticated (or revoked) key's name, if the request had one.
    pub(crate) fn name(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// Records the authenticated (or revoked) key's name for the access log.
fn note_key(parts: &Parts, name: &str) {
    if let Some(note) = parts.extensions.get::<KeyNote>() {
        let _ = note.0.set(name.to_owned());
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
                note_key(parts, &info.name);
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
                note_key(parts, &name);
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
}
