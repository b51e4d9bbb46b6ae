//! Alerts: rules per project ([`rules`]), evaluated on a tick by
//! [`evaluate`] into alerts that fire and resolve ([`state`]), each change
//! recorded with its history and, unless the agent is paused, queued as
//! notifications in the store for [`notify`] to deliver (webhook, Slack
//! body, e-mail over SMTP), retried with backoff, every attempt recorded.
//!
//! Invariants:
//! - A notification is queued in the same transaction that records the
//!   change it tells, so a crash loses neither, and one change is told
//!   once per channel (the queue marks it sent before moving on).
//! - Secrets of channels (SMTP passwords, webhook URLs that carry tokens)
//!   are never logged and never returned whole by the API:
//!   [`ChannelConfig::masked`] is what leaves the process.
//! - Every loop here stops on shutdown and does bounded work per tick.

pub mod evaluate;
pub mod notify;
pub mod rules;
pub mod state;

use serde::{Deserialize, Serialize};

/// A rule as the API takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Its name, unique in the project.
    pub name: String,
    /// The condition, in the rule language ([`rules`]).
    pub expr: String,
    /// Only the agent of this name (`oname`).
    #[serde(default)]
    pub agent: Option<String>,
    /// Only agents of this product (`infra`, `db`, `log`, `url`).
    #[serde(default)]
    pub product: Option<String>,
    /// `info`, `warning` or `critical`.
    #[serde(default = "default_severity")]
    pub severity: String,
    /// The channels told (their ids).
    #[serde(default)]
    pub channels: Vec<i64>,
    /// How often a firing alert is told again (`30m`; none by default).
    #[serde(default)]
    pub renotify: Option<String>,
    /// Whether it is evaluated.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_severity() -> String {
    "warning".into()
}

fn default_true() -> bool {
    true
}

/// Severities a rule may have.
pub const SEVERITIES: &[&str] = &["info", "warning", "critical"];

/// The longest `for`, `clear` or log window a rule may have (1 day).
pub const MAX_RULE_SPAN_MS: i64 = 86_400_000;
/// The shortest `renotify` (1 min; shorter would flood the channels).
pub const MIN_RENOTIFY_MS: i64 = 60_000;

impl RuleSpec {
    /// Whether two versions of a rule watch the same thing, so their
    /// alerts carry over (a name, severity, channel, re-notify or enabled
    /// change keeps them; an `expr`, `agent` or `product` change resets).
    pub fn same_condition(&self, other: &RuleSpec) -> bool {
        self.expr == other.expr && self.agent == other.agent && self.product == other.product
    }

    /// Checks the spec and parses its condition; the error is for the
    /// API's caller.
    pub fn check(&self) -> Result<rules::Condition, String> {
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err("name: 1 to 200 characters".into());
        }
        if !SEVERITIES.contains(&self.severity.as_str()) {
            return Err(format!(
                "severity: expected one of {}",
                SEVERITIES.join(", ")
            ));
        }
        if self.channels.len() > 20 {
            return Err("channels: at most 20".into());
        }
        let name = &self.name;
        let renotify_ms = self
            .renotify_ms()
            .map_err(|e| format!("rule '{name}': {e}"))?;
        if renotify_ms != 0 && renotify_ms < MIN_RENOTIFY_MS {
            return Err(format!("rule '{name}': renotify: at least 1 min"));
        }
        let condition = rules::parse(name, &self.expr).map_err(|e| e.to_string())?;
        // Bounds that keep each tick's reads bounded and a rule meaningful.
        let (field, ms) = match &condition {
            rules::Condition::Threshold { for_ms, .. } => ("for", *for_ms),
            rules::Condition::Event { clear_ms, .. } => ("clear", *clear_ms),
            rules::Condition::LogPattern { window_ms, .. }
            | rules::Condition::Log { window_ms, .. } => ("window", *window_ms),
            rules::Condition::NoData | rules::Condition::Url { .. } => ("", 0),
        };
        if ms > MAX_RULE_SPAN_MS {
            return Err(format!("rule '{name}': {field}: at most 24 h"));
        }
        Ok(condition)
    }

    /// The re-notify interval, ms (0: never).
    pub fn renotify_ms(&self) -> Result<i64, String> {
        match &self.renotify {
            None => Ok(0),
            Some(text) => agent_core::config::parse_duration(text)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .map_err(|e| format!("renotify: {e}")),
        }
    }
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleRow {
    /// Its id.
    pub id: i64,
    /// Its project.
    #[serde(skip)]
    pub project_id: i64,
    /// What it is.
    #[serde(flatten)]
    pub spec: RuleSpec,
    /// Created, unix ms.
    pub created_ms: i64,
    /// Last changed, unix ms.
    pub updated_ms: i64,
}

