//! The URL routes, under `/api/v1/url/`: `checks` (every target of the
//! project as it is now, down first) and `checks/{name}/results` (one
//! target's checks over time with their phases, grouped by the agent
//! (region) that made them).
//!
//! Invariants: every answer is scoped to the token's project (a target or
//! agent of another project is 404, as one that does not exist); a bad
//! `state`, `agent`, `from`, `to` or `limit` is 400 naming the parameter;
//! `results` answers at most `limit` checks per agent, with where the next
//! page starts.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};

use super::{ApiError, ApiState, Authed, HOUR_MS, param_limit, param_range};
use crate::model::{Project, UrlCheckRow, UrlState, UrlTargetFilter, UrlTargetRow};
use crate::store::Store;
use crate::time_text::format_ms;

/// The product name URL agents register with.
const PRODUCT: &str = "url";

/// `state`, if given: one of `down`, `pending`, `degraded`, `up`.
fn param_state(params: &HashMap<String, String>) -> Result<Option<UrlState>, ApiError> {
    match params.get("state") {
        None => Ok(None),
        Some(text) => UrlState::from_name(text).map(Some).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "state: expected down, pending, degraded or up, not '{text}'"
            ))
        }),
    }
}

/// `agent`, if given: a URL agent of the project, by oid or by name (its
/// region); 404 if there is none.
async fn param_agent<S: Store>(
    state: &ApiState<S>,
    project: &Project,
    params: &HashMap<String, String>,
) -> Result<Option<i64>, ApiError> {
    let Some(wanted) = params.get("agent") else {
        return Ok(None);
    };
    if wanted.is_empty() {
        return Err(ApiError::BadRequest(
            "agent: expected an agent's oid or name".into(),
        ));
    }
    let agents = state.store.agents(project.id).await?;
    agents
        .iter()
        .filter(|a| a.product == PRODUCT)
        .find(|a| a.oid.to_string() == *wanted)
        .or_else(|| {
            agents
                .iter()
                .find(|a| a.product == PRODUCT && a.oname == *wanted)
        })
        .map(|a| Some(a.oid))
        .ok_or_else(|| ApiError::NotFound(format!("no URL agent '{wanted}' in this project")))
}

/// Microseconds as milliseconds, to the microsecond.
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// `GET /api/v1/url/checks?state=&agent=`: every target of the project,
/// one entry per (target, agent): down first, then pending, degraded and
/// up, each by name and region.
pub(super) async fn checks<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let filter = UrlTargetFilter {
        state: param_state(&params)?,
        oid: param_agent(&state, &project, &params).await?,
        target: None,
    };
    let targets = state.store.url_targets(project.id, &filter).await?;
    let mut counts: HashMap<&str, usize> = UrlState::ALL.iter().map(|s| (s.name(), 0)).collect();
    for t in &targets {
        *counts.entry(t.latest.state.name()).or_default() += 1;
    }
    let list: Vec<Value> = targets.iter().map(target_view).collect();
    Ok(Json(json!({
        "counts": counts,
        "targets": list,
    })))
}

/// One target as the `checks` route lists it.
pub(crate) fn target_view(t: &UrlTargetRow) -> Value {
    let c = &t.latest;
    json!({
        "name": c.target,
        "region": t.oname,
        "oid": t.oid,
        "url": c.url,
        "method": c.method,
        "state": c.state,
        "since": format_ms(t.since_ms),
        "since_ms": t.since_ms,
        "last_check": format_ms(c.time_ms),
        "last_check_ms": c.time_ms,
        "ok": c.ok,
        "status_code": c.status_code,
        "elapsed_ms": ms(c.phases.total_us),
        "body_bytes": c.body_bytes,
        "failure": c.failure,
        "detail": c.detail,
        "cert_days_left": c.certificate.as_ref().map(|x| x.days_left),
        "cert_chain_days_left": c.certificate.as_ref().map(|x| x.chain_days_left),
    })
}

