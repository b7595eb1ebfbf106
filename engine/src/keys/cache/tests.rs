//! Unit tests of the key cache: through an in-memory backend (what a reload
//! does to keys and open streams, usage flushing) and through SQLite (a
//! failed reload is retried).

use super::*;
use crate::keys::format::generate;
use crate::keys::{create, revoke, NewKey, SqliteKeys};

/// Wakes the refresher and waits (generously) until a refresh that
/// started after this call has finished: what `check_fresh` does, without
/// its short deadline, as a clock-free way to step the refresher.
async fn refresh_once(keys: &KeyCache) {
    let ticket = keys.shared.requested.fetch_add(1, Ordering::SeqCst) + 1;
    let mut covered = keys.shared.covered.subscribe();
    keys.shared.wake.notify_one();
    let done =
        tokio::time::timeout(Duration::from_secs(30), covered.wait_for(|c| *c >= ticket)).await;
    assert!(matches!(done, Ok(Ok(_))), "the refresher never ran");
}

/// A backend whose next load returns what the test put there.
#[derive(Default)]
struct MemoryKeys {
    next: Mutex<Option<Vec<KeyRow>>>,
    used: Mutex<HashMap<i64, DateTime<Utc>>>,
}

impl MemoryKeys {
    fn set(&self, rows: Vec<KeyRow>) {
        *self.next.lock().expect("lock") = Some(rows);
    }
}

impl KeyBackend for MemoryKeys {
    fn load(&self) -> Result<Option<Vec<KeyRow>>, KeyError> {
        Ok(self.next.lock().expect("lock").take())
    }

    fn record_usage(&self, used: &HashMap<i64, DateTime<Utc>>) -> Result<(), KeyError> {
        self.used.lock().expect("lock").extend(used);
        Ok(())
    }
}

fn row(id: i64, key: &str, scopes: &[Scope]) -> KeyRow {
    KeyRow {
        id,
        name: format!("k{id}"),
        hash: hash_key(key),
        scopes: scopes.to_vec(),
        max_filters: 20,
        max_streams: 10,
        rate: 10.0,
        revoked: false,
    }
}

#[tokio::test]
async fn reloads_revoke_change_and_keep_keys_through_any_backend() {
    let (a, b, c) = (generate(), generate(), generate());
    let backend = Arc::new(MemoryKeys::default());
    let read = [Scope::StreamRead];
    let both = [Scope::StreamRead, Scope::Admin];
    backend.set(vec![
        row(1, &a, &read),
        row(2, &b, &both),
        row(3, &c, &read),
    ]);
    let cancel = CancellationToken::new();
    let keys = KeyCache::open(backend.clone(), cancel.clone())
        .await
        .expect("open");
    assert_eq!(keys.active_count(), 3);
    let (ia, ib, ic) = (
        keys.verify(&a).expect("a"),
        keys.verify(&b).expect("b"),
        keys.verify(&c).expect("c"),
    );
    assert!(matches!(keys.check(&generate()), Verdict::Unknown));
    assert!(matches!(
        keys.check("lstr_x"),
        Verdict::Malformed(FormatError::Length)
    ));

    // a: revoked; b: loses stream:read; c: a new rate.
    let mut ra = row(1, &a, &read);
    ra.revoked = true;
    let rb = row(2, &b, &[Scope::Admin]);
    let mut rc = row(3, &c, &read);
    rc.rate = 2.0;
    backend.set(vec![ra, rb, rc]);
    refresh_once(&keys).await;

    assert!(matches!(keys.check(&a), Verdict::Revoked { name } if name == "k1"));
    assert!(ia.revoked.is_cancelled(), "a revoked key's streams close");
    assert!(
        ib.revoked.is_cancelled(),
        "losing stream:read closes streams"
    );
    let nb = keys.verify(&b).expect("b still works for admin");
    assert!(!nb.revoked.is_cancelled() && !nb.has(Scope::StreamRead));
    assert!(
        !ic.revoked.is_cancelled(),
        "a new limit leaves streams open"
    );
    let nc = keys.verify(&c).expect("c");
    assert_eq!(nc.rate, 2.0);
    assert_eq!(ic.rate, 10.0, "open streams keep the limits they had");
    assert_eq!(keys.active_count(), 2);

    // Deleted from the backend: gone, like a revocation.
    backend.set(vec![]);
    refresh_once(&keys).await;
    assert!(nc.revoked.is_cancelled());
    assert!(matches!(keys.check(&c), Verdict::Unknown));

    // Uses are flushed to the backend at shutdown at the latest.
    cancel.cancel();
    let used = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = backend.used.lock().expect("lock").len();
            if n == 3 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(used.ok(), Some(3), "every used key's last use was recorded");
}

/// A reload that fails (a transient database error) is retried on the
/// next tick: a key revoked just before it is refused one refresh later,
/// not after the next full reload.
#[tokio::test]
async fn a_revocation_seen_by_a_failed_reload_applies_on_the_next_refresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k.db");
    let conn = crate::store::open_and_migrate(&path).expect("open");
    let key = create(&conn, &NewKey::new("app")).expect("create");
    let backend = Arc::new(SqliteKeys::new(&path));
    let cancel = CancellationToken::new();
    let keys = KeyCache::open(backend.clone(), cancel.clone())
        .await
        .expect("open");
    assert!(matches!(keys.check(&key), Verdict::Valid(_)));

    backend.fail_next_loads(1);
    revoke(&conn, "app").expect("revoke");
    for _ in 0..100 {
        if backend.failures_left() == 0 {
            break;
        }
        refresh_once(&keys).await;
    }
    assert_eq!(
        backend.failures_left(),
        0,
        "the refresher never reloaded after the revocation"
    );
    refresh_once(&keys).await;
    assert!(
        matches!(keys.check(&key), Verdict::Revoked { .. }),
        "a revoked key still works one refresh after a failed reload"
    );
    cancel.cancel();
}
