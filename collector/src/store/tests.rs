//! One test suite for the store's interfaces, written once against
//! [`Store`] and run for every backend (`suite!` at the bottom), as
//! Quickwit's metastore tests are. A new backend adds one `suite!` line.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::group::{GroupLimits, GroupWriter};
use super::*;
use crate::model::{AgentHealth, BatchPayload, SampleRow, SourceHealth};

const INSTANCE: &str = "0123456789abcdef0123456789abcdef";

fn hello(oname: &str, instance: &str) -> AgentHello {
    AgentHello {
        product: "infra".into(),
        oname: oname.into(),
        hostname: oname.into(),
        os: "linux".into(),
        version: "0.1.0".into(),
        boot_time_ms: 1,
        created_time: String::new(),
        instance: instance.into(),
        interval_ms: 5000,
        boot_id: String::new(),
    }
}

/// A project "p" with one agent "h" of instance [`INSTANCE`], registered
/// at time 0: the start of most tests.
async fn one_agent<S: Store>(store: &S) -> (Project, Registered) {
    let p = store.create_project("p", b"l", b"t").await.expect("p");
    let r = store
        .register_agent(p.id, &hello("h", INSTANCE), 0)
        .await
        .expect("r");
    (p, r)
}

fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> SampleRow {
    SampleRow {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        value,
    }
}

fn metrics(seq: u64, time_ms: i64, value: f64) -> IncomingBatch {
    IncomingBatch {
        seq,
        time_ms,
        health: Some(AgentHealth {
            batches_acked: seq,
            ..AgentHealth::default()
        }),
        payloads: vec![BatchPayload::Metrics {
            time_ms,
            samples: vec![
                sample("cpu.usage", &[], value),
                sample("cpu.usage", &[("cpu", "0")], value / 2.0),
            ],
        }],
    }
}

fn item(project_id: i64, oid: i64, instance: &str, batch: IncomingBatch, at: i64) -> BatchToStore {
    BatchToStore {
        project_id,
        oid,
        instance: instance.into(),
        batch,
        received_ms: at,
    }
}

/// Stores one batch alone.
async fn store_one<S: Store>(
    store: &S,
    project_id: i64,
    oid: i64,
    instance: &str,
    batch: IncomingBatch,
    at: i64,
) -> Stored {
    let answers = store
        .store_batches(&[item(project_id, oid, instance, batch, at)])
        .await
        .expect("stored");
    assert_eq!(answers.len(), 1, "one answer per batch");
    answers[0]
}

const HOUR_MS: i64 = 3_600_000;

fn all_time() -> Range {
    Range {
        from_ms: 0,
        to_ms: 100 * HOUR_MS,
        step_ms: None,
    }
}

async fn a_batch_sent_twice_is_stored_once<S: Store>(store: Arc<S>) {
    let p = store
        .create_project("p", b"lic", b"tok")
        .await
        .expect("project");
    let r = store
        .register_agent(p.id, &hello("web-1", INSTANCE), 1000)
        .await
        .expect("register");
    assert_eq!(r.last_seq, 0);
    for seq in 1..=3 {
        let stored = store_one(
            &*store,
            p.id,
            r.oid,
            INSTANCE,
            metrics(seq, seq as i64 * 1000, 10.0),
            5000,
        )
        .await;
        assert_eq!(stored, Stored::NEW);
    }
    let again = store_one(&*store, p.id, r.oid, INSTANCE, metrics(2, 2000, 99.0), 6000).await;
    assert_eq!(again, Stored::Duplicate);
    let series = store
        .metrics(p.id, r.oid, "cpu.usage", all_time())
        .await
        .expect("query");
    assert_eq!(series.len(), 2, "total and one core");
    let total = series.iter().find(|s| s.labels.is_empty()).expect("total");
    assert_eq!(
        total.points,
        [(1000, 10.0), (2000, 10.0), (3000, 10.0)],
        "the resend changed nothing"
    );
    let core = series
        .iter()
        .find(|s| s.labels.get("cpu").map(String::as_str) == Some("0"))
        .expect("core");
    assert_eq!(core.points.len(), 3);
    // A hello from the same instance learns what is already stored.
    let again = store
        .register_agent(p.id, &hello("web-1", INSTANCE), 7000)
        .await
        .expect("register");
    assert_eq!((again.oid, again.last_seq), (r.oid, 3));
    let agent = store
        .agent(p.id, r.oid)
        .await
        .expect("query")
        .expect("exists");
    assert_eq!(agent.health.expect("health").batches_acked, 3);
    assert_eq!(agent.first_seen_ms, 1000);
    assert_eq!(
        store.delivery(p.id, r.oid).await.expect("query"),
        [Delivery {
            instance: INSTANCE.into(),
            batches: 3,
            first_seq: 1,
            last_seq: 3,
            missing: 0,
            retired_through_seq: 0,
        }]
    );
}

async fn the_same_key_twice_in_one_group_is_one_new_one_duplicate<S: Store>(store: Arc<S>) {
    let (p, r) = one_agent(&*store).await;
    let answers = store
        .store_batches(&[
            item(p.id, r.oid, INSTANCE, metrics(1, 1000, 1.0), 1),
            item(p.id, r.oid, INSTANCE, metrics(1, 1000, 7.0), 1),
            item(p.id, r.oid, INSTANCE, metrics(2, 2000, 2.0), 1),
        ])
        .await
        .expect("stored");
    assert_eq!(answers, [Stored::NEW, Stored::Duplicate, Stored::NEW]);
    let series = store
        .metrics(p.id, r.oid, "cpu.usage", all_time())
        .await
        .expect("q");
    let total = series.iter().find(|s| s.labels.is_empty()).expect("total");
    assert_eq!(
        total.points,
        [(1000, 1.0), (2000, 2.0)],
        "the first copy won"
    );
}

async fn agents_and_reads_are_scoped_to_their_project<S: Store>(store: Arc<S>) {
    let a = store.create_project("a", b"la", b"ta").await.expect("a");
    let b = store.create_project("b", b"lb", b"tb").await.expect("b");
    let ra = store
        .register_agent(a.id, &hello("same-name", INSTANCE), 1)
        .await
        .expect("a agent");
    let rb = store
        .register_agent(b.id, &hello("same-name", INSTANCE), 1)
        .await
        .expect("b agent");
    assert_ne!(ra.oid, rb.oid, "same name in two projects is two agents");
    store_one(&*store, a.id, ra.oid, INSTANCE, metrics(1, 1000, 1.0), 1000).await;
    assert!(store.agent(b.id, ra.oid).await.expect("query").is_none());
    assert_eq!(store.agents(a.id).await.expect("list").len(), 1);
    // Every read takes the project: b's token sees nothing of a's agent.
    assert!(
        store
            .metric_names(b.id, ra.oid)
            .await
            .expect("q")
            .is_empty()
    );
    assert!(
        store
            .metrics(b.id, ra.oid, "cpu.usage", all_time())
            .await
            .expect("q")
            .is_empty()
    );
    assert!(store.delivery(b.id, ra.oid).await.expect("q").is_empty());
    assert_eq!(
        store.metric_names(a.id, ra.oid).await.expect("q"),
        ["cpu.usage"]
    );
    assert_eq!(store.delivery(a.id, ra.oid).await.expect("q").len(), 1);
    assert_eq!(
        store
            .project_by_token(b"tb")
            .await
            .expect("q")
            .map(|p| p.name),
        Some("b".into())
    );
    assert!(
        store
            .project_by_license(b"nope")
            .await
            .expect("q")
            .is_none()
    );
    let dup = store.create_project("a", b"x", b"y").await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))));
}

async fn the_nearest_snapshot_and_filtered_events_are_found<S: Store>(store: Arc<S>) {
    let p = store.create_project("p", b"l", b"t").await.expect("p");
    let r = store
        .register_agent(p.id, &hello("h", INSTANCE), 1)
        .await
        .expect("r");
    for (seq, at) in [(1u64, 1000i64), (2, 5000), (3, 9000)] {
        let snapshot = SnapshotRow {
            time_ms: at,
            reason: if seq == 2 {
                "threshold".into()
            } else {
                "top".into()
            },
            total: 10,
            state_counts: BTreeMap::from([("running".into(), 1)]),
            processes: vec![],
        };
        let batch = IncomingBatch {
            seq,
            time_ms: at,
            health: None,
            payloads: vec![BatchPayload::Processes(snapshot)],
        };
        store_one(&*store, p.id, r.oid, INSTANCE, batch, at).await;
    }
    let at = |ms, reason| store.process_snapshot(p.id, r.oid, ms, reason);
    let time = |s: Option<SnapshotRow>| s.expect("some").time_ms;
    assert_eq!(time(at(None, None).await.expect("q")), 9000);
    assert_eq!(time(at(Some(4000), None).await.expect("q")), 5000);
    assert_eq!(time(at(Some(2000), None).await.expect("q")), 1000);
    assert_eq!(time(at(Some(4000), Some("top")).await.expect("q")), 1000);
    assert_eq!(time(at(None, Some("threshold")).await.expect("q")), 5000);
    assert_eq!(
        store
            .snapshot_times(p.id, r.oid, 0, 6000, 10)
            .await
            .expect("q"),
        [(5000, "threshold".to_string()), (1000, "top".to_string())]
    );
    let other = store
        .create_project("other", b"l2", b"t2")
        .await
        .expect("other");
    assert!(
        store
            .process_snapshot(other.id, r.oid, None, None)
            .await
            .expect("q")
            .is_none(),
        "another project's token sees no snapshot"
    );
    assert!(
        store
            .snapshot_times(other.id, r.oid, 0, 10_000, 10)
            .await
            .expect("q")
            .is_empty()
    );

    let event = |kind: &str, time_ms| EventRow {
        time_ms,
        kind: kind.into(),
        severity: "info".into(),
        message: "m".into(),
        attrs: BTreeMap::new(),
    };
    let batch = IncomingBatch {
        seq: 4,
        time_ms: 100,
        health: None,
        payloads: vec![BatchPayload::Events(vec![
            event("agent.started", 100),
            event("spool.overflow", 200),
        ])],
    };
    store_one(&*store, p.id, r.oid, INSTANCE, batch, 300).await;
    let q = EventQuery {
        from_ms: 0,
        to_ms: 1000,
        oid: Some(r.oid),
        kind: None,
        limit: 10,
    };
    let all = store.events(p.id, &q).await.expect("q");
    assert_eq!(
        all.iter()
            .map(|e| e.event.kind.as_str())
            .collect::<Vec<_>>(),
        ["spool.overflow", "agent.started"]
    );
    assert_eq!(all[0].oname.as_deref(), Some("h"));
    let q = EventQuery {
        kind: Some("agent.started".into()),
        ..q
    };
    assert_eq!(store.events(p.id, &q).await.expect("q").len(), 1);
    assert!(store.events(other.id, &q).await.expect("q").is_empty());
}

