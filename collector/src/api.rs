//! The JSON query API under `/api/v1/`, and `GET /metrics` for Prometheus
//! (the same token, the text format: `api/prometheus.rs`).
//!
//! Invariants:
//! - Every route but `health` requires `Authorization: Bearer <token>` or
//!   the console's session cookie, and answers only with that project's
//!   data: an agent of another project answers 404, exactly like one that
//!   does not exist. A state-changing request authenticated by the cookie
//!   must carry this collector's own `Origin` (403 otherwise).
//! - Errors are JSON `{"error": "..."}` with a status that says whose fault
//!   it is (400 bad parameter, 401 no or bad token, 403 foreign origin, 404
//!   not found, 503 store unavailable).
//! - A query never returns an unbounded number of points: long ranges are
//!   averaged into at most [`MAX_BUCKETS`] buckets per series.

mod alerts;
mod db;
mod lifecycle;
mod logs;
mod prometheus;
mod url;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use crate::auth::{ProjectCache, hash_secret};
use crate::model::{Agent, AgentHealth, EventQuery, Project};
use crate::store::{Range, Store, StoreError};
use crate::time_text::{format_ms, parse_time};

/// Ranges longer than this many raw points per series are averaged.
pub const MAX_BUCKETS: i64 = 10_000;
const HOUR_MS: i64 = 3_600_000;

/// What every handler shares.
#[derive(Debug)]
pub struct ApiState<S> {
    /// The store.
    pub store: Arc<S>,
    /// Token hash to project.
    pub tokens: ProjectCache,
    /// The group writer's counters, shown by `health`.
    pub writes: Arc<crate::store::group::GroupStats>,
    /// The console's sign-in sessions.
    pub sessions: crate::console::session::Sessions,
    /// Alert transitions for `stream`.
    pub alerts: crate::alerts::AlertsHub,
    /// `console.origin`: the origin a cookie-authenticated change must
    /// carry, when a proxy in front rewrites `Host`.
    pub public_origin: Option<String>,
}

/// One route of the API (the console's own API routes included): its path
/// in the router's syntax and the methods it answers. [`ROUTES`] is the
/// table [`router`] is built from, so a test can walk every route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The path, with `{oid}`, `{id}`, `{name}` for its parameters.
    pub path: &'static str,
    /// The methods it answers (any other is 405).
    pub methods: &'static [&'static str],
    /// Whether it answers without credentials (only `health`).
    pub public: bool,
}

