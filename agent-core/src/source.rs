//! The one shape every product's collection loop has (after Vector's
//! `SourceConfig::build` and `SourceContext`): a config struct, resolved from
//! the agent's [`Config`], builds a future; a [`SourceContext`] hands it the
//! shutdown signal, the output and the agent's counters.
//!
//! A reader who knows one agent's loop knows them all: `from_config` reads
//! and checks keys, `build` opens what must be opened, and the returned
//! future loops on its interval until `cx.shutdown` fires.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, KeySpec};
use crate::health::AgentCounters;
use crate::pipeline::Output;

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
    /// Where collected payloads go.
    pub out: Output,
    /// The agent's own counters.
    pub counters: Arc<AgentCounters>,
    /// The agent's data folder, for state that must survive restarts.
    pub data_dir: PathBuf,
}

/// A product's settings, and how they build its collection loop.
pub trait SourceConfig: Sized + Send + 'static {
    /// The product name: `infra`, `db`, `log`, `url`, `k8s`.
    const PRODUCT: &'static str;
    /// The binary's name: `sightline-infra`.
    const BINARY: &'static str;
    /// The keys this product reads besides [`crate::settings::COMMON_KEYS`].
    const KEYS: &'static [KeySpec];

    /// Reads and checks this product's keys.
    fn from_config(config: &Config) -> Result<Self, ConfigError>;

    /// How often the loop reports; the collector calls an agent "no data"
    /// after three of these without a batch.
    fn interval(&self) -> Duration;

    /// Builds the loop.
    fn build(self, cx: SourceContext) -> Result<Source, SourceError>;
}
