//! A private MariaDB server for tests: its own data folder, socket, port and
//! error log under a scratch folder, started as the current user (root too),
//! killed when its handle drops. Several run side by side. It never touches
//! a system MariaDB, its configuration files or its data.
//!
//! [`MariaDb::start`] runs `mariadb-install-db` then `mariadbd` with
//! `--no-defaults`, a 32 MiB buffer pool, the `metadata_lock_info` plugin
//! and `--skip-name-resolve`, and creates two accounts:
//! - `root`@`%` and `root`@`localhost` with [`ROOT_PASSWORD`] (all
//!   privileges), which [`MariaDb::sql`] and [`Session`] use through the
//!   socket;
//! - `sightline`@`%` with [`MONITOR_PASSWORD`] and `PROCESS, SELECT` on
//!   `*.*`: what the database agent needs, and all it gets ([`MariaDb::url`]).
//!
//! SQL goes through Debian's `mariadb` command-line client (no driver in
//! this crate): [`MariaDb::sql`] runs one batch and returns its rows;
//! a [`Session`] is one long-lived client connection whose statements may
//! block (lock chains), read back in order with a time limit.
//!
//! Start time on the development machine: 0.6 s alone (install 0.45 s, the
//! server ready 0.15 s later), up to 2 s with other tests running; restart
//! about 0.3 s. Every wait has a limit
//! (server ready 30 s, one client call 60 s) and a failure panics with the
//! server's error log.

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Scratch, wait_exit};

/// The password of `root` (socket and TCP).
pub const ROOT_PASSWORD: &str = "sightline-root-pw";
/// The monitoring account the agent uses: `PROCESS, SELECT` on `*.*`.
pub const MONITOR_USER: &str = "sightline";
/// Its password.
pub const MONITOR_PASSWORD: &str = "sightline-monitor-pw";

/// How long the server may take to accept connections.
const READY_LIMIT: Duration = Duration::from_secs(30);
/// How long one `mariadb` client call may take.
const CLIENT_LIMIT: Duration = Duration::from_secs(60);

/// A running private MariaDB server.
#[derive(Debug)]
pub struct MariaDb {
    scratch: Scratch,
    child: Option<Child>,
    port: u16,
    extra: Vec<String>,
}

impl MariaDb {
    /// A fresh server, ready, with the accounts above.
    pub fn start() -> MariaDb {
        MariaDb::start_with(&[])
    }

    /// A fresh server with extra `mariadbd` options (`--max-connections=20`
    /// ...), kept across [`MariaDb::restart`].
    pub fn start_with(extra: &[&str]) -> MariaDb {
        let scratch = Scratch::new("mariadb");
        let data = scratch.join("data");
        let tmp = scratch.join("tmp");
        std::fs::create_dir_all(&tmp).expect("creates the server's tmp folder");
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg(format!("--datadir={}", data.display()))
            // Its own temporary folder: several mariadb-install-db run side
            // by side collide in /tmp (two in three failed without this).
            .arg(format!("--tmpdir={}", tmp.display()));
        if is_root() {
            install.arg("--user=root");
        }
        let out = install
            .output()
            .expect("runs mariadb-install-db (Debian's mariadb-server)");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut db = MariaDb {
            scratch,
            child: None,
            port: 0,
            extra: extra.iter().map(|s| (*s).to_string()).collect(),
        };
        // A port another process takes between our probe and the server's
        // bind makes the start fail: try another.
        for attempt in 0..5 {
            db.port = crate::free_addrs().0.port();
            if db.launch(false) {
                break;
            }
            assert!(attempt < 4, "mariadbd never got a port: {}", db.error_log());
        }
        db.sql(&format!(
            "ALTER USER 'root'@'localhost' IDENTIFIED BY '{ROOT_PASSWORD}';
             CREATE USER 'root'@'%' IDENTIFIED BY '{ROOT_PASSWORD}';
             GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;
             CREATE USER '{MONITOR_USER}'@'%' IDENTIFIED BY '{MONITOR_PASSWORD}';
             GRANT PROCESS, SELECT ON *.* TO '{MONITOR_USER}'@'%';"
        ));
        db.write_client_conf(Some(ROOT_PASSWORD));
        db
    }

    /// The scratch folder (data/, sock, err.log, root.cnf).
    pub fn dir(&self) -> &Path {
        self.scratch.path()
    }

