//! Retention: removes old points, snapshots, events and batch records in
//! short transactions, so ingest never waits long. Never loses what dedupe
//! needs: before a batch record goes, its number is folded into the
//! instance's watermark, in the same transaction.

use super::SqliteStore;
use super::metrics::LAST_MS_SLACK;
use crate::store::{Purged, Retention, StoreError};

impl Retention for SqliteStore {
    async fn purge_before(
        &self,
        cutoff_ms: i64,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Purged, StoreError> {
        let mut purged = Purged::default();
        let agents: Vec<i64> = sqlx::query_scalar("SELECT oid FROM agents")
            .fetch_all(&self.reader)
            .await?;
        // One short transaction per agent.
        for oid in agents {
            if stop.is_cancelled() {
                return Ok(purged);
            }
            let mut tx = self.writer.begin().await?;
            let points: i64 = sqlx::query_scalar(
                "SELECT COALESCE(SUM(n), 0) FROM readings WHERE oid = ? AND ts_ms < ?",
            )
            .bind(oid)
            .bind(cutoff_ms)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM readings WHERE oid = ? AND ts_ms < ?")
                .bind(oid)
                .bind(cutoff_ms)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            purged.points += super::to_u64(points);
        }
        {
            // Series with no point left: their last_ms (which may lag by
            // the slack) is older than the cutoff by more than the slack.
            // The sink holds this lock for its whole transaction, and its
            // cache goes with the series.
            let mut cache = self.series.lock().await;
            purged.series = sqlx::query("DELETE FROM series WHERE last_ms < ?")
                .bind(cutoff_ms.saturating_sub(LAST_MS_SLACK))
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
