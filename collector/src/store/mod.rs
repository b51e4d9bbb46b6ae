//! Durable storage behind a few small interfaces, so that a backend for a
//! fleet (ClickHouse, PostgreSQL) can be added without touching ingest or
//! the API. The embedded backend is [`sqlite::SqliteStore`]; which one runs
//! is chosen at start from the `store` key ([`StoreUrl`]).
//!
//! The interfaces, by what they are:
//! - [`Registry`]: projects, agents (terminating one deletes its data),
//!   and the events the collector raises itself. Small, transactional,
//!   read often.
//! - [`BatchSink`]: the idempotent batch store keyed by `(oid, instance,
//!   seq)`. [`group::GroupWriter`] feeds it many streams' batches at once.
//! - Reads per product, each taking the project so a read cannot forget its
//!   scope: [`MetricReads`], [`EventReads`], [`InfraReads`],
//!   [`DeliveryReads`], [`LogReads`] (search, patterns and the live feed
//!   of log records), [`DbReads`] (database snapshots: sessions and lock
//!   trees by time; the database agent's counters are metrics),
//!   [`UrlReads`] (URL targets now and each target's checks over time).
//! - [`AlertStore`]: alert rules, channels, alerts and their history,
//!   the notification queue with every attempt, and agents' pauses.
//! - [`Retention`]: removing old data without breaking dedupe.
//! - [`Store`]: all of them, so the server and the API are generic over one
//!   type.
//!
//! # The exactly-once contract
//!
//! An agent resends a batch until it is acked, and an ack leaves only after
//! [`BatchSink::store_batches`] returned for the group holding the batch.
//! So a backend must make these true:
//!
//! 1. **Durable before it returns.** Every batch reported
//!    [`Stored::New`] or [`Stored::Duplicate`] survives a crash of the
//!    collector (and, for the embedded store, a power cut).
//! 2. **Once.** A batch whose key `(oid, instance, seq)` was stored before,
//!    in this group or an earlier one, changes nothing and is reported
//!    `Duplicate`. The same key twice in one group is one `New`, one
//!    `Duplicate`.
//! 3. **Dedupe outlives retention.** A batch at or below the instance's
//!    retention watermark (the highest sequence number whose record
//!    retention removed) is a `Duplicate`: a spool may hold it for longer
//!    than data is kept. Batches of one instance are stored in order, so
//!    one number per instance is enough; it is kept forever.
//!
//! Two ways to keep it:
//!
//! - **With transactions (PostgreSQL, SQLite).** Per group, one
//!   transaction: insert each batch record with "on conflict do nothing";
//!   a conflict (or a sequence number at or below the watermark) means
//!   duplicate, and that batch's rows are not written; otherwise write its
//!   rows in the same transaction. Commit, then answer.
//! - **Without multi-statement transactions (ClickHouse).** Write each
//!   batch's rows as blocks carrying a deterministic deduplication token
//!   derived from `(oid, instance, seq)` and the block's place in the batch
//!   (`insert_deduplication_token`), so a resend re-writes identical blocks
//!   that the server drops. Write the batch record last, and only then
//!   answer. A crash between rows and record leaves rows without a record:
//!   the resend writes them again (dropped as duplicates) and then the
//!   record. Reads must tolerate a batch whose rows landed but whose record
//!   did not yet (they read rows, never join through records); the record
//!   table decides only `Duplicate` and the delivery audit.
//!
//! Invariants every backend keeps:
//! - Every read is scoped: callers pass the project, and an agent of another
//!   project is as absent as one that never existed.
//! - Errors never expose the backend's types ([`StoreError`]).
//! - Only this module writes SQL.

pub mod group;
pub mod sqlite;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::path::PathBuf;

use crate::alerts::{
    AlertChange, AlertRow, Attempt, AttemptRow, ChannelConfig, ChannelRow, HistoryRow,
    Notification, Pause, RuleRow, RuleSpec,
};
use crate::logs::{LiveLogs, LogPage, LogPattern, LogQuery, PatternQuery};
use crate::model::{
    Agent, AgentHealth, AgentHello, DbSnapshotRow, DbSnapshotTime, EventQuery, EventRow,
    IncomingBatch, Project, Series, SnapshotRow, StoredEvent, UrlCheckRow, UrlTargetFilter,
    UrlTargetRow,
};

