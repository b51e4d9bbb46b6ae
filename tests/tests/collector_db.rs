//! The collector's database routes against a scripted gRPC client pushing
//! hand-made `DbSnapshot`s, `db.*` metrics and a `db.lock_wait` event to
//! the real collector binary over loopback, as the database agent would:
//! the snapshot nearest several times (either side, RFC 3339 or unix ms,
//! the newest by default), the lock chain nested as a tree (a document,
//! snapshot-tested), the timeline, the counters' series and names, a
//! resent batch stored once, a malformed lock tree refused by count with
//! its sessions kept, scoping to the token's project, and retention by age
//! and by size across restarts.

use std::time::Duration;

use serde_json::Value;
use sightline_e2e::wire_agent::{self, Client, connect};
use sightline_e2e::{Api, Collector, Scratch, create_project, now_ms, wait_for};
use sightline_proto::v1 as pb;

const INSTANCE: &str = "33333333333333333333333333333333";
const MINUTE_MS: i64 = 60_000;

/// Says hello as the database agent `oname`; its oid.
async fn hello(client: &mut Client, license: &str, oname: &str) -> u64 {
    wire_agent::hello(client, license, "db", oname, INSTANCE, 5000).await
}

/// Pushes `batches` on one stream and returns their acks.
async fn push(
    client: &mut Client,
    license: &str,
    oid: u64,
    batches: Vec<pb::Batch>,
) -> Vec<pb::Ack> {
    wire_agent::push(client, license, oid, INSTANCE, batches).await
}

fn session(id: u64, user: &str, query: &str, trx_id: &str) -> pb::DbSession {
    pb::DbSession {
        id,
        user: user.into(),
        host: format!("10.0.0.{id}:51000"),
        db: "shop".into(),
        command: if query.is_empty() { "Sleep" } else { "Query" }.into(),
        state: if query.is_empty() { "" } else { "Updating" }.into(),
        time_ms: 1000 * id,
        query: query.into(),
        trx: (!trx_id.is_empty()).then(|| pb::DbTransaction {
            id: trx_id.into(),
            state: if query.is_empty() {
                "RUNNING"
            } else {
                "LOCK WAIT"
            }
            .into(),
            age_ms: 30_000,
            rows_locked: 1,
            rows_modified: u64::from(query.is_empty()),
            tables_locked: 1,
            idle_ms: if query.is_empty() { 25_000 } else { 0 },
            last_query: if query.is_empty() {
                "update accounts set balance = balance - # where id = #".into()
            } else {
                String::new()
            },
        }),
        ..pb::DbSession::default()
    }
}

fn waits(session_id: u64, parent_id: u64, depth: u32, mode: &str, wait_ms: u64) -> pb::LockNode {
    pb::LockNode {
        session_id,
        parent_id,
        depth,
        wait: Some(pb::LockWait {
            kind: "RECORD".into(),
            mode: mode.into(),
            holder_mode: "X".into(),
            table: "`shop`.`accounts`".into(),
            index: "PRIMARY".into(),
            data: "1".into(),
            wait_ms,
        }),
        ..pb::LockNode::default()
    }
}

/// The chain: A (1) holds a row lock idle in its transaction; B (2)
/// and C (3) wait on it; D (4) waits on C.
fn lock_chain_snapshot(time_ms: i64) -> pb::DbSnapshot {
    pb::DbSnapshot {
        time_ms,
        reason: "lock_wait".into(),
        flavor: "mariadb".into(),
        version: "10.11.6-MariaDB-0+deb12u1".into(),
        sessions: vec![
            session(1, "app_a", "", "1001"),
            session(
                2,
                "app_b",
                "update accounts set balance = # where id = #",
                "1002",
            ),
            session(
                3,
                "app_c",
                "select * from accounts where id = # for update",
                "1003",
            ),
            session(
                4,
                "app_d",
                "update accounts set note = # where id = #",
                "1004",
            ),
        ],
        sessions_omitted: 0,
        locks_read: true,
        locks: vec![
            pb::LockNode {
                session_id: 1,
                root_blocker: true,
                ..pb::LockNode::default()
            },
            waits(2, 1, 1, "X", 12_000),
            waits(3, 1, 1, "X", 9_000),
            waits(4, 3, 2, "S", 4_000),
        ],
        variables: [("max_connections".to_string(), "151".to_string())].into(),
    }
}

