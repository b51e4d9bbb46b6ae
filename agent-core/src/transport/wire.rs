//! The edge where domain types become wire messages. The only module of
//! agent-core (with the rest of `transport`) that sees prost types.

use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use sightline_proto::v1 as pb;

use crate::domain::{
    Event, EventKind, Metrics, Payload, ProcessInfo, ProcessSnapshot, Sample, Severity,
};
use crate::health::Health;

/// Unix milliseconds (0 for times before 1970).
pub fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Encodes one batch: the bytes that go into the spool. Its time is the
/// first payload's.
pub fn encode_batch(seq: u64, payloads: &[Payload], health: Health) -> Vec<u8> {
    let batch = pb::Batch {
        seq,
        time_ms: payloads.first().map_or(0, |p| unix_ms(p.time())),
        health: Some(health_to_wire(health)),
        payloads: payloads.iter().map(payload_to_wire).collect(),
        liveness: false,
    };
    batch.encode_to_vec()
}

/// Decodes spooled bytes back into the message sent on the wire.
pub fn decode_batch(bytes: &[u8]) -> Result<pb::Batch, prost::DecodeError> {
    pb::Batch::decode(bytes)
}

fn health_to_wire(h: Health) -> pb::AgentHealth {
    pb::AgentHealth {
        spool_batches: h.spool_batches,
        spool_bytes: h.spool_bytes,
        batches_sent: h.batches_sent,
        batches_acked: h.batches_acked,
        reconnects: h.reconnects,
        batches_dropped: h.batches_dropped,
        bytes_dropped: h.bytes_dropped,
        sources: Vec::new(),
    }
}

fn payload_to_wire(payload: &Payload) -> pb::Payload {
    let kind = match payload {
        Payload::Metrics(m) => pb::payload::Kind::Metrics(metrics_to_wire(m)),
        Payload::Processes(p) => pb::payload::Kind::Processes(snapshot_to_wire(p)),
        Payload::Events(events) => pb::payload::Kind::Events(pb::AgentEvents {
            events: events.iter().map(event_to_wire).collect(),
        }),
    };
    pb::Payload { kind: Some(kind) }
}

fn metrics_to_wire(m: &Metrics) -> pb::Metrics {
    pb::Metrics {
        samples: m.samples.iter().map(sample_to_wire).collect(),
        time_ms: unix_ms(m.time),
    }
}

fn sample_to_wire(s: &Sample) -> pb::Sample {
    pb::Sample {
        name: s.name.to_string(),
        labels: s
            .labels
            .iter()
            .map(|(k, v)| pb::Label {
                key: k.to_string(),
                value: v.clone(),
            })
            .collect(),
        value: s.value,
    }
}

fn snapshot_to_wire(p: &ProcessSnapshot) -> pb::ProcessSnapshot {
    pb::ProcessSnapshot {
        reason: p.reason.as_str().to_string(),
        processes: p.processes.iter().map(process_to_wire).collect(),
        state_counts: p
            .state_counts
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        total: p.total,
        time_ms: unix_ms(p.time),
    }
}

fn process_to_wire(p: &ProcessInfo) -> pb::Process {
    pb::Process {
        pid: p.pid,
        name: p.name.clone(),
        user: p.user.clone(),
        cmdline: p.cmdline.clone(),
        cpu_pct: p.cpu_pct,
        rss_bytes: p.rss_bytes,
        mem_pct: p.mem_pct,
        threads: p.threads,
        state: p.state.clone(),
    }
}

fn event_to_wire(e: &Event) -> pb::AgentEvent {
    pb::AgentEvent {
        time_ms: unix_ms(e.time),
        kind: kind_to_wire(e.kind) as i32,
        severity: severity_to_wire(e.severity) as i32,
        message: e.message.clone(),
        name: String::new(),
        attrs: e
            .attrs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn kind_to_wire(kind: EventKind) -> pb::EventKind {
    match kind {
        EventKind::AgentStarted => pb::EventKind::AgentStarted,
        EventKind::HostRebooted => pb::EventKind::HostRebooted,
        EventKind::ConfigError => pb::EventKind::ConfigError,
        EventKind::SpoolOverflow => pb::EventKind::SpoolOverflow,
        EventKind::ThresholdExceeded => pb::EventKind::ThresholdExceeded,
        EventKind::ThresholdRecovered => pb::EventKind::ThresholdRecovered,
        EventKind::MountUnresponsive => pb::EventKind::MountUnresponsive,
    }
}

fn severity_to_wire(s: Severity) -> pb::Severity {
    match s {
        Severity::Info => pb::Severity::Info,
        Severity::Warning => pb::Severity::Warning,
        Severity::Critical => pb::Severity::Critical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SnapshotReason;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn batch_round_trips_through_bytes() {
        let time = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let payload = Payload::Metrics(Metrics {
            time,
            samples: vec![Sample::new("cpu.usage", 12.5).label("cpu", "total")],
        });
        let health = Health {
            spool_batches: 3,
            ..Health::default()
        };
        let batch = decode_batch(&encode_batch(7, &[payload], health)).expect("decodes");
        assert_eq!(batch.seq, 7);
        assert_eq!(batch.time_ms, 1_700_000_000_123);
        assert_eq!(batch.health.expect("health").spool_batches, 3);
        let Some(pb::payload::Kind::Metrics(m)) = batch.payloads[0].kind.clone() else {
            panic!("wrong payload");
        };
        assert_eq!(m.time_ms, 1_700_000_000_123);
        assert_eq!(m.samples[0].name, "cpu.usage");
        assert_eq!(m.samples[0].labels[0].value, "total");
        assert_eq!(m.samples[0].value, 12.5);
    }

    #[test]
    fn one_cycles_payloads_travel_together_with_their_fields() {
        let time = UNIX_EPOCH + Duration::from_secs(1);
        let snapshot = Payload::Processes(ProcessSnapshot {
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
                state: "running".into(),
            }],
            state_counts: BTreeMap::from([("running".to_string(), 1)]),
            total: 1,
        });
        let events = Payload::Events(vec![
            Event::now(EventKind::SpoolOverflow, Severity::Warning, "dropped")
                .attr("dropped_batches", 3),
        ]);
        let batch = decode_batch(&encode_batch(1, &[snapshot, events], Health::default()))
            .expect("decodes");
        assert_eq!(batch.payloads.len(), 2);
        let Some(pb::payload::Kind::Processes(p)) = batch.payloads[0].kind.clone() else {
            panic!("wrong payload");
        };
        assert_eq!(p.time_ms, 1000);
        assert_eq!(p.reason, "threshold");
        assert_eq!(p.processes[0].pid, 42);
        assert_eq!(p.state_counts["running"], 1);
        let Some(pb::payload::Kind::Events(e)) = batch.payloads[1].kind.clone() else {
            panic!("wrong payload");
        };
        assert_eq!(e.events[0].kind, pb::EventKind::SpoolOverflow as i32);
        assert_eq!(e.events[0].attrs["dropped_batches"], "3");
    }
}
