//! The order a bundle of objects is applied in on a member.
//!
//! Two rules, the second bending only where the first demands it:
//! 1. nothing exists on a member before what it references (its namespace, the Secrets and
//!    ConfigMaps it mounts, its ServiceAccount, its Role, its CRD, its owner, ...);
//! 2. objects that carry secrets go before everything else. They are placed in a first phase
//!    together with exactly what they themselves depend on (usually just their namespace), and
//!    everything else follows in a second phase.
//!
//! Each phase is split into tiers: every object of a tier depends only on objects of earlier tiers,
//! so a tier is applied concurrently and waited for before the next one starts. A dependency cycle
//! is an error naming the objects on it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jsonpath_rust::JsonPath;
use serde::Serialize;
use serde_json::Value;

use crate::api::DependencyRule;

/// Identity of an object in a bundle.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectKey {
    /// API group (empty for the core group).
    pub group: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    /// Key of `object`, or `None` when it has no kind or name.
    pub fn of(object: &Value) -> Option<ObjectKey> {
        Some(ObjectKey {
            group: group_of(object["apiVersion"].as_str()?).to_owned(),
            kind: object["kind"].as_str()?.to_owned(),
            namespace: object["metadata"]["namespace"].as_str().map(str::to_owned),
            name: object["metadata"]["name"].as_str()?.to_owned(),
        })
    }

    fn namespace_object(name: &str) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            kind: "Namespace".into(),
            namespace: None,
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// `apps` of `apps/v1`, empty of `v1`.
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// One edge: the object depends on `on` because of `via` (the field or relation that names it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    pub on: ObjectKey,
    pub via: String,
}

/// One object's place in the plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub object: ObjectKey,
    /// Index into the bundle; `None` for a namespace the bundle's objects live in but does not
    /// contain itself (created on a member when missing, so that the order still holds).
    #[serde(skip)]
    pub index: Option<usize>,
    pub tier: usize,
    /// A Secret, or an object a dependency rule marks as carrying secrets.
    pub secret_bearing: bool,
    /// In the first phase only because these secret-bearing objects need it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needed_by_secrets: Vec<ObjectKey>,
    /// What it waits for (only objects in the bundle).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Dependency>,
}

impl Step {
    /// Why the object is where it is, for `distribute --plan`.
    pub fn why(&self) -> String {
        let mut parts = Vec::new();
        if self.index.is_none() {
            parts.push("namespace of the bundle's objects, created if missing".to_owned());
        }
        if self.secret_bearing {
            parts.push("carries secrets: first phase".to_owned());
        } else if !self.needed_by_secrets.is_empty() {
            let names: Vec<String> = self
                .needed_by_secrets
                .iter()
                .map(|k| k.to_string())
                .collect();
            parts.push(format!("first phase, needed by {}", names.join(", ")));
        }
        if self.depends_on.is_empty() {
            if parts.is_empty() {
                parts.push("depends on nothing in the bundle".to_owned());
            }
        } else {
            let deps: Vec<String> = self
                .depends_on
                .iter()
                .map(|d| format!("{} ({})", d.on, d.via))
                .collect();
            parts.push(format!("after {}", deps.join(", ")));
        }
        parts.join("; ")
    }
}

