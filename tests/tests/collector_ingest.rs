//! The collector's ingest against scripted gRPC clients: two hosts with one
//! `oname`, liveness signals, open event names, and every cap of
//! `collector.conf` gone over, each refused clearly while the collector
//! keeps serving.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use sightline_e2e::wire_agent::{Client, connect};
use sightline_e2e::{Collector, Scratch, create_project, wait_for};
use sightline_proto::metadata;
use sightline_proto::v1 as pb;
use tonic::metadata::MetadataValue;

fn with_license<T>(license: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        metadata::LICENSE,
        MetadataValue::try_from(license).expect("ascii"),
    );
    request
}

fn hello(oname: &str, hostname: &str, boot_id: &str, instance: &str) -> pb::HelloRequest {
    pb::HelloRequest {
        product: "infra".into(),
        oname: oname.into(),
        hostname: hostname.into(),
        os: "linux".into(),
        agent_version: "0.1.0".into(),
        instance: instance.into(),
        interval_ms: 1000,
        boot_id: boot_id.into(),
        ..pb::HelloRequest::default()
    }
}

/// Ends a [`HeldOpen`] stream, as an agent going away does.
#[derive(Clone, Default)]
struct Gate(Arc<Mutex<(bool, Option<Waker>)>>);

impl Gate {
    fn close(&self) {
        let mut g = self.0.lock().expect("gate");
        g.0 = true;
        if let Some(w) = g.1.take() {
            w.wake();
        }
    }
}

/// Batches, then the stream stays open until its gate closes.
struct HeldOpen(std::vec::IntoIter<pb::Batch>, Gate);

