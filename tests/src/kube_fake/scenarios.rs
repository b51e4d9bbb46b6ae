//! Scenarios: the fake has no controllers, so these functions play them,
//! mutating objects in the order and with the fields Kubernetes'
//! Deployment, ReplicaSet, HPA, scheduler, kubelet, node lifecycle,
//! taint-eviction, pod GC and namespace controllers would, Events
//! included. Each scenario is a function; its doc says what it writes.
//!
//! Never sleeps: every write happens at once, in order, and watchers see
//! them as the separate events a real cluster would produce.

use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use serde_json::{Value, json};

use super::store::{KINDS, NAMESPACES};
use super::{KubeFake, now_rfc3339};

/// Characters Kubernetes uses in generated names and template hashes.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn encode(mut n: u64, len: usize) -> String {
    (0..len)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize];
            n /= ALPHABET.len() as u64;
            c as char
        })
        .collect()
}

/// FNV-1a, as the Deployment controller hashes a pod template.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A generated name suffix, unique in this process.
fn suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    encode(fnv(&NEXT.fetch_add(1, Ordering::Relaxed).to_string()), 5)
}

fn from<K: serde::de::DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("scenario objects are valid")
}

/// A Ready node as a kubelet registers it: addresses on loopback,
/// capacity 4 CPU, 16 GiB, 110 pods.
pub fn node(name: &str) -> Node {
    let now = now_rfc3339();
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    from(json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
            "capacity": {"cpu": "4", "memory": "16393236Ki", "pods": "110", "ephemeral-storage": "102683576Ki"},
            "allocatable": {"cpu": "4", "memory": "16290836Ki", "pods": "110", "ephemeral-storage": "94633183485"},
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"kubeletVersion": "v1.37.0", "containerRuntimeVersion": "containerd://2.1.4",
                         "kernelVersion": "6.12.0", "osImage": "Debian GNU/Linux 13 (trixie)",
                         "operatingSystem": "linux", "architecture": "amd64",
                         "machineID": "", "systemUUID": "", "bootID": "", "kubeProxyVersion": "",
                         "osImageVersion": ""},
        },
    }))
}

/// A namespace.
pub fn namespace(fake: &KubeFake, name: &str) -> Namespace {
    match fake.get::<Namespace>("", name) {
        Some(ns) => ns,
        None => fake.create(&from::<Namespace>(json!({"metadata": {"name": name,
            "labels": {"kubernetes.io/metadata.name": name}}}))),
    }
}

/// Who an Event is about.
#[derive(Debug, Clone)]
pub struct Regarding {
    /// `kind`.
    pub kind: String,
    /// `apiVersion`.
    pub api_version: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// `fieldPath` (a container: `spec.containers{app}`).
    pub field_path: Option<String>,
}

impl Regarding {
    fn of<
        K: k8s_openapi::Resource
            + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    >(
        object: &K,
    ) -> Regarding {
        let meta = object.metadata();
        Regarding {
            kind: K::KIND.to_string(),
            api_version: K::API_VERSION.to_string(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            field_path: None,
        }
    }
}

/// Records a core/v1 Event as `component` would (`type` Normal or
/// Warning). Node events go to the `default` namespace, as kubelets and
/// the node controller put them.
pub fn event(
    fake: &KubeFake,
    regarding: &Regarding,
    kind: &str,
    reason: &str,
    message: &str,
    component: &str,
) -> Event {
    let now = now_rfc3339();
    let namespace = if regarding.namespace.is_empty() {
        "default".to_string()
    } else {
        regarding.namespace.clone()
    };
    if namespace == "default" {
        self::namespace(fake, "default");
    }
    let mut involved = json!({"kind": regarding.kind, "apiVersion": regarding.api_version,
        "name": regarding.name, "uid": regarding.uid});
    if !regarding.namespace.is_empty() {
        involved["namespace"] = regarding.namespace.clone().into();
    }
    if let Some(path) = &regarding.field_path {
        involved["fieldPath"] = path.clone().into();
    }
    fake.create(&from::<Event>(json!({
        "metadata": {"name": format!("{}.{}", regarding.name, encode(fnv(&suffix()), 16)), "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": "",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })))
}

/// The hash the Deployment controller puts in `pod-template-hash`.
fn template_hash(template: &Value) -> String {
    encode(fnv(&template.to_string()), 10)
}

fn owner(kind: &str, api_version: &str, name: &str, uid: &str) -> Value {
    json!([{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
            "controller": true, "blockOwnerDeletion": true}])
}

/// A Deployment of `replicas` pods running `image`, and what the
/// controllers make of it: its ReplicaSet, the pods (created Pending,
/// scheduled, then Running and Ready), the Events and the statuses.
pub fn deployment(fake: &KubeFake, ns: &str, name: &str, replicas: i32, image: &str) -> Deployment {
    namespace(fake, ns);
    let deployment = fake.create(&from::<Deployment>(json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name},
                     "annotations": {"deployment.kubernetes.io/revision": "1"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
            "template": pod_template(name, image),
        },
    })));
    let rs = replica_set_for(fake, &deployment, 1);
    scale_step(fake, &deployment, &rs, replicas);
    deployment_status(fake, ns, name)
}

