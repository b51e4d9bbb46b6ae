//! The fake API server's HTTP side: routes `/api/v1/...` and
//! `/apis/{group}/{version}/...` to get, list, watch, create, update,
//! patch and delete over the store; serves the node proxy and the fake
//! kubelets' `/stats/summary`; checks the bearer token; logs every call.
//!
//! Never panics on a request (it is outside input): a bad one is answered
//! with a `Status` object, as the real server answers.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::select::Selector;
use super::store::{
    ApiError, ChangeType, EVENTS_V1, Index, KINDS, Key, NODES, Part, Store, Stored,
    core_to_events_v1, find_kind, storage_of,
};

/// One request the fake answered, as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiCall {
    /// Who answered: `"apiserver"` or `"kubelet"`.
    pub server: &'static str,
    /// The Kubernetes verb: get, list, watch, create, update, patch,
    /// delete (RBAC's names).
    pub verb: &'static str,
    /// API group (`""` for core).
    pub group: String,
    /// Resource, with its subresource as RBAC names it (`pods`,
    /// `pods/status`, `nodes/proxy`, `nodes/stats`).
    pub resource: String,
    /// Namespace, when the request had one.
    pub namespace: Option<String>,
    /// Object name, when the request had one.
    pub name: Option<String>,
    /// The path.
    pub path: String,
    /// The query string, decoded.
    pub query: String,
    /// The HTTP status answered.
    pub status: u16,
}

/// What a test set to go wrong.
#[derive(Debug, Default)]
pub struct Faults {
    /// Added before every answer.
    pub latency: Duration,
    /// Statuses for the next requests, one each.
    pub fail_next: VecDeque<u16>,
}

/// State shared by the server tasks and the test controls.
pub struct Shared {
    /// The storage.
    pub store: Mutex<Store>,
    /// The current revision, for watches to wake on.
    pub rv_tx: watch::Sender<u64>,
    /// Bumped to cut every open watch.
    pub cut_tx: watch::Sender<u64>,
    /// Bumped to stop the API server's listener and connections.
    pub stop_tx: watch::Sender<u64>,
    /// Every call answered.
    pub calls: Mutex<Vec<ApiCall>>,
    /// The bearer token clients must present.
    pub token: String,
    /// How often watches that allow them get a bookmark.
    pub bookmark_interval: Duration,
    /// A watch's length when the client does not say.
    pub default_watch_timeout: Duration,
    /// Injected faults.
    pub faults: Mutex<Faults>,
    /// `/stats/summary` per node.
    pub summaries: Mutex<HashMap<String, Value>>,
    /// Watches streaming now.
    pub open_watches: std::sync::atomic::AtomicUsize,
    /// TLS, when the fake speaks HTTPS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Locks, ignoring poison (a panicking test thread must not hide the
/// fake's state from the next assertion).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Runs `write` on the store, then wakes the watches.
    pub fn write<T>(&self, write: impl FnOnce(&mut Store) -> T) -> T {
        let (out, rv) = {
            let mut store = lock(&self.store);
            let out = write(&mut store);
            (out, store.rv())
        };
        self.rv_tx.send_replace(rv);
        out
    }
}

/// Now, as metadata timestamps spell it (RFC 3339, seconds).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A response body: a whole document, or a watch stream fed by a task.
pub struct FakeBody {
    whole: Option<Bytes>,
    stream: Option<mpsc::Receiver<Bytes>>,
    aborted: Arc<AtomicBool>,
}

impl FakeBody {
    fn whole(bytes: Bytes) -> FakeBody {
        FakeBody {
            whole: Some(bytes),
            stream: None,
            aborted: Arc::default(),
        }
    }
}

