//! The settings every agent shares, resolved from a [`Config`]: license,
//! collector address, TLS, compression, identity, data folder, spool size.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, ConfigError, FlagValue, KeySpec};
use crate::identity;
use crate::license::License;

/// The keys every agent reads. Products add their own.
pub const COMMON_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "license",
        default: None,
        doc: "Project license key, printed by `sightline-collector project create` (required).",
    },
    KeySpec {
        key: "server.host",
        default: Some("127.0.0.1"),
        doc: "Collector host name or address.",
    },
    KeySpec {
        key: "server.port",
        default: Some("6600"),
        doc: "Collector gRPC port.",
    },
    KeySpec {
        key: "server.tls",
        default: Some("false"),
        doc: "Connect with TLS (rustls).",
    },
    KeySpec {
        key: "server.ca",
        default: None,
        doc: "PEM file of the CA that signed the collector's certificate; the system roots when unset.",
    },
    KeySpec {
        key: "server.tls.name",
        default: None,
        doc: "Name to verify in the collector's certificate; `server.host` when unset.",
    },
    KeySpec {
        key: "server.compression",
        default: Some("zstd"),
        doc: "Compression of batches on the wire: `zstd`, `gzip` or `none`.",
    },
    KeySpec {
        key: "server.timeout",
        default: Some("10s"),
        doc: "Bound on connecting, on each call, and on waiting for an ack.",
    },
    KeySpec {
        key: "createdtime",
        default: None,
        doc: "Install time written by the installer (`date +%s%N`); sent as is.",
    },
    KeySpec {
        key: "oname",
        default: None,
        doc: "The agent's name in the collector; the host name when unset.",
    },
    KeySpec {
        key: "data.dir",
        default: None,
        doc: "Folder for the spool, pid file and agent identity; `/var/lib/sightline/<product>` when unset.",
    },
    KeySpec {
        key: "spool.max",
        default: Some("64MiB"),
        doc: "Most disk the spool of unacknowledged batches may use; the oldest are dropped (and reported) beyond it.",
    },
    KeySpec {
        key: "spool.sync",
        default: Some("normal"),
        doc: "`normal`: a spooled batch survives the agent being killed; `full`: it also survives a power cut (fsync every batch).",
    },
    KeySpec {
        key: "log.level",
        default: Some("info"),
        doc: "Log level on stderr: `error`, `warn`, `info`, `debug` or `trace`.",
    },
];

/// Compression of batches on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd (the default: best ratio for its CPU).
    Zstd,
    /// gzip, for collectors or proxies that lack zstd.
    Gzip,
    /// Off.
    None,
}

/// TLS to the collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// CA bundle; the system roots when `None`.
    pub ca: Option<PathBuf>,
    /// Name to verify; `server.host` when `None`.
    pub name: Option<String>,
}

/// Where and how to reach the collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Host name or address.
    pub host: String,
    /// gRPC port.
    pub port: u16,
    /// TLS, when on.
    pub tls: Option<TlsSettings>,
    /// Wire compression.
    pub compression: Compression,
    /// Bound on connect, each call, and each ack.
    pub timeout: Duration,
}

