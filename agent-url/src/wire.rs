//! The URL agent's wire edge: finished checks become `UrlChecks`
//! (`url.proto`) here and nowhere else; the only module of sightline-url
//! that sees prost types.

use std::time::SystemTime;

use agent_core::transport::wire::unix_ms;
use agent_core::{Payload, WirePayload};
use sightline_proto::v1 as pb;

use crate::probe::{CheckResult, Failure, Phase};
use crate::state::TargetState;

/// One finished check with what the agent knows around it.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The check.
    pub result: CheckResult,
    /// The URL as configured (no credentials: they never sit in the URL).
    pub url: String,
    /// The method.
    pub method: String,
    /// The target's state after it.
    pub state: TargetState,
}

fn failure(f: Option<Failure>) -> pb::UrlFailure {
    use pb::UrlFailure as W;
    match f {
        None => W::None,
        Some(Failure::Dns) => W::Dns,
        Some(Failure::ConnectionRefused) => W::ConnectionRefused,
        Some(Failure::Connect) => W::Connect,
        Some(Failure::Timeout(Phase::Dns)) => W::TimeoutDns,
        Some(Failure::Timeout(Phase::Connect)) => W::TimeoutConnect,
        Some(Failure::Timeout(Phase::Tls)) => W::TimeoutTls,
        Some(Failure::Timeout(Phase::FirstByte)) => W::TimeoutFirstByte,
        Some(Failure::Timeout(Phase::Transfer)) => W::TimeoutTransfer,
        Some(Failure::Tls) => W::Tls,
        Some(Failure::Status) => W::Status,
        Some(Failure::Body) => W::Body,
        Some(Failure::Json) => W::Json,
        Some(Failure::TooSlow) => W::TooSlow,
        Some(Failure::TooManyRedirects) => W::TooManyRedirects,
        Some(Failure::Protocol) => W::Protocol,
    }
}

fn state(s: TargetState) -> pb::UrlState {
    match s {
        TargetState::Up => pb::UrlState::Up,
        TargetState::Pending => pb::UrlState::Pending,
        TargetState::Down => pb::UrlState::Down,
        TargetState::Degraded => pb::UrlState::Degraded,
    }
}

/// One check as its wire message.
pub fn check_to_wire(f: Finished) -> pb::UrlCheck {
    let r = f.result;
    // Phases from cumulative boundaries, so the µs add up to the total.
    let mut at = std::time::Duration::ZERO;
    let mut us = |d: std::time::Duration| {
        let before = at.as_micros() as u64;
        at += d;
        at.as_micros() as u64 - before
    };
    let dns_us = us(r.phases.dns);
    let connect_us = us(r.phases.connect);
    let tls_us = us(r.phases.tls);
    let first_byte_us = us(r.phases.first_byte);
    let transfer_us = us(r.phases.transfer);
    let certificate = r.certificate.as_ref().map(|c| pb::UrlCertificate {
        subject: c.subject.clone(),
        issuer: c.issuer.clone(),
        not_after_ms: c.not_after.saturating_mul(1000),
        days_left: c.days_left(r.time),
        chain_days_left: c.chain_days_left(r.time),
    });
    let mut target = r.target;
    if target.len() > 128 {
        let mut cut = 128;
        while !target.is_char_boundary(cut) {
            cut -= 1;
        }
        target.truncate(cut);
    }
    pb::UrlCheck {
        target,
        url: f.url,
        method: f.method,
        time_ms: unix_ms(r.time),
        state: state(f.state) as i32,
        ok: r.failure.is_none(),
        failure: failure(r.failure) as i32,
        detail: r.detail,
        dns_us,
        connect_us,
        tls_us,
        first_byte_us,
        transfer_us,
        total_us: at.as_micros() as u64,
        status_code: u32::from(r.status),
        http_version: r.http_version.to_string(),
        body_bytes: r.body_bytes,
        redirects: r.redirects,
        final_url: r.final_url,
        remote_ip: r.remote_ip,
        certificate,
    }
}

/// Checks finished together, as one payload.
pub fn checks_payload(time: SystemTime, checks: Vec<Finished>) -> Payload {
    let message = pb::UrlChecks {
        checks: checks.into_iter().map(check_to_wire).collect(),
    };
    Payload::Encoded(WirePayload::new(
        time,
        pb::Payload {
            kind: Some(pb::payload::Kind::Url(message)),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Phases;
    use crate::tls::CertInfo;
    use agent_core::health::Health;
    use agent_core::transport::wire::{decode_batch, encode_batch, encode_payload};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_check_reaches_the_wire_with_phases_that_add_up() {
        let time = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let phases = Phases {
            dns: Duration::from_nanos(1_500),
            connect: Duration::from_nanos(2_700),
            tls: Duration::from_nanos(3_900),
            first_byte: Duration::from_millis(20),
            transfer: Duration::from_nanos(400),
        };
        let result = CheckResult {
            target: "home".into(),
            time,
            failure: Some(Failure::Timeout(Phase::Transfer)),
            detail: "stalled".into(),
            phases,
            total: phases.sum(),
            status: 200,
            http_version: "HTTP/2",
            body_bytes: 10,
            redirects: 1,
            final_url: "https://x/y".into(),
            remote_ip: "127.0.0.1".into(),
            certificate: Some(CertInfo {
                subject: "CN=x".into(),
                issuer: "CN=ca".into(),
                not_after: 1_000_000 + 86_400 * 10,
                chain_not_after: 1_000_000 + 86_400 * 3,
            }),
        };
        let payload = checks_payload(
            time,
            vec![Finished {
                result,
                url: "https://x/".into(),
                method: "GET".into(),
                state: TargetState::Pending,
            }],
        );
        let parts = encode_payload(&payload, 1 << 20).expect("fits");
        let batch =
            decode_batch(&encode_batch(1, time, &Health::default(), &parts)).expect("decodes");
        let Some(pb::payload::Kind::Url(u)) = batch.payloads[0].kind.clone() else {
            panic!("wrong payload");
        };
        let c = &u.checks[0];
        assert_eq!(c.target, "home");
        assert_eq!(c.time_ms, 1_000_000_000);
        assert_eq!(c.state, pb::UrlState::Pending as i32);
        assert_eq!(c.failure, pb::UrlFailure::TimeoutTransfer as i32);
        assert!(!c.ok);
        assert_eq!(
            c.dns_us + c.connect_us + c.tls_us + c.first_byte_us + c.transfer_us,
            c.total_us
        );
        assert_eq!(c.total_us, 20_008);
        let cert = c.certificate.as_ref().expect("certificate");
        assert_eq!((cert.days_left, cert.chain_days_left), (10, 3));
        assert_eq!(c.http_version, "HTTP/2");
    }
}
