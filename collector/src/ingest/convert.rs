//! Wire to rows for what every product sends: metrics, events, health.
//! A product's own messages are decoded in [`crate::products`]; the one
//! place that dispatches on the payload kind is [`payload_from_wire`].
//!
//! Invariant: whatever is left out of a batch (over a cap, unstorable) is
//! counted in [`Refusals`] and reaches the agent in the ack's partial
//! success; nothing is dropped silently, and nothing over a cap is stored.

use sightline_proto::v1 as pb;

use crate::model::{AgentHealth, BatchPayload, EventRow, IncomingBatch, SampleRow, SourceHealth};
use crate::products;

/// Longest event name.
pub const MAX_EVENT_NAME: usize = 64;

/// Per-sample caps (collector.conf `limit.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleLimits {
    /// Labels per sample (`limit.sample.labels`).
    pub labels_per_sample: usize,
    /// Bytes of a label key (`limit.label.key.bytes`).
    pub label_key_bytes: usize,
    /// Bytes of a label value (`limit.label.value.bytes`).
    pub label_value_bytes: usize,
    /// Bytes of a metric name (`limit.metric.name.bytes`).
    pub metric_name_bytes: usize,
}

impl Default for SampleLimits {
    fn default() -> Self {
        SampleLimits {
            labels_per_sample: 32,
            label_key_bytes: 128,
            label_value_bytes: 1024,
            metric_name_bytes: 256,
        }
    }
}

/// What was left out of a batch, and why (one reason per cause).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refusals {
    /// Samples, events or records left out.
    pub count: u64,
    /// Why, naming the limit and its value; each reason once.
    pub reasons: Vec<String>,
}

impl Refusals {
    /// Counts one left out for `reason`.
    pub fn add(&mut self, reason: impl FnOnce() -> String) {
        self.add_many(1, reason);
    }

    /// Counts `n` left out for `reason`.
    pub fn add_many(&mut self, n: u64, reason: impl FnOnce() -> String) {
        if n == 0 {
            return;
        }
        self.count += n;
        let reason = reason();
        if !self.reasons.contains(&reason) {
            self.reasons.push(reason);
        }
    }

    /// The ack's partial success, if anything was left out.
    pub fn to_wire(&self) -> Option<pb::PartialSuccess> {
        (self.count > 0).then(|| pb::PartialSuccess {
            rejected: self.count,
            message: self.reasons.join("; "),
        })
    }
}

/// A batch converted, with what was left out of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// The rows to store.
    pub batch: IncomingBatch,
    /// What was left out.
    pub refused: Refusals,
}

/// Whether `name` is an event name: `[a-z0-9_]+(\.[a-z0-9_]+)+`, at most
/// [`MAX_EVENT_NAME`] bytes.
pub fn is_event_name(name: &str) -> bool {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    name.len() <= MAX_EVENT_NAME && name.split('.').count() >= 2 && name.split('.').all(part_ok)
}

/// Converts a wire batch (not a liveness signal) to rows. Samples and
/// events that cannot be stored are left out and counted; a batch that
/// cannot be stored at all is an error, sent back in the ack.
pub fn batch_from_wire(batch: pb::Batch, limits: &SampleLimits) -> Result<Converted, String> {
    if batch.seq == 0 {
        return Err("sequence numbers start at 1 (0 only for a liveness signal)".into());
    }
    let batch_time = batch.time_ms;
    let at = |t: i64| if t == 0 { batch_time } else { t };
    let mut refused = Refusals::default();
    let payloads = batch
        .payloads
        .into_iter()
        .filter_map(|p| p.kind)
        .map(|kind| payload_from_wire(kind, &at, limits, &mut refused))
        .collect();
    Ok(Converted {
        batch: IncomingBatch {
            seq: batch.seq,
            time_ms: batch.time_ms,
            health: batch.health.map(health_from_wire),
            payloads,
        },
        refused,
    })
}

/// The one place a payload's kind is dispatched; a product adds its arm.
fn payload_from_wire(
    kind: pb::payload::Kind,
    at: &impl Fn(i64) -> i64,
    limits: &SampleLimits,
    refused: &mut Refusals,
) -> BatchPayload {
    match kind {
        pb::payload::Kind::Metrics(m) => BatchPayload::Metrics {
            time_ms: at(m.time_ms),
            samples: m
                .samples
                .into_iter()
                .filter_map(|s| sample_from_wire(s, limits, refused))
                .collect(),
        },
        pb::payload::Kind::Events(e) => BatchPayload::Events(
            e.events
                .into_iter()
                .filter_map(|e| event_from_wire(e, at, refused))
                .collect(),
        ),
        pb::payload::Kind::Processes(p) => {
            BatchPayload::Processes(products::infra::snapshot_from_wire(p, at))
        }
        pb::payload::Kind::Logs(chunk) => match products::logs::chunk_from_wire(chunk, at, refused)
        {
            Some(row) => BatchPayload::Logs(crate::model::LogPayload {
                chunk: std::sync::Arc::new(row),
                block: None,
            }),
            None => BatchPayload::Events(Vec::new()),
        },
        pb::payload::Kind::Db(snapshot) => BatchPayload::Db(Box::new(
            products::db::snapshot_from_wire(snapshot, at, refused),
        )),
        pb::payload::Kind::Url(checks) => {
            BatchPayload::Url(products::url::checks_from_wire(checks, at, refused))
        }
    }
}

