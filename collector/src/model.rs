//! The collector's own rows: what ingest hands the store and what the store
//! hands the API. Converted from wire messages in [`crate::ingest`]; the
//! store and the API never see prost types.

use std::collections::BTreeMap;

use serde::Serialize;

/// A project: the unit of licensing and of data isolation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Project {
    /// Store id.
    pub id: i64,
    /// Name given at creation.
    pub name: String,
}

/// What an agent says about itself in `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentHello {
    /// `infra`, `db`, ...
    pub product: String,
    /// The agent's name; with product and project, its identity.
    pub oname: String,
    /// Host name.
    pub hostname: String,
    /// OS and kernel.
    pub os: String,
    /// Agent version.
    pub version: String,
    /// Host boot time, unix ms.
    pub boot_time_ms: i64,
    /// The installer's `createdtime`.
    pub created_time: String,
    /// Spool instance id.
    pub instance: String,
    /// Reporting interval, ms.
    pub interval_ms: i64,
    /// The kernel's id of the current boot (empty from older agents).
    pub boot_id: String,
}

/// What one source of an agent read and what became of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SourceHealth {
    /// The source's name.
    pub name: String,
    /// Records read (lines, rows, samples), before filtering.
    pub records_read: u64,
    /// Records handed to the spool.
    pub records_sent: u64,
    /// Records the collector acknowledged.
    pub records_acked: u64,
    /// Records dropped (spool full, refused, too large).
    pub records_dropped: u64,
}

/// The agent's view of its delivery pipeline, as last reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AgentHealth {
    /// Batches waiting in the agent's spool.
    pub spool_batches: u64,
    /// Bytes waiting in the agent's spool.
    pub spool_bytes: u64,
    /// Batches sent (resends count again).
    pub batches_sent: u64,
    /// Batches acknowledged.
    pub batches_acked: u64,
    /// Reconnections.
    pub reconnects: u64,
    /// Batches dropped by a full spool.
    pub batches_dropped: u64,
    /// Bytes dropped by a full spool.
    pub bytes_dropped: u64,
    /// Per source: records read, sent, acked, dropped.
    #[serde(default)]
    pub sources: Vec<SourceHealth>,
}

/// An agent as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// The agent id.
    pub oid: i64,
    /// Owning project.
    pub project_id: i64,
    /// Product.
    pub product: String,
    /// Name.
    pub oname: String,
    /// Host name.
    pub hostname: String,
    /// OS.
    pub os: String,
    /// Version.
    pub version: String,
    /// Host boot time, unix ms.
    pub boot_time_ms: i64,
    /// Reporting interval, ms.
    pub interval_ms: i64,
    /// First `Hello`, unix ms.
    pub first_seen_ms: i64,
    /// Last `Hello` or batch, unix ms.
    pub last_seen_ms: i64,
    /// Last reported health.
    pub health: Option<AgentHealth>,
    /// The spool instance registered by the agent's latest `Hello`.
    pub instance: String,
    /// The boot id of the agent's latest `Hello` (empty from older agents).
    pub boot_id: String,
    /// When it was terminated (its data deleted, its reports refused until
    /// it is enabled), unix ms; `None` when it was not.
    pub terminated_ms: Option<i64>,
}

impl Agent {
    /// Whether the agent has missed three intervals at `now_ms`, or was
    /// terminated (it sends nothing that is kept).
    pub fn is_quiet(&self, now_ms: i64) -> bool {
        self.terminated_ms.is_some() || now_ms - self.last_seen_ms > 3 * self.interval_ms.max(1000)
    }
}

/// One metric reading.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRow {
    /// Metric name.
    pub name: String,
    /// Labels, sorted by key.
    pub labels: Vec<(String, String)>,
    /// Value (finite).
    pub value: f64,
}

