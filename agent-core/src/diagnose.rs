//! `<agent> test`: finds out why an agent does not show up, one line per
//! check, in the order a connection is made: config, license, DNS, TCP, TLS,
//! `Hello`, clock. Each line says OK, WARN, FAIL or SKIP, and a failure comes
//! with a hint. Later checks still run where they can tell something (a bad
//! license does not stop the DNS and TCP checks).
//!
//! When the gRPC steps fail, `test` asks the port a plain HTTP/1.1 question
//! (bounded by `server.timeout`) to tell "this is the collector's API port"
//! from "this is not a collector at all", and names the key to fix.
//!
//! Invariants: the license is only ever shown masked, and every line goes
//! through [`redact`] (a key pasted into `server.host` is echoed masked);
//! `Hello` is sent as a probe, so running `test` registers nothing in the
//! collector; every wait is bounded by `server.timeout`.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::{Config, ConfigError, Env, FileSource, FlagValue, KeySpec};
use crate::identity;
use crate::license::{License, redact};
use crate::settings::{CommonSettings, ServerSettings};
use crate::transport::{self, AgentIdentity, TransportError};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Passed.
    Ok,
    /// Passed, with something to look at.
    Warn,
    /// Failed.
    Fail,
    /// Not run: an earlier check it depends on failed, or it does not apply.
    Skip,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Outcome::Ok => "OK",
            Outcome::Warn => "WARN",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// `config`, `license`, `dns`, `tcp`, `tls`, `hello`, `clock`.
    pub name: &'static str,
    /// How it went.
    pub outcome: Outcome,
    /// What was found.
    pub detail: String,
    /// What to do about a failure.
    pub hint: Option<String>,
}

/// Every check, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    // Details echo the config and the collector's answers: both go through
    // `redact`, so no check can print a secret whatever it quotes.
    fn push(&mut self, name: &'static str, outcome: Outcome, detail: impl Into<String>) {
        self.checks.push(Check {
            name,
            outcome,
            detail: redact(&detail.into()),
            hint: None,
        });
    }

    fn fail(&mut self, name: &'static str, detail: impl Into<String>, hint: impl Into<String>) {
        self.checks.push(Check {
            name,
            outcome: Outcome::Fail,
            detail: redact(&detail.into()),
            hint: Some(redact(&hint.into())),
        });
    }

    /// Whether every check passed (warnings pass).
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.outcome != Outcome::Fail)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            writeln!(f, "{:<5} {:<8} {}", check.outcome, check.name, check.detail)?;
            if let Some(hint) = &check.hint {
                writeln!(f, "{:<14} hint: {hint}", "")?;
            }
        }
        Ok(())
    }
}

/// Clock skew beyond this is a warning.
const SKEW_WARN: Duration = Duration::from_secs(5);
/// Clock skew beyond this is a failure: data would land at the wrong time.
const SKEW_FAIL: Duration = Duration::from_secs(60);

/// What `test` needs to know about the product.
#[derive(Debug, Clone, Copy)]
pub struct Product {
    /// `infra`.
    pub name: &'static str,
    /// `sightline-infra`.
    pub binary: &'static str,
    /// Every key it reads.
    pub keys: &'static [KeySpec],
}

