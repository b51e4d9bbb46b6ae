//! The agent's one connection to the server: connect and log in within
//! `db.connect_timeout`, set up the session (statement time limit in the
//! server's dialect, `lock_wait_timeout`), run text statements each bounded
//! on the wire, and as the last resort `KILL QUERY` our own statement from a
//! second, short-lived connection. Reconnection with backoff is
//! [`Backoff`]'s, driven by the loop.
//!
//! Invariants: at most two connections at any moment (the second only
//! while it kills); every network wait has a timeout; a statement whose wait
//! timed out leaves the connection unusable (`Db` is dropped and a new one
//! made), never half-read; the password is never in an error or a log line.

use std::fmt;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlSslMode};
use sqlx::{AssertSqlSafe, Connection, Executor, Row};
use tokio::time::timeout;

use crate::flavor::Flavor;
use crate::settings::{Address, ConnectSettings, TlsMode};

/// MySQL/MariaDB error numbers the agent tells apart.
mod errno {
    pub(super) const ACCESS_DENIED: u16 = 1045;
    pub(super) const DB_ACCESS_DENIED: u16 = 1044;
    pub(super) const SPECIFIC_ACCESS_DENIED: u16 = 1227;
    pub(super) const TABLE_ACCESS_DENIED: u16 = 1142;
    pub(super) const NO_SUCH_TABLE: u16 = 1146;
    pub(super) const UNKNOWN_TABLE: u16 = 1109;
    pub(super) const MARIADB_STATEMENT_TIMEOUT: u16 = 1969;
    pub(super) const MYSQL_EXECUTION_TIMEOUT: u16 = 3024;
    pub(super) const QUERY_INTERRUPTED: u16 = 1317;
    pub(super) const HOST_NOT_PRIVILEGED: u16 = 1130;
    pub(super) const TOO_MANY_CONNECTIONS: u16 = 1040;
}

/// What went wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No TCP connection or socket (refused, no route, no such file).
    #[error("cannot connect to {address}: {reason}")]
    Unreachable {
        /// The server.
        address: String,
        /// The system's words.
        reason: String,
    },
    /// Connecting or logging in took longer than `db.connect_timeout`.
    #[error(
        "{address} did not complete the login within {timeout:?} (the server is hung or overloaded, or a firewall drops packets)"
    )]
    ConnectTimeout {
        /// The server.
        address: String,
        /// The bound.
        timeout: Duration,
    },
    /// Wrong user or password, or this host may not log in.
    #[error(
        "the server refused the login of '{user}': {reason} (check db.user, db.password and the user's allowed hosts)"
    )]
    AccessDenied {
        /// The user.
        user: String,
        /// The server's words.
        reason: String,
    },
    /// A privilege the statement needs is missing.
    #[error("'{what}' needs a privilege the user lacks: {reason}")]
    Privilege {
        /// The statement's name.
        what: &'static str,
        /// The server's words.
        reason: String,
    },
    /// A table this server does not have.
    #[error("'{what}' reads a table this server does not have: {reason}")]
    NoTable {
        /// The statement's name.
        what: &'static str,
        /// The server's words.
        reason: String,
    },
    /// The statement passed its time limit (in the server or on the wire).
    #[error("'{what}' took longer than {timeout:?} and was stopped")]
    StatementTimeout {
        /// The statement's name.
        what: &'static str,
        /// The bound.
        timeout: Duration,
    },
    /// The server stopped the statement at its own limit
    /// (`max_statement_time`, `max_execution_time`); the connection is fine.
    #[error("'{what}' passed the server's statement limit ({timeout:?}) and was stopped by it")]
    ServerTimeout {
        /// The statement's name.
        what: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// The server refused the statement (syntax, a missing feature, ...);
    /// the connection is fine.
    #[error("the server refused '{what}': {reason}")]
    Refused {
        /// The statement's name.
        what: &'static str,
        /// The server's words.
        reason: String,
    },
    /// TLS could not be set up.
    #[error("TLS to {address} failed: {reason}")]
    Tls {
        /// The server.
        address: String,
        /// Why.
        reason: String,
    },
    /// Anything else the server or the driver said.
    #[error("'{what}' failed: {reason}")]
    Other {
        /// The statement's name (`connect` for the login).
        what: &'static str,
        /// The words.
        reason: String,
    },
}