/// A store failure. Backends convert their own errors into these.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or failed; retrying may work.
    #[error("store unavailable: {source}")]
    Unavailable {
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Something stored is not what it should be (a JSON column that does
    /// not parse, say).
    #[error("store corrupt: {0}")]
    Corrupt(String),
    /// A request conflicts with what is stored (a duplicate name, say).
    #[error("{0}")]
    Conflict(String),
}

/// Where the store is, from the `store` key: `sqlite:DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded SQLite store in a folder.
    Sqlite(PathBuf),
}

/// The schemes `store` accepts, for error messages.
pub const STORE_SCHEMES: &[&str] = &["sqlite"];

impl StoreUrl {
    /// Parses `scheme:rest`; the error says which schemes exist.
    pub fn parse(text: &str) -> Result<StoreUrl, String> {
        let known = STORE_SCHEMES.join(", ");
        match text.split_once(':') {
            Some(("sqlite", dir)) if !dir.is_empty() => Ok(StoreUrl::Sqlite(PathBuf::from(dir))),
            Some(("sqlite", _)) => {
                Err("sqlite: needs a folder, as in sqlite:/var/lib/sightline".into())
            }
            Some((scheme, _)) => Err(format!(
                "unknown store scheme '{scheme}'; known schemes: {known} (as in sqlite:/var/lib/sightline)"
            )),
            None => Err(format!(
                "expected SCHEME:LOCATION; known schemes: {known} (as in sqlite:/var/lib/sightline)"
            )),
        }
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(dir) => write!(f, "sqlite:{}", dir.display()),
        }
    }
}

/// What the network may make the store keep, per agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Distinct series (name and labels) an agent may have; samples of new
    /// series beyond it are refused.
    pub series_per_agent: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            series_per_agent: 10_000,
        }
    }
}

/// The result of storing one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored now; `samples_refused` samples of new series were left out
    /// (over [`StoreLimits::series_per_agent`]).
    New {
        /// Samples left out.
        samples_refused: u64,
    },
    /// Stored before; nothing changed.
    Duplicate,
    /// The agent was terminated ([`Registry::terminate_agent`]): nothing
    /// stored, and the batch must not be acked (it stays in the agent's
    /// spool until the agent is enabled again).
    Terminated,
}

impl Stored {
    /// Stored now, nothing left out.
    pub const NEW: Stored = Stored::New { samples_refused: 0 };
}

/// One batch for the sink, with whose it is.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchToStore {
    /// The agent's project.
    pub project_id: i64,
    /// The agent.
    pub oid: i64,
    /// Its spool instance.
    pub instance: String,
    /// The batch.
    pub batch: IncomingBatch,
    /// When the collector received it, unix ms.
    pub received_ms: i64,
}

impl BatchToStore {
    /// Rows it writes, for sizing groups.
    pub fn rows(&self) -> usize {
        self.batch.rows()
    }
}

/// An agent seen alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    /// Its project.
    pub project_id: i64,
    /// The agent.
    pub oid: i64,
    /// Its health then, if it said.
    pub health: Option<AgentHealth>,
    /// When, unix ms.
    pub seen_ms: i64,
}

/// The result of registering an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// The agent id.
    pub oid: i64,
    /// The highest sequence number stored (or retired by retention) for
    /// the hello's instance.
    pub last_seq: u64,
    /// The agent is terminated: nothing was updated, and it must be
    /// refused until it is enabled again.
    pub terminated: bool,
}

/// What terminating an agent deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Deleted {
    /// Metric series (with their points, in chunks and head rows).
    pub series: u64,
    /// Head rows of metric points.
    pub metric_rows: u64,
    /// Process snapshots.
    pub process_snapshots: u64,
    /// Events.
    pub events: u64,
    /// Log blocks.
    pub log_blocks: u64,
    /// Database snapshots.
    pub db_snapshots: u64,
    /// URL checks.
    pub url_checks: u64,
    /// Batch records and dedupe watermarks (the delivery audit).
    pub batches: u64,
}

/// What retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Metric points.
    pub points: u64,
    /// Series left with no points.
    pub series: u64,
    /// Process snapshots.
    pub snapshots: u64,
    /// Events.
    pub events: u64,
    /// Batch records (their numbers live on in the watermark).
    pub batches: u64,
}

/// The newest point of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    /// The agent.
    pub oid: i64,
    /// The series' labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// When, unix ms.
    pub time_ms: i64,
    /// The value.
    pub value: f64,
}

