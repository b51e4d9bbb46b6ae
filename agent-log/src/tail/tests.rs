//! Tests of the tailer on real files in a scratch folder, driven
//! in-process with a clock the test moves and an in-memory spool that
//! acknowledges (or holds) what it is sent. The property test writes,
//! rotates (rename and create, copytruncate), truncates, deletes and
//! restarts (cleanly or by crash) at random, and asserts that every line
//! written is delivered exactly once once the collector drops what it
//! already holds by (file id, start offset).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::checkpoint::Entry;
use crate::framing::{Encoding, Format, FramingRules};
use crate::settings::{GroupSettings, LogSettings, Start};

fn scratch(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "sl-tail-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch");
    dir
}

fn settings(glob: &str, start: Start) -> Arc<LogSettings> {
    Arc::new(LogSettings {
        groups: vec![GroupSettings {
            name: "app".into(),
            paths: vec![glob.into()],
            exclude: Vec::new(),
            category: "app".into(),
            start,
            rules: Arc::new(FramingRules {
                max_line: 64 << 10,
                encoding: Encoding::Utf8,
                format: Format::Plain,
                multiline: None,
                include_lines: Vec::new(),
                exclude_lines: Vec::new(),
                parse: None,
            }),
            pod_attrs: false,
        }],
        rescan: Duration::from_secs(10),
        max_open: 64,
        linger: Duration::from_millis(200),
        deleted_hold: Duration::from_secs(300),
        interval: Duration::from_secs(10),
    })
}

/// The spool and the collector in one: keeps every send, acks on demand,
/// answers `resume` as the spool would.
#[derive(Default)]
struct Spool {
    /// Per source: (cursor, acked) in send order.
    batches: HashMap<String, Vec<(Vec<u8>, bool)>>,
    /// Sends not yet acked.
    unacked: Vec<(String, usize, Vec<Ticket>)>,
    /// Sends the tailer has not been told are spooled.
    unspooled: Vec<Ticket>,
    /// What the collector holds: (file id, start) → text.
    stored: BTreeMap<(String, u64), String>,
    /// Records sent (a resend of a spooled batch counts again).
    sent_records: usize,
    /// Records that the collector would refuse or hold twice.
    conflicts: Vec<String>,
    /// Per file id, the end of the furthest record stored.
    watermark: HashMap<String, u64>,
}

impl Spool {
    fn tell_spooled(&mut self, tailer: &mut Tailer) {
        for t in std::mem::take(&mut self.unspooled) {
            tailer.spooled(t);
        }
    }

    fn ack_all(&mut self, tailer: &mut Tailer) {
        self.tell_spooled(tailer);
        for (source, i, tickets) in std::mem::take(&mut self.unacked) {
            if let Some(b) = self.batches.get_mut(&source).and_then(|v| v.get_mut(i)) {
                b.1 = true;
            }
            for ticket in tickets {
                tailer.settled(ticket, &Fate::Acked);
            }
        }
    }

    fn lines(&self) -> Vec<String> {
        self.stored.values().cloned().collect()
    }
}

impl Delivery for Spool {
    fn resume(&mut self, source: &str) -> Resumed {
        let Some(list) = self.batches.get(source) else {
            return Resumed::default();
        };
        let spooled = list.iter().rev().find(|b| !b.1).map(|b| b.0.clone());
        let acked = list.iter().take_while(|b| b.1).last().map(|b| b.0.clone());
        Resumed { spooled, acked }
    }

    fn send(&mut self, out: Outgoing) -> Result<(), Stopped> {
        let list = self.batches.entry(out.source.clone()).or_default();
        list.push((out.batch.cursor.clone().unwrap_or_default(), false));
        self.unacked
            .push((out.source.clone(), list.len() - 1, out.tickets.clone()));
        self.unspooled.extend(out.tickets.iter().copied());
        for r in out.records {
            self.sent_records += 1;
            // The collector keeps a watermark per file id: a record below
            // it must be one it holds already.
            let mark = self.watermark.entry(r.file_id.clone()).or_default();
            if r.start < *mark && !self.stored.contains_key(&(r.file_id.clone(), r.start)) {
                self.conflicts.push(format!(
                    "{}@{}: {:?} arrives below the file's watermark {}",
                    r.file_id, r.start, r.text, *mark
                ));
            }
            *mark = (*mark).max(r.end);
            match self.stored.get(&(r.file_id.clone(), r.start)) {
                Some(text) if *text != r.text => self.conflicts.push(format!(
                    "{}@{}: {:?} then {:?}",
                    r.file_id, r.start, text, r.text
                )),
                Some(_) => {}
                None => {
                    self.stored.insert((r.file_id, r.start), r.text);
                }
            }
        }
        Ok(())
    }
}

