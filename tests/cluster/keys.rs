//! API keys in the cluster against a real nats-server: keys created,
//! updated and revoked through one node's admin interface reach another
//! node's key cache (its own connection, its own watcher); last use is
//! recorded without resurrecting anything; and `livestrom apikey` with a
//! `[cluster]` table works end to end, and fails fast and clearly when NATS
//! is not there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use livestrom_engine::cluster::wire::Bucket;
use livestrom_engine::cluster::Cluster;
use livestrom_engine::config::ClusterConfig;
use livestrom_engine::keys::{
    KeyAdmin, KeyBackend, KeyCache, KeyError, KeyUpdate, NatsKeys, NewKey, Scope, Verdict,
};
use tokio_util::sync::CancellationToken;

use super::nats::{start_nats, WAIT};
use super::TestResult;
use crate::helpers::wait_for_value;

const BIN: &str = env!("CARGO_BIN_EXE_livestrom");

/// How long a change may take to reach another node's cache before the
/// test fails (generous; the measured time is printed).
const PROPAGATION_BOUND: Duration = Duration::from_secs(10);

fn cluster_config(url: &str) -> ClusterConfig {
    ClusterConfig {
        nats: vec![url.to_owned()],
        stream: "LIVESTROM".to_owned(),
        replicas: 1,
        lease: Duration::from_secs(30),
    }
}

/// One node's own connection to the cluster and its keys bucket.
async fn node(
    url: &str,
) -> Result<async_nats::jetstream::kv::Store, Box<dyn std::error::Error + Send + Sync>> {
    let cluster = Cluster::connect(&cluster_config(url), Duration::from_secs(3600)).await?;
    Ok(cluster.bucket(Bucket::Keys, Duration::ZERO).await?)
}

/// Polls the cache until `want` holds for `key`; returns how long it took.
async fn until_cache(
    keys: &KeyCache,
    key: &str,
    what: &str,
    want: impl Fn(&Verdict) -> bool,
) -> Duration {
    let start = Instant::now();
    wait_for_value(what, PROPAGATION_BOUND, || {
        let ok = want(&keys.check(key));
        async move { ok.then_some(()) }
    })
    .await;
    start.elapsed()
}

/// Node A's edge caches keys from the bucket; node B creates, updates and
/// revokes them. Each change reaches A's cache; the revocation closes what
/// A handed to open streams. Also: the admin errors are SQLite's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_changed_on_one_node_reach_another_nodes_cache() -> TestResult {
    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let edge_a = NatsKeys::open(node(&nats.url).await?).await?;
    let cancel = CancellationToken::new();
    let cache = KeyCache::open(Arc::new(edge_a), cancel.clone()).await?;
    let admin_b = KeyAdmin::cluster(node(&nats.url).await?);

    let key = admin_b.create(&NewKey::new("news.app")).await?;
    until_cache(&cache, &key, "the new key in the other node's cache", |v| {
        matches!(v, Verdict::Valid(_))
    })
    .await;
    let Verdict::Valid(opened) = cache.check(&key) else {
        panic!("the key is no longer valid");
    };
    assert_eq!(opened.name, "news.app");
    assert_eq!((opened.max_streams, opened.rate), (10, 10.0));

    // Same errors as on one node.
    assert!(matches!(
        admin_b.create(&NewKey::new("news.app")).await,
        Err(KeyError::NameTaken(n)) if n == "news.app"
    ));
    assert!(matches!(
        admin_b.create(&NewKey::new("bad name")).await,
        Err(KeyError::InvalidName { .. })
    ));
    assert!(matches!(
        admin_b.update("nope", &KeyUpdate::default()).await,
        Err(KeyError::NotFound(_))
    ));
    assert!(matches!(
        admin_b.revoke("a b").await,
        Err(KeyError::NotFound(_))
    ));

    // An update: new limits for new requests, open streams untouched.
    admin_b
        .update(
            "news.app",
            &KeyUpdate {
                max_streams: Some(3),
                rate: Some(2.0),
                scopes: Some(vec![Scope::StreamRead, Scope::Admin]),
                ..KeyUpdate::default()
            },
        )
        .await?;
    until_cache(&cache, &key, "the new limits in the other node's cache", |v| {
        matches!(v, Verdict::Valid(i) if i.rate == 2.0 && i.max_streams == 3 && i.has(Scope::Admin))
    })
    .await;
    assert!(!opened.revoked.is_cancelled(), "an update closed streams");
    let listed = admin_b.list().await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].max_filters, listed[0].max_streams, listed[0].rate),
        (20, 3, 2.0)
    );
    assert_eq!(listed[0].scopes, vec![Scope::StreamRead, Scope::Admin]);

    // A revocation on B: refused on A, its streams told to close.
    admin_b.revoke("news.app").await?;
    let took = until_cache(
        &cache,
        &key,
        "the revocation in the other node's cache",
        |v| matches!(v, Verdict::Revoked { name } if name == "news.app"),
    )
    .await;
    eprintln!("revocation on one node refused by another node's cache after {took:?}");
    assert!(
        opened.revoked.is_cancelled(),
        "open streams were not told to close"
    );
    assert!(matches!(
        admin_b.revoke("news.app").await,
        Err(KeyError::AlreadyRevoked(_))
    ));
    assert!(matches!(
        admin_b.update("news.app", &KeyUpdate::default()).await,
        Err(KeyError::Revoked(_))
    ));
    assert!(admin_b.list().await?[0].revoked_at.is_some());
    cancel.cancel();
    Ok(())
}

