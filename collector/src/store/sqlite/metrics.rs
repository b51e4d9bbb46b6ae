//! Metric rows and their reads. Enforces the series cap per agent: a sample
//! of a new series beyond it is refused, never stored, and counted for the
//! ack's partial success.
//!
//! Layout: `series` names each series (agent, name, labels) once; the
//! values live in `readings`, one row per metrics payload (an agent's
//! samples taken at one time), its points packed in a blob ([`encode`]:
//! per point a varint series-id delta and the value's 8 bytes). Rows are
//! appended in arrival order, so a group dirties a few pages at the end of
//! the table instead of one page per series, and a point costs about 9
//! bytes. A read of one series scans the agent's readings in the range and
//! picks its points out.
//!
//! `series.last_ms` is a time at or after the series' newest point, written
//! at most every [`LAST_MS_SLACK`] per series (so it may lag by that much);
//! retention drops series whose `last_ms` is older than its cutoff by more
//! than that: no points are left then.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{Row, Sqlite, Transaction};
use tokio_stream::StreamExt;

use super::SqliteStore;
use crate::model::{SampleRow, Series};
use crate::store::{Latest, MetricReads, Range, StoreError};

/// How far `series.last_ms` may lag behind a series' newest point.
pub(super) const LAST_MS_SLACK: i64 = 3_600_000;

/// Key of a series: agent, name, labels as JSON.
pub(super) type SeriesKey = (i64, String, String);

/// What is committed: series ids, how many series each agent has, and
/// each series' `last_ms` as stored.
#[derive(Debug, Default)]
pub(super) struct SeriesCache {
    ids: HashMap<SeriesKey, i64>,
    per_agent: HashMap<i64, u64>,
    last_ms: HashMap<i64, i64>,
    /// Agents whose series are all in `ids`: a key missing there is new.
    loaded: HashSet<i64>,
}

impl SeriesCache {
    /// Takes in what a committed transaction created or looked up.
    pub(super) fn remember(&mut self, created: Created) {
        self.ids.extend(created.ids);
        self.per_agent.extend(created.per_agent);
        self.last_ms.extend(created.last_ms);
        self.loaded.extend(created.loaded);
    }

    /// Forgets everything (after series were deleted).
    pub(super) fn clear(&mut self) {
        self.ids.clear();
        self.per_agent.clear();
        self.last_ms.clear();
        self.loaded.clear();
    }
}

/// Series found or made inside one transaction.
#[derive(Debug, Default)]
pub(super) struct Created {
    ids: HashMap<SeriesKey, i64>,
    per_agent: HashMap<i64, u64>,
    last_ms: HashMap<i64, i64>,
    loaded: HashSet<i64>,
}

/// The cache as one open transaction sees it: committed plus its own.
pub(super) struct PendingSeries<'a> {
    committed: &'a SeriesCache,
    own: Created,
    limit: u64,
    /// Series whose `last_ms` must move, and the newest time seen.
    touched: HashSet<i64>,
    newest_ms: i64,
}

