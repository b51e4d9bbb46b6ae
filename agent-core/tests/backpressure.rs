//! The transport obeys the collector's backpressure, tested against a
//! scripted in-process gRPC server (a fake of the collector's two answers
//! that matter here; the real collector's side is tested in `tests/`):
//! - `RESOURCE_EXHAUSTED` with `x-sightline-retry-after-ms` on `Push`: the
//!   agent waits that long, not the long delay it gives refusals;
//! - `Ack.slow_down_ms`: the agent sends nothing more for that long.
//!
//! The retry-after asked for (4 s) is far outside both other delays the
//! agent could choose, so only obeying it passes: the first backoff is at
//! most 500 ms, and a refusal waits 15 to 30 s.
//!
//! On tokio's paused clock: the fake server runs in the test's own runtime
//! on loopback, so every wait the agent makes is either on that runtime's
//! sockets (ready as soon as the other side writes) or on the spool's
//! blocking tasks (during which tokio does not auto-advance the clock).
//! The clock only jumps when everything waits on a timer: the 4 s take no
//! real time, and the timings asserted are exactly the agent's choices.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use agent_core::domain::{Event, Payload, Severity, event_names};
use agent_core::health::AgentCounters;
use agent_core::pipeline::SharedSpool;
use agent_core::spool::{Spool, Sync};
use sightline_proto::metadata;
use sightline_proto::v1::{
    self as pb,
    ingest_server::{Ingest, IngestServer},
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

mod support;
use support::{start_pipeline, transport};

#[derive(Default)]
struct Script {
    pushes: Vec<Instant>,
    batches: Vec<(u64, Instant)>,
}

struct Fake {
    script: Arc<Mutex<Script>>,
}

#[tonic::async_trait]
impl Ingest for Fake {
    async fn hello(
        &self,
        _: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloReply>, Status> {
        Ok(Response::new(pb::HelloReply {
            oid: 1,
            project: "p".into(),
            server_time_ms: 0,
            last_seq: 0,
        }))
    }

    type PushStream = ReceiverStream<Result<pb::Ack, Status>>;

    async fn push(
        &self,
        request: Request<Streaming<pb::Batch>>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let first = {
            let mut script = self.script.lock().expect("lock");
            script.pushes.push(Instant::now());
            script.pushes.len() == 1
        };
        if first {
            let mut busy = Status::resource_exhausted("busy");
            busy.metadata_mut()
                .insert(metadata::RETRY_AFTER_MS, "4000".parse().expect("ascii"));
            return Err(busy);
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let script = self.script.clone();
        tokio::spawn(async move {
            while let Ok(Some(batch)) = inbound.message().await {
                let n = {
                    let mut s = script.lock().expect("lock");
                    s.batches.push((batch.seq, Instant::now()));
                    s.batches.len()
                };
                // The first ack asks for 400 ms of quiet.
                let slow_down_ms = if n == 1 { 400 } else { 0 };
                let ack = pb::Ack {
                    seq: batch.seq,
                    slow_down_ms,
                    ..pb::Ack::default()
                };
                if tx.send(Ok(ack)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_and_slow_down_are_obeyed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let script = Arc::new(Mutex::new(Script::default()));
    let server = tonic::transport::Server::builder()
        .add_service(IngestServer::new(Fake {
            script: script.clone(),
        }))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);

    let dir = support::temp_dir("backpressure", "retry");
    let counters = Arc::new(AgentCounters::default());
    let spool = Spool::open(&dir.join("spool"), 1 << 20, Sync::Normal).expect("spool");
    let spool = SharedSpool::new(spool, counters.clone());
    let out = start_pipeline(&spool, &counters, "infra");
    let event = || {
        Payload::Events(vec![Event::now(
            event_names::AGENT_STARTED,
            Severity::Info,
            "x",
        )])
    };
    // Longer than the test: no liveness signal gets in the way.
    let transport = transport(
        port,
        &dir,
        spool.clone(),
        counters.clone(),
        Duration::from_secs(60),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(transport.run(shutdown.clone()));
    // One batch; once it is acked (asking for 400 ms of quiet), two more.
    out.send_all(vec![event()]).await.expect("pipeline");
    let deadline = Instant::now() + Duration::from_secs(15);
    while script.lock().expect("lock").batches.is_empty() {
        assert!(Instant::now() < deadline, "the first batch did not arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    out.send_all(vec![event()]).await.expect("pipeline");
    out.send_all(vec![event()]).await.expect("pipeline");
    while script.lock().expect("lock").batches.len() < 3 {
        assert!(Instant::now() < deadline, "batches did not arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    let _ = running.await;
    let script = script.lock().expect("lock");
    let retried = script.pushes[1] - script.pushes[0];
    assert!(
        retried >= Duration::from_secs(4),
        "retry-after ignored (a backoff is at most 500 ms): {retried:?}"
    );
    assert!(
        retried < Duration::from_secs(6),
        "waited like a refusal (15 s or more): {retried:?}"
    );
    let quiet = script.batches[1].1 - script.batches[0].1;
    assert!(
        quiet >= Duration::from_millis(400),
        "slow-down ignored: {quiet:?}"
    );
    let seqs: Vec<u64> = script.batches.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [1, 2, 3], "in order, each once");
    assert_eq!(counters.snapshot().batches_acked, 3);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
