//! The Linux collectors, one per source, each a [`crate::collect::Collect`].

pub mod cpu;
pub mod disks;
pub mod filesystems;
pub mod memory;
pub mod network;
pub mod processes;
