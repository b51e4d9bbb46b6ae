//! `GET /metrics`: the project's latest value of every series, in
//! Prometheus' text exposition format (version 0.0.4), so an existing
//! Prometheus can scrape the collector with the project's API token as its
//! bearer token.
//!
//! Names are the series' own with every character Prometheus does not
//! allow (the dots first) turned into `_`; each sample carries the agent's
//! `oname`, `oid` and `product` and the series' own labels (a label named
//! like one of those three is kept as `tag_<name>`). Counters are the names
//! we know to be cumulative (the log agent's counters, and any name ending
//! in `_total`), exposed with a `_total` suffix; everything else is a
//! gauge (the agents send rates as `_per_sec` gauges). No timestamps: as
//! an exporter, the value is the newest one stored, no older than
//! [`WINDOW_MS`].
//!
//! Invariants: one project's series only (the token's); the output is
//! bounded ([`MAX_SAMPLES`] samples, then a comment saying how many were
//! left out); nothing here writes.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState, Authed};
use crate::store::{Latest, Store};

/// Values older than this are not exposed (an agent gone for five minutes
/// is gone for Prometheus too, as its own staleness would have it).
pub(super) const WINDOW_MS: i64 = 5 * 60_000;
/// Samples in one answer at most.
pub(super) const MAX_SAMPLES: usize = 200_000;
/// The exposition format's content type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Names the agents report as running totals (everything else is a gauge).
const COUNTERS: &[&str] = &[
    "log.bytes.read",
    "log.records",
    "log.records.cut",
    "log.invalid_bytes",
    "log.lines.filtered",
    "log.nul_skipped",
    "log.truncations",
    "log.copytruncate.copies",
    "log.copytruncate.lost_bytes",
    "log.partial_bytes_lost",
    "log.deleted_unread_bytes",
    "log.open_limit_hits",
];

/// The labels every sample gets from its agent.
const AGENT_LABELS: [&str; 3] = ["oname", "oid", "product"];

/// Whether `name` is a running total.
pub(super) fn is_counter(name: &str) -> bool {
    COUNTERS.contains(&name) || name.ends_with("_total")
}

/// A metric or label name as Prometheus allows it: `[a-zA-Z_:]` then
/// `[a-zA-Z0-9_:]` (no colon in label names); anything else becomes `_`.
pub(super) fn sanitise(name: &str, colon: bool) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The exposed name of a series named `name`.
pub(super) fn exposed_name(name: &str) -> String {
    let base = sanitise(name, true);
    if is_counter(name) && !base.ends_with("_total") {
        format!("{base}_total")
    } else {
        base
    }
}

