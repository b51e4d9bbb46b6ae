//! `sightline-infra`, the server agent: CPU, memory, swap, load, disks and
//! filesystems, disk I/O, network, processes, reboots and threshold events
//! with a load snapshot, read from `/proc` and `/sys` every `interval`.
//!
//! The path: [`source::run`] ticks, [`sensor::SensorSet`] runs every
//! sensor on the blocking pool with its own deadline (those that read
//! in-kernel counters only, in place), and the readings
//! go to agent-core's output as metrics, a top-N process snapshot (this
//! product's own payload, [`processes`], converted in [`wire`]) and events.
//!
//! Invariants:
//! - Everything that knows a `/proc` path lives in `linux`; everything
//!   that calls Win32 in `windows` (its `sys` holds the crate's only
//!   `unsafe`); the rest is OS-neutral.
//! - The agent reads files only; it never runs a program to collect.
//! - One slow source delays nothing else, and never piles up threads.
//! - Only [`wire`] sees prost types.

pub mod glob;
pub mod interface;
#[cfg(target_os = "linux")]
pub mod linux;
pub mod processes;
pub mod sensor;
pub mod settings;
pub mod source;
pub mod thresholds;
#[cfg(windows)]
pub mod windows;
pub mod wire;

/// The names of the events the server agent raises (agent-core names its
/// own in [`agent_core::event_names`]).
pub mod event_names {
    /// The host booted since the agent last ran.
    pub const HOST_REBOOTED: &str = "host.rebooted";
    /// A threshold was crossed for long enough.
    pub const THRESHOLD_EXCEEDED: &str = "threshold.exceeded";
    /// A crossed threshold is no longer crossed.
    pub const THRESHOLD_RECOVERED: &str = "threshold.recovered";
    /// A mount stopped answering `statfs`.
    pub const MOUNT_UNRESPONSIVE: &str = "mount.unresponsive";
}

use std::time::Duration;

use agent_core::config::{Config, ConfigError, KeySpec};
use agent_core::{Source, SourceConfig, SourceContext, SourceError};

pub use settings::{INFRA_KEYS, InfraSettings};

/// The server agent: its settings, and how it builds its loop.
#[derive(Clone)]
pub struct InfraConfig {
    /// The resolved settings.
    pub settings: InfraSettings,
    /// How filesystems are asked for their use (replaced in tests by a
    /// stand-in that can hang).
    #[cfg(target_os = "linux")]
    pub statfs: linux::sensors::filesystems::StatFs,
}

impl std::fmt::Debug for InfraConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfraConfig")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl SourceConfig for InfraConfig {
    const PRODUCT: &'static str = "infra";
    const BINARY: &'static str = "sightline-infra";
    const KEYS: &'static [KeySpec] = INFRA_KEYS;

    fn from_config(config: &Config) -> Result<Self, ConfigError> {
        Ok(InfraConfig {
            settings: InfraSettings::from_config(config)?,
            #[cfg(target_os = "linux")]
            statfs: linux::sensors::filesystems::real_statfs(),
        })
    }

    fn interval(&self) -> Duration {
        self.settings.interval
    }

    #[cfg(target_os = "linux")]
    fn build(self, cx: SourceContext) -> Result<Source, SourceError> {
        let proc = linux::ProcFs::new(&self.settings.proc_root);
        let boot_id = match linux::boot_id(&proc) {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot read the boot id; reboots will not be reported.");
                None
            }
        };
        let sensors = linux::sensors(&self.settings, self.statfs);
        Ok(Box::pin(source::run(self.settings, sensors, boot_id, cx)))
    }

    #[cfg(windows)]
    fn build(self, cx: SourceContext) -> Result<Source, SourceError> {
        let boot_id = windows::boot_id();
        if boot_id.is_none() {
            tracing::warn!("Cannot tell this boot from the last; reboots will not be reported.");
        }
        let sensors = windows::sensors(&self.settings);
        Ok(Box::pin(source::run(self.settings, sensors, boot_id, cx)))
    }

    #[cfg(not(any(target_os = "linux", windows)))]
    fn build(self, _cx: SourceContext) -> Result<Source, SourceError> {
        Err(SourceError::msg(
            "this build of sightline-infra collects on Linux only; the Windows module comes with the Windows build",
        ))
    }
}
