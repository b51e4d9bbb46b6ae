//! The database agent's keys and their resolved settings: where the server
//! is and how to log in, what to read and how much, when to raise events.
//!
//! Invariant: the password is never shown whole: [`Password`]'s `Debug`
//! masks it, and errors about it never quote it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use agent_core::config::{Config, ConfigError, KeySpec, Origin};

/// The keys `db.conf` holds besides the common ones.
pub const DB_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "interval",
        default: Some("5s"),
        doc: "How often the server is read and reported.",
    },
    KeySpec {
        key: "db.url",
        default: Some("mysql://sightline@127.0.0.1:3306/"),
        doc: "The server: `mysql://USER@HOST:PORT/`, `mysql://USER@localhost/?socket=/run/mysqld/mysqld.sock`, or a socket path (the user is then `db.user`). No password here: use `db.password` or `db.password_env`.",
    },
    KeySpec {
        key: "db.user",
        default: Some("sightline"),
        doc: "The user when `db.url` does not name one.",
    },
    KeySpec {
        key: "db.password",
        default: None,
        doc: "The user's password (`SIGHTLINE_DB_PASSWORD` overrides it); never logged whole.",
    },
    KeySpec {
        key: "db.password_env",
        default: None,
        doc: "The name of an environment variable holding the password, instead of `db.password`.",
    },
    KeySpec {
        key: "db.tls",
        default: Some("preferred"),
        doc: "TLS to the server: `disabled`, `preferred`, `required`, `verify_ca` or `verify_identity` (rustls; ignored on a socket).",
    },
    KeySpec {
        key: "db.tls.ca",
        default: None,
        doc: "PEM file of the CA that signed the server's certificate (with `verify_ca`/`verify_identity`).",
    },
    KeySpec {
        key: "db.tls.cert",
        default: None,
        doc: "PEM client certificate, for servers that require one.",
    },
    KeySpec {
        key: "db.tls.key",
        default: None,
        doc: "PEM key of `db.tls.cert`.",
    },
    KeySpec {
        key: "db.connect_timeout",
        default: Some("5s"),
        doc: "How long connecting and logging in may take.",
    },
    KeySpec {
        key: "db.statement_timeout",
        default: Some("2s"),
        doc: "Longest any of the agent's statements may run: set in the server's own dialect (`max_statement_time`, `max_execution_time`), then a `KILL QUERY` from a second connection.",
    },
    KeySpec {
        key: "db.query.max",
        default: Some("4KiB"),
        doc: "Longest query text reported, in bytes; longer ones are cut (and marked cut).",
    },
    KeySpec {
        key: "db.query.mask_literals",
        default: Some("false"),
        doc: "Replace strings, numbers, hex and IN lists in query texts with `#`.",
    },
    KeySpec {
        key: "db.sessions.idle",
        default: Some("false"),
        doc: "Report sleeping sessions too (those with an open transaction always are).",
    },
    KeySpec {
        key: "db.sessions.max",
        default: Some("200"),
        doc: "Most sessions in one snapshot, longest running first; the rest are counted.",
    },
    KeySpec {
        key: "db.lock_wait.alert",
        default: Some("10s"),
        doc: "A lock wait longer than this raises `db.lock_wait` with the lock tree (`0s` turns it off).",
    },
    KeySpec {
        key: "db.threads_running.alert",
        default: Some("32"),
        doc: "`Threads_running` above this raises `db.threads_running` with the session list (0 turns it off).",
    },
    KeySpec {
        key: "db.alert.cooldown",
        default: Some("5m"),
        doc: "Least time between two events of the same kind.",
    },
    KeySpec {
        key: "db.variables.interval",
        default: Some("1m"),
        doc: "How often global variables (max_connections, ...) are read; a change is reported.",
    },
];

/// A password; its `Debug` shows it masked.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("Password(none)")
        } else {
            write!(f, "Password({})", agent_core::license::mask(&self.0))
        }
    }
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// TCP host and port.
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix socket.
    Socket(PathBuf),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "{host}:{port}"),
            Address::Socket(path) => write!(f, "{}", path.display()),
        }
    }
}

/// TLS to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Never.
    Disabled,
    /// When the server offers it.
    Preferred,
    /// Always, without checking the certificate.
    Required,
    /// Always, the certificate checked against `db.tls.ca`.
    VerifyCa,
    /// As `VerifyCa`, and the host name checked.
    VerifyIdentity,
}

/// TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The mode.
    pub mode: TlsMode,
    /// CA file.
    pub ca: Option<PathBuf>,
    /// Client certificate and key.
    pub cert: Option<PathBuf>,
    /// Client key.
    pub key: Option<PathBuf>,
}

/// How to reach and log in to the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectSettings {
    /// Where.
    pub address: Address,
    /// Who.
    pub user: String,
    /// With what.
    pub password: Password,
    /// TLS.
    pub tls: TlsSettings,
    /// Bound on connecting and logging in.
    pub connect_timeout: Duration,
    /// Bound on each statement, in the server and on the wire.
    pub statement_timeout: Duration,
}

/// Everything the database agent reads from its config.
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// Reporting interval.
    pub interval: Duration,
    /// The connection.
    pub connect: ConnectSettings,
    /// Longest query text, bytes.
    pub query_max: usize,
    /// Mask literals in query texts.
    pub mask_literals: bool,
    /// Report sleeping sessions.
    pub sessions_idle: bool,
    /// Most sessions per snapshot.
    pub sessions_max: usize,
    /// Lock wait alert, if on.
    pub lock_wait_alert: Option<Duration>,
    /// Threads_running alert, if on.
    pub threads_running_alert: Option<u64>,
    /// Least time between two events of one kind.
    pub alert_cooldown: Duration,
    /// How often variables are read.
    pub variables_every: Duration,
}

fn invalid(config: &Config, key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: config.value(key).map_or(Origin::Default, |v| v.origin),
        key: key.into(),
        reason: reason.into(),
    }
}

/// Parses `db.url` into an address and, when it names one, a user.
pub fn parse_url(text: &str) -> Result<(Address, Option<String>), String> {
    if text.starts_with('/') {
        return Ok((Address::Socket(PathBuf::from(text)), None));
    }
    let rest = text
        .strip_prefix("mysql://")
        .or_else(|| text.strip_prefix("mariadb://"))
        .ok_or_else(|| {
            "expected mysql://USER@HOST:PORT/ or a socket path such as /run/mysqld/mysqld.sock"
                .to_string()
        })?;
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((user, hostport)) => {
            if user.contains(':') {
                return Err(
                    "a password in db.url would be logged with it; put it in db.password or db.password_env"
                        .into(),
                );
            }
            (Some(user.to_string()).filter(|u| !u.is_empty()), hostport)
        }
        None => (None, authority),
    };
    let query = tail.split_once('?').map(|(_, q)| q).unwrap_or("");
    let path = tail.split('?').next().unwrap_or("").trim_matches('/');
    if !path.is_empty() {
        return Err(format!(
            "the agent reads the whole server, not one database: remove '/{path}'"
        ));
    }
    if !query.is_empty() {
        return match query.split_once('=') {
            Some(("socket", socket)) if socket.starts_with('/') && !socket.contains('&') => {
                Ok((Address::Socket(PathBuf::from(socket)), user))
            }
            _ => Err(format!(
                "unknown parameters '{query}': only one, socket=/path, is read"
            )),
        };
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| "an IPv6 address needs its closing ']'".to_string())?;
        (host.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("no host in db.url".into());
    }
    let port = match port {
        None => 3306,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("'{p}' is not a port number"))?,
    };
    Ok((Address::Tcp { host, port }, user))
}

fn tls_mode(text: &str) -> Result<TlsMode, String> {
    Ok(match text.to_ascii_lowercase().replace('-', "_").as_str() {
        "disabled" | "off" | "false" => TlsMode::Disabled,
        "preferred" => TlsMode::Preferred,
        "required" | "on" | "true" => TlsMode::Required,
        "verify_ca" => TlsMode::VerifyCa,
        "verify_identity" => TlsMode::VerifyIdentity,
        other => {
            return Err(format!(
                "expected disabled, preferred, required, verify_ca or verify_identity, got '{other}'"
            ));
        }
    })
}

