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
    let stream =
        ReceiverStream::new(receiver).map(|event| Ok::<Event, Infallible>(event.into_sse()));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// What a tail sends: a record's JSON, or how many chunks it missed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TailEvent {
    Record(String),
    Lagged(u64),
}

impl TailEvent {
    fn into_sse(self) -> Event {
        match self {
            TailEvent::Record(data) => Event::default().data(data),
            TailEvent::Lagged(missed) => Event::default()
                .event("lagged")
                .data(json!({ "missed": missed }).to_string()),
        }
    }
}

/// Moves records from the store's feed to one client, filtered, until the
/// client is gone (its receiver dropped) or the feed closes.
async fn follow<S: Store>(
    store: Arc<S>,
    mut feed: broadcast::Receiver<Arc<crate::logs::LiveLogs>>,
    filter: TailFilter,
    events: mpsc::Sender<TailEvent>,
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
                if events.send(TailEvent::Lagged(missed)).await.is_err() {
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
            if events.send(TailEvent::Record(data)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::LiveLogs;
    use crate::model::LogChunkRow;
    use crate::store::sqlite::SqliteStore;

    fn live(project_id: i64, category: &str, texts: &[&str]) -> Arc<LiveLogs> {
        let mut text = String::new();
        let mut ends = Vec::new();
        for t in texts {
            text.push_str(t);
            ends.push(text.len() as u32);
        }
        let n = texts.len();
        Arc::new(LiveLogs {
            project_id,
            oid: 1,
            chunk: Arc::new(LogChunkRow {
                file_id: "f".into(),
                path: "/p".into(),
                category: category.into(),
                time_ms: 1,
                attrs: Default::default(),
                text,
                ends,
                starts: (0..n as u64).collect(),
                spans: vec![1; n],
                cut: vec![],
                times_ms: vec![],
                fields: vec![],
            }),
            first: 0,
        })
    }

    /// A client that falls behind is told how many chunks it missed, then
    /// gets the newest, filtered; another project's records never reach it.
    #[tokio::test]
    async fn a_slow_tail_is_told_it_lagged_and_filters_hold() {
        let dir = std::env::temp_dir().join(format!("sl-tail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(SqliteStore::open(&dir).await.expect("store"));
        let (feed, subscriber) = broadcast::channel(4);
        // Six chunks before the tail reads any: two are lost.
        for i in 0..6 {
            feed.send(live(1, "web", &[&format!("old {i}")]))
                .expect("sent");
        }
        let (events, mut received) = mpsc::channel(16);
        let filter = TailFilter {
            project_id: 1,
            category: Some("web".into()),
            oid: None,
            text: text::Query::parse("keep"),
        };
        let task = tokio::spawn(follow(store.clone(), subscriber, filter, events));
        let first = received.recv().await.expect("an event");
        assert_eq!(first, TailEvent::Lagged(2));
        // Once this arrives, the four old chunks left were read (and
        // filtered out: no "keep").
        feed.send(live(1, "web", &["keep: caught up"]))
            .expect("sent");
        let caught_up = received.recv().await.expect("an event");
        assert!(
            matches!(&caught_up, TailEvent::Record(j) if j.contains("caught up")),
            "{caught_up:?}"
        );
        feed.send(live(2, "web", &["keep: other project"]))
            .expect("sent");
        feed.send(live(1, "db", &["keep: other category"]))
            .expect("sent");
        feed.send(live(1, "web", &["drop me", "keep me"]))
            .expect("sent");
        let next = received.recv().await.expect("an event");
        let TailEvent::Record(json) = next else {
            panic!("a record, not {next:?}");
        };
        let record: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(record["text"], "keep me");
        assert_eq!(record["category"], "web");
        drop(received);
        feed.send(live(1, "web", &["keep, nobody listens"]))
            .expect("sent");
        tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .expect("the task ends when its client goes")
            .expect("no panic");
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
