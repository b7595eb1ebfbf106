//! The cluster's fault behaviour with real processes: NATS not there when
//! an engine starts (a clear error, retries, then work), and NATS gone
//! while it runs (polling stops, nothing fetched that cannot be stored;
//! it resumes when NATS is back, nothing lost or doubled).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::time::Instant;

use super::failover::{
    assert_each_item_once, growing_feed, newest, start_node, stream_events, write_config,
};
use super::nats::{start_nats, start_nats_at, start_nats_with, WAIT};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Polls `f` until it returns Some, at most `WAIT`; panics naming `what`.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_started_before_nats_says_why_keeps_trying_and_then_works() -> TestResult {
    // A port nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let upstream = growing_feed(Arc::new(AtomicU64::new(5)), Arc::default()).await;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sources.toml");
    write_config(&config, &format!("nats://127.0.0.1:{port}"), upstream)?;
    let log = dir.path().join("engine.log");
    let mut engine = start_node(&config, "engine", None, &log);
    eventually("the engine to log why it cannot start", || async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains("cluster unavailable") && l.contains("Connection refused"))
    })
    .await;
    assert!(
        engine.child.try_wait()?.is_none(),
        "the engine exited instead of retrying"
    );

    let Some(nats) = start_nats_at(port, tempfile::tempdir()?) else {
        return Ok(());
    };
    let js = jetstream::new(async_nats::connect(&nats.url).await?);
    eventually("events once NATS is there", || async {
        (newest(&js).await >= 5).then_some(())
    })
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_stop_polling_while_nats_is_gone_and_resume_without_loss() -> TestResult {
    let Some(mut nats) = start_nats() else {
        return Ok(());
    };
    let count = Arc::new(AtomicU64::new(5));
    let requests = Arc::new(AtomicU64::new(0));
    let upstream = growing_feed(count.clone(), requests.clone()).await;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("sources.toml");
    write_config(&config, &nats.url, upstream)?;
    let _engine = start_node(&config, "engine", None, &dir.path().join("engine.log"));
    let js = jetstream::new(async_nats::connect(&nats.url).await?);
    eventually("first events", || async {
        (newest(&js).await >= 5).then_some(())
    })
    .await;

    nats.stop();
    // Polling stops once the lease can no longer be renewed: a window of
    // three seconds (three poll intervals) without a request.
    eventually("the engine to stop polling without NATS", || {
        let requests = requests.clone();
        async move {
            let before = requests.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(3)).await;
            (requests.load(Ordering::SeqCst) == before).then_some(())
        }
    })
    .await;
    // The feed moves on while NATS is down.
    let before = count.fetch_add(20, Ordering::SeqCst);
    nats.start_again();
    let last = before + 20;
    let js = jetstream::new(async_nats::connect(&nats.url).await?);
    eventually("the items published while NATS was down", || async {
        (newest(&js).await >= last).then_some(())
    })
    .await;
    assert_each_item_once(&stream_events(&js).await?, last);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_url_are_used_and_a_wrong_password_is_a_clear_error_without_it(
) -> TestResult {
    let Some(nats) = start_nats_with(&[
        "--user".into(),
        "lv".into(),
        "--pass".into(),
        "s3cret-pw".into(),
    ]) else {
        return Ok(());
    };
    let upstream = growing_feed(Arc::new(AtomicU64::new(5)), Arc::default()).await;
    let dir = tempfile::tempdir()?;
    let hostport = nats.url.trim_start_matches("nats://").to_owned();

    let wrong = dir.path().join("wrong.toml");
    write_config(&wrong, &format!("nats://lv:wr0ng-pw@{hostport}"), upstream)?;
    let log = dir.path().join("wrong.log");
    let mut engine = start_node(&wrong, "engine", None, &log);
    let text = eventually("the engine to say why it cannot connect", || async {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.contains("cluster unavailable"))
    })
    .await;
    assert!(text.to_lowercase().contains("authoriz"), "{text}");
    assert!(
        !text.contains("wr0ng-pw"),
        "the password reached the log: {text}"
    );
    engine.child.kill()?;
    engine.child.wait()?;

    let right = dir.path().join("right.toml");
    write_config(&right, &format!("nats://lv:s3cret-pw@{hostport}"), upstream)?;
    let _engine = start_node(&right, "engine", None, &dir.path().join("right.log"));
    let client =
        async_nats::ConnectOptions::with_user_and_password("lv".into(), "s3cret-pw".into())
            .connect(hostport.as_str())
            .await?;
    let js = jetstream::new(client);
    eventually("events with the right credentials", || async {
        (newest(&js).await >= 5).then_some(())
    })
    .await;
    Ok(())
}