/// The whole order: steps sorted by tier.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    /// The bundle's objects (not the namespaces added for them) in the order of the plan.
    pub fn in_order<'a>(&self, objects: &'a [Value]) -> Vec<&'a Value> {
        self.steps
            .iter()
            .filter_map(|s| s.index)
            .filter_map(|i| objects.get(i))
            .collect()
    }

    /// Steps grouped by tier, in order.
    pub fn tiers(&self) -> Vec<Vec<&Step>> {
        let mut tiers: Vec<Vec<&Step>> = Vec::new();
        for step in &self.steps {
            if tiers.len() <= step.tier {
                tiers.resize_with(step.tier + 1, Vec::new);
            }
            tiers[step.tier].push(step);
        }
        tiers
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OrderError {
    #[error("document {index} has no apiVersion, kind or metadata.name")]
    Unnamed { index: usize },
    #[error("{0} appears twice in the bundle")]
    Duplicate(ObjectKey),
    #[error("dependency rule for {kind}: {path:?} is not a JSONPath: {message}")]
    BadRule {
        kind: String,
        path: String,
        message: String,
    },
    #[error("dependency cycle: {}", cycle_text(.0))]
    Cycle(Vec<ObjectKey>),
}

fn cycle_text(cycle: &[ObjectKey]) -> String {
    let mut names: Vec<String> = cycle.iter().map(|k| k.to_string()).collect();
    if let Some(first) = names.first().cloned() {
        names.push(first);
    }
    names.join(" → ")
}

/// Orders `objects` (namespaced objects must already carry their namespace).
pub fn plan(objects: &[Value], rules: &[DependencyRule]) -> Result<Plan, OrderError> {
    // Nodes: the bundle, then the namespaces it needs but does not contain.
    let mut keys: Vec<ObjectKey> = Vec::with_capacity(objects.len());
    let mut ids: BTreeMap<ObjectKey, usize> = BTreeMap::new();
    for (index, object) in objects.iter().enumerate() {
        let key = ObjectKey::of(object).ok_or(OrderError::Unnamed { index })?;
        if ids.insert(key.clone(), index).is_some() {
            return Err(OrderError::Duplicate(key));
        }
        keys.push(key);
    }
    let namespaces: BTreeSet<String> = keys.iter().filter_map(|k| k.namespace.clone()).collect();
    for ns in namespaces {
        let key = ObjectKey::namespace_object(&ns);
        if !ids.contains_key(&key) {
            ids.insert(key.clone(), keys.len());
            keys.push(key);
        }
    }
    // References name a kind, not a group (a Pod's volume names "a Secret"): look up by kind.
    let mut by_kind_name: BTreeMap<(&str, Option<&str>, &str), usize> = BTreeMap::new();
    for (id, key) in keys.iter().enumerate() {
        by_kind_name.insert((&key.kind, key.namespace.as_deref(), &key.name), id);
    }
    let mut crds: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (id, object) in objects.iter().enumerate() {
        if keys[id].kind == "CustomResourceDefinition"
            && let (Some(group), Some(kind)) = (
                object["spec"]["group"].as_str(),
                object["spec"]["names"]["kind"].as_str(),
            )
        {
            crds.insert((group.to_owned(), kind.to_owned()), id);
        }
    }

    let secret_bearing_kinds: BTreeSet<(&str, &str)> = rules
        .iter()
        .filter(|r| r.secret_bearing)
        .map(|r| (group_of(&r.api_version), r.kind.as_str()))
        .collect();
    let secret_bearing: Vec<bool> = keys
        .iter()
        .map(|k| {
            (k.group.is_empty() && k.kind == "Secret")
                || secret_bearing_kinds.contains(&(k.group.as_str(), k.kind.as_str()))
        })
        .collect();

    // Edges.
    let mut depends_on: Vec<Vec<(usize, String)>> = vec![Vec::new(); keys.len()];
    for (id, object) in objects.iter().enumerate() {
        let key = &keys[id];
        let mut found: Vec<(usize, String)> = Vec::new();
        if let Some(ns) = &key.namespace
            && let Some(&dep) = ids.get(&ObjectKey::namespace_object(ns))
        {
            found.push((dep, "namespace".into()));
        }
        if let Some(&crd) = crds.get(&(key.group.clone(), key.kind.clone())) {
            found.push((crd, "its CustomResourceDefinition".into()));
        }
        for reference in references(object, key, rules)? {
            let ns = if cluster_scoped(&reference.kind) {
                None
            } else {
                reference.namespace.as_deref().or(key.namespace.as_deref())
            };
            if let Some(&dep) =
                by_kind_name.get(&(reference.kind.as_str(), ns, reference.name.as_str()))
            {
                found.push((dep, reference.via));
            }
        }
        for (dep, via) in found {
            if dep != id && !depends_on[id].iter().any(|(d, _)| *d == dep) {
                depends_on[id].push((dep, via));
            }
        }
    }

    // First phase: secret-bearing objects and everything they (transitively) depend on.
    let mut first_phase_for: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); keys.len()];
    for root in (0..keys.len()).filter(|&id| secret_bearing[id]) {
        let mut stack = vec![root];
        let mut seen = BTreeSet::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            first_phase_for[id].insert(root);
            stack.extend(depends_on[id].iter().map(|(d, _)| *d));
        }
    }
    let in_first_phase: Vec<bool> = first_phase_for.iter().map(|s| !s.is_empty()).collect();

    let mut tier_of: Vec<Option<usize>> = vec![None; keys.len()];
    let mut next_tier = 0;
    for phase in [true, false] {
        loop {
            let ready: Vec<usize> = (0..keys.len())
                .filter(|&id| tier_of[id].is_none() && in_first_phase[id] == phase)
                .filter(|&id| {
                    depends_on[id]
                        .iter()
                        .all(|(d, _)| tier_of[*d].is_some_and(|t| t < next_tier))
                })
                .collect();
            if ready.is_empty() {
                break;
            }
            for id in ready {
                tier_of[id] = Some(next_tier);
            }
            next_tier += 1;
        }
        let stuck: Vec<usize> = (0..keys.len())
            .filter(|&id| tier_of[id].is_none() && in_first_phase[id] == phase)
            .collect();
        if !stuck.is_empty() {
            return Err(OrderError::Cycle(
                find_cycle(&stuck, &depends_on, &tier_of)
                    .into_iter()
                    .map(|id| keys[id].clone())
                    .collect(),
            ));
        }
    }

    let mut steps: Vec<Step> = (0..keys.len())
        .map(|id| Step {
            object: keys[id].clone(),
            index: (id < objects.len()).then_some(id),
            tier: tier_of[id].unwrap_or_default(),
            secret_bearing: secret_bearing[id],
            needed_by_secrets: if secret_bearing[id] {
                Vec::new()
            } else {
                first_phase_for[id]
                    .iter()
                    .map(|&r| keys[r].clone())
                    .collect()
            },
            depends_on: depends_on[id]
                .iter()
                .map(|(d, via)| Dependency {
                    on: keys[*d].clone(),
                    via: via.clone(),
                })
                .collect(),
        })
        .collect();
    steps.sort_by(|a, b| a.tier.cmp(&b.tier).then_with(|| a.object.cmp(&b.object)));
    Ok(Plan { steps })
}