/// The batches one spool instance delivered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    /// The spool instance.
    pub instance: String,
    /// Distinct batches stored (whose records retention has not removed).
    pub batches: u64,
    /// Lowest sequence number stored (0 when all were retired).
    pub first_seq: u64,
    /// Highest sequence number stored or retired.
    pub last_seq: u64,
    /// Sequence numbers between first and last that are missing.
    pub missing: u64,
    /// Retention removed the records up to this number; batches at or
    /// below it are still recognised as duplicates (0: none retired).
    pub retired_through_seq: u64,
}

/// Which points to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// From, unix ms, inclusive.
    pub from_ms: i64,
    /// To, unix ms, inclusive.
    pub to_ms: i64,
    /// Average into buckets of this many ms (raw points when `None`).
    pub step_ms: Option<i64>,
}

/// Projects, agents and the events the collector raises itself.
pub trait Registry: Send + Sync + 'static {
    /// Creates a project with the hashes of its license and token.
    fn create_project(
        &self,
        name: &str,
        license_hash: &[u8],
        token_hash: &[u8],
    ) -> impl Future<Output = Result<Project, StoreError>> + Send;

    /// All projects.
    fn projects(&self) -> impl Future<Output = Result<Vec<Project>, StoreError>> + Send;

    /// The project a license hash belongs to.
    fn project_by_license(
        &self,
        license_hash: &[u8],
    ) -> impl Future<Output = Result<Option<Project>, StoreError>> + Send;

    /// The project an API token hash belongs to.
    fn project_by_token(
        &self,
        token_hash: &[u8],
    ) -> impl Future<Output = Result<Option<Project>, StoreError>> + Send;

    /// Creates or updates the agent `(project, product, oname)`.
    fn register_agent(
        &self,
        project_id: i64,
        hello: &AgentHello,
        now_ms: i64,
    ) -> impl Future<Output = Result<Registered, StoreError>> + Send;

    /// Records that agents are alive (liveness signals), with their
    /// health, in one write. A touch of an agent outside its project does
    /// nothing.
    fn touch_agents(
        &self,
        touches: &[Touch],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One agent of a project.
    fn agent(
        &self,
        project_id: i64,
        oid: i64,
    ) -> impl Future<Output = Result<Option<Agent>, StoreError>> + Send;

    /// Every agent of a project.
    fn agents(
        &self,
        project_id: i64,
    ) -> impl Future<Output = Result<Vec<Agent>, StoreError>> + Send;

    /// Terminates an agent of the project: every row of its data (metrics,
    /// events, process snapshots, logs, database snapshots, URL checks,
    /// batch records) is deleted at once, its later batches are refused
    /// ([`Stored::Terminated`]) and its `Hello` answered `terminated`,
    /// until [`Registry::enable_agent`]. The agent stays listed. `None`:
    /// no such agent in the project. Terminating again deletes what is
    /// left (nothing) and keeps the first time.
    fn terminate_agent(
        &self,
        project_id: i64,
        oid: i64,
        now_ms: i64,
    ) -> impl Future<Output = Result<Option<Deleted>, StoreError>> + Send;

    /// Agents as they are terminated (their oid, after the commit), for
    /// open streams to end at once rather than at their next batch. A
    /// subscriber that falls behind misses some (the sink still refuses
    /// their batches).
    fn subscribe_terminations(&self) -> tokio::sync::broadcast::Receiver<i64>;

    /// Lets a terminated agent of the project report again; whether the
    /// agent exists in the project (enabling one that is not terminated
    /// changes nothing).
    fn enable_agent(
        &self,
        project_id: i64,
        oid: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Agents that just missed three intervals: each is returned once, and
    /// again only after it has sent data since.
    fn newly_quiet_agents(
        &self,
        now_ms: i64,
    ) -> impl Future<Output = Result<Vec<Agent>, StoreError>> + Send;

    /// Records an event the collector raises itself.
    fn insert_event(
        &self,
        project_id: i64,
        oid: Option<i64>,
        event: &EventRow,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Idempotent batch storage (see the contract above).
pub trait BatchSink: Send + Sync + 'static {
    /// Stores each batch of `group` exactly once, durably, before
    /// returning; one answer per batch, in order. An error means none of
    /// the group may be acked.
    fn store_batches(
        &self,
        group: &[BatchToStore],
    ) -> impl Future<Output = Result<Vec<Stored>, StoreError>> + Send;
}

/// Metric reads.
pub trait MetricReads: Send + Sync + 'static {
    /// The metric names an agent of the project has reported.
    fn metric_names(
        &self,
        project_id: i64,
        oid: i64,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// The metric names any agent of the project has reported.
    fn project_metric_names(
        &self,
        project_id: i64,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// The series of one metric of an agent over a range.
    fn metrics(
        &self,
        project_id: i64,
        oid: i64,
        name: &str,
        range: Range,
    ) -> impl Future<Output = Result<Vec<Series>, StoreError>> + Send;

    /// The newest point, no older than `since_ms`, of every series named
    /// `name` of every agent of a project.
    fn latest(
        &self,
        project_id: i64,
        name: &str,
        since_ms: i64,
    ) -> impl Future<Output = Result<Vec<Latest>, StoreError>> + Send;

    /// [`MetricReads::latest`] of several names at once, one list per name
    /// in the order given: what the fleet view reads on every refresh, so
    /// a backend should answer it in a few statements, not one per agent.
    fn latest_of(
        &self,
        project_id: i64,
        names: &[&str],
        since_ms: i64,
    ) -> impl Future<Output = Result<Vec<Vec<Latest>>, StoreError>> + Send;
}

/// Event reads.
pub trait EventReads: Send + Sync + 'static {
    /// Events of a project.
    fn events(
        &self,
        project_id: i64,
        query: &EventQuery,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;
}

/// The server agent's own reads.
pub trait InfraReads: Send + Sync + 'static {
    /// The snapshot nearest `at_ms` (the latest when `None`), optionally of
    /// one reason only.
    fn process_snapshot(
        &self,
        project_id: i64,
        oid: i64,
        at_ms: Option<i64>,
        reason: Option<&str>,
    ) -> impl Future<Output = Result<Option<SnapshotRow>, StoreError>> + Send;

    /// When an agent took its snapshots in `[from_ms, to_ms]` and why,
    /// newest first, at most `limit`.
    fn snapshot_times(
        &self,
        project_id: i64,
        oid: i64,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<(i64, String)>, StoreError>> + Send;

    /// The newest snapshot of `reason`, no older than `since_ms`, of every
    /// agent of a project.
    fn latest_snapshots(
        &self,
        project_id: i64,
        reason: &str,
        since_ms: i64,
    ) -> impl Future<Output = Result<Vec<(i64, SnapshotRow)>, StoreError>> + Send;
}

/// The delivery audit.
pub trait DeliveryReads: Send + Sync + 'static {
    /// What each instance (spool) of an agent of the project delivered.
    fn delivery(
        &self,
        project_id: i64,
        oid: i64,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send;
}

/// Log records: search, patterns, and the feed of records as they are
/// stored.
///
/// Log records are stored exactly once per `(agent, file_id, offset)`: a
/// backend keeps, per agent and file, the highest end offset stored (in
/// the same transaction as the records), and leaves out, as duplicates,
/// records that start below it. That watermark outlives retention.
pub trait LogReads: Send + Sync + 'static {
    /// Records of a project matching `query`, newest first, with where the
    /// next page starts.
    fn search_logs(
        &self,
        project_id: i64,
        query: &LogQuery,
    ) -> impl Future<Output = Result<LogPage, StoreError>> + Send;

    /// Record shapes of a project in a range, most frequent first.
    fn log_patterns(
        &self,
        project_id: i64,
        query: &PatternQuery,
    ) -> impl Future<Output = Result<Vec<LogPattern>, StoreError>> + Send;

    /// Records as they are stored, after their transaction committed (all
    /// projects: the subscriber filters). Bounded: a subscriber that falls
    /// behind misses chunks and is told how many.
    fn subscribe_logs(&self) -> tokio::sync::broadcast::Receiver<std::sync::Arc<LiveLogs>>;
}

/// The database agent's snapshots: sessions and lock trees, each kept with
/// its time, so "the server at 14:02" can be shown later. Its counters are
/// ordinary metrics ([`MetricReads`], names `db.*`), its alerts events.
pub trait DbReads: Send + Sync + 'static {
    /// The snapshot of an agent of the project nearest `at_ms` (before or
    /// after; the earlier one on a tie), or its newest when `None`.
    /// `variables` holds every global variable as it stood at the
    /// snapshot's time (the latest value at or before it; a variable first
    /// seen only later is left out).
    fn db_snapshot_near(
        &self,
        project_id: i64,
        oid: i64,
        at_ms: Option<i64>,
    ) -> impl Future<Output = Result<Option<DbSnapshotRow>, StoreError>> + Send;

    /// When an agent took its snapshots in `[from_ms, to_ms]`, why, and
    /// what each holds, newest first, at most `limit`.
    fn db_snapshot_times(
        &self,
        project_id: i64,
        oid: i64,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<DbSnapshotTime>, StoreError>> + Send;
}

/// The URL agent's checks: each target as it is now (its newest check and
/// since when it is in its state), and one target's checks over time. Its
/// state changes and certificate warnings are events (`url.*`).
pub trait UrlReads: Send + Sync + 'static {
    /// The project's targets that pass `filter`, one per (agent, target):
    /// down first, then pending, degraded and up, each by target name and
    /// agent name.
    fn url_targets(
        &self,
        project_id: i64,
        filter: &UrlTargetFilter,
    ) -> impl Future<Output = Result<Vec<UrlTargetRow>, StoreError>> + Send;

    /// The checks of `target` by agent `oid` in `[from_ms, to_ms]`, newest
    /// first, at most `limit`; `url` and `method` are the target's as
    /// configured now.
    fn url_results(
        &self,
        project_id: i64,
        oid: i64,
        target: &str,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<UrlCheckRow>, StoreError>> + Send;
}

/// What URL check retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UrlPurged {
    /// Checks.
    pub checks: u64,
    /// Bytes they took (as counted at insert: their texts and a fixed
    /// 160 per row for the numbers and the indexes).
    pub bytes: u64,
    /// Targets no check has reported since the cutoff (removed from the
    /// agent's configuration).
    pub targets: u64,
}

/// What database snapshot retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbPurged {
    /// Snapshots.
    pub snapshots: u64,
    /// Bytes they took in the store.
    pub bytes: u64,
    /// Variable values superseded before the cutoff.
    pub variables: u64,
}

