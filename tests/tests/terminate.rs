//! Terminating an agent, end to end with two real server agents: the
//! terminated one's data is gone through the API at once, its reconnects
//! are refused (and it says so in its log, without hammering the
//! collector), the other agent is untouched; enabled again, it reports.

use std::time::{Duration, Instant};

use serde_json::Value;
use sightline_e2e::{Agent, Api, Collector, Scratch, agent_conf, create_project, wait_for};

/// `POST path` with the bearer token: status and JSON body.
fn post(collector: &Collector, token: &str, path: &str) -> (u16, Value) {
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = http
        .post(format!("http://{}{path}", collector.http))
        .header("Authorization", format!("Bearer {token}"))
        .send_empty()
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_json().unwrap_or(Value::Null),
    )
}

fn agent_named(api: &Api, oname: &str) -> Option<Value> {
    api.agents().into_iter().find(|a| a["oname"] == oname)
}

fn oid_of(api: &Api, oname: &str) -> i64 {
    wait_for(
        &format!("{oname} to register"),
        Duration::from_secs(20),
        || agent_named(api, oname)?["oid"].as_i64(),
    )
}

/// What the API holds of one agent: CPU points, whether it has a process
/// snapshot, its events, its delivery records.
fn holdings(api: &Api, oid: i64) -> (usize, bool, usize, usize) {
    let points = api.points(oid, "cpu.usage").len();
    let (status, _) = api.get(&format!("/api/v1/agents/{oid}/processes"));
    let events = api
        .events()
        .iter()
        .filter(|e| e["oid"].as_i64() == Some(oid))
        .count();
    let delivery = api.ok(&format!("/api/v1/agents/{oid}/delivery"));
    let instances = delivery["instances"].as_array().map_or(0, Vec::len);
    (points, status == 200, events, instances)
}

fn refusals(agent: &Agent) -> usize {
    agent
        .log_text()
        .lines()
        .filter(|l| l.contains("was terminated"))
        .count()
}

#[test]
fn a_terminated_agent_loses_its_data_and_is_refused_until_enabled() {
    let scratch = Scratch::new("terminate");
    let data = scratch.join("collector");
    let creds = create_project(&data, "lifecycle");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let start = |name: &str| {
        let dir = scratch.join(name);
        let conf = agent_conf(
            &creds.license,
            collector.grpc,
            &dir.join("data"),
            &[("oname", name)],
        );
        Agent::infra(&dir, &conf)
    };
    let doomed = start("doomed");
    let _kept = start("kept");
    let (gone, kept) = (oid_of(&api, "doomed"), oid_of(&api, "kept"));
    for oid in [gone, kept] {
        wait_for(
            "CPU points and a process snapshot",
            Duration::from_secs(20),
            || {
                let (points, snapshot, events, instances) = holdings(&api, oid);
                (points >= 2 && snapshot && events >= 1 && instances == 1).then_some(())
            },
        );
    }

    let (status, body) = post(
        &collector,
        &creds.token,
        &format!("/api/v1/agents/{gone}/terminate"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["terminated"], true, "{body}");
    assert!(body["deleted"]["series"].as_u64() > Some(0), "{body}");
    assert!(body["deleted"]["batches"].as_u64() > Some(0), "{body}");
    let terminated_at = Instant::now();

    // At once, through the API: nothing of it is left, and it is listed
    // as terminated (so it can be enabled).
    assert_eq!(holdings(&api, gone), (0, false, 0, 0), "its data is gone");
    let listed = agent_named(&api, "doomed").expect("still listed");
    assert_eq!(listed["terminated"], true, "{listed}");
    assert_eq!(listed["status"], "no data", "{listed}");
    let fleet = api.ok("/api/v1/fleet");
    let in_fleet = |oid: i64| {
        fleet["servers"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["oid"] == oid).cloned())
            .expect("in the fleet")
    };
    assert_eq!(in_fleet(gone)["terminated"], true);
    assert!(in_fleet(gone)["cpu_pct"].is_null(), "{}", in_fleet(gone));
    assert_eq!(in_fleet(kept)["terminated"], false);
    let other_project = create_project(&data, "other");
    let (status, _) = post(
        &collector,
        &other_project.token,
        &format!("/api/v1/agents/{kept}/terminate"),
    );
    assert_eq!(status, 404, "another project's token cannot terminate it");

    // Its next batch ends its stream, its reconnect is refused, and it
    // says so in its log.
    wait_for(
        "the agent to log its refusal",
        Duration::from_secs(30),
        || (refusals(&doomed) > 0).then_some(()),
    );
    let first_refusal = terminated_at.elapsed();
    let before = api.points(kept, "cpu.usage").len();
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        holdings(&api, gone),
        (0, false, 0, 0),
        "nothing stored since"
    );
    assert!(
        refusals(&doomed) <= 2,
        "it backs off rather than retrying at once: {} refusals in 8 s\n{}",
        refusals(&doomed),
        doomed.log_text()
    );
    assert!(
        collector.log_text().contains("terminated agent"),
        "the collector says whom it refused"
    );
    // The other agent went on reporting all along.
    assert!(
        api.points(kept, "cpu.usage").len() > before,
        "kept still reports"
    );
    let (points, snapshot, events, instances) = holdings(&api, kept);
    assert!(points > 0 && snapshot && events > 0 && instances == 1);

    let (status, body) = post(
        &collector,
        &creds.token,
        &format!("/api/v1/agents/{gone}/enable"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["terminated"], false, "{body}");
    assert_eq!(
        agent_named(&api, "doomed").expect("listed")["terminated"],
        false
    );
    // It comes back by itself on its next attempt (its longest backoff
    // is 30 s) and reports again.
    wait_for(
        "the enabled agent to report again",
        Duration::from_secs(45),
        || (api.points(gone, "cpu.usage").len() >= 2).then_some(()),
    );
    let kinds: Vec<String> = api
        .events()
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .filter(|k| k.starts_with("agent.terminated") || k.starts_with("agent.enabled"))
        .collect();
    assert_eq!(kinds, ["agent.enabled", "agent.terminated"], "newest first");
    println!("first refusal logged {first_refusal:?} after terminate");
}

