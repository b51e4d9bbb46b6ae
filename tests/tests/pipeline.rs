//! The delivery pipeline end to end: a real collector and a real
//! `sightline-infra` on loopback, killed and restarted at will.

use std::time::{Duration, Instant};

use prost::Message;
use sightline_e2e::{
    Agent, Collector, Scratch, agent_conf, create_project, free_addrs, the_agent, wait_for,
};
use sightline_proto::metadata;
use sightline_proto::v1 as pb;

/// The first promise: start both, see CPU and memory through the
/// API within two intervals.
#[test]
fn metrics_arrive_within_two_intervals() {
    let scratch = Scratch::new("live");
    let data = scratch.join("collector");
    let creds = create_project(&data, "live");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let interval = Duration::from_secs(2);
    let started = Instant::now();
    let _agent = Agent::infra(
        &scratch.join("agent"),
        &agent_conf(
            &creds.license,
            collector.grpc,
            &scratch.join("agent/data"),
            &[("interval", "2s")],
        ),
    );
    let agent = the_agent(&api);
    let oid = agent["oid"].as_i64().expect("oid");
    wait_for("cpu.usage and mem.used_pct", 2 * interval, || {
        let cpu = api.points(oid, "cpu.usage");
        let mem = api.points(oid, "mem.used_pct");
        (!cpu.is_empty() && !mem.is_empty()).then_some(())
    });
    assert!(
        started.elapsed() <= 2 * interval + Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );

    let agent = &api.agents()[0];
    assert_eq!(agent["product"], "infra");
    assert_eq!(agent["status"], "up");
    assert_eq!(
        agent["oname"], agent["hostname"],
        "oname defaults to the host name"
    );
    let mem = api.points(oid, "mem.used_pct");
    assert!(mem.iter().all(|(_, v)| *v > 0.0 && *v < 100.0), "{mem:?}");
    let kinds: Vec<String> = api
        .events()
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(kinds.contains(&"agent.started".to_string()), "{kinds:?}");
}