impl tonic::codegen::tokio_stream::Stream for HeldOpen {
    type Item = pb::Batch;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<pb::Batch>> {
        if let Some(b) = self.0.next() {
            return Poll::Ready(Some(b));
        }
        let mut g = (self.1).0.lock().expect("gate");
        if g.0 {
            Poll::Ready(None)
        } else {
            g.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// Opens a `Push` stream sending `batches` and keeping the stream open.
async fn push(
    client: &mut Client,
    license: &str,
    oid: u64,
    instance: &str,
    batches: Vec<pb::Batch>,
) -> tonic::Streaming<pb::Ack> {
    push_gated(client, license, oid, instance, batches, Gate::default()).await
}

/// [`push`], ending the stream when `gate` closes.
async fn push_gated(
    client: &mut Client,
    license: &str,
    oid: u64,
    instance: &str,
    batches: Vec<pb::Batch>,
    gate: Gate,
) -> tonic::Streaming<pb::Ack> {
    let mut request = with_license(license, HeldOpen(batches.into_iter(), gate));
    let meta = request.metadata_mut();
    meta.insert(
        metadata::OID,
        MetadataValue::try_from(oid.to_string()).expect("ascii"),
    );
    meta.insert(
        metadata::INSTANCE,
        MetadataValue::try_from(instance).expect("ascii"),
    );
    client
        .push(request)
        .await
        .expect("push accepted")
        .into_inner()
}

async fn next_ack(acks: &mut tonic::Streaming<pb::Ack>) -> pb::Ack {
    tokio::time::timeout(Duration::from_secs(10), acks.message())
        .await
        .expect("an ack in time")
        .expect("no stream error")
        .expect("an ack")
}

fn metrics_batch(seq: u64, time_ms: i64, samples: Vec<pb::Sample>) -> pb::Batch {
    pb::Batch {
        seq,
        time_ms,
        health: None,
        payloads: vec![pb::Payload {
            kind: Some(pb::payload::Kind::Metrics(pb::Metrics { samples, time_ms })),
        }],
        liveness: false,
    }
}

fn sample(name: &str, labels: &[(&str, &str)]) -> pb::Sample {
    pb::Sample {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| pb::Label {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        value: 1.0,
    }
}

const INSTANCE_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const INSTANCE_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// Two hosts configured with the same oname (cloned VMs): while the first
/// holds its stream, the second is refused with a message naming the
/// first, and one `agent.duplicate_oname` event is raised; a reconnect of
/// the first is never refused; once it leaves, the second may come in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_with_the_same_oname_is_refused_while_the_first_is_connected() {
    let scratch = Scratch::new("dup-oname");
    let data = scratch.join("collector");
    let creds = create_project(&data, "dup");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let lic = creds.license.as_str();

    let mut a = connect(&collector).await;
    let reply = a
        .hello(with_license(
            lic,
            hello("web-1", "host-a", "boot-a", INSTANCE_A),
        ))
        .await
        .expect("first host registers")
        .into_inner();
    let a_gate = Gate::default();
    let mut a_acks = push_gated(
        &mut a,
        lic,
        reply.oid,
        INSTANCE_A,
        vec![metrics_batch(1, 1000, vec![sample("m", &[])])],
        a_gate.clone(),
    )
    .await;
    assert_eq!(next_ack(&mut a_acks).await.seq, 1);

    let mut b = connect(&collector).await;
    for _ in 0..3 {
        let refused = b
            .hello(with_license(
                lic,
                hello("web-1", "host-b", "boot-b", INSTANCE_B),
            ))
            .await
            .expect_err("the second host is refused");
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{refused:?}"
        );
        let m = refused.message();
        assert!(
            m.contains("oname web-1 is in use by another host (host-a, 127.0.0.1, since "),
            "{m}"
        );
        assert!(
            m.contains("give this host its own oname in infra.conf"),
            "{m}"
        );
    }
    let duplicates = |api: &sightline_e2e::Api| {
        api.events()
            .into_iter()
            .filter(|e| e["kind"] == "agent.duplicate_oname")
            .collect::<Vec<_>>()
    };
    let events = duplicates(&api);
    assert_eq!(events.len(), 1, "once per episode: {events:?}");
    assert_eq!(events[0]["attrs"]["refused_hostname"], "host-b");
    // The first host's data was not touched by the refused hellos.
    let agent = &api.agents()[0];
    assert_eq!(agent["hostname"], "host-a");

    // The same host reconnecting (same boot id) is never refused.
    a.hello(with_license(
        lic,
        hello("web-1", "host-a", "boot-a", INSTANCE_A),
    ))
    .await
    .expect("a reconnect of the first host");

    // The first host goes away: the second may register.
    a_gate.close();
    drop(a_acks);
    drop(a);
    let reply_b = wait_for(
        "the second host to be let in",
        Duration::from_secs(10),
        || {
            let mut b = b.clone();
            let request = with_license(lic, hello("web-1", "host-b", "boot-b", INSTANCE_B));
            futures_block(async move { b.hello(request).await.ok() })
        },
    );
    assert_eq!(
        reply_b.into_inner().oid,
        reply.oid,
        "the same agent id, now host-b's"
    );
    assert_eq!(duplicates(&api).len(), 1);
}

/// Runs a future to completion from inside a sync closure on this test's
/// runtime (`wait_for` polls synchronously).
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// A liveness signal (seq 0 with `liveness`) keeps the agent seen and
/// brings its per-source health, stores nothing and is never acked; seq 0
/// without it is refused in the ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_is_recorded_never_acked_and_seq_zero_without_it_is_refused() {
    let scratch = Scratch::new("liveness");
    let data = scratch.join("collector");
    let creds = create_project(&data, "live");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let lic = creds.license.as_str();
    let mut c = connect(&collector).await;
    let reply = c
        .hello(with_license(
            lic,
            hello("quiet-log", "h", "boot", INSTANCE_A),
        ))
        .await
        .expect("hello")
        .into_inner();
    let liveness = pb::Batch {
        seq: 0,
        time_ms: 1,
        health: Some(pb::AgentHealth {
            sources: vec![pb::SourceHealth {
                name: "files:/var/log/app".into(),
                records_read: 12,
                records_sent: 12,
                records_acked: 10,
                records_dropped: 0,
            }],
            ..pb::AgentHealth::default()
        }),
        payloads: vec![],
        liveness: true,
    };
    let zero = pb::Batch {
        seq: 0,
        time_ms: 1,
        ..pb::Batch::default()
    };
    let before = api.agents()[0]["last_seen_ms"].as_i64().expect("last seen");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut acks = push(
        &mut c,
        lic,
        reply.oid,
        INSTANCE_A,
        vec![
            liveness.clone(),
            zero,
            liveness,
            metrics_batch(1, 5, vec![sample("m", &[])]),
        ],
    )
    .await;
    let refused = next_ack(&mut acks).await;
    assert_eq!(refused.seq, 0);
    assert!(refused.error.contains("liveness"), "{refused:?}");
    let stored = next_ack(&mut acks).await;
    assert_eq!(
        (stored.seq, stored.duplicate),
        (1, false),
        "the liveness signals were not acked"
    );
    // Liveness signals are written together, within a second.
    let agent = wait_for(
        "the liveness signal's health",
        Duration::from_secs(5),
        || {
            let agent = api.agents().into_iter().next()?;
            agent["health"]["sources"].is_array().then_some(agent)
        },
    );
    assert!(agent["last_seen_ms"].as_i64().expect("last seen") > before);
    assert_eq!(agent["status"], "up");
    let sources = &agent["health"]["sources"];
    assert_eq!(sources[0]["name"], "files:/var/log/app", "{agent}");
    assert_eq!(sources[0]["records_acked"], 10);
    let delivery = api.ok(&format!("/api/v1/agents/{}/delivery", reply.oid));
    assert_eq!(
        delivery["instances"][0]["batches"], 1,
        "only seq 1 is stored: {delivery}"
    );
    let health = api.ok("/api/v1/health");
    assert_eq!(health["store"]["batches"], 1, "{health}");
    assert_eq!(health["store"]["groups"], 1, "{health}");
}

/// Every cap in collector.conf gone over: a clear refusal naming the key,
/// the rest of the batch stored, the collector serving on.
#[tokio::test]
async fn every_cap_refuses_clearly_and_keeps_the_rest() {
    let scratch = Scratch::new("caps");
    let data = scratch.join("collector");
    let creds = create_project(&data, "caps");
    let conf = scratch.join("collector.conf");
    std::fs::write(
        &conf,
        "limit.agent.series=3\nlimit.sample.labels=2\nlimit.label.key.bytes=8\nlimit.label.value.bytes=16\nlimit.metric.name.bytes=20\nlimit.hello.field.bytes=32\n",
    )
    .expect("conf");
    let mut collector = Collector::start_with(
        &data,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--conf", conf.to_str().expect("utf-8")],
    );
    let api = collector.api(&creds.token);
    let lic = creds.license.as_str();
    let mut c = connect(&collector).await;

    let long = "x".repeat(33);
    type Field = fn(&mut pb::HelloRequest, String);
    let fields: [(&str, Field); 7] = [
        ("product", |h, v| h.product = v),
        ("oname", |h, v| h.oname = v),
        ("hostname", |h, v| h.hostname = v),
        ("os", |h, v| h.os = v),
        ("agent_version", |h, v| h.agent_version = v),
        ("created_time", |h, v| h.created_time = v),
        ("boot_id", |h, v| h.boot_id = v),
    ];
    for (name, set) in fields {
        let mut request = hello("capped", "h", "boot", INSTANCE_A);
        set(&mut request, long.clone());
        let refused = c
            .hello(with_license(lic, request))
            .await
            .expect_err("over the cap");
        assert_eq!(
            refused.code(),
            tonic::Code::InvalidArgument,
            "{name}: {refused:?}"
        );
        assert!(
            refused
                .message()
                .starts_with(&format!("{name} is 33 bytes"))
                && refused.message().contains("limit.hello.field.bytes=32"),
            "{name}: {}",
            refused.message()
        );
    }
    assert!(api.agents().is_empty(), "nothing was registered");

    let reply = c
        .hello(with_license(lic, hello("capped", "h", "boot", INSTANCE_A)))
        .await
        .expect("within the caps")
        .into_inner();
    let five = |i: usize| sample("series.n", &[("i", &i.to_string())]);
    let event = |name: &str| pb::AgentEvent {
        time_ms: 5,
        name: name.into(),
        message: "m".into(),
        ..pb::AgentEvent::default()
    };
    let mut first = metrics_batch(1, 1000, (0..5).map(five).collect());
    first.payloads.push(pb::Payload {
        kind: Some(pb::payload::Kind::Events(pb::AgentEvents {
            events: vec![event("log.file_rotated"), event("Not-A-Name")],
        })),
    });
    let batches = vec![
        first,
        metrics_batch(2, 2000, (0..5).map(five).collect()),
        metrics_batch(
            3,
            3000,
            vec![
                sample("series.n", &[("a", "1"), ("b", "2"), ("c", "3")]),
                sample("series.n", &[("a_very_long_key", "1")]),
                sample("series.n", &[("v", "a value over sixteen bytes")]),
                sample("a.metric.name.over.twenty", &[]),
            ],
        ),
    ];
    let mut acks = push(&mut c, lic, reply.oid, INSTANCE_A, batches).await;
    let one = next_ack(&mut acks).await;
    let partial = one.partial.expect("a partial success");
    assert_eq!(
        partial.rejected, 3,
        "two new series over the cap, one bad event name: {partial:?}"
    );
    assert!(
        partial.message.contains("limit.agent.series=3"),
        "{}",
        partial.message
    );
    assert!(
        partial.message.contains("event name"),
        "{}",
        partial.message
    );
    let two = next_ack(&mut acks).await;
    assert_eq!(
        two.partial.map(|p| p.rejected),
        Some(2),
        "still over the cap"
    );
    let three = next_ack(&mut acks).await;
    let partial = three.partial.expect("a partial success");
    assert_eq!(partial.rejected, 4);
    for key in [
        "limit.sample.labels=2",
        "limit.label.key.bytes=8",
        "limit.label.value.bytes=16",
        "limit.metric.name.bytes=20",
    ] {
        assert!(partial.message.contains(key), "{key}: {}", partial.message);
    }
    let body = api.ok(&format!(
        "/api/v1/agents/{}/metrics?name=series.n&from=0&to=10000",
        reply.oid
    ));
    let series = body["series"].as_array().expect("series");
    assert_eq!(series.len(), 3, "the cap holds: {body}");
    assert!(
        series
            .iter()
            .all(|s| s["points"].as_array().map(Vec::len) == Some(2)),
        "existing series keep flowing: {body}"
    );
    let names: Vec<String> = api
        .events()
        .iter()
        .filter_map(|e| e["kind"].as_str().map(String::from))
        .collect();
    assert_eq!(
        names,
        ["log.file_rotated"],
        "an open name is kept, a bad one refused"
    );
    assert!(collector.is_running());
}

/// A flood of refused calls (unknown license) logs one warning per 10 s,
/// not one per call.
#[tokio::test]
async fn refusal_warnings_are_rate_limited() {
    let scratch = Scratch::new("log-flood");
    let data = scratch.join("collector");
    let _ours = create_project(&data, "ours");
    let theirs = create_project(&scratch.join("elsewhere"), "theirs");
    let collector = Collector::start(&data);
    let mut c = connect(&collector).await;
    for _ in 0..50 {
        let refused = c
            .hello(with_license(
                &theirs.license,
                hello("x", "h", "b", INSTANCE_A),
            ))
            .await
            .expect_err("unknown license");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    }
    let lines = collector
        .log_text()
        .lines()
        .filter(|l| l.contains("Refused an unknown license."))
        .count();
    assert_eq!(lines, 1, "{}", collector.log_text());
}

/// Connections beyond `max.connections` are closed at once, and the
/// warning about them is logged once per 10 s, not once per connection.
#[test]
fn too_many_connections_are_closed_and_logged_once() {
    use std::io::Read;
    let scratch = Scratch::new("conn-flood");
    let data = scratch.join("collector");
    let _creds = create_project(&data, "flood");
    let conf = scratch.join("collector.conf");
    std::fs::write(&conf, "max.connections=1\n").expect("conf");
    let mut collector = Collector::start_with(
        &data,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--conf", conf.to_str().expect("utf-8")],
    );
    // The one slot, held (it has 10 s to send its first bytes).
    let _held = std::net::TcpStream::connect(collector.grpc).expect("connect");
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..30 {
        let mut extra = std::net::TcpStream::connect(collector.grpc).expect("connect");
        extra
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        let closed = match extra.read(&mut buf) {
            Ok(n) => n == 0,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        };
        assert!(closed, "a connection over the cap is closed at once");
    }
    assert!(collector.is_running());
    let lines: Vec<String> = collector
        .log_text()
        .lines()
        .filter(|l| l.contains("Too many connections"))
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
}

/// `store` picks the backend for `serve` and `project` alike; an unknown
/// scheme stops both with an error naming the key and the schemes known.
#[test]
fn the_store_key_chooses_the_backend_for_serve_and_project() {
    use std::process::Command;
    let scratch = Scratch::new("store-key");
    let dir = scratch.join("elsewhere");
    let url = format!("sqlite:{}", dir.display());
    let run = |args: &[&str]| {
        let out = Command::new(sightline_e2e::binary("sightline-collector"))
            .args(args)
            .output()
            .expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(&["project", "create", "p", "--store", &url]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("license="), "{stdout}");
    assert!(
        dir.join("sightline.db").exists(),
        "created where store says"
    );
    let (code, stdout, _) = run(&["project", "list", "--store", &url]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("\tp"), "{stdout}");
    // serve with --store (over a --data it then does not use) serves
    // the project created there: its token is known.
    let token = {
        let (_, created, _) = run(&["project", "create", "q", "--store", &url]);
        created
            .lines()
            .find_map(|l| l.strip_prefix("token="))
            .expect("a token")
            .to_string()
    };
    let unused = scratch.join("unused");
    let collector =
        Collector::start_with(&unused, "127.0.0.1:0", "127.0.0.1:0", &["--store", &url]);
    assert!(
        collector.api(&token).agents().is_empty(),
        "the token is known"
    );
    assert!(!unused.join("sightline.db").exists(), "--data is not used");
    for args in [
        vec!["project", "list", "--store", "clickhouse://db:9000"],
        vec!["serve", "--store", "clickhouse://db:9000"],
    ] {
        let (code, _, stderr) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("store: unknown store scheme 'clickhouse'")
                && stderr.contains("known schemes: sqlite"),
            "{args:?}: {stderr}"
        );
    }
}