/// How a webhook's body looks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The alert as JSON (see the README).
    #[default]
    Json,
    /// `{"text": "..."}`, as Slack's incoming webhooks take it.
    Slack,
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain, upgraded by STARTTLS, refused if the server cannot.
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS at all (a relay on loopback).
    None,
}

/// Where a channel sends, with its secrets.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelConfig {
    /// An HTTP POST.
    Webhook {
        /// `http://` or `https://` URL (it may carry a token: a secret).
        url: String,
        /// The body's shape.
        #[serde(default)]
        format: WebhookFormat,
        /// PEM certificates to trust besides the system's (an `https://`
        /// endpoint with a private CA).
        #[serde(default)]
        ca_pem: Option<String>,
    },
    /// Mail over SMTP.
    Email {
        /// The SMTP server.
        host: String,
        /// Its port (587 by default).
        #[serde(default = "default_smtp_port")]
        port: u16,
        /// How the connection is secured.
        #[serde(default)]
        tls: SmtpTls,
        /// Login, if the server wants one.
        #[serde(default)]
        username: Option<String>,
        /// Password (a secret).
        #[serde(default)]
        password: Option<String>,
        /// The sender address.
        from: String,
        /// The recipients.
        to: Vec<String>,
        /// PEM certificates to trust besides the system's (a private CA).
        #[serde(default)]
        ca_pem: Option<String>,
    },
}

fn default_smtp_port() -> u16 {
    587
}

impl std::fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.masked())
    }
}

/// A URL with whatever may be a secret masked: the user-info, and the path
/// and query beyond their first 4 and last 4 characters.
pub fn mask_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let path = if path.len() > 12 {
        agent_core::license::mask(path)
    } else if path.len() > 1 {
        "/…".to_string()
    } else {
        path.to_string()
    };
    if scheme.is_empty() {
        format!("{host}{path}")
    } else {
        format!("{scheme}://{host}{path}")
    }
}

