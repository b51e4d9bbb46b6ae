//! The end-to-end harness: starts the real `sightline-collector` and agent
//! binaries as processes on loopback, each test in its own scratch folder
//! with ports the kernel picks, and talks to them over real sockets.
//!
//! The binaries come from the workspace's `target/<profile>/`;
//! `cargo xtask test` builds them first. Every process is killed when its
//! handle drops, so a failing test leaves nothing running.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod browser;
pub mod kube_fake;
pub mod logs;
pub mod mariadb;
pub mod packages;
pub mod smtp_sink;
pub mod webhook;
pub mod wire_agent;

/// The path of a workspace binary, built by `cargo xtask test`.
pub fn binary(name: &str) -> PathBuf {
    // tests/ is one level below the workspace root; the test executable
    // lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask test` (or `cargo build --workspace --bins`) first",
        path.display()
    );
    path
}

/// A folder for one test, removed when dropped (kept when
/// `E2E_KEEP_DIRS` is set, for post-mortems).
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A fresh, empty folder.
    pub fn new(name: &str) -> Scratch {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("sightline-e2e-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("scratch dir");
        Scratch { path }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("E2E_KEEP_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Two loopback addresses free right now, for a collector started later
/// (an agent can then be pointed at a collector that is not there yet).
pub fn free_addrs() -> (SocketAddr, SocketAddr) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let (a, b) = (bind(), bind());
    (a.local_addr().expect("addr"), b.local_addr().expect("addr"))
}

/// A project's secrets.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// For agents.
    pub license: String,
    /// For the API.
    pub token: String,
}

/// `sightline-collector project create NAME --data DIR`.
pub fn create_project(data: &Path, name: &str) -> Credentials {
    let out = Command::new(binary("sightline-collector"))
        .args(["project", "create", name, "--data"])
        .arg(data)
        .output()
        .expect("runs project create");
    assert!(
        out.status.success(),
        "project create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {text}"))
            .to_string()
    };
    Credentials {
        license: field("license="),
        token: field("token="),
    }
}

/// Sends SIGTERM.
pub fn terminate(child: &Child) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"))
        .expect("non-zero pid");
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
}

/// Waits for `child` to exit, at most `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running collector.
#[derive(Debug)]
pub struct Collector {
    child: Child,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// HTTP address.
    pub http: SocketAddr,
    /// Store folder.
    pub data: PathBuf,
    /// Its stderr.
    pub log: PathBuf,
}

impl Collector {
    /// Starts a collector on free ports with its store in `data`.
    pub fn start(data: &Path) -> Collector {
        Collector::start_with(data, "127.0.0.1:0", "127.0.0.1:0", &[])
    }

