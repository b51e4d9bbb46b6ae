//! The MySQL 8 path without a MySQL server: no MySQL runs here, so these
//! tests feed the agent's mappings result sets recorded from the table
//! layouts the MySQL 8.0 reference manual documents
//! (`performance_schema.processlist`, `threads`, `data_locks`,
//! `data_lock_waits`, `metadata_locks`, `information_schema.INNODB_TRX`),
//! shaped as the agent's own statements return them, and check the
//! sessions and the lock tree a DBA would see. What they cannot prove is
//! that a real MySQL 8 accepts the statements; the statements are checked
//! here for the documented table and column names.

use sightline_db::connection::TextRow;
use sightline_db::flavor::{Flavor, LockTables, SessionTable};
use sightline_db::lock_tree;
use sightline_db::locks::{self, MYSQL_MDL_SQL};
use sightline_db::sessions::{self, SessionOptions};

fn options() -> SessionOptions {
    SessionOptions {
        query_max: 4096,
        mask_literals: false,
        idle: false,
        with_trx: true,
    }
}

/// `SELECT ... FROM performance_schema.processlist p LEFT JOIN INNODB_TRX`:
/// ID, USER, HOST, DB, COMMAND, STATE, TIME*1000, INFO, LENGTH(INFO), four
/// NULLs (MariaDB's extended columns), the transaction, and the last
/// statement from events_statements_current for an idle transaction.
#[rustfmt::skip]
fn processlist() -> Vec<TextRow> {
    vec![
        // A: idle in its transaction, holding the row.
        TextRow::of(&[
            Some("11"), Some("app"), Some("10.0.0.7:40112"), Some("shop"), Some("Sleep"),
            Some(""), Some("42000"), None, None, None, None, None, None,
            Some("421937"), Some("RUNNING"), Some("43000"), Some("1"), Some("1"), Some("1"),
            Some("UPDATE orders SET state = 'paid' WHERE id = 1"),
        ]),
        // B and C wait on A; D waits on C.
        TextRow::of(&[
            Some("12"), Some("app"), Some("10.0.0.8:40200"), Some("shop"), Some("Query"),
            Some("updating"), Some("20000"), Some("UPDATE orders SET v = 1 WHERE id = 1"),
            Some("36"), None, None, None, None, Some("421940"), Some("LOCK WAIT"),
            Some("20000"), Some("1"), Some("0"), Some("1"), None,
        ]),
        TextRow::of(&[
            Some("13"), Some("app"), Some("10.0.0.9:40300"), Some("shop"), Some("Query"),
            Some("updating"), Some("15000"), Some("UPDATE orders SET v = 2 WHERE id = 1"),
            Some("36"), None, None, None, None, Some("421941"), Some("LOCK WAIT"),
            Some("16000"), Some("2"), Some("1"), Some("1"), None,
        ]),
        TextRow::of(&[
            Some("14"), Some("batch"), Some("10.0.0.10:40400"), Some("shop"), Some("Query"),
            Some("updating"), Some("9000"), Some("UPDATE orders SET v = 3 WHERE id = 2"),
            Some("36"), None, None, None, None, Some("421942"), Some("LOCK WAIT"),
            Some("9000"), Some("1"), Some("0"), Some("1"), None,
        ]),
    ]
}

/// `performance_schema.data_lock_waits` joined to `data_locks` (LOCK_TYPE,
/// LOCK_MODE such as `X,REC_NOT_GAP`, OBJECT_SCHEMA/NAME, INDEX_NAME,
/// LOCK_DATA) and `threads` (THREAD_ID -> PROCESSLIST_ID), as the agent's
/// statement returns them. MySQL 8 lists C's wait against A and against B's
/// queued request, as InnoDB does on MariaDB.
#[rustfmt::skip]
fn data_lock_waits() -> Vec<TextRow> {
    let row = |w: &str, b: &str, mode: &str, held: &str, data: &str, ms: &str| {
        TextRow::of(&[
            Some(w), Some(b), Some("RECORD"), Some(mode), Some(held),
            Some("`shop`.`orders`"), Some("PRIMARY"), Some(data), Some(ms),
        ])
    };
    vec![
        row("12", "11", "X,REC_NOT_GAP", "X,REC_NOT_GAP", "1", "20000"),
        row("13", "11", "X,REC_NOT_GAP", "X,REC_NOT_GAP", "1", "15000"),
        row("13", "12", "X,REC_NOT_GAP", "X,REC_NOT_GAP", "1", "15000"),
        row("14", "13", "X,REC_NOT_GAP", "X,REC_NOT_GAP", "2", "9000"),
    ]
}

