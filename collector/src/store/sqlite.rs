//! The embedded store: SQLite through sqlx, in WAL mode, in `--data`.
//!
//! Writes go through a pool of one connection (SQLite has one writer; a
//! queue in front of it beats `SQLITE_BUSY` retries), reads through a pool
//! of several, which WAL lets run beside the writer. `synchronous=FULL`:
//! an ack promises the batch survives a power cut, not only a crash.
//!
//! Every statement is a static string with bound parameters.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::{Delivery, Latest, Purged, Range, Registered, Store, StoreError, Stored};
use crate::model::{
    Agent, AgentHealth, AgentHello, BatchPayload, EventQuery, EventRow, IncomingBatch, ProcessRow,
    Project, SampleRow, Series, SnapshotRow, StoredEvent,
};

/// The schema. `user_version` says which of these has been applied.
const MIGRATIONS: &[&str] = &[r"
CREATE TABLE projects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    license_hash BLOB NOT NULL UNIQUE,
    token_hash BLOB NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);
CREATE TABLE agents (
    oid INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id),
    product TEXT NOT NULL,
    oname TEXT NOT NULL,
    hostname TEXT NOT NULL,
    os TEXT NOT NULL,
    version TEXT NOT NULL,
    boot_time_ms INTEGER NOT NULL,
    created_time TEXT NOT NULL,
    instance TEXT NOT NULL,
    interval_ms INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    health TEXT,
    quiet INTEGER NOT NULL DEFAULT 0,
    UNIQUE (project_id, product, oname)
);
CREATE TABLE batches (
    oid INTEGER NOT NULL,
    instance TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (oid, instance, seq)
) WITHOUT ROWID;
CREATE INDEX batches_received ON batches (received_ms);
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    oid INTEGER NOT NULL,
    name TEXT NOT NULL,
    labels TEXT NOT NULL,
    UNIQUE (oid, name, labels)
);
CREATE TABLE points (
    series_id INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (series_id, ts_ms)
) WITHOUT ROWID;
CREATE TABLE process_snapshots (
    id INTEGER PRIMARY KEY,
    oid INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    total INTEGER NOT NULL,
    state_counts TEXT NOT NULL,
    processes TEXT NOT NULL
);
CREATE INDEX process_snapshots_oid_ts ON process_snapshots (oid, ts_ms);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    oid INTEGER,
    ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    attrs TEXT NOT NULL
);
CREATE INDEX events_project_ts ON events (project_id, ts_ms);
"];

