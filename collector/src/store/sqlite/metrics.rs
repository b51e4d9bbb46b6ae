//! Metric rows (series and points) and their reads. Enforces the series
//! cap per agent: a sample of a new series beyond it is refused, never
//! stored, and counted for the ack's partial success.

use std::collections::{BTreeMap, HashMap};

use sqlx::{Row, Sqlite, Transaction};

use super::SqliteStore;
use crate::model::{SampleRow, Series};
use crate::store::{Latest, MetricReads, Range, StoreError};

/// Key of a series: agent, name, labels as JSON.
pub(super) type SeriesKey = (i64, String, String);

/// What is committed: series ids, and how many series each agent has.
#[derive(Debug, Default)]
pub(super) struct SeriesCache {
    ids: HashMap<SeriesKey, i64>,
    per_agent: HashMap<i64, u64>,
}

impl SeriesCache {
    /// Takes in what a committed transaction created or looked up.
    pub(super) fn remember(&mut self, created: Created) {
        self.ids.extend(created.ids);
        self.per_agent.extend(created.per_agent);
    }

    /// Forgets everything (after series were deleted).
    pub(super) fn clear(&mut self) {
        self.ids.clear();
        self.per_agent.clear();
    }
}

/// Series found or made inside one transaction.
#[derive(Debug, Default)]
pub(super) struct Created {
    ids: HashMap<SeriesKey, i64>,
    per_agent: HashMap<i64, u64>,
}

/// The cache as one open transaction sees it: committed plus its own.
pub(super) struct PendingSeries<'a> {
    committed: &'a SeriesCache,
    own: Created,
    limit: u64,
}

