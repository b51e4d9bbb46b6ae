//! Log records: one `log_blocks` row per stored chunk (the records after
//! the file's watermark), its columns compressed, with its time range,
//! category, offsets, token bloom filter and pattern counts
//! ([`crate::logs::block`]); the per-file watermark `log_watermarks`; the
//! templates of pattern analysis `log_templates` (one example each).
//!
//! Search: blocks pruned by project, time, category and agent through
//! SQL, newest first; then by their bloom filter; the rest decompressed
//! and matched exactly. It stops as soon as no older block can hold a
//! record newer than the page's oldest.
//!
//! Never writes a record twice: records that start below the file's
//! watermark are left out and counted as duplicates, and the watermark
//! moves in the transaction that stores the block.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use super::{SqliteStore, to_i64, to_u64};
use crate::logs::block::{self, BlockLabels, EncodedBlock};
use crate::logs::{LiveLogs, LogCursor, LogPage, LogPattern, LogQuery, LogRecord, PatternQuery};
use crate::model::LogChunkRow;
use crate::store::{LogReads, LogsPurged, StoreError};

/// Blocks read per metadata query of a search.
const BLOCKS_PER_PAGE: i64 = 256;
/// Chunks the live feed holds for a slow subscriber.
pub(super) const FEED_CHUNKS: usize = 1024;
/// Templates remembered as stored, at most (then forgotten all at once;
/// the set is copied once per group).
const KNOWN_TEMPLATES: usize = 50_000;
/// Longest example kept with a template.
const MAX_EXAMPLE_BYTES: usize = 2048;
/// Blocks one retention statement removes.
const PURGE_STEP: i64 = 500;

/// What storing a group's log chunks leaves to do after commit.
#[derive(Default)]
pub(super) struct LogRows {
    /// Blocks encoded before the transaction, by chunk.
    pub(super) encoded: HashMap<usize, EncodedBlock>,
    /// Records stored, for the live feed.
    pub(super) live: Vec<LiveLogs>,
    /// Templates written, remembered after commit.
    pub(super) templates: Vec<(i64, u64)>,
    /// Records left out as duplicates.
    pub(super) duplicates: u64,
}

/// The key of a chunk in [`LogRows::encoded`].
pub(super) fn chunk_key(chunk: &Arc<LogChunkRow>) -> usize {
    Arc::as_ptr(chunk) as usize
}

/// Encodes every chunk's block (assuming all its records are new) on the
/// blocking pool, in parallel, before the transaction starts.
pub(super) async fn encode_all(chunks: Vec<Arc<LogChunkRow>>) -> HashMap<usize, EncodedBlock> {
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            tokio::task::spawn_blocking(move || (chunk_key(&chunk), block::encode(&chunk, 0)))
        })
        .collect();
    let mut out = HashMap::new();
    for task in tasks {
        // A task that failed leaves its chunk to be encoded in the
        // transaction.
        if let Ok((key, Some(encoded))) = task.await {
            out.insert(key, encoded);
        }
    }
    out
}

