//! The URL agent's `UrlChecks`, checked and decoded into [`UrlCheckRow`]s.
//! Never stores anything itself, and never trusts the wire: every text is
//! capped and the state must be one the API can show.
//!
//! What is left out or cut, always counted in [`Refusals`] (never a panic,
//! never silently):
//! - checks past [`MAX_CHECKS_PER_BATCH`] in one payload;
//! - a check whose target name is empty or over [`MAX_TARGET_BYTES`] (the
//!   agent's own limit), or whose state is unspecified or unknown (the
//!   target's current state could not be shown);
//! - the part of the URL or final URL past [`MAX_URL_BYTES`], of the detail
//!   past [`MAX_DETAIL_BYTES`], of the certificate's subject or issuer past
//!   [`MAX_FIELD_BYTES`], of the method, HTTP version or remote address
//!   past [`MAX_LABEL_BYTES`]: cut on a character boundary, the check kept.
//!
//! A failure code this collector does not know (a newer agent's) is kept
//! as `unknown`: the check itself is whole, only its class is not named.

use sightline_proto::v1 as pb;

use crate::ingest::convert::Refusals;
use crate::model::{UrlCertificateRow, UrlCheckRow, UrlPhases, UrlState};

/// Checks kept per payload: 10,000 targets at their quickest
/// (`.down_interval` 15 s) over a minute of batches.
pub const MAX_CHECKS_PER_BATCH: usize = 40_000;
/// Longest target name (`target.<name>`), as `url.proto` says.
pub const MAX_TARGET_BYTES: usize = 128;
/// Longest URL and final URL kept.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest failure detail kept.
pub const MAX_DETAIL_BYTES: usize = 1024;
/// Longest certificate subject and issuer kept.
pub const MAX_FIELD_BYTES: usize = 512;
/// Longest method, HTTP version and remote address kept.
pub const MAX_LABEL_BYTES: usize = 64;

/// Converts one payload's checks; `at` resolves a zero time to the batch's.
pub fn checks_from_wire(
    checks: pb::UrlChecks,
    at: impl Fn(i64) -> i64,
    refused: &mut Refusals,
) -> Vec<UrlCheckRow> {
    let claimed = checks.checks.len();
    let mut rows = Vec::with_capacity(claimed.min(MAX_CHECKS_PER_BATCH));
    let mut cuts = 0u64;
    for check in checks.checks.into_iter().take(MAX_CHECKS_PER_BATCH) {
        if check.target.is_empty() || check.target.len() > MAX_TARGET_BYTES {
            refused.add(|| {
                format!("URL checks whose target name is empty or over {MAX_TARGET_BYTES} bytes")
            });
            continue;
        }
        let Some(state) = state_from_wire(check.state) else {
            refused.add(|| "URL checks without a known state (up, pending, down, degraded)".into());
            continue;
        };
        rows.push(check_from_wire(check, state, &at, &mut cuts));
    }
    refused.add_many(claimed.saturating_sub(MAX_CHECKS_PER_BATCH) as u64, || {
        format!("URL checks over {MAX_CHECKS_PER_BATCH} per payload")
    });
    refused.add_many(cuts, || {
        format!(
            "URL check fields cut (url {MAX_URL_BYTES} bytes, detail {MAX_DETAIL_BYTES}, certificate names {MAX_FIELD_BYTES}, method/version/address {MAX_LABEL_BYTES})"
        )
    });
    rows
}

fn state_from_wire(state: i32) -> Option<UrlState> {
    match pb::UrlState::try_from(state).ok()? {
        pb::UrlState::Up => Some(UrlState::Up),
        pb::UrlState::Pending => Some(UrlState::Pending),
        pb::UrlState::Down => Some(UrlState::Down),
        pb::UrlState::Degraded => Some(UrlState::Degraded),
        pb::UrlState::Unspecified => None,
    }
}

/// The failure's stored name: the enum's name without its prefix, in
/// lower case (`URL_FAILURE_TIMEOUT_TLS` is `timeout_tls`).
pub fn failure_name(failure: i32) -> String {
    match pb::UrlFailure::try_from(failure) {
        Ok(f) => f
            .as_str_name()
            .trim_start_matches("URL_FAILURE_")
            .to_ascii_lowercase(),
        Err(_) => "unknown".into(),
    }
}