impl ChannelConfig {
    /// Checks what the API was given.
    pub fn check(&self) -> Result<(), String> {
        match self {
            ChannelConfig::Webhook { url, ca_pem, .. } => {
                let ok = (url.starts_with("http://") || url.starts_with("https://"))
                    && url.parse::<hyper::Uri>().is_ok_and(|u| u.host().is_some());
                if !ok {
                    return Err("url: expected an http:// or https:// URL".into());
                }
                if let Some(pem) = ca_pem
                    && notify::webhook::extra_roots(pem).is_err()
                {
                    return Err("ca_pem: not a PEM certificate".into());
                }
            }
            ChannelConfig::Email {
                host,
                tls,
                password,
                from,
                to,
                ca_pem,
                ..
            } => {
                if host.trim().is_empty() {
                    return Err("host: required".into());
                }
                if *tls == SmtpTls::None && password.is_some() && !is_loopback_host(host) {
                    return Err(
                        "password: refused with tls \"none\" unless the host is loopback (it would cross the network in clear)"
                            .into(),
                    );
                }
                if from.parse::<lettre::message::Mailbox>().is_err() {
                    return Err(format!("from: not an address: '{from}'"));
                }
                if to.is_empty() || to.len() > 50 {
                    return Err("to: 1 to 50 addresses".into());
                }
                if let Some(bad) = to
                    .iter()
                    .find(|a| a.parse::<lettre::message::Mailbox>().is_err())
                {
                    return Err(format!("to: not an address: '{bad}'"));
                }
                if let Some(pem) = ca_pem
                    && lettre::transport::smtp::client::Certificate::from_pem(pem.as_bytes())
                        .is_err()
                {
                    return Err("ca_pem: not a PEM certificate".into());
                }
            }
        }
        Ok(())
    }

    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelConfig::Webhook { .. } => "webhook",
            ChannelConfig::Email { .. } => "email",
        }
    }

    /// As the API shows it: the URL masked, no password (only whether one
    /// is set), no CA text (only whether one is set).
    pub fn masked(&self) -> serde_json::Value {
        match self {
            ChannelConfig::Webhook {
                url,
                format,
                ca_pem,
            } => serde_json::json!({
                "kind": "webhook",
                "url": mask_url(url),
                "format": format,
                "ca_pem_set": ca_pem.is_some(),
            }),
            ChannelConfig::Email {
                host,
                port,
                tls,
                username,
                password,
                from,
                to,
                ca_pem,
            } => serde_json::json!({
                "kind": "email",
                "host": host,
                "port": port,
                "tls": tls,
                "username": username,
                "password_set": password.is_some(),
                "from": from,
                "to": to,
                "ca_pem_set": ca_pem.is_some(),
            }),
        }
    }

    /// `self` with the secrets `update` left out taken from `old`: a
    /// client that read a masked channel can send it back changed without
    /// knowing the secrets. An SMTP password is kept only for the same
    /// server and login (`host`, `port`, `tls`, `username` unchanged): one
    /// left out for another is an error (it would go where it was never
    /// meant to).
    pub fn keep_secrets_from(self, old: &ChannelConfig) -> Result<ChannelConfig, String> {
        Ok(match (self, old) {
            (
                ChannelConfig::Webhook {
                    url,
                    format,
                    ca_pem,
                },
                ChannelConfig::Webhook { url: old_url, .. },
            ) if url.is_empty() || url == mask_url(old_url) => ChannelConfig::Webhook {
                url: old_url.clone(),
                format,
                ca_pem,
            },
            (
                ChannelConfig::Email {
                    host,
                    port,
                    tls,
                    username,
                    password: None,
                    from,
                    to,
                    ca_pem,
                },
                ChannelConfig::Email {
                    host: old_host,
                    port: old_port,
                    tls: old_tls,
                    username: old_username,
                    password: Some(old_password),
                    ..
                },
            ) => {
                if host != *old_host
                    || port != *old_port
                    || tls != *old_tls
                    || username != *old_username
                {
                    return Err("password: required when host, port, tls or username change".into());
                }
                ChannelConfig::Email {
                    host,
                    port,
                    tls,
                    username,
                    password: Some(old_password.clone()),
                    from,
                    to,
                    ca_pem,
                }
            }
            (new, _) => new,
        })
    }
}

/// Whether an SMTP host is this machine (`localhost`, `127.0.0.0/8`,
/// `::1`): the only place a password may go without TLS.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A channel as the API takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelSpec {
    /// Its name, unique in the project.
    pub name: String,
    /// Where it sends.
    #[serde(flatten)]
    pub config: ChannelConfig,
}

/// A stored channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRow {
    /// Its id.
    pub id: i64,
    /// Its project.
    pub project_id: i64,
    /// Its name.
    pub name: String,
    /// Where it sends.
    pub config: ChannelConfig,
    /// Created, unix ms.
    pub created_ms: i64,
}

impl ChannelRow {
    /// As the API shows it (secrets masked).
    pub fn view(&self) -> serde_json::Value {
        let mut view = self.config.masked();
        if let Some(map) = view.as_object_mut() {
            map.insert("id".into(), self.id.into());
            map.insert("name".into(), self.name.clone().into());
            map.insert("created_ms".into(), self.created_ms.into());
        }
        view
    }
}