/// One process in a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ProcessRow {
    /// Pid.
    pub pid: u32,
    /// Name.
    pub name: String,
    /// User.
    pub user: String,
    /// Command line (truncated by the agent).
    pub cmdline: String,
    /// Share of one core, %.
    pub cpu_pct: f64,
    /// Resident bytes.
    pub rss_bytes: u64,
    /// Share of memory, %.
    pub mem_pct: f64,
    /// Threads.
    pub threads: u32,
    /// State.
    pub state: String,
}

/// A process snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SnapshotRow {
    /// When, unix ms.
    pub time_ms: i64,
    /// `top` or `threshold`.
    pub reason: String,
    /// How many processes exist in all.
    pub total: u32,
    /// Processes by state.
    pub state_counts: BTreeMap<String, u32>,
    /// The processes listed.
    pub processes: Vec<ProcessRow>,
}

/// An event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    /// When, unix ms.
    pub time_ms: i64,
    /// What happened, dotted: `agent.started`, `spool.overflow`, ...
    /// (shown as `kind` in the API).
    pub kind: String,
    /// `info`, `warning`, `critical`.
    pub severity: String,
    /// One sentence.
    pub message: String,
    /// Details.
    pub attrs: BTreeMap<String, String>,
}

/// One kind of data in a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchPayload {
    /// Metric readings taken at `time_ms`.
    Metrics {
        /// When they were read, unix ms.
        time_ms: i64,
        /// The readings.
        samples: Vec<SampleRow>,
    },
    /// A process snapshot.
    Processes(SnapshotRow),
    /// Events.
    Events(Vec<EventRow>),
    /// Records read from one file (the log agent's chunk), validated.
    Logs(LogPayload),
    /// A database server's sessions and lock tree at one moment, validated.
    Db(Box<DbSnapshotRow>),
    /// The URL agent's checks finished since its last batch, validated.
    Url(Vec<UrlCheckRow>),
}

/// A log chunk on its way to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct LogPayload {
    /// The records. Shared, so the live tail can keep them after the
    /// batch is stored.
    pub chunk: std::sync::Arc<LogChunkRow>,
    /// Its block, encoded ahead by ingest (all its records taken as new)
    /// so the store's writer need not; `None`: the store encodes it.
    pub block: Option<std::sync::Arc<crate::logs::block::EncodedBlock>>,
}

/// One named field over a chunk's records: per record, where its value
/// sits in the record's text (`len` 0: the record has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFieldRow {
    /// The field's name (a named group of the agent's `parse` rule).
    pub name: String,
    /// Per record: where the value starts in the record's text.
    pub offsets: Vec<u32>,
    /// Per record: the value's length in bytes.
    pub lens: Vec<u32>,
    /// A value from outside the text (the CRI stream) is dictionary-coded
    /// instead: the distinct values (empty for a positional field)...
    pub dict: Vec<String>,
    /// ...and per record 0 (none) or 1 + the index of its value.
    pub codes: Vec<u32>,
}

/// Records of one file, in file order, as checked by
/// [`crate::products::logs`]: every record's text, field values and
/// offsets are known to be in bounds and on character boundaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunkRow {
    /// The file's identity on its agent's host (at most 128 bytes).
    pub file_id: String,
    /// The path the file was read under.
    pub path: String,
    /// The group's category.
    pub category: String,
    /// When the agent read the records, unix ms.
    pub time_ms: i64,
    /// Labels of the whole file (Kubernetes namespace, pod, container).
    pub attrs: BTreeMap<String, String>,
    /// Every record's text, one after another.
    pub text: String,
    /// Where each record's text ends in `text` (the next one starts there).
    pub ends: Vec<u32>,
    /// Where each record starts in the file.
    pub starts: Vec<u64>,
    /// How many bytes of the file each record covers.
    pub spans: Vec<u32>,
    /// Indexes of records whose text was cut, ascending.
    pub cut: Vec<u32>,
    /// Each record's own time (empty: all are `time_ms`).
    pub times_ms: Vec<i64>,
    /// Fields, one column per name.
    pub fields: Vec<LogFieldRow>,
}

