//! `/v1/admin/webhooks`: every CLI operation over HTTP for `admin` keys, on
//! a node in this process (its writes go through the store's writer), the
//! stream's 400 for a bad filter, and a cluster's clear refusal.

use std::time::Duration;

use livestrom_edge::{AppState, Settings};
use livestrom_engine::keys::{self, NewKey, Scope};
use livestrom_engine::store::WriteBatch;
use livestrom_engine::webhooks::{SigningSecret, WebhookAdmin, CLUSTER_UNSUPPORTED};
use livestrom_engine::{Backend, Bus, Config, Store};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::harness::*;

struct Edge {
    base: String,
    key: String,
    http: reqwest::Client,
    store: Store,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// An edge and the webhooks runtime on one store; `webhooks` replaces the
/// backend's (a cluster's refusal) when given.
async fn edge(webhooks: Option<WebhookAdmin>) -> Result<Edge, AnyError> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("admin.db");
    let key = {
        let conn = livestrom_engine::store::open_and_migrate(&db)?;
        let mut nk = NewKey::new("ops");
        nk.scopes = vec![Scope::StreamRead, Scope::Admin];
        nk.rate = 1000.0;
        keys::create(&conn, &nk)?
    };
    let store = Store::open(&db, Duration::from_secs(3600), Bus::new())?;
    let cancel = CancellationToken::new();
    let mut backend = Backend::sqlite(&store);
    if let Some(w) = webhooks {
        backend.webhooks = w;
    }
    let state = AppState::new(backend, Settings::default(), cancel.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(livestrom_edge::serve(listener, state, cancel.clone()));
    let config = Config::from_toml(
        std::path::Path::new("admin/sources.toml"),
        "[fetch]\nallow_private_networks = true\n",
    )?;
    livestrom_engine::webhooks::spawn(
        store.clone(),
        livestrom_engine::webhooks::SharedTransport::fetcher(&config.fetch)?,
        cancel.clone(),
    );
    Ok(Edge {
        base,
        key,
        http: reqwest::Client::builder().no_proxy().build()?,
        store,
        cancel,
        _dir: dir,
    })
}

impl Edge {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), AnyError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-API-Key", &self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let body = res.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_webhook_operation_over_http_for_admin_keys() -> TestResult {
    let edge = edge(None).await?;
    let receiver = Receiver::start(|_| reply(200)).await?;
    let (status, created) = edge
        .call(
            Method::POST,
            "/v1/admin/webhooks",
            Some(json!({"name": "ops-hook", "url": receiver.url(), "source": ["s"], "tag": ["t"]})),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    let secret = SigningSecret::parse(created["secret"].as_str().unwrap_or_default())?;
    assert_eq!(created["webhook"]["state"], "active");
    assert_eq!(
        created["webhook"]["filters"],
        json!({"source": ["s"], "tag": ["t"]})
    );

    // Refusals: the stream's words for a filter, a taken name, a body typo.
    let (status, p) = edge
        .call(
            Method::POST,
            "/v1/admin/webhooks",
            Some(json!({"name": "x", "url": receiver.url(), "source_type": ["xml"]})),
        )
        .await?;
    assert_eq!(
        (status, p["parameter"].as_str()),
        (400, Some("source_type")),
        "{p}"
    );
    let (_, stream) = edge
        .call(Method::GET, "/v1/stream?source_type=xml", None)
        .await?;
    assert_eq!(p["detail"], stream["detail"]);
    let (status, p) = edge
        .call(
            Method::POST,
            "/v1/admin/webhooks",
            Some(json!({"name": "ops-hook", "url": receiver.url()})),
        )
        .await?;
    assert_eq!(
        (status, p["type"].as_str()),
        (409, Some("https://livestrom.dev/problems/webhook-exists"))
    );
    let (status, p) = edge
        .call(
            Method::POST,
            "/v1/admin/webhooks",
            Some(json!({"name": "y", "url": receiver.url(), "sources": ["s"]})),
        )
        .await?;
    assert_eq!(
        (status, p["type"].as_str()),
        (400, Some("https://livestrom.dev/problems/invalid-body")),
        "{p}"
    );

    // Delivery of what it matches, signed with the secret it was given.
    let mut events = vec![];
    for (source, tags) in [
        ("s", vec!["t"]),
        ("s", vec![]),
        ("other", vec!["t"]),
        ("s", vec!["t"]),
    ] {
        let mut e = super::delivery::event(&format!("{source} {tags:?}"));
        e.event.source_id = source.into();
        e.event.tags = tags.iter().map(|t| t.to_string()).collect();
        events.push(e);
    }
    let written = edge
        .store
        .write(WriteBatch {
            events,
            ..Default::default()
        })
        .await?;
    until("two deliveries", || receiver.delivered().len() >= 2).await;
    let want = vec![
        written[0].event.id.to_string(),
        written[3].event.id.to_string(),
    ];
    assert_eq!(receiver.delivered(), want);
    for h in receiver.hits() {
        assert_eq!(
            h.signature,
            secret.sign(&h.id, h.timestamp, h.body.as_bytes())
        );
    }

    let (status, list) = edge.call(Method::GET, "/v1/admin/webhooks", None).await?;
    assert_eq!(status, 200);
    assert_eq!(list["webhooks"].as_array().map(Vec::len), Some(1));
    assert!(
        !list.to_string().contains(secret.expose()),
        "a listing never shows the secret"
    );
    let (status, one) = edge
        .call(
            Method::PATCH,
            "/v1/admin/webhooks/ops-hook",
            Some(json!({"source": [], "concurrency": 2})),
        )
        .await?;
    assert_eq!(status, 200, "{one}");
    assert_eq!(
        (one["filters"].clone(), one["concurrency"].clone()),
        (json!({}), json!(2))
    );
    let (_, one) = edge
        .call(Method::POST, "/v1/admin/webhooks/ops-hook/disable", None)
        .await?;
    assert_eq!(one["state"], "disabled");
    let (_, one) = edge
        .call(Method::POST, "/v1/admin/webhooks/ops-hook/enable", None)
        .await?;
    assert_eq!(one["state"], "active");
    let (status, rotated) = edge
        .call(
            Method::POST,
            "/v1/admin/webhooks/ops-hook/rotate-secret",
            None,
        )
        .await?;
    assert_eq!(status, 200);
    assert!(rotated["secret"]
        .as_str()
        .is_some_and(|s| s.starts_with("whsec_") && s != secret.expose()));
    assert!(rotated["previous_secret_until"].is_string());
    // Replay from before the first event: all four are delivered (no filter now).
    let before = written[0].event.id.as_u128() - 1;
    let since = uuid::Uuid::from_u128(before).to_string();
    let (status, one) = edge
        .call(
            Method::POST,
            "/v1/admin/webhooks/ops-hook/replay",
            Some(json!({"since": since})),
        )
        .await?;
    assert_eq!(status, 200, "{one}");
    until("the replay", || receiver.delivered().len() >= 6).await;
    let replayed: Vec<String> = written.iter().map(|e| e.event.id.to_string()).collect();
    let got = receiver.delivered();
    let mut tail = got[2..].to_vec();
    tail.sort();
    assert_eq!(tail, replayed);
    let (status, _) = edge
        .call(Method::DELETE, "/v1/admin/webhooks/ops-hook", None)
        .await?;
    assert_eq!(status, 204);
    let (status, p) = edge
        .call(Method::GET, "/v1/admin/webhooks/ops-hook", None)
        .await?;
    assert_eq!(
        (status, p["type"].as_str()),
        (
            404,
            Some("https://livestrom.dev/problems/webhook-not-found")
        )
    );
    Ok(())
}

#[tokio::test]
async fn a_cluster_refuses_webhooks_clearly() -> TestResult {
    let edge = edge(Some(WebhookAdmin::unsupported(CLUSTER_UNSUPPORTED))).await?;
    let (status, p) = edge.call(Method::GET, "/v1/admin/webhooks", None).await?;
    assert_eq!(status, 501);
    assert_eq!(p["detail"], CLUSTER_UNSUPPORTED);
    Ok(())
}

#[test]
fn the_cli_refuses_webhooks_on_a_cluster_config() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sources.toml");
    std::fs::write(&config, "[cluster]\nnats = [\"nats://127.0.0.1:9\"]\n")?;
    for args in [
        vec!["list"],
        vec!["create", "--name", "h", "--url", "https://r.example/"],
    ] {
        let out = std::process::Command::new(BIN)
            .arg("webhook")
            .args(&args)
            .arg("--config")
            .arg(&config)
            .output()?;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("single-node"), "{stderr}");
    }
    Ok(())
}