impl DbError {
    /// Whether the connection is gone or unusable after this error (as
    /// opposed to one statement refused on a healthy connection).
    pub fn breaks_connection(&self) -> bool {
        !matches!(
            self,
            DbError::Privilege { .. }
                | DbError::NoTable { .. }
                | DbError::ServerTimeout { .. }
                | DbError::Refused { .. }
        )
    }
}

/// The connection's options, built from the settings. The password goes
/// into sqlx's options only, never into a string that is shown.
fn options(s: &ConnectSettings) -> MySqlConnectOptions {
    let mut o = MySqlConnectOptions::new()
        .username(&s.user)
        .charset("utf8mb4")
        // No `SET sql_mode, time_zone` round trip after login: the agent
        // sets up its session itself, in one statement.
        .pipes_as_concat(false)
        .no_engine_substitution(false)
        .timezone(None)
        .statement_cache_capacity(0);
    if !s.password.0.is_empty() {
        o = o.password(&s.password.0);
    }
    o = match &s.address {
        Address::Tcp { host, port } => o.host(host).port(*port),
        Address::Socket(path) => o.socket(path),
    };
    let mode = match s.tls.mode {
        TlsMode::Disabled => MySqlSslMode::Disabled,
        TlsMode::Preferred => MySqlSslMode::Preferred,
        TlsMode::Required => MySqlSslMode::Required,
        TlsMode::VerifyCa => MySqlSslMode::VerifyCa,
        TlsMode::VerifyIdentity => MySqlSslMode::VerifyIdentity,
    };
    o = o.ssl_mode(mode);
    if let Some(ca) = &s.tls.ca {
        o = o.ssl_ca(ca);
    }
    if let (Some(cert), Some(key)) = (&s.tls.cert, &s.tls.key) {
        o = o.ssl_client_cert(cert).ssl_client_key(key);
    }
    o
}

/// Classifies a driver error; `what` names the statement.
fn classify(e: sqlx::Error, what: &'static str, s: &ConnectSettings) -> DbError {
    let address = s.address.to_string();
    let redact = |text: String| {
        if s.password.0.len() >= 4 {
            text.replace(&s.password.0, "****")
        } else {
            text
        }
    };
    match e {
        sqlx::Error::Database(db) => {
            let number = db
                .try_downcast_ref::<MySqlDatabaseError>()
                .map_or(0, MySqlDatabaseError::number);
            let reason = redact(db.message().to_string());
            match number {
                errno::ACCESS_DENIED | errno::HOST_NOT_PRIVILEGED | errno::DB_ACCESS_DENIED
                    if what == "connect" =>
                {
                    DbError::AccessDenied {
                        user: s.user.clone(),
                        reason,
                    }
                }
                errno::SPECIFIC_ACCESS_DENIED
                | errno::TABLE_ACCESS_DENIED
                | errno::ACCESS_DENIED
                | errno::DB_ACCESS_DENIED => DbError::Privilege { what, reason },
                errno::NO_SUCH_TABLE | errno::UNKNOWN_TABLE => DbError::NoTable { what, reason },
                errno::MARIADB_STATEMENT_TIMEOUT
                | errno::MYSQL_EXECUTION_TIMEOUT
                | errno::QUERY_INTERRUPTED => DbError::ServerTimeout {
                    what,
                    timeout: s.statement_timeout,
                },
                errno::TOO_MANY_CONNECTIONS => DbError::Other {
                    what,
                    reason: format!(
                        "{reason} (raise max_connections, or reserve a slot for monitoring)"
                    ),
                },
                _ if what == "connect" => DbError::Other { what, reason },
                _ => DbError::Refused { what, reason },
            }
        }
        sqlx::Error::Io(io) if what == "connect" => DbError::Unreachable {
            address,
            reason: io.to_string(),
        },
        sqlx::Error::Tls(t) => DbError::Tls {
            address,
            reason: redact(t.to_string()),
        },
        other => DbError::Other {
            what,
            reason: redact(other.to_string()),
        },
    }
}

/// One row of text values (the text protocol gives every value as text).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextRow(pub Vec<Option<Vec<u8>>>);

impl TextRow {
    /// Column `i` as text (lossy for bytes that are not UTF-8), or "".
    pub fn text(&self, i: usize) -> String {
        self.0
            .get(i)
            .and_then(Option::as_ref)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }

