//! The settings every agent shares, resolved from a [`Config`]: license,
//! collector address, TLS, compression, identity, data folder, spool size.
//!
//! A collector address is read by one parser ([`split_host_port`]) whether
//! it comes from `--server` or from `server.host`, so the two accept the
//! same text. Nothing here opens a socket or resolves a name.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{Config, ConfigError, FlagValue, KeySpec, Origin};
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
        doc: "Collector host name or address; `HOST:PORT` (IPv6 as `[::1]:6600`) sets the port too.",
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
        let data_dir = config
            .get("data.dir")
            .map_or_else(|| default_data_dir(product), PathBuf::from);
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
        let (host, port) = Self::address(config)?;
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

    /// The collector's host and port. `server.host` may carry the port
    /// (`HOST:PORT`); if `server.port` is also set (not by default) to
    /// another port, that is refused naming both keys and where each was
    /// set, rather than guessing which one the operator meant.
    pub fn address(config: &Config) -> Result<(String, u16), ConfigError> {
        // An empty value means unset, as `Config::get` has it.
        let host_value = config
            .value("server.host")
            .filter(|v| !v.text.is_empty())
            .unwrap_or(crate::config::Value {
                text: "127.0.0.1".into(),
                origin: Origin::Default,
            });
        let invalid = |origin: &Origin, key: &str, reason: String| ConfigError::Invalid {
            origin: origin.clone(),
            key: key.into(),
            reason,
        };
        let (host, host_port) = split_host_port(&host_value.text)
            .map_err(|reason| invalid(&host_value.origin, "server.host", reason))?;
        let Some(host_port) = host_port else {
            let port = config.number::<u16>("server.port", "a port number from 1 to 65535")?;
            return Ok((host.to_string(), port));
        };
        let port = parse_port(host_port)
            .map_err(|reason| invalid(&host_value.origin, "server.host", reason))?;
        if let Some(port_value) = config.value("server.port")
            && port_value.origin != Origin::Default
        {
            let other = config.number::<u16>("server.port", "a port number from 1 to 65535")?;
            if other != port {
                return Err(invalid(
                    &host_value.origin,
                    "server.host",
                    format!(
                        "gives port {port}, but server.port={other} ({}); set the port in one place",
                        port_value.origin
                    ),
                ));
            }
        }
        Ok((host.to_string(), port))
    }

    /// Which key set the collector's port, and where: `server.host` when
    /// it carries one, `server.port` otherwise. For hints that name the key
    /// to fix.
    pub fn port_source(config: &Config) -> (&'static str, Origin) {
        if let Some(host) = config.value("server.host")
            && let Ok((_, Some(_))) = split_host_port(&host.text)
        {
            return ("server.host", host.origin);
        }
        let origin = config
            .value("server.port")
            .map_or(Origin::Default, |v| v.origin);
        ("server.port", origin)
    }
}

/// Splits a collector address as written in `--server` or `server.host`:
/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address (more
/// than one `:`, no port). The port is returned as written, unchecked.
pub fn split_host_port(text: &str) -> Result<(&str, Option<&str>), String> {
    if text.contains("://") {
        return Err(
            "write the collector's address without a scheme: HOST or HOST:PORT (server.tls=true turns TLS on)".into(),
        );
    }
    if let Some(rest) = text.strip_prefix('[') {
        let Some((host, tail)) = rest.split_once(']') else {
            return Err("an IPv6 address opened with '[' needs a closing ']'".into());
        };
        return match tail {
            "" => Ok((host, None)),
            _ => match tail.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err("expected ':PORT' after ']'".into()),
            },
        };
    }
    match text.split_once(':') {
        Some(("", port)) if !port.contains(':') => Err("missing the host before ':'".into()),
        Some((host, port)) if !port.contains(':') => Ok((host, Some(port))),
        _ => Ok((text, None)),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!(
            "expected a port number from 1 to 65535 after ':', got '{text}'"
        )),
    }
}

/// Turns `--server HOST[:PORT]` into config values. IPv6 addresses are
/// written in brackets: `[::1]:6600`. Text [`split_host_port`] refuses is
/// passed on whole as `server.host`, to be refused when settings are
/// resolved, naming the flag.
pub fn server_flag(text: &str) -> Vec<FlagValue> {
    let flag = |key: &'static str, value: &str| FlagValue {
        key,
        value: value.to_string(),
        flag: "--server",
    };
    match split_host_port(text) {
        Ok((host, port)) => {
            let mut flags = vec![flag("server.host", host)];
            if let Some(port) = port {
                flags.push(flag("server.port", port));
            }
            flags
        }
        Err(_) => vec![flag("server.host", text)],
    }
}

