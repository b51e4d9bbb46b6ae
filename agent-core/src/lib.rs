//! What every Sightline agent shares: configuration, license keys, identity,
//! the on-disk spool, the transport to the collector, the shape of a
//! collection loop, the common command line (`run`, `test`, `--version`),
//! signal handling, the pid file and logging.
//!
//! An agent binary is a product crate implementing [`SourceConfig`] and a
//! `main` that calls [`cli::main`]. The path of a batch: the product's loop
//! sends a [`Payload`] to its [`Output`]; the [`pipeline`] numbers and encodes
//! it into the [`spool`]; the [`transport`] sends spooled batches on one
//! `Push` stream and removes each when the collector acks it.
//!
//! Invariants:
//! - agent-core knows nothing of any product: no `/proc` parsing, no SQL.
//! - Only [`transport`] sees prost types; products work with [`domain`].
//! - A license key is never logged, printed or put in an error whole.
//! - Nothing here blocks an async worker on disk IO: the spool runs on the
//!   blocking pool.
//! - Every network wait is bounded by `server.timeout`.

pub mod agent;
pub mod cli;
pub mod config;
pub mod diagnose;
pub mod domain;
pub mod health;
pub mod identity;
pub mod license;
pub mod logging;
pub mod pidfile;
pub mod pipeline;
pub mod settings;
pub mod source;
pub mod spool;
pub mod state;
pub mod transport;

pub use config::{Config, ConfigError, KeySpec};
pub use domain::{Event, EventKind, Payload, Sample, Severity};
pub use pipeline::Output;
pub use source::{Source, SourceConfig, SourceContext, SourceError};

/// The version every agent reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