/// `KEY=$(livestrom apikey create …) && curl …` against another node: the
/// first request with a key created a moment ago on another node is
/// accepted, not refused because that node's watcher has not delivered the
/// new entry yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_created_on_another_node_works_on_its_first_request() -> TestResult {
    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let cancel = CancellationToken::new();
    let cache = KeyCache::open(
        Arc::new(NatsKeys::open(node(&nats.url).await?).await?),
        cancel.clone(),
    )
    .await?;
    let admin_b = KeyAdmin::cluster(node(&nats.url).await?);
    for i in 0..20 {
        let key = admin_b.create(&NewKey::new(format!("first-{i}"))).await?;
        let verdict = cache.check_fresh(&key).await;
        assert!(
            matches!(verdict, Verdict::Valid(_)),
            "key {i} refused on its first request: {verdict:?}"
        );
    }
    cancel.cancel();
    Ok(())
}

/// Runs a blocking backend call as the cache does.
async fn on_blocking<T: Send + 'static>(
    backend: &Arc<NatsKeys>,
    f: impl FnOnce(&NatsKeys) -> T + Send + 'static,
) -> T {
    let b = backend.clone();
    tokio::task::spawn_blocking(move || f(&b))
        .await
        .unwrap_or_else(|e| panic!("blocking call failed: {e}"))
}