const fn route(path: &'static str, methods: &'static [&'static str]) -> Route {
    Route {
        path,
        methods,
        public: false,
    }
}

/// Every route [`router`] answers, in the order it adds them.
pub const ROUTES: &[Route] = &[
    Route {
        path: "/api/v1/health",
        methods: &["GET"],
        public: true,
    },
    route("/metrics", &["GET"]),
    route("/api/v1/session", &["GET", "DELETE"]),
    route("/api/v1/events/stream", &["GET"]),
    route("/api/v1/agents", &["GET"]),
    route("/api/v1/agents/{oid}", &["GET"]),
    route("/api/v1/agents/{oid}/metrics", &["GET"]),
    route("/api/v1/agents/{oid}/processes", &["GET"]),
    route("/api/v1/agents/{oid}/snapshots", &["GET"]),
    route("/api/v1/agents/{oid}/delivery", &["GET"]),
    route("/api/v1/agents/{oid}/terminate", &["POST"]),
    route("/api/v1/agents/{oid}/enable", &["POST"]),
    route("/api/v1/agents/{oid}/pause", &["POST"]),
    route("/api/v1/agents/{oid}/resume", &["POST"]),
    route("/api/v1/events", &["GET"]),
    route("/api/v1/fleet", &["GET"]),
    route("/api/v1/processes/top", &["GET"]),
    route("/api/v1/logs/search", &["GET"]),
    route("/api/v1/logs/tail", &["GET"]),
    route("/api/v1/logs/patterns", &["GET"]),
    route("/api/v1/db/{oid}/stats", &["GET"]),
    route("/api/v1/db/{oid}/sessions", &["GET"]),
    route("/api/v1/db/{oid}/locks", &["GET"]),
    route("/api/v1/db/{oid}/snapshots", &["GET"]),
    route("/api/v1/url/checks", &["GET"]),
    route("/api/v1/url/checks/{name}/results", &["GET"]),
    route("/api/v1/alerts/rules", &["GET", "POST"]),
    route("/api/v1/alerts/rules/{id}", &["GET", "PUT", "DELETE"]),
    route("/api/v1/alerts/firing", &["GET"]),
    route("/api/v1/alerts/history", &["GET"]),
    route("/api/v1/alerts/channels", &["GET", "POST"]),
    route("/api/v1/alerts/channels/{id}", &["PUT", "DELETE"]),
    route("/api/v1/alerts/channels/{id}/test", &["POST"]),
    route("/api/v1/alerts/deliveries", &["GET"]),
    route("/api/v1/alerts/stream", &["GET"]),
];

/// The handlers of one of [`ROUTES`]' paths (None for a path it does not
/// list, which is then never routed).
fn handlers<S: Store>(path: &str) -> Option<MethodRouter<Arc<ApiState<S>>>> {
    use crate::console as c;
    let handlers = match path {
        "/api/v1/health" => get(health::<S>),
        "/metrics" => get(prometheus::metrics::<S>),
        "/api/v1/session" => get(c::whoami).delete(c::end_session::<S>),
        "/api/v1/events/stream" => get(c::event_stream::<S>),
        "/api/v1/agents" => get(agents::<S>),
        "/api/v1/agents/{oid}" => get(agent::<S>),
        "/api/v1/agents/{oid}/metrics" => get(metrics::<S>),
        "/api/v1/agents/{oid}/processes" => get(processes::<S>),
        "/api/v1/agents/{oid}/snapshots" => get(snapshots::<S>),
        "/api/v1/agents/{oid}/delivery" => get(delivery::<S>),
        "/api/v1/agents/{oid}/terminate" => post(lifecycle::terminate::<S>),
        "/api/v1/agents/{oid}/enable" => post(lifecycle::enable::<S>),
        "/api/v1/agents/{oid}/pause" => post(alerts::pause::<S>),
        "/api/v1/agents/{oid}/resume" => post(alerts::resume::<S>),
        "/api/v1/events" => get(events::<S>),
        "/api/v1/fleet" => get(fleet::<S>),
        "/api/v1/processes/top" => get(processes_top::<S>),
        "/api/v1/logs/search" => get(logs::search::<S>),
        "/api/v1/logs/tail" => get(logs::tail::<S>),
        "/api/v1/logs/patterns" => get(logs::patterns::<S>),
        "/api/v1/db/{oid}/stats" => get(db::stats::<S>),
        "/api/v1/db/{oid}/sessions" => get(db::sessions::<S>),
        "/api/v1/db/{oid}/locks" => get(db::locks::<S>),
        "/api/v1/db/{oid}/snapshots" => get(db::snapshots::<S>),
        "/api/v1/url/checks" => get(url::checks::<S>),
        "/api/v1/url/checks/{name}/results" => get(url::results::<S>),
        "/api/v1/alerts/rules" => get(alerts::rules::<S>).post(alerts::create_rule::<S>),
        "/api/v1/alerts/rules/{id}" => get(alerts::rule::<S>)
            .put(alerts::update_rule::<S>)
            .delete(alerts::delete_rule::<S>),
        "/api/v1/alerts/firing" => get(alerts::firing::<S>),
        "/api/v1/alerts/history" => get(alerts::history::<S>),
        "/api/v1/alerts/channels" => get(alerts::channels::<S>).post(alerts::create_channel::<S>),
        "/api/v1/alerts/channels/{id}" => {
            put(alerts::update_channel::<S>).delete(alerts::delete_channel::<S>)
        }
        "/api/v1/alerts/channels/{id}/test" => post(alerts::test_channel::<S>),
        "/api/v1/alerts/deliveries" => get(alerts::deliveries::<S>),
        "/api/v1/alerts/stream" => get(alerts::stream::<S>),
        _ => return None,
    };
    Some(handlers)
}

/// The API's routes: exactly [`ROUTES`].
pub fn router<S: Store>(state: Arc<ApiState<S>>) -> Router {
    ROUTES
        .iter()
        .filter_map(|r| Some((r.path, handlers::<S>(r.path)?)))
        .fold(Router::new(), |router, (path, handlers)| {
            router.route(path, handlers)
        })
        .fallback(not_found)
        .with_state(state)
}

/// An API error.
#[derive(Debug)]
pub enum ApiError {
    /// 400.
    BadRequest(String),
    /// 401.
    Unauthorized(&'static str),
    /// 403.
    Forbidden(&'static str),
    /// 404.
    NotFound(String),
    /// 503.
    Unavailable,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "Query failed.");
        ApiError::Unavailable
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m.to_string()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m.to_string()),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is unavailable".to_string(),
            ),
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The project of the request's bearer token, or of the console session
/// its cookie names. The bearer token wins when both are present.
#[derive(Debug)]
pub struct Authed(pub Project);

impl<S: Store> FromRequestParts<Arc<ApiState<S>>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState<S>>,
    ) -> Result<Self, ApiError> {
        let Some(header) = parts.headers.get(header::AUTHORIZATION) else {
            return session_project(parts, state);
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized(
                "expected Authorization: Bearer <token>",
            ))?;
        let store = state.store.clone();
        let project = state
            .tokens
            .get(hash_secret(token), |hash| async move {
                store.project_by_token(&hash).await
            })
            .await?;
        project
            .map(Authed)
            .ok_or(ApiError::Unauthorized("unknown token"))
    }
}

