//! The database agent against a real, private MariaDB server
//! (tests/src/mariadb.rs): the lock tree a DBA opens in an incident (a
//! chain, its change when the root blocker commits, a deadlock in the
//! making, a metadata lock wait), counter rates against a known workload,
//! and the cost of a quiet cycle in statements.
//!
//! Most drive the agent's library ([`Monitor::cycle`]: exactly what the
//! binary sends each interval, before the wire), so each assertion sits
//! within one cycle of the moment it describes; the last drives the real
//! binary and reads the lock chain back from a real collector's
//! `/api/v1/db/{oid}/locks`, as a DBA would.

use std::path::Path;
use std::time::{Duration, Instant};

use agent_core::config::{Config, KeySpec};
use sightline_db::DB_KEYS;
use sightline_db::monitor::{Cycle, Monitor};
use sightline_db::settings::DbSettings;
use sightline_db::snapshot::{DbSnapshot, LockNode, Session as DbSession};
use sightline_e2e::mariadb::{MONITOR_PASSWORD, MariaDb, Session};

fn settings(db: &MariaDb, extra: &str) -> DbSettings {
    let keys: Vec<KeySpec> = agent_core::settings::COMMON_KEYS
        .iter()
        .chain(DB_KEYS)
        .copied()
        .collect();
    let text = format!(
        "db.url={}\ndb.password={MONITOR_PASSWORD}\ninterval=1s\n{extra}",
        db.url()
    );
    let config = Config::from_text(Path::new("db.conf"), &text, &keys).expect("config");
    DbSettings::from_config(&config, &|_| None).expect("settings")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Cycles until `done` holds for a cycle's snapshot (at most `limit`).
fn cycle_until(
    rt: &tokio::runtime::Runtime,
    monitor: &mut Monitor,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&DbSnapshot) -> bool,
) -> Cycle {
    let deadline = Instant::now() + limit;
    loop {
        let cycle = rt.block_on(monitor.cycle());
        if let Some(s) = &cycle.snapshot
            && done(s)
        {
            return cycle;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {limit:?}; last cycle: {cycle:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// (session, parent, depth, root_blocker, in_cycle, repeated) of each node.
fn shape(tree: &[LockNode]) -> Vec<(u64, u64, u32, bool, bool, bool)> {
    tree.iter()
        .map(|n| {
            (
                n.session_id,
                n.parent_id,
                n.depth,
                n.root_blocker,
                n.in_cycle,
                n.repeated_node,
            )
        })
        .collect()
}

fn session(s: &DbSnapshot, id: u64) -> &DbSession {
    s.sessions
        .iter()
        .find(|x| x.id == id)
        .unwrap_or_else(|| panic!("session {id} not in the snapshot: {s:#?}"))
}

fn waiting(s: &Session) -> bool {
    s.pending() > 0
}

#[test]
fn a_lock_chain_gives_the_exact_tree_and_changes_within_one_cycle_of_a_commit() {
    let db = MariaDb::start();
    db.create_shop();
    let rt = runtime();
    let mut monitor = Monitor::new(settings(&db, ""));

    // A holds row 1 and sits idle in its transaction.
    let mut a = Session::open(&db);
    a.exec("BEGIN; UPDATE shop.orders SET v = v + 1 WHERE id = 1");
    // C holds row 2, then B and C wait on row 1 (B first), D waits on row 2.
    let mut c = Session::open(&db);
    c.exec("BEGIN; UPDATE shop.orders SET v = v + 1 WHERE id = 2");
    let mut b = Session::open(&db);
    b.exec("BEGIN");
    b.send("UPDATE shop.orders SET v = v + 10 WHERE id = 1");
    std::thread::sleep(Duration::from_millis(300));
    c.send("UPDATE shop.orders SET v = v + 20 WHERE id = 1");
    std::thread::sleep(Duration::from_millis(300));
    let mut d = Session::open(&db);
    d.send("UPDATE shop.orders SET v = v + 30 WHERE id = 2");
    std::thread::sleep(Duration::from_millis(300));
    assert!(waiting(&b) && waiting(&c) && waiting(&d));
    let (ia, ib, ic, id) = (a.id(), b.id(), c.id(), d.id());

    let cycle = cycle_until(
        &rt,
        &mut monitor,
        Duration::from_secs(10),
        "the chain",
        |s| s.locks.iter().filter(|n| n.session_id == id).count() == 1,
    );
    let s = cycle.snapshot.expect("snapshot");
    assert!(s.locks_read);
    // InnoDB queues C's request behind B's: C waits on A and on B (its
    // waiting request is ahead), so C appears under both.
    assert_eq!(
        shape(&s.locks),
        [
            (ia, 0, 0, true, false, false),
            (ib, ia, 1, false, false, false),
            (ic, ib, 2, false, false, false),
            (id, ic, 3, false, false, false),
            (ic, ia, 1, false, false, true),
        ],
        "{:#?}",
        s.locks
    );
    let wait_b = s.locks[1].wait.clone().expect("B's wait");
    assert_eq!(wait_b.kind, "RECORD");
    assert_eq!(wait_b.mode, "X");
    assert_eq!(wait_b.holder_mode, "X");
    assert_eq!(wait_b.table, "`shop`.`orders`");
    assert_eq!(wait_b.index, "PRIMARY");
    assert_eq!(wait_b.data, "1");
    let wait_d = s.locks[3].wait.clone().expect("D's wait");
    assert_eq!(wait_d.data, "2");
    // The queries, and the root blocker idle in its transaction.
    assert_eq!(
        session(&s, ib).query,
        "UPDATE shop.orders SET v = v + 10 WHERE id = 1"
    );
    assert_eq!(
        session(&s, id).query,
        "UPDATE shop.orders SET v = v + 30 WHERE id = 2"
    );
    let root = session(&s, ia);
    assert_eq!(root.query, "");
    assert_eq!(root.command, "Sleep");
    let trx = root.trx.clone().expect("A's transaction");
    assert!(trx.idle_ms > 0, "{trx:?}");
    assert_eq!(trx.rows_locked, 1);
    assert_eq!(
        session(&s, ib).trx.as_ref().map(|t| t.state.as_str()),
        Some("LOCK WAIT")
    );

    // A commits: at the very next cycle B holds row 1, C waits on B, D on C.
    a.exec("COMMIT");
    assert!(b.wait(Duration::from_secs(5)).is_some(), "B got its row");
    // The next cycle comes one interval later (InnoDB refreshes its
    // information_schema lock cache at most every 100 ms).
    std::thread::sleep(Duration::from_secs(1));
    let next = rt.block_on(monitor.cycle());
    let s = next.snapshot.expect("snapshot");
    assert_eq!(
        shape(&s.locks),
        [
            (ib, 0, 0, true, false, false),
            (ic, ib, 1, false, false, false),
            (id, ic, 2, false, false, false),
        ],
        "{:#?}",
        s.locks
    );
    b.exec("ROLLBACK");
    assert!(c.wait(Duration::from_secs(5)).is_some());
    c.exec("ROLLBACK");
    assert!(d.wait(Duration::from_secs(5)).is_some());
    d.exec("ROLLBACK");
    let quiet = cycle_until(&rt, &mut monitor, Duration::from_secs(5), "no waits", |s| {
        s.locks.is_empty()
    });
    assert!(!quiet.snapshot.expect("snapshot").locks_read);
}

/// With InnoDB's deadlock detection off (as some high-concurrency sites
/// run it), two sessions waiting on each other stay so until
/// `innodb_lock_wait_timeout`: the tree shows the cycle, entered at the
/// lower id, and marks the wait that closes it. With detection on, InnoDB
/// rolls one back at once; the agent counts it (`db.innodb_deadlocks_per_sec`).
#[test]
fn a_deadlock_in_the_making_is_shown_as_a_cycle_and_a_detected_one_is_counted() {
    let db = MariaDb::start();
    db.create_shop();
    let rt = runtime();
    let mut monitor = Monitor::new(settings(&db, ""));
    db.sql("SET GLOBAL innodb_deadlock_detect = OFF");
    let mut x = Session::open(&db);
    let mut y = Session::open(&db);
    x.exec("SET SESSION innodb_lock_wait_timeout = 30; BEGIN; UPDATE shop.orders SET v = 1 WHERE id = 1");
    y.exec("SET SESSION innodb_lock_wait_timeout = 30; BEGIN; UPDATE shop.orders SET v = 1 WHERE id = 2");
    x.send("UPDATE shop.orders SET v = 2 WHERE id = 2");
    std::thread::sleep(Duration::from_millis(200));
    y.send("UPDATE shop.orders SET v = 2 WHERE id = 1");
    let (lo, hi) = (x.id().min(y.id()), x.id().max(y.id()));
    let cycle = cycle_until(
        &rt,
        &mut monitor,
        Duration::from_secs(10),
        "the cycle",
        |s| s.locks.len() == 3,
    );
    let s = cycle.snapshot.expect("snapshot");
    assert_eq!(
        shape(&s.locks),
        [
            (lo, 0, 0, false, false, false),
            (hi, lo, 1, false, false, false),
            (lo, hi, 2, false, true, true),
        ],
        "{:#?}",
        s.locks
    );
    assert!(
        s.locks.iter().all(|n| !n.root_blocker),
        "nobody in a cycle is a root blocker"
    );
    // Break it; with detection back on, the same crossing is a deadlock
    // InnoDB resolves, and the agent's rate counts it.
    drop(x);
    drop(y);
    db.sql("SET GLOBAL innodb_deadlock_detect = ON");
    cycle_until(
        &rt,
        &mut monitor,
        Duration::from_secs(40),
        "the cycle gone",
        |s| s.locks.is_empty(),
    );
    let mut x = Session::open(&db);
    let mut y = Session::open(&db);
    x.exec("BEGIN; UPDATE shop.orders SET v = 3 WHERE id = 1");
    y.exec("BEGIN; UPDATE shop.orders SET v = 3 WHERE id = 2");
    x.send("UPDATE shop.orders SET v = 4 WHERE id = 2");
    std::thread::sleep(Duration::from_millis(200));
    y.send("UPDATE shop.orders SET v = 4 WHERE id = 1");
    let outcomes = [
        x.wait(Duration::from_secs(5)).expect("x answered"),
        y.wait(Duration::from_secs(5)).expect("y answered"),
    ];
    assert!(
        outcomes
            .iter()
            .any(|o| o.as_ref().is_err_and(|e| e.contains("1213"))),
        "one was chosen as the deadlock victim: {outcomes:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    let cycle = rt.block_on(monitor.cycle());
    let deadlocks = value(&cycle, "db.innodb_deadlocks_per_sec").expect("the deadlock rate");
    assert!(deadlocks > 0.0, "{deadlocks}");
}

fn value(cycle: &Cycle, name: &str) -> Option<f64> {
    cycle
        .samples
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.value)
}

/// MariaDB shows who waits for a metadata lock (the processlist state
/// "Waiting for table metadata lock") and, with the `metadata_lock_info`
/// plugin (the harness loads it), the locks granted; it does not say which
/// lock a waiter asks for nor in what mode. The agent links a waiter to the
/// sessions holding a lock on a table its statement names: the idle
/// transaction that read the table holds MDL_SHARED_READ, the ALTER waits on
/// it (holding MDL_SHARED_UPGRADABLE), and a later SELECT queues behind both.
#[test]
fn a_metadata_lock_wait_joins_the_tree_with_the_idle_holder_as_root() {
    let db = MariaDb::start();
    db.create_shop();
    let rt = runtime();
    let mut monitor = Monitor::new(settings(&db, ""));
    let mut holder = Session::open(&db);
    holder.exec("BEGIN; SELECT COUNT(*) FROM shop.orders");
    let mut alter = Session::open(&db);
    alter.send("ALTER TABLE shop.orders ADD COLUMN note INT");
    std::thread::sleep(Duration::from_millis(300));
    let mut reader = Session::open(&db);
    reader.send("SELECT * FROM shop.orders");
    std::thread::sleep(Duration::from_millis(300));
    let (h, a, r) = (holder.id(), alter.id(), reader.id());
    let cycle = cycle_until(
        &rt,
        &mut monitor,
        Duration::from_secs(10),
        "the MDL tree",
        |s| s.locks.len() >= 4,
    );
    let s = cycle.snapshot.expect("snapshot");
    assert!(s.locks_read);
    assert_eq!(
        shape(&s.locks),
        [
            (h, 0, 0, true, false, false),
            (a, h, 1, false, false, false),
            (r, a, 2, false, false, false),
            (r, h, 1, false, false, true),
        ],
        "{:#?}",
        s.locks
    );
    let wait = s.locks[1].wait.clone().expect("the ALTER's wait");
    assert_eq!(wait.kind, "METADATA");
    assert_eq!(wait.holder_mode, "MDL_SHARED_READ");
    assert_eq!(wait.table, "`shop`.`orders`");
    assert_eq!(wait.mode, "", "MariaDB does not say what a waiter asks for");
    assert_eq!(
        s.locks[2].wait.as_ref().map(|w| w.holder_mode.as_str()),
        Some("MDL_SHARED_UPGRADABLE")
    );
    // The holder sleeps: it is in the snapshot anyway, idle in its transaction.
    let root = session(&s, h);
    assert_eq!(root.command, "Sleep");
    assert_eq!(session(&s, a).state, "Waiting for table metadata lock");
    holder.exec("COMMIT");
    assert!(alter.wait(Duration::from_secs(10)).is_some());
    assert!(reader.wait(Duration::from_secs(10)).is_some());
}

/// N statements between two reads give a rate of N per second of the span
/// (plus the agent's own one SELECT per cycle), within 5 %.
#[test]
fn counter_rates_match_a_known_workload_and_a_quiet_cycle_costs_at_most_five_statements() {
    let db = MariaDb::start();
    db.create_shop();
    let rt = runtime();
    let mut monitor = Monitor::new(settings(&db, ""));
    // Login and the first read (no rates yet).
    rt.block_on(monitor.cycle());
    let mut client = Session::open(&db);
    let n = 2000;
    let batch: Vec<String> = (0..n)
        .map(|i| format!("SELECT v FROM shop.orders WHERE id = {}", i % 3 + 1))
        .collect();
    let first = rt.block_on(monitor.cycle());
    let started = Instant::now();
    client.exec(&batch.join(";\n"));
    // The span is what the agent measured between its two reads; take it
    // from a known wait instead of guessing it.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(started.elapsed()));
    let span_start = Instant::now();
    let second = rt.block_on(monitor.cycle());
    let span = span_start.elapsed();
    assert!(
        first.error.is_none() && second.error.is_none(),
        "{second:?}"
    );
    let rate = value(&second, "db.com_select_per_sec").expect("a select rate");
    // The marker SELECT of the harness client, and the agent's one.
    let expected = (n + 2) as f64;
    let seconds = expected / rate;
    assert!(
        (1.9..2.2 + span.as_secs_f64()).contains(&seconds),
        "rate {rate}/s over about 2 s means {seconds} s for {expected} selects"
    );

    // A quiet cycle, counted by the server itself: Questions moves by the
    // agent's statements plus what the harness's client spends reading it.
    std::thread::sleep(Duration::from_millis(1100));
    // What one read of Questions by the harness's client costs itself.
    let probe = db.global_status("Questions");
    let own = db.global_status("Questions") - probe;
    let before = db.global_status("Questions");
    let quiet = rt.block_on(monitor.cycle());
    let after = db.global_status("Questions");
    let by_server = after - before - own;
    assert_eq!(
        by_server, quiet.statements,
        "the agent counts what the server counts"
    );
    assert!(by_server <= 5, "{by_server} statements in a quiet cycle");
    assert_eq!(by_server, 2, "SHOW GLOBAL STATUS and the sessions, no more");
}

/// A lock wait past `db.lock_wait.alert` raises `db.lock_wait` naming the
/// waiter, the blocker and the root blocker, and the snapshot of that cycle
/// is the alert's (reason `lock_wait`); within the cooldown it is not
/// raised again. Threads_running past its alert raises `db.threads_running`
/// with the session list.
#[test]
fn long_lock_waits_and_busy_threads_raise_events_with_their_snapshot() {
    let db = MariaDb::start();
    db.create_shop();
    let rt = runtime();
    let mut monitor = Monitor::new(settings(
        &db,
        "db.lock_wait.alert=1s\ndb.threads_running.alert=4\n",
    ));
    let mut holder = Session::open(&db);
    holder.exec("BEGIN; UPDATE shop.orders SET v = 9 WHERE id = 3");
    let mut waiter = Session::open(&db);
    waiter.send("UPDATE shop.orders SET v = 8 WHERE id = 3");
    let cycle = cycle_until(
        &rt,
        &mut monitor,
        Duration::from_secs(10),
        "the alert",
        |s| s.reason == sightline_db::snapshot::SnapshotReason::LockWait,
    );
    let event = cycle
        .events
        .iter()
        .find(|e| e.name == "db.lock_wait")
        .expect("db.lock_wait raised");
    assert_eq!(event.attrs["waiter"], waiter.id().to_string());
    assert_eq!(event.attrs["blocker"], holder.id().to_string());
    assert_eq!(event.attrs["root_blockers"], holder.id().to_string());
    assert_eq!(event.attrs["table"], "`shop`.`orders`");
    assert!(event.attrs["wait_ms"].parse::<u64>().expect("ms") > 1000);
    assert!(
        event.attrs["root_blocker_query"].starts_with("idle in transaction for"),
        "{event:?}"
    );
    // The tree for people, in the event itself.
    let tree: Vec<&str> = event.attrs["tree"].lines().collect();
    assert_eq!(tree.len(), 2, "{tree:?}");
    assert!(
        tree[0].starts_with(&format!(
            "{} root blocker root@localhost: idle in transaction for",
            holder.id()
        )),
        "{tree:?}"
    );
    assert!(
        tree[1].starts_with(&format!("  {} waits ", waiter.id()))
            && tree[1].contains("for RECORD X `shop`.`orders` PRIMARY (3) held X")
            && tree[1].ends_with(": UPDATE shop.orders SET v = 8 WHERE id = 3"),
        "{tree:?}"
    );
    let s = cycle.snapshot.expect("snapshot");
    assert_eq!(s.locks.len(), 2);
    let again = rt.block_on(monitor.cycle());
    assert!(
        again.events.iter().all(|e| e.name != "db.lock_wait"),
        "cooldown"
    );
    holder.exec("ROLLBACK");
    assert!(waiter.wait(Duration::from_secs(5)).is_some());

    let mut sleepers: Vec<Session> = (0..4).map(|_| Session::open(&db)).collect();
    for s in &mut sleepers {
        s.send("SELECT SLEEP(6)");
    }
    let cycle = cycle_until(
        &rt,
        &mut monitor,
        Duration::from_secs(4),
        "busy threads",
        |s| s.reason == sightline_db::snapshot::SnapshotReason::ThreadsRunning,
    );
    let event = cycle
        .events
        .iter()
        .find(|e| e.name == "db.threads_running")
        .expect("db.threads_running raised");
    // Four sleepers and the agent's own statement.
    assert!(event.attrs["threads_running"].parse::<u64>().expect("n") >= 5);
    let s = cycle.snapshot.expect("snapshot");
    let sleeping: Vec<&DbSession> = s
        .sessions
        .iter()
        .filter(|x| x.query == "SELECT SLEEP(6)")
        .collect();
    assert_eq!(sleeping.len(), 4, "{:#?}", s.sessions);
    assert!(
        event.attrs["longest"].contains("SELECT SLEEP(6)"),
        "{event:?}"
    );
}

/// A huge statement is cut at `db.query.max` (marked cut) by the server
/// before it crosses the wire; a statement with bytes that are not UTF-8
/// arrives printable; literals are masked on request.
#[test]
fn huge_binary_and_masked_query_texts() {
    let db = MariaDb::start();
    let rt = runtime();
    let mut monitor = Monitor::new(settings(
        &db,
        "db.query.max=1KiB\ndb.query.mask_literals=true\n",
    ));
    let mut huge = Session::open(&db);
    let blob = "z".repeat(200_000);
    huge.send(&format!("SELECT SLEEP(5), 'secret-{blob}'"));
    // Raw bytes: a latin1 connection sending 0xFF 0xFE and a NUL escape.
    let file = db.dir().join("binary.sql");
    std::fs::write(
        &file,
        b"SET NAMES latin1; SELECT SLEEP(5), 'caf\xe9 \xff\xfe', '\\0' AS nul;\n".as_slice(),
    )
    .expect("write");
    let mut binary = std::process::Command::new("mariadb")
        .arg(format!("--defaults-file={}", db.client_conf().display()))
        .arg("--binary-mode")
        .stdin(std::fs::File::open(&file).expect("open"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("mariadb client");
    let cycle = cycle_until(
        &rt,
        &mut monitor,
        Duration::from_secs(5),
        "both running",
        |s| {
            s.sessions
                .iter()
                .filter(|x| x.query.starts_with("SELECT SLEEP(#)"))
                .count()
                == 2
        },
    );
    let s = cycle.snapshot.expect("snapshot");
    let cut = s
        .sessions
        .iter()
        .find(|x| x.query_cut)
        .expect("the huge one");
    assert!(cut.query.len() <= 1024, "{}", cut.query.len());
    assert!(
        !cut.query.contains("secret"),
        "masked: {}",
        &cut.query[..40]
    );
    assert_eq!(cut.query, "SELECT SLEEP(#), #");
    let other = s
        .sessions
        .iter()
        .find(|x| !x.query_cut && x.query.starts_with("SELECT SLEEP(#)"))
        .expect("the binary one");
    assert_eq!(other.query, "SELECT SLEEP(#), #, # AS nul");
    // And the whole snapshot goes on the wire as valid protobuf.
    let wire = sightline_db::wire::snapshot_to_wire(s);
    let bytes = prost::Message::encode_to_vec(&wire);
    let back: sightline_proto::v1::DbSnapshot =
        prost::Message::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(back.sessions.len(), wire.sessions.len());
    let _ = binary.wait();
    let _ = huge.wait(Duration::from_secs(10));

    // Unmasked, the binary text arrives printable, its bytes replaced, not dropped.
    let mut monitor = Monitor::new(settings(&db, "db.query.max=1KiB\n"));
    let mut binary = std::process::Command::new("mariadb")
        .arg(format!("--defaults-file={}", db.client_conf().display()))
        .arg("--binary-mode")
        .stdin(std::fs::File::open(&file).expect("open"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("mariadb client");
    let cycle = cycle_until(
        &rt,
        &mut monitor,
        Duration::from_secs(5),
        "binary running",
        |s| {
            s.sessions
                .iter()
                .any(|x| x.query.starts_with("SELECT SLEEP(5)"))
        },
    );
    let s = cycle.snapshot.expect("snapshot");
    let text = &s
        .sessions
        .iter()
        .find(|x| x.query.starts_with("SELECT SLEEP(5)"))
        .expect("binary")
        .query;
    assert!(text.starts_with("SELECT SLEEP(5), 'caf"), "{text:?}");
    assert!(!text.chars().any(|c| c == '\0'), "{text:?}");
    let _ = binary.wait();
}

/// A user without PROCESS still gets counters and its own sessions: the
/// agent says once what it cannot see (`db.privileges`), reads the
/// processlist without the transaction columns, and never fails a cycle.
#[test]
fn a_user_without_process_gets_counters_and_a_warning_not_failures() {
    let db = MariaDb::start();
    db.sql(
        "CREATE USER 'noproc'@'%' IDENTIFIED BY 'noproc-pw'; GRANT SELECT ON *.* TO 'noproc'@'%';",
    );
    let rt = runtime();
    let keys: Vec<KeySpec> = agent_core::settings::COMMON_KEYS
        .iter()
        .chain(DB_KEYS)
        .copied()
        .collect();
    let text = format!(
        "db.url=mysql://noproc@127.0.0.1:{}/\ndb.password=noproc-pw\ninterval=1s\ndb.sessions.idle=true\n",
        db.port()
    );
    let config = Config::from_text(Path::new("db.conf"), &text, &keys).expect("config");
    let mut monitor = Monitor::new(DbSettings::from_config(&config, &|_| None).expect("settings"));
    let first = rt.block_on(monitor.cycle());
    assert!(first.error.is_none(), "{first:?}");
    assert!(!monitor.has_process());
    let warning = first
        .events
        .iter()
        .find(|e| e.name == "db.privileges")
        .expect("db.privileges raised");
    assert_eq!(warning.attrs["missing"], "PROCESS");
    let mut other = Session::open(&db);
    other.exec("SELECT 1");
    std::thread::sleep(Duration::from_millis(1000));
    let second = rt.block_on(monitor.cycle());
    assert!(second.error.is_none(), "{second:?}");
    assert!(
        second.events.iter().all(|e| e.name != "db.privileges"),
        "said once"
    );
    assert!(value(&second, "db.questions_per_sec").is_some());
    let s = second.snapshot.expect("snapshot");
    assert!(
        s.sessions.iter().all(|x| x.user == "noproc"),
        "without PROCESS only its own sessions are visible: {:#?}",
        s.sessions
    );
    assert!(s.sessions.iter().all(|x| x.id != other.id()));
}

/// The server's own limit stops a slow statement of the agent
/// (`max_statement_time` on MariaDB) and the connection stays usable; a
/// statement that escapes it (here by overriding it for itself, as a MySQL
/// SELECT-only limit lets a SHOW escape) is killed from a second, brief
/// connection once the wire bound passes: the server counts one `KILL` and
/// one extra connection, and nothing of the agent's is left running.
#[test]
fn a_statement_past_its_limit_is_stopped_by_the_server_or_killed_from_a_second_connection() {
    use sightline_db::connection::{Db, DbError};
    let db = MariaDb::start();
    let rt = runtime();
    let s = settings(&db, "db.statement_timeout=500ms\n");
    let mut conn = rt.block_on(Db::connect(&s.connect)).expect("connects");
    let started = Instant::now();
    let err = rt
        .block_on(conn.rows("slow", "SELECT SLEEP(3) FROM DUAL WHERE 1 = (SELECT 1 FROM information_schema.PROCESSLIST LIMIT 1)"))
        .expect_err("stopped");
    assert!(matches!(err, DbError::ServerTimeout { .. }), "{err}");
    assert!(!err.breaks_connection());
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    let rows = rt
        .block_on(conn.rows("after", "SELECT 1"))
        .expect("still usable");
    assert_eq!(rows[0].text(0), "1");

    let kills = db.global_status("Com_kill");
    let connections = db.global_status("Connections");
    let started = Instant::now();
    let err = rt
        .block_on(conn.rows(
            "escaping",
            "SET STATEMENT max_statement_time = 0 FOR SELECT SLEEP(10)",
        ))
        .expect_err("killed");
    let took = started.elapsed();
    assert!(matches!(err, DbError::StatementTimeout { .. }), "{err}");
    assert!(
        err.breaks_connection(),
        "a stream left mid-answer is not reused"
    );
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(db.global_status("Com_kill") - kills, 1, "one KILL QUERY");
    // The kill's connection, and the harness's own status reads.
    let opened = db.global_status("Connections") - connections;
    assert!((1..=3).contains(&opened), "{opened} connections opened");
    let sleeping = db.sql(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%SLEEP(10)%' AND INFO NOT LIKE '%PROCESSLIST%'",
    );
    assert_eq!(sleeping[0][0], "0", "the runaway statement is gone");
}

/// The real binary through a real collector, as a DBA reads it from the
/// API: rates as series, and the A/B/C/D lock chain as the nested tree of
/// `/api/v1/db/{oid}/locks` (modes, table, index, record, queries, the
/// idle root blocker), the `db.lock_wait` event naming waiter, blocker and
/// root blocker, and the alert's snapshot in the timeline.
#[test]
fn the_binary_sends_rates_the_lock_chain_and_its_event_to_the_collectors_api() {
    use sightline_e2e::{Agent, Collector, Scratch, agent_conf, create_project, wait_for};
    let scratch = Scratch::new("db-binary");
    let db = MariaDb::start();
    db.create_shop();
    let data = scratch.join("collector");
    let creds = create_project(&data, "db");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let dir = scratch.join("agent");
    let url = db.url();
    let conf = agent_conf(
        &creds.license,
        collector.grpc,
        &dir.join("data"),
        &[
            ("db.url", &url),
            ("db.password", MONITOR_PASSWORD),
            ("db.lock_wait.alert", "2s"),
        ],
    );
    let mut agent = Agent::start("sightline-db", &dir, &conf);
    let oid = sightline_e2e::the_agent(&api)["oid"].as_i64().expect("oid");
    wait_for("rates", Duration::from_secs(20), || {
        (!api.points(oid, "db.com_select_per_sec").is_empty()).then_some(())
    });
    assert!(api.points(oid, "db.up").iter().all(|p| p.1 == 1.0));
    let statements = api.points(oid, "db.agent.statements");
    assert!(
        statements.iter().skip(1).all(|p| p.1 <= 5.0),
        "at most 5 statements a cycle: {statements:?}"
    );

    let mut holder = Session::open(&db);
    holder.exec("BEGIN; UPDATE shop.orders SET v = 1 WHERE id = 1");
    let mut c = Session::open(&db);
    c.exec("BEGIN; UPDATE shop.orders SET v = 1 WHERE id = 2");
    let mut waiter = Session::open(&db);
    waiter.exec("BEGIN");
    waiter.send("UPDATE shop.orders SET v = 2 WHERE id = 1");
    std::thread::sleep(Duration::from_millis(300));
    c.send("UPDATE shop.orders SET v = 3 WHERE id = 1");
    std::thread::sleep(Duration::from_millis(300));
    let mut d = Session::open(&db);
    d.send("UPDATE shop.orders SET v = 4 WHERE id = 2");
    let event = wait_for("db.lock_wait", Duration::from_secs(20), || {
        api.events()
            .into_iter()
            .find(|e| e["kind"] == "db.lock_wait")
    });
    assert_eq!(event["attrs"]["waiter"], waiter.id().to_string());
    assert_eq!(event["attrs"]["blocker"], holder.id().to_string());
    assert_eq!(event["attrs"]["root_blockers"], holder.id().to_string());
    assert_eq!(event["attrs"]["table"], "`shop`.`orders`");

    // The tree as the API nests it.
    let locks = wait_for(
        "the whole chain in the API",
        Duration::from_secs(10),
        || {
            let (status, body) = api.get(&format!("/api/v1/db/{oid}/locks"));
            (status == 200 && body["waiting"].as_u64() == Some(3)).then_some(body)
        },
    );
    assert_eq!(locks["root_blockers"], serde_json::json!([holder.id()]));
    let tree = locks["tree"].as_array().expect("tree");
    assert_eq!(tree.len(), 1, "{locks:#}");
    let root = &tree[0];
    assert_eq!(root["session_id"], holder.id());
    assert_eq!(root["root_blocker"], true);
    assert_eq!(root["query"], "");
    assert_eq!(root["command"], "Sleep");
    assert!(
        root["trx"]["idle_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{root:#}"
    );
    let kids: Vec<(u64, bool)> = root["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(|n| (n["session_id"].as_u64().unwrap_or(0), n["repeated"] == true))
        .collect();
    assert_eq!(kids, [(waiter.id(), false), (c.id(), true)], "{locks:#}");
    let b = &root["children"][0];
    assert_eq!(b["query"], "UPDATE shop.orders SET v = 2 WHERE id = 1");
    assert_eq!(
        b["wait"],
        serde_json::json!({
            "kind": "RECORD", "mode": "X", "holder_mode": "X", "table": "`shop`.`orders`",
            "index": "PRIMARY", "data": "1", "wait_ms": b["wait"]["wait_ms"],
        })
    );
    let under_b = &b["children"][0];
    assert_eq!(under_b["session_id"], c.id());
    assert_eq!(
        under_b["query"],
        "UPDATE shop.orders SET v = 3 WHERE id = 1"
    );
    let under_c = &under_b["children"][0];
    assert_eq!(under_c["session_id"], d.id());
    assert_eq!(under_c["wait"]["data"], "2");
    assert_eq!(
        under_c["query"],
        "UPDATE shop.orders SET v = 4 WHERE id = 2"
    );
    // The alert's snapshot is in the timeline.
    let timeline = api.ok(&format!("/api/v1/db/{oid}/snapshots"));
    assert!(
        timeline["snapshots"]
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["reason"] == "lock_wait")),
        "{timeline:#}"
    );
    holder.exec("ROLLBACK");
    assert!(waiter.wait(Duration::from_secs(5)).is_some());
    waiter.exec("ROLLBACK");
    assert!(c.wait(Duration::from_secs(5)).is_some());
    c.exec("ROLLBACK");
    assert!(d.wait(Duration::from_secs(5)).is_some());
    assert!(agent.terminate_within(Duration::from_secs(2)).is_some());
}
