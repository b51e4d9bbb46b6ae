use std::collections::BTreeMap;

use super::*;

struct TempStore {
    store: SqliteStore,
    dir: std::path::PathBuf,
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn open(name: &str) -> TempStore {
    let dir = std::env::temp_dir().join(format!("sl-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    TempStore {
        store: SqliteStore::open(&dir).await.expect("opens"),
        dir,
    }
}

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
                SampleRow {
                    name: "cpu.usage".into(),
                    labels: vec![],
                    value,
                },
                SampleRow {
                    name: "cpu.usage".into(),
                    labels: vec![("cpu".into(), "0".into())],
                    value: value / 2.0,
                },
            ],
        }],
    }
}

const INSTANCE: &str = "0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn a_batch_sent_twice_is_stored_once() {
    let t = open("dup").await;
    let p = t
        .store
        .create_project("p", b"lic", b"tok")
        .await
        .expect("project");
    let r = t
        .store
        .register_agent(p.id, &hello("web-1", INSTANCE), 1000)
        .await
        .expect("register");
    assert_eq!(r.last_seq, 0);
    for seq in 1..=3 {
        let stored = t
            .store
            .store_batch(
                p.id,
                r.oid,
                INSTANCE,
                metrics(seq, seq as i64 * 1000, 10.0),
                5000,
            )
            .await;
        assert_eq!(stored.expect("stored"), Stored::New);
    }
    let again = t
        .store
        .store_batch(p.id, r.oid, INSTANCE, metrics(2, 2000, 99.0), 6000)
        .await;
    assert_eq!(again.expect("answered"), Stored::Duplicate);
    let range = Range {
        from_ms: 0,
        to_ms: 10_000,
        step_ms: None,
    };
    let series = t
        .store
        .metrics(r.oid, "cpu.usage", range)
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
    let again = t
        .store
        .register_agent(p.id, &hello("web-1", INSTANCE), 7000)
        .await
        .expect("register");
    assert_eq!((again.oid, again.last_seq), (r.oid, 3));
    let agent = t
        .store
        .agent(p.id, r.oid)
        .await
        .expect("query")
        .expect("exists");
    assert_eq!(agent.health.expect("health").batches_acked, 3);
    assert_eq!(agent.first_seen_ms, 1000);
    assert_eq!(
        t.store.delivery(r.oid).await.expect("query"),
        [Delivery {
            instance: INSTANCE.into(),
            batches: 3,
            first_seq: 1,
            last_seq: 3,
            missing: 0
        }]
    );
}

#[tokio::test]
async fn agents_are_scoped_to_their_project() {
    let t = open("scope").await;
    let a = t.store.create_project("a", b"la", b"ta").await.expect("a");
    let b = t.store.create_project("b", b"lb", b"tb").await.expect("b");
    let ra = t
        .store
        .register_agent(a.id, &hello("same-name", INSTANCE), 1)
        .await
        .expect("a agent");
    let rb = t
        .store
        .register_agent(b.id, &hello("same-name", INSTANCE), 1)
        .await
        .expect("b agent");
    assert_ne!(ra.oid, rb.oid, "same name in two projects is two agents");
    assert!(t.store.agent(b.id, ra.oid).await.expect("query").is_none());
    assert_eq!(t.store.agents(a.id).await.expect("list").len(), 1);
    assert_eq!(
        t.store
            .project_by_token(b"tb")
            .await
            .expect("q")
            .map(|p| p.name),
        Some("b".into())
    );
    assert!(
        t.store
            .project_by_license(b"nope")
            .await
            .expect("q")
            .is_none()
    );
    let dup = t.store.create_project("a", b"x", b"y").await;
    assert!(matches!(dup, Err(StoreError::Conflict(_))));
}

