//! The URL agent's keys and their resolved settings: one [`Target`] per
//! `target.<name>` group, from `url.conf` and from the targets file
//! (`url.targets`), which holds `target.*` lines only and is re-read
//! without a restart.
//!
//! Everything is checked at load: URLs, regexes, JSON conditions, the CA
//! file, the environment variable holding a secret. A secret's value lives
//! only in [`Auth`], whose `Debug` masks it; it is never logged.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use agent_core::config::{Config, ConfigError, Env, KeySpec, Origin};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Uri};
use regex::Regex;

use crate::expect::{JsonExpect, StatusSet};
use crate::tls::TrustRoots;

/// Every key `url.conf` holds besides the common ones: the agent's two,
/// then a target's (`*` is its name).
pub const URL_KEYS: &[KeySpec] = &[
    KeySpec {
        key: "url.targets",
        default: None,
        doc: "A file of `target.*` lines, watched and re-read without a restart (a bad file keeps the old targets).",
    },
    KeySpec {
        key: "url.concurrency",
        default: Some("256"),
        doc: "Most checks in flight at once across all targets.",
    },
    KeySpec {
        key: "target.*.url",
        default: None,
        doc: "The URL to check, `http://` or `https://` (required for each target).",
    },
    KeySpec {
        key: "target.*.method",
        default: Some("GET"),
        doc: "The request method: `GET`, `HEAD`, `POST`, ...",
    },
    KeySpec {
        key: "target.*.headers",
        default: None,
        doc: "Request headers, `Name: value` pairs separated by `|`.",
    },
    KeySpec {
        key: "target.*.body",
        default: None,
        doc: "The request body (for `POST`, `PUT`).",
    },
    KeySpec {
        key: "target.*.interval",
        default: Some("60s"),
        doc: "How often the target is checked while not DOWN.",
    },
    KeySpec {
        key: "target.*.down_interval",
        default: None,
        doc: "How often the target is checked while DOWN; a quarter of `.interval` when unset.",
    },
    KeySpec {
        key: "target.*.timeout",
        default: Some("10s"),
        doc: "Bound on the whole check, redirects included; a timeout is reported with the phase it hit.",
    },
    KeySpec {
        key: "target.*.fail_after",
        default: Some("2"),
        doc: "Failed checks in a row before the target is DOWN (PENDING until then).",
    },
    KeySpec {
        key: "target.*.expect.status",
        default: Some("200-399"),
        doc: "Accepted status codes: codes, ranges and classes, e.g. `200-299,301,4xx`.",
    },
    KeySpec {
        key: "target.*.expect.body",
        default: None,
        doc: "A regex the body must match (the first 1 MiB is searched).",
    },
    KeySpec {
        key: "target.*.expect.body_not",
        default: None,
        doc: "A regex the body must not match.",
    },
    KeySpec {
        key: "target.*.expect.json",
        default: None,
        doc: "Conditions on a JSON body joined by `&&`: `$.status == \"ok\" && $.items.length > 0` (`==`, `!=`, `<`, `<=`, `>`, `>=` against numbers, strings, `true`, `false`, `null`).",
    },
    KeySpec {
        key: "target.*.expect.max_time",
        default: None,
        doc: "Slower than this (total), a passing target is DEGRADED.",
    },
    KeySpec {
        key: "target.*.follow_redirects",
        default: Some("true"),
        doc: "Follow redirects (loops are detected and fail the check).",
    },
    KeySpec {
        key: "target.*.max_redirects",
        default: Some("10"),
        doc: "Most redirects followed before the check fails.",
    },
    KeySpec {
        key: "target.*.reuse",
        default: Some("false"),
        doc: "Keep the connection for the next check (then DNS, connect and TLS are not measured again); off, each check measures a fresh connection.",
    },
    KeySpec {
        key: "target.*.tls.insecure",
        default: Some("false"),
        doc: "Accept any certificate (expiry is still reported, from the leaf the server sent).",
    },
    KeySpec {
        key: "target.*.tls.ca",
        default: None,
        doc: "PEM file of the CAs to trust instead of the system roots.",
    },
    KeySpec {
        key: "target.*.tls.min_days",
        default: Some("14"),
        doc: "Raise `url.cert_expiring` when the verified chain has fewer days left than this.",
    },
    KeySpec {
        key: "target.*.ip_version",
        default: None,
        doc: "`4` or `6` to use only that address family; either when unset.",
    },
    KeySpec {
        key: "target.*.proxy",
        default: None,
        doc: "HTTP proxy, `http://host:port` (HTTPS goes through it with CONNECT).",
    },
    KeySpec {
        key: "target.*.auth.user",
        default: None,
        doc: "User for basic authentication; the password comes from `.auth.password_env`.",
    },
    KeySpec {
        key: "target.*.auth.password_env",
        default: None,
        doc: "Environment variable holding the basic-authentication password (never logged).",
    },
    KeySpec {
        key: "target.*.auth.token_env",
        default: None,
        doc: "Environment variable holding a bearer token (never logged).",
    },
];

