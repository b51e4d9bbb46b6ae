//! The transport's sessions, tested against a scripted in-process gRPC
//! server that records what it is sent:
//! - one session per spool instance, oldest first: `Hello` and the `Push`
//!   metadata name the instance of the batches pushed, and a newer
//!   instance's batches wait for a session of their own;
//! - with nothing to send for an interval, a liveness signal (seq 0, no
//!   payloads, the agent's health), not spooled and not acked; the refusal
//!   a collector that does not know liveness answers with is ignored;
//! - batches in flight are not evicted by a full spool: their receipts
//!   settle as acked once the collector stores them.
//!
//! On tokio's paused clock, as `backpressure.rs` (see there why that holds
//! with an in-process server).

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use agent_core::domain::{Event, Payload, Severity};
use agent_core::health::AgentCounters;
use agent_core::pipeline::SharedSpool;
use agent_core::spool::{Spool, SpoolOptions, Sync};
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

fn temp_dir(name: &str) -> std::path::PathBuf {
    support::temp_dir("sessions", name)
}

#[derive(Default)]
struct Record {
    hellos: Vec<String>,
    /// Per Push stream: its instance metadata and the batches it carried.
    pushes: Vec<(String, Vec<pb::Batch>)>,
    /// Per Push stream: its `grpc-encoding` header.
    encodings: Vec<String>,
}

struct Fake {
    record: Arc<Mutex<Record>>,
    /// One permit per ack the server may send (unlimited when `None`).
    acks: Option<Arc<tokio::sync::Semaphore>>,
}