/// Nothing lost, nothing stored twice: while batches flow, kill -9 the
/// collector and restart it, then kill -9 the agent and restart it; the
/// store then holds every sequence number from the first to the last
/// exactly once, and the agent id survived the restart. Then batches the
/// agent had spooled are sent again, as an agent whose ack was lost would:
/// they are acked as duplicates and change nothing.
///
/// Counted: batches (the delivery audit), `mem.used_pct` points, process
/// snapshots (one per cycle, each at its own time, as many as points) and
/// `agent.started` events (one per start). Points alone cannot catch a
/// batch stored twice (a point is keyed by its time); snapshots and events
/// can. This guards the store's dedupe check, in
/// `collector/src/store/sqlite/sink.rs` `store_one`:
/// `if inserted == 0 { return Ok(Stored::Duplicate); }` (remove it and the
/// replayed batches' snapshots are stored twice: this test fails).
#[test]
fn nothing_lost_nothing_twice_across_kill_9() {
    let scratch = Scratch::new("exactly-once");
    let data = scratch.join("collector");
    let creds = create_project(&data, "once");
    let mut collector = Collector::start(&data);
    let (grpc, http) = (collector.grpc.to_string(), collector.http.to_string());
    let api = collector.api(&creds.token);
    let agent_dir = scratch.join("agent");
    let conf = agent_conf(&creds.license, collector.grpc, &agent_dir.join("data"), &[]);
    let mut agent = Agent::infra(&agent_dir, &conf);
    let oid = the_agent(&api)["oid"].as_i64().expect("oid");
    std::thread::sleep(Duration::from_secs(3));

    collector.kill9();
    // The agent keeps collecting into its spool meanwhile.
    wait_for(
        "batches to pile up in the spool",
        Duration::from_secs(10),
        || (agent.spooled() >= 2).then_some(()),
    );
    // What a resend would carry: the spooled batches, as they are now.
    let replay = spooled_batches(&agent_dir.join("data/spool"));
    assert!(replay.len() >= 2, "{} spooled batches read", replay.len());
    let mut collector = Collector::start_with(&data, &grpc, &http, &[]);
    std::thread::sleep(Duration::from_secs(3));

    agent.kill9();
    std::thread::sleep(Duration::from_secs(1));
    let mut agent = Agent::infra(&agent_dir, &conf);
    std::thread::sleep(Duration::from_secs(3));
    wait_for("the spool to drain", Duration::from_secs(15), || {
        (agent.spooled() == 0).then_some(())
    });
    // Stop the agent so nothing new arrives while counting.
    assert!(agent.terminate_within(Duration::from_secs(2)).is_some());

    let delivery = api.ok(&format!("/api/v1/agents/{oid}/delivery"));
    let instances = delivery["instances"].as_array().expect("instances");
    assert_eq!(
        instances.len(),
        1,
        "the agent kept its spool instance: {delivery}"
    );
    let d = &instances[0];
    let (batches, first, last) = (
        d["batches"].as_u64().expect("n"),
        d["first_seq"].as_u64().expect("first"),
        d["last_seq"].as_u64().expect("last"),
    );
    assert_eq!(first, 1, "{d}");
    assert_eq!(
        batches, last,
        "every number from 1 to {last} stored exactly once: {d}"
    );
    assert_eq!(d["missing"], 0);
    assert!(last >= 8, "batches flowed throughout: {d}");
    // What the agent numbered is what was stored.
    let agent_last = agent.spool_last_seq();
    assert!(agent_last > 0, "the agent's numbering is readable");
    assert!(
        agent_last <= last,
        "agent numbered {agent_last}, store has {last}"
    );
    // Same agent id across the restart: still one agent.
    assert_eq!(api.agents().len(), 1);

    let counts = |api: &sightline_e2e::Api| {
        let mem: Vec<i64> = api
            .points(oid, "mem.used_pct")
            .iter()
            .map(|(t, _)| *t)
            .collect();
        let snapshots = api.ok(&format!("/api/v1/agents/{oid}/snapshots?from=0&limit=1000"));
        let top: Vec<i64> = snapshots["snapshots"]
            .as_array()
            .expect("snapshots")
            .iter()
            .filter(|s| s["reason"] == "top")
            .filter_map(|s| s["time_ms"].as_i64())
            .collect();
        let started = api
            .events()
            .iter()
            .filter(|e| e["kind"] == "agent.started")
            .count();
        (mem, top, started)
    };
    let (mem, top, started) = counts(&api);
    let distinct = |times: &[i64]| {
        let mut t = times.to_vec();
        t.sort_unstable();
        t.dedup();
        t.len()
    };
    assert_eq!(distinct(&mem), mem.len(), "each memory reading once");
    assert_eq!(distinct(&top), top.len(), "each top snapshot once: {top:?}");
    assert_eq!(
        top.len(),
        mem.len(),
        "one top snapshot per cycle, as many as memory readings"
    );
    assert_eq!(started, 2, "one agent.started per start");

    // A resend of batches already stored: duplicates, nothing changes.
    let instance = replay[0].0.clone();
    assert!(
        replay.iter().all(|(i, _)| *i == instance),
        "one instance in the spool"
    );
    let replay: Vec<pb::Batch> = replay.into_iter().map(|(_, b)| b).collect();
    let acks = resend(
        collector.grpc,
        &creds.license,
        oid,
        &instance,
        replay.clone(),
    );
    assert_eq!(acks.len(), replay.len(), "one ack per batch");
    assert_eq!(
        counts(&api),
        (mem, top, started),
        "the resend changed nothing"
    );
    assert!(
        acks.iter().all(|a| a.duplicate && a.error.is_empty()),
        "{acks:?}"
    );
    assert!(collector.terminate().is_some());
}

/// The batches in a spool folder, decoded, with the instance each belongs
/// to (read through agent-core's own reader of the spool's file format).
fn spooled_batches(dir: &std::path::Path) -> Vec<(String, pb::Batch)> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .expect("spool folder")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "batch"))
        .collect();
    files.sort();
    files
        .iter()
        .filter_map(|path| {
            let file = agent_core::spool::read_spooled_file(path)?;
            Some((
                file.instance,
                pb::Batch::decode(file.batch.as_slice()).ok()?,
            ))
        })
        .collect()
}

/// Pushes `batches` on one stream as the agent `oid` would; the acks.
fn resend(
    grpc: std::net::SocketAddr,
    license: &str,
    oid: i64,
    instance: &str,
    batches: Vec<pb::Batch>,
) -> Vec<pb::Ack> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .expect("uri")
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connects");
        let mut client = pb::ingest_client::IngestClient::new(channel);
        let expected = batches.len();
        let mut request = tonic::Request::new(tokio_stream_iter(batches));
        let meta = request.metadata_mut();
        meta.insert(metadata::LICENSE, license.parse().expect("ascii"));
        meta.insert(metadata::OID, oid.to_string().parse().expect("ascii"));
        meta.insert(metadata::INSTANCE, instance.parse().expect("ascii"));
        let mut stream = client.push(request).await.expect("push").into_inner();
        let mut acks = Vec::new();
        while acks.len() < expected {
            match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
                Ok(Ok(Some(ack))) => acks.push(ack),
                other => panic!("stream ended early: {other:?}"),
            }
        }
        acks
    })
}