impl hyper::body::Body for FakeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(bytes) = self.whole.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        let Some(rx) = self.stream.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(None) if self.aborted.load(Ordering::SeqCst) => Poll::Ready(Some(Err(
                io::Error::new(io::ErrorKind::ConnectionAborted, "watch cut by the test"),
            ))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Who a listener serves.
#[derive(Debug, Clone)]
pub enum Role {
    /// The API server.
    ApiServer,
    /// The kubelet of one node.
    Kubelet(String),
}

/// Accepts connections on `listener` until `stop` changes (never, for a
/// kubelet), then drops the listener and every connection; `stopped` is
/// told when the port is closed.
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    role: Role,
    mut stop: watch::Receiver<u64>,
    stopped: Option<std::sync::mpsc::Sender<()>>,
) {
    stop.borrow_and_update();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                let role = role.clone();
                let mut conn_stop = stop.clone();
                let tls = shared.tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        let role = role.clone();
                        async move { Ok::<_, io::Error>(handle(shared, role, req).await) }
                    });
                    let serve = async move {
                        let http = hyper::server::conn::http1::Builder::new();
                        match tls {
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    let io = hyper_util::rt::TokioIo::new(stream);
                                    let _ = http.serve_connection(io, service).await;
                                }
                            }
                            None => {
                                let io = hyper_util::rt::TokioIo::new(stream);
                                let _ = http.serve_connection(io, service).await;
                            }
                        }
                    };
                    tokio::select! {
                        _ = serve => {}
                        _ = conn_stop.changed() => {}
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    if let Some(stopped) = stopped {
        let _ = stopped.send(());
    }
}

/// Where a path leads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// `/version`.
    Version,
    /// A kind's collection or one object, maybe a subresource.
    Resource {
        kind: usize,
        namespace: Option<String>,
        name: Option<String>,
        sub: Option<String>,
    },
    /// `/api/v1/nodes/{node}/proxy/{rest}`.
    NodeProxy { node: String, rest: String },
    /// A kubelet's own path.
    Kubelet { node: String, rest: String },
    /// Nothing the fake serves.
    Unknown,
}

fn route(role: &Role, path: &str) -> Target {
    if let Role::Kubelet(node) = role {
        return Target::Kubelet {
            node: node.clone(),
            rest: path.trim_start_matches('/').to_string(),
        };
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["version"] => return Target::Version,
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Target::Unknown,
    };
    let resource = |plural: &str, namespace: Option<&str>, tail: &[&str]| -> Target {
        let Some(kind) = find_kind(group, version, plural) else {
            return Target::Unknown;
        };
        if namespace.is_some() && !KINDS[kind].namespaced {
            return Target::Unknown;
        }
        if namespace.is_none() && KINDS[kind].namespaced && !tail.is_empty() {
            return Target::Unknown;
        }
        // Subresources the fake serves: status (namespaces' finalize is
        // their status write); log, exec, scale and the rest are 404.
        match tail {
            [] | [_] | [_, "status" | "finalize"] => Target::Resource {
                kind,
                namespace: namespace.map(str::to_string),
                name: tail.first().map(|s| s.to_string()),
                sub: tail.get(1).map(|s| s.to_string()),
            },
            _ => Target::Unknown,
        }
    };
    match rest {
        ["nodes", node, "proxy", tail @ ..] if group.is_empty() => Target::NodeProxy {
            node: node.to_string(),
            rest: tail.join("/"),
        },
        ["namespaces", ns] => resource("namespaces", None, &[ns]),
        ["namespaces", ns, sub @ ("status" | "finalize")] => {
            resource("namespaces", None, &[ns, sub])
        }
        ["namespaces", ns, plural, tail @ ..] => resource(plural, Some(ns), tail),
        [plural, tail @ ..] => resource(plural, None, tail),
        [] => Target::Unknown,
    }
}

