//! Builds the gRPC channel to the collector from [`ServerSettings`].

use std::time::Duration;

use sightline_proto::v1::ingest_client::IngestClient;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::settings::{Compression, ServerSettings};

use super::TransportError;

/// The largest message either side accepts, compressed or not (the spool
/// never holds a batch larger than [`crate::spool::MAX_BATCH_BYTES`]).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

/// The endpoint, with connect timeout, keepalives and TLS set.
pub fn endpoint(server: &ServerSettings) -> Result<Endpoint, TransportError> {
    let scheme = if server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let uri = format!("{scheme}://{}", server.authority());
    let mut endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| TransportError::Config(format!("bad collector address {uri}: {e}")))?
        .connect_timeout(server.timeout)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(Duration::from_secs(60)))
        // Finds a collector that vanished without closing the connection.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(server.timeout)
        .keep_alive_while_idle(true)
        .user_agent(concat!("sightline-agent/", env!("CARGO_PKG_VERSION")))
        .map_err(|e| TransportError::Config(e.to_string()))?;
    if let Some(tls) = &server.tls {
        let mut config = ClientTlsConfig::new()
            .domain_name(tls.name.clone().unwrap_or_else(|| server.host.clone()))
            .timeout(server.timeout);
        config = match &tls.ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    TransportError::Config(format!("server.ca {}: {e}", path.display()))
                })?;
                config.ca_certificate(Certificate::from_pem(pem))
            }
            None => config.with_native_roots(),
        };
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| TransportError::Config(format!("TLS: {e}")))?;
    }
    Ok(endpoint)
}

/// A client on `channel` with the configured compression and size limits.
pub fn client(channel: Channel, compression: Compression) -> IngestClient<Channel> {
    let mut client = IngestClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    if let Some(encoding) = encoding(compression) {
        client = client.send_compressed(encoding).accept_compressed(encoding);
    }
    client
}

/// The gRPC encoding for `compression`, if any.
pub fn encoding(compression: Compression) -> Option<CompressionEncoding> {
    match compression {
        Compression::Zstd => Some(CompressionEncoding::Zstd),
        Compression::Gzip => Some(CompressionEncoding::Gzip),
        Compression::None => None,
    }
}