/// Which alert: a rule, an agent (0: the project as a whole), and what of
/// it (a series' labels, a URL target, a threshold's key; may be empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct AlertKey {
    /// The rule.
    pub rule_id: i64,
    /// The agent (0: none).
    pub oid: i64,
    /// What of the agent.
    pub target: String,
}

/// An alert as stored: its state and since when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRow {
    /// Its id.
    pub id: i64,
    /// Its project.
    #[serde(skip)]
    pub project_id: i64,
    /// Which.
    #[serde(flatten)]
    pub key: AlertKey,
    /// The rule's name.
    pub rule: String,
    /// The agent's name (empty for the project as a whole).
    pub oname: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// In this state since, unix ms.
    pub since_ms: i64,
    /// Last told while firing, unix ms (`None`: kept quiet by a pause).
    pub last_notified_ms: Option<i64>,
    /// The value that decided it.
    pub value: Option<f64>,
    /// One sentence.
    pub message: String,
}

/// One change of one alert, to record (and tell the `channels`).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChange {
    /// Its project.
    pub project_id: i64,
    /// Which.
    pub key: AlertKey,
    /// The rule's name.
    pub rule: String,
    /// `firing` or `resolved`.
    pub state: &'static str,
    /// When, unix ms.
    pub time_ms: i64,
    /// Since when in this state (a reminder keeps the firing's start).
    pub since_ms: i64,
    /// Last told, after this change.
    pub last_notified_ms: Option<i64>,
    /// The value that decided it.
    pub value: Option<f64>,
    /// One sentence.
    pub message: String,
    /// A notification body (JSON) per channel told; empty when none is.
    pub notifications: Vec<(i64, String)>,
}

/// One line of an alert's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryRow {
    /// Its id.
    pub id: i64,
    /// Which.
    #[serde(flatten)]
    pub key: AlertKey,
    /// The rule's name then.
    pub rule: String,
    /// The agent's name.
    pub oname: String,
    /// `firing` or `resolved`.
    pub state: String,
    /// When, unix ms.
    pub time_ms: i64,
    /// The value.
    pub value: Option<f64>,
    /// One sentence.
    pub message: String,
    /// Whether notifications were queued for it.
    pub notified: bool,
}

/// A queued notification, with where it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Its id.
    pub id: i64,
    /// Its project.
    pub project_id: i64,
    /// The channel.
    pub channel_id: i64,
    /// The channel's name.
    pub channel_name: String,
    /// Where it goes.
    pub config: ChannelConfig,
    /// The body (JSON; see the README).
    pub payload: String,
    /// Attempts made so far.
    pub attempts: u32,
}

/// What one attempt to deliver a notification came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The notification.
    pub notification_id: i64,
    /// When it started, unix ms.
    pub time_ms: i64,
    /// How long it took, ms.
    pub elapsed_ms: i64,
    /// Whether it was delivered.
    pub ok: bool,
    /// The HTTP status or SMTP reply code, if one came.
    pub status: Option<u16>,
    /// Why it failed (secrets masked).
    pub error: Option<String>,
    /// When to try again (`None`: no more: sent, or given up).
    pub retry_at_ms: Option<i64>,
}

/// An attempt as the API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRow {
    /// The attempt's id.
    pub id: i64,
    /// The notification.
    pub notification_id: i64,
    /// The channel.
    pub channel_id: i64,
    /// Its name.
    pub channel: String,
    /// The attempt's number for this notification, from 1.
    pub attempt: u32,
    /// When, unix ms.
    pub time_ms: i64,
    /// How long it took.
    pub elapsed_ms: i64,
    /// Delivered.
    pub ok: bool,
    /// HTTP status or SMTP reply code.
    pub status: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
    /// The notification's state now: `queued`, `sent`, `failed` (`testing`: a channel test never sent).
    pub state: String,
    /// The alert state it told (`firing`, `resolved`, `test`).
    pub kind: String,
}

/// An agent's pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pause {
    /// The agent.
    pub oid: i64,
    /// Since when, unix ms.
    pub since_ms: i64,
    /// Until when (`None`: until resumed).
    pub until_ms: Option<i64>,
}