/// A tailer, its clock and what it last saved.
struct Harness {
    dir: PathBuf,
    settings: Arc<LogSettings>,
    tailer: Tailer,
    spool: Spool,
    now: Instant,
    saved: Option<Vec<Entry>>,
    counters: Arc<LogCounters>,
}

impl Harness {
    fn new(name: &str, start: Start) -> Harness {
        let dir = scratch(name);
        let settings = settings(&format!("{}/app.log*", dir.display()), start);
        Harness::with(dir, settings)
    }

    fn with(dir: PathBuf, settings: Arc<LogSettings>) -> Harness {
        let counters = Arc::new(LogCounters::default());
        let mut tailer = Tailer::new(settings.clone(), None, counters.clone());
        tailer.keep_records(true);
        Harness {
            dir,
            settings,
            tailer,
            spool: Spool::default(),
            now: Instant::now(),
            saved: None,
            counters,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// One turn of the reader thread's loop, `secs` later.
    fn step(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.tailer.rescan(self.now, &mut self.spool);
        self.tailer.poll(self.now, &mut self.spool).expect("open");
        self.spool.tell_spooled(&mut self.tailer);
        // As the reader thread does.
        if self.tailer.take_urgent() {
            self.save();
        }
    }

    /// Steps until nothing is left to read and every chunk is sent.
    fn settle(&mut self) {
        for _ in 0..8 {
            self.step(1);
        }
        self.spool.ack_all(&mut self.tailer);
        self.step(1);
    }

    fn save(&mut self) {
        self.saved = Some(self.tailer.checkpoint());
    }

    /// A clean stop and start: drain, acks that come, checkpoint saved.
    fn restart(&mut self, crash: bool) {
        if !crash {
            self.tailer
                .drain(Instant::now() + Duration::from_secs(5), &mut self.spool)
                .expect("open");
            self.spool.tell_spooled(&mut self.tailer);
            self.save();
        }
        let mut tailer = Tailer::new(
            self.settings.clone(),
            Some(self.saved.clone().unwrap_or_default()),
            self.counters.clone(),
        );
        tailer.keep_records(true);
        // Sends never acked by the old process: still spooled, acked
        // later by the transport (their tickets go nowhere now).
        self.spool.unacked.clear();
        self.spool.unspooled.clear();
        for list in self.spool.batches.values_mut() {
            for b in list.iter_mut() {
                b.1 = true;
            }
        }
        self.tailer = tailer;
        // As the reader thread does: the first scan, then a checkpoint.
        self.tailer.rescan(self.now, &mut self.spool);
        self.save();
    }
}

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(text.as_bytes()).expect("append");
}

fn lines(from: usize, to: usize) -> String {
    (from..to).map(|i| format!("line {i}\n")).collect()
}

fn expected(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("line {i}")).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort_by_key(|l| {
        l.strip_prefix("line ")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    });
    v
}

#[test]
fn files_present_at_the_first_start_begin_at_their_end_and_later_ones_at_zero() {
    let mut h = Harness::new("first-start", Start::End);
    append(&h.path("app.log"), &lines(0, 5));
    append(&h.path("app.log"), "partial");
    h.step(0);
    append(&h.path("app.log"), " done\n");
    append(&h.path("app.log"), &lines(5, 7));
    append(&h.path("app.log.2"), "");
    h.settle();
    append(&h.path("app.log.3"), &lines(100, 102));
    h.settle();
    let mut want = vec!["partial done".to_string()];
    want.extend(expected(5, 7));
    want.extend(expected(100, 102));
    assert_eq!(sorted(h.spool.lines()), sorted(want));
}

