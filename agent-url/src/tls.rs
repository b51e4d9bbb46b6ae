//! TLS for checks: rustls with ring (the workspace's one TLS stack, the
//! same rustls tonic uses), and a certificate verifier that records the
//! chain that validated.
//!
//! Expiry is read from the VERIFIED chain: after rustls's own verifier
//! accepts the server's certificates, webpki builds the path again and
//! [`RecordingVerifier`] keeps its certificates (leaf, the intermediates it
//! used, the trust anchor's certificate). A cross-signed root the server
//! sends but the path does not use is not an alarm. When verification
//! fails, or is off (`.tls.insecure`), only the leaf is recorded.
//!
//! Never trusts a certificate the verifier refused unless the target says
//! `.tls.insecure`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Why trust roots could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It held no usable certificate.
    #[error("{path}: no usable CA certificate in it")]
    Empty {
        /// The file.
        path: String,
    },
}

/// Roots to verify against, with their certificates (a trust anchor alone
/// has no expiry date; the certificate does).
#[derive(Debug)]
pub struct TrustRoots {
    store: Arc<RootCertStore>,
    certs: Vec<CertificateDer<'static>>,
    /// Each anchor's subject and key with its certificate's notAfter,
    /// parsed once here rather than on every check.
    expiry: Vec<(Vec<u8>, Vec<u8>, i64)>,
    verifier: OnceLock<Arc<WebPkiServerVerifier>>,
    /// What the verified path of a chain the server sent gave, by the
    /// chain's exact bytes: a server sends the same chain on every check,
    /// so the path is built once, not twice a check (rustls's verifier
    /// still runs in full on every handshake; this is only consulted
    /// after it accepted). Bounded ([`CHAIN_CACHE_MAX`]), and an entry is
    /// used only until [`CHAIN_CACHE_TTL`] or the path's first expiry.
    chains: Mutex<HashMap<Vec<u8>, CachedChain>>,
}

/// Most chains remembered per set of roots; the cache empties when full.
const CHAIN_CACHE_MAX: usize = 4096;

/// How long a remembered chain's result is used before the path is built
/// again (a path through another intermediate may have become valid).
const CHAIN_CACHE_TTL: i64 = 3600;

/// One remembered chain.
#[derive(Debug, Clone)]
struct CachedChain {
    /// The leaf's subject, issuer and notAfter.
    subject: String,
    issuer: String,
    not_after: i64,
    /// The fewest notAfter of the verified path.
    chain_not_after: i64,
    /// Seconds since the epoch after which the entry is not used.
    until: i64,
}

/// The ring provider, built once per process.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

impl TrustRoots {
    /// The system's roots, loaded once per process.
    pub fn system() -> Arc<TrustRoots> {
        static SYSTEM: OnceLock<Arc<TrustRoots>> = OnceLock::new();
        SYSTEM
            .get_or_init(|| {
                let found = rustls_native_certs::load_native_certs();
                Arc::new(TrustRoots::from_certs(found.certs))
            })
            .clone()
    }

    /// Roots from certificates (those webpki cannot read are skipped).
    pub fn from_certs(certs: Vec<CertificateDer<'static>>) -> TrustRoots {
        let mut store = RootCertStore::empty();
        let mut kept = Vec::new();
        let mut expiry = Vec::new();
        for cert in certs {
            if store.add(cert.clone()).is_ok() {
                if let Ok(anchor) = webpki::anchor_from_trusted_cert(&cert)
                    && let Some((_, _, not_after)) = parse_cert(&cert)
                {
                    expiry.push((
                        anchor.subject.to_vec(),
                        anchor.subject_public_key_info.to_vec(),
                        not_after,
                    ));
                }
                kept.push(cert);
            }
        }
        TrustRoots {
            store: Arc::new(store),
            certs: kept,
            expiry,
            verifier: OnceLock::new(),
            chains: Mutex::new(HashMap::new()),
        }
    }

