//! Mail over SMTP through `lettre` (tokio, rustls on ring, the system's
//! roots plus a channel's own CA): STARTTLS required by default, so a
//! server that does not offer it is refused rather than sent a password in
//! the clear. One connection per message (no pool): alerts are rare.
//!
//! Never puts the password in an error or a log.

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Body, SEND_TIMEOUT, SendError};
use crate::alerts::{ChannelConfig, SmtpTls};

fn permanent(message: String) -> SendError {
    SendError {
        message,
        status: None,
        permanent: true,
    }
}

/// Sends `body` as a mail through the channel `config` (an `Email`).
pub async fn send(config: &ChannelConfig, body: &Body) -> Result<u16, SendError> {
    let ChannelConfig::Email {
        host,
        port,
        tls,
        username,
        password,
        from,
        to,
        ca_pem,
    } = config
    else {
        return Err(permanent("not an e-mail channel".into()));
    };
    let from: Mailbox = from.parse().map_err(|e| permanent(format!("from: {e}")))?;
    let mut message = Message::builder()
        .from(from)
        .subject(body.headline().chars().take(200).collect::<String>())
        .header(ContentType::TEXT_PLAIN);
    for address in to {
        let mailbox: Mailbox = address.parse().map_err(|e| permanent(format!("to: {e}")))?;
        message = message.to(mailbox);
    }
    let message = message
        .body(body.mail_text())
        .map_err(|e| permanent(format!("cannot build the mail: {e}")))?;

    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.as_str())
        .port(*port)
        .timeout(Some(SEND_TIMEOUT));
    if *tls != SmtpTls::None {
        let mut params = TlsParameters::builder(host.clone());
        if let Some(pem) = ca_pem {
            let ca = Certificate::from_pem(pem.as_bytes())
                .map_err(|e| permanent(format!("ca_pem: {e}")))?;
            params = params.add_root_certificate(ca);
        }
        let params = params
            .build_rustls()
            .map_err(|e| permanent(format!("TLS setup: {e}")))?;
        builder = builder.tls(match tls {
            SmtpTls::Tls => Tls::Wrapper(params),
            _ => Tls::Required(params),
        });
    }
    if let (Some(user), Some(password)) = (username, password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    let transport = builder.build();
    match transport.send(message).await {
        Ok(response) => Ok(u16::from(response.code())),
        Err(e) => Err(SendError {
            // lettre's errors name the server's reply, never the password.
            message: format!("SMTP with {host}:{port}: {}", error_chain(&e)),
            status: e.status().map(u16::from),
            permanent: e.is_permanent(),
        }),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
