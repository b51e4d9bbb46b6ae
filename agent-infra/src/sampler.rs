//! One reading of the host per interval, turned into samples. Holds the
//! previous reading of every counter, so rates and shares are computed over
//! exactly one interval.

use std::time::SystemTime;

use agent_core::Sample;
use agent_core::domain::Metrics;

use crate::linux::cpu::{self, CpuUsage, Stat};
use crate::linux::{ProcFs, ReadError};

/// Reads the host and remembers what it needs for the next delta.
#[derive(Debug)]
pub struct Sampler {
    proc: ProcFs,
    prev_stat: Option<Stat>,
}

impl Sampler {
    /// A sampler reading `proc`.
    pub fn new(proc: ProcFs) -> Sampler {
        Sampler {
            proc,
            prev_stat: None,
        }
    }

    /// Reads everything once. A source that fails is logged and left out;
    /// the others are still reported.
    pub fn sample(&mut self) -> Metrics {
        let time = SystemTime::now();
        let mut samples = Vec::new();
        report(&mut samples, "cpu", self.cpu());
        report(&mut samples, "memory", self.memory());
        Metrics { time, samples }
    }

    fn cpu(&mut self) -> Result<Vec<Sample>, ReadError> {
        let stat = self.proc.stat()?;
        let mut samples = Vec::new();
        if let Some(prev) = &self.prev_stat {
            if let Some(u) = cpu::usage(&prev.total, &stat.total) {
                push_cpu(&mut samples, &u, None);
            }
            for (n, times) in &stat.cores {
                // A core that just came online has no previous reading.
                if let Some(before) = prev.cores.get(n)
                    && let Some(u) = cpu::usage(before, times)
                {
                    push_cpu(&mut samples, &u, Some(*n));
                }
            }
        }
        samples.push(Sample::new("cpu.cores", stat.cores.len() as f64));
        self.prev_stat = Some(stat);
        Ok(samples)
    }

    fn memory(&self) -> Result<Vec<Sample>, ReadError> {
        let m = self.proc.meminfo()?;
        let pct = |part: u64, whole: u64| {
            if whole == 0 {
                0.0
            } else {
                part as f64 * 100.0 / whole as f64
            }
        };
        Ok(vec![
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
        ])
    }
}

fn push_cpu(samples: &mut Vec<Sample>, u: &CpuUsage, core: Option<u32>) {
    let parts = [
        ("cpu.usage", u.usage),
        ("cpu.user", u.user),
        ("cpu.nice", u.nice),
        ("cpu.system", u.system),
        ("cpu.iowait", u.iowait),
        ("cpu.irq", u.irq),
        ("cpu.softirq", u.softirq),
        ("cpu.steal", u.steal),
        ("cpu.idle", u.idle),
        ("cpu.guest", u.guest),
    ];
    for (name, value) in parts {
        let sample = Sample::new(name, value);
        samples.push(match core {
            Some(n) => sample.label("cpu", n.to_string()),
            None => sample,
        });
    }
}

fn report(samples: &mut Vec<Sample>, what: &'static str, result: Result<Vec<Sample>, ReadError>) {
    match result {
        Ok(s) => samples.extend(s),
        Err(e) => tracing::warn!(source = what, error = %e, "Cannot read host metrics."),
    }
}