    /// Column `i` as an unsigned number, 0 when NULL or not a number.
    pub fn u64(&self, i: usize) -> u64 {
        let text = self.text(i);
        let text = text.trim();
        text.parse::<u64>()
            .ok()
            .or_else(|| {
                text.parse::<f64>()
                    .ok()
                    .filter(|v| *v >= 0.0)
                    .map(|v| v as u64)
            })
            .unwrap_or(0)
    }

    /// Column `i` as a float, 0 when NULL or not a number.
    pub fn f64(&self, i: usize) -> f64 {
        self.text(i).trim().parse().unwrap_or(0.0)
    }

    /// Whether column `i` is NULL.
    pub fn is_null(&self, i: usize) -> bool {
        self.0.get(i).is_none_or(Option::is_none)
    }

    /// A row from text values, for tests of mappings over recorded result sets.
    pub fn of(values: &[Option<&str>]) -> TextRow {
        TextRow(
            values
                .iter()
                .map(|v| v.map(|s| s.as_bytes().to_vec()))
                .collect(),
        )
    }
}

/// A logged-in session with the server, set up for monitoring.
pub struct Db {
    conn: MySqlConnection,
    settings: ConnectSettings,
    /// The server as detected at login.
    pub flavor: Flavor,
    /// Our connection id (what `KILL QUERY` takes).
    pub connection_id: u64,
    /// `metadata_lock_info` is loaded (MariaDB).
    pub mdl_plugin: bool,
    /// Statements sent since login.
    pub statements: u64,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("address", &self.settings.address.to_string())
            .field("flavor", &self.flavor)
            .field("connection_id", &self.connection_id)
            .finish_non_exhaustive()
    }
}

/// How long to wait for an answer on the wire: the server's own limit plus
/// a margin for the network and the rows.
fn wire_timeout(s: &ConnectSettings) -> Duration {
    s.statement_timeout + Duration::from_secs(1)
}

impl Db {
    /// Connects, logs in, detects the server and sets up the session, all
    /// within `db.connect_timeout` (plus one statement time for the setup).
    pub async fn connect(settings: &ConnectSettings) -> Result<Db, DbError> {
        let address = settings.address.to_string();
        let conn = match timeout(
            settings.connect_timeout,
            MySqlConnection::connect_with(&options(settings)),
        )
        .await
        {
            Err(_) => {
                return Err(DbError::ConnectTimeout {
                    address,
                    timeout: settings.connect_timeout,
                });
            }
            Ok(Err(e)) => return Err(classify(e, "connect", settings)),
            Ok(Ok(c)) => c,
        };
        let mut db = Db {
            conn,
            settings: settings.clone(),
            flavor: Flavor::detect("", ""),
            connection_id: 0,
            mdl_plugin: false,
            statements: 0,
        };
        let rows = db
            .rows(
                "identify",
                "SELECT VERSION(), @@version_comment, CONNECTION_ID(), \
                 (SELECT COUNT(*) FROM information_schema.PLUGINS \
                  WHERE PLUGIN_NAME = 'METADATA_LOCK_INFO' AND PLUGIN_STATUS = 'ACTIVE')",
            )
            .await?;
        let row = rows.first().cloned().unwrap_or_default();
        db.flavor = Flavor::detect(&row.text(0), &row.text(1));
        db.connection_id = row.u64(2);
        db.mdl_plugin = row.u64(3) > 0;
        let limit_ms = settings.statement_timeout.as_millis() as u64;
        // lock_wait_timeout is in whole seconds, at least 1.
        let lock_wait = settings.statement_timeout.as_secs().max(1);
        let mut setup = format!(
            "SET SESSION lock_wait_timeout = {lock_wait}, SESSION innodb_lock_wait_timeout = {lock_wait}"
        );
        if let Some(limit) = db.flavor.statement_limit(limit_ms) {
            setup.push_str(", ");
            setup.push_str(limit.trim_start_matches("SET "));
        }
        db.execute("session setup", &setup).await?;
        Ok(db)
    }