/// Stores the records of `chunk` not stored before.
pub(super) async fn insert(
    tx: &mut Transaction<'static, Sqlite>,
    known: &HashSet<(i64, u64)>,
    rows: &mut LogRows,
    project_id: i64,
    oid: i64,
    logs: &crate::model::LogPayload,
) -> Result<(), StoreError> {
    let chunk = &logs.chunk;
    let watermark: Option<i64> =
        sqlx::query_scalar("SELECT end_offset FROM log_watermarks WHERE oid = ? AND file_id = ?")
            .bind(oid)
            .bind(&chunk.file_id)
            .fetch_optional(&mut **tx)
            .await?;
    let watermark = watermark.map_or(0, to_u64);
    let first = chunk.starts.partition_point(|&s| s < watermark);
    rows.duplicates += first as u64;
    if first == chunk.len() {
        return Ok(());
    }
    let encoded_here;
    let encoded: &EncodedBlock = match (&logs.block, rows.encoded.remove(&chunk_key(chunk))) {
        (Some(ahead), _) if first == 0 => ahead,
        (None, Some(ahead)) if first == 0 => {
            encoded_here = ahead;
            &encoded_here
        }
        _ => {
            encoded_here = block::encode(chunk, first)
                .ok_or_else(|| StoreError::Corrupt("a log block could not be encoded".into()))?;
            &encoded_here
        }
    };
    let stored_bytes = encoded.data.len() + encoded.bloom.len() + encoded.patterns.len();
    sqlx::query(
        "INSERT INTO log_blocks (oid, category, file_id, path, attrs, min_ms, max_ms,
             first_start, last_end, records, text_bytes, stored_bytes, patterns, bloom, data)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(oid)
    .bind(&chunk.category)
    .bind(&chunk.file_id)
    .bind(&chunk.path)
    .bind(serde_json::to_string(&chunk.attrs)?)
    .bind(encoded.min_ms)
    .bind(encoded.max_ms)
    .bind(to_i64(encoded.first_start))
    .bind(to_i64(encoded.last_end))
    .bind(encoded.records as i64)
    .bind(encoded.text_bytes as i64)
    .bind(stored_bytes as i64)
    .bind(&encoded.patterns)
    .bind(&encoded.bloom)
    .bind(&encoded.data)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO log_watermarks (oid, file_id, end_offset) VALUES (?, ?, ?)
         ON CONFLICT (oid, file_id) DO UPDATE SET end_offset = MAX(end_offset, excluded.end_offset)",
    )
    .bind(oid)
    .bind(&chunk.file_id)
    .bind(to_i64(encoded.last_end))
    .execute(&mut **tx)
    .await?;
    for (hash, template, example) in &encoded.templates {
        // Stored as i64: SQLite's integers are signed.
        let key = (project_id, *hash);
        if known.contains(&key) || rows.templates.contains(&key) {
            continue;
        }
        sqlx::query(
            "INSERT INTO log_templates (project_id, hash, template, example) VALUES (?, ?, ?, ?)
             ON CONFLICT (project_id, hash) DO NOTHING",
        )
        .bind(project_id)
        .bind(*hash as i64)
        .bind(template)
        .bind(cut_text(example, MAX_EXAMPLE_BYTES))
        .execute(&mut **tx)
        .await?;
        rows.templates.push(key);
    }
    rows.live.push(LiveLogs {
        project_id,
        oid,
        chunk: chunk.clone(),
        first,
    });
    Ok(())
}

fn cut_text(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl SqliteStore {
    /// After a group committed: publish its records, remember its
    /// templates.
    pub(super) fn logs_committed(&self, rows: LogRows) {
        if rows.duplicates > 0 {
            tracing::debug!(
                records = rows.duplicates,
                "Log records already stored were left out."
            );
        }
        if !rows.templates.is_empty()
            && let Ok(mut known) = self.log_templates.lock()
        {
            if known.len() + rows.templates.len() > KNOWN_TEMPLATES {
                known.clear();
            }
            known.extend(rows.templates);
        }
        for live in rows.live {
            // No subscriber: nothing to do.
            let _ = self.log_feed.send(Arc::new(live));
        }
    }

    /// The templates known to be stored (a copy, for one transaction).
    pub(super) fn known_templates(&self) -> HashSet<(i64, u64)> {
        self.log_templates
            .lock()
            .map(|k| k.clone())
            .unwrap_or_default()
    }

    async fn onames(&self, project_id: i64) -> Result<HashMap<i64, String>, StoreError> {
        let rows = sqlx::query("SELECT oid, oname FROM agents WHERE project_id = ?")
            .bind(project_id)
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("oid")?, r.try_get("oname")?)))
            .collect()
    }
}

/// A block's labels, read from its row once its filter let it through.
fn labels_from_row(row: &SqliteRow) -> Result<BlockLabels, StoreError> {
    let attrs: String = row.try_get("attrs")?;
    Ok(BlockLabels {
        file_id: row.try_get("file_id")?,
        path: row.try_get("path")?,
        category: row.try_get("category")?,
        attrs: serde_json::from_str(&attrs)?,
    })
}

/// A record on its way into a page: ordered by its cursor.
struct Found(LogCursor, LogRecord);

