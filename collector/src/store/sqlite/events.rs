//! Event rows (agents' and the collector's own) and their reads.

use sqlx::{Row, Sqlite, Transaction};

use super::SqliteStore;
use crate::model::{EventQuery, EventRow, StoredEvent};
use crate::store::{EventReads, StoreError};

/// Writes one event.
pub(super) async fn insert(
    tx: &mut Transaction<'static, Sqlite>,
    project_id: i64,
    oid: Option<i64>,
    event: &EventRow,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (project_id, oid, ts_ms, kind, severity, message, attrs) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(project_id)
    .bind(oid)
    .bind(event.time_ms)
    .bind(&event.kind)
    .bind(&event.severity)
    .bind(&event.message)
    .bind(serde_json::to_string(&event.attrs)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl EventReads for SqliteStore {
    async fn events(
        &self,
        project_id: i64,
        query: &EventQuery,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.id, e.oid, a.oname, e.ts_ms, e.kind, e.severity, e.message, e.attrs
             FROM events e LEFT JOIN agents a ON a.oid = e.oid
             WHERE e.project_id = ?1 AND e.ts_ms BETWEEN ?2 AND ?3
               AND (?4 IS NULL OR e.oid = ?4) AND (?5 IS NULL OR e.kind = ?5)
             ORDER BY e.ts_ms DESC, e.id DESC LIMIT ?6",
        )
        .bind(project_id)
        .bind(query.from_ms)
        .bind(query.to_ms)
        .bind(query.oid)
        .bind(query.kind.as_deref())
        .bind(query.limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                let attrs: String = row.try_get("attrs")?;
                Ok(StoredEvent {
                    id: row.try_get("id")?,
                    oid: row.try_get("oid")?,
                    oname: row.try_get("oname")?,
                    event: EventRow {
                        time_ms: row.try_get("ts_ms")?,
                        kind: row.try_get("kind")?,
                        severity: row.try_get("severity")?,
                        message: row.try_get("message")?,
                        attrs: serde_json::from_str(&attrs)?,
                    },
                })
            })
            .collect()
    }
}