#[test]
fn short_files_and_two_files_with_the_same_first_line_are_each_shipped_whole() {
    let mut h = Harness::new("short", Start::Beginning);
    h.step(0);
    let mut want = Vec::new();
    for len in [0usize, 1, 2, 10, 100, 1023] {
        let text: String = "x".repeat(len.saturating_sub(1));
        let body = if len == 0 {
            String::new()
        } else {
            format!("{text}\n")
        };
        append(&h.path(&format!("app.log.s{len}")), &body);
        if len > 0 {
            want.push(text);
        }
    }
    append(&h.path("app.log.a"), "same first line\nalpha\n");
    append(&h.path("app.log.b"), "same first line\nbeta\n");
    want.extend(["same first line", "alpha", "same first line", "beta"].map(String::from));
    h.settle();
    let mut got = h.spool.lines();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert!(h.spool.conflicts.is_empty());
}

#[test]
fn a_reused_inode_with_new_first_bytes_is_a_new_file() {
    let mut h = Harness::new("inode", Start::Beginning);
    append(&h.path("app.log"), "first file line one\n");
    h.settle();
    h.restart(false);
    // Stopped; the file is replaced by another one that may get the same
    // inode (tmpfs and ext4 reuse freed inodes at once).
    fs::remove_file(h.path("app.log")).expect("rm");
    append(&h.path("app.log"), "second file, longer line\n");
    h.settle();
    let mut got = h.spool.lines();
    got.sort();
    assert_eq!(got, ["first file line one", "second file, longer line"]);
}

#[test]
fn a_file_rewritten_while_stopped_is_read_from_its_start() {
    let mut h = Harness::new("rewritten", Start::Beginning);
    append(&h.path("app.log"), "aaaa\nbbbb\n");
    h.settle();
    h.restart(false);
    // Same inode, same first bytes, different bytes before the offset.
    let f = OpenOptions::new()
        .write(true)
        .open(h.path("app.log"))
        .expect("open");
    std::os::unix::fs::FileExt::write_at(&f, b"aaaa\ncccc\ndddd\n", 0).expect("write");
    h.settle();
    let got = h.spool.lines();
    assert!(
        got.contains(&"cccc".to_string()) && got.contains(&"dddd".to_string()),
        "{got:?}"
    );
}

#[test]
fn nul_padding_after_a_truncation_is_never_shipped() {
    let mut h = Harness::new("nul", Start::Beginning);
    append(&h.path("app.log"), &lines(0, 50));
    h.settle();
    // A writer without O_APPEND: truncated under it, it writes at its old
    // offset, leaving a hole of NULs.
    let f = OpenOptions::new()
        .write(true)
        .open(h.path("app.log"))
        .expect("open");
    let old = f.metadata().expect("meta").len();
    f.set_len(0).expect("truncate");
    h.step(1);
    std::os::unix::fs::FileExt::write_at(&f, b"after the hole\n", old).expect("write");
    h.settle();
    let mut want = expected(0, 50);
    want.push("after the hole".into());
    assert_eq!(sorted(h.spool.lines()), sorted(want));
    assert!(
        h.counters
            .nul_skipped
            .load(std::sync::atomic::Ordering::Relaxed)
            >= old
    );
}

#[test]
fn a_huge_line_is_cut_not_dropped_and_reading_goes_on() {
    let mut h = Harness::new("huge", Start::Beginning);
    let big = "y".repeat(1 << 20);
    append(&h.path("app.log"), &format!("before\n{big}\nafter\n"));
    h.settle();
    let got = h.spool.lines();
    assert!(got.contains(&"before".to_string()) && got.contains(&"after".to_string()));
    assert!(
        got.iter()
            .any(|l| l.starts_with("yyyy") && l.len() <= 64 << 10)
    );
}

#[test]
fn chunks_stay_under_the_target_and_the_checkpoint_follows_acks_only() {
    let mut h = Harness::new("chunks", Start::Beginning);
    append(&h.path("app.log"), &lines(0, 200_000));
    for _ in 0..20 {
        h.step(1);
    }
    let entries = h.tailer.checkpoint();
    assert_eq!(entries[0].cursor.offset, 0, "nothing acked yet");
    h.spool.ack_all(&mut h.tailer);
    let entries = h.tailer.checkpoint();
    let size = fs::metadata(h.path("app.log")).expect("meta").len();
    assert_eq!(entries[0].cursor.offset, size);
    assert_eq!(sorted(h.spool.lines()), expected(0, 200_000));
    assert!(
        h.spool.batches.values().map(Vec::len).sum::<usize>() >= 4,
        "cut in chunks"
    );
}