async fn a_quiet_agent_is_reported_once_until_it_speaks_again<S: Store>(store: Arc<S>) {
    let (p, r) = one_agent(&*store).await;
    assert!(
        store
            .newly_quiet_agents(10_000)
            .await
            .expect("q")
            .is_empty(),
        "two intervals is not yet quiet"
    );
    assert_eq!(store.newly_quiet_agents(16_000).await.expect("q").len(), 1);
    assert!(
        store
            .newly_quiet_agents(30_000)
            .await
            .expect("q")
            .is_empty(),
        "reported once"
    );
    store_one(
        &*store,
        p.id,
        r.oid,
        INSTANCE,
        metrics(1, 31_000, 1.0),
        31_000,
    )
    .await;
    assert!(
        store
            .newly_quiet_agents(40_000)
            .await
            .expect("q")
            .is_empty()
    );
    assert_eq!(
        store.newly_quiet_agents(47_000).await.expect("q").len(),
        1,
        "quiet again"
    );
}

/// A liveness signal keeps an agent "up" and brings its health (per
/// source too), and stores no batch.
async fn a_liveness_signal_counts_as_seen_and_stores_nothing<S: Store>(store: Arc<S>) {
    let (p, r) = one_agent(&*store).await;
    assert_eq!(store.newly_quiet_agents(16_000).await.expect("q").len(), 1);
    let health = AgentHealth {
        sources: vec![SourceHealth {
            name: "files".into(),
            records_read: 5,
            records_sent: 4,
            records_acked: 3,
            records_dropped: 1,
        }],
        ..AgentHealth::default()
    };
    store
        .touch_agents(&[Touch {
            project_id: p.id,
            oid: r.oid,
            health: Some(health.clone()),
            seen_ms: 20_000,
        }])
        .await
        .expect("touched");
    assert!(
        store
            .newly_quiet_agents(30_000)
            .await
            .expect("q")
            .is_empty(),
        "seen at 20 s"
    );
    let agent = store.agent(p.id, r.oid).await.expect("q").expect("agent");
    assert_eq!(agent.last_seen_ms, 20_000);
    assert_eq!(agent.health.expect("health").sources, health.sources);
    assert!(store.delivery(p.id, r.oid).await.expect("q").is_empty());
    let other = store.create_project("o", b"l2", b"t2").await.expect("o");
    store
        .touch_agents(&[Touch {
            project_id: other.id,
            oid: r.oid,
            health: None,
            seen_ms: 90_000,
        }])
        .await
        .expect("answered");
    let agent = store.agent(p.id, r.oid).await.expect("q").expect("agent");
    assert_eq!(
        agent.last_seen_ms, 20_000,
        "another project cannot touch it"
    );
}

/// Retention compared with what the test itself inserted, not with what
/// the store says it removed.
async fn retention_removes_only_old_data_and_purges_empty_series<S: Store>(store: Arc<S>) {
    let (p, r) = one_agent(&*store).await;
    let inserted: Vec<(u64, i64, f64)> =
        vec![(1, 1000, 1.0), (2, 2000, 2.0), (4, 2 * HOUR_MS, 4.0)];
    for &(seq, at, value) in &inserted {
        let mut batch = metrics(seq, at, value);
        if seq == 1 {
            // A series that only the oldest batch has.
            if let BatchPayload::Metrics { samples, .. } = &mut batch.payloads[0] {
                samples.push(sample("gone.soon", &[("disk", "sdz")], 1.0));
            }
        }
        store_one(&*store, p.id, r.oid, INSTANCE, batch, at).await;
    }
    assert_eq!(store.delivery(p.id, r.oid).await.expect("q")[0].missing, 1);
    // A series is dropped once its newest point is over an hour older
    // than the cutoff (a backend may know its newest point that late).
    let cutoff = HOUR_MS + 2500;
    let purged = store
        .purge_before(cutoff, &tokio_util::sync::CancellationToken::new())
        .await
        .expect("purged");
    let old = inserted.iter().filter(|(_, at, _)| *at < cutoff).count() as u64;
    assert_eq!(
        purged.points,
        old * 2 + 1,
        "two series per batch, and gone.soon"
    );
    assert_eq!(purged.series, 1, "gone.soon has no points left");
    let series = store
        .metrics(p.id, r.oid, "cpu.usage", all_time())
        .await
        .expect("q");
    let total = series.iter().find(|s| s.labels.is_empty()).expect("total");
    let kept: Vec<(i64, f64)> = inserted
        .iter()
        .filter(|(_, at, _)| *at >= cutoff)
        .map(|(_, at, v)| (*at, *v))
        .collect();
    assert_eq!(total.points, kept);
    assert_eq!(
        store.metric_names(p.id, r.oid).await.expect("q"),
        ["cpu.usage"],
        "the empty series went"
    );
    // Storing after the purge still works (the series cache was cleared).
    let stored = store_one(
        &*store,
        p.id,
        r.oid,
        INSTANCE,
        metrics(5, 3 * HOUR_MS, 5.0),
        5000,
    )
    .await;
    assert_eq!(stored, Stored::NEW);
}

/// Regression: retention deleted the dedupe records, so a late resend of
/// a batch it had removed was stored again.
async fn a_resend_after_retention_is_still_a_duplicate<S: Store>(store: Arc<S>) {
    let (p, r) = one_agent(&*store).await;
    for (seq, at) in [(1u64, 1000i64), (2, 2000), (3, 4000)] {
        store_one(&*store, p.id, r.oid, INSTANCE, metrics(seq, at, 1.0), at).await;
    }
    store
        .purge_before(2500, &tokio_util::sync::CancellationToken::new())
        .await
        .expect("purged");
    for seq in [1, 2, 3] {
        let again = store_one(
            &*store,
            p.id,
            r.oid,
            INSTANCE,
            metrics(seq, 100_000, 9.0),
            90_000,
        )
        .await;
        assert_eq!(again, Stored::Duplicate, "seq {seq}");
    }
    let series = store
        .metrics(p.id, r.oid, "cpu.usage", all_time())
        .await
        .expect("q");
    assert!(
        series
            .iter()
            .all(|s| s.points.iter().all(|(t, _)| *t != 100_000)),
        "nothing of the resends was stored: {series:?}"
    );
    let hello_again = store
        .register_agent(p.id, &hello("h", INSTANCE), 1)
        .await
        .expect("r");
    assert_eq!(hello_again.last_seq, 3);
    // Everything retired: the audit still says how far the instance got.
    store
        .purge_before(10_000, &tokio_util::sync::CancellationToken::new())
        .await
        .expect("purged");
    assert_eq!(
        store.delivery(p.id, r.oid).await.expect("q"),
        [Delivery {
            instance: INSTANCE.into(),
            batches: 0,
            first_seq: 0,
            last_seq: 3,
            missing: 0,
            retired_through_seq: 3,
        }]
    );
    let hello_again = store
        .register_agent(p.id, &hello("h", INSTANCE), 1)
        .await
        .expect("r");
    assert_eq!(hello_again.last_seq, 3, "the agent drops what is retired");
    assert_eq!(
        store_one(
            &*store,
            p.id,
            r.oid,
            INSTANCE,
            metrics(4, 11_000, 1.0),
            11_000
        )
        .await,
        Stored::NEW
    );
}

async fn long_ranges_are_averaged_into_buckets<S: Store>(store: Arc<S>) {
    let (p, r) = one_agent(&*store).await;
    for seq in 1..=6u64 {
        let at = seq as i64 * 1000;
        store_one(
            &*store,
            p.id,
            r.oid,
            INSTANCE,
            metrics(seq, at, seq as f64),
            at,
        )
        .await;
    }
    let range = Range {
        from_ms: 0,
        to_ms: 10_000,
        step_ms: Some(3000),
    };
    let series = store
        .metrics(p.id, r.oid, "cpu.usage", range)
        .await
        .expect("q");
    let total = series.iter().find(|s| s.labels.is_empty()).expect("total");
    assert_eq!(total.points, [(0, 1.5), (3000, 4.0), (6000, 6.0)]);
}

