//! An in-process stand-in for one cluster's API server, for unit tests of a single reconciler
//! (kube's `tower-test` pattern: a `kube::Client` over a tower service instead of a connection).
//!
//! It keeps objects in memory and answers the REST calls the hub server's loops make: discovery
//! (plain and aggregated), get, list (label selectors, metadata-only lists), create, replace,
//! server-side apply, merge and JSON patches, delete, and subresources as writes to the object.
//! It records every request, so a test can assert the order the API server saw writes in, and it
//! can play a member that does not answer. What it does not do, it refuses with a 400 naming what
//! (watches, field selectors other than `metadata.name`), so a test never passes on a silent gap.
//!
//! Plays, and only plays: an API server. It runs no controllers; a test that needs one (a CRD
//! Established, a claim Bound) installs a [`React`] that does that controller's one write and
//! says so in the test's name or comment. End-to-end tests use real API servers instead.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

/// One kind the fake serves.
#[derive(Clone, Debug)]
pub struct Served {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

impl Served {
    pub fn new(api_version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        Self {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
        }
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// What a test plays after every write of one kind (a controller's work), given the object as
/// stored: it may change it, and returns any other objects the controller writes.
pub type React = Box<dyn Fn(&mut Value) -> Vec<Value> + Send>;

/// Decides which requests the played member leaves unanswered.
type Unanswered = Box<dyn Fn(&Method, &str) -> bool + Send>;

/// Where an object lives: (group, plural, namespace, name).
type Key = (String, String, Option<String>, String);

#[derive(Default)]
struct State {
    served: Vec<Served>,
    objects: BTreeMap<Key, Value>,
    requests: Vec<String>,
    resource_version: u64,
    /// Which requests get no answer (a transport error), by method and path.
    unanswered: Option<Unanswered>,
    /// While set, requests are taken but never answered (an API server that hangs).
    stalled: bool,
    reacts: Vec<(String, React)>,
}

/// The fake API server; clone it to keep a handle while a client uses it.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    /// Serves the core kinds the hub server's loops touch; add others with [`FakeApi::serve`].
    pub fn new() -> Self {
        let fake = Self::default();
        for (api_version, kind, plural, namespaced) in [
            ("v1", "Namespace", "namespaces", false),
            ("v1", "Node", "nodes", false),
            ("v1", "ConfigMap", "configmaps", true),
            ("v1", "Secret", "secrets", true),
            ("v1", "Service", "services", true),
            ("v1", "ServiceAccount", "serviceaccounts", true),
            (
                "v1",
                "PersistentVolumeClaim",
                "persistentvolumeclaims",
                true,
            ),
            ("v1", "Pod", "pods", true),
            ("v1", "PersistentVolume", "persistentvolumes", false),
            ("storage.k8s.io/v1", "StorageClass", "storageclasses", false),
            ("apps/v1", "Deployment", "deployments", true),
            ("apps/v1", "StatefulSet", "statefulsets", true),
            ("apps/v1", "ReplicaSet", "replicasets", true),
            ("apps/v1", "DaemonSet", "daemonsets", true),
            ("batch/v1", "Job", "jobs", true),
            ("batch/v1", "CronJob", "cronjobs", true),
            (
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
            ),
        ] {
            fake.serve(Served::new(api_version, kind, plural, namespaced));
        }
        fake
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn serve(&self, kind: Served) {
        self.lock().served.push(kind);
    }

    /// After every write of `kind`, `react` may change the stored object and write others (a
    /// played controller).
    pub fn react(&self, kind: &str, react: impl Fn(&mut Value) -> Vec<Value> + Send + 'static) {
        self.lock().reacts.push((kind.to_owned(), Box::new(react)));
    }

    /// While set, every request fails as a connection that was refused would.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.lock().unanswered =
            unreachable.then(|| Box::new(|_: &Method, _: &str| true) as Unanswered);
    }

    /// While set, every request hangs: taken, never answered, never failed (a stalled API server,
    /// or a network path that drops packets). The client's own timeouts are all that ends it.
    pub fn stall(&self, stalled: bool) {
        self.lock().stalled = stalled;
    }

    /// From now on the requests `unanswered` picks fail as a connection that was reset would (a
    /// member that stops answering half-way through a pass).
    pub fn leave_unanswered(&self, unanswered: impl Fn(&Method, &str) -> bool + Send + 'static) {
        self.lock().unanswered = Some(Box::new(unanswered));
    }

    /// Stores an object as if someone had created it.
    pub fn insert(&self, object: Value) {
        self.lock().store_any(object);
    }

    /// The stored object, if any.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let state = self.lock();
        let served = state.served_kind(api_version, kind)?;
        state
            .objects
            .get(&(
                served.group,
                served.plural,
                namespace.map(str::to_owned),
                name.to_owned(),
            ))
            .cloned()
    }