    /// Starts a collector on the given addresses with extra flags.
    pub fn start_with(data: &Path, grpc: &str, http: &str, extra: &[&str]) -> Collector {
        fs::create_dir_all(data).expect("data dir");
        let log = PathBuf::from(format!("{}.collector.log", data.display()));
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut child = Command::new(binary("sightline-collector"))
            .args(["serve", "--grpc", grpc, "--http", http, "--data"])
            .arg(data)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starts the collector");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the collector never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "collector did not start: {}",
                    fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in '{line}'"))
        };
        Collector {
            grpc: addr("grpc="),
            http: addr("http="),
            child,
            data: data.to_path_buf(),
            log,
        }
    }

    /// The API with `token`.
    pub fn api(&self, token: &str) -> Api {
        Api {
            base: format!("http://{}", self.http),
            token: token.to_string(),
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        terminate(&self.child);
        wait_exit(&mut self.child, Duration::from_secs(5))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its stderr so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Config text for an agent reporting to `grpc` with its data in `data_dir`.
pub fn agent_conf(
    license: &str,
    grpc: SocketAddr,
    data_dir: &Path,
    extra: &[(&str, &str)],
) -> String {
    let mut text = format!(
        "# written by the e2e harness\nlicense={license}\nserver.host={}\nserver.port={}\ndata.dir={}\ninterval=1s\nserver.timeout=3s\n",
        grpc.ip(),
        grpc.port(),
        data_dir.display()
    );
    for (k, v) in extra {
        text.push_str(&format!("{k}={v}\n"));
    }
    text
}

/// A running agent.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    /// Its config file.
    pub conf: PathBuf,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// Its stderr.
    pub log: PathBuf,
}

impl Agent {
    /// Writes `conf_text` to `dir/<binary>.conf` and starts `binary --conf` it.
    pub fn start(binary_name: &str, dir: &Path, conf_text: &str) -> Agent {
        fs::create_dir_all(dir).expect("agent dir");
        let conf = dir.join(format!("{binary_name}.conf"));
        fs::write(&conf, conf_text).expect("write conf");
        let data_dir = conf_text
            .lines()
            .find_map(|l| l.strip_prefix("data.dir="))
            .map(PathBuf::from)
            .expect("conf sets data.dir");
        let log = dir.join(format!("{binary_name}.log"));
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(binary(binary_name))
            .arg("--conf")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starts the agent");
        Agent {
            child,
            conf,
            data_dir,
            log,
        }
    }

    /// Starts `sightline-infra`.
    pub fn infra(dir: &Path, conf_text: &str) -> Agent {
        Agent::start("sightline-infra", dir, conf_text)
    }

    /// Starts `sightline-log`.
    pub fn log(dir: &Path, conf_text: &str) -> Agent {
        Agent::start("sightline-log", dir, conf_text)
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; the exit status if it exits within `limit`.
    pub fn terminate_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        terminate(&self.child);
        wait_exit(&mut self.child, limit)
    }

    /// Its exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The highest sequence number its spool has recorded assigning (in
    /// its current instance; the record is `<epoch> <seq>`), 0 when none.
    /// The spool writes it lazily: exact once the spool has drained or
    /// dropped something.
    pub fn spool_last_seq(&self) -> u64 {
        fs::read_to_string(self.data_dir.join("spool/last_seq"))
            .ok()
            .and_then(|t| t.split_whitespace().last()?.parse().ok())
            .unwrap_or(0)
    }

    /// Batches waiting in its spool.
    pub fn spooled(&self) -> usize {
        fs::read_dir(self.data_dir.join("spool"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "batch"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Its stderr so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The collector's JSON API.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    token: String,
}

impl Api {
    /// `GET path` with the bearer token: status and JSON body.
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.get_with(path, Some(&self.token))
    }

    /// `GET path` with `token` (or none).
    pub fn get_with(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let mut request = agent.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = request.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        let body: Value = response.body_mut().read_json().unwrap_or(Value::Null);
        (status, body)
    }

    /// `method path` with the bearer token and an optional JSON body:
    /// status and JSON body (`Null` when none).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(15)))
            .build()
            .into();
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let text = body.map(Value::to_string).unwrap_or_default();
        let result = match method {
            "POST" => agent
                .post(&url)
                .header("Authorization", &auth)
                .send(text.as_str()),
            "PUT" => agent
                .put(&url)
                .header("Authorization", &auth)
                .send(text.as_str()),
            "DELETE" => agent.delete(&url).header("Authorization", &auth).call(),
            _ => agent.get(&url).header("Authorization", &auth).call(),
        };
        let mut response = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let body: Value = response.body_mut().read_json().unwrap_or(Value::Null);
        (status, body)
    }

    /// `GET path`, which must answer 200.
    pub fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// The project's agents.
    pub fn agents(&self) -> Vec<Value> {
        self.ok("/api/v1/agents")["agents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Points of metric `name` (all series) of agent `oid`.
    pub fn points(&self, oid: i64, name: &str) -> Vec<(i64, f64)> {
        // The last hour: raw points (a longer range would be averaged).
        let body = self.ok(&format!(
            "/api/v1/agents/{oid}/metrics?name={name}&from={}",
            now_ms() - 3_600_000
        ));
        body["series"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["points"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| Some((p[0].as_i64()?, p[1].as_f64()?)))
            .collect()
    }

    /// Events of the project, newest first.
    pub fn events(&self) -> Vec<Value> {
        self.ok("/api/v1/events?from=0&limit=1000")["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

/// Polls `probe` every 100 ms until it gives a value or `limit` passes.
pub fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The only agent of the project, once it has registered.
pub fn the_agent(api: &Api) -> Value {
    wait_for("the agent to register", Duration::from_secs(15), || {
        api.agents().into_iter().next()
    })
}

/// Deterministic noise for garbage tests.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// PEM files for TLS tests, made fresh by rcgen.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate agents trust.
    pub ca: PathBuf,
    /// The collector's certificate, for `localhost` and `127.0.0.1`.
    pub cert: PathBuf,
    /// The collector's key.
    pub key: PathBuf,
}

/// Makes a CA and a server certificate signed by it, in `dir`.
pub fn tls_files(dir: &Path, name: &str) -> TlsFiles {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    fs::create_dir_all(dir).expect("dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");
    let server_key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server params")
        .signed_by(&server_key, &ca)
        .expect("server cert");
    let files = TlsFiles {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    fs::write(&files.ca, ca.pem()).expect("write ca");
    fs::write(&files.cert, server.pem()).expect("write cert");
    fs::write(&files.key, server_key.serialize_pem()).expect("write key");
    files
}
