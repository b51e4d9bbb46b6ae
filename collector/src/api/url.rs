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

/// Where a page of `checks` ends: the last entry's place in the list's
/// order (state, name, region, agent), as `after` carries it:
/// `<state>:<oid>:<name>` (the region is the agent's).
#[derive(Debug, Clone, PartialEq, Eq)]
struct After {
    state: UrlState,
    oid: i64,
    name: String,
}

impl After {
    fn of(t: &UrlTargetRow) -> After {
        After {
            state: t.latest.state,
            oid: t.oid,
            name: t.latest.target.clone(),
        }
    }

    fn text(&self) -> String {
        format!("{}:{}:{}", self.state.name(), self.oid, self.name)
    }
}

/// `after`, if given, as [`After::text`] wrote it.
fn param_after(params: &HashMap<String, String>) -> Result<Option<After>, ApiError> {
    let Some(text) = params.get("after") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::BadRequest(format!(
            "after: expected the next_after of a previous page, not '{text}'"
        ))
    };
    let mut parts = text.splitn(3, ':');
    let state = parts.next().and_then(UrlState::from_name).ok_or_else(bad)?;
    let oid = parts
        .next()
        .and_then(|o| o.parse::<i64>().ok())
        .ok_or_else(bad)?;
    let name = parts.next().ok_or_else(bad)?.to_string();
    Ok(Some(After { state, oid, name }))
}

/// The rank of a state in the list: down first.
fn state_rank(state: UrlState) -> usize {
    UrlState::ALL
        .iter()
        .position(|s| *s == state)
        .unwrap_or(UrlState::ALL.len())
}

/// The entries of `targets` (in the list's order) that come after `after`.
/// A target whose state changed between two pages moves in the order: it
/// may then show on both pages or on neither.
fn page_start(targets: &[UrlTargetRow], after: &After) -> usize {
    let oname = targets
        .iter()
        .find(|t| t.oid == after.oid)
        .map_or("", |t| t.oname.as_str());
    let key = (
        state_rank(after.state),
        after.name.as_str(),
        oname,
        after.oid,
    );
    targets.partition_point(|t| {
        (
            state_rank(t.latest.state),
            t.latest.target.as_str(),
            t.oname.as_str(),
            t.oid,
        ) <= key
    })
}

/// `GET /api/v1/url/checks?state=&agent=&limit=&after=`: every target of
/// the project, one entry per (target, agent): down first, then pending,
/// degraded and up, each by name and region. `counts` always counts them
/// all; with `limit` (1 to 1000) the answer holds at most that many
/// entries from `after` on, and `next_after` says where the next page
/// starts (null on the last page).
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
    let after = param_after(&params)?;
    let limit = match params.get("limit") {
        None => None,
        Some(_) => Some(usize::try_from(param_limit(&params, 1000)?).unwrap_or(1000)),
    };
    let targets = state.store.url_targets(project.id, &filter).await?;
    let mut counts: HashMap<&str, usize> = UrlState::ALL.iter().map(|s| (s.name(), 0)).collect();
    for t in &targets {
        *counts.entry(t.latest.state.name()).or_default() += 1;
    }
    let start = after.map_or(0, |a| page_start(&targets, &a));
    let rest = &targets[start.min(targets.len())..];
    let page = &rest[..limit.map_or(rest.len(), |l| l.min(rest.len()))];
    let next_after = (page.len() < rest.len())
        .then(|| page.last().map(|t| After::of(t).text()))
        .flatten();
    let list: Vec<Value> = page.iter().map(target_view).collect();
    Ok(Json(json!({
        "counts": counts,
        "targets": list,
        "next_after": next_after,
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

    fn row(state: UrlState, name: &str, oname: &str, oid: i64) -> UrlTargetRow {
        let mut latest = down_check();
        latest.state = state;
        latest.target = name.into();
        UrlTargetRow {
            oid,
            oname: oname.into(),
            since_ms: 0,
            latest,
        }
    }

    #[test]
    fn pages_resume_after_the_last_entry_in_the_lists_order() {
        let targets = [
            row(UrlState::Down, "shop", "eu-west", 7),
            row(UrlState::Down, "shop", "us-east", 3),
            row(UrlState::Up, "api", "eu-west", 7),
            row(UrlState::Up, "shop:8443", "eu-west", 7),
        ];
        let names = |from: usize| -> Vec<(String, i64)> {
            targets[from..]
                .iter()
                .map(|t| (t.latest.target.clone(), t.oid))
                .collect()
        };
        for (i, t) in targets.iter().enumerate() {
            let text = After::of(t).text();
            let params = HashMap::from([("after".to_string(), text.clone())]);
            let after = param_after(&params).expect("parses").expect("given");
            assert_eq!(page_start(&targets, &after), i + 1, "{text}");
        }
        assert_eq!(
            names(page_start(
                &targets,
                &After {
                    state: UrlState::Pending,
                    oid: 1,
                    name: "zzz".into()
                }
            )),
            [("api".to_string(), 7), ("shop:8443".to_string(), 7)]
        );
        for bad in ["", "sideways:7:shop", "down:x:shop", "down:7"] {
            let params = HashMap::from([("after".to_string(), bad.to_string())]);
            match param_after(&params) {
                Err(ApiError::BadRequest(m)) => assert!(m.starts_with("after: "), "{m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
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
