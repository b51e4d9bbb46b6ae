//! Which server this is (MariaDB or MySQL, and its version), and so which
//! tables hold its sessions and locks. Pure: parsed from `SELECT VERSION()`
//! and `@@version_comment`; it never queries anything itself.

use std::fmt;

/// The server family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// MariaDB (10.x, 11.x).
    MariaDb,
    /// MySQL (5.7, 8.x, and Percona Server).
    MySql,
}

/// The server as detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flavor {
    /// Family.
    pub family: Family,
    /// Major, minor, patch.
    pub version: (u32, u32, u32),
    /// The version string as the server gives it.
    pub version_text: String,
}

/// Where the sessions are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionTable {
    /// MariaDB's `information_schema.PROCESSLIST` with `TIME_MS`, `STAGE`,
    /// `PROGRESS`, `MEMORY_USED`.
    MariaDbProcesslist,
    /// MySQL 8's `performance_schema.processlist` (no global mutex).
    PerfSchemaProcesslist,
    /// MySQL 5.7's `information_schema.PROCESSLIST`.
    InfoSchemaProcesslist,
}

/// Where the lock waits are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockTables {
    /// `information_schema.INNODB_LOCK_WAITS` + `INNODB_LOCKS` + `INNODB_TRX`
    /// (MariaDB, MySQL 5.7).
    InnoDbInfoSchema,
    /// `performance_schema.data_lock_waits` + `data_locks` (MySQL 8).
    PerfSchemaDataLocks,
}

impl Flavor {
    /// Detects the flavour from `VERSION()` and `@@version_comment`.
    pub fn detect(version: &str, comment: &str) -> Flavor {
        let lower = format!("{version} {comment}").to_ascii_lowercase();
        let family = if lower.contains("mariadb") {
            Family::MariaDb
        } else {
            Family::MySql
        };
        // MariaDB 10 once announced itself as "5.5.5-10.x.y-MariaDB".
        let text = version.strip_prefix("5.5.5-").unwrap_or(version);
        let mut numbers = text
            .split(|c: char| !c.is_ascii_digit())
            .take(3)
            .map(|n| n.parse::<u32>().unwrap_or(0));
        let major = numbers.next().unwrap_or(0);
        let minor = numbers.next().unwrap_or(0);
        let patch = numbers.next().unwrap_or(0);
        Flavor {
            family,
            version: (major, minor, patch),
            version_text: version.to_string(),
        }
    }

    /// `mariadb` or `mysql`, as on the wire.
    pub fn name(&self) -> &'static str {
        match self.family {
            Family::MariaDb => "mariadb",
            Family::MySql => "mysql",
        }
    }

    /// Whether this server is one the agent knows (MariaDB 10+, MySQL 5.7+).
    pub fn supported(&self) -> bool {
        match self.family {
            Family::MariaDb => self.version.0 >= 10,
            Family::MySql => self.version >= (5, 7, 0),
        }
    }

    /// MySQL 8.0.22 added `performance_schema.processlist`.
    pub fn session_table(&self) -> SessionTable {
        match self.family {
            Family::MariaDb => SessionTable::MariaDbProcesslist,
            Family::MySql if self.version >= (8, 0, 22) => SessionTable::PerfSchemaProcesslist,
            Family::MySql => SessionTable::InfoSchemaProcesslist,
        }
    }

    /// MySQL 8 dropped `INNODB_LOCKS` for `performance_schema.data_locks`.
    pub fn lock_tables(&self) -> LockTables {
        match self.family {
            Family::MySql if self.version.0 >= 8 => LockTables::PerfSchemaDataLocks,
            _ => LockTables::InnoDbInfoSchema,
        }
    }

    /// How the server bounds one statement's time: MariaDB's
    /// `max_statement_time` (seconds, every statement), MySQL's
    /// `max_execution_time` (ms, SELECT only; 5.7.8+).
    pub fn statement_limit(&self, ms: u64) -> Option<String> {
        match self.family {
            Family::MariaDb => Some(format!(
                "SET SESSION max_statement_time = {}.{:03}",
                ms / 1000,
                ms % 1000
            )),
            Family::MySql if self.version >= (5, 7, 8) => {
                Some(format!("SET SESSION max_execution_time = {ms}"))
            }
            Family::MySql => None,
        }
    }
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, c) = self.version;
        match self.family {
            Family::MariaDb => write!(f, "MariaDB {a}.{b}.{c}"),
            Family::MySql => write!(f, "MySQL {a}.{b}.{c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_server_gets_its_tables() {
        let cases = [
            (
                "10.11.6-MariaDB-0+deb12u1",
                "Debian 12",
                "mariadb",
                (10, 11, 6),
                SessionTable::MariaDbProcesslist,
                LockTables::InnoDbInfoSchema,
            ),
            (
                "5.5.5-10.3.39-MariaDB",
                "mariadb.org binary distribution",
                "mariadb",
                (10, 3, 39),
                SessionTable::MariaDbProcesslist,
                LockTables::InnoDbInfoSchema,
            ),
            (
                "11.4.2-MariaDB",
                "",
                "mariadb",
                (11, 4, 2),
                SessionTable::MariaDbProcesslist,
                LockTables::InnoDbInfoSchema,
            ),
            (
                "8.0.36",
                "MySQL Community Server - GPL",
                "mysql",
                (8, 0, 36),
                SessionTable::PerfSchemaProcesslist,
                LockTables::PerfSchemaDataLocks,
            ),
            (
                "8.0.20",
                "MySQL Community Server - GPL",
                "mysql",
                (8, 0, 20),
                SessionTable::InfoSchemaProcesslist,
                LockTables::PerfSchemaDataLocks,
            ),
            (
                "5.7.44-log",
                "MySQL Community Server (GPL)",
                "mysql",
                (5, 7, 44),
                SessionTable::InfoSchemaProcesslist,
                LockTables::InnoDbInfoSchema,
            ),
        ];
        for (version, comment, name, numbers, sessions, locks) in cases {
            let f = Flavor::detect(version, comment);
            assert_eq!(f.name(), name, "{version}");
            assert_eq!(f.version, numbers, "{version}");
            assert_eq!(f.session_table(), sessions, "{version}");
            assert_eq!(f.lock_tables(), locks, "{version}");
            assert!(f.supported());
        }
        assert!(!Flavor::detect("5.6.51", "MySQL").supported());
    }

    #[test]
    fn the_statement_limit_is_in_the_servers_dialect() {
        let maria = Flavor::detect("10.11.6-MariaDB", "");
        assert_eq!(
            maria.statement_limit(2500).as_deref(),
            Some("SET SESSION max_statement_time = 2.500")
        );
        let mysql = Flavor::detect("8.0.36", "MySQL");
        assert_eq!(
            mysql.statement_limit(2000).as_deref(),
            Some("SET SESSION max_execution_time = 2000")
        );
    }
}