/// `load` lists on the first call and after a change, not when nothing
/// changed; `record_usage` writes `last_used_at` (never backwards, never
/// into a deleted entry, never un-revoking). (That a last-use write is not
/// counted as a change is the unit test of the watcher's decision.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_use_is_recorded_without_counting_as_a_change_or_resurrecting() -> TestResult {
    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let kv = node(&nats.url).await?;
    let admin = KeyAdmin::cluster(kv.clone());
    admin.create(&NewKey::new("used")).await?;
    admin.create(&NewKey::new("gone")).await?;
    let backend = Arc::new(NatsKeys::open(kv.clone()).await?);
    let rows = on_blocking(&backend, |b| b.load())
        .await?
        .unwrap_or_else(|| panic!("the first load lists the bucket"));
    assert_eq!(rows.len(), 2);
    let id = |name: &str| {
        rows.iter()
            .find(|r| r.name == name)
            .map(|r| r.id)
            .unwrap_or_else(|| panic!("{name} not loaded"))
    };
    let (used, gone) = (id("used"), id("gone"));

    assert!(
        on_blocking(&backend, |b| b.load()).await?.is_none(),
        "nothing changed, yet load listed again"
    );

    let at = chrono::Utc::now();
    let earlier = at - chrono::Duration::minutes(5);
    on_blocking(&backend, move |b| {
        b.record_usage(&HashMap::from([(used, at)]))?;
        // An older use (another edge's, flushed late) does not go backwards.
        b.record_usage(&HashMap::from([(used, earlier)]))
    })
    .await?;
    let list = admin.list().await?;
    let used_at = list
        .iter()
        .find(|k| k.name == "used")
        .and_then(|k| k.last_used_at.clone());
    assert_eq!(
        used_at,
        Some(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    );

    // A change made elsewhere is listed by a later load (the watcher's signal).
    admin
        .update(
            "gone",
            &KeyUpdate {
                rate: Some(5.0),
                ..KeyUpdate::default()
            },
        )
        .await?;
    let changed = wait_for_value("the update seen by load", WAIT, || {
        let b = backend.clone();
        async move {
            tokio::task::spawn_blocking(move || b.load())
                .await
                .ok()
                .and_then(Result::ok)
                .flatten()
                .filter(|rows| rows.iter().any(|r| r.name == "gone" && r.rate == 5.0))
        }
    })
    .await;
    assert_eq!(changed.len(), 2);

    // Deleted by hand: a late use does not bring it back.
    kv.delete("gone").await?;
    on_blocking(&backend, move |b| {
        b.record_usage(&HashMap::from([(gone, at)]))
    })
    .await?;
    let entry = kv.entry("gone").await?;
    assert!(
        entry.is_some_and(|e| e.operation != async_nats::jetstream::kv::Operation::Put),
        "a deleted key was written back"
    );
    assert!(admin.list().await?.iter().all(|k| k.name != "gone"));

    // Revoked: a later use is recorded and the key stays revoked.
    admin.revoke("used").await?;
    let later = at + chrono::Duration::minutes(10);
    on_blocking(&backend, move |b| {
        b.record_usage(&HashMap::from([(used, later)]))
    })
    .await?;
    let list = admin.list().await?;
    let k = list
        .iter()
        .find(|k| k.name == "used")
        .unwrap_or_else(|| panic!("used not listed"));
    assert!(
        k.revoked_at.is_some(),
        "a last-use write un-revoked the key"
    );
    assert_eq!(
        k.last_used_at.as_deref(),
        Some(
            later
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                .as_str()
        )
    );
    Ok(())
}

