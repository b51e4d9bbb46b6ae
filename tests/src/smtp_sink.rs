//! An SMTP sink on loopback for the alert tests: speaks enough ESMTP for a
//! real client (EHLO, STARTTLS with a certificate rcgen made, AUTH PLAIN or
//! LOGIN, MAIL, RCPT, DATA, QUIT) and records each message with whether it
//! came over TLS and who logged in. It offers AUTH only after STARTTLS, as
//! a careful server does. One connection at a time, reads with a
//! deadline; stops when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// One message received.
#[derive(Debug, Clone, Default)]
pub struct Mail {
    /// `MAIL FROM`.
    pub from: String,
    /// `RCPT TO`s.
    pub to: Vec<String>,
    /// The message (headers and body), dot-unstuffed.
    pub data: String,
    /// Whether STARTTLS came first.
    pub tls: bool,
    /// `user:password` of the AUTH, if any.
    pub login: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    mails: Mutex<Vec<Mail>>,
    /// Every command line received (AUTH lines included), to check what a
    /// client sent in the clear.
    commands: Mutex<Vec<String>>,
    /// Offer no STARTTLS (a server a careful client must refuse).
    plain_only: AtomicBool,
    stop: AtomicBool,
}

/// A running sink.
#[derive(Debug)]
pub struct SmtpSink {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SmtpSink {
    /// Listens on a free loopback port, with the certificate and key in
    /// these PEM files for STARTTLS.
    pub fn start(cert: &Path, key: &Path) -> SmtpSink {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("cert file")
            .collect::<Result<_, _>>()
            .expect("certs");
        let key = PrivateKeyDer::from_pem_file(key).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("server config"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds the SMTP sink");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared::default());
        let inner = shared.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if inner.stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(conn) = conn {
                    let _ = session(conn, &config, &inner);
                }
            }
        });
        SmtpSink {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    /// The messages received so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.shared.mails.lock().expect("lock").clone()
    }

    /// Every command line received so far.
    pub fn commands(&self) -> Vec<String> {
        self.shared.commands.lock().expect("lock").clone()
    }

    /// From now on, offers no STARTTLS but AUTH in the clear.
    pub fn offer_no_tls(&self) {
        self.shared.plain_only.store(true, Ordering::SeqCst);
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn decode_base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let Some(v) = ALPHABET.iter().position(|a| *a == c) else {
            continue;
        };
        bits = (bits << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn session(
    conn: TcpStream,
    config: &Arc<rustls::ServerConfig>,
    shared: &Shared,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut stream: BufReader<Box<dyn Stream + Send>> = BufReader::new(Box::new(conn));
    let mut mail = Mail::default();
    let say = |s: &mut BufReader<Box<dyn Stream + Send>>, text: &str| -> std::io::Result<()> {
        s.get_mut().write_all(text.as_bytes())?;
        s.get_mut().flush()
    };
    say(&mut stream, "220 sink ESMTP ready\r\n")?;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_string();
        shared.commands.lock().expect("lock").push(line.clone());
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            if shared.plain_only.load(Ordering::SeqCst) {
                say(&mut stream, "250-sink\r\n250 AUTH PLAIN LOGIN\r\n")?;
            } else if mail.tls {
                say(
                    &mut stream,
                    "250-sink\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n",
                )?;
            } else {
                say(&mut stream, "250-sink\r\n250-STARTTLS\r\n250 8BITMIME\r\n")?;
            }
        } else if upper == "STARTTLS" {
            say(&mut stream, "220 go ahead\r\n")?;
            // Nothing may be buffered past the command (RFC 3207).
            let plain = stream.into_inner();
            let server =
                rustls::ServerConnection::new(config.clone()).map_err(std::io::Error::other)?;
            stream = BufReader::new(Box::new(rustls::StreamOwned::new(server, plain)));
            mail.tls = true;
        } else if let Some(rest) = upper.strip_prefix("AUTH PLAIN") {
            let encoded = line[line.len() - rest.len()..].trim().to_string();
            let encoded = if encoded.is_empty() {
                say(&mut stream, "334 \r\n")?;
                let mut next = String::new();
                stream.read_line(&mut next)?;
                next.trim().to_string()
            } else {
                encoded
            };
            let parts: Vec<String> = decode_base64(&encoded)
                .split('\0')
                .map(str::to_string)
                .collect();
            mail.login = Some(format!(
                "{}:{}",
                parts.get(1).cloned().unwrap_or_default(),
                parts.get(2).cloned().unwrap_or_default()
            ));
            say(&mut stream, "235 2.7.0 accepted\r\n")?;
        } else if upper.starts_with("AUTH LOGIN") {
            say(&mut stream, "334 VXNlcm5hbWU6\r\n")?;
            let mut user = String::new();
            stream.read_line(&mut user)?;
            say(&mut stream, "334 UGFzc3dvcmQ6\r\n")?;
            let mut password = String::new();
            stream.read_line(&mut password)?;
            mail.login = Some(format!(
                "{}:{}",
                decode_base64(user.trim()),
                decode_base64(password.trim())
            ));
            say(&mut stream, "235 2.7.0 accepted\r\n")?;
        } else if upper.starts_with("MAIL FROM:") {
            mail.from = line[10..].trim().trim_matches(['<', '>']).to_string();
            let from = mail
                .from
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            mail.from = from.trim_matches(['<', '>']).to_string();
            say(&mut stream, "250 ok\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            mail.to
                .push(line[8..].trim().trim_matches(['<', '>']).to_string());
            say(&mut stream, "250 ok\r\n")?;
        } else if upper == "DATA" {
            say(&mut stream, "354 end with <CRLF>.<CRLF>\r\n")?;
            let mut data = String::new();
            loop {
                let mut l = String::new();
                if stream.read_line(&mut l)? == 0 {
                    return Ok(());
                }
                if l == ".\r\n" || l == ".\n" {
                    break;
                }
                data.push_str(l.strip_prefix('.').unwrap_or(&l));
            }
            mail.data = data;
            shared.mails.lock().expect("lock").push(mail.clone());
            say(&mut stream, "250 2.0.0 queued\r\n")?;
        } else if upper == "RSET" || upper == "NOOP" {
            say(&mut stream, "250 ok\r\n")?;
        } else if upper == "QUIT" {
            say(&mut stream, "221 bye\r\n")?;
            return Ok(());
        } else {
            say(&mut stream, "502 not implemented\r\n")?;
        }
    }
}
