//! Integration tests: `GET /v1/openapi.json` is a valid OpenAPI 3.1
//! document (the official 3.1 JSON Schema, and the `oas3` parser resolving
//! every reference), served without a key, and it cannot drift from the
//! code: every route is documented, every documented path is served, and
//! every problem type the edge emits is listed with its status and title.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use livestrom_edge::{AppState, Settings};
use livestrom_engine::keys::{self, NewKey, Scope};
use livestrom_engine::{Bus, Store};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::helpers::fixture_path;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

struct Edge {
    base: String,
    admin_key: String,
    http: reqwest::Client,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn edge() -> Result<Edge, Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("openapi.db");
    let conn = livestrom_engine::store::open_and_migrate(&db)?;
    let mut nk = NewKey::new("ops");
    nk.scopes = vec![Scope::StreamRead, Scope::Admin];
    nk.rate = 1000.0;
    let admin_key = keys::create(&conn, &nk)?;
    drop(conn);
    let store = Store::open(&db, Duration::from_secs(3600), Bus::new())?;
    let cancel = CancellationToken::new();
    let settings = Settings {
        keepalive: Duration::from_secs(25),
        cors_origins: vec!["*".into()],
        metrics_token: None,
    };
    let state = AppState::new(
        livestrom_engine::Backend::sqlite(&store),
        settings,
        cancel.clone(),
    )
    .await?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(livestrom_edge::serve(listener, state, cancel.clone()));
    Ok(Edge {
        base,
        admin_key,
        http: reqwest::Client::builder().no_proxy().build()?,
        cancel,
        _dir: dir,
    })
}

/// The document as a client gets it: no key, `application/json`.
async fn served_document(edge: &Edge) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    let res = edge
        .http
        .get(format!("{}/v1/openapi.json", edge.base))
        .send()
        .await?;
    assert_eq!(res.status(), 200, "served without a key");
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(ct, "application/json");
    Ok(res.json().await?)
}

#[tokio::test]
async fn openapi_is_valid_openapi_3_1_and_embeds_the_stream_event_schema() -> TestResult {
    let edge = edge().await?;
    let doc = served_document(&edge).await?;

    // The official OpenAPI 3.1 schema (spec.openapis.org/oas/3.1/schema/2022-10-07).
    let meta: Value = serde_json::from_slice(&std::fs::read(fixture_path(
        "fixtures/openapi/oas-3.1-schema-2022-10-07.json",
    ))?)?;
    let validator = jsonschema::validator_for(&meta)?;
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not a valid OpenAPI 3.1 document: {errors:#?}"
    );

    // A real parser: the version, and every operation's parameters and
    // responses resolve (no dangling `$ref`).
    let spec = oas3::from_json(serde_json::to_string(&doc)?)?;
    let version = spec.validate_version()?;
    assert_eq!((version.major, version.minor), (3, 1));
    let mut operations = 0;
    for (path, method, op) in spec.operations() {
        operations += 1;
        op.parameters(&spec)
            .unwrap_or_else(|e| panic!("{method} {path}: a parameter does not resolve: {e}"));
        let declared = op.responses.as_ref().map_or(0, |r| r.len());
        assert!(declared > 0, "{method} {path} documents no response");
        assert_eq!(
            op.responses(&spec).len(),
            declared,
            "{method} {path}: a response does not resolve"
        );
    }
    assert!(operations >= 10, "only {operations} operations");

    // The StreamEvent schema is the file clients validate against.
    let file: Value = serde_json::from_str(include_str!("../docs/stream-event.schema.json"))?;
    assert_eq!(doc["components"]["schemas"]["StreamEvent"], file);
    Ok(())
}