/// A cycle among `stuck` (objects no tier could take): follow unplaced dependencies until an
/// object repeats.
fn find_cycle(
    stuck: &[usize],
    depends_on: &[Vec<(usize, String)>],
    tier_of: &[Option<usize>],
) -> Vec<usize> {
    let mut path: Vec<usize> = Vec::new();
    let mut current = stuck[0];
    loop {
        if let Some(pos) = path.iter().position(|&id| id == current) {
            return path.split_off(pos);
        }
        path.push(current);
        // Every stuck object has at least one unplaced dependency, or it would have been placed.
        match depends_on[current]
            .iter()
            .find(|(d, _)| tier_of[*d].is_none())
        {
            Some((d, _)) => current = *d,
            None => return path,
        }
    }
}

fn cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "CustomResourceDefinition"
            | "StorageClass"
            | "IngressClass"
            | "PriorityClass"
            | "PersistentVolume"
    )
}

/// A name an object refers to.
struct Reference {
    kind: String,
    /// When the reference names a namespace of its own (a RoleBinding's subject).
    namespace: Option<String>,
    name: String,
    via: String,
}

#[derive(Default)]
struct Refs(Vec<Reference>);

impl Refs {
    fn add(&mut self, kind: &str, name: Option<&str>, via: &str) {
        self.add_in(kind, None, name, via)
    }

    fn add_in(&mut self, kind: &str, namespace: Option<&str>, name: Option<&str>, via: &str) {
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            self.0.push(Reference {
                kind: kind.to_owned(),
                namespace: namespace.map(str::to_owned),
                name: name.to_owned(),
                via: via.to_owned(),
            });
        }
    }
}

fn names(value: &Value) -> impl Iterator<Item = &str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
}

