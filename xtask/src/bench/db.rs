//! `cargo xtask bench db [--cycles N] [--no-agent] [--json]`: sightline-db
//! and Debian's `prometheus-mysqld-exporter` watching the same private
//! MariaDB server in the same run, reported as ratios. It never touches a
//! system MariaDB: the server is its own, in a scratch folder, killed at
//! the end.
//!
//! A cycle is one agent interval (1 s) or one scrape of the exporter's
//! `/metrics` (processlist collector on, its other collectors at their
//! defaults), at the same rate. Three figures:
//!
//! - **statements per cycle**, from the server's own `Questions`: each
//!   tool alone against the server in its own window (the workload paused,
//!   the other tool not scraped or SIGSTOPped), the delta divided by the
//!   cycles in the window, minus what reading `Questions` costs (measured
//!   by reading it twice back to back);
//! - **CPU per cycle**: every thread's time (`/proc/<pid>/task/*/schedstat`)
//!   over N cycles after three warm-up cycles, both tools running at once
//!   while a light workload runs on the server;
//! - **server CPU per cycle**: the CPU time the server itself spent on each
//!   tool's statements over the same cycles (its `USER_STATISTICS`, the
//!   server run with `--userstat`; each tool has its own account): what
//!   watching costs the database, which neither tool's own CPU shows;
//! - **peak RSS**: `VmHWM` at the end.
//!
//! The workload: four sessions each looping a point SELECT, an UPDATE and
//! a short transaction about 50 times a second, and two sessions idle in a
//! transaction holding a row lock, so the processlist always has rows.
//! The agent delivers every cycle to a collector (not measured), as
//! `bench infra` does. The server is started here with the few lines the
//! test harness (tests/src/mariadb.rs) also has: xtask does not depend on
//! the test crate.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{
    Goal, Row, Running, StartedCollector, api_get, build, cpu_seconds, free_port, http_client,
    peak_rss, print_json, print_table, start_collector,
};

const EXPORTER: &str = "/usr/bin/prometheus-mysqld-exporter";
const WARM_UP_CYCLES: u32 = 3;
const ROOT_PASSWORD: &str = "bench-root-pw";
const AGENT_USER: &str = "sightline";
const AGENT_PASSWORD: &str = "bench-agent-pw";
const EXPORTER_USER: &str = "exporter";
const EXPORTER_PASSWORD: &str = "bench-exporter-pw";
/// Sessions looping statements, and sessions idle in a transaction.
const BUSY_SESSIONS: u32 = 4;
const IDLE_SESSIONS: u32 = 2;