fn pod_template(app: &str, image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "containers": [{"name": "app", "image": image,
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
                "ports": [{"containerPort": 8080, "protocol": "TCP"}]}],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "schedulerName": "default-scheduler",
        },
    })
}

/// The Deployment's ReplicaSet for its current template (created at 0
/// replicas if missing).
fn replica_set_for(fake: &KubeFake, deployment: &Deployment, revision: u32) -> ReplicaSet {
    let ns = deployment.metadata.namespace.clone().unwrap_or_default();
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let template = serde_json::to_value(&deployment.spec.template).expect("template");
    let hash = template_hash(&template);
    let rs_name = format!("{name}-{hash}");
    if let Some(rs) = fake.get::<ReplicaSet>(&ns, &rs_name) {
        return rs;
    }
    let mut template = template;
    template["metadata"]["labels"]["pod-template-hash"] = hash.clone().into();
    let replicas = deployment.spec.replicas.unwrap_or(1);
    fake.create(&from::<ReplicaSet>(json!({
        "metadata": {
            "name": rs_name, "namespace": ns,
            "labels": {"app": name, "pod-template-hash": hash},
            "annotations": {"deployment.kubernetes.io/revision": revision.to_string(),
                            "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                            "deployment.kubernetes.io/max-replicas": (replicas + (replicas + 3) / 4).to_string()},
            "ownerReferences": owner("Deployment", "apps/v1", &name, deployment.metadata.uid.as_deref().unwrap_or_default()),
        },
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name, "pod-template-hash": hash}}, "template": template},
        "status": {"replicas": 0, "observedGeneration": 1},
    })))
}

fn is_schedulable(node: &Node) -> bool {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| {
            ts.iter()
                .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        });
    ready && !tainted
}

/// The schedulable node with the fewest pods, as the scheduler spreads.
fn pick_node(fake: &KubeFake) -> Option<String> {
    let pods = fake.list::<Pod>();
    fake.list::<Node>()
        .into_iter()
        .filter(is_schedulable)
        .filter_map(|n| n.metadata.name)
        .min_by_key(|n| {
            pods.iter()
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()) == Some(n))
                .count()
        })
}

fn owned_by(pod: &Pod, uid: &str) -> bool {
    pod.metadata.owner_references.as_ref().is_some_and(|os| {
        os.iter()
            .any(|o| o.uid == uid && o.controller == Some(true))
    })
}

fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Pods of a ReplicaSet, oldest first.
pub fn pods_of(fake: &KubeFake, ns: &str, rs_name: &str) -> Vec<Pod> {
    let Some(rs) = fake.get::<ReplicaSet>(ns, rs_name) else {
        return Vec::new();
    };
    let uid = rs.metadata.uid.unwrap_or_default();
    fake.list_in::<Pod>(ns)
        .into_iter()
        .filter(|p| owned_by(p, &uid))
        .collect()
}