impl<'a> PendingSeries<'a> {
    pub(super) fn new(committed: &'a SeriesCache, limit: u64) -> PendingSeries<'a> {
        PendingSeries {
            committed,
            own: Created::default(),
            limit,
        }
    }

    pub(super) fn into_created(self) -> Created {
        self.own
    }

    fn known(&self, key: &SeriesKey) -> Option<i64> {
        self.own
            .ids
            .get(key)
            .or_else(|| self.committed.ids.get(key))
            .copied()
    }

    async fn count(
        &mut self,
        tx: &mut Transaction<'static, Sqlite>,
        oid: i64,
    ) -> Result<u64, StoreError> {
        if let Some(n) = self
            .own
            .per_agent
            .get(&oid)
            .or_else(|| self.committed.per_agent.get(&oid))
        {
            return Ok(*n);
        }
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM series WHERE oid = ?")
            .bind(oid)
            .fetch_one(&mut **tx)
            .await?;
        let n = super::to_u64(n);
        self.own.per_agent.insert(oid, n);
        Ok(n)
    }

    /// The series id, made if the agent is under its cap; `None` when the
    /// sample must be refused.
    async fn id(
        &mut self,
        tx: &mut Transaction<'static, Sqlite>,
        key: SeriesKey,
    ) -> Result<Option<i64>, StoreError> {
        if let Some(id) = self.known(&key) {
            return Ok(Some(id));
        }
        let existing: Option<i64> =
            sqlx::query_scalar("SELECT id FROM series WHERE oid = ? AND name = ? AND labels = ?")
                .bind(key.0)
                .bind(&key.1)
                .bind(&key.2)
                .fetch_optional(&mut **tx)
                .await?;
        if let Some(id) = existing {
            self.own.ids.insert(key, id);
            return Ok(Some(id));
        }
        let count = self.count(tx, key.0).await?;
        if count >= self.limit {
            return Ok(None);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO series (oid, name, labels) VALUES (?, ?, ?) RETURNING id",
        )
        .bind(key.0)
        .bind(&key.1)
        .bind(&key.2)
        .fetch_one(&mut **tx)
        .await?;
        self.own.per_agent.insert(key.0, count + 1);
        self.own.ids.insert(key, id);
        Ok(Some(id))
    }
}

fn labels_json(labels: &[(String, String)]) -> String {
    let map: BTreeMap<&str, &str> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

/// `n` placeholders rows `(?, ?, ?)` for a multi-row insert, as a literal.
macro_rules! point_rows {
    (8) => {
        "(?, ?, ?), (?, ?, ?), (?, ?, ?), (?, ?, ?), (?, ?, ?), (?, ?, ?), (?, ?, ?), (?, ?, ?)"
    };
    (64) => {
        concat!(
            point_rows!(8),
            ", ",
            point_rows!(8),
            ", ",
            point_rows!(8),
            ", ",
            point_rows!(8),
            ", ",
            point_rows!(8),
            ", ",
            point_rows!(8),
            ", ",
            point_rows!(8),
            ", ",
            point_rows!(8)
        )
    };
    (512) => {
        concat!(
            point_rows!(64),
            ", ",
            point_rows!(64),
            ", ",
            point_rows!(64),
            ", ",
            point_rows!(64),
            ", ",
            point_rows!(64),
            ", ",
            point_rows!(64),
            ", ",
            point_rows!(64),
            ", ",
            point_rows!(64)
        )
    };
}

/// Points in one statement: fixed sizes, so every statement stays a static
/// string (and a prepared statement sqlx caches). Each statement crosses to
/// sqlx's SQLite thread and back, which costs more than SQLite's own work:
/// a group's points go in as few statements as possible.
const INSERT_POINTS_512: &str = concat!(
    "INSERT OR REPLACE INTO points (series_id, ts_ms, value) VALUES ",
    point_rows!(512)
);
const INSERT_POINTS_64: &str = concat!(
    "INSERT OR REPLACE INTO points (series_id, ts_ms, value) VALUES ",
    point_rows!(64)
);
const INSERT_POINTS_8: &str = concat!(
    "INSERT OR REPLACE INTO points (series_id, ts_ms, value) VALUES ",
    point_rows!(8)
);
const INSERT_POINTS_1: &str =
    "INSERT OR REPLACE INTO points (series_id, ts_ms, value) VALUES (?, ?, ?)";

/// Points waiting for [`flush`]: series id, time, value.
pub(super) type Points = Vec<(i64, i64, f64)>;

/// Resolves one reading's series into `points`; returns how many samples
/// were refused for the series cap.
pub(super) async fn insert(
    tx: &mut Transaction<'static, Sqlite>,
    series: &mut PendingSeries<'_>,
    points: &mut Points,
    oid: i64,
    time_ms: i64,
    samples: &[SampleRow],
) -> Result<u64, StoreError> {
    let mut refused = 0;
    for SampleRow {
        name,
        labels,
        value,
    } in samples
    {
        match series
            .id(tx, (oid, name.clone(), labels_json(labels)))
            .await?
        {
            Some(id) => points.push((id, time_ms, *value)),
            None => refused += 1,
        }
    }
    Ok(refused)
}

/// Writes the points a group collected, in as few statements as the fixed
/// sizes allow.
pub(super) async fn flush(
    tx: &mut Transaction<'static, Sqlite>,
    points: &Points,
) -> Result<(), StoreError> {
    let mut rest = points.as_slice();
    while !rest.is_empty() {
        let (sql, n) = match rest.len() {
            512.. => (INSERT_POINTS_512, 512),
            64.. => (INSERT_POINTS_64, 64),
            8.. => (INSERT_POINTS_8, 8),
            _ => (INSERT_POINTS_1, 1),
        };
        let (chunk, tail) = rest.split_at(n);
        let mut query = sqlx::query(sql);
        for (id, time_ms, value) in chunk {
            query = query.bind(id).bind(time_ms).bind(value);
        }
        query.execute(&mut **tx).await?;
        rest = tail;
    }
    Ok(())
}

impl MetricReads for SqliteStore {
    async fn metric_names(&self, project_id: i64, oid: i64) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT s.name FROM series s JOIN agents a ON a.oid = s.oid
             WHERE a.project_id = ? AND s.oid = ? ORDER BY s.name",
        )
        .bind(project_id)
        .bind(oid)
        .fetch_all(&self.reader)
        .await?)
    }

    async fn metrics(
        &self,
        project_id: i64,
        oid: i64,
        name: &str,
        range: Range,
    ) -> Result<Vec<Series>, StoreError> {
        let rows = match range.step_ms {
            None => {
                sqlx::query(
                    "SELECT s.id, s.labels, p.ts_ms, p.value FROM agents a
                     JOIN series s ON s.oid = a.oid
                     JOIN points p ON p.series_id = s.id
                     WHERE a.project_id = ? AND s.oid = ? AND s.name = ? AND p.ts_ms BETWEEN ? AND ?
                     ORDER BY s.id, p.ts_ms",
                )
                .bind(project_id)
                .bind(oid)
                .bind(name)
                .bind(range.from_ms)
                .bind(range.to_ms)
                .fetch_all(&self.reader)
                .await?
            }
            Some(step) => {
                sqlx::query(
                    "SELECT s.id, s.labels, (p.ts_ms / ?1) * ?1 AS ts_ms, AVG(p.value) AS value FROM agents a
                     JOIN series s ON s.oid = a.oid
                     JOIN points p ON p.series_id = s.id
                     WHERE a.project_id = ?6 AND s.oid = ?2 AND s.name = ?3 AND p.ts_ms BETWEEN ?4 AND ?5
                     GROUP BY s.id, (p.ts_ms / ?1)
                     ORDER BY s.id, ts_ms",
                )
                .bind(step.max(1))
                .bind(oid)
                .bind(name)
                .bind(range.from_ms)
                .bind(range.to_ms)
                .bind(project_id)
                .fetch_all(&self.reader)
                .await?
            }
        };
        let mut series: Vec<Series> = Vec::new();
        let mut current_id = None;
        for row in rows {
            let id: i64 = row.try_get("id")?;
            if current_id != Some(id) {
                let labels: String = row.try_get("labels")?;
                series.push(Series {
                    name: name.to_string(),
                    labels: serde_json::from_str(&labels)?,
                    points: Vec::new(),
                });
                current_id = Some(id);
            }
            if let Some(s) = series.last_mut() {
                s.points
                    .push((row.try_get("ts_ms")?, row.try_get("value")?));
            }
        }
        Ok(series)
    }

    async fn latest(
        &self,
        project_id: i64,
        name: &str,
        since_ms: i64,
    ) -> Result<Vec<Latest>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.oid, s.labels, p.ts_ms, p.value
             FROM agents a
             JOIN series s ON s.oid = a.oid AND s.name = ?2
             JOIN points p ON p.series_id = s.id
                AND p.ts_ms = (SELECT MAX(ts_ms) FROM points WHERE series_id = s.id)
             WHERE a.project_id = ?1 AND p.ts_ms >= ?3",
        )
        .bind(project_id)
        .bind(name)
        .bind(since_ms)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                let labels: String = row.try_get("labels")?;
                Ok(Latest {
                    oid: row.try_get("oid")?,
                    labels: serde_json::from_str(&labels)?,
                    time_ms: row.try_get("ts_ms")?,
                    value: row.try_get("value")?,
                })
            })
            .collect()
    }
}