async fn latest_values_and_snapshots_are_per_agent_and_project<S: Store>(store: Arc<S>) {
    let p = store.create_project("p", b"l", b"t").await.expect("p");
    let other = store.create_project("o", b"l2", b"t2").await.expect("o");
    let (ib, ix) = (
        "ffffffffffffffffffffffffffffffff",
        "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
    );
    let a = store
        .register_agent(p.id, &hello("a", INSTANCE), 0)
        .await
        .expect("a");
    let b = store
        .register_agent(p.id, &hello("b", ib), 0)
        .await
        .expect("b");
    let x = store
        .register_agent(other.id, &hello("x", ix), 0)
        .await
        .expect("x");
    for (seq, at, v) in [(1u64, 1000i64, 1.0), (2, 2000, 2.0), (3, 3000, 3.0)] {
        store_one(&*store, p.id, a.oid, INSTANCE, metrics(seq, at, v), at).await;
    }
    store_one(&*store, p.id, b.oid, ib, metrics(1, 500, 7.0), 500).await;
    store_one(&*store, other.id, x.oid, ix, metrics(1, 3000, 9.0), 3000).await;
    let mut latest = store.latest(p.id, "cpu.usage", 0).await.expect("q");
    latest.sort_by_key(|l| (l.oid, l.labels.len()));
    let got: Vec<(i64, usize, i64, f64)> = latest
        .iter()
        .map(|l| (l.oid, l.labels.len(), l.time_ms, l.value))
        .collect();
    assert_eq!(
        got,
        [
            (a.oid, 0, 3000, 3.0),
            (a.oid, 1, 3000, 1.5),
            (b.oid, 0, 500, 7.0),
            (b.oid, 1, 500, 3.5)
        ]
    );
    let recent = store.latest(p.id, "cpu.usage", 1000).await.expect("q");
    assert!(
        recent.iter().all(|l| l.oid == a.oid),
        "b's value is older than the window"
    );
    // The newest batch lacks the core's series: its value comes from the
    // batch before.
    let only_total = IncomingBatch {
        seq: 6,
        time_ms: 3500,
        health: None,
        payloads: vec![BatchPayload::Metrics {
            time_ms: 3500,
            samples: vec![sample("cpu.usage", &[], 8.0)],
        }],
    };
    store_one(&*store, p.id, a.oid, INSTANCE, only_total, 3500).await;
    let mut mine: Vec<(usize, i64, f64)> = store
        .latest(p.id, "cpu.usage", 0)
        .await
        .expect("q")
        .iter()
        .filter(|l| l.oid == a.oid)
        .map(|l| (l.labels.len(), l.time_ms, l.value))
        .collect();
    mine.sort_by_key(|m| m.0);
    assert_eq!(mine, [(0, 3500, 8.0), (1, 3000, 1.5)]);
    for (seq, at) in [(4u64, 4000i64), (5, 5000)] {
        let snapshot = SnapshotRow {
            time_ms: at,
            reason: "top".into(),
            total: 1,
            state_counts: BTreeMap::new(),
            processes: vec![],
        };
        let batch = IncomingBatch {
            seq,
            time_ms: at,
            health: None,
            payloads: vec![BatchPayload::Processes(snapshot)],
        };
        store_one(&*store, p.id, a.oid, INSTANCE, batch, at).await;
    }
    let snaps = store.latest_snapshots(p.id, "top", 0).await.expect("q");
    assert_eq!(snaps.len(), 1);
    assert_eq!((snaps[0].0, snaps[0].1.time_ms), (a.oid, 5000));
    assert!(
        store
            .latest_snapshots(p.id, "threshold", 0)
            .await
            .expect("q")
            .is_empty()
    );
}

/// Two agents whose data folders share an instance id (a VM image made
/// after the agent had run once): neither's batches count as the other's.
async fn two_agents_sharing_an_instance_id_do_not_collide<S: Store>(store: Arc<S>) {
    let p = store.create_project("p", b"l", b"t").await.expect("p");
    let a = store
        .register_agent(p.id, &hello("web-1", INSTANCE), 0)
        .await
        .expect("a");
    let b = store
        .register_agent(p.id, &hello("web-2", INSTANCE), 0)
        .await
        .expect("b");
    for seq in 1..=3 {
        let stored = store_one(
            &*store,
            p.id,
            a.oid,
            INSTANCE,
            metrics(seq, seq as i64 * 1000, 1.0),
            0,
        )
        .await;
        assert_eq!(stored, Stored::NEW);
    }
    let stored = store_one(&*store, p.id, b.oid, INSTANCE, metrics(2, 2000, 9.0), 0).await;
    assert_eq!(stored, Stored::NEW, "not a duplicate of web-1's seq 2");
    let again = store
        .register_agent(p.id, &hello("web-2", INSTANCE), 0)
        .await
        .expect("b again");
    assert_eq!(again.last_seq, 2, "web-2's own highest, not web-1's 3");
}

/// The series cap (the suite opens stores with [`SUITE_SERIES_CAP`]):
/// samples of new series beyond it are refused and counted; existing
/// series keep flowing; another agent has its own budget.
async fn samples_of_new_series_over_the_cap_are_refused<S: Store>(store: Arc<S>) {
    let p = store.create_project("p", b"l", b"t").await.expect("p");
    let a = store
        .register_agent(p.id, &hello("a", INSTANCE), 0)
        .await
        .expect("a");
    let many = |seq: u64, n: usize| IncomingBatch {
        seq,
        time_ms: seq as i64 * 1000,
        health: None,
        payloads: vec![BatchPayload::Metrics {
            time_ms: seq as i64 * 1000,
            samples: (0..n)
                .map(|i| sample("m", &[("i", &i.to_string())], i as f64))
                .collect(),
        }],
    };
    let cap = SUITE_SERIES_CAP as usize;
    assert_eq!(
        store_one(&*store, p.id, a.oid, INSTANCE, many(1, cap - 1), 1).await,
        Stored::NEW
    );
    assert_eq!(
        store_one(&*store, p.id, a.oid, INSTANCE, many(2, cap + 2), 2).await,
        Stored::New { samples_refused: 2 },
        "one more series fits, two do not"
    );
    assert_eq!(
        store_one(&*store, p.id, a.oid, INSTANCE, many(3, cap + 2), 3).await,
        Stored::New { samples_refused: 2 },
        "still refused"
    );
    let series = store
        .metrics(p.id, a.oid, "m", all_time())
        .await
        .expect("q");
    assert_eq!(series.len(), cap);
    assert!(
        series
            .iter()
            .all(|s| s.points.last().map(|p| p.0) == Some(3000)),
        "existing series keep flowing"
    );
    let b_instance = "ffffffffffffffffffffffffffffffff";
    let b = store
        .register_agent(p.id, &hello("b", b_instance), 0)
        .await
        .expect("b");
    assert_eq!(
        store_one(&*store, p.id, b.oid, b_instance, many(1, cap), 1).await,
        Stored::NEW,
        "per agent"
    );
}