fn sample_from_wire(
    s: pb::Sample,
    limits: &SampleLimits,
    refused: &mut Refusals,
) -> Option<SampleRow> {
    if s.name.is_empty() {
        refused.add(|| "a sample has no name".into());
        return None;
    }
    if !s.value.is_finite() {
        refused.add(|| "a sample's value is not finite".into());
        return None;
    }
    if s.name.len() > limits.metric_name_bytes {
        refused.add(|| {
            format!(
                "metric name over limit.metric.name.bytes={}",
                limits.metric_name_bytes
            )
        });
        return None;
    }
    if s.labels.len() > limits.labels_per_sample {
        refused.add(|| {
            format!(
                "more labels than limit.sample.labels={}",
                limits.labels_per_sample
            )
        });
        return None;
    }
    if s.labels
        .iter()
        .any(|l| l.key.len() > limits.label_key_bytes)
    {
        refused.add(|| {
            format!(
                "label key over limit.label.key.bytes={}",
                limits.label_key_bytes
            )
        });
        return None;
    }
    if s.labels
        .iter()
        .any(|l| l.value.len() > limits.label_value_bytes)
    {
        refused.add(|| {
            format!(
                "label value over limit.label.value.bytes={}",
                limits.label_value_bytes
            )
        });
        return None;
    }
    let mut labels: Vec<(String, String)> =
        s.labels.into_iter().map(|l| (l.key, l.value)).collect();
    labels.sort();
    Some(SampleRow {
        name: s.name,
        labels,
        value: s.value,
    })
}

fn event_from_wire(
    e: pb::AgentEvent,
    at: &impl Fn(i64) -> i64,
    refused: &mut Refusals,
) -> Option<EventRow> {
    let kind = if e.name.is_empty() {
        event_kind(e.kind).to_string()
    } else if is_event_name(&e.name) {
        e.name
    } else {
        refused.add(|| {
            format!(
                "an event name is not dotted lower case ([a-z0-9_]+(.[a-z0-9_]+)+, at most {MAX_EVENT_NAME} bytes)"
            )
        });
        return None;
    };
    Some(EventRow {
        time_ms: at(e.time_ms),
        kind,
        severity: severity(e.severity).to_string(),
        message: e.message,
        attrs: e.attrs.into_iter().collect(),
    })
}

/// The agent's health as the collector keeps it.
pub fn health_from_wire(h: pb::AgentHealth) -> AgentHealth {
    AgentHealth {
        spool_batches: h.spool_batches,
        spool_bytes: h.spool_bytes,
        batches_sent: h.batches_sent,
        batches_acked: h.batches_acked,
        reconnects: h.reconnects,
        batches_dropped: h.batches_dropped,
        bytes_dropped: h.bytes_dropped,
        sources: h
            .sources
            .into_iter()
            .map(|s| SourceHealth {
                name: s.name,
                records_read: s.records_read,
                records_sent: s.records_sent,
                records_acked: s.records_acked,
                records_dropped: s.records_dropped,
            })
            .collect(),
    }
}

/// The name of a deprecated event kind, for senders that set no `name`.
pub fn event_kind(kind: i32) -> &'static str {
    match pb::EventKind::try_from(kind).unwrap_or(pb::EventKind::Unspecified) {
        pb::EventKind::Unspecified => "unspecified",
        pb::EventKind::AgentStarted => "agent.started",
        pb::EventKind::HostRebooted => "host.rebooted",
        pb::EventKind::ConfigError => "config.error",
        pb::EventKind::SpoolOverflow => "spool.overflow",
        pb::EventKind::ThresholdExceeded => "threshold.exceeded",
        pb::EventKind::ThresholdRecovered => "threshold.recovered",
        pb::EventKind::AgentNoData => "agent.no_data",
        pb::EventKind::MountUnresponsive => "mount.unresponsive",
    }
}

