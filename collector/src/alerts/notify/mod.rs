//! Notifications: the body an alert change is told with ([`Body`], stored
//! with the queued notification), and how it reaches a channel:
//! [`webhook`] (JSON or a Slack body over HTTP(S)), [`smtp`] (mail with
//! STARTTLS), both driven by [`queue`], which retries with backoff and
//! records every attempt.
//!
//! Invariant: an error text never holds a channel's secret (the URL's path
//! and query, the SMTP password); senders say what failed, not where.

pub mod queue;
pub mod smtp;
pub mod webhook;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ChannelConfig, WebhookFormat};

/// How long one delivery attempt may take, connection included.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The rule an alert belongs to, as told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRef {
    /// Its id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its condition.
    pub expr: String,
    /// `info`, `warning`, `critical`.
    pub severity: String,
}

/// The agent an alert is about, as told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRef {
    /// Its id.
    pub oid: i64,
    /// Its name.
    pub oname: String,
    /// Its product.
    pub product: String,
}

/// What a notification says: the webhook's JSON body, and what the Slack
/// text and the mail are made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Body {
    /// `firing`, `resolved`, or `test`.
    pub state: String,
    /// A firing told again (re-notify interval, end of a pause).
    pub reminder: bool,
    /// The project's name.
    pub project: String,
    /// The rule (none for a test).
    pub rule: Option<RuleRef>,
    /// The agent (none for a project-wide alert or a test).
    pub agent: Option<AgentRef>,
    /// What of the agent: a series' labels, a URL target (may be empty).
    pub target: String,
    /// The value that decided it.
    pub value: Option<f64>,
    /// One sentence.
    pub message: String,
    /// Since when in this state, RFC 3339.
    pub since: String,
    /// When told, RFC 3339.
    pub time: String,
    /// When told, unix ms.
    pub time_ms: i64,
}

impl Body {
    /// A channel test's body.
    pub fn test(project: &str, channel: &str, now_ms: i64) -> Body {
        let time = crate::time_text::format_ms(now_ms);
        Body {
            state: "test".into(),
            reminder: false,
            project: project.into(),
            rule: None,
            agent: None,
            target: String::new(),
            value: None,
            message: format!("A test of channel '{channel}' from Sightline."),
            since: time.clone(),
            time,
            time_ms: now_ms,
        }
    }

    /// One line: `[FIRING] rule on agent: message`.
    pub fn headline(&self) -> String {
        let state = if self.reminder {
            "FIRING (still)".to_string()
        } else {
            self.state.to_uppercase()
        };
        let rule = self.rule.as_ref().map_or("test", |r| r.name.as_str());
        let on = match (&self.agent, self.target.is_empty()) {
            (Some(a), true) => format!(" on {}", a.oname),
            (Some(a), false) => format!(" on {} ({})", a.oname, self.target),
            (None, false) => format!(" ({})", self.target),
            (None, true) => String::new(),
        };
        format!("[{state}] {rule}{on}: {}", self.message)
    }

    /// The mail's text.
    pub fn mail_text(&self) -> String {
        let mut text = format!("{}\n\n", self.headline());
        text.push_str(&format!("Project:  {}\n", self.project));
        if let Some(rule) = &self.rule {
            text.push_str(&format!(
                "Rule:     {} ({}, {})\n",
                rule.name, rule.expr, rule.severity
            ));
        }
        if let Some(agent) = &self.agent {
            text.push_str(&format!("Agent:    {} ({})\n", agent.oname, agent.product));
        }
        if let Some(value) = self.value {
            text.push_str(&format!("Value:    {value}\n"));
        }
        text.push_str(&format!(
            "Since:    {}\nTime:     {}\n",
            self.since, self.time
        ));
        text
    }
}

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// What happened (no secrets).
    pub message: String,
    /// The HTTP status or SMTP code that came back, if any.
    pub status: Option<u16>,
    /// Whether trying again cannot help (a 4xx, a permanent SMTP reply).
    pub permanent: bool,
}

impl SendError {
    /// A failure worth retrying, with no status.
    pub fn transient(message: impl Into<String>) -> SendError {
        SendError {
            message: message.into(),
            status: None,
            permanent: false,
        }
    }
}

/// Sends `payload` (a [`Body`] as JSON) to a channel once; the status that
/// came back.
pub async fn send(config: &ChannelConfig, payload: &str) -> Result<u16, SendError> {
    let body: Body = serde_json::from_str(payload)
        .map_err(|e| SendError::transient(format!("the stored body does not parse: {e}")))?;
    let attempt = async {
        match config {
            ChannelConfig::Webhook {
                url,
                format,
                ca_pem,
            } => {
                let bytes = match format {
                    WebhookFormat::Json => payload.as_bytes().to_vec(),
                    WebhookFormat::Slack => {
                        slack_body(&body).map_err(|e| SendError::transient(e.to_string()))?
                    }
                };
                webhook::post(url, bytes, ca_pem.as_deref()).await
            }
            ChannelConfig::Email { .. } => smtp::send(config, &body).await,
        }
    };
    match tokio::time::timeout(SEND_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(SendError::transient(format!(
            "no answer within {} s",
            SEND_TIMEOUT.as_secs()
        ))),
    }
}

/// The Slack incoming webhook's body: `{"text": headline}`, with `&`, `<`
/// and `>` escaped as Slack wants (so a log line or a target cannot make a
/// link or `<!channel>` mention).
fn slack_body(body: &Body) -> Result<Vec<u8>, serde_json::Error> {
    let text = body
        .headline()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    serde_json::to_vec(&serde_json::json!({ "text": text }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_escapes_what_slack_would_read_as_markup() {
        let body = Body {
            state: "firing".into(),
            reminder: false,
            project: "p".into(),
            rule: None,
            agent: None,
            target: String::new(),
            value: None,
            message: "a & b <!channel> <http://evil|click> x > 1".into(),
            since: String::new(),
            time: String::new(),
            time_ms: 0,
        };
        let sent: serde_json::Value =
            serde_json::from_slice(&slack_body(&body).expect("body")).expect("json");
        assert_eq!(
            sent["text"],
            "[FIRING] test: a &amp; b &lt;!channel&gt; &lt;http://evil|click&gt; x &gt; 1"
        );
    }
}
