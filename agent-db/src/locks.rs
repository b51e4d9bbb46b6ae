//! Where the lock waits come from on each flavour, as [`WaitEdge`]s for
//! [`crate::lock_tree::build`]:
//! - InnoDB row and table locks: `information_schema.INNODB_LOCK_WAITS`,
//!   `INNODB_LOCKS` and `INNODB_TRX` on MariaDB and MySQL 5.7;
//!   `performance_schema.data_lock_waits` and `data_locks` on MySQL 8, its
//!   thread ids mapped to connection ids through `performance_schema.threads`.
//! - Metadata locks: `performance_schema.metadata_locks` on MySQL (pending
//!   and granted, so edges come from the server); on MariaDB the
//!   `metadata_lock_info` plugin, which lists granted locks only: a session
//!   whose state is "Waiting for table metadata lock" is linked to the other
//!   sessions holding a lock on a table its statement names (MariaDB does not
//!   say which table a waiter wants, nor the mode it asks for).
//!
//! The InnoDB and MySQL statements return the same nine columns
//! ([`edge_from_row`]). Invariant: these statements run only when the
//! server reports waits (the loop decides), so a quiet server never pays
//! for them.

use std::collections::BTreeMap;

use crate::connection::TextRow;
use crate::flavor::LockTables;
use crate::lock_tree::WaitEdge;
use crate::snapshot::{LockWait, Session};

/// The processlist state of a session waiting for a metadata lock.
pub const MDL_WAIT_STATE: &str = "Waiting for table metadata lock";

/// The statement that reads InnoDB's lock waits, nine columns: waiter id,
/// blocker id, lock type, mode asked, mode held, table, index, data, wait ms.
pub fn innodb_sql(tables: LockTables) -> &'static str {
    match tables {
        LockTables::InnoDbInfoSchema => {
            "SELECT r.trx_mysql_thread_id, b.trx_mysql_thread_id, rl.lock_type, rl.lock_mode, \
             bl.lock_mode, rl.lock_table, rl.lock_index, rl.lock_data, \
             TIMESTAMPDIFF(MICROSECOND, r.trx_wait_started, NOW(6)) DIV 1000 \
             FROM information_schema.INNODB_LOCK_WAITS w \
             JOIN information_schema.INNODB_TRX r ON r.trx_id = w.requesting_trx_id \
             JOIN information_schema.INNODB_TRX b ON b.trx_id = w.blocking_trx_id \
             LEFT JOIN information_schema.INNODB_LOCKS rl ON rl.lock_id = w.requested_lock_id \
             LEFT JOIN information_schema.INNODB_LOCKS bl ON bl.lock_id = w.blocking_lock_id"
        }
        LockTables::PerfSchemaDataLocks => {
            "SELECT rt.PROCESSLIST_ID, bt.PROCESSLIST_ID, rl.LOCK_TYPE, rl.LOCK_MODE, \
             bl.LOCK_MODE, CONCAT('`', rl.OBJECT_SCHEMA, '`.`', rl.OBJECT_NAME, '`'), \
             rl.INDEX_NAME, rl.LOCK_DATA, \
             TIMESTAMPDIFF(MICROSECOND, tr.trx_wait_started, NOW(6)) DIV 1000 \
             FROM performance_schema.data_lock_waits w \
             JOIN performance_schema.data_locks rl ON rl.ENGINE_LOCK_ID = w.REQUESTING_ENGINE_LOCK_ID \
             JOIN performance_schema.data_locks bl ON bl.ENGINE_LOCK_ID = w.BLOCKING_ENGINE_LOCK_ID \
             JOIN performance_schema.threads rt ON rt.THREAD_ID = w.REQUESTING_THREAD_ID \
             JOIN performance_schema.threads bt ON bt.THREAD_ID = w.BLOCKING_THREAD_ID \
             LEFT JOIN information_schema.INNODB_TRX tr \
               ON tr.trx_id = w.REQUESTING_ENGINE_TRANSACTION_ID"
        }
    }
}

