//! A config reload that changes `[fetch]` reaches the webhooks without a
//! restart: with `allow_private_networks = false` a delivery to 127.0.0.1
//! is refused at connect (and says so in `webhook list`); once the file
//! says `true`, the endpoint — by then waiting 5 minutes for its next
//! retry — is tried again at once and gets exactly the events, in order.

use super::harness::*;

/// Lines of the node's log (its last 200) that contain `needle`.
fn logged(node: &Node, needle: &str) -> usize {
    node.1
        .lock()
        .map(|l| l.iter().filter(|x| x.contains(needle)).count())
        .unwrap_or(0)
}

/// Rewrites `allow_private_networks` in the node's config file.
fn allow_private(setup: &Setup, allow: bool) -> TestResult {
    let text = std::fs::read_to_string(&setup.config)?;
    let edited = text.replace(
        &format!("allow_private_networks = {}", !allow),
        &format!("allow_private_networks = {allow}"),
    );
    assert_ne!(text, edited, "the config file did not change");
    std::fs::write(&setup.config, edited)?;
    Ok(())
}

const RELOADED: &str = "webhooks deliver with the new fetch settings";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_allows_private_networks_reaches_the_webhooks_without_a_restart() -> TestResult
{
    let feed = Feed::start().await?;
    let setup = Setup::new(&feed)?;
    let receiver = Receiver::start(|_| reply(204)).await?;
    // Created before the events and disabled: they wait for it.
    setup.create("guarded", &receiver.url(), &[])?;
    setup.ok(&["disable", "guarded"])?;
    let node = setup.start();
    feed.add(5);
    stored_at_least(&setup.db, 5).await;

    // Private targets refused from now on (the firehose's too).
    allow_private(&setup, false)?;
    until("the first reload", || logged(&node, RELOADED) >= 1).await;
    setup.ok(&["enable", "guarded"])?;
    // Refused at once, again at once, and after 5 s: then a 5 min wait.
    until("three refused attempts", || {
        setup
            .endpoint("guarded")
            .is_ok_and(|e| e["failures_in_a_row"].as_u64() >= Some(3))
    })
    .await;
    let ep = setup.endpoint("guarded")?;
    let error = ep["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("refused to connect") && error.contains("allow_private_networks"),
        "{ep}"
    );
    assert_eq!(ep["state"], "active", "{ep}");
    assert!(ep["next_attempt_at"].is_string(), "waiting to retry: {ep}");
    assert!(receiver.hits().is_empty(), "a refused target got a request");

    // Allowed again by the file alone: the waiting retry goes now.
    allow_private(&setup, true)?;
    let want: Vec<String> = stored(&setup.db)?.into_iter().map(|(id, _)| id).collect();
    until("the stored events delivered", || {
        receiver.delivered().len() >= want.len()
    })
    .await;
    until("the second reload logged", || logged(&node, RELOADED) == 2).await;
    assert_eq!(receiver.delivered(), want, "exactly the events, in order");
    until("the endpoint healthy", || {
        setup
            .endpoint("guarded")
            .is_ok_and(|e| e["failures_in_a_row"] == 0 && e["state"] == "active")
    })
    .await;
    Ok(())
}
