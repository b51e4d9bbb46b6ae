//! Terminating and enabling agents: `POST /api/v1/agents/{oid}/terminate`
//! deletes every row of the agent's data at once and refuses the agent
//! (its `Hello`, its streams) until `POST /api/v1/agents/{oid}/enable`.
//!
//! Invariants: only the token's project's agents (another project's agent
//! is 404, as one that does not exist); the agent stays listed, with
//! `"terminated": true`; each change is recorded as a project event
//! (`agent.terminated`, `agent.enabled`) without the agent's id, since the
//! agent's own events are deleted with it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::json;

use super::{ApiError, ApiState, Authed, find_agent};
use crate::model::{Agent, EventRow};
use crate::store::Store;

/// Records what was done to `agent`; a failure is logged, not answered
/// (the change itself is made).
async fn record<S: Store>(state: &ApiState<S>, agent: &Agent, kind: &str, message: String) {
    let event = EventRow {
        time_ms: crate::now_ms(),
        kind: kind.into(),
        severity: "info".into(),
        message,
        attrs: [
            ("oid".to_string(), agent.oid.to_string()),
            ("oname".to_string(), agent.oname.clone()),
            ("product".to_string(), agent.product.clone()),
        ]
        .into(),
    };
    if let Err(e) = state
        .store
        .insert_event(agent.project_id, None, &event)
        .await
    {
        tracing::warn!(error = %e, kind, "Cannot record an agent lifecycle event.");
    }
}

/// `POST /api/v1/agents/{oid}/terminate`: what was deleted, by kind.
pub(super) async fn terminate<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(oid): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let agent = find_agent(&state, &project, &oid).await?;
    let deleted = state
        .store
        .terminate_agent(project.id, agent.oid, crate::now_ms())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no agent {oid} in this project")))?;
    tracing::info!(project = %project.name, oid = agent.oid, oname = %agent.oname, ?deleted, "Terminated an agent; its data is deleted.");
    record(
        &state,
        &agent,
        "agent.terminated",
        format!(
            "Agent {} ({}) was terminated: its data was deleted and it is refused until enabled again.",
            agent.oname, agent.product
        ),
    )
    .await;
    Ok(Json(json!({
        "oid": agent.oid,
        "oname": agent.oname,
        "terminated": true,
        "deleted": deleted,
    })))
}

/// `POST /api/v1/agents/{oid}/enable`: the agent may report again.
pub(super) async fn enable<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(oid): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let agent = find_agent(&state, &project, &oid).await?;
    let was_terminated = agent.terminated_ms.is_some();
    if !state.store.enable_agent(project.id, agent.oid).await? {
        return Err(ApiError::NotFound(format!(
            "no agent {oid} in this project"
        )));
    }
    if was_terminated {
        tracing::info!(project = %project.name, oid = agent.oid, oname = %agent.oname, "Enabled a terminated agent.");
        record(
            &state,
            &agent,
            "agent.enabled",
            format!(
                "Agent {} ({}) was enabled again: it may report.",
                agent.oname, agent.product
            ),
        )
        .await;
    }
    Ok(Json(json!({
        "oid": agent.oid,
        "oname": agent.oname,
        "terminated": false,
    })))
}
