//! The evaluator against a real SQLite store, ticked at chosen times: a
//! dip between two ticks delays a firing, the server agent's own
//! threshold events fire and resolve an alert, a rule's scope holds, and
//! a change queues one notification per channel.

use std::sync::Arc;

use super::*;
use crate::alerts::{ChannelConfig, RuleSpec, WebhookFormat};
use crate::model::{AgentHello, BatchPayload, EventRow, IncomingBatch, Project, SampleRow};
use crate::store::sqlite::SqliteStore;
use crate::store::{AlertStore, BatchSink, BatchToStore, Registry};

struct Fixture {
    store: Arc<SqliteStore>,
    project: Project,
    oid: i64,
    dir: std::path::PathBuf,
    seq: u64,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn fixture(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("sl-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(SqliteStore::open(&dir).await.expect("store"));
    let project = store.create_project("p", b"l", b"t").await.expect("p");
    let hello = AgentHello {
        product: "infra".into(),
        oname: "web-1".into(),
        hostname: "web-1".into(),
        os: String::new(),
        version: String::new(),
        boot_time_ms: 0,
        created_time: String::new(),
        instance: "0123456789abcdef0123456789abcdef".into(),
        interval_ms: 1000,
        boot_id: String::new(),
    };
    let oid = store
        .register_agent(project.id, &hello, crate::now_ms())
        .await
        .expect("agent")
        .oid;
    Fixture {
        store,
        project,
        oid,
        dir,
        seq: 0,
    }
}

impl Fixture {
    async fn point(&mut self, time_ms: i64, value: f64) {
        self.seq += 1;
        let batch = BatchToStore {
            project_id: self.project.id,
            oid: self.oid,
            instance: "0123456789abcdef0123456789abcdef".into(),
            batch: IncomingBatch {
                seq: self.seq,
                time_ms,
                health: None,
                payloads: vec![BatchPayload::Metrics {
                    time_ms,
                    samples: vec![SampleRow {
                        name: "mem.used_pct".into(),
                        labels: vec![],
                        value,
                    }],
                }],
            },
            received_ms: time_ms,
        };
        self.store.store_batches(&[batch]).await.expect("stored");
    }

    async fn rule(&self, expr: &str, agent: Option<&str>, channels: Vec<i64>) -> i64 {
        let spec = RuleSpec {
            name: format!("rule {expr} {}", agent.unwrap_or("any")),
            expr: expr.into(),
            agent: agent.map(str::to_string),
            product: None,
            severity: "warning".into(),
            channels,
            renotify: None,
            enabled: true,
        };
        self.store
            .create_alert_rule(self.project.id, &spec, 0)
            .await
            .expect("rule")
            .id
    }

    async fn firing(&self) -> Vec<crate::alerts::AlertRow> {
        self.store
            .alerts(Some(self.project.id), true)
            .await
            .expect("alerts")
    }
}

#[tokio::test]
async fn a_dip_between_two_ticks_delays_the_firing() {
    let mut f = fixture("dip").await;
    f.rule("mem.used_pct > 90 for 2s", None, vec![]).await;
    let mut evaluator = Evaluator::start(f.store.clone(), AlertsHub::default())
        .await
        .expect("evaluator");
    let t0 = crate::now_ms() - 10_000;
    f.point(t0, 95.0).await;
    assert_eq!(evaluator.tick(t0).await.expect("tick"), 0);
    // Points every 500 ms, one of them under the limit; the ticks only
    // see the newest point.
    for (i, v) in [95.0, 95.0, 50.0, 95.0, 95.0].into_iter().enumerate() {
        f.point(t0 + 500 * (i as i64 + 1), v).await;
    }
    assert_eq!(
        evaluator.tick(t0 + 2500).await.expect("tick"),
        0,
        "the dip at +1.5 s restarts the 2 s"
    );
    for i in 6..=8 {
        f.point(t0 + 500 * i, 95.0).await;
    }
    assert_eq!(evaluator.tick(t0 + 4000).await.expect("tick"), 1);
    let firing = f.firing().await;
    assert_eq!(firing.len(), 1);
    assert_eq!(firing[0].value, Some(95.0));
    assert_eq!(firing[0].oname, "web-1");
    assert!(
        firing[0].message.contains("is 95 on web-1"),
        "{}",
        firing[0].message
    );
}

#[tokio::test]
async fn the_server_agents_threshold_events_fire_and_resolve_an_alert() {
    let f = fixture("events").await;
    let webhook = f
        .store
        .create_alert_channel(
            f.project.id,
            "ops",
            &ChannelConfig::Webhook {
                url: "http://127.0.0.1:9/hook".into(),
                format: WebhookFormat::Json,
                ca_pem: None,
            },
            0,
        )
        .await
        .expect("channel");
    f.rule("threshold \"mem\"", None, vec![webhook.id]).await;
    let hub = AlertsHub::default();
    let mut transitions = hub.transitions.subscribe();
    let mut evaluator = Evaluator::start(f.store.clone(), hub)
        .await
        .expect("evaluator");
    let now = crate::now_ms();
    let event = |kind: &str, key: &str, at: i64| EventRow {
        time_ms: at,
        kind: kind.into(),
        severity: "critical".into(),
        message: format!("{kind} {key}"),
        attrs: [
            ("threshold".to_string(), key.to_string()),
            ("value".to_string(), "97.5".to_string()),
        ]
        .into(),
    };
    let insert = |e: EventRow| {
        let store = f.store.clone();
        let (p, oid) = (f.project.id, f.oid);
        async move { store.insert_event(p, Some(oid), &e).await.expect("event") }
    };
    insert(event("threshold.exceeded", "cpu", now - 3000)).await;
    assert_eq!(
        evaluator.tick(now).await.expect("tick"),
        0,
        "not the key wanted"
    );
    insert(event("threshold.exceeded", "mem", now - 2000)).await;
    assert_eq!(evaluator.tick(now).await.expect("tick"), 1);
    assert_eq!(evaluator.tick(now + 1000).await.expect("tick"), 0, "once");
    let firing = f.firing().await;
    assert_eq!(
        (firing[0].key.target.as_str(), firing[0].value),
        ("mem", Some(97.5))
    );
    let queued = f
        .store
        .due_notifications(i64::MAX, 10)
        .await
        .expect("queue");
    assert_eq!(queued.len(), 1);
    let body: crate::alerts::notify::Body = serde_json::from_str(&queued[0].payload).expect("body");
    assert_eq!(
        (body.state.as_str(), body.agent.map(|a| a.oname)),
        ("firing", Some("web-1".into()))
    );

    // Long after the event left the window read, it still fires: only
    // its recovery ends it.
    assert_eq!(evaluator.tick(now + 3_600_000).await.expect("tick"), 0);
    assert_eq!(f.firing().await.len(), 1);
    insert(event("threshold.recovered", "mem", now - 1000)).await;
    assert_eq!(evaluator.tick(now + 2000).await.expect("tick"), 1);
    assert!(f.firing().await.is_empty());
    let states: Vec<&str> = [
        transitions.try_recv().expect("firing"),
        transitions.try_recv().expect("resolved"),
    ]
    .iter()
    .map(|t| t.state)
    .collect();
    assert_eq!(states, ["firing", "resolved"]);
}

#[tokio::test]
async fn no_data_fires_only_for_the_agent_in_scope() {
    let f = fixture("nodata").await;
    f.rule("no data", Some("db-7"), vec![]).await;
    let mut evaluator = Evaluator::start(f.store.clone(), AlertsHub::default())
        .await
        .expect("evaluator");
    let later = crate::now_ms() + 60_000;
    assert_eq!(
        evaluator.tick(later).await.expect("tick"),
        0,
        "web-1 is out of scope"
    );
    f.rule("no data", None, vec![]).await;
    assert_eq!(evaluator.tick(later).await.expect("tick"), 1);
    assert!(
        f.firing().await[0]
            .message
            .contains("has sent no data since")
    );
    // A restarted evaluator knows it fires already.
    let mut again = Evaluator::start(f.store.clone(), AlertsHub::default())
        .await
        .expect("evaluator");
    assert_eq!(again.tick(later + 1000).await.expect("tick"), 0);
    // A rule whose severity changed keeps its alert: no second firing.
    let rule = &f
        .store
        .alert_rules(Some(f.project.id))
        .await
        .expect("rules")[1];
    let mut spec = rule.spec.clone();
    spec.severity = "critical".into();
    f.store
        .update_alert_rule(f.project.id, rule.id, &spec, rule.updated_ms + 1)
        .await
        .expect("updated");
    assert_eq!(f.firing().await.len(), 1, "the alert carries over");
    assert_eq!(again.tick(later + 2000).await.expect("tick"), 0);
    assert_eq!(f.firing().await.len(), 1);
}

impl Fixture {
    async fn webhook(&self) -> i64 {
        self.store
            .create_alert_channel(
                self.project.id,
                "ops",
                &ChannelConfig::Webhook {
                    url: "http://127.0.0.1:9/hook".into(),
                    format: WebhookFormat::Json,
                    ca_pem: None,
                },
                0,
            )
            .await
            .expect("channel")
            .id
    }

    /// The states of the queued notifications, oldest first.
    async fn queued(&self) -> Vec<String> {
        self.store
            .due_notifications(i64::MAX, 100)
            .await
            .expect("queue")
            .iter()
            .map(|n| {
                serde_json::from_str::<crate::alerts::notify::Body>(&n.payload)
                    .expect("body")
                    .state
            })
            .collect()
    }

    async fn edit(&self, id: i64, edit: impl FnOnce(&mut RuleSpec)) {
        let rule = self
            .store
            .alert_rules(Some(self.project.id))
            .await
            .expect("rules")
            .into_iter()
            .find(|r| r.id == id)
            .expect("the rule");
        let mut spec = rule.spec.clone();
        edit(&mut spec);
        self.store
            .update_alert_rule(self.project.id, id, &spec, rule.updated_ms + 1)
            .await
            .expect("updated");
    }
}

#[tokio::test]
async fn editing_a_firing_rule_keeps_it_or_resolves_it_aloud() {
    let mut f = fixture("edit").await;
    let channel = f.webhook().await;
    let id = f.rule("mem.used_pct > 90", None, vec![channel]).await;
    let mut evaluator = Evaluator::start(f.store.clone(), AlertsHub::default())
        .await
        .expect("evaluator");
    let now = crate::now_ms();
    f.point(now - 1000, 95.0).await;
    assert_eq!(evaluator.tick(now).await.expect("tick"), 1);
    assert_eq!(f.queued().await, ["firing"]);

    // Renamed, another severity: the same alert, told once.
    f.edit(id, |s| {
        s.name = "memory".into();
        s.severity = "critical".into();
    })
    .await;
    assert_eq!(evaluator.tick(now + 1000).await.expect("tick"), 0);
    assert_eq!(f.firing().await.len(), 1);
    assert_eq!(f.queued().await, ["firing"], "no second FIRING");

    // Another condition: what was told resolves, aloud.
    f.edit(id, |s| s.expr = "mem.used_pct > 99".into()).await;
    assert_eq!(evaluator.tick(now + 2000).await.expect("tick"), 1);
    assert!(f.firing().await.is_empty());
    assert_eq!(f.queued().await, ["firing", "resolved"]);

    // Disabled, then deleted: each resolves what fired.
    f.edit(id, |s| s.expr = "mem.used_pct > 90".into()).await;
    assert_eq!(evaluator.tick(now + 3000).await.expect("tick"), 1);
    f.edit(id, |s| s.enabled = false).await;
    assert_eq!(evaluator.tick(now + 4000).await.expect("tick"), 1);
    assert!(f.firing().await.is_empty());
    f.edit(id, |s| s.enabled = true).await;
    assert_eq!(evaluator.tick(now + 5000).await.expect("tick"), 1);
    assert!(
        f.store
            .delete_alert_rule(f.project.id, id)
            .await
            .expect("deleted")
    );
    assert_eq!(evaluator.tick(now + 6000).await.expect("tick"), 1);
    assert!(f.firing().await.is_empty());
    assert_eq!(
        f.queued().await,
        [
            "firing", "resolved", "firing", "resolved", "firing", "resolved"
        ]
    );
    assert_eq!(evaluator.tick(now + 7000).await.expect("tick"), 0, "once");
}

#[tokio::test]
async fn a_failed_commit_leaves_the_memory_as_it_was() {
    let mut f = fixture("commit").await;
    let channel = f.webhook().await;
    f.rule("mem.used_pct > 90", None, vec![channel]).await;
    let mut evaluator = Evaluator::start(f.store.clone(), AlertsHub::default())
        .await
        .expect("evaluator");
    let now = crate::now_ms();
    f.point(now - 1000, 95.0).await;
    f.store.close_writer_for_tests().await;
    assert!(evaluator.tick(now).await.is_err(), "the commit fails");
    assert!(
        evaluator.memory.values().all(|m| !m.firing()),
        "it does not believe it told: {:?}",
        evaluator.memory
    );
}

#[tokio::test]
async fn a_terminated_agents_alerts_are_forgotten_without_a_word() {
    let f = fixture("terminated").await;
    let channel = f.webhook().await;
    f.rule("no data", None, vec![channel]).await;
    let mut evaluator = Evaluator::start(f.store.clone(), AlertsHub::default())
        .await
        .expect("evaluator");
    let later = crate::now_ms() + 60_000;
    assert_eq!(evaluator.tick(later).await.expect("tick"), 1);
    assert_eq!(f.queued().await, ["firing"]);
    f.store
        .terminate_agent(f.project.id, f.oid, later)
        .await
        .expect("terminated")
        .expect("the agent");
    assert!(f.queued().await.is_empty(), "its queued FIRING is dropped");
    assert_eq!(evaluator.tick(later + 1000).await.expect("tick"), 0);
    assert!(evaluator.memory.is_empty(), "{:?}", evaluator.memory);
    assert!(
        f.store
            .alerts(Some(f.project.id), false)
            .await
            .expect("alerts")
            .is_empty(),
        "no row comes back"
    );
    assert!(f.queued().await.is_empty(), "nobody is told");
}

/// With 1,000 agents over the limit and 10 rules, one tick records every
/// firing (4 threshold rules × 1,000 agents) and the next, with nothing
/// new, records none: no alert is told twice at fleet scale. It prints how
/// long each took (`cargo test -p sightline-collector --release --lib
/// a_tick_over_1000_agents -- --nocapture` for shipped-code figures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_over_1000_agents_records_each_firing_once() {
    let f = fixture("scale").await;
    let now = crate::now_ms();
    let mut batches = Vec::new();
    for i in 0..1000 {
        let hello = AgentHello {
            product: "infra".into(),
            oname: format!("host-{i}"),
            hostname: format!("host-{i}"),
            os: String::new(),
            version: String::new(),
            boot_time_ms: 0,
            created_time: String::new(),
            instance: format!("{i:032}"),
            interval_ms: 1000,
            boot_id: String::new(),
        };
        let oid = f
            .store
            .register_agent(f.project.id, &hello, now)
            .await
            .expect("agent")
            .oid;
        for (seq, value) in [(1, 50.0), (2, 95.0)] {
            batches.push(BatchToStore {
                project_id: f.project.id,
                oid,
                instance: format!("{i:032}"),
                batch: IncomingBatch {
                    seq,
                    time_ms: now - 3000 + seq as i64 * 1000,
                    health: None,
                    payloads: vec![BatchPayload::Metrics {
                        time_ms: now - 3000 + seq as i64 * 1000,
                        samples: ["mem.used_pct", "cpu.usage", "disk.used_pct"]
                            .iter()
                            .map(|name| SampleRow {
                                name: (*name).into(),
                                labels: vec![],
                                value,
                            })
                            .collect(),
                    }],
                },
                received_ms: now,
            });
        }
    }
    for group in batches.chunks(500) {
        f.store.store_batches(group).await.expect("stored");
    }
    for (i, expr) in [
        "mem.used_pct > 90",
        "mem.used_pct > 80",
        "cpu.usage > 90",
        "disk.used_pct > 90",
        "mem.used_pct > 90 for 10s",
        "no data",
        "rebooted",
        "threshold",
        "url down",
        "lock wait",
    ]
    .iter()
    .enumerate()
    {
        let spec = RuleSpec {
            name: format!("r{i}"),
            expr: (*expr).into(),
            agent: None,
            product: None,
            severity: "warning".into(),
            channels: vec![],
            renotify: None,
            enabled: true,
        };
        f.store
            .create_alert_rule(f.project.id, &spec, 0)
            .await
            .expect("rule");
    }
    let mut evaluator = Evaluator::start(f.store.clone(), AlertsHub::default())
        .await
        .expect("evaluator");
    let started = std::time::Instant::now();
    let changes = evaluator.tick(now).await.expect("tick");
    let first = started.elapsed();
    let started = std::time::Instant::now();
    let again = evaluator.tick(now + 500).await.expect("tick");
    let steady = started.elapsed();
    let started = std::time::Instant::now();
    let points =
        crate::store::MetricReads::latest(&*f.store, f.project.id, "mem.used_pct", now - 300_000)
            .await
            .expect("latest");
    let one_latest = started.elapsed();
    println!(
        "1,000 agents, 10 rules: first tick {first:?} ({changes} changes recorded), a quiet tick {steady:?} ({again} changes); one latest() of {} series {one_latest:?}",
        points.len()
    );
    assert_eq!(changes, 4000, "every agent's firing of the 4 crossed rules");
    assert_eq!(again, 0, "a tick with nothing new records nothing");
}

#[tokio::test]
async fn lock_waits_past_the_limit_fire_and_clear_after_the_window() {
    let f = fixture("locks").await;
    let hello = AgentHello {
        product: "db".into(),
        oname: "maria-1".into(),
        hostname: "maria-1".into(),
        os: String::new(),
        version: String::new(),
        boot_time_ms: 0,
        created_time: String::new(),
        instance: "fedcba9876543210fedcba9876543210".into(),
        interval_ms: 1000,
        boot_id: String::new(),
    };
    let now = crate::now_ms();
    let db = f
        .store
        .register_agent(f.project.id, &hello, now)
        .await
        .expect("agent")
        .oid;
    f.rule("lock wait > 10s clear 1m", None, vec![]).await;
    f.rule("rebooted", None, vec![]).await;
    let mut evaluator = Evaluator::start(f.store.clone(), AlertsHub::default())
        .await
        .expect("evaluator");
    let event = |kind: &str, wait_ms: &str, at: i64| EventRow {
        time_ms: at,
        kind: kind.into(),
        severity: "warning".into(),
        message: format!("{kind} {wait_ms}"),
        attrs: [("wait_ms".to_string(), wait_ms.to_string())].into(),
    };
    let insert = |oid: i64, e: EventRow| {
        let store = f.store.clone();
        let p = f.project.id;
        async move { store.insert_event(p, Some(oid), &e).await.expect("event") }
    };
    insert(db, event("db.lock_wait", "5000", now - 1000)).await;
    // The same kind from a server agent is out of the rule's product.
    insert(f.oid, event("db.lock_wait", "50000", now - 1000)).await;
    assert_eq!(evaluator.tick(now).await.expect("tick"), 0, "under 10 s");
    insert(db, event("db.lock_wait", "12000", now - 500)).await;
    assert_eq!(evaluator.tick(now).await.expect("tick"), 1);
    let firing = f.firing().await;
    assert_eq!((firing[0].key.oid, firing[0].value), (db, Some(12000.0)));
    assert_eq!(
        evaluator.tick(now + 30_000).await.expect("tick"),
        0,
        "within clear"
    );
    assert_eq!(
        evaluator.tick(now + 61_000).await.expect("tick"),
        1,
        "cleared"
    );
    assert!(f.firing().await.is_empty());

    insert(f.oid, event("host.rebooted", "", now)).await;
    assert_eq!(evaluator.tick(now + 62_000).await.expect("tick"), 1);
    assert_eq!(f.firing().await[0].key.oid, f.oid);
    assert_eq!(
        evaluator.tick(now + 601_000).await.expect("tick"),
        1,
        "10 min on"
    );
    assert!(f.firing().await.is_empty());
}

#[test]
fn an_ingest_wake_waits_four_times_the_last_ticks_duration() {
    assert_eq!(ingest_wake_gap(Duration::from_millis(10)), INGEST_WAKE_GAP);
    assert_eq!(
        ingest_wake_gap(Duration::from_millis(200)),
        Duration::from_millis(800),
        "a slow tick is not run back to back by a stream of events"
    );
}

#[tokio::test]
async fn a_recovery_sent_while_the_collector_was_down_resolves_after_the_start() {
    let f = fixture("lookback").await;
    let channel = f.webhook().await;
    f.rule("threshold \"mem\"", None, vec![channel]).await;
    let event = |kind: &str, at: i64| EventRow {
        time_ms: at,
        kind: kind.into(),
        severity: "critical".into(),
        message: kind.into(),
        attrs: [("threshold".to_string(), "mem".to_string())].into(),
    };
    let now = crate::now_ms();
    f.store
        .insert_event(f.project.id, Some(f.oid), &event("threshold.exceeded", now))
        .await
        .expect("event");
    let mut before = Evaluator::start(f.store.clone(), AlertsHub::default())
        .await
        .expect("evaluator");
    assert_eq!(before.tick(now + 1000).await.expect("tick"), 1);
    drop(before);
    // Down 30 min; the agent's spooled recovery (of +2 min) arrives late.
    f.store
        .insert_event(
            f.project.id,
            Some(f.oid),
            &event("threshold.recovered", now + 120_000),
        )
        .await
        .expect("event");
    let mut after = Evaluator::start(f.store.clone(), AlertsHub::default())
        .await
        .expect("evaluator");
    assert_eq!(
        after.tick(now + 1_800_000).await.expect("tick"),
        1,
        "the recovery 28 min back resolves it"
    );
    assert!(f.firing().await.is_empty());
    assert_eq!(f.queued().await, ["firing", "resolved"]);
}
