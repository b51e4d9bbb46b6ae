//! The log agent's keys: named file groups, `file.<name>.*`.

use std::time::Duration;

use agent_core::config::{Config, ConfigError, KeySpec};
use agent_core::spool::SpoolFull;
use agent_core::{Source, SourceConfig, SourceContext, SourceError};

/// The keys the log agent reads besides agent-core's common ones.
pub const LOG_KEYS: &[KeySpec] = &[KeySpec {
    key: "file.*.path",
    default: None,
    doc: "Globs of the files of group `*`, comma separated.",
}];

/// The log agent: its settings, and how it builds its loop.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// How often health is reported when nothing is read.
    pub interval: Duration,
}

impl SourceConfig for LogConfig {
    const PRODUCT: &'static str = "log";
    const BINARY: &'static str = "sightline-log";
    const KEYS: &'static [KeySpec] = LOG_KEYS;
    const SPOOL_FULL: SpoolFull = SpoolFull::Block;

    fn from_config(config: &Config) -> Result<Self, ConfigError> {
        // SKELETON: the tailing helper replaces this module.
        let _ = config;
        Ok(LogConfig {
            interval: Duration::from_secs(10),
        })
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn build(self, cx: SourceContext) -> Result<Source, SourceError> {
        let _ = cx;
        Err(SourceError::msg("the log agent is being built"))
    }
}
