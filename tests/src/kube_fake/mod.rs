//! A fake Kubernetes API server on loopback, for the Kubernetes agent's
//! tests (no real cluster runs on these machines). It is a fake: objects
//! are plain JSON with no validation beyond names and namespaces, no
//! admission, no defaulting, no controllers (the test plays them, see
//! [`scenarios`]), no RBAC enforcement (every call is logged instead, to
//! compare with the ClusterRoles), no protobuf, no discovery beyond
//! `/version`, strategic-merge and apply patches done as JSON merge
//! patches.
//!
//! What it does model faithfully, because kube-rs watchers and reflectors
//! depend on it: one global resourceVersion stamped on every write (etcd's
//! revision); paged lists served at one revision (`limit`, `continue`,
//! 410 Expired once compacted); `resourceVersion` with
//! `resourceVersionMatch` (NotOlderThan, Exact); label and field
//! selectors; watches streaming newline-delimited events from a bounded
//! history, with bookmarks, `sendInitialEvents` (streaming lists), an
//! `ERROR` 410 event when the start is older than the history, and
//! `timeoutSeconds`; status subresources; 409 on a stale update; a
//! kubelet `/stats/summary` per node, direct or through the node proxy.
//!
//! It starts as a new cluster does, with the namespaces `default`,
//! `kube-node-lease`, `kube-public` and `kube-system`, and nothing else.
//!
//! Test controls: [`KubeFake::create`] and friends (fanned out to
//! watchers), [`KubeFake::compact`], [`KubeFake::drop_watches`],
//! [`KubeFake::restart`] (same port, revisions continue), a log of every
//! call ([`KubeFake::calls`]), latency and failure injection.
//!
//! Never listens beyond 127.0.0.1, and never outlives its handle: dropping
//! [`KubeFake`] stops every task and closes every port.

pub mod kubelet;
pub mod scenarios;
pub mod select;
pub mod server;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::serde::Serialize;
use k8s_openapi::serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::Scratch;
use kubelet::Summary;
use server::{Faults, Role, Shared, lock};
use store::{EVENTS_V1, KINDS, Part, Store, core_to_events_v1, find_kind};

pub use server::{ApiCall, now_rfc3339};

/// How a fake is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// Serve HTTPS with a fresh self-signed CA (in the kubeconfig).
    pub tls: bool,
    /// How often a watch that allows bookmarks gets one (the real server:
    /// about a minute).
    pub bookmark_interval: Duration,
    /// Changes kept for watches; older ones are compacted away.
    pub history_limit: usize,
    /// A watch's length when the client sends no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            tls: false,
            bookmark_interval: Duration::from_secs(1),
            history_limit: 100_000,
            default_watch_timeout: Duration::from_secs(1800),
        }
    }
}

/// A running fake API server.
pub struct KubeFake {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
    scheme: &'static str,
    kubeconfig: PathBuf,
    ca_pem: Option<String>,
    kubelets: Mutex<HashMap<String, SocketAddr>>,
    thread_name: String,
    _scratch: Scratch,
}

impl std::fmt::Debug for KubeFake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeFake")
            .field("url", &self.url())
            .finish()
    }
}

/// The kind index of `K`.
fn kind_of<K: k8s_openapi::Resource>() -> usize {
    find_kind(K::GROUP, K::VERSION, K::URL_PATH_SEGMENT)
        .unwrap_or_else(|| panic!("the fake does not serve {}", K::URL_PATH_SEGMENT))
}

fn typed<K: DeserializeOwned>(kind: usize, value: &Value) -> K {
    let value = if kind == EVENTS_V1 {
        core_to_events_v1(value)
    } else {
        value.clone()
    };
    serde_json::from_value(value.clone())
        .unwrap_or_else(|e| panic!("stored {} does not parse: {e}: {value}", KINDS[kind].kind))
}