impl<'a> PendingSeries<'a> {
    pub(super) fn new(committed: &'a SeriesCache, limit: u64) -> PendingSeries<'a> {
        PendingSeries {
            committed,
            own: Created::default(),
            limit,
            touched: HashSet::new(),
            newest_ms: i64::MIN,
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

    fn last_ms(&self, id: i64) -> Option<i64> {
        self.own
            .last_ms
            .get(&id)
            .or_else(|| self.committed.last_ms.get(&id))
            .copied()
    }

    /// Notes a point of `id` at `time_ms`; its `last_ms` is written at the
    /// end of the group when it lags by more than the slack.
    fn saw(&mut self, id: i64, time_ms: i64) {
        self.newest_ms = self.newest_ms.max(time_ms);
        if self
            .last_ms(id)
            .is_none_or(|last| time_ms > last.saturating_add(LAST_MS_SLACK))
        {
            self.touched.insert(id);
        }
    }

    /// Reads every series of an agent into this transaction's view, once:
    /// afterwards a key that is not known is new, and a sample refused for
    /// the cap costs no query.
    async fn load(
        &mut self,
        tx: &mut Transaction<'static, Sqlite>,
        oid: i64,
    ) -> Result<(), StoreError> {
        if self.committed.loaded.contains(&oid) || self.own.loaded.contains(&oid) {
            return Ok(());
        }
        let rows = sqlx::query("SELECT id, name, labels, last_ms FROM series WHERE oid = ?")
            .bind(oid)
            .fetch_all(&mut **tx)
            .await?;
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            self.own
                .ids
                .insert((oid, row.try_get("name")?, row.try_get("labels")?), id);
            self.own.last_ms.insert(id, row.try_get("last_ms")?);
        }
        self.own
            .per_agent
            .insert(oid, u64::try_from(rows.len()).unwrap_or(u64::MAX));
        self.own.loaded.insert(oid);
        Ok(())
    }

    fn count(&self, oid: i64) -> u64 {
        self.own
            .per_agent
            .get(&oid)
            .or_else(|| self.committed.per_agent.get(&oid))
            .copied()
            .unwrap_or(0)
    }

    /// The series ids of one payload's keys, in order: `None` for a key
    /// that must be refused (a new series over the agent's cap). New series
    /// are made in multi-row statements, not one round trip each: an
    /// agent's first batch names all its series at once.
    async fn ids(
        &mut self,
        tx: &mut Transaction<'static, Sqlite>,
        oid: i64,
        keys: &[SeriesKey],
        time_ms: i64,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        if keys.iter().any(|k| self.known(k).is_none()) {
            self.load(tx, oid).await?;
        }
        // New keys, each once, in the order met, as many as the cap allows.
        let mut count = self.count(oid);
        let mut new: Vec<&SeriesKey> = Vec::new();
        let mut seen: HashSet<&SeriesKey> = HashSet::new();
        for key in keys {
            if self.known(key).is_none() && count < self.limit && seen.insert(key) {
                new.push(key);
                count += 1;
            }
        }
        let mut rest = new.as_slice();
        while !rest.is_empty() {
            let (sql, n) = match rest.len() {
                64.. => (INSERT_SERIES_64, 64),
                8.. => (INSERT_SERIES_8, 8),
                _ => (INSERT_SERIES_1, 1),
            };
            let (chunk, tail) = rest.split_at(n);
            let mut query = sqlx::query(sql);
            for key in chunk {
                query = query.bind(key.0).bind(&key.1).bind(&key.2).bind(time_ms);
            }
            // RETURNING's row order is not promised: map back by name and
            // labels (unique per agent).
            for row in query.fetch_all(&mut **tx).await? {
                let id: i64 = row.try_get("id")?;
                let key: SeriesKey = (oid, row.try_get("name")?, row.try_get("labels")?);
                self.own.last_ms.insert(id, time_ms);
                self.own.ids.insert(key, id);
            }
            rest = tail;
        }
        self.own.per_agent.insert(oid, count);
        Ok(keys.iter().map(|k| self.known(k)).collect())
    }

    /// Writes the `last_ms` of the series that lag, in few statements.
    pub(super) async fn write_last_ms(
        &mut self,
        tx: &mut Transaction<'static, Sqlite>,
    ) -> Result<(), StoreError> {
        let ids: Vec<i64> = self.touched.drain().collect();
        let newest = self.newest_ms;
        let mut rest = ids.as_slice();
        while !rest.is_empty() {
            let (sql, n) = match rest.len() {
                64.. => (UPDATE_LAST_MS_64, 64),
                8.. => (UPDATE_LAST_MS_8, 8),
                _ => (UPDATE_LAST_MS_1, 1),
            };
            let (chunk, tail) = rest.split_at(n);
            let mut query = sqlx::query(sql).bind(newest);
            for id in chunk {
                query = query.bind(id);
            }
            query.execute(&mut **tx).await?;
            rest = tail;
        }
        for id in ids {
            let last = self.last_ms(id).map_or(newest, |l| l.max(newest));
            self.own.last_ms.insert(id, last);
        }
        Ok(())
    }
}

/// `n` comma-separated placeholders, as a literal.
macro_rules! marks {
    (8) => {
        "?, ?, ?, ?, ?, ?, ?, ?"
    };
    (64) => {
        concat!(
            marks!(8),
            ", ",
            marks!(8),
            ", ",
            marks!(8),
            ", ",
            marks!(8),
            ", ",
            marks!(8),
            ", ",
            marks!(8),
            ", ",
            marks!(8),
            ", ",
            marks!(8)
        )
    };
}

/// `n` rows of four parameters `(?, ?, ?, ?)`, as a literal.
macro_rules! reading_rows {
    (8) => {
        "(?, ?, ?, ?), (?, ?, ?, ?), (?, ?, ?, ?), (?, ?, ?, ?), (?, ?, ?, ?), (?, ?, ?, ?), (?, ?, ?, ?), (?, ?, ?, ?)"
    };
    (64) => {
        concat!(
            reading_rows!(8), ", ", reading_rows!(8), ", ", reading_rows!(8), ", ", reading_rows!(8), ", ",
            reading_rows!(8), ", ", reading_rows!(8), ", ", reading_rows!(8), ", ", reading_rows!(8)
        )
    };
}

// Fixed sizes, so every statement stays a static string (and a prepared
// statement sqlx caches). Each statement crosses to sqlx's SQLite thread
// and back, which costs more than SQLite's own work.
const UPDATE_LAST_MS_64: &str = concat!(
    "UPDATE series SET last_ms = MAX(last_ms, ?) WHERE id IN (",
    marks!(64),
    ")"
);
const UPDATE_LAST_MS_8: &str = concat!(
    "UPDATE series SET last_ms = MAX(last_ms, ?) WHERE id IN (",
    marks!(8),
    ")"
);
const UPDATE_LAST_MS_1: &str = "UPDATE series SET last_ms = MAX(last_ms, ?) WHERE id IN (?)";
const INSERT_SERIES_64: &str = concat!(
    "INSERT INTO series (oid, name, labels, last_ms) VALUES ",
    reading_rows!(64),
    " RETURNING id, name, labels"
);
const INSERT_SERIES_8: &str = concat!(
    "INSERT INTO series (oid, name, labels, last_ms) VALUES ",
    reading_rows!(8),
    " RETURNING id, name, labels"
);
const INSERT_SERIES_1: &str = "INSERT INTO series (oid, name, labels, last_ms) VALUES (?, ?, ?, ?) RETURNING id, name, labels";
const INSERT_READINGS_64: &str = concat!(
    "INSERT INTO readings (oid, ts_ms, n, points) VALUES ",
    reading_rows!(64)
);
const INSERT_READINGS_8: &str = concat!(
    "INSERT INTO readings (oid, ts_ms, n, points) VALUES ",
    reading_rows!(8)
);
const INSERT_READINGS_1: &str = "INSERT INTO readings (oid, ts_ms, n, points) VALUES (?, ?, ?, ?)";

/// One reading waiting for [`flush`]: agent, time, (series id, value).
pub(super) type Reading = (i64, i64, Vec<(i64, f64)>);

fn labels_json(labels: &[(String, String)]) -> String {
    let map: BTreeMap<&str, &str> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

/// Resolves one reading's series into `readings`; returns how many samples
/// were refused for the series cap.
pub(super) async fn insert(
    tx: &mut Transaction<'static, Sqlite>,
    series: &mut PendingSeries<'_>,
    readings: &mut Vec<Reading>,
    oid: i64,
    time_ms: i64,
    samples: &[SampleRow],
) -> Result<u64, StoreError> {
    let mut refused = 0;
    let mut points = Vec::with_capacity(samples.len());
    let keys: Vec<SeriesKey> = samples
        .iter()
        .map(|sample| (oid, sample.name.clone(), labels_json(&sample.labels)))
        .collect();
    let ids = series.ids(tx, oid, &keys, time_ms).await?;
    for (sample, id) in samples.iter().zip(ids) {
        match id {
            Some(id) => {
                series.saw(id, time_ms);
                points.push((id, sample.value));
            }
            None => refused += 1,
        }
    }
    if !points.is_empty() {
        readings.push((oid, time_ms, points));
    }
    Ok(refused)
}

/// Writes the readings a group collected, in as few statements as the
/// fixed sizes allow.
pub(super) async fn flush(
    tx: &mut Transaction<'static, Sqlite>,
    readings: &[Reading],
) -> Result<(), StoreError> {
    let mut rest = readings;
    while !rest.is_empty() {
        let (sql, n) = match rest.len() {
            64.. => (INSERT_READINGS_64, 64),
            8.. => (INSERT_READINGS_8, 8),
            _ => (INSERT_READINGS_1, 1),
        };
        let (chunk, tail) = rest.split_at(n);
        let mut query = sqlx::query(sql);
        for (oid, time_ms, points) in chunk {
            query = query
                .bind(oid)
                .bind(time_ms)
                .bind(i64::try_from(points.len()).unwrap_or(i64::MAX))
                .bind(encode(points));
        }
        query.execute(&mut **tx).await?;
        rest = tail;
    }
    Ok(())
}

/// Version of the points blob.
const BLOB_V1: u8 = 1;

/// Packs points: a version byte, then per point (by ascending series id)
/// the id's distance from the previous one as a LEB128 varint and the
/// value's 8 bytes, little endian.
pub(super) fn encode(points: &[(i64, f64)]) -> Vec<u8> {
    let mut sorted = points.to_vec();
    sorted.sort_by_key(|(id, _)| *id);
    let mut out = Vec::with_capacity(1 + sorted.len() * 10);
    out.push(BLOB_V1);
    let mut previous = 0u64;
    for (id, value) in sorted {
        let id = u64::try_from(id).unwrap_or(0);
        let mut delta = id.wrapping_sub(previous);
        previous = id;
        loop {
            let byte = (delta & 0x7f) as u8;
            delta >>= 7;
            if delta == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        out.extend_from_slice(&value.to_le_bytes());
    }
    out
}

/// Unpacks what [`encode`] packed.
pub(super) fn decode(blob: &[u8]) -> Result<Vec<(i64, f64)>, StoreError> {
    let corrupt = || StoreError::Corrupt("a readings blob does not decode".into());
    let (&version, mut rest) = blob.split_first().ok_or_else(corrupt)?;
    if version != BLOB_V1 {
        return Err(StoreError::Corrupt(format!(
            "a readings blob has version {version}, expected {BLOB_V1}"
        )));
    }
    let mut points = Vec::with_capacity(rest.len() / 9);
    let mut id = 0u64;
    while !rest.is_empty() {
        let mut delta = 0u64;
        let mut shift = 0;
        loop {
            let (&byte, tail) = rest.split_first().ok_or_else(corrupt)?;
            rest = tail;
            if shift > 63 {
                return Err(corrupt());
            }
            delta |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        id = id.wrapping_add(delta);
        if rest.len() < 8 {
            return Err(corrupt());
        }
        let (value, tail) = rest.split_at(8);
        rest = tail;
        let value = f64::from_le_bytes(value.try_into().map_err(|_| corrupt())?);
        points.push((i64::try_from(id).map_err(|_| corrupt())?, value));
    }
    Ok(points)
}

/// Points with the same time (two readings at one moment): the later
/// stored wins, as a replace would.
fn last_per_time(points: &mut Vec<(i64, f64)>) {
    let mut out: Vec<(i64, f64)> = Vec::with_capacity(points.len());
    for &(t, v) in points.iter() {
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 = v,
            _ => out.push((t, v)),
        }
    }
    *points = out;
}

/// Averages points into buckets of `step` ms (bucket start = time / step
/// * step), as SQL's `AVG` over `ts / step` would.
fn average(points: &[(i64, f64)], step: i64) -> Vec<(i64, f64)> {
    let mut out: Vec<(i64, f64, u32)> = Vec::new();
    for &(t, v) in points {
        let bucket = (t / step) * step;
        match out.last_mut() {
            Some(last) if last.0 == bucket => {
                last.1 += v;
                last.2 += 1;
            }
            _ => out.push((bucket, v, 1)),
        }
    }
    out.into_iter()
        .map(|(t, sum, n)| (t, sum / f64::from(n)))
        .collect()
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
        let rows = sqlx::query(
            "SELECT s.id, s.labels FROM series s JOIN agents a ON a.oid = s.oid
             WHERE a.project_id = ? AND s.oid = ? AND s.name = ? ORDER BY s.id",
        )
        .bind(project_id)
        .bind(oid)
        .bind(name)
        .fetch_all(&self.reader)
        .await?;
        let mut series = Vec::with_capacity(rows.len());
        let mut index = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            let labels: String = row.try_get("labels")?;
            index.insert(row.try_get::<i64, _>("id")?, i);
            series.push(Series {
                name: name.to_string(),
                labels: serde_json::from_str(&labels)?,
                points: Vec::new(),
            });
        }
        if series.is_empty() {
            return Ok(series);
        }
        let mut readings = sqlx::query(
            "SELECT ts_ms, points FROM readings WHERE oid = ? AND ts_ms BETWEEN ? AND ?
             ORDER BY ts_ms, id",
        )
        .bind(oid)
        .bind(range.from_ms)
        .bind(range.to_ms)
        .fetch(&self.reader);
        while let Some(row) = readings.next().await {
            let row = row?;
            let time: i64 = row.try_get("ts_ms")?;
            let blob: &[u8] = row.try_get("points")?;
            for (id, value) in decode(blob)? {
                if let Some(&i) = index.get(&id) {
                    series[i].points.push((time, value));
                }
            }
        }
        for s in &mut series {
            last_per_time(&mut s.points);
            if let Some(step) = range.step_ms {
                s.points = average(&s.points, step.max(1));
            }
        }
        series.retain(|s| !s.points.is_empty());
        Ok(series)
    }

    async fn latest(
        &self,
        project_id: i64,
        name: &str,
        since_ms: i64,
    ) -> Result<Vec<Latest>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.id, s.oid, s.labels FROM agents a JOIN series s ON s.oid = a.oid
             WHERE a.project_id = ? AND s.name = ? ORDER BY s.oid, s.id",
        )
        .bind(project_id)
        .bind(name)
        .fetch_all(&self.reader)
        .await?;
        let mut wanted: BTreeMap<i64, HashMap<i64, String>> = BTreeMap::new();
        for row in &rows {
            wanted
                .entry(row.try_get("oid")?)
                .or_default()
                .insert(row.try_get("id")?, row.try_get("labels")?);
        }
        let mut latest = Vec::new();
        // Each agent's newest reading, in one query: usually it holds every
        // series of the name.
        let newest = sqlx::query(
            "SELECT r.oid, r.ts_ms, r.points FROM agents a
             JOIN readings r ON r.id = (
                 SELECT id FROM readings WHERE oid = a.oid AND ts_ms >= ?2
                 ORDER BY ts_ms DESC, id DESC LIMIT 1)
             WHERE a.project_id = ?1",
        )
        .bind(project_id)
        .bind(since_ms)
        .fetch_all(&self.reader)
        .await?;
        for row in &newest {
            let oid: i64 = row.try_get("oid")?;
            let Some(ids) = wanted.get_mut(&oid) else {
                continue;
            };
            let time: i64 = row.try_get("ts_ms")?;
            let blob: &[u8] = row.try_get("points")?;
            for (id, value) in decode(blob)? {
                if let Some(labels) = ids.remove(&id) {
                    latest.push(Latest {
                        oid,
                        labels: serde_json::from_str(&labels)?,
                        time_ms: time,
                        value,
                    });
                }
            }
        }
        for (oid, mut ids) in wanted {
            if ids.is_empty() {
                continue;
            }
            // Series the newest reading lacks: older readings, newest
            // first, until each has its value or the window ends.
            let mut readings = sqlx::query(
                "SELECT ts_ms, points FROM readings WHERE oid = ? AND ts_ms >= ?
                 ORDER BY ts_ms DESC, id DESC",
            )
            .bind(oid)
            .bind(since_ms)
            .fetch(&self.reader);
            while !ids.is_empty() {
                let Some(row) = readings.next().await else {
                    break;
                };
                let row = row?;
                let time: i64 = row.try_get("ts_ms")?;
                let blob: &[u8] = row.try_get("points")?;
                for (id, value) in decode(blob)? {
                    if let Some(labels) = ids.remove(&id) {
                        latest.push(Latest {
                            oid,
                            labels: serde_json::from_str(&labels)?,
                            time_ms: time,
                            value,
                        });
                    }
                }
            }
        }
        Ok(latest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_survive_the_blob_exactly() {
        let points = vec![
            (300, 0.1 + 0.2),
            (7, -0.0),
            (1 << 40, f64::MAX),
            (8, 1e-300),
        ];
        let mut expected = points.clone();
        expected.sort_by_key(|(id, _)| *id);
        let decoded = decode(&encode(&points)).expect("decodes");
        assert_eq!(decoded.len(), expected.len());
        for ((a, x), (b, y)) in decoded.iter().zip(&expected) {
            assert_eq!((a, x.to_bits()), (b, y.to_bits()));
        }
        assert!(
            encode(&[(5, 1.0), (6, 2.0)]).len() <= 1 + 2 * 9,
            "about 9 bytes a point"
        );
        assert!(decode(&[BLOB_V1, 0x80]).is_err(), "a cut varint");
        assert!(decode(&[BLOB_V1, 1, 0, 0]).is_err(), "a cut value");
        assert!(decode(&[9]).is_err(), "an unknown version");
        assert!(decode(&[]).is_err());
    }

    #[test]
    fn buckets_average_and_a_later_point_at_the_same_time_wins() {
        let mut points = vec![(0, 1.0), (1000, 2.0), (1000, 5.0), (3000, 4.0)];
        last_per_time(&mut points);
        assert_eq!(points, [(0, 1.0), (1000, 5.0), (3000, 4.0)]);
        assert_eq!(average(&points, 2000), [(0, 3.0), (2000, 4.0)]);
    }
}
