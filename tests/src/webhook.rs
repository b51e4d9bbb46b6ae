//! A webhook receiver on loopback for the alert tests: a real HTTP/1.1
//! listener that records each POST (path and JSON body) and answers with
//! the statuses it was scripted to (200 once the script runs out), over
//! plain TCP or TLS (a certificate rcgen made). One connection at a time,
//! each read with a deadline; stops when dropped.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// One request received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The request's path.
    pub path: String,
    /// Its body, parsed (`Null` when not JSON).
    pub body: Value,
    /// The status it was answered with.
    pub answered: u16,
}

#[derive(Debug, Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<u16>>,
    stop: AtomicBool,
}

/// A running receiver.
#[derive(Debug)]
pub struct WebhookReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebhookReceiver {
    /// Listens on a free loopback port.
    pub fn start() -> WebhookReceiver {
        WebhookReceiver::start_on("127.0.0.1:0".parse().expect("addr"))
    }

    /// Listens on `addr`.
    pub fn start_on(addr: SocketAddr) -> WebhookReceiver {
        WebhookReceiver::listen(addr, None)
    }

    /// Listens on a free loopback port over TLS, with the certificate and
    /// key in these PEM files.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> WebhookReceiver {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("cert file")
            .collect::<Result<_, _>>()
            .expect("certs");
        let key = PrivateKeyDer::from_pem_file(key).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config");
        WebhookReceiver::listen("127.0.0.1:0".parse().expect("addr"), Some(Arc::new(config)))
    }

    fn listen(addr: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) -> WebhookReceiver {
        let listener = TcpListener::bind(addr).expect("binds the webhook receiver");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared::default());
        let inner = shared.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if inner.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                match &tls {
                    None => serve(conn, &inner),
                    Some(config) => {
                        if let Ok(server) = rustls::ServerConnection::new(config.clone()) {
                            serve(rustls::StreamOwned::new(server, conn), &inner);
                        }
                    }
                }
            }
        });
        WebhookReceiver {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    /// A URL on this receiver (`http://`; use `https://` for one
    /// started with [`WebhookReceiver::start_tls`]).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Answers the next `n` requests with `status`.
    pub fn fail_next(&self, n: usize, status: u16) {
        let mut script = self.shared.script.lock().expect("lock");
        script.extend(std::iter::repeat_n(status, n));
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// The bodies answered with 2xx so far.
    pub fn delivered(&self) -> Vec<Value> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .map(|r| r.body)
            .collect()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: impl Read + Write, shared: &Shared) {
    let mut reader = BufReader::new(conn);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length.min(1 << 20)];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let status = shared
        .script
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or(200);
    shared.received.lock().expect("lock").push(Received {
        path,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        answered: status,
    });
    let writer = reader.get_mut();
    let _ = write!(
        writer,
        "HTTP/1.1 {status} Scripted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let _ = writer.flush();
}