/// The ReplicaSets a Deployment owns.
pub fn replica_sets_of(fake: &KubeFake, ns: &str, deployment: &str) -> Vec<ReplicaSet> {
    let Some(d) = fake.get::<Deployment>(ns, deployment) else {
        return Vec::new();
    };
    let uid = d.metadata.uid.unwrap_or_default();
    fake.list_in::<ReplicaSet>(ns)
        .into_iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .as_ref()
                .is_some_and(|os| os.iter().any(|o| o.uid == uid))
        })
        .collect()
}

/// Creates one pod of a ReplicaSet as the three writers of a real
/// cluster do: the ReplicaSet controller (Pending), the scheduler (bound
/// to a node) and the kubelet (Running, Ready).
fn start_pod(fake: &KubeFake, rs: &ReplicaSet) -> Pod {
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    let rs_name = rs.metadata.name.clone().unwrap_or_default();
    let template = serde_json::to_value(rs.spec.template.as_ref()).expect("template");
    let name = format!("{rs_name}-{}", suffix());
    let mut spec = template["spec"].clone();
    spec["tolerations"] = json!([
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    ]);
    let pod = fake.create(&from::<Pod>(json!({
        "metadata": {"name": name, "namespace": ns, "labels": template["metadata"]["labels"],
                     "ownerReferences": owner("ReplicaSet", "apps/v1", &rs_name, rs.metadata.uid.as_deref().unwrap_or_default())},
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": "Burstable"},
    })));
    event(
        fake,
        &Regarding::of(rs),
        "Normal",
        "SuccessfulCreate",
        &format!("Created pod: {name}"),
        "replicaset-controller",
    );
    let Some(node) = pick_node(fake) else {
        return fake.patch::<Pod>(&ns, &name, &json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/0 nodes are available", "lastTransitionTime": now_rfc3339()}]}}));
    };
    let now = now_rfc3339();
    fake.patch::<Pod>(&ns, &name, &json!({"spec": {"nodeName": node},
        "status": {"conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now}]}}));
    event(
        fake,
        &Regarding::of(&pod),
        "Normal",
        "Scheduled",
        &format!("Successfully assigned {ns}/{name} to {node}"),
        "default-scheduler",
    );
    let image = template["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let statuses: Vec<Value> = template["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": format!("{}@sha256:{:064x}", c["image"].as_str().unwrap_or_default(), fnv(&c["image"].to_string())),
            "containerID": format!("containerd://{:064x}", fnv(&format!("{name}{}", c["name"]))),
            "ready": true, "started": true, "restartCount": 0, "state": {"running": {"startedAt": now}}, "lastState": {}}))
        .collect();
    let ip = format!("10.244.{}.{}", fnv(&node) % 250, fnv(&name) % 250 + 2);
    let pod = fake.patch::<Pod>(&ns, &name, &json!({"status": {
        "phase": "Running", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now,
        "conditions": [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        ],
        "containerStatuses": statuses}}));
    let mut regarding = Regarding::of(&pod);
    regarding.field_path = Some("spec.containers{app}".into());
    event(
        fake,
        &regarding,
        "Normal",
        "Pulled",
        &format!("Container image \"{image}\" already present on machine"),
        "kubelet",
    );
    event(
        fake,
        &regarding,
        "Normal",
        "Started",
        "Started container app",
        "kubelet",
    );
    pod
}

/// A Running, Ready pod of ReplicaSet `rs_name` on `node` with every
/// field a real one carries (about 3 KB of JSON), written in one create:
/// for loading thousands of pods quickly (benchmarks).
pub fn bulk_pod(ns: &str, rs_name: &str, name: &str, node: &str) -> Pod {
    let now = now_rfc3339();
    let app = rs_name.rsplit_once('-').map_or(rs_name, |(app, _)| app);
    let image = format!("registry.example/{app}:1.4.2");
    let mut template = pod_template(app, &image);
    template["spec"]["nodeName"] = node.into();
    template["spec"]["serviceAccountName"] = "default".into();
    template["spec"]["tolerations"] = json!([
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]);
    let ip = format!("10.244.{}.{}", fnv(node) % 250, fnv(name) % 250 + 2);
    from(json!({
        "metadata": {"name": name, "namespace": ns,
            "labels": {"app": app, "pod-template-hash": rs_name.rsplit('-').next().unwrap_or_default()},
            "ownerReferences": owner("ReplicaSet", "apps/v1", rs_name, &format!("{:032x}", fnv(rs_name)))},
        "spec": template["spec"],
        "status": {"phase": "Running", "qosClass": "Burstable", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now,
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now}],
            "containerStatuses": [{"name": "app", "image": image, "imageID": format!("{image}@sha256:{:064x}", fnv(&image)),
                "containerID": format!("containerd://{:064x}", fnv(name)), "ready": true, "started": true,
                "restartCount": 0, "state": {"running": {"startedAt": now}}, "lastState": {}}]},
    }))
}

/// Deletes a pod gracefully: Terminating first, then gone.
fn stop_pod(fake: &KubeFake, pod: &Pod) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    if pod.metadata.deletion_timestamp.is_none() {
        fake.mark_deleting::<Pod>(&ns, &name);
    }
    fake.delete::<Pod>(&ns, &name);
}