    /// Every request so far, as `METHOD /path` (no query).
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// The requests that wrote (POST, PUT, PATCH, DELETE).
    pub fn writes(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| !r.starts_with("GET "))
            .collect()
    }

    /// A client of this fake (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let fake = fake.clone();
            async move { fake.answer(request).await }
        });
        kube::Client::new(service, "default")
    }

    async fn answer(&self, request: Request<Body>) -> Result<Response<Body>, std::io::Error> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_owned();
        let query: BTreeMap<String, String> = parts.uri.query().map(url_pairs).unwrap_or_default();
        let accept = parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let stalled = {
            let mut state = self.lock();
            state.requests.push(format!("{} {path}", parts.method));
            state.stalled
        };
        if stalled {
            std::future::pending::<()>().await;
        }
        let mut state = self.lock();
        if state
            .unanswered
            .as_ref()
            .is_some_and(|unanswered| unanswered(&parts.method, &path))
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused (played by the fake API server)",
            ));
        }
        let call = Call {
            method: parts.method,
            path,
            query,
            accept,
            content_type,
            body: &body,
        };
        let (code, answer) = state.handle(&call);
        Ok(Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(answer.to_string().into_bytes()))
            .expect("a response of a status and a JSON body"))
    }
}

struct Call<'a> {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    accept: String,
    content_type: String,
    body: &'a [u8],
}

/// Where a path points: a kind's collection (in a namespace or across all), or one object of it.
struct Target {
    served: Served,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

impl State {
    fn served_kind(&self, api_version: &str, kind: &str) -> Option<Served> {
        self.served
            .iter()
            .find(|s| s.api_version() == api_version && s.kind == kind)
            .cloned()
    }

    fn handle(&mut self, call: &Call<'_>) -> (StatusCode, Value) {
        if let Some(document) = self.discovery(&call.path, &call.accept) {
            return (StatusCode::OK, document);
        }
        if call.query.contains_key("watch") {
            return refuse(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the fake API server serves no watches",
            );
        }
        let Some(target) = self.target(&call.path) else {
            return refuse(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("the server could not find {}", call.path),
            );
        };
        match (&call.method, &target.name) {
            (&Method::GET, None) => self.list(&target, call),
            (&Method::GET, Some(name)) => match self.objects.get(&self.key(&target, name)) {
                Some(object) => (StatusCode::OK, as_requested(object, &call.accept)),
                None => not_found(&target.served, name),
            },
            (&Method::POST, None) => self.create(&target, call),
            (&Method::PUT, Some(name)) => self.replace(&target, name, call),
            (&Method::PATCH, Some(name)) => self.patch(&target, name, call),
            (&Method::DELETE, Some(name)) => match self.objects.remove(&self.key(&target, name)) {
                Some(object) => (StatusCode::OK, object),
                None => not_found(&target.served, name),
            },
            (method, _) => refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!("{method} {} is not served by the fake", call.path),
            ),
        }
    }

    fn key(&self, target: &Target, name: &str) -> Key {
        (
            target.served.group.clone(),
            target.served.plural.clone(),
            target.namespace.clone(),
            name.to_owned(),
        )
    }