#[test]
fn mysql8_reads_the_performance_schema_tables() {
    let f = Flavor::detect("8.0.36", "MySQL Community Server - GPL");
    assert_eq!(f.session_table(), SessionTable::PerfSchemaProcesslist);
    assert_eq!(f.lock_tables(), LockTables::PerfSchemaDataLocks);
    let sql = sessions::sql(f.session_table(), options());
    for name in [
        "performance_schema.processlist",
        "information_schema.INNODB_TRX",
        "performance_schema.events_statements_current",
        "th.PROCESSLIST_ID",
    ] {
        assert!(sql.contains(name), "{name} in {sql}");
    }
    let locks = locks::innodb_sql(f.lock_tables());
    for name in [
        "performance_schema.data_lock_waits",
        "REQUESTING_ENGINE_LOCK_ID",
        "BLOCKING_ENGINE_LOCK_ID",
        "REQUESTING_THREAD_ID",
        "BLOCKING_THREAD_ID",
        "performance_schema.threads",
        "PROCESSLIST_ID",
    ] {
        assert!(locks.contains(name), "{name} in {locks}");
    }
    for name in [
        "performance_schema.metadata_locks",
        "OWNER_THREAD_ID",
        "LOCK_STATUS = 'PENDING'",
    ] {
        assert!(MYSQL_MDL_SQL.contains(name), "{name}");
    }
    assert_eq!(
        f.statement_limit(2000).as_deref(),
        Some("SET SESSION max_execution_time = 2000")
    );
}

#[test]
fn mysql8_rows_give_the_sessions_and_the_exact_tree() {
    let o = options();
    let sessions: Vec<_> = processlist()
        .iter()
        .map(|r| sessions::session_from_row(r, &o))
        .collect();
    let a = &sessions[0];
    assert_eq!(a.time_ms, 42000);
    let trx = a.trx.as_ref().expect("A's transaction");
    assert_eq!(trx.idle_ms, 42000);
    assert_eq!(
        trx.last_query, "UPDATE orders SET state = 'paid' WHERE id = 1",
        "MySQL keeps the last statement of an idle transaction"
    );
    assert_eq!(
        sessions[1].trx.as_ref().map(|t| t.state.as_str()),
        Some("LOCK WAIT")
    );
    assert_eq!(sessions[3].user, "batch");

    let edges: Vec<_> = data_lock_waits()
        .iter()
        .filter_map(locks::edge_from_row)
        .collect();
    let tree = lock_tree::build(&edges, |id| sessions.iter().any(|s| s.id == id));
    let shape: Vec<(u64, u64, u32, bool, bool)> = tree
        .iter()
        .map(|n| {
            (
                n.session_id,
                n.parent_id,
                n.depth,
                n.root_blocker,
                n.repeated_node,
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (11, 0, 0, true, false),
            (12, 11, 1, false, false),
            (13, 12, 2, false, false),
            (14, 13, 3, false, false),
            (13, 11, 1, false, true),
        ]
    );
    let wait = tree[3].wait.as_ref().expect("D's wait");
    assert_eq!(wait.mode, "X,REC_NOT_GAP");
    assert_eq!(wait.table, "`shop`.`orders`");
    assert_eq!(wait.index, "PRIMARY");
    assert_eq!(wait.data, "2");
    assert!(tree.iter().all(|n| !n.gone));
}

/// `performance_schema.metadata_locks`: the ALTER's pending EXCLUSIVE
/// against the idle transaction's granted SHARED_READ, and a SELECT's
/// pending SHARED_READ against both granted locks (the ALTER holds
/// SHARED_UPGRADABLE), as the agent's statement returns them.
#[test]
#[rustfmt::skip]
fn mysql8_metadata_lock_rows_join_the_tree() {
    let row = |w: &str, b: &str, mode: &str, held: &str, ms: &str| {
        TextRow::of(&[
            Some(w), Some(b), Some("METADATA"), Some(mode), Some(held),
            Some("`shop`.`orders`"), Some(""), Some(""), Some(ms),
        ])
    };
    let rows = [
        row("21", "20", "EXCLUSIVE", "SHARED_READ", "30000"),
        row("22", "20", "SHARED_READ", "SHARED_READ", "10000"),
        row("22", "21", "SHARED_READ", "SHARED_UPGRADABLE", "10000"),
    ];
    let edges: Vec<_> = rows.iter().filter_map(locks::edge_from_row).collect();
    let tree = lock_tree::build(&edges, |_| true);
    let shape: Vec<(u64, u64, bool)> = tree
        .iter()
        .map(|n| (n.session_id, n.parent_id, n.repeated_node))
        .collect();
    assert_eq!(shape, [(20, 0, false), (21, 20, false), (22, 21, false), (22, 20, true)]);
    let alter = tree[1].wait.as_ref().expect("wait");
    assert_eq!(alter.kind, "METADATA");
    assert_eq!(alter.mode, "EXCLUSIVE");
    assert_eq!(alter.holder_mode, "SHARED_READ");
}
