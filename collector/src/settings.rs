//! The collector's settings: flags over `collector.conf` (the same
//! `key=value` format as the agents'), over defaults. Resolved here, before
//! any file is opened or socket bound; never does IO itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use agent_core::config::{Config, ConfigError, KeySpec, Origin};

use crate::ingest::IngestLimits;
use crate::ingest::convert::SampleLimits;
use crate::store::{StoreLimits, StoreUrl};

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
        key: "store",
        default: None,
        doc: "Where data is kept: `sqlite:DIR` (the embedded store; default `sqlite:` and data.dir).",
    },
    KeySpec {
        key: "retention",
        default: Some("7d"),
        doc: "How long data is kept.",
    },
    KeySpec {
        key: "logs.retention",
        default: None,
        doc: "How long log records are kept (default: `retention`).",
    },
    KeySpec {
        key: "logs.max_bytes",
        default: Some("10GiB"),
        doc: "Most bytes the log store keeps; the oldest blocks go first (checked every minute; 0: no cap).",
    },
    KeySpec {
        key: "db.retention",
        default: None,
        doc: "How long database snapshots (sessions, lock trees) are kept (default: `retention`).",
    },
    KeySpec {
        key: "db.max_bytes",
        default: Some("2GiB"),
        doc: "Most bytes database snapshots take; the oldest go first (checked every minute; 0: no cap).",
    },
    KeySpec {
        key: "url.retention",
        default: None,
        doc: "How long URL check results are kept (default: `retention`); a target no check has reported for this long leaves the list.",
    },
    KeySpec {
        key: "url.max_bytes",
        default: Some("2GiB"),
        doc: "Most bytes URL check results take; the oldest go first (checked every minute; 0: no cap).",
    },
    KeySpec {
        key: "alerts.tick",
        default: Some("5s"),
        doc: "How often alert rules are evaluated.",
    },
    KeySpec {
        key: "console.origin",
        default: None,
        doc: "The console's public origin (e.g. `https://sightline.example.com`) when a proxy in front rewrites `Host`; a cookie-authenticated change must carry it as `Origin` (default: the request's own `Host`).",
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
        key: "limit.agent.series",
        default: Some("10000"),
        doc: "Series (name and labels) one agent may have; samples of new series beyond are refused in the ack.",
    },
    KeySpec {
        key: "limit.sample.labels",
        default: Some("32"),
        doc: "Labels one sample may carry; a sample with more is refused in the ack.",
    },
    KeySpec {
        key: "limit.label.key.bytes",
        default: Some("128"),
        doc: "Longest label key; a sample with a longer one is refused in the ack.",
    },
    KeySpec {
        key: "limit.label.value.bytes",
        default: Some("1024"),
        doc: "Longest label value; a sample with a longer one is refused in the ack.",
    },
    KeySpec {
        key: "limit.metric.name.bytes",
        default: Some("256"),
        doc: "Longest metric name; a sample with a longer one is refused in the ack.",
    },
    KeySpec {
        key: "limit.hello.field.bytes",
        default: Some("256"),
        doc: "Longest string field of an agent's Hello (oname, hostname, ...); a longer one is refused.",
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
    /// Where data is kept (`store`, else `sqlite:` and `data.dir`).
    pub store: StoreUrl,
    /// What agents may make the store keep.
    pub store_limits: StoreLimits,
    /// What agents may send.
    pub ingest_limits: IngestLimits,
    /// Data older than this is removed.
    pub retention: Duration,
    /// Log records older than this are removed.
    pub log_retention: Duration,
    /// The log store is kept under this many bytes (0: no cap).
    pub log_max_bytes: u64,
    /// Database snapshots older than this are removed.
    pub db_retention: Duration,
    /// Database snapshots are kept under this many bytes (0: no cap).
    pub db_max_bytes: u64,
    /// URL checks older than this are removed.
    pub url_retention: Duration,
    /// URL checks are kept under this many bytes (0: no cap).
    pub url_max_bytes: u64,
    /// Certificate and key files, for TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How often alert rules are evaluated.
    pub alerts_tick: Duration,
    /// The console's public origin (`scheme://host[:port]`), when set.
    pub console_origin: Option<String>,
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
            store: store_url(config)?,
            store_limits: StoreLimits {
                series_per_agent: config.number("limit.agent.series", "a number of series")?,
            },
            ingest_limits: IngestLimits {
                max_streams: IngestLimits::default().max_streams,
                hello_field_bytes: config.number("limit.hello.field.bytes", "a number of bytes")?,
                samples: SampleLimits {
                    labels_per_sample: config
                        .number("limit.sample.labels", "a number of labels")?,
                    label_key_bytes: config.number("limit.label.key.bytes", "a number of bytes")?,
                    label_value_bytes: config
                        .number("limit.label.value.bytes", "a number of bytes")?,
                    metric_name_bytes: config
                        .number("limit.metric.name.bytes", "a number of bytes")?,
                },
                series_per_agent: config.number("limit.agent.series", "a number of series")?,
            },
            retention: config.duration("retention")?,
            log_retention: match config.get("logs.retention") {
                Some(_) => config.duration("logs.retention")?,
                None => config.duration("retention")?,
            },
            log_max_bytes: config.size("logs.max_bytes")?,
            db_retention: match config.get("db.retention") {
                Some(_) => config.duration("db.retention")?,
                None => config.duration("retention")?,
            },
            db_max_bytes: config.size("db.max_bytes")?,
            url_retention: match config.get("url.retention") {
                Some(_) => config.duration("url.retention")?,
                None => config.duration("retention")?,
            },
            url_max_bytes: config.size("url.max_bytes")?,
            tls,
            alerts_tick: match config.duration("alerts.tick")? {
                d if d < Duration::from_millis(100) => {
                    return Err(ConfigError::Invalid {
                        origin: config
                            .value("alerts.tick")
                            .map_or(Origin::Default, |v| v.origin),
                        key: "alerts.tick".into(),
                        reason: "at least 100ms".into(),
                    });
                }
                d => d,
            },
            console_origin: console_origin(config)?,
            max_connections: config.number("max.connections", "a number of connections")?,
            log_level: config.get("log.level").unwrap_or_else(|| "info".into()),
        })
    }
}

