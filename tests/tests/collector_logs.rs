//! The collector's log store and API against a scripted gRPC client
//! pushing hand-made `LogChunk`s to the real collector: search (terms,
//! fields, category, paging), a resent batch and a re-read file stored
//! once, a malformed chunk refused by count with the rest of its batch
//! stored, patterns, and the SSE tail receiving a record pushed after it
//! subscribed.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use sightline_e2e::wire_agent::{Client, connect, push};
use sightline_e2e::{Api, Collector, Scratch, create_project, now_ms, wire_agent};
use sightline_proto::v1 as pb;

const INSTANCE: &str = "11111111111111111111111111111111";
const OTHER_INSTANCE: &str = "22222222222222222222222222222222";

/// Says hello as a log agent `oname` of `instance`; its oid.
async fn hello(client: &mut Client, license: &str, oname: &str, instance: &str) -> u64 {
    wire_agent::hello(client, license, "log", oname, instance, 1000).await
}

/// nginx-like access lines `from..to`; every seventh a 500.
fn access_lines(from: u32, to: u32) -> Vec<String> {
    (from..to)
        .map(|i| {
            let status = if i % 7 == 0 { 500 } else { 200 };
            format!(
                "10.0.{}.{} - - [24/Nov/2026:01:10:22 +0000] \"GET /api/users/{i} HTTP/1.1\" {status} {}",
                i / 256 % 256,
                i % 256,
                100 + i
            )
        })
        .collect()
}

/// A chunk of `lines` of file `file_id` starting at file offset `from`,
/// with a `status` field (the word after the request's closing quote).
fn chunk(file_id: &str, category: &str, from: u64, lines: &[String]) -> pb::LogChunk {
    let mut c = pb::LogChunk {
        file_id: file_id.into(),
        path: format!("/var/log/nginx/{category}.log"),
        category: category.into(),
        time_ms: now_ms(),
        ..pb::LogChunk::default()
    };
    let mut offsets = Vec::new();
    let mut lens = Vec::new();
    let mut at = from;
    for line in lines {
        let status_at = line.rfind("\" ").map_or(0, |i| i + 2);
        offsets.push(status_at as u32);
        lens.push(if status_at == 0 { 0 } else { 3 });
        c.text.push_str(line);
        c.text_lens.push(line.len() as u32);
        c.starts.push(at);
        c.spans.push(line.len() as u32 + 1);
        at += line.len() as u64 + 1;
    }
    c.fields = vec![pb::LogField {
        name: "status".into(),
        offsets,
        lens,
        ..Default::default()
    }];
    c
}

fn bytes_of(lines: &[String]) -> u64 {
    lines.iter().map(|l| l.len() as u64 + 1).sum()
}

fn batch(seq: u64, chunks: Vec<pb::LogChunk>) -> pb::Batch {
    pb::Batch {
        seq,
        time_ms: now_ms(),
        health: None,
        payloads: chunks
            .into_iter()
            .map(|c| pb::Payload {
                kind: Some(pb::payload::Kind::Logs(c)),
            })
            .collect(),
        liveness: false,
    }
}

/// Every record matching `params`, following `next` page by page.
fn search_all(api: &Api, params: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut before = String::new();
    loop {
        let body = api.ok(&format!("/api/v1/logs/search?{params}{before}"));
        out.extend(body["records"].as_array().cloned().unwrap_or_default());
        match body["next"].as_str() {
            Some(next) => before = format!("&before={next}"),
            None => return out,
        }
    }
}