/// MySQL's metadata lock waits, the same nine columns (pending locks
/// against every granted lock on the same table held by another thread).
pub const MYSQL_MDL_SQL: &str = "SELECT wt.PROCESSLIST_ID, bt.PROCESSLIST_ID, 'METADATA', w.LOCK_TYPE, b.LOCK_TYPE, \
     CONCAT('`', w.OBJECT_SCHEMA, '`.`', w.OBJECT_NAME, '`'), '', '', wt.PROCESSLIST_TIME * 1000 \
     FROM performance_schema.metadata_locks w \
     JOIN performance_schema.metadata_locks b ON b.OBJECT_TYPE = w.OBJECT_TYPE \
       AND b.OBJECT_SCHEMA <=> w.OBJECT_SCHEMA AND b.OBJECT_NAME <=> w.OBJECT_NAME \
       AND b.LOCK_STATUS = 'GRANTED' AND b.OWNER_THREAD_ID <> w.OWNER_THREAD_ID \
     JOIN performance_schema.threads wt ON wt.THREAD_ID = w.OWNER_THREAD_ID \
     JOIN performance_schema.threads bt ON bt.THREAD_ID = b.OWNER_THREAD_ID \
     WHERE w.LOCK_STATUS = 'PENDING' AND w.OBJECT_TYPE = 'TABLE' \
       AND wt.PROCESSLIST_ID IS NOT NULL AND bt.PROCESSLIST_ID IS NOT NULL";

/// MariaDB's granted table metadata locks: holder id, mode, schema, table.
pub const MARIADB_MDL_SQL: &str = "SELECT THREAD_ID, LOCK_MODE, TABLE_SCHEMA, TABLE_NAME \
     FROM information_schema.METADATA_LOCK_INFO WHERE TABLE_NAME <> ''";

/// One row of the nine-column statements as an edge; `None` when a side
/// has no connection id (a background thread).
pub fn edge_from_row(row: &TextRow) -> Option<WaitEdge> {
    let waiter = row.u64(0);
    let blocker = row.u64(1);
    if waiter == 0 || blocker == 0 {
        return None;
    }
    let kind = row.text(2).to_ascii_uppercase();
    Some(WaitEdge {
        waiter,
        blocker,
        wait: LockWait {
            kind: if kind.is_empty() {
                "RECORD".into()
            } else {
                kind
            },
            mode: row.text(3),
            holder_mode: row.text(4),
            table: row.text(5),
            index: row.text(6),
            data: row.text(7),
            wait_ms: row.u64(8),
        },
    })
}

/// One granted metadata lock (MariaDB's plugin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdlHold {
    /// The holder's connection id.
    pub holder: u64,
    /// `MDL_SHARED_READ`, ...
    pub mode: String,
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
}

/// A row of [`MARIADB_MDL_SQL`].
pub fn mdl_hold_from_row(row: &TextRow) -> MdlHold {
    MdlHold {
        holder: row.u64(0),
        mode: row.text(1),
        schema: row.text(2),
        table: row.text(3),
    }
}

/// MariaDB's metadata lock edges: each session in [`MDL_WAIT_STATE`] waits
/// on every other session holding a lock on a table its query names (by
/// name, or `schema.table`, as a whole word, any case).
pub fn mariadb_mdl_edges(sessions: &[Session], holds: &[MdlHold]) -> Vec<WaitEdge> {
    let mut edges = Vec::new();
    // One edge per (waiter, holder): the first table that links them.
    let mut seen: BTreeMap<(u64, u64), ()> = BTreeMap::new();
    for waiter in sessions.iter().filter(|s| s.state == MDL_WAIT_STATE) {
        let words = words_lower(&waiter.query);
        for hold in holds.iter().filter(|h| h.holder != waiter.id) {
            let table = hold.table.to_ascii_lowercase();
            if !words.contains(&table) {
                continue;
            }
            if seen.insert((waiter.id, hold.holder), ()).is_some() {
                continue;
            }
            edges.push(WaitEdge {
                waiter: waiter.id,
                blocker: hold.holder,
                wait: LockWait {
                    kind: "METADATA".into(),
                    // MariaDB does not say what the waiter asks for.
                    mode: String::new(),
                    holder_mode: hold.mode.clone(),
                    table: format!("`{}`.`{}`", hold.schema, hold.table),
                    index: String::new(),
                    data: String::new(),
                    wait_ms: waiter.time_ms,
                },
            });
        }
    }
    edges
}