/// `console.origin`: `http://` or `https://` and a host, nothing after
/// (a trailing `/` is dropped).
fn console_origin(config: &Config) -> Result<Option<String>, ConfigError> {
    let Some(value) = config.get("console.origin") else {
        return Ok(None);
    };
    let origin = value.trim().trim_end_matches('/');
    let host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"));
    match host {
        Some(h) if !h.is_empty() && !h.contains(['/', '?', '#', ' ']) => {
            Ok(Some(origin.to_ascii_lowercase()))
        }
        _ => Err(ConfigError::Invalid {
            origin: config
                .value("console.origin")
                .map_or(Origin::Default, |v| v.origin),
            key: "console.origin".into(),
            reason: "an origin like https://sightline.example.com (scheme and host, no path)"
                .into(),
        }),
    }
}

/// The store from `store`, or SQLite in `data.dir` when `store` is unset.
/// An unknown scheme is an error naming the key and the schemes known.
pub fn store_url(config: &Config) -> Result<StoreUrl, ConfigError> {
    if let Some(url) = config.parse_with("store", StoreUrl::parse)? {
        return Ok(url);
    }
    Ok(StoreUrl::Sqlite(PathBuf::from(
        config
            .get("data.dir")
            .unwrap_or_else(|| "./sightline-data".into()),
    )))
}

#[cfg(test)]
mod tests {
    use agent_core::config::{FileSource, FlagValue, MapEnv};

    use super::*;