/// What log retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogsPurged {
    /// Blocks.
    pub blocks: u64,
    /// Records in them.
    pub records: u64,
    /// Bytes they took in the store.
    pub bytes: u64,
}

/// Removing old data.
pub trait Retention: Send + Sync + 'static {
    /// Removes log blocks whose newest record is older than `cutoff_ms`,
    /// then the oldest blocks until the log store holds at most
    /// `max_bytes` (0: no cap). The per-file dedupe watermarks stay.
    fn purge_logs(
        &self,
        cutoff_ms: i64,
        max_bytes: u64,
        stop: &tokio_util::sync::CancellationToken,
    ) -> impl Future<Output = Result<LogsPurged, StoreError>> + Send;

    /// Removes database snapshots older than `cutoff_ms`, then the oldest
    /// until they take at most `max_bytes` (0: no cap), and variable
    /// values older than `cutoff_ms` that a newer value of the same
    /// variable replaced (the value in force at the cutoff stays).
    fn purge_db(
        &self,
        cutoff_ms: i64,
        max_bytes: u64,
        stop: &tokio_util::sync::CancellationToken,
    ) -> impl Future<Output = Result<DbPurged, StoreError>> + Send;

    /// Removes URL checks older than `cutoff_ms`, then the oldest until
    /// they take at most `max_bytes` (0: no cap), and targets whose newest
    /// check is older than `cutoff_ms`.
    fn purge_url(
        &self,
        cutoff_ms: i64,
        max_bytes: u64,
        stop: &tokio_util::sync::CancellationToken,
    ) -> impl Future<Output = Result<UrlPurged, StoreError>> + Send;

    /// Removes everything older than `cutoff_ms`, in short steps, raising
    /// each instance's watermark to the records it removes and dropping
    /// series whose newest point is more than an hour older than the
    /// cutoff (none of their points are left); stops early (with what it
    /// did so far) once `stop` fires.
    fn purge_before(
        &self,
        cutoff_ms: i64,
        stop: &tokio_util::sync::CancellationToken,
    ) -> impl Future<Output = Result<Purged, StoreError>> + Send;
}

