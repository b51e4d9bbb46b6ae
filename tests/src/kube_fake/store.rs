//! The fake API server's storage, modelled on etcd under the API server:
//! objects as JSON by kind, namespace and name, one global revision
//! (`resourceVersion`) stamped on every write, and a bounded history of
//! changes from which watches are served and older states rebuilt (paged
//! lists at one resourceVersion, `resourceVersionMatch=Exact`).
//!
//! Never does I/O and never waits: the server and the test controls lock it,
//! change it and notify watchers themselves.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value, json};

/// A kind the fake serves: where its URLs live and how its objects look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// API group, `""` for the core group (`/api/v1`).
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// The URL's resource name.
    pub plural: &'static str,
    /// The object's `kind`.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
}

impl Kind {
    /// `apiVersion` as objects carry it.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

const fn kind(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> Kind {
    Kind {
        group,
        version,
        plural,
        kind,
        namespaced,
    }
}

/// Every kind the fake serves. `events` appears twice, as the real server
/// serves it: core/v1 and events.k8s.io/v1 are two views of one storage.
pub const KINDS: [Kind; 12] = [
    kind("", "v1", "namespaces", "Namespace", false),
    kind("", "v1", "nodes", "Node", false),
    kind("", "v1", "pods", "Pod", true),
    kind("apps", "v1", "deployments", "Deployment", true),
    kind("apps", "v1", "replicasets", "ReplicaSet", true),
    kind("apps", "v1", "statefulsets", "StatefulSet", true),
    kind("apps", "v1", "daemonsets", "DaemonSet", true),
    kind("batch", "v1", "jobs", "Job", true),
    kind(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        true,
    ),
    kind("", "v1", "events", "Event", true),
    kind("events.k8s.io", "v1", "events", "Event", true),
    kind("coordination.k8s.io", "v1", "leases", "Lease", true),
];

/// Index of namespaces in [`KINDS`].
pub const NAMESPACES: usize = 0;
/// Index of nodes in [`KINDS`].
pub const NODES: usize = 1;
/// Index of pods in [`KINDS`].
pub const PODS: usize = 2;
/// Index of core/v1 events in [`KINDS`]: the storage of both event views.
pub const EVENTS_CORE: usize = 9;
/// Index of events.k8s.io/v1 events in [`KINDS`].
pub const EVENTS_V1: usize = 10;

/// The kind at `group`, `version`, `plural`.
pub fn find_kind(group: &str, version: &str, plural: &str) -> Option<usize> {
    KINDS
        .iter()
        .position(|k| k.group == group && k.version == version && k.plural == plural)
}

/// Where a kind's objects are stored (both event views share one).
pub fn storage_of(kind: usize) -> usize {
    if kind == EVENTS_V1 { EVENTS_CORE } else { kind }
}

/// An object's place: namespace (`""` when cluster-scoped) and name. The
/// order is etcd's key order, which lists and continue tokens follow.
pub type Key = (String, String);

/// One stored object: its JSON text (served as is in lists and watch
/// events) and what selectors look at. Kept as text, not as a parsed
/// tree, which takes ten times the memory.
#[derive(Debug)]
pub struct Stored {
    /// The object's JSON.
    pub json: Bytes,
    /// Its labels and selectable fields.
    pub index: Index,
}

/// What label and field selectors match against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    /// `metadata.labels`.
    pub labels: Vec<(String, String)>,
    /// The kind's selectable fields and their values (`""` when absent).
    pub fields: Vec<(&'static str, String)>,
}

impl Index {
    /// The index of `value`, stored as `storage`.
    pub fn of(storage: usize, value: &Value) -> Index {
        let labels = value["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let fields = super::select::indexed_fields(storage)
            .iter()
            .map(|f| (*f, super::select::field_value(value, f)))
            .collect();
        Index { labels, fields }
    }
}

impl Stored {
    fn new(storage: usize, value: &Value) -> Arc<Stored> {
        Arc::new(Stored {
            json: Bytes::from(value.to_string()),
            index: Index::of(storage, value),
        })
    }

    /// The object, parsed.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }
}

/// What a write did, as watch events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    /// Created.
    Added,
    /// Replaced or patched.
    Modified,
    /// Deleted.
    Deleted,
}

/// One write, kept in the history window.
#[derive(Debug)]
pub struct Change {
    /// The revision the write made.
    pub rv: u64,
    /// The storage written ([`storage_of`]).
    pub storage: usize,
    /// The object's place.
    pub key: Key,
    /// What happened.
    pub change: ChangeType,
    /// The object after the write (for a delete: its last state, stamped
    /// with the deletion's revision, as the real server sends it).
    pub object: Arc<Stored>,
    /// The object before the write.
    pub prev: Option<Arc<Stored>>,
}

/// An API error, sent as a `Status` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status and `Status.code`.
    pub code: u16,
    /// `Status.reason`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
}

impl ApiError {
    /// A new error.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
        }
    }

    /// 410 Expired: `rv` is older than the history kept.
    pub fn expired(rv: u64, oldest: u64) -> ApiError {
        ApiError::new(
            410,
            "Expired",
            format!("too old resource version: {rv} ({oldest})"),
        )
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

/// A map of one kind's objects; cloned cheaply (copy on write).
pub type Objects = Arc<BTreeMap<Key, Arc<Stored>>>;

/// The storage.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: Vec<Objects>,
    history: VecDeque<Arc<Change>>,
    /// New watches and lists may start from this revision or later.
    compacted: u64,
    /// History holds every change with a revision above this (at most
    /// `compacted`: watches already streaming keep reading past changes,
    /// as from the API server's watch cache).
    kept_from: u64,
    history_limit: usize,
    uid_seed: u64,
    uid_counter: u64,
}

