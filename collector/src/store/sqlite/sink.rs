//! The exactly-once core: a group of batches in one transaction, each
//! batch's record inserted first and its rows only when the record is new.
//! Knows no product: each payload goes to its product's file through
//! [`store_payload`].

use sqlx::{Sqlite, Transaction};

use super::metrics::PendingSeries;
use super::{SqliteStore, to_i64};
use crate::model::BatchPayload;
use crate::store::{BatchSink, BatchToStore, StoreError, Stored};

impl BatchSink for SqliteStore {
    async fn store_batches(&self, group: &[BatchToStore]) -> Result<Vec<Stored>, StoreError> {
        let mut cache = self.series.lock().await;
        let mut pending = PendingSeries::new(&cache, self.limits.series_per_agent);
        let mut tx = self.writer.begin().await?;
        let mut answers = Vec::with_capacity(group.len());
        for item in group {
            answers.push(store_one(&mut tx, &mut pending, item).await?);
        }
        tx.commit().await?;
        let created = pending.into_created();
        cache.remember(created);
        Ok(answers)
    }
}

async fn store_one(
    tx: &mut Transaction<'static, Sqlite>,
    series: &mut PendingSeries<'_>,
    item: &BatchToStore,
) -> Result<Stored, StoreError> {
    let seq = to_i64(item.batch.seq);
    // Retention removed the records up to the watermark; those numbers
    // stay taken (the dedupe check, part 2).
    let retired: Option<i64> =
        sqlx::query_scalar("SELECT seq FROM dedupe_watermarks WHERE oid = ? AND instance = ?")
            .bind(item.oid)
            .bind(&item.instance)
            .fetch_optional(&mut **tx)
            .await?;
    if retired.is_some_and(|w| seq <= w) {
        return Ok(Stored::Duplicate);
    }
    // The dedupe check, part 1: the record exists, the batch was stored.
    let inserted = sqlx::query(
        "INSERT INTO batches (oid, instance, seq, time_ms, received_ms) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (oid, instance, seq) DO NOTHING",
    )
    .bind(item.oid)
    .bind(&item.instance)
    .bind(seq)
    .bind(item.batch.time_ms)
    .bind(item.received_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(Stored::Duplicate);
    }
    let mut samples_refused = 0;
    for payload in &item.batch.payloads {
        samples_refused += store_payload(tx, series, item, payload).await?;
    }
    let health = item
        .batch
        .health
        .as_ref()
        .map(serde_json::to_string)
        .transpose()?;
    sqlx::query(
        "UPDATE agents SET last_seen_ms = MAX(last_seen_ms, ?), health = COALESCE(?, health), quiet = 0
         WHERE oid = ?",
    )
    .bind(item.received_ms)
    .bind(health)
    .bind(item.oid)
    .execute(&mut **tx)
    .await?;
    Ok(Stored::New { samples_refused })
}

/// Writes one payload with its product's rows; returns samples refused.
/// A new product adds one arm here.
async fn store_payload(
    tx: &mut Transaction<'static, Sqlite>,
    series: &mut PendingSeries<'_>,
    item: &BatchToStore,
    payload: &BatchPayload,
) -> Result<u64, StoreError> {
    match payload {
        BatchPayload::Metrics { time_ms, samples } => {
            super::metrics::insert(tx, series, item.oid, *time_ms, samples).await
        }
        BatchPayload::Events(events) => {
            for event in events {
                super::events::insert(tx, item.project_id, Some(item.oid), event).await?;
            }
            Ok(0)
        }
        BatchPayload::Processes(snapshot) => {
            super::infra::insert_snapshot(tx, item.oid, snapshot).await?;
            Ok(0)
        }
    }
}