    /// The Unix socket.
    pub fn socket_path(&self) -> PathBuf {
        self.scratch.join("sock")
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's pid; panics when it is stopped.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// `mysql://sightline@127.0.0.1:<port>/` for the agent's `db.url`; the
    /// password is [`MONITOR_PASSWORD`] (`db.password`).
    pub fn url(&self) -> String {
        format!("mysql://{MONITOR_USER}@127.0.0.1:{}/", self.port)
    }

    /// `mysql://root:<password>@127.0.0.1:<port>/`.
    pub fn root_url(&self) -> String {
        format!("mysql://root:{ROOT_PASSWORD}@127.0.0.1:{}/", self.port)
    }

    /// A `[client]` option file for root over the socket:
    /// `mariadb --defaults-file=<this>` (sysbench and other tools take the
    /// socket and password as flags instead).
    pub fn client_conf(&self) -> PathBuf {
        self.scratch.join("root.cnf")
    }

    /// The server's error log so far.
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.scratch.join("err.log")).unwrap_or_default()
    }

    /// Creates `shop.orders`, three rows `(id, v)` of InnoDB: the table the
    /// lock tests queue sessions on.
    pub fn create_shop(&self) {
        self.sql(
            "CREATE DATABASE shop;
             CREATE TABLE shop.orders (id INT PRIMARY KEY, v INT) ENGINE=InnoDB;
             INSERT INTO shop.orders VALUES (1, 0), (2, 0), (3, 0);",
        );
    }

    /// Runs `sql` (one or more statements) as root; panics on an error.
    /// Returns the rows, tab-separated columns, no header.
    pub fn sql(&self, sql: &str) -> Vec<Vec<String>> {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("SQL failed: {e}\nstatement: {sql}"))
    }

    /// Runs `sql` as root: the rows, or the client's error text.
    pub fn try_sql(&self, sql: &str) -> Result<Vec<Vec<String>>, String> {
        let out = run_limited(
            Command::new("mariadb")
                .arg(format!("--defaults-file={}", self.client_conf().display()))
                .args([
                    "--batch",
                    "--skip-column-names",
                    "--connect-timeout=10",
                    "-e",
                ])
                .arg(sql),
            CLIENT_LIMIT,
        )?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect())
    }

    /// The single value `sql` returns.
    pub fn value(&self, sql: &str) -> String {
        let rows = self.sql(sql);
        rows.first()
            .and_then(|r| r.first())
            .cloned()
            .unwrap_or_else(|| panic!("no value from {sql}"))
    }

    /// One `SHOW GLOBAL STATUS` variable as a number (`Questions`...).
    pub fn global_status(&self, name: &str) -> u64 {
        let rows = self.sql(&format!("SHOW GLOBAL STATUS LIKE '{name}'"));
        rows.first()
            .and_then(|r| r.get(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric status {name}: {rows:?}"))
    }

    /// SIGTERM (a clean shutdown), waiting for the exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), rustix::process::Signal::CONT);
        crate::terminate(&child);
        if wait_exit(&mut child, Duration::from_secs(30)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL: a crash; [`MariaDb::restart`] recovers the same data.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops (if running) and starts again on the same data, port and socket.
    /// Counters such as `Questions` start from zero again.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.launch(true),
            "mariadbd did not restart on port {}: {}",
            self.port,
            self.error_log()
        );
    }

    /// SIGSTOP: the server hangs, connections stay open. Returns once
    /// every thread of the server is stopped: the signal is delivered
    /// asynchronously, and a thread still running could answer one more
    /// query.
    pub fn sigstop(&self) {
        let pid = self.pid();
        signal(pid, rustix::process::Signal::STOP);
        let tasks = PathBuf::from(format!("/proc/{pid}/task"));
        let stopped = |stat: &str| {
            // The state follows the ")" that ends the command name.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .is_some_and(|state| state == 'T' || state == 't')
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let all_stopped = std::fs::read_dir(&tasks)
                .map(|entries| {
                    entries.flatten().all(|task| {
                        std::fs::read_to_string(task.path().join("stat"))
                            .map(|stat| stopped(&stat))
                            .unwrap_or(true)
                    })
                })
                .unwrap_or(false);
            if all_stopped {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "mariadbd {pid} not stopped 5 s after SIGSTOP"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGCONT: it resumes.
    pub fn sigcont(&self) {
        signal(self.pid(), rustix::process::Signal::CONT);
    }

    /// Starts `mariadbd` and waits until it accepts connections; false
    /// when it exits because the port is taken.
    fn launch(&mut self, with_password: bool) -> bool {
        let dir = self.scratch.path();
        let log = dir.join("err.log");
        let mut cmd = Command::new("mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("data").display()))
            .arg(format!("--tmpdir={}", dir.join("tmp").display()))
            .arg(format!("--socket={}", self.socket_path().display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--pid-file={}", dir.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg("--skip-name-resolve")
            .arg("--innodb-buffer-pool-size=32M")
            .arg("--innodb-log-file-size=16M")
            .arg("--plugin-load-add=metadata_lock_info")
            .arg("--innodb-lock-wait-timeout=120")
            .arg("--max-connections=200")
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if is_root() {
            cmd.arg("--user=root");
        }
        self.write_client_conf(with_password.then_some(ROOT_PASSWORD));
        let log_before = self.error_log().len();
        let mut child = cmd.spawn().expect("starts mariadbd");
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log_now = self.error_log();
                let new = log_now.get(log_before..).unwrap_or_default();
                if new.contains("Address already in use")
                    || new.contains("Can't start server: Bind")
                {
                    return false;
                }
                panic!("mariadbd exited ({status}) while starting: {new}");
            }
            if self.socket_path().exists() && self.ping() {
                self.child = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "mariadbd not ready after {READY_LIMIT:?}: {}",
                    self.error_log()
                );
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    fn ping(&self) -> bool {
        run_limited(
            Command::new("mariadb")
                .arg(format!("--defaults-file={}", self.client_conf().display()))
                .args(["--connect-timeout=2", "-e", "SELECT 1"]),
            Duration::from_secs(10),
        )
        .is_ok_and(|o| o.status.success())
    }

    fn write_client_conf(&self, password: Option<&str>) {
        let mut text = format!(
            "[client]\nuser=root\nsocket={}\n",
            self.socket_path().display()
        );
        if let Some(p) = password {
            text.push_str(&format!("password={p}\n"));
        }
        fs::write(self.client_conf(), text).expect("write root.cnf");
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One open client connection as root (or another account), kept for the
/// session's life: its statements run in order, and one that blocks on a
/// lock leaves the test free to open the next session. The connection is
/// Debian's `mariadb` client on a pipe, with `--force` so an error (a lock
/// wait timeout, a deadlock) ends that statement, not the session.
///
/// [`Session::send`] queues a statement without waiting;
/// [`Session::wait`] takes the result of the oldest one not yet taken, or
/// `None` while it is still running; [`Session::exec`] is both.
#[derive(Debug)]
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Lines of the oldest pending statement read so far.
    partial: Vec<String>,
    /// Markers of the statements sent and not yet taken, oldest first.
    pending: VecDeque<u64>,
    next_marker: u64,
    id: u64,
}

/// A statement's output: its rows (tab-separated columns), or the client's
/// `ERROR nnnn (sqlstate) ...` line.
pub type Outcome = Result<Vec<Vec<String>>, String>;

impl Session {
    /// A root session over the socket.
    pub fn open(db: &MariaDb) -> Session {
        Session::spawn(
            db,
            &[format!("--defaults-file={}", db.client_conf().display())],
        )
    }

    /// A session as `user` with `password` over TCP (for connections the
    /// processlist shows with a host).
    pub fn open_as(db: &MariaDb, user: &str, password: &str) -> Session {
        Session::spawn(
            db,
            &[
                "--no-defaults".to_string(),
                "--protocol=tcp".to_string(),
                "--host=127.0.0.1".to_string(),
                format!("--port={}", db.port()),
                format!("--user={user}"),
                format!("--password={password}"),
            ],
        )
    }

    fn spawn(_db: &MariaDb, auth: &[String]) -> Session {
        // stderr into stdout, so an error line lands between the markers of
        // the statement that caused it.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec \"$0\" \"$@\" 2>&1")
            .arg("mariadb")
            .args(auth)
            .args([
                "--batch",
                "--skip-column-names",
                "--unbuffered",
                "--force",
                "--connect-timeout=10",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts the mariadb client");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("client stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut session = Session {
            child,
            stdin,
            lines,
            partial: Vec::new(),
            pending: VecDeque::new(),
            next_marker: 0,
            id: 0,
        };
        let id = session.exec("SELECT CONNECTION_ID()");
        session.id = id
            .first()
            .and_then(|r| r.first())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no connection id: {id:?}"));
        session
    }

    /// The server's id of this connection (`CONNECTION_ID()`, the
    /// processlist's `ID`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues `sql` (one or more statements) and returns at once.
    pub fn send(&mut self, sql: &str) {
        let marker = self.next_marker;
        self.next_marker += 1;
        let sql = sql.trim().trim_end_matches(';');
        let text = format!("{sql};\nSELECT 'sightline-session-done-{marker}';\n");
        let stdin = self.stdin.as_mut().expect("session open");
        stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.flush())
            .expect("write to the mariadb client");
        self.pending.push_back(marker);
    }

    /// The outcome of the oldest statement not yet taken, waiting at most
    /// `limit`; `None` when it is still running (it stays pending).
    /// Panics when nothing is pending or the client died.
    pub fn wait(&mut self, limit: Duration) -> Option<Outcome> {
        let marker = *self.pending.front().expect("a statement was sent");
        let done = format!("sightline-session-done-{marker}");
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == done => {
                    self.pending.pop_front();
                    let lines = std::mem::take(&mut self.partial);
                    if let Some(error) = lines.iter().find(|l| l.starts_with("ERROR ")) {
                        return Some(Err(error.clone()));
                    }
                    return Some(Ok(lines
                        .iter()
                        .map(|l| l.split('\t').map(str::to_string).collect())
                        .collect()));
                }
                Ok(line) => self.partial.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the mariadb client exited: {}", self.partial.join("\n"))
                }
            }
        }
    }

    /// Runs `sql` and returns its rows; panics on an error or after 60 s.
    pub fn exec(&mut self, sql: &str) -> Vec<Vec<String>> {
        self.send(sql);
        match self.wait(CLIENT_LIMIT) {
            Some(Ok(rows)) => rows,
            Some(Err(e)) => panic!("session {}: {e}\nstatement: {sql}", self.id),
            None => panic!(
                "session {}: still running after {CLIENT_LIMIT:?}: {sql}",
                self.id
            ),
        }
    }

    /// Statements sent whose outcome has not been taken.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Closes the connection (the server rolls back an open transaction).
    pub fn close(mut self) {
        self.stdin.take();
        if wait_exit(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    rustix::process::getuid().is_root()
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Runs `cmd` to completion with its output captured, killing it after
/// `limit`.
fn run_limited(cmd: &mut Command, limit: Duration) -> Result<std::process::Output, String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => {
            signal(pid, rustix::process::Signal::KILL);
            Err(format!("{cmd:?} took longer than {limit:?}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_restarts_on_the_same_data() {
        let started = Instant::now();
        let mut db = MariaDb::start();
        let start_time = started.elapsed();
        assert!(db.value("SELECT VERSION()").contains("MariaDB"));
        db.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY); INSERT INTO app.t VALUES (1), (2)");
        let pid = db.pid();
        let started = Instant::now();
        db.restart();
        let restart_time = started.elapsed();
        assert_ne!(db.pid(), pid, "a new server process");
        assert_eq!(db.value("SELECT COUNT(*) FROM app.t"), "2");
        // The monitoring account reaches the server over TCP with exactly
        // the privileges it was given.
        let mut monitor = Session::open_as(&db, MONITOR_USER, MONITOR_PASSWORD);
        let grants = monitor.exec("SHOW GRANTS");
        assert!(
            grants[0][0].starts_with("GRANT SELECT, PROCESS ON *.* TO `sightline`@`%`"),
            "{grants:?}"
        );
        assert!(
            db.value("SELECT COUNT(*) FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'METADATA_LOCK_INFO' AND PLUGIN_STATUS = 'ACTIVE'")
                == "1"
        );
        eprintln!("start {start_time:?}, restart {restart_time:?}");
    }

    #[test]
    fn a_session_blocks_on_a_row_lock_and_resumes_when_it_is_released() {
        let db = MariaDb::start();
        db.sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB; INSERT INTO app.t VALUES (1, 0)");
        let mut holder = Session::open(&db);
        let mut waiter = Session::open(&db);
        assert_ne!(holder.id(), waiter.id());
        holder.exec("BEGIN; UPDATE app.t SET v = 1 WHERE id = 1");
        waiter.send("UPDATE app.t SET v = 2 WHERE id = 1");
        assert!(
            waiter.wait(Duration::from_millis(500)).is_none(),
            "the waiter is blocked"
        );
        let waiting = db.value(&format!(
            "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = {} AND trx_state = 'LOCK WAIT'",
            waiter.id()
        ));
        assert_eq!(waiting, "1");
        holder.exec("COMMIT");
        let outcome = waiter.wait(Duration::from_secs(10)).expect("unblocked");
        assert_eq!(outcome, Ok(vec![]));
        assert_eq!(db.value("SELECT v FROM app.t WHERE id = 1"), "2");
        // An error ends the statement, not the session.
        waiter.send("SELECT * FROM app.missing");
        let outcome = waiter.wait(Duration::from_secs(10)).expect("answered");
        assert!(outcome.is_err_and(|e| e.contains("1146")));
        assert_eq!(waiter.exec("SELECT 7"), vec![vec!["7".to_string()]]);
        // A stopped server answers nothing until it is continued.
        db.sigstop();
        waiter.send("SELECT 8");
        assert!(waiter.wait(Duration::from_millis(500)).is_none(), "hung");
        db.sigcont();
        let outcome = waiter.wait(Duration::from_secs(10)).expect("answered");
        assert_eq!(outcome, Ok(vec![vec!["8".to_string()]]));
    }
}