impl LogChunkRow {
    /// How many records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Where record `i`'s text starts in `text`.
    pub fn text_start(&self, i: usize) -> usize {
        if i == 0 { 0 } else { self.ends[i - 1] as usize }
    }

    /// Record `i`'s text.
    pub fn record_text(&self, i: usize) -> &str {
        self.text
            .get(self.text_start(i)..self.ends[i] as usize)
            .unwrap_or_default()
    }

    /// Record `i`'s time, unix ms.
    pub fn record_time(&self, i: usize) -> i64 {
        self.times_ms.get(i).copied().unwrap_or(self.time_ms)
    }

    /// The file offset just past record `i`.
    pub fn record_end(&self, i: usize) -> u64 {
        self.starts[i] + u64::from(self.spans[i])
    }

    /// Whether record `i`'s text was cut.
    pub fn is_cut(&self, i: usize) -> bool {
        u32::try_from(i).is_ok_and(|i| self.cut.binary_search(&i).is_ok())
    }

    /// Field `f`'s value in record `i`, if it has one.
    pub fn field_value(&self, f: usize, i: usize) -> Option<&str> {
        let field = &self.fields[f];
        if !field.dict.is_empty() {
            let code = *field.codes.get(i)? as usize;
            return field.dict.get(code.checked_sub(1)?).map(String::as_str);
        }
        let len = field.lens[i] as usize;
        if len == 0 {
            return None;
        }
        let at = field.offsets[i] as usize;
        self.record_text(i).get(at..at + len)
    }
}

/// A database server at one moment (the database agent's `DbSnapshot`),
/// as checked by [`crate::products::db`]: its lock forest is well formed
/// (each node's parent is the nearest shallower node before it), so it can
/// be nested without a check.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DbSnapshotRow {
    /// When it was taken, unix ms.
    pub time_ms: i64,
    /// `periodic`, or the alert it was taken for (`lock_wait`, ...).
    pub reason: String,
    /// `mariadb` or `mysql`.
    pub flavor: String,
    /// The server's version string.
    pub version: String,
    /// Global variables read or changed since the agent's last snapshot.
    pub variables: BTreeMap<String, String>,
    /// Sessions, lock tree and what was left out: the part kept compressed.
    pub body: DbSnapshotBody,
}

/// The bulk of a [`DbSnapshotRow`]; stored as one compressed document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct DbSnapshotBody {
    /// The sessions that were not sleeping, and every one the tree names.
    pub sessions: Vec<DbSessionRow>,
    /// Sessions the agent (or the collector's cap) left out.
    #[serde(default)]
    pub sessions_omitted: u32,
    /// Whether the lock tables were read (false: no waits then).
    #[serde(default)]
    pub locks_read: bool,
    /// The lock tree, a forest in depth-first order.
    #[serde(default)]
    pub locks: Vec<LockNodeRow>,
    /// The agent's lock tree was malformed and left out (why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locks_refused: Option<String>,
}

impl DbSnapshotBody {
    /// Lock nodes that hold locks others wait on and wait for nothing.
    pub fn root_blockers(&self) -> usize {
        self.locks.iter().filter(|n| n.root_blocker).count()
    }

    /// Lock nodes that wait (every node below a root), counted once per
    /// session even where it waits on several.
    pub fn waiting(&self) -> usize {
        self.locks
            .iter()
            .filter(|n| n.depth > 0 && !n.repeated_node)
            .count()
    }

    /// The longest lock wait, ms.
    pub fn max_wait_ms(&self) -> u64 {
        self.locks
            .iter()
            .filter_map(|n| n.wait.as_ref().map(|w| w.wait_ms))
            .max()
            .unwrap_or(0)
    }
}