pub(crate) fn run(root: &Path, args: &[String]) -> Result<()> {
    let mut args = args.iter();
    let mut cycles: u32 = 30;
    let mut json = false;
    let mut with_agent = true;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--no-agent" => with_agent = false,
            "--cycles" => cycles = args.next().context("--cycles needs a number")?.parse()?,
            other => bail!("bench db: unknown option {other}"),
        }
    }
    if cycles == 0 {
        bail!("bench db: --cycles must be at least 1");
    }
    crate::test::ensure_packages()?;
    if with_agent {
        build(root, "agent", "sightline-db", None)?;
        build(root, "release", "sightline-collector", None)?;
    }
    // The socket path must stay under 108 bytes: the server lives in the
    // system's temporary folder, not under target/.
    let scratch = std::env::temp_dir().join(format!("sightline-bench-db-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let result = measure(root, &scratch, cycles, with_agent);
    let _ = fs::remove_dir_all(&scratch);
    let rows = result?;
    if json {
        return print_json(&rows);
    }
    println!();
    println!(
        "sightline-db vs mysqld_exporter (processlist on): {cycles} cycles of 1 s, one MariaDB, this machine, same run"
    );
    println!();
    print_table("sightline-db", "mysqld_exporter", &rows);
    Ok(())
}

fn measure(root: &Path, scratch: &Path, cycles: u32, with_agent: bool) -> Result<Vec<Row>> {
    let server = Server::start(&scratch.join("mariadb"))?;
    server.sql(&format!(
        "CREATE USER '{AGENT_USER}'@'%' IDENTIFIED BY '{AGENT_PASSWORD}';
         GRANT PROCESS, SELECT ON *.* TO '{AGENT_USER}'@'%';
         CREATE USER '{EXPORTER_USER}'@'%' IDENTIFIED BY '{EXPORTER_PASSWORD}';
         GRANT PROCESS, REPLICATION CLIENT, SELECT ON *.* TO '{EXPORTER_USER}'@'%';
         CREATE DATABASE bench;
         CREATE TABLE bench.t (id INT PRIMARY KEY, v INT NOT NULL, c VARCHAR(64) NOT NULL) ENGINE=InnoDB;
         USE bench;
         INSERT INTO t SELECT seq, 0, CONCAT('row ', seq) FROM seq_1_to_1100;"
    ))?;
    let workload = Workload::start(&server)?;

    // The exporter, reading its account from a client option file.
    let my_cnf = scratch.join("exporter.cnf");
    fs::write(
        &my_cnf,
        format!(
            "[client]\nuser={EXPORTER_USER}\npassword={EXPORTER_PASSWORD}\nhost=127.0.0.1\nport={}\n",
            server.port
        ),
    )?;
    let exporter_port = free_port()?;
    let exporter = Command::new(EXPORTER)
        .arg(format!("--config.my-cnf={}", my_cnf.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{exporter_port}"))
        .arg("--collect.info_schema.processlist")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {EXPORTER}"))?;
    let exporter_pid = exporter.id();
    let mut running = Running(vec![exporter]);

    let client = http_client(Duration::from_secs(10));
    // As Prometheus scrapes: asking for gzip.
    let scrape = || -> Result<Vec<u8>> {
        Ok(client
            .get(format!("http://127.0.0.1:{exporter_port}/metrics"))
            .header("Accept-Encoding", "gzip")
            .call()?
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()?)
    };
    let started = Instant::now();
    while scrape().is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("mysqld_exporter did not start");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let plain = client
        .get(format!("http://127.0.0.1:{exporter_port}/metrics"))
        .call()?
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()?;
    if !plain.lines().any(|l| l == "mysql_up 1") {
        bail!("mysqld_exporter cannot reach the server (no `mysql_up 1` in its metrics)");
    }

    // The agent, reporting to a collector.
    let agent_pid = if with_agent {
        let bin = root.join("target/release");
        let StartedCollector {
            child: collector,
            license,
            token,
            grpc,
            http,
        } = start_collector(&bin, &scratch.join("collector"), Stdio::null())?;
        running.0.push(collector);
        let port = grpc.rsplit_once(':').map(|(_, p)| p).context("port")?;
        let conf = scratch.join("db.conf");
        fs::write(
            &conf,
            format!(
                "license={license}\nserver.port={port}\ndata.dir={}\ninterval=1s\nlog.level=warn\n\
                 db.url=mysql://{AGENT_USER}@127.0.0.1:{}/\ndb.password={AGENT_PASSWORD}\n",
                scratch.join("agent").display(),
                server.port
            ),
        )?;
        let agent_log = fs::File::create(scratch.join("agent.log"))?;
        let agent = Command::new(root.join("target/agent/sightline-db"))
            .arg("--conf")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(agent_log)
            .spawn()
            .context("starting sightline-db")?;
        let pid = agent.id();
        // Stopped before the collector, which `running` drops last.
        running.0.insert(0, agent);
        wait_for_agent_metrics(&client, &http, &token, scratch)?;
        Some(pid)
    } else {
        None
    };

    eprintln!("warming up for {WARM_UP_CYCLES} cycles, then measuring CPU over {cycles}...");
    for _ in 0..WARM_UP_CYCLES {
        scrape()?;
        std::thread::sleep(Duration::from_secs(1));
    }
    let agent_before = agent_pid.map(cpu_seconds).transpose()?;
    let exporter_before = cpu_seconds(exporter_pid)?;
    let questions_before = server.questions()?;
    let server_cpu_before = server.cpu_by_user()?;
    let begin = Instant::now();
    for cycle in 0..cycles {
        scrape()?;
        let next = begin + Duration::from_secs(u64::from(cycle) + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let agent_cycles = begin.elapsed().as_secs_f64().floor().max(1.0);
    let agent_cpu = match (agent_pid, agent_before) {
        (Some(pid), Some(before)) => (cpu_seconds(pid)? - before) / agent_cycles,
        _ => f64::NAN,
    };
    let exporter_cpu = (cpu_seconds(exporter_pid)? - exporter_before) / f64::from(cycles);
    let workload_rate =
        (server.questions()? - questions_before) as f64 / begin.elapsed().as_secs_f64();
    let server_cpu_after = server.cpu_by_user()?;
    let server_cpu = |user: &str, cycles: f64| -> f64 {
        match (server_cpu_before.get(user), server_cpu_after.get(user)) {
            (Some(before), Some(after)) => (after - before) / cycles,
            (None, Some(after)) => after / cycles,
            _ => f64::NAN,
        }
    };
    let agent_server_cpu = server_cpu(AGENT_USER, agent_cycles);
    let exporter_server_cpu = server_cpu(EXPORTER_USER, f64::from(cycles));
    let processlist_rows = server
        .sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND != 'Daemon'")?;

    // Statements: the workload paused, each tool alone.
    workload.pause();
    std::thread::sleep(Duration::from_millis(1500));
    let agent_statements = match agent_pid {
        Some(_) => {
            eprintln!("counting statements: the agent alone for {cycles} cycles...");
            let (before, at) = (server.questions()?, Instant::now());
            std::thread::sleep(Duration::from_secs(u64::from(cycles)));
            let after = server.questions()?;
            let window_cycles = at.elapsed().as_secs_f64().round().max(1.0);
            Some((after - before, window_cycles))
        }
        None => None,
    };
    if let Some(pid) = agent_pid {
        signal(pid, rustix::process::Signal::STOP);
    }
    std::thread::sleep(Duration::from_millis(1500));
    // What reading `Questions` costs, and proof that nothing else runs.
    let q1 = server.questions()?;
    let q2 = server.questions()?;
    let reading = q2 - q1;
    std::thread::sleep(Duration::from_secs(3));
    let quiet = server.questions()? - q2 - reading;
    if quiet != 0 {
        bail!("{quiet} statements ran on a quiet server in 3 s: the windows would not be clean");
    }
    eprintln!("counting statements: mysqld_exporter alone for {cycles} scrapes...");
    let before = server.questions()?;
    let begin = Instant::now();
    for cycle in 0..cycles {
        scrape()?;
        let next = begin + Duration::from_secs(u64::from(cycle) + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let exporter_statements = (server.questions()? - before - reading) as f64 / f64::from(cycles);
    let agent_statements = agent_statements.map_or(f64::NAN, |(delta, window)| {
        (delta - reading) as f64 / window
    });
    if let Some(pid) = agent_pid {
        signal(pid, rustix::process::Signal::CONT);
    }
    workload.stop();
    // A tool that died during the run would have its figures cut short.
    for child in &mut running.0 {
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "pid {} exited during the bench ({status}); agent log:\n{}",
                child.id(),
                fs::read_to_string(scratch.join("agent.log")).unwrap_or_default()
            );
        }
    }
    eprintln!(
        "while measuring CPU: {workload_rate:.0} statements/s on the server, {} processlist rows; reading Questions costs {reading} statement(s)",
        processlist_rows.lines().next().unwrap_or("?")
    );

    Ok(vec![
        Row {
            name: "statements_per_cycle",
            label: "statements per cycle",
            scale: 1.0,
            value: agent_statements,
            peer_value: exporter_statements,
            goal: Some(Goal::AtMost(5.0)),
        },
        Row {
            name: "cpu_seconds_per_cycle",
            label: "CPU per cycle (ms)",
            scale: 1000.0,
            value: agent_cpu,
            peer_value: exporter_cpu,
            goal: Some(Goal::RatioAtMost(0.2)),
        },
        Row {
            name: "server_cpu_seconds_per_cycle",
            label: "server CPU per cycle (ms)",
            scale: 1000.0,
            value: agent_server_cpu,
            peer_value: exporter_server_cpu,
            goal: None,
        },
        Row {
            name: "peak_rss_bytes",
            label: "peak RSS (MiB)",
            scale: 1.0 / f64::from(1 << 20),
            value: agent_pid.map_or(Ok(f64::NAN), |pid| peak_rss(pid).map(|b| b as f64))?,
            peer_value: peak_rss(exporter_pid)? as f64,
            goal: Some(Goal::RatioAtMost(0.4)),
        },
    ])
}

/// Waits until the agent has delivered db counters to the collector.
fn wait_for_agent_metrics(
    client: &ureq::Agent,
    http: &str,
    token: &str,
    scratch: &Path,
) -> Result<()> {
    let started = Instant::now();
    loop {
        let agents = api_get(client, http, token, "/api/v1/agents")?;
        if let Some(oid) = agents["agents"][0]["oid"].as_i64() {
            let names = api_get(
                client,
                http,
                token,
                &format!("/api/v1/agents/{oid}/metrics"),
            )?;
            let has_db = names["names"].as_array().is_some_and(|n| {
                n.iter()
                    .any(|n| n.as_str().is_some_and(|n| n.starts_with("db.")))
            });
            if has_db {
                return Ok(());
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!(
                "sightline-db sent no db.* metrics in 30 s; its log:\n{}",
                fs::read_to_string(scratch.join("agent.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A private MariaDB server: its own data folder, socket and port,
/// `root` with a password over the socket. Killed when dropped.
struct Server {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Server {
    fn start(dir: &Path) -> Result<Server> {
        fs::create_dir_all(dir)?;
        let root_user = rustix::process::getuid().is_root();
        let data = dir.join("data");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp)?;
        let mut install = Command::new("mariadb-install-db");
        install
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()));
        if root_user {
            install.arg("--user=root");
        }
        let out = install.output().context("running mariadb-install-db")?;
        if !out.status.success() {
            bail!(
                "mariadb-install-db failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = free_port()?;
        let mut server = Command::new("mariadbd");
        server
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", dir.join("err.log").display()))
            .args([
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                "--plugin-load-add=metadata_lock_info",
                // Per-account CPU time, for the server's side of the cost.
                "--userstat=1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if root_user {
            server.arg("--user=root");
        }
        let child = server.spawn().context("starting mariadbd")?;
        let mut server = Server {
            child,
            dir: dir.to_path_buf(),
            port,
        };
        server.write_client_conf(None)?;
        let started = Instant::now();
        while server.sql("SELECT 1").is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!("mariadbd exited ({status}): {}", server.error_log());
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("mariadbd not ready in 30 s: {}", server.error_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server.sql(&format!(
            "ALTER USER 'root'@'localhost' IDENTIFIED BY '{ROOT_PASSWORD}'"
        ))?;
        server.write_client_conf(Some(ROOT_PASSWORD))?;
        Ok(server)
    }

    fn client_conf(&self) -> PathBuf {
        self.dir.join("root.cnf")
    }

    fn write_client_conf(&self, password: Option<&str>) -> Result<()> {
        let mut text = format!(
            "[client]\nuser=root\nsocket={}\n",
            self.dir.join("sock").display()
        );
        if let Some(p) = password {
            text.push_str(&format!("password={p}\n"));
        }
        fs::write(self.client_conf(), text)?;
        Ok(())
    }

    fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("err.log")).unwrap_or_default()
    }

    /// Runs `sql` as root; its output, tab-separated, no header.
    fn sql(&self, sql: &str) -> Result<String> {
        let out = Command::new("mariadb")
            .arg(format!("--defaults-file={}", self.client_conf().display()))
            .args([
                "--batch",
                "--skip-column-names",
                "--connect-timeout=5",
                "-e",
            ])
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .context("running the mariadb client")?;
        if !out.status.success() {
            bail!("{}: {}", sql, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// CPU seconds the server spent on each account's statements
    /// (`information_schema.USER_STATISTICS`, `--userstat`).
    fn cpu_by_user(&self) -> Result<BTreeMap<String, f64>> {
        let out = self.sql("SELECT USER, CPU_TIME FROM information_schema.USER_STATISTICS")?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (user, cpu) = l.split_once('\t')?;
                Some((user.to_string(), cpu.parse().ok()?))
            })
            .collect())
    }

    /// The server's `Questions`: statements clients have sent.
    fn questions(&self) -> Result<i64> {
        let out = self.sql("SHOW GLOBAL STATUS LIKE 'Questions'")?;
        out.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no Questions in {out:?}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The light steady workload: client processes fed statements by threads.
struct Workload {
    clients: Vec<Child>,
    threads: Vec<JoinHandle<()>>,
    paused: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
}

impl Workload {
    fn start(server: &Server) -> Result<Workload> {
        let paused = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        let mut threads = Vec::new();
        let spawn_client = || -> Result<(Child, ChildStdin)> {
            let mut child = Command::new("mariadb")
                .arg(format!(
                    "--defaults-file={}",
                    server.client_conf().display()
                ))
                .args(["--batch", "--force", "bench"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting a workload client")?;
            let stdin = child.stdin.take().context("client stdin")?;
            Ok((child, stdin))
        };
        for session in 0..BUSY_SESSIONS {
            let (child, mut stdin) = spawn_client()?;
            clients.push(child);
            let (paused, stopped) = (Arc::clone(&paused), Arc::clone(&stopped));
            threads.push(std::thread::spawn(move || {
                let mut n: u32 = session;
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    if paused.load(Ordering::Relaxed) {
                        continue;
                    }
                    // Rows 1..=1000, apart per session; the idle sessions
                    // hold rows above 1000.
                    n = n.wrapping_add(BUSY_SESSIONS);
                    let id = n % 1000 + 1;
                    let batch = format!(
                        "SELECT c FROM t WHERE id = {id};\n\
                         UPDATE t SET v = v + 1 WHERE id = {id};\n\
                         BEGIN; UPDATE t SET v = v - 1 WHERE id = {id}; COMMIT;\n"
                    );
                    if stdin.write_all(batch.as_bytes()).is_err() {
                        return;
                    }
                }
            }));
        }
        for session in 0..IDLE_SESSIONS {
            let (child, mut stdin) = spawn_client()?;
            clients.push(child);
            stdin.write_all(
                format!(
                    "BEGIN;\nSELECT v FROM t WHERE id = {} FOR UPDATE;\n",
                    1001 + session
                )
                .as_bytes(),
            )?;
            // Kept open (and the transaction with it) until the thread ends.
            let stopped = Arc::clone(&stopped);
            threads.push(std::thread::spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                drop(stdin);
            }));
        }
        Ok(Workload {
            clients,
            threads,
            paused,
            stopped,
        })
    }

    fn pause(&self) {
        self.paused.store(true, Ordering::Relaxed);
    }

    fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        for child in &mut self.clients {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.clients.clear();
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}
