//! The collector's settings: flags over `collector.conf` (the same
//! `key=value` format as the agents'), over defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agent_core::config::{Config, ConfigError, KeySpec, Origin};

/// Every key `collector.conf` may hold.
pub const COLLECTOR_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "grpc.listen",
        default: Some("127.0.0.1:6600"),
        doc: "Address for agents (gRPC).",
    },
    KeySpec {
        key: "http.listen",
        default: Some("127.0.0.1:6680"),
        doc: "Address for the JSON API.",
    },
    KeySpec {
        key: "data.dir",
        default: Some("./sightline-data"),
        doc: "Folder of the embedded store.",
    },
    KeySpec {
        key: "retention",
        default: Some("7d"),
        doc: "How long data is kept.",
    },
    KeySpec {
        key: "tls.cert",
        default: None,
        doc: "PEM certificate chain for gRPC over TLS.",
    },
    KeySpec {
        key: "tls.key",
        default: None,
        doc: "PEM private key for gRPC over TLS.",
    },
    KeySpec {
        key: "max.connections",
        default: Some("10000"),
        doc: "Open connections per port, at most.",
    },
    KeySpec {
        key: "log.level",
        default: Some("info"),
        doc: "Log level on stderr.",
    },
];

/// Resolved settings of `serve`.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// gRPC listen address (port 0 picks a free port).
    pub grpc: SocketAddr,
    /// HTTP listen address.
    pub http: SocketAddr,
    /// Store folder.
    pub data_dir: PathBuf,
    /// Data older than this is removed.
    pub retention: Duration,
    /// Certificate and key files, for TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Connections per port.
    pub max_connections: usize,
    /// Log level.
    pub log_level: String,
}

impl ServeSettings {
    /// Resolves from a config (file, environment and flags already merged).
    pub fn from_config(config: &Config) -> Result<ServeSettings, ConfigError> {
        let addr = |key: &str| config.number::<SocketAddr>(key, "an address like 127.0.0.1:6600");
        let tls = match (config.get("tls.cert"), config.get("tls.key")) {
            (Some(cert), Some(key)) => Some((PathBuf::from(cert), PathBuf::from(key))),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                let origin = config
                    .value("tls.cert")
                    .or_else(|| config.value("tls.key"))
                    .map_or(Origin::Default, |v| v.origin);
                return Err(ConfigError::Invalid {
                    origin,
                    key: "tls.cert".into(),
                    reason: "tls.cert and tls.key go together".into(),
                });
            }
        };
        Ok(ServeSettings {
            grpc: addr("grpc.listen")?,
            http: addr("http.listen")?,
            data_dir: PathBuf::from(
                config
                    .get("data.dir")
                    .unwrap_or_else(|| "./sightline-data".into()),
            ),
            retention: config.duration("retention")?,
            tls,
            max_connections: config.number("max.connections", "a number of connections")?,
            log_level: config.get("log.level").unwrap_or_else(|| "info".into()),
        })
    }
}
