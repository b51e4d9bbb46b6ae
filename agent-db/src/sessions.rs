//! The sessions of the server: the statement that reads them on each
//! flavour (MariaDB's extended `information_schema.PROCESSLIST`, MySQL 8's
//! `performance_schema.processlist`, MySQL 5.7's `information_schema`), and
//! the mapping of its rows into [`Session`]s, with the query text cut at
//! `db.query.max` and literals masked.
//!
//! Every flavour's statement returns the same columns in the same order
//! ([`col`]), so one mapping serves all. One statement per cycle: the open
//! transaction (`INNODB_TRX`) is joined in, and sleeping sessions are left
//! out in the server unless they hold a transaction open (an idle blocker
//! is what a DBA looks for). Never reads a query text longer than needed:
//! the server cuts it (`LEFT`), the agent only trims to whole characters.

use crate::connection::TextRow;
use crate::flavor::SessionTable;
use crate::mask::{cut, mask_literals};
use crate::snapshot::{Session, Transaction};

/// The column positions of the session statement.
pub mod col {
    /// Connection id.
    pub const ID: usize = 0;
    /// User.
    pub const USER: usize = 1;
    /// Client host.
    pub const HOST: usize = 2;
    /// Default database.
    pub const DB: usize = 3;
    /// Command.
    pub const COMMAND: usize = 4;
    /// State.
    pub const STATE: usize = 5;
    /// Time in the command, ms.
    pub const TIME_MS: usize = 6;
    /// The query text, cut by the server.
    pub const INFO: usize = 7;
    /// The query text's full length in bytes.
    pub const INFO_BYTES: usize = 8;
    /// MariaDB stage.
    pub const STAGE: usize = 9;
    /// MariaDB stages in all.
    pub const MAX_STAGE: usize = 10;
    /// MariaDB progress, percent.
    pub const PROGRESS: usize = 11;
    /// MariaDB memory used.
    pub const MEMORY: usize = 12;
    /// InnoDB transaction id.
    pub const TRX_ID: usize = 13;
    /// Transaction state.
    pub const TRX_STATE: usize = 14;
    /// Transaction age, ms.
    pub const TRX_AGE_MS: usize = 15;
    /// Rows locked.
    pub const TRX_ROWS_LOCKED: usize = 16;
    /// Rows modified.
    pub const TRX_ROWS_MODIFIED: usize = 17;
    /// Tables locked.
    pub const TRX_TABLES_LOCKED: usize = 18;
    /// The last statement (MySQL's performance_schema), cut by the server.
    pub const LAST_QUERY: usize = 19;
}

/// What to read and how to show it.
#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    /// Longest query text, bytes.
    pub query_max: usize,
    /// Mask literals.
    pub mask_literals: bool,
    /// Report sleeping sessions without a transaction too.
    pub idle: bool,
    /// The transaction columns can be read (the user has PROCESS).
    pub with_trx: bool,
}

/// The statement that reads the sessions on `table`.
pub fn sql(table: SessionTable, o: SessionOptions) -> String {
    // LEFT counts characters; a character is at least one byte, so this
    // is never shorter than the byte limit.
    let n = o.query_max;
    let trx_join = if o.with_trx {
        "LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID"
    } else {
        "LEFT JOIN (SELECT NULL AS trx_id, NULL AS trx_state, NULL AS trx_started, \
         NULL AS trx_rows_locked, NULL AS trx_rows_modified, NULL AS trx_tables_locked, \
         NULL AS trx_mysql_thread_id) t ON FALSE"
    };
    let trx_cols = "t.trx_id, t.trx_state, \
         TIMESTAMPDIFF(MICROSECOND, t.trx_started, NOW(6)) DIV 1000, \
         t.trx_rows_locked, t.trx_rows_modified, t.trx_tables_locked";
    let filter = if o.idle {
        "p.ID <> CONNECTION_ID()".to_string()
    } else {
        "p.ID <> CONNECTION_ID() AND (p.COMMAND NOT IN ('Sleep', 'Daemon') OR t.trx_id IS NOT NULL)"
            .to_string()
    };
    match table {
        SessionTable::MariaDbProcesslist => format!(
            "SELECT p.ID, p.USER, p.HOST, p.DB, p.COMMAND, p.STATE, ROUND(p.TIME_MS), \
             LEFT(p.INFO, {n}), LENGTH(p.INFO), p.STAGE, p.MAX_STAGE, p.PROGRESS, p.MEMORY_USED, \
             {trx_cols}, NULL \
             FROM information_schema.PROCESSLIST p {trx_join} WHERE {filter}"
        ),
        SessionTable::PerfSchemaProcesslist => format!(
            "SELECT p.ID, p.USER, p.HOST, p.DB, p.COMMAND, p.STATE, p.TIME * 1000, \
             LEFT(p.INFO, {n}), LENGTH(p.INFO), NULL, NULL, NULL, NULL, \
             {trx_cols}, \
             IF(p.INFO IS NULL AND t.trx_id IS NOT NULL, \
                (SELECT LEFT(s.SQL_TEXT, {n}) FROM performance_schema.threads th \
                 JOIN performance_schema.events_statements_current s ON s.THREAD_ID = th.THREAD_ID \
                 WHERE th.PROCESSLIST_ID = p.ID ORDER BY s.EVENT_ID DESC LIMIT 1), NULL) \
             FROM performance_schema.processlist p {trx_join} WHERE {filter}"
        ),
        SessionTable::InfoSchemaProcesslist => format!(
            "SELECT p.ID, p.USER, p.HOST, p.DB, p.COMMAND, p.STATE, p.TIME * 1000, \
             LEFT(p.INFO, {n}), LENGTH(p.INFO), NULL, NULL, NULL, NULL, \
             {trx_cols}, NULL \
             FROM information_schema.PROCESSLIST p {trx_join} WHERE {filter}"
        ),
    }
}

