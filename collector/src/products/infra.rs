//! The server agent's own messages: a process snapshot, decoded into a
//! [`SnapshotRow`]. Never stores anything itself.

use std::collections::BTreeMap;

use sightline_proto::v1 as pb;

use crate::model::{ProcessRow, SnapshotRow};

/// Converts infra's `ProcessSnapshot`; `at` resolves a zero time to the
/// batch's. Values that are not finite become 0.
pub fn snapshot_from_wire(p: pb::ProcessSnapshot, at: impl Fn(i64) -> i64) -> SnapshotRow {
    SnapshotRow {
        time_ms: at(p.time_ms),
        reason: p.reason,
        total: p.total,
        state_counts: p.state_counts.into_iter().collect::<BTreeMap<_, _>>(),
        processes: p
            .processes
            .into_iter()
            .map(|p| ProcessRow {
                pid: p.pid,
                name: p.name,
                user: p.user,
                cmdline: p.cmdline,
                cpu_pct: finite(p.cpu_pct),
                rss_bytes: p.rss_bytes,
                mem_pct: finite(p.mem_pct),
                threads: p.threads,
                state: p.state,
            })
            .collect(),
    }
}

fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_time_is_the_batchs_and_nan_becomes_zero() {
        let wire = pb::ProcessSnapshot {
            reason: "top".into(),
            processes: vec![pb::Process {
                pid: 7,
                cpu_pct: f64::NAN,
                mem_pct: 2.5,
                ..pb::Process::default()
            }],
            state_counts: [("running".to_string(), 1)].into(),
            total: 90,
            time_ms: 0,
        };
        let row = snapshot_from_wire(wire, |t| if t == 0 { 1234 } else { t });
        assert_eq!(row.time_ms, 1234);
        assert_eq!(
            (row.processes[0].cpu_pct, row.processes[0].mem_pct),
            (0.0, 2.5)
        );
        assert_eq!(row.total, 90);
    }
}