/// Alerts: rules and channels per project, each alert's state and history,
/// the notification queue (durable: a queued notification survives a
/// crash) with every delivery attempt, and agents' pauses.
pub trait AlertStore: Send + Sync + 'static {
    /// The rules of a project (`None`: of every project, for the
    /// evaluator).
    fn alert_rules(
        &self,
        project_id: Option<i64>,
    ) -> impl Future<Output = Result<Vec<RuleRow>, StoreError>> + Send;

    /// Stores a new rule (checked by the caller); a name taken is a
    /// [`StoreError::Conflict`].
    fn create_alert_rule(
        &self,
        project_id: i64,
        spec: &RuleSpec,
        now_ms: i64,
    ) -> impl Future<Output = Result<RuleRow, StoreError>> + Send;

    /// Replaces a rule; `None` when the project has no such rule.
    fn update_alert_rule(
        &self,
        project_id: i64,
        id: i64,
        spec: &RuleSpec,
        now_ms: i64,
    ) -> impl Future<Output = Result<Option<RuleRow>, StoreError>> + Send;

    /// Removes a rule and its alerts (their history stays); whether it
    /// existed.
    fn delete_alert_rule(
        &self,
        project_id: i64,
        id: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The channels of a project.
    fn alert_channels(
        &self,
        project_id: i64,
    ) -> impl Future<Output = Result<Vec<ChannelRow>, StoreError>> + Send;

    /// Stores a new channel; a name taken is a [`StoreError::Conflict`].
    fn create_alert_channel(
        &self,
        project_id: i64,
        name: &str,
        config: &ChannelConfig,
        now_ms: i64,
    ) -> impl Future<Output = Result<ChannelRow, StoreError>> + Send;

    /// Replaces a channel; `None` when the project has no such channel.
    fn update_alert_channel(
        &self,
        project_id: i64,
        id: i64,
        name: &str,
        config: &ChannelConfig,
    ) -> impl Future<Output = Result<Option<ChannelRow>, StoreError>> + Send;

    /// Removes a channel and what is queued for it; whether it existed.
    fn delete_alert_channel(
        &self,
        project_id: i64,
        id: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Alerts of a project (`None`: every project), only the firing ones
    /// when `firing_only`.
    fn alerts(
        &self,
        project_id: Option<i64>,
        firing_only: bool,
    ) -> impl Future<Output = Result<Vec<AlertRow>, StoreError>> + Send;

    /// Records changes: each alert's new state, a history line, and its
    /// notifications queued, all in one transaction.
    fn record_alert_changes(
        &self,
        changes: &[AlertChange],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// History of a project's alerts in `[from_ms, to_ms]`, newest first.
    fn alert_history(
        &self,
        project_id: i64,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<HistoryRow>, StoreError>> + Send;

    /// Stores one notification outside an alert change (a channel test),
    /// in a state [`AlertStore::due_notifications`] never picks (its
    /// caller sends it once); its id, or `None` when the project has no
    /// such channel.
    fn queue_notification(
        &self,
        project_id: i64,
        channel_id: i64,
        payload: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;

    /// One queued notification, if it is still queued.
    fn notification(
        &self,
        id: i64,
    ) -> impl Future<Output = Result<Option<Notification>, StoreError>> + Send;

    /// Queued notifications due at `now_ms`, oldest first, at most `limit`.
    fn due_notifications(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<Notification>, StoreError>> + Send;

    /// Records an attempt and what becomes of its notification: sent,
    /// retried at `retry_at_ms`, or given up.
    fn record_attempt(
        &self,
        attempt: &Attempt,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// A project's delivery attempts, newest first.
    fn delivery_attempts(
        &self,
        project_id: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<AttemptRow>, StoreError>> + Send;

    /// Pauses an agent's notifications (until `until_ms`, or until
    /// resumed); whether the project has the agent.
    fn pause_agent(
        &self,
        project_id: i64,
        oid: i64,
        until_ms: Option<i64>,
        now_ms: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Ends an agent's pause; whether the project has the agent.
    fn resume_agent(
        &self,
        project_id: i64,
        oid: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Pauses of a project's agents (`None`: every project), expired ones
    /// included.
    fn pauses(
        &self,
        project_id: Option<i64>,
    ) -> impl Future<Output = Result<Vec<Pause>, StoreError>> + Send;

    /// Removes alert history, resolved alerts, finished notifications and
    /// attempts older than `cutoff_ms`; how many rows.
    fn purge_alerts(&self, cutoff_ms: i64) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// A whole store: what the server and the API are generic over.
pub trait Store:
    Registry
    + BatchSink
    + MetricReads
    + EventReads
    + InfraReads
    + DeliveryReads
    + LogReads
    + DbReads
    + UrlReads
    + AlertStore
    + Retention
{
    /// Finishes what is in flight and releases the backend.
    fn close(&self) -> impl Future<Output = ()> + Send;
}
