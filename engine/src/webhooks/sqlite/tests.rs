//! Unit tests of the webhooks table: every operator change on a fresh
//! database, cursors checked against the retention window, the change
//! watch, and progress writes that lose to an operator's change.

use std::time::Duration;

use rusqlite::Connection;
use uuid::Uuid;

use super::*;
use crate::event::uuid_floor_at;
use crate::store::open_and_migrate;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const WEEK: Duration = Duration::from_secs(7 * 86_400);

fn db() -> Result<(tempfile::TempDir, std::path::PathBuf, Connection), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("hooks.db");
    let conn = open_and_migrate(&path)?;
    Ok((dir, path, conn))
}

#[test]
fn every_operator_change_round_trips_and_bumps_the_generation() -> TestResult {
    let (_dir, path, conn) = db()?;
    let mut watch = ChangeWatch::default();
    assert!(watch.changed(&path)?, "the first check reports a change");
    assert!(!watch.changed(&path)?);

    let mut new = NewEndpoint::new("hook", "https://receiver.example/in");
    new.filters.source = vec!["kommun.*".into()];
    let (secret, info) = create(&conn, &new, WEEK)?;
    assert!(secret.expose().starts_with("whsec_"));
    assert_eq!(info.state, State::Active);
    assert!(watch.changed(&path)?);
    assert!(matches!(
        create(&conn, &new, WEEK),
        Err(WebhookError::NameTaken(_))
    ));

    let listed = list(&conn)?;
    assert_eq!(listed.len(), 1);
    let json = serde_json::to_string(&listed)?;
    assert!(
        !json.contains(secret.expose()),
        "a listing never shows the secret"
    );

    let change = EndpointUpdate {
        url: Some("https://receiver.example/v2".into()),
        ..Default::default()
    };
    assert_eq!(
        update(&conn, "hook", &change)?.url,
        "https://receiver.example/v2"
    );
    assert!(matches!(
        update(&conn, "nope", &change),
        Err(WebhookError::NotFound(_))
    ));
    assert!(matches!(
        update(&conn, "hook", &EndpointUpdate::default()),
        Err(WebhookError::NothingToUpdate)
    ));

    assert_eq!(set_enabled(&conn, "hook", false)?.state, State::Disabled);
    assert_eq!(set_enabled(&conn, "hook", true)?.state, State::Active);

    let (rotated, until) = rotate_secret(&conn, "hook")?;
    let eps = load_endpoints(&conn)?;
    assert_eq!(eps[0].secret, rotated);
    assert_eq!(eps[0].previous.as_ref().map(|(s, _)| s), Some(&secret));
    let now = Utc::now();
    assert_eq!(eps[0].signing_secrets(now).len(), 2);
    assert_eq!(
        eps[0].signing_secrets(until).len(),
        1,
        "the old secret stops at the end of the overlap"
    );
    assert_eq!(
        get(&conn, "hook")?
            .previous_secret_until
            .map(|t| t.timestamp()),
        Some(until.timestamp())
    );
    assert_eq!(
        eps[0].epoch, 2,
        "enable and disable bump the epoch; update and rotate do not"
    );
    assert_eq!(eps[0].revision, 4);

    assert!(watch.changed(&path)?);
    delete(&conn, "hook")?;
    assert!(list(&conn)?.is_empty());
    assert!(matches!(
        delete(&conn, "hook"),
        Err(WebhookError::NotFound(_))
    ));
    assert!(watch.changed(&path)?);
    Ok(())
}

#[test]
fn since_is_checked_against_the_retention_window() -> TestResult {
    let (_dir, _path, conn) = db()?;
    let now_ms = Utc::now().timestamp_millis() as u64;
    let mut new = NewEndpoint::new("old", "https://r.example/");
    new.since = Since::After(uuid_floor_at(now_ms - 8 * 86_400_000));
    assert!(matches!(
        create(&conn, &new, WEEK),
        Err(WebhookError::CursorExpired { .. })
    ));
    new.since = Since::After(uuid_floor_at(now_ms + 3_600_000));
    assert!(matches!(
        create(&conn, &new, WEEK),
        Err(WebhookError::CursorAhead(_))
    ));
    let inside = uuid_floor_at(now_ms - 86_400_000);
    new.since = Since::After(inside);
    assert_eq!(create(&conn, &new, WEEK)?.1.cursor, inside);
    // A prune mark above the cursor: expired too.
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('pruned_below', ?1)",
        [uuid_floor_at(now_ms - 3_600_000).to_string()],
    )?;
    assert!(matches!(
        replay(&conn, "old", Since::After(inside), WEEK),
        Err(WebhookError::CursorExpired { .. })
    ));
    let replayed = replay(&conn, "old", Since::Now, WEEK)?;
    assert!(replayed.cursor >= uuid_floor_at(now_ms));
    Ok(())
}

#[test]
fn progress_of_an_older_epoch_loses_to_the_operator() -> TestResult {
    let (_dir, _path, conn) = db()?;
    create(&conn, &NewEndpoint::new("hook", "https://r.example/"), WEEK)?;
    let ep = load_endpoints(&conn)?.remove(0);
    let mut p = ep.progress.clone();
    p.cursor = Uuid::from_u128(ep.progress.cursor.as_u128() + 1);
    p.failures = 3;
    save_progress(&conn, &[(ep.id, ep.epoch, p.clone())])?;
    assert_eq!(get(&conn, "hook")?.cursor, p.cursor);
    assert_eq!(get(&conn, "hook")?.failures_in_a_row, 3);
    set_enabled(&conn, "hook", false)?;
    // The worker's save after the disable (its old epoch) is ignored.
    p.state = State::Active;
    save_progress(&conn, &[(ep.id, ep.epoch, p)])?;
    assert_eq!(get(&conn, "hook")?.state, State::Disabled);
    Ok(())
}
