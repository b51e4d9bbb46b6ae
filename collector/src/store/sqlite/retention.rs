//! Retention: removes old points, snapshots, events and batch records in
//! short transactions, so ingest never waits long. Never loses what dedupe
//! needs: before a batch record goes, its number is folded into the
//! instance's watermark, in the same transaction.

use super::SqliteStore;
use crate::store::{Purged, Retention, StoreError};

impl Retention for SqliteStore {
    async fn purge_before(
        &self,
        cutoff_ms: i64,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Purged, StoreError> {
        let mut purged = Purged::default();
        let series: Vec<i64> = sqlx::query_scalar("SELECT id FROM series")
            .fetch_all(&self.reader)
            .await?;
        // One short transaction per series.
        for id in series {
            if stop.is_cancelled() {
                return Ok(purged);
            }
            purged.points += sqlx::query("DELETE FROM points WHERE series_id = ? AND ts_ms < ?")
                .bind(id)
                .bind(cutoff_ms)
                .execute(&self.writer)
                .await?
                .rows_affected();
        }
        {
            // Series left with no points go, and the sink's cache with
            // them; the sink holds this lock for its whole transaction.
            let mut cache = self.series.lock().await;
            purged.series = sqlx::query(
                "DELETE FROM series WHERE NOT EXISTS (SELECT 1 FROM points p WHERE p.series_id = series.id)",
            )
            .execute(&self.writer)
            .await?
            .rows_affected();
            if purged.series > 0 {
                cache.clear();
            }
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