fn self_signed() -> (tokio_rustls::TlsAcceptor, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server params")
        .signed_by(&key, &ca)
        .expect("server cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), ca.pem())
}

impl KubeFake {
    /// Starts a fake on plain HTTP with the default options.
    pub fn start() -> KubeFake {
        KubeFake::start_with(Options::default())
    }

    /// Starts a fake.
    pub fn start_with(options: Options) -> KubeFake {
        let scratch = Scratch::new("kube-fake");
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let thread_name = format!("kube-fake-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(thread_name.clone())
            .enable_all()
            .build()
            .expect("the fake's runtime");
        let (tls, ca_pem) = if options.tls {
            let (acceptor, pem) = self_signed();
            (Some(acceptor), Some(pem))
        } else {
            (None, None)
        };
        let seed = std::collections::hash_map::RandomState::new();
        let seed = std::hash::BuildHasher::hash_one(&seed, std::process::id());
        let token = format!("fake-token-{:016x}", seed);
        // Revisions start well above 1, as a real cluster's do, so a client
        // that treats small numbers specially is caught.
        let first_rv = 1000 + seed % 1000;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(options.history_limit, first_rv, seed)),
            rv_tx: watch::Sender::new(first_rv),
            cut_tx: watch::Sender::new(0),
            stop_tx: watch::Sender::new(0),
            calls: Mutex::default(),
            token,
            bookmark_interval: options.bookmark_interval,
            default_watch_timeout: options.default_watch_timeout,
            faults: Mutex::new(Faults::default()),
            summaries: Mutex::default(),
            open_watches: Default::default(),
            tls,
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds the fake");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        {
            let _guard = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let stop = shared.stop_tx.subscribe();
            runtime.spawn(server::serve(
                Arc::clone(&shared),
                listener,
                Role::ApiServer,
                stop,
                None,
            ));
        }
        let scheme = if options.tls { "https" } else { "http" };
        let kubeconfig = scratch.join("kubeconfig");
        let fake = KubeFake {
            shared,
            runtime: Some(runtime),
            addr,
            scheme,
            kubeconfig,
            ca_pem,
            kubelets: Mutex::default(),
            thread_name,
            _scratch: scratch,
        };
        fake.write_kubeconfig();
        // The namespaces every cluster starts with.
        for name in ["default", "kube-node-lease", "kube-public", "kube-system"] {
            scenarios::namespace(&fake, name);
        }
        fake
    }

    fn write_kubeconfig(&self) {
        let mut cluster = json!({"server": self.url()});
        if let Some(pem) = &self.ca_pem {
            cluster["certificate-authority-data"] =
                base64::engine::general_purpose::STANDARD.encode(pem).into();
        }
        // JSON is YAML: kube reads this as it reads any kubeconfig.
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake", "user": {"token": self.shared.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": "default"}}],
            "current-context": "fake",
        });
        std::fs::write(&self.kubeconfig, config.to_string()).expect("writes the kubeconfig");
    }

    /// `http://127.0.0.1:PORT` (or https).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig for it (server, CA, token): what `KUBECONFIG` names.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The bearer token clients must send (a service account's).
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// The CA certificate (PEM) when serving HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The name of the fake's server threads (for measuring their CPU in
    /// `/proc/self/task/*/comm`): unique in this process.
    pub fn thread_name(&self) -> &str {
        &self.thread_name
    }

    /// The current resourceVersion (etcd's revision).
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).rv()
    }

    /// Watches streaming now.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(Ordering::SeqCst)
    }

    /// Objects stored and changes kept in the history.
    pub fn sizes(&self) -> (usize, usize) {
        let store = lock(&self.shared.store);
        (store.object_count(), store.history_len())
    }

    /// Creates `object` (its namespace must exist): uid,
    /// creationTimestamp, generation and resourceVersion stamped.
    pub fn create<K>(&self, object: &K) -> K
    where
        K: k8s_openapi::Resource + Serialize + DeserializeOwned,
    {
        let kind = kind_of::<K>();
        let value = serde_json::to_value(object).expect("serialises");
        let now = now_rfc3339();
        let stored = self
            .shared
            .write(|s| s.create(kind, value, &now))
            .unwrap_or_else(|e| panic!("create {}: {}", KINDS[kind].kind, e.message));
        typed(kind, &stored.value())
    }

    /// Replaces `object` whole, status included, whatever its
    /// resourceVersion (as a controller's update and status update).
    pub fn update<K>(&self, object: &K) -> K
    where
        K: k8s_openapi::Resource + Serialize + DeserializeOwned,
    {
        let kind = kind_of::<K>();
        let mut value = serde_json::to_value(object).expect("serialises");
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        let stored = self
            .shared
            .write(|s| s.update(kind, value, Part::All))
            .unwrap_or_else(|e| panic!("update {}: {}", KINDS[kind].kind, e.message));
        typed(kind, &stored.value())
    }

    /// Applies a JSON merge patch (status included) to an object.
    pub fn patch<K>(&self, namespace: &str, name: &str, patch: &Value) -> K
    where
        K: k8s_openapi::Resource + Serialize + DeserializeOwned,
    {
        let kind = kind_of::<K>();
        let key = (key_namespace(kind, namespace), name.to_string());
        let stored = self
            .shared
            .write(|s| {
                let mut value = match s.get(kind, &key) {
                    Some(st) if kind == EVENTS_V1 => core_to_events_v1(&st.value()),
                    Some(st) => st.value(),
                    None => return Err(store::ApiError::new(404, "NotFound", "not found")),
                };
                server::merge_patch(&mut value, patch);
                if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove("resourceVersion");
                }
                s.update(kind, value, Part::All)
            })
            .unwrap_or_else(|e| panic!("patch {} {name}: {}", KINDS[kind].kind, e.message));
        typed(kind, &stored.value())
    }

    /// Sets `metadata.deletionTimestamp` (graceful deletion begins: a pod
    /// shows as Terminating, a namespace's phase becomes Terminating).
    pub fn mark_deleting<K>(&self, namespace: &str, name: &str) -> K
    where
        K: k8s_openapi::Resource + Serialize + DeserializeOwned,
    {
        let kind = kind_of::<K>();
        let key = (key_namespace(kind, namespace), name.to_string());
        let now = now_rfc3339();
        let stored = self
            .shared
            .write(|s| s.mark_deleting(kind, &key, &now))
            .unwrap_or_else(|e| panic!("delete {} {name}: {}", KINDS[kind].kind, e.message));
        typed(kind, &stored.value())
    }

    /// Deletes an object at once; its last state, if it existed.
    pub fn delete<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: k8s_openapi::Resource + Serialize + DeserializeOwned,
    {
        let kind = kind_of::<K>();
        let key = (key_namespace(kind, namespace), name.to_string());
        self.shared
            .write(|s| s.delete(kind, &key))
            .ok()
            .map(|stored| typed(kind, &stored.value()))
    }

    /// One object.
    pub fn get<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        let kind = kind_of::<K>();
        let key = (key_namespace(kind, namespace), name.to_string());
        let stored = lock(&self.shared.store).get(kind, &key);
        stored.map(|s| typed(kind, &s.value()))
    }

    /// Every object of a kind, in key order (namespace, name).
    pub fn list<K>(&self) -> Vec<K>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        let kind = kind_of::<K>();
        let objects = lock(&self.shared.store).objects(kind);
        objects.values().map(|s| typed(kind, &s.value())).collect()
    }

    /// Every object of a kind in `namespace`.
    pub fn list_in<K>(&self, namespace: &str) -> Vec<K>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        let kind = kind_of::<K>();
        let objects = lock(&self.shared.store).objects(kind);
        objects
            .iter()
            .filter(|(k, _)| k.0 == namespace)
            .map(|(_, s)| typed(kind, &s.value()))
            .collect()
    }

    /// Drops the history up to now, as etcd's compaction does: a watch or
    /// a continue token from an older resourceVersion gets 410 Expired.
    pub fn compact(&self) {
        lock(&self.shared.store).compact();
    }

    /// Cuts every open watch mid-stream (the connection aborts without the
    /// stream's end, as when a load balancer or the server drops it).
    pub fn drop_watches(&self) {
        self.shared.cut_tx.send_modify(|n| *n += 1);
    }

    /// The server goes away (port closed, connections cut) and comes back
    /// on the same port 300 ms later; the store and its revisions survive,
    /// as etcd's do.
    pub fn restart(&self) {
        self.restart_after(Duration::from_millis(300));
    }

    /// [`KubeFake::restart`] with `down` between stop and start. Returns
    /// once the port is closed; the server comes back in the background.
    pub fn restart_after(&self, down: Duration) {
        let Some(runtime) = &self.runtime else { return };
        // Stop the accept loop, then wait for the port to refuse
        // connections.
        self.shared.stop_tx.send_modify(|n| *n += 1);
        let addr = self.addr;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the fake did not close its port"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let shared = Arc::clone(&self.shared);
        runtime.spawn(async move {
            tokio::time::sleep(down).await;
            for _ in 0..100 {
                if let Ok(listener) = tokio::net::TcpListener::bind(addr).await {
                    let stop = shared.stop_tx.subscribe();
                    server::serve(shared, listener, Role::ApiServer, stop, None).await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }

    /// Every call answered so far, oldest first.
    pub fn calls(&self) -> Vec<ApiCall> {
        lock(&self.shared.calls).clone()
    }

    /// The permissions the calls so far needed, as RBAC rules name them:
    /// (API group, resource with its subresource, verb), the kubelets'
    /// `/stats` as `nodes/stats` `get`. What a least-privilege ClusterRole
    /// must grant, and all it should.
    pub fn permissions_used(&self) -> std::collections::BTreeSet<(String, String, String)> {
        lock(&self.shared.calls)
            .iter()
            .filter(|c| !c.resource.is_empty())
            .map(|c| (c.group.clone(), c.resource.clone(), c.verb.to_string()))
            .collect()
    }

    /// Forgets the calls logged so far.
    pub fn clear_calls(&self) {
        lock(&self.shared.calls).clear();
    }

    /// Delays every answer by `latency`.
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.shared.faults).latency = latency;
    }

    /// Answers the next requests with these statuses, one each.
    pub fn fail_next(&self, statuses: &[u16]) {
        lock(&self.shared.faults)
            .fail_next
            .extend(statuses.iter().copied());
    }

    /// Sets what `node`'s kubelet answers on `/stats/summary`.
    pub fn set_summary(&self, summary: &Summary) {
        let value = serde_json::to_value(summary).expect("serialises");
        lock(&self.shared.summaries).insert(summary.node.node_name.clone(), value);
    }

    /// Starts `node`'s kubelet on its own port and writes that port into
    /// the node's `status.daemonEndpoints` (the node must exist, with
    /// `status.addresses` 127.0.0.1), as a node agent finds its kubelet.
    pub fn start_kubelet(&self, node: &str) -> SocketAddr {
        if let Some(addr) = lock(&self.kubelets).get(node) {
            return *addr;
        }
        let runtime = self.runtime.as_ref().expect("running");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds a kubelet");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        {
            let _guard = runtime.enter();
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            // A kubelet does not go away when the API server restarts.
            let (never_tx, never) = watch::channel(0);
            let shared = Arc::clone(&self.shared);
            let node = node.to_string();
            runtime.spawn(async move {
                let _keep = never_tx;
                server::serve(shared, listener, Role::Kubelet(node), never, None).await;
            });
        }
        lock(&self.kubelets).insert(node.to_string(), addr);
        self.patch::<k8s_openapi::api::core::v1::Node>(
            "",
            node,
            &json!({"status": {"daemonEndpoints": {"kubeletEndpoint": {"Port": addr.port()}}}}),
        );
        addr
    }
}

fn key_namespace(kind: usize, namespace: &str) -> String {
    if KINDS[kind].namespaced {
        namespace.to_string()
    } else {
        String::new()
    }
}

impl Drop for KubeFake {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
