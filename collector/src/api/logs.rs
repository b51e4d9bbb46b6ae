//! The log endpoints: `logs/search` (pages, newest first), `logs/tail`
//! (Server-Sent Events of records as they are stored: the LiveTail) and
//! `logs/patterns` (record shapes with counts).
//!
//! Invariants: every answer is scoped to the token's project, as every
//! other route; a tail never buffers without bound (a client that reads
//! slower than records arrive is sent `event: lagged` with how many chunks
//! it missed, and carries on from the newest); a tail's task ends when its
//! client goes away or the collector shuts down.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::{ApiError, ApiState, Authed, param_time};
use crate::logs::{LogCursor, LogQuery, LogRecord, PatternQuery, text};
use crate::store::Store;

/// Records per search page, at most.
pub(super) const MAX_SEARCH_LIMIT: usize = 10_000;
/// Patterns per answer, at most.
pub(super) const MAX_PATTERNS: usize = 1_000;
/// Events a tail holds for its client before it counts chunks as missed.
const TAIL_BUFFER: usize = 256;
const DAY_MS: i64 = 24 * 3_600_000;

fn param_oid(params: &HashMap<String, String>) -> Result<Option<i64>, ApiError> {
    params
        .get("oid")
        .map(|text| {
            text.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("oid: not a number: '{text}'")))
        })
        .transpose()
}

fn param_count(
    params: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match params.get("limit") {
        None => Ok(default),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| ApiError::BadRequest(format!("limit: expected 1 to {max}"))),
    }
}

fn param_category(params: &HashMap<String, String>) -> Option<String> {
    params.get("category").filter(|c| !c.is_empty()).cloned()
}

/// `GET /api/v1/logs/search?q=&category=&from=&to=&field.NAME=&oid=&limit=&before=`:
/// newest first; `next` is the `before` of the next page.
pub(super) async fn search<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let from_ms = param_time(&params, "from", 0)?;
    let to_ms = param_time(&params, "to", i64::MAX)?;
    if from_ms > to_ms {
        return Err(ApiError::BadRequest("from is after to".into()));
    }
    let before = params
        .get("before")
        .map(|text| {
            LogCursor::parse(text).ok_or_else(|| {
                ApiError::BadRequest("before: not a cursor (pass a page's next)".into())
            })
        })
        .transpose()?;
    let mut fields: Vec<(String, String)> = params
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("field.")?.to_string(), v.clone())))
        .collect();
    fields.sort();
    let query = LogQuery {
        text: text::Query::parse(params.get("q").map_or("", String::as_str)),
        category: param_category(&params),
        oid: param_oid(&params)?,
        from_ms,
        to_ms,
        fields,
        limit: param_count(&params, 100, MAX_SEARCH_LIMIT)?,
        before,
    };
    let page = state.store.search_logs(project.id, &query).await?;
    Ok(Json(json!({
        "records": page.records,
        "next": page.next.map(LogCursor::to_text),
    })))
}

/// `GET /api/v1/logs/patterns?category=&from=&to=&limit=`: the last day
/// unless told, 50 patterns unless told.
pub(super) async fn patterns<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let to_ms = param_time(&params, "to", crate::now_ms())?;
    let from_ms = param_time(&params, "from", to_ms.saturating_sub(DAY_MS))?;
    if from_ms > to_ms {
        return Err(ApiError::BadRequest("from is after to".into()));
    }
    let query = PatternQuery {
        category: param_category(&params),
        from_ms,
        to_ms,
        limit: param_count(&params, 50, MAX_PATTERNS)?,
    };
    let patterns = state.store.log_patterns(project.id, &query).await?;
    Ok(Json(json!({ "patterns": patterns })))
}

/// What a tail sends its client.
struct TailFilter {
    project_id: i64,
    category: Option<String>,
    oid: Option<i64>,
    text: text::Query,
}

/// `GET /api/v1/logs/tail?category=&filter=&oid=`: one `data:` event per
/// record stored after the request, as JSON shaped as search's records.
pub(super) async fn tail<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    Authed(project): Authed,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let filter = TailFilter {
        project_id: project.id,
        category: param_category(&params),
        oid: param_oid(&params)?,
        text: text::Query::parse(params.get("filter").map_or("", String::as_str)),
    };
    let feed = state.store.subscribe_logs();
    let (events, receiver) = mpsc::channel(TAIL_BUFFER);
    tokio::spawn(follow(state.store.clone(), feed, filter, events));
    let stream = ReceiverStream::new(receiver).map(Ok::<Event, Infallible>);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Moves records from the store's feed to one client, filtered, until the
/// client is gone (its receiver dropped) or the feed closes.
async fn follow<S: Store>(
    store: Arc<S>,
    mut feed: broadcast::Receiver<Arc<crate::logs::LiveLogs>>,
    filter: TailFilter,
    events: mpsc::Sender<Event>,
) {
    let mut onames: HashMap<i64, String> = HashMap::new();
    loop {
        let live = tokio::select! {
            () = events.closed() => return,
            live = feed.recv() => live,
        };
        let live = match live {
            Ok(live) => live,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let event = Event::default()
                    .event("lagged")
                    .data(json!({ "missed": missed }).to_string());
                if events.send(event).await.is_err() {
                    return;
                }
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if live.project_id != filter.project_id
            || filter.oid.is_some_and(|oid| oid != live.oid)
            || filter
                .category
                .as_ref()
                .is_some_and(|c| c != &live.chunk.category)
        {
            continue;
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = onames.entry(live.oid) {
            let name = match store.agent(filter.project_id, live.oid).await {
                Ok(agent) => agent.map(|a| a.oname).unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(error = %e, "Tail cannot look up an agent.");
                    String::new()
                }
            };
            slot.insert(name);
        }
        let oname = onames.get(&live.oid).map_or("", String::as_str);
        let chunk = &live.chunk;
        for i in live.first..chunk.len() {
            if !filter.text.is_empty() && !filter.text.matches(chunk.record_text(i)) {
                continue;
            }
            let record = LogRecord::from_chunk(chunk, i, live.oid, oname);
            let data = match serde_json::to_string(&record) {
                Ok(data) => data,
                Err(_) => continue, // strings and numbers only: cannot fail
            };
            // A client slower than the feed fills this queue; the wait
            // here makes the feed lag, which the client is told about.
            if events.send(Event::default().data(data)).await.is_err() {
                return;
            }
        }
    }
}