/// A stream of the given batches, without pulling in a stream crate.
fn tokio_stream_iter(batches: Vec<pb::Batch>) -> BatchStream {
    BatchStream(batches.into_iter())
}

struct BatchStream(std::vec::IntoIter<pb::Batch>);

impl tonic::codegen::tokio_stream::Stream for BatchStream {
    type Item = pb::Batch;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<pb::Batch>> {
        std::task::Poll::Ready(self.0.next())
    }
}

/// The collector is down when the agent starts: the agent spools, and
/// delivers everything once the collector appears.
#[test]
fn the_agent_spools_while_the_collector_is_down_and_delivers_later() {
    let scratch = Scratch::new("down");
    let data = scratch.join("collector");
    let creds = create_project(&data, "down");
    let (grpc, http) = free_addrs();
    let agent_dir = scratch.join("agent");
    let agent = Agent::infra(
        &agent_dir,
        &agent_conf(&creds.license, grpc, &agent_dir.join("data"), &[]),
    );
    // Several intervals' worth (each interval spools a metrics batch and a
    // process snapshot).
    wait_for("batches in the spool", Duration::from_secs(15), || {
        (agent.spooled() >= 8).then_some(())
    });
    let spooled = agent.spooled();

    let collector = Collector::start_with(&data, &grpc.to_string(), &http.to_string(), &[]);
    let api = collector.api(&creds.token);
    let oid = the_agent(&api)["oid"].as_i64().expect("oid");
    wait_for("the spool to drain", Duration::from_secs(15), || {
        (agent.spooled() == 0).then_some(())
    });
    let delivery = api.ok(&format!("/api/v1/agents/{oid}/delivery"));
    let d = &delivery["instances"][0];
    assert_eq!(d["first_seq"], 1);
    assert_eq!(d["missing"], 0);
    assert!(d["batches"].as_u64().expect("n") >= spooled as u64);
    // Health travels with each new batch: the next one tells of the outage.
    wait_for(
        "the agent's health to show the reconnects",
        Duration::from_secs(10),
        || {
            let health = api.agents()[0]["health"].clone();
            (health["reconnects"].as_u64()? >= 1).then_some(())
        },
    );
}