fn texts(records: &[Value]) -> Vec<String> {
    let mut t: Vec<String> = records
        .iter()
        .map(|r| r["text"].as_str().unwrap_or_default().to_string())
        .collect();
    t.sort();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_records_are_stored_once_searchable_and_malformed_chunks_refused() {
    let scratch = Scratch::new("logs-store");
    let data = scratch.join("collector");
    let creds = create_project(&data, "logs");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let lic = creds.license.as_str();
    let mut c = connect(&collector).await;
    let oid = hello(&mut c, lic, "web-1", INSTANCE).await;

    // Batch 1: 200 lines of the access log, and a malformed chunk of 3
    // records (its lengths do not add up to its text).
    let first = access_lines(0, 200);
    let mut bad = chunk("bad", "access", 0, &access_lines(0, 3));
    bad.text_lens[1] += 5;
    let acks = push(
        &mut c,
        lic,
        oid,
        INSTANCE,
        vec![batch(1, vec![chunk("f1", "access", 0, &first), bad])],
    )
    .await;
    let partial = acks[0].partial.clone().expect("a partial success");
    assert_eq!(partial.rejected, 3, "{partial:?}");
    assert!(partial.message.contains("malformed"), "{}", partial.message);
    assert!(acks[0].error.is_empty());

    // The same batch again (an agent that did not hear the ack).
    let again = push(
        &mut c,
        lic,
        oid,
        INSTANCE,
        vec![batch(1, vec![chunk("f1", "access", 0, &first)])],
    )
    .await;
    assert!(again[0].duplicate);

    // The agent lost its spool and reads the file again from its start,
    // now 250 lines long, under a new instance.
    let oid_again = hello(&mut c, lic, "web-1", OTHER_INSTANCE).await;
    assert_eq!(oid_again, oid);
    let all = access_lines(0, 250);
    let reread = push(
        &mut c,
        lic,
        oid,
        OTHER_INSTANCE,
        vec![batch(1, vec![chunk("f1", "access", 0, &all)])],
    )
    .await;
    assert!(!reread[0].duplicate && reread[0].partial.is_none());
    // Another file, another category.
    let errors: Vec<String> = (0..20)
        .map(|i| format!("2026-11-24T01:10:{i:02}Z ERROR payment {i} declined"))
        .collect();
    push(
        &mut c,
        lic,
        oid,
        OTHER_INSTANCE,
        vec![batch(2, vec![chunk("f2", "app", 0, &errors)])],
    )
    .await;

    // Every access line exactly once, across pages of 100.
    let stored = search_all(&api, "category=access&limit=100");
    assert_eq!(stored.len(), 250);
    let mut want = all.clone();
    want.sort();
    assert_eq!(texts(&stored), want, "each line once");
    let r = &stored[0];
    assert_eq!(r["oname"], "web-1");
    assert_eq!(r["oid"].as_i64(), Some(oid as i64));
    assert_eq!(r["path"], "/var/log/nginx/access.log");
    assert_eq!(r["file_id"], "f1");
    assert_eq!(r["cut"], false);
    let (start, end) = (
        r["start"].as_u64().expect("start"),
        r["end"].as_u64().expect("end"),
    );
    assert_eq!(
        end - start,
        r["text"].as_str().expect("text").len() as u64 + 1
    );

    // Terms, a field, a phrase.
    let found = search_all(&api, "q=users/140");
    assert_eq!(texts(&found), [all[140].clone()]);
    let fives = search_all(&api, "category=access&field.status=500");
    assert_eq!(fives.len(), (0..250).filter(|i| i % 7 == 0).count());
    assert!(fives.iter().all(|r| r["fields"]["status"] == "500"));
    let declined = search_all(&api, "q=error%20declined&category=app");
    assert_eq!(declined.len(), 20);
    let phrase = search_all(&api, "q=%22ment%2013%20decl%22");
    assert_eq!(texts(&phrase), [errors[13].clone()]);
    assert!(search_all(&api, "q=nowhere").is_empty());
    let (status, body) = api.get("/api/v1/logs/search?limit=0");
    assert_eq!(status, 400, "{body}");
    let (status, _) = api.get_with("/api/v1/logs/search", None);
    assert_eq!(status, 401);

    // Patterns: the access lines share one shape.
    let patterns = api.ok("/api/v1/logs/patterns?category=access&from=0");
    let top = &patterns["patterns"][0];
    assert_eq!(top["count"].as_u64(), Some(250), "{patterns}");
    assert_eq!(
        top["pattern"],
        "<ip> - - [<ts>] \"GET /api/users/<num> HTTP/1.1\" <num> <num>"
    );
    assert!(
        top["example"]
            .as_str()
            .expect("example")
            .contains("GET /api/users/")
    );
    let app = api.ok("/api/v1/logs/patterns?category=app&from=0");
    assert_eq!(
        app["patterns"][0]["pattern"],
        "<ts> ERROR payment <num> declined"
    );
    assert_eq!(app["patterns"][0]["count"].as_u64(), Some(20));

    // A restart keeps everything, and the watermark with it.
    drop(c);
    drop(collector);
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let mut c = connect(&collector).await;
    hello(&mut c, lic, "web-1", OTHER_INSTANCE).await;
    let more = access_lines(250, 260);
    push(
        &mut c,
        lic,
        oid,
        OTHER_INSTANCE,
        vec![batch(
            3,
            vec![chunk("f1", "access", 0, &access_lines(0, 260))],
        )],
    )
    .await;
    let stored = search_all(&api, "category=access&limit=1000");
    assert_eq!(stored.len(), 260);
    assert_eq!(
        stored[0]["text"].as_str(),
        Some(more[9].as_str()),
        "newest first: the file's last line"
    );
    assert_eq!(
        bytes_of(&all) + bytes_of(&more),
        stored[0]["end"].as_u64().expect("end")
    );
}

/// Reads one SSE event (its `event:` name, if any, and its `data:`).
fn next_event(reader: &mut BufReader<TcpStream>) -> (Option<String>, String) {
    let mut name = None;
    let mut data = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("reads the stream");
        assert!(n > 0, "the stream ended");
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if !data.is_empty() {
                return (name, data);
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("event:") {
            name = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
        // Chunked transfer framing (hex sizes) and comments are skipped.
    }
}

/// Opens `logs/tail` with `params`; the reader after the headers.
fn open_tail(http: std::net::SocketAddr, token: &str, params: &str) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(http).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    write!(
        writer,
        "GET /api/v1/logs/tail?{params} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("request");
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    assert!(status.contains(" 200 "), "{status}");
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).expect("header");
        if header.trim().is_empty() {
            return reader;
        }
        if header.to_ascii_lowercase().starts_with("content-type:") {
            assert!(header.contains("text/event-stream"), "{header}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_streams_records_pushed_after_it_subscribed() {
    let scratch = Scratch::new("logs-tail");
    let data = scratch.join("collector");
    let creds = create_project(&data, "tail");
    let other = create_project(&data, "other");
    let collector = Collector::start(&data);
    let lic = creds.license.as_str();
    let mut c = connect(&collector).await;
    let oid = hello(&mut c, lic, "web-1", INSTANCE).await;
    push(
        &mut c,
        lic,
        oid,
        INSTANCE,
        vec![batch(
            1,
            vec![chunk("f1", "access", 0, &access_lines(0, 10))],
        )],
    )
    .await;

    let mut all = open_tail(collector.http, &creds.token, "category=access");
    let mut filtered = open_tail(
        collector.http,
        &creds.token,
        "category=access&filter=users/12",
    );
    let mut outsider = open_tail(collector.http, &other.token, "");

    let sent = Instant::now();
    let lines = access_lines(10, 13);
    push(
        &mut c,
        lic,
        oid,
        INSTANCE,
        vec![batch(
            2,
            vec![chunk(
                "f1",
                "access",
                bytes_of(&access_lines(0, 10)),
                &lines,
            )],
        )],
    )
    .await;
    let read = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        for _ in 0..3 {
            let (name, data) = next_event(&mut all);
            assert_eq!(name, None);
            got.push(serde_json::from_str::<Value>(&data).expect("json"));
        }
        let latency = sent.elapsed();
        let (_, only) = next_event(&mut filtered);
        (got, latency, only, outsider_probe(&mut outsider))
    })
    .await
    .expect("reads");
    let (got, latency, only, outsider_saw) = read;
    let got_texts: Vec<&str> = got.iter().filter_map(|r| r["text"].as_str()).collect();
    assert_eq!(
        got_texts,
        lines.iter().map(String::as_str).collect::<Vec<_>>(),
        "only records stored after subscribing, in order"
    );
    assert_eq!(got[0]["oname"], "web-1");
    assert_eq!(got[0]["fields"]["status"], "200");
    let only: Value = serde_json::from_str(&only).expect("json");
    assert_eq!(
        only["text"].as_str(),
        Some(lines[2].as_str()),
        "the filter holds"
    );
    assert!(!outsider_saw, "another project's tail saw nothing");
    // LiveTail's goal: on the stream within a second of being sent (here:
    // pushed, stored, acked and read back).
    assert!(latency < Duration::from_secs(1), "{latency:?}");
}

/// Whether anything but keep-alive comments arrives on `reader` within
/// half a second.
fn outsider_probe(reader: &mut BufReader<TcpStream>) -> bool {
    reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_millis(500);
    while Instant::now() < deadline {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) if line.starts_with("data:") => return true,
            Ok(_) => {}
        }
    }
    false
}

