//! `logsink`: a null collector for `cargo xtask bench log`. It speaks the
//! collector's gRPC protocol (`Hello`, `Push` with zstd or gzip) and acks
//! every batch the moment it arrives, storing nothing, so the bench can
//! measure the log agent reading from a file into a sink that costs nothing.
//!
//! It counts the log records (and their text bytes) of every batch, and
//! prints on stdout `listening grpc=ADDR` once, then `records N bytes M`
//! whenever the counts changed (at most every 20 ms). It checks no license
//! and keeps nothing but the two counters. It never runs unbounded: it ends
//! on a signal, or on its own after `--for SECONDS` (default 600).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sightline_proto::v1::{self as pb, ingest_server};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status, Streaming};

/// Larger than any batch an agent sends (batches are split below 1 MiB).
const MAX_MESSAGE_BYTES: usize = 8 << 20;
/// HTTP/2 flow-control window of a stream, as the collector's.
const STREAM_WINDOW_BYTES: u32 = 4 << 20;
/// HTTP/2 flow-control window of the connection, as the collector's.
const CONNECTION_WINDOW_BYTES: u32 = 4 << 20;

#[derive(Debug, Default)]
struct Counts {
    records: AtomicU64,
    bytes: AtomicU64,
}

#[derive(Debug, Clone)]
struct Sink {
    counts: Arc<Counts>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

#[tonic::async_trait]
impl ingest_server::Ingest for Sink {
    async fn hello(
        &self,
        _request: Request<pb::HelloRequest>,
    ) -> Result<Response<pb::HelloReply>, Status> {
        Ok(Response::new(pb::HelloReply {
            oid: 1,
            project: "sink".to_string(),
            server_time_ms: now_ms(),
            last_seq: 0,
        }))
    }

    type PushStream = ReceiverStream<Result<pb::Ack, Status>>;

    async fn push(
        &self,
        request: Request<Streaming<pb::Batch>>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let counts = Arc::clone(&self.counts);
        tokio::spawn(async move {
            while let Ok(Some(batch)) = inbound.message().await {
                if batch.liveness {
                    continue;
                }
                let (mut records, mut bytes) = (0u64, 0u64);
                for payload in &batch.payloads {
                    if let Some(pb::payload::Kind::Logs(chunk)) = &payload.kind {
                        records += chunk.starts.len() as u64;
                        bytes += chunk.text.len() as u64;
                    }
                }
                counts.records.fetch_add(records, Ordering::Relaxed);
                counts.bytes.fetch_add(bytes, Ordering::Relaxed);
                let ack = pb::Ack {
                    seq: batch.seq,
                    ..Default::default()
                };
                if tx.send(Ok(ack)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let mut run_for = Duration::from_secs(600);
    while let Some(arg) = args.next() {
        match (
            arg.as_str(),
            args.next().and_then(|v| v.parse::<u64>().ok()),
        ) {
            ("--for", Some(seconds)) => run_for = Duration::from_secs(seconds),
            _ => {
                eprintln!("usage: logsink [--for SECONDS]");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("logsink: no runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(run_for)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("logsink: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(run_for: Duration) -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counts = Arc::new(Counts::default());
    let service = ingest_server::IngestServer::new(Sink {
        counts: Arc::clone(&counts),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .accept_compressed(CompressionEncoding::Zstd)
    .accept_compressed(CompressionEncoding::Gzip);
    println!("listening grpc={addr}");
    std::io::stdout().flush()?;
    tokio::spawn(async move {
        let mut last = (u64::MAX, u64::MAX);
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = (
                counts.records.load(Ordering::Relaxed),
                counts.bytes.load(Ordering::Relaxed),
            );
            if now != last {
                println!("records {} bytes {}", now.0, now.1);
                if std::io::stdout().flush().is_err() {
                    return;
                }
                last = now;
            }
        }
    });
    // As the collector's: windows larger than HTTP/2's 64 KiB default, so
    // a stream of large batches is not paced by window updates.
    let server = tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .add_service(service)
        .serve_with_incoming(TcpListenerStream::new(listener));
    match tokio::time::timeout(run_for, server).await {
        Ok(result) => Ok(result?),
        Err(_) => Ok(()),
    }
}
