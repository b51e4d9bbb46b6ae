//! One check of one target, timed phase by phase as blackbox_exporter
//! times them: DNS, TCP connect, TLS handshake, first byte, transfer.
//!
//! reqwest cannot say when its connect ended and its handshake began, so
//! the check drives the steps itself: `lookup_host`, `TcpStream::connect`,
//! tokio-rustls, then hyper's client connection (`http1`/`http2` chosen by
//! ALPN) over that stream. Phase boundaries are consecutive instants, so
//! the phases add up to the total exactly.
//!
//! Invariants: the whole check, redirects included, ends by the target's
//! `.timeout`, and a timeout names the phase it hit; a connection outlives
//! its check only in the target's own [`ReuseSlot`] (`.reuse`), and only
//! for the target's origin; the body kept for conditions is bounded
//! ([`BODY_KEPT`]); nothing here logs a secret.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until};

use crate::settings::Target;
use crate::state::Outcome;
use crate::tls::{CertInfo, RecordingVerifier, client_config};

/// Most of a body kept for `.expect.body` and `.expect.json`.
pub const BODY_KEPT: usize = 1 << 20;

/// Why a check failed, as the wire classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The name did not resolve.
    Dns,
    /// Nothing listens.
    ConnectionRefused,
    /// Connecting failed otherwise.
    Connect,
    /// The check's time ran out in this phase.
    Timeout(Phase),
    /// Handshake or verification failed.
    Tls,
    /// Status not accepted.
    Status,
    /// Body regex.
    Body,
    /// JSON condition.
    Json,
    /// Passed, slower than `.expect.max_time`.
    TooSlow,
    /// Redirect limit or loop.
    TooManyRedirects,
    /// The connection broke mid-response, or it was not HTTP.
    Protocol,
}

impl Failure {
    /// Short name for the `test` table.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Dns => "dns",
            Failure::ConnectionRefused => "connection refused",
            Failure::Connect => "connect",
            Failure::Timeout(Phase::Dns) => "timeout (dns)",
            Failure::Timeout(Phase::Connect) => "timeout (connect)",
            Failure::Timeout(Phase::Tls) => "timeout (tls)",
            Failure::Timeout(Phase::FirstByte) => "timeout (first byte)",
            Failure::Timeout(Phase::Transfer) => "timeout (transfer)",
            Failure::Tls => "tls",
            Failure::Status => "status",
            Failure::Body => "body",
            Failure::Json => "json",
            Failure::TooSlow => "too slow",
            Failure::TooManyRedirects => "redirects",
            Failure::Protocol => "protocol",
        }
    }
}

/// A phase of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Name resolution.
    Dns,
    /// TCP connect (and a proxy's CONNECT).
    Connect,
    /// TLS handshake.
    Tls,
    /// Request written to first byte of the response.
    FirstByte,
    /// First byte to last byte.
    Transfer,
}

/// Time spent per phase, summed over every request of a check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// DNS.
    pub dns: Duration,
    /// TCP connect.
    pub connect: Duration,
    /// TLS handshake.
    pub tls: Duration,
    /// To the first byte.
    pub first_byte: Duration,
    /// The body.
    pub transfer: Duration,
}

impl Phases {
    fn add(&mut self, phase: Phase, d: Duration) {
        match phase {
            Phase::Dns => self.dns += d,
            Phase::Connect => self.connect += d,
            Phase::Tls => self.tls += d,
            Phase::FirstByte => self.first_byte += d,
            Phase::Transfer => self.transfer += d,
        }
    }

    /// Their sum.
    pub fn sum(&self) -> Duration {
        self.dns + self.connect + self.tls + self.first_byte + self.transfer
    }
}

