//! What every Sightline agent shares: configuration, license keys, identity,
//! the on-disk spool, the transport to the collector, the shape of a
//! collection loop, the common command line (`run`, `test`, `--version`),
//! signal handling, the pid file and logging.
//!
//! An agent binary is a product crate implementing [`SourceConfig`] and a
//! `main` that calls [`cli::main`]. The path of a batch: the product's loop
//! sends an [`OutBatch`] of [`Payload`]s to its [`Output`] and gets a
//! [`Receipt`]; the [`pipeline`] encodes, splits, numbers and spools it into
//! the [`spool`]; the [`transport`] sends spooled batches on one `Push`
//! stream and settles each when the collector acks it, which resolves the
//! receipt and moves the source's cursor.
//!
//! Invariants:
//! - agent-core knows nothing of any product: no `/proc` parsing, no SQL,
//!   no product's payload types (a product converts its own at its own
//!   wire edge into a [`domain::WirePayload`]).
//! - Only [`transport`] sees prost types; products work with [`domain`].
//! - A license key is never logged, printed or put in an error whole.
//! - Nothing here blocks an async worker on disk IO: the spool runs on the
//!   blocking pool.
//! - Every network wait is bounded by `server.timeout`.
//! - `unsafe` code only in [`windows`] and the service's entry point
//!   (`service`), on Windows.

pub mod acl;
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
pub mod receipt;
#[cfg(windows)]
pub mod service;
pub mod settings;
pub mod source;
pub mod spool;
pub mod state;
pub mod transport;
#[cfg(windows)]
pub mod windows;

pub use config::{Config, ConfigError, KeySpec};
pub use domain::{Event, Metrics, Payload, Sample, Severity, WirePayload, event_names};
pub use pipeline::{OutBatch, Output};
pub use receipt::{DropReason, Fate, Receipt};
pub use source::{Source, SourceConfig, SourceContext, SourceError};
pub use spool::{Resume, SpoolFull};

/// The version every agent reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