/// Decodes `a=b&c=d` (percent and `+` decoding).
fn parse_query(query: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "true"))
    }

    fn text(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn json_response(code: u16, body: Bytes) -> Response<FakeBody> {
    let mut response = Response::new(FakeBody::whole(body));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(error: &ApiError) -> Response<FakeBody> {
    json_response(error.code, Bytes::from(error.status().to_string()))
}

fn verb_of(method: &Method, has_name: bool, watch: bool) -> &'static str {
    match (method.as_str(), has_name) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

async fn handle(shared: Arc<Shared>, role: Role, req: Request<Incoming>) -> Response<FakeBody> {
    let path = req.uri().path().to_string();
    let query = Query(parse_query(req.uri().query().unwrap_or_default()));
    let target = route(&role, &path);
    let watch = query.flag("watch");
    let mut call = ApiCall {
        server: if matches!(role, Role::Kubelet(_)) {
            "kubelet"
        } else {
            "apiserver"
        },
        verb: "get",
        group: String::new(),
        resource: String::new(),
        namespace: None,
        name: None,
        path: path.clone(),
        query: query.text(),
        status: 0,
    };
    match &target {
        Target::Resource {
            kind,
            namespace,
            name,
            sub,
        } => {
            let info = KINDS[*kind];
            call.verb = verb_of(req.method(), name.is_some(), watch);
            call.group = info.group.to_string();
            call.resource = match sub {
                Some(sub) => format!("{}/{sub}", info.plural),
                None => info.plural.to_string(),
            };
            call.namespace = namespace.clone();
            call.name = name.clone();
        }
        Target::NodeProxy { node, .. } => {
            call.verb = verb_of(req.method(), true, false);
            call.resource = "nodes/proxy".into();
            call.name = Some(node.clone());
        }
        Target::Kubelet { node, rest } => {
            call.name = Some(node.clone());
            call.resource = if rest.starts_with("stats") {
                "nodes/stats".into()
            } else if rest.starts_with("metrics") {
                "nodes/metrics".into()
            } else {
                "nodes/proxy".into()
            };
        }
        Target::Version | Target::Unknown => {}
    }
    let (latency, injected) = {
        let mut faults = lock(&shared.faults);
        (faults.latency, faults.fail_next.pop_front())
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let authorized = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == shared.token);
    let response = if !authorized {
        error_response(&ApiError::new(401, "Unauthorized", "Unauthorized"))
    } else if let Some(code) = injected {
        error_response(&ApiError::new(
            code,
            if code == 429 {
                "TooManyRequests"
            } else {
                "InternalError"
            },
            format!("injected failure {code}"),
        ))
    } else {
        answer(&shared, target, req, &query).await
    };
    call.status = response.status().as_u16();
    lock(&shared.calls).push(call);
    response
}

async fn answer(
    shared: &Arc<Shared>,
    target: Target,
    req: Request<Incoming>,
    query: &Query,
) -> Response<FakeBody> {
    match target {
        Target::Version => json_response(
            200,
            Bytes::from(
                json!({"major": "1", "minor": "37", "gitVersion": "v1.37.0-sightline-fake",
                       "platform": "linux/amd64"})
                .to_string(),
            ),
        ),
        Target::Unknown => error_response(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
        Target::NodeProxy { node, rest } => {
            let exists = lock(&shared.store)
                .get(NODES, &(String::new(), node.clone()))
                .is_some();
            if !exists {
                return error_response(&ApiError::new(
                    404,
                    "NotFound",
                    format!("nodes \"{node}\" not found"),
                ));
            }
            kubelet_answer(shared, &node, &rest)
        }
        Target::Kubelet { node, rest } => kubelet_answer(shared, &node, &rest),
        Target::Resource {
            kind,
            namespace,
            name,
            sub,
        } => {
            let method = req.method().clone();
            match (method.as_str(), name) {
                ("GET", None) if query.flag("watch") => {
                    watch_response(shared, kind, namespace, query)
                }
                ("GET", None) => match list(shared, kind, namespace.as_deref(), query).await {
                    Ok(body) => json_response(200, body),
                    Err(e) => error_response(&e),
                },
                ("GET", Some(name)) => {
                    let key = (namespace.unwrap_or_default(), name);
                    match lock(&shared.store).get(kind, &key) {
                        Some(stored) => json_response(200, object_json(kind, &stored)),
                        None => error_response(&ApiError::new(
                            404,
                            "NotFound",
                            format!("{} \"{}\" not found", KINDS[kind].plural, key.1),
                        )),
                    }
                }
                (m @ ("POST" | "PUT" | "PATCH"), name) => {
                    let body = match read_body(req).await {
                        Ok(body) => body,
                        Err(e) => return error_response(&e),
                    };
                    write_answer(shared, kind, namespace, name, sub, m, body)
                }
                ("DELETE", Some(name)) => {
                    let key = (namespace.unwrap_or_default(), name);
                    match shared.write(|s| s.delete(kind, &key)) {
                        Ok(stored) => json_response(200, object_json(kind, &stored)),
                        Err(e) => error_response(&e),
                    }
                }
                _ => error_response(&ApiError::new(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                )),
            }
        }
    }
}

/// The body of a write, at most 3 MiB as the real server takes.
async fn read_body(req: Request<Incoming>) -> Result<(Option<String>, Value), ApiError> {
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let limited = http_body_util::Limited::new(req.into_body(), 3 << 20);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| ApiError::new(413, "RequestEntityTooLarge", e.to_string()))?
        .to_bytes();
    let value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(400, "BadRequest", format!("the body is not JSON: {e}")))?;
    Ok((content_type, value))
}

fn write_answer(
    shared: &Arc<Shared>,
    kind: usize,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
    method: &str,
    (content_type, mut body): (Option<String>, Value),
) -> Response<FakeBody> {
    let now = now_rfc3339();
    if let (Some(ns), Some(meta)) = (
        &namespace,
        body.get_mut("metadata").and_then(Value::as_object_mut),
    ) {
        meta.entry("namespace").or_insert_with(|| ns.clone().into());
    } else if let (Some(ns), Some(fields)) = (&namespace, body.as_object_mut())
        && !fields.contains_key("metadata")
    {
        fields.insert("metadata".into(), json!({"namespace": ns}));
    }
    let part = if sub.as_deref() == Some("status") {
        Part::Status
    } else {
        Part::Whole
    };
    let result = match (method, name) {
        ("POST", None) => shared
            .write(|s| s.create(kind, body, &now))
            .map(|s| (201, s)),
        ("PUT", Some(name)) => {
            if body["metadata"]["name"].as_str() != Some(name.as_str()) {
                Err(ApiError::new(
                    400,
                    "BadRequest",
                    "the name of the object does not match the name on the URL",
                ))
            } else {
                shared
                    .write(|s| s.update(kind, body, part))
                    .map(|s| (200, s))
            }
        }
        ("PATCH", Some(name)) => {
            let apply = content_type.as_deref() == Some("application/apply-patch+yaml");
            let supported = matches!(
                content_type.as_deref(),
                Some(
                    "application/merge-patch+json"
                        | "application/strategic-merge-patch+json"
                        | "application/apply-patch+yaml"
                )
            );
            if !supported {
                Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format: {}",
                        content_type.unwrap_or_default()
                    ),
                ))
            } else {
                let key = (namespace.clone().unwrap_or_default(), name.clone());
                shared.write(|s| {
                    let current = s.get(kind, &key).map(|st| st.value());
                    match current {
                        Some(mut current) => {
                            if kind == EVENTS_V1 {
                                current = core_to_events_v1(&current);
                            }
                            merge_patch(&mut current, &body);
                            if let Some(meta) =
                                current.get_mut("metadata").and_then(Value::as_object_mut)
                            {
                                meta.remove("resourceVersion");
                            }
                            s.update(kind, current, part).map(|st| (200, st))
                        }
                        None if apply => {
                            if let Some(meta) =
                                body.get_mut("metadata").and_then(Value::as_object_mut)
                            {
                                meta.insert("name".into(), name.clone().into());
                            }
                            s.create(kind, body, &now).map(|st| (201, st))
                        }
                        None => Err(ApiError::new(
                            404,
                            "NotFound",
                            format!("{} \"{name}\" not found", KINDS[kind].plural),
                        )),
                    }
                })
            }
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
    };
    match result {
        Ok((code, stored)) => json_response(code, object_json(kind, &stored)),
        Err(e) => error_response(&e),
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(into) = target {
                for (k, v) in fields {
                    if v.is_null() {
                        into.remove(k);
                    } else {
                        merge_patch(into.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn object_json(kind: usize, stored: &Stored) -> Bytes {
    if kind == EVENTS_V1 {
        Bytes::from(core_to_events_v1(&stored.value()).to_string())
    } else {
        stored.json.clone()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: u64,
    start: String,
}

fn encode_continue(rv: u64, key: &Key) -> String {
    let start = if key.0.is_empty() {
        format!("{}\u{0}", key.1)
    } else {
        format!("{}/{}\u{0}", key.0, key.1)
    };
    let token = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start,
    };
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&token).unwrap_or_default())
}

fn decode_continue(text: &str) -> Result<(u64, Key), ApiError> {
    let bad = || {
        ApiError::new(
            400,
            "BadRequest",
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
        .map_err(|_| bad())?;
    let token: ContinueToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if token.v != "meta.k8s.io/v1" || token.rv == 0 {
        return Err(bad());
    }
    let start = token.start.trim_end_matches('\u{0}');
    let key = match start.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (String::new(), start.to_string()),
    };
    Ok((token.rv, key))
}

/// Which objects a list or watch wants.
struct Filter {
    kind: usize,
    namespace: Option<String>,
    labels: Selector,
    fields: Selector,
}

impl Filter {
    fn new(kind: usize, namespace: Option<String>, query: &Query) -> Result<Filter, ApiError> {
        Ok(Filter {
            kind,
            namespace,
            labels: Selector::labels(query.get("labelSelector").unwrap_or_default())?,
            fields: Selector::fields(query.get("fieldSelector").unwrap_or_default(), kind)?,
        })
    }

    fn matches(&self, key: &Key, index: &Index) -> bool {
        if self.namespace.as_ref().is_some_and(|ns| *ns != key.0) {
            return false;
        }
        self.labels.matches_labels(index) && self.fields.matches_fields(index)
    }

    fn has_selectors(&self) -> bool {
        !self.labels.is_empty() || !self.fields.is_empty()
    }
}

fn parse_rv(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::new(
            400,
            "BadRequest",
            format!("invalid resource version: {text}"),
        )
    })
}

/// Waits up to 3 s for the store to reach `rv` (the real server waits for
/// its cache), then 504 "Too large resource version".
async fn wait_for_rv(shared: &Shared, rv: u64) -> Result<(), ApiError> {
    let mut rx = shared.rv_tx.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        if *rx.borrow_and_update() >= rv {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            let current = *rx.borrow();
            return Err(ApiError::new(
                504,
                "Timeout",
                format!("Too large resource version: {rv}, current: {current}"),
            ));
        }
    }
}

async fn list(
    shared: &Shared,
    kind: usize,
    namespace: Option<&str>,
    query: &Query,
) -> Result<Bytes, ApiError> {
    let filter = Filter::new(kind, namespace.map(str::to_string), query)?;
    let limit = match query.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::new(400, "BadRequest", format!("invalid limit: {l}")))?,
        None => 0,
    };
    let rv_param = query.get("resourceVersion").filter(|s| !s.is_empty());
    let rv_match = query.get("resourceVersionMatch").filter(|s| !s.is_empty());
    let (objects, rv, start) = if let Some(token) = query.get("continue").filter(|s| !s.is_empty())
    {
        if rv_param.is_some_and(|r| r != "0") {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "specifying resource version is not allowed when using continue",
            ));
        }
        let (rv, start) = decode_continue(token)?;
        let objects = lock(&shared.store).objects_at(kind, rv).map_err(|_| {
            ApiError::new(410, "Expired", "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
        })?;
        (objects, rv, Some(start))
    } else {
        match (rv_param, rv_match) {
            (None, Some(_)) => {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            (None | Some("0"), _) => {
                let store = lock(&shared.store);
                (store.objects(kind), store.rv(), None)
            }
            (Some(r), m) => {
                let r = parse_rv(r)?;
                let exact = m == Some("Exact") || (m.is_none() && limit > 0);
                match m {
                    None | Some("Exact" | "NotOlderThan") => {}
                    Some(other) => {
                        return Err(ApiError::new(
                            422,
                            "Invalid",
                            format!("resourceVersionMatch: Unsupported value: \"{other}\""),
                        ));
                    }
                }
                wait_for_rv(shared, r).await?;
                let store = lock(&shared.store);
                if exact {
                    (store.objects_at(kind, r)?, r, None)
                } else {
                    (store.objects(kind), store.rv(), None)
                }
            }
        }
    };
    let info = KINDS[kind];
    let range: Box<dyn Iterator<Item = (&Key, &Arc<Stored>)>> = match (&start, namespace) {
        (Some(start), _) => Box::new(objects.range((
            std::ops::Bound::Excluded(start.clone()),
            std::ops::Bound::Unbounded,
        ))),
        (None, Some(ns)) => Box::new(objects.range((ns.to_string(), String::new())..)),
        (None, None) => Box::new(objects.iter()),
    };
    let mut items: Vec<Bytes> = Vec::new();
    let mut last: Option<Key> = None;
    let mut more = false;
    let mut remaining = 0usize;
    for (key, stored) in range {
        if namespace.is_some_and(|ns| key.0.as_str() > ns) {
            break;
        }
        if !filter.matches(key, &stored.index) {
            continue;
        }
        if limit > 0 && items.len() == limit {
            more = true;
            remaining += 1;
            if filter.has_selectors() {
                break;
            }
            continue;
        }
        items.push(object_json(kind, stored));
        last = Some(key.clone());
    }
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if more && let Some(last) = &last {
        meta["continue"] = encode_continue(rv, last).into();
        if !filter.has_selectors() {
            meta["remainingItemCount"] = remaining.into();
        }
    }
    let mut out = Vec::with_capacity(items.iter().map(Bytes::len).sum::<usize>() + 256);
    out.extend_from_slice(
        format!(
            "{{\"kind\":\"{}List\",\"apiVersion\":\"{}\",\"metadata\":{meta},\"items\":[",
            info.kind,
            info.api_version()
        )
        .as_bytes(),
    );
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.extend_from_slice(b"]}");
    Ok(Bytes::from(out))
}