#[test]
fn a_batch_cursor_lists_file_positions_and_reads_back() {
    let entry = |ino: u64, id: &str, offset: u64, path: &str| Entry {
        group: "app".into(),
        key: FileKey { dev: 7, ino },
        cursor: Cursor {
            file_id: id.into(),
            generation: 1,
            offset,
            fingerprint: Fingerprint::of(b"head"),
            tail: 9,
        },
        spooled: None,
        path: path.into(),
    };
    let entries = [
        entry(1, "aa", 10, "/x/a b.log"),
        entry(2, "bb", 20, "/x/b\tc.log"),
    ];
    let back = decode_delta("app", &encode_delta(entries.iter()));
    assert_eq!(back.len(), 2);
    assert_eq!(back[0], entries[0]);
    assert_eq!(back[1].cursor, entries[1].cursor);
    assert_eq!(back[1].path, "/x/b?c.log");
    assert!(
        decode_delta("app", b"v1 aa 0 1 2 3 4").is_empty(),
        "another format"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Write(usize),
    Partial,
    Step,
    Rename,
    CopyTruncate,
    /// Lines written between the copy and the truncation; `read`: the
    /// agent reads them from the original before the truncation.
    CopyWindow {
        lines: usize,
        read: bool,
    },
    Truncate,
    Delete,
    Ack,
    Save,
    Restart {
        crash: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..40).prop_map(Op::Write),
        1 => Just(Op::Partial),
        4 => Just(Op::Step),
        1 => Just(Op::Rename),
        1 => Just(Op::CopyTruncate),
        1 => (1usize..5, any::<bool>()).prop_map(|(lines, read)| Op::CopyWindow { lines, read }),
        1 => Just(Op::Truncate),
        1 => Just(Op::Delete),
        2 => Just(Op::Ack),
        1 => Just(Op::Save),
        1 => any::<bool>().prop_map(|crash| Op::Restart { crash }),
    ]
}