/// The project of the console session in the request's cookie. A cookie is
/// sent by the browser whoever made the page, so a state-changing request
/// must also come from this collector's own page (`Origin`).
fn session_project<S: Store>(parts: &Parts, state: &ApiState<S>) -> Result<Authed, ApiError> {
    let id = crate::console::session_id(&parts.headers).ok_or(ApiError::Unauthorized(
        "missing Authorization: Bearer <token>",
    ))?;
    let project = state.sessions.project(id).ok_or(ApiError::Unauthorized(
        "session expired or unknown; sign in again",
    ))?;
    let reads = [Method::GET, Method::HEAD, Method::OPTIONS];
    if !reads.contains(&parts.method)
        && !crate::console::same_origin(&parts.headers, state.public_origin.as_deref())
    {
        return Err(ApiError::Forbidden(
            "a change made with the session cookie must come from the console's own page",
        ));
    }
    Ok(Authed(project))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see /api/v1/health, /api/v1/agents, /api/v1/events".into())
}

/// Liveness, and how the store's writes are grouped (batches stored and
/// the transactions they took), for benchmarks and operators.
async fn health<S: Store>(State(state): State<Arc<ApiState<S>>>) -> Json<serde_json::Value> {
    use std::sync::atomic::Ordering::Relaxed;
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "time_ms": crate::now_ms(),
        "store": {
            "batches": state.writes.batches.load(Relaxed),
            "groups": state.writes.groups.load(Relaxed),
        },
    }))
}

/// An agent as the API shows it.
#[derive(Debug, Serialize)]
struct AgentView {
    oid: i64,
    oname: String,
    product: String,
    hostname: String,
    os: String,
    version: String,
    status: &'static str,
    interval_ms: i64,
    boot_time: String,
    first_seen: String,
    last_seen: String,
    first_seen_ms: i64,
    last_seen_ms: i64,
    health: Option<AgentHealth>,
    /// Terminated: its data deleted, refused until enabled.
    terminated: bool,
    /// Notifications paused (maintenance).
    paused: bool,
    /// Until when (`None`: until resumed, or not paused).
    paused_until_ms: Option<i64>,
}

impl AgentView {
    /// Marks the view paused when `paused` (from
    /// [`crate::alerts::active_pauses`]) holds it.
    fn with_pause(mut self, paused: &HashMap<i64, Option<i64>>) -> AgentView {
        if let Some(until) = paused.get(&self.oid) {
            self.paused = true;
            self.paused_until_ms = *until;
        }
        self
    }