/// Runs every check.
pub async fn run(
    product: Product,
    file: &FileSource,
    env: &dyn Env,
    flags: &[FlagValue],
) -> Report {
    let mut report = Report::default();

    // 1. config
    let config = match Config::load(file, env, flags, product.keys) {
        Ok(c) => c,
        Err(e) => {
            let hint = match &e {
                ConfigError::Read { .. } => {
                    "check the path given with --conf, and that this user may read it"
                }
                _ => "fix the line named above, then run test again",
            };
            report.fail("config", e.to_string(), hint);
            return skip_rest(report, &["license", "dns", "tcp", "tls", "hello", "clock"]);
        }
    };
    let source = match config.path() {
        Some(p) => format!("{} keys from {}", config.len(), p.display()),
        None => format!(
            "{} keys from the environment and flags (no config file)",
            config.len()
        ),
    };
    let server = CommonSettings::server(&config);
    match (&server, config.warnings()) {
        (Err(e), _) => report.fail("config", e.to_string(), "fix the value named above"),
        (Ok(_), []) => report.push("config", Outcome::Ok, source),
        (Ok(_), warnings) => {
            let list: Vec<String> = warnings.iter().map(ToString::to_string).collect();
            report.push(
                "config",
                Outcome::Warn,
                format!("{source}; {}", list.join("; ")),
            );
        }
    }

    // 2. license
    let license = match CommonSettings::license(&config) {
        Ok(l) => {
            report.push("license", Outcome::Ok, format!("{l} is well-formed"));
            Some(l)
        }
        Err(e) => {
            report.fail(
                "license",
                e.to_string(),
                "copy the key again from the output of `sightline-collector project create`",
            );
            None
        }
    };

    let Ok(server) = server else {
        return skip_rest(report, &["dns", "tcp", "tls", "hello", "clock"]);
    };

    // 3. dns
    let addrs = match resolve(&server).await {
        Ok(addrs) => {
            let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            report.push(
                "dns",
                Outcome::Ok,
                format!("{} resolves to {}", server.host, list.join(", ")),
            );
            addrs
        }
        Err(reason) => {
            report.fail(
                "dns",
                format!("cannot resolve {}: {reason}", server.host),
                "check server.host, and that this machine's resolver knows the name",
            );
            return skip_rest(report, &["tcp", "tls", "hello", "clock"]);
        }
    };

    // 4. tcp
    let connected = match tcp_connect(&addrs, server.timeout).await {
        Ok((addr, took)) => {
            report.push(
                "tcp",
                Outcome::Ok,
                format!("connected to {addr} in {}", millis(took)),
            );
            addr
        }
        Err(reason) => {
            report.fail(
                "tcp",
                reason,
                format!(
                    "is the collector running there (`sightline-collector serve`)? is outbound TCP {} open in the firewalls between?",
                    server.port
                ),
            );
            return skip_rest(report, &["tls", "hello", "clock"]);
        }
    };
    // Asked only once a gRPC step has failed, and at most once.
    let http1 = || speaks_http1(connected, &server);

    // 5. tls (and the HTTP/2 connection either way)
    let client = transport::connect(&server).await;
    match (&server.tls, &client) {
        (None, _) => report.push("tls", Outcome::Skip, "server.tls is off"),
        (Some(_), Ok(_)) => report.push("tls", Outcome::Ok, "handshake done, certificate trusted"),
        (Some(_), Err(e)) => {
            if http1().await {
                let (detail, hint) = http1_failure(connected, &config);
                report.fail("tls", detail, hint);
            } else {
                report.fail(
                    "tls",
                    e.to_string(),
                    "check server.ca (the CA that signed the collector's certificate) and server.tls.name (the name in it); is the collector serving TLS?",
                );
            }
            return skip_rest(report, &["hello", "clock"]);
        }
    }

    // 6. hello
    let Some(license) = license else {
        return skip_rest_because(
            report,
            &["hello", "clock"],
            "the license is not well-formed",
        );
    };
    let mut client = match client {
        Ok(c) => c,
        Err(e) => {
            if http1().await {
                let (detail, hint) = http1_failure(connected, &config);
                report.fail("hello", detail, hint);
            } else {
                report.fail("hello", e.to_string(), "the port answers TCP but not gRPC: is it the collector's gRPC port (6600 by default)?");
            }
            return skip_rest(report, &["clock"]);
        }
    };
    let who = probe_identity(product, &config);
    let sent = SystemTime::now();
    let started = Instant::now();
    let reply = transport::hello(&mut client, &license, &who, server.timeout, true).await;
    let rtt = started.elapsed();
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            if !spoke_grpc(&e) && http1().await {
                let (detail, hint) = http1_failure(connected, &config);
                report.fail("hello", detail, hint);
            } else {
                report.fail(
                    "hello",
                    hello_failure(&e, &license),
                    hello_hint(&e, server.tls.is_some()),
                );
            }
            return skip_rest(report, &["clock"]);
        }
    };
    report.push(
        "hello",
        Outcome::Ok,
        format!("accepted by project \"{}\"", reply.project),
    );

    // 7. clock
    let local_mid =
        transport::wire::unix_ms(sent) + i64::try_from(rtt.as_millis() / 2).unwrap_or(0);
    let skew_ms = local_mid - reply.server_time_ms;
    let skew = Duration::from_millis(skew_ms.unsigned_abs());
    let detail = format!(
        "round trip {}, clock {} the collector's by {}",
        millis(rtt),
        if skew_ms >= 0 { "ahead of" } else { "behind" },
        millis(skew)
    );
    if skew > SKEW_FAIL {
        report.fail("clock", detail, "synchronise this machine's clock (chrony or systemd-timesyncd); data would be stored at the wrong time");
    } else if skew > SKEW_WARN {
        report.push("clock", Outcome::Warn, detail);
    } else {
        report.push("clock", Outcome::Ok, detail);
    }
    report
}