/// Sets a ReplicaSet's replicas and plays its controller: pods created
/// or deleted (newest first) until that many are active, then its status.
pub fn scale_replica_set(
    fake: &KubeFake,
    ns: &str,
    rs_name: &str,
    replicas: i32,
    by: &str,
) -> ReplicaSet {
    let rs = fake.patch::<ReplicaSet>(ns, rs_name, &json!({"spec": {"replicas": replicas},
        "metadata": {"annotations": {"deployment.kubernetes.io/desired-replicas": replicas.to_string()}}}));
    let _ = by;
    reconcile_replica_set(fake, &rs)
}

fn reconcile_replica_set(fake: &KubeFake, rs: &ReplicaSet) -> ReplicaSet {
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    let rs_name = rs.metadata.name.clone().unwrap_or_default();
    let want = usize::try_from(rs.spec.replicas.unwrap_or(0)).unwrap_or(0);
    let mut active: Vec<Pod> = pods_of(fake, &ns, &rs_name)
        .into_iter()
        .filter(is_active)
        .collect();
    while active.len() < want {
        active.push(start_pod(fake, rs));
    }
    active.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .cmp(&b.metadata.creation_timestamp)
            .then(
                a.metadata
                    .resource_version
                    .cmp(&b.metadata.resource_version),
            )
    });
    while active.len() > want {
        let Some(victim) = active.pop() else { break };
        stop_pod(fake, &victim);
        event(
            fake,
            &Regarding::of(rs),
            "Normal",
            "SuccessfulDelete",
            &format!(
                "Deleted pod: {}",
                victim.metadata.name.as_deref().unwrap_or_default()
            ),
            "replicaset-controller",
        );
    }
    let pods = pods_of(fake, &ns, &rs_name);
    let ready = pods.iter().filter(|p| is_active(p) && is_ready(p)).count();
    let generation = fake
        .get::<ReplicaSet>(&ns, &rs_name)
        .and_then(|r| r.metadata.generation)
        .unwrap_or(1);
    fake.patch::<ReplicaSet>(&ns, &rs_name, &json!({"status": {
        "replicas": pods.iter().filter(|p| is_active(p)).count(),
        "fullyLabeledReplicas": pods.iter().filter(|p| is_active(p)).count(),
        "readyReplicas": ready, "availableReplicas": ready, "terminatingReplicas": pods.iter().filter(|p| !is_active(p)).count(),
        "observedGeneration": generation}}))
}