    fn new(agent: Agent, now_ms: i64) -> AgentView {
        let status = if agent.is_quiet(now_ms) {
            "no data"
        } else {
            "up"
        };
        AgentView {
            oid: agent.oid,
            status,
            boot_time: format_ms(agent.boot_time_ms),
            first_seen: format_ms(agent.first_seen_ms),
            last_seen: format_ms(agent.last_seen_ms),
            first_seen_ms: agent.first_seen_ms,
            last_seen_ms: agent.last_seen_ms,
            terminated: agent.terminated_ms.is_some(),
            interval_ms: agent.interval_ms,
            oname: agent.oname,
            product: agent.product,
            hostname: agent.hostname,
            os: agent.os,
            version: agent.version,
            health: agent.health,
            paused: false,
            paused_until_ms: None,
        }
    }
}

async fn agents<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
) -> Result<Json<serde_json::Value>, ApiError> {
    let now = crate::now_ms();
    let paused = crate::alerts::active_pauses(&state.store.pauses(Some(project.id)).await?, now);
    let list: Vec<AgentView> = state
        .store
        .agents(project.id)
        .await?
        .into_iter()
        .map(|a| AgentView::new(a, now).with_pause(&paused))
        .collect();
    Ok(Json(json!({ "project": project.name, "agents": list })))
}

async fn find_agent<S: Store>(
    state: &ApiState<S>,
    project: &Project,
    oid: &str,
) -> Result<Agent, ApiError> {
    let missing = || ApiError::NotFound(format!("no agent {oid} in this project"));
    let oid: i64 = oid.parse().map_err(|_| missing())?;
    state
        .store
        .agent(project.id, oid)
        .await?
        .ok_or_else(missing)
}

async fn agent<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(oid): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    let agent = find_agent(&state, &project, &oid).await?;
    let now = crate::now_ms();
    let paused = crate::alerts::active_pauses(&state.store.pauses(Some(project.id)).await?, now);
    Ok(Json(AgentView::new(agent, now).with_pause(&paused)))
}

fn param_time(params: &HashMap<String, String>, key: &str, default: i64) -> Result<i64, ApiError> {
    match params.get(key) {
        None => Ok(default),
        Some(text) => parse_time(text).map_err(|e| ApiError::BadRequest(format!("{key}: {e}"))),
    }
}

/// `limit`, from 1 to 1000.
fn param_limit(params: &HashMap<String, String>, default: i64) -> Result<i64, ApiError> {
    match params.get("limit") {
        None => Ok(default),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| ApiError::BadRequest("limit: expected 1 to 1000".into())),
    }
}

fn param_range(
    params: &HashMap<String, String>,
    default_span: i64,
) -> Result<(i64, i64), ApiError> {
    let now = crate::now_ms();
    let to = param_time(params, "to", now)?;
    let from = param_time(params, "from", to.saturating_sub(default_span))?;
    if from > to {
        return Err(ApiError::BadRequest("from is after to".into()));
    }
    Ok((from, to))
}

async fn metrics<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(oid): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let agent = find_agent(&state, &project, &oid).await?;
    let Some(name) = params.get("name") else {
        let names = state.store.metric_names(project.id, agent.oid).await?;
        return Ok(Json(json!({ "oid": agent.oid, "names": names })));
    };
    series_answer(&state, &project, &agent, name, &params).await
}

/// The series of metric `name` of `agent` over `from`/`to` (the last hour
/// by default), averaged into `step` buckets when asked or when the range
/// holds more than [`MAX_BUCKETS`] intervals.
async fn series_answer<S: Store>(
    state: &ApiState<S>,
    project: &Project,
    agent: &Agent,
    name: &str,
    params: &HashMap<String, String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (from, to) = param_range(params, HOUR_MS)?;
    let requested_step = match params.get("step") {
        None => None,
        Some(text) => {
            Some(parse_step(text).map_err(|e| ApiError::BadRequest(format!("step: {e}")))?)
        }
    };
    let interval = agent.interval_ms.max(1000);
    // Times come from the client: a span that overflows is refused, not
    // wrapped into "no downsampling".
    let span = to
        .checked_sub(from)
        .ok_or_else(|| ApiError::BadRequest("from and to are too far apart".into()))?;
    let needed = span / interval;
    let step = match requested_step {
        Some(step) => Some(step.max(span / MAX_BUCKETS)),
        None if needed > MAX_BUCKETS => Some(span / MAX_BUCKETS),
        None => None,
    };
    let range = Range {
        from_ms: from,
        to_ms: to,
        step_ms: step,
    };
    let series = state
        .store
        .metrics(project.id, agent.oid, name, range)
        .await?;
    Ok(Json(json!({
        "oid": agent.oid,
        "name": name,
        "from_ms": from,
        "to_ms": to,
        "step_ms": step,
        "series": series,
    })))
}

