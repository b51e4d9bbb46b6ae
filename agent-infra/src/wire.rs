//! The server agent's wire edge: its own domain types become its own
//! messages (`infra.proto`) here, and nowhere else in the crate. The only
//! module of sightline-infra that sees prost types.

use agent_core::transport::wire::unix_ms;
use agent_core::{Payload, WirePayload};
use sightline_proto::v1 as pb;

use crate::processes::{ProcessInfo, ProcessSnapshot};

/// A process snapshot as a payload agent-core can carry; its strings move
/// into the message, not copied.
pub fn processes_payload(snapshot: ProcessSnapshot) -> Payload {
    let message = pb::ProcessSnapshot {
        reason: snapshot.reason.as_str().to_string(),
        processes: snapshot
            .processes
            .into_iter()
            .map(process_to_wire)
            .collect(),
        state_counts: snapshot.state_counts.into_iter().collect(),
        total: snapshot.total,
        time_ms: unix_ms(snapshot.time),
    };
    Payload::Encoded(WirePayload::new(
        snapshot.time,
        pb::Payload {
            kind: Some(pb::payload::Kind::Processes(message)),
        },
    ))
}

fn process_to_wire(p: ProcessInfo) -> pb::Process {
    pb::Process {
        pid: p.pid,
        name: p.name,
        user: p.user,
        cmdline: p.cmdline,
        cpu_pct: p.cpu_pct,
        rss_bytes: p.rss_bytes,
        mem_pct: p.mem_pct,
        threads: p.threads,
        state: p.state.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processes::SnapshotReason;
    use agent_core::health::Health;
    use agent_core::transport::wire::{decode_batch, encode_batch, encode_payload};
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    #[test]
    fn a_snapshot_reaches_the_wire_with_its_fields() {
        let time = UNIX_EPOCH + Duration::from_secs(1);
        let snapshot = ProcessSnapshot {
            time,
            reason: SnapshotReason::Threshold,
            processes: vec![ProcessInfo {
                pid: 42,
                name: "postgres".into(),
                user: "postgres".into(),
                cmdline: "postgres -D /data".into(),
                cpu_pct: 180.0,
                rss_bytes: 1 << 30,
                mem_pct: 12.5,
                threads: 9,
                state: "running",
            }],
            state_counts: BTreeMap::from([("running".to_string(), 1)]),
            total: 1,
        };
        let parts = encode_payload(&processes_payload(snapshot.clone()), 1 << 20).expect("fits");
        let batch =
            decode_batch(&encode_batch(1, time, &Health::default(), &parts)).expect("decodes");
        let Some(pb::payload::Kind::Processes(p)) = batch.payloads[0].kind.clone() else {
            panic!("wrong payload");
        };
        assert_eq!(p.time_ms, 1000);
        assert_eq!(p.reason, "threshold");
        assert_eq!(p.processes[0].pid, 42);
        assert_eq!(p.processes[0].cpu_pct, 180.0);
        assert_eq!(p.state_counts["running"], 1);
    }

    /// Until every collector reads `AgentEvent.name`, this product's events
    /// also carry the deprecated enum, which today's collector maps.
    #[test]
    fn this_products_events_carry_their_name_and_the_legacy_kind() {
        use crate::event_names::*;
        use agent_core::domain::{Event, Severity};
        let expected = [
            (HOST_REBOOTED, pb::EventKind::HostRebooted),
            (THRESHOLD_EXCEEDED, pb::EventKind::ThresholdExceeded),
            (THRESHOLD_RECOVERED, pb::EventKind::ThresholdRecovered),
            (MOUNT_UNRESPONSIVE, pb::EventKind::MountUnresponsive),
        ];
        let events = expected
            .iter()
            .map(|(name, _)| Event::now(*name, Severity::Info, "x"))
            .collect();
        let parts = encode_payload(&Payload::Events(events), 1 << 20).expect("fits");
        let batch = decode_batch(&encode_batch(
            1,
            SystemTime::now(),
            &Health::default(),
            &parts,
        ))
        .expect("decodes");
        let Some(pb::payload::Kind::Events(wire)) = batch.payloads[0].kind.clone() else {
            panic!("wrong payload");
        };
        for ((name, kind), event) in expected.iter().zip(&wire.events) {
            assert_eq!(event.name, *name);
            assert_eq!(event.kind, *kind as i32, "{name}");
        }
    }
}
