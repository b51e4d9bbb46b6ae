//! Times `logs::block::encode` on synthetic nginx access lines (the
//! shape `cargo xtask bench log` writes), in this thread's CPU time, and
//! prints a digest of every block's data, bloom filter, pattern counts and
//! templates so a change to the encoder can be checked to store the same
//! things. A measuring tool: it never touches a store.
//!
//! `cargo run --release -p sightline-collector --example block_encode [MB]`

use std::fmt::Write as _;
use std::hash::{DefaultHasher, Hash, Hasher};

use sightline_collector::logs::block;
use sightline_collector::model::LogChunkRow;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "curl/7.88.1",
    "kube-probe/1.30",
    "Go-http-client/1.1",
];

fn access_line(rng: &mut XorShift, n: u64, out: &mut String) {
    let second = n / 200;
    let (h, m, s) = ((second / 3600) % 24, (second / 60) % 60, second % 60);
    let method = if rng.below(10) < 8 { "GET" } else { "POST" };
    let status = match rng.below(100) {
        0..=84 => 200,
        85..=91 => 304,
        92..=97 => 404,
        _ => 500,
    };
    let _ = write!(
        out,
        "10.{}.{}.{} - - [24/Nov/2026:{h:02}:{m:02}:{s:02} +0000] \"{method} ",
        rng.below(256),
        rng.below(256),
        rng.below(256)
    );
    let _ = match rng.below(4) {
        0 => write!(out, "/api/users/{}", rng.below(1_000_000)),
        1 => write!(
            out,
            "/api/orders/{}/items?page={}",
            rng.below(10_000_000),
            rng.below(20)
        ),
        2 => write!(out, "/static/app.{:08x}.js", rng.next() as u32),
        _ => write!(out, "/health"),
    };
    let referer = if rng.below(3) == 0 {
        "https://shop.example.com/cart"
    } else {
        "-"
    };
    let agent = AGENTS[rng.below(AGENTS.len() as u64) as usize];
    let _ = write!(
        out,
        " HTTP/1.1\" {status} {} \"{referer}\" \"{agent}\"",
        rng.below(50_000)
    );
}

/// This thread's time on a CPU so far (schedstat's first field, ns).
fn thread_cpu_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns: f64 = text
        .split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .expect("a number");
    ns / 1e9
}

fn main() {
    let mb: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let mut rng = XorShift(0x5eed_1095);
    let mut chunks = Vec::new();
    let empty = || LogChunkRow {
        file_id: "f".into(),
        path: "/var/log/nginx/access.log".into(),
        category: "nginx".into(),
        time_ms: 1_000,
        attrs: Default::default(),
        text: String::new(),
        ends: Vec::new(),
        starts: Vec::new(),
        spans: Vec::new(),
        cut: Vec::new(),
        times_ms: Vec::new(),
        fields: Vec::new(),
    };
    let mut chunk = empty();
    let (mut bytes, mut lines) = (0u64, 0u64);
    let mut offset = 0u64;
    let mut line = String::new();
    while bytes < mb * 1_000_000 {
        line.clear();
        access_line(&mut rng, lines, &mut line);
        chunk.text.push_str(&line);
        chunk.ends.push(chunk.text.len() as u32);
        chunk.starts.push(offset);
        chunk.spans.push(line.len() as u32 + 1);
        offset += line.len() as u64 + 1;
        bytes += line.len() as u64 + 1;
        lines += 1;
        if chunk.text.len() >= 512 << 10 {
            chunks.push(std::mem::replace(&mut chunk, empty()));
        }
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    let mut best = f64::MAX;
    let mut digest = 0;
    let mut stored = 0;
    for _ in 0..3 {
        let mut hasher = DefaultHasher::new();
        let mut data = 0;
        let start = thread_cpu_seconds();
        for c in &chunks {
            let b = block::encode(c, 0).expect("records");
            data += b.data.len() + b.bloom.len() + b.patterns.len();
            b.data.hash(&mut hasher);
            b.bloom.hash(&mut hasher);
            let mut counts = block::decode_patterns(&b.patterns).expect("patterns");
            counts.sort_unstable();
            counts.hash(&mut hasher);
            let mut templates = b.templates.clone();
            templates.sort();
            templates.hash(&mut hasher);
        }
        best = best.min(thread_cpu_seconds() - start);
        digest = hasher.finish();
        stored = data;
    }
    println!(
        "{lines} lines, {bytes} bytes, {} blocks: encode {best:.3} CPU s ({:.0} MB/s), {:.1} B/line (data+bloom+patterns), digest {digest:016x}",
        chunks.len(),
        bytes as f64 / best / 1e6,
        stored as f64 / lines as f64
    );
}