/// One database session.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct DbSessionRow {
    /// The connection id (what `KILL` takes).
    pub id: u64,
    /// User.
    pub user: String,
    /// Client host.
    pub host: String,
    /// Default schema.
    pub db: String,
    /// `Query`, `Sleep`, ...
    pub command: String,
    /// The thread's state.
    pub state: String,
    /// Time in the current command, ms.
    pub time_ms: u64,
    /// The statement running now (cut and masked by the agent).
    pub query: String,
    /// Whether `query` was cut.
    pub query_cut: bool,
    /// Its open transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trx: Option<DbTransactionRow>,
    /// MariaDB's stage.
    #[serde(default)]
    pub stage: String,
    /// MariaDB's progress, 0 to 100.
    #[serde(default)]
    pub progress_pct: f64,
    /// Memory used, bytes.
    #[serde(default)]
    pub memory_bytes: u64,
}

/// A session's open transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DbTransactionRow {
    /// The engine's id.
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
    /// Idle inside the transaction, ms.
    pub idle_ms: u64,
    /// The last statement it ran, where the server keeps it.
    #[serde(default)]
    pub last_query: String,
}

/// One session's place in the lock forest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LockNodeRow {
    /// The session.
    pub session_id: u64,
    /// The session it waits on; 0 for a root.
    pub parent_id: u64,
    /// 0 for a root.
    pub depth: u32,
    /// Holds locks others wait on, waits for nothing.
    pub root_blocker: bool,
    /// Its wait closes a cycle.
    pub in_cycle: bool,
    /// Named by a lock edge but gone from the process list.
    pub gone: bool,
    /// How it waits on its parent (none for a root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<LockWaitRow>,
    /// A second (or later) appearance of a session waiting on several.
    pub repeated_node: bool,
}

/// How a session waits on its parent in the lock tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LockWaitRow {
    /// `RECORD`, `TABLE` or `METADATA`.
    pub kind: String,
    /// The mode asked for.
    pub mode: String,
    /// The mode the parent holds.
    pub holder_mode: String,
    /// `schema`.`table`.
    pub table: String,
    /// The index, for record locks.
    pub index: String,
    /// The locked record, as the server shows it.
    pub data: String,
    /// Waited so far, ms.
    pub wait_ms: u64,
}

/// When a database snapshot was taken, and what it holds (a timeline
/// entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DbSnapshotTime {
    /// When, unix ms.
    pub time_ms: i64,
    /// `periodic` or the alert's name.
    pub reason: String,
    /// Sessions kept.
    pub sessions: u64,
    /// Lock tree nodes.
    pub lock_nodes: u64,
    /// Root blockers.
    pub root_blockers: u64,
    /// The longest lock wait, ms.
    pub max_wait_ms: u64,
}

/// A URL target's state after a check (the URL agent's `UrlState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UrlState {
    /// Failing `.fail_after` times in a row. Listed first.
    Down,
    /// Failing, not yet `.fail_after` times.
    Pending,
    /// Answering, but slower than `.expect.max_time`.
    Degraded,
    /// Every condition held.
    Up,
}

impl UrlState {
    /// Every state, in the order the API lists targets.
    pub const ALL: [UrlState; 4] = [
        UrlState::Down,
        UrlState::Pending,
        UrlState::Degraded,
        UrlState::Up,
    ];

    /// The name stored and shown: `down`, `pending`, `degraded`, `up`.
    pub fn name(self) -> &'static str {
        match self {
            UrlState::Down => "down",
            UrlState::Pending => "pending",
            UrlState::Degraded => "degraded",
            UrlState::Up => "up",
        }
    }

    /// The state named `name` (as [`UrlState::name`] writes it, any case).
    pub fn from_name(name: &str) -> Option<UrlState> {
        UrlState::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }
}