/// `data.dir` when unset: `/var/lib/sightline/<product>`; on Windows
/// `C:\ProgramData\Sightline\<product>`, beside the config file (the
/// folder programs keep machine-wide state in, writable by services).
pub fn default_data_dir(product: &str) -> PathBuf {
    #[cfg(windows)]
    {
        crate::windows::program_data().join(product)
    }
    #[cfg(not(windows))]
    {
        PathBuf::from(format!("/var/lib/sightline/{product}"))
    }
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

#[cfg(test)]
mod address_tests {
    use super::*;
    use crate::config::{FileSource, MapEnv};

    fn config(text: &str, env: &[(&str, &str)], flags: &[FlagValue]) -> Config {
        let dir = std::env::temp_dir().join(format!("sl-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(format!("{:x}.conf", crc32fast::hash(text.as_bytes())));
        std::fs::write(&path, text).expect("write");
        Config::load(
            &FileSource::Explicit(path),
            &MapEnv::new(env.iter().copied()),
            flags,
            COMMON_KEYS,
        )
        .expect("loads")
    }

    fn address(text: &str) -> Result<(String, u16), String> {
        CommonSettings::address(&config(text, &[], &[])).map_err(|e| e.to_string())
    }

    #[test]
    fn server_host_may_carry_the_port_as_the_flag_does() {
        assert_eq!(
            address("server.host=10.0.0.5:6601\n"),
            Ok(("10.0.0.5".into(), 6601))
        );
        assert_eq!(
            address("server.host=c.lan:7000\n"),
            Ok(("c.lan".into(), 7000))
        );
        assert_eq!(
            address("server.host=[::1]:6602\n"),
            Ok(("::1".into(), 6602))
        );
        assert_eq!(address("server.host=[::1]\n"), Ok(("::1".into(), 6600)));
        assert_eq!(address("server.host=::1\n"), Ok(("::1".into(), 6600)));
        assert_eq!(address("server.host=\n"), Ok(("127.0.0.1".into(), 6600)));
        assert_eq!(
            address("server.host=c.lan\nserver.port=7001\n"),
            Ok(("c.lan".into(), 7001))
        );
        // The same port twice is no conflict.
        assert_eq!(
            address("server.host=c.lan:7002\nserver.port=7002\n"),
            Ok(("c.lan".into(), 7002))
        );
        let settings =
            CommonSettings::server(&config("server.host=[::1]:6603\n", &[], &[])).expect("valid");
        assert_eq!(settings.authority(), "[::1]:6603");
    }

    #[test]
    fn two_different_ports_are_refused_naming_both_keys_and_origins() {
        let err = address("server.host=c.lan:7000\nserver.port=6601\n").expect_err("conflict");
        assert!(
            err.contains(".conf:1: server.host: gives port 7000"),
            "{err}"
        );
        assert!(err.contains("server.port=6601 ("), "{err}");
        assert!(err.contains(".conf:2)"), "{err}");
        let env = config(
            "server.host=c.lan:7000\n",
            &[("SIGHTLINE_SERVER_PORT", "6601")],
            &[],
        );
        let err = CommonSettings::address(&env)
            .expect_err("conflict")
            .to_string();
        assert!(
            err.contains("environment variable SIGHTLINE_SERVER_PORT"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_address_in_server_host_is_refused_at_start() {
        for (text, says) in [
            (
                "server.host=c.lan:http\n",
                "expected a port number from 1 to 65535 after ':', got 'http'",
            ),
            ("server.host=c.lan:0\n", "got '0'"),
            ("server.host=[::1\n", "needs a closing ']'"),
            ("server.host=[::1]6600\n", "expected ':PORT' after ']'"),
            ("server.host=http://c.lan:6600\n", "without a scheme"),
            ("server.host=:6600\n", "missing the host before ':'"),
        ] {
            let err = address(text).expect_err(text);
            assert!(err.contains(".conf:1: server.host: "), "{err}");
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn the_flag_wins_over_a_port_in_server_host() {
        let flags = server_flag("other.lan:7100");
        let config = config("server.host=c.lan:7000\n", &[], &flags);
        assert_eq!(
            CommonSettings::address(&config).expect("valid"),
            ("other.lan".into(), 7100)
        );
        let bad = server_flag("http://c.lan");
        let err = CommonSettings::address(&self::config("", &[], &bad)).expect_err("refused");
        assert!(
            err.to_string().starts_with("flag --server: server.host:"),
            "{err}"
        );
    }

    #[test]
    fn a_key_in_a_common_value_is_not_echoed() {
        let key = "sl1-7K3M9QW2XH8D4R6TBN1PZC5VFA-0H4K2PM";
        let license = License::generate().expect("randomness");
        let license = license.expose();
        for (line, named) in [
            (format!("log.level={key}"), "log.level"),
            (format!("server.host=c.lan:{key}"), "server.host"),
            (format!("spool.sync={key}"), "spool.sync"),
        ] {
            let text = format!("license={license}\ndata.dir=/tmp\n{line}\n");
            let err =
                CommonSettings::from_config(&config(&text, &[], &[]), "test").expect_err(&text);
            let shown = format!("{err} {err:?}");
            assert!(shown.contains(&format!(":3: {named}: ")), "{shown}");
            assert!(
                !shown.contains("7K3M9QW2") && !shown.contains("TBN1PZC5"),
                "{shown}"
            );
        }
    }

    #[test]
    fn the_port_source_names_the_key_to_fix() {
        let config = config("server.host=c.lan:7000\n", &[], &[]);
        let (key, origin) = CommonSettings::port_source(&config);
        assert_eq!(key, "server.host");
        assert!(matches!(origin, Origin::File { line: 1, .. }), "{origin}");
        let config = self::config("server.host=c.lan\nserver.port=7000\n", &[], &[]);
        let (key, origin) = CommonSettings::port_source(&config);
        assert_eq!(key, "server.port");
        assert!(matches!(origin, Origin::File { line: 2, .. }), "{origin}");
    }
}