    /// rustls's verifier over these roots, built once.
    fn verifier(
        &self,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<Arc<WebPkiServerVerifier>, String> {
        if let Some(v) = self.verifier.get() {
            return Ok(v.clone());
        }
        let built =
            WebPkiServerVerifier::builder_with_provider(self.store.clone(), provider.clone())
                .build()
                .map_err(|e| e.to_string())?;
        Ok(self.verifier.get_or_init(|| built).clone())
    }

    /// Roots from a PEM file.
    pub fn from_pem_file(path: &Path) -> Result<TrustRoots, TlsError> {
        use rustls::pki_types::pem::PemObject;
        let shown = path.display().to_string();
        let data = std::fs::read(path).map_err(|source| TlsError::Read {
            path: shown.clone(),
            source,
        })?;
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
            .filter_map(Result::ok)
            .collect();
        let roots = TrustRoots::from_certs(certs);
        if roots.certs.is_empty() {
            return Err(TlsError::Empty { path: shown });
        }
        Ok(roots)
    }
}

/// What a check learned of the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The leaf's subject.
    pub subject: String,
    /// The leaf's issuer.
    pub issuer: String,
    /// The leaf's notAfter, seconds since the epoch.
    pub not_after: i64,
    /// The fewest notAfter of the chain recorded (the leaf alone when the
    /// chain did not verify).
    pub chain_not_after: i64,
}

impl CertInfo {
    /// Whole days from `now` to the leaf's expiry (negative once expired).
    pub fn days_left(&self, now: SystemTime) -> i32 {
        days_between(now, self.not_after)
    }

    /// Whole days from `now` to the first expiry in the chain.
    pub fn chain_days_left(&self, now: SystemTime) -> i32 {
        days_between(now, self.chain_not_after)
    }
}

fn days_between(now: SystemTime, not_after: i64) -> i32 {
    let now = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(_) => 0,
    };
    (not_after - now)
        .div_euclid(86_400)
        .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// Subject, issuer and notAfter of one DER certificate.
fn parse_cert(der: &[u8]) -> Option<(String, String, i64)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((
        cert.subject().to_string(),
        cert.issuer().to_string(),
        cert.validity().not_after.timestamp(),
    ))
}

/// A rustls verifier that records the chain that validated.
#[derive(Debug)]
pub struct RecordingVerifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    roots: Arc<TrustRoots>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    record: Mutex<Option<CertInfo>>,
}

impl RecordingVerifier {
    /// A verifier against `roots`; with `insecure`, one that accepts all.
    pub fn new(roots: Arc<TrustRoots>, insecure: bool) -> Result<RecordingVerifier, String> {
        let provider = provider();
        let inner = if insecure {
            None
        } else {
            Some(roots.verifier(&provider)?)
        };
        Ok(RecordingVerifier {
            inner,
            roots,
            provider,
            record: Mutex::new(None),
        })
    }

    /// What the last handshake recorded.
    pub fn take(&self) -> Option<CertInfo> {
        self.record.lock().ok().and_then(|mut r| r.take())
    }

    fn keep(&self, info: Option<CertInfo>) {
        if let Ok(mut r) = self.record.lock() {
            *r = info;
        }
    }