impl Store {
    /// An empty store keeping at most `history_limit` changes, its
    /// revisions starting above `first_rv`.
    pub fn new(history_limit: usize, first_rv: u64, uid_seed: u64) -> Store {
        Store {
            rv: first_rv,
            objects: vec![Objects::default(); KINDS.len()],
            history: VecDeque::new(),
            compacted: first_rv,
            kept_from: first_rv,
            history_limit: history_limit.max(1),
            uid_seed,
            uid_counter: 0,
        }
    }

    /// The current revision.
    pub fn rv(&self) -> u64 {
        self.rv
    }

    /// The oldest revision a watch may start from.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Changes kept.
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// Objects stored, every kind.
    pub fn object_count(&self) -> usize {
        self.objects.iter().map(|m| m.len()).sum()
    }

    /// Compacts at the current revision: new watches and lists from any
    /// revision before now get 410 Expired. Watches already streaming go
    /// on (the real server serves them from its watch cache); the history
    /// they read is dropped as the window moves on.
    pub fn compact(&mut self) {
        self.compacted = self.rv;
    }

    /// The current objects of `kind`.
    pub fn objects(&self, kind: usize) -> Objects {
        Arc::clone(&self.objects[storage_of(kind)])
    }

    /// One object.
    pub fn get(&self, kind: usize, key: &Key) -> Option<Arc<Stored>> {
        self.objects[storage_of(kind)].get(key).cloned()
    }

    /// The objects of `kind` as they were at revision `rv`, rebuilt from
    /// the history; 410 Expired when it no longer reaches back that far.
    pub fn objects_at(&self, kind: usize, rv: u64) -> Result<Objects, ApiError> {
        let storage = storage_of(kind);
        if rv >= self.rv {
            return Ok(self.objects(kind));
        }
        if rv < self.compacted {
            return Err(ApiError::expired(rv, self.compacted));
        }
        let mut map = (*self.objects[storage]).clone();
        let start = self.history.partition_point(|c| c.rv <= rv);
        for change in self.history.range(start..).rev() {
            if change.storage != storage {
                continue;
            }
            match &change.prev {
                Some(prev) => {
                    map.insert(change.key.clone(), Arc::clone(prev));
                }
                None => {
                    map.remove(&change.key);
                }
            }
        }
        Ok(Arc::new(map))
    }