/// `GET /api/v1/url/checks/{name}/results?from=&to=&agent=&limit=`: the
/// target's checks in `[from, to]` (the last hour by default), newest
/// first, grouped by agent: each agent (region) that checks a target of
/// this name has its own list of at most `limit` (100 unless told), and
/// `next_to`, the `to` of its next page when there are more.
pub(super) async fn results<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (from, to) = param_range(&params, HOUR_MS)?;
    let limit = param_limit(&params, 100)?;
    let filter = UrlTargetFilter {
        state: None,
        oid: param_agent(&state, &project, &params).await?,
        target: Some(name.clone()),
    };
    let mut targets = state.store.url_targets(project.id, &filter).await?;
    if targets.is_empty() {
        return Err(ApiError::NotFound(match filter.oid {
            None => format!("no URL target '{name}' in this project"),
            Some(oid) => format!("agent {oid} checks no URL target '{name}'"),
        }));
    }
    targets.sort_by(|a, b| (&a.oname, a.oid).cmp(&(&b.oname, b.oid)));
    let mut agents = Vec::with_capacity(targets.len());
    for t in targets {
        let mut checks = state
            .store
            .url_results(project.id, t.oid, &name, from, to, limit + 1)
            .await?;
        let more = checks.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        checks.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_to = more.then(|| checks.last().map(|c| c.time_ms - 1)).flatten();
        agents.push(json!({
            "oid": t.oid,
            "region": t.oname,
            "url": t.latest.url,
            "method": t.latest.method,
            "state": t.latest.state,
            "since_ms": t.since_ms,
            "results": checks.iter().map(result_view).collect::<Vec<_>>(),
            "next_to": next_to,
        }));
    }
    Ok(Json(json!({
        "name": name,
        "from_ms": from,
        "to_ms": to,
        "agents": agents,
    })))
}

/// One check as the `results` route shows it: the seed's columns (check
/// time, elapsed, body length, status, reason) and the phases.
pub(crate) fn result_view(c: &UrlCheckRow) -> Value {
    let p = &c.phases;
    json!({
        "time": format_ms(c.time_ms),
        "time_ms": c.time_ms,
        "elapsed_ms": ms(p.total_us),
        "body_bytes": c.body_bytes,
        "status_code": c.status_code,
        "ok": c.ok,
        "state": c.state,
        "reason": c.failure,
        "detail": c.detail,
        "phases_ms": {
            "dns": ms(p.dns_us),
            "connect": ms(p.connect_us),
            "tls": ms(p.tls_us),
            "first_byte": ms(p.first_byte_us),
            "transfer": ms(p.transfer_us),
            "total": ms(p.total_us),
        },
        "http_version": c.http_version,
        "redirects": c.redirects,
        "final_url": c.final_url,
        "remote_ip": c.remote_ip,
        "certificate": c.certificate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{UrlCertificateRow, UrlPhases};

    fn down_check() -> UrlCheckRow {
        UrlCheckRow {
            target: "shop".into(),
            url: "https://shop.example/health".into(),
            method: "GET".into(),
            time_ms: 1_700_000_060_000,
            state: UrlState::Down,
            ok: false,
            failure: "timeout_first_byte".into(),
            detail: "no first byte within 10 s".into(),
            phases: UrlPhases {
                dns_us: 1_200,
                connect_us: 350,
                tls_us: 4_100,
                first_byte_us: 10_000_000,
                transfer_us: 0,
                total_us: 10_005_650,
            },
            status_code: 0,
            http_version: String::new(),
            body_bytes: 0,
            redirects: 0,
            final_url: String::new(),
            remote_ip: "192.0.2.7".into(),
            certificate: Some(UrlCertificateRow {
                subject: "CN=shop.example".into(),
                issuer: "CN=Example CA".into(),
                not_after_ms: 1_701_000_000_000,
                days_left: 11,
                chain_days_left: 11,
            }),
        }
    }

    #[test]
    fn a_down_target_shows_its_reason_phases_and_certificate() {
        let target = UrlTargetRow {
            oid: 7,
            oname: "eu-west".into(),
            since_ms: 1_700_000_000_000,
            latest: down_check(),
        };
        let view = target_view(&target);
        assert_eq!(view["state"], "down");
        assert_eq!(view["region"], "eu-west");
        assert_eq!(view["elapsed_ms"], 10_005.65);
        assert_eq!(view["cert_days_left"], 11);
        assert_eq!(view["since"], "2023-11-14T22:13:20Z");
        let result = result_view(&target.latest);
        assert_eq!(result["reason"], "timeout_first_byte");
        assert_eq!(result["phases_ms"]["first_byte"], 10_000.0);
        assert_eq!(result["phases_ms"]["dns"], 1.2);
        assert_eq!(result["certificate"]["issuer"], "CN=Example CA");
        let mut plain = down_check();
        plain.certificate = None;
        assert_eq!(
            target_view(&UrlTargetRow {
                latest: plain,
                ..target
            })["cert_days_left"],
            Value::Null
        );
    }

    #[test]
    fn a_bad_state_names_the_parameter() {
        let params = HashMap::from([("state".to_string(), "sideways".to_string())]);
        match param_state(&params) {
            Err(ApiError::BadRequest(m)) => assert!(m.starts_with("state: "), "{m}"),
            other => panic!("{other:?}"),
        }
        let params = HashMap::from([("state".to_string(), "DOWN".to_string())]);
        assert_eq!(param_state(&params).ok().flatten(), Some(UrlState::Down));
    }
}
