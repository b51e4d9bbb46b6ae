//! Tests of the wire edge: batches assembled from payload bytes, splitting,
//! event names and the legacy enum, liveness.

use super::*;
use crate::domain::event_names;
use crate::health::SourceHealth;
use std::time::Duration;

fn metrics(n: usize) -> Payload {
    Payload::Metrics(Metrics {
        time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        samples: (0..n)
            .map(|i| Sample::new("demo.value", i as f64).label("part", i.to_string()))
            .collect(),
    })
}

#[test]
fn batch_round_trips_through_bytes() {
    let payload = metrics(1);
    let health = Health {
        spool_batches: 3,
        sources: vec![SourceHealth {
            name: "main".into(),
            records_read: 5,
            ..SourceHealth::default()
        }],
        ..Health::default()
    };
    let parts = encode_payload(&payload, 1 << 20).expect("fits");
    let bytes = encode_batch(7, payload.time(), &health, &parts);
    let batch = decode_batch(&bytes).expect("decodes");
    assert_eq!(batch.seq, 7);
    assert_eq!(batch.time_ms, 1_700_000_000_123);
    let h = batch.health.expect("health");
    assert_eq!(h.spool_batches, 3);
    assert_eq!(h.sources[0].name, "main");
    assert_eq!(h.sources[0].records_read, 5);
    assert!(!batch.liveness);
    let Some(pb::payload::Kind::Metrics(m)) = batch.payloads[0].kind.clone() else {
        panic!("wrong payload");
    };
    assert_eq!(m.time_ms, 1_700_000_000_123);
    assert_eq!(m.samples[0].name, "demo.value");
    assert_eq!(m.samples[0].labels[0].value, "0");
}

#[test]
fn a_products_own_payload_travels_as_its_bytes_beside_events() {
    let time = UNIX_EPOCH + Duration::from_secs(1);
    // Any arm of Payload will do: core never looks inside.
    let own = WirePayload::new(
        time,
        pb::Payload {
            kind: Some(pb::payload::Kind::Metrics(pb::Metrics {
                samples: vec![pb::Sample {
                    name: "own.reading".into(),
                    value: 3.0,
                    ..Default::default()
                }],
                time_ms: 7,
            })),
        },
    );
    let events = Payload::Events(vec![
        Event::now(event_names::SPOOL_OVERFLOW, Severity::Warning, "dropped")
            .attr("dropped_batches", 3),
    ]);
    let mut parts = encode_payload(&Payload::Encoded(own), 1 << 20).expect("fits");
    parts.extend(encode_payload(&events, 1 << 20).expect("fits"));
    let batch = decode_batch(&encode_batch(1, time, &Health::default(), &parts)).expect("decodes");
    assert_eq!(batch.payloads.len(), 2);
    let Some(pb::payload::Kind::Metrics(p)) = batch.payloads[0].kind.clone() else {
        panic!("wrong payload");
    };
    assert_eq!((p.samples[0].name.as_str(), p.time_ms), ("own.reading", 7));
    let Some(pb::payload::Kind::Events(e)) = batch.payloads[1].kind.clone() else {
        panic!("wrong payload");
    };
    assert_eq!(e.events[0].name, "spool.overflow");
    assert_eq!(e.events[0].attrs["dropped_batches"], "3");
}

#[test]
fn events_carry_their_name_and_the_legacy_kind_where_the_enum_has_one() {
    let known = event_to_wire(&Event::now(
        event_names::SPOOL_OVERFLOW,
        Severity::Warning,
        "x",
    ));
    assert_eq!(known.name, "spool.overflow");
    assert_eq!(known.kind, pb::EventKind::SpoolOverflow as i32);
    let new = event_to_wire(&Event::now("product.noticed", Severity::Info, "x"));
    assert_eq!(new.name, "product.noticed");
    assert_eq!(new.kind, pb::EventKind::Unspecified as i32);
}