/// Recomputes a Deployment's status from its ReplicaSets.
pub fn deployment_status(fake: &KubeFake, ns: &str, name: &str) -> Deployment {
    let Some(d) = fake.get::<Deployment>(ns, name) else {
        panic!("no deployment {ns}/{name}")
    };
    let template = serde_json::to_value(&d.spec.template).expect("template");
    let current_hash = template_hash(&template);
    let sets = replica_sets_of(fake, ns, name);
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| sets.iter().map(f).sum::<i32>();
    let replicas = sum(&|rs| rs.status.as_ref().map_or(0, |s| s.replicas));
    let ready = sum(&|rs| {
        rs.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    });
    let available = sum(&|rs| {
        rs.status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0)
    });
    let updated: i32 = sets
        .iter()
        .filter(|rs| {
            rs.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.ends_with(&current_hash))
        })
        .map(|rs| rs.status.as_ref().map_or(0, |s| s.replicas))
        .sum();
    let desired = d.spec.replicas.unwrap_or(1);
    let now = now_rfc3339();
    let new_rs = format!("{name}-{current_hash}");
    let complete = updated == desired && replicas == desired && available == desired;
    fake.patch::<Deployment>(ns, name, &json!({"status": {
        "observedGeneration": d.metadata.generation.unwrap_or(1),
        "replicas": replicas, "updatedReplicas": updated, "readyReplicas": ready, "availableReplicas": available,
        "unavailableReplicas": (desired - available).max(0),
        "conditions": [
            {"type": "Available", "status": if available >= desired - desired / 4 { "True" } else { "False" },
             "reason": if available >= desired - desired / 4 { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
             "message": "Deployment has minimum availability.", "lastUpdateTime": now, "lastTransitionTime": now},
            {"type": "Progressing", "status": "True",
             "reason": if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
             "message": if complete { format!("ReplicaSet \"{new_rs}\" has successfully progressed.") } else { format!("ReplicaSet \"{new_rs}\" is progressing.") },
             "lastUpdateTime": now, "lastTransitionTime": now},
        ]}}))
}

/// The Deployment controller scaling `rs` from its current size to `to`,
/// with its `ScalingReplicaSet` Event.
fn scale_step(fake: &KubeFake, deployment: &Deployment, rs: &ReplicaSet, to: i32) -> ReplicaSet {
    let ns = rs.metadata.namespace.clone().unwrap_or_default();
    let rs_name = rs.metadata.name.clone().unwrap_or_default();
    let from_size = rs.spec.replicas.unwrap_or(0);
    if from_size == to {
        return rs.clone();
    }
    let word = if to > from_size { "up" } else { "down" };
    event(
        fake,
        &Regarding::of(deployment),
        "Normal",
        "ScalingReplicaSet",
        &format!("Scaled {word} replica set {rs_name} from {from_size} to {to}"),
        "deployment-controller",
    );
    scale_replica_set(fake, &ns, &rs_name, to, "deployment-controller")
}

