//! One cycle of the database agent, as a library: connect when needed (with
//! backoff), read the counters, the variables when due, the sessions, and
//! the lock tables only when the server reports waits; build the snapshot;
//! decide the events. [`Monitor::cycle`] is what the loop calls every
//! interval and what tests and `test` call directly.
//!
//! Cost on a quiet server: two statements a cycle (`SHOW GLOBAL STATUS`,
//! the session statement), plus one for the variables every
//! `db.variables.interval`. Lock waits add one (InnoDB) or two (metadata).
//!
//! Invariants: a failed statement never ends the loop; an error that leaves
//! the connection in doubt drops it (the next cycle reconnects, with
//! backoff); "unreachable" is raised once per outage and "reachable" once
//! when it ends.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use agent_core::Sample;
use agent_core::domain::{Event, Severity};

use crate::connection::{Backoff, Db, DbError};
use crate::counters::{Rates, Vitals};
use crate::event_names;
use crate::flavor::Family;
use crate::lock_tree::{self, WaitEdge};
use crate::locks;
use crate::sessions::{self, SessionOptions};
use crate::settings::DbSettings;
use crate::snapshot::{DbSnapshot, LockNode, Session, SnapshotReason};

/// The global variables reported at start and when they change.
pub const VARIABLES: &[&str] = &[
    "innodb_buffer_pool_size",
    "innodb_deadlock_detect",
    "innodb_lock_wait_timeout",
    "innodb_log_file_size",
    "lock_wait_timeout",
    "long_query_time",
    "max_allowed_packet",
    "max_connections",
    "max_execution_time",
    "max_statement_time",
    "performance_schema",
    "read_only",
    "slow_query_log",
    "table_open_cache",
    "thread_cache_size",
    "transaction_isolation",
    "tx_isolation",
    "version",
    "wait_timeout",
];

/// What one cycle produced.
#[derive(Debug, Clone, Default)]
pub struct Cycle {
    /// Counters, gauges, and the agent's own `db.up` and cost.
    pub samples: Vec<Sample>,
    /// The sessions and lock tree, when the server answered.
    pub snapshot: Option<DbSnapshot>,
    /// Events raised.
    pub events: Vec<Event>,
    /// Statements sent to the server in this cycle.
    pub statements: u64,
    /// Wall time of the cycle.
    pub elapsed: Duration,
    /// The error that stopped the cycle, if one did.
    pub error: Option<String>,
}

/// The state kept between cycles.
#[derive(Debug)]
pub struct Monitor {
    settings: DbSettings,
    db: Option<Db>,
    backoff: Backoff,
    rates: Rates,
    variables: BTreeMap<String, String>,
    variables_read: Option<Instant>,
    /// `Some(false)` while unreachable (an event was raised).
    reachable: Option<bool>,
    /// The user may read INNODB_TRX (has PROCESS); probed at each login.
    with_trx: bool,
    /// Statements that failed for good on this server (a privilege or a
    /// table missing), not retried until the next login.
    disabled: BTreeSet<&'static str>,
    last_alert: BTreeMap<&'static str, Instant>,
    /// Statements sent on connections since dropped (the cycle's count
    /// survives a connection lost in the middle of it).
    sent_before: u64,
}

impl Monitor {
    /// A monitor that has not connected yet.
    pub fn new(settings: DbSettings) -> Monitor {
        Monitor {
            backoff: Backoff::new(settings.interval),
            settings,
            db: None,
            rates: Rates::new(),
            variables: BTreeMap::new(),
            variables_read: None,
            reachable: None,
            with_trx: true,
            disabled: BTreeSet::new(),
            last_alert: BTreeMap::new(),
            sent_before: 0,
        }
    }

    /// The connection's server, when connected.
    pub fn db(&self) -> Option<&Db> {
        self.db.as_ref()
    }

    /// Whether the user can read the transaction tables (PROCESS).
    pub fn has_process(&self) -> bool {
        self.with_trx
    }

    /// Closes the connection (at shutdown).
    pub async fn close(&mut self) {
        if let Some(db) = self.db.take() {
            db.close().await;
        }
    }