/// The keys of one target, the lines a targets file may hold.
pub const TARGET_KEYS: &[KeySpec] = URL_KEYS.split_at(2).1;

/// Authentication, with its secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Basic`.
    Basic {
        /// The user.
        user: String,
        /// The password.
        password: String,
    },
    /// `Authorization: Bearer`.
    Bearer(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Basic { user, .. } => write!(f, "Basic({user}:****)"),
            Auth::Bearer(_) => f.write_str("Bearer(****)"),
        }
    }
}

impl Auth {
    /// The `Authorization` header value.
    pub fn header(&self) -> String {
        match self {
            Auth::Basic { user, password } => {
                format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
            }
            Auth::Bearer(token) => format!("Bearer {token}"),
        }
    }
}

fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The conditions of one target.
#[derive(Debug, Clone)]
pub struct Expect {
    /// Accepted status codes.
    pub status: StatusSet,
    /// Regex the body must match.
    pub body: Option<Regex>,
    /// Regex the body must not match.
    pub body_not: Option<Regex>,
    /// JSON conditions.
    pub json: Option<JsonExpect>,
    /// Slower than this is DEGRADED.
    pub max_time: Option<Duration>,
}

/// One target, resolved.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its name.
    pub name: String,
    /// The URL as configured.
    pub url: Uri,
    /// The method.
    pub method: Method,
    /// Extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body sent.
    pub body: Bytes,
    /// Period while not DOWN.
    pub interval: Duration,
    /// Period while DOWN.
    pub down_interval: Duration,
    /// Bound on a whole check.
    pub timeout: Duration,
    /// Failures in a row before DOWN.
    pub fail_after: u32,
    /// Conditions.
    pub expect: Expect,
    /// Follow redirects.
    pub follow_redirects: bool,
    /// Most redirects.
    pub max_redirects: u32,
    /// Keep the connection between checks.
    pub reuse: bool,
    /// Accept any certificate.
    pub tls_insecure: bool,
    /// Roots to verify against.
    pub roots: Arc<TrustRoots>,
    /// `url.cert_expiring` below this many days.
    pub tls_min_days: i32,
    /// Address family, 4 or 6.
    pub ip_version: Option<u8>,
    /// HTTP proxy.
    pub proxy: Option<Uri>,
    /// Authentication.
    pub auth: Option<Auth>,
}

impl PartialEq for Target {
    /// Two targets are the same when configured the same (a reload that
    /// changes nothing about a target keeps its state and schedule).
    fn eq(&self, other: &Target) -> bool {
        format!("{self:?}") == format!("{other:?}") && self.auth == other.auth
    }
}

/// Everything the URL agent reads.
#[derive(Debug, Clone)]
pub struct UrlSettings {
    /// Targets from `url.conf`, by name.
    pub targets: BTreeMap<String, Target>,
    /// The targets file, if any.
    pub targets_file: Option<PathBuf>,
    /// Checks in flight at most.
    pub concurrency: usize,
}

fn invalid(config: &Config, key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: config.value(key).map_or(Origin::Default, |v| v.origin),
        key: key.to_string(),
        reason: reason.into(),
    }
}

impl UrlSettings {
    /// Reads and checks every key; secrets come from `env`.
    pub fn from_config(config: &Config, env: &dyn Env) -> Result<UrlSettings, ConfigError> {
        let concurrency: usize = config.number("url.concurrency", "a number of checks")?;
        if concurrency == 0 {
            return Err(invalid(config, "url.concurrency", "must be at least 1"));
        }
        Ok(UrlSettings {
            targets: targets(config, env)?,
            targets_file: config.get("url.targets").map(PathBuf::from),
            concurrency,
        })
    }
}

