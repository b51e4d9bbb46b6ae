//! `sightline-db`, the database agent: MySQL and MariaDB status counters as
//! rates, the live sessions, and the InnoDB and metadata lock tree (who
//! holds, who waits, with their queries), every `interval`, gentle on the
//! server.
//!
//! The path: [`source::run`] ticks; [`monitor::Monitor::cycle`] keeps one
//! connection ([`connection`]), reads `SHOW GLOBAL STATUS`
//! ([`counters`]), the sessions ([`sessions`]) and, only when the server
//! reports waits, the lock tables ([`locks`]), builds the tree
//! ([`lock_tree`], pure) and decides the events; the loop sends the metrics,
//! the snapshot (this product's own payload, [`snapshot`], converted in
//! [`wire`]) and the events as one batch.
//!
//! Invariants:
//! - At most two connections to the server, the second only to kill our
//!   own runaway statement; every network wait has a timeout.
//! - A quiet server costs two statements a cycle (three when the variables
//!   are due).
//! - The agent only reads: it never changes the server's data or settings
//!   beyond its own session's limits.
//! - Only [`wire`] sees prost types; the password is never logged.

pub mod check;
pub mod connection;
pub mod counters;
pub mod flavor;
pub mod lock_tree;
pub mod locks;
pub mod mask;
pub mod monitor;
pub mod sessions;
pub mod settings;
pub mod snapshot;
pub mod source;
pub mod wire;

/// The names of the events the database agent raises.
pub mod event_names {
    /// A lock wait passed `db.lock_wait.alert`; a snapshot with reason
    /// `lock_wait` holds the tree of that moment.
    pub const LOCK_WAIT: &str = "db.lock_wait";
    /// `Threads_running` passed `db.threads_running.alert`; a snapshot with
    /// reason `threads_running` holds the sessions.
    pub const THREADS_RUNNING: &str = "db.threads_running";
    /// The agent cannot connect, or lost its connection.
    pub const UNREACHABLE: &str = "db.unreachable";
    /// The agent connected again after `db.unreachable`.
    pub const REACHABLE: &str = "db.reachable";
    /// The user lacks a privilege the agent needs (PROCESS).
    pub const PRIVILEGES: &str = "db.privileges";
}

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use agent_core::config::{Config, ConfigError, KeySpec};
use agent_core::diagnose::Check;
use agent_core::{Source, SourceConfig, SourceContext, SourceError};

pub use settings::{DB_KEYS, DbSettings};

/// The database agent: its settings, and how it builds its loop.
#[derive(Debug, Clone)]
pub struct DbConfig {
    /// The resolved settings.
    pub settings: DbSettings,
}

impl SourceConfig for DbConfig {
    const PRODUCT: &'static str = "db";
    const BINARY: &'static str = "sightline-db";
    const KEYS: &'static [KeySpec] = DB_KEYS;

    fn from_config(config: &Config) -> Result<Self, ConfigError> {
        Ok(DbConfig {
            settings: DbSettings::from_config(config, &|name| std::env::var(name).ok())?,
        })
    }

    fn interval(&self) -> Duration {
        self.settings.interval
    }

    fn build(self, cx: SourceContext) -> Result<Source, SourceError> {
        Ok(Box::pin(source::run(self.settings, cx)))
    }

    fn checks(self) -> Pin<Box<dyn Future<Output = Vec<Check>> + Send>> {
        Box::pin(check::run(self.settings))
    }
}
