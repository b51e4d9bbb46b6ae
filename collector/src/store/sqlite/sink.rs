//! The exactly-once core: a group of batches in one transaction, each
//! batch's record inserted first and its rows only when the record is new.
//! Knows no product: each payload goes to its product's file through
//! [`store_payload`].
//!
//! Few statements per group (each one crosses to sqlx's SQLite thread):
//! one per batch for its record, the head rows of the whole group together
//! (one row per metrics payload, [`super::metrics`]), one update per agent
//! for its last-seen time and health.

use std::collections::HashMap;

use sqlx::{Sqlite, Transaction};

use super::metrics::{HeadRows, PendingSeries};
use super::{SqliteStore, to_i64};
use crate::model::{AgentHealth, BatchPayload};
use crate::store::{BatchSink, BatchToStore, StoreError, Stored};

/// What one group writes besides records: a head row per metrics
/// payload, and per agent its newest time and health.
#[derive(Default)]
struct GroupRows {
    head: HeadRows,
    seen: HashMap<i64, (i64, Option<AgentHealth>)>,
    logs: super::logs::LogRows,
    known_templates: std::collections::HashSet<(i64, u64)>,
}

impl BatchSink for SqliteStore {
    async fn store_batches(&self, group: &[BatchToStore]) -> Result<Vec<Stored>, StoreError> {
        let mut cache = self.series.lock().await;
        let mut pending = PendingSeries::new(&cache, self.limits.series_per_agent);
        let mut rows = GroupRows::default();
        let chunks: Vec<_> = group
            .iter()
            .flat_map(|item| &item.batch.payloads)
            .filter_map(|p| match p {
                // A block ingest did not encode ahead.
                BatchPayload::Logs(logs) if logs.block.is_none() => Some(logs.chunk.clone()),
                _ => None,
            })
            .collect();
        if !chunks.is_empty() {
            // Compression, tokens and shapes on the blocking pool, all
            // chunks at once, before the writer is held.
            rows.logs.encoded = super::logs::encode_all(chunks).await;
        }
        let has_logs = group
            .iter()
            .flat_map(|item| &item.batch.payloads)
            .any(|p| matches!(p, BatchPayload::Logs(_)));
        if has_logs {
            rows.known_templates = self.known_templates();
        }
        // Read under the series lock: terminating holds it too.
        let terminated = self
            .terminated
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut tx = self.writer.begin().await?;
        let mut answers = Vec::with_capacity(group.len());
        for item in group {
            answers.push(store_one(&mut tx, &mut pending, &mut rows, &terminated, item).await?);
        }
        super::metrics::flush(&mut tx, &rows.head).await?;
        for (oid, (seen_ms, health)) in rows.seen {
            let health = health.as_ref().map(serde_json::to_string).transpose()?;
            sqlx::query(
                "UPDATE agents SET last_seen_ms = MAX(last_seen_ms, ?), health = COALESCE(?, health), quiet = 0
                 WHERE oid = ?",
            )
            .bind(seen_ms)
            .bind(health)
            .bind(oid)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let created = pending.into_created();
        if cache.remember(created) {
            self.series_changed();
        }
        self.logs_committed(rows.logs);
        Ok(answers)
    }
}

async fn store_one(
    tx: &mut Transaction<'static, Sqlite>,
    series: &mut PendingSeries<'_>,
    rows: &mut GroupRows,
    terminated: &std::collections::HashSet<i64>,
    item: &BatchToStore,
) -> Result<Stored, StoreError> {
    if terminated.contains(&item.oid) {
        return Ok(Stored::Terminated);
    }
    // The dedupe check: a record exists (the batch was stored), or
    // retention retired the number (it is at or below the instance's
    // watermark); either way nothing is inserted.
    let inserted = sqlx::query(
        "INSERT INTO batches (oid, instance, seq, time_ms, received_ms)
         SELECT ?1, ?2, ?3, ?4, ?5
         WHERE NOT EXISTS (SELECT 1 FROM dedupe_watermarks WHERE oid = ?1 AND instance = ?2 AND seq >= ?3)
         ON CONFLICT (oid, instance, seq) DO NOTHING",
    )
    .bind(item.oid)
    .bind(&item.instance)
    .bind(to_i64(item.batch.seq))
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
        samples_refused += store_payload(tx, series, rows, item, payload).await?;
    }
    let seen = rows
        .seen
        .entry(item.oid)
        .or_insert((item.received_ms, None));
    seen.0 = seen.0.max(item.received_ms);
    if item.batch.health.is_some() {
        seen.1.clone_from(&item.batch.health);
    }
    Ok(Stored::New { samples_refused })
}

/// Writes one payload with its product's rows; returns samples refused.
/// A new product adds one arm here.
async fn store_payload(
    tx: &mut Transaction<'static, Sqlite>,
    series: &mut PendingSeries<'_>,
    rows: &mut GroupRows,
    item: &BatchToStore,
    payload: &BatchPayload,
) -> Result<u64, StoreError> {
    match payload {
        BatchPayload::Metrics { time_ms, samples } => {
            super::metrics::insert(tx, series, &mut rows.head, item.oid, *time_ms, samples).await
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
        BatchPayload::Logs(logs) => {
            super::logs::insert(
                tx,
                &rows.known_templates,
                &mut rows.logs,
                item.project_id,
                item.oid,
                logs,
            )
            .await?;
            Ok(0)
        }
        BatchPayload::Db(snapshot) => {
            super::db::insert(tx, item.project_id, item.oid, snapshot).await?;
            Ok(0)
        }
        BatchPayload::Url(checks) => {
            super::url::insert(tx, item.project_id, item.oid, checks).await?;
            Ok(0)
        }
    }
}