impl ServerSettings {
    /// `host:port`, bracketing IPv6 addresses.
    pub fn authority(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Everything an agent needs besides its product's own settings.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    /// The product (`infra`, `db`, ...).
    pub product: &'static str,
    /// The project license.
    pub license: License,
    /// The collector.
    pub server: ServerSettings,
    /// The agent's name.
    pub oname: String,
    /// The install time, as the installer wrote it.
    pub created_time: String,
    /// Spool, pid file, identity.
    pub data_dir: PathBuf,
    /// Spool limit in bytes.
    pub spool_max: u64,
    /// Spool durability.
    pub spool_sync: crate::spool::Sync,
    /// Log filter.
    pub log_level: String,
}

impl CommonSettings {
    /// Resolves and checks the common keys. The license format is checked
    /// here, so a mistyped key stops the agent before it opens a socket.
    pub fn from_config(
        config: &Config,
        product: &'static str,
    ) -> Result<CommonSettings, ConfigError> {
        let license = Self::license(config)?;
        let server = Self::server(config)?;
        let oname = config.get("oname").unwrap_or_else(identity::hostname);
        let data_dir = config.get("data.dir").map_or_else(
            || PathBuf::from(format!("/var/lib/sightline/{product}")),
            PathBuf::from,
        );
        let spool_max = config.size("spool.max")?;
        if spool_max < 4096 {
            let origin = config.value("spool.max").map(|v| v.origin);
            return Err(ConfigError::Invalid {
                origin: origin.unwrap_or(crate::config::Origin::Default),
                key: "spool.max".into(),
                reason: "must be at least 4KiB".into(),
            });
        }
        let spool_sync = config
            .parse_with("spool.sync", |t| match t {
                "normal" => Ok(crate::spool::Sync::Normal),
                "full" => Ok(crate::spool::Sync::Full),
                other => Err(format!("expected normal or full, got '{other}'")),
            })?
            .unwrap_or(crate::spool::Sync::Normal);
        let log_level = config.get("log.level").unwrap_or_else(|| "info".into());
        if !["error", "warn", "info", "debug", "trace"].contains(&log_level.as_str()) {
            let origin = config.value("log.level").map(|v| v.origin);
            return Err(ConfigError::Invalid {
                origin: origin.unwrap_or(crate::config::Origin::Default),
                key: "log.level".into(),
                reason: format!("expected error, warn, info, debug or trace, got '{log_level}'"),
            });
        }
        Ok(CommonSettings {
            product,
            license,
            server,
            oname,
            created_time: config.get("createdtime").unwrap_or_default(),
            data_dir,
            spool_max,
            spool_sync,
            log_level,
        })
    }

    /// Only the license, for `test`, which reports it as its own step.
    pub fn license(config: &Config) -> Result<License, ConfigError> {
        let value = config.require(
            "license",
            "add 'license=<key>' to the config file, or set SIGHTLINE_LICENSE, or pass --license",
        )?;
        License::parse(&value.text).map_err(|e| ConfigError::Invalid {
            origin: value.origin,
            key: "license".into(),
            reason: e.to_string(),
        })
    }

    /// Only the collector settings, for `test`.
    pub fn server(config: &Config) -> Result<ServerSettings, ConfigError> {
        let host = config
            .get("server.host")
            .unwrap_or_else(|| "127.0.0.1".into());
        let port = config.number::<u16>("server.port", "a port number from 1 to 65535")?;
        let tls = if config.bool("server.tls")? {
            Some(TlsSettings {
                ca: config.get("server.ca").map(PathBuf::from),
                name: config.get("server.tls.name"),
            })
        } else {
            None
        };
        let compression = config
            .parse_with("server.compression", |t| match t {
                "zstd" => Ok(Compression::Zstd),
                "gzip" => Ok(Compression::Gzip),
                "none" => Ok(Compression::None),
                other => Err(format!("expected zstd, gzip or none, got '{other}'")),
            })?
            .unwrap_or(Compression::Zstd);
        let timeout = config.duration("server.timeout")?;
        Ok(ServerSettings {
            host,
            port,
            tls,
            compression,
            timeout,
        })
    }
}

/// Turns `--server HOST[:PORT]` into config values. IPv6 addresses are
/// written in brackets: `[::1]:6600`.
pub fn server_flag(text: &str) -> Vec<FlagValue> {
    let flag = |key: &'static str, value: &str| FlagValue {
        key,
        value: value.to_string(),
        flag: "--server",
    };
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (text, None),
        }
    } else if text.matches(':').count() == 1 {
        let (h, p) = text.split_once(':').unwrap_or((text, ""));
        (h, Some(p))
    } else {
        (text, None)
    };
    let mut flags = vec![flag("server.host", host)];
    if let Some(port) = port {
        flags.push(flag("server.port", port));
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_flag_splits_host_and_port() {
        let pairs = |t: &str| -> Vec<(String, String)> {
            server_flag(t)
                .into_iter()
                .map(|f| (f.key.to_string(), f.value))
                .collect()
        };
        assert_eq!(
            pairs("c.example:7000"),
            [
                ("server.host".into(), "c.example".into()),
                ("server.port".into(), "7000".into())
            ]
        );
        assert_eq!(
            pairs("c.example"),
            [("server.host".to_string(), "c.example".to_string())]
        );
        assert_eq!(
            pairs("[::1]:6601"),
            [
                ("server.host".into(), "::1".into()),
                ("server.port".into(), "6601".into())
            ]
        );
        assert_eq!(
            pairs("::1"),
            [("server.host".to_string(), "::1".to_string())]
        );
    }
}