/// Every `target.<name>` group of `config`.
pub fn targets(config: &Config, env: &dyn Env) -> Result<BTreeMap<String, Target>, ConfigError> {
    let mut out = BTreeMap::new();
    for name in config.group_names("target") {
        out.insert(name.clone(), target(config, &name, env)?);
    }
    Ok(out)
}

/// Reads a targets file: `target.*` lines only; an unknown key is an error
/// (a typo must not silently drop a condition).
pub fn read_targets_file(
    path: &Path,
    env: &dyn Env,
) -> Result<BTreeMap<String, Target>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let config = Config::from_text(path, &text, TARGET_KEYS)?;
    if let Some(w) = config.warnings().first() {
        return Err(ConfigError::Invalid {
            origin: w.origin.clone(),
            key: "target".into(),
            reason: w.message.clone(),
        });
    }
    targets(&config, env)
}

fn secret(config: &Config, key: &str, env: &dyn Env) -> Result<Option<String>, ConfigError> {
    let Some(var) = config.get(key) else {
        return Ok(None);
    };
    match env.vars().into_iter().find(|(k, _)| *k == var) {
        Some((_, v)) if !v.is_empty() => Ok(Some(v)),
        _ => Err(invalid(
            config,
            key,
            format!("environment variable {var} is not set"),
        )),
    }
}