    /// The verified path's certificates' notAfter, fewest first found.
    fn verified_chain_not_after(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Option<i64> {
        let cert = webpki::EndEntityCert::try_from(end_entity).ok()?;
        let path = cert
            .verify_for_usage(
                self.provider.signature_verification_algorithms.all,
                &self.roots.store.roots,
                intermediates,
                now,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .ok()?;
        let mut least = parse_cert(end_entity)?.2;
        for inter in path.intermediate_certificates() {
            if let Some((_, _, t)) = parse_cert(&inter.der()) {
                least = least.min(t);
            }
        }
        let anchor = path.anchor();
        for (subject, spki, not_after) in &self.roots.expiry {
            if subject[..] == anchor.subject[..] && spki[..] == anchor.subject_public_key_info[..] {
                least = least.min(*not_after);
            }
        }
        Some(least)
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = match &self.inner {
            Some(inner) => {
                inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Ok(ServerCertVerified::assertion()),
        };
        if result.is_ok() && self.inner.is_some() {
            let key = chain_key(end_entity, intermediates);
            let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
            let cached = self
                .roots
                .chains
                .lock()
                .ok()
                .and_then(|c| c.get(&key).filter(|e| secs <= e.until).cloned());
            if let Some(hit) = cached {
                self.keep(Some(CertInfo {
                    subject: hit.subject,
                    issuer: hit.issuer,
                    not_after: hit.not_after,
                    chain_not_after: hit.chain_not_after,
                }));
                return result;
            }
            let leaf = parse_cert(end_entity);
            let chain = self.verified_chain_not_after(end_entity, intermediates, now);
            let info = leaf.map(|(subject, issuer, not_after)| CertInfo {
                subject,
                issuer,
                not_after,
                chain_not_after: chain.unwrap_or(not_after).min(not_after),
            });
            if let (Some(info), Some(_)) = (&info, chain)
                && let Ok(mut cache) = self.roots.chains.lock()
            {
                if cache.len() >= CHAIN_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(
                    key,
                    CachedChain {
                        subject: info.subject.clone(),
                        issuer: info.issuer.clone(),
                        not_after: info.not_after,
                        chain_not_after: info.chain_not_after,
                        until: info
                            .chain_not_after
                            .min(secs.saturating_add(CHAIN_CACHE_TTL)),
                    },
                );
            }
            self.keep(info);
            return result;
        }
        let leaf = parse_cert(end_entity);
        self.keep(leaf.map(|(subject, issuer, not_after)| CertInfo {
            subject,
            issuer,
            not_after,
            chain_not_after: not_after,
        }));
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The exact certificates a server sent, as one key: each length, then
/// its bytes.
fn chain_key(end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Vec<u8> {
    let total: usize =
        intermediates.iter().map(|c| c.len() + 8).sum::<usize>() + end_entity.len() + 8;
    let mut key = Vec::with_capacity(total);
    for cert in std::iter::once(end_entity).chain(intermediates) {
        key.extend_from_slice(&(cert.len() as u64).to_le_bytes());
        key.extend_from_slice(cert);
    }
    key
}

/// The cipher suites a check offers, in the order Go's `crypto/tls` (and
/// so blackbox_exporter, curl's peers in Go, most probes) prefers them on
/// a machine with AES instructions: AES-128-GCM first, its handshake
/// hashed with SHA-256. rustls's own default puts AES-256-GCM with SHA-384
/// first; SHA-384 has no CPU instructions where SHA-256 has them, and
/// every key derivation of the handshake pays for it. The server still
/// chooses; every suite offered is one rustls offers by default.
pub const CLIENT_CIPHER_SUITES: &[rustls::SupportedCipherSuite] = {
    use rustls::crypto::ring::cipher_suite::*;
    &[
        TLS13_AES_128_GCM_SHA256,
        TLS13_CHACHA20_POLY1305_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
};

/// A client config for one check, ALPN h2 then http/1.1, with `verifier`
/// and [`CLIENT_CIPHER_SUITES`].
///
/// Cloned from one built per process with its verifier swapped: building
/// a config afresh allocated a 256-server session cache on every check.
/// Session resumption is off, so every connection makes a full handshake
/// (as blackbox_exporter's does), even a redirect's to the same server.
pub fn client_config(verifier: Arc<RecordingVerifier>) -> Result<rustls::ClientConfig, String> {
    static BASE: OnceLock<rustls::ClientConfig> = OnceLock::new();
    let mut config = match BASE.get() {
        Some(base) => base.clone(),
        None => {
            let provider = Arc::new(rustls::crypto::CryptoProvider {
                cipher_suites: CLIENT_CIPHER_SUITES.to_vec(),
                ..(*verifier.provider).clone()
            });
            let mut base = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_no_client_auth();
            base.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            base.resumption = rustls::client::Resumption::disabled();
            BASE.get_or_init(|| base).clone()
        }
    };
    config.dangerous().set_certificate_verifier(verifier);
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn days_left_round_down_and_go_negative() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(days_between(now, 1_000_000 + 86_400 * 3 + 5), 3);
        assert_eq!(days_between(now, 1_000_000 + 86_399), 0);
        assert_eq!(days_between(now, 1_000_000 - 1), -1);
    }
}