/// One check of one URL target (the URL agent's `UrlCheck`), as checked
/// by [`crate::products::url`]: every text within its cap, the state
/// known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UrlCheckRow {
    /// The target's name, unique per agent.
    pub target: String,
    /// The URL as configured (never with credentials).
    pub url: String,
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// When the check started, unix ms.
    pub time_ms: i64,
    /// The target's state after it.
    pub state: UrlState,
    /// Whether it passed every condition.
    pub ok: bool,
    /// Why it failed, snake case (`connection_refused`, `timeout_first_byte`,
    /// `too_slow`, ...); `none` when it passed.
    pub failure: String,
    /// The failure in words; empty when it passed.
    pub detail: String,
    /// Phases, µs; they add up to `total_us`.
    pub phases: UrlPhases,
    /// The last response's status; 0 when none came.
    pub status_code: u32,
    /// `HTTP/1.1`, `HTTP/2`.
    pub http_version: String,
    /// Body length, bytes.
    pub body_bytes: u64,
    /// Redirects followed.
    pub redirects: u32,
    /// Where the redirects led; empty without redirects.
    pub final_url: String,
    /// The address connected to.
    pub remote_ip: String,
    /// The verified chain's leaf, for https targets.
    pub certificate: Option<UrlCertificateRow>,
}

/// A check's phases, µs, as blackbox_exporter names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UrlPhases {
    /// Name resolution.
    pub dns_us: u64,
    /// TCP connect.
    pub connect_us: u64,
    /// TLS handshake.
    pub tls_us: u64,
    /// Request written to the first byte of the response.
    pub first_byte_us: u64,
    /// First byte to the last byte of the body.
    pub transfer_us: u64,
    /// The whole check.
    pub total_us: u64,
}

/// The certificate a URL check verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UrlCertificateRow {
    /// The leaf's subject.
    pub subject: String,
    /// The leaf's issuer.
    pub issuer: String,
    /// The leaf's notAfter, unix ms.
    pub not_after_ms: i64,
    /// Days the leaf had left at the check (negative once expired).
    pub days_left: i32,
    /// The fewest days left of any certificate of the verified chain.
    pub chain_days_left: i32,
}

/// A URL target as one agent checks it now: its latest check, and since
/// when it has been in its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTargetRow {
    /// The agent checking it.
    pub oid: i64,
    /// That agent's name (the target's region).
    pub oname: String,
    /// Since when (unix ms) the target has been in `latest.state`: the time
    /// of the first check that found it so.
    pub since_ms: i64,
    /// Its newest check (`url` and `method` as configured then).
    pub latest: UrlCheckRow,
}

/// Which URL targets to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UrlTargetFilter {
    /// Only targets in this state.
    pub state: Option<UrlState>,
    /// Only targets of this agent.
    pub oid: Option<i64>,
    /// Only the target of this name.
    pub target: Option<String>,
}

/// One batch, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingBatch {
    /// Per-instance sequence number.
    pub seq: u64,
    /// When produced, unix ms.
    pub time_ms: i64,
    /// The agent's health then.
    pub health: Option<AgentHealth>,
    /// Content: what one collection cycle produced (may be empty).
    pub payloads: Vec<BatchPayload>,
}

/// A series and its points.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// Metric name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `[unix ms, value]` pairs, oldest first.
    pub points: Vec<(i64, f64)>,
}

/// An event with the agent it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    /// Event id.
    pub id: i64,
    /// Agent id (absent for project-wide events).
    pub oid: Option<i64>,
    /// Agent name.
    pub oname: Option<String>,
    /// The event.
    #[serde(flatten)]
    pub event: EventRow,
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// From, unix ms (inclusive).
    pub from_ms: i64,
    /// To, unix ms (inclusive).
    pub to_ms: i64,
    /// Only this agent.
    pub oid: Option<i64>,
    /// Only this kind.
    pub kind: Option<String>,
    /// At most this many, newest first.
    pub limit: i64,
}

impl IncomingBatch {
    /// Rows this batch writes (samples, snapshots, events), at least 1 for
    /// its record.
    pub fn rows(&self) -> usize {
        1 + self
            .payloads
            .iter()
            .map(|p| match p {
                BatchPayload::Metrics { samples, .. } => samples.len(),
                BatchPayload::Processes(_) => 1,
                BatchPayload::Events(events) => events.len(),
                BatchPayload::Logs(logs) => logs.chunk.len(),
                BatchPayload::Db(_) => 1,
                BatchPayload::Url(checks) => checks.len(),
            })
            .sum::<usize>()
    }
}