fn quiet_snapshot(time_ms: i64, query: &str) -> pb::DbSnapshot {
    pb::DbSnapshot {
        time_ms,
        reason: "periodic".into(),
        flavor: "mariadb".into(),
        version: "10.11.6-MariaDB-0+deb12u1".into(),
        sessions: vec![session(7, "report", query, "")],
        ..pb::DbSnapshot::default()
    }
}

fn counters(time_ms: i64, threads_running: f64) -> pb::Payload {
    let sample = |name: &str, value: f64| pb::Sample {
        name: name.into(),
        labels: Vec::new(),
        value,
    };
    pb::Payload {
        kind: Some(pb::payload::Kind::Metrics(pb::Metrics {
            samples: vec![
                sample("db.threads_running", threads_running),
                sample("db.questions_per_sec", 250.0),
                sample("agent.cycle_ms", 3.0),
            ],
            time_ms,
        })),
    }
}

fn db(snapshot: pb::DbSnapshot) -> pb::Payload {
    pb::Payload {
        kind: Some(pb::payload::Kind::Db(snapshot)),
    }
}

fn batch(seq: u64, payloads: Vec<pb::Payload>) -> pb::Batch {
    pb::Batch {
        seq,
        time_ms: now_ms(),
        health: None,
        payloads,
        liveness: false,
    }
}

fn lock_wait_event(time_ms: i64) -> pb::Payload {
    pb::Payload {
        kind: Some(pb::payload::Kind::Events(pb::AgentEvents {
            events: vec![pb::AgentEvent {
                time_ms,
                name: "db.lock_wait".into(),
                severity: pb::Severity::Warning as i32,
                message: "Session 2 has waited 12 s for a row lock held by session 1.".into(),
                ..pb::AgentEvent::default()
            }],
        })),
    }
}

fn times(api: &Api, oid: u64, from: i64) -> Vec<(i64, String)> {
    api.ok(&format!(
        "/api/v1/db/{oid}/snapshots?from={from}&to={}",
        now_ms()
    ))["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| {
            (
                s["time_ms"].as_i64().expect("time"),
                s["reason"].as_str().expect("reason").to_string(),
            )
        })
        .collect()
}

