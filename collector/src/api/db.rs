//! The database routes, under `/api/v1/db/{oid}/`: `stats` (the agent's
//! `db.*` counters as series, or their names), `sessions` and `locks` (the
//! snapshot nearest a time, now by default: its sessions, or its lock tree
//! nested as JSON) and `snapshots` (the timeline: when a snapshot was taken
//! and what it holds).
//!
//! Invariants: every answer is scoped to the token's project (an agent of
//! another project is 404, as one that does not exist); a bad `at`, `from`
//! or `to` is 400 naming the parameter; the nested tree is built from the
//! store's checked forest and never recurses deeper than
//! [`crate::products::db::MAX_LOCK_DEPTH`] + 1 levels.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};

use super::{
    ApiError, ApiState, Authed, HOUR_MS, find_agent, param_limit, param_range, param_time,
    series_answer,
};
use crate::model::{DbSessionRow, DbSnapshotBody, DbSnapshotRow, LockNodeRow};
use crate::store::Store;
use crate::time_text::format_ms;

/// What every database counter's name starts with.
const COUNTER_PREFIX: &str = "db.";

/// `GET /api/v1/db/{oid}/stats?name=&from=&to=&step=`: the series of one
/// `db.*` counter (the last hour by default); without `name`, the names.
pub(super) async fn stats<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(oid): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let agent = find_agent(&state, &project, &oid).await?;
    let Some(name) = params.get("name") else {
        let names: Vec<String> = state
            .store
            .metric_names(project.id, agent.oid)
            .await?
            .into_iter()
            .filter(|n| n.starts_with(COUNTER_PREFIX))
            .collect();
        return Ok(Json(json!({ "oid": agent.oid, "names": names })));
    };
    if !name.starts_with(COUNTER_PREFIX) {
        return Err(ApiError::BadRequest(format!(
            "name: database counters are named {COUNTER_PREFIX}*, not '{name}'"
        )));
    }
    series_answer(&state, &project, &agent, name, &params).await
}

/// The snapshot nearest `at` (the newest without it), or 404.
async fn nearest<S: Store>(
    state: &ApiState<S>,
    project_id: i64,
    oid: &str,
    params: &HashMap<String, String>,
    project: &crate::model::Project,
) -> Result<(i64, Option<i64>, DbSnapshotRow), ApiError> {
    let agent = find_agent(state, project, oid).await?;
    let at = match params.get("at") {
        None => None,
        Some(_) => Some(param_time(params, "at", 0)?),
    };
    let snapshot = state
        .store
        .db_snapshot_near(project_id, agent.oid, at)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("agent {} has sent no database snapshot", agent.oid))
        })?;
    Ok((agent.oid, at, snapshot))
}

/// `GET /api/v1/db/{oid}/sessions?at=`: the snapshot nearest `at` (unix
/// ms or RFC 3339; now by default): its time, reason, server, sessions
/// and the variables in force then.
pub(super) async fn sessions<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(oid): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (oid, at, s) = nearest(&state, project.id, &oid, &params, &project).await?;
    Ok(Json(json!({
        "oid": oid,
        "at_ms": at,
        "time": format_ms(s.time_ms),
        "time_ms": s.time_ms,
        "reason": s.reason,
        "flavor": s.flavor,
        "version": s.version,
        "sessions_omitted": s.body.sessions_omitted,
        "locks_read": s.body.locks_read,
        "lock_nodes": s.body.locks.len(),
        "sessions": s.body.sessions,
        "variables": s.variables,
    })))
}

/// `GET /api/v1/db/{oid}/locks?at=`: the lock tree of the snapshot nearest
/// `at`, nested: roots with `children`, each node with its session's
/// details and how it waits on its parent.
pub(super) async fn locks<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(oid): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (oid, at, s) = nearest(&state, project.id, &oid, &params, &project).await?;
    let mut answer = locks_document(&s);
    if let Value::Object(map) = &mut answer {
        map.insert("oid".into(), json!(oid));
        map.insert("at_ms".into(), json!(at));
    }
    Ok(Json(answer))
}

/// `GET /api/v1/db/{oid}/snapshots?from=&to=&limit=`: when snapshots were
/// taken (the last hour by default, newest first, 100 unless told), each
/// with its reason, whether it was an alert's, and what it holds.
pub(super) async fn snapshots<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Path(oid): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let agent = find_agent(&state, &project, &oid).await?;
    let (from, to) = param_range(&params, HOUR_MS)?;
    let limit = param_limit(&params, 100)?;
    let times = state
        .store
        .db_snapshot_times(project.id, agent.oid, from, to, limit)
        .await?;
    let list: Vec<Value> = times
        .into_iter()
        .map(|t| {
            json!({
                "time": format_ms(t.time_ms),
                "time_ms": t.time_ms,
                "reason": t.reason,
                "alert": t.reason != "periodic",
                "sessions": t.sessions,
                "locks": t.lock_nodes > 0,
                "lock_nodes": t.lock_nodes,
                "root_blockers": t.root_blockers,
                "max_wait_ms": t.max_wait_ms,
            })
        })
        .collect();
    Ok(Json(json!({
        "oid": agent.oid,
        "from_ms": from,
        "to_ms": to,
        "snapshots": list,
    })))
}

