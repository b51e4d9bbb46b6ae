//! The embedded store: SQLite through sqlx, in WAL mode, in one folder
//! (`store=sqlite:DIR`, by default `data.dir`).
//!
//! Writes go through a pool of one connection (SQLite has one writer; a
//! queue in front of it beats `SQLITE_BUSY` retries), reads through a pool
//! of several, which WAL lets run beside the writer. `synchronous=FULL`:
//! an ack promises the batch survives a power cut, not only a crash; group
//! commit ([`super::group`]) pays that fsync once for many batches.
//!
//! Metric points are packed one row per reading (see [`metrics`]).
//!
//! One file per concern: this one opens, migrates and converts errors;
//! [`registry`], [`sink`] (the exactly-once core), one file per product's
//! rows and reads ([`metrics`], [`events`], [`infra`], [`logs`], [`db`], [`url`]), [`alerts`], [`delivery`],
//! [`retention`] and [`lifecycle`] (terminating an agent: every row of it
//! deleted). Metrics are a head of one row per payload that
//! [`compact`] (a background task) moves into per-series chunks; their
//! byte layouts are in [`points`]. A new product adds its file and one arm in
//! `sink::store_payload`.
//!
//! Every statement is a static string with bound parameters; sqlx never
//! leaves this module (its errors become [`StoreError`]).

mod alerts;
mod compact;
mod db;
mod delivery;
mod events;
mod infra;
mod lifecycle;
mod logs;
mod metrics;
mod points;
mod registry;
mod retention;
mod sink;
mod url;

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{Store, StoreError, StoreLimits};

