//! kill -9 of `livestrom run` in the middle of deliveries, again and again:
//! after each restart delivery continues from the first event not
//! acknowledged — a duplicate (same `webhook-id`, same body) is allowed,
//! a gap never. `LIVESTROM_WEBHOOK_CRASH_ROUNDS` sets the rounds (20).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_delivery_then_restart_delivers_every_event_without_a_gap() -> TestResult {
    let rounds: u32 = std::env::var("LIVESTROM_WEBHOOK_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let feed = Feed::start().await?;
    let setup = Setup::new(&feed)?;
    // Each answer takes a few milliseconds, so kills land mid-request.
    let receiver = Receiver::with_delay(|_| reply(200), Duration::from_millis(3)).await?;
    setup.create("crash", &receiver.url(), &[])?;
    let stop = Arc::new(AtomicBool::new(false));
    let grow = {
        let (feed, stop) = (feed.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                feed.add(1);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut node = setup.start();
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_millis(100 + random() % 300)).await;
        node.0.kill()?;
        node.0.wait()?;
        node = setup.start();
    }
    stop.store(true, Ordering::SeqCst);
    grow.await?;
    let total = feed.count() as usize;
    stored_at_least(&setup.db, total).await;
    until("every stored event delivered", || {
        let got: std::collections::HashSet<String> = receiver.delivered().into_iter().collect();
        got.len() >= total
    })
    .await;
    drop(node);

    let stored = stored(&setup.db)?;
    assert_eq!(stored.len(), total, "one event per upstream item");
    let mut first: HashMap<String, String> = HashMap::new();
    let mut order = Vec::new();
    let mut duplicates = 0;
    for hit in receiver.hits() {
        match first.get(&hit.id) {
            Some(body) => {
                duplicates += 1;
                assert_eq!(
                    body, &hit.body,
                    "a repeated webhook-id carries the same body"
                );
            }
            None => {
                first.insert(hit.id.clone(), hit.body.clone());
                order.push(hit.id);
            }
        }
    }
    let want: Vec<String> = stored.into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        order, want,
        "the first delivery of each event, in id order, is exactly the stored events"
    );
    eprintln!(
        "{rounds} kill -9 rounds: {total} events delivered, {duplicates} repeated after a crash"
    );
    Ok(())
}