fn parse_step(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return if ms > 0 {
            Ok(ms)
        } else {
            Err("must be positive".into())
        };
    }
    agent_core::config::parse_duration(text)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1))
}

async fn processes<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(oid): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let agent = find_agent(&state, &project, &oid).await?;
    let at = match params.get("at") {
        None => None,
        Some(text) => Some(parse_time(text).map_err(|e| ApiError::BadRequest(format!("at: {e}")))?),
    };
    let reason = params.get("reason").map(String::as_str);
    let snapshot = state
        .store
        .process_snapshot(project.id, agent.oid, at, reason)
        .await?;
    match snapshot {
        Some(s) => Ok(Json(
            json!({ "oid": agent.oid, "time": format_ms(s.time_ms), "snapshot": s }),
        )),
        None => Err(ApiError::NotFound(format!(
            "agent {} has sent no process snapshot",
            agent.oid
        ))),
    }
}

/// When an agent took its process snapshots, newest first:
/// `from`, `to` (default the last hour), `limit` (default 100).
async fn snapshots<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(oid): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let agent = find_agent(&state, &project, &oid).await?;
    let (from, to) = param_range(&params, HOUR_MS)?;
    let limit = param_limit(&params, 100)?;
    let times = state
        .store
        .snapshot_times(project.id, agent.oid, from, to, limit)
        .await?;
    let list: Vec<serde_json::Value> = times
        .into_iter()
        .map(|(time_ms, reason)| json!({ "time_ms": time_ms, "reason": reason }))
        .collect();
    Ok(Json(json!({ "oid": agent.oid, "snapshots": list })))
}

/// How far back the fleet views look for a server's latest values.
const FLEET_WINDOW_MS: i64 = HOUR_MS;

/// Every agent of the project (servers with their current CPU, memory,
/// fullest disk and disk I/O; other products with their status), the top 5
/// servers by CPU, memory and disk I/O, and the top 5 processes across the
/// servers' latest snapshots: everything the console's fleet screen draws,
/// in one request.
async fn fleet<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
) -> Result<Json<serde_json::Value>, ApiError> {
    let now = crate::now_ms();
    let since = now - FLEET_WINDOW_MS;
    let agents: Vec<Agent> = state.store.agents(project.id).await?;
    let store = &state.store;
    // The five names at once: a few statements, not one per agent.
    let mut lists = store
        .latest_of(project.id, &crate::fleet::LatestValues::NAMES, since)
        .await?
        .into_iter();
    let mut next = || lists.next().unwrap_or_default();
    let values = crate::fleet::LatestValues {
        cpu: next(),
        mem: next(),
        disk: next(),
        io_read: next(),
        io_write: next(),
    };
    let mut servers = crate::fleet::servers(&agents, &values, now);
    let paused = crate::alerts::active_pauses(&state.store.pauses(Some(project.id)).await?, now);
    for server in &mut servers {
        if let Some(until) = paused.get(&server.oid) {
            server.paused = true;
            server.paused_until_ms = *until;
        }
    }
    let up = servers.iter().filter(|s| s.status == "up").count();
    let names = crate::fleet::onames(&agents);
    let snapshots: Vec<(i64, String, crate::model::SnapshotRow)> = store
        .latest_snapshots(project.id, "top", since)
        .await?
        .into_iter()
        .filter_map(|(oid, s)| Some((oid, names.get(&oid)?.clone(), s)))
        .collect();
    Ok(Json(json!({
        "project": project.name,
        "time_ms": now,
        "counts": { "servers": servers.len(), "up": up, "no_data": servers.len() - up },
        "top": {
            "cpu": crate::fleet::top(&servers, 5, |s| s.cpu_pct),
            "mem": crate::fleet::top(&servers, 5, |s| s.mem_pct),
            "disk_io": crate::fleet::top(&servers, 5, |s| s.disk_io_bytes_per_sec),
            "processes": crate::fleet::top_processes(&snapshots, 5),
        },
        "servers": servers,
    })))
}

