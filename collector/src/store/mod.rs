//! Durable storage behind one trait, so that a backend for a fleet can be
//! added without touching ingest or the API. The embedded backend is
//! [`sqlite::SqliteStore`].
//!
//! Invariants every backend keeps:
//! - [`Store::store_batch`] stores a batch and its `(instance, seq)` record
//!   in one transaction: after it returns `Stored`, both are durable; a batch
//!   whose record exists is `Duplicate` and changes nothing.
//! - Every read is scoped: callers pass the project, and an agent of another
//!   project is as absent as one that never existed.
//! - Only this module writes SQL.

pub mod sqlite;

use std::future::Future;

use crate::model::{
    Agent, AgentHello, EventQuery, EventRow, IncomingBatch, Project, Series, SnapshotRow,
    StoredEvent,
};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored JSON column did not parse.
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A request conflicts with what is stored (a duplicate name, say).
    #[error("{0}")]
    Conflict(String),
}

/// The result of storing a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored now.
    New,
    /// Stored before; nothing changed.
    Duplicate,
}

/// The result of registering an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// The agent id.
    pub oid: i64,
    /// The highest sequence number stored for the hello's instance.
    pub last_seq: u64,
}

/// What retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Metric points.
    pub points: u64,
    /// Process snapshots.
    pub snapshots: u64,
    /// Events.
    pub events: u64,
    /// Batch records.
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

/// The batches one spool instance delivered (retention aside).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    /// The spool instance.
    pub instance: String,
    /// Distinct batches stored.
    pub batches: u64,
    /// Lowest sequence number stored.
    pub first_seq: u64,
    /// Highest sequence number stored.
    pub last_seq: u64,
    /// Sequence numbers between first and last that are missing.
    pub missing: u64,
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

/// The collector's storage.
pub trait Store: Send + Sync + 'static {
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

    /// Stores one batch of an agent's instance, exactly once.
    fn store_batch(
        &self,
        project_id: i64,
        oid: i64,
        instance: &str,
        batch: IncomingBatch,
        now_ms: i64,
    ) -> impl Future<Output = Result<Stored, StoreError>> + Send;

    /// The metric names an agent has reported.
    fn metric_names(
        &self,
        oid: i64,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// The series of one metric of an agent over a range.
    fn metrics(
        &self,
        oid: i64,
        name: &str,
        range: Range,
    ) -> impl Future<Output = Result<Vec<Series>, StoreError>> + Send;

    /// The snapshot nearest `at_ms` (the latest when `None`), optionally of
    /// one reason only.
    fn process_snapshot(
        &self,
        oid: i64,
        at_ms: Option<i64>,
        reason: Option<&str>,
    ) -> impl Future<Output = Result<Option<SnapshotRow>, StoreError>> + Send;

    /// Events of a project.
    fn events(
        &self,
        project_id: i64,
        query: &EventQuery,
    ) -> impl Future<Output = Result<Vec<StoredEvent>, StoreError>> + Send;

    /// Records an event the collector raises itself.
    fn insert_event(
        &self,
        project_id: i64,
        oid: Option<i64>,
        event: &EventRow,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Agents that just missed three intervals: each is returned once, and
    /// again only after it has sent data since.
    fn newly_quiet_agents(
        &self,
        now_ms: i64,
    ) -> impl Future<Output = Result<Vec<Agent>, StoreError>> + Send;

    /// Removes everything older than `cutoff_ms`, in short steps; stops
    /// early (with what it did so far) once `stop` fires.
    fn purge_before(
        &self,
        cutoff_ms: i64,
        stop: &tokio_util::sync::CancellationToken,
    ) -> impl Future<Output = Result<Purged, StoreError>> + Send;

    /// The newest point, no older than `since_ms`, of every series named
    /// `name` of every agent of a project.
    fn latest(
        &self,
        project_id: i64,
        name: &str,
        since_ms: i64,
    ) -> impl Future<Output = Result<Vec<Latest>, StoreError>> + Send;

    /// The newest snapshot of `reason`, no older than `since_ms`, of every
    /// agent of a project.
    fn latest_snapshots(
        &self,
        project_id: i64,
        reason: &str,
        since_ms: i64,
    ) -> impl Future<Output = Result<Vec<(i64, SnapshotRow)>, StoreError>> + Send;

    /// What has been delivered by each instance (spool) of an agent.
    fn delivery(&self, oid: i64) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send;
}