/// The lock tree of one snapshot as the `locks` route answers it (less
/// `oid` and `at_ms`): a document, snapshot-tested.
pub(crate) fn locks_document(s: &DbSnapshotRow) -> Value {
    let body = &s.body;
    let sessions: HashMap<u64, &DbSessionRow> = body.sessions.iter().map(|x| (x.id, x)).collect();
    let mut root_blockers: Vec<u64> = body
        .locks
        .iter()
        .filter(|n| n.root_blocker)
        .map(|n| n.session_id)
        .collect();
    root_blockers.dedup();
    let mut in_cycle: Vec<u64> = body
        .locks
        .iter()
        .filter(|n| n.in_cycle)
        .map(|n| n.session_id)
        .collect();
    in_cycle.sort_unstable();
    in_cycle.dedup();
    let mut gone: Vec<u64> = body
        .locks
        .iter()
        .filter(|n| n.gone)
        .map(|n| n.session_id)
        .collect();
    gone.sort_unstable();
    gone.dedup();
    json!({
        "time": format_ms(s.time_ms),
        "time_ms": s.time_ms,
        "reason": s.reason,
        "locks_read": body.locks_read,
        "locks_refused": body.locks_refused,
        "root_blockers": root_blockers,
        "waiting": body.waiting(),
        "max_wait_ms": body.max_wait_ms(),
        "in_cycle": in_cycle,
        "gone": gone,
        "tree": nest(body, &sessions),
    })
}

/// The forest nested: each node's children are the nodes after it one
/// level deeper, up to the next node at its own depth or shallower. A
/// stored depth that jumps (it cannot: ingest checks it) is taken as one
/// level below the node before it, never a panic.
fn nest(body: &DbSnapshotBody, sessions: &HashMap<u64, &DbSessionRow>) -> Vec<Value> {
    let nodes = &body.locks;
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut roots = Vec::new();
    let mut path: Vec<usize> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        path.truncate(usize::try_from(node.depth).unwrap_or(usize::MAX));
        match path.last() {
            Some(&parent) => children[parent].push(i),
            None => roots.push(i),
        }
        path.push(i);
    }
    roots
        .into_iter()
        .map(|i| node_view(i, nodes, &children, sessions))
        .collect()
}

