//! Metric series, the head rows the sink writes, and the reads that merge
//! head rows with compacted chunks ([`super::compact`]). Enforces the
//! series cap per agent: a sample of a new series beyond it is refused,
//! never stored, and counted for the ack's partial success.
//!
//! A reader sees each point once: compaction moves head rows into chunks
//! in one transaction, and where a series has two values at one time the
//! one written later wins (head over chunk, later head row over earlier),
//! as the old one-row-per-point table's `INSERT OR REPLACE` did.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{Row, Sqlite, Transaction};
use tokio_stream::StreamExt;

use super::{SqliteStore, points};
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
    /// Takes in what a committed transaction created or looked up; whether
    /// it made new series.
    pub(super) fn remember(&mut self, created: Created) -> bool {
        self.ids.extend(created.ids);
        self.per_agent.extend(created.per_agent);
        created.made
    }

    /// Forgets one agent's series (after they were deleted).
    pub(super) fn forget_agent(&mut self, oid: i64) {
        self.ids.retain(|key, _| key.0 != oid);
        self.per_agent.remove(&oid);
    }

    /// Forgets everything (after series were deleted).
    pub(super) fn clear(&mut self) {
        self.ids.clear();
        self.per_agent.clear();
    }
}

/// The series of some names in one project, labels parsed: what
/// [`MetricReads::latest_of`] reads on every call, kept between calls until
/// a series is made or removed ([`SqliteStore::series_changed`]).
#[derive(Debug)]
pub(super) struct Listing {
    /// [`SqliteStore::series_generation`] when it was read.
    generation: u64,
    /// Series id, agent, which of the names, labels; by agent then id.
    series: Vec<(i64, i64, usize, BTreeMap<String, String>)>,
}

/// Listings kept at most (one per project and set of names).
const LISTINGS: usize = 64;

/// Series found or made inside one transaction.
#[derive(Debug, Default)]
pub(super) struct Created {
    ids: HashMap<SeriesKey, i64>,
    per_agent: HashMap<i64, u64>,
    /// Whether any series was made (not only looked up).
    made: bool,
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

    /// Loads an agent's series the first time the cache meets it: every
    /// later lookup is in memory, and a key not found is a new series (the
    /// caller holds the series lock, so no one else makes it meanwhile).
    /// One statement, not one per series.
    async fn load(
        &mut self,
        tx: &mut Transaction<'static, Sqlite>,
        oid: i64,
    ) -> Result<(), StoreError> {
        if self.own.per_agent.contains_key(&oid) || self.committed.per_agent.contains_key(&oid) {
            return Ok(());
        }
        let rows: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT id, name, labels FROM series WHERE oid = ?")
                .bind(oid)
                .fetch_all(&mut **tx)
                .await?;
        self.own.per_agent.insert(oid, rows.len() as u64);
        for (id, name, labels) in rows {
            self.own.ids.insert((oid, name, labels), id);
        }
        Ok(())
    }

    /// Series the agent has, after [`PendingSeries::load`].
    fn count(&self, oid: i64) -> u64 {
        self.own
            .per_agent
            .get(&oid)
            .or_else(|| self.committed.per_agent.get(&oid))
            .copied()
            .unwrap_or(0)
    }

    /// Makes new series of one agent, as few statements as the fixed sizes
    /// allow.
    async fn create(
        &mut self,
        tx: &mut Transaction<'static, Sqlite>,
        oid: i64,
        keys: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut rest = keys;
        while !rest.is_empty() {
            let (sql, n) = match rest.len() {
                64.. => (INSERT_SERIES_64, 64),
                8.. => (INSERT_SERIES_8, 8),
                _ => (INSERT_SERIES_1, 1),
            };
            let (some, tail) = rest.split_at(n);
            let mut query = sqlx::query_as::<_, (i64, String, String)>(sql);
            for (name, labels) in some {
                query = query.bind(oid).bind(name).bind(labels);
            }
            let made = query.fetch_all(&mut **tx).await?;
            self.own.made |= !made.is_empty();
            let count = self.count(oid) + made.len() as u64;
            self.own.per_agent.insert(oid, count);
            for (id, name, labels) in made {
                self.own.ids.insert((oid, name, labels), id);
            }
            rest = tail;
        }
        Ok(())
    }
}

