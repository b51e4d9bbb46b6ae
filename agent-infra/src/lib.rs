//! `sightline-infra`, the server agent: reads the host's CPU and memory
//! (and, as it grows, disks, network and processes) from `/proc` and `/sys`
//! every `interval`, and reports them through agent-core.
//!
//! Invariants:
//! - Collection is split per OS behind [`linux`]; nothing outside it knows
//!   a `/proc` path.
//! - The agent reads files only; it never runs a program to collect.

pub mod linux;
pub mod sampler;

use std::path::PathBuf;
use std::time::Duration;

use agent_core::config::{Config, ConfigError, KeySpec, Origin};
use agent_core::domain::Payload;
use agent_core::{Source, SourceConfig, SourceContext, SourceError};
use tokio::time::{MissedTickBehavior, interval};

use crate::linux::ProcFs;
use crate::sampler::Sampler;

/// The keys `infra.conf` holds besides the common ones.
pub const INFRA_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "interval",
        default: Some("5s"),
        doc: "How often the host is read and reported.",
    },
    KeySpec {
        key: "host.proc",
        default: Some("/proc"),
        doc: "Where the host's procfs is mounted (`/host/proc` in a container).",
    },
];

/// The server agent's settings.
#[derive(Debug, Clone)]
pub struct InfraConfig {
    /// Reporting interval.
    pub interval: Duration,
    /// procfs root.
    pub proc_root: PathBuf,
}

impl SourceConfig for InfraConfig {
    const PRODUCT: &'static str = "infra";
    const BINARY: &'static str = "sightline-infra";
    const KEYS: &'static [KeySpec] = INFRA_KEYS;

    fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let interval = config.duration("interval")?;
        if interval < Duration::from_secs(1) {
            return Err(ConfigError::Invalid {
                origin: config
                    .value("interval")
                    .map_or(Origin::Default, |v| v.origin),
                key: "interval".into(),
                reason: "must be at least 1s".into(),
            });
        }
        Ok(InfraConfig {
            interval,
            proc_root: PathBuf::from(config.get("host.proc").unwrap_or_else(|| "/proc".into())),
        })
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    fn build(self, cx: SourceContext) -> Result<Source, SourceError> {
        Ok(Box::pin(run(self, cx)))
    }
}

async fn run(config: InfraConfig, cx: SourceContext) -> Result<(), SourceError> {
    let mut sampler = Sampler::new(ProcFs::new(&config.proc_root));
    let mut tick = interval(config.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cx.shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let metrics = sampler.sample();
        tokio::select! {
            () = cx.shutdown.cancelled() => return Ok(()),
            sent = cx.out.send(Payload::Metrics(metrics)) => {
                if sent.is_err() {
                    return Ok(());
                }
            }
        }
    }
}