/// The schema. `user_version` says which of these has been applied.
const MIGRATIONS: &[&str] = &[
    r"
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
",
    // The boot id of an agent's latest Hello (two hosts with one oname),
    // and what dedupe needs after retention removed batch records: per
    // instance, the highest sequence number removed. Kept forever.
    r"
ALTER TABLE agents ADD COLUMN boot_id TEXT NOT NULL DEFAULT '';
CREATE TABLE dedupe_watermarks (
    oid INTEGER NOT NULL,
    instance TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (oid, instance)
) WITHOUT ROWID;
",
    // Metrics as a head and chunks ([`metrics`], [`compact`]): one head
    // row per metrics payload, compacted later into per-series chunks.
    // The rows of the first schema's `points` (one row per point, a page
    // written per series per commit) are moved into chunks at open
    // (`compact::convert_points_table`), then that table is dropped.
    // Chunks are a rowid table: their blobs run to a few KiB, which a
    // WITHOUT ROWID b-tree would push into overflow pages.
    r"
CREATE TABLE metric_rows (
    id INTEGER PRIMARY KEY,
    oid INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    points INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX metric_rows_oid_ts ON metric_rows (oid, ts_ms);
CREATE INDEX metric_rows_ts ON metric_rows (ts_ms);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL,
    points INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE UNIQUE INDEX chunks_series_start ON chunks (series_id, start_ms);
CREATE INDEX chunks_series_end ON chunks (series_id, end_ms);
",
    // Log records ([`logs`]): one row per stored block, its bloom filter
    // and pattern counts before its data (a search that reads the filter
    // stops before the data's overflow pages); the per-file watermark of
    // exactly-once, kept forever; pattern templates with one example.
    r"
CREATE TABLE log_blocks (
    id INTEGER PRIMARY KEY,
    oid INTEGER NOT NULL,
    category TEXT NOT NULL,
    file_id TEXT NOT NULL,
    path TEXT NOT NULL,
    attrs TEXT NOT NULL,
    min_ms INTEGER NOT NULL,
    max_ms INTEGER NOT NULL,
    first_start INTEGER NOT NULL,
    last_end INTEGER NOT NULL,
    records INTEGER NOT NULL,
    text_bytes INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL,
    patterns BLOB NOT NULL,
    bloom BLOB NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX log_blocks_time ON log_blocks (max_ms);
CREATE TABLE log_watermarks (
    oid INTEGER NOT NULL,
    file_id TEXT NOT NULL,
    end_offset INTEGER NOT NULL,
    PRIMARY KEY (oid, file_id)
) WITHOUT ROWID;
CREATE TABLE log_templates (
    project_id INTEGER NOT NULL,
    hash INTEGER NOT NULL,
    template TEXT NOT NULL,
    example TEXT NOT NULL,
    PRIMARY KEY (project_id, hash)
) WITHOUT ROWID;
",
    // Database snapshots ([`db`]): one row per snapshot, its counts for
    // the timeline beside its compressed body; found nearest a time by
    // (project, oid, time); retention by time across agents. Variables
    // one row per change, kept until a newer value is itself past the
    // cutoff.
    r"
CREATE TABLE db_snapshots (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    oid INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    reason TEXT NOT NULL,
    flavor TEXT NOT NULL,
    version TEXT NOT NULL,
    sessions INTEGER NOT NULL,
    lock_nodes INTEGER NOT NULL,
    root_blockers INTEGER NOT NULL,
    max_wait_ms INTEGER NOT NULL,
    locks_read INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX db_snapshots_agent_time ON db_snapshots (project_id, oid, time_ms);
CREATE INDEX db_snapshots_time ON db_snapshots (time_ms);
CREATE TABLE db_variables (
    oid INTEGER NOT NULL,
    name TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (oid, name, time_ms)
) WITHOUT ROWID;
",
    // URL checks ([`url`]): one row per check, found by (project, agent,
    // target, time) for a target's results and by time for retention; the
    // url and method live on the target. `url_targets`, one row per
    // (project, agent, target) upserted by each newer check, keeps the
    // latest check's id and since when the target is in its state, so the
    // current list is one row per target, not a scan of the checks.
    // `url_totals` keeps the checks' count and bytes, so `url.max_bytes`
    // is checked without summing millions of rows each minute.
    r"
CREATE TABLE url_checks (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    oid INTEGER NOT NULL,
    target TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    ok INTEGER NOT NULL,
    failure TEXT NOT NULL,
    detail TEXT NOT NULL,
    dns_us INTEGER NOT NULL,
    connect_us INTEGER NOT NULL,
    tls_us INTEGER NOT NULL,
    first_byte_us INTEGER NOT NULL,
    transfer_us INTEGER NOT NULL,
    total_us INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    http_version TEXT NOT NULL,
    body_bytes INTEGER NOT NULL,
    redirects INTEGER NOT NULL,
    final_url TEXT NOT NULL,
    remote_ip TEXT NOT NULL,
    cert_subject TEXT,
    cert_issuer TEXT,
    cert_not_after_ms INTEGER,
    cert_days_left INTEGER,
    cert_chain_days_left INTEGER,
    stored_bytes INTEGER NOT NULL
);
CREATE INDEX url_checks_target_time ON url_checks (project_id, target, oid, time_ms);
CREATE INDEX url_checks_time ON url_checks (time_ms);
CREATE TABLE url_targets (
    project_id INTEGER NOT NULL,
    oid INTEGER NOT NULL,
    target TEXT NOT NULL,
    url TEXT NOT NULL,
    method TEXT NOT NULL,
    state TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    last_check_id INTEGER NOT NULL,
    PRIMARY KEY (project_id, oid, target)
) WITHOUT ROWID;
CREATE TABLE url_totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checks INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT INTO url_totals (id, checks, bytes) VALUES (1, 0, 0);
",
    // Alerts ([`alerts`]): rules and channels as JSON per project; one
    // row per alert (rule, agent, target; oid 0 for the project as a
    // whole) with its state, a history line per change; the notification
    // queue (a row per change and channel, due at `next_ms` while
    // `queued`) and every attempt; agents' pauses.
    r"
CREATE TABLE alert_rules (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    UNIQUE (project_id, name)
);
CREATE TABLE alert_channels (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE (project_id, name)
);
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    rule_id INTEGER NOT NULL,
    oid INTEGER NOT NULL,
    target TEXT NOT NULL,
    rule_name TEXT NOT NULL,
    state TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    last_notified_ms INTEGER,
    value REAL,
    message TEXT NOT NULL,
    UNIQUE (rule_id, oid, target)
);
CREATE INDEX alerts_project_state ON alerts (project_id, state);
CREATE TABLE alert_history (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    rule_id INTEGER NOT NULL,
    oid INTEGER NOT NULL,
    target TEXT NOT NULL,
    rule_name TEXT NOT NULL,
    state TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    value REAL,
    message TEXT NOT NULL,
    notified INTEGER NOT NULL
);
CREATE INDEX alert_history_project_time ON alert_history (project_id, time_ms);
CREATE TABLE alert_notifications (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX alert_notifications_due ON alert_notifications (state, next_ms);
CREATE TABLE alert_attempts (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    notification_id INTEGER NOT NULL,
    channel_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    elapsed_ms INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    status INTEGER,
    error TEXT
);
CREATE INDEX alert_attempts_project ON alert_attempts (project_id, id);
CREATE INDEX alert_attempts_time ON alert_attempts (time_ms);
CREATE TABLE agent_pauses (
    oid INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    since_ms INTEGER NOT NULL,
    until_ms INTEGER
);
",
    // Terminated agents ([`lifecycle`]): when the agent was terminated
    // (NULL: it was not), its data deleted and its Hello refused until it
    // is enabled again. Log blocks and events by agent, so that deletion
    // is a range of an index rather than a scan of every block or of the
    // project's events.
    r"
ALTER TABLE agents ADD COLUMN terminated_ms INTEGER;
CREATE INDEX log_blocks_oid ON log_blocks (oid);
CREATE INDEX events_oid ON events (oid, ts_ms);
",
];

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(e.to_string())
            }
            other => StoreError::Unavailable {
                source: Box::new(other),
            },
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(format!("stored JSON: {e}"))
    }
}

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    limits: StoreLimits,
    /// Series ids and per-agent series counts; held for the whole of a
    /// sink transaction and of the purge of empty series, so neither sees
    /// the other half done.
    series: tokio::sync::Mutex<metrics::SeriesCache>,
    /// Moves old head rows into chunks; stopped by [`SqliteStore::close`].
    compactor: compact::Compactor,
    /// Log records as they are committed, for the live tail.
    log_feed: tokio::sync::broadcast::Sender<std::sync::Arc<crate::logs::LiveLogs>>,
    /// Pattern templates known to be stored (project, hash).
    log_templates: std::sync::Mutex<std::collections::HashSet<(i64, u64)>>,
    /// Bumped after a series is made or removed ([`SqliteStore::series_changed`]).
    series_generation: std::sync::atomic::AtomicU64,
    /// Agents terminated: their batches are refused by the sink. Changed
    /// only with the series lock held, which the sink holds for its
    /// whole transaction, so a batch is either stored before the agent's
    /// data is deleted or refused after.
    terminated: std::sync::Mutex<std::collections::HashSet<i64>>,
    /// Each agent terminated, after its commit.
    terminations: tokio::sync::broadcast::Sender<i64>,
    /// Series listings of [`crate::store::MetricReads::latest_of`], by
    /// project and names.
    listings: std::sync::Mutex<
        std::collections::HashMap<(i64, String), std::sync::Arc<metrics::Listing>>,
    >,
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/sightline.db` and brings its schema
    /// up to date.
    pub async fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(dir, StoreLimits::default()).await
    }

    /// [`SqliteStore::open`] with limits on what agents may make it keep.
    pub async fn open_with(dir: &Path, limits: StoreLimits) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Unavailable {
            source: format!("cannot create {}: {e}", dir.display()).into(),
        })?;
        let options = SqliteConnectOptions::new()
            .filename(dir.join("sightline.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Points are kept in series order, so a group dirties a page
            // per series: keep hot pages in memory (64 MiB per connection)
            // and checkpoint the WAL less often, so a page written by many
            // groups reaches the database file once (measured: 115k to
            // 135k points/s on 20,000 series).
            .pragma("cache_size", "-65536")
            .pragma("wal_autocheckpoint", "16384");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        migrate(&writer).await?;
        compact::convert_points_table(&writer).await?;
        let terminated: Vec<i64> =
            sqlx::query_scalar("SELECT oid FROM agents WHERE terminated_ms IS NOT NULL")
                .fetch_all(&writer)
                .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore {
            reader,
            limits,
            series: tokio::sync::Mutex::new(metrics::SeriesCache::default()),
            compactor: compact::Compactor::start(writer.clone()),
            writer,
            log_feed: tokio::sync::broadcast::channel(logs::FEED_CHUNKS).0,
            log_templates: std::sync::Mutex::default(),
            series_generation: std::sync::atomic::AtomicU64::new(0),
            terminated: std::sync::Mutex::new(terminated.into_iter().collect()),
            terminations: tokio::sync::broadcast::channel(64).0,
            listings: std::sync::Mutex::default(),
        })
    }

    /// Stops compaction after its current step, then closes both pools
    /// (waits for in-flight statements).
    pub async fn close(&self) {
        self.compactor.stop().await;
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Closes the writer only: every write fails from here on, reads
    /// still answer (how tests make a commit fail).
    #[cfg(test)]
    pub(crate) async fn close_writer_for_tests(&self) {
        self.writer.close().await;
    }
}

impl Store for SqliteStore {
    async fn close(&self) {
        SqliteStore::close(self).await;
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

/// Now, unix ms.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MetricReads, Range};

    /// A store of the first schema (one `points` row per point, the one
    /// released before the head and chunks) opens with its points moved
    /// into chunks, values and labels intact, and the old table gone.
    #[tokio::test]
    async fn points_of_a_first_schema_store_are_moved_into_chunks() {
        let dir = std::env::temp_dir().join(format!("sl-store-convert-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let options = SqliteConnectOptions::new()
            .filename(dir.join("sightline.db"))
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("pool");
        sqlx::raw_sql(sqlx::AssertSqlSafe(MIGRATIONS[0]))
            .execute(&pool)
            .await
            .expect("old schema");
        sqlx::raw_sql(sqlx::AssertSqlSafe(
            "PRAGMA user_version = 1;
             INSERT INTO projects VALUES (1, 'p', x'01', x'02', 0);
             INSERT INTO agents (oid, project_id, product, oname, hostname, os, version, boot_time_ms,
                 created_time, instance, interval_ms, first_seen_ms, last_seen_ms)
                 VALUES (7, 1, 'infra', 'h', 'h', 'linux', '0', 0, '', 'i', 1000, 0, 0);
             INSERT INTO series VALUES (1, 7, 'cpu.usage', '{}'), (2, 7, 'cpu.usage', '{\"cpu\":\"0\"}');
             INSERT INTO points VALUES (1, 1000, 0.5), (2, 1000, 0.25), (1, 2000, 0.75);",
        ))
        .execute(&pool)
        .await
        .expect("old rows");
        pool.close().await;

        let store = SqliteStore::open(&dir).await.expect("opens and converts");
        let range = Range {
            from_ms: 0,
            to_ms: 10_000,
            step_ms: None,
        };
        let mut series = store.metrics(1, 7, "cpu.usage", range).await.expect("q");
        series.sort_by_key(|s| s.labels.len());
        assert_eq!(series[0].points, [(1000, 0.5), (2000, 0.75)]);
        assert_eq!(series[1].points, [(1000, 0.25)]);
        assert_eq!(series[1].labels.get("cpu").map(String::as_str), Some("0"));
        let old_table: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'points'",
        )
        .fetch_optional(&store.reader)
        .await
        .expect("schema");
        assert_eq!(old_table, None, "the old table is gone");
        store.close().await;
        // Opening again finds nothing left to convert.
        let store = SqliteStore::open(&dir).await.expect("opens again");
        assert_eq!(
            store
                .metrics(1, 7, "cpu.usage", range)
                .await
                .expect("q")
                .len(),
            2
        );
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The series cap holds across a restart (a cold cache reads the
    /// agent's series once), and existing series still flow.
    #[tokio::test]
    async fn the_series_cap_holds_after_a_restart() {
        use crate::model::{AgentHello, BatchPayload, IncomingBatch, SampleRow};
        use crate::store::{BatchSink, BatchToStore, Registry, Stored};
        let dir = std::env::temp_dir().join(format!("sl-store-cap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let limits = StoreLimits {
            series_per_agent: 3,
        };
        let instance = "0123456789abcdef0123456789abcdef";
        let batch = |seq: u64, n: usize| BatchToStore {
            project_id: 1,
            oid: 1,
            instance: instance.into(),
            batch: IncomingBatch {
                seq,
                time_ms: seq as i64,
                health: None,
                payloads: vec![BatchPayload::Metrics {
                    time_ms: seq as i64,
                    samples: (0..n)
                        .map(|i| SampleRow {
                            name: "m".into(),
                            labels: vec![("i".into(), i.to_string())],
                            value: 1.0,
                        })
                        .collect(),
                }],
            },
            received_ms: 0,
        };
        let store = SqliteStore::open_with(&dir, limits).await.expect("opens");
        let p = store.create_project("p", b"l", b"t").await.expect("p");
        let hello = AgentHello {
            product: "infra".into(),
            oname: "h".into(),
            hostname: "h".into(),
            os: String::new(),
            version: String::new(),
            boot_time_ms: 0,
            created_time: String::new(),
            instance: instance.into(),
            interval_ms: 1000,
            boot_id: String::new(),
        };
        let r = store.register_agent(p.id, &hello, 0).await.expect("r");
        assert_eq!((p.id, r.oid), (1, 1));
        let first = store.store_batches(&[batch(1, 2)]).await.expect("stored");
        assert_eq!(first, [Stored::NEW]);
        store.close().await;

        let store = SqliteStore::open_with(&dir, limits).await.expect("reopens");
        let again = store
            .store_batches(&[batch(2, 5), batch(3, 5)])
            .await
            .expect("stored");
        assert_eq!(
            again,
            [
                Stored::New { samples_refused: 2 },
                Stored::New { samples_refused: 2 }
            ],
            "two series existed, one more fits, two are refused"
        );
        let range = crate::store::Range {
            from_ms: 0,
            to_ms: 10,
            step_ms: None,
        };
        let series = store.metrics(1, 1, "m", range).await.expect("q");
        assert_eq!(series.len(), 3);
        assert!(
            series
                .iter()
                .all(|s| s.points.last().map(|p| p.0) == Some(3))
        );
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
