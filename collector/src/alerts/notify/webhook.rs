//! A webhook POST: one HTTP/1.1 request over TCP, or TLS (rustls on ring,
//! the system's roots) for `https://`, with a JSON body. A 2xx answer is
//! delivered; 4xx (but 408 and 429) will not get better by retrying.
//!
//! Never puts the URL in an error or a log: its path and query may be the
//! secret (Slack's are).

use std::sync::{Arc, OnceLock};

use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::SendError;

/// Most bytes of an answer's body read (and dropped).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The system's roots, read once.
fn system_roots() -> &'static [rustls::pki_types::CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<rustls::pki_types::CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs().certs;
        tracing::debug!(roots = found.len(), "Webhook TLS roots loaded.");
        found
    })
}

/// The certificates of a channel's `ca_pem`.
pub fn extra_roots(
    pem: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, SendError> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| SendError {
            message: "ca_pem: not a PEM certificate".into(),
            status: None,
            permanent: true,
        })?;
    if certs.is_empty() {
        return Err(SendError {
            message: "ca_pem: no certificate".into(),
            status: None,
            permanent: true,
        });
    }
    Ok(certs)
}

/// A client config trusting the system's roots (cached) and `ca_pem`.
fn tls_config(ca_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, SendError> {
    static PLAIN: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let build = |extra: Vec<rustls::pki_types::CertificateDer<'static>>| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(system_roots().iter().cloned());
        roots.add_parsable_certificates(extra);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
            .map_err(|e| SendError::transient(format!("TLS setup: {e}")))
    };
    match ca_pem {
        Some(pem) => build(extra_roots(pem)?),
        None => {
            if let Some(config) = PLAIN.get() {
                return Ok(config.clone());
            }
            let config = build(Vec::new())?;
            Ok(PLAIN.get_or_init(|| config).clone())
        }
    }
}

fn io_error(what: &str, e: &std::io::Error) -> SendError {
    SendError::transient(format!("{what}: {}", e.kind()))
}

/// POSTs `body` (JSON) to `url`, trusting `ca_pem` besides the system's
/// roots for `https://`; the 2xx status, or why not.
pub async fn post(url: &str, body: Vec<u8>, ca_pem: Option<&str>) -> Result<u16, SendError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| SendError::transient("the webhook URL does not parse"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(SendError::transient("the webhook URL is not http(s)")),
    };
    let host = uri
        .host()
        .ok_or_else(|| SendError::transient("the webhook URL has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map(|a| a.as_str().rsplit_once('@').map_or(a.as_str(), |(_, h)| h))
        .unwrap_or(&host)
        .to_string();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| io_error(&format!("cannot connect to {host}:{port}"), &e))?;
    let _ = tcp.set_nodelay(true);
    let request = Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("sightline-collector/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| SendError::transient(format!("cannot build the request: {e}")))?;
    if https {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| SendError::transient("the webhook host is not a valid TLS name"))?;
        let tls = tokio_rustls::TlsConnector::from(tls_config(ca_pem)?)
            .connect(name, tcp)
            .await
            .map_err(|e| io_error(&format!("TLS with {host}:{port} failed"), &e))?;
        exchange(TokioIo::new(tls), request).await
    } else {
        exchange(TokioIo::new(tcp), request).await
    }
}

async fn exchange<T>(io: T, request: Request<Full<Bytes>>) -> Result<u16, SendError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| SendError::transient(format!("HTTP handshake failed: {e}")))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| SendError::transient(format!("HTTP request failed: {e}")))?;
        let status = response.status().as_u16();
        // Read a little of the answer so the server sees it was received;
        // a body larger than this is cut.
        let mut body = response.into_body();
        let mut read = 0;
        while read < MAX_ANSWER_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
        if (200..300).contains(&status) {
            Ok(status)
        } else {
            Err(SendError {
                message: format!("the webhook answered HTTP {status}"),
                status: Some(status),
                permanent: (400..500).contains(&status) && status != 408 && status != 429,
            })
        }
    }
    .await;
    driver.abort();
    result
}
