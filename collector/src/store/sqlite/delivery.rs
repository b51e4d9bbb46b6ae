//! The delivery audit: per spool instance of an agent, what was stored,
//! what is missing, and up to where retention retired the records.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{SqliteStore, to_u64};
use crate::store::{Delivery, DeliveryReads, StoreError};

impl DeliveryReads for SqliteStore {
    async fn delivery(&self, project_id: i64, oid: i64) -> Result<Vec<Delivery>, StoreError> {
        let stored = sqlx::query(
            "SELECT b.instance, COUNT(*) AS batches, MIN(b.seq) AS first_seq, MAX(b.seq) AS last_seq,
                    MIN(b.received_ms) AS since
             FROM batches b JOIN agents a ON a.oid = b.oid
             WHERE a.project_id = ? AND b.oid = ? GROUP BY b.instance",
        )
        .bind(project_id)
        .bind(oid)
        .fetch_all(&self.reader)
        .await?;
        let retired = sqlx::query(
            "SELECT w.instance, w.seq FROM dedupe_watermarks w JOIN agents a ON a.oid = w.oid
             WHERE a.project_id = ? AND w.oid = ?",
        )
        .bind(project_id)
        .bind(oid)
        .fetch_all(&self.reader)
        .await?;
        // Instances whose records are all retired come first (oldest).
        let mut by_instance: BTreeMap<String, (i64, Delivery)> = BTreeMap::new();
        for row in &retired {
            let instance: String = row.try_get("instance")?;
            let seq = to_u64(row.try_get("seq")?);
            by_instance.insert(
                instance.clone(),
                (
                    i64::MIN,
                    Delivery {
                        instance,
                        batches: 0,
                        first_seq: 0,
                        last_seq: seq,
                        missing: 0,
                        retired_through_seq: seq,
                    },
                ),
            );
        }
        for row in &stored {
            let instance: String = row.try_get("instance")?;
            let batches = to_u64(row.try_get("batches")?);
            let first_seq = to_u64(row.try_get("first_seq")?);
            let last_seq = to_u64(row.try_get("last_seq")?);
            let since: i64 = row.try_get("since")?;
            let retired_through_seq = by_instance
                .get(&instance)
                .map_or(0, |(_, d)| d.retired_through_seq);
            by_instance.insert(
                instance.clone(),
                (
                    since,
                    Delivery {
                        instance,
                        batches,
                        first_seq,
                        last_seq: last_seq.max(retired_through_seq),
                        missing: (last_seq - first_seq + 1).saturating_sub(batches),
                        retired_through_seq,
                    },
                ),
            );
        }
        let mut list: Vec<(i64, Delivery)> = by_instance.into_values().collect();
        list.sort_by_key(|(since, _)| *since);
        Ok(list.into_iter().map(|(_, d)| d).collect())
    }
}