#[tokio::test]
async fn the_nearest_snapshot_and_filtered_events_are_found() {
    let t = open("snap").await;
    let p = t.store.create_project("p", b"l", b"t").await.expect("p");
    let r = t
        .store
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
        t.store
            .store_batch(p.id, r.oid, INSTANCE, batch, at)
            .await
            .expect("stored");
    }
    let at = |ms, reason| t.store.process_snapshot(r.oid, ms, reason);
    assert_eq!(
        at(None, None).await.expect("q").expect("some").time_ms,
        9000
    );
    assert_eq!(
        at(Some(4000), None)
            .await
            .expect("q")
            .expect("some")
            .time_ms,
        5000
    );
    assert_eq!(
        at(Some(2000), None)
            .await
            .expect("q")
            .expect("some")
            .time_ms,
        1000
    );
    assert_eq!(
        at(Some(4000), Some("top"))
            .await
            .expect("q")
            .expect("some")
            .time_ms,
        1000
    );
    assert_eq!(
        at(None, Some("threshold"))
            .await
            .expect("q")
            .expect("some")
            .time_ms,
        5000
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
    t.store
        .store_batch(p.id, r.oid, INSTANCE, batch, 300)
        .await
        .expect("stored");
    let q = EventQuery {
        from_ms: 0,
        to_ms: 1000,
        oid: Some(r.oid),
        kind: None,
        limit: 10,
    };
    let all = t.store.events(p.id, &q).await.expect("q");
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
    assert_eq!(t.store.events(p.id, &q).await.expect("q").len(), 1);
    let other = t
        .store
        .create_project("other", b"l2", b"t2")
        .await
        .expect("other");
    assert!(t.store.events(other.id, &q).await.expect("q").is_empty());
}

#[tokio::test]
async fn a_quiet_agent_is_reported_once_until_it_speaks_again() {
    let t = open("quiet").await;
    let p = t.store.create_project("p", b"l", b"t").await.expect("p");
    let r = t
        .store
        .register_agent(p.id, &hello("h", INSTANCE), 0)
        .await
        .expect("r");
    assert!(
        t.store
            .newly_quiet_agents(10_000)
            .await
            .expect("q")
            .is_empty(),
        "two intervals is not yet quiet"
    );
    assert_eq!(
        t.store.newly_quiet_agents(16_000).await.expect("q").len(),
        1
    );
    assert!(
        t.store
            .newly_quiet_agents(30_000)
            .await
            .expect("q")
            .is_empty(),
        "reported once"
    );
    t.store
        .store_batch(p.id, r.oid, INSTANCE, metrics(1, 31_000, 1.0), 31_000)
        .await
        .expect("stored");
    assert!(
        t.store
            .newly_quiet_agents(40_000)
            .await
            .expect("q")
            .is_empty()
    );
    assert_eq!(
        t.store.newly_quiet_agents(47_000).await.expect("q").len(),
        1,
        "quiet again"
    );
}

#[tokio::test]
async fn retention_removes_only_old_data_and_gaps_show_in_delivery() {
    let t = open("purge").await;
    let p = t.store.create_project("p", b"l", b"t").await.expect("p");
    let r = t
        .store
        .register_agent(p.id, &hello("h", INSTANCE), 0)
        .await
        .expect("r");
    for (seq, at) in [(1u64, 1000i64), (2, 2000), (4, 4000)] {
        t.store
            .store_batch(p.id, r.oid, INSTANCE, metrics(seq, at, 1.0), at)
            .await
            .expect("stored");
    }
    assert_eq!(t.store.delivery(r.oid).await.expect("q")[0].missing, 1);
    let purged = t
        .store
        .purge_before(2500, &tokio_util::sync::CancellationToken::new())
        .await
        .expect("purged");
    assert_eq!(purged.points, 4, "two series, two old points each");
    assert_eq!(purged.batches, 2);
    let range = Range {
        from_ms: 0,
        to_ms: 10_000,
        step_ms: None,
    };
    let series = t.store.metrics(r.oid, "cpu.usage", range).await.expect("q");
    assert!(series.iter().all(|s| s.points == [(4000, s.points[0].1)]));
}