fn severity(s: i32) -> &'static str {
    match pb::Severity::try_from(s).unwrap_or(pb::Severity::Unspecified) {
        pb::Severity::Unspecified | pb::Severity::Info => "info",
        pb::Severity::Warning => "warning",
        pb::Severity::Critical => "critical",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> pb::Sample {
        pb::Sample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| pb::Label {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
            value,
        }
    }

    fn metrics_batch(samples: Vec<pb::Sample>) -> pb::Batch {
        pb::Batch {
            seq: 3,
            time_ms: 10,
            health: None,
            payloads: vec![pb::Payload {
                kind: Some(pb::payload::Kind::Metrics(pb::Metrics {
                    samples,
                    time_ms: 0,
                })),
            }],
            liveness: false,
        }
    }

    #[test]
    fn unstorable_samples_are_left_out_and_counted_and_seq_zero_refused() {
        let batch = metrics_batch(vec![
            sample("ok", &[], 1.0),
            sample("nan", &[], f64::NAN),
            sample("", &[], 1.0),
        ]);
        let converted = batch_from_wire(batch, &SampleLimits::default()).expect("storable");
        let [BatchPayload::Metrics { time_ms, samples }] = converted.batch.payloads.as_slice()
        else {
            panic!("one metrics payload");
        };
        assert_eq!(*time_ms, 10, "no time of its own: the batch's");
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].name, "ok");
        assert_eq!(converted.refused.count, 2, "told, not dropped silently");
        let zero = pb::Batch {
            seq: 0,
            ..pb::Batch::default()
        };
        assert!(batch_from_wire(zero, &SampleLimits::default()).is_err());
    }

    #[test]
    fn samples_over_a_label_or_name_cap_are_refused_naming_the_key() {
        let limits = SampleLimits {
            labels_per_sample: 2,
            label_key_bytes: 4,
            label_value_bytes: 8,
            metric_name_bytes: 10,
        };
        let batch = metrics_batch(vec![
            sample("fine", &[("a", "1"), ("b", "2")], 1.0),
            sample("three", &[("a", "1"), ("b", "2"), ("c", "3")], 1.0),
            sample("longkey", &[("abcde", "1")], 1.0),
            sample("longvalue", &[("a", "123456789")], 1.0),
            sample("a.very.long.name", &[], 1.0),
        ]);
        let converted = batch_from_wire(batch, &limits).expect("storable");
        let [BatchPayload::Metrics { samples, .. }] = converted.batch.payloads.as_slice() else {
            panic!("one metrics payload");
        };
        assert_eq!(
            samples.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["fine"]
        );
        let partial = converted.refused.to_wire().expect("a partial success");
        assert_eq!(partial.rejected, 4);
        for key in [
            "limit.sample.labels=2",
            "limit.label.key.bytes=4",
            "limit.label.value.bytes=8",
            "limit.metric.name.bytes=10",
        ] {
            assert!(partial.message.contains(key), "{key}: {}", partial.message);
        }
    }

    #[test]
    fn event_names_are_validated_and_the_old_kind_is_the_fallback() {
        for good in ["agent.started", "log.file_rotated", "k8s.pod.oom_killed2"] {
            assert!(is_event_name(good), "{good}");
        }
        let long = format!("a.{}", "b".repeat(63));
        for bad in [
            "agent",
            "Agent.started",
            "agent..started",
            ".x",
            "a.b-c",
            "a.b ",
            &long,
        ] {
            assert!(!is_event_name(bad), "{bad}");
        }
        let event = |name: &str, kind: pb::EventKind| pb::AgentEvent {
            time_ms: 5,
            kind: kind as i32,
            severity: pb::Severity::Warning as i32,
            message: "m".into(),
            attrs: Default::default(),
            name: name.into(),
        };
        let batch = pb::Batch {
            seq: 1,
            time_ms: 1,
            health: None,
            payloads: vec![pb::Payload {
                kind: Some(pb::payload::Kind::Events(pb::AgentEvents {
                    events: vec![
                        event("log.file_rotated", pb::EventKind::Unspecified),
                        event("", pb::EventKind::SpoolOverflow),
                        event("Not A Name", pb::EventKind::AgentStarted),
                    ],
                })),
            }],
            liveness: false,
        };
        let converted = batch_from_wire(batch, &SampleLimits::default()).expect("storable");
        let [BatchPayload::Events(events)] = converted.batch.payloads.as_slice() else {
            panic!("one events payload");
        };
        assert_eq!(
            events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["log.file_rotated", "spool.overflow"]
        );
        assert_eq!(converted.refused.count, 1);
        assert!(converted.refused.reasons[0].contains("event name"));
    }

    #[test]
    fn unknown_event_kinds_are_kept_as_unspecified() {
        assert_eq!(event_kind(999), "unspecified");
        assert_eq!(
            event_kind(pb::EventKind::SpoolOverflow as i32),
            "spool.overflow"
        );
    }

    #[test]
    fn per_source_health_is_kept() {
        let health = health_from_wire(pb::AgentHealth {
            sources: vec![pb::SourceHealth {
                name: "files".into(),
                records_read: 10,
                records_sent: 9,
                records_acked: 8,
                records_dropped: 1,
            }],
            ..pb::AgentHealth::default()
        });
        assert_eq!(health.sources[0].name, "files");
        assert_eq!(health.sources[0].records_dropped, 1);
    }
}