    fn config(flags: &[(&'static str, &str)]) -> Config {
        let flags: Vec<FlagValue> = flags
            .iter()
            .map(|(key, value)| FlagValue {
                key,
                value: (*value).to_string(),
                flag: "--test",
            })
            .collect();
        let missing = FileSource::Default(PathBuf::from("/nonexistent/collector.conf"));
        Config::load(&missing, &MapEnv::default(), &flags, COLLECTOR_KEYS).expect("loads")
    }

    #[test]
    fn the_store_defaults_to_sqlite_in_the_data_dir() {
        let s = ServeSettings::from_config(&config(&[("data.dir", "/tmp/x")])).expect("ok");
        assert_eq!(s.store, StoreUrl::Sqlite(PathBuf::from("/tmp/x")));
        let s = ServeSettings::from_config(&config(&[("store", "sqlite:/srv/sl")])).expect("ok");
        assert_eq!(s.store, StoreUrl::Sqlite(PathBuf::from("/srv/sl")));
    }

    #[test]
    fn an_unknown_store_scheme_names_the_key_and_the_schemes_known() {
        let e = ServeSettings::from_config(&config(&[("store", "clickhouse://db:9000")]))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("store"), "{e}");
        assert!(e.contains("unknown store scheme 'clickhouse'"), "{e}");
        assert!(e.contains("known schemes: sqlite"), "{e}");
    }

    #[test]
    fn the_console_origin_is_a_scheme_and_host() {
        let s = ServeSettings::from_config(&config(&[])).expect("ok");
        assert_eq!(s.console_origin, None);
        let s = ServeSettings::from_config(&config(&[(
            "console.origin",
            "https://Sightline.example.com/",
        )]))
        .expect("ok");
        assert_eq!(
            s.console_origin.as_deref(),
            Some("https://sightline.example.com")
        );
        for bad in [
            "sightline.example.com",
            "https://",
            "https://a.example/console",
        ] {
            let e = ServeSettings::from_config(&config(&[("console.origin", bad)]))
                .expect_err(bad)
                .to_string();
            assert!(e.contains("console.origin"), "{bad}: {e}");
        }
    }

    #[test]
    fn caps_are_read_from_their_keys() {
        let s = ServeSettings::from_config(&config(&[
            ("limit.agent.series", "5"),
            ("limit.hello.field.bytes", "64"),
        ]))
        .expect("ok");
        assert_eq!(s.store_limits.series_per_agent, 5);
        assert_eq!(s.ingest_limits.series_per_agent, 5);
        assert_eq!(s.ingest_limits.hello_field_bytes, 64);
        assert_eq!(s.ingest_limits.samples, SampleLimits::default());
    }

    #[test]
    fn log_retention_defaults_to_retention_and_the_cap_reads_sizes() {
        let s = ServeSettings::from_config(&config(&[("retention", "2d")])).expect("ok");
        assert_eq!(s.log_retention, Duration::from_secs(2 * 86_400));
        assert_eq!(s.log_max_bytes, 10 << 30);
        let s = ServeSettings::from_config(&config(&[
            ("logs.retention", "1h"),
            ("logs.max_bytes", "512MiB"),
        ]))
        .expect("ok");
        assert_eq!(s.log_retention, Duration::from_secs(3600));
        assert_eq!(s.log_max_bytes, 512 << 20);
    }

    #[test]
    fn db_retention_defaults_to_retention_and_the_cap_reads_sizes() {
        let s = ServeSettings::from_config(&config(&[("retention", "3d")])).expect("ok");
        assert_eq!(s.db_retention, Duration::from_secs(3 * 86_400));
        assert_eq!(s.db_max_bytes, 2 << 30);
        let s =
            ServeSettings::from_config(&config(&[("db.retention", "12h"), ("db.max_bytes", "0")]))
                .expect("ok");
        assert_eq!(s.db_retention, Duration::from_secs(12 * 3600));
        assert_eq!(s.db_max_bytes, 0);
    }

    #[test]
    fn url_retention_defaults_to_retention_and_the_cap_reads_sizes() {
        let s = ServeSettings::from_config(&config(&[("retention", "3d")])).expect("ok");
        assert_eq!(s.url_retention, Duration::from_secs(3 * 86_400));
        assert_eq!(s.url_max_bytes, 2 << 30);
        let s = ServeSettings::from_config(&config(&[
            ("url.retention", "90m"),
            ("url.max_bytes", "64MiB"),
        ]))
        .expect("ok");
        assert_eq!(s.url_retention, Duration::from_secs(90 * 60));
        assert_eq!(s.url_max_bytes, 64 << 20);
        assert!(ServeSettings::from_config(&config(&[("url.retention", "soon")])).is_err());
    }
}