/// `n` copies of the placeholder row `$row` for a multi-row insert, as a
/// literal: fixed sizes keep every statement a static string.
macro_rules! rows {
    (8, $row:literal) => {
        concat!(
            $row, ", ", $row, ", ", $row, ", ", $row, ", ", $row, ", ", $row, ", ", $row, ", ",
            $row
        )
    };
    (64, $row:literal) => {
        concat!(
            rows!(8, $row),
            ", ",
            rows!(8, $row),
            ", ",
            rows!(8, $row),
            ", ",
            rows!(8, $row),
            ", ",
            rows!(8, $row),
            ", ",
            rows!(8, $row),
            ", ",
            rows!(8, $row),
            ", ",
            rows!(8, $row)
        )
    };
}

const INSERT_SERIES_64: &str = concat!(
    "INSERT INTO series (oid, name, labels) VALUES ",
    rows!(64, "(?, ?, ?)"),
    " RETURNING id, name, labels"
);
const INSERT_SERIES_8: &str = concat!(
    "INSERT INTO series (oid, name, labels) VALUES ",
    rows!(8, "(?, ?, ?)"),
    " RETURNING id, name, labels"
);
const INSERT_SERIES_1: &str =
    "INSERT INTO series (oid, name, labels) VALUES (?, ?, ?) RETURNING id, name, labels";