/// Group commit: many streams' batches submitted at once end in fewer
/// transactions than batches, and every answer comes after its batch is
/// readable (the ack follows the commit).
async fn concurrent_batches_share_transactions_and_acks_follow_commits<S: Store>(store: Arc<S>) {
    let p = store.create_project("p", b"l", b"t").await.expect("p");
    let mut agents = Vec::new();
    for i in 0..16 {
        let instance = format!("{i:032x}");
        let r = store
            .register_agent(p.id, &hello(&format!("h{i}"), &instance), 0)
            .await
            .expect("r");
        agents.push((r.oid, instance));
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (writer, task) =
        GroupWriter::start(store.clone(), GroupLimits::default(), shutdown.clone());
    let per_agent = 8u64;
    let mut tasks = Vec::new();
    for (oid, instance) in agents.clone() {
        let writer = writer.clone();
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 1..=per_agent {
                let batch = item(
                    p.id,
                    oid,
                    &instance,
                    metrics(seq, seq as i64 * 1000, 1.0),
                    1,
                );
                let stored = writer.store(batch).await.expect("stored");
                assert_eq!(stored, Stored::NEW);
                // Acked: so it must be there for any reader now.
                let delivery = store.delivery(p.id, oid).await.expect("q");
                assert_eq!(delivery[0].last_seq, seq, "answered before its commit");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let batches = agents.len() as u64 * per_agent;
    let stats = writer.stats();
    let groups = stats.groups.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        stats.batches.load(std::sync::atomic::Ordering::Relaxed),
        batches
    );
    assert!(
        groups < batches,
        "{groups} transactions for {batches} batches"
    );
    shutdown.cancel();
    task.await.expect("writer ends on shutdown");
    assert!(
        matches!(
            writer
                .store(item(
                    p.id,
                    agents[0].0,
                    &agents[0].1,
                    metrics(99, 1, 1.0),
                    1
                ))
                .await,
            Err(group::GroupError::Stopped)
        ),
        "after shutdown a batch is refused, not lost in a queue"
    );
}

fn webhook(url: &str) -> crate::alerts::ChannelConfig {
    crate::alerts::ChannelConfig::Webhook {
        url: url.into(),
        format: crate::alerts::WebhookFormat::Json,
        ca_pem: None,
    }
}

fn rule_spec(name: &str, expr: &str, channels: Vec<i64>) -> crate::alerts::RuleSpec {
    crate::alerts::RuleSpec {
        name: name.into(),
        expr: expr.into(),
        agent: None,
        product: None,
        severity: "warning".into(),
        channels,
        renotify: None,
        enabled: true,
    }
}

/// A change queues one notification per channel of its project (none for
/// another project's channel), due at once; a failed attempt makes it due
/// again at its retry time; a success or a give-up takes it off the
/// queue; every attempt is listed, numbered, newest first.
async fn alert_changes_queue_notifications_until_delivered<S: Store>(store: Arc<S>) {
    use crate::alerts::{AlertChange, AlertKey, Attempt};
    let (p, r) = one_agent(&*store).await;
    let q = store.create_project("q", b"l2", b"t2").await.expect("q");
    let mine = store
        .create_alert_channel(p.id, "ops", &webhook("http://a/1"), 0)
        .await
        .expect("channel");
    let theirs = store
        .create_alert_channel(q.id, "ops", &webhook("http://b/2"), 0)
        .await
        .expect("same name, other project");
    let rule = store
        .create_alert_rule(p.id, &rule_spec("high", "mem > 1", vec![mine.id]), 0)
        .await
        .expect("rule");
    let key = AlertKey {
        rule_id: rule.id,
        oid: r.oid,
        target: String::new(),
    };
    let change = AlertChange {
        project_id: p.id,
        key: key.clone(),
        rule: "high".into(),
        state: "firing",
        time_ms: 1000,
        since_ms: 1000,
        last_notified_ms: Some(1000),
        value: Some(2.0),
        message: "m".into(),
        notifications: vec![(mine.id, "{}".into()), (theirs.id, "{}".into())],
    };
    store
        .record_alert_changes(&[change])
        .await
        .expect("recorded");
    let firing = store.alerts(Some(p.id), true).await.expect("alerts");
    assert_eq!(firing.len(), 1);
    assert_eq!(
        (firing[0].key.clone(), firing[0].oname.as_str()),
        (key, "h")
    );
    assert!(store.alerts(Some(q.id), true).await.expect("q").is_empty());
    let history = store
        .alert_history(p.id, 0, 2000, 10)
        .await
        .expect("history");
    assert_eq!(history.len(), 1);
    assert!(history[0].notified);

    let due = store.due_notifications(1000, 10).await.expect("due");
    assert_eq!(due.len(), 1, "only the project's own channel: {due:?}");
    assert_eq!((due[0].channel_id, due[0].attempts), (mine.id, 0));
    let attempt = |ok: bool, retry_at_ms: Option<i64>, time_ms: i64| Attempt {
        notification_id: due[0].id,
        time_ms,
        elapsed_ms: 3,
        ok,
        status: Some(if ok { 200 } else { 500 }),
        error: (!ok).then(|| "HTTP 500".to_string()),
        retry_at_ms,
    };
    store
        .record_attempt(&attempt(false, Some(5000), 1000))
        .await
        .expect("attempt");
    assert!(
        store
            .due_notifications(4999, 10)
            .await
            .expect("due")
            .is_empty()
    );
    let again = store.due_notifications(5000, 10).await.expect("due");
    assert_eq!((again.len(), again[0].attempts), (1, 1));
    store
        .record_attempt(&attempt(true, None, 5000))
        .await
        .expect("attempt");
    assert!(
        store
            .due_notifications(i64::MAX, 10)
            .await
            .expect("due")
            .is_empty()
    );
    let attempts = store.delivery_attempts(p.id, 10).await.expect("attempts");
    let seen: Vec<(u32, bool, Option<u16>, &str)> = attempts
        .iter()
        .map(|a| (a.attempt, a.ok, a.status, a.state.as_str()))
        .collect();
    assert_eq!(
        seen,
        [(2, true, Some(200), "sent"), (1, false, Some(500), "sent")]
    );
    assert!(
        store
            .delivery_attempts(q.id, 10)
            .await
            .expect("q")
            .is_empty()
    );
}

/// A channel test is never picked by the queue (a crash before its one
/// attempt must not make it a real send later); retention purges
/// resolved alerts with the history, never firing ones.
async fn a_channel_test_is_never_queued_and_resolved_alerts_are_purged<S: Store>(store: Arc<S>) {
    use crate::alerts::{AlertChange, AlertKey};
    let (p, r) = one_agent(&*store).await;
    let channel = store
        .create_alert_channel(p.id, "ops", &webhook("http://a/1"), 0)
        .await
        .expect("channel");
    let test = store
        .queue_notification(p.id, channel.id, "{}", 1000)
        .await
        .expect("queued")
        .expect("the channel");
    assert!(
        store
            .due_notifications(i64::MAX, 10)
            .await
            .expect("due")
            .is_empty(),
        "the queue never sends a test"
    );
    assert!(
        store.notification(test).await.expect("read").is_some(),
        "its sender finds it"
    );

    let rule = store
        .create_alert_rule(p.id, &rule_spec("high", "mem > 1", vec![]), 0)
        .await
        .expect("rule");
    let change = |target: &str, state: &'static str, time_ms: i64| AlertChange {
        project_id: p.id,
        key: AlertKey {
            rule_id: rule.id,
            oid: r.oid,
            target: target.into(),
        },
        rule: "high".into(),
        state,
        time_ms,
        since_ms: time_ms,
        last_notified_ms: None,
        value: None,
        message: "m".into(),
        notifications: vec![],
    };
    store
        .record_alert_changes(&[
            change("old", "resolved", 1000),
            change("firing", "firing", 1000),
            change("new", "resolved", 9000),
        ])
        .await
        .expect("recorded");
    store.purge_alerts(5000).await.expect("purged");
    let mut left: Vec<String> = store
        .alerts(Some(p.id), false)
        .await
        .expect("alerts")
        .into_iter()
        .map(|a| a.key.target)
        .collect();
    left.sort();
    assert_eq!(left, ["firing", "new"]);
}

/// Rules, channels and pauses belong to one project: another project's
/// token cannot change or see them, names are unique per project.
async fn alert_rules_channels_and_pauses_are_scoped<S: Store>(store: Arc<S>) {
    let (p, r) = one_agent(&*store).await;
    let q = store.create_project("q", b"l2", b"t2").await.expect("q");
    let rule = store
        .create_alert_rule(p.id, &rule_spec("a", "no data", vec![]), 0)
        .await
        .expect("rule");
    assert!(matches!(
        store
            .create_alert_rule(p.id, &rule_spec("a", "rebooted", vec![]), 0)
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .update_alert_rule(q.id, rule.id, &rule_spec("b", "no data", vec![]), 1)
            .await
            .expect("update"),
        None
    );
    assert!(
        !store
            .delete_alert_rule(q.id, rule.id)
            .await
            .expect("delete")
    );
    assert!(
        store
            .alert_rules(Some(q.id))
            .await
            .expect("rules")
            .is_empty()
    );
    assert_eq!(store.alert_rules(None).await.expect("all").len(), 1);

    assert!(
        !store
            .pause_agent(q.id, r.oid, None, 0)
            .await
            .expect("pause")
    );
    assert!(store.pauses(None).await.expect("pauses").is_empty());
    assert!(
        store
            .pause_agent(p.id, r.oid, Some(5000), 100)
            .await
            .expect("pause")
    );
    let pauses = store.pauses(Some(p.id)).await.expect("pauses");
    assert_eq!(
        pauses,
        [crate::alerts::Pause {
            oid: r.oid,
            since_ms: 100,
            until_ms: Some(5000)
        }]
    );
    assert!(pauses[0].active(4999) && !pauses[0].active(5000));
    assert!(store.pauses(Some(q.id)).await.expect("q").is_empty());
    assert!(!store.resume_agent(q.id, r.oid).await.expect("resume"));
    assert_eq!(store.pauses(None).await.expect("pauses").len(), 1);
    assert!(store.resume_agent(p.id, r.oid).await.expect("resume"));
    assert!(store.pauses(None).await.expect("pauses").is_empty());
    assert!(
        store
            .delete_alert_rule(p.id, rule.id)
            .await
            .expect("delete")
    );
}

/// The series cap every backend's suite store is opened with.
const SUITE_SERIES_CAP: u64 = 50;

/// Runs every test above against one backend: `$open(name)` returns
/// something holding an `Arc<Store>` in `.store` and cleaning up on drop.
/// A log chunk of `lines` from file offset `from` (each line and its
/// newline), read at `time_ms`, with a `status` field: the line's last
/// word.
fn log_chunk(
    file_id: &str,
    category: &str,
    time_ms: i64,
    from: u64,
    lines: &[String],
) -> BatchPayload {
    use crate::model::{LogChunkRow, LogFieldRow};
    let mut text = String::new();
    let (mut ends, mut starts, mut spans) = (vec![], vec![], vec![]);
    let (mut offsets, mut lens) = (vec![], vec![]);
    let mut at = from;
    for line in lines {
        let word = line.rfind(' ').map_or(0, |i| i + 1);
        offsets.push(word as u32);
        lens.push((line.len() - word) as u32);
        text.push_str(line);
        ends.push(text.len() as u32);
        starts.push(at);
        spans.push(line.len() as u32 + 1);
        at += line.len() as u64 + 1;
    }
    BatchPayload::Logs(crate::model::LogPayload {
        block: None,
        chunk: Arc::new(LogChunkRow {
            file_id: file_id.into(),
            path: format!("/var/log/{category}.log"),
            category: category.into(),
            time_ms,
            attrs: [("pod".to_string(), "web-0".to_string())].into(),
            text,
            ends,
            starts,
            spans,
            cut: vec![],
            times_ms: vec![],
            fields: vec![LogFieldRow {
                name: "status".into(),
                offsets,
                lens,
                ..Default::default()
            }],
        }),
    })
}

fn log_batch(seq: u64, payloads: Vec<BatchPayload>) -> IncomingBatch {
    IncomingBatch {
        seq,
        time_ms: 0,
        health: None,
        payloads,
    }
}

fn lines(range: std::ops::Range<u32>, status: impl Fn(u32) -> u32) -> Vec<String> {
    range
        .map(|i| format!("GET /api/users/{i} HTTP/1.1 {}", status(i)))
        .collect()
}

fn log_query(q: &str) -> crate::logs::LogQuery {
    crate::logs::LogQuery {
        text: crate::logs::text::Query::parse(q),
        from_ms: 0,
        to_ms: i64::MAX,
        limit: 10_000,
        ..Default::default()
    }
}

async fn search_texts<S: Store>(
    store: &S,
    project_id: i64,
    query: &crate::logs::LogQuery,
) -> Vec<String> {
    store
        .search_logs(project_id, query)
        .await
        .expect("search")
        .records
        .into_iter()
        .map(|r| r.text)
        .collect()
}

/// A resent batch changes nothing, and a chunk re-read from the start of
/// the file (an agent that lost its spool) adds only its new records.
async fn a_resent_log_chunk_and_a_reread_file_are_stored_once<S: Store>(store: Arc<S>) {
    let (p, r) = one_agent(&*store).await;
    let first = log_batch(
        1,
        vec![log_chunk("f1", "web", 1000, 0, &lines(0..10, |_| 200))],
    );
    assert_eq!(
        store_one(&*store, p.id, r.oid, INSTANCE, first.clone(), 1).await,
        Stored::NEW
    );
    assert_eq!(
        store_one(&*store, p.id, r.oid, INSTANCE, first, 2).await,
        Stored::Duplicate
    );
    // Another spool instance (the agent lost its spool) reads the file
    // again from 0, now with 5 more lines.
    let reread = log_batch(
        1,
        vec![log_chunk("f1", "web", 2000, 0, &lines(0..15, |_| 200))],
    );
    let other = "fedcba9876543210fedcba9876543210";
    assert_eq!(
        store_one(&*store, p.id, r.oid, other, reread, 3).await,
        Stored::NEW
    );
    let mut texts = search_texts(&*store, p.id, &log_query("")).await;
    texts.sort();
    let mut want = lines(0..15, |_| 200);
    want.sort();
    assert_eq!(texts, want, "every line once");
    // The same offsets in another file are other records.
    let same_offsets = log_batch(
        2,
        vec![log_chunk("f2", "web", 3000, 0, &lines(0..3, |_| 201))],
    );
    store_one(&*store, p.id, r.oid, INSTANCE, same_offsets, 4).await;
    assert_eq!(
        search_texts(&*store, p.id, &log_query("201")).await.len(),
        3
    );
}

/// Pages are newest first, do not overlap, and together are every match;
/// terms, fields, category and project all narrow.
async fn log_search_pages_newest_first_and_filters<S: Store>(store: Arc<S>) {
    let (p, r) = one_agent(&*store).await;
    let mut from = 0;
    for (seq, range) in [(1u64, 0..100u32), (2, 100..200), (3, 200..250)] {
        let text = lines(range.clone(), |i| if i % 10 == 0 { 500 } else { 200 });
        let batch = log_batch(
            seq,
            vec![log_chunk("f", "web", 1000 * seq as i64, from, &text)],
        );
        from += text.iter().map(|l| l.len() as u64 + 1).sum::<u64>();
        store_one(&*store, p.id, r.oid, INSTANCE, batch, 1).await;
    }
    let other = log_batch(
        4,
        vec![log_chunk(
            "g",
            "db",
            5000,
            0,
            &["slow query 500".to_string()],
        )],
    );
    store_one(&*store, p.id, r.oid, INSTANCE, other, 1).await;

    let mut query = log_query("users");
    query.category = Some("web".into());
    query.limit = 100;
    let mut seen = Vec::new();
    loop {
        let page = store.search_logs(p.id, &query).await.expect("page");
        assert!(page.records.len() <= 100);
        seen.extend(
            page.records
                .into_iter()
                .map(|r| (r.time_ms, r.start, r.text)),
        );
        match page.next {
            Some(next) => query.before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 250, "every record once over the pages");
    let mut sorted = seen.clone();
    sorted.sort_by_key(|b| std::cmp::Reverse((b.0, b.1)));
    assert_eq!(seen, sorted, "newest first, then last in the file first");
    assert_eq!(seen[0].2, "GET /api/users/249 HTTP/1.1 200");

    let mut status = log_query("");
    status.fields = vec![("status".into(), "500".into())];
    let found = store.search_logs(p.id, &status).await.expect("q").records;
    assert_eq!(found.len(), 26, "25 web lines and the db one");
    assert!(
        found
            .iter()
            .all(|r| r.fields.get("status").map(String::as_str) == Some("500"))
    );
    assert_eq!(found[0].category, "db");
    assert_eq!(found[0].oname, "h");
    assert_eq!(found[0].attrs.get("pod").map(String::as_str), Some("web-0"));
    assert_eq!(
        search_texts(&*store, p.id, &log_query("users/17")).await,
        ["GET /api/users/17 HTTP/1.1 200"]
    );
    assert_eq!(
        search_texts(&*store, p.id, &log_query("\"SERS/24\" 500")).await,
        ["GET /api/users/240 HTTP/1.1 500"]
    );
    assert!(
        search_texts(&*store, p.id, &log_query("nowhere"))
            .await
            .is_empty()
    );
    let mut window = log_query("");
    (window.from_ms, window.to_ms) = (1500, 2500);
    assert_eq!(
        search_texts(&*store, p.id, &window).await.len(),
        100,
        "the second chunk's"
    );

    let q = store.create_project("q", b"l2", b"t2").await.expect("q");
    assert!(
        search_texts(&*store, q.id, &log_query("")).await.is_empty(),
        "another project sees none"
    );
}

/// Retention by age and by size drops the oldest blocks; a chunk of a
/// dropped block sent again is still a duplicate.
async fn log_retention_drops_old_blocks_and_keeps_the_watermark<S: Store>(store: Arc<S>) {
    let (p, r) = one_agent(&*store).await;
    let mut from = 0;
    let mut chunks = Vec::new();
    for seq in 1..=4u64 {
        let text = lines(seq as u32 * 100..seq as u32 * 100 + 50, |_| 200);
        let chunk = log_chunk("f", "web", seq as i64 * HOUR_MS, from, &text);
        from += text.iter().map(|l| l.len() as u64 + 1).sum::<u64>();
        store_one(
            &*store,
            p.id,
            r.oid,
            INSTANCE,
            log_batch(seq, vec![chunk.clone()]),
            1,
        )
        .await;
        chunks.push(chunk);
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let purged = store
        .purge_logs(HOUR_MS + 1, 0, &stop)
        .await
        .expect("purged");
    assert_eq!((purged.blocks, purged.records), (1, 50));
    assert_eq!(search_texts(&*store, p.id, &log_query("")).await.len(), 150);
    // Sent again under a new batch number: the watermark refuses it.
    store_one(
        &*store,
        p.id,
        r.oid,
        INSTANCE,
        log_batch(9, vec![chunks[0].clone()]),
        1,
    )
    .await;
    assert_eq!(search_texts(&*store, p.id, &log_query("")).await.len(), 150);
    // A cap of one byte leaves nothing; a generous one removes nothing.
    let none = store.purge_logs(0, 1 << 40, &stop).await.expect("purged");
    assert_eq!(none, LogsPurged::default());
    let purged = store.purge_logs(0, 1, &stop).await.expect("purged");
    assert_eq!(purged.blocks, 3);
    assert!(search_texts(&*store, p.id, &log_query("")).await.is_empty());
}

/// Patterns: shapes counted over the range, most frequent first, with an
/// example, and scoped to the project.
async fn log_patterns_count_shapes_in_a_range<S: Store>(store: Arc<S>) {
    let (p, r) = one_agent(&*store).await;
    let mut text = lines(0..30, |i| 200 + i % 3);
    text.extend((0..5).map(|i| format!("connection from 10.0.0.{i} refused")));
    store_one(
        &*store,
        p.id,
        r.oid,
        INSTANCE,
        log_batch(1, vec![log_chunk("f", "web", 1000, 0, &text)]),
        1,
    )
    .await;
    let late = vec!["GET /api/users/1 HTTP/1.1 200".to_string()];
    store_one(
        &*store,
        p.id,
        r.oid,
        INSTANCE,
        log_batch(2, vec![log_chunk("f", "web", 9000, 10_000, &late)]),
        1,
    )
    .await;
    let query = crate::logs::PatternQuery {
        category: Some("web".into()),
        from_ms: 0,
        to_ms: 5000,
        limit: 10,
    };
    let patterns = store.log_patterns(p.id, &query).await.expect("patterns");
    let got: Vec<(&str, u64)> = patterns
        .iter()
        .map(|p| (p.pattern.as_str(), p.count))
        .collect();
    assert_eq!(
        got,
        [
            ("GET /api/users/<num> HTTP/1.1 <num>", 30),
            ("connection from <ip> refused", 5)
        ]
    );
    assert_eq!(patterns[1].example, "connection from 10.0.0.0 refused");
    let all = crate::logs::PatternQuery {
        to_ms: 10_000,
        ..query.clone()
    };
    assert_eq!(
        store.log_patterns(p.id, &all).await.expect("p")[0].count,
        31
    );
    let q = store.create_project("q", b"l2", b"t2").await.expect("q");
    assert!(store.log_patterns(q.id, &all).await.expect("p").is_empty());
}

/// The live feed hears of records after they are stored, and only of new
/// ones.
async fn the_log_feed_carries_what_was_stored<S: Store>(store: Arc<S>) {
    let (p, r) = one_agent(&*store).await;
    let mut feed = store.subscribe_logs();
    let chunk = log_chunk("f", "web", 1000, 0, &lines(0..4, |_| 200));
    store_one(&*store, p.id, r.oid, INSTANCE, log_batch(1, vec![chunk]), 1).await;
    let live = feed.try_recv().expect("published on commit");
    assert_eq!(
        (live.project_id, live.oid, live.first, live.chunk.len()),
        (p.id, r.oid, 0, 4)
    );
    let longer = log_chunk("f", "web", 2000, 0, &lines(0..6, |_| 200));
    store_one(
        &*store,
        p.id,
        r.oid,
        INSTANCE,
        log_batch(2, vec![longer]),
        1,
    )
    .await;
    let live = feed.try_recv().expect("published");
    assert_eq!(live.first, 4, "the four stored before are not new");
    store_one(&*store, p.id, r.oid, INSTANCE, log_batch(2, vec![]), 1).await;
    assert!(feed.try_recv().is_err(), "a duplicate publishes nothing");
}

fn db_snapshot(
    time_ms: i64,
    reason: &str,
    variables: &[(&str, &str)],
) -> crate::model::DbSnapshotRow {
    use crate::model::{DbSessionRow, DbSnapshotBody, DbSnapshotRow, LockNodeRow, LockWaitRow};
    let waits = reason == "lock_wait";
    DbSnapshotRow {
        time_ms,
        reason: reason.into(),
        flavor: "mariadb".into(),
        version: "10.11.6-MariaDB".into(),
        variables: variables
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        body: DbSnapshotBody {
            sessions: (1..=3)
                .map(|id| DbSessionRow {
                    id,
                    user: "app".into(),
                    query: format!("select {time_ms}"),
                    ..DbSessionRow::default()
                })
                .collect(),
            sessions_omitted: 0,
            locks_read: waits,
            locks: if waits {
                vec![
                    LockNodeRow {
                        session_id: 1,
                        root_blocker: true,
                        ..LockNodeRow::default()
                    },
                    LockNodeRow {
                        session_id: 2,
                        parent_id: 1,
                        depth: 1,
                        wait: Some(LockWaitRow {
                            kind: "RECORD".into(),
                            wait_ms: 12_000,
                            ..LockWaitRow::default()
                        }),
                        ..LockNodeRow::default()
                    },
                ]
            } else {
                Vec::new()
            },
            locks_refused: None,
        },
    }
}

fn db_batch(seq: u64, snapshot: crate::model::DbSnapshotRow) -> IncomingBatch {
    IncomingBatch {
        seq,
        time_ms: snapshot.time_ms,
        health: None,
        payloads: vec![BatchPayload::Db(Box::new(snapshot))],
    }
}

/// The snapshot nearest a time, on either side (the earlier on a tie),
/// the newest without a time, the timeline newest first with its counts,
/// another project's agent absent, and a resent batch stored once.
async fn the_nearest_db_snapshot_is_found_and_a_resend_stored_once<S: Store>(store: Arc<S>) {
    let (p, r) = one_agent(&*store).await;
    let reasons = ["periodic", "lock_wait", "periodic"];
    for (i, reason) in reasons.iter().enumerate() {
        let seq = i as u64 + 1;
        let t = 10_000 * seq as i64;
        let stored = store_one(
            &*store,
            p.id,
            r.oid,
            INSTANCE,
            db_batch(seq, db_snapshot(t, reason, &[])),
            1,
        )
        .await;
        assert_eq!(stored, Stored::NEW);
    }
    let again = store_one(
        &*store,
        p.id,
        r.oid,
        INSTANCE,
        db_batch(2, db_snapshot(20_000, "lock_wait", &[])),
        1,
    )
    .await;
    assert_eq!(again, Stored::Duplicate);
    let near = |at: Option<i64>| {
        let store = store.clone();
        async move {
            store
                .db_snapshot_near(p.id, r.oid, at)
                .await
                .expect("read")
                .map(|s| s.time_ms)
        }
    };
    for (at, want) in [
        (Some(0), 10_000),
        (Some(14_999), 10_000),
        (Some(15_000), 10_000),
        (Some(15_001), 20_000),
        (Some(20_000), 20_000),
        (Some(1_000_000), 30_000),
        (None, 30_000),
    ] {
        assert_eq!(near(at).await, Some(want), "at {at:?}");
    }
    let s = store
        .db_snapshot_near(p.id, r.oid, Some(19_000))
        .await
        .expect("read")
        .expect("one");
    assert_eq!(
        (s.reason.as_str(), s.flavor.as_str()),
        ("lock_wait", "mariadb")
    );
    assert_eq!(
        s.body,
        db_snapshot(20_000, "lock_wait", &[]).body,
        "the body intact"
    );
    let times = store
        .db_snapshot_times(p.id, r.oid, 0, 25_000, 100)
        .await
        .expect("times");
    assert_eq!(
        times
            .iter()
            .map(|t| (
                t.time_ms,
                t.reason.as_str(),
                t.sessions,
                t.lock_nodes,
                t.root_blockers,
                t.max_wait_ms
            ))
            .collect::<Vec<_>>(),
        [
            (20_000, "lock_wait", 3, 2, 1, 12_000),
            (10_000, "periodic", 3, 0, 0, 0)
        ],
        "newest first, the resend not twice"
    );
    let other = store.create_project("q", b"l2", b"t2").await.expect("q");
    assert_eq!(
        store
            .db_snapshot_near(other.id, r.oid, None)
            .await
            .expect("read"),
        None
    );
    assert!(
        store
            .db_snapshot_times(other.id, r.oid, 0, i64::MAX, 100)
            .await
            .expect("times")
            .is_empty()
    );
}

/// Variables: a value is kept when it changes, each snapshot shows the
/// values in force at its time, and retention keeps the value in force at
/// the cutoff.
async fn db_variables_are_kept_when_they_change<S: Store>(store: Arc<S>) {
    let (p, r) = one_agent(&*store).await;
    let snapshots = [
        (
            10_000,
            vec![("max_connections", "151"), ("wait_timeout", "28800")],
        ),
        (20_000, vec![("max_connections", "151")]),
        (30_000, vec![("max_connections", "500")]),
        (40_000, vec![]),
    ];
    for (i, (t, vars)) in snapshots.iter().enumerate() {
        store_one(
            &*store,
            p.id,
            r.oid,
            INSTANCE,
            db_batch(i as u64 + 1, db_snapshot(*t, "periodic", vars)),
            1,
        )
        .await;
    }
    let vars_at = |at: i64| {
        let store = store.clone();
        async move {
            store
                .db_snapshot_near(p.id, r.oid, Some(at))
                .await
                .expect("read")
                .expect("one")
                .variables
                .into_iter()
                .collect::<Vec<_>>()
        }
    };
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        vars_at(21_000).await,
        [
            pair("max_connections", "151"),
            pair("wait_timeout", "28800")
        ]
    );
    assert_eq!(
        vars_at(41_000).await,
        [
            pair("max_connections", "500"),
            pair("wait_timeout", "28800")
        ]
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let purged = store.purge_db(35_000, 0, &stop).await.expect("purged");
    assert_eq!(purged.snapshots, 3);
    assert_eq!(
        purged.variables, 1,
        "151 was stored once (at 10 s, not again at 20 s) and 500 replaced it before the cutoff"
    );
    assert_eq!(
        vars_at(41_000).await,
        [
            pair("max_connections", "500"),
            pair("wait_timeout", "28800")
        ]
    );
}

/// Retention by age and by size drops the oldest snapshots; a generous cap
/// drops nothing.
async fn db_retention_drops_old_and_oldest_snapshots<S: Store>(store: Arc<S>) {
    let (p, r) = one_agent(&*store).await;
    for seq in 1..=4u64 {
        store_one(
            &*store,
            p.id,
            r.oid,
            INSTANCE,
            db_batch(seq, db_snapshot(seq as i64 * HOUR_MS, "periodic", &[])),
            1,
        )
        .await;
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let purged = store.purge_db(HOUR_MS + 1, 0, &stop).await.expect("purged");
    assert_eq!(purged.snapshots, 1);
    assert!(purged.bytes > 0);
    let times = |store: Arc<S>| async move {
        store
            .db_snapshot_times(p.id, r.oid, 0, i64::MAX, 100)
            .await
            .expect("times")
            .into_iter()
            .map(|t| t.time_ms / HOUR_MS)
            .collect::<Vec<_>>()
    };
    assert_eq!(times(store.clone()).await, [4, 3, 2]);
    let none = store.purge_db(0, 1 << 40, &stop).await.expect("purged");
    assert_eq!(none, DbPurged::default());
    // Room for about two: the oldest goes.
    let one = purged.bytes;
    let purged = store
        .purge_db(0, 2 * one + one / 2, &stop)
        .await
        .expect("purged");
    assert_eq!(purged.snapshots, 1);
    assert_eq!(times(store.clone()).await, [4, 3]);
    let purged = store.purge_db(0, 1, &stop).await.expect("purged");
    assert_eq!(purged.snapshots, 2);
    assert_eq!(
        store
            .db_snapshot_near(p.id, r.oid, None)
            .await
            .expect("read"),
        None
    );
}

fn url_check(
    target: &str,
    time_ms: i64,
    state: crate::model::UrlState,
) -> crate::model::UrlCheckRow {
    use crate::model::{UrlCertificateRow, UrlCheckRow, UrlPhases, UrlState};
    let ok = state == UrlState::Up;
    UrlCheckRow {
        target: target.into(),
        url: format!("https://{target}.example/health"),
        method: "GET".into(),
        time_ms,
        state,
        ok,
        failure: if ok { "none" } else { "status" }.into(),
        detail: if ok {
            String::new()
        } else {
            "status 503, expected 200-399".into()
        },
        phases: UrlPhases {
            dns_us: 100,
            connect_us: 200,
            tls_us: 300,
            first_byte_us: 400,
            transfer_us: 50,
            total_us: 1050,
        },
        status_code: if ok { 200 } else { 503 },
        http_version: "HTTP/1.1".into(),
        body_bytes: 512,
        redirects: 0,
        final_url: String::new(),
        remote_ip: "127.0.0.1".into(),
        certificate: Some(UrlCertificateRow {
            subject: format!("CN={target}.example"),
            issuer: "CN=Test CA".into(),
            not_after_ms: 1_900_000_000_000,
            days_left: 30,
            chain_days_left: 29,
        }),
    }
}

fn url_batch(seq: u64, checks: Vec<crate::model::UrlCheckRow>) -> IncomingBatch {
    IncomingBatch {
        seq,
        time_ms: checks.last().map_or(0, |c| c.time_ms),
        health: None,
        payloads: vec![BatchPayload::Url(checks)],
    }
}

/// A target's current state is its newest check's, since the first check
/// that found it so; a resent batch is stored once; a late older check is
/// kept in the results but does not turn the clock back; the list is down
/// first; results are newest first within the range and limit; another
/// project sees nothing.
async fn url_targets_show_the_newest_check_and_since_when<S: Store>(store: Arc<S>) {
    use crate::model::{UrlState, UrlTargetFilter};
    let (p, r) = one_agent(&*store).await;
    let batches = [
        vec![
            url_check("shop", 10_000, UrlState::Up),
            url_check("api", 10_000, UrlState::Up),
        ],
        vec![url_check("shop", 20_000, UrlState::Up)],
        vec![url_check("shop", 30_000, UrlState::Pending)],
        vec![
            url_check("shop", 40_000, UrlState::Down),
            url_check("api", 40_000, UrlState::Degraded),
        ],
        vec![url_check("shop", 50_000, UrlState::Down)],
    ];
    for (i, checks) in batches.iter().enumerate() {
        let stored = store_one(
            &*store,
            p.id,
            r.oid,
            INSTANCE,
            url_batch(i as u64 + 1, checks.clone()),
            1,
        )
        .await;
        assert_eq!(stored, Stored::NEW);
    }
    let again = store_one(
        &*store,
        p.id,
        r.oid,
        INSTANCE,
        url_batch(4, batches[3].clone()),
        1,
    )
    .await;
    assert_eq!(again, Stored::Duplicate);
    // A spooled batch from before arrives late.
    let late = store_one(
        &*store,
        p.id,
        r.oid,
        INSTANCE,
        url_batch(6, vec![url_check("shop", 15_000, UrlState::Up)]),
        1,
    )
    .await;
    assert_eq!(late, Stored::NEW);

    let all = store
        .url_targets(p.id, &UrlTargetFilter::default())
        .await
        .expect("targets");
    let summary: Vec<_> = all
        .iter()
        .map(|t| {
            (
                t.latest.target.as_str(),
                t.latest.state,
                t.since_ms,
                t.latest.time_ms,
                t.oname.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("shop", UrlState::Down, 40_000, 50_000, "h"),
            ("api", UrlState::Degraded, 40_000, 40_000, "h"),
        ],
        "down first; since the first check in the state; the late check changed nothing"
    );
    let shop = &all[0].latest;
    assert_eq!(shop.url, "https://shop.example/health");
    assert_eq!((shop.status_code, shop.failure.as_str()), (503, "status"));
    assert_eq!(shop.phases.total_us, 1050);
    assert_eq!(
        shop.certificate.as_ref().map(|c| c.chain_days_left),
        Some(29)
    );
    let only_degraded = store
        .url_targets(
            p.id,
            &UrlTargetFilter {
                state: Some(UrlState::Degraded),
                ..UrlTargetFilter::default()
            },
        )
        .await
        .expect("targets");
    assert_eq!(only_degraded.len(), 1);
    assert_eq!(only_degraded[0].latest.target, "api");

    let times = |from: i64, to: i64, limit: i64| {
        let store = store.clone();
        async move {
            store
                .url_results(p.id, r.oid, "shop", from, to, limit)
                .await
                .expect("results")
                .into_iter()
                .map(|c| (c.time_ms, c.state))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        times(0, i64::MAX, 100).await,
        [
            (50_000, UrlState::Down),
            (40_000, UrlState::Down),
            (30_000, UrlState::Pending),
            (20_000, UrlState::Up),
            (15_000, UrlState::Up),
            (10_000, UrlState::Up),
        ],
        "each check once, newest first, the late one in its place"
    );
    assert_eq!(
        times(15_000, 40_000, 2).await,
        [(40_000, UrlState::Down), (30_000, UrlState::Pending)]
    );
    let other = store.create_project("q", b"l2", b"t2").await.expect("q");
    assert!(
        store
            .url_targets(other.id, &UrlTargetFilter::default())
            .await
            .expect("targets")
            .is_empty()
    );
    assert!(
        store
            .url_results(other.id, r.oid, "shop", 0, i64::MAX, 100)
            .await
            .expect("results")
            .is_empty()
    );
}

/// Two agents (regions) checking a target of the same name keep their own
/// state and results.
async fn url_targets_of_one_name_are_kept_per_agent<S: Store>(store: Arc<S>) {
    use crate::model::{UrlState, UrlTargetFilter};
    let (p, eu) = one_agent(&*store).await;
    let us = store
        .register_agent(p.id, &hello("a-us", "1111111111111111ffffffffffffffff"), 0)
        .await
        .expect("us");
    store_one(
        &*store,
        p.id,
        eu.oid,
        INSTANCE,
        url_batch(1, vec![url_check("shop", 10_000, UrlState::Up)]),
        1,
    )
    .await;
    store_one(
        &*store,
        p.id,
        us.oid,
        "1111111111111111ffffffffffffffff",
        url_batch(1, vec![url_check("shop", 11_000, UrlState::Down)]),
        1,
    )
    .await;
    let shops = store
        .url_targets(
            p.id,
            &UrlTargetFilter {
                target: Some("shop".into()),
                ..UrlTargetFilter::default()
            },
        )
        .await
        .expect("targets");
    assert_eq!(
        shops
            .iter()
            .map(|t| (t.oname.as_str(), t.latest.state))
            .collect::<Vec<_>>(),
        [("a-us", UrlState::Down), ("h", UrlState::Up)]
    );
    let eu_only = store
        .url_targets(
            p.id,
            &UrlTargetFilter {
                oid: Some(eu.oid),
                ..UrlTargetFilter::default()
            },
        )
        .await
        .expect("targets");
    assert_eq!(eu_only.len(), 1);
    assert_eq!(eu_only[0].oid, eu.oid);
    let us_results = store
        .url_results(p.id, us.oid, "shop", 0, i64::MAX, 10)
        .await
        .expect("results");
    assert_eq!(
        us_results.iter().map(|c| c.time_ms).collect::<Vec<_>>(),
        [11_000]
    );
}

/// Retention by age drops old checks and the targets no longer checked;
/// by size the oldest checks go first; a generous cap drops nothing.
async fn url_retention_drops_old_checks_and_forgotten_targets<S: Store>(store: Arc<S>) {
    use crate::model::{UrlState, UrlTargetFilter};
    let (p, r) = one_agent(&*store).await;
    for seq in 1..=4u64 {
        let t = seq as i64 * HOUR_MS;
        let mut checks = vec![url_check("shop", t, UrlState::Up)];
        if seq == 1 {
            // A target removed from the agent's configuration after one check.
            checks.push(url_check("gone", t, UrlState::Up));
        }
        store_one(&*store, p.id, r.oid, INSTANCE, url_batch(seq, checks), 1).await;
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let purged = store
        .purge_url(HOUR_MS + 1, 0, &stop)
        .await
        .expect("purged");
    assert_eq!((purged.checks, purged.targets), (2, 1));
    assert!(purged.bytes > 0);
    let names = |store: Arc<S>| async move {
        store
            .url_targets(p.id, &UrlTargetFilter::default())
            .await
            .expect("targets")
            .into_iter()
            .map(|t| t.latest.target)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(store.clone()).await, ["shop"]);
    let hours = |store: Arc<S>| async move {
        store
            .url_results(p.id, r.oid, "shop", 0, i64::MAX, 100)
            .await
            .expect("results")
            .into_iter()
            .map(|c| c.time_ms / HOUR_MS)
            .collect::<Vec<_>>()
    };
    assert_eq!(hours(store.clone()).await, [4, 3, 2]);
    let none = store.purge_url(0, 1 << 40, &stop).await.expect("purged");
    assert_eq!(none, UrlPurged::default());
    // The two purged were of one size; the three left take exactly three
    // times it, so a cap of that removes nothing (the running total went
    // down with the age purge).
    let one = purged.bytes / 2;
    let exact = store.purge_url(0, 3 * one, &stop).await.expect("purged");
    assert_eq!(exact, UrlPurged::default());
    // Room for about two checks: the oldest goes.
    let purged = store
        .purge_url(0, 2 * one + one / 2, &stop)
        .await
        .expect("purged");
    assert_eq!((purged.checks, purged.targets), (1, 0));
    assert_eq!(hours(store.clone()).await, [4, 3]);
    let purged = store.purge_url(0, 1, &stop).await.expect("purged");
    assert_eq!((purged.checks, purged.targets), (2, 1));
    assert!(names(store.clone()).await.is_empty());
}

/// Several names at once, one list per name in the order asked; a series
/// made after a first read is in the next (the fleet reads this on every
/// refresh, and a backend may keep what it listed).
async fn latest_of_several_names_sees_series_made_since<S: Store>(store: Arc<S>) {
    let (p, r) = one_agent(&*store).await;
    let now = crate::now_ms();
    let batch = |seq: u64, at: i64, samples: Vec<SampleRow>| IncomingBatch {
        seq,
        time_ms: at,
        health: None,
        payloads: vec![BatchPayload::Metrics {
            time_ms: at,
            samples,
        }],
    };
    store_one(
        &*store,
        p.id,
        r.oid,
        INSTANCE,
        batch(
            1,
            now - 2000,
            vec![
                sample("mem.used_pct", &[], 40.0),
                sample("disk.used_pct", &[("mount", "/")], 50.0),
            ],
        ),
        now,
    )
    .await;
    let names = ["disk.used_pct", "nothing", "mem.used_pct"];
    let lists = store.latest_of(p.id, &names, 0).await.expect("q");
    let values = |lists: &[Vec<Latest>]| -> Vec<Vec<f64>> {
        lists
            .iter()
            .map(|l| {
                let mut v: Vec<f64> = l.iter().map(|x| x.value).collect();
                v.sort_by(f64::total_cmp);
                v
            })
            .collect()
    };
    assert_eq!(values(&lists), [vec![50.0], vec![], vec![40.0]]);
    store_one(
        &*store,
        p.id,
        r.oid,
        INSTANCE,
        batch(
            2,
            now - 1000,
            vec![
                sample("mem.used_pct", &[], 41.0),
                sample("disk.used_pct", &[("mount", "/")], 51.0),
                sample("disk.used_pct", &[("mount", "/var")], 70.0),
            ],
        ),
        now,
    )
    .await;
    let lists = store.latest_of(p.id, &names, 0).await.expect("q");
    assert_eq!(values(&lists), [vec![51.0, 70.0], vec![], vec![41.0]]);
    let var = lists[0]
        .iter()
        .find(|l| l.labels.get("mount").map(String::as_str) == Some("/var"))
        .expect("the new mount");
    assert_eq!((var.oid, var.time_ms), (r.oid, now - 1000));
    let other = store.create_project("o", b"l2", b"t2").await.expect("o");
    let none = store.latest_of(other.id, &names, 0).await.expect("q");
    assert!(none.iter().all(Vec::is_empty), "scoped to the project");
}

/// Terminating an agent deletes every kind of its rows at once, leaves the
/// other agent untouched, refuses its batches and its Hello (the agent
/// stays listed) until it is enabled, after which it stores again.
async fn a_terminated_agent_loses_its_data_and_is_refused_until_enabled<S: Store>(store: Arc<S>) {
    use crate::model::{EventRow, UrlState, UrlTargetFilter};
    let p = store.create_project("p", b"l", b"t").await.expect("p");
    let other = "ffffffffffffffffffffffffffffffff";
    let a = store
        .register_agent(p.id, &hello("a", INSTANCE), 0)
        .await
        .expect("a");
    let b = store
        .register_agent(p.id, &hello("b", other), 0)
        .await
        .expect("b");
    let event = EventRow {
        time_ms: 1500,
        kind: "cpu.high".into(),
        severity: "warning".into(),
        message: "hot".into(),
        attrs: BTreeMap::new(),
    };
    for (oid, instance) in [(a.oid, INSTANCE), (b.oid, other)] {
        let batches = [
            metrics(1, 1000, 10.0),
            IncomingBatch {
                seq: 2,
                time_ms: 1500,
                health: None,
                payloads: vec![
                    BatchPayload::Events(vec![event.clone()]),
                    BatchPayload::Processes(SnapshotRow {
                        time_ms: 1500,
                        reason: "top".into(),
                        total: 1,
                        state_counts: BTreeMap::new(),
                        processes: vec![],
                    }),
                ],
            },
            log_batch(
                3,
                vec![log_chunk("f1", "app", 1600, 0, &lines(0..5, |_| 200))],
            ),
            db_batch(
                4,
                db_snapshot(1700, "periodic", &[("max_connections", "151")]),
            ),
            url_batch(5, vec![url_check("shop", 1800, UrlState::Up)]),
        ];
        for batch in batches {
            let stored = store_one(&*store, p.id, oid, instance, batch, 2000).await;
            assert_eq!(stored, Stored::NEW);
        }
    }
    let holds = async |oid: i64| -> Vec<usize> {
        let events = EventQuery {
            from_ms: 0,
            to_ms: i64::MAX,
            oid: Some(oid),
            kind: None,
            limit: 100,
        };
        let mut logs = log_query("GET");
        logs.oid = Some(oid);
        let url = UrlTargetFilter {
            oid: Some(oid),
            ..UrlTargetFilter::default()
        };
        vec![
            store
                .metrics(p.id, oid, "cpu.usage", all_time())
                .await
                .expect("m")
                .len(),
            store
                .latest(p.id, "cpu.usage", 0)
                .await
                .expect("l")
                .iter()
                .filter(|l| l.oid == oid)
                .count(),
            store.events(p.id, &events).await.expect("e").len(),
            usize::from(
                store
                    .process_snapshot(p.id, oid, None, None)
                    .await
                    .expect("s")
                    .is_some(),
            ),
            store
                .search_logs(p.id, &logs)
                .await
                .expect("logs")
                .records
                .len(),
            usize::from(
                store
                    .db_snapshot_near(p.id, oid, None)
                    .await
                    .expect("db")
                    .is_some(),
            ),
            store.url_targets(p.id, &url).await.expect("url").len(),
            store.delivery(p.id, oid).await.expect("d").len(),
        ]
    };
    let full = vec![2, 2, 1, 1, 5, 1, 1, 1];
    assert_eq!(holds(a.oid).await, full);
    let deleted = store
        .terminate_agent(p.id, a.oid, 3000)
        .await
        .expect("terminate")
        .expect("a exists");
    assert_eq!(
        (
            deleted.series,
            deleted.metric_rows,
            deleted.events,
            deleted.process_snapshots
        ),
        (2, 1, 1, 1)
    );
    assert_eq!(
        (deleted.log_blocks, deleted.db_snapshots, deleted.url_checks),
        (1, 1, 1)
    );
    assert_eq!(holds(a.oid).await, [0; 8], "every kind of a's data is gone");
    assert_eq!(holds(b.oid).await, full, "b is untouched");
    let listed = store
        .agent(p.id, a.oid)
        .await
        .expect("q")
        .expect("still listed");
    assert_eq!(listed.terminated_ms, Some(3000));

    let refused = store_one(&*store, p.id, a.oid, INSTANCE, metrics(6, 4000, 1.0), 4000).await;
    assert_eq!(refused, Stored::Terminated);
    let again = store
        .register_agent(p.id, &hello("a", INSTANCE), 5000)
        .await
        .expect("hello");
    assert!(again.terminated, "a's Hello is refused");
    assert_eq!(again.oid, a.oid);
    assert_eq!(holds(a.oid).await, [0; 8], "nothing was stored meanwhile");
    let quiet = store.newly_quiet_agents(i64::MAX / 2).await.expect("quiet");
    assert!(
        quiet.iter().all(|q| q.oid != a.oid),
        "no no-data alert for it"
    );

    let other_project = store.create_project("o", b"l2", b"t2").await.expect("o");
    assert_eq!(
        store
            .terminate_agent(other_project.id, b.oid, 1)
            .await
            .expect("q"),
        None
    );
    assert!(
        !store
            .enable_agent(other_project.id, a.oid)
            .await
            .expect("q")
    );

    assert!(store.enable_agent(p.id, a.oid).await.expect("enable"));
    let back = store
        .register_agent(p.id, &hello("a", INSTANCE), 6000)
        .await
        .expect("hello");
    assert_eq!(
        (back.oid, back.terminated, back.last_seq),
        (a.oid, false, 0)
    );
    let stored = store_one(&*store, p.id, a.oid, INSTANCE, metrics(6, 6000, 3.0), 6000).await;
    assert_eq!(stored, Stored::NEW);
    let points = store
        .metrics(p.id, a.oid, "cpu.usage", all_time())
        .await
        .expect("m");
    let total = points.iter().find(|s| s.labels.is_empty()).expect("total");
    assert_eq!(total.points, [(6000, 3.0)]);
}

macro_rules! suite {
    ($backend:ident, $open:path) => {
        mod $backend {
            suite!(@tests $open;
                a_batch_sent_twice_is_stored_once,
                the_same_key_twice_in_one_group_is_one_new_one_duplicate,
                agents_and_reads_are_scoped_to_their_project,
                the_nearest_snapshot_and_filtered_events_are_found,
                a_quiet_agent_is_reported_once_until_it_speaks_again,
                a_liveness_signal_counts_as_seen_and_stores_nothing,
                retention_removes_only_old_data_and_purges_empty_series,
                a_resend_after_retention_is_still_a_duplicate,
                long_ranges_are_averaged_into_buckets,
                latest_values_and_snapshots_are_per_agent_and_project,
                latest_of_several_names_sees_series_made_since,
                a_terminated_agent_loses_its_data_and_is_refused_until_enabled,
                two_agents_sharing_an_instance_id_do_not_collide,
                samples_of_new_series_over_the_cap_are_refused,
                concurrent_batches_share_transactions_and_acks_follow_commits,
                a_resent_log_chunk_and_a_reread_file_are_stored_once,
                log_search_pages_newest_first_and_filters,
                log_retention_drops_old_blocks_and_keeps_the_watermark,
                log_patterns_count_shapes_in_a_range,
                the_log_feed_carries_what_was_stored,
                the_nearest_db_snapshot_is_found_and_a_resend_stored_once,
                db_variables_are_kept_when_they_change,
                db_retention_drops_old_and_oldest_snapshots,
                url_targets_show_the_newest_check_and_since_when,
                url_targets_of_one_name_are_kept_per_agent,
                url_retention_drops_old_checks_and_forgotten_targets,
                alert_changes_queue_notifications_until_delivered,
                alert_rules_channels_and_pauses_are_scoped,
                a_channel_test_is_never_queued_and_resolved_alerts_are_purged,
            );
        }
    };
    (@tests $open:path; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let opened = $open(stringify!($test)).await;
                super::$test(opened.store.clone()).await;
            }
        )*
    };
}

/// A SQLite store in a scratch folder, removed on drop.
struct TempSqlite {
    store: Arc<sqlite::SqliteStore>,
    dir: std::path::PathBuf,
}

impl Drop for TempSqlite {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn open_sqlite(name: &str) -> TempSqlite {
    let dir = std::env::temp_dir().join(format!("sl-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let limits = StoreLimits {
        series_per_agent: SUITE_SERIES_CAP,
    };
    TempSqlite {
        store: Arc::new(
            sqlite::SqliteStore::open_with(&dir, limits)
                .await
                .expect("opens"),
        ),
        dir,
    }
}

suite!(on_sqlite, super::open_sqlite);
