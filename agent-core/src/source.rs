//! The one shape every product's collection loop has (after Vector's
//! `SourceConfig::build` and `SourceContext`): a config struct, resolved from
//! the agent's [`Config`], builds a future; a [`SourceContext`] hands it the
//! shutdown signal, the output and the agent's counters.
//!
//! A reader who knows one agent's loop knows them all: `from_config` reads
//! and checks keys, `build` opens what must be opened, and the returned
//! future loops on its interval until `cx.shutdown` fires.
//!
//! A source learns what became of what it sent: [`Output::send`] returns a
//! [`crate::receipt::Receipt`], and [`SourceContext::resume`] tells it where
//! it stood (its cursors) when the agent last stopped. A source never
//! touches the spool or the wire itself.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, KeySpec};
use crate::diagnose::Check;
use crate::health::AgentCounters;
use crate::pipeline::{Output, SharedSpool};
use crate::spool::{Resume, SpoolError, SpoolFull};

/// A running collection loop.
pub type Source = Pin<Box<dyn Future<Output = Result<(), SourceError>> + Send>>;

/// A collection loop failed for good.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(#[from] pub Box<dyn std::error::Error + Send + Sync>);

impl SourceError {
    /// An error from a message.
    pub fn msg(message: impl Into<String>) -> SourceError {
        SourceError(message.into().into())
    }
}

/// What a collection loop is given.
#[derive(Debug)]
pub struct SourceContext {
    /// Fires on SIGTERM/SIGINT; the loop must return within a few hundred
    /// milliseconds of it.
    pub shutdown: CancellationToken,
    /// Where collected payloads go: the product's main output, named after
    /// the product. [`Output::named`] gives other sources' outputs.
    pub out: Output,
    /// The agent's own counters.
    pub counters: Arc<AgentCounters>,
    /// The agent's data folder, for state that must survive restarts.
    pub data_dir: PathBuf,
    /// The spool, for [`SourceContext::resume`].
    pub(crate) spool: SharedSpool,
}

impl SourceContext {
    /// A context (for agent-core, and for tests driving a loop).
    pub fn new(
        shutdown: CancellationToken,
        out: Output,
        counters: Arc<AgentCounters>,
        data_dir: PathBuf,
        spool: SharedSpool,
    ) -> SourceContext {
        SourceContext {
            shutdown,
            out,
            counters,
            data_dir,
            spool,
        }
    }

    /// Where source `name` stood: the cursor of its newest batch the
    /// collector acknowledged (or that was dropped for good), the cursor of
    /// its newest batch still spooled, and the acknowledged cursors to
    /// come. A log tailer reads on after `spooled` (or `acked` when nothing
    /// is spooled) and checkpoints only what `acked_updates` says.
    pub async fn resume(&self, name: &str) -> Result<Resume, SpoolError> {
        let name = name.to_string();
        self.spool.in_memory(move |s| s.resume(&name)).await
    }
}

/// A product's settings, and how they build its collection loop.
pub trait SourceConfig: Sized + Send + 'static {
    /// The product name: `infra`, `db`, `log`, `url`, `k8s`.
    const PRODUCT: &'static str;
    /// The binary's name: `sightline-infra`.
    const BINARY: &'static str;
    /// The keys this product reads besides [`crate::settings::COMMON_KEYS`].
    const KEYS: &'static [KeySpec];
    /// What the spool does when full: drop the oldest (metrics) or make
    /// the sources wait (logs, whose files are the buffer).
    const SPOOL_FULL: SpoolFull = SpoolFull::DropOldest;

    /// Reads and checks this product's keys.
    fn from_config(config: &Config) -> Result<Self, ConfigError>;

    /// How often the loop reports; the collector calls an agent "no data"
    /// after three of these without a batch.
    fn interval(&self) -> Duration;

    /// Builds the loop.
    fn build(self, cx: SourceContext) -> Result<Source, SourceError>;

    /// The product's own lines for `test`, after agent-core's (a database
    /// agent checks its database: login, privileges, one cycle's cost).
    /// Each wait in them must be bounded. None by default.
    fn checks(self) -> Pin<Box<dyn Future<Output = Vec<Check>> + Send>> {
        Box::pin(std::future::ready(Vec::new()))
    }
}