fn labels_json(labels: &[(String, String)]) -> String {
    let map: BTreeMap<&str, &str> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

/// Head rows in one statement: fixed sizes, so every statement stays a
/// static string (and a prepared statement sqlx caches). Each statement
/// crosses to sqlx's SQLite thread and back, which costs more than
/// SQLite's own work: a group's rows go in as few statements as possible.
const INSERT_HEAD_64: &str = concat!(
    "INSERT INTO metric_rows (oid, ts_ms, points, data) VALUES ",
    rows!(64, "(?, ?, ?, ?)")
);
const INSERT_HEAD_8: &str = concat!(
    "INSERT INTO metric_rows (oid, ts_ms, points, data) VALUES ",
    rows!(8, "(?, ?, ?, ?)")
);
const INSERT_HEAD_1: &str =
    "INSERT INTO metric_rows (oid, ts_ms, points, data) VALUES (?, ?, ?, ?)";

/// One metrics payload as a head row: an agent's values at one time.
pub(super) struct HeadRow {
    oid: i64,
    ts_ms: i64,
    points: i64,
    data: Vec<u8>,
}

/// Head rows waiting for [`flush`].
pub(super) type HeadRows = Vec<HeadRow>;

/// Resolves one payload's series and encodes it as one head row in
/// `rows`; returns how many samples were refused for the series cap. A
/// series sampled twice in one payload keeps its last value.
pub(super) async fn insert(
    tx: &mut Transaction<'static, Sqlite>,
    series: &mut PendingSeries<'_>,
    rows: &mut HeadRows,
    oid: i64,
    time_ms: i64,
    samples: &[SampleRow],
) -> Result<u64, StoreError> {
    series.load(tx, oid).await?;
    // New series first, all in a few statements, as many as the cap allows.
    let keys: Vec<SeriesKey> = samples
        .iter()
        .map(|s| (oid, s.name.clone(), labels_json(&s.labels)))
        .collect();
    // One lookup per sample; only the new ones are looked up again.
    let mut ids: Vec<Option<i64>> = keys.iter().map(|key| series.known(key)).collect();
    let room = series.limit.saturating_sub(series.count(oid));
    let mut new: Vec<(String, String)> = Vec::new();
    let mut seen: HashSet<&SeriesKey> = HashSet::new();
    for (key, id) in keys.iter().zip(&ids) {
        if id.is_none() && (new.len() as u64) < room && seen.insert(key) {
            new.push((key.1.clone(), key.2.clone()));
        }
    }
    if !new.is_empty() {
        series.create(tx, oid, &new).await?;
        for (key, id) in keys.iter().zip(ids.iter_mut()) {
            if id.is_none() {
                *id = series.known(key);
            }
        }
    }
    let mut refused = 0;
    let mut pairs = Vec::with_capacity(samples.len());
    for (id, sample) in ids.into_iter().zip(samples) {
        match id {
            Some(id) => pairs.push((id, sample.value)),
            None => refused += 1,
        }
    }
    // Stable: of one id's samples, the last stays last.
    pairs.sort_by_key(|&(id, _)| id);
    let mut kept: Vec<(i64, f64)> = Vec::with_capacity(pairs.len());
    for pair in pairs {
        match kept.last_mut() {
            Some(last) if last.0 == pair.0 => *last = pair,
            _ => kept.push(pair),
        }
    }
    if !kept.is_empty() {
        rows.push(HeadRow {
            oid,
            ts_ms: time_ms,
            points: super::to_i64(kept.len() as u64),
            data: points::encode_row(&kept),
        });
    }
    Ok(refused)
}

/// Writes the head rows a group collected, in as few statements as the
/// fixed sizes allow, in the order they were made (a later row wins over
/// an earlier one for the same series and time).
pub(super) async fn flush(
    tx: &mut Transaction<'static, Sqlite>,
    rows: &HeadRows,
) -> Result<(), StoreError> {
    let mut rest = rows.as_slice();
    while !rest.is_empty() {
        let (sql, n) = match rest.len() {
            64.. => (INSERT_HEAD_64, 64),
            8.. => (INSERT_HEAD_8, 8),
            _ => (INSERT_HEAD_1, 1),
        };
        let (chunk, tail) = rest.split_at(n);
        let mut query = sqlx::query(sql);
        for row in chunk {
            query = query
                .bind(row.oid)
                .bind(row.ts_ms)
                .bind(row.points)
                .bind(row.data.as_slice());
        }
        query.execute(&mut **tx).await?;
        rest = tail;
    }
    Ok(())
}

/// Sums as SQLite's `SUM`/`AVG` do (Kahan-Babuska-Neumaier), so buckets
/// average to the same bits as the old SQL did.
#[derive(Default)]
struct Sum {
    sum: f64,
    compensation: f64,
    count: u32,
}

impl Sum {
    fn add(&mut self, v: f64) {
        let t = self.sum + v;
        if self.sum.abs() >= v.abs() {
            self.compensation += (self.sum - t) + v;
        } else {
            self.compensation += (v - t) + self.sum;
        }
        self.sum = t;
        self.count += 1;
    }

    fn mean(&self) -> f64 {
        (self.sum + self.compensation) / f64::from(self.count.max(1))
    }
}

/// Averages points into buckets of `step` ms (start of bucket as its time).
fn bucket(points: &BTreeMap<i64, f64>, step: i64) -> Vec<(i64, f64)> {
    let mut out: Vec<(i64, Sum)> = Vec::new();
    for (&ts, &value) in points {
        let start = (ts / step) * step;
        match out.last_mut() {
            Some((at, sum)) if *at == start => sum.add(value),
            _ => {
                let mut sum = Sum::default();
                sum.add(value);
                out.push((start, sum));
            }
        }
    }
    out.into_iter().map(|(at, sum)| (at, sum.mean())).collect()
}

impl SqliteStore {
    /// Says a series was made or removed: cached listings are stale.
    pub(super) fn series_changed(&self) {
        self.series_generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The series of `names` in a project, from the cache while no series
    /// was made or removed since it was read.
    async fn listing(
        &self,
        project_id: i64,
        names: &[&str],
        names_json: &str,
    ) -> Result<std::sync::Arc<Listing>, StoreError> {
        use std::sync::atomic::Ordering;
        let key = (project_id, names_json.to_string());
        // Read before the statement: a series made meanwhile bumps it
        // after its commit, so the listing read now is replaced next time.
        let generation = self.series_generation.load(Ordering::Acquire);
        if let Some(hit) = self
            .listings
            .lock()
            .ok()
            .and_then(|m| m.get(&key).cloned())
            .filter(|l| l.generation == generation)
        {
            return Ok(hit);
        }
        // One statement for every series of every name: the agents of the
        // project by their (project, ...) index, each agent's series of a
        // name by the (oid, name, labels) index.
        let rows = sqlx::query(
            "SELECT s.id, s.oid, s.name, s.labels FROM agents a
             JOIN series s ON s.oid = a.oid AND s.name IN (SELECT value FROM json_each(?2))
             WHERE a.project_id = ?1 ORDER BY s.oid, s.id",
        )
        .bind(project_id)
        .bind(names_json)
        .fetch_all(&self.reader)
        .await?;
        let slot: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        let mut series = Vec::with_capacity(rows.len());
        for row in rows {
            let name: &str = row.try_get("name")?;
            let Some(&i) = slot.get(name) else { continue };
            let labels: &str = row.try_get("labels")?;
            series.push((
                row.try_get("id")?,
                row.try_get("oid")?,
                i,
                serde_json::from_str(labels)?,
            ));
        }
        let listing = std::sync::Arc::new(Listing { generation, series });
        if let Ok(mut map) = self.listings.lock() {
            // Stale listings are never read again.
            map.retain(|_, kept| kept.generation == generation);
            if map.len() >= LISTINGS {
                map.clear();
            }
            map.insert(key, listing.clone());
        }
        Ok(listing)
    }
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

    async fn project_metric_names(&self, project_id: i64) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT s.name FROM agents a JOIN series s ON s.oid = a.oid
             WHERE a.project_id = ? ORDER BY s.name",
        )
        .bind(project_id)
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
        let listed = sqlx::query(
            "SELECT s.id, s.labels FROM agents a JOIN series s ON s.oid = a.oid
             WHERE a.project_id = ? AND s.oid = ? AND s.name = ? ORDER BY s.id",
        )
        .bind(project_id)
        .bind(oid)
        .bind(name)
        .fetch_all(&self.reader)
        .await?;
        if listed.is_empty() {
            return Ok(Vec::new());
        }
        let mut points: HashMap<i64, BTreeMap<i64, f64>> = HashMap::new();
        for row in &listed {
            points.insert(row.try_get("id")?, BTreeMap::new());
        }
        let in_range = |ts: i64| ts >= range.from_ms && ts <= range.to_ms;
        let chunks = sqlx::query(
            "SELECT c.series_id, c.data FROM series s JOIN chunks c ON c.series_id = s.id
             WHERE s.oid = ?1 AND s.name = ?2 AND c.end_ms >= ?3 AND c.start_ms <= ?4
             ORDER BY c.series_id, c.start_ms",
        )
        .bind(oid)
        .bind(name)
        .bind(range.from_ms)
        .bind(range.to_ms)
        .fetch_all(&self.reader)
        .await?;
        for row in chunks {
            let id: i64 = row.try_get("series_id")?;
            let data: &[u8] = row.try_get("data")?;
            if let Some(series) = points.get_mut(&id) {
                for (ts, value) in points::decode_chunk(data)? {
                    if in_range(ts) {
                        series.insert(ts, value);
                    }
                }
            }
        }
        // The agent's head rows in the range, in the order written: a
        // later value for a series and time replaces an earlier one.
        let head = sqlx::query(
            "SELECT ts_ms, data FROM metric_rows WHERE oid = ? AND ts_ms BETWEEN ? AND ? ORDER BY id",
        )
        .bind(oid)
        .bind(range.from_ms)
        .bind(range.to_ms)
        .fetch_all(&self.reader)
        .await?;
        for row in head {
            let ts: i64 = row.try_get("ts_ms")?;
            let data: &[u8] = row.try_get("data")?;
            for (id, value) in points::decode_row(data)? {
                if let Some(series) = points.get_mut(&id) {
                    series.insert(ts, value);
                }
            }
        }
        let mut out = Vec::with_capacity(listed.len());
        for row in listed {
            let id: i64 = row.try_get("id")?;
            let Some(series) = points.remove(&id).filter(|p| !p.is_empty()) else {
                continue;
            };
            let labels: String = row.try_get("labels")?;
            out.push(Series {
                name: name.to_string(),
                labels: serde_json::from_str(&labels)?,
                points: match range.step_ms {
                    None => series.into_iter().collect(),
                    Some(step) => bucket(&series, step.max(1)),
                },
            });
        }
        Ok(out)
    }

    async fn latest(
        &self,
        project_id: i64,
        name: &str,
        since_ms: i64,
    ) -> Result<Vec<Latest>, StoreError> {
        let mut lists = self.latest_of(project_id, &[name], since_ms).await?;
        Ok(lists.pop().unwrap_or_default())
    }

    async fn latest_of(
        &self,
        project_id: i64,
        names: &[&str],
        since_ms: i64,
    ) -> Result<Vec<Vec<Latest>>, StoreError> {
        let mut out: Vec<Vec<Latest>> = names.iter().map(|_| Vec::new()).collect();
        if names.is_empty() {
            return Ok(out);
        }
        let names_json = serde_json::to_string(names)?;
        let listed = self.listing(project_id, names, &names_json).await?;
        if listed.series.is_empty() {
            return Ok(out);
        }
        let mut newest: HashMap<i64, Option<(i64, f64)>> =
            HashMap::with_capacity(listed.series.len());
        let mut by_agent: BTreeMap<i64, HashSet<i64>> = BTreeMap::new();
        for &(id, oid, _, _) in &listed.series {
            newest.insert(id, None);
            by_agent.entry(oid).or_default().insert(id);
        }
        // Each agent's newest head row in the window, all agents in one
        // statement (one seek of the (oid, ts_ms) index each): a server
        // agent sends every series in each payload, so this row most
        // often settles every series.
        let heads = sqlx::query(
            "SELECT m.oid, m.id, m.ts_ms, m.data FROM agents a
             JOIN metric_rows m ON m.id = (
                 SELECT id FROM metric_rows WHERE oid = a.oid AND ts_ms >= ?2
                 ORDER BY ts_ms DESC, id DESC LIMIT 1)
             WHERE a.project_id = ?1",
        )
        .bind(project_id)
        .bind(since_ms)
        .fetch_all(&self.reader)
        .await?;
        // Agents whose newest row left some series open, and that row's id.
        let mut unsettled: Vec<i64> = Vec::new();
        for row in heads {
            let oid: i64 = row.try_get("oid")?;
            let Some(open) = by_agent.get_mut(&oid) else {
                continue;
            };
            let ts: i64 = row.try_get("ts_ms")?;
            let data: &[u8] = row.try_get("data")?;
            for (id, value) in points::decode_row(data)? {
                if open.remove(&id) {
                    newest.insert(id, Some((ts, value)));
                }
            }
            if !open.is_empty() {
                unsettled.push(oid);
            }
        }
        // The rest: older head rows of those agents, newest first, until
        // every series has a value or the window ends.
        if !unsettled.is_empty() {
            let mut conn = self.reader.acquire().await?;
            for oid in unsettled {
                let Some(open) = by_agent.get_mut(&oid) else {
                    continue;
                };
                let mut rows = sqlx::query(
                    "SELECT ts_ms, data FROM metric_rows WHERE oid = ? AND ts_ms >= ?
                     ORDER BY ts_ms DESC, id DESC",
                )
                .bind(oid)
                .bind(since_ms)
                .fetch(&mut *conn);
                while let Some(row) = rows.next().await {
                    let row = row?;
                    let ts: i64 = row.try_get("ts_ms")?;
                    let data: &[u8] = row.try_get("data")?;
                    for (id, value) in points::decode_row(data)? {
                        // The first value met is the newest (a later
                        // write first at an equal time).
                        if open.remove(&id) {
                            newest.insert(id, Some((ts, value)));
                        }
                    }
                    if open.is_empty() {
                        break;
                    }
                }
            }
        }
        // Compaction only moves head rows older than its horizon (by the
        // wall clock), so a head value younger than that is newer than
        // every chunk point. Series with no head value, or an older one (a
        // late batch), are compared with their newest chunk (chunks never
        // overlap, so it holds the newest compacted point); the head wins
        // at an equal time.
        let fresh_ms = super::now_ms() - super::compact::HORIZON_MS;
        let needs_chunks = by_agent.values().any(|open| !open.is_empty())
            || newest
                .values()
                .any(|n| n.is_some_and(|(at, _)| at < fresh_ms));
        if needs_chunks {
            let chunks = sqlx::query(
                "SELECT c.series_id, c.data FROM agents a
                 JOIN series s ON s.oid = a.oid AND s.name IN (SELECT value FROM json_each(?2))
                 JOIN chunks c ON c.series_id = s.id
                    AND c.start_ms = (SELECT MAX(start_ms) FROM chunks WHERE series_id = s.id)
                 WHERE a.project_id = ?1 AND c.end_ms >= ?3",
            )
            .bind(project_id)
            .bind(&names_json)
            .bind(since_ms)
            .fetch_all(&self.reader)
            .await?;
            for row in chunks {
                let id: i64 = row.try_get("series_id")?;
                let Some(slot) = newest.get_mut(&id) else {
                    continue;
                };
                if slot.is_some_and(|(at, _)| at >= fresh_ms) {
                    continue;
                }
                let data: &[u8] = row.try_get("data")?;
                if let Some(&last) = points::decode_chunk(data)?.last()
                    && slot.is_none_or(|(at, _)| at < last.0)
                {
                    *slot = Some(last);
                }
            }
        }
        for (id, oid, slot, labels) in &listed.series {
            let Some(Some((time_ms, value))) = newest.get(id).copied() else {
                continue;
            };
            if time_ms < since_ms {
                continue;
            }
            if let Some(list) = out.get_mut(*slot) {
                list.push(Latest {
                    oid: *oid,
                    labels: labels.clone(),
                    time_ms,
                    value,
                });
            }
        }
        Ok(out)
    }
}
