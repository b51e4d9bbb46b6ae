//! The framer's throughput, for `cargo xtask bench log-framing`: a file is
//! read into memory once, then framed from memory (no I/O timed) in
//! 256 KiB pushes, as the tailer reads, into: a sink that only counts
//! (`framer`), chunks cut at 512 KiB and encoded for the wire (`plain`),
//! and the same with an nginx `parse` rule (`parse`). Prints one line per
//! mode, `mode=.. bytes=.. records=.. seconds=.. cpu_seconds=..`, the
//! best of `--runs` (wall time, and this thread's CPU time).
//! A measurement, not a test: it asserts nothing and writes nothing.

use std::error::Error;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use sightline_log::framing::{Framer, FramingRules, RecordRef, RecordSink, compile_rule};
use sightline_log::wire::{ChunkBuilder, FileLabels};

/// The tailer's read size.
const PUSH: usize = 256 * 1024;
/// Where the tailer cuts a chunk.
const CHUNK: usize = 512 * 1024;

/// An nginx `combined` line with the request time at its end.
const NGINX: &str = r#"^(?P<ip>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) (?P<bytes>\d+) "[^"]*" "[^"]*" (?P<elapsed>[\d.]+)"#;

/// Adds up the text's length and keeps nothing.
struct Count(u64);

impl RecordSink for Count {
    fn record(&mut self, record: &RecordRef<'_>) {
        self.0 += record.text.len() as u64;
    }
}

/// Chunks as the tailer makes them: cut at [`CHUNK`], finished (encoded).
struct Chunks {
    labels: FileLabels,
    names: Vec<String>,
    chunk: ChunkBuilder,
    records: u64,
    wire_bytes: u64,
}

impl Chunks {
    fn new(names: Vec<String>) -> Chunks {
        let labels = FileLabels {
            file_id: "bench".into(),
            path: "/var/log/nginx/access.log".into(),
            category: "nginx".into(),
            attrs: Default::default(),
        };
        let chunk = ChunkBuilder::new(&labels, &names);
        Chunks {
            labels,
            names,
            chunk,
            records: 0,
            wire_bytes: 0,
        }
    }

    fn cut(&mut self) {
        let full = std::mem::replace(
            &mut self.chunk,
            ChunkBuilder::new(&self.labels, &self.names),
        );
        self.records += full.len() as u64;
        if let agent_core::Payload::Encoded(payload) = full.finish(SystemTime::now()) {
            self.wire_bytes += payload.len() as u64;
        }
    }
}

fn run(rules: &Arc<FramingRules>, data: &[u8], mode: &str) -> (u64, u64) {
    let mut framer = Framer::new(Arc::clone(rules), 0);
    let now = Instant::now();
    if mode == "framer" {
        let mut sink = Count(0);
        for piece in data.chunks(PUSH) {
            framer.push(piece, now, &mut sink);
        }
        return (framer.counts().records, sink.0);
    }
    let mut chunks = Chunks::new(framer.field_names());
    for piece in data.chunks(PUSH) {
        framer.push(piece, now, &mut chunks.chunk);
        if chunks.chunk.wire_bytes() >= CHUNK {
            chunks.cut();
        }
    }
    chunks.cut();
    (chunks.records, chunks.wire_bytes)
}

/// CPU time this thread has run, from `/proc/thread-self/schedstat`
/// (nanoseconds): on a machine shared with other work, what the framing
/// cost, where wall time also counts the waits for a core.
fn thread_cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: log_framing FILE [--runs N]")?;
    let mut runs = 3;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().ok_or("--runs needs a number")?.parse()?,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let data = std::fs::read(&path)?;
    let plain = Arc::new(FramingRules::default());
    let parse = Arc::new(FramingRules {
        parse: Some(compile_rule("parse", NGINX)?),
        ..FramingRules::default()
    });
    for (mode, rules) in [("framer", &plain), ("plain", &plain), ("parse", &parse)] {
        let mut best = f64::INFINITY;
        let mut best_cpu = f64::INFINITY;
        let mut records = 0;
        for _ in 0..runs.max(1) {
            let cpu = thread_cpu_seconds();
            let started = Instant::now();
            let (n, _) = run(rules, &data, mode);
            best = best.min(started.elapsed().as_secs_f64());
            if let (Some(before), Some(after)) = (cpu, thread_cpu_seconds()) {
                best_cpu = best_cpu.min(after - before);
            }
            records = n;
        }
        println!(
            "mode={mode} bytes={} records={records} seconds={best:.6} cpu_seconds={best_cpu:.6}",
            data.len()
        );
    }
    Ok(())
}