impl PartialEq for Found {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Found {}
impl PartialOrd for Found {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Found {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

impl LogReads for SqliteStore {
    async fn search_logs(&self, project_id: i64, query: &LogQuery) -> Result<LogPage, StoreError> {
        let limit = query.limit.max(1);
        let onames = self.onames(project_id).await?;
        let required = {
            let mut h = query.text.required_hashes();
            h.extend(
                query
                    .fields
                    .iter()
                    .map(|(n, v)| crate::logs::text::field_hash(n, v)),
            );
            h
        };
        let to_ms = query
            .before
            .map_or(query.to_ms, |b| b.time_ms.min(query.to_ms));
        // The page so far, its oldest on top.
        let mut page: BinaryHeap<Reverse<Found>> = BinaryHeap::new();
        let mut after: Option<(i64, i64)> = None;
        'pages: loop {
            let (after_ms, after_id) = after.unwrap_or((i64::MAX, i64::MAX));
            let metas = sqlx::query(
                "SELECT id, oid, category, file_id, path, attrs, max_ms,
                        CASE WHEN ?8 THEN bloom END AS bloom
                 FROM log_blocks
                 WHERE max_ms >= ?2 AND min_ms <= ?3 AND (max_ms, id) < (?4, ?5)
                   AND oid IN (SELECT oid FROM agents WHERE project_id = ?1)
                   AND (?6 IS NULL OR category = ?6) AND (?7 IS NULL OR oid = ?7)
                 ORDER BY max_ms DESC, id DESC LIMIT ?9",
            )
            .bind(project_id)
            .bind(query.from_ms)
            .bind(to_ms)
            .bind(after_ms)
            .bind(after_id)
            .bind(query.category.as_deref())
            .bind(query.oid)
            .bind(!required.is_empty())
            .bind(BLOCKS_PER_PAGE)
            .fetch_all(&self.reader)
            .await?;
            let done = (metas.len() as i64) < BLOCKS_PER_PAGE;
            for row in &metas {
                let id: i64 = row.try_get("id")?;
                let oid: i64 = row.try_get("oid")?;
                let max_ms: i64 = row.try_get("max_ms")?;
                after = Some((max_ms, id));
                if page.len() >= limit
                    && let Some(Reverse(oldest)) = page.peek()
                    && (LogCursor {
                        time_ms: max_ms,
                        block: id,
                        index: u32::MAX,
                    }) < oldest.0
                {
                    break 'pages;
                }
                let bloom: Option<&[u8]> = row.try_get("bloom")?;
                if let Some(bloom) = bloom
                    && !crate::logs::text::Bloom::may_contain_all(bloom, &required)
                {
                    continue;
                }
                let data: Vec<u8> = sqlx::query_scalar("SELECT data FROM log_blocks WHERE id = ?")
                    .bind(id)
                    .fetch_one(&self.reader)
                    .await?;
                let oname = onames.get(&oid).map_or("", String::as_str);
                let chunk = block::decode(&data, labels_from_row(row)?)
                    .map_err(|e| StoreError::Corrupt(format!("log block {id}: {e}")))?;
                scan_block(&chunk, id, oid, oname, query, limit, &mut page);
            }
            if done {
                break;
            }
        }
        let mut records: Vec<Found> = page.into_iter().map(|Reverse(f)| f).collect();
        records.sort_by(|a, b| b.cmp(a));
        let next = (records.len() >= limit).then(|| records[records.len() - 1].0);
        Ok(LogPage {
            records: records.into_iter().map(|f| f.1).collect(),
            next,
        })
    }

    async fn log_patterns(
        &self,
        project_id: i64,
        query: &PatternQuery,
    ) -> Result<Vec<LogPattern>, StoreError> {
        let blobs: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT patterns FROM log_blocks
             WHERE max_ms >= ?2 AND min_ms <= ?3
               AND oid IN (SELECT oid FROM agents WHERE project_id = ?1)
               AND (?4 IS NULL OR category = ?4)",
        )
        .bind(project_id)
        .bind(query.from_ms)
        .bind(query.to_ms)
        .bind(query.category.as_deref())
        .fetch_all(&self.reader)
        .await?;
        let mut counts: HashMap<u64, u64> = HashMap::new();
        for blob in blobs {
            let pairs = block::decode_patterns(&blob)
                .map_err(|e| StoreError::Corrupt(format!("log patterns: {e}")))?;
            for (hash, count) in pairs {
                *counts.entry(hash).or_default() += count;
            }
        }
        let mut top: Vec<(u64, u64)> = counts.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        top.truncate(query.limit.max(1));
        let mut out = Vec::with_capacity(top.len());
        for (hash, count) in top {
            let row = sqlx::query(
                "SELECT template, example FROM log_templates WHERE project_id = ? AND hash = ?",
            )
            .bind(project_id)
            .bind(hash as i64)
            .fetch_optional(&self.reader)
            .await?;
            let (pattern, example) = match row {
                Some(r) => (r.try_get("template")?, r.try_get("example")?),
                None => (format!("<unknown template {hash:016x}>"), String::new()),
            };
            out.push(LogPattern {
                pattern,
                count,
                example,
            });
        }
        Ok(out)
    }

