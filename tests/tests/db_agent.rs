//! The database agent against a real, private MariaDB server
//! (tests/src/mariadb.rs): the lock tree a DBA opens in an incident (a
//! chain, its change when the root blocker commits, a deadlock in the
//! making, a metadata lock wait), counter rates against a known workload,
//! and the cost of a quiet cycle in statements.
//!
//! These drive the agent's library ([`Monitor::cycle`]: exactly what the
//! binary sends each interval, before the wire), so each assertion sits
//! within one cycle of the moment it describes. What the collector stores
//! of a snapshot is for its own tests once its db routes exist; the wire
//! form is checked in agent-db/src/wire.rs.

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

/// A table of three rows in `shop.orders`.
fn shop(db: &MariaDb) {
    db.sql(
        "CREATE DATABASE shop;
         CREATE TABLE shop.orders (id INT PRIMARY KEY, v INT) ENGINE=InnoDB;
         INSERT INTO shop.orders VALUES (1, 0), (2, 0), (3, 0);",
    );
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
    shop(&db);
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