/// A spool too small for the outage drops its oldest batches, and the loss
/// reaches the collector as events with the counts, exactly: once the spool
/// has drained, the batches dropped (the sum over every `spool.overflow`
/// event) plus the batches that arrived (the delivery audit) equal the
/// batches the agent made (its last sequence number). A drop not reported,
/// reported twice, or a batch stored twice breaks the equation.
#[test]
fn a_full_spool_drops_the_oldest_and_reports_the_loss() {
    let scratch = Scratch::new("overflow");
    let data = scratch.join("collector");
    let creds = create_project(&data, "overflow");
    let (grpc, http) = free_addrs();
    let agent_dir = scratch.join("agent");
    let agent = Agent::infra(
        &agent_dir,
        &agent_conf(
            &creds.license,
            grpc,
            &agent_dir.join("data"),
            &[("spool.max", "16KiB")],
        ),
    );
    // Wait until the spool has had to drop (it records its numbering then).
    wait_for("the spool to overflow", Duration::from_secs(20), || {
        (agent.spool_last_seq() > agent.spooled() as u64 + 1).then_some(())
    });

    let collector = Collector::start_with(&data, &grpc.to_string(), &http.to_string(), &[]);
    let api = collector.api(&creds.token);
    let oid = the_agent(&api)["oid"].as_i64().expect("oid");
    // The API lists newest first and more drops may have been reported by
    // now: the first report is the one with the lowest id.
    let overflow = wait_for("a spool.overflow event", Duration::from_secs(15), || {
        api.events()
            .into_iter()
            .filter(|e| e["kind"] == "spool.overflow")
            .min_by_key(|e| e["id"].as_i64())
    });
    assert_eq!(
        overflow["attrs"]["first_seq"], "1",
        "the oldest went first: {overflow}"
    );
    assert_eq!(overflow["severity"], "warning");

    // The agent goes on making a batch every interval: read until one
    // moment where the spool is empty and the counts are complete.
    let count = |e: &serde_json::Value| -> u64 {
        e["attrs"]["dropped_batches"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("count")
    };
    let mut last_seen = String::from("the spool never drained");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut reconcile = || -> Option<(u64, u64, u64)> {
        if agent.spooled() != 0 {
            return None;
        }
        let made = agent.spool_last_seq();
        let delivery = api.ok(&format!("/api/v1/agents/{oid}/delivery"));
        let instances = delivery["instances"].as_array()?.clone();
        let arrived = instances[0]["batches"].as_u64()?;
        let events: Vec<_> = api
            .events()
            .into_iter()
            .filter(|e| e["kind"] == "spool.overflow")
            .collect();
        let dropped: u64 = events.iter().map(count).sum();
        last_seen = format!(
            "made {made}, arrived {arrived}, dropped {dropped} in {} events, {} instances",
            events.len(),
            instances.len()
        );
        (instances.len() == 1 && dropped + arrived == made).then_some((made, arrived, dropped))
    };
    let (made, arrived, dropped) = loop {
        if let Some(counts) = reconcile() {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "never reconciled (dropped + arrived == made): {last_seen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(dropped >= 1, "{last_seen}");
    assert!(arrived >= 1 && made > arrived, "{last_seen}");
    let first = api.ok(&format!("/api/v1/agents/{oid}/delivery"))["instances"][0]["first_seq"]
        .as_u64()
        .expect("first");
    assert!(first > 1, "the oldest batches were not delivered");
}

/// SIGTERM stops the agent within a second, and its pid file goes.
#[test]
fn sigterm_stops_the_agent_within_a_second() {
    let scratch = Scratch::new("sigterm");
    let data = scratch.join("collector");
    let creds = create_project(&data, "sigterm");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let agent_dir = scratch.join("agent");
    let mut agent = Agent::infra(
        &agent_dir,
        &agent_conf(&creds.license, collector.grpc, &agent_dir.join("data"), &[]),
    );
    the_agent(&api);
    std::thread::sleep(Duration::from_millis(1500));
    let pid_file = agent_dir.join("data/sightline-infra.pid");
    assert!(pid_file.exists());
    let started = Instant::now();
    let status = agent
        .terminate_within(Duration::from_secs(1))
        .expect("exited within a second");
    assert!(status.success(), "{status:?}: {}", agent.log_text());
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(!pid_file.exists());
    assert!(agent.log_text().contains("Agent stopped."));
}

/// Two agents on one data dir would corrupt the spool: the second refuses.
#[test]
fn a_second_agent_on_the_same_data_dir_is_refused() {
    let scratch = Scratch::new("pidlock");
    let data = scratch.join("collector");
    let creds = create_project(&data, "pidlock");
    let collector = Collector::start(&data);
    let conf = agent_conf(&creds.license, collector.grpc, &scratch.join("data"), &[]);
    let _first = Agent::infra(&scratch.join("a"), &conf);
    std::thread::sleep(Duration::from_millis(500));
    let mut second = Agent::infra(&scratch.join("b"), &conf);
    let status = wait_for("the second agent to exit", Duration::from_secs(5), || {
        second.try_wait()
    });
    assert_eq!(status.code(), Some(1));
    assert!(
        second
            .log_text()
            .contains("another sightline-infra is running"),
        "{}",
        second.log_text()
    );
}

/// An operator wipes the spool folder (to free space, say): the agent
/// starts a new spool instance, and its new batches are stored, not taken
/// for duplicates of the old instance's numbers.
#[test]
fn a_wiped_spool_starts_a_new_instance_whose_batches_are_stored() {
    let scratch = Scratch::new("wiped");
    let data = scratch.join("collector");
    let creds = create_project(&data, "wiped");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let agent_dir = scratch.join("agent");
    let conf = agent_conf(&creds.license, collector.grpc, &agent_dir.join("data"), &[]);
    let mut agent = Agent::infra(&agent_dir, &conf);
    let oid = the_agent(&api)["oid"].as_i64().expect("oid");
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.terminate_within(Duration::from_secs(2)).is_some());
    std::fs::remove_dir_all(agent_dir.join("data/spool")).expect("wipe the spool");

    let agent = Agent::infra(&agent_dir, &conf);
    let instances = wait_for(
        "a second instance with batches",
        Duration::from_secs(15),
        || {
            let delivery = api.ok(&format!("/api/v1/agents/{oid}/delivery"));
            let list = delivery["instances"].as_array()?.clone();
            (list.len() == 2 && list[1]["batches"].as_u64()? >= 3).then_some(list)
        },
    );
    assert_ne!(instances[0]["instance"], instances[1]["instance"]);
    assert_eq!(instances[1]["first_seq"], 1);
    assert_eq!(instances[1]["missing"], 0);
    assert_eq!(api.agents().len(), 1, "still the same agent");
    wait_for("the spool to drain", Duration::from_secs(10), || {
        (agent.spooled() == 0).then_some(())
    });
}
