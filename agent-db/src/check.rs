//! The database lines of `sightline-db test`, after agent-core's: log in
//! (`db`), the privileges the agent needs (`db-privs`: PROCESS, and SELECT
//! on every table it reads on this flavour), and one cycle's cost
//! (`db-cycle`: statements and milliseconds). Each failure comes with a
//! hint naming what to fix.
//!
//! Invariants: every wait is bounded by the connection's timeouts; the
//! password is never printed; nothing is written to the server.

use std::time::Instant;

use agent_core::diagnose::{Check, Outcome};

use crate::connection::{Db, DbError};
use crate::flavor::Family;
use crate::locks;
use crate::monitor::Monitor;
use crate::sessions::{self, SessionOptions};
use crate::settings::DbSettings;

fn check(name: &'static str, outcome: Outcome, detail: String, hint: Option<String>) -> Check {
    Check {
        name,
        outcome,
        detail,
        hint,
    }
}

/// What to do about a failed login.
fn hint_for(e: &DbError, settings: &DbSettings) -> String {
    let user = &settings.connect.user;
    match e {
        DbError::Unreachable { .. } => {
            "is the server running, and listening on that address (bind-address, port, socket path)? is the port open in the firewalls between?".into()
        }
        DbError::ConnectTimeout { .. } => {
            "the server accepted nothing in time: is it hung (stopped, swapping, out of connections) or is a firewall dropping packets?".into()
        }
        DbError::AccessDenied { .. } => format!(
            "check db.user and db.password (or db.password_env); the server must allow '{user}' from this host: CREATE USER '{user}'@'HOST' IDENTIFIED BY '...'; GRANT PROCESS ON *.* TO '{user}'@'HOST';"
        ),
        DbError::Tls { .. } => {
            "check db.tls, db.tls.ca (the CA that signed the server's certificate) and that the server has TLS on".into()
        }
        _ => "see the error above".into(),
    }
}

/// Runs the database checks.
pub async fn run(settings: DbSettings) -> Vec<Check> {
    let mut checks = Vec::new();
    let started = Instant::now();
    let mut db = match Db::connect(&settings.connect).await {
        Ok(db) => {
            checks.push(check(
                "db",
                Outcome::Ok,
                format!(
                    "logged in to {} as '{}' in {} ms: {} ({})",
                    settings.connect.address,
                    settings.connect.user,
                    started.elapsed().as_millis(),
                    db.flavor,
                    db.flavor.version_text
                ),
                None,
            ));
            if !db.flavor.supported() {
                checks.push(check(
                    "db",
                    Outcome::Warn,
                    format!("{} is older than MariaDB 10 or MySQL 5.7", db.flavor),
                    None,
                ));
            }
            db
        }
        Err(e) => {
            let hint = hint_for(&e, &settings);
            checks.push(check("db", Outcome::Fail, e.to_string(), Some(hint)));
            checks.push(check(
                "db-privs",
                Outcome::Skip,
                "not logged in".into(),
                None,
            ));
            checks.push(check(
                "db-cycle",
                Outcome::Skip,
                "not logged in".into(),
                None,
            ));
            return checks;
        }
    };

    // Privileges: each statement the agent may run, on this flavour.
    let user = settings.connect.user.clone();
    let mut missing = Vec::new();
    let mut failed = Vec::new();
    let process = db
        .execute(
            "privilege probe",
            "SELECT COUNT(*) FROM information_schema.INNODB_TRX",
        )
        .await;
    match process {
        Ok(()) => {}
        Err(DbError::Privilege { .. }) => missing.push("PROCESS".to_string()),
        Err(e) => failed.push(e.to_string()),
    }
    let options = SessionOptions {
        query_max: settings.query_max,
        mask_literals: settings.mask_literals,
        idle: settings.sessions_idle,
        with_trx: missing.is_empty(),
    };
    let flavor = db.flavor.clone();
    let mut statements: Vec<(&'static str, String)> = vec![
        ("sessions", sessions::sql(flavor.session_table(), options)),
        (
            "innodb locks",
            locks::innodb_sql(flavor.lock_tables()).to_string(),
        ),
    ];
    match flavor.family {
        Family::MySql => statements.push(("metadata locks", locks::MYSQL_MDL_SQL.to_string())),
        Family::MariaDb if db.mdl_plugin => {
            statements.push(("metadata locks", locks::MARIADB_MDL_SQL.to_string()))
        }
        Family::MariaDb => {}
    }
    if missing.is_empty() {
        for (what, sql) in &statements {
            match db.rows(what, sql).await {
                Ok(_) => {}
                Err(DbError::Privilege { reason, .. }) => missing.push(format!("{what}: {reason}")),
                Err(e) => failed.push(e.to_string()),
            }
        }
    }
    let mdl_note = match (flavor.family, db.mdl_plugin) {
        (Family::MariaDb, false) => {
            "; metadata lock waits show without their holders (INSTALL SONAME 'metadata_lock_info' to see them)"
        }
        _ => "",
    };
    if !missing.is_empty() {
        checks.push(check(
            "db-privs",
            Outcome::Fail,
            format!("'{user}' lacks {}", missing.join("; ")),
            Some(format!(
                "GRANT PROCESS ON *.* TO '{user}'@'HOST'; and SELECT on performance_schema where MySQL 8 keeps its locks: GRANT SELECT ON performance_schema.* TO '{user}'@'HOST';"
            )),
        ));
    } else if !failed.is_empty() {
        checks.push(check("db-privs", Outcome::Warn, failed.join("; "), None));
    } else {
        checks.push(check(
            "db-privs",
            Outcome::Ok,
            format!(
                "PROCESS and SELECT on the {} tables it reads{mdl_note}",
                statements.len()
            ),
            None,
        ));
    }
    db.close().await;

    // One cycle's cost: the second cycle (the first also logs in).
    let mut monitor = Monitor::new(settings);
    let _ = monitor.cycle().await;
    let cycle = monitor.cycle().await;
    monitor.close().await;
    match cycle.error {
        None => checks.push(check(
            "db-cycle",
            Outcome::Ok,
            format!(
                "one cycle: {} statements, {} ms, {} sessions",
                cycle.statements,
                cycle.elapsed.as_millis(),
                cycle.snapshot.as_ref().map_or(0, |s| s.sessions.len())
            ),
            None,
        )),
        Some(e) => checks.push(check("db-cycle", Outcome::Fail, e, None)),
    }
    checks
}