fn event_line(kind_word: &str, object: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(object.len() + 32);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind_word.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object);
    line.extend_from_slice(b"}\n");
    line
}

fn bookmark_line(kind: usize, rv: u64, initial_end: bool) -> Vec<u8> {
    let info = KINDS[kind];
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let object = json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": meta});
    event_line("BOOKMARK", object.to_string().as_bytes())
}

/// Starts a watch: checks the request, answers 200 at once and streams
/// events from a task.
fn watch_response(
    shared: &Arc<Shared>,
    kind: usize,
    namespace: Option<String>,
    query: &Query,
) -> Response<FakeBody> {
    let filter = match Filter::new(kind, namespace, query) {
        Ok(f) => f,
        Err(e) => return error_response(&e),
    };
    let bookmarks = query.flag("allowWatchBookmarks");
    let initial_events = query.flag("sendInitialEvents");
    let rv_match = query.get("resourceVersionMatch").filter(|s| !s.is_empty());
    if initial_events && (rv_match != Some("NotOlderThan") || !bookmarks) {
        return error_response(&ApiError::new(
            422,
            "Invalid",
            "sendInitialEvents: Forbidden: sendInitialEvents is forbidden unless resourceVersionMatch=NotOlderThan and allowWatchBookmarks=true",
        ));
    }
    let start = match query.get("resourceVersion").filter(|s| !s.is_empty()) {
        None | Some("0") => None,
        Some(r) => match parse_rv(r) {
            Ok(r) => Some(r),
            Err(e) => return error_response(&e),
        },
    };
    let timeout = match query.get("timeoutSeconds").map(str::parse::<u64>) {
        Some(Ok(s)) => Duration::from_secs(s),
        Some(Err(_)) => {
            return error_response(&ApiError::new(400, "BadRequest", "invalid timeoutSeconds"));
        }
        None => shared.default_watch_timeout,
    };
    // Checked at the request, as the real server does: a compaction after
    // it does not end this watch.
    let expired = match start {
        Some(rv) if !initial_events => lock(&shared.store).check_start(rv).err(),
        _ => None,
    };
    let (tx, rx) = mpsc::channel(16);
    let aborted = Arc::new(AtomicBool::new(false));
    let body = FakeBody {
        whole: None,
        stream: Some(rx),
        aborted: Arc::clone(&aborted),
    };
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let plan = WatchPlan {
            expired,
            filter,
            bookmarks,
            initial_events,
            start,
            timeout,
        };
        shared.open_watches.fetch_add(1, Ordering::SeqCst);
        let end = run_watch(&shared, plan, &tx).await;
        shared.open_watches.fetch_sub(1, Ordering::SeqCst);
        if end == WatchEnd::Cut {
            aborted.store(true, Ordering::SeqCst);
        }
    });
    let mut response = Response::new(body);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