#[tonic::async_trait]
impl Ingest for Fake {
    async fn hello(
        &self,
        request: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloReply>, Status> {
        let hello = request.into_inner();
        assert!(!hello.boot_id.is_empty(), "Hello carries the boot id");
        self.record
            .lock()
            .expect("lock")
            .hellos
            .push(hello.instance);
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
        let instance = request
            .metadata()
            .get(metadata::INSTANCE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let encoding = request
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("identity")
            .to_string();
        let at = {
            let mut r = self.record.lock().expect("lock");
            r.encodings.push(encoding);
            r.pushes.push((instance, Vec::new()));
            r.pushes.len() - 1
        };
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        // Acks go out from their own task, so batches are read (and
        // recorded) while acks are held back.
        let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<pb::Ack>();
        let permits = self.acks.clone();
        tokio::spawn(async move {
            while let Some(ack) = ack_rx.recv().await {
                if let Some(p) = &permits {
                    match p.acquire().await {
                        Ok(permit) => permit.forget(),
                        Err(_) => return,
                    }
                }
                if tx.send(Ok(ack)).await.is_err() {
                    return;
                }
            }
        });
        let record = self.record.clone();
        tokio::spawn(async move {
            while let Ok(Some(batch)) = inbound.message().await {
                let seq = batch.seq;
                record.lock().expect("lock").pushes[at].1.push(batch);
                // What a collector that does not know liveness answers.
                let ack = if seq == 0 {
                    pb::Ack {
                        seq: 0,
                        error: "sequence numbers start at 1".into(),
                        ..pb::Ack::default()
                    }
                } else {
                    pb::Ack {
                        seq,
                        ..pb::Ack::default()
                    }
                };
                if ack_tx.send(ack).is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

async fn fake_server() -> (u16, Arc<Mutex<Record>>) {
    fake_server_with(None).await
}

async fn fake_server_with(acks: Option<Arc<tokio::sync::Semaphore>>) -> (u16, Arc<Mutex<Record>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let record = Arc::new(Mutex::new(Record::default()));
    // As the collector: takes zstd and gzip, offers zstd.
    let zstd = tonic::codec::CompressionEncoding::Zstd;
    let gzip = tonic::codec::CompressionEncoding::Gzip;
    let server = tonic::transport::Server::builder()
        .add_service(
            IngestServer::new(Fake {
                record: record.clone(),
                acks,
            })
            .accept_compressed(zstd)
            .accept_compressed(gzip)
            .send_compressed(zstd),
        )
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    (port, record)
}

fn event_batch(seq: u64) -> Vec<u8> {
    use agent_core::transport::wire;
    let event = Payload::Events(vec![Event::now("test.event", Severity::Info, "x")]);
    let parts = wire::encode_payload(&event, 1 << 20).expect("fits");
    wire::encode_batch(
        seq,
        std::time::SystemTime::now(),
        &Default::default(),
        &parts,
    )
}

fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> impl Future<Output = ()> {
    let deadline = Instant::now() + limit;
    let what = what.to_string();
    async move {
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn each_instance_gets_its_own_session_oldest_first() {
    let (port, record) = fake_server().await;
    let dir = temp_dir("instances");
    let spool_dir = dir.join("spool");
    let options = |boot: &str| SpoolOptions {
        boot_id: Some(boot.into()),
        ..SpoolOptions::new(1 << 20, Sync::Normal)
    };
    // Three batches, then a reboot: two more in a new instance.
    let mut spool = Spool::open_with(&spool_dir, options("boot-a")).expect("spool");
    let meta = agent_core::spool::BatchMeta {
        source: Arc::from("infra"),
        ..Default::default()
    };
    for _ in 0..3 {
        spool
            .append(meta.clone(), None, event_batch)
            .expect("append");
    }
    let old = spool.current_instance().1.to_string();
    drop(spool);
    let mut spool = Spool::open_with(&spool_dir, options("boot-b")).expect("spool");
    let new = spool.current_instance().1.to_string();
    assert_ne!(old, new);
    for _ in 0..2 {
        spool
            .append(meta.clone(), None, event_batch)
            .expect("append");
    }
    let counters = Arc::new(AgentCounters::default());
    let spool = SharedSpool::new(spool, counters.clone());
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(
        transport(
            port,
            &dir,
            spool.clone(),
            counters.clone(),
            Duration::from_secs(60),
        )
        .run(shutdown.clone()),
    );
    wait_until("both instances delivered", Duration::from_secs(10), || {
        counters.snapshot().batches_acked == 5
    })
    .await;
    shutdown.cancel();
    let _ = running.await;
    assert!(spool.in_memory(|s| s.is_empty()).await.expect("spool"));

    let record = record.lock().expect("lock");
    assert_eq!(
        record.hellos,
        [old.clone(), new.clone()],
        "oldest instance first"
    );
    let seqs = |i: usize| -> Vec<u64> { record.pushes[i].1.iter().map(|b| b.seq).collect() };
    assert_eq!(record.pushes.len(), 2);
    assert_eq!(record.pushes[0].0, old);
    assert_eq!(seqs(0), [1, 2, 3], "only the old instance's batches");
    assert_eq!(record.pushes[1].0, new);
    assert_eq!(seqs(1), [1, 2]);
    assert_eq!(
        counters.snapshot().reconnects,
        0,
        "a clean hand-over, not a failure"
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[tokio::test(start_paused = true)]
async fn an_idle_agent_sends_liveness_not_spooled_not_acked() {
    let (port, record) = fake_server().await;
    let dir = temp_dir("liveness");
    let counters = Arc::new(AgentCounters::default());
    let spool = Spool::open(&dir.join("spool"), 1 << 20, Sync::Normal).expect("spool");
    let spool = SharedSpool::new(spool, counters.clone());
    let out = start_pipeline(&spool, &counters, "infra");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(
        transport(
            port,
            &dir,
            spool.clone(),
            counters.clone(),
            Duration::from_millis(300),
        )
        .run(shutdown.clone()),
    );
    // One real batch, then silence.
    let receipt = out
        .event(Event::now("test.event", Severity::Info, "x"))
        .await
        .expect("pipeline");
    assert_eq!(receipt.settled().await, agent_core::Fate::Acked);
    let started = Instant::now();
    wait_until("two liveness signals", Duration::from_secs(5), || {
        let r = record.lock().expect("lock");
        r.pushes
            .iter()
            .flat_map(|p| &p.1)
            .filter(|b| b.liveness)
            .count()
            >= 2
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "one per idle interval"
    );
    shutdown.cancel();
    let _ = running.await;

    let record = record.lock().expect("lock");
    assert_eq!(
        record.pushes.len(),
        1,
        "the refused seq 0 did not end the session"
    );
    let batches = &record.pushes[0].1;
    assert_eq!(batches[0].seq, 1);
    assert!(!batches[0].liveness);
    for b in batches.iter().skip(1) {
        assert!(b.liveness, "only liveness after the real batch");
        assert_eq!(b.seq, 0);
        assert!(b.payloads.is_empty());
        assert!(b.health.is_some(), "carries the agent's health");
    }
    let health = counters.snapshot();
    assert_eq!(health.batches_acked, 1);
    assert_eq!(
        health.batches_dropped, 0,
        "the refusal of seq 0 removed nothing"
    );
    assert_eq!(
        counters
            .batches_rejected
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// The regression: the spool evicted batches the transport had sent, and
/// reported them dropped, although the collector then stored them.
#[tokio::test(start_paused = true)]
async fn batches_in_flight_are_not_evicted_and_settle_as_acked() {
    let permits = Arc::new(tokio::sync::Semaphore::new(0));
    let (port, record) = fake_server_with(Some(permits.clone())).await;
    let dir = temp_dir("in-flight");
    let counters = Arc::new(AgentCounters::default());
    let one = agent_core::spool::Spool::file_len(
        event_batch(1).len(),
        &agent_core::spool::BatchMeta {
            source: Arc::from("main"),
            ..Default::default()
        },
    );
    let mut options = SpoolOptions::new(3 * one + one / 2, Sync::Normal);
    options.counters = Some(counters.clone());
    let spool = Spool::open_with(&dir.join("spool"), options).expect("spool");
    let spool = SharedSpool::new(spool, counters.clone());
    let out = start_pipeline(&spool, &counters, "main");
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(
        transport(
            port,
            &dir,
            spool.clone(),
            counters.clone(),
            Duration::from_secs(60),
        )
        .run(shutdown.clone()),
    );
    let event = || Event::now("test.event", Severity::Info, "x");
    let mut sent = Vec::new();
    for _ in 0..3 {
        sent.push(out.event(event()).await.expect("pipeline"));
    }
    wait_until("three batches in flight", Duration::from_secs(2), || {
        record
            .lock()
            .expect("lock")
            .pushes
            .iter()
            .map(|p| p.1.len())
            .sum::<usize>()
            == 3
    })
    .await;
    // The spool fills up while the collector holds its acks.
    for _ in 0..3 {
        let mut r = out.event(event()).await.expect("pipeline");
        assert_eq!(r.spooled().await, Ok(()));
    }
    // (The spool may drop newer batches not yet sent to make room; never
    // those the collector is storing.)
    for r in &sent {
        assert_eq!(r.fate(), None, "not reported dropped");
    }
    // The collector stores them after all.
    permits.add_permits(100);
    for r in sent {
        assert_eq!(r.settled().await, agent_core::Fate::Acked);
    }
    shutdown.cancel();
    let _ = running.await;
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// With zstd on, batches go out compressed (one context for the stream,
/// framed by the agent itself) and arrive whole; the acks come back
/// uncompressed and settle every batch.
#[tokio::test]
async fn zstd_batches_arrive_whole_and_are_acked() {
    let (port, record) = fake_server().await;
    let dir = temp_dir("zstd");
    let mut spool = Spool::open(&dir.join("spool"), 1 << 20, Sync::Normal).expect("spool");
    let meta = agent_core::spool::BatchMeta {
        source: Arc::from("infra"),
        ..Default::default()
    };
    let mut sent = Vec::new();
    for _ in 0..5 {
        let appended = spool
            .append(meta.clone(), None, event_batch)
            .expect("append");
        sent.push(spool.read(appended.key).expect("read").expect("spooled"));
    }
    let counters = Arc::new(AgentCounters::default());
    let spool = SharedSpool::new(spool, counters.clone());
    let shutdown = CancellationToken::new();
    let mut zstd = transport(
        port,
        &dir,
        spool.clone(),
        counters.clone(),
        Duration::from_secs(60),
    );
    zstd.server.compression = agent_core::settings::Compression::Zstd;
    let running = tokio::spawn(zstd.run(shutdown.clone()));
    wait_until("every batch acked", Duration::from_secs(10), || {
        counters.snapshot().batches_acked == 5
    })
    .await;
    shutdown.cancel();
    let _ = running.await;
    assert!(spool.in_memory(|s| s.is_empty()).await.expect("spool"));
    let record = record.lock().expect("lock");
    assert_eq!(record.encodings, ["zstd"], "one stream, compressed");
    let received: Vec<Vec<u8>> = record.pushes[0]
        .1
        .iter()
        .map(prost::Message::encode_to_vec)
        .collect();
    assert_eq!(received, sent, "every batch, byte for byte, in order");
    assert_eq!(counters.snapshot().reconnects, 0);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// With zstd on, the pipeline spools batches compressed; they reach the
/// collector whole whatever the transport's compression: as they are with
/// zstd, decompressed with none, recompressed by tonic with gzip (the
/// setting may change while batches wait in the spool).
#[tokio::test]
async fn batches_spooled_compressed_arrive_whole_with_any_compression() {
    use agent_core::settings::Compression;
    use agent_core::transport::wire;
    for (compression, encoding) in [
        (Compression::Zstd, "zstd"),
        (Compression::None, "identity"),
        (Compression::Gzip, "gzip"),
    ] {
        let (port, record) = fake_server().await;
        let dir = temp_dir(&format!("compressed-{encoding}"));
        let spool = Spool::open(&dir.join("spool"), 16 << 20, Sync::Normal).expect("spool");
        let counters = Arc::new(AgentCounters::default());
        let spool = SharedSpool::new(spool, counters.clone()).compressed(true);
        let out = start_pipeline(&spool, &counters, "logs");
        let mut receipts = Vec::new();
        for n in 0..4 {
            // Large enough to compress, one batch each.
            let text = format!("event {n} ").repeat(2000);
            let event = Event::now("test.event", Severity::Info, text);
            let mut receipt = out
                .send(agent_core::pipeline::OutBatch::new(vec![Payload::Events(
                    vec![event],
                )]))
                .await
                .expect("sent");
            receipt.spooled().await.expect("spooled");
            receipts.push(receipt);
        }
        let spooled = spool
            .with(|s| {
                let key = s.next_after(None).expect("a batch");
                s.read(key).expect("read").expect("there")
            })
            .await
            .expect("spool");
        assert!(
            wire::is_compressed(&spooled),
            "{encoding}: spooled compressed"
        );
        assert!(spooled.len() < 2000, "{encoding}: {} bytes", spooled.len());
        let shutdown = CancellationToken::new();
        let mut t = transport(
            port,
            &dir,
            spool.clone(),
            counters.clone(),
            Duration::from_secs(60),
        );
        t.server.compression = compression;
        let running = tokio::spawn(t.run(shutdown.clone()));
        for receipt in receipts {
            assert_eq!(
                receipt.settled().await,
                agent_core::Fate::Acked,
                "{encoding}"
            );
        }
        shutdown.cancel();
        let _ = running.await;
        let record = record.lock().expect("lock");
        assert_eq!(record.encodings, [encoding]);
        let batches = &record.pushes[0].1;
        let seqs: Vec<u64> = batches.iter().map(|b| b.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4], "{encoding}");
        for (n, batch) in batches.iter().enumerate() {
            assert!(batch.health.is_some(), "{encoding}: the health travels");
            let messages: Vec<&str> = batch
                .payloads
                .iter()
                .filter_map(|p| match &p.kind {
                    Some(pb::payload::Kind::Events(e)) => Some(e),
                    _ => None,
                })
                .flat_map(|e| e.events.iter().map(|e| e.message.as_str()))
                .collect();
            assert_eq!(
                messages,
                [format!("event {n} ").repeat(2000).as_str()],
                "{encoding}"
            );
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}

/// A batch left by an earlier run is checked to decode before it is sent:
/// one that does not (whole on disk, but not a batch) is dropped and
/// counted instead of being sent forever; the next is delivered.
#[tokio::test]
async fn a_batch_of_an_earlier_run_that_does_not_decode_is_dropped() {
    let (port, record) = fake_server().await;
    let dir = temp_dir("undecodable");
    let meta = agent_core::spool::BatchMeta {
        source: Arc::from("infra"),
        ..Default::default()
    };
    let mut spool = Spool::open(&dir.join("spool"), 1 << 20, Sync::Normal).expect("spool");
    // A zstd frame's magic, then nothing that decompresses.
    spool
        .append(meta.clone(), None, |_| {
            let mut bytes = agent_core::transport::wire::ZSTD_MAGIC.to_vec();
            bytes.extend_from_slice(&[0xff; 64]);
            bytes
        })
        .expect("append");
    spool
        .append(meta.clone(), None, event_batch)
        .expect("append");
    drop(spool);
    let spool = Spool::open(&dir.join("spool"), 1 << 20, Sync::Normal).expect("reopen");
    let counters = Arc::new(AgentCounters::default());
    let spool = SharedSpool::new(spool, counters.clone());
    let shutdown = CancellationToken::new();
    let t = transport(
        port,
        &dir,
        spool.clone(),
        counters.clone(),
        Duration::from_secs(60),
    );
    let running = tokio::spawn(t.run(shutdown.clone()));
    wait_until("the good batch acked", Duration::from_secs(10), || {
        counters.snapshot().batches_acked == 1
    })
    .await;
    shutdown.cancel();
    let _ = running.await;
    let unreported = spool.in_memory(|s| s.unreported()).await.expect("spool");
    assert_eq!(unreported.batches, 1, "the drop is counted, to be reported");
    let record = record.lock().expect("lock");
    let seqs: Vec<u64> = record
        .pushes
        .iter()
        .flat_map(|p| p.1.iter().map(|b| b.seq))
        .collect();
    assert_eq!(seqs, [2]);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