proptest! {
    // 48 cases by default (`PROPTEST_CASES=2000` for a longer hunt).
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48)
    ))]

    /// Every line written is stored exactly once, through rotations,
    /// truncations, deletions and restarts (copytruncate here copies and
    /// truncates with no write between: its window is empty).
    #[test]
    fn every_line_is_delivered_exactly_once(ops in proptest::collection::vec(op(), 1..60)) {
        let mut h = Harness::new("prop", Start::Beginning);
        h.step(0);
        let mut next = 0usize;
        let mut partial = false;
        let mut rotated = 0;
        let mut deleted = false;
        let mut lost: std::collections::BTreeSet<usize> = Default::default();
        // A copy the agent has not looked at since it was made.
        let mut copy_unseen = false;
        for op in ops {
            let live = h.path("app.log");
            match op {
                Op::Write(n) => {
                    let mut text = String::new();
                    if partial {
                        text.push('\n');
                        partial = false;
                    }
                    text.push_str(&lines(next, next + n));
                    next += n;
                    append(&live, &text);
                }
                Op::Partial => {
                    if !partial {
                        append(&live, &format!("line {next}"));
                        next += 1;
                        partial = true;
                    }
                }
                Op::Step => {
                    h.step(1);
                    copy_unseen = false;
                }
                Op::Rename => {
                    if live.exists() {
                        rotated += 1;
                        fs::rename(&live, h.path(&format!("app.log.{rotated}"))).expect("rename");
                        // The writer reopens: a partial line stays in the
                        // old file and is finished there.
                        if partial {
                            append(&h.path(&format!("app.log.{rotated}")), "\n");
                            partial = false;
                        }
                    }
                }
                Op::CopyTruncate => {
                    if live.exists() && !partial {
                        rotated += 1;
                        fs::copy(&live, h.path(&format!("app.log.{rotated}"))).expect("copy");
                        OpenOptions::new().write(true).open(&live).expect("open").set_len(0).expect("truncate");
                        copy_unseen = true;
                    }
                }
                Op::CopyWindow { lines: n, read } => {
                    if live.exists() && !partial {
                        rotated += 1;
                        fs::copy(&live, h.path(&format!("app.log.{rotated}"))).expect("copy");
                        append(&live, &lines(next, next + n));
                        if read {
                            // Read and sent (spooled) before the truncation;
                            // read only into memory and then killed, they
                            // would be lost with the window.
                            h.step(1);
                            h.step(1);
                        } else {
                            // The documented copytruncate window: in
                            // neither file when the agent looks.
                            lost.extend(next..next + n);
                        }
                        next += n;
                        OpenOptions::new().write(true).open(&live).expect("open").set_len(0).expect("truncate");
                        copy_unseen = true;
                    }
                }
                Op::Truncate => {
                    // What a plain truncation removes unread is gone for
                    // good; the writer's reader catches up first.
                    if live.exists() && !partial {
                        h.settle();
                        OpenOptions::new().write(true).open(&live).expect("open").set_len(0).expect("truncate");
                    }
                }
                Op::Delete => {
                    // The agent has seen the file (a watch tells it within
                    // milliseconds); then it is deleted.
                    h.step(0);
                    if live.exists() && !partial {
                        fs::remove_file(&live).expect("rm");
                        deleted = true;
                    }
                }
                Op::Ack => h.spool.ack_all(&mut h.tailer),
                Op::Save => h.save(),
                Op::Restart { crash } => {
                    if partial {
                        // The writer finishes its line before the agent's
                        // restart is of interest; a partial line is never
                        // shipped either way.
                        append(&live, "\n");
                        partial = false;
                    }
                    if crash && deleted {
                        // What a deleted file held and was not sent yet is
                        // gone with a killed agent (nothing can read it
                        // again): the agent finishes it first here.
                        h.settle();
                    }
                    if crash && copy_unseen {
                        // Documented: a copy under 1 KiB that the agent
                        // never looked at before it was killed cannot be
                        // told from a new file by its first bytes alone
                        // (the checkpoint keeps a hash of up to 1 KiB);
                        // the agent looks at it first here.
                        h.step(1);
                    }
                    copy_unseen = false;
                    deleted = false;
                    h.restart(crash);
                    h.step(0);
                }
            }
        }
        if partial {
            append(&h.path("app.log"), "\n");
        }
        h.settle();
        h.settle();
        prop_assert!(h.spool.conflicts.is_empty(), "conflicts: {:?}", h.spool.conflicts);
        let got = sorted(h.spool.lines());
        let want: Vec<String> = (0..next)
            .filter(|i| !lost.contains(i))
            .map(|i| format!("line {i}"))
            .collect();
        prop_assert_eq!(got, want);
        let _ = fs::remove_dir_all(&h.dir);
    }
}

/// Keeps the largest batch it is sent.
#[derive(Default)]
struct LargestBatch {
    largest: usize,
    records: u64,
}

impl Delivery for LargestBatch {
    fn resume(&mut self, _source: &str) -> Resumed {
        Resumed::default()
    }
    fn send(&mut self, out: Outgoing) -> Result<(), Stopped> {
        let bytes: usize = out.batch.payloads.iter().map(payload_len).sum();
        self.largest = self.largest.max(bytes);
        self.records += out.batch.records;
        Ok(())
    }
}

#[test]
fn the_largest_record_the_settings_allow_fits_in_a_batch() {
    let dir = scratch("largest");
    let keys: Vec<agent_core::KeySpec> = agent_core::settings::COMMON_KEYS
        .iter()
        .chain(crate::LOG_KEYS)
        .copied()
        .collect();
    let text = format!(
        "file.app.path = {}/*.log\nfile.app.start = beginning\nfile.app.max_line = 1MiB\nfile.app.multiline.start = ^START\n",
        dir.display()
    );
    let config =
        agent_core::Config::from_text(Path::new("log.conf"), &text, &keys).expect("config");
    let settings = Arc::new(LogSettings::from_config(&config).expect("settings"));
    let mut body = String::from("START one\n");
    for _ in 0..3000 {
        body.push_str(&format!("{}\n", "c".repeat(500)));
    }
    body.push_str(&format!("START two {}\nSTART three\n", "x".repeat(2 << 20)));
    append(&dir.join("big.log"), &body);
    let mut tailer: Tailer = Tailer::new(settings, None, Arc::new(LogCounters::default()));
    let mut sink = LargestBatch::default();
    let now = Instant::now();
    tailer.rescan(now, &mut sink);
    for i in 0..5 {
        tailer
            .poll(now + Duration::from_secs(i), &mut sink)
            .expect("open");
    }
    tailer
        .drain(Instant::now() + Duration::from_secs(10), &mut sink)
        .expect("open");
    assert!(sink.records >= 2, "records: {}", sink.records);
    let room = agent_core::pipeline::BATCH_LIMIT - (8 << 10);
    assert!(
        sink.largest <= room,
        "a batch of {} bytes, room for {room}",
        sink.largest
    );
    let _ = fs::remove_dir_all(&dir);
}