fn probe_identity(product: Product, config: &Config) -> AgentIdentity {
    AgentIdentity {
        product: product.name,
        oname: config.get("oname").unwrap_or_else(identity::hostname),
        hostname: identity::hostname(),
        os: identity::os(),
        version: env!("CARGO_PKG_VERSION"),
        boot_time_ms: identity::boot_time_ms(),
        created_time: config.get("createdtime").unwrap_or_default(),
        instance: String::new(),
        interval: Duration::ZERO,
        boot_id: identity::boot_id(),
    }
}

fn hello_failure(error: &TransportError, license: &License) -> String {
    match error {
        TransportError::Status(s) if s.code() == tonic::Code::Unauthenticated => {
            format!(
                "the collector does not know the license {license}: {}",
                s.message()
            )
        }
        other => other.to_string(),
    }
}

fn hello_hint(error: &TransportError, tls: bool) -> String {
    match error {
        TransportError::Status(s)
            if !tls && (s.message().contains("h2 protocol error") || s.message().contains("http2 error")) =>
        {
            "the port does not speak plain gRPC: if the collector serves TLS, set server.tls=true (and server.ca)".into()
        }
        TransportError::Status(s) if s.code() == tonic::Code::Unauthenticated => {
            "the key is well-formed but was not created by this collector: check server.host, or create a project there with `sightline-collector project create`".into()
        }
        TransportError::Status(s) if s.code() == tonic::Code::Unimplemented => {
            "the port speaks gRPC but is not a Sightline collector".into()
        }
        _ => "see the collector's log for the same moment".into(),
    }
}

/// Whether the failure came from a gRPC server that answered: a refusal
/// or an unknown method. Then the port speaks gRPC and needs no probe.
fn spoke_grpc(error: &TransportError) -> bool {
    matches!(
        error,
        TransportError::Status(s)
            if matches!(s.code(), tonic::Code::Unauthenticated | tonic::Code::Unimplemented | tonic::Code::PermissionDenied)
    )
}

/// The report line for a port that answers HTTP/1.1: what the port is, and
/// which key (and where it was set) to change.
fn http1_failure(addr: SocketAddr, config: &Config) -> (String, String) {
    let (key, origin) = CommonSettings::port_source(config);
    let which = if key == "server.port" {
        key.to_string()
    } else {
        format!("the port in {key}")
    };
    let detail = format!(
        "{addr} speaks HTTP/1.1, not the collector's gRPC (is {which} the collector's API port? agents use the --grpc port, 6600 by default)"
    );
    let hint = format!(
        "set {key} ({origin}) to the collector's gRPC port: grpc= in the line it prints when it starts (`listening grpc=... http=...`), its grpc.listen key or --grpc flag"
    );
    (detail, hint)
}

