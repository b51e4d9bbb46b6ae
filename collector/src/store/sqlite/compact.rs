//! Compaction: moves head rows ([`super::metrics`]) older than a horizon
//! into per-series chunks, as Prometheus cuts its head into blocks.
//!
//! One step takes one agent's old head rows (at most [`STEP_ROWS`]),
//! writes their points into chunks and deletes those rows in one
//! transaction: a crash leaves either the rows or the chunks, never both.
//! Chunks are keyed `(series_id, start_ms)` and written with `INSERT OR
//! REPLACE`, so a step run again replaces what it wrote. Chunks of a series
//! never overlap: points that reach back into chunks already written (a
//! late batch) are merged with those chunks, which are rewritten.
//!
//! Never holds the writer for more than one step; the background task
//! stops on shutdown ([`Compactor::stop`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use sqlx::sqlite::SqlitePool;
use sqlx::{Row, Sqlite, Transaction};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::points;
use crate::store::StoreError;

/// Points in one chunk at most (20 minutes at a 5 s interval; the blob
/// stays near 1 KiB, inside a table page).
pub(super) const CHUNK_POINTS: usize = 240;
/// Head rows one step compacts at most.
const STEP_ROWS: i64 = 240;
/// Head rows younger than this stay in the head.
pub(super) const HORIZON_MS: i64 = 10 * 60_000;
/// How often the task looks for old head rows.
const EVERY: Duration = Duration::from_secs(5);

/// One chunk, ready to write.
pub(super) struct Chunk {
    series_id: i64,
    start_ms: i64,
    end_ms: i64,
    points: i64,
    data: Vec<u8>,
}

/// Cuts one series' points (time order, each time once) into chunks.
pub(super) fn cut(series_id: i64, points: &[(i64, f64)]) -> Vec<Chunk> {
    points
        .chunks(CHUNK_POINTS)
        .filter_map(|piece| {
            let (first, last) = (piece.first()?, piece.last()?);
            Some(Chunk {
                series_id,
                start_ms: first.0,
                end_ms: last.0,
                points: super::to_i64(piece.len() as u64),
                data: points::encode_chunk(piece),
            })
        })
        .collect()
}

const INSERT_CHUNKS_16: &str =
    "INSERT OR REPLACE INTO chunks (series_id, start_ms, end_ms, points, data) VALUES
    (?, ?, ?, ?, ?), (?, ?, ?, ?, ?), (?, ?, ?, ?, ?), (?, ?, ?, ?, ?),
    (?, ?, ?, ?, ?), (?, ?, ?, ?, ?), (?, ?, ?, ?, ?), (?, ?, ?, ?, ?),
    (?, ?, ?, ?, ?), (?, ?, ?, ?, ?), (?, ?, ?, ?, ?), (?, ?, ?, ?, ?),
    (?, ?, ?, ?, ?), (?, ?, ?, ?, ?), (?, ?, ?, ?, ?), (?, ?, ?, ?, ?)";
const INSERT_CHUNKS_1: &str = "INSERT OR REPLACE INTO chunks (series_id, start_ms, end_ms, points, data) VALUES (?, ?, ?, ?, ?)";

/// Writes chunks, replacing any with the same series and start.
pub(super) async fn write_chunks(
    tx: &mut Transaction<'static, Sqlite>,
    chunks: &[Chunk],
) -> Result<(), StoreError> {
    let mut rest = chunks;
    while !rest.is_empty() {
        let (sql, n) = if rest.len() >= 16 {
            (INSERT_CHUNKS_16, 16)
        } else {
            (INSERT_CHUNKS_1, 1)
        };
        let (some, tail) = rest.split_at(n);
        let mut query = sqlx::query(sql);
        for c in some {
            query = query
                .bind(c.series_id)
                .bind(c.start_ms)
                .bind(c.end_ms)
                .bind(c.points)
                .bind(c.data.as_slice());
        }
        query.execute(&mut **tx).await?;
        rest = tail;
    }
    Ok(())
}