impl Pause {
    /// Whether it holds at `now_ms`.
    pub fn active(&self, now_ms: i64) -> bool {
        self.until_ms.is_none_or(|u| u > now_ms)
    }
}

/// The agents paused at `now_ms`, each with until when (`None`: until
/// resumed): what the agents and fleet answers mark.
pub fn active_pauses(pauses: &[Pause], now_ms: i64) -> std::collections::HashMap<i64, Option<i64>> {
    pauses
        .iter()
        .filter(|p| p.active(now_ms))
        .map(|p| (p.oid, p.until_ms))
        .collect()
}

/// A firing or resolve as it happens, for the API's `stream`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// The project it belongs to.
    #[serde(skip)]
    pub project_id: i64,
    /// Which.
    #[serde(flatten)]
    pub key: AlertKey,
    /// The rule's name.
    pub rule: String,
    /// The agent's name.
    pub oname: String,
    /// `firing` or `resolved`.
    pub state: &'static str,
    /// When, unix ms.
    pub time_ms: i64,
    /// The value that decided it.
    pub value: Option<f64>,
    /// One sentence.
    pub message: String,
    /// Whether channels were told.
    pub notified: bool,
}

/// What the evaluator, the delivery loop and the API share: the feed of
/// transitions (bounded: a slow subscriber misses some and is told) and
/// the delivery loop's wake-up.
#[derive(Debug, Clone)]
pub struct AlertsHub {
    /// Transitions as they are recorded.
    pub transitions: tokio::sync::broadcast::Sender<std::sync::Arc<Transition>>,
    /// Wakes the delivery loop.
    pub wake_queue: std::sync::Arc<tokio::sync::Notify>,
}

/// Transitions kept for slow `stream` subscribers.
const TRANSITION_BUFFER: usize = 256;

