//! Namespace snapshot and restore as pure functions: what a snapshot captures and
//! what it leaves out (with the reason, recorded in the archive's manifest), how a captured object
//! is stripped of what belongs to its cluster, the application inventory of a namespace, and the
//! conflicts a restore target has with a snapshot. The hub server and the validating webhook carry
//! objects to these functions and act on their verdicts.

pub mod archive;
pub mod data;
pub mod hooks;
pub mod location;
pub mod mover;
pub mod restore;
pub mod schedule;
pub mod volumes;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::{ApplicationSummary, RestoreConflict};

/// Kinds a snapshot never captures (by API group and kind), and why: the control plane derives
/// them from other objects, or they only mean something while the cluster runs.
pub fn left_out_kind(group: &str, kind: &str) -> Option<&'static str> {
    match (group, kind) {
        ("", "Event") | ("events.k8s.io", "Event") => {
            Some("events record what happened in the source cluster")
        }
        ("", "Endpoints") | ("discovery.k8s.io", "EndpointSlice") => {
            Some("derived from Services by the control plane")
        }
        ("coordination.k8s.io", "Lease") => Some("leader election and heartbeats are ephemeral"),
        ("apps", "ControllerRevision") => {
            Some("derived from its StatefulSet or DaemonSet by the control plane")
        }
        ("", "Binding") | ("", "PodTemplate") | ("metrics.k8s.io", _) => {
            Some("not stored state of the namespace")
        }
        ("snapshot.storage.k8s.io", _) | ("groupsnapshot.storage.k8s.io", _) => {
            Some("volume snapshots are recorded separately, as the snapshot's volumes")
        }
        _ => None,
    }
}

/// Why a snapshot leaves this object out, or `None` to capture it: objects a controller
/// re-creates (owned Pods, ReplicaSets, Jobs), tokens and CA bundles the control plane issues in
/// every namespace, the default ServiceAccount, and claims of generic ephemeral volumes.
pub fn left_out_object(object: &Value) -> Option<String> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let controller = object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["controller"] == true);
    let owner = |o: &Value| {
        format!(
            "owned by {} {}, which re-creates it",
            o["kind"].as_str().unwrap_or("?"),
            o["name"].as_str().unwrap_or("?")
        )
    };
    match kind {
        "Pod" | "ReplicaSet" | "Job" if controller.is_some() => controller.map(owner),
        "PersistentVolumeClaim" if controller.is_some_and(|o| o["kind"] == "Pod") => {
            Some("generic ephemeral volume claim: it lives and dies with its Pod".to_owned())
        }
        "Secret" if object["type"] == "kubernetes.io/service-account-token" => {
            Some("service account token: the target's control plane issues its own".to_owned())
        }
        "ConfigMap" if name == "kube-root-ca.crt" => {
            Some("the cluster's CA bundle, published in every namespace".to_owned())
        }
        "ServiceAccount" if name == "default" => {
            Some("created in every namespace by the control plane".to_owned())
        }
        _ => None,
    }
}

/// Annotations that describe the object's life in its source cluster.
const CLUSTER_ANNOTATIONS: &[&str] = &[
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
    "deployment.kubernetes.io/revision",
];

/// Strips what belongs to the source cluster: identity and bookkeeping (uid, resourceVersion,
/// generation, creation time, managed fields, owner references, finalizers, namespace), status, a Service's
/// cluster IPs and node ports, and a claim's binding to its volume. The result applies cleanly to
/// another namespace of another cluster.
pub fn strip(object: &mut Value) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in crate::distribution::transform::CLUSTER_METADATA {
            meta.remove(*field);
        }
        meta.remove("namespace");
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            for a in CLUSTER_ANNOTATIONS {
                annotations.remove(*a);
            }
            if annotations.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    if let Some(o) = object.as_object_mut() {
        o.remove("status");
    }
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    match kind.as_str() {
        "Service" => {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
            spec.remove("healthCheckNodePort");
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    if let Some(p) = p.as_object_mut() {
                        p.remove("nodePort");
                    }
                }
            }
        }
        "PersistentVolumeClaim" => {
            spec.remove("volumeName");
        }
        _ => {}
    }
}

/// Kinds that are applications (workloads). An unowned Job counts; one a CronJob owns does not.
const WORKLOADS: &[&str] = &["Deployment", "StatefulSet", "DaemonSet", "CronJob", "Job"];
/// Kinds that count by name beside the workloads.
const NAMED: &[&str] = &["Service", "PersistentVolumeClaim", "ConfigMap"];

/// The application inventory of a namespace's objects (as captured, or as live in a target).
/// Objects a snapshot leaves out are not applications either.
pub fn inventory(objects: &[Value]) -> Vec<ApplicationSummary> {
    let mut out: Vec<ApplicationSummary> = objects
        .iter()
        .filter(|o| left_out_object(o).is_none())
        .filter_map(summary)
        .collect();
    out.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    out
}