/// A label value escaped as the format wants (`\`, `"` and line feeds).
fn escape_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A HELP text escaped as the format wants (`\` and line feeds).
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A number as the format writes it.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

/// The agent a sample belongs to, as labels.
#[derive(Debug, Clone)]
pub(super) struct AgentLabels {
    /// Agent name.
    pub(super) oname: String,
    /// Product.
    pub(super) product: String,
}

/// Writes the exposition of `families` (metric name, its latest values):
/// one HELP and TYPE per exposed name, samples sorted by agent and labels,
/// at most `max_samples` samples.
pub(super) fn render(
    families: &[(String, Vec<Latest>)],
    agents: &HashMap<i64, AgentLabels>,
    max_samples: usize,
) -> String {
    // Two names may sanitise to one (`a.b` and `a_b`): one family.
    let mut by_exposed: BTreeMap<String, (String, Vec<&Latest>)> = BTreeMap::new();
    for (name, values) in families {
        let entry = by_exposed
            .entry(exposed_name(name))
            .or_insert_with(|| (name.clone(), Vec::new()));
        entry
            .1
            .extend(values.iter().filter(|l| agents.contains_key(&l.oid)));
    }
    let mut out = String::new();
    let mut written = 0usize;
    let mut left_out = 0usize;
    for (exposed, (name, mut values)) in by_exposed {
        if values.is_empty() {
            continue;
        }
        if written >= max_samples {
            left_out += values.len();
            continue;
        }
        values.sort_by(|a, b| a.oid.cmp(&b.oid).then_with(|| a.labels.cmp(&b.labels)));
        let kind = if is_counter(name.as_str()) {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(
            out,
            "# HELP {exposed} {}",
            escape_help(&format!(
                "Sightline metric {name}, newest value per series."
            ))
        );
        let _ = writeln!(out, "# TYPE {exposed} {kind}");
        for latest in values {
            if written >= max_samples {
                left_out += 1;
                continue;
            }
            let Some(agent) = agents.get(&latest.oid) else {
                continue;
            };
            out.push_str(&exposed);
            out.push_str("{oname=\"");
            escape_value(&agent.oname, &mut out);
            let _ = write!(out, "\",oid=\"{}\",product=\"", latest.oid);
            escape_value(&agent.product, &mut out);
            out.push('"');
            for (key, value) in &latest.labels {
                let mut key = sanitise(key, false);
                if AGENT_LABELS.contains(&key.as_str()) || key.starts_with("__") {
                    key = format!("tag_{}", key.trim_start_matches('_'));
                }
                let _ = write!(out, ",{key}=\"");
                escape_value(value, &mut out);
                out.push('"');
            }
            let _ = writeln!(out, "}} {}", format_value(latest.value));
            written += 1;
        }
    }
    if left_out > 0 {
        let _ = writeln!(
            out,
            "# {left_out} samples left out: over {max_samples} in one answer"
        );
    }
    out
}

/// `GET /metrics`.
pub(super) async fn metrics<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
) -> Result<Response, ApiError> {
    let since = crate::now_ms() - WINDOW_MS;
    let agents: HashMap<i64, AgentLabels> = state
        .store
        .agents(project.id)
        .await?
        .into_iter()
        .filter(|a| a.terminated_ms.is_none())
        .map(|a| {
            (
                a.oid,
                AgentLabels {
                    oname: a.oname,
                    product: a.product,
                },
            )
        })
        .collect();
    let names = state.store.project_metric_names(project.id).await?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let values = state.store.latest_of(project.id, &refs, since).await?;
    let families: Vec<(String, Vec<Latest>)> = names.into_iter().zip(values).collect();
    let text = render(&families, &agents, MAX_SAMPLES);
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latest(oid: i64, labels: &[(&str, &str)], value: f64) -> Latest {
        Latest {
            oid,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            time_ms: 0,
            value,
        }
    }

    fn agents() -> HashMap<i64, AgentLabels> {
        [
            (
                1,
                AgentLabels {
                    oname: "web \"1\"\nx\\".into(),
                    product: "infra".into(),
                },
            ),
            (
                2,
                AgentLabels {
                    oname: "logs".into(),
                    product: "log".into(),
                },
            ),
        ]
        .into()
    }

    #[test]
    fn names_types_labels_and_escapes_follow_the_text_format() {
        let families = vec![
            (
                "cpu.usage".to_string(),
                vec![
                    latest(1, &[("cpu", "0")], 12.5),
                    latest(1, &[], 40.0),
                    latest(9, &[], 1.0),
                ],
            ),
            (
                "log.records".to_string(),
                vec![latest(2, &[("oname", "inner"), ("file-id", "a")], 1e6)],
            ),
            ("net.rx".to_string(), vec![]),
        ];
        let text = render(&families, &agents(), 100);
        let expected = "\
# HELP cpu_usage Sightline metric cpu.usage, newest value per series.
# TYPE cpu_usage gauge
cpu_usage{oname=\"web \\\"1\\\"\\nx\\\\\",oid=\"1\",product=\"infra\"} 40
cpu_usage{oname=\"web \\\"1\\\"\\nx\\\\\",oid=\"1\",product=\"infra\",cpu=\"0\"} 12.5
# HELP log_records_total Sightline metric log.records, newest value per series.
# TYPE log_records_total counter
log_records_total{oname=\"logs\",oid=\"2\",product=\"log\",file_id=\"a\",tag_oname=\"inner\"} 1000000
";
        assert_eq!(
            text, expected,
            "an unknown agent's and an empty family's lines are left out"
        );
    }

    #[test]
    fn the_answer_is_bounded_and_says_what_it_left_out() {
        let families = vec![(
            "m".to_string(),
            (0..10)
                .map(|i| latest(1, &[("i", &i.to_string())], 1.0))
                .collect(),
        )];
        let text = render(&families, &agents(), 4);
        assert_eq!(text.lines().filter(|l| l.starts_with("m{")).count(), 4);
        assert!(
            text.ends_with("# 6 samples left out: over 4 in one answer\n"),
            "{text}"
        );
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(exposed_name("disk.used_pct"), "disk_used_pct");
        assert_eq!(exposed_name("9lives-x"), "_9lives_x");
        assert_eq!(exposed_name("requests_total"), "requests_total");
        assert_eq!(sanitise("a:b", false), "a_b");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }
}