fn node_view(
    i: usize,
    nodes: &[LockNodeRow],
    children: &[Vec<usize>],
    sessions: &HashMap<u64, &DbSessionRow>,
) -> Value {
    let node = &nodes[i];
    let mut view = json!({
        "session_id": node.session_id,
        "root_blocker": node.root_blocker,
        "in_cycle": node.in_cycle,
        "gone": node.gone,
        "repeated": node.repeated_node,
    });
    if let Value::Object(map) = &mut view {
        if let Some(session) = sessions.get(&node.session_id) {
            map.insert("user".into(), json!(session.user));
            map.insert("host".into(), json!(session.host));
            map.insert("db".into(), json!(session.db));
            map.insert("command".into(), json!(session.command));
            map.insert("state".into(), json!(session.state));
            map.insert("time_ms".into(), json!(session.time_ms));
            map.insert("query".into(), json!(session.query));
            map.insert("query_cut".into(), json!(session.query_cut));
            map.insert("trx".into(), json!(session.trx));
        }
        if let Some(wait) = &node.wait {
            map.insert("wait".into(), json!(wait));
        }
        let kids: Vec<Value> = children[i]
            .iter()
            .map(|&c| node_view(c, nodes, children, sessions))
            .collect();
        map.insert("children".into(), Value::Array(kids));
    }
    view
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DbTransactionRow, LockWaitRow};

    fn session(id: u64, query: &str) -> DbSessionRow {
        DbSessionRow {
            id,
            user: "app".into(),
            host: format!("10.0.0.{id}:4000"),
            db: "shop".into(),
            command: if query.is_empty() { "Sleep" } else { "Query" }.into(),
            query: query.into(),
            ..DbSessionRow::default()
        }
    }

    fn node(session_id: u64, parent_id: u64, depth: u32) -> LockNodeRow {
        LockNodeRow {
            session_id,
            parent_id,
            depth,
            root_blocker: depth == 0,
            wait: (depth > 0).then(|| LockWaitRow {
                kind: "RECORD".into(),
                mode: "X".into(),
                holder_mode: "X".into(),
                table: "`shop`.`orders`".into(),
                index: "PRIMARY".into(),
                data: "1".into(),
                wait_ms: 500,
            }),
            ..LockNodeRow::default()
        }
    }

    fn ids(tree: &Value) -> Vec<(u64, Vec<Value>)> {
        tree.as_array()
            .expect("array")
            .iter()
            .map(|n| {
                (
                    n["session_id"].as_u64().expect("id"),
                    n["children"].as_array().expect("children").clone(),
                )
            })
            .collect()
    }

    #[test]
    fn a_chain_nests_by_depth_and_siblings_follow_their_subtrees() {
        // A(1) holds; B(2) and C(3) wait on A; D(4) waits on C. E(5) holds,
        // F(6) waits on it.
        let locks = vec![
            node(1, 0, 0),
            node(2, 1, 1),
            node(3, 1, 1),
            node(4, 3, 2),
            node(5, 0, 0),
            node(6, 5, 1),
        ];
        let body = DbSnapshotBody {
            sessions: (1..=6).map(|i| session(i, "update orders")).collect(),
            locks,
            locks_read: true,
            ..DbSnapshotBody::default()
        };
        let sessions = body.sessions.iter().map(|s| (s.id, s)).collect();
        let tree = Value::Array(nest(&body, &sessions));
        let roots = ids(&tree);
        assert_eq!(roots.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 5]);
        let under_a = ids(&Value::Array(roots[0].1.clone()));
        assert_eq!(under_a.iter().map(|r| r.0).collect::<Vec<_>>(), [2, 3]);
        assert!(under_a[0].1.is_empty());
        let under_c = ids(&Value::Array(under_a[1].1.clone()));
        assert_eq!(under_c.iter().map(|r| r.0).collect::<Vec<_>>(), [4]);
        let under_e = ids(&Value::Array(roots[1].1.clone()));
        assert_eq!(under_e.iter().map(|r| r.0).collect::<Vec<_>>(), [6]);
    }

    #[test]
    fn a_stored_depth_jump_nests_under_the_node_before_it_without_panic() {
        let body = DbSnapshotBody {
            locks: vec![node(1, 0, 0), node(2, 1, 5)],
            ..DbSnapshotBody::default()
        };
        let tree = Value::Array(nest(&body, &HashMap::new()));
        let roots = ids(&tree);
        assert_eq!(roots.len(), 1);
        assert_eq!(roots[0].1.len(), 1);
        // A gone session has no details.
        assert!(roots[0].1[0].get("user").is_none());
    }

    /// The `locks` document of a chain with an idle-in-transaction root
    /// blocker, a session gone from the process list, a cycle and a
    /// waiter on two blockers.
    #[test]
    fn the_locks_document() {
        let mut idle = session(1, "");
        idle.trx = Some(DbTransactionRow {
            id: "4242".into(),
            state: "RUNNING".into(),
            age_ms: 60_000,
            rows_locked: 1,
            rows_modified: 1,
            tables_locked: 1,
            idle_ms: 55_000,
            last_query: "update orders set total = # where id = #".into(),
        });
        let mut waiting_twice = node(3, 1, 1);
        waiting_twice.wait = Some(LockWaitRow {
            kind: "METADATA".into(),
            mode: "EXCLUSIVE".into(),
            holder_mode: "SHARED_READ".into(),
            table: "`shop`.`orders`".into(),
            ..LockWaitRow::default()
        });
        let mut gone = node(9, 0, 0);
        gone.gone = true;
        let mut repeated = node(3, 9, 1);
        repeated.repeated_node = true;
        let mut cycle_a = node(7, 0, 0);
        cycle_a.root_blocker = false;
        cycle_a.in_cycle = true;
        let mut cycle_b = node(8, 7, 1);
        cycle_b.in_cycle = true;
        let snapshot = DbSnapshotRow {
            time_ms: 1_764_000_000_000,
            reason: "lock_wait".into(),
            flavor: "mariadb".into(),
            version: "10.11.6-MariaDB".into(),
            variables: Default::default(),
            body: DbSnapshotBody {
                sessions: vec![
                    idle,
                    session(2, "update orders set total = # where id = #"),
                    session(3, "alter table orders add column note text"),
                    session(7, "update a set x = #"),
                    session(8, "update b set x = #"),
                ],
                sessions_omitted: 0,
                locks_read: true,
                locks: vec![
                    node(1, 0, 0),
                    node(2, 1, 1),
                    waiting_twice,
                    gone,
                    repeated,
                    cycle_a,
                    cycle_b,
                ],
                locks_refused: None,
            },
        };
        let document = serde_json::to_string_pretty(&locks_document(&snapshot)).expect("json");
        insta::assert_snapshot!(document);
    }
}