/// The result of one check.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// The target's name.
    pub target: String,
    /// When it started.
    pub time: SystemTime,
    /// `None` when every condition held.
    pub failure: Option<Failure>,
    /// The failure in words.
    pub detail: String,
    /// Per phase.
    pub phases: Phases,
    /// Start to end.
    pub total: Duration,
    /// The last response's status, 0 when none.
    pub status: u16,
    /// `HTTP/1.1`, `HTTP/2`.
    pub http_version: &'static str,
    /// Body bytes of the last response.
    pub body_bytes: u64,
    /// Redirects followed.
    pub redirects: u32,
    /// Where they led (empty without redirects).
    pub final_url: String,
    /// The address connected to last.
    pub remote_ip: String,
    /// The certificate of the last https request.
    pub certificate: Option<CertInfo>,
}

impl CheckResult {
    /// What it means for the target's state.
    pub fn outcome(&self) -> Outcome {
        match self.failure {
            None => Outcome::Pass,
            Some(Failure::TooSlow) => Outcome::Slow,
            Some(_) => Outcome::Fail,
        }
    }
}

/// A request's failure, before the check's bookkeeping.
struct Stop(Failure, String);

/// The clock of one check: consecutive phase boundaries, and one timer
/// for the check's deadline that every phase waits on (rather than a
/// timer registered and removed per phase).
struct Clock {
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    mark: Instant,
    phases: Phases,
}

impl Clock {
    fn lap(&mut self, phase: Phase) {
        let now = Instant::now();
        self.phases.add(phase, now - self.mark);
        self.mark = now;
    }

    /// Runs `fut` as `phase`, bounded by the check's deadline.
    async fn run<T, E: std::fmt::Display>(
        &mut self,
        phase: Phase,
        fut: impl Future<Output = Result<T, E>>,
        on_error: impl FnOnce(&E) -> Failure,
    ) -> Result<T, Stop> {
        // The work first, as `timeout_at` polls it: a future ready at the
        // deadline still counts.
        let r = tokio::select! {
            biased;
            r = fut => Some(r),
            () = &mut self.deadline => None,
        };
        self.lap(phase);
        match r {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(Stop(on_error(&e), e.to_string())),
            None => Err(Stop(
                Failure::Timeout(phase),
                format!("no answer within the check's timeout, during {phase:?}"),
            )),
        }
    }
}

/// What one response gave.
struct Response {
    status: StatusCode,
    version: Version,
    location: Option<String>,
    body: Vec<u8>,
    body_bytes: u64,
    remote: SocketAddr,
}

/// Runs one check of `target` on fresh connections.
pub async fn check(target: &Target) -> CheckResult {
    check_reusing(target, None).await
}

/// Runs one check of `target`; with `reuse`, on the connection the last
/// check left there if it is still open (DNS, connect and TLS are then 0),
/// and leaves its own there.
pub async fn check_reusing(target: &Target, reuse: Option<&ReuseSlot>) -> CheckResult {
    let time = SystemTime::now();
    let start = Instant::now();
    let mut clock = Clock {
        deadline: Box::pin(sleep_until(start + target.timeout)),
        mark: start,
        phases: Phases::default(),
    };
    let mut result = CheckResult {
        target: target.name.clone(),
        time,
        failure: None,
        detail: String::new(),
        phases: Phases::default(),
        total: Duration::ZERO,
        status: 0,
        http_version: "",
        body_bytes: 0,
        redirects: 0,
        final_url: String::new(),
        remote_ip: String::new(),
        certificate: None,
    };
    let outcome = run_chain(target, reuse, &mut clock, &mut result).await;
    if let Err(Stop(failure, detail)) = outcome {
        result.failure = Some(failure);
        result.detail = detail;
    }
    result.phases = clock.phases;
    result.total = clock.mark - start;
    if result.failure.is_none()
        && let Some(max) = target.expect.max_time
        && result.total > max
    {
        result.failure = Some(Failure::TooSlow);
        result.detail = format!(
            "took {} ms, more than expect.max_time {} ms",
            result.total.as_millis(),
            max.as_millis()
        );
    }
    result
}