impl DbSettings {
    /// Reads and checks every key; `env` reads the variable `db.password_env` names.
    pub fn from_config(
        config: &Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<DbSettings, ConfigError> {
        let interval = config.duration("interval")?;
        if interval < Duration::from_secs(1) {
            return Err(invalid(config, "interval", "must be at least 1s"));
        }
        let (address, url_user) =
            config
                .parse_with("db.url", parse_url)?
                .ok_or_else(|| ConfigError::Missing {
                    key: "db.url".into(),
                    hint: "add 'db.url=mysql://USER@HOST:PORT/' to the config file".into(),
                })?;
        let user = url_user
            .or_else(|| config.get("db.user"))
            .unwrap_or_else(|| "sightline".into());
        let password = match (config.get("db.password"), config.get("db.password_env")) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    config,
                    "db.password_env",
                    "set db.password or db.password_env, not both",
                ));
            }
            (Some(p), None) => Password(p),
            (None, Some(var)) => match env(&var) {
                Some(p) => Password(p),
                None => {
                    return Err(invalid(
                        config,
                        "db.password_env",
                        format!("the environment variable {var} is not set"),
                    ));
                }
            },
            (None, None) => Password::default(),
        };
        let mode = config
            .parse_with("db.tls", tls_mode)?
            .unwrap_or(TlsMode::Preferred);
        let path = |key: &str| config.get(key).map(PathBuf::from);
        let tls = TlsSettings {
            mode,
            ca: path("db.tls.ca"),
            cert: path("db.tls.cert"),
            key: path("db.tls.key"),
        };
        if matches!(mode, TlsMode::VerifyCa | TlsMode::VerifyIdentity) && tls.ca.is_none() {
            return Err(invalid(
                config,
                "db.tls",
                "verify_ca and verify_identity need db.tls.ca, the CA file to check against",
            ));
        }
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(invalid(
                config,
                "db.tls.cert",
                "db.tls.cert and db.tls.key go together",
            ));
        }
        let mut statement_timeout = config.duration("db.statement_timeout")?;
        let explicit = config
            .value("db.statement_timeout")
            .is_some_and(|v| v.origin != Origin::Default);
        if !explicit {
            // The default fits any interval: at most half of it.
            statement_timeout = statement_timeout.min(interval / 2);
        }
        if statement_timeout < Duration::from_millis(100) || statement_timeout >= interval {
            return Err(invalid(
                config,
                "db.statement_timeout",
                format!(
                    "must be between 100ms and the interval ({}s)",
                    interval.as_secs()
                ),
            ));
        }
        let connect_timeout = config.duration("db.connect_timeout")?;
        if connect_timeout.is_zero() {
            return Err(invalid(
                config,
                "db.connect_timeout",
                "must be more than 0s",
            ));
        }
        let query_max = config.size("db.query.max")?;
        if !(16..=1 << 20).contains(&query_max) {
            return Err(invalid(
                config,
                "db.query.max",
                "must be between 16B and 1MiB",
            ));
        }
        let sessions_max: usize = config.number("db.sessions.max", "a number of sessions")?;
        if sessions_max == 0 {
            return Err(invalid(config, "db.sessions.max", "must be at least 1"));
        }
        let threads_running: u64 =
            config.number("db.threads_running.alert", "a number of threads")?;
        Ok(DbSettings {
            interval,
            connect: ConnectSettings {
                address,
                user,
                password,
                tls,
                connect_timeout,
                statement_timeout,
            },
            query_max: query_max as usize,
            mask_literals: config.bool("db.query.mask_literals")?,
            sessions_idle: config.bool("db.sessions.idle")?,
            sessions_max,
            lock_wait_alert: Some(config.duration("db.lock_wait.alert")?).filter(|d| !d.is_zero()),
            threads_running_alert: (threads_running > 0).then_some(threads_running),
            alert_cooldown: config.duration("db.alert.cooldown")?,
            variables_every: config.duration("db.variables.interval")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings_env(text: &str, var: Option<&str>) -> Result<DbSettings, ConfigError> {
        let keys: Vec<KeySpec> = agent_core::settings::COMMON_KEYS
            .iter()
            .chain(DB_KEYS)
            .copied()
            .collect();
        let config = Config::from_text(Path::new("db.conf"), text, &keys)?;
        let value = var.map(String::from);
        DbSettings::from_config(&config, &move |name| {
            (name == "DB_PASS").then(|| value.clone()).flatten()
        })
    }

    fn settings(text: &str) -> Result<DbSettings, ConfigError> {
        settings_env(text, None)
    }

    #[test]
    fn defaults_are_sensible() {
        let s = settings("").expect("defaults");
        assert_eq!(s.interval, Duration::from_secs(5));
        assert_eq!(
            s.connect.address,
            Address::Tcp {
                host: "127.0.0.1".into(),
                port: 3306
            }
        );
        assert_eq!(s.connect.user, "sightline");
        assert_eq!(s.query_max, 4096);
        assert!(!s.mask_literals);
        assert_eq!(s.lock_wait_alert, Some(Duration::from_secs(10)));
        assert_eq!(s.connect.tls.mode, TlsMode::Preferred);
    }

    #[test]
    fn urls_sockets_and_users() {
        let s = settings("db.url=mysql://monitor@db1.lan:3307/\n").expect("parses");
        assert_eq!(s.connect.address.to_string(), "db1.lan:3307");
        assert_eq!(s.connect.user, "monitor");
        let s = settings("db.url=/run/mysqld/mysqld.sock\ndb.user=mon\n").expect("parses");
        assert_eq!(
            s.connect.address,
            Address::Socket("/run/mysqld/mysqld.sock".into())
        );
        assert_eq!(s.connect.user, "mon");
        let s = settings("db.url=mysql://mon@localhost/?socket=/tmp/m.sock\n").expect("parses");
        assert_eq!(s.connect.address, Address::Socket("/tmp/m.sock".into()));
        let s = settings("db.url=mysql://mon@[::1]:3306\n").expect("parses");
        assert_eq!(s.connect.address.to_string(), "[::1]:3306");
    }

    #[test]
    fn bad_values_name_the_file_line_and_reason() {
        let err = settings("interval=5s\ndb.url=postgres://x@y/\n").expect_err("refused");
        assert!(
            err.to_string()
                .starts_with("db.conf:2: db.url: expected mysql://"),
            "{err}"
        );
        let err = settings("db.url=mysql://x@y:99999/\n").expect_err("refused");
        assert_eq!(
            err.to_string(),
            "db.conf:1: db.url: '99999' is not a port number"
        );
        let err = settings("db.tls=sometimes\n").expect_err("refused");
        assert!(
            err.to_string()
                .starts_with("db.conf:1: db.tls: expected disabled")
        );
        let err = settings("db.tls=verify_ca\n").expect_err("refused");
        assert!(err.to_string().contains("db.tls.ca"), "{err}");
        let short = settings("interval=1s\n").expect("the default fits");
        assert_eq!(short.connect.statement_timeout, Duration::from_millis(500));
        let err = settings("db.statement_timeout=10s\n").expect_err("refused");
        assert!(
            err.to_string()
                .starts_with("db.conf:1: db.statement_timeout")
        );
        let err = settings("db.query.max=1\n").expect_err("refused");
        assert!(err.to_string().starts_with("db.conf:1: db.query.max"));
    }

    #[test]
    fn a_password_in_the_url_is_refused_without_being_echoed() {
        let err = settings("db.url=mysql://root:Hunter2Secret@db:3306/\n").expect_err("refused");
        let shown = err.to_string();
        assert!(shown.contains("db.password"), "{shown}");
        assert!(!shown.contains("Hunter2Secret"), "{shown}");
    }

    #[test]
    fn the_password_comes_from_the_file_or_a_named_variable_and_is_never_shown() {
        let s = settings("db.password=CorrectHorseBattery\n").expect("parses");
        assert_eq!(s.connect.password.0, "CorrectHorseBattery");
        let shown = format!("{s:?}");
        assert!(!shown.contains("CorrectHorseBattery"), "{shown}");
        let s = settings_env("db.password_env=DB_PASS\n", Some("FromTheEnvironment")).expect("env");
        assert_eq!(s.connect.password.0, "FromTheEnvironment");
        let err = settings_env("db.password_env=DB_PASS\n", None).expect_err("unset");
        assert_eq!(
            err.to_string(),
            "db.conf:1: db.password_env: the environment variable DB_PASS is not set"
        );
        assert!(settings("db.password=a\ndb.password_env=DB_PASS\n").is_err());
    }

    #[test]
    fn zero_turns_alerts_off() {
        let s = settings("db.lock_wait.alert=0s\ndb.threads_running.alert=0\n").expect("parses");
        assert_eq!(s.lock_wait_alert, None);
        assert_eq!(s.threads_running_alert, None);
    }
}
