//! `logload`: one simulated log agent for `cargo xtask bench log-store`.
//!
//! Speaks the real protocol as `sightline-log` does: `Hello` (product
//! `log`), then one zstd `Push` stream of batches numbered from 1, each one
//! `LogChunk` of about `--chunk-bytes` of nginx-like access lines (with a
//! `status` field, as a `parse` rule would give), at most [`WINDOW`]
//! unacked. Line `k` carries `trace=` [`trace_id`]`(k)`, so the bench can
//! search for exactly one line.
//!
//! It never runs unbounded: every wait has a timeout and the queue of
//! batches is bounded. On stdout, one line: `result {json}` with lines,
//! bytes, and the wall-clock window of the run. Diagnostics go to stderr.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sightline_proto::metadata;
use sightline_proto::v1::{self as pb, ingest_client::IngestClient};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::timeout;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;

/// Batches unacked at most (as `agent-core`'s transport).
const WINDOW: usize = 32;
/// Bound on connecting, on each call, and on waiting for an ack.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The trace id of line `k` (a 64-bit mix, as hex).
fn trace_id(k: u64) -> String {
    let mut x = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}", x ^ (x >> 31))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Args {
    grpc: String,
    license: String,
    lines: u64,
    chunk_bytes: usize,
}

fn args() -> Result<Args, String> {
    let mut out = Args {
        grpc: String::new(),
        license: String::new(),
        lines: 10_000_000,
        chunk_bytes: 512 * 1024,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--grpc" => out.grpc = value,
            "--license" => out.license = value,
            "--lines" => out.lines = value.parse().map_err(|_| "--lines: a number")?,
            "--chunk-bytes" => {
                out.chunk_bytes = value.parse().map_err(|_| "--chunk-bytes: a number")?
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if out.grpc.is_empty() || out.license.is_empty() {
        return Err(
            "usage: logload --grpc HOST:PORT --license L [--lines N] [--chunk-bytes B]".into(),
        );
    }
    Ok(out)
}

const METHODS: [&str; 6] = ["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const PATHS: [&str; 5] = [
    "/api/users/",
    "/api/orders/",
    "/static/img/",
    "/api/cart/",
    "/login?next=/home/",
];
const AGENTS: [&str; 3] = [
    "curl/8.5.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "Go-http-client/1.1",
];

/// Lines from `*next` until the chunk is full or `end` is reached.
fn make_chunk(next: &mut u64, end: u64, offset: &mut u64, chunk_bytes: usize) -> pb::LogChunk {
    let mut c = pb::LogChunk {
        file_id: "bench-access".into(),
        path: "/var/log/nginx/access.log".into(),
        category: "access".into(),
        time_ms: now_ms(),
        text: String::with_capacity(chunk_bytes + 1024),
        ..pb::LogChunk::default()
    };
    let (mut offsets, mut lens) = (Vec::new(), Vec::new());
    while *next < end && c.text.len() < chunk_bytes {
        let k = *next;
        let x = k.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let status = match x % 20 {
            0 => 500,
            1 | 2 => 404,
            3 => 302,
            _ => 200,
        };
        let before = c.text.len();
        let head = format!(
            "10.{}.{}.{} - - [24/Nov/2026:01:{:02}:{:02} +0000] \"{} {}{} HTTP/1.1\" ",
            x % 4,
            (x >> 8) % 256,
            (x >> 16) % 256,
            (k / 6000) % 60,
            (k / 100) % 60,
            METHODS[(x >> 24) as usize % 6],
            PATHS[(x >> 28) as usize % 5],
            (x >> 32) % 100_000,
        );
        offsets.push(head.len() as u32);
        lens.push(3);
        c.text.push_str(&head);
        let _ = write!(
            c.text,
            "{status} {} \"-\" \"{}\" rt=0.{:03} trace={}",
            200 + (x >> 40) % 50_000,
            AGENTS[(x >> 50) as usize % 3],
            (x >> 54) % 1000,
            trace_id(k)
        );
        let len = c.text.len() - before;
        c.text_lens.push(len as u32);
        c.starts.push(*offset);
        c.spans.push(len as u32 + 1);
        *offset += len as u64 + 1;
        *next += 1;
    }
    c.fields = vec![pb::LogField {
        name: "status".into(),
        offsets,
        lens,
    }];
    c
}

fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("logload: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(run(args)) {
        Ok(result) => println!("result {result}"),
        Err(e) => {
            eprintln!("logload: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    let channel = Endpoint::from_shared(format!("http://{}", args.grpc))
        .map_err(|e| e.to_string())?
        .connect_timeout(CALL_TIMEOUT)
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = IngestClient::new(channel)
        .send_compressed(CompressionEncoding::Zstd)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(8 << 20)
        .max_encoding_message_size(8 << 20);
    let instance = format!("{:032x}", now_ms() as u128 * 7919);
    let license = MetadataValue::try_from(args.license.as_str()).map_err(|e| e.to_string())?;
    let mut hello = tonic::Request::new(pb::HelloRequest {
        product: "log".into(),
        oname: "bench-log".into(),
        hostname: "bench".into(),
        os: "linux".into(),
        agent_version: "0.1.0".into(),
        instance: instance.clone(),
        interval_ms: 10_000,
        boot_id: "bench".into(),
        ..pb::HelloRequest::default()
    });
    hello
        .metadata_mut()
        .insert(metadata::LICENSE, license.clone());
    let oid = timeout(CALL_TIMEOUT, client.hello(hello))
        .await
        .map_err(|_| "hello timed out")?
        .map_err(|e| format!("hello: {e}"))?
        .into_inner()
        .oid;

    let (batches, receiver) = mpsc::channel::<pb::Batch>(WINDOW);
    let window = Arc::new(Semaphore::new(WINDOW));
    let mut request = tonic::Request::new(
        tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(receiver),
    );
    let meta = request.metadata_mut();
    meta.insert(metadata::LICENSE, license);
    meta.insert(
        metadata::OID,
        MetadataValue::try_from(oid.to_string()).map_err(|e| e.to_string())?,
    );
    meta.insert(
        metadata::INSTANCE,
        MetadataValue::try_from(instance.as_str()).map_err(|e| e.to_string())?,
    );
    let started = Instant::now();
    let start_ms = now_ms();
    let total = args.lines;
    let chunk_bytes = args.chunk_bytes;
    let producer_window = window.clone();
    let producer = tokio::task::spawn_blocking(move || {
        let (mut next, mut offset, mut seq, mut bytes) = (0u64, 0u64, 0u64, 0u64);
        while next < total {
            let chunk = make_chunk(&mut next, total, &mut offset, chunk_bytes);
            bytes += chunk.text.len() as u64;
            seq += 1;
            let batch = pb::Batch {
                seq,
                time_ms: now_ms(),
                health: None,
                payloads: vec![pb::Payload {
                    kind: Some(pb::payload::Kind::Logs(chunk)),
                }],
                liveness: false,
            };
            let handle = tokio::runtime::Handle::current();
            let permit = handle.block_on(producer_window.clone().acquire_owned());
            let Ok(permit) = permit else { break };
            permit.forget();
            if batches.blocking_send(batch).is_err() {
                break;
            }
        }
        (seq, bytes)
    });
    let mut acks = timeout(CALL_TIMEOUT, client.push(request))
        .await
        .map_err(|_| "push timed out")?
        .map_err(|e| format!("push: {e}"))?
        .into_inner();
    let mut acked = 0u64;
    let mut refused = 0u64;
    loop {
        let ack = timeout(CALL_TIMEOUT, acks.message())
            .await
            .map_err(|_| format!("no ack in {CALL_TIMEOUT:?} after {acked} batches"))?
            .map_err(|e| format!("ack stream: {e}"))?;
        let Some(ack) = ack else {
            break;
        };
        if !ack.error.is_empty() {
            return Err(format!("batch {} refused: {}", ack.seq, ack.error));
        }
        refused += ack.partial.map_or(0, |p| p.rejected);
        acked += 1;
        window.add_permits(1);
        if producer.is_finished() && window.available_permits() == WINDOW {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (batches_sent, bytes) = producer.await.map_err(|e| e.to_string())?;
    if acked != batches_sent {
        return Err(format!("{acked} of {batches_sent} batches acked"));
    }
    Ok(serde_json::json!({
        "lines": total,
        "bytes": bytes,
        "batches": batches_sent,
        "refused": refused,
        "seconds": seconds,
        "start_ms": start_ms,
        "end_ms": now_ms(),
        "trace_of_middle_line": trace_id(total / 2),
    }))
}
