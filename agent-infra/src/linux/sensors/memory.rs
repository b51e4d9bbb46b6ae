//! Memory, swap, page faults and swapping.

use std::time::Instant;

use agent_core::Sample;

use crate::linux::memory::parse_meminfo;
use crate::linux::vmstat::{VmStat, parse_vmstat};
use crate::linux::{KeptFile, ProcFs};
use crate::sensor::{ReadError, Reading, Sensor};

/// Reads `/proc/meminfo` and `/proc/vmstat`.
#[derive(Debug)]
pub struct MemorySensor {
    meminfo: KeptFile,
    vmstat: KeptFile,
    page_size: u64,
    prev: Option<(Instant, VmStat)>,
}

impl MemorySensor {
    /// A sensor reading `proc`.
    pub fn new(proc: ProcFs) -> MemorySensor {
        MemorySensor {
            meminfo: KeptFile::new(&proc, "meminfo"),
            vmstat: KeptFile::new(&proc, "vmstat"),
            page_size: rustix::param::page_size() as u64,
            prev: None,
        }
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

impl Sensor for MemorySensor {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn read(&mut self, out: &mut Reading) -> Result<(), ReadError> {
        let m = parse_meminfo(&self.meminfo.read()?)?;
        let s = &mut out.samples;
        s.extend([
            Sample::new("mem.total_bytes", m.total as f64),
            Sample::new("mem.available_bytes", m.available as f64),
            Sample::new("mem.used_bytes", m.used() as f64),
            Sample::new("mem.used_pct", pct(m.used(), m.total)),
            Sample::new("mem.free_bytes", m.free as f64),
            Sample::new("mem.buffers_bytes", m.buffers as f64),
            Sample::new("mem.cached_bytes", m.cached as f64),
            Sample::new("swap.total_bytes", m.swap_total as f64),
            Sample::new("swap.used_bytes", m.swap_used() as f64),
            Sample::new("swap.used_pct", pct(m.swap_used(), m.swap_total)),
        ]);
        let vm = parse_vmstat(&self.vmstat.read()?)?;
        let now = Instant::now();
        if let Some((then, prev)) = &self.prev {
            let secs = now.duration_since(*then).as_secs_f64();
            if secs > 0.0 {
                let rate = |c: u64, p: u64| c.saturating_sub(p) as f64 / secs;
                s.extend([
                    Sample::new(
                        "mem.page_faults_per_sec",
                        rate(vm.page_faults, prev.page_faults),
                    ),
                    Sample::new(
                        "mem.major_faults_per_sec",
                        rate(vm.major_faults, prev.major_faults),
                    ),
                    Sample::new(
                        "swap.in_bytes_per_sec",
                        rate(vm.swap_in, prev.swap_in) * self.page_size as f64,
                    ),
                    Sample::new(
                        "swap.out_bytes_per_sec",
                        rate(vm.swap_out, prev.swap_out) * self.page_size as f64,
                    ),
                ]);
            }
        }
        self.prev = Some((now, vm));
        Ok(())
    }
}