struct WatchPlan {
    /// Set when the start was already compacted away at the request.
    expired: Option<ApiError>,
    filter: Filter,
    bookmarks: bool,
    initial_events: bool,
    start: Option<u64>,
    timeout: Duration,
}

#[derive(Debug, PartialEq, Eq)]
enum WatchEnd {
    /// Timed out, expired or the client left: a clean end of stream.
    Clean,
    /// Cut by the test (or the server stopping): the connection aborts.
    Cut,
}

/// The lines for every change after `cursor` that the watch wants, and the
/// revision they reach.
fn collect_changes(
    shared: &Shared,
    filter: &Filter,
    cursor: u64,
    streaming: bool,
) -> Result<(Vec<u8>, u64), ApiError> {
    let (changes, rv) = {
        let store = lock(&shared.store);
        (store.changes_after(cursor, streaming)?, store.rv())
    };
    let storage = storage_of(filter.kind);
    let mut out = Vec::new();
    for change in changes {
        if change.storage != storage {
            continue;
        }
        let now = filter.matches(&change.key, &change.object.index);
        let before = change
            .prev
            .as_ref()
            .is_some_and(|p| filter.matches(&change.key, &p.index));
        let word = match (change.change, before, now) {
            (ChangeType::Added, _, true) => "ADDED",
            (ChangeType::Modified, true, true) => "MODIFIED",
            (ChangeType::Modified, false, true) => "ADDED",
            (ChangeType::Modified, true, false) => "DELETED",
            (ChangeType::Deleted, true, _) => "DELETED",
            _ => continue,
        };
        out.extend_from_slice(&event_line(word, &object_json(filter.kind, &change.object)));
    }
    Ok((out, rv))
}