    /// 410 Expired when a watch or list may no longer start from `rv`.
    pub fn check_start(&self, rv: u64) -> Result<(), ApiError> {
        if rv < self.compacted {
            return Err(ApiError::expired(rv, self.compacted));
        }
        Ok(())
    }

    /// Every change after `rv`, oldest first, for a watch starting
    /// (`streaming` false: 410 Expired before the compaction) or already
    /// streaming (410 only once the window has moved past `rv`, as for a
    /// watcher too slow for the watch cache).
    pub fn changes_after(&self, rv: u64, streaming: bool) -> Result<Vec<Arc<Change>>, ApiError> {
        let floor = if streaming {
            self.kept_from
        } else {
            self.compacted
        };
        if rv < floor {
            return Err(ApiError::expired(rv, floor));
        }
        let start = self.history.partition_point(|c| c.rv <= rv);
        Ok(self.history.range(start..).cloned().collect())
    }

    fn new_uid(&mut self) -> String {
        self.uid_counter += 1;
        let a = self
            .uid_seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17);
        let b = self.uid_counter;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (a >> 32) as u32,
            (a >> 16) as u16,
            (a & 0xfff) as u16,
            (b >> 48) as u16 & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }

    fn record(
        &mut self,
        storage: usize,
        key: Key,
        change: ChangeType,
        object: Arc<Stored>,
        prev: Option<Arc<Stored>>,
    ) {
        let map = Arc::make_mut(&mut self.objects[storage]);
        if change == ChangeType::Deleted {
            map.remove(&key);
        } else {
            map.insert(key.clone(), Arc::clone(&object));
        }
        self.history.push_back(Arc::new(Change {
            rv: self.rv,
            storage,
            key,
            change,
            object,
            prev,
        }));
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.kept_from = old.rv;
                self.compacted = self.compacted.max(old.rv);
            }
        }
    }

    /// Creates an object of `kind` (events.k8s.io objects converted to
    /// core/v1 first), stamping uid, creationTimestamp, generation and a new
    /// resourceVersion. `now` is RFC 3339 in seconds.
    pub fn create(
        &mut self,
        kind: usize,
        object: Value,
        now: &str,
    ) -> Result<Arc<Stored>, ApiError> {
        let mut object = if kind == EVENTS_V1 {
            events_v1_to_core(&object)
        } else {
            object
        };
        let storage = storage_of(kind);
        let info = KINDS[storage];
        let key = self.key_for(storage, &mut object)?;
        if info.namespaced {
            match self.objects[NAMESPACES].get(&(String::new(), key.0.clone())) {
                None => {
                    return Err(ApiError::new(
                        404,
                        "NotFound",
                        format!("namespaces \"{}\" not found", key.0),
                    ));
                }
                Some(ns) if ns.value()["metadata"]["deletionTimestamp"].is_string() => {
                    return Err(ApiError::new(
                        403,
                        "Forbidden",
                        format!(
                            "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                            info.plural, key.1, key.0
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        if self.objects[storage].contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{}\" already exists", info.plural, key.1),
            ));
        }
        self.rv += 1;
        let uid = self.new_uid();
        let Some(fields) = object.as_object_mut() else {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the object is not a JSON object",
            ));
        };
        fields.insert("apiVersion".into(), info.api_version().into());
        fields.insert("kind".into(), info.kind.into());
        let meta = metadata_mut(fields);
        meta.insert("uid".into(), uid.into());
        meta.insert("creationTimestamp".into(), now.into());
        meta.insert("resourceVersion".into(), self.rv.to_string().into());
        if storage != NAMESPACES && storage != NODES && storage != EVENTS_CORE {
            meta.insert("generation".into(), 1.into());
        }
        meta.remove("deletionTimestamp");
        if storage == NAMESPACES {
            fields.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
            fields.insert("status".into(), json!({"phase": "Active"}));
        }
        let stored = Stored::new(storage, &object);
        self.record(storage, key, ChangeType::Added, Arc::clone(&stored), None);
        Ok(stored)
    }

    /// Replaces an object. A non-empty `metadata.resourceVersion` must
    /// match the stored one (409 Conflict otherwise). `part` says what the
    /// write may change: the whole object, or only its status (the
    /// `/status` subresource); a main-resource write keeps the status of
    /// kinds that have the subresource. An update that changes nothing
    /// writes nothing, as the real server does.
    pub fn update(
        &mut self,
        kind: usize,
        object: Value,
        part: Part,
    ) -> Result<Arc<Stored>, ApiError> {
        let mut object = if kind == EVENTS_V1 {
            events_v1_to_core(&object)
        } else {
            object
        };
        let storage = storage_of(kind);
        let info = KINDS[storage];
        let key = self.key_for(storage, &mut object)?;
        let Some(old) = self.objects[storage].get(&key).cloned() else {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("{} \"{}\" not found", info.plural, key.1),
            ));
        };
        let old_value = old.value();
        let wanted_rv = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let old_rv = old_value["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        if !wanted_rv.is_empty() && wanted_rv != old_rv {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                    info.plural, key.1
                ),
            ));
        }
        let mut next = match part {
            Part::All => object,
            Part::Whole => {
                let mut next = object;
                if has_status_subresource(storage)
                    && let Some(status) = old_value.get("status")
                    && let Some(fields) = next.as_object_mut()
                {
                    fields.insert("status".into(), status.clone());
                }
                next
            }
            Part::Status => {
                let mut next = old_value.clone();
                if let (Some(fields), Some(status)) = (next.as_object_mut(), object.get("status")) {
                    fields.insert("status".into(), status.clone());
                }
                next
            }
        };
        let Some(fields) = next.as_object_mut() else {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the object is not a JSON object",
            ));
        };
        fields.insert("apiVersion".into(), info.api_version().into());
        fields.insert("kind".into(), info.kind.into());
        let old_meta = old_value["metadata"].clone();
        let meta = metadata_mut(fields);
        for kept in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
            match old_meta.get(kept) {
                Some(v) => meta.insert(kept.into(), v.clone()),
                None => meta.remove(kept),
            };
        }
        if old_meta.get("deletionTimestamp").is_some() {
            meta.insert(
                "deletionTimestamp".into(),
                old_meta["deletionTimestamp"].clone(),
            );
        }
        if next == old_value {
            return Ok(old);
        }
        let spec_changed = next.get("spec") != old_value.get("spec");
        self.rv += 1;
        let rv = self.rv;
        if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), rv.to_string().into());
            if spec_changed && let Some(generation) = meta.get("generation").and_then(Value::as_i64)
            {
                meta.insert("generation".into(), (generation + 1).into());
            }
        }
        let stored = Stored::new(storage, &next);
        self.record(
            storage,
            key,
            ChangeType::Modified,
            Arc::clone(&stored),
            Some(old),
        );
        Ok(stored)
    }

    /// Marks an object as being deleted (`metadata.deletionTimestamp`,
    /// graceful deletion as pods and namespaces go through).
    pub fn mark_deleting(
        &mut self,
        kind: usize,
        key: &Key,
        now: &str,
    ) -> Result<Arc<Stored>, ApiError> {
        let storage = storage_of(kind);
        let Some(old) = self.objects[storage].get(key).cloned() else {
            return Err(not_found(storage, key));
        };
        let old_value = old.value();
        if old_value["metadata"]["deletionTimestamp"].is_string() {
            return Ok(old);
        }
        let mut next = old_value.clone();
        self.rv += 1;
        if let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("deletionTimestamp".into(), now.into());
            meta.insert("resourceVersion".into(), self.rv.to_string().into());
            if storage == PODS {
                meta.insert("deletionGracePeriodSeconds".into(), 30.into());
            }
        }
        if storage == NAMESPACES {
            next["status"]["phase"] = "Terminating".into();
        }
        let stored = Stored::new(storage, &next);
        self.record(
            storage,
            key.clone(),
            ChangeType::Modified,
            Arc::clone(&stored),
            Some(old),
        );
        Ok(stored)
    }

    /// Deletes an object at once.
    pub fn delete(&mut self, kind: usize, key: &Key) -> Result<Arc<Stored>, ApiError> {
        let storage = storage_of(kind);
        let Some(old) = self.objects[storage].get(key).cloned() else {
            return Err(not_found(storage, key));
        };
        let old_value = old.value();
        self.rv += 1;
        let mut last = old_value.clone();
        if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), self.rv.to_string().into());
        }
        let stored = Stored::new(storage, &last);
        self.record(
            storage,
            key.clone(),
            ChangeType::Deleted,
            Arc::clone(&stored),
            Some(old),
        );
        Ok(stored)
    }

    fn key_for(&self, storage: usize, object: &mut Value) -> Result<Key, ApiError> {
        let info = KINDS[storage];
        let Some(fields) = object.as_object_mut() else {
            return Err(ApiError::new(
                400,
                "BadRequest",
                "the object is not a JSON object",
            ));
        };
        let meta = metadata_mut(fields);
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = if name.is_empty() {
            match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let suffix = self.uid_counter.wrapping_mul(2_654_435_761) ^ self.uid_seed;
                    let generated = format!("{prefix}{}", short_suffix(suffix));
                    meta.insert("name".into(), generated.clone().into());
                    generated
                }
                _ => {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        format!("{} is invalid: metadata.name: Required value", info.kind),
                    ));
                }
            }
        } else {
            name
        };
        let namespace = if info.namespaced {
            let ns = meta
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if ns.is_empty() {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        "{} \"{name}\" is invalid: metadata.namespace: Required value",
                        info.kind
                    ),
                ));
            }
            ns
        } else {
            meta.remove("namespace");
            String::new()
        };
        Ok((namespace, name))
    }
}