/// The statement that reads the sessions `ids` (those the lock tree names
/// that the filtered list left out: a sleeping holder), same columns.
pub fn sql_for_ids(table: SessionTable, o: SessionOptions, ids: &[u64]) -> String {
    let all = sql(table, SessionOptions { idle: true, ..o });
    let list: Vec<String> = ids.iter().map(u64::to_string).collect();
    format!("{all} AND p.ID IN ({})", list.join(", "))
}

/// A query text as shown: cut at `max` bytes on a character boundary,
/// masked when asked. `full_bytes` is the server's length of the whole text.
pub fn show_query(text: &str, full_bytes: u64, o: &SessionOptions) -> (String, bool) {
    let (kept, cut_here) = cut(text, o.query_max);
    let was_cut = cut_here || full_bytes > kept.len() as u64;
    // Control bytes other than white space would garble a terminal.
    let clean: String = kept
        .chars()
        .map(|c| {
            if c.is_control() && !matches!(c, '\n' | '\t' | '\r') {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect();
    let shown = if o.mask_literals {
        mask_literals(&clean)
    } else {
        clean
    };
    (shown, was_cut)
}

/// One row of [`sql`] as a session.
pub fn session_from_row(row: &TextRow, o: &SessionOptions) -> Session {
    let (query, query_cut) = show_query(&row.text(col::INFO), row.u64(col::INFO_BYTES), o);
    let max_stage = row.u64(col::MAX_STAGE);
    let trx = (!row.is_null(col::TRX_ID)).then(|| {
        let idle = query.is_empty();
        let last = row.text(col::LAST_QUERY);
        Transaction {
            id: row.text(col::TRX_ID),
            state: row.text(col::TRX_STATE),
            age_ms: row.u64(col::TRX_AGE_MS),
            rows_locked: row.u64(col::TRX_ROWS_LOCKED),
            rows_modified: row.u64(col::TRX_ROWS_MODIFIED),
            tables_locked: row.u64(col::TRX_TABLES_LOCKED),
            idle_ms: if idle { row.u64(col::TIME_MS) } else { 0 },
            last_query: if idle && !last.is_empty() {
                show_query(&last, last.len() as u64, o).0
            } else {
                String::new()
            },
        }
    });
    Session {
        id: row.u64(col::ID),
        user: row.text(col::USER),
        host: row.text(col::HOST),
        db: row.text(col::DB),
        command: row.text(col::COMMAND),
        state: row.text(col::STATE),
        time_ms: row.u64(col::TIME_MS),
        query,
        query_cut,
        trx,
        stage: if max_stage > 0 {
            format!("{} of {max_stage}", row.u64(col::STAGE))
        } else {
            String::new()
        },
        progress_pct: row.f64(col::PROGRESS).clamp(0.0, 100.0),
        memory_bytes: row.u64(col::MEMORY),
    }
}

/// Keeps at most `max` sessions, longest running first, but always those
/// `keep` names (the lock tree's); returns how many were left out.
pub fn limit(sessions: &mut Vec<Session>, max: usize, keep: impl Fn(u64) -> bool) -> u32 {
    sessions.sort_by(|a, b| b.time_ms.cmp(&a.time_ms).then(a.id.cmp(&b.id)));
    if sessions.len() <= max {
        return 0;
    }
    let before = sessions.len();
    let mut kept = 0;
    sessions.retain(|s| {
        if keep(s.id) {
            return true;
        }
        kept += 1;
        kept <= max
    });
    (before - sessions.len()) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> SessionOptions {
        SessionOptions {
            query_max: 32,
            mask_literals: true,
            idle: false,
            with_trx: true,
        }
    }

    #[test]
    fn a_mariadb_row_becomes_a_session_with_its_transaction() {
        let row = TextRow::of(&[
            Some("17"),
            Some("app"),
            Some("10.0.0.5:51234"),
            Some("shop"),
            Some("Query"),
            Some("Updating"),
            Some("12034"),
            Some("UPDATE orders SET state = 'paid' WHERE id = 42"),
            Some("47"),
            Some("1"),
            Some("2"),
            Some("37.5"),
            Some("81920"),
            Some("1234"),
            Some("LOCK WAIT"),
            Some("15000"),
            Some("3"),
            Some("1"),
            Some("1"),
            None,
        ]);
        let s = session_from_row(&row, &options());
        assert_eq!(s.id, 17);
        assert_eq!(s.host, "10.0.0.5:51234");
        assert_eq!(s.time_ms, 12034);
        assert_eq!(s.query, "UPDATE orders SET state = #");
        assert!(s.query_cut);
        assert_eq!(s.stage, "1 of 2");
        assert_eq!(s.progress_pct, 37.5);
        assert_eq!(s.memory_bytes, 81920);
        let trx = s.trx.expect("a transaction");
        assert_eq!(trx.state, "LOCK WAIT");
        assert_eq!(trx.age_ms, 15000);
        assert_eq!(trx.rows_locked, 3);
        assert_eq!(trx.idle_ms, 0);
    }

    #[test]
    fn an_idle_session_in_a_transaction_shows_its_idle_time_and_last_statement() {
        let mut values: Vec<Option<&str>> = vec![None; 20];
        values[col::ID] = Some("9");
        values[col::COMMAND] = Some("Sleep");
        values[col::TIME_MS] = Some("61000");
        values[col::TRX_ID] = Some("777");
        values[col::TRX_STATE] = Some("RUNNING");
        values[col::LAST_QUERY] = Some("UPDATE t SET v = 1 WHERE id = 7");
        let s = session_from_row(&TextRow::of(&values), &options());
        let trx = s.trx.expect("trx");
        assert_eq!(trx.idle_ms, 61000);
        assert_eq!(trx.last_query, "UPDATE t SET v = # WHERE id = #");
        assert_eq!(s.query, "");
    }

    #[test]
    fn binary_and_huge_texts_are_cut_and_made_printable() {
        let o = SessionOptions {
            mask_literals: false,
            query_max: 64,
            ..options()
        };
        let binary =
            String::from_utf8_lossy(b"INSERT INTO b VALUES ('\x00\x01\xff\xfe')").into_owned();
        let (shown, was_cut) = show_query(&binary, 29, &o);
        assert!(!shown.contains('\0'), "{shown:?}");
        assert!(!was_cut);
        let huge = "x".repeat(100);
        let (shown, was_cut) = show_query(&huge, 10 << 20, &o);
        assert_eq!(shown.len(), 64);
        assert!(was_cut);
    }

    #[test]
    fn the_limit_keeps_the_longest_running_and_every_lock_tree_session() {
        let mut sessions: Vec<Session> = (1..=5)
            .map(|id| Session {
                id,
                time_ms: id * 1000,
                ..Session::default()
            })
            .collect();
        let omitted = limit(&mut sessions, 2, |id| id == 1);
        assert_eq!(omitted, 2);
        let ids: Vec<u64> = sessions.iter().map(|s| s.id).collect();
        assert_eq!(ids, [5, 4, 1]);
    }

    #[test]
    fn every_flavor_reads_the_same_columns() {
        for table in [
            SessionTable::MariaDbProcesslist,
            SessionTable::PerfSchemaProcesslist,
            SessionTable::InfoSchemaProcesslist,
        ] {
            let sql = sql(table, options());
            assert!(sql.contains("LEFT(p.INFO, 32)"), "{sql}");
            assert!(sql.contains("INNODB_TRX"), "{sql}");
            assert!(sql.contains("'Sleep'"), "{sql}");
        }
        let no_process = sql(
            SessionTable::MariaDbProcesslist,
            SessionOptions {
                with_trx: false,
                idle: true,
                ..options()
            },
        );
        assert!(!no_process.contains("INNODB_TRX"), "{no_process}");
        assert!(!no_process.contains("'Sleep'"), "{no_process}");
    }
}