fn summary(object: &Value) -> Option<ApplicationSummary> {
    let kind = object["kind"].as_str()?;
    let name = object["metadata"]["name"].as_str()?.to_owned();
    let mut app = ApplicationSummary {
        kind: kind.to_owned(),
        name,
        ..Default::default()
    };
    if WORKLOADS.contains(&kind) {
        let labels = &object["metadata"]["labels"];
        for key in ["app.kubernetes.io/name", "app.kubernetes.io/instance"] {
            if let Some(v) = labels[key].as_str() {
                app.identity.insert(key.to_owned(), v.to_owned());
            }
        }
        let pod = match kind {
            "CronJob" => &object["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            _ => &object["spec"]["template"]["spec"],
        };
        for list in ["initContainers", "containers"] {
            for c in pod[list].as_array().into_iter().flatten() {
                if let (Some(n), Some(i)) = (c["name"].as_str(), c["image"].as_str()) {
                    app.containers.insert(n.to_owned(), i.to_owned());
                }
            }
        }
        let mut claims: Vec<String> = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["persistentVolumeClaim"]["claimName"].as_str())
            .chain(
                object["spec"]["volumeClaimTemplates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t["metadata"]["name"].as_str()),
            )
            .map(str::to_owned)
            .collect();
        claims.sort();
        claims.dedup();
        app.claims = claims;
        return Some(app);
    }
    if !NAMED.contains(&kind) {
        return None;
    }
    let spec = &object["spec"];
    match kind {
        "Service" => {
            let mut ports: Vec<String> = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")))
                .collect();
            ports.sort();
            app.aspects.insert("ports".to_owned(), ports.join(","));
            app.aspects
                .insert("selector".to_owned(), compact(&spec["selector"]));
        }
        "PersistentVolumeClaim" => {
            app.aspects.insert(
                "storage class".to_owned(),
                spec["storageClassName"]
                    .as_str()
                    .unwrap_or("(default)")
                    .to_owned(),
            );
            app.aspects.insert(
                "size".to_owned(),
                spec["resources"]["requests"]["storage"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned(),
            );
        }
        "ConfigMap" => {
            app.aspects
                .insert("data".to_owned(), config_map_digest(object));
        }
        _ => {}
    }
    Some(app)
}

fn compact(value: &Value) -> String {
    match value {
        Value::Null => "(none)".to_owned(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

/// A short digest of a ConfigMap's `binaryData` and `data`: enough to tell two ConfigMaps apart
/// in a message. Hashed as the JSON text `{"binaryData":…,"data":…}` (absent is `null`), which is
/// what saved inventories hold: the text is streamed into the hash, not built, because the
/// admission check digests every ConfigMap of the target namespace.
fn config_map_digest(object: &Value) -> String {
    #[derive(serde::Serialize)]
    struct Contents<'a> {
        #[serde(rename = "binaryData")]
        binary_data: &'a Value,
        data: &'a Value,
    }
    let mut hash = archive::Sha256Writer::default();
    // Writing JSON values into a hash cannot fail.
    let _ = serde_json::to_writer(
        &mut hash,
        &Contents {
            binary_data: &object["binaryData"],
            data: &object["data"],
        },
    );
    format!("sha256:{}", &hash.hex()[..12])
}

/// The conflicts of restoring a snapshot whose inventory is `snapshot` into a namespace
/// (`target_namespace`) whose live inventory is `target`: each application the target holds that
/// the snapshot does not, and each of the same kind and name that differs (identity labels,
/// containers and images, claims, or a Service's, claim's or ConfigMap's aspects), named with what
/// differs. An empty target, or one holding only the same applications, has none.
pub fn conflicts(
    snapshot: &[ApplicationSummary],
    target: &[ApplicationSummary],
    target_namespace: &str,
) -> Vec<RestoreConflict> {
    let by_key: BTreeMap<(&str, &str), &ApplicationSummary> = snapshot
        .iter()
        .map(|a| ((a.kind.as_str(), a.name.as_str()), a))
        .collect();
    let mut out = Vec::new();
    for live in target {
        let conflict = |reason: String| RestoreConflict {
            kind: live.kind.clone(),
            name: live.name.clone(),
            reason,
        };
        let Some(captured) = by_key.get(&(live.kind.as_str(), live.name.as_str())) else {
            out.push(conflict(format!(
                "in {target_namespace} and not in the snapshot: a different application"
            )));
            continue;
        };
        for reason in differences(captured, live, target_namespace) {
            out.push(conflict(reason));
        }
    }
    out
}

fn differences(captured: &ApplicationSummary, live: &ApplicationSummary, ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    let show = |v: Option<&String>| v.map_or_else(|| "(none)".to_owned(), Clone::clone);
    let keys = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
        let mut k: Vec<String> = a.keys().chain(b.keys()).cloned().collect();
        k.sort();
        k.dedup();
        k
    };
    for key in keys(&captured.identity, &live.identity) {
        let (s, t) = (captured.identity.get(&key), live.identity.get(&key));
        if s != t {
            out.push(format!(
                "label {key} {} in {ns}, {} in the snapshot",
                show(t),
                show(s)
            ));
        }
    }
    for name in keys(&captured.containers, &live.containers) {
        match (captured.containers.get(&name), live.containers.get(&name)) {
            (Some(s), Some(t)) if s != t => {
                out.push(format!(
                    "container {name}: image {t} in {ns}, {s} in the snapshot"
                ));
            }
            (Some(_), None) => {
                out.push(format!("container {name} is in the snapshot, not in {ns}"))
            }
            (None, Some(_)) => {
                out.push(format!("container {name} is in {ns}, not in the snapshot"))
            }
            _ => {}
        }
    }
    if captured.claims != live.claims {
        out.push(format!(
            "volume claims [{}] in {ns}, [{}] in the snapshot",
            live.claims.join(", "),
            captured.claims.join(", ")
        ));
    }
    for aspect in keys(&captured.aspects, &live.aspects) {
        let (s, t) = (captured.aspects.get(&aspect), live.aspects.get(&aspect));
        if s != t {
            out.push(format!(
                "{aspect} {} in {ns}, {} in the snapshot",
                show(t),
                show(s)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