/// Processes aggregated by name across the project's servers, from each
/// server's latest top-N snapshot: max and mean CPU and memory, how many,
/// on which servers. `sort=cpu|mem`, `limit` (default 20).
async fn processes_top<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let sort = params.get("sort").map_or("cpu", String::as_str);
    if !["cpu", "mem"].contains(&sort) {
        return Err(ApiError::BadRequest("sort: expected cpu or mem".into()));
    }
    let limit = param_limit(&params, 20)?;
    let now = crate::now_ms();
    let agents = state.store.agents(project.id).await?;
    let names = crate::fleet::onames(&agents);
    let snapshots: Vec<(String, crate::model::SnapshotRow)> = state
        .store
        .latest_snapshots(project.id, "top", now - FLEET_WINDOW_MS)
        .await?
        .into_iter()
        .filter_map(|(oid, s)| Some((names.get(&oid)?.clone(), s)))
        .collect();
    let mut groups = crate::fleet::group_processes(&snapshots);
    match sort {
        "mem" => groups.sort_by(|a, b| b.mem_max_pct.total_cmp(&a.mem_max_pct)),
        _ => groups.sort_by(|a, b| b.cpu_max.total_cmp(&a.cpu_max)),
    }
    groups.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(Json(
        json!({ "servers_reporting": snapshots.len(), "sort": sort, "processes": groups }),
    ))
}

/// Per spool instance: batches stored, first and last sequence number, and
/// how many in between are missing. Missing numbers are batches the agent's
/// spool dropped (see the `spool.overflow` events) or that retention removed.
async fn delivery<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(oid): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let agent = find_agent(&state, &project, &oid).await?;
    let instances = state.store.delivery(project.id, agent.oid).await?;
    Ok(Json(json!({ "oid": agent.oid, "instances": instances })))
}

async fn events<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (from, to) = param_range(&params, 24 * HOUR_MS)?;
    let oid = match params.get("oid") {
        None => None,
        Some(text) => Some(
            text.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("oid: not a number: '{text}'")))?,
        ),
    };
    let limit = param_limit(&params, 100)?;
    let query = EventQuery {
        from_ms: from,
        to_ms: to,
        oid,
        kind: params.get("kind").cloned(),
        limit,
    };
    let events = state.store.events(project.id, &query).await?;
    Ok(Json(json!({ "events": events })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    /// [`ROUTES`] is what the router answers: every listed method of every
    /// listed path reaches its handler (401 without credentials, 200 for
    /// `health`), every other method is 405, and a path it does not list
    /// is the fallback's 404.
    #[tokio::test]
    async fn the_route_table_is_exactly_what_the_router_answers() {
        let dir = std::env::temp_dir().join(format!("sl-routes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(SqliteStore::open(&dir).await.expect("store"));
        let state = Arc::new(ApiState {
            store,
            tokens: ProjectCache::default(),
            writes: Arc::default(),
            sessions: crate::console::session::Sessions::default(),
            alerts: crate::alerts::AlertsHub::default(),
            public_origin: None,
        });
        let app = router(state);
        for route in ROUTES {
            assert!(
                handlers::<SqliteStore>(route.path).is_some(),
                "{}",
                route.path
            );
            let path = route
                .path
                .replace("{oid}", "1")
                .replace("{id}", "1")
                .replace("{name}", "home");
            for method in ["GET", "POST", "PUT", "DELETE"] {
                let request = Request::builder()
                    .method(method)
                    .uri(&path)
                    .body(Body::empty())
                    .expect("request");
                let status = app.clone().oneshot(request).await.expect("answer").status();
                let expected = match (route.methods.contains(&method), route.public) {
                    (false, _) => StatusCode::METHOD_NOT_ALLOWED,
                    (true, true) => StatusCode::OK,
                    (true, false) => StatusCode::UNAUTHORIZED,
                };
                assert_eq!(status, expected, "{method} {path}");
            }
        }
        let request = Request::builder()
            .uri("/api/v1/nothing")
            .body(Body::empty())
            .expect("request");
        let status = app.oneshot(request).await.expect("answer").status();
        assert_eq!(status, StatusCode::NOT_FOUND);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
