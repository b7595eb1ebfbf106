//! Delivery through the real binary: exactly the missed events after
//! failures, 410 disabling (and `enable` resuming from the cursor),
//! `Retry-After`, the stream's filters and their refusals, and — in
//! process — the SSRF guard and redirects that are not followed.

use std::time::Duration;

use livestrom_engine::config::Config;
use livestrom_engine::event::{SourceType, StreamEvent};
use livestrom_engine::store::{NewEvent, WriteBatch};
use livestrom_engine::webhooks::{NewEndpoint, SigningSecret, Since, WebhookAdmin};
use livestrom_engine::{Bus, Store};
use tokio_util::sync::CancellationToken;

use super::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_then_recovery_deliver_exactly_the_missed_events_in_order() -> TestResult {
    let feed = Feed::start().await?;
    let setup = Setup::new(&feed)?;
    let receiver = Receiver::start(|n| if n < 2 { reply(500) } else { reply(204) }).await?;
    let secret = setup.create("flaky", &receiver.url(), &[])?;
    let _node = setup.start();
    feed.add(20);
    until("20 deliveries", || receiver.delivered().len() >= 20).await;
    let stored = stored(&setup.db)?;
    let want: Vec<String> = stored.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(receiver.delivered(), want, "every event once, in id order");
    let hits = receiver.hits();
    assert_eq!(hits[0].id, want[0]);
    assert_eq!(hits[1].id, want[0], "a retry carries the same webhook-id");
    assert_eq!(hits[2].id, want[0]);
    assert_eq!(hits[0].body, hits[2].body);
    assert_eq!(
        hits[0].body, stored[0].1,
        "the body is the stored StreamEvent JSON"
    );
    assert_eq!(hits[0].content_type, "application/json");
    // Retried immediately, then after 5 s (less 10 % jitter); each attempt
    // has its own timestamp and the signature of it.
    assert!(hits[2].at - hits[1].at >= Duration::from_millis(4500));
    assert!(hits[2].timestamp >= hits[1].timestamp + 4);
    let key = SigningSecret::parse(&secret)?;
    for h in &hits {
        assert_eq!(h.signature, key.sign(&h.id, h.timestamp, h.body.as_bytes()));
    }
    let ep = setup.endpoint("flaky")?;
    assert_eq!(ep["state"], "active");
    assert_eq!(ep["failures_in_a_row"], 0);
    // At or past the last event: it also moves over positions with no event.
    assert!(
        ep["cursor"]
            .as_str()
            .is_some_and(|c| c >= want[19].as_str()),
        "{ep}"
    );
    assert!(
        ep["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 500")),
        "{ep}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_endpoint_and_enable_resumes_from_its_cursor() -> TestResult {
    let feed = Feed::start().await?;
    let setup = Setup::new(&feed)?;
    let receiver = Receiver::start(|n| if n == 3 { reply(410) } else { reply(200) }).await?;
    let control = Receiver::start(|_| reply(200)).await?;
    setup.create("gone", &receiver.url(), &[])?;
    let node = setup.start();
    feed.add(10);
    until("disabled", || {
        setup
            .endpoint("gone")
            .is_ok_and(|e| e["state"] == "disabled")
    })
    .await;
    let ep = setup.endpoint("gone")?;
    assert!(
        ep["state_reason"]
            .as_str()
            .is_some_and(|r| r.contains("410")),
        "{ep}"
    );
    let want: Vec<String> = stored(&setup.db)?.into_iter().map(|(id, _)| id).collect();
    // Past the three delivered, before the refused one (when the three
    // were committed before it, the cursor may also have moved over
    // positions with no event after them).
    let cursor = ep["cursor"].as_str().unwrap_or_default();
    assert!(
        cursor >= want[2].as_str() && cursor < want[3].as_str(),
        "the cursor stays before the refused event: {cursor}, events {want:?}"
    );
    // Nothing more goes to it, while another endpoint gets what follows.
    setup.create("control", &control.url(), &[])?;
    feed.add(5);
    until("the control endpoint's 5", || {
        control.delivered().len() >= 5
    })
    .await;
    assert_eq!(receiver.hits().len(), 4);
    // Enabled again: from the refused event on, each once, in order.
    receiver.set(|_| reply(200));
    setup.ok(&["enable", "gone"])?;
    let want: Vec<String> = stored(&setup.db)?.into_iter().map(|(id, _)| id).collect();
    until("all after enable", || {
        receiver.delivered().len() >= want.len()
    })
    .await;
    assert_eq!(receiver.delivered(), want);
    drop(node);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_of_a_503_is_honoured() -> TestResult {
    let feed = Feed::start().await?;
    let setup = Setup::new(&feed)?;
    let receiver = Receiver::start(|n| {
        if n == 0 {
            Reply {
                status: 503,
                retry_after: Some(2),
                location: None,
            }
        } else {
            reply(200)
        }
    })
    .await?;
    setup.create("busy", &receiver.url(), &[])?;
    let _node = setup.start();
    feed.add(1);
    until("the retry", || receiver.hits().len() >= 2).await;
    let hits = receiver.hits();
    assert!(
        hits[1].at - hits[0].at >= Duration::from_secs(2),
        "retried {:?} after a Retry-After of 2 s",
        hits[1].at - hits[0].at
    );
    let ep = setup.endpoint("busy")?;
    assert!(
        ep["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("HTTP 503") && e.contains("Retry-After 2s")),
        "{ep}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_are_the_streams_refused_in_its_words_and_applied_as_it_applies_them() -> TestResult
{
    let feed = Feed::start().await?;
    let setup = Setup::new(&feed)?;
    let _node = setup.start();
    let key = setup.key()?;
    let http = reqwest::Client::new();
    let base = format!("http://{}", setup.listen);
    for (flag, value, param) in [
        ("--source-type", "xml", "source_type"),
        ("--source", "Kommun", "source"),
        ("--source", "kommun*", "source"),
        ("--tag", "a b", "tag"),
        ("--keyword", "a\u{7}b", "keyword"),
    ] {
        let out = setup.webhook(&[
            "create",
            "--name",
            "bad",
            "--url",
            "http://127.0.0.1:9/",
            flag,
            value,
        ])?;
        assert!(!out.status.success(), "{flag} {value:?} was accepted");
        let problem: serde_json::Value = http
            .get(format!("{base}/v1/stream"))
            .query(&[(param, value)])
            .header("X-API-Key", &key)
            .send()
            .await?
            .json()
            .await?;
        assert_eq!(problem["status"], 400);
        let detail = problem["detail"].as_str().unwrap_or_default();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !detail.is_empty() && stderr.contains(detail),
            "the CLI said {stderr:?}, the stream says {detail:?}"
        );
    }
    // The cap: 21 distinct terms (a repeated term counts once, as on the stream).
    let words: Vec<String> = (0..21).map(|i| format!("w{i}")).collect();
    let mut args = vec!["create", "--name", "bad", "--url", "http://127.0.0.1:9/"];
    for w in &words {
        args.extend(["--keyword", w.as_str()]);
    }
    let out = setup.webhook(&args)?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than 20 filter terms"));

    // Applied as /v1/events applies the same query.
    let receiver = Receiver::start(|_| reply(204)).await?;
    setup.create(
        "items-1",
        &receiver.url(),
        &[
            "--keyword",
            "ITEM 1",
            "--source-type",
            "firehose",
            "--source",
            "hooks.*",
            "--tag",
            "fire",
        ],
    )?;
    let since = setup.endpoint("items-1")?["cursor"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    feed.add(30);
    stored_at_least(&setup.db, 30).await;
    let page: serde_json::Value = http
        .get(format!("{base}/v1/events"))
        .query(&[
            ("keyword", "ITEM 1"),
            ("source_type", "firehose"),
            ("source", "hooks.*"),
            ("tag", "fire"),
            ("limit", "1000"),
            ("since", &since),
        ])
        .header("X-API-Key", &key)
        .send()
        .await?
        .json()
        .await?;
    let want: Vec<String> = page["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(want.len(), 11, "item 1 and items 10-19: {page}");
    until("the 11 matching", || receiver.delivered().len() >= 11).await;
    assert_eq!(receiver.delivered(), want);
    Ok(())
}

pub(crate) fn event(title: &str) -> NewEvent {
    NewEvent {
        event: StreamEvent {
            id: uuid::Uuid::nil(),
            schema_version: 1,
            source_id: "s".into(),
            source_type: SourceType::Rss,
            url: "https://example.com/item".into(),
            title: title.into(),
            content: String::new(),
            tags: vec![],
            fetched_at: chrono::Utc::now(),
            emitted_at: chrono::Utc::now(),
            item_id: title.into(),
            version: 1,
            supersedes: None,
            diff: None,
            added: None,
            published_at: None,
        },
        fingerprint: "fp".into(),
        aliases: vec![],
    }
}

/// A node in this process whose fetcher allows private networks or not,
/// with one endpoint at `url` and one event stored.
async fn in_process(
    allow_private: bool,
    url: &str,
) -> Result<(tempfile::TempDir, WebhookAdmin, CancellationToken), AnyError> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("guard.db");
    let config = Config::from_toml(
        std::path::Path::new("guard/sources.toml"),
        &format!("[fetch]\nallow_private_networks = {allow_private}\n"),
    )?;
    let store = Store::open(&db, Duration::from_secs(3600), Bus::new())?;
    let admin = WebhookAdmin::with_store(&store);
    let mut new = NewEndpoint::new("guarded", url);
    new.since = Since::Now;
    admin.create(new).await?;
    store
        .write(WriteBatch {
            events: vec![event("one")],
            ..Default::default()
        })
        .await?;
    let cancel = CancellationToken::new();
    livestrom_engine::webhooks::spawn(
        store,
        livestrom_engine::webhooks::SharedTransport::fetcher(&config.fetch)?,
        cancel.clone(),
    );
    Ok((dir, admin, cancel))
}

async fn last_error(admin: &WebhookAdmin) -> String {
    let mut seen = String::new();
    for _ in 0..(WAIT.as_millis() / 50) {
        if let Ok(ep) = admin.get("guarded").await {
            if let Some(e) = ep.last_error {
                return e;
            }
            seen = format!("{ep:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no delivery error recorded: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_are_refused_at_connect_and_redirects_are_not_followed() -> TestResult {
    let receiver = Receiver::start(|_| reply(200)).await?;
    // The guard: loopback refused, by IP literal and by name.
    for url in [
        receiver.url(),
        format!("http://localhost:{}/hook", receiver.addr.port()),
    ] {
        let (_dir, admin, cancel) = in_process(false, &url).await?;
        let error = last_error(&admin).await;
        assert!(
            error.contains("refused to connect")
                && error.contains("loopback")
                && error.contains("allow_private_networks"),
            "{error}"
        );
        cancel.cancel();
    }
    assert!(receiver.hits().is_empty(), "a refused target got a request");

    // A redirect is a failure; its target is never called.
    let target = Receiver::start(|_| reply(200)).await?;
    let location = target.url();
    let redirecting = Receiver::start(move |_| Reply {
        status: 307,
        retry_after: None,
        location: Some(location.clone()),
    })
    .await?;
    let (_dir, admin, cancel) = in_process(true, &redirecting.url()).await?;
    let error = last_error(&admin).await;
    assert!(
        error.contains("HTTP 307") && error.contains("redirects are not followed"),
        "{error}"
    );
    assert!(target.hits().is_empty(), "the redirect was followed");
    cancel.cancel();
    Ok(())
}