/// One step: the agent of the oldest head row (by its time, through an
/// index: the head is never scanned) if that is before `ripe_before_ms` has its head rows before `older_than_ms` (at most
/// [`STEP_ROWS`]) moved into chunks. Returns the head rows compacted (0:
/// nothing was ripe).
pub(super) async fn step(
    writer: &SqlitePool,
    older_than_ms: i64,
    ripe_before_ms: i64,
) -> Result<u64, StoreError> {
    let mut tx = writer.begin().await?;
    let oid: Option<i64> =
        sqlx::query_scalar("SELECT oid FROM metric_rows WHERE ts_ms < ? ORDER BY ts_ms LIMIT 1")
            .bind(ripe_before_ms)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(oid) = oid else {
        return Ok(0);
    };
    let older_than_ms = older_than_ms.max(ripe_before_ms);
    let rows = sqlx::query(
        "SELECT id, ts_ms, data FROM metric_rows WHERE oid = ? AND ts_ms < ? ORDER BY id LIMIT ?",
    )
    .bind(oid)
    .bind(older_than_ms)
    .bind(STEP_ROWS)
    .fetch_all(&mut *tx)
    .await?;
    let mut last_id = i64::MIN;
    // Series, then time: rows in the order written, so a later value wins.
    let mut fresh: BTreeMap<i64, BTreeMap<i64, f64>> = BTreeMap::new();
    for row in &rows {
        last_id = row.try_get("id")?;
        let ts: i64 = row.try_get("ts_ms")?;
        let data: &[u8] = row.try_get("data")?;
        for (id, value) in points::decode_row(data)? {
            fresh.entry(id).or_default().insert(ts, value);
        }
    }
    // Each series' newest chunk: where it ends and how full it is.
    let newest = sqlx::query(
        "SELECT c.series_id, c.end_ms, c.points FROM series s
         JOIN chunks c ON c.series_id = s.id
            AND c.start_ms = (SELECT MAX(start_ms) FROM chunks WHERE series_id = s.id)
         WHERE s.oid = ?",
    )
    .bind(oid)
    .fetch_all(&mut *tx)
    .await?;
    let mut newest_chunk: HashMap<i64, (i64, i64)> = HashMap::with_capacity(newest.len());
    for row in newest {
        newest_chunk.insert(
            row.try_get("series_id")?,
            (row.try_get("end_ms")?, row.try_get("points")?),
        );
    }
    let mut chunks = Vec::new();
    for (series_id, new_points) in fresh {
        let Some(&first) = new_points.keys().next() else {
            continue;
        };
        // Rewrite the chunks the new points reach into, and a newest chunk
        // less than half full (a sparse series grows its chunk, rather than
        // leaving a chunk per step).
        let reach = match newest_chunk.get(&series_id) {
            Some(&(end, _)) if first <= end => Some(first),
            Some(&(end, n)) if n < super::to_i64(CHUNK_POINTS as u64 / 2) => Some(end),
            _ => None,
        };
        let merged: Vec<(i64, f64)> = match reach {
            None => new_points.into_iter().collect(),
            Some(reach) => {
                let old: Vec<Vec<u8>> = sqlx::query_scalar(
                    "SELECT data FROM chunks WHERE series_id = ? AND end_ms >= ? ORDER BY start_ms",
                )
                .bind(series_id)
                .bind(reach)
                .fetch_all(&mut *tx)
                .await?;
                let mut all = BTreeMap::new();
                for blob in old {
                    all.extend(points::decode_chunk(&blob)?);
                }
                all.extend(new_points);
                sqlx::query("DELETE FROM chunks WHERE series_id = ? AND end_ms >= ?")
                    .bind(series_id)
                    .bind(reach)
                    .execute(&mut *tx)
                    .await?;
                all.into_iter().collect()
            }
        };
        chunks.extend(cut(series_id, &merged));
    }
    write_chunks(&mut tx, &chunks).await?;
    sqlx::query("DELETE FROM metric_rows WHERE oid = ? AND ts_ms < ? AND id <= ?")
        .bind(oid)
        .bind(older_than_ms)
        .bind(last_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rows.len() as u64)
}

/// Moves the rows of the old one-row-per-point table (schema 1 and 2)
/// into chunks, a series per transaction, then drops the table. Runs at
/// open, before ingest starts; a crash midway resumes where it stopped.
pub(super) async fn convert_points_table(writer: &SqlitePool) -> Result<(), StoreError> {
    let table: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'points'",
    )
    .fetch_optional(writer)
    .await?;
    if table.is_none() {
        return Ok(());
    }
    loop {
        let mut tx = writer.begin().await?;
        let series_id: Option<i64> = sqlx::query_scalar("SELECT series_id FROM points LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let Some(series_id) = series_id else {
            sqlx::query("DROP TABLE points").execute(&mut *tx).await?;
            tx.commit().await?;
            return Ok(());
        };
        let old: Vec<(i64, f64)> =
            sqlx::query_as("SELECT ts_ms, value FROM points WHERE series_id = ? ORDER BY ts_ms")
                .bind(series_id)
                .fetch_all(&mut *tx)
                .await?;
        write_chunks(&mut tx, &cut(series_id, &old)).await?;
        sqlx::query("DELETE FROM points WHERE series_id = ?")
            .bind(series_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
}

/// The background compaction task of one store.
#[derive(Debug)]
pub(super) struct Compactor {
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Compactor {
    /// Starts compacting head rows older than [`HORIZON_MS`] once the
    /// oldest of an agent's is twice that old (so a step fills chunks).
    pub(super) fn start(writer: SqlitePool) -> Compactor {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(writer, stop.clone()));
        Compactor {
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    /// Stops the task after its current step.
    pub(super) async fn stop(&self) {
        self.stop.cancel();
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Steps until nothing is ripe, every [`EVERY`]. A failing step is logged
/// once, not every round, until a step succeeds again.
async fn run(writer: SqlitePool, stop: CancellationToken) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
        while !stop.is_cancelled() {
            let now = super::now_ms();
            match step(&writer, now - HORIZON_MS, now - 2 * HORIZON_MS).await {
                Ok(n) => {
                    if failing {
                        tracing::info!("Compaction works again.");
                        failing = false;
                    }
                    if n == 0 {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "Compaction step failed; head rows stay readable.");
                        failing = true;
                    }
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
