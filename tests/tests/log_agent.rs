//! End-to-end tests of the log agent: the real `sightline-log` binary
//! tails real files in a scratch folder. Its collector is not running, so
//! everything it ships stays in its spool, where the test reads it back
//! (`read_spooled_file`, then the wire's `LogChunk`), keeping each record
//! once by (file id, start offset) as the collector does. A line counts as
//! delivered once it is in the spool: the spool keeps it through a
//! `kill -9` and resends it until the collector acknowledges it.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prost::Message;
use sightline_e2e::{Agent, Scratch, agent_conf, create_project, free_addrs};
use sightline_proto::v1 as pb;

/// One record as the collector would store it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    file_id: String,
    path: String,
    start: u64,
    end: u64,
    text: String,
    cut: bool,
    attrs: BTreeMap<String, String>,
}

/// Every log record in the agent's spool, once per (file id, start); a
/// second copy with other text is a failure.
fn spooled_records(data_dir: &Path) -> Vec<Record> {
    let mut out: BTreeMap<(String, u64), Record> = BTreeMap::new();
    let Ok(list) = fs::read_dir(data_dir.join("spool")) else {
        return Vec::new();
    };
    for entry in list.flatten() {
        let Some(file) = agent_core::spool::read_spooled_file(&entry.path()) else {
            continue;
        };
        let batch = pb::Batch::decode(file.batch.as_slice()).expect("a spooled batch decodes");
        for payload in batch.payloads {
            let Some(pb::payload::Kind::Logs(chunk)) = payload.kind else {
                continue;
            };
            let mut at = 0usize;
            for i in 0..chunk.starts.len() {
                let len = chunk.text_lens[i] as usize;
                let text = chunk.text[at..at + len].to_string();
                at += len;
                let record = Record {
                    file_id: chunk.file_id.clone(),
                    path: chunk.path.clone(),
                    start: chunk.starts[i],
                    end: chunk.starts[i] + u64::from(chunk.spans[i]),
                    text,
                    cut: chunk.cut.contains(&(i as u32)),
                    attrs: chunk.attrs.clone().into_iter().collect(),
                };
                let key = (record.file_id.clone(), record.start);
                if let Some(before) = out.get(&key) {
                    assert_eq!(
                        before.text, record.text,
                        "two texts for one (file id, start)"
                    );
                }
                out.insert(key, record);
            }
        }
    }
    out.into_values().collect()
}

fn texts(records: &[Record]) -> Vec<String> {
    let mut t: Vec<String> = records.iter().map(|r| r.text.clone()).collect();
    t.sort();
    t
}

/// An agent reading `glob` (group `app`), reporting to a collector that
/// is not there.
fn start_agent(dir: &Scratch, glob: &str, extra: &[(&str, &str)]) -> Agent {
    let creds = create_project(&dir.join("collector"), "logs");
    let (grpc, _) = free_addrs();
    let mut keys: Vec<(&str, &str)> = vec![
        ("file.app.path", glob),
        ("file.app.start", "beginning"),
        ("log.linger", "50ms"),
        ("log.rescan", "1s"),
    ];
    keys.extend_from_slice(extra);
    let conf = agent_conf(&creds.license, grpc, &dir.join("agent-data"), &keys);
    Agent::log(&dir.join("agent"), &conf)
}

fn restart(agent: &Agent) -> Agent {
    let conf = fs::read_to_string(&agent.conf).expect("conf");
    Agent::log(agent.conf.parent().expect("dir"), &conf)
}

fn append(path: &Path, text: &str) {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open")
        .write_all(text.as_bytes())
        .expect("append");
}

fn numbered(from: usize, to: usize) -> String {
    (from..to).map(|i| format!("line {i:06}\n")).collect()
}

fn expected(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("line {i:06}")).collect()
}