    /// Connects if needed and due. Returns the error of a failed attempt.
    async fn ensure_connected(&mut self, events: &mut Vec<Event>) -> Result<(), DbError> {
        if self.db.is_some() {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if !self.backoff.due(now) {
            return Err(DbError::Other {
                what: "connect",
                reason: "waiting before the next attempt".into(),
            });
        }
        match Db::connect(&self.settings.connect).await {
            Ok(mut db) => {
                self.backoff.succeeded();
                self.rates.reset();
                self.disabled.clear();
                self.variables_read = None;
                tracing::info!(
                    server = %self.settings.connect.address,
                    flavor = %db.flavor,
                    connection_id = db.connection_id,
                    "Connected to the database."
                );
                if !db.flavor.supported() {
                    tracing::warn!(flavor = %db.flavor, "This server is older than MariaDB 10 or MySQL 5.7; some tables may be missing.");
                }
                // PROCESS: without it the processlist shows only our own
                // sessions and INNODB_TRX refuses us. The probe must read the
                // table: MariaDB checks the privilege only when it fills it
                // (`WHERE 1 = 0` passes without PROCESS).
                self.with_trx = match db
                    .execute(
                        "privilege probe",
                        "SELECT COUNT(*) FROM information_schema.INNODB_TRX",
                    )
                    .await
                {
                    Ok(()) => true,
                    Err(DbError::Privilege { reason, .. }) => {
                        tracing::error!(
                            user = %self.settings.connect.user,
                            reason = %reason,
                            "The database user lacks the PROCESS privilege: other users' sessions, transactions and locks are invisible. Run: GRANT PROCESS ON *.* TO the agent's user."
                        );
                        events.push(
                            Event::now(
                                event_names::PRIVILEGES,
                                Severity::Warning,
                                format!(
                                    "The database user '{}' lacks the PROCESS privilege; sessions of other users, transactions and locks are not visible.",
                                    self.settings.connect.user
                                ),
                            )
                            .attr("missing", "PROCESS"),
                        );
                        false
                    }
                    Err(e) => {
                        self.sent_before += db.statements;
                        db.close().await;
                        return Err(e);
                    }
                };
                if self.reachable == Some(false) {
                    events.push(
                        Event::now(
                            event_names::REACHABLE,
                            Severity::Info,
                            format!(
                                "The database at {} answers again.",
                                self.settings.connect.address
                            ),
                        )
                        .attr("server", self.settings.connect.address.to_string()),
                    );
                }
                self.reachable = Some(true);
                self.db = Some(db);
                Ok(())
            }
            Err(e) => {
                let wait = self.backoff.failed(now);
                tracing::error!(
                    server = %self.settings.connect.address,
                    error = %e,
                    retry_in_s = wait.as_secs(),
                    "Cannot connect to the database."
                );
                self.unreachable(&e, events);
                Err(e)
            }
        }
    }

    fn unreachable(&mut self, e: &DbError, events: &mut Vec<Event>) {
        if self.reachable != Some(false) {
            events.push(
                Event::now(
                    event_names::UNREACHABLE,
                    Severity::Critical,
                    format!(
                        "The database at {} is unreachable: {e}.",
                        self.settings.connect.address
                    ),
                )
                .attr("server", self.settings.connect.address.to_string())
                .attr("error", e.to_string()),
            );
        }
        self.reachable = Some(false);
    }

    /// Runs `sql` on the connection; an error that breaks the connection
    /// drops it and raises "unreachable".
    async fn rows(
        &mut self,
        what: &'static str,
        sql: &str,
        events: &mut Vec<Event>,
    ) -> Result<Vec<crate::connection::TextRow>, DbError> {
        let Some(db) = self.db.as_mut() else {
            return Err(DbError::Other {
                what,
                reason: "not connected".into(),
            });
        };
        match db.rows(what, sql).await {
            Ok(rows) => Ok(rows),
            Err(e) => {
                if e.breaks_connection() {
                    tracing::error!(error = %e, "The database connection failed; reconnecting.");
                    if let Some(db) = self.db.take() {
                        self.sent_before += db.statements;
                        // A statement that timed out left the stream
                        // mid-answer: drop it without a goodbye.
                        if !matches!(e, DbError::StatementTimeout { .. }) {
                            db.close().await;
                        }
                    }
                    let now = tokio::time::Instant::now();
                    self.backoff.failed(now);
                    self.unreachable(&e, events);
                } else if self.disabled.insert(what) {
                    tracing::warn!(error = %e, "A statement of the agent is refused; it is skipped until the next login.");
                }
                Err(e)
            }
        }
    }

    /// Statements sent since the monitor was made.
    fn sent(&self) -> u64 {
        self.sent_before + self.db.as_ref().map_or(0, |d| d.statements)
    }

    /// One cycle.
    pub async fn cycle(&mut self) -> Cycle {
        let started = Instant::now();
        let mut cycle = Cycle::default();
        let before = self.sent();
        let result = self.read(&mut cycle).await;
        cycle.statements = self.sent().saturating_sub(before);
        if let Err(e) = result {
            cycle.error = Some(e.to_string());
        }
        cycle.elapsed = started.elapsed();
        let up = if self.db.is_some() { 1.0 } else { 0.0 };
        cycle.samples.push(Sample::new("db.up", up));
        cycle
            .samples
            .push(Sample::new("db.agent.statements", cycle.statements as f64));
        cycle.samples.push(Sample::new(
            "db.agent.cycle_ms",
            cycle.elapsed.as_secs_f64() * 1000.0,
        ));
        cycle
    }

    async fn read(&mut self, cycle: &mut Cycle) -> Result<(), DbError> {
        let mut events = Vec::new();
        let connected = self.ensure_connected(&mut events).await;
        cycle.events.append(&mut events);
        connected?;
        let time = SystemTime::now();

        // 1. Counters.
        let status = self
            .rows("show global status", "SHOW GLOBAL STATUS", &mut events)
            .await;
        cycle.events.append(&mut events);
        let status = status?;
        let (samples, vitals) = self.rates.observe(
            Instant::now(),
            status
                .iter()
                .map(|r| (r.0.first(), r.0.get(1)))
                .filter_map(|(k, v)| {
                    let k = std::str::from_utf8(k?.as_deref()?).ok()?;
                    let v = std::str::from_utf8(v?.as_deref()?).ok()?;
                    Some((k, v))
                }),
        );
        cycle.samples.extend(samples);

        // 2. Variables, when due.
        let changed = self.read_variables(&mut events).await;
        cycle.events.append(&mut events);

        // 3. Sessions.
        let Some(db) = self.db.as_ref() else {
            return Ok(());
        };
        let flavor = db.flavor.clone();
        let mdl_plugin = db.mdl_plugin;
        let options = SessionOptions {
            query_max: self.settings.query_max,
            mask_literals: self.settings.mask_literals,
            idle: self.settings.sessions_idle,
            with_trx: self.with_trx,
        };
        let sql = sessions::sql(flavor.session_table(), options);
        let rows = self.rows("sessions", &sql, &mut events).await;
        cycle.events.append(&mut events);
        let mut all: Vec<Session> = rows?
            .iter()
            .map(|r| sessions::session_from_row(r, &options))
            .collect();

        // 4. Locks, only when the server reports waits.
        let mdl_waiters = all.iter().any(|s| s.state == locks::MDL_WAIT_STATE);
        let (edges, locks_read) = self
            .read_locks(&vitals, mdl_waiters, &flavor, mdl_plugin, &all, &mut events)
            .await;
        cycle.events.append(&mut events);
        let (mut edges, locks_read) = (edges, locks_read);
        // INNODB_TRX's wait start has whole seconds; the waiter's time in
        // its statement (ms, from the processlist) is the finer measure.
        for edge in &mut edges {
            if let Some(waiter) = all.iter().find(|s| s.id == edge.waiter)
                && waiter.trx.as_ref().is_some_and(|t| t.state == "LOCK WAIT")
                && edge.wait.kind != "METADATA"
            {
                edge.wait.wait_ms = waiter.time_ms;
            }
        }
        let mut present: BTreeSet<u64> = all.iter().map(|s| s.id).collect();
        // A holder that sleeps outside InnoDB's view (a metadata lock held
        // by an idle session) was filtered out: read it by id.
        let missing: BTreeSet<u64> = edges
            .iter()
            .flat_map(|e| [e.waiter, e.blocker])
            .filter(|id| !present.contains(id))
            .collect();
        if !missing.is_empty() && !self.disabled.contains("sessions by id") {
            let ids: Vec<u64> = missing.into_iter().collect();
            let sql = sessions::sql_for_ids(flavor.session_table(), options, &ids);
            let rows = self.rows("sessions by id", &sql, &mut events).await;
            cycle.events.append(&mut events);
            if let Ok(rows) = rows {
                for row in &rows {
                    let session = sessions::session_from_row(row, &options);
                    if present.insert(session.id) {
                        all.push(session);
                    }
                }
            }
        }
        let tree = lock_tree::build(&edges, |id| present.contains(&id));
        let in_tree: BTreeSet<u64> = tree.iter().map(|n| n.session_id).collect();
        let omitted = sessions::limit(&mut all, self.settings.sessions_max, |id| {
            in_tree.contains(&id)
        });

        // 5. Alerts, and the snapshot's reason.
        let reason = self.alerts(&vitals, &edges, &tree, &all, cycle);
        cycle.snapshot = Some(DbSnapshot {
            time,
            reason,
            flavor: flavor.name().to_string(),
            version: flavor.version_text.clone(),
            sessions: all,
            sessions_omitted: omitted,
            locks_read,
            locks: tree,
            variables: changed,
        });
        Ok(())
    }

    async fn read_variables(&mut self, events: &mut Vec<Event>) -> BTreeMap<String, String> {
        let due = self
            .variables_read
            .is_none_or(|t| t.elapsed() >= self.settings.variables_every);
        if !due || self.disabled.contains("variables") {
            return BTreeMap::new();
        }
        let list: Vec<String> = VARIABLES.iter().map(|v| format!("'{v}'")).collect();
        let sql = format!(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ({})",
            list.join(", ")
        );
        let Ok(rows) = self.rows("variables", &sql, events).await else {
            return BTreeMap::new();
        };
        self.variables_read = Some(Instant::now());
        let mut changed = BTreeMap::new();
        for row in rows {
            let (name, value) = (row.text(0).to_ascii_lowercase(), row.text(1));
            if self.variables.get(&name) != Some(&value) {
                if self.variables.contains_key(&name) {
                    tracing::info!(variable = %name, value = %value, "A server variable changed.");
                }
                self.variables.insert(name.clone(), value.clone());
                changed.insert(name, value);
            }
        }
        changed
    }

    async fn read_locks(
        &mut self,
        vitals: &Vitals,
        mdl_waiters: bool,
        flavor: &crate::flavor::Flavor,
        mdl_plugin: bool,
        sessions: &[Session],
        events: &mut Vec<Event>,
    ) -> (Vec<WaitEdge>, bool) {
        let mut edges = Vec::new();
        let mut read = false;
        if vitals.row_lock_current_waits > 0
            && self.with_trx
            && !self.disabled.contains("innodb locks")
        {
            let sql = locks::innodb_sql(flavor.lock_tables());
            if let Ok(rows) = self.rows("innodb locks", sql, events).await {
                edges.extend(rows.iter().filter_map(locks::edge_from_row));
                read = true;
            }
        }
        if mdl_waiters {
            match flavor.family {
                Family::MySql if !self.disabled.contains("metadata locks") => {
                    if let Ok(rows) = self
                        .rows("metadata locks", locks::MYSQL_MDL_SQL, events)
                        .await
                    {
                        edges.extend(rows.iter().filter_map(locks::edge_from_row));
                        read = true;
                    }
                }
                Family::MariaDb if mdl_plugin && !self.disabled.contains("metadata locks") => {
                    if let Ok(rows) = self
                        .rows("metadata locks", locks::MARIADB_MDL_SQL, events)
                        .await
                    {
                        let holds: Vec<locks::MdlHold> =
                            rows.iter().map(locks::mdl_hold_from_row).collect();
                        edges.extend(locks::mariadb_mdl_edges(sessions, &holds));
                        read = true;
                    }
                }
                _ => {}
            }
        }
        (edges, read)
    }

    /// Raises the alerts due (each at most once per cooldown) and returns
    /// the snapshot's reason.
    fn alerts(
        &mut self,
        vitals: &Vitals,
        edges: &[WaitEdge],
        tree: &[LockNode],
        sessions: &[Session],
        cycle: &mut Cycle,
    ) -> SnapshotReason {
        let mut reason = SnapshotReason::Periodic;
        let cooldown = self.settings.alert_cooldown;
        let due = |kind: &'static str, last: &mut BTreeMap<&'static str, Instant>| {
            let ok = last.get(kind).is_none_or(|t| t.elapsed() >= cooldown);
            if ok {
                last.insert(kind, Instant::now());
            }
            ok
        };
        if let Some(limit) = self.settings.threads_running_alert
            && vitals.threads_running > limit
            && due(event_names::THREADS_RUNNING, &mut self.last_alert)
        {
            reason = SnapshotReason::ThreadsRunning;
            let busiest: Vec<String> = sessions
                .iter()
                .filter(|s| !s.query.is_empty())
                .take(5)
                .map(|s| format!("{} ({} ms): {}", s.id, s.time_ms, first_chars(&s.query, 80)))
                .collect();
            cycle.events.push(
                Event::now(
                    event_names::THREADS_RUNNING,
                    Severity::Warning,
                    format!(
                        "Threads_running is {}, above {limit}; {} sessions active.",
                        vitals.threads_running,
                        sessions.len()
                    ),
                )
                .attr("threads_running", vitals.threads_running)
                .attr("limit", limit)
                .attr("sessions", sessions.len())
                .attr("longest", busiest.join(" | ")),
            );
        }
        if let Some(limit) = self.settings.lock_wait_alert
            && let Some(longest) = edges.iter().max_by_key(|e| e.wait.wait_ms)
            && longest.wait.wait_ms > limit.as_millis() as u64
            && due(event_names::LOCK_WAIT, &mut self.last_alert)
        {
            reason = SnapshotReason::LockWait;
            let roots: Vec<String> = tree
                .iter()
                .filter(|n| n.root_blocker)
                .map(|n| n.session_id.to_string())
                .collect();
            let root_query = tree
                .iter()
                .find(|n| n.root_blocker)
                .and_then(|n| sessions.iter().find(|s| s.id == n.session_id))
                .map(|s| {
                    if s.query.is_empty() {
                        s.trx.as_ref().map_or(String::new(), |t| {
                            format!("idle in transaction for {} ms", t.idle_ms)
                        })
                    } else {
                        first_chars(&s.query, 200)
                    }
                })
                .unwrap_or_default();
            let waiters = tree
                .iter()
                .filter(|n| n.depth > 0 && !n.repeated_node)
                .count();
            cycle.events.push(
                Event::now(
                    event_names::LOCK_WAIT,
                    Severity::Critical,
                    format!(
                        "Session {} has waited {:.1} s for a {} lock on {} held by session {}; root blocker(s): {}.",
                        longest.waiter,
                        longest.wait.wait_ms as f64 / 1000.0,
                        longest.wait.kind,
                        longest.wait.table,
                        longest.blocker,
                        roots.join(", ")
                    ),
                )
                .attr("waiter", longest.waiter)
                .attr("blocker", longest.blocker)
                .attr("wait_ms", longest.wait.wait_ms)
                .attr("limit_ms", limit.as_millis())
                .attr("table", &longest.wait.table)
                .attr("root_blockers", roots.join(","))
                .attr("root_blocker_query", root_query)
                .attr("waiting_sessions", waiters)
                .attr("tree", lock_tree::render(tree, sessions, 4096)),
            );
        }
        reason
    }
}

fn first_chars(text: &str, n: usize) -> String {
    crate::mask::cut(text, n).0.to_string()
}
