//! The log agent's harness: a private nginx on loopback, a client making
//! numbered requests, Debian's `logrotate` with its own config and state, a
//! writer appending numbered lines, the `sightline-log` agent's config, and
//! readers of what the collector stored (`/api/v1/logs/search`, paged; the
//! LiveTail stream; the agent's counters).
//!
//! Every process it starts is stopped when its handle drops, every socket
//! read and every wait has a timeout, and every file it writes is under the
//! test's scratch folder (nginx's pid, error log, temp folders; logrotate's
//! state). It never touches the system's nginx or logrotate configuration.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Agent, Api, wait_exit};

/// Debian's nginx binary (`nginx-light` or `nginx`); `cargo xtask test`
/// installs it.
pub const NGINX: &str = "/usr/sbin/nginx";
/// Debian's logrotate; `cargo xtask test` installs it.
pub const LOGROTATE: &str = "/usr/sbin/logrotate";
/// Bound on one HTTP exchange with nginx or the collector.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Fails with the package to install when `binary` is missing.
pub fn require(binary: &str, package: &str) {
    assert!(
        Path::new(binary).exists(),
        "{binary} is missing: `cargo xtask test` installs it (apt-get install {package})"
    );
}

/// Whether this process runs as root.
fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn signal(pid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, signal);
    }
}

/// A private nginx: its config, pid file, error log, temp folders and
/// access log all in one folder, listening on a free loopback port, in the
/// foreground (`daemon off`), as the current user. Stopped on drop.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    /// Where it listens.
    pub port: u16,
    /// Its access log (combined format, unbuffered).
    pub access_log: PathBuf,
    /// Its master's pid file, for `postrotate`.
    pub pid_file: PathBuf,
    /// Its error log.
    pub error_log: PathBuf,
}