impl Default for AlertsHub {
    fn default() -> Self {
        AlertsHub {
            transitions: tokio::sync::broadcast::channel(TRANSITION_BUFFER).0,
            wake_queue: std::sync::Arc::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_url_is_masked_past_its_host() {
        assert_eq!(
            mask_url("https://user:pw@hooks.slack.com/services/T000/B000/XXXXsecretYYYY"),
            "https://hooks.slack.com/ser…YYYY"
        );
        assert_eq!(
            mask_url("http://10.0.0.1:8080/hook"),
            "http://10.0.0.1:8080/…"
        );
        assert_eq!(mask_url("http://example.com"), "http://example.com");
    }

    #[test]
    fn an_update_without_secrets_keeps_the_stored_ones() {
        let old = ChannelConfig::Webhook {
            url: "https://h/services/secret-token".into(),
            format: WebhookFormat::Json,
            ca_pem: None,
        };
        let masked = ChannelConfig::Webhook {
            url: mask_url("https://h/services/secret-token"),
            format: WebhookFormat::Slack,
            ca_pem: None,
        };
        assert_eq!(
            masked.keep_secrets_from(&old).expect("kept"),
            ChannelConfig::Webhook {
                url: "https://h/services/secret-token".into(),
                format: WebhookFormat::Slack,
                ca_pem: None,
            }
        );
        let shown = format!("{old:?}");
        assert!(!shown.contains("secret-token"), "{shown}");
        let mail = |password: Option<&str>| ChannelConfig::Email {
            host: "smtp".into(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: Some("u".into()),
            password: password.map(str::to_string),
            from: "a@b.c".into(),
            to: vec!["d@e.f".into()],
            ca_pem: None,
        };
        assert_eq!(
            mail(None)
                .keep_secrets_from(&mail(Some("pw")))
                .expect("kept"),
            mail(Some("pw"))
        );
        assert_eq!(
            mail(Some("new"))
                .keep_secrets_from(&mail(Some("pw")))
                .expect("new"),
            mail(Some("new"))
        );
        // Another server, port, security or login: the password is not
        // carried there, it must be given again.
        let moved: [fn(&mut ChannelConfig); 4] = [
            |c| {
                if let ChannelConfig::Email { host, .. } = c {
                    *host = "smtp.elsewhere".into();
                }
            },
            |c| {
                if let ChannelConfig::Email { port, .. } = c {
                    *port = 2525;
                }
            },
            |c| {
                if let ChannelConfig::Email { tls, .. } = c {
                    *tls = SmtpTls::None;
                }
            },
            |c| {
                if let ChannelConfig::Email { username, .. } = c {
                    *username = Some("other".into());
                }
            },
        ];
        for change in moved {
            let mut update = mail(None);
            change(&mut update);
            let kept = update.keep_secrets_from(&mail(Some("pw")));
            assert!(
                kept.as_ref().is_err_and(|e| e.contains("password")),
                "{kept:?}"
            );
        }
        assert!(!mail(Some("pw")).masked().to_string().contains("\"pw\""));
    }

    #[test]
    fn a_rules_spans_are_bounded_and_errors_name_the_rule_and_field() {
        let spec = |expr: &str, renotify: Option<&str>| RuleSpec {
            name: "disk".into(),
            expr: expr.into(),
            agent: None,
            product: None,
            severity: "warning".into(),
            channels: vec![],
            renotify: renotify.map(str::to_string),
            enabled: true,
        };
        let error = |expr: &str, renotify: Option<&str>| spec(expr, renotify).check().err();
        assert_eq!(
            error("mem.used_pct > 90 for 25h", None),
            Some("rule 'disk': for: at most 24 h".into())
        );
        assert_eq!(
            error("event db.unreachable clear 2d", None),
            Some("rule 'disk': clear: at most 24 h".into())
        );
        assert_eq!(
            error("log \"timeout\" > 10 in 48h", None),
            Some("rule 'disk': window: at most 24 h".into())
        );
        assert_eq!(
            error("no data", Some("30s")),
            Some("rule 'disk': renotify: at least 1 min".into())
        );
        for fine in [
            ("mem.used_pct > 90 for 24h", Some("1m")),
            ("event db.unreachable clear 24h", None),
            ("log \"timeout\" > 10 in 24h", Some("1h")),
        ] {
            assert_eq!(error(fine.0, fine.1), None, "{fine:?}");
        }
    }

    #[test]
    fn a_password_without_tls_goes_to_loopback_only() {
        let mail = |host: &str, tls: SmtpTls, password: Option<&str>| ChannelConfig::Email {
            host: host.into(),
            port: 25,
            tls,
            username: Some("u".into()),
            password: password.map(str::to_string),
            from: "a@b.c".into(),
            to: vec!["d@e.f".into()],
            ca_pem: None,
        };
        let refused = mail("smtp.example.com", SmtpTls::None, Some("pw")).check();
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("password")),
            "{refused:?}"
        );
        for host in ["127.0.0.1", "localhost", "::1", "[::1]"] {
            assert_eq!(
                mail(host, SmtpTls::None, Some("pw")).check(),
                Ok(()),
                "{host}"
            );
        }
        assert_eq!(
            mail("smtp.example.com", SmtpTls::None, None).check(),
            Ok(())
        );
        assert_eq!(
            mail("smtp.example.com", SmtpTls::Starttls, Some("pw")).check(),
            Ok(())
        );
    }

    #[test]
    fn a_channel_is_checked_before_it_is_stored() {
        let webhook = |url: &str| ChannelConfig::Webhook {
            url: url.into(),
            format: WebhookFormat::Json,
            ca_pem: None,
        };
        assert!(webhook("https://example.com/x").check().is_ok());
        assert!(webhook("ftp://example.com/x").check().is_err());
        assert!(webhook("http://").check().is_err());
        let spec: ChannelSpec = serde_json::from_str(
            r#"{"name":"m","kind":"email","host":"h","from":"a@b.c","to":["not an address"]}"#,
        )
        .expect("parses");
        assert_eq!(
            spec.config.check(),
            Err("to: not an address: 'not an address'".into())
        );
    }
}