    fn target(&self, path: &str) -> Option<Target> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest),
            ["apis", group, version, rest @ ..] => (*group, *version, rest),
            _ => return None,
        };
        let find = |plural: &str| {
            self.served
                .iter()
                .find(|s| s.group == group && s.version == version && s.plural == plural)
                .cloned()
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|s| s.namespaced) => {
                (Some((*ns).to_owned()), [&[*plural][..], tail].concat())
            }
            _ => (None, rest.to_vec()),
        };
        let served = find(rest.first()?)?;
        if served.namespaced == namespace.is_none() && rest.len() > 1 {
            return None;
        }
        Some(Target {
            served,
            namespace,
            name: rest.get(1).map(|s| (*s).to_owned()),
            subresource: rest.get(2).map(|s| (*s).to_owned()),
        })
    }

    fn list(&self, target: &Target, call: &Call<'_>) -> (StatusCode, Value) {
        if let Some(fields) = call.query.get("fieldSelector").filter(|f| !f.is_empty())
            && (!fields.starts_with("metadata.name=") || fields.contains(','))
        {
            return refuse(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("the fake API server selects fields by metadata.name only, not {fields}"),
            );
        }
        let name = call
            .query
            .get("fieldSelector")
            .and_then(|f| f.strip_prefix("metadata.name="));
        let selector = call
            .query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or("");
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((group, plural, ns, n), _)| {
                *group == target.served.group
                    && *plural == target.served.plural
                    && (target.namespace.is_none() || *ns == target.namespace)
                    && name.is_none_or(|want| want == n)
            })
            .map(|(_, o)| o)
            .filter(|o| matches_labels(o, selector))
            .map(|o| as_requested(o, &call.accept))
            .collect();
        let kind = if call.accept.contains("as=PartialObjectMetadataList") {
            "PartialObjectMetadataList".to_owned()
        } else {
            format!("{}List", target.served.kind)
        };
        (
            StatusCode::OK,
            json!({"apiVersion": target.served.api_version(), "kind": kind,
                   "metadata": {"resourceVersion": self.resource_version.to_string()}, "items": items}),
        )
    }

    fn create(&mut self, target: &Target, call: &Call<'_>) -> (StatusCode, Value) {
        let Ok(object) = serde_json::from_slice::<Value>(call.body) else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the body is not JSON",
            );
        };
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
            return refuse(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "metadata.name: Required value",
            );
        };
        if let Some(refused) = self.missing_namespace(target) {
            return refused;
        }
        let key = self.key(target, &name);
        if self.objects.contains_key(&key) {
            return refuse(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", target.served.plural),
            );
        }
        (
            StatusCode::CREATED,
            self.store(key, self.placed(target, object)),
        )
    }

    fn replace(&mut self, target: &Target, name: &str, call: &Call<'_>) -> (StatusCode, Value) {
        let Ok(object) = serde_json::from_slice::<Value>(call.body) else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the body is not JSON",
            );
        };
        let key = self.key(target, name);
        let Some(current) = self.objects.get(&key) else {
            return not_found(&target.served, name);
        };
        let sent = object["metadata"]["resourceVersion"].as_str();
        if sent.is_some_and(|v| Some(v) != current["metadata"]["resourceVersion"].as_str()) {
            return refuse(
                StatusCode::CONFLICT,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version and try again",
            );
        }
        let mut object = self.placed(target, object);
        if target.subresource.is_some() {
            // A write to a subresource (status, scale) changes only that part of the object.
            let mut whole = current.clone();
            json_patch::merge(&mut whole, &object);
            object = whole;
        }
        object["metadata"]["uid"] = current["metadata"]["uid"].clone();
        object["metadata"]["creationTimestamp"] = current["metadata"]["creationTimestamp"].clone();
        (StatusCode::OK, self.store(key, object))
    }

    fn patch(&mut self, target: &Target, name: &str, call: &Call<'_>) -> (StatusCode, Value) {
        let Ok(patch) = serde_json::from_slice::<Value>(call.body) else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the body is not JSON",
            );
        };
        let key = self.key(target, name);
        let current = self.objects.get(&key).cloned();
        let apply = call.content_type.starts_with("application/apply-patch");
        let mut object = match (current, apply) {
            (Some(current), _) => current,
            // Server-side apply creates what does not exist.
            (None, true) => {
                if let Some(refused) = self.missing_namespace(target) {
                    return refused;
                }
                json!({})
            }
            (None, false) => return not_found(&target.served, name),
        };
        let created = object.get("metadata").is_none();
        // A resourceVersion in a patch is a precondition, as on a real API server.
        let expected = patch["metadata"]["resourceVersion"].as_str();
        if !apply
            && !created
            && expected.is_some_and(|v| Some(v) != object["metadata"]["resourceVersion"].as_str())
        {
            return refuse(
                StatusCode::CONFLICT,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version and try again",
            );
        }
        if call.content_type.starts_with("application/json-patch") {
            let Ok(ops) = serde_json::from_value::<json_patch::Patch>(patch) else {
                return refuse(StatusCode::BAD_REQUEST, "BadRequest", "not a JSON patch");
            };
            if let Err(e) = json_patch::patch(&mut object, &ops) {
                return refuse(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &e.to_string());
            }
        } else {
            // Apply, merge and strategic merge patches: merged field by field, lists replaced
            // (enough for what the loops write; real server-side apply also tracks owners).
            json_patch::merge(&mut object, &patch);
        }
        let mut object = self.placed(target, object);
        object["metadata"]["name"] = json!(name);
        let code = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        (code, self.store(key, object))
    }

    /// A namespaced object whose namespace does not exist is refused, as a real API server does.
    fn missing_namespace(&self, target: &Target) -> Option<(StatusCode, Value)> {
        let ns = target.namespace.as_ref()?;
        let exists =
            self.objects
                .contains_key(&(String::new(), "namespaces".into(), None, ns.clone()));
        (!exists).then(|| {
            refuse(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("namespaces \"{ns}\" not found"),
            )
        })
    }

    /// The object as the target places it: its kind, apiVersion and namespace.
    fn placed(&self, target: &Target, mut object: Value) -> Value {
        object["apiVersion"] = json!(target.served.api_version());
        object["kind"] = json!(target.served.kind);
        if let Some(ns) = &target.namespace {
            object["metadata"]["namespace"] = json!(ns);
        }
        object
    }

    /// Stores a write: a new resourceVersion (and uid, creation time when new), then the played
    /// controllers of its kind.
    fn store(&mut self, key: Key, mut object: Value) -> Value {
        self.resource_version += 1;
        let metadata = &mut object["metadata"];
        metadata["resourceVersion"] = json!(self.resource_version.to_string());
        if metadata["uid"].is_null() {
            metadata["uid"] = json!(format!("uid-{}", self.resource_version));
            metadata["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let mut written = Vec::new();
        for (of, react) in &self.reacts {
            if *of == kind {
                written.extend(react(&mut object));
            }
        }
        self.objects.insert(key, object.clone());
        for other in written {
            self.store_any(other);
        }
        object
    }

    /// Stores an object wherever its apiVersion and kind say it lives.
    fn store_any(&mut self, object: Value) -> Value {
        let served = self
            .served_kind(
                object["apiVersion"].as_str().unwrap_or_default(),
                object["kind"].as_str().unwrap_or_default(),
            )
            .unwrap_or_else(|| panic!("the fake does not serve {}", object["kind"]));
        let key = key_of(&served, &object);
        self.store(key, object)
    }

    fn discovery(&self, path: &str, accept: &str) -> Option<Value> {
        let aggregated = accept.contains("as=APIGroupDiscoveryList");
        match path {
            "/api" if aggregated => Some(self.aggregated(true)),
            "/apis" if aggregated => Some(self.aggregated(false)),
            "/api" => Some(
                json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
            ),
            "/apis" => {
                let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
                for s in self.served.iter().filter(|s| !s.group.is_empty()) {
                    let versions = groups.entry(&s.group).or_default();
                    if !versions.contains(&s.version.as_str()) {
                        versions.push(&s.version);
                    }
                }
                let groups: Vec<Value> = groups
                    .into_iter()
                    .map(|(name, versions)| {
                        let versions: Vec<Value> = versions
                            .iter()
                            .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                            .collect();
                        json!({"name": name, "versions": versions, "preferredVersion": versions[0]})
                    })
                    .collect();
                Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
            }
            _ => {
                let group_version = path
                    .strip_prefix("/apis/")
                    .or_else(|| path.strip_prefix("/api/"))?;
                if group_version.matches('/').count() > usize::from(path.starts_with("/apis/")) {
                    return None;
                }
                let resources: Vec<Value> = self
                    .served
                    .iter()
                    .filter(|s| s.api_version() == group_version)
                    .map(|s| {
                        json!({"name": s.plural, "singularName": s.kind.to_lowercase(),
                               "namespaced": s.namespaced, "kind": s.kind,
                               "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
                    })
                    .collect();
                (!resources.is_empty()).then(|| {
                    json!({"kind": "APIResourceList", "apiVersion": "v1",
                           "groupVersion": group_version, "resources": resources})
                })
            }
        }
    }

    /// Aggregated discovery (`apidiscovery.k8s.io/v2`) of the core group or of the others.
    fn aggregated(&self, core: bool) -> Value {
        let mut groups: BTreeMap<&str, BTreeMap<&str, Vec<Value>>> = BTreeMap::new();
        for s in self.served.iter().filter(|s| s.group.is_empty() == core) {
            groups
                .entry(&s.group)
                .or_default()
                .entry(&s.version)
                .or_default()
                .push(json!({
                    "resource": s.plural, "singularResource": s.kind.to_lowercase(),
                    "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                    "scope": if s.namespaced { "Namespaced" } else { "Cluster" },
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]
                }));
        }
        let items: Vec<Value> = groups
            .into_iter()
            .map(|(name, versions)| {
                let versions: Vec<Value> = versions
                    .into_iter()
                    .map(|(version, resources)| json!({"version": version, "resources": resources}))
                    .collect();
                json!({"metadata": {"name": name}, "versions": versions})
            })
            .collect();
        json!({"apiVersion": "apidiscovery.k8s.io/v2", "kind": "APIGroupDiscoveryList",
               "metadata": {}, "items": items})
    }
}

fn key_of(served: &Served, object: &Value) -> Key {
    (
        served.group.clone(),
        served.plural.clone(),
        object["metadata"]["namespace"]
            .as_str()
            .filter(|_| served.namespaced)
            .map(str::to_owned),
        object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// The object, or only its metadata when the client asked for `PartialObjectMetadata`.
fn as_requested(object: &Value, accept: &str) -> Value {
    if accept.contains("as=PartialObjectMetadata") {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": object["metadata"]})
    } else {
        object.clone()
    }
}

/// Equality-based selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-joined.
fn matches_labels(object: &Value, selector: &str) -> bool {
    let labels = &object["metadata"]["labels"];
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels[k.trim()].as_str() == Some(v.trim())
        } else if let Some(k) = term.strip_prefix('!') {
            labels[k.trim()].is_null()
        } else {
            !labels[term.trim()].is_null()
        }
    })
}

fn url_pairs(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

/// Percent-decoding of a query component (`+` is a space there).
fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn refuse(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

fn not_found(served: &Served, name: &str) -> (StatusCode, Value) {
    refuse(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{}.{} \"{name}\" not found", served.plural, served.group),
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};

    use super::*;

    fn namespace(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    }

    #[tokio::test]
    async fn serves_typed_clients_as_an_api_server_would() {
        let fake = FakeApi::new();
        fake.insert(namespace("shop"));
        let client = fake.client();
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "a", "labels": {"tier": "web"}}, "data": {"k": "v"}}))
        .unwrap();
        api.create(&PostParams::default(), &cm).await.unwrap();
        let again = api.create(&PostParams::default(), &cm).await.unwrap_err();
        assert!(matches!(again, kube::Error::Api(s) if s.code == 409));
        let patch = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "w"}});
        api.patch("b", &PatchParams::apply("test"), &Patch::Apply(&patch))
            .await
            .unwrap();
        let web = api
            .list(&ListParams::default().labels("tier=web"))
            .await
            .unwrap();
        assert_eq!(web.items.len(), 1);
        let names: Vec<String> = api
            .list_metadata(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|m| m.metadata.name.unwrap())
            .collect();
        assert_eq!(names, ["a", "b"]);
        // A namespace that does not exist: refused, as a real API server does.
        let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
        let err = elsewhere
            .create(&PostParams::default(), &cm)
            .await
            .unwrap_err();
        assert!(matches!(err, kube::Error::Api(s) if s.code == 404));
        assert_eq!(
            fake.writes(),
            [
                "POST /api/v1/namespaces/shop/configmaps",
                "POST /api/v1/namespaces/shop/configmaps",
                "PATCH /api/v1/namespaces/shop/configmaps/b",
                "POST /api/v1/namespaces/nowhere/configmaps",
            ]
        );
        assert!(
            Api::<Namespace>::all(client)
                .get_opt("shop")
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn discovery_plain_and_aggregated_names_the_served_kinds() {
        let fake = FakeApi::new();
        let client = fake.client();
        let mut kinds = multicluster_core::cluster::Kinds::default();
        let deployment = kinds
            .resolve(&client, "apps/v1", "Deployment")
            .await
            .unwrap();
        assert_eq!(deployment.resource.plural, "deployments");
        assert!(deployment.namespaced);
        assert!(
            kinds
                .resolve(&client, "example.com/v1", "Widget")
                .await
                .is_err()
        );
        let all = kube::Discovery::new(client).run_aggregated().await.unwrap();
        assert!(all.has_group("apps") && all.has_group(""));
    }

    #[tokio::test]
    async fn an_unreachable_fake_fails_as_a_transport_error() {
        let fake = FakeApi::new();
        fake.set_unreachable(true);
        let err = Api::<Namespace>::all(fake.client())
            .list(&ListParams::default())
            .await
            .unwrap_err();
        assert!(!matches!(err, kube::Error::Api(_)), "{err:?}");
    }
}