#[test]
fn metrics_larger_than_a_batch_are_split_by_samples_and_none_is_lost() {
    let payload = metrics(5000);
    let limit = 16 << 10;
    let parts = encode_payload(&payload, limit).expect("splits");
    assert!(parts.len() > 1, "split into {} parts", parts.len());
    let mut seen = 0;
    for part in &parts {
        let framed = encode_batch(
            1,
            payload.time(),
            &Health::default(),
            std::slice::from_ref(part),
        );
        assert!(framed.len() <= limit, "part of {} bytes", framed.len());
        let batch = decode_batch(&framed).expect("decodes");
        let Some(pb::payload::Kind::Metrics(m)) = batch.payloads[0].kind.clone() else {
            panic!("wrong payload");
        };
        for s in &m.samples {
            assert_eq!(s.value, seen as f64, "in order");
            seen += 1;
        }
    }
    assert_eq!(seen, 5000);
}

#[test]
fn events_are_split_by_events() {
    let events: Vec<Event> = (0..200)
        .map(|i| Event::now("product.line", Severity::Info, "x".repeat(200)).attr("i", i))
        .collect();
    let parts = encode_payload(&Payload::Events(events), 8 << 10).expect("splits");
    assert!(parts.len() >= 5);
    let total: usize = parts
        .iter()
        .map(
            |p| match pb::Payload::decode(p.as_slice()).expect("decodes").kind {
                Some(pb::payload::Kind::Events(e)) => e.events.len(),
                _ => 0,
            },
        )
        .sum();
    assert_eq!(total, 200);
}

#[test]
fn a_products_payload_larger_than_a_batch_is_refused_not_split() {
    let big = WirePayload::new(
        SystemTime::now(),
        pb::Payload {
            kind: Some(pb::payload::Kind::Metrics(pb::Metrics {
                samples: vec![pb::Sample {
                    name: "x".repeat(5000),
                    ..Default::default()
                }],
                time_ms: 0,
            })),
        },
    );
    let err = encode_payload(&Payload::Encoded(big), 4096).expect_err("refused");
    assert_eq!(err.limit, 4096);
    assert!(err.bytes > 4096);
}

#[test]
fn liveness_has_no_number_and_no_payloads() {
    let b = liveness_batch(&Health::default());
    assert_eq!((b.seq, b.liveness, b.payloads.len()), (0, true, 0));
    assert!(b.health.is_some());
}

/// A batch spooled compressed (its head as a frame of raw blocks, its
/// payloads compressed apart) decompresses, as one message, to the same
/// batch as [`encode_batch`] makes, whatever the head's size (a health
/// listing many sources spans several raw blocks of 128 KiB).
#[test]
fn a_compressed_batch_decompresses_to_the_plain_batch() {
    let payload = metrics(300);
    let parts = encode_payload(&payload, 1 << 20).expect("fits");
    for sources in [0, 3, 4000] {
        let health = Health {
            spool_batches: 3,
            sources: (0..sources)
                .map(|i| SourceHealth {
                    name: format!("source number {i} with a long name"),
                    records_read: i,
                    ..SourceHealth::default()
                })
                .collect(),
            ..Health::default()
        };
        let plain = encode_batch(7, payload.time(), &health, &parts);
        let body = compress_payloads(&parts).expect("compresses");
        let spooled = encode_compressed_batch(7, payload.time(), &health, &body);
        assert!(is_compressed(&spooled));
        assert!(!is_compressed(&plain));
        // As the collector reads it: tonic's zstd decoder.
        let mut decompressed = Vec::new();
        std::io::copy(
            &mut zstd::stream::read::Decoder::new(spooled.as_slice()).expect("decoder"),
            &mut decompressed,
        )
        .expect("decompresses");
        assert_eq!(
            decode_batch(&decompressed).expect("decodes"),
            decode_batch(&plain).expect("decodes"),
            "{sources} sources"
        );
        assert_eq!(
            decode_spooled(&spooled).expect("decodes"),
            decode_batch(&plain).expect("decodes")
        );
        assert_eq!(uncompressed(plain.clone(), 4 << 20).expect("as is"), plain);
    }
    let spooled = encode_compressed_batch(1, payload.time(), &Health::default(), &[]);
    assert!(
        uncompressed(spooled, 4).is_err(),
        "a limit on what decompresses"
    );
}
