//! `/api/v1/alerts/...`: rules, what fires, history, channels (with a
//! test), delivery attempts, and the `stream` of transitions; and the
//! agents' `pause` and `resume`. Everything scoped to the caller's
//! project through [`Authed`], like the rest of the API.
//!
//! Invariant: a channel leaves here masked ([`crate::alerts::ChannelRow::view`]);
//! a rule is parsed before it is stored, and its parse error (rule name
//! and column) is the 400's message.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::{ApiError, ApiState, Authed, find_agent, param_limit, param_range};
use crate::alerts::notify::{Body, queue};
use crate::alerts::{ChannelRow, ChannelSpec, RuleSpec};
use crate::store::{Store, StoreError};
use crate::time_text::{format_ms, parse_time};

/// Most rules a project may have.
pub(super) const MAX_RULES: usize = 200;
/// Most channels a project may have.
pub(super) const MAX_CHANNELS: usize = 50;
const DAY_MS: i64 = 86_400_000;

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))
}

fn parse_id(text: &str, what: &str) -> Result<i64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::NotFound(format!("no {what} {text} in this project")))
}

fn conflict(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(m) => ApiError::BadRequest(m),
        other => other.into(),
    }
}

/// Checks a rule, and that its channels are the project's.
async fn checked_rule<S: Store>(
    state: &ApiState<S>,
    project_id: i64,
    body: &Bytes,
) -> Result<RuleSpec, ApiError> {
    let spec: RuleSpec = parse_body(body)?;
    spec.check().map_err(ApiError::BadRequest)?;
    let channels = state.store.alert_channels(project_id).await?;
    if let Some(missing) = spec
        .channels
        .iter()
        .find(|id| !channels.iter().any(|c| c.id == **id))
    {
        return Err(ApiError::BadRequest(format!(
            "channels: no channel {missing} in this project"
        )));
    }
    Ok(spec)
}

/// `GET rules`.
pub(super) async fn rules<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rules = state.store.alert_rules(Some(project.id)).await?;
    Ok(Json(json!({ "rules": rules })))
}

/// `POST rules`.
pub(super) async fn create_rule<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    body: Bytes,
) -> Result<Response, ApiError> {
    let spec = checked_rule(&state, project.id, &body).await?;
    if state.store.alert_rules(Some(project.id)).await?.len() >= MAX_RULES {
        return Err(ApiError::BadRequest(format!(
            "a project has at most {MAX_RULES} rules"
        )));
    }
    let rule = state
        .store
        .create_alert_rule(project.id, &spec, crate::now_ms())
        .await
        .map_err(conflict)?;
    Ok((StatusCode::CREATED, Json(rule)).into_response())
}

/// `GET rules/{id}`.
pub(super) async fn rule<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(id): Path<String>,
) -> Result<Json<crate::alerts::RuleRow>, ApiError> {
    let wanted = parse_id(&id, "rule")?;
    state
        .store
        .alert_rules(Some(project.id))
        .await?
        .into_iter()
        .find(|r| r.id == wanted)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no rule {id} in this project")))
}

/// `PUT rules/{id}`.
pub(super) async fn update_rule<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<crate::alerts::RuleRow>, ApiError> {
    let wanted = parse_id(&id, "rule")?;
    let spec = checked_rule(&state, project.id, &body).await?;
    state
        .store
        .update_alert_rule(project.id, wanted, &spec, crate::now_ms())
        .await
        .map_err(conflict)?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no rule {id} in this project")))
}

/// `DELETE rules/{id}`.
pub(super) async fn delete_rule<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let wanted = parse_id(&id, "rule")?;
    if state.store.delete_alert_rule(project.id, wanted).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no rule {id} in this project")))
    }
}

/// `GET firing`.
pub(super) async fn firing<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
) -> Result<Json<serde_json::Value>, ApiError> {
    let alerts = state.store.alerts(Some(project.id), true).await?;
    Ok(Json(json!({ "firing": alerts })))
}

