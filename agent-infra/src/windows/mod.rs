//! Windows: the server agent's sensors, reading the Win32 and native APIs
//! (never performance counters by name, which are translated per locale,
//! and never a program). The metrics carry the Linux names wherever the
//! meaning is the same, so the console's screens and alert rules work
//! unchanged; the few that exist only here are named for what they are
//! (`mem.commit_bytes`). README's "Windows: the MSI" lists them.
//!
//! Invariants: all `unsafe` is in [`sys`]; every sensor here reads
//! counters the kernel keeps (nothing waits on a disk or the network but
//! the drives' free space, which runs on the blocking pool with a
//! deadline, as `statfs` does on Linux).

pub mod sensors;
pub mod sys;

use crate::sensor::{Group, Sensor};
use crate::settings::InfraSettings;

/// Every sensor of a Windows host.
pub fn sensors(settings: &InfraSettings) -> Vec<Box<dyn Sensor>> {
    let counters: Vec<Box<dyn Sensor>> = vec![
        Box::new(sensors::CpuSensor::default()),
        Box::new(sensors::MemorySensor),
        Box::new(sensors::NetSensor::new(
            settings.net_include.clone(),
            settings.net_exclude.clone(),
            settings.net_virtual,
        )),
    ];
    vec![
        Box::new(Group::never_blocking("counters", counters)),
        Box::new(sensors::DriveSensor),
        Box::new(sensors::DiskIoSensor::default()),
        Box::new(sensors::ProcessSensor::new(
            settings.process_top,
            settings.cmdline_max,
        )),
    ]
}

/// This boot's id, for reboot detection: the kernel's boot count, or the
/// boot time to the minute (see [`agent_core::identity::boot_id`]).
pub fn boot_id() -> Option<String> {
    let id = agent_core::identity::boot_id();
    (!id.is_empty()).then_some(id)
}