#[tokio::test]
async fn openapi_documents_every_route_and_every_documented_path_is_served() -> TestResult {
    let edge = edge().await?;
    let doc = served_document(&edge).await?;
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let routed: BTreeSet<String> = livestrom_edge::routes()
        .into_iter()
        .map(|(path, _)| path.to_owned())
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );

    for path in &documented {
        // The key goes along so admin paths answer 200 rather than 401; a
        // path the router does not know answers the `not-found` problem,
        // a method it does not route there `method-not-allowed`.
        let ops = &doc["paths"][path.as_str()];
        let method = ["get", "post", "patch", "delete"]
            .into_iter()
            .find(|m| ops.get(*m).is_some())
            .unwrap_or("get");
        let templated = path.contains('{');
        let url = format!("{}{}", edge.base, path.replace("{name}", "no-such-webhook"));
        let mut req = match method {
            "get" => edge.http.get(&url),
            "post" => edge.http.post(&url).body("{}"),
            "patch" => edge.http.patch(&url).body("{}"),
            _ => edge.http.delete(&url),
        }
        .header("X-API-Key", &edge.admin_key);
        if path == "/v1/stream" {
            // Only the head matters; the body would never end.
            req = req.timeout(Duration::from_secs(30));
        }
        let res = req.send().await?;
        let status = res.status();
        if path == "/v1/stream" {
            assert_eq!(status, 200, "{path}");
            continue;
        }
        let body: Value = res.json().await.unwrap_or(Value::Null);
        for routing in ["not-found", "method-not-allowed"] {
            let problem = format!("https://livestrom.dev/problems/{routing}");
            assert!(
                body["type"] != problem.as_str(),
                "{method} {path} is documented but not served: {body}"
            );
        }
        if method == "get" && !templated {
            assert!(
                status.is_success() || path == "/readyz",
                "{path} answered {status}: {body}"
            );
        } else {
            // A made-up name or an empty body: a documented answer.
            let code = status.as_str();
            assert!(
                ops[method]["responses"].get(code).is_some(),
                "{method} {path} answered {status}, which it does not document: {body}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn openapi_lists_every_problem_type_the_edge_emits() -> TestResult {
    let edge = edge().await?;
    let doc = served_document(&edge).await?;
    let listed: BTreeMap<String, (u64, String)> = doc
        .pointer("/components/schemas/Problem/properties/type/oneOf")
        .and_then(Value::as_array)
        .ok_or("Problem.type has no oneOf list")?
        .iter()
        .map(|t| {
            let slug = t["const"]
                .as_str()
                .and_then(|s| s.strip_prefix("https://livestrom.dev/problems/"))
                .unwrap_or_else(|| panic!("a problem type that is not a livestrom one: {t}"));
            let status = t["x-status"]
                .as_u64()
                .unwrap_or_else(|| panic!("no x-status: {t}"));
            let title = t["title"].as_str().unwrap_or_default().to_owned();
            (slug.to_owned(), (status, title))
        })
        .collect();

    let emitted = emitted_problem_types(&fixture_path("edge/src"))?;
    assert!(emitted.len() >= 10, "the scan found only {emitted:?}");
    for (slug, (status, title)) in &emitted {
        let Some((doc_status, doc_title)) = listed.get(slug) else {
            panic!(
                "the edge emits problem type `{slug}` ({status}) that openapi.json does not list"
            );
        };
        assert_eq!(doc_status, status, "status of `{slug}`");
        assert_eq!(doc_title, title, "title of `{slug}`");
    }
    for slug in listed.keys() {
        assert!(
            emitted.contains_key(slug),
            "openapi.json lists problem type `{slug}` that the edge never emits"
        );
    }
    // Each status with a problem type has a reusable response of that status.
    let responses = doc["components"]["responses"]
        .as_object()
        .ok_or("no responses")?;
    for (slug, (status, _)) in &emitted {
        let found = responses.values().any(|r| {
            r["content"]["application/problem+json"]["examples"]
                .get(slug)
                .is_some_and(|e| e["value"]["status"].as_u64() == Some(*status))
        });
        assert!(
            found,
            "no documented response carries `{slug}` with status {status}"
        );
    }
    Ok(())
}

/// The problem types in the edge's sources: `Problem::new(StatusCode::X,
/// "slug", "title", …)` (and `Self::new` inside problem.rs), plus problem
/// bodies written as literal bytes (`…/problems/slug`, status from the
/// status line).
fn emitted_problem_types(
    dir: &Path,
) -> Result<BTreeMap<String, (u64, String)>, Box<dyn std::error::Error + Send + Sync>> {
    let constructor = regex::Regex::new(
        r#"(?:Problem|Self)::new\(\s*StatusCode::([A-Z_]+),\s*"([a-z-]+)",\s*"([^"]+)""#,
    )?;
    let literal = regex::Regex::new(
        r#"HTTP/1\.1 (\d{3}) [^"]*?problems/([a-z-]+)\\",\\"title\\":\\"([^\\]+)\\""#,
    )?;
    let mut found: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            for c in constructor.captures_iter(&text) {
                let status = status_code(&c[1])
                    .ok_or_else(|| format!("{}: map StatusCode::{} here", path.display(), &c[1]))?;
                found.insert(c[2].to_owned(), (status, c[3].to_owned()));
            }
            for c in literal.captures_iter(&text) {
                found.insert(c[2].to_owned(), (c[1].parse()?, c[3].to_owned()));
            }
        }
    }
    Ok(found)
}

/// `StatusCode::NAME` → its code, for the names the edge uses.
fn status_code(name: &str) -> Option<u64> {
    Some(match name {
        "BAD_REQUEST" => 400,
        "UNAUTHORIZED" => 401,
        "FORBIDDEN" => 403,
        "NOT_FOUND" => 404,
        "METHOD_NOT_ALLOWED" => 405,
        "CONFLICT" => 409,
        "GONE" => 410,
        "TOO_MANY_REQUESTS" => 429,
        "INTERNAL_SERVER_ERROR" => 500,
        "NOT_IMPLEMENTED" => 501,
        "SERVICE_UNAVAILABLE" => 503,
        _ => return None,
    })
}