/// `GET history`: `from`, `to` (the last day by default), `limit`.
pub(super) async fn history<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (from, to) = param_range(&params, DAY_MS)?;
    let limit = param_limit(&params, 100)?;
    let history = state
        .store
        .alert_history(project.id, from, to, limit)
        .await?;
    Ok(Json(json!({ "history": history })))
}

/// `GET channels`.
pub(super) async fn channels<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
) -> Result<Json<serde_json::Value>, ApiError> {
    let channels: Vec<serde_json::Value> = state
        .store
        .alert_channels(project.id)
        .await?
        .iter()
        .map(ChannelRow::view)
        .collect();
    Ok(Json(json!({ "channels": channels })))
}

fn checked_channel(spec: &ChannelSpec) -> Result<(), ApiError> {
    if spec.name.trim().is_empty() || spec.name.len() > 200 {
        return Err(ApiError::BadRequest("name: 1 to 200 characters".into()));
    }
    spec.config.check().map_err(ApiError::BadRequest)
}

/// `POST channels`.
pub(super) async fn create_channel<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    body: Bytes,
) -> Result<Response, ApiError> {
    let spec: ChannelSpec = parse_body(&body)?;
    checked_channel(&spec)?;
    if state.store.alert_channels(project.id).await?.len() >= MAX_CHANNELS {
        return Err(ApiError::BadRequest(format!(
            "a project has at most {MAX_CHANNELS} channels"
        )));
    }
    let channel = state
        .store
        .create_alert_channel(project.id, &spec.name, &spec.config, crate::now_ms())
        .await
        .map_err(conflict)?;
    Ok((StatusCode::CREATED, Json(channel.view())).into_response())
}

async fn find_channel<S: Store>(
    state: &ApiState<S>,
    project_id: i64,
    id: &str,
) -> Result<ChannelRow, ApiError> {
    let wanted = parse_id(id, "channel")?;
    state
        .store
        .alert_channels(project_id)
        .await?
        .into_iter()
        .find(|c| c.id == wanted)
        .ok_or_else(|| ApiError::NotFound(format!("no channel {id} in this project")))
}

/// `PUT channels/{id}`: secrets left out (or sent back masked) are kept
/// (an SMTP password only for the same host, port, tls and username).
pub(super) async fn update_channel<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let old = find_channel(&state, project.id, &id).await?;
    let spec: ChannelSpec = parse_body(&body)?;
    let spec = ChannelSpec {
        name: spec.name,
        config: spec
            .config
            .keep_secrets_from(&old.config)
            .map_err(ApiError::BadRequest)?,
    };
    checked_channel(&spec)?;
    state
        .store
        .update_alert_channel(project.id, old.id, &spec.name, &spec.config)
        .await
        .map_err(conflict)?
        .map(|c| Json(c.view()))
        .ok_or_else(|| ApiError::NotFound(format!("no channel {id} in this project")))
}

/// `DELETE channels/{id}`.
pub(super) async fn delete_channel<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let wanted = parse_id(&id, "channel")?;
    if state.store.delete_alert_channel(project.id, wanted).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "no channel {id} in this project"
        )))
    }
}

/// `POST channels/{id}/test`: sends a test notification now (one attempt,
/// recorded with the others) and says how it went.
pub(super) async fn test_channel<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let channel = find_channel(&state, project.id, &id).await?;
    let now = crate::now_ms();
    let body = Body::test(&project.name, &channel.name, now);
    let payload =
        serde_json::to_string(&body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    let missing = || ApiError::NotFound(format!("no channel {id} in this project"));
    let queued = state
        .store
        .queue_notification(project.id, channel.id, &payload, now)
        .await?
        .ok_or_else(missing)?;
    let notification = state
        .store
        .notification(queued)
        .await?
        .ok_or_else(missing)?;
    let mut attempt = queue::attempt(&notification, now).await;
    // A test is tried once: its answer is what the caller wanted.
    attempt.retry_at_ms = None;
    state.store.record_attempt(&attempt).await?;
    Ok(Json(json!({
        "channel_id": channel.id,
        "notification_id": queued,
        "ok": attempt.ok,
        "status": attempt.status,
        "error": attempt.error,
        "elapsed_ms": attempt.elapsed_ms,
    })))
}