/// A spool that stays full for its first `busy` sends.
struct FullSpool {
    busy: usize,
    records: u64,
}

impl Delivery for FullSpool {
    fn resume(&mut self, _source: &str) -> Resumed {
        Resumed::default()
    }
    fn send(&mut self, out: Outgoing) -> Result<(), Stopped> {
        self.records += out.batch.records;
        Ok(())
    }
    fn send_within(
        &mut self,
        out: Outgoing,
        _limit: Duration,
    ) -> Result<Option<Outgoing>, Stopped> {
        if self.busy > 0 {
            self.busy -= 1;
            return Ok(Some(out));
        }
        self.send(out).map(|()| None)
    }
}

#[test]
fn a_deleted_file_is_not_held_open_past_deleted_hold_while_the_spool_is_full() {
    let dir = scratch("hold");
    let mut s = (*settings(&format!("{}/*.log", dir.display()), Start::Beginning)).clone();
    s.deleted_hold = Duration::ZERO;
    let counters = Arc::new(LogCounters::default());
    let mut tailer: Tailer = Tailer::new(Arc::new(s), None, counters.clone());
    let path = dir.join("big.log");
    append(&path, &lines(0, 10));
    let mut spool = FullSpool {
        busy: 0,
        records: 0,
    };
    let now = Instant::now();
    tailer.rescan(now, &mut spool);
    tailer.poll(now, &mut spool).expect("open");
    // Much more, then deleted; the spool is full from now on.
    append(&path, &lines(10, 400_000));
    fs::remove_file(&path).expect("rm");
    spool.busy = 3;
    tailer.rescan(now, &mut spool);
    tailer.poll(now, &mut spool).expect("open");
    assert_eq!(tailer.open_files(), 0, "closed while the spool was full");
    assert!(
        counters
            .deleted_unread_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Every send, as the pipeline gets it: (chunks, bytes).
#[derive(Default)]
struct Sends(Vec<(usize, usize)>);

impl Delivery for Sends {
    fn resume(&mut self, _source: &str) -> Resumed {
        Resumed::default()
    }
    fn send(&mut self, out: Outgoing) -> Result<(), Stopped> {
        let bytes = out.batch.payloads.iter().map(payload_len).sum();
        self.0.push((out.batch.payloads.len(), bytes));
        Ok(())
    }
}

/// A file read in bulk goes out two full chunks a batch (each batch costs
/// the spool files of its own), and no batch is split by the pipeline.
#[test]
fn a_file_read_in_bulk_is_sent_two_chunks_a_batch() {
    let dir = scratch("bulk");
    let line = format!("{}\n", "b".repeat(199));
    append(
        &dir.join("a.log"),
        &line.repeat(6 * CHUNK_TARGET / line.len()),
    );
    let mut tailer: Tailer = Tailer::new(
        settings(&format!("{}/*.log", dir.display()), Start::Beginning),
        None,
        Arc::new(LogCounters::default()),
    );
    let mut sends = Sends::default();
    let now = Instant::now();
    tailer.rescan(now, &mut sends);
    tailer.poll(now, &mut sends).expect("open");
    tailer
        .drain(now + Duration::from_secs(10), &mut sends)
        .expect("open");
    let chunks: usize = sends.0.iter().map(|&(n, _)| n).sum();
    assert!(
        chunks >= 6,
        "{chunks} chunks for six chunks' worth of lines"
    );
    assert!(
        sends.0.len() <= chunks.div_ceil(2),
        "{} sends for {chunks} chunks: {:?}",
        sends.0.len(),
        sends.0
    );
    let room = agent_core::pipeline::BATCH_LIMIT - (8 << 10);
    assert!(
        sends.0.iter().all(|&(_, bytes)| bytes <= room),
        "{:?}",
        sends.0
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Moves `app.log.N` to `app.log.N+1` (the newest first), as logrotate.
fn shift_rotated(h: &Harness) {
    let mut n = 1;
    while h.path(&format!("app.log.{n}")).exists() {
        n += 1;
    }
    for k in (1..n).rev() {
        fs::rename(
            h.path(&format!("app.log.{k}")),
            h.path(&format!("app.log.{}", k + 1)),
        )
        .expect("shift");
    }
}

/// The torture test's failing run, step by step: a copytruncate copy
/// adopted, the agent killed, the copy renamed on, both killed again.
#[test]
fn a_copy_taken_over_before_a_kill_stays_its_original_through_later_rotations() {
    let mut h = Harness::new("copy-kill", Start::Beginning);
    let live = h.path("app.log");
    let mut next = 0;
    let mut write = |h: &mut Harness, n: usize| {
        append(&h.path("app.log"), &lines(next, next + n));
        next += n;
        h.step(1);
    };
    h.step(0);
    for _ in 0..4 {
        write(&mut h, 40);
    }
    // RenameCreate.
    shift_rotated(&h);
    fs::rename(&live, h.path("app.log.1")).expect("rename");
    fs::File::create(&live).expect("create");
    h.step(0);
    for _ in 0..8 {
        write(&mut h, 80);
    }
    // CopyTruncate: the copy seen before the truncation; lines written
    // in the window are read from the original.
    shift_rotated(&h);
    fs::copy(&live, h.path("app.log.1")).expect("copy");
    h.step(0);
    write(&mut h, 15);
    OpenOptions::new()
        .write(true)
        .open(&live)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    for _ in 0..4 {
        write(&mut h, 40);
    }
    h.spool.ack_all(&mut h.tailer);
    h.restart(true);
    h.step(0);
    for _ in 0..4 {
        write(&mut h, 40);
    }
    // RenameCreate.
    shift_rotated(&h);
    fs::rename(&live, h.path("app.log.1")).expect("rename");
    fs::File::create(&live).expect("create");
    h.step(0);
    for _ in 0..4 {
        write(&mut h, 40);
    }
    h.spool.ack_all(&mut h.tailer);
    // Truncate.
    h.settle();
    OpenOptions::new()
        .write(true)
        .open(&live)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    for _ in 0..4 {
        write(&mut h, 40);
    }
    // CopyTruncate, then both killed.
    shift_rotated(&h);
    fs::copy(&live, h.path("app.log.1")).expect("copy");
    h.step(0);
    OpenOptions::new()
        .write(true)
        .open(&live)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    for _ in 0..2 {
        write(&mut h, 40);
    }
    h.restart(true);
    h.step(0);
    for _ in 0..4 {
        write(&mut h, 40);
    }
    h.settle();
    h.settle();
    assert!(h.spool.conflicts.is_empty(), "{:?}", h.spool.conflicts);
    assert_eq!(sorted(h.spool.lines()), expected(0, next));
    let _ = fs::remove_dir_all(&h.dir);
}

/// A listing made while a rotation renames files can miss one (`readdir`
/// over a changing folder): an idle rotated file missed by one rescan and
/// found by the next is the same file, never read again as a new one.
#[test]
fn an_idle_file_missed_by_one_listing_is_not_read_again_as_new() {
    let mut h = Harness::new("missed", Start::Beginning);
    append(&h.path("app.log"), &lines(0, 50));
    h.step(0);
    fs::rename(h.path("app.log"), h.path("app.log.1")).expect("rename");
    append(&h.path("app.log"), &lines(50, 60));
    h.settle();
    // Idle past GONE_IDLE, then out of the listing for one rescan (as a
    // readdir racing a rename sees it), then back.
    h.step(10);
    fs::rename(h.path("app.log.1"), h.path("elsewhere")).expect("rename away");
    h.step(1);
    fs::rename(h.path("elsewhere"), h.path("app.log.2")).expect("rename back");
    h.settle();
    assert!(h.spool.conflicts.is_empty(), "{:?}", h.spool.conflicts);
    assert_eq!(sorted(h.spool.lines()), expected(0, 60));
    let _ = fs::remove_dir_all(&h.dir);
}