fn references(
    object: &Value,
    key: &ObjectKey,
    rules: &[DependencyRule],
) -> Result<Vec<Reference>, OrderError> {
    let mut refs = Refs::default();
    for owner in object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(kind) = owner["kind"].as_str() {
            refs.add(kind, owner["name"].as_str(), "ownerReferences");
        }
    }
    if let Some(spec) = pod_spec(object, &key.kind) {
        for volume in spec["volumes"].as_array().into_iter().flatten() {
            refs.add("Secret", volume["secret"]["secretName"].as_str(), "volume");
            refs.add("ConfigMap", volume["configMap"]["name"].as_str(), "volume");
            refs.add(
                "PersistentVolumeClaim",
                volume["persistentVolumeClaim"]["claimName"].as_str(),
                "volume",
            );
            for source in volume["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
            {
                refs.add(
                    "Secret",
                    source["secret"]["name"].as_str(),
                    "projected volume",
                );
                refs.add(
                    "ConfigMap",
                    source["configMap"]["name"].as_str(),
                    "projected volume",
                );
            }
        }
        for list in ["containers", "initContainers", "ephemeralContainers"] {
            for container in spec[list].as_array().into_iter().flatten() {
                for from in container["envFrom"].as_array().into_iter().flatten() {
                    refs.add(
                        "ConfigMap",
                        from["configMapRef"]["name"].as_str(),
                        "envFrom",
                    );
                    refs.add("Secret", from["secretRef"]["name"].as_str(), "envFrom");
                }
                for env in container["env"].as_array().into_iter().flatten() {
                    let from = &env["valueFrom"];
                    refs.add(
                        "ConfigMap",
                        from["configMapKeyRef"]["name"].as_str(),
                        "valueFrom",
                    );
                    refs.add("Secret", from["secretKeyRef"]["name"].as_str(), "valueFrom");
                }
            }
        }
        for secret in spec["imagePullSecrets"].as_array().into_iter().flatten() {
            refs.add("Secret", secret["name"].as_str(), "imagePullSecrets");
        }
        refs.add(
            "ServiceAccount",
            spec["serviceAccountName"]
                .as_str()
                .or(spec["serviceAccount"].as_str()),
            "serviceAccountName",
        );
        refs.add(
            "PriorityClass",
            spec["priorityClassName"].as_str(),
            "priorityClassName",
        );
    }
    match (key.group.as_str(), key.kind.as_str()) {
        ("", "ServiceAccount") => {
            for secret in object["secrets"].as_array().into_iter().flatten() {
                refs.add("Secret", secret["name"].as_str(), "secrets");
            }
            for secret in object["imagePullSecrets"].as_array().into_iter().flatten() {
                refs.add("Secret", secret["name"].as_str(), "imagePullSecrets");
            }
        }
        ("", "PersistentVolumeClaim") => refs.add(
            "StorageClass",
            object["spec"]["storageClassName"].as_str(),
            "storageClassName",
        ),
        ("networking.k8s.io", "Ingress") => {
            let spec = &object["spec"];
            for tls in spec["tls"].as_array().into_iter().flatten() {
                refs.add("Secret", tls["secretName"].as_str(), "tls");
            }
            refs.add(
                "IngressClass",
                spec["ingressClassName"].as_str(),
                "ingressClassName",
            );
            refs.add(
                "Service",
                spec["defaultBackend"]["service"]["name"].as_str(),
                "backend",
            );
            for rule in spec["rules"].as_array().into_iter().flatten() {
                for path in rule["http"]["paths"].as_array().into_iter().flatten() {
                    refs.add(
                        "Service",
                        path["backend"]["service"]["name"].as_str(),
                        "backend",
                    );
                }
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            match object["roleRef"]["kind"].as_str() {
                Some("Role") => refs.add("Role", object["roleRef"]["name"].as_str(), "roleRef"),
                Some("ClusterRole") => {
                    refs.add("ClusterRole", object["roleRef"]["name"].as_str(), "roleRef")
                }
                _ => {}
            }
            for subject in object["subjects"].as_array().into_iter().flatten() {
                if subject["kind"] == "ServiceAccount" {
                    refs.add_in(
                        "ServiceAccount",
                        subject["namespace"].as_str(),
                        subject["name"].as_str(),
                        "subjects",
                    );
                }
            }
        }
        _ => {}
    }
    for rule in rules {
        if rule.kind != key.kind || group_of(&rule.api_version) != key.group {
            continue;
        }
        let path = if rule.path.starts_with('$') {
            rule.path.clone()
        } else {
            format!("${}", rule.path)
        };
        let found = object.query(&path).map_err(|e| OrderError::BadRule {
            kind: rule.kind.clone(),
            path: rule.path.clone(),
            message: e.to_string(),
        })?;
        for value in found {
            let names: Vec<&str> = match value {
                Value::String(name) => vec![name.as_str()],
                other => names(other).collect(),
            };
            for name in names {
                refs.add(
                    &rule.references_kind,
                    Some(name),
                    &format!("rule {}", rule.path),
                );
            }
        }
    }
    Ok(refs.0)
}

/// The pod template's spec of a workload (or a Pod's own spec).
fn pod_spec<'v>(object: &'v Value, kind: &str) -> Option<&'v Value> {
    let spec = match kind {
        "Pod" => &object["spec"],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => &object["spec"]["template"]["spec"],
        "CronJob" => &object["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => return None,
    };
    spec.is_object().then_some(spec)
}