/// An HPA (autoscaling/v2, CPU at 60 %, 2 to 10 replicas) over a
/// Deployment, deciding each size of `sizes` in turn: its status and
/// `SuccessfulRescale` Event, the Deployment's `spec.replicas` (its
/// generation moves), the ReplicaSet scaled and its pods following, then
/// both statuses. A Deployment made by [`deployment`] with 3 replicas and
/// `sizes` `[10, 2]` is the 3 → 10 → 2 scenario.
pub fn scale_by_hpa(
    fake: &KubeFake,
    ns: &str,
    name: &str,
    sizes: &[i32],
) -> HorizontalPodAutoscaler {
    let hpa = match fake.get::<HorizontalPodAutoscaler>(ns, name) {
        Some(hpa) => hpa,
        None => fake.create(&from::<HorizontalPodAutoscaler>(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "minReplicas": 2, "maxReplicas": 10,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}]},
        }))),
    };
    let mut hpa = hpa;
    for &size in sizes {
        let d = fake
            .get::<Deployment>(ns, name)
            .expect("the HPA's deployment");
        let current = d.spec.replicas.unwrap_or(1);
        let up = size > current;
        let utilization = if up { 95 } else { 12 };
        let now = now_rfc3339();
        let reason = if up {
            "cpu resource utilization (percentage of request) above target"
        } else {
            "All metrics below target"
        };
        hpa = fake.patch::<HorizontalPodAutoscaler>(ns, name, &json!({"status": {
            "currentReplicas": current, "desiredReplicas": size, "lastScaleTime": now,
            "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": utilization, "averageValue": format!("{}m", utilization)}}}],
            "conditions": [
                {"type": "AbleToScale", "status": "True", "reason": "SucceededRescale", "message": format!("the HPA controller was able to update the target scale to {size}"), "lastTransitionTime": now},
                {"type": "ScalingActive", "status": "True", "reason": "ValidMetricFound", "message": "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)", "lastTransitionTime": now},
                {"type": "ScalingLimited", "status": "False", "reason": "DesiredWithinRange", "message": "the desired count is within the acceptable range", "lastTransitionTime": now},
            ]}}));
        event(
            fake,
            &Regarding::of(&hpa),
            "Normal",
            "SuccessfulRescale",
            &format!("New size: {size}; reason: {reason}"),
            "horizontal-pod-autoscaler",
        );
        let d = fake.patch::<Deployment>(ns, name, &json!({"spec": {"replicas": size}}));
        let rs = replica_set_for(fake, &d, 1);
        scale_step(fake, &d, &rs, size);
        deployment_status(fake, ns, name);
        hpa = fake.patch::<HorizontalPodAutoscaler>(ns, name, &json!({"status": {"currentReplicas": size,
            "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 55, "averageValue": "55m"}}}]}}));
    }
    hpa
}

/// A rollout of `image`: the Deployment's template changes (generation
/// and revision move), a new ReplicaSet is created and scaled up by
/// `maxSurge` (25 %) while the old one is scaled down to 0 (kept, as
/// revision history), each step with its Event, then the statuses.
pub fn rollout(fake: &KubeFake, ns: &str, name: &str, image: &str) -> Deployment {
    let d = fake.get::<Deployment>(ns, name).expect("the deployment");
    let revision: u32 = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
        + 1;
    let old_sets: Vec<ReplicaSet> = replica_sets_of(fake, ns, name)
        .into_iter()
        .filter(|rs| rs.spec.replicas.unwrap_or(0) > 0)
        .collect();
    let d = fake.patch::<Deployment>(ns, name, &json!({
        "metadata": {"annotations": {"deployment.kubernetes.io/revision": revision.to_string()}},
        "spec": {"template": {"spec": {"containers": [pod_template(name, image)["spec"]["containers"][0].clone()]}}}}));
    let desired = d.spec.replicas.unwrap_or(1);
    let step = ((desired + 3) / 4).max(1);
    let mut new_rs = replica_set_for(fake, &d, revision);
    let mut old: Vec<ReplicaSet> = old_sets;
    loop {
        let new_size = new_rs.spec.replicas.unwrap_or(0);
        let old_total: i32 = old.iter().map(|rs| rs.spec.replicas.unwrap_or(0)).sum();
        if new_size >= desired && old_total == 0 {
            break;
        }
        if new_size < desired {
            new_rs = scale_step(fake, &d, &new_rs, (new_size + step).min(desired));
        }
        let mut remove = step;
        for rs in &mut old {
            let size = rs.spec.replicas.unwrap_or(0);
            if size > 0 && remove > 0 {
                let to = (size - remove).max(0);
                remove -= size - to;
                *rs = scale_step(fake, &d, rs, to);
            }
        }
        deployment_status(fake, ns, name);
    }
    deployment_status(fake, ns, name)
}

/// A container OOMKilled and restarted by the kubelet: first terminated
/// (reason OOMKilled, exit 137, the pod not Ready), then running again
/// with `lastState.terminated.reason` OOMKilled and `restartCount` one up,
/// with the kubelet's Events.
pub fn oom_kill(fake: &KubeFake, ns: &str, pod: &str, container: &str) -> Pod {
    let p = fake.get::<Pod>(ns, pod).expect("the pod");
    let status = serde_json::to_value(p.status.as_ref().expect("status")).expect("status");
    let killed_at = now_rfc3339();
    let with = |ready: bool, f: &dyn Fn(&mut Value)| -> Value {
        let mut statuses = status["containerStatuses"].clone();
        for c in statuses.as_array_mut().into_iter().flatten() {
            if c["name"] == container {
                f(c);
            }
        }
        let mut conditions = status["conditions"].clone();
        for c in conditions.as_array_mut().into_iter().flatten() {
            if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                c["status"] = if ready { "True" } else { "False" }.into();
                c["lastTransitionTime"] = killed_at.clone().into();
                if !ready {
                    c["reason"] = "ContainersNotReady".into();
                    c["message"] = format!("containers with unready status: [{container}]").into();
                } else if let Some(c) = c.as_object_mut() {
                    c.remove("reason");
                    c.remove("message");
                }
            }
        }
        json!({"status": {"containerStatuses": statuses, "conditions": conditions}})
    };
    let started_at = status["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == container)
        .map(|c| c["state"]["running"]["startedAt"].clone())
        .unwrap_or(Value::Null);
    let terminated = json!({"exitCode": 137, "reason": "OOMKilled", "startedAt": started_at, "finishedAt": killed_at,
        "containerID": status["containerStatuses"][0]["containerID"]});
    let t = terminated.clone();
    fake.patch::<Pod>(
        ns,
        pod,
        &with(false, &move |c: &mut Value| {
            c["ready"] = false.into();
            c["started"] = false.into();
            c["state"] = json!({"terminated": t});
        }),
    );
    let mut regarding = Regarding::of(&p);
    regarding.field_path = Some(format!("spec.containers{{{container}}}"));
    let image = p
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == container))
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    event(
        fake,
        &regarding,
        "Normal",
        "Pulled",
        &format!("Container image \"{image}\" already present on machine"),
        "kubelet",
    );
    event(
        fake,
        &regarding,
        "Normal",
        "Created",
        &format!("Created container: {container}"),
        "kubelet",
    );
    event(
        fake,
        &regarding,
        "Normal",
        "Started",
        &format!("Started container {container}"),
        "kubelet",
    );
    let restarted_at = now_rfc3339();
    fake.patch::<Pod>(
        ns,
        pod,
        &with(true, &move |c: &mut Value| {
            c["ready"] = true.into();
            c["started"] = true.into();
            c["restartCount"] = (c["restartCount"].as_i64().unwrap_or(0) + 1).into();
            c["lastState"] = json!({"terminated": terminated});
            c["state"] = json!({"running": {"startedAt": restarted_at}});
        }),
    )
}