/// `GET deliveries`: every attempt, newest first; `limit`.
pub(super) async fn deliveries<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = param_limit(&params, 100)?;
    let attempts = state.store.delivery_attempts(project.id, limit).await?;
    Ok(Json(json!({ "deliveries": attempts })))
}

/// `GET stream`: server-sent events, one `transition` per firing or
/// resolve of the project's alerts as it is recorded (`lagged`, data
/// `{}`, when this client fell behind and missed some); opened with the
/// console's cookie, it ends with the session.
pub(super) async fn stream<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    headers: axum::http::HeaderMap,
) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>> {
    let project_id = project.id;
    // Opened with the console's cookie: it ends with the session.
    let session = crate::console::stream_session(&headers);
    let ended = crate::console::session_ended(state.clone(), session);
    let events =
        BroadcastStream::new(state.alerts.transitions.subscribe()).filter_map(move |item| {
            stream_item(item, project_id)
                .map(|(name, data)| Ok(Event::default().event(name).data(data)))
        });
    let events = futures_util::StreamExt::take_until(events, Box::pin(ended));
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// One item of the shared broadcast as this project's client sees it:
/// the event's name and data, or nothing (another project's). `lagged`
/// carries no count: the broadcast is shared by every project, so how
/// many it missed would tell of the others' activity.
fn stream_item(
    item: Result<Arc<crate::alerts::Transition>, BroadcastStreamRecvError>,
    project_id: i64,
) -> Option<(&'static str, String)> {
    match item {
        Ok(t) if t.project_id == project_id => {
            Some(("transition", serde_json::to_string(&*t).unwrap_or_default()))
        }
        Ok(_) => None,
        Err(BroadcastStreamRecvError::Lagged(_)) => Some(("lagged", "{}".into())),
    }
}

/// `POST /api/v1/agents/{oid}/pause`, body optional `{"until": TIME}`:
/// the agent's alerts notify nothing until then (or until resumed); its
/// data is still collected and its alerts still evaluated.
pub(super) async fn pause<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(oid): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let agent = find_agent(&state, &project, &oid).await?;
    let until = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct PauseBody {
            until: Option<String>,
        }
        let parsed: PauseBody = parse_body(&body)?;
        parsed
            .until
            .map(|t| parse_time(&t).map_err(|e| ApiError::BadRequest(format!("until: {e}"))))
            .transpose()?
    };
    let now = crate::now_ms();
    if until.is_some_and(|u| u <= now) {
        return Err(ApiError::BadRequest("until: must be in the future".into()));
    }
    if !state
        .store
        .pause_agent(project.id, agent.oid, until, now)
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "no agent {oid} in this project"
        )));
    }
    tracing::info!(oid = agent.oid, oname = %agent.oname, until = until.map(format_ms), "Agent paused.");
    Ok(Json(json!({
        "oid": agent.oid,
        "paused": true,
        "paused_until_ms": until,
        "paused_until": until.map(format_ms),
    })))
}

/// `POST /api/v1/agents/{oid}/resume`.
pub(super) async fn resume<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(oid): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let agent = find_agent(&state, &project, &oid).await?;
    if !state.store.resume_agent(project.id, agent.oid).await? {
        return Err(ApiError::NotFound(format!(
            "no agent {oid} in this project"
        )));
    }
    tracing::info!(oid = agent.oid, oname = %agent.oname, "Agent resumed.");
    Ok(Json(json!({ "oid": agent.oid, "paused": false })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lagged_says_nothing_of_other_projects() {
        let item = stream_item(Err(BroadcastStreamRecvError::Lagged(1234)), 1);
        assert_eq!(item, Some(("lagged", "{}".to_string())));
    }
}