async fn run_watch(shared: &Shared, plan: WatchPlan, tx: &mpsc::Sender<Bytes>) -> WatchEnd {
    let mut rv_rx = shared.rv_tx.subscribe();
    let mut cut_rx = shared.cut_tx.subscribe();
    let mut stop_rx = shared.stop_tx.subscribe();
    cut_rx.borrow_and_update();
    stop_rx.borrow_and_update();
    rv_rx.borrow_and_update();
    let deadline = tokio::time::Instant::now() + plan.timeout;
    let kind = plan.filter.kind;
    if let Some(expired) = plan.expired {
        let line = event_line("ERROR", expired.status().to_string().as_bytes());
        let _ = tx.send(Bytes::from(line)).await;
        return WatchEnd::Clean;
    }
    let mut cursor = match plan.start {
        Some(rv) if !plan.initial_events => rv,
        _ => {
            // Synthetic ADDED events for the current state, then changes.
            let (objects, rv) = {
                let store = lock(&shared.store);
                (store.objects(kind), store.rv())
            };
            let mut out = Vec::new();
            for (key, stored) in objects.iter() {
                if plan.filter.matches(key, &stored.index) {
                    out.extend_from_slice(&event_line("ADDED", &object_json(kind, stored)));
                }
            }
            if plan.initial_events {
                out.extend_from_slice(&bookmark_line(kind, rv, true));
            }
            if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                return WatchEnd::Clean;
            }
            rv
        }
    };
    let interval = shared.bookmark_interval.max(Duration::from_millis(10));
    let mut bookmark = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        rv_rx.borrow_and_update();
        // Only the window limits a watch that has started: it outlives a
        // compaction, as on the real server.
        match collect_changes(shared, &plan.filter, cursor, true) {
            Ok((lines, rv)) => {
                cursor = rv;
                if !lines.is_empty() {
                    tokio::select! {
                        sent = tx.send(Bytes::from(lines)) => if sent.is_err() { return WatchEnd::Clean },
                        _ = cut_rx.changed() => return WatchEnd::Cut,
                        _ = stop_rx.changed() => return WatchEnd::Cut,
                        _ = tokio::time::sleep_until(deadline) => return WatchEnd::Clean,
                    }
                }
            }
            Err(expired) => {
                let line = event_line("ERROR", expired.status().to_string().as_bytes());
                let _ = tx.send(Bytes::from(line)).await;
                return WatchEnd::Clean;
            }
        }
        tokio::select! {
            _ = rv_rx.changed() => {}
            _ = bookmark.tick(), if plan.bookmarks => {
                if tx.send(Bytes::from(bookmark_line(kind, cursor, false))).await.is_err() {
                    return WatchEnd::Clean;
                }
            }
            _ = cut_rx.changed() => return WatchEnd::Cut,
            _ = stop_rx.changed() => return WatchEnd::Cut,
            _ = tx.closed() => return WatchEnd::Clean,
            _ = tokio::time::sleep_until(deadline) => return WatchEnd::Clean,
        }
    }
}