/// A node stops reporting: the node lifecycle controller sets its
/// conditions Unknown, taints it unreachable (NoSchedule, NoExecute) and
/// marks its pods not Ready; the taint-eviction controller marks them for
/// deletion (DisruptionTarget, Terminating) and their ReplicaSets start
/// replacements on other nodes; the operator confirms the node is gone
/// (out-of-service taint) and pod GC deletes the old pods. Returns the
/// names of the evicted pods.
pub fn node_not_ready(fake: &KubeFake, node_name: &str) -> Vec<String> {
    let n = fake.get::<Node>("", node_name).expect("the node");
    let now = now_rfc3339();
    let mut status = serde_json::to_value(n.status.as_ref().expect("status")).expect("status");
    for c in status["conditions"].as_array_mut().into_iter().flatten() {
        c["status"] = "Unknown".into();
        c["reason"] = "NodeStatusUnknown".into();
        c["message"] = "Kubelet stopped posting node status.".into();
        c["lastTransitionTime"] = now.clone().into();
    }
    fake.patch::<Node>(
        "",
        node_name,
        &json!({"status": {"conditions": status["conditions"]}}),
    );
    let n = fake.patch::<Node>(
        "",
        node_name,
        &json!({"spec": {"taints": [
        {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": now},
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": now}]}}),
    );
    event(
        fake,
        &Regarding::of(&n),
        "Normal",
        "NodeNotReady",
        &format!("Node {node_name} status is now: NodeNotReady"),
        "node-controller",
    );
    let on_node: Vec<Pod> = fake
        .list::<Pod>()
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node_name))
        .collect();
    let mut evicted = Vec::new();
    for pod in &on_node {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut conditions =
            serde_json::to_value(pod.status.as_ref().and_then(|s| s.conditions.clone()))
                .expect("conditions");
        for c in conditions.as_array_mut().into_iter().flatten() {
            if c["type"] == "Ready" {
                c["status"] = "False".into();
                c["reason"] = "NodeNotReady".into();
                c["lastTransitionTime"] = now.clone().into();
            }
        }
        fake.patch::<Pod>(
            &ns,
            &name,
            &json!({"status": {"conditions": conditions.clone()}}),
        );
        event(
            fake,
            &Regarding::of(pod),
            "Warning",
            "NodeNotReady",
            "Node is not ready",
            "node-controller",
        );
        if let Some(list) = conditions.as_array_mut() {
            list.push(json!({"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
                "message": "Taint manager: deleting due to NoExecute taint", "lastTransitionTime": now}));
        }
        fake.patch::<Pod>(&ns, &name, &json!({"status": {"conditions": conditions}}));
        fake.mark_deleting::<Pod>(&ns, &name);
        event(
            fake,
            &Regarding::of(pod),
            "Normal",
            "TaintManagerEviction",
            &format!("Marking for deletion Pod {ns}/{name}"),
            "taint-eviction-controller",
        );
        evicted.push(format!("{ns}/{name}"));
    }
    // Replacements elsewhere, for the ReplicaSets that lost pods.
    let mut sets: Vec<(String, String)> = on_node
        .iter()
        .filter_map(|p| {
            let owner = p
                .metadata
                .owner_references
                .as_ref()?
                .iter()
                .find(|o| o.kind == "ReplicaSet")?;
            Some((
                p.metadata.namespace.clone().unwrap_or_default(),
                owner.name.clone(),
            ))
        })
        .collect();
    sets.sort();
    sets.dedup();
    for (ns, rs_name) in &sets {
        if let Some(rs) = fake.get::<ReplicaSet>(ns, rs_name) {
            reconcile_replica_set(fake, &rs);
        }
    }
    fake.patch::<Node>("", node_name, &json!({"spec": {"taints": [
        {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule", "timeAdded": now},
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": now},
        {"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute", "timeAdded": now}]}}));
    for pod in &on_node {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        fake.delete::<Pod>(&ns, &name);
    }
    for (ns, rs_name) in &sets {
        if let Some(rs) = fake.get::<ReplicaSet>(ns, rs_name) {
            reconcile_replica_set(fake, &rs);
            let owner = rs
                .metadata
                .owner_references
                .as_ref()
                .and_then(|os| os.iter().find(|o| o.kind == "Deployment"))
                .map(|o| o.name.clone());
            if let Some(deployment) = owner {
                deployment_status(fake, ns, &deployment);
            }
        }
    }
    evicted
}

/// A namespace deleted: Terminating first (deletionTimestamp, phase),
/// then the namespace controller deletes everything in it (pods
/// gracefully), then the namespace goes. Returns how many objects went
/// with it.
pub fn delete_namespace(fake: &KubeFake, ns: &str) -> usize {
    fake.mark_deleting::<Namespace>("", ns);
    let mut deleted = 0;
    let shared = &fake.shared;
    for (kind, info) in KINDS.iter().enumerate() {
        if kind == NAMESPACES || !info.namespaced || kind == super::store::EVENTS_V1 {
            continue;
        }
        let keys: Vec<(String, String)> = {
            let objects = server_lock(shared).objects(kind);
            objects.keys().filter(|k| k.0 == ns).cloned().collect()
        };
        for key in keys {
            if info.plural == "pods" {
                let now = now_rfc3339();
                let _ = shared.write(|s| s.mark_deleting(kind, &key, &now));
            }
            if shared.write(|s| s.delete(kind, &key)).is_ok() {
                deleted += 1;
            }
        }
    }
    fake.delete::<Namespace>("", ns);
    deleted
}

fn server_lock(shared: &super::server::Shared) -> std::sync::MutexGuard<'_, super::store::Store> {
    super::server::lock(&shared.store)
}