/// One stream's batches are stored while the next ones arrive (several in
/// flight): their acks still come back in order, one each, and every
/// record is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streams_batches_in_flight_are_acked_in_order() {
    let scratch = Scratch::new("logs-inflight");
    let data = scratch.join("collector");
    let creds = create_project(&data, "inflight");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let lic = creds.license.as_str();
    let mut c = connect(&collector).await;
    let oid = hello(&mut c, lic, "web-1", INSTANCE).await;
    let mut offset = 0;
    let batches: Vec<pb::Batch> = (0..40u32)
        .map(|b| {
            let lines = access_lines(b * 25, b * 25 + 25);
            let chunk = chunk("f1", "access", offset, &lines);
            offset += bytes_of(&lines);
            batch(u64::from(b) + 1, vec![chunk])
        })
        .collect();
    let acks = push(&mut c, lic, oid, INSTANCE, batches).await;
    let seqs: Vec<u64> = acks.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<u64>>());
    assert!(acks.iter().all(|a| !a.duplicate && a.error.is_empty()));
    let stored = search_all(&api, "category=access&limit=10000");
    assert_eq!(stored.len(), 1000);
}

/// One stream's log blocks are encoded side by side: a large batch and the
/// small one after it finish encoding in either order, and still every
/// batch is stored in the order it came (a batch stored before the one
/// ahead of it would make that one look like a duplicate), acked once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_encoded_side_by_side_are_stored_in_order() {
    let scratch = Scratch::new("logs-side-by-side");
    let data = scratch.join("collector");
    let creds = create_project(&data, "sidebyside");
    let collector = Collector::start(&data);
    let api = collector.api(&creds.token);
    let lic = creds.license.as_str();
    let mut c = connect(&collector).await;
    let oid = hello(&mut c, lic, "web-1", INSTANCE).await;
    let (mut offset, mut line, mut total) = (0, 0u32, 0usize);
    let batches: Vec<pb::Batch> = (0..16u64)
        .map(|b| {
            let n = if b % 2 == 0 { 3000 } else { 2 };
            let lines = access_lines(line, line + n);
            line += n;
            total += lines.len();
            let chunk = chunk("f1", "access", offset, &lines);
            offset += bytes_of(&lines);
            batch(b + 1, vec![chunk])
        })
        .collect();
    let acks = push(&mut c, lic, oid, INSTANCE, batches).await;
    let seqs: Vec<u64> = acks.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, (1..=16).collect::<Vec<u64>>());
    assert!(
        acks.iter().all(|a| !a.duplicate && a.error.is_empty()),
        "{acks:?}"
    );
    let stored = search_all(&api, "category=access&limit=10000");
    assert_eq!(stored.len(), total);
}