/// What an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything, status included (the test's controllers).
    All,
    /// The object (its status kept where status is a subresource).
    Whole,
    /// Only `status`.
    Status,
}

fn has_status_subresource(storage: usize) -> bool {
    !matches!(storage, EVENTS_CORE) && KINDS[storage].plural != "leases"
}

fn not_found(storage: usize, key: &Key) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("{} \"{}\" not found", KINDS[storage].plural, key.1),
    )
}

fn metadata_mut(fields: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let meta = fields
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    match meta {
        Value::Object(map) => map,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// Five characters as generateName appends them.
fn short_suffix(mut n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize];
            n /= ALPHABET.len() as u64;
            c as char
        })
        .collect()
}

/// A core/v1 Event as events.k8s.io/v1 shows it (the field mapping of the
/// API server's conversion).
pub fn core_to_events_v1(core: &Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), "events.k8s.io/v1".into());
    out.insert("kind".into(), "Event".into());
    let copy = |out: &mut Map<String, Value>, from: &str, to: &str| {
        if let Some(v) = core.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    };
    copy(&mut out, "metadata", "metadata");
    copy(&mut out, "involvedObject", "regarding");
    copy(&mut out, "related", "related");
    copy(&mut out, "message", "note");
    copy(&mut out, "reason", "reason");
    copy(&mut out, "type", "type");
    copy(&mut out, "action", "action");
    copy(&mut out, "eventTime", "eventTime");
    copy(&mut out, "reportingComponent", "reportingController");
    copy(&mut out, "reportingInstance", "reportingInstance");
    copy(&mut out, "source", "deprecatedSource");
    copy(&mut out, "firstTimestamp", "deprecatedFirstTimestamp");
    copy(&mut out, "lastTimestamp", "deprecatedLastTimestamp");
    copy(&mut out, "count", "deprecatedCount");
    if let Some(series) = core.get("series").filter(|v| !v.is_null()) {
        out.insert(
            "series".into(),
            json!({"count": series["count"], "lastObservedTime": series["lastObservedTime"]}),
        );
    }
    Value::Object(out)
}