fn check_from_wire(
    c: pb::UrlCheck,
    state: UrlState,
    at: &impl Fn(i64) -> i64,
    cuts: &mut u64,
) -> UrlCheckRow {
    let mut cut = |text: String, max: usize| {
        if text.len() <= max {
            return text;
        }
        *cuts += 1;
        cut_at(text, max)
    };
    UrlCheckRow {
        target: c.target,
        url: cut(c.url, MAX_URL_BYTES),
        method: cut(c.method, MAX_LABEL_BYTES),
        time_ms: at(c.time_ms),
        state,
        ok: c.ok,
        failure: failure_name(c.failure),
        detail: cut(c.detail, MAX_DETAIL_BYTES),
        phases: UrlPhases {
            dns_us: c.dns_us,
            connect_us: c.connect_us,
            tls_us: c.tls_us,
            first_byte_us: c.first_byte_us,
            transfer_us: c.transfer_us,
            total_us: c.total_us,
        },
        status_code: c.status_code,
        http_version: cut(c.http_version, MAX_LABEL_BYTES),
        body_bytes: c.body_bytes,
        redirects: c.redirects,
        final_url: cut(c.final_url, MAX_URL_BYTES),
        remote_ip: cut(c.remote_ip, MAX_LABEL_BYTES),
        certificate: c.certificate.map(|cert| UrlCertificateRow {
            subject: cut(cert.subject, MAX_FIELD_BYTES),
            issuer: cut(cert.issuer, MAX_FIELD_BYTES),
            not_after_ms: cert.not_after_ms,
            days_left: cert.days_left,
            chain_days_left: cert.chain_days_left,
        }),
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut_at(mut text: String, max: usize) -> String {
    let mut end = max.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(target: &str, state: pb::UrlState) -> pb::UrlCheck {
        pb::UrlCheck {
            target: target.into(),
            url: "https://shop.example/health".into(),
            method: "GET".into(),
            time_ms: 0,
            state: state as i32,
            ok: state == pb::UrlState::Up,
            failure: pb::UrlFailure::None as i32,
            dns_us: 1_000,
            connect_us: 2_000,
            tls_us: 3_000,
            first_byte_us: 4_000,
            transfer_us: 500,
            total_us: 10_500,
            status_code: 200,
            http_version: "HTTP/1.1".into(),
            body_bytes: 1234,
            remote_ip: "127.0.0.1".into(),
            certificate: Some(pb::UrlCertificate {
                subject: "CN=shop.example".into(),
                issuer: "CN=Test CA".into(),
                not_after_ms: 1_900_000_000_000,
                days_left: 40,
                chain_days_left: 40,
            }),
            ..pb::UrlCheck::default()
        }
    }

    fn convert(checks: Vec<pb::UrlCheck>) -> (Vec<UrlCheckRow>, Refusals) {
        let mut refused = Refusals::default();
        let rows = checks_from_wire(
            pb::UrlChecks { checks },
            |t| if t == 0 { 777 } else { t },
            &mut refused,
        );
        (rows, refused)
    }

    #[test]
    fn a_good_check_is_kept_whole_with_the_batch_time() {
        let (rows, refused) = convert(vec![check("shop", pb::UrlState::Up)]);
        assert_eq!(refused, Refusals::default());
        let row = &rows[0];
        assert_eq!(row.time_ms, 777);
        assert_eq!(row.state, UrlState::Up);
        assert_eq!(row.failure, "none");
        assert_eq!(row.phases.total_us, 10_500);
        assert_eq!(row.phases.first_byte_us, 4_000);
        assert_eq!(
            row.certificate
                .as_ref()
                .map(|c| (c.days_left, c.issuer.as_str())),
            Some((40, "CN=Test CA"))
        );
    }

    #[test]
    fn failures_are_named_in_snake_case_and_an_unknown_one_is_kept() {
        assert_eq!(
            failure_name(pb::UrlFailure::TimeoutFirstByte as i32),
            "timeout_first_byte"
        );
        assert_eq!(
            failure_name(pb::UrlFailure::ConnectionRefused as i32),
            "connection_refused"
        );
        assert_eq!(failure_name(pb::UrlFailure::None as i32), "none");
        let mut future = check("shop", pb::UrlState::Down);
        future.failure = 99;
        let (rows, refused) = convert(vec![future]);
        assert_eq!(refused, Refusals::default());
        assert_eq!(rows[0].failure, "unknown");
    }

    #[test]
    fn bad_names_and_states_are_refused_by_count() {
        let (rows, refused) = convert(vec![
            check("", pb::UrlState::Up),
            check(&"t".repeat(MAX_TARGET_BYTES + 1), pb::UrlState::Up),
            check(&"t".repeat(MAX_TARGET_BYTES), pb::UrlState::Up),
            check("unspecified", pb::UrlState::Unspecified),
            pb::UrlCheck {
                state: 42,
                ..check("future", pb::UrlState::Up)
            },
            check("down", pb::UrlState::Down),
        ]);
        assert_eq!(
            rows.iter().map(|r| r.state).collect::<Vec<_>>(),
            [UrlState::Up, UrlState::Down]
        );
        assert_eq!(refused.count, 4);
        assert_eq!(refused.reasons.len(), 2, "{:?}", refused.reasons);
        assert!(refused.reasons[0].contains("target name"));
        assert!(refused.reasons[1].contains("known state"));
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary_and_counted() {
        let mut long = check("shop", pb::UrlState::Down);
        long.detail = "é".repeat(MAX_DETAIL_BYTES); // 2 bytes each
        long.url = format!("https://x.example/{}", "a".repeat(MAX_URL_BYTES));
        let (rows, refused) = convert(vec![long]);
        assert_eq!(rows[0].detail.len(), MAX_DETAIL_BYTES);
        assert!(rows[0].detail.chars().all(|c| c == 'é'));
        assert_eq!(rows[0].url.len(), MAX_URL_BYTES);
        assert_eq!(refused.count, 2, "{refused:?}");
    }

    #[test]
    fn checks_over_the_cap_are_counted_not_kept() {
        let many = vec![check("shop", pb::UrlState::Up); MAX_CHECKS_PER_BATCH + 3];
        let (rows, refused) = convert(many);
        assert_eq!(rows.len(), MAX_CHECKS_PER_BATCH);
        assert_eq!(refused.count, 3);
        assert!(refused.reasons[0].contains("per payload"));
    }

    fn text(max: usize) -> impl proptest::strategy::Strategy<Value = String> {
        proptest::collection::vec(proptest::char::any(), 0..max)
            .prop_map(|chars| chars.into_iter().collect())
    }

    use proptest::prelude::*;

    proptest! {
        /// Any list of checks: each is kept (its texts within their caps,
        /// its name and numbers untouched) or refused and counted; the
        /// cuts are counted too; never a panic.
        #[test]
        fn every_check_is_kept_within_caps_or_refused_by_count(
            checks in proptest::collection::vec(
                (text(160), text(2200), text(1200), text(80), any::<i32>(), any::<i32>(),
                 any::<i64>(), any::<u64>(), any::<u32>(), proptest::option::of(text(600))),
                0..8,
            )
        ) {
            let wire: Vec<pb::UrlCheck> = checks
                .iter()
                .map(|(target, url, detail, label, state, failure, time_ms, total_us, status, subject)| {
                    pb::UrlCheck {
                        target: target.clone(),
                        url: url.clone(),
                        method: label.clone(),
                        time_ms: *time_ms,
                        state: *state % 6,
                        failure: *failure,
                        detail: detail.clone(),
                        total_us: *total_us,
                        status_code: *status,
                        http_version: label.clone(),
                        final_url: url.clone(),
                        remote_ip: label.clone(),
                        certificate: subject.as_ref().map(|s| pb::UrlCertificate {
                            subject: s.clone(),
                            issuer: s.clone(),
                            ..pb::UrlCertificate::default()
                        }),
                        ..pb::UrlCheck::default()
                    }
                })
                .collect();
            let n = wire.len();
            let (rows, refused) = convert(wire.clone());
            let fits = |c: &pb::UrlCheck| {
                !c.target.is_empty()
                    && c.target.len() <= MAX_TARGET_BYTES
                    && (1..=4).contains(&c.state)
            };
            let kept: Vec<&pb::UrlCheck> = wire.iter().filter(|c| fits(c)).collect();
            prop_assert_eq!(rows.len(), kept.len());
            let mut cuts = 0u64;
            for (row, c) in rows.iter().zip(&kept) {
                prop_assert_eq!(&row.target, &c.target);
                prop_assert_eq!(row.time_ms, if c.time_ms == 0 { 777 } else { c.time_ms });
                prop_assert_eq!((row.phases.total_us, row.status_code), (c.total_us, c.status_code));
                prop_assert!(row.url.len() <= MAX_URL_BYTES && c.url.starts_with(&row.url));
                prop_assert!(row.detail.len() <= MAX_DETAIL_BYTES && c.detail.starts_with(&row.detail));
                prop_assert!(row.method.len() <= MAX_LABEL_BYTES && row.remote_ip.len() <= MAX_LABEL_BYTES);
                if let Some(cert) = &row.certificate {
                    prop_assert!(cert.subject.len() <= MAX_FIELD_BYTES);
                }
                cuts += u64::from(c.url.len() > MAX_URL_BYTES) * 2
                    + u64::from(c.detail.len() > MAX_DETAIL_BYTES)
                    + u64::from(c.method.len() > MAX_LABEL_BYTES) * 3
                    + c.certificate.as_ref().map_or(0, |x| u64::from(x.subject.len() > MAX_FIELD_BYTES) * 2);
            }
            prop_assert_eq!(refused.count, (n - kept.len()) as u64 + cuts);
        }
    }
}