/// Waits until the spool holds `want` (sorted texts), or fails showing
/// what it holds.
fn wait_for_texts(agent: &Agent, want: &[String], limit: Duration) -> Vec<Record> {
    let mut want = want.to_vec();
    want.sort();
    let deadline = Instant::now() + limit;
    loop {
        let records = spooled_records(&agent.data_dir);
        let got = texts(&records);
        if got == want {
            return records;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).take(5).collect();
            let extra: Vec<_> = got.iter().filter(|g| !want.contains(g)).take(5).collect();
            let mut by_file: BTreeMap<(String, String), (usize, String, String)> = BTreeMap::new();
            for r in &records {
                let e = by_file
                    .entry((r.file_id.clone(), r.path.clone()))
                    .or_insert((0, r.text.clone(), r.text.clone()));
                e.0 += 1;
                if r.text < e.1 {
                    e.1 = r.text.clone();
                }
                if r.text > e.2 {
                    e.2 = r.text.clone();
                }
            }
            panic!(
                "spool holds {} records, want {}; missing {missing:?}, unexpected {extra:?}\nby file (id, path): (count, first, last): {by_file:#?}\nagent log:\n{}",
                got.len(),
                want.len(),
                agent.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn short_files_and_files_with_the_same_first_line_are_each_shipped_once() {
    let dir = Scratch::new("log-short");
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).expect("logs");
    let mut want = Vec::new();
    // Present at the first start (start=beginning) and appearing later.
    for len in [0usize, 1, 2, 17, 511, 1023] {
        let body = if len == 0 {
            String::new()
        } else {
            format!("{}\n", "s".repeat(len - 1))
        };
        fs::write(logs.join(format!("short-{len}.log")), &body).expect("write");
        if len > 0 {
            want.push("s".repeat(len - 1));
        }
    }
    let agent = start_agent(&dir, &format!("{}/*.log", logs.display()), &[]);
    std::thread::sleep(Duration::from_millis(300));
    fs::write(logs.join("a.log"), "the same first line\nalpha\n").expect("a");
    fs::write(logs.join("b.log"), "the same first line\nbeta\n").expect("b");
    fs::write(logs.join("c.log"), "x\n").expect("c");
    want.extend(
        [
            "the same first line",
            "alpha",
            "the same first line",
            "beta",
            "x",
        ]
        .map(String::from),
    );
    let records = wait_for_texts(&agent, &want, Duration::from_secs(10));
    let a = records.iter().find(|r| r.text == "alpha").expect("alpha");
    let b = records.iter().find(|r| r.text == "beta").expect("beta");
    assert_ne!(a.file_id, b.file_id, "two files, two identities");
    assert_eq!(
        (b.start, b.end),
        (20, 25),
        "offsets in the file, line end included"
    );
}

#[test]
fn a_new_file_is_picked_up_in_under_a_second() {
    let dir = Scratch::new("log-new");
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).expect("logs");
    // A slow rescan: only the watch can be this quick.
    let agent = start_agent(
        &dir,
        &format!("{}/*.log", logs.display()),
        &[("log.rescan", "60s")],
    );
    std::thread::sleep(Duration::from_millis(500));
    let written = Instant::now();
    fs::write(logs.join("new.log"), "hello\n").expect("write");
    wait_for_texts(&agent, &["hello".to_string()], Duration::from_secs(5));
    let took = written.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn a_1_mib_line_is_cut_flagged_and_reading_goes_on() {
    let dir = Scratch::new("log-huge");
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).expect("logs");
    let agent = start_agent(&dir, &format!("{}/app.log", logs.display()), &[]);
    let big = "y".repeat(1 << 20);
    append(&logs.join("app.log"), &format!("before\n{big}\nafter\n"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = spooled_records(&agent.data_dir);
        if records.iter().any(|r| r.text == "after") {
            let cut = records.iter().find(|r| r.cut).expect("a cut record");
            assert!(cut.text.len() <= 64 << 10 && cut.text.starts_with("yyy"));
            assert!(records.iter().any(|r| r.text == "before"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 'after' record:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rename_rotation_truncation_and_deletion_lose_nothing() {
    let dir = Scratch::new("log-rotate");
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).expect("logs");
    let live = logs.join("app.log");
    // Only the live name is matched: the rotated file is followed by its
    // inode.
    let agent = start_agent(&dir, &live.display().to_string(), &[]);
    let mut old = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&live)
        .expect("open");
    old.write_all(numbered(0, 100).as_bytes()).expect("write");
    std::thread::sleep(Duration::from_millis(300));
    fs::rename(&live, logs.join("app.log.1")).expect("rename");
    append(&live, &numbered(100, 200));
    // The writer writes to its old descriptor a little longer.
    old.write_all(numbered(200, 250).as_bytes())
        .expect("write old");
    drop(old);
    wait_for_texts(&agent, &expected(0, 250), Duration::from_secs(10));
    // Truncation of the live file, then more lines.
    OpenOptions::new()
        .write(true)
        .open(&live)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    std::thread::sleep(Duration::from_millis(300));
    append(&live, &numbered(250, 300));
    wait_for_texts(&agent, &expected(0, 300), Duration::from_secs(10));
    // Deleted while open, written on, recreated.
    let mut w = OpenOptions::new().append(true).open(&live).expect("open");
    fs::remove_file(&live).expect("rm");
    w.write_all(numbered(300, 320).as_bytes()).expect("write");
    drop(w);
    append(&live, &numbered(320, 340));
    wait_for_texts(&agent, &expected(0, 340), Duration::from_secs(10));
}

#[test]
fn kill_9_and_restart_lose_nothing_and_duplicate_nothing() {
    let dir = Scratch::new("log-kill");
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).expect("logs");
    let live = logs.join("app.log");
    let mut agent = start_agent(&dir, &live.display().to_string(), &[]);
    let writer_path: PathBuf = live.clone();
    let writer = std::thread::spawn(move || {
        // 20,000 lines over about 2 s, in small writes.
        for i in 0..400 {
            append(&writer_path, &numbered(i * 50, i * 50 + 50));
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
        agent.kill9();
        std::thread::sleep(Duration::from_millis(100));
        agent = restart(&agent);
    }
    writer.join().expect("writer");
    let records = wait_for_texts(&agent, &expected(0, 20_000), Duration::from_secs(20));
    let ids: std::collections::BTreeSet<_> = records.iter().map(|r| &r.file_id).collect();
    assert_eq!(ids.len(), 1, "one file, one identity through restarts");
    let status = agent.terminate_within(Duration::from_secs(1));
    assert!(status.is_some(), "SIGTERM: exits within a second");
}

#[test]
fn a_file_replaced_while_the_agent_was_stopped_is_read_whole() {
    let dir = Scratch::new("log-inode");
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).expect("logs");
    let live = logs.join("app.log");
    append(&live, "first file, first line\nfirst file, second line\n");
    let mut agent = start_agent(&dir, &live.display().to_string(), &[]);
    wait_for_texts(
        &agent,
        &["first file, first line", "first file, second line"].map(String::from),
        Duration::from_secs(10),
    );
    assert!(agent.terminate_within(Duration::from_secs(1)).is_some());
    // The freed inode is likely reused by the next file created.
    fs::remove_file(&live).expect("rm");
    append(&live, "second file, a longer first line\n");
    let agent = restart(&agent);
    wait_for_texts(
        &agent,
        &[
            "first file, first line",
            "first file, second line",
            "second file, a longer first line",
        ]
        .map(String::from),
        Duration::from_secs(10),
    );
}

#[test]
fn pod_logs_are_read_as_cri_with_their_pod_and_a_deleted_pod_is_finished() {
    let dir = Scratch::new("log-pods");
    let pods = dir.join("pods");
    let container = pods.join("shop_web-7d9f_0a1b2c3d/nginx");
    fs::create_dir_all(&container).expect("pod dir");
    let agent = start_agent(
        &dir,
        &format!("{}/none/*.log", dir.path().display()),
        &[
            ("log.kubernetes", "pods"),
            ("log.pods_root", &pods.display().to_string()),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let log = container.join("0.log");
    append(
        &log,
        concat!(
            "2026-01-01T00:00:00.000000001Z stdout F hello from the pod\n",
            "2026-01-01T00:00:00.000000002Z stderr P part one, \n",
            "2026-01-01T00:00:00.000000003Z stderr F part two\n",
        ),
    );
    let records = wait_for_texts(
        &agent,
        &["hello from the pod", "part one, part two"].map(String::from),
        Duration::from_secs(10),
    );
    let attrs = &records[0].attrs;
    assert_eq!(attrs.get("namespace").map(String::as_str), Some("shop"));
    assert_eq!(attrs.get("pod").map(String::as_str), Some("web-7d9f"));
    assert_eq!(attrs.get("container").map(String::as_str), Some("nginx"));
    // The pod goes away right after its last words: they are shipped.
    let mut w = OpenOptions::new().append(true).open(&log).expect("open");
    w.write_all(b"2026-01-01T00:00:01.000000000Z stdout F last words\n")
        .expect("write");
    drop(w);
    fs::remove_dir_all(pods.join("shop_web-7d9f_0a1b2c3d")).expect("rm pod");
    wait_for_texts(
        &agent,
        &["hello from the pod", "part one, part two", "last words"].map(String::from),
        Duration::from_secs(10),
    );
}

#[test]
fn log_max_open_bites_but_every_file_is_read() {
    let dir = Scratch::new("log-maxopen");
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).expect("logs");
    let agent = start_agent(
        &dir,
        &format!("{}/*.log", logs.display()),
        &[("log.max_open", "4")],
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut want = Vec::new();
    for i in 0..20 {
        append(
            &logs.join(format!("f{i:02}.log")),
            &format!("file {i} line\n"),
        );
        want.push(format!("file {i} line"));
    }
    wait_for_texts(&agent, &want, Duration::from_secs(15));
    for i in 0..20 {
        append(
            &logs.join(format!("f{i:02}.log")),
            &format!("file {i} again\n"),
        );
        want.push(format!("file {i} again"));
    }
    wait_for_texts(&agent, &want, Duration::from_secs(15));
}

#[test]
fn copytruncate_continues_the_copy_and_reads_the_truncated_file_anew() {
    let dir = Scratch::new("log-copytruncate");
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).expect("logs");
    let live = logs.join("app.log");
    // The rotated copy is matched too: it is where the lines the agent
    // had not read yet are.
    let agent = start_agent(&dir, &format!("{}/app.log*", logs.display()), &[]);
    append(&live, &numbered(0, 1000));
    wait_for_texts(&agent, &expected(0, 1000), Duration::from_secs(10));
    for round in 0..3 {
        let base = 1000 + round * 2000;
        // Lines the agent may or may not have read before the copy.
        append(&live, &numbered(base, base + 1000));
        fs::copy(&live, logs.join(format!("app.log.{round}"))).expect("copy");
        OpenOptions::new()
            .write(true)
            .open(&live)
            .expect("open")
            .set_len(0)
            .expect("truncate");
        append(&live, &numbered(base + 1000, base + 2000));
        wait_for_texts(&agent, &expected(0, base + 2000), Duration::from_secs(10));
    }
}

#[test]
fn a_java_stack_trace_is_one_record_and_invalid_utf8_is_replaced() {
    let dir = Scratch::new("log-multiline");
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).expect("logs");
    let agent = start_agent(
        &dir,
        &format!("{}/*.log", logs.display()),
        &[("file.app.multiline.start", r"^\d{4}-\d{2}-\d{2} ")],
    );
    std::thread::sleep(Duration::from_millis(300));
    append(
        &logs.join("java.log"),
        concat!(
            "2026-11-24 01:00:00 INFO started\n",
            "2026-11-24 01:00:01 ERROR request failed\n",
            "java.lang.IllegalStateException: no session\n",
            "\tat com.example.Web.handle(Web.java:42)\n",
            "\tat com.example.Server.run(Server.java:7)\n",
            "Caused by: java.io.IOException: closed\n",
            "\t... 2 more\n",
        ),
    );
    let mut bad = b"2026-11-24 01:00:02 WARN bytes \xff\xfe here\n".to_vec();
    bad.extend_from_slice(b"2026-11-24 01:00:03 INFO last\n");
    OpenOptions::new()
        .append(true)
        .open(logs.join("java.log"))
        .expect("open")
        .write_all(&bad)
        .expect("write");
    // The last record ends with no following start line: the multi-line
    // timeout ships it.
    wait_for_texts(
        &agent,
        &[
            "2026-11-24 01:00:00 INFO started".to_string(),
            concat!(
                "2026-11-24 01:00:01 ERROR request failed\n",
                "java.lang.IllegalStateException: no session\n",
                "\tat com.example.Web.handle(Web.java:42)\n",
                "\tat com.example.Server.run(Server.java:7)\n",
                "Caused by: java.io.IOException: closed\n",
                "\t... 2 more"
            )
            .to_string(),
            "2026-11-24 01:00:02 WARN bytes \u{fffd}\u{fffd} here".to_string(),
            "2026-11-24 01:00:03 INFO last".to_string(),
        ],
        Duration::from_secs(10),
    );
}