/// An events.k8s.io/v1 Event stored as core/v1.
pub fn events_v1_to_core(v1: &Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), "v1".into());
    out.insert("kind".into(), "Event".into());
    let copy = |out: &mut Map<String, Value>, from: &str, to: &str| {
        if let Some(v) = v1.get(from).filter(|v| !v.is_null()) {
            out.insert(to.into(), v.clone());
        }
    };
    copy(&mut out, "metadata", "metadata");
    copy(&mut out, "regarding", "involvedObject");
    copy(&mut out, "related", "related");
    copy(&mut out, "note", "message");
    copy(&mut out, "reason", "reason");
    copy(&mut out, "type", "type");
    copy(&mut out, "action", "action");
    copy(&mut out, "eventTime", "eventTime");
    copy(&mut out, "reportingController", "reportingComponent");
    copy(&mut out, "reportingInstance", "reportingInstance");
    copy(&mut out, "deprecatedSource", "source");
    copy(&mut out, "deprecatedFirstTimestamp", "firstTimestamp");
    copy(&mut out, "deprecatedLastTimestamp", "lastTimestamp");
    copy(&mut out, "deprecatedCount", "count");
    if let Some(series) = v1.get("series").filter(|v| !v.is_null()) {
        out.insert(
            "series".into(),
            json!({"count": series["count"], "lastObservedTime": series["lastObservedTime"]}),
        );
    }
    if !out.contains_key("involvedObject") {
        out.insert("involvedObject".into(), json!({}));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, image: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "a"}, "spec": {"containers": [{"name": "c", "image": image}]}})
    }

    #[test]
    fn revisions_rebuild_the_past_and_compaction_forgets_it() {
        let mut store = Store::new(100, 1000, 1);
        store
            .create(NAMESPACES, json!({"metadata": {"name": "a"}}), "t")
            .expect("ns");
        store.create(PODS, pod("p1", "i:1"), "t").expect("p1");
        let one = store.rv();
        store.create(PODS, pod("p2", "i:1"), "t").expect("p2");
        store
            .update(PODS, pod("p1", "i:2"), Part::All)
            .expect("p1 v2");
        store
            .delete(PODS, &("a".into(), "p2".into()))
            .expect("p2 gone");
        assert_eq!(store.rv(), one + 3);
        let past = store.objects_at(PODS, one).expect("in the history");
        assert_eq!(past.len(), 1);
        assert_eq!(
            past[&("a".to_string(), "p1".to_string())].value()["spec"]["containers"][0]["image"],
            "i:1"
        );
        assert_eq!(
            store.objects(PODS)[&("a".to_string(), "p1".to_string())].value()["metadata"]["generation"],
            2
        );
        assert_eq!(store.changes_after(one, false).expect("history").len(), 3);
        store.compact();
        assert_eq!(
            store.objects_at(PODS, one).map_err(|e| e.code).err(),
            Some(410)
        );
        assert_eq!(store.check_start(one).map_err(|e| e.reason), Err("Expired"));
        assert!(store.check_start(store.rv()).is_ok());
    }

    #[test]
    fn an_update_that_changes_nothing_writes_nothing() {
        let mut store = Store::new(100, 1000, 1);
        store
            .create(NAMESPACES, json!({"metadata": {"name": "a"}}), "t")
            .expect("ns");
        store.create(PODS, pod("p1", "i:1"), "t").expect("p1");
        let rv = store.rv();
        store
            .update(PODS, pod("p1", "i:1"), Part::All)
            .expect("same");
        assert_eq!(store.rv(), rv);
        let mut stale = pod("p1", "i:3");
        stale["metadata"]["resourceVersion"] = "1".into();
        assert_eq!(
            store
                .update(PODS, stale, Part::All)
                .map_err(|e| e.code)
                .err(),
            Some(409)
        );
        assert_eq!(
            store
                .create(PODS, pod("p1", "i:1"), "t")
                .map_err(|e| e.code)
                .err(),
            Some(409)
        );
        let mut elsewhere = pod("p9", "i:1");
        elsewhere["metadata"]["namespace"] = "missing".into();
        assert_eq!(
            store.create(PODS, elsewhere, "t").map_err(|e| e.code).err(),
            Some(404)
        );
    }
}