/// What a kubelet (or the node proxy) answers for `rest`.
fn kubelet_answer(shared: &Shared, node: &str, rest: &str) -> Response<FakeBody> {
    match rest.trim_matches('/') {
        "stats/summary" => match lock(&shared.summaries).get(node) {
            Some(summary) => json_response(200, Bytes::from(summary.to_string())),
            None => error_response(&ApiError::new(
                503,
                "ServiceUnavailable",
                format!("no summary set for node {node}"),
            )),
        },
        "healthz" => {
            let mut response = Response::new(FakeBody::whole(Bytes::from_static(b"ok")));
            *response.status_mut() = StatusCode::OK;
            response
        }
        other => error_response(&ApiError::new(
            404,
            "NotFound",
            format!("kubelet path /{other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_fake::store::{EVENTS_CORE, NAMESPACES, PODS};

    fn resource(kind: usize, ns: Option<&str>, name: Option<&str>, sub: Option<&str>) -> Target {
        Target::Resource {
            kind,
            namespace: ns.map(str::to_string),
            name: name.map(str::to_string),
            sub: sub.map(str::to_string),
        }
    }

    #[test]
    fn paths_route_as_the_api_server_lays_them_out() {
        let api = Role::ApiServer;
        assert_eq!(
            route(&api, "/api/v1/pods"),
            resource(PODS, None, None, None)
        );
        assert_eq!(
            route(&api, "/api/v1/namespaces/a/pods"),
            resource(PODS, Some("a"), None, None)
        );
        assert_eq!(
            route(&api, "/api/v1/namespaces/a/pods/p/status"),
            resource(PODS, Some("a"), Some("p"), Some("status"))
        );
        assert_eq!(
            route(&api, "/api/v1/namespaces/a"),
            resource(NAMESPACES, None, Some("a"), None)
        );
        assert_eq!(
            route(&api, "/api/v1/namespaces"),
            resource(NAMESPACES, None, None, None)
        );
        assert_eq!(
            route(&api, "/apis/events.k8s.io/v1/namespaces/a/events"),
            resource(EVENTS_V1, Some("a"), None, None)
        );
        assert_eq!(
            route(&api, "/api/v1/events"),
            resource(EVENTS_CORE, None, None, None)
        );
        assert_eq!(
            route(&api, "/api/v1/nodes/n1/proxy/stats/summary"),
            Target::NodeProxy {
                node: "n1".into(),
                rest: "stats/summary".into()
            }
        );
        // A namespaced kind's object needs its namespace; a cluster-scoped
        // kind has none; unserved subresources and kinds are 404.
        assert_eq!(route(&api, "/api/v1/pods/p"), Target::Unknown);
        assert_eq!(route(&api, "/api/v1/namespaces/a/nodes"), Target::Unknown);
        assert_eq!(
            route(&api, "/api/v1/namespaces/a/pods/p/exec"),
            Target::Unknown
        );
        assert_eq!(
            route(&api, "/api/v1/namespaces/a/configmaps"),
            Target::Unknown
        );
        assert_eq!(
            route(&api, "/apis/apps/v1beta1/deployments"),
            Target::Unknown
        );
    }

    #[test]
    fn continue_tokens_round_trip_and_refuse_garbage() {
        let key = ("ns".to_string(), "pod-1".to_string());
        assert_eq!(
            decode_continue(&encode_continue(1234, &key)),
            Ok((1234, key))
        );
        let cluster = (String::new(), "node-1".to_string());
        assert_eq!(
            decode_continue(&encode_continue(7, &cluster)),
            Ok((7, cluster))
        );
        assert_eq!(decode_continue("not a token").map_err(|e| e.code), Err(400));
    }

    #[test]
    fn queries_are_percent_decoded() {
        let q = Query(parse_query(
            "fieldSelector=spec.nodeName%3Dnode-1%2Cmetadata.name%21%3Dx&watch=1&labelSelector=a+in+%28b%29",
        ));
        assert_eq!(
            q.get("fieldSelector"),
            Some("spec.nodeName=node-1,metadata.name!=x")
        );
        assert_eq!(q.get("labelSelector"), Some("a in (b)"));
        assert!(q.flag("watch"));
    }
}