async fn run_chain(
    target: &Target,
    reuse: Option<&ReuseSlot>,
    clock: &mut Clock,
    result: &mut CheckResult,
) -> Result<(), Stop> {
    let mut url = target.url.clone();
    let mut method = target.method.clone();
    let mut body = target.body.clone();
    // The URLs visited, kept only once a redirect is followed (most
    // checks follow none).
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let same_origin =
            url.authority() == target.url.authority() && url.scheme() == target.url.scheme();
        let response = request(
            target,
            &url,
            &method,
            &body,
            same_origin,
            if result.redirects == 0 { reuse } else { None },
            clock,
            result,
        )
        .await?;
        result.status = response.status.as_u16();
        result.http_version = version_name(response.version);
        result.body_bytes = response.body_bytes;
        result.remote_ip = response.remote.ip().to_string();
        if target.follow_redirects
            && response.status.is_redirection()
            && let Some(location) = &response.location
        {
            let next = resolve(&url, location).ok_or_else(|| {
                Stop(
                    Failure::Protocol,
                    format!("redirect to a bad location '{location}'"),
                )
            })?;
            result.redirects += 1;
            result.final_url = next.to_string();
            if seen.is_empty() {
                seen.insert(target.url.to_string());
            }
            if !seen.insert(next.to_string()) {
                return Err(Stop(
                    Failure::TooManyRedirects,
                    format!("redirect loop: {next} was visited before"),
                ));
            }
            if result.redirects > target.max_redirects {
                return Err(Stop(
                    Failure::TooManyRedirects,
                    format!("more than {} redirects", target.max_redirects),
                ));
            }
            let code = response.status.as_u16();
            if code == 303 || (matches!(code, 301 | 302) && method == Method::POST) {
                method = if method == Method::HEAD {
                    Method::HEAD
                } else {
                    Method::GET
                };
                body = Bytes::new();
            }
            url = next;
            continue;
        }
        return conditions(target, &response);
    }
}

fn version_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

fn conditions(target: &Target, r: &Response) -> Result<(), Stop> {
    let code = r.status.as_u16();
    if !target.expect.status.accepts(code) {
        return Err(Stop(
            Failure::Status,
            format!("status {code}, expected {}", target.expect.status),
        ));
    }
    let text = String::from_utf8_lossy(&r.body);
    if let Some(re) = &target.expect.body
        && !re.is_match(&text)
    {
        return Err(Stop(Failure::Body, format!("body does not match /{re}/")));
    }
    if let Some(re) = &target.expect.body_not
        && re.is_match(&text)
    {
        return Err(Stop(Failure::Body, format!("body matches /{re}/")));
    }
    if let Some(json) = &target.expect.json {
        json.check(&r.body).map_err(|e| Stop(Failure::Json, e.0))?;
    }
    Ok(())
}

/// `location` against `base`: absolute, scheme-relative, or a path.
pub fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    let scheme = base.scheme_str()?;
    let authority = base.authority()?.as_str();
    let text = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        let dir = if dir.is_empty() { "/" } else { dir };
        format!("{scheme}://{authority}{dir}{location}")
    };
    let uri: Uri = text.parse().ok()?;
    uri.host()?;
    Some(uri)
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn connect_failure(e: &std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        Failure::ConnectionRefused
    } else {
        Failure::Connect
    }
}

/// A connection's request half, HTTP/1.1 or HTTP/2.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    fn is_h2(&self) -> bool {
        matches!(self, Sender::H2(_))
    }

    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }

    async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, hyper::Error> {
        match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await
            }
        }
    }
}

/// A connection kept for a target's next check (`.reuse`).
pub struct Kept {
    sender: Sender,
    _conn: AbortOnDrop,
    remote: SocketAddr,
    certificate: Option<CertInfo>,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept")
            .field("remote", &self.remote)
            .finish()
    }
}

/// Where a target keeps its connection between checks when `.reuse` is on.
pub type ReuseSlot = std::sync::Mutex<Option<Kept>>;

