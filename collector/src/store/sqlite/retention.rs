//! Retention: removes old points, snapshots, events and batch records in
//! short transactions, so ingest never waits long. Points go exactly at
//! the cutoff: whole chunks that end before it are deleted, a chunk across
//! it is rewritten with only its newer points, head rows before it are
//! deleted; a series goes when no chunk and no head row holds it. Never loses what dedupe
//! needs: before a batch record goes, its number is folded into the
//! instance's watermark, in the same transaction.

use std::collections::HashSet;

use sqlx::sqlite::SqlitePool;

use super::compact::{cut, write_chunks};
use super::{SqliteStore, points, to_u64};
use crate::store::{DbPurged, LogsPurged, Purged, Retention, StoreError, UrlPurged};

/// Series whose chunks one transaction trims.
const SERIES_PER_STEP: usize = 256;

/// Deletes the chunks of `ids` that end before the cutoff and trims the
/// one a series may have across it (rewritten without its old points), so
/// what is kept is exactly the points at or after the cutoff. Returns the
/// points removed.
async fn purge_chunks(writer: &SqlitePool, ids: &[i64], cutoff_ms: i64) -> Result<u64, StoreError> {
    let mut removed = 0;
    let mut tx = writer.begin().await?;
    for &id in ids {
        let whole: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM chunks WHERE series_id = ? AND end_ms < ? RETURNING points",
        )
        .bind(id)
        .bind(cutoff_ms)
        .fetch_all(&mut *tx)
        .await?;
        removed += whole.into_iter().map(to_u64).sum::<u64>();
        let across: Vec<Vec<u8>> = sqlx::query_scalar(
            "DELETE FROM chunks WHERE series_id = ? AND start_ms < ? RETURNING data",
        )
        .bind(id)
        .bind(cutoff_ms)
        .fetch_all(&mut *tx)
        .await?;
        for blob in across {
            let mut kept = points::decode_chunk(&blob)?;
            let before = kept.len();
            kept.retain(|(ts, _)| *ts >= cutoff_ms);
            removed += (before - kept.len()) as u64;
            write_chunks(&mut tx, &cut(id, &kept)).await?;
        }
    }
    tx.commit().await?;
    Ok(removed)
}

impl SqliteStore {
    /// Deletes an agent's series that have no chunk and no value in its
    /// head rows, and clears the sink's cache when it did. Holds the
    /// series lock throughout, as the sink does for its transaction, so a
    /// series cannot be used and deleted at once.
    async fn purge_empty_series(&self, oid: i64) -> Result<u64, StoreError> {
        let mut cache = self.series.lock().await;
        let mut tx = self.writer.begin().await?;
        let empty: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM series s WHERE s.oid = ?
             AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.series_id = s.id)",
        )
        .bind(oid)
        .fetch_all(&mut *tx)
        .await?;
        if empty.is_empty() {
            return Ok(0);
        }
        let mut empty: HashSet<i64> = empty.into_iter().collect();
        let head: Vec<Vec<u8>> = sqlx::query_scalar("SELECT data FROM metric_rows WHERE oid = ?")
            .bind(oid)
            .fetch_all(&mut *tx)
            .await?;
        for blob in head {
            for (id, _) in points::decode_row(&blob)? {
                empty.remove(&id);
            }
        }
        for &id in &empty {
            sqlx::query("DELETE FROM series WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        if !empty.is_empty() {
            cache.clear();
            self.series_changed();
        }
        Ok(empty.len() as u64)
    }
}

impl Retention for SqliteStore {
    async fn purge_logs(
        &self,
        cutoff_ms: i64,
        max_bytes: u64,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<LogsPurged, StoreError> {
        super::logs::purge(self, cutoff_ms, max_bytes, stop).await
    }

    async fn purge_db(
        &self,
        cutoff_ms: i64,
        max_bytes: u64,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<DbPurged, StoreError> {
        super::db::purge(self, cutoff_ms, max_bytes, stop).await
    }

    async fn purge_url(
        &self,
        cutoff_ms: i64,
        max_bytes: u64,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<UrlPurged, StoreError> {
        super::url::purge(self, cutoff_ms, max_bytes, stop).await
    }

    async fn purge_before(
        &self,
        cutoff_ms: i64,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Purged, StoreError> {
        let mut purged = Purged::default();
        let series: Vec<i64> = sqlx::query_scalar("SELECT id FROM series ORDER BY id")
            .fetch_all(&self.reader)
            .await?;
        for ids in series.chunks(SERIES_PER_STEP) {
            if stop.is_cancelled() {
                return Ok(purged);
            }
            purged.points += purge_chunks(&self.writer, ids, cutoff_ms).await?;
        }
        loop {
            if stop.is_cancelled() {
                return Ok(purged);
            }
            let removed: Vec<i64> = sqlx::query_scalar(
                "DELETE FROM metric_rows WHERE id IN
                    (SELECT id FROM metric_rows WHERE ts_ms < ? LIMIT 2000)
                 RETURNING points",
            )
            .bind(cutoff_ms)
            .fetch_all(&self.writer)
            .await?;
            if removed.is_empty() {
                break;
            }
            purged.points += removed.into_iter().map(to_u64).sum::<u64>();
        }
        let agents: Vec<i64> = sqlx::query_scalar("SELECT DISTINCT oid FROM series")
            .fetch_all(&self.reader)
            .await?;
        for oid in agents {
            if stop.is_cancelled() {
                return Ok(purged);
            }
            purged.series += self.purge_empty_series(oid).await?;
        }
        purged.snapshots = sqlx::query("DELETE FROM process_snapshots WHERE ts_ms < ?")
            .bind(cutoff_ms)
            .execute(&self.writer)
            .await?
            .rows_affected();
        purged.events = sqlx::query("DELETE FROM events WHERE ts_ms < ?")
            .bind(cutoff_ms)
            .execute(&self.writer)
            .await?
            .rows_affected();
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO dedupe_watermarks (oid, instance, seq)
             SELECT oid, instance, MAX(seq) FROM batches WHERE received_ms < ?1 GROUP BY oid, instance
             ON CONFLICT (oid, instance) DO UPDATE SET seq = MAX(seq, excluded.seq)",
        )
        .bind(cutoff_ms)
        .execute(&mut *tx)
        .await?;
        purged.batches = sqlx::query("DELETE FROM batches WHERE received_ms < ?")
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(purged)
    }
}
