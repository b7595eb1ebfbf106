//! Unit tests of the SQLite key operations and of [`SqliteKeys`]' change
//! detection.

use super::*;
use crate::keys::format::check_format;

fn db() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = crate::store::open_and_migrate(&dir.path().join("k.db")).expect("open");
    (dir, conn)
}

#[test]
fn create_list_update_revoke_round_trip() {
    let (_dir, conn) = db();
    let key = create(&conn, &NewKey::new("app")).expect("create");
    assert_eq!(check_format(&key), Ok(()));
    let stored: Vec<u8> = conn
        .query_row("SELECT key_hash FROM api_keys", [], |r| r.get(0))
        .expect("row");
    assert_eq!(stored, hash_key(&key).to_vec());
    let dump: String = conn
        .query_row(
            "SELECT name || scopes || created_at FROM api_keys",
            [],
            |r| r.get(0),
        )
        .expect("row");
    assert!(!dump.contains(&key[5..]));

    assert!(
        matches!(create(&conn, &NewKey::new("app")), Err(KeyError::NameTaken(n)) if n == "app")
    );
    assert!(matches!(
        create(&conn, &NewKey::new("bad name")),
        Err(KeyError::InvalidName { .. })
    ));
    let mut zero = NewKey::new("z");
    zero.max_streams = 0;
    assert!(matches!(
        create(&conn, &zero),
        Err(KeyError::InvalidLimit {
            field: "max-streams",
            ..
        })
    ));
    let mut none = NewKey::new("n");
    none.scopes.clear();
    assert!(matches!(create(&conn, &none), Err(KeyError::NoScopes)));

    update(
        &conn,
        "app",
        &KeyUpdate {
            max_streams: Some(3),
            rate: Some(2.0),
            scopes: Some(vec![Scope::StreamRead, Scope::Admin]),
            ..Default::default()
        },
    )
    .expect("update");
    let listed = list(&conn).expect("list");
    assert_eq!(listed.len(), 1);
    let r = &listed[0];
    assert_eq!(
        (r.name.as_str(), r.max_filters, r.max_streams, r.rate),
        ("app", 20, 3, 2.0)
    );
    assert_eq!(r.scopes, vec![Scope::StreamRead, Scope::Admin]);
    assert!(r.revoked_at.is_none() && r.last_used_at.is_none());
    assert!(chrono::DateTime::parse_from_rfc3339(&r.created_at).is_ok());

    assert!(matches!(
        update(&conn, "nope", &KeyUpdate::default()),
        Err(KeyError::NotFound(_))
    ));
    revoke(&conn, "app").expect("revoke");
    assert!(matches!(
        revoke(&conn, "app"),
        Err(KeyError::AlreadyRevoked(_))
    ));
    assert!(matches!(revoke(&conn, "nope"), Err(KeyError::NotFound(_))));
    assert!(matches!(
        update(&conn, "app", &KeyUpdate::default()),
        Err(KeyError::Revoked(_))
    ));
    assert!(list(&conn).expect("list")[0].revoked_at.is_some());
    let generation: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            params![GENERATION_KEY],
            |r| r.get(0),
        )
        .expect("generation");
    assert_eq!(generation, "3");
}

/// The backend returns rows on the first load and after a key change, not
/// after writes that leave the keys alone (its own last-used writes
/// included); a failed load leaves the change to be seen by the next one.
#[test]
fn the_backend_reloads_only_when_the_keys_changed() {
    let (dir, conn) = db();
    let backend = SqliteKeys::new(dir.path().join("k.db"));
    let first = backend.load().expect("load").expect("first load has rows");
    assert!(first.is_empty());
    assert!(backend.load().expect("load").is_none());

    create(&conn, &NewKey::new("app")).expect("create");
    let rows = backend
        .load()
        .expect("load")
        .expect("a new key is a change");
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].name.as_str(), rows[0].revoked), ("app", false));

    let at = Utc::now();
    backend
        .record_usage(&HashMap::from([(rows[0].id, at)]))
        .expect("record usage");
    assert_eq!(
        list(&conn).expect("list")[0].last_used_at.as_deref(),
        Some(rfc3339(at).as_str())
    );
    assert!(
        backend.load().expect("load").is_none(),
        "a last-used write is not a key change"
    );

    revoke(&conn, "app").expect("revoke");
    backend.fail_next_loads(1);
    assert!(matches!(backend.load(), Err(KeyError::Storage(_))));
    let rows = backend
        .load()
        .expect("load")
        .expect("the revocation is still unseen after the failed load");
    assert!(rows[0].revoked);
}

#[test]
fn database_errors_keep_the_message_and_the_error() {
    let e = KeyError::from(rusqlite::Error::InvalidQuery);
    assert_eq!(
        e.to_string(),
        format!("database: {}", rusqlite::Error::InvalidQuery)
    );
    let KeyError::Storage(inner) = e else {
        panic!("not a storage error: {e:?}");
    };
    assert!(inner.downcast_ref::<rusqlite::Error>().is_some());
}

/// In a running node the last-used writes go through the store's writer (the
/// backend opens no write connection of its own), and they are still not
/// reported as a key change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_store_last_used_writes_go_through_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k.db");
    let store = crate::store::Store::open(
        &path,
        std::time::Duration::from_secs(3600),
        crate::bus::Bus::new(),
    )
    .expect("store");
    let conn = crate::store::open_and_migrate(&path).expect("cli connection");
    create(&conn, &NewKey::new("app")).expect("create");
    let backend = std::sync::Arc::new(SqliteKeys::with_store(&store));
    let b = backend.clone();
    let rows = tokio::task::spawn_blocking(move || b.load())
        .await
        .expect("join")
        .expect("load")
        .expect("rows");
    let at = Utc::now();
    let used = HashMap::from([(rows[0].id, at)]);
    let b = backend.clone();
    tokio::task::spawn_blocking(move || b.record_usage(&used))
        .await
        .expect("join")
        .expect("record usage");
    // The writer's job is done when the call returns: the row is there.
    assert_eq!(
        list(&conn).expect("list")[0].last_used_at.as_deref(),
        Some(rfc3339(at).as_str())
    );
    // No own write connection was opened for it.
    assert!(backend
        .usage
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_none());
    let b = backend.clone();
    let again = tokio::task::spawn_blocking(move || b.load())
        .await
        .expect("join")
        .expect("load");
    assert!(again.is_none(), "a last-used write is not a key change");
}