#[tokio::test]
async fn long_ranges_are_averaged_into_buckets() {
    let t = open("step").await;
    let p = t.store.create_project("p", b"l", b"t").await.expect("p");
    let r = t
        .store
        .register_agent(p.id, &hello("h", INSTANCE), 0)
        .await
        .expect("r");
    for seq in 1..=6u64 {
        let at = seq as i64 * 1000;
        t.store
            .store_batch(p.id, r.oid, INSTANCE, metrics(seq, at, seq as f64), at)
            .await
            .expect("stored");
    }
    let range = Range {
        from_ms: 0,
        to_ms: 10_000,
        step_ms: Some(3000),
    };
    let series = t.store.metrics(r.oid, "cpu.usage", range).await.expect("q");
    let total = series.iter().find(|s| s.labels.is_empty()).expect("total");
    assert_eq!(total.points, [(0, 1.5), (3000, 4.0), (6000, 6.0)]);
}

#[tokio::test]
async fn latest_values_and_snapshots_are_per_agent_and_project() {
    let t = open("latest").await;
    let p = t.store.create_project("p", b"l", b"t").await.expect("p");
    let other = t.store.create_project("o", b"l2", b"t2").await.expect("o");
    let a = t
        .store
        .register_agent(p.id, &hello("a", INSTANCE), 0)
        .await
        .expect("a");
    let b = t
        .store
        .register_agent(p.id, &hello("b", "ffffffffffffffffffffffffffffffff"), 0)
        .await
        .expect("b");
    let x = t
        .store
        .register_agent(other.id, &hello("x", "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"), 0)
        .await
        .expect("x");
    for (seq, at, v) in [(1u64, 1000i64, 1.0), (2, 2000, 2.0), (3, 3000, 3.0)] {
        t.store
            .store_batch(p.id, a.oid, INSTANCE, metrics(seq, at, v), at)
            .await
            .expect("a");
    }
    t.store
        .store_batch(
            p.id,
            b.oid,
            "ffffffffffffffffffffffffffffffff",
            metrics(1, 500, 7.0),
            500,
        )
        .await
        .expect("b");
    t.store
        .store_batch(
            other.id,
            x.oid,
            "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
            metrics(1, 3000, 9.0),
            3000,
        )
        .await
        .expect("x");
    let mut latest = t.store.latest(p.id, "cpu.usage", 0).await.expect("q");
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
    let recent = t.store.latest(p.id, "cpu.usage", 1000).await.expect("q");
    assert!(
        recent.iter().all(|l| l.oid == a.oid),
        "b's value is older than the window"
    );

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
        t.store
            .store_batch(p.id, a.oid, INSTANCE, batch, at)
            .await
            .expect("stored");
    }
    let snaps = t.store.latest_snapshots(p.id, "top", 0).await.expect("q");
    assert_eq!(snaps.len(), 1);
    assert_eq!((snaps[0].0, snaps[0].1.time_ms), (a.oid, 5000));
    assert!(
        t.store
            .latest_snapshots(p.id, "threshold", 0)
            .await
            .expect("q")
            .is_empty()
    );
}

/// Two agents whose data folders share an instance id (a VM image made
/// after the agent had run once): neither's batches count as the other's.
#[tokio::test]
async fn two_agents_sharing_an_instance_id_do_not_collide() {
    let t = open("shared-instance").await;
    let p = t.store.create_project("p", b"l", b"t").await.expect("p");
    let a = t
        .store
        .register_agent(p.id, &hello("web-1", INSTANCE), 0)
        .await
        .expect("a");
    let b = t
        .store
        .register_agent(p.id, &hello("web-2", INSTANCE), 0)
        .await
        .expect("b");
    for seq in 1..=3 {
        let stored = t
            .store
            .store_batch(
                p.id,
                a.oid,
                INSTANCE,
                metrics(seq, seq as i64 * 1000, 1.0),
                0,
            )
            .await;
        assert_eq!(stored.expect("a"), Stored::New);
    }
    let stored = t
        .store
        .store_batch(p.id, b.oid, INSTANCE, metrics(2, 2000, 9.0), 0)
        .await;
    assert_eq!(
        stored.expect("b"),
        Stored::New,
        "not a duplicate of web-1's seq 2"
    );
    let again = t
        .store
        .register_agent(p.id, &hello("web-2", INSTANCE), 0)
        .await
        .expect("b again");
    assert_eq!(again.last_seq, 2, "web-2's own highest, not web-1's 3");
}
