//! `sightline-url`, the URL agent: checks HTTP and HTTPS targets on their
//! intervals, timing each phase as blackbox_exporter does (DNS, connect,
//! TLS, first byte, transfer), holding each answer to its conditions
//! (status, body regex, JSON paths, time), tracking each target's state
//! (UP, PENDING, DOWN, DEGRADED) and the verified chain's expiry.
//!
//! The path: [`settings`] resolves `target.<name>.*` groups (from
//! `url.conf` and the watched targets file), [`source`] schedules them on
//! one heap and runs [`probe::check`] for each, [`state`] turns outcomes
//! into state changes, and [`wire`] converts finished checks into
//! `UrlChecks` for agent-core's output.
//!
//! Invariants:
//! - Only [`wire`] sees prost types.
//! - A secret (basic password, bearer token) lives in [`settings::Auth`]
//!   and the request header only; it is never logged or sent to the
//!   collector.
//! - Every check is bounded by its target's `.timeout`; nothing waits on
//!   the network without it.

pub mod expect;
pub mod probe;
pub mod report;
pub mod schedule;
pub mod settings;
pub mod source;
pub mod state;
pub mod tls;
pub mod wire;

/// The names of the events the URL agent raises.
pub mod event_names {
    /// A target became DOWN.
    pub const URL_DOWN: &str = "url.down";
    /// A target is UP again after DOWN or DEGRADED.
    pub const URL_UP: &str = "url.up";
    /// A target answers, slower than `.expect.max_time`.
    pub const URL_DEGRADED: &str = "url.degraded";
    /// A certificate of the verified chain expires within `.tls.min_days`.
    pub const URL_CERT_EXPIRING: &str = "url.cert_expiring";
}

use std::time::Duration;

use agent_core::config::{Config, ConfigError, KeySpec, ProcessEnv};
use agent_core::{Source, SourceConfig, SourceContext, SourceError};

pub use settings::{TARGET_KEYS, Target, URL_KEYS, UrlSettings};

/// The URL agent: its settings, and how it builds its loop.
#[derive(Debug, Clone)]
pub struct UrlConfig {
    /// The resolved settings.
    pub settings: UrlSettings,
}

impl SourceConfig for UrlConfig {
    const PRODUCT: &'static str = "url";
    const BINARY: &'static str = "sightline-url";
    const KEYS: &'static [KeySpec] = settings::URL_KEYS;

    fn from_config(config: &Config) -> Result<Self, ConfigError> {
        Ok(UrlConfig {
            settings: UrlSettings::from_config(config, &ProcessEnv)?,
        })
    }

    /// The longest target interval (the collector calls the agent silent
    /// after three of these without a batch); 60 s without targets.
    fn interval(&self) -> Duration {
        self.settings
            .targets
            .values()
            .map(|t| t.interval)
            .max()
            .unwrap_or(Duration::from_secs(60))
    }

    fn build(self, cx: SourceContext) -> Result<Source, SourceError> {
        Ok(Box::pin(source::run(self.settings, cx)))
    }
}