/// Whether `addr` answers a plain `GET / HTTP/1.1` with an HTTP/1.x status
/// line: the collector's JSON API (or any web server), not its gRPC port.
/// Bounded by `server.timeout`; any failure counts as no.
async fn speaks_http1(addr: SocketAddr, server: &ServerSettings) -> bool {
    const STATUS_PREFIX: &[u8] = b"HTTP/1.";
    let ask = async {
        let stream = TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.authority()
        );
        let mut unsent = request.as_bytes();
        while !unsent.is_empty() {
            stream.writable().await.ok()?;
            match stream.try_write(unsent) {
                Ok(n) => unsent = &unsent[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
        }
        let mut answer = [0u8; STATUS_PREFIX.len()];
        let mut got = 0;
        while got < answer.len() {
            stream.readable().await.ok()?;
            match stream.try_read(&mut answer[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
        }
        Some(answer[..got] == *STATUS_PREFIX)
    };
    matches!(timeout(server.timeout, ask).await, Ok(Some(true)))
}

fn skip_rest(report: Report, names: &[&'static str]) -> Report {
    skip_rest_because(report, names, "an earlier check failed")
}

fn skip_rest_because(mut report: Report, names: &[&'static str], why: &str) -> Report {
    for name in names {
        report.push(name, Outcome::Skip, why);
    }
    report
}

async fn resolve(server: &ServerSettings) -> Result<Vec<SocketAddr>, String> {
    match timeout(server.timeout, tokio::net::lookup_host(server.authority())).await {
        Err(_) => Err(format!("no answer within {}", millis(server.timeout))),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err("no addresses".into())
            } else {
                Ok(addrs)
            }
        }
    }
}

async fn tcp_connect(
    addrs: &[SocketAddr],
    limit: Duration,
) -> Result<(SocketAddr, Duration), String> {
    let mut failures = Vec::new();
    for &addr in addrs {
        let started = Instant::now();
        match timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Ok((addr, started.elapsed())),
            Ok(Err(e)) => failures.push(format!("connect {addr}: {e}")),
            Err(_) => failures.push(format!(
                "connect {addr}: no answer within {}",
                millis(limit)
            )),
        }
    }
    Err(failures.join("; "))
}

fn millis(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_are_aligned_with_hints_under_failures() {
        let mut report = Report::default();
        report.push(
            "config",
            Outcome::Ok,
            "3 keys from /etc/sightline/infra.conf",
        );
        report.fail(
            "tcp",
            "connect 127.0.0.1:6600: Connection refused",
            "is the collector running?",
        );
        report.push("tls", Outcome::Skip, "an earlier check failed");
        insta::assert_snapshot!(report.to_string(), @r"
        OK    config   3 keys from /etc/sightline/infra.conf
        FAIL  tcp      connect 127.0.0.1:6600: Connection refused
                       hint: is the collector running?
        SKIP  tls      an earlier check failed
        ");
        assert!(!report.passed());
    }

    /// A port that answers every connection with `reply` after reading the
    /// request (or closes at once when `reply` is `None`). Serves for ten
    /// seconds at most.
    fn fake_port(reply: Option<&'static [u8]>) -> SocketAddr {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let Some(reply) = reply else {
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request);
                let _ = stream.write_all(reply);
            }
        });
        addr
    }

    /// A web server that does not speak HTTP/2.
    fn http1_port() -> SocketAddr {
        fake_port(Some(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        ))
    }

    async fn report_for(conf_text: &str, name: &str) -> String {
        let dir = std::env::temp_dir().join(format!("sl-diagnose-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(name);
        std::fs::write(&path, conf_text).expect("write");
        let product = Product {
            name: "infra",
            binary: "sightline-infra",
            keys: crate::settings::COMMON_KEYS,
        };
        let report = run(
            product,
            &FileSource::Explicit(path.clone()),
            &crate::config::MapEnv::default(),
            &[],
        )
        .await;
        assert!(!report.passed());
        report
            .to_string()
            .replace(&path.display().to_string(), "<conf>")
    }

    /// Hides what changes from run to run: the port, the key's last four
    /// characters, the connect time.
    fn steady(report: &str, addr: SocketAddr, license: &License) -> String {
        let masked = license.masked();
        report
            .replace(&addr.port().to_string(), "<port>")
            .replace(&masked[masked.len() - 4..], "LAST")
            .lines()
            .map(|line| match line.find(" in ") {
                Some(at) if line.contains(" tcp ") => format!("{} in <time>", &line[..at]),
                _ => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn an_http1_port_is_named_with_the_key_to_fix() {
        let addr = http1_port();
        let license = License::generate().expect("randomness");
        let key = license.expose();

        let text = report_for(
            &format!("license={key}\nserver.host={addr}\nserver.timeout=2s\n"),
            "http1-host.conf",
        )
        .await;
        insta::assert_snapshot!(steady(&text, addr, &license), @r"
        OK    config   3 keys from <conf>
        OK    license  sl1-…LAST is well-formed
        OK    dns      127.0.0.1 resolves to 127.0.0.1
        OK    tcp      connected to 127.0.0.1:<port> in <time>
        SKIP  tls      server.tls is off
        FAIL  hello    127.0.0.1:<port> speaks HTTP/1.1, not the collector's gRPC (is the port in server.host the collector's API port? agents use the --grpc port, 6600 by default)
                       hint: set server.host (<conf>:2) to the collector's gRPC port: grpc= in the line it prints when it starts (`listening grpc=... http=...`), its grpc.listen key or --grpc flag
        SKIP  clock    an earlier check failed
        ");

        let text = report_for(
            &format!(
                "license={key}\nserver.host={}\nserver.port={}\nserver.timeout=2s\n",
                addr.ip(),
                addr.port()
            ),
            "http1-port.conf",
        )
        .await;
        let hello = steady(&text, addr, &license)
            .lines()
            .skip_while(|l| !l.contains(" hello "))
            .take(2)
            .collect::<Vec<_>>()
            .join("\n");
        insta::assert_snapshot!(hello, @r"
        FAIL  hello    127.0.0.1:<port> speaks HTTP/1.1, not the collector's gRPC (is server.port the collector's API port? agents use the --grpc port, 6600 by default)
                       hint: set server.port (<conf>:3) to the collector's gRPC port: grpc= in the line it prints when it starts (`listening grpc=... http=...`), its grpc.listen key or --grpc flag
        ");
    }

    #[tokio::test]
    async fn a_key_pasted_as_the_host_is_not_echoed() {
        let license = License::generate().expect("randomness");
        let key = license.expose();
        let text = report_for(
            &format!("license={key}\nserver.host={key}\nserver.timeout=1s\n"),
            "key-as-host.conf",
        )
        .await;
        assert!(
            text.contains("FAIL  dns      cannot resolve sl1-…"),
            "{text}"
        );
        assert!(
            !text.contains(&key[4..12]) && !text.contains(&key[20..28]),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_port_that_closes_without_a_word_is_not_called_http() {
        // Accepts and closes at once: neither gRPC nor HTTP/1.1.
        let addr = fake_port(None);
        let config = Config::from_text(
            std::path::Path::new("probe.conf"),
            &format!("server.port={}\nserver.timeout=2s\n", addr.port()),
            crate::settings::COMMON_KEYS,
        )
        .expect("valid");
        let server = CommonSettings::server(&config).expect("valid");
        assert!(!speaks_http1(addr, &server).await);
        assert!(speaks_http1(http1_port(), &server).await);
    }
}