fn target(config: &Config, name: &str, env: &dyn Env) -> Result<Target, ConfigError> {
    let key = |k: &str| format!("target.{name}.{k}");
    let url_key = key("url");
    let url_text = match config.require(&url_key, &format!("add '{url_key}=https://...'")) {
        Ok(v) => v.text,
        Err(missing) => {
            // Name the line of the group's first key, so a targets file's
            // mistake says where it is.
            let origin = TARGET_KEYS
                .iter()
                .filter_map(|spec| config.value(&spec.key.replace('*', name)))
                .map(|v| v.origin)
                .find(|o| *o != Origin::Default);
            return Err(match origin {
                Some(origin) => ConfigError::Invalid {
                    origin,
                    key: url_key.clone(),
                    reason: "is not set: every target needs a url".into(),
                },
                None => missing,
            });
        }
    };
    let url: Uri = url_text
        .parse()
        .map_err(|e| invalid(config, &url_key, format!("not a URL: {e}")))?;
    if url.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(invalid(
            config,
            &url_key,
            "credentials in the URL would be sent and shown; use .auth.user and .auth.password_env",
        ));
    }
    if name.len() > 128 {
        return Err(invalid(
            config,
            &url_key,
            "a target's name is at most 128 bytes",
        ));
    }
    match url.scheme_str() {
        Some("http" | "https") if url.host().is_some() => {}
        _ => {
            return Err(invalid(
                config,
                &url_key,
                "expected an http:// or https:// URL with a host",
            ));
        }
    }
    let method_key = key("method");
    let method = config
        .get(&method_key)
        .unwrap_or_else(|| "GET".into())
        .to_ascii_uppercase();
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| invalid(config, &method_key, "not an HTTP method"))?;
    let headers_key = key("headers");
    let mut headers = Vec::new();
    for pair in config
        .get(&headers_key)
        .unwrap_or_default()
        .split('|')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let Some((n, v)) = pair.split_once(':') else {
            return Err(invalid(config, &headers_key, "expected 'Name: value'"));
        };
        let n = HeaderName::from_bytes(n.trim().as_bytes()).map_err(|_| {
            invalid(
                config,
                &headers_key,
                format!("bad header name '{}'", n.trim()),
            )
        })?;
        let v = HeaderValue::from_str(v.trim())
            .map_err(|_| invalid(config, &headers_key, format!("bad value for header '{n}'")))?;
        headers.push((n, v));
    }
    let interval = config.duration(&key("interval"))?;
    if interval < Duration::from_secs(1) {
        return Err(invalid(config, &key("interval"), "must be at least 1s"));
    }
    let down_interval = config
        .parse_with(&key("down_interval"), agent_core::config::parse_duration)?
        .unwrap_or(interval / 4)
        .max(Duration::from_millis(250));
    let timeout = config.duration(&key("timeout"))?;
    if timeout.is_zero() {
        return Err(invalid(config, &key("timeout"), "must be more than 0"));
    }
    let regex = |k: &str| -> Result<Option<Regex>, ConfigError> {
        config.parse_with(&key(k), |t| {
            Regex::new(t).map_err(|e| format!("bad regex: {e}"))
        })
    };
    let expect = Expect {
        status: config
            .parse_with(&key("expect.status"), StatusSet::parse)?
            .ok_or_else(|| invalid(config, &key("expect.status"), "must not be empty"))?,
        body: regex("expect.body")?,
        body_not: regex("expect.body_not")?,
        json: config.parse_with(&key("expect.json"), JsonExpect::parse)?,
        max_time: config.parse_with(&key("expect.max_time"), agent_core::config::parse_duration)?,
    };
    let ca_key = key("tls.ca");
    let roots = match config.get(&ca_key) {
        Some(path) => Arc::new(
            TrustRoots::from_pem_file(Path::new(&path))
                .map_err(|e| invalid(config, &ca_key, e.to_string()))?,
        ),
        None => TrustRoots::system(),
    };
    let ip_key = key("ip_version");
    let ip_version = match config.get(&ip_key).as_deref() {
        None => None,
        Some("4") => Some(4),
        Some("6") => Some(6),
        Some(_) => return Err(invalid(config, &ip_key, "expected 4 or 6")),
    };
    let proxy_key = key("proxy");
    let proxy = config.parse_with(&proxy_key, |t| {
        let uri: Uri = t.parse().map_err(|e| format!("not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err("expected http://host:port".into());
        }
        Ok(uri)
    })?;
    let auth = match (
        config.get(&key("auth.user")),
        secret(config, &key("auth.password_env"), env)?,
        secret(config, &key("auth.token_env"), env)?,
    ) {
        (_, Some(_), Some(_)) => {
            return Err(invalid(
                config,
                &key("auth.token_env"),
                "set either a password or a token, not both",
            ));
        }
        (Some(user), password, None) => Some(Auth::Basic {
            user,
            password: password.unwrap_or_default(),
        }),
        (None, Some(_), None) => {
            return Err(invalid(
                config,
                &key("auth.password_env"),
                "a password needs .auth.user",
            ));
        }
        (None, None, Some(token)) => Some(Auth::Bearer(token)),
        (Some(_), _, Some(_)) => {
            return Err(invalid(
                config,
                &key("auth.user"),
                "a bearer token takes no user",
            ));
        }
        (None, None, None) => None,
    };
    let fail_after: u32 = config.number(&key("fail_after"), "a number of checks")?;
    Ok(Target {
        name: name.to_string(),
        url,
        method,
        headers,
        body: Bytes::from(config.get(&key("body")).unwrap_or_default()),
        interval,
        down_interval,
        timeout,
        fail_after: fail_after.max(1),
        expect,
        follow_redirects: config.bool(&key("follow_redirects"))?,
        max_redirects: config.number(&key("max_redirects"), "a number of redirects")?,
        reuse: config.bool(&key("reuse"))?,
        tls_insecure: config.bool(&key("tls.insecure"))?,
        roots,
        tls_min_days: config.number(&key("tls.min_days"), "a number of days")?,
        ip_version,
        proxy,
        auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_core::config::MapEnv;

    fn keys() -> Vec<KeySpec> {
        agent_core::settings::COMMON_KEYS
            .iter()
            .chain(URL_KEYS)
            .copied()
            .collect()
    }

    fn settings(text: &str, env: &MapEnv) -> Result<UrlSettings, ConfigError> {
        UrlSettings::from_config(
            &Config::from_text(Path::new("url.conf"), text, &keys())?,
            env,
        )
    }

    #[test]
    fn a_target_takes_the_issues_defaults() {
        let s =
            settings("target.home.url=https://example.com/\n", &MapEnv::new([])).expect("loads");
        let t = &s.targets["home"];
        assert_eq!(t.method, Method::GET);
        assert_eq!(t.interval, Duration::from_secs(60));
        assert_eq!(t.down_interval, Duration::from_secs(15));
        assert_eq!(t.timeout, Duration::from_secs(10));
        assert_eq!(t.fail_after, 2);
        assert_eq!(t.tls_min_days, 14);
        assert!(t.expect.status.accepts(200) && t.expect.status.accepts(399));
        assert!(!t.expect.status.accepts(404));
        assert!(t.follow_redirects);
        assert_eq!(s.concurrency, 256);
    }

    #[test]
    fn every_key_is_read() {
        let env = MapEnv::new([("API_PW", "s3cret-pw")]);
        let text = "target.api.url=http://127.0.0.1:8080/health\ntarget.api.method=post\n\
            target.api.headers=Accept: application/json | X-Trace: 1\ntarget.api.body={\"a\":1}\n\
            target.api.interval=30s\ntarget.api.down_interval=5s\ntarget.api.timeout=2s\n\
            target.api.fail_after=3\ntarget.api.expect.status=200,204\ntarget.api.expect.body=ok\n\
            target.api.expect.body_not=error\ntarget.api.expect.json=$.status == \"ok\"\n\
            target.api.expect.max_time=300ms\ntarget.api.follow_redirects=false\n\
            target.api.max_redirects=3\ntarget.api.tls.insecure=true\ntarget.api.tls.min_days=30\n\
            target.api.ip_version=4\ntarget.api.proxy=http://proxy.lan:3128\n\
            target.api.auth.user=monitor\ntarget.api.auth.password_env=API_PW\n";
        let s = settings(text, &env).expect("loads");
        let t = &s.targets["api"];
        assert_eq!(t.method, Method::POST);
        assert_eq!(t.headers.len(), 2);
        assert_eq!(t.headers[1].0, "x-trace");
        assert_eq!(&t.body[..], b"{\"a\":1}");
        assert_eq!(t.down_interval, Duration::from_secs(5));
        assert_eq!(t.fail_after, 3);
        assert!(t.expect.body.is_some() && t.expect.body_not.is_some() && t.expect.json.is_some());
        assert_eq!(t.expect.max_time, Some(Duration::from_millis(300)));
        assert!(!t.follow_redirects && t.tls_insecure);
        assert_eq!(
            (t.max_redirects, t.tls_min_days, t.ip_version),
            (3, 30, Some(4))
        );
        assert!(t.proxy.is_some());
        assert_eq!(
            t.auth.as_ref().map(Auth::header).as_deref(),
            Some("Basic bW9uaXRvcjpzM2NyZXQtcHc=")
        );
        let shown = format!("{t:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn mistakes_name_the_line_and_key() {
        let env = MapEnv::new([]);
        let err = |t: &str| settings(t, &env).expect_err(t).to_string();
        assert_eq!(
            err("target.a.url=https://x/\ntarget.a.expect.json=$.a = 1\n"),
            "url.conf:2: target.a.expect.json: expected one of == != < <= > >= at column 5: '$.a = 1'"
        );
        assert!(err("target.a.url=ftp://x/\n").contains("url.conf:1: target.a.url"));
        assert!(err("target.a.url=https://x/\ntarget.a.expect.body=(\n").contains("bad regex"));
        assert!(
            err("target.a.url=https://x/\ntarget.a.auth.token_env=NOPE\n")
                .contains("environment variable NOPE is not set")
        );
        assert!(err("target.a.method=GET\n").contains("target.a.url"));
        let creds = err("target.a.url=https://me:hunter2@x/\n");
        assert!(creds.contains("credentials in the URL"), "{creds}");
        assert!(!creds.contains("hunter2"), "{creds}");
    }

    #[test]
    fn a_targets_file_names_the_line_of_a_target_without_a_url() {
        let dir = std::env::temp_dir().join(format!("sl-url-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("targets");
        std::fs::write(&path, "target.a.url=http://x/\n\ntarget.b.timeout=1s\n").expect("write");
        let err = read_targets_file(&path, &MapEnv::new([])).expect_err("refused");
        assert_eq!(
            err.to_string(),
            format!(
                "{}:3: target.b.url: is not set: every target needs a url",
                path.display()
            )
        );
        std::fs::write(&path, "target.a.url=http://x/\ntarget.a.tiemout=1s\n").expect("write");
        let err = read_targets_file(&path, &MapEnv::new([])).expect_err("refused");
        assert!(err.to_string().contains(":2: "), "{err}");
        assert!(
            err.to_string().contains("did you mean 'target.*.timeout'"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).expect("clean");
    }

    #[test]
    fn a_bearer_token_is_taken_from_the_environment_and_never_shown() {
        let env = MapEnv::new([("TOK", "abcdef123456")]);
        let s = settings(
            "target.a.url=https://x/\ntarget.a.auth.token_env=TOK\n",
            &env,
        )
        .expect("loads");
        let t = &s.targets["a"];
        assert_eq!(
            t.auth.as_ref().map(Auth::header).as_deref(),
            Some("Bearer abcdef123456")
        );
        assert!(!format!("{s:?}").contains("abcdef"));
    }

    #[test]
    fn base64_pads_like_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }
}