fn write_cluster_config(dir: &Path, url: &str) -> PathBuf {
    let config = dir.join("sources.toml");
    let text = format!(
        "[engine]\ndatabase = {:?}\n[cluster]\nnats = [\"{url}\"]\n\
         [[source]]\nid = \"news.a\"\ntype = \"rss\"\nurl = \"http://127.0.0.1:9/feed.xml\"\n",
        dir.join("node.db")
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    config
}

/// Runs `livestrom apikey <args> --config <config>`, killing it if it has
/// not finished within [`WAIT`] (a hang fails the test instead of blocking it).
fn apikey(config: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .arg("apikey")
        .args(args)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    let deadline = Instant::now() + WAIT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                panic!("livestrom apikey {args:?} did not finish within {WAIT:?}");
            }
            Err(e) => panic!("{e}"),
        }
    }
    child.wait_with_output().unwrap_or_else(|e| panic!("{e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `livestrom apikey create|list|update|revoke` with `[cluster]`: the key is
/// in the bucket (its hash only), never printed by list, and it works on
/// an edge whose cache reads the bucket; nothing lands in the node's SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apikey_cli_manages_keys_in_the_cluster() -> TestResult {
    let Some(nats) = start_nats() else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let config = write_cluster_config(dir.path(), &nats.url);

    let out = apikey(
        &config,
        &[
            "create",
            "--name",
            "cli.app",
            "--scopes",
            "stream:read,admin",
        ],
    );
    assert!(out.status.success(), "create failed: {}", text(&out.stderr));
    let key = text(&out.stdout).trim().to_owned();
    assert!(key.starts_with("lstr_") && key.len() == 49, "{key:?}");

    let kv = node(&nats.url).await?;
    let stored = kv
        .get("cli/app")
        .await?
        .unwrap_or_else(|| panic!("no entry for cli.app in the bucket"));
    let value: serde_json::Value = serde_json::from_slice(&stored)?;
    let hash = livestrom_engine::keys::hash_key(&key);
    assert_eq!(value["hash"], serde_json::json!(hex_of(&hash)));
    assert!(
        !text(&stored).contains(&key[5..]),
        "the key itself is stored"
    );

    let cancel = CancellationToken::new();
    let cache = KeyCache::open(Arc::new(NatsKeys::open(kv.clone()).await?), cancel.clone()).await?;
    assert!(
        matches!(cache.check(&key), Verdict::Valid(i) if i.has(Scope::Admin)),
        "a key created by the CLI is not accepted by an edge's cache"
    );

    let out = apikey(&config, &["create", "--name", "cli.app"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("a key named `cli.app` already exists"),
        "{}",
        text(&out.stderr)
    );

    let out = apikey(&config, &["update", "cli.app", "--rate", "5/s"]);
    assert!(out.status.success(), "update failed: {}", text(&out.stderr));

    let out = apikey(&config, &["list"]);
    assert!(out.status.success(), "list failed: {}", text(&out.stderr));
    let listed = text(&out.stdout);
    let line = listed
        .lines()
        .find(|l| l.starts_with("cli.app "))
        .unwrap_or_else(|| panic!("cli.app not listed:\n{listed}"));
    assert!(
        line.contains("stream:read,admin") && line.contains(" 5 ") && line.ends_with("active"),
        "{line}"
    );
    assert!(
        !listed.contains(&key[5..]) && !listed.contains(&hex_of(&hash)),
        "list shows the key or its hash:\n{listed}"
    );

    let out = apikey(&config, &["revoke", "cli.app"]);
    assert!(out.status.success(), "revoke failed: {}", text(&out.stderr));
    until_cache(
        &cache,
        &key,
        "the CLI's revocation in an edge's cache",
        |v| matches!(v, Verdict::Revoked { .. }),
    )
    .await;
    let out = apikey(&config, &["list"]);
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l.starts_with("cli.app ") && l.contains("revoked 20")),
        "{}",
        text(&out.stdout)
    );
    let out = apikey(&config, &["revoke", "cli.app"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already revoked"),
        "{}",
        text(&out.stderr)
    );

    // The keys went to the cluster, not to the node's database.
    assert!(
        !dir.path().join("node.db").exists(),
        "apikey wrote the SQLite database"
    );
    cancel.cancel();
    Ok(())
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// With `[cluster]` pointing at a port nobody listens on, every apikey
/// command exits non-zero (well within the harness's bound) and says which
/// cluster it could not reach and what to check.
#[test]
fn apikey_without_a_reachable_cluster_fails_fast_and_says_why() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // A port that was free a moment ago: connections to it are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("nats://127.0.0.1:{port}");
    let config = write_cluster_config(dir.path(), &url);
    for args in [&["list"][..], &["create", "--name", "x"], &["revoke", "x"]] {
        let out = apikey(&config, args);
        assert!(
            !out.status.success(),
            "{args:?} succeeded without a cluster"
        );
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("cannot reach the cluster at {url}"))
                && err.contains("nats-server"),
            "{args:?}: {err}"
        );
        assert!(
            out.stdout.is_empty(),
            "{args:?} printed {:?}",
            text(&out.stdout)
        );
    }
    assert!(!dir.path().join("node.db").exists());
}