    fn subscribe_logs(&self) -> tokio::sync::broadcast::Receiver<Arc<LiveLogs>> {
        self.log_feed.subscribe()
    }
}

/// Adds the records of one block that match `query` to `page`, keeping
/// the `limit` newest.
fn scan_block(
    chunk: &LogChunkRow,
    block_id: i64,
    oid: i64,
    oname: &str,
    query: &LogQuery,
    limit: usize,
    page: &mut BinaryHeap<Reverse<Found>>,
) {
    let text_hits = (!query.text.is_empty()).then(|| {
        let lower = chunk.text.to_ascii_lowercase();
        query.text.matching_records(lower.as_bytes(), &chunk.ends)
    });
    let fields: Vec<(usize, &str)> = query
        .fields
        .iter()
        .filter_map(|(name, value)| {
            Some((
                chunk.fields.iter().position(|f| &f.name == name)?,
                value.as_str(),
            ))
        })
        .collect();
    if fields.len() < query.fields.len() {
        return; // a field this block's records do not have
    }
    for i in (0..chunk.len()).rev() {
        if text_hits.as_ref().is_some_and(|h| !h[i]) {
            continue;
        }
        let time_ms = chunk.record_time(i);
        if time_ms < query.from_ms || time_ms > query.to_ms {
            continue;
        }
        let key = LogCursor {
            time_ms,
            block: block_id,
            index: u32::try_from(i).unwrap_or(u32::MAX),
        };
        if query.before.is_some_and(|b| key >= b) {
            continue;
        }
        if page.len() >= limit && page.peek().is_some_and(|Reverse(oldest)| key < oldest.0) {
            continue;
        }
        if !fields
            .iter()
            .all(|&(f, value)| chunk.field_value(f, i) == Some(value))
        {
            continue;
        }
        page.push(Reverse(Found(
            key,
            LogRecord::from_chunk(chunk, i, oid, oname),
        )));
        if page.len() > limit {
            page.pop();
        }
    }
}

fn add_purged(purged: &mut LogsPurged, rows: &[SqliteRow]) -> Result<u64, StoreError> {
    let mut bytes = 0;
    for r in rows {
        purged.blocks += 1;
        purged.records += to_u64(r.try_get("records")?);
        bytes += to_u64(r.try_get("stored_bytes")?);
    }
    purged.bytes += bytes;
    Ok(bytes)
}

/// Log retention, called by [`crate::store::Retention::purge_logs`]:
/// by age, then the oldest blocks (by newest record) until the total is
/// under the cap, in steps of [`PURGE_STEP`] blocks.
pub(super) async fn purge(
    store: &SqliteStore,
    cutoff_ms: i64,
    max_bytes: u64,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<LogsPurged, StoreError> {
    let mut purged = LogsPurged::default();
    loop {
        if stop.is_cancelled() {
            return Ok(purged);
        }
        let rows = sqlx::query(
            "DELETE FROM log_blocks WHERE id IN
                (SELECT id FROM log_blocks WHERE max_ms < ? LIMIT ?)
             RETURNING records, stored_bytes",
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
    if max_bytes == 0 {
        return Ok(purged);
    }
    let total: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(stored_bytes), 0) FROM log_blocks")
        .fetch_one(&store.writer)
        .await?;
    let mut excess = to_u64(total).saturating_sub(max_bytes);
    while excess > 0 && !stop.is_cancelled() {
        // The oldest blocks whose bytes, added up, first cover the excess.
        let rows = sqlx::query(
            "DELETE FROM log_blocks WHERE id IN (
                SELECT id FROM (
                    SELECT id, stored_bytes,
                           SUM(stored_bytes) OVER (ORDER BY max_ms, id) AS running
                    FROM log_blocks)
                WHERE running - stored_bytes < ? ORDER BY running LIMIT ?)
             RETURNING records, stored_bytes",
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
    Ok(purged)
}
