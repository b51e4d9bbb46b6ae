//! The database agent's own kind of data as plain Rust: the sessions of a
//! server and its lock tree at one moment. Converted to the wire only in
//! [`crate::wire`]; nothing here knows the wire format.

use std::collections::BTreeMap;
use std::time::SystemTime;

/// Why a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotReason {
    /// Every cycle.
    Periodic,
    /// A lock wait passed `db.lock_wait.alert`.
    LockWait,
    /// `Threads_running` passed `db.threads_running.alert`.
    ThreadsRunning,
}

impl SnapshotReason {
    /// The name on the wire and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotReason::Periodic => "periodic",
            SnapshotReason::LockWait => "lock_wait",
            SnapshotReason::ThreadsRunning => "threads_running",
        }
    }
}

/// A session's open transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transaction {
    /// InnoDB's trx_id.
    pub id: String,
    /// `RUNNING`, `LOCK WAIT`, ...
    pub state: String,
    /// Age, ms.
    pub age_ms: u64,
    /// Rows locked.
    pub rows_locked: u64,
    /// Rows modified.
    pub rows_modified: u64,
    /// Tables locked.
    pub tables_locked: u64,
    /// Idle inside the transaction (no statement running), ms.
    pub idle_ms: u64,
    /// The last statement it ran, where the server keeps it.
    pub last_query: String,
}

/// One session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Session {
    /// Connection id.
    pub id: u64,
    /// User.
    pub user: String,
    /// Client host.
    pub host: String,
    /// Default database.
    pub db: String,
    /// `Query`, `Sleep`, ...
    pub command: String,
    /// `Sending data`, ...
    pub state: String,
    /// Time in the current command, ms.
    pub time_ms: u64,
    /// The statement running now, cut and masked; empty when idle.
    pub query: String,
    /// The statement was longer than `db.query.max`.
    pub query_cut: bool,
    /// Its transaction.
    pub trx: Option<Transaction>,
    /// MariaDB's stage text.
    pub stage: String,
    /// MariaDB's progress, percent.
    pub progress_pct: f64,
    /// MariaDB's memory used, bytes.
    pub memory_bytes: u64,
}

/// How a waiter waits on its blocker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockWait {
    /// `RECORD`, `TABLE`, `METADATA`.
    pub kind: String,
    /// The mode asked for.
    pub mode: String,
    /// The mode held by the blocker.
    pub holder_mode: String,
    /// `` `schema`.`table` ``.
    pub table: String,
    /// The index, for record locks.
    pub index: String,
    /// The locked record.
    pub data: String,
    /// Waited so far, ms.
    pub wait_ms: u64,
}

/// One place of a session in the lock tree (see `lock_tree`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockNode {
    /// The session.
    pub session_id: u64,
    /// The session it waits on; 0 for a root.
    pub parent_id: u64,
    /// 0 for a root.
    pub depth: u32,
    /// Holds, waits for nothing.
    pub root_blocker: bool,
    /// The wait closes a cycle.
    pub in_cycle: bool,
    /// Not in the process list any more.
    pub gone: bool,
    /// How it waits on its parent; `None` for a root.
    pub wait: Option<LockWait>,
    /// Not its first appearance.
    pub repeated_node: bool,
}

/// The sessions and lock tree of one server at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct DbSnapshot {
    /// When.
    pub time: SystemTime,
    /// Why.
    pub reason: SnapshotReason,
    /// `mariadb` or `mysql`.
    pub flavor: String,
    /// Version string.
    pub version: String,
    /// The sessions.
    pub sessions: Vec<Session>,
    /// Sessions left out by `db.sessions.max`.
    pub sessions_omitted: u32,
    /// The lock tables were read.
    pub locks_read: bool,
    /// The lock tree, depth first.
    pub locks: Vec<LockNode>,
    /// Variables first read or changed.
    pub variables: BTreeMap<String, String>,
}
