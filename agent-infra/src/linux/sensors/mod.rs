//! The Linux sensors, one per source, each a [`crate::sensor::Sensor`].

pub mod cpu;
pub mod disks;
pub mod filesystems;
pub mod memory;
pub mod network;
pub mod processes;