/// The identifier words of a query, lower case, quotes removed; `a.b`
/// gives `a` and `b`.
fn words_lower(query: &str) -> Vec<String> {
    query
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MySQL 8: rows as `performance_schema.data_lock_waits` joined to
    /// `data_locks` and `threads` give them, recorded from the layouts the
    /// MySQL 8.0 reference manual documents (no MySQL server runs here).
    #[test]
    fn mysql8_data_lock_rows_become_edges_with_connection_ids() {
        let rows = [
            TextRow::of(&[
                Some("12"),
                Some("11"),
                Some("RECORD"),
                Some("X,REC_NOT_GAP"),
                Some("X,REC_NOT_GAP"),
                Some("`shop`.`orders`"),
                Some("PRIMARY"),
                Some("1"),
                Some("15250"),
            ]),
            // A background thread (no PROCESSLIST_ID) is skipped.
            TextRow::of(&[
                None,
                Some("11"),
                Some("TABLE"),
                Some("IX"),
                Some("X"),
                Some("`shop`.`orders`"),
                None,
                None,
                Some("5"),
            ]),
        ];
        let edges: Vec<WaitEdge> = rows.iter().filter_map(edge_from_row).collect();
        assert_eq!(edges.len(), 1);
        assert_eq!(edges[0].waiter, 12);
        assert_eq!(edges[0].blocker, 11);
        assert_eq!(edges[0].wait.mode, "X,REC_NOT_GAP");
        assert_eq!(edges[0].wait.index, "PRIMARY");
        assert_eq!(edges[0].wait.wait_ms, 15250);
    }

    #[test]
    fn every_statement_reads_the_tables_of_its_flavor() {
        let maria = innodb_sql(LockTables::InnoDbInfoSchema);
        assert!(maria.contains("INNODB_LOCK_WAITS") && maria.contains("INNODB_LOCKS"));
        let mysql = innodb_sql(LockTables::PerfSchemaDataLocks);
        assert!(mysql.contains("data_lock_waits") && mysql.contains("performance_schema.threads"));
        assert!(MYSQL_MDL_SQL.contains("metadata_locks"));
    }

    #[test]
    fn mariadb_metadata_waiters_link_to_holders_of_the_tables_they_name() {
        let session = |id: u64, state: &str, query: &str| Session {
            id,
            state: state.into(),
            query: query.into(),
            time_ms: 3000,
            ..Session::default()
        };
        let sessions = [
            session(5, "", ""),
            session(
                6,
                MDL_WAIT_STATE,
                "ALTER TABLE shop.Orders ADD COLUMN x INT",
            ),
            session(7, MDL_WAIT_STATE, "SELECT * FROM `orders`"),
            session(8, MDL_WAIT_STATE, "SELECT * FROM customers"),
        ];
        let hold = |holder: u64, mode: &str, table: &str| MdlHold {
            holder,
            mode: mode.into(),
            schema: "shop".into(),
            table: table.into(),
        };
        let holds = [
            hold(5, "MDL_SHARED_READ", "orders"),
            hold(6, "MDL_SHARED_UPGRADABLE", "orders"),
            hold(5, "MDL_SHARED_READ", "order_items"),
        ];
        let edges = mariadb_mdl_edges(&sessions, &holds);
        let pairs: Vec<(u64, u64)> = edges.iter().map(|e| (e.waiter, e.blocker)).collect();
        assert_eq!(pairs, [(6, 5), (7, 5), (7, 6)]);
        assert_eq!(edges[0].wait.kind, "METADATA");
        assert_eq!(edges[0].wait.holder_mode, "MDL_SHARED_READ");
        assert_eq!(edges[0].wait.table, "`shop`.`orders`");
        assert_eq!(edges[0].wait.wait_ms, 3000);
    }
}
