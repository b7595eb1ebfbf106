//! The webhooks' series on `GET /metrics` of the real binary, parsed with
//! `prometheus-parse`: a receiver that fails then recovers (delivered
//! equals what it got, the failures are counted, the lag goes back to 0),
//! one that answers 410 (gone, disabled, its lag growing), and a deleted
//! endpoint whose series are gone.

use std::net::SocketAddr;

use prometheus_parse::{Scrape, Value};

use super::harness::*;
use crate::helpers::{metrics_text, wait_for_value};

/// `GET /metrics`, parsed; None while the node does not answer.
async fn scrape(http: &reqwest::Client, addr: SocketAddr) -> Option<Scrape> {
    let text = metrics_text(http, addr).await?;
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    Some(
        Scrape::parse(lines)
            .unwrap_or_else(|e| panic!("not the Prometheus text format: {e}\n{text}")),
    )
}

/// The value of `name` with these labels (a histogram: its count).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map_or(0.0, |b| b.count),
            other => panic!("{name}{labels:?}: {other:?}"),
        })
}

/// Whether any series carries `endpoint="<name>"`.
fn mentions(s: &Scrape, name: &str) -> bool {
    s.samples
        .iter()
        .any(|x| x.labels.get("endpoint") == Some(name))
}

/// Scrapes until `cond` holds for a scrape; that scrape.
async fn scrape_until(
    http: &reqwest::Client,
    addr: SocketAddr,
    what: &str,
    cond: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let cond = &cond;
    wait_for_value(what, WAIT, || async move {
        scrape(http, addr).await.filter(|s| cond(s))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_series_follow_deliveries_failures_recovery_and_deletes() -> TestResult {
    let feed = Feed::start().await?;
    let setup = Setup::new(&feed)?;
    // Fails twice (at once, then again at once), recovers on the retry 5 s later.
    let flaky = Receiver::start(|n| if n < 2 { reply(500) } else { reply(204) }).await?;
    let refusing = Receiver::start(|_| reply(410)).await?;
    setup.create("metered", &flaky.url(), &[])?;
    setup.create("refusing", &refusing.url(), &[])?;
    let _node = setup.start();
    let http = reqwest::Client::builder().no_proxy().build()?;
    let addr = setup.listen;
    let m = [("endpoint", "metered")];
    let r = [("endpoint", "refusing")];
    feed.add(10);

    // Waiting 5 s for its retry: two failures in a row, and a lag.
    let s = scrape_until(&http, addr, "metered's two failures", |s| {
        value(s, "livestrom_webhook_consecutive_failures", &m) == Some(2.0)
    })
    .await;
    assert_eq!(
        value(
            &s,
            "livestrom_webhook_deliveries_total",
            &[m[0], ("outcome", "failed")]
        ),
        Some(2.0)
    );
    assert!(
        value(&s, "livestrom_webhook_lag_seconds", &m).is_some_and(|v| v > 0.0),
        "the undelivered event has an age"
    );
    assert_eq!(
        value(
            &s,
            "livestrom_webhook_endpoint_state",
            &[m[0], ("state", "active")]
        ),
        Some(1.0)
    );

    // Recovered: every event delivered, counted once each.
    until("10 deliveries", || flaky.delivered().len() >= 10).await;
    let s = scrape_until(&http, addr, "metered caught up", |s| {
        value(
            s,
            "livestrom_webhook_deliveries_total",
            &[m[0], ("outcome", "delivered")],
        ) == Some(10.0)
            && value(s, "livestrom_webhook_lag_seconds", &m) == Some(0.0)
    })
    .await;
    let delivered = flaky.delivered();
    assert_eq!(delivered.len(), 10, "each event once");
    for (outcome, want) in [("delivered", 10.0), ("failed", 2.0), ("gone", 0.0)] {
        assert_eq!(
            value(
                &s,
                "livestrom_webhook_deliveries_total",
                &[m[0], ("outcome", outcome)]
            ),
            Some(want),
            "{outcome}"
        );
    }
    assert_eq!(
        value(&s, "livestrom_webhook_delivery_duration_seconds", &m),
        Some(12.0),
        "one duration per attempt"
    );
    assert_eq!(
        value(&s, "livestrom_webhook_consecutive_failures", &m),
        Some(0.0)
    );
    for (state, want) in [
        ("active", 1.0),
        ("failing", 0.0),
        ("paused", 0.0),
        ("disabled", 0.0),
    ] {
        assert_eq!(
            value(
                &s,
                "livestrom_webhook_endpoint_state",
                &[m[0], ("state", state)]
            ),
            Some(want),
            "{state}"
        );
    }

    // The 410: gone, disabled, and its refused event keeps ageing.
    let s = scrape_until(&http, addr, "refusing disabled", |s| {
        value(
            s,
            "livestrom_webhook_endpoint_state",
            &[r[0], ("state", "disabled")],
        ) == Some(1.0)
    })
    .await;
    assert_eq!(
        value(
            &s,
            "livestrom_webhook_deliveries_total",
            &[r[0], ("outcome", "gone")]
        ),
        Some(1.0)
    );
    assert_eq!(refusing.hits().len(), 1);
    let lag = value(&s, "livestrom_webhook_lag_seconds", &r).unwrap_or(0.0);
    assert!(lag > 0.0, "{lag}");
    scrape_until(&http, addr, "the disabled endpoint's lag growing", |s| {
        value(s, "livestrom_webhook_lag_seconds", &r).is_some_and(|v| v > lag)
    })
    .await;

    // Deleted: its series go; the other's stay.
    setup.ok(&["delete", "metered"])?;
    let s = scrape_until(&http, addr, "metered's series gone", |s| {
        !mentions(s, "metered")
    })
    .await;
    assert!(mentions(&s, "refusing"));
    Ok(())
}