/// RFC 3339 of a unix ms time, as a client would write it.
fn rfc3339(ms: i64) -> String {
    sightline_collector::time_text::format_ms(ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_snapshots_are_found_by_time_nested_and_stored_once() {
    let scratch = Scratch::new("db-store");
    let data = scratch.join("collector");
    let creds = create_project(&data, "dbs");
    let other = create_project(&data, "other");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let lic = creds.license.as_str();
    let mut c = connect(&collector).await;
    let oid = hello(&mut c, lic, "db-1").await;

    // Four cycles a minute apart, ten minutes ago: quiet, the lock chain
    // (with its alert event), quiet again after A committed, and a cycle
    // whose lock tree is malformed (C's child names B as its parent).
    let base = now_ms() - 10 * MINUTE_MS;
    let t = |minute: i64| base + minute * MINUTE_MS;
    let chain = batch(
        2,
        vec![
            counters(t(1), 4.0),
            db(lock_chain_snapshot(t(1))),
            lock_wait_event(t(1)),
        ],
    );
    let mut malformed = lock_chain_snapshot(t(3));
    malformed.reason = "periodic".into();
    malformed.variables.clear();
    malformed.locks[3].parent_id = 2;
    let acks = push(
        &mut c,
        lic,
        oid,
        vec![
            batch(
                1,
                vec![
                    counters(t(0), 1.0),
                    db(quiet_snapshot(t(0), "select sleep(#)")),
                ],
            ),
            chain.clone(),
            batch(3, vec![counters(t(2), 1.0), db(quiet_snapshot(t(2), ""))]),
            batch(4, vec![counters(t(3), 2.0), db(malformed)]),
        ],
    )
    .await;
    assert!(
        acks[..3]
            .iter()
            .all(|a| a.partial.is_none() && !a.duplicate),
        "{acks:?}"
    );
    let partial = acks[3]
        .partial
        .clone()
        .expect("the malformed tree is refused");
    assert_eq!(
        partial.rejected, 4,
        "each node the tree claimed: {partial:?}"
    );
    assert!(
        partial.message.contains("lock tree is malformed"),
        "{}",
        partial.message
    );

    // The agent did not hear the ack of the chain's batch and sends it again.
    let again = push(&mut c, lic, oid, vec![chain]).await;
    assert!(again[0].duplicate, "{again:?}");
    let timeline = times(&api, oid, base - 1);
    assert_eq!(
        timeline,
        [
            (t(3), "periodic".to_string()),
            (t(2), "periodic".to_string()),
            (t(1), "lock_wait".to_string()),
            (t(0), "periodic".to_string()),
        ],
        "each snapshot once, newest first"
    );
    let entries = api.ok(&format!("/api/v1/db/{oid}/snapshots?from={}", base - 1));
    let chain_entry = &entries["snapshots"][2];
    assert_eq!(chain_entry["alert"], true);
    assert_eq!(chain_entry["locks"], true);
    assert_eq!(chain_entry["root_blockers"], 1);
    assert_eq!(chain_entry["max_wait_ms"], 12_000);
    assert_eq!(
        entries["snapshots"][0]["locks"], false,
        "the refused tree is not there"
    );
    assert_eq!(entries["snapshots"][0]["sessions"], 4, "its sessions are");
    let events = api.ok(&format!(
        "/api/v1/events?kind=db.lock_wait&from={}",
        base - 1
    ));
    assert_eq!(
        events["events"].as_array().map(Vec::len),
        Some(1),
        "{events}"
    );

    // The snapshot nearest a time, on either side, in either notation.
    let at = |query: &str| api.ok(&format!("/api/v1/db/{oid}/sessions{query}"));
    let nearest = |query: &str| at(query)["time_ms"].as_i64().expect("time");
    assert_eq!(nearest(""), t(3), "now: the newest");
    assert_eq!(nearest(&format!("?at={}", t(0) - 5 * MINUTE_MS)), t(0));
    assert_eq!(nearest(&format!("?at={}", t(0) + 29_000)), t(0));
    assert_eq!(nearest(&format!("?at={}", t(1) - 29_000)), t(1));
    assert_eq!(nearest(&format!("?at={}", rfc3339(t(2) - 1_000))), t(2));
    assert_eq!(nearest(&format!("?at={}", now_ms())), t(3));
    let sessions = at(&format!("?at={}", t(1)));
    assert_eq!(sessions["reason"], "lock_wait");
    assert_eq!(sessions["flavor"], "mariadb");
    assert_eq!(sessions["version"], "10.11.6-MariaDB-0+deb12u1");
    assert_eq!(sessions["time"], rfc3339(t(1)));
    assert_eq!(sessions["variables"]["max_connections"], "151");
    let list = sessions["sessions"].as_array().expect("sessions");
    assert_eq!(list.len(), 4);
    assert_eq!(list[1]["user"], "app_b");
    assert_eq!(
        list[1]["query"],
        "update accounts set balance = # where id = #"
    );
    assert_eq!(list[0]["trx"]["idle_ms"], 25_000);
    let later = at(&format!("?at={}", t(2)));
    assert_eq!(later["sessions"][0]["user"], "report");
    assert_eq!(
        later["variables"]["max_connections"], "151",
        "a variable stays in force until it changes"
    );

    // The lock tree, nested.
    let mut locks = api.ok(&format!("/api/v1/db/{oid}/locks?at={}", t(1) + 10_000));
    assert_eq!(locks["time_ms"].as_i64(), Some(t(1)));
    assert_eq!(locks["at_ms"].as_i64(), Some(t(1) + 10_000));
    for key in ["time", "time_ms", "at_ms", "oid"] {
        locks.as_object_mut().expect("object").remove(key);
    }
    insta::assert_snapshot!(serde_json::to_string_pretty(&locks).expect("json"));
    let refused = api.ok(&format!("/api/v1/db/{oid}/locks"));
    assert_eq!(refused["tree"], Value::Array(Vec::new()));
    assert!(
        refused["locks_refused"]
            .as_str()
            .is_some_and(|r| r.contains("names parent 2, unknown there")),
        "{refused}"
    );
    let quiet = api.ok(&format!("/api/v1/db/{oid}/locks?at={}", t(2)));
    assert_eq!(quiet["locks_read"], false);
    assert_eq!(quiet["tree"], Value::Array(Vec::new()));

    // Counters: the db.* names only, and a series.
    let names = api.ok(&format!("/api/v1/db/{oid}/stats"));
    assert_eq!(
        names["names"],
        serde_json::json!(["db.questions_per_sec", "db.threads_running"])
    );
    let series = api.ok(&format!(
        "/api/v1/db/{oid}/stats?name=db.threads_running&from={}",
        base - 1
    ));
    let points: Vec<(i64, f64)> = series["series"][0]["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| (p[0].as_i64().expect("t"), p[1].as_f64().expect("v")))
        .collect();
    assert_eq!(points, [(t(0), 1.0), (t(1), 4.0), (t(2), 1.0), (t(3), 2.0)]);

    // Bad parameters say which; unknown agents and other projects are 404.
    let (status, body) = api.get(&format!("/api/v1/db/{oid}/sessions?at=yesterday"));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("at: ")),
        "{body}"
    );
    let (status, body) = api.get(&format!("/api/v1/db/{oid}/locks?at=12:00"));
    assert_eq!(status, 400, "{body}");
    let (status, body) = api.get(&format!("/api/v1/db/{oid}/stats?name=cpu.usage"));
    assert_eq!(status, 400, "{body}");
    for route in ["stats", "sessions", "locks", "snapshots"] {
        let (status, _) = api.get(&format!("/api/v1/db/999999/{route}"));
        assert_eq!(status, 404, "{route} of an unknown agent");
        let (status, _) = api.get_with(&format!("/api/v1/db/{oid}/{route}"), Some(&other.token));
        assert_eq!(status, 404, "{route} from another project");
        let (status, _) = api.get_with(&format!("/api/v1/db/{oid}/{route}"), None);
        assert_eq!(status, 401, "{route} without a token");
    }
}

/// Keeps `key=value` lines in a config file for the collector.
fn conf(scratch: &Scratch, name: &str, text: &str) -> String {
    let path = scratch.join(name);
    std::fs::write(&path, text).expect("conf");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_snapshots_go_by_age_and_by_size() {
    let scratch = Scratch::new("db-retention");
    let data = scratch.join("collector");
    let creds = create_project(&data, "dbs");
    let lic = creds.license.as_str();
    let hour = conf(&scratch, "hour.conf", "db.retention=1h\n");
    let collector = Collector::start_with(&data, "127.0.0.1:0", "127.0.0.1:0", &["--conf", &hour]);
    let api = collector.api(&creds.token);
    let mut c = connect(&collector).await;
    let oid = hello(&mut c, lic, "db-1").await;
    let now = now_ms();
    let old = [now - 3 * 60 * MINUTE_MS, now - 2 * 60 * MINUTE_MS];
    let recent = [now - 20 * MINUTE_MS, now - 10 * MINUTE_MS];
    let batches = old
        .iter()
        .chain(&recent)
        .enumerate()
        .map(|(i, &t)| batch(i as u64 + 1, vec![db(quiet_snapshot(t, "select #"))]))
        .collect();
    push(&mut c, lic, oid, batches).await;
    assert_eq!(
        times(&api, oid, 0).len(),
        4,
        "stored before retention looked"
    );

    // Retention runs at start (then every minute): the two older than an
    // hour go, metrics and events are another key's business.
    drop(c);
    drop(collector);
    let collector = Collector::start_with(&data, "127.0.0.1:0", "127.0.0.1:0", &["--conf", &hour]);
    let api = collector.api(&creds.token);
    let kept = wait_for("db retention by age", Duration::from_secs(15), || {
        let t = times(&api, oid, 0);
        (t.len() == 2).then_some(t)
    });
    assert_eq!(
        kept.iter().map(|t| t.0).collect::<Vec<_>>(),
        [recent[1], recent[0]]
    );
    let (status, _) = api.get(&format!("/api/v1/db/{oid}/sessions?at={}", old[0]));
    assert_eq!(status, 200, "the nearest kept one answers");

    // A cap of one byte leaves nothing: the oldest first, until under it.
    drop(collector);
    let tiny = conf(&scratch, "tiny.conf", "db.retention=1h\ndb.max_bytes=1\n");
    let collector = Collector::start_with(&data, "127.0.0.1:0", "127.0.0.1:0", &["--conf", &tiny]);
    let api = collector.api(&creds.token);
    wait_for("db retention by size", Duration::from_secs(15), || {
        times(&api, oid, 0).is_empty().then_some(())
    });
    let (status, body) = api.get(&format!("/api/v1/db/{oid}/sessions"));
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no database snapshot")),
        "{body}"
    );
}