/// An agent with nothing to send keeps its stream open with liveness
/// signals only: terminating it ends that stream at once (not at a next
/// batch that may never come), with the status the agent logs, and its
/// `Hello` is refused from then on.
#[test]
fn an_idle_stream_of_a_terminated_agent_ends_at_once() {
    use sightline_e2e::wire_agent;
    use sightline_proto::v1 as pb;

    let scratch = Scratch::new("terminate-idle");
    let data = scratch.join("collector");
    let creds = create_project(&data, "idle");
    let collector = Collector::start(&data);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let instance = "0123456789abcdef0123456789abcdef";
        let mut client = wire_agent::connect(&collector).await;
        let oid =
            wire_agent::hello(&mut client, &creds.license, "infra", "idle", instance, 1000).await;
        let (batches, outbox) = tokio::sync::mpsc::channel::<pb::Batch>(4);
        let liveness = pb::Batch {
            seq: 0,
            liveness: true,
            ..pb::Batch::default()
        };
        batches.send(liveness).await.expect("queued");
        let mut acks = client
            .push(wire_agent::request(
                &creds.license,
                Some((oid, instance)),
                tokio_stream::wrappers::ReceiverStream::new(outbox),
            ))
            .await
            .expect("push accepted")
            .into_inner();
        let path = format!("/api/v1/agents/{oid}/terminate");
        let (status, body) = tokio::task::block_in_place(|| post(&collector, &creds.token, &path));
        assert_eq!(status, 200, "{body}");
        let ended = tokio::time::timeout(Duration::from_secs(5), acks.message())
            .await
            .expect("the stream ends within 5 s");
        let status = ended.expect_err("ended with a status, not an ack or a clean end");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("was terminated"), "{status:?}");
        drop(batches);
        let hello = pb::HelloRequest {
            product: "infra".into(),
            oname: "idle".into(),
            hostname: "idle".into(),
            instance: instance.into(),
            interval_ms: 1000,
            ..pb::HelloRequest::default()
        };
        let refused = client
            .hello(wire_agent::request(&creds.license, None, hello))
            .await
            .expect_err("Hello refused");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    });
}
