//! The server agent's own rows (process snapshots) and their reads.

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use super::SqliteStore;
use crate::model::{ProcessRow, SnapshotRow};
use crate::store::{InfraReads, StoreError};

/// Writes one process snapshot.
pub(super) async fn insert_snapshot(
    tx: &mut Transaction<'static, Sqlite>,
    oid: i64,
    snapshot: &SnapshotRow,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO process_snapshots (oid, ts_ms, reason, total, state_counts, processes)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(oid)
    .bind(snapshot.time_ms)
    .bind(&snapshot.reason)
    .bind(i64::from(snapshot.total))
    .bind(serde_json::to_string(&snapshot.state_counts)?)
    .bind(serde_json::to_string(&snapshot.processes)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn snapshot_from_row(row: &SqliteRow) -> Result<SnapshotRow, StoreError> {
    let state_counts: String = row.try_get("state_counts")?;
    let processes: String = row.try_get("processes")?;
    let total: i64 = row.try_get("total")?;
    Ok(SnapshotRow {
        time_ms: row.try_get("ts_ms")?,
        reason: row.try_get("reason")?,
        total: u32::try_from(total).unwrap_or(0),
        state_counts: serde_json::from_str(&state_counts)?,
        processes: serde_json::from_str::<Vec<ProcessRow>>(&processes)?,
    })
}

impl InfraReads for SqliteStore {
    async fn process_snapshot(
        &self,
        project_id: i64,
        oid: i64,
        at_ms: Option<i64>,
        reason: Option<&str>,
    ) -> Result<Option<SnapshotRow>, StoreError> {
        // The agent must be the project's: otherwise nothing.
        let ours: Option<i64> =
            sqlx::query_scalar("SELECT oid FROM agents WHERE oid = ? AND project_id = ?")
                .bind(oid)
                .bind(project_id)
                .fetch_optional(&self.reader)
                .await?;
        if ours.is_none() {
            return Ok(None);
        }
        let row = match at_ms {
            None => {
                sqlx::query(
                    "SELECT ts_ms, reason, total, state_counts, processes FROM process_snapshots
                     WHERE oid = ?1 AND (?2 IS NULL OR reason = ?2)
                     ORDER BY ts_ms DESC LIMIT 1",
                )
                .bind(oid)
                .bind(reason)
                .fetch_optional(&self.reader)
                .await?
            }
            Some(at) => {
                // The nearest on either side, each found through the index.
                sqlx::query(
                    "SELECT * FROM (
                        SELECT * FROM (SELECT ts_ms, reason, total, state_counts, processes FROM process_snapshots
                            WHERE oid = ?1 AND (?2 IS NULL OR reason = ?2) AND ts_ms <= ?3
                            ORDER BY ts_ms DESC LIMIT 1)
                        UNION ALL
                        SELECT * FROM (SELECT ts_ms, reason, total, state_counts, processes FROM process_snapshots
                            WHERE oid = ?1 AND (?2 IS NULL OR reason = ?2) AND ts_ms > ?3
                            ORDER BY ts_ms ASC LIMIT 1)
                     ) ORDER BY ABS(ts_ms - ?3) LIMIT 1",
                )
                .bind(oid)
                .bind(reason)
                .bind(at)
                .fetch_optional(&self.reader)
                .await?
            }
        };
        row.as_ref().map(snapshot_from_row).transpose()
    }

    async fn snapshot_times(
        &self,
        project_id: i64,
        oid: i64,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT ps.ts_ms, ps.reason FROM process_snapshots ps JOIN agents a ON a.oid = ps.oid
             WHERE a.project_id = ? AND ps.oid = ? AND ps.ts_ms BETWEEN ? AND ?
             ORDER BY ps.ts_ms DESC, ps.id DESC LIMIT ?",
        )
        .bind(project_id)
        .bind(oid)
        .bind(from_ms)
        .bind(to_ms)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("ts_ms")?, row.try_get("reason")?)))
            .collect()
    }

    async fn latest_snapshots(
        &self,
        project_id: i64,
        reason: &str,
        since_ms: i64,
    ) -> Result<Vec<(i64, SnapshotRow)>, StoreError> {
        let rows = sqlx::query(
            "SELECT ps.oid, ps.ts_ms, ps.reason, ps.total, ps.state_counts, ps.processes
             FROM agents a
             JOIN process_snapshots ps ON ps.id = (
                 SELECT id FROM process_snapshots
                 WHERE oid = a.oid AND reason = ?2 ORDER BY ts_ms DESC LIMIT 1)
             WHERE a.project_id = ?1 AND ps.ts_ms >= ?3",
        )
        .bind(project_id)
        .bind(reason)
        .bind(since_ms)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("oid")?, snapshot_from_row(row)?)))
            .collect()
    }
}
