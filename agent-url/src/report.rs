//! `sightline-url test`: every target checked once, at most `concurrency`
//! at a time, and the results as a table for people: state, status, time,
//! each phase, body size, certificate days and why a check failed.
//!
//! Never sends anything to the collector; never prints a secret (the
//! table shows names, URLs as configured and results only).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;

use crate::probe::{self, CheckResult};
use crate::settings::Target;

/// Checks every target once; results in the targets' name order.
pub async fn check_all(targets: &BTreeMap<String, Target>, concurrency: usize) -> Vec<CheckResult> {
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    for (i, target) in targets.values().enumerate() {
        let target = target.clone();
        let semaphore = semaphore.clone();
        set.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            (i, probe::check(&target).await)
        });
    }
    let mut results: Vec<(usize, CheckResult)> = Vec::with_capacity(targets.len());
    while let Some(joined) = set.join_next().await {
        if let Ok(r) = joined {
            results.push(r);
        }
    }
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// The table of `results`, one line per target, then a line per failure.
pub fn table(results: &[CheckResult]) -> String {
    let header = [
        "TARGET",
        "RESULT",
        "STATUS",
        "HTTP",
        "TOTAL_MS",
        "DNS",
        "CONNECT",
        "TLS",
        "FIRST_BYTE",
        "TRANSFER",
        "BYTES",
        "REDIRECTS",
        "CERT_DAYS",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    let now = SystemTime::now();
    for r in results {
        let result = match r.failure {
            None => "ok".to_string(),
            Some(f) => f.as_str().to_string(),
        };
        let cert = r.certificate.as_ref().map_or("-".to_string(), |c| {
            let (leaf, chain) = (c.days_left(now), c.chain_days_left(now));
            if chain < leaf {
                format!("{leaf} (chain {chain})")
            } else {
                leaf.to_string()
            }
        });
        rows.push(vec![
            r.target.clone(),
            result,
            if r.status == 0 {
                "-".into()
            } else {
                r.status.to_string()
            },
            if r.http_version.is_empty() {
                "-".into()
            } else {
                r.http_version.to_string()
            },
            ms(r.total),
            ms(r.phases.dns),
            ms(r.phases.connect),
            ms(r.phases.tls),
            ms(r.phases.first_byte),
            ms(r.phases.transfer),
            r.body_bytes.to_string(),
            r.redirects.to_string(),
            cert,
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    for r in results.iter().filter(|r| r.failure.is_some()) {
        let _ = writeln!(out, "{}: {}", r.target, r.detail);
    }
    out
}