/// Key of the in-memory series id cache: agent, name, labels as JSON.
type SeriesKey = (i64, String, String);

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    series_ids: Mutex<HashMap<SeriesKey, i64>>,
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/sightline.db` and brings its schema
    /// up to date.
    pub async fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        let options = SqliteConnectOptions::new()
            .filename(dir.join("sightline.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore {
            writer,
            reader,
            series_ids: Mutex::new(HashMap::new()),
        })
    }

    /// Closes both pools (waits for in-flight statements).
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// The project a secret's hash belongs to, by `sql` (a static
    /// statement with one bound hash).
    async fn project_by(
        &self,
        sql: &'static str,
        hash: &[u8],
    ) -> Result<Option<Project>, StoreError> {
        let row = sqlx::query(sql)
            .bind(hash)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    fn cached_series(&self, key: &SeriesKey) -> Option<i64> {
        self.series_ids.lock().ok()?.get(key).copied()
    }

    async fn series_id(
        &self,
        tx: &mut Transaction<'static, Sqlite>,
        key: &SeriesKey,
        created: &mut Vec<(SeriesKey, i64)>,
    ) -> Result<i64, StoreError> {
        if let Some(id) = self.cached_series(key) {
            return Ok(id);
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO series (oid, name, labels) VALUES (?, ?, ?)
             ON CONFLICT (oid, name, labels) DO UPDATE SET name = excluded.name
             RETURNING id",
        )
        .bind(key.0)
        .bind(&key.1)
        .bind(&key.2)
        .fetch_one(&mut **tx)
        .await?;
        created.push((key.clone(), id));
        Ok(id)
    }
}

async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(pool)
        .await?;
    for (index, migration) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(version).unwrap_or(0))
    {
        let mut tx = pool.begin().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(*migration))
            .execute(&mut *tx)
            .await?;
        // PRAGMA takes no bound parameters; the value is our own index.
        let set = format!("PRAGMA user_version = {}", index + 1);
        sqlx::raw_sql(sqlx::AssertSqlSafe(set))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    Ok(())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn labels_json(labels: &[(String, String)]) -> String {
    let map: BTreeMap<&str, &str> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    serde_json::to_string(&map).unwrap_or_else(|_| "{}".into())
}

fn agent_from_row(row: &SqliteRow) -> Result<Agent, StoreError> {
    let health: Option<String> = row.try_get("health")?;
    Ok(Agent {
        oid: row.try_get("oid")?,
        project_id: row.try_get("project_id")?,
        product: row.try_get("product")?,
        oname: row.try_get("oname")?,
        hostname: row.try_get("hostname")?,
        os: row.try_get("os")?,
        version: row.try_get("version")?,
        boot_time_ms: row.try_get("boot_time_ms")?,
        interval_ms: row.try_get("interval_ms")?,
        first_seen_ms: row.try_get("first_seen_ms")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
        health: health
            .map(|h| serde_json::from_str::<AgentHealth>(&h))
            .transpose()?,
        instance: row.try_get("instance")?,
    })
}

/// The columns [`agent_from_row`] reads, as a literal for `concat!`.
macro_rules! agent_columns {
    () => {
        "oid, project_id, product, oname, hostname, os, version, boot_time_ms, interval_ms, first_seen_ms, last_seen_ms, health, instance"
    };
}

fn snapshot_from_row(row: &SqliteRow) -> Result<SnapshotRow, StoreError> {
    let state_counts: String = row.try_get("state_counts")?;
    let processes: String = row.try_get("processes")?;
    let total: i64 = row.try_get("total")?;
    Ok(SnapshotRow {
        time_ms: row.try_get("ts_ms")?,
        reason: row.try_get("reason")?,
        total: u32::try_from(total).unwrap_or(0),
        state_counts: serde_json::from_str(&state_counts)?,
        processes: serde_json::from_str::<Vec<ProcessRow>>(&processes)?,
    })
}

fn project_from_row(row: &SqliteRow) -> Result<Project, StoreError> {
    Ok(Project {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
    })
}

impl Store for SqliteStore {
    async fn create_project(
        &self,
        name: &str,
        license_hash: &[u8],
        token_hash: &[u8],
    ) -> Result<Project, StoreError> {
        let now = crate::now_ms();
        let result = sqlx::query(
            "INSERT INTO projects (name, license_hash, token_hash, created_ms) VALUES (?, ?, ?, ?) RETURNING id, name",
        )
        .bind(name)
        .bind(license_hash)
        .bind(token_hash)
        .bind(now)
        .fetch_one(&self.writer)
        .await;
        match result {
            Ok(row) => project_from_row(&row),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(StoreError::Conflict(
                format!("a project named '{name}' exists already"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    async fn projects(&self) -> Result<Vec<Project>, StoreError> {
        let rows = sqlx::query("SELECT id, name FROM projects ORDER BY id")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(project_from_row).collect()
    }

    async fn project_by_license(&self, license_hash: &[u8]) -> Result<Option<Project>, StoreError> {
        self.project_by(
            "SELECT id, name FROM projects WHERE license_hash = ?",
            license_hash,
        )
        .await
    }

    async fn project_by_token(&self, token_hash: &[u8]) -> Result<Option<Project>, StoreError> {
        self.project_by(
            "SELECT id, name FROM projects WHERE token_hash = ?",
            token_hash,
        )
        .await
    }

    async fn register_agent(
        &self,
        project_id: i64,
        hello: &AgentHello,
        now_ms: i64,
    ) -> Result<Registered, StoreError> {
        let mut tx = self.writer.begin().await?;
        let oid: i64 = sqlx::query_scalar(
            "INSERT INTO agents (project_id, product, oname, hostname, os, version, boot_time_ms,
                                 created_time, instance, interval_ms, first_seen_ms, last_seen_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (project_id, product, oname) DO UPDATE SET
                 hostname = excluded.hostname, os = excluded.os, version = excluded.version,
                 boot_time_ms = excluded.boot_time_ms, created_time = excluded.created_time,
                 instance = excluded.instance, interval_ms = excluded.interval_ms,
                 last_seen_ms = excluded.last_seen_ms
             RETURNING oid",
        )
        .bind(project_id)
        .bind(&hello.product)
        .bind(&hello.oname)
        .bind(&hello.hostname)
        .bind(&hello.os)
        .bind(&hello.version)
        .bind(hello.boot_time_ms)
        .bind(&hello.created_time)
        .bind(&hello.instance)
        .bind(hello.interval_ms)
        .bind(now_ms)
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        let last: Option<i64> =
            sqlx::query_scalar("SELECT MAX(seq) FROM batches WHERE oid = ? AND instance = ?")
                .bind(oid)
                .bind(&hello.instance)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(Registered {
            oid,
            last_seq: last.map_or(0, |s| u64::try_from(s).unwrap_or(0)),
        })
    }

    async fn agent(&self, project_id: i64, oid: i64) -> Result<Option<Agent>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE project_id = ? AND oid = ?"
        ))
        .bind(project_id)
        .bind(oid)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(agent_from_row).transpose()
    }

    async fn agents(&self, project_id: i64) -> Result<Vec<Agent>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            agent_columns!(),
            " FROM agents WHERE project_id = ? ORDER BY oname, product"
        ))
        .bind(project_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn store_batch(
        &self,
        project_id: i64,
        oid: i64,
        instance: &str,
        batch: IncomingBatch,
        now_ms: i64,
    ) -> Result<Stored, StoreError> {
        let mut tx = self.writer.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO batches (oid, instance, seq, time_ms, received_ms) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (oid, instance, seq) DO NOTHING",
        )
        .bind(oid)
        .bind(instance)
        .bind(to_i64(batch.seq))
        .bind(batch.time_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(Stored::Duplicate);
        }
        let mut created = Vec::new();
        for payload in &batch.payloads {
            match payload {
                BatchPayload::Metrics { time_ms, samples } => {
                    for SampleRow {
                        name,
                        labels,
                        value,
                    } in samples
                    {
                        let key = (oid, name.clone(), labels_json(labels));
                        let series = self.series_id(&mut tx, &key, &mut created).await?;
                        sqlx::query(
                            "INSERT OR REPLACE INTO points (series_id, ts_ms, value) VALUES (?, ?, ?)",
                        )
                        .bind(series)
                        .bind(time_ms)
                        .bind(value)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                BatchPayload::Processes(snapshot) => {
                    sqlx::query(
                        "INSERT INTO process_snapshots (oid, ts_ms, reason, total, state_counts, processes)
                         VALUES (?, ?, ?, ?, ?, ?)",
                    )
                    .bind(oid)
                    .bind(snapshot.time_ms)
                    .bind(&snapshot.reason)
                    .bind(i64::from(snapshot.total))
                    .bind(serde_json::to_string(&snapshot.state_counts)?)
                    .bind(serde_json::to_string(&snapshot.processes)?)
                    .execute(&mut *tx)
                    .await?;
                }
                BatchPayload::Events(events) => {
                    for event in events {
                        insert_event(&mut tx, project_id, Some(oid), event).await?;
                    }
                }
            }
        }
        let health = batch
            .health
            .map(|h| serde_json::to_string(&h))
            .transpose()?;
        sqlx::query(
            "UPDATE agents SET last_seen_ms = MAX(last_seen_ms, ?), health = COALESCE(?, health), quiet = 0
             WHERE oid = ?",
        )
        .bind(now_ms)
        .bind(health)
        .bind(oid)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if let Ok(mut cache) = self.series_ids.lock() {
            cache.extend(created);
        }
        Ok(Stored::New)
    }

    async fn metric_names(&self, oid: i64) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT name FROM series WHERE oid = ? ORDER BY name")
                .bind(oid)
                .fetch_all(&self.reader)
                .await?,
        )
    }

    async fn metrics(&self, oid: i64, name: &str, range: Range) -> Result<Vec<Series>, StoreError> {
        let rows = match range.step_ms {
            None => {
                sqlx::query(
                    "SELECT s.id, s.labels, p.ts_ms, p.value FROM series s
                     JOIN points p ON p.series_id = s.id
                     WHERE s.oid = ? AND s.name = ? AND p.ts_ms BETWEEN ? AND ?
                     ORDER BY s.id, p.ts_ms",
                )
                .bind(oid)
                .bind(name)
                .bind(range.from_ms)
                .bind(range.to_ms)
                .fetch_all(&self.reader)
                .await?
            }
            Some(step) => {
                sqlx::query(
                    "SELECT s.id, s.labels, (p.ts_ms / ?1) * ?1 AS ts_ms, AVG(p.value) AS value FROM series s
                     JOIN points p ON p.series_id = s.id
                     WHERE s.oid = ?2 AND s.name = ?3 AND p.ts_ms BETWEEN ?4 AND ?5
                     GROUP BY s.id, (p.ts_ms / ?1)
                     ORDER BY s.id, ts_ms",
                )
                .bind(step.max(1))
                .bind(oid)
                .bind(name)
                .bind(range.from_ms)
                .bind(range.to_ms)
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

    async fn process_snapshot(
        &self,
        oid: i64,
        at_ms: Option<i64>,
        reason: Option<&str>,
    ) -> Result<Option<SnapshotRow>, StoreError> {
        let row = match at_ms {
            None => {
                sqlx::query(
                    "SELECT ts_ms, reason, total, state_counts, processes FROM process_snapshots
                     WHERE oid = ?1 AND (?2 IS NULL OR reason = ?2)
                     ORDER BY ts_ms DESC LIMIT 1",
                )
                .bind(oid)
                .bind(reason)
                .fetch_optional(&self.reader)
                .await?
            }
            Some(at) => {
                // The nearest on either side, each found through the index.
                sqlx::query(
                    "SELECT * FROM (
                        SELECT * FROM (SELECT ts_ms, reason, total, state_counts, processes FROM process_snapshots
                            WHERE oid = ?1 AND (?2 IS NULL OR reason = ?2) AND ts_ms <= ?3
                            ORDER BY ts_ms DESC LIMIT 1)
                        UNION ALL
                        SELECT * FROM (SELECT ts_ms, reason, total, state_counts, processes FROM process_snapshots
                            WHERE oid = ?1 AND (?2 IS NULL OR reason = ?2) AND ts_ms > ?3
                            ORDER BY ts_ms ASC LIMIT 1)
                     ) ORDER BY ABS(ts_ms - ?3) LIMIT 1",
                )
                .bind(oid)
                .bind(reason)
                .bind(at)
                .fetch_optional(&self.reader)
                .await?
            }
        };
        row.as_ref().map(snapshot_from_row).transpose()
    }

    async fn events(
        &self,
        project_id: i64,
        query: &EventQuery,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.id, e.oid, a.oname, e.ts_ms, e.kind, e.severity, e.message, e.attrs
             FROM events e LEFT JOIN agents a ON a.oid = e.oid
             WHERE e.project_id = ?1 AND e.ts_ms BETWEEN ?2 AND ?3
               AND (?4 IS NULL OR e.oid = ?4) AND (?5 IS NULL OR e.kind = ?5)
             ORDER BY e.ts_ms DESC, e.id DESC LIMIT ?6",
        )
        .bind(project_id)
        .bind(query.from_ms)
        .bind(query.to_ms)
        .bind(query.oid)
        .bind(query.kind.as_deref())
        .bind(query.limit)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                let attrs: String = row.try_get("attrs")?;
                Ok(StoredEvent {
                    id: row.try_get("id")?,
                    oid: row.try_get("oid")?,
                    oname: row.try_get("oname")?,
                    event: EventRow {
                        time_ms: row.try_get("ts_ms")?,
                        kind: row.try_get("kind")?,
                        severity: row.try_get("severity")?,
                        message: row.try_get("message")?,
                        attrs: serde_json::from_str(&attrs)?,
                    },
                })
            })
            .collect()
    }

    async fn insert_event(
        &self,
        project_id: i64,
        oid: Option<i64>,
        event: &EventRow,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        insert_event(&mut tx, project_id, oid, event).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn newly_quiet_agents(&self, now_ms: i64) -> Result<Vec<Agent>, StoreError> {
        let rows = sqlx::query(concat!(
            "UPDATE agents SET quiet = 1
             WHERE quiet = 0 AND ? - last_seen_ms > 3 * MAX(interval_ms, 1000)
             RETURNING ",
            agent_columns!()
        ))
        .bind(now_ms)
        .fetch_all(&self.writer)
        .await?;
        rows.iter().map(agent_from_row).collect()
    }

    async fn purge_before(
        &self,
        cutoff_ms: i64,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<Purged, StoreError> {
        let mut purged = Purged::default();
        let series: Vec<i64> = sqlx::query_scalar("SELECT id FROM series")
            .fetch_all(&self.reader)
            .await?;
        // One short transaction per series, so ingest never waits long.
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
        purged.batches = sqlx::query("DELETE FROM batches WHERE received_ms < ?")
            .bind(cutoff_ms)
            .execute(&self.writer)
            .await?
            .rows_affected();
        Ok(purged)
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

    async fn latest_snapshots(
        &self,
        project_id: i64,
        reason: &str,
        since_ms: i64,
    ) -> Result<Vec<(i64, SnapshotRow)>, StoreError> {
        let rows = sqlx::query(
            "SELECT ps.oid, ps.ts_ms, ps.reason, ps.total, ps.state_counts, ps.processes
             FROM agents a
             JOIN process_snapshots ps ON ps.id = (
                 SELECT id FROM process_snapshots
                 WHERE oid = a.oid AND reason = ?2 ORDER BY ts_ms DESC LIMIT 1)
             WHERE a.project_id = ?1 AND ps.ts_ms >= ?3",
        )
        .bind(project_id)
        .bind(reason)
        .bind(since_ms)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("oid")?, snapshot_from_row(row)?)))
            .collect()
    }

    async fn delivery(&self, oid: i64) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT instance, COUNT(*) AS batches, MIN(seq) AS first_seq, MAX(seq) AS last_seq
             FROM batches WHERE oid = ? GROUP BY instance ORDER BY MIN(received_ms)",
        )
        .bind(oid)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|row| {
                let count = |c: &str| -> Result<u64, StoreError> {
                    Ok(u64::try_from(row.try_get::<i64, _>(c)?).unwrap_or(0))
                };
                let (batches, first_seq, last_seq) =
                    (count("batches")?, count("first_seq")?, count("last_seq")?);
                Ok(Delivery {
                    instance: row.try_get("instance")?,
                    batches,
                    first_seq,
                    last_seq,
                    missing: (last_seq - first_seq + 1).saturating_sub(batches),
                })
            })
            .collect()
    }
}

async fn insert_event(
    tx: &mut Transaction<'static, Sqlite>,
    project_id: i64,
    oid: Option<i64>,
    event: &EventRow,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (project_id, oid, ts_ms, kind, severity, message, attrs) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(project_id)
    .bind(oid)
    .bind(event.time_ms)
    .bind(&event.kind)
    .bind(&event.severity)
    .bind(&event.message)
    .bind(serde_json::to_string(&event.attrs)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
