//! The SQLite implementation of the [`EventLog`] seam on [`Store`]: paged
//! reads after a cursor, the retention floor, head, prune mark and the
//! watermark that never passes an uncommitted id.

use std::sync::Arc;

use chrono::Utc;
use rusqlite::{Connection, OptionalExtension};
use uuid::Uuid;

use super::error::StoreError;
use super::Store;
use crate::event::{uuid_floor_at, SourceType};
use crate::log::{EventLog, LogError, LogRow, ReadScope};

impl EventLog for Store {
    fn read_after(
        &self,
        after: Uuid,
        limit: usize,
        scope: &ReadScope,
    ) -> Result<Vec<LogRow>, LogError> {
        let mut out = Vec::with_capacity(limit.min(4096));
        self.read_blocking(|c| {
            read_after_visit(c, after, limit, scope, &mut |id, sid, st, json| {
                out.push(LogRow {
                    id,
                    source_id: sid.to_owned(),
                    source_type: st,
                    json: Arc::from(json),
                });
            })
        })?;
        Ok(out)
    }

    fn read_after_with(
        &self,
        after: Uuid,
        limit: usize,
        scope: &ReadScope,
        f: &mut dyn FnMut(Uuid, &str, SourceType, &str),
    ) -> Result<usize, LogError> {
        Ok(self.read_blocking(|c| read_after_visit(c, after, limit, scope, f))?)
    }

    fn retention_floor(&self) -> Uuid {
        let now_ms = Utc::now().timestamp_millis().max(0) as u64;
        let floor_ms = now_ms.saturating_sub(self.inner.retention.as_millis() as u64);
        let by_time = uuid_floor_at(floor_ms);
        self.pruned_below().unwrap_or(by_time).max(by_time)
    }

    fn pruned_below(&self) -> Result<Uuid, LogError> {
        let v: Option<String> = self.read_blocking(|c| {
            Ok(
                c.query_row("SELECT value FROM meta WHERE key='pruned_below'", [], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })?;
        v.map_or(Ok(Uuid::nil()), |s| {
            Uuid::parse_str(&s)
                .map_err(|e| LogError::Corrupt(format!("meta pruned_below {s:?}: {e}")))
        })
    }

    fn watermark(&self) -> Result<Uuid, LogError> {
        let mut ids = self
            .inner
            .ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now_ms = Utc::now().timestamp_millis().max(0) as u64;
        Ok(ids.advance_to(uuid_floor_at(now_ms)))
    }

    fn head(&self) -> Result<Option<Uuid>, LogError> {
        Ok(self.read_blocking(|c| {
            let b: Option<Vec<u8>> = c
                .query_row("SELECT id FROM events ORDER BY id DESC LIMIT 1", [], |r| {
                    r.get(0)
                })
                .optional()?;
            b.map(|b| Uuid::from_slice(&b).map_err(|e| StoreError::Corrupt(e.to_string())))
                .transpose()
        })?)
    }
}

fn read_after_visit(
    c: &Connection,
    after: Uuid,
    limit: usize,
    scope: &ReadScope,
    f: &mut dyn FnMut(Uuid, &str, SourceType, &str),
) -> Result<usize, StoreError> {
    let mut sql = String::from("SELECT id, source_id, source_type, json FROM events WHERE id > ?1");
    let mut args: Vec<rusqlite::types::Value> = vec![after.as_bytes().to_vec().into()];
    if !scope.sources.is_empty() || !scope.prefixes.is_empty() {
        let mut ors = Vec::new();
        for s in &scope.sources {
            args.push(s.clone().into());
            ors.push(format!("source_id = ?{}", args.len()));
        }
        for p in &scope.prefixes {
            // Range on the prefix: [p, p + 0xFF) — ids are ASCII so this is exact.
            args.push(p.clone().into());
            let lo = args.len();
            args.push(format!("{p}\u{10FFFF}").into());
            ors.push(format!(
                "(source_id >= ?{lo} AND source_id < ?{})",
                args.len()
            ));
        }
        sql.push_str(&format!(" AND ({})", ors.join(" OR ")));
    }
    if !scope.types.is_empty() {
        let list: Vec<String> = scope
            .types
            .iter()
            .map(|t| (t.as_index() as i64).to_string())
            .collect();
        sql.push_str(&format!(" AND source_type IN ({})", list.join(",")));
    }
    sql.push_str(" ORDER BY id LIMIT ");
    sql.push_str(&limit.to_string());
    let mut stmt = c.prepare_cached(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let id = r
            .get_ref(0)?
            .as_blob()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let id = Uuid::from_slice(id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let st: i64 = r.get(2)?;
        let source_type = *SourceType::ALL
            .get(st as usize)
            .ok_or_else(|| StoreError::Corrupt(format!("source_type {st}")))?;
        let sid = r
            .get_ref(1)?
            .as_str()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let json = r
            .get_ref(3)?
            .as_str()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        f(id, sid, source_type, json);
        n += 1;
    }
    Ok(n)
}