impl Nginx {
    /// Writes `dir/nginx.conf` and starts nginx on it; returns once it
    /// answers on its port.
    pub fn start(dir: &Path) -> Nginx {
        require(NGINX, "nginx-light");
        fs::create_dir_all(dir.join("temp")).expect("nginx dir");
        let port = free_port();
        let access_log = dir.join("access.log");
        let pid_file = dir.join("nginx.pid");
        let error_log = dir.join("error.log");
        // As root, workers would switch to `nobody`; keep them as root so
        // they can write the scratch folder. Otherwise nginx runs as the
        // current user and the directive would only draw a warning.
        let user = if is_root() { "user root;\n" } else { "" };
        let temp = dir.join("temp");
        let temp = temp.display();
        let conf = format!(
            "# written by the e2e harness
daemon off;
master_process on;
worker_processes 1;
{user}pid {pid};
error_log {error} warn;
events {{ worker_connections 256; }}
http {{
    access_log {access} combined;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 \"ok\\n\"; }}
    }}
}}
",
            pid = pid_file.display(),
            error = error_log.display(),
            access = access_log.display(),
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).expect("write nginx.conf");
        let stderr = File::create(dir.join("nginx.stderr")).expect("nginx stderr");
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starts nginx");
        let mut nginx = Nginx {
            child,
            port,
            access_log,
            pid_file,
            error_log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answered = TcpStream::connect(("127.0.0.1", port)).is_ok();
            if answered && nginx.pid_file.exists() {
                break;
            }
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!(
                    "nginx exited with {status}: {} {}",
                    fs::read_to_string(dir.join("nginx.stderr")).unwrap_or_default(),
                    fs::read_to_string(&nginx.error_log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not answer on 127.0.0.1:{port} within 10 s: {}",
                fs::read_to_string(&nginx.error_log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        nginx
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -USR1`: reopen the logs, as `postrotate` does.
    pub fn reopen_logs(&self) {
        signal(self.pid(), rustix::process::Signal::USR1);
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Fast shutdown: the master stops its workers and exits.
        signal(self.pid(), rustix::process::Signal::TERM);
        if wait_exit(&mut self.child, Duration::from_secs(5)).is_none() {
            let children =
                fs::read_to_string(format!("/proc/{pid}/task/{pid}/children", pid = self.pid()))
                    .unwrap_or_default();
            for worker in children.split_whitespace().filter_map(|p| p.parse().ok()) {
                signal(worker, rustix::process::Signal::KILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a [`RequestLoop`] did: the numbers of the requests nginx answered
/// 200, and of those it may or may not have logged (the connection failed
/// mid-request).
#[derive(Debug, Default, Clone)]
pub struct Requests {
    /// Answered 200: each must be in the access log once.
    pub answered: Vec<u64>,
    /// Failed mid-way: each may be in the log once, or not at all.
    pub failed: Vec<u64>,
}

/// Clients making numbered requests (`GET /req/<n>`, `n` from 1, one
/// counter for all) to nginx at a steady total rate, over keep-alive
/// connections. Stopped by [`RequestLoop::stop`] (or on drop).
#[derive(Debug)]
pub struct RequestLoop {
    stop: Arc<AtomicBool>,
    next: Arc<AtomicU64>,
    threads: Vec<JoinHandle<Requests>>,
}

impl RequestLoop {
    /// `clients` threads making `per_second` requests a second in all.
    pub fn start(port: u16, clients: u32, per_second: u32) -> RequestLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(1));
        let period = Duration::from_secs_f64(f64::from(clients) / f64::from(per_second.max(1)));
        let threads = (0..clients)
            .map(|_| {
                let (stop, next) = (Arc::clone(&stop), Arc::clone(&next));
                std::thread::spawn(move || client(port, &stop, &next, period))
            })
            .collect();
        RequestLoop {
            stop,
            next,
            threads,
        }
    }

    /// The highest request number taken so far (requests up to it have
    /// been started; those above it have not).
    pub fn issued(&self) -> u64 {
        self.next.load(Ordering::SeqCst) - 1
    }

    /// Stops the clients; what they did.
    pub fn stop(mut self) -> Requests {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Requests::default();
        for thread in self.threads.drain(..) {
            let done = thread.join().expect("client thread");
            all.answered.extend(done.answered);
            all.failed.extend(done.failed);
        }
        all.answered.sort_unstable();
        all.failed.sort_unstable();
        all
    }
}

impl Drop for RequestLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn client(port: u16, stop: &AtomicBool, next: &AtomicU64, period: Duration) -> Requests {
    let mut done = Requests::default();
    let mut connection: Option<BufReader<TcpStream>> = None;
    let start = Instant::now();
    let mut k: u32 = 0;
    while !stop.load(Ordering::SeqCst) {
        let n = next.fetch_add(1, Ordering::SeqCst);
        match request(&mut connection, port, n) {
            Ok(200) => done.answered.push(n),
            Ok(_) | Err(_) => {
                connection = None;
                done.failed.push(n);
            }
        }
        k += 1;
        let due = start + period * k;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    done
}

/// One `GET /req/<n>` on the kept-alive connection (opened when there is
/// none); the status.
fn request(
    connection: &mut Option<BufReader<TcpStream>>,
    port: u16,
    n: u64,
) -> std::io::Result<u16> {
    if connection.is_none() {
        let stream =
            TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), HTTP_TIMEOUT)?;
        stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
        stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
        stream.set_nodelay(true)?;
        *connection = Some(BufReader::new(stream));
    }
    let Some(reader) = connection.as_mut() else {
        return Err(std::io::Error::other("no connection"));
    };
    write!(
        reader.get_mut(),
        "GET /req/{n} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: sightline-e2e\r\n\r\n"
    )?;
    let mut status_line = String::new();
    if reader.read_line(&mut status_line)? == 0 {
        return Err(std::io::Error::other("connection closed"));
    }
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut length = 0usize;
    let mut close = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("connection closed in the head"));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        } else if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    if close {
        *connection = None;
    }
    Ok(status)
}

/// The request number in an access-log line (`"GET /req/<n> HTTP/1.1"`).
pub fn request_number(line: &str) -> Option<u64> {
    let rest = &line[line.find("/req/")? + 5..];
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// How `logrotate` rotates: `create` (rename, then a new empty file) or
/// `copytruncate` (copy, then truncate the original in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateMode {
    /// Rename the log, create a new one; `postrotate` tells the writer.
    Create,
    /// Copy the log, truncate the original.
    CopyTruncate,
}

/// Debian's logrotate with its own config and state file, rotating one log
/// with `postrotate` sending USR1 to the pid in a pid file.
#[derive(Debug)]
pub struct Logrotate {
    conf: PathBuf,
    state: PathBuf,
}

impl Logrotate {
    /// Writes the config for `log` into `dir`.
    pub fn new(dir: &Path, log: &Path, mode: RotateMode, pid_file: &Path) -> Logrotate {
        require(LOGROTATE, "logrotate");
        fs::create_dir_all(dir).expect("logrotate dir");
        let how = match mode {
            RotateMode::Create => "create 0644",
            RotateMode::CopyTruncate => "copytruncate",
        };
        let conf = dir.join("logrotate.conf");
        fs::write(
            &conf,
            format!(
                "# written by the e2e harness
{log} {{
    rotate 50
    missingok
    nocompress
    {how}
    postrotate
        kill -USR1 $(cat {pid})
    endscript
}}
",
                log = log.display(),
                pid = pid_file.display()
            ),
        )
        .expect("write logrotate.conf");
        Logrotate {
            conf,
            state: dir.join("logrotate.state"),
        }
    }

    /// `logrotate -f`: rotates now, whatever the size; how long it took.
    pub fn force(&self) -> Duration {
        let started = Instant::now();
        let out = Command::new(LOGROTATE)
            .arg("-f")
            .arg("-s")
            .arg(&self.state)
            .arg(&self.conf)
            .output()
            .expect("runs logrotate");
        assert!(
            out.status.success(),
            "logrotate -f failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        started.elapsed()
    }
}

/// Appends numbered lines (`seq=<n> ...`, `n` from 1) to a file at a steady
/// rate from its own thread, and lets a test rotate the file under it:
/// [`LineWriter::reopen`] after a rename (as a daemon told by `postrotate`),
/// [`LineWriter::pause`] around a truncation it must see finished.
#[derive(Debug)]
pub struct LineWriter {
    shared: Arc<WriterShared>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct WriterShared {
    path: PathBuf,
    stop: AtomicBool,
    reopen: AtomicBool,
    /// Held by the writer around each line; a test holding it pauses it.
    gate: Mutex<()>,
    written: AtomicU64,
}

impl LineWriter {
    /// Starts writing `per_second` lines a second to `path` (opened with
    /// `O_APPEND`, created if missing).
    pub fn start(path: &Path, per_second: u32) -> LineWriter {
        let shared = Arc::new(WriterShared {
            path: path.to_path_buf(),
            stop: AtomicBool::new(false),
            reopen: AtomicBool::new(false),
            gate: Mutex::new(()),
            written: AtomicU64::new(0),
        });
        let period = Duration::from_secs_f64(1.0 / f64::from(per_second.max(1)));
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || write_lines(&shared, period))
        };
        LineWriter {
            shared,
            thread: Some(thread),
        }
    }

    /// The number of the last line written (and flushed to the kernel).
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::SeqCst)
    }

    /// Asks the writer to reopen its path before its next line.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::SeqCst);
    }

    /// Holds the writer until the guard drops.
    pub fn pause(&self) -> std::sync::MutexGuard<'_, ()> {
        self.shared
            .gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops writing; the number of the last line written.
    pub fn stop(mut self) -> u64 {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("writer thread");
        }
        self.written()
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn open_append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the log for appending")
}

fn write_lines(shared: &WriterShared, period: Duration) {
    let mut file = open_append(&shared.path);
    let start = Instant::now();
    let mut n: u64 = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        {
            let _held = shared
                .gate
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if shared.reopen.swap(false, Ordering::SeqCst) {
                file = open_append(&shared.path);
            }
            n += 1;
            let line = numbered_line(n);
            file.write_all(line.as_bytes()).expect("append a line");
            shared.written.store(n, Ordering::SeqCst);
        }
        let due = start + period.mul_f64(n as f64);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
}

/// Line `n` of a [`LineWriter`]: its number, and padding that varies with
/// it (so lines differ in length and content).
pub fn numbered_line(n: u64) -> String {
    let pad = "abcdefghijklmnopqrstuvwxyz".repeat(1 + (n % 4) as usize);
    format!("seq={n} level=info msg=\"torture line\" pad={pad}\n")
}

/// The line number in a [`numbered_line`].
pub fn line_number(text: &str) -> Option<u64> {
    let rest = &text[text.find("seq=")? + 4..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Config text for `sightline-log`: the common keys (as [`crate::agent_conf`])
/// plus `keys`, e.g. `("file.app.path", "/x/app.log")`.
pub fn log_agent_conf(
    license: &str,
    grpc: SocketAddr,
    data_dir: &Path,
    keys: &[(&str, &str)],
) -> String {
    crate::agent_conf(license, grpc, data_dir, keys)
}

impl Agent {
    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// CPU time (user + system) the process `pid` has used, from
/// `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    let rest = stat.rsplit_once(')').map(|(_, r)| r).expect("stat format");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based).
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_secs_f64(ticks as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// One stored record, as `/api/v1/logs/search` returns it.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// The agent's time for it.
    pub time_ms: i64,
    /// The path it was read under.
    pub path: String,
    /// The file's identity.
    pub file_id: String,
    /// Its start offset in the file.
    pub start: u64,
    /// Its end offset.
    pub end: u64,
    /// Its text.
    pub text: String,
    /// Whether the text was cut.
    pub cut: bool,
    /// The whole JSON object.
    pub json: Value,
}

impl LogRecord {
    /// `file_id@start path`, for messages.
    pub fn where_from(&self) -> String {
        format!("{}@{} {}", self.file_id, self.start, self.path)
    }

    fn from_json(json: &Value) -> LogRecord {
        LogRecord {
            time_ms: json["time_ms"].as_i64().unwrap_or(0),
            path: json["path"].as_str().unwrap_or_default().to_string(),
            file_id: json["file_id"].as_str().unwrap_or_default().to_string(),
            start: json["start"].as_u64().unwrap_or(0),
            end: json["end"].as_u64().unwrap_or(0),
            text: json["text"].as_str().unwrap_or_default().to_string(),
            cut: json["cut"].as_bool().unwrap_or(false),
            json: json.clone(),
        }
    }
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Every record of `category` the collector holds (all time), read through
/// `/api/v1/logs/search` in pages of 5,000 following `next`; newest first.
pub fn all_records(api: &Api, category: &str) -> Vec<LogRecord> {
    search_all(api, &format!("category={}", encode(category)))
}

/// Every record matching the search `query` (`q=...&category=...`; all time
/// unless it says `from`), all pages; newest first.
pub fn search_all(api: &Api, query: &str) -> Vec<LogRecord> {
    let range = if query.contains("from=") {
        String::new()
    } else {
        format!("&from=0&to={}", crate::now_ms() + 3_600_000)
    };
    let mut records = Vec::new();
    let mut before: Option<String> = None;
    for _page in 0..10_000 {
        let cursor = before
            .as_deref()
            .map(|c| format!("&before={}", encode(c)))
            .unwrap_or_default();
        let path = format!("/api/v1/logs/search?{query}{range}&limit=5000{cursor}");
        let body = api.ok(&path);
        let page = body["records"]
            .as_array()
            .unwrap_or_else(|| panic!("GET {path}: no records array in {body}"));
        records.extend(page.iter().map(LogRecord::from_json));
        match body["next"].as_str() {
            Some(next) if !page.is_empty() => before = Some(next.to_string()),
            _ => return records,
        }
    }
    panic!("search {query}: more than 10,000 pages");
}

/// How the numbers found in stored records compare with what was written.
#[derive(Debug, Default)]
pub struct Tally {
    /// Expected and not stored.
    pub missing: Vec<u64>,
    /// Stored more than once: number → each copy's `file_id@start path`.
    pub repeated: BTreeMap<u64, Vec<String>>,
    /// Stored, never written.
    pub unexpected: Vec<u64>,
    /// Records with no number in them.
    pub unnumbered: Vec<String>,
    /// Numbers stored once.
    pub once: usize,
}

impl Tally {
    /// Compares `records` (numbered by `number`) with `expected`; numbers
    /// in `maybe` may be stored once or not at all.
    pub fn of(
        records: &[LogRecord],
        number: impl Fn(&str) -> Option<u64>,
        expected: &[u64],
        maybe: &[u64],
    ) -> Tally {
        Tally::of_texts(
            records.iter().map(|r| (r.text.as_str(), r.where_from())),
            number,
            expected,
            maybe,
        )
    }

    /// As [`Tally::of`], over (text, where it was read) pairs.
    pub fn of_texts<'a>(
        texts: impl IntoIterator<Item = (&'a str, String)>,
        number: impl Fn(&str) -> Option<u64>,
        expected: &[u64],
        maybe: &[u64],
    ) -> Tally {
        let mut seen: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        let mut tally = Tally::default();
        for (text, place) in texts {
            match number(text) {
                Some(n) => seen.entry(n).or_default().push(place),
                None => tally.unnumbered.push(text.to_string()),
            }
        }
        let expected_set: std::collections::BTreeSet<u64> = expected.iter().copied().collect();
        let maybe_set: std::collections::BTreeSet<u64> = maybe.iter().copied().collect();
        for &n in &expected_set {
            if !seen.contains_key(&n) {
                tally.missing.push(n);
            }
        }
        for (n, copies) in seen {
            if copies.len() > 1 {
                tally.repeated.insert(n, copies);
            } else if !expected_set.contains(&n) && !maybe_set.contains(&n) {
                tally.unexpected.push(n);
            } else {
                tally.once += 1;
            }
        }
        tally
    }

    /// A short account for a failure message.
    pub fn summary(&self) -> String {
        let head = |v: &[u64]| -> String {
            let shown: Vec<String> = v.iter().take(20).map(u64::to_string).collect();
            format!(
                "{} [{}{}]",
                v.len(),
                shown.join(", "),
                if v.len() > 20 { ", ..." } else { "" }
            )
        };
        let repeated: Vec<String> = self
            .repeated
            .iter()
            .take(10)
            .map(|(n, copies)| format!("{n} at {copies:?}"))
            .collect();
        format!(
            "stored once: {}; missing: {}; stored more than once: {} [{}]; never written: {}; without a number: {} {:?}",
            self.once,
            head(&self.missing),
            self.repeated.len(),
            repeated.join("; "),
            head(&self.unexpected),
            self.unnumbered.len(),
            self.unnumbered.iter().take(3).collect::<Vec<_>>()
        )
    }
}

/// Collapses sorted numbers into ranges (`1-5, 9`), for messages.
pub fn ranges(numbers: &[u64]) -> String {
    let mut out = Vec::new();
    let mut iter = numbers.iter().copied().peekable();
    while let Some(first) = iter.next() {
        let mut last = first;
        while iter.peek() == Some(&(last + 1)) {
            last += 1;
            iter.next();
        }
        out.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    }
    out.join(", ")
}

/// A LiveTail subscription: `GET /api/v1/logs/tail?...` read by its own
/// thread; each `data:` line arrives with the instant it was read.
#[derive(Debug)]
pub struct TailStream {
    /// Records and `lagged` notices as they arrive.
    pub events: mpsc::Receiver<(Instant, TailEvent)>,
    stream: TcpStream,
}

/// One Server-Sent Event of the tail.
#[derive(Debug, Clone)]
pub enum TailEvent {
    /// A record, as JSON.
    Record(Value),
    /// `event: lagged` with how many records were skipped.
    Lagged(u64),
}

impl TailStream {
    /// Opens the stream on the collector at `http` with `token`; `query`
    /// as `category=app&filter=x`. Returns once the response head is in.
    pub fn open(http: SocketAddr, token: &str, query: &str) -> TailStream {
        let stream = TcpStream::connect_timeout(&http, HTTP_TIMEOUT).expect("connect to the API");
        stream
            .set_read_timeout(Some(HTTP_TIMEOUT))
            .expect("read timeout");
        let mut writer = stream.try_clone().expect("clone");
        write!(
            writer,
            "GET /api/v1/logs/tail?{query} HTTP/1.0\r\nHost: {http}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .expect("send the tail request");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut status = String::new();
        reader.read_line(&mut status).expect("tail status line");
        assert!(
            status.contains(" 200"),
            "GET /api/v1/logs/tail?{query}: {status}"
        );
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("tail head");
            if n == 0 || line.trim_end().is_empty() {
                break;
            }
        }
        // HTTP/1.0: the body is the rest of the connection, not chunked.
        // The stream may be quiet for long: no timeout from here on; the
        // thread ends when the socket is shut down on drop.
        stream.set_read_timeout(None).expect("no read timeout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lagged = false;
            for line in reader.lines() {
                let Ok(line) = line else { return };
                if line.starts_with("event: lagged") {
                    lagged = true;
                    continue;
                }
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let Ok(json) = serde_json::from_str::<Value>(data.trim()) else {
                    continue;
                };
                let event = if std::mem::take(&mut lagged) {
                    TailEvent::Lagged(json["missed"].as_u64().unwrap_or(0))
                } else {
                    TailEvent::Record(json)
                };
                if tx.send((Instant::now(), event)).is_err() {
                    return;
                }
            }
        });
        TailStream { events: rx, stream }
    }
}

impl Drop for TailStream {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// The lines of every file in `dir` whose name starts with `prefix` (the
/// log and its rotated copies: what is on disk), in no particular order.
pub fn lines_on_disk(dir: &Path, prefix: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in fs::read_dir(dir).expect("read the log folder") {
        let entry = entry.expect("entry");
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let bytes = fs::read(entry.path()).expect("read a log file");
        lines.extend(
            String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    lines
}

/// Polls the collector until it holds at least `expected` records of
/// `category` and the count stops changing, or `limit` passes; what it
/// holds then (the caller's tally says what is wrong, if anything).
pub fn wait_for_records(
    api: &Api,
    category: &str,
    expected: usize,
    limit: Duration,
) -> Vec<LogRecord> {
    let deadline = Instant::now() + limit;
    let mut last_len = usize::MAX;
    loop {
        let records = all_records(api, category);
        let settled = records.len() >= expected && records.len() == last_len;
        if settled || Instant::now() >= deadline {
            return records;
        }
        last_len = records.len();
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The total of the agent's counter metric `name` (`log.truncations`)
/// over every life of agent `oid`: the sum of its increases, a drop being
/// a restart from 0.
pub fn counter_total(api: &Api, oid: i64, name: &str) -> u64 {
    let mut points = api.points(oid, name);
    points.sort_by_key(|p| p.0);
    let mut total = 0.0;
    let mut previous = 0.0;
    for (_, value) in points {
        total += if value >= previous {
            value - previous
        } else {
            value
        };
        previous = value;
    }
    total as u64
}