    /// Runs `sql` (text protocol, never prepared) and returns its rows;
    /// `what` names it in errors. On a wire timeout our statement is killed
    /// from a second connection and this connection must be dropped.
    pub async fn rows(&mut self, what: &'static str, sql: &str) -> Result<Vec<TextRow>, DbError> {
        self.statements += 1;
        let bound = wire_timeout(&self.settings);
        let fetched = timeout(bound, self.conn.fetch_all(AssertSqlSafe(sql.to_string()))).await;
        match fetched {
            Ok(Ok(rows)) => Ok(rows
                .iter()
                .map(|row| {
                    TextRow(
                        (0..row.len())
                            .map(|i| {
                                row.try_get_unchecked::<Option<Vec<u8>>, _>(i)
                                    .ok()
                                    .flatten()
                            })
                            .collect(),
                    )
                })
                .collect()),
            Ok(Err(e)) => Err(classify(e, what, &self.settings)),
            Err(_) => {
                self.kill_own_query().await;
                Err(DbError::StatementTimeout {
                    what,
                    timeout: bound,
                })
            }
        }
    }

    /// Runs a statement that returns no rows.
    pub async fn execute(&mut self, what: &'static str, sql: &str) -> Result<(), DbError> {
        self.rows(what, sql).await.map(|_| ())
    }

    /// The last resort when the server ignored its own limit: a second
    /// connection, `KILL QUERY <our id>`, closed at once; all within the
    /// connect timeout. Failing is only logged: the caller drops this
    /// connection either way.
    async fn kill_own_query(&mut self) {
        let id = self.connection_id;
        if id == 0 {
            return;
        }
        let settings = self.settings.clone();
        let killed = timeout(settings.connect_timeout, async {
            let mut second = MySqlConnection::connect_with(&options(&settings)).await?;
            second
                .execute(AssertSqlSafe(format!("KILL QUERY {id}")))
                .await?;
            second.close().await
        })
        .await;
        match killed {
            Ok(Ok(())) => tracing::warn!(
                connection_id = id,
                "A statement of the agent outlived its time limit; killed it from a second connection."
            ),
            Ok(Err(e)) => tracing::warn!(
                connection_id = id,
                error = %classify(e, "kill query", &settings),
                "A statement of the agent outlived its time limit and could not be killed."
            ),
            Err(_) => tracing::warn!(
                connection_id = id,
                "A statement of the agent outlived its time limit; the server did not answer the kill either."
            ),
        }
    }

    /// Closes the connection politely, bounded.
    pub async fn close(self) {
        let _ = timeout(Duration::from_secs(1), self.conn.close()).await;
    }
}

/// When to try connecting again: at once the first time, then after the
/// interval doubled at each failure, up to a minute.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    failures: u32,
    next: Option<tokio::time::Instant>,
}

impl Backoff {
    /// Starting from `base` (the interval).
    pub fn new(base: Duration) -> Backoff {
        Backoff {
            base,
            failures: 0,
            next: None,
        }
    }

    /// Whether an attempt is due at `now`.
    pub fn due(&self, now: tokio::time::Instant) -> bool {
        self.next.is_none_or(|next| now >= next)
    }

    /// An attempt failed at `now`; returns the wait before the next one.
    pub fn failed(&mut self, now: tokio::time::Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let factor = 1u32 << (self.failures - 1).min(6);
        let wait = (self.base * factor)
            .min(Duration::from_secs(60))
            .max(self.base);
        // The first retry comes at the next cycle.
        let wait = if self.failures == 1 { self.base } else { wait };
        self.next = Some(now + wait - Duration::from_millis(100).min(wait));
        wait
    }

    /// An attempt succeeded.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.next = None;
    }

    /// Failures in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(5));
        let t = tokio::time::Instant::now();
        assert!(b.due(t));
        let waits: Vec<u64> = (0..6).map(|_| b.failed(t).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert!(!b.due(t + Duration::from_secs(30)));
        assert!(b.due(t + Duration::from_secs(60)));
        b.succeeded();
        assert!(b.due(t));
        assert_eq!(b.failures(), 0);
    }

    #[test]
    fn text_rows_read_numbers_and_nulls() {
        let row = TextRow::of(&[Some("42"), None, Some("1.5"), Some("abc")]);
        assert_eq!(row.u64(0), 42);
        assert_eq!(row.u64(1), 0);
        assert!(row.is_null(1));
        assert_eq!(row.f64(2), 1.5);
        assert_eq!(row.u64(2), 1);
        assert_eq!(row.text(3), "abc");
        assert_eq!(row.text(9), "");
    }
}