/// DNS, TCP connect (and CONNECT), TLS, and hyper's handshake.
async fn open(
    target: &Target,
    url: &Uri,
    clock: &mut Clock,
    result: &mut CheckResult,
) -> Result<(Sender, AbortOnDrop, SocketAddr), Stop> {
    let https = url.scheme_str() == Some("https");
    let host = bare_host(url);
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let (dial_host, dial_port) = match &target.proxy {
        Some(p) => (bare_host(p), p.port_u16().unwrap_or(80)),
        None => (host.clone(), port),
    };
    // DNS.
    let ip_version = target.ip_version;
    let addrs: Vec<SocketAddr> = clock
        .run(
            Phase::Dns,
            async {
                let found = tokio::net::lookup_host((dial_host.as_str(), dial_port)).await?;
                Ok::<_, std::io::Error>(
                    found
                        .filter(|a| match ip_version {
                            Some(4) => a.is_ipv4(),
                            Some(6) => a.is_ipv6(),
                            _ => true,
                        })
                        .collect(),
                )
            },
            |_| Failure::Dns,
        )
        .await?;
    if addrs.is_empty() {
        return Err(Stop(
            Failure::Dns,
            format!("{dial_host} has no IPv{} address", ip_version.unwrap_or(4)),
        ));
    }
    // TCP connect: each address in turn until one answers.
    let (mut tcp, remote) = clock
        .run(
            Phase::Connect,
            async {
                let mut last = std::io::Error::other("no address");
                for addr in &addrs {
                    match TcpStream::connect(addr).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            return Ok((s, *addr));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            },
            connect_failure,
        )
        .await?;
    if target.proxy.is_some() && https {
        clock
            .run(Phase::Connect, proxy_connect(&mut tcp, &host, port), |_| {
                Failure::Connect
            })
            .await?;
    }
    // TLS.
    let (io, h2): (Box<dyn Io>, bool) = if https {
        let verifier = Arc::new(
            RecordingVerifier::new(target.roots.clone(), target.tls_insecure)
                .map_err(|e| Stop(Failure::Tls, e))?,
        );
        let config = client_config(verifier.clone()).map_err(|e| Stop(Failure::Tls, e))?;
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| Stop(Failure::Tls, format!("bad server name '{host}': {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tls = clock
            .run(Phase::Tls, connector.connect(name, tcp), |_| Failure::Tls)
            .await;
        result.certificate = verifier.take().or(result.certificate.take());
        let tls = tls?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        (Box::new(tls), h2)
    } else {
        (Box::new(tcp), false)
    };
    // hyper's handshake writes nothing until the first request; its time
    // counts toward the first byte.
    let io = TokioIo::new(io);
    clock
        .run(
            Phase::FirstByte,
            async {
                if h2 {
                    let (send, conn) =
                        hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                    Ok((Sender::H2(send), AbortOnDrop(tokio::spawn(conn)), remote))
                } else {
                    let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
                    Ok((Sender::H1(send), AbortOnDrop(tokio::spawn(conn)), remote))
                }
            },
            |_: &hyper::Error| Failure::Protocol,
        )
        .await
}

fn bare_host(url: &Uri) -> String {
    url.host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

#[allow(clippy::too_many_arguments)]
async fn request(
    target: &Target,
    url: &Uri,
    method: &Method,
    body: &Bytes,
    same_origin: bool,
    reuse: Option<&ReuseSlot>,
    clock: &mut Clock,
    result: &mut CheckResult,
) -> Result<Response, Stop> {
    let https = url.scheme_str() == Some("https");
    let host = bare_host(url);
    // Only the target's own origin keeps a connection between checks.
    let reuse = reuse.filter(|_| same_origin);
    let mut kept = reuse
        .and_then(|slot| slot.lock().ok().and_then(|mut k| k.take()))
        .filter(|k| !k.sender.is_closed());
    loop {
        let reused = kept.is_some();
        let (mut sender, conn, remote) = match kept.take() {
            Some(k) => {
                result.certificate = k.certificate;
                (k.sender, k._conn, k.remote)
            }
            None => open(target, url, clock, result).await?,
        };
        let h2 = sender.is_h2();
        let via_proxy = target.proxy.is_some() && !https;
        let uri: Uri = if h2 || via_proxy {
            url.clone()
        } else {
            url.path_and_query()
                .map_or("/", |p| p.as_str())
                .parse()
                .unwrap_or_else(|_| Uri::from_static("/"))
        };
        let mut builder = Request::builder().method(method.clone()).uri(uri);
        if !h2 {
            let authority = url.authority().map_or(host.as_str(), |a| a.as_str());
            builder = builder.header(header::HOST, authority);
        }
        builder = builder.header(
            header::USER_AGENT,
            concat!("sightline-url/", env!("CARGO_PKG_VERSION")),
        );
        for (n, v) in &target.headers {
            builder = builder.header(n, v);
        }
        if let Some(auth) = &target.auth
            && same_origin
        {
            builder = builder.header(header::AUTHORIZATION, auth.header());
        }
        let req = builder
            .body(Full::new(body.clone()))
            .map_err(|e| Stop(Failure::Protocol, format!("cannot build the request: {e}")))?;
        let response = match clock
            .run(Phase::FirstByte, sender.send(req), |_| Failure::Protocol)
            .await
        {
            Ok(r) => r,
            // A kept connection the server closed meanwhile: once more on
            // a fresh one.
            Err(Stop(Failure::Protocol, _)) if reused => continue,
            Err(stop) => return Err(stop),
        };
        let status = response.status();
        let version = response.version();
        // Known from here even if the body then stalls.
        result.status = status.as_u16();
        result.http_version = version_name(version);
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut incoming = response.into_body();
        let (kept_body, total) = clock
            .run(
                Phase::Transfer,
                async {
                    let mut kept = Vec::new();
                    let mut total = 0u64;
                    while let Some(frame) = incoming.frame().await {
                        if let Ok(data) = frame?.into_data() {
                            total += data.len() as u64;
                            let room = BODY_KEPT.saturating_sub(kept.len());
                            kept.extend_from_slice(&data[..data.len().min(room)]);
                        }
                    }
                    Ok::<_, hyper::Error>((kept, total))
                },
                |_| Failure::Protocol,
            )
            .await?;
        if let Some(slot) = reuse
            && let Ok(mut k) = slot.lock()
        {
            *k = Some(Kept {
                sender,
                _conn: conn,
                remote,
                certificate: result.certificate.clone(),
            });
        }
        return Ok(Response {
            status,
            version,
            location,
            body: kept_body,
            body_bytes: total,
            remote,
        });
    }
}

/// Aborts the connection task when the check is done with it.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An HTTP CONNECT through a proxy, read by hand (the answer's head only).
async fn proxy_connect(tcp: &mut TcpStream, host: &str, port: u16) -> Result<(), std::io::Error> {
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    tcp.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(std::io::Error::other("proxy answer head too long"));
        }
        if tcp.read(&mut byte).await? == 0 {
            return Err(std::io::Error::other("proxy closed the connection"));
        }
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head);
    let code = line.split_whitespace().nth(1).unwrap_or("");
    if code != "200" {
        return Err(std::io::Error::other(format!(
            "proxy refused CONNECT: {}",
            line.lines().next().unwrap_or("")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_like_a_browser() {
        let base: Uri = "https://a.example:8443/x/y?q=1".parse().expect("uri");
        let r = |l: &str| resolve(&base, l).map(|u| u.to_string());
        assert_eq!(r("/z").as_deref(), Some("https://a.example:8443/z"));
        assert_eq!(r("z").as_deref(), Some("https://a.example:8443/x/z"));
        assert_eq!(r("//b.example/").as_deref(), Some("https://b.example/"));
        assert_eq!(
            r("http://c.example/p").as_deref(),
            Some("http://c.example/p")
        );
    }
}
