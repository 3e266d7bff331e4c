//! Multi-cluster services: the I/O around `multicluster_core::services` (Lease holder only).
//!
//! Every few seconds the loop reads each member's `ServiceExport`s, Services, nodes and
//! namespaces (a *refresh*); on every change of a `MemberCluster` or `TrafficPolicy` on the hub it
//! recomputes from what it last read (a *recompute*, no member reads, so a health transition
//! reaches the data planes in one round of writes); a member whose exports or endpoints a watch saw
//! change is read again at once (`feeds.rs`). Per exported name it keeps one hub
//! `ServiceImport` (whose VIP the mutating webhook hands out), and writes to every member holding
//! the namespace the `ServiceImport`, the selector-less Service with the VIP and one EndpointSlice
//! per serving member; exports get the VIP, hostname and conditions. Writes whose content did not
//! change since the last one are skipped. A member that does not answer keeps its objects and its
//! last known exports: nothing is deleted because a member was unreachable.

pub mod dns;
mod feeds;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{
    DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::discovery::ApiResource;
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::{MemberCluster, TrafficPolicy, VipPool};
use multicluster_core::conditions;
use multicluster_core::keys::{HOSTNAME, VIP, VIP_POOL};
use multicluster_core::members::join::Capability;
use multicluster_core::services::{self as mcs, Backend, Export, Import, SERVICE_LABEL};
use tokio::sync::Notify;

use crate::cache::watched_then;
use crate::members::MemberClients;

/// How often members are read again (new exports, Services, node readiness).
const REFRESH: Duration = Duration::from_secs(3);
/// Clean-up (listing every member's objects of ours) runs on every this many refreshes.
const CLEAN_EVERY: u64 = 2;
/// Writes in flight at once, over all members.
const IN_FLIGHT: usize = 64;

fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
    ))
}

/// One member's `ServiceExport` as last read, with the Service it names.
#[derive(Clone)]
struct ExportSeen {
    namespace: String,
    name: String,
    created: String,
    pool: Option<String>,
    object: DynamicObject,
    service: Option<Service>,
    /// The EndpointSlices the member's endpointslice controller keeps for that Service.
    endpoint_slices: Vec<EndpointSlice>,
}

/// What the loop last read from one member.
#[derive(Clone, Default)]
struct MemberView {
    exports: Vec<ExportSeen>,
    nodes: Vec<Node>,
    namespaces: BTreeSet<String>,
    /// Whether it serves the Gateway API (HTTPRoutes).
    gateway_api: bool,
    /// Whether the last refresh reached it (only then are its objects written or cleaned).
    fresh: bool,
}

pub async fn run(hub: Client, clients: MemberClients, run: crate::loops::Loop) {
    let changed = Arc::new(Notify::new());
    let wake = |changed: &Arc<Notify>| {
        let changed = changed.clone();
        move || changed.notify_one()
    };
    let (members, _members_watch) = watched_then(
        Api::<MemberCluster>::all(hub.clone()),
        "MemberClusters",
        wake(&changed),
    );
    let (policies, _policies_watch) = watched_then(
        Api::<TrafficPolicy>::all(hub.clone()),
        "TrafficPolicies",
        wake(&changed),
    );
    if members.wait_until_ready().await.is_err() || policies.wait_until_ready().await.is_err() {
        return;
    }
    let mut feeds = feeds::MemberFeeds::new(changed.clone());
    let mut state = LoopState::new(run);
    let mut refresh = tokio::time::interval(REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refreshes: u64 = 0;
    // Each member's last probe verdict: a member whose verdict or ready nodes changed is read
    // again at once (a recovered member's nodes are its backends again).
    let mut probed: BTreeMap<String, (Option<bool>, Option<u32>)> = BTreeMap::new();
    loop {
        let full = tokio::select! {
            _ = refresh.tick() => true,
            () = changed.notified() => false,
        };
        let clusters: BTreeMap<String, MemberCluster> = members
            .state()
            .iter()
            .map(|m| (m.name_any(), (**m).clone()))
            .collect();
        let now_probed: BTreeMap<String, (Option<bool>, Option<u32>)> = clusters
            .iter()
            .map(|(name, m)| (name.clone(), probe_verdict(m)))
            .collect();
        // Members whose exports or endpoints a watch saw change are read again now too.
        feeds.follow(&hub, &clients, &clusters).await;
        let watched = feeds.take_changed();
        let changed_members: BTreeMap<String, MemberCluster> = clusters
            .iter()
            .filter(|(name, _)| {
                probed.get(*name) != now_probed.get(*name) || watched.contains(*name)
            })
            .map(|(name, m)| (name.clone(), m.clone()))
            .collect();
        probed = now_probed;
        let clean = full && refreshes.is_multiple_of(CLEAN_EVERY);
        if full {
            refreshes += 1;
            state.refresh(&hub, &clients, &clusters).await;
            state.forget_unjoined(&clusters);
        } else if !changed_members.is_empty() {
            state.refresh(&hub, &clients, &changed_members).await;
        }
        for (name, view) in &state.views {
            let services = view
                .exports
                .iter()
                .map(|e| (e.namespace.clone(), e.name.clone()));
            feeds.exported(name, services.collect());
        }
        let policies: Vec<Arc<TrafficPolicy>> = policies.state();
        let started = Instant::now();
        let writes = state
            .reconcile(&hub, &clients, &clusters, &policies, clean)
            .await;
        if writes > 0 {
            tracing::info!(
                writes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                refresh = full,
                "multi-cluster services updated"
            );
        }
    }
}

fn probe_verdict(member: &MemberCluster) -> (Option<bool>, Option<u32>) {
    let status = member.status.as_ref();
    let healthy = status.and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Healthy")
            .map(|c| c.status == "True")
    });
    (healthy, status.and_then(|s| s.ready_nodes))
}

struct LoopState {
    /// This loop's name and failure counter.
    run: crate::loops::Loop,
    views: BTreeMap<String, MemberView>,
    /// (member or "" for the hub, kind, namespace, name) → digest of what was last written.
    written: HashMap<(String, String, String, String), u64>,
    /// (member, kind, namespace, name) → the resourceVersion our last write left. Clean-up
    /// compares it with the live one: an object someone else changed or deleted is written again.
    versions: HashMap<(String, String, String, String), String>,
}

/// One write the loop wants: where, what, and how.
struct Write {
    member: Option<String>,
    object: serde_json::Value,
    status: bool,
}

impl Write {
    /// What this loop remembers the write under: (member or "" for the hub, kind, namespace,
    /// name), the kind suffixed `/status` for a status write.
    fn key(&self) -> (String, String, String, String) {
        let mut k = key(self.member.as_deref(), &self.object);
        if self.status {
            k.1.push_str("/status");
        }
        k
    }
}

/// What a pass reads besides the exports: the hub, its members and traffic policies, and the
/// hub's ServiceImports (which hold each service's VIP).
struct PassInputs<'a> {
    hub: &'a Client,
    clusters: &'a BTreeMap<String, MemberCluster>,
    policies: &'a [&'a TrafficPolicy],
    hub_imports: &'a [DynamicObject],
}

/// What one pass wants: writes to the hub and members, ServiceExport patches, the member objects
/// multi-cluster services need (the clean-up keeps them) and the names exported.
#[derive(Default)]
struct Pass {
    writes: Vec<Write>,
    export_patches: Vec<(String, DynamicObject, serde_json::Value)>,
    desired: BTreeSet<(String, String, String, String)>,
    exported: BTreeSet<(String, String)>,
}

impl Pass {
    fn write(&mut self, member: Option<&String>, object: serde_json::Value, status: bool) {
        self.writes.push(Write {
            member: member.cloned(),
            object,
            status,
        });
    }
}

/// One client per member touched by this pass (getting one reads its credentials on the hub).
type Connected = BTreeMap<String, anyhow::Result<Client>>;

async fn connect(
    hub: &Client,
    clients: &MemberClients,
    clusters: &BTreeMap<String, MemberCluster>,
    writes: &[Write],
    export_patches: &[(String, DynamicObject, serde_json::Value)],
) -> Connected {
    let touched: BTreeSet<&String> = writes
        .iter()
        .filter_map(|w| w.member.as_ref())
        .chain(export_patches.iter().map(|(m, _, _)| m))
        .collect();
    let mut connected = Connected::new();
    for member in touched {
        let client = match clusters.get(member) {
            Some(cluster) => {
                clients
                    .get(
                        hub,
                        cluster,
                        Capability::Services,
                        Some(Duration::from_secs(10)),
                    )
                    .await
            }
            None => Err(anyhow::anyhow!("member {member} is no longer joined")),
        };
        connected.insert(member.clone(), client);
    }
    connected
}

async fn list_hub_imports(hub: &Client) -> kube::Result<Vec<DynamicObject>> {
    let api = Api::<DynamicObject>::all_with(hub.clone(), &mcs::mcs_api_resource("ServiceImport"));
    Ok(api
        .list(&ListParams::default().labels(SERVICE_LABEL))
        .await?
        .items)
}

/// A service's VIP and hostname, from the hub's ServiceImport, which is created (and given them by
/// the webhook) the first time the name is exported.
async fn vip_for(
    inputs: &PassInputs<'_>,
    ns: &str,
    name: &str,
    seen: &[(String, &ExportSeen)],
) -> Result<(Ipv4Addr, String), String> {
    let hub_import = inputs
        .hub_imports
        .iter()
        .find(|i| i.namespace().as_deref() == Some(ns) && i.name_any() == name);
    match hub_import {
        Some(i) => vip_of(i).ok_or_else(|| {
            "the hub's ServiceImport has no VIP yet (is the hub server's mutating webhook registered?)".to_owned()
        }),
        None => {
            let pool = seen.iter().find_map(|(_, e)| e.pool.clone());
            create_hub_import(inputs.hub, ns, name, pool).await
        }
    }
}

impl LoopState {
    fn new(run: crate::loops::Loop) -> Self {
        Self {
            run,
            views: BTreeMap::new(),
            written: HashMap::new(),
            versions: HashMap::new(),
        }
    }

    /// Counts a failed write or read of this pass.
    fn failed(&self) {
        self.run.failed();
    }

    async fn refresh(
        &mut self,
        hub: &Client,
        clients: &MemberClients,
        clusters: &BTreeMap<String, MemberCluster>,
    ) {
        let reads = clusters.values().map(|member| async move {
            let view = read_member(hub, clients, member).await;
            (member.name_any(), view)
        });
        for (name, view) in futures::future::join_all(reads).await {
            match view {
                Ok(view) => {
                    self.views.insert(name, view);
                }
                Err(e) => {
                    tracing::debug!(member = %name, error = %format!("{e:#}"), "reading exports");
                    if let Some(v) = self.views.get_mut(&name) {
                        v.fresh = false;
                    }
                }
            }
        }
    }

    /// Forgets members that left the hub.
    fn forget_unjoined(&mut self, clusters: &BTreeMap<String, MemberCluster>) {
        self.views.retain(|name, _| clusters.contains_key(name));
    }

    /// Computes every multi-cluster service and writes what changed; with `clean`, also removes
    /// what no export backs any more. Returns the number of writes.
    async fn reconcile(
        &mut self,
        hub: &Client,
        clients: &MemberClients,
        clusters: &BTreeMap<String, MemberCluster>,
        policies: &[Arc<TrafficPolicy>],
        clean: bool,
    ) -> usize {
        let hub_imports = match list_hub_imports(hub).await {
            Ok(imports) => imports,
            Err(e) => {
                self.failed();
                tracing::warn!(error = %e, "listing the hub's ServiceImports (are the Multi-Cluster Services API CRDs installed on the hub?)");
                return 0;
            }
        };
        let policies: Vec<&TrafficPolicy> = policies.iter().map(|p| &**p).collect();
        let inputs = PassInputs {
            hub,
            clusters,
            policies: &policies,
            hub_imports: &hub_imports,
        };
        let pass = self.plan(&inputs).await;
        let writes = self.unwritten(pass.writes);
        let count = writes.len() + pass.export_patches.len();
        let connected = connect(hub, clients, clusters, &writes, &pass.export_patches).await;
        self.write(hub, &connected, writes).await;
        self.patch_exports(&connected, pass.export_patches).await;
        if clean {
            let unread = never_read(clusters, &self.views);
            if unread.is_empty() {
                self.clean(
                    hub,
                    clients,
                    clusters,
                    &pass.exported,
                    &hub_imports,
                    &pass.desired,
                )
                .await;
            } else {
                tracing::info!(members = ?unread, "clean-up waits until every member has been read once since the start: what they export is not known yet");
            }
        }
        count
    }

    /// What every multi-cluster service needs written this pass, from the exports last read.
    async fn plan(&self, inputs: &PassInputs<'_>) -> Pass {
        // Every export, grouped by (namespace, name).
        let mut by_name: BTreeMap<(String, String), Vec<(String, &ExportSeen)>> = BTreeMap::new();
        for (member, view) in &self.views {
            for e in &view.exports {
                by_name
                    .entry((e.namespace.clone(), e.name.clone()))
                    .or_default()
                    .push((member.clone(), e));
            }
        }
        let mut pass = Pass::default();
        for ((ns, name), seen) in &by_name {
            self.plan_service(inputs, (ns, name), seen, &mut pass).await;
        }
        pass.exported = by_name.into_keys().collect();
        pass
    }

    /// One multi-cluster service: its exports merged, its VIP (the hub's ServiceImport holds it),
    /// each export's conditions, and the ServiceImport, data-plane and Gateway objects every member
    /// with the namespace gets.
    async fn plan_service(
        &self,
        inputs: &PassInputs<'_>,
        (ns, name): (&str, &str),
        seen: &[(String, &ExportSeen)],
        pass: &mut Pass,
    ) {
        let exports = self.exports_of(ns, name, seen);
        let merged = mcs::merge(&exports);
        if merged.properties.headless {
            return self
                .plan_headless(inputs, (ns, name), seen, (&exports, &merged), pass)
                .await;
        }
        // Nothing is imported, and no VIP handed out, for a name no valid export backs.
        let vip = if exports.iter().any(|e| e.valid.is_ok()) {
            vip_for(inputs, ns, name, seen).await
        } else {
            Err("no valid export of this name".to_owned())
        };
        for ((member, seen_export), export) in seen.iter().zip(&exports) {
            let vip_address = vip.as_ref().map(|v| Some(v.0)).map_err(String::as_str);
            let wanted = mcs::export_conditions(member, export, &merged, vip_address);
            let vip_now = vip.as_ref().ok().map(|(a, h)| (*a, h.as_str()));
            if let Some(patch) = export_patch(&seen_export.object, &wanted, vip_now) {
                pass.export_patches
                    .push((member.clone(), seen_export.object.clone(), patch));
            }
        }
        let Ok((vip, hostname)) = &vip else {
            return;
        };
        let backends: BTreeMap<String, Vec<Backend>> = exports
            .iter()
            .filter(|e| merged.serving_ports.contains_key(&e.member))
            .map(|e| (e.member.clone(), e.backends.clone().unwrap_or_default()))
            .collect();
        let steering = mcs::weights_for(
            ns,
            name,
            inputs.policies,
            &merged.serving(),
            inputs.clusters,
        );
        let ranked = mcs::ranked_backends(&steering, &backends);
        let listed = mcs::listed_backends(&steering, &ranked);
        let cluster_ids = cluster_ids(inputs);
        let import = Import {
            namespace: ns,
            name,
            vip: *vip,
            hostname,
            ports: &merged.ports,
            properties: &merged.properties,
            listed: &listed,
            serving_ports: &merged.serving_ports,
            cluster_ids: &cluster_ids,
        };
        let (import_spec, import_status) = mcs::service_import(&import);
        // The hub's copy: its VIP annotations are the webhook's; ours says who serves now.
        let mut hub_spec = import_spec.clone();
        hub_spec["metadata"]["annotations"] = serde_json::json!({
            multicluster_core::keys::BACKENDS: mcs::backends_summary(&listed, &backends)
        });
        annotate_conflict(&mut hub_spec, &merged);
        pass.write(None, hub_spec, false);
        pass.write(None, import_status.clone(), true);
        let data_plane = mcs::data_plane(&import);
        let gateway = steering
            .gateway
            .as_ref()
            .map(|g| mcs::gateway_objects(&import, g, &ranked, &steering.weights))
            .unwrap_or_default();
        // Each exporting member reaches its own backends by their pods (see `mcs::listed_in`).
        let locals: BTreeMap<&str, Vec<Backend>> = seen
            .iter()
            .map(|(m, e)| (m.as_str(), mcs::local_backends(&e.endpoint_slices)))
            .collect();
        for (member, view) in &self.views {
            if !view.namespaces.contains(ns) {
                continue;
            }
            let gateway = if view.gateway_api { &gateway[..] } else { &[] };
            let own_plane;
            let plane = match locals.get(member.as_str()) {
                Some(local) if listed.contains_key(member) => {
                    own_plane = mcs::data_plane(&Import {
                        listed: &mcs::listed_in(&listed, member, local),
                        ..import.clone()
                    });
                    &own_plane
                }
                _ => &data_plane,
            };
            for object in std::iter::once(&import_spec).chain(plane).chain(gateway) {
                pass.desired.insert(key(Some(member), object));
                pass.write(Some(member), object.clone(), false);
            }
            pass.write(Some(member), import_status.clone(), true);
        }
    }

    /// A headless name (the oldest valid export's Service is headless): no VIP; every importing
    /// member gets the `Headless` ServiceImport and one EndpointSlice per serving exporter with its
    /// ready pods (`mcs::headless_objects`).
    async fn plan_headless(
        &self,
        inputs: &PassInputs<'_>,
        (ns, name): (&str, &str),
        seen: &[(String, &ExportSeen)],
        (exports, merged): (&[Export], &mcs::Merged),
        pass: &mut Pass,
    ) {
        for ((member, seen_export), export) in seen.iter().zip(exports) {
            let wanted = mcs::export_conditions(member, export, merged, Ok(None));
            if let Some(patch) = export_patch(&seen_export.object, &wanted, None) {
                pass.export_patches
                    .push((member.clone(), seen_export.object.clone(), patch));
            }
        }
        if merged.serving_ports.is_empty() {
            return;
        }
        // Every serving exporter's ready pods, also that of an export whose own Service is not
        // headless (a TypeConflict: the oldest export's type is imported).
        let endpoints: BTreeMap<String, Vec<Backend>> = seen
            .iter()
            .filter(|(member, _)| merged.serving_ports.contains_key(member))
            .map(|(member, e)| (member.clone(), mcs::local_backends(&e.endpoint_slices)))
            .collect();
        let (spec, status, slices) =
            mcs::headless_objects(ns, name, merged, &endpoints, &cluster_ids(inputs));
        if let Err(e) = ensure_hub_namespace(inputs.hub, ns, name).await {
            tracing::warn!(namespace = ns, name, "headless service: {e}");
            return;
        }
        let mut hub_spec = spec.clone();
        annotate_conflict(&mut hub_spec, merged);
        pass.write(None, hub_spec, false);
        pass.write(None, status.clone(), true);
        for (member, view) in &self.views {
            if !view.namespaces.contains(ns) {
                continue;
            }
            for object in std::iter::once(&spec).chain(&slices) {
                pass.desired.insert(key(Some(member), object));
                pass.write(Some(member), object.clone(), false);
            }
            pass.write(Some(member), status.clone(), true);
        }
    }

    /// The exports of one name as the merge reads them: ports and backends of each member's
    /// Service (an export without its Service has none, and says so).
    fn exports_of(&self, ns: &str, name: &str, seen: &[(String, &ExportSeen)]) -> Vec<Export> {
        seen.iter()
            .map(|(member, e)| {
                let nodes = &self.views[member].nodes;
                let properties = e
                    .service
                    .as_ref()
                    .map(mcs::properties_of)
                    .unwrap_or_default()
                    .with_exported(&e.object.data["spec"]);
                Export {
                    member: member.clone(),
                    created: e.created.clone(),
                    ports: e.service.as_ref().map(mcs::ports_of).unwrap_or_default(),
                    valid: mcs::validity(e.service.as_ref(), member, ns, name),
                    backends: match &e.service {
                        // Headless: reached by its pods' own addresses.
                        Some(_) if properties.headless => {
                            let pods = mcs::local_backends(&e.endpoint_slices);
                            if pods.is_empty() {
                                Err("the headless Service has no ready endpoint".to_owned())
                            } else {
                                Ok(pods)
                            }
                        }
                        Some(svc) => mcs::backends_of(svc, nodes),
                        None => Err(format!(
                            "{} {ns}/{name} exists on {member}: create it, or delete the ServiceExport",
                            mcs::MISSING_SERVICE
                        )),
                    },
                    properties,
                }
            })
            .collect()
    }

    /// The writes worth making: to the hub or a member read fresh this pass, and different from
    /// what this loop last wrote there.
    fn unwritten(&self, writes: Vec<Write>) -> Vec<Write> {
        writes
            .into_iter()
            .filter(|w| {
                w.member
                    .as_ref()
                    .is_none_or(|m| self.views.get(m).is_some_and(|v| v.fresh))
            })
            .filter(|w| self.written.get(&w.key()) != Some(&digest(&w.object)))
            .collect()
    }

    /// Makes the writes, objects before their status (a status write needs the object to
    /// exist), and remembers what each left.
    async fn write(&mut self, hub: &Client, connected: &Connected, writes: Vec<Write>) {
        let (status_writes, object_writes): (Vec<Write>, Vec<Write>) =
            writes.into_iter().partition(|w| w.status);
        let mut results: Vec<(Write, anyhow::Result<String>)> = Vec::new();
        for phase in [object_writes, status_writes] {
            let done: Vec<(Write, anyhow::Result<String>)> = stream::iter(phase)
                .map(|w| async move {
                    let result = apply(hub, connected, &w).await;
                    (w, result)
                })
                .buffer_unordered(IN_FLIGHT)
                .collect()
                .await;
            results.extend(done);
        }
        for (w, result) in results {
            let k = w.key();
            match result {
                Ok(version) => {
                    self.written.insert(k, digest(&w.object));
                    if let Some(member) = &w.member {
                        self.versions.insert(key(Some(member), &w.object), version);
                    }
                }
                Err(e) => {
                    self.written.remove(&k);
                    self.failed();
                    tracing::warn!(member = w.member.as_deref().unwrap_or("hub"), object = %format!("{} {}/{}", k.1, k.2, k.3), error = %format!("{e:#}"), "writing a multi-cluster service object");
                }
            }
        }
    }

    /// Records each export's VIP and conditions on its member, and keeps what the exports look
    /// like now, so the next pass does not patch them again before the next refresh reads them.
    async fn patch_exports(
        &mut self,
        connected: &Connected,
        export_patches: Vec<(String, DynamicObject, serde_json::Value)>,
    ) {
        let run = &self.run;
        let patched: Vec<(String, DynamicObject)> = stream::iter(export_patches)
            .map(|(member, export, patch)| async move {
                match patch_export(connected, &member, &export, &patch).await {
                    Ok(updated) => Some((member, updated)),
                    Err(e) => {
                        run.failed();
                        tracing::warn!(%member, export = %export.name_any(), error = %format!("{e:#}"), "recording a ServiceExport's VIP and conditions");
                        None
                    }
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .filter_map(std::future::ready)
            .collect()
            .await;
        for (member, updated) in patched {
            if let Some(seen) = self.views.get_mut(&member).and_then(|v| {
                v.exports.iter_mut().find(|e| {
                    Some(e.namespace.as_str()) == updated.metadata.namespace.as_deref()
                        && Some(e.name.as_str()) == updated.metadata.name.as_deref()
                })
            }) {
                seen.object = updated;
            }
        }
    }

    /// Removes what no export backs any more: hub ServiceImports, and on every member whose view
    /// is fresh the objects this hub server wrote there. Objects changed or deleted by someone
    /// else are forgotten, so the next pass writes them again.
    async fn clean(
        &mut self,
        hub: &Client,
        clients: &MemberClients,
        clusters: &BTreeMap<String, MemberCluster>,
        exported: &BTreeSet<(String, String)>,
        hub_imports: &[DynamicObject],
        desired: &BTreeSet<(String, String, String, String)>,
    ) {
        self.remove_unexported_imports(hub, exported, hub_imports)
            .await;
        let members: Vec<(String, bool)> = self
            .views
            .iter()
            .filter(|(_, v)| v.fresh)
            .map(|(m, v)| (m.clone(), v.gateway_api))
            .collect();
        for (member, gateway_api) in &members {
            let Some(cluster) = clusters.get(member) else {
                continue;
            };
            let Ok(client) = clients
                .get(
                    hub,
                    cluster,
                    Capability::Services,
                    Some(Duration::from_secs(5)),
                )
                .await
            else {
                continue;
            };
            let mut kinds = vec![
                ApiResource::erase::<Service>(&()),
                ApiResource::erase::<k8s_openapi::api::discovery::v1::EndpointSlice>(&()),
                mcs::mcs_api_resource("ServiceImport"),
            ];
            if *gateway_api {
                kinds.push(http_route_resource());
            }
            for resource in kinds {
                self.clean_kind(member, &client, &resource, desired).await;
            }
        }
    }

    async fn remove_unexported_imports(
        &mut self,
        hub: &Client,
        exported: &BTreeSet<(String, String)>,
        hub_imports: &[DynamicObject],
    ) {
        for import in hub_imports {
            let ns = import.namespace().unwrap_or_default();
            if exported.contains(&(ns.clone(), import.name_any())) {
                continue;
            }
            let api = Api::<DynamicObject>::namespaced_with(
                hub.clone(),
                &ns,
                &mcs::mcs_api_resource("ServiceImport"),
            );
            match api
                .delete(&import.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    tracing::info!(service = %format!("{ns}/{}", import.name_any()), "multi-cluster service gone: its hub ServiceImport is removed")
                }
                Err(e) => {
                    self.failed();
                    tracing::warn!(error = %e, "removing a hub ServiceImport")
                }
            }
        }
    }

    /// One kind on one member: deletes the labelled objects not desired, and forgets those
    /// changed or deleted by someone else since this hub server wrote them.
    async fn clean_kind(
        &mut self,
        member: &str,
        client: &Client,
        resource: &ApiResource,
        desired: &BTreeSet<(String, String, String, String)>,
    ) {
        // Names are all clean-up needs: metadata lists cost the API server far less.
        let all = Api::<DynamicObject>::all_with(client.clone(), resource);
        let Ok(list) = all
            .list_metadata(&ListParams::default().labels(SERVICE_LABEL))
            .await
        else {
            return;
        };
        let mut live: BTreeSet<(String, String, String, String)> = BTreeSet::new();
        for object in list.items {
            let ns = object.namespace().unwrap_or_default();
            let k = (
                member.to_owned(),
                resource.kind.clone(),
                ns.clone(),
                object.name_any(),
            );
            live.insert(k.clone());
            if desired.contains(&k) {
                // Changed by someone else since our write: write it again.
                if self
                    .versions
                    .get(&k)
                    .is_some_and(|v| Some(v) != object.resource_version().as_ref())
                {
                    tracing::info!(%member, object = %format!("{} {ns}/{}", k.1, k.3), "changed by someone else: writing it again");
                    self.forget(&k);
                }
                continue;
            }
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, resource);
            match api
                .delete(&object.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    self.forget(&k);
                    tracing::info!(%member, object = %format!("{} {ns}/{}", resource.kind, object.name_any()), "removed: no export backs it any more");
                }
                Err(e) => {
                    self.failed();
                    tracing::warn!(%member, error = %e, "removing a multi-cluster service object")
                }
            }
        }
        // Deleted by someone else: written again on the next pass.
        let missing: Vec<_> = desired
            .iter()
            .filter(|k| k.0 == member && k.1 == resource.kind && !live.contains(*k))
            .filter(|k| self.versions.contains_key(*k))
            .cloned()
            .collect();
        for k in missing {
            tracing::info!(%member, object = %format!("{} {}/{}", k.1, k.2, k.3), "deleted by someone else: writing it again");
            self.forget(&k);
        }
    }
}

impl LoopState {
    /// Forgets what was written for one object (its status included), so it is written again.
    fn forget(&mut self, k: &(String, String, String, String)) {
        let status = format!("{}/status", k.1);
        self.written.retain(|w, _| {
            !(w.0 == k.0 && (w.1 == k.1 || w.1 == status) && w.2 == k.2 && w.3 == k.3)
        });
        self.versions.remove(k);
    }
}

fn key(member: Option<&str>, object: &serde_json::Value) -> (String, String, String, String) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    (
        member.unwrap_or_default().to_owned(),
        s(&object["kind"]),
        s(&object["metadata"]["namespace"]),
        s(&object["metadata"]["name"]),
    )
}

fn digest(object: &serde_json::Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    object.to_string().hash(&mut h);
    h.finish()
}

fn vip_of(object: &DynamicObject) -> Option<(Ipv4Addr, String)> {
    let a = object.annotations();
    Some((a.get(VIP)?.parse().ok()?, a.get(HOSTNAME)?.clone()))
}

/// Creates the hub's ServiceImport for a new multi-cluster service (and its namespace, when the
/// hub lacks it: namespace sameness). The mutating webhook gives it a VIP from `pool`, else from
/// the hub's only VipPool.
async fn create_hub_import(
    hub: &Client,
    ns: &str,
    name: &str,
    pool: Option<String>,
) -> Result<(Ipv4Addr, String), String> {
    let pool = match pool {
        Some(p) => p,
        None => {
            let pools = Api::<VipPool>::all(hub.clone())
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("cannot list VipPools: {e}"))?;
            match pools.items.as_slice() {
                [only] => only.name_any(),
                [] => return Err("no VipPool exists on the hub: create one (kubectl multicluster vip pool …) for multi-cluster services".to_owned()),
                _ => return Err(format!("the hub has several VipPools: label the ServiceExport {VIP_POOL}=<pool> to choose one")),
            }
        }
    };
    ensure_hub_namespace(hub, ns, name).await?;
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": multicluster_core::vip::SERVICE_IMPORT_API_VERSION, "kind": "ServiceImport",
        "metadata": {"name": name, "namespace": ns, "labels": {SERVICE_LABEL: name, VIP_POOL: pool}},
        "spec": {"type": "ClusterSetIP", "ports": [{"port": 1, "protocol": "TCP"}]}
    }))
    .map_err(|e| e.to_string())?;
    let api = Api::<DynamicObject>::namespaced_with(
        hub.clone(),
        ns,
        &mcs::mcs_api_resource("ServiceImport"),
    );
    let created = match api.create(&PostParams::default(), &object).await {
        Ok(o) => o,
        Err(kube::Error::Api(s)) if s.code == 409 => {
            api.get(name).await.map_err(|e| e.to_string())?
        }
        Err(kube::Error::Api(s)) => return Err(format!("no VIP for {ns}/{name}: {}", s.message)),
        Err(e) => {
            return Err(format!(
                "cannot create the hub's ServiceImport {ns}/{name}: {e}"
            ));
        }
    };
    vip_of(&created).ok_or_else(|| {
        "the hub's ServiceImport got no VIP: is the hub server's mutating webhook registered?"
            .to_owned()
    })
}

/// Creates namespace `ns` on the hub when it is missing (namespace sameness: the hub's
/// ServiceImport lives in the exported Service's namespace).
async fn ensure_hub_namespace(hub: &Client, ns: &str, name: &str) -> Result<(), String> {
    let namespaces: Api<Namespace> = Api::all(hub.clone());
    if namespaces.get_opt(ns).await.ok().flatten().is_none() {
        let object: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": ns, "labels": {SERVICE_LABEL: name}}
        }))
        .map_err(|e| e.to_string())?;
        match namespaces.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(format!("cannot create namespace {ns} on the hub: {e}")),
        }
    }
    Ok(())
}

/// Puts what the exports disagree on on the hub's copy of the ServiceImport, for
/// `kubectl multicluster services list`; nothing when they agree (applying without it removes it).
fn annotate_conflict(hub_spec: &mut serde_json::Value, merged: &mcs::Merged) {
    if let Some((reasons, message)) = mcs::conflict(merged) {
        hub_spec["metadata"]["annotations"][multicluster_core::keys::CONFLICTS] =
            format!("{reasons}: {message}").into();
    }
}

/// Member → its cluster ID (`MemberCluster.spec.clusterId`), for the members that have one.
fn cluster_ids(inputs: &PassInputs<'_>) -> BTreeMap<String, String> {
    inputs
        .clusters
        .iter()
        .filter_map(|(member, c)| Some((member.clone(), c.spec.cluster_id.clone()?)))
        .collect()
}

/// The client of this pass for `member`.
fn member_client(
    connected: &BTreeMap<String, anyhow::Result<Client>>,
    member: &str,
) -> anyhow::Result<Client> {
    match connected.get(member) {
        Some(Ok(client)) => Ok(client.clone()),
        Some(Err(e)) => Err(anyhow::anyhow!("{e:#}")),
        None => Err(anyhow::anyhow!("no connection to {member} in this pass")),
    }
}

async fn apply(
    hub: &Client,
    connected: &BTreeMap<String, anyhow::Result<Client>>,
    write: &Write,
) -> anyhow::Result<String> {
    let client = match &write.member {
        None => hub.clone(),
        Some(m) => member_client(connected, m)?,
    };
    let object = &write.object;
    let resource = match object["kind"].as_str() {
        Some("Service") => ApiResource::erase::<Service>(&()),
        Some("EndpointSlice") => {
            ApiResource::erase::<k8s_openapi::api::discovery::v1::EndpointSlice>(&())
        }
        Some("HTTPRoute") => http_route_resource(),
        _ => mcs::mcs_api_resource("ServiceImport"),
    };
    let (ns, name) = (
        object["metadata"]["namespace"].as_str().unwrap_or_default(),
        object["metadata"]["name"].as_str().unwrap_or_default(),
    );
    let api = Api::<DynamicObject>::namespaced_with(client, ns, &resource);
    let params = PatchParams::apply(mcs::FIELD_MANAGER).force();
    let written = if write.status {
        api.patch_status(name, &params, &Patch::Apply(object))
            .await?
    } else {
        api.patch(name, &params, &Patch::Apply(object)).await?
    };
    Ok(written.resource_version().unwrap_or_default())
}

/// What to change on an export so that it carries the VIP, hostname and `wanted` conditions, or
/// `None` when it already does (conditions keep their transition time while their status holds).
fn export_patch(
    export: &DynamicObject,
    wanted: &[mcs::Wanted],
    vip: Option<(Ipv4Addr, &str)>,
) -> Option<serde_json::Value> {
    let current = conditions::from_json(&export.data["status"]);
    let now = k8s_openapi::jiff::Timestamp::now();
    let conditions: Vec<Condition> = wanted
        .iter()
        .map(|(type_, ok, reason, message)| {
            let generation = export.metadata.generation;
            conditions::condition(
                &current,
                type_,
                *ok,
                reason,
                message.clone(),
                generation,
                now,
            )
        })
        .collect();
    // What a reader sees: status, reason and message (not the generation or the time).
    let mut same = conditions.iter().all(|c| {
        current.iter().any(|o| {
            (&o.type_, &o.status, &o.reason, &o.message)
                == (&c.type_, &c.status, &c.reason, &c.message)
        })
    });
    let annotations = export.annotations();
    let vip_now = vip.map(|(a, _)| a.to_string());
    let host_now = vip.map(|(_, h)| h.to_owned());
    if annotations.get(VIP) != vip_now.as_ref() || annotations.get(HOSTNAME) != host_now.as_ref() {
        same = false;
    }
    if same {
        return None;
    }
    Some(serde_json::json!({
        "annotations": {VIP: vip_now, HOSTNAME: host_now},
        "conditions": conditions,
    }))
}

async fn patch_export(
    connected: &BTreeMap<String, anyhow::Result<Client>>,
    member: &str,
    export: &DynamicObject,
    patch: &serde_json::Value,
) -> anyhow::Result<DynamicObject> {
    let client = member_client(connected, member)?;
    let ns = export.namespace().unwrap_or_default();
    let api =
        Api::<DynamicObject>::namespaced_with(client, &ns, &mcs::mcs_api_resource("ServiceExport"));
    // The export is the user's object: a merge patch touches only our annotations, and the
    // status conditions are ours alone (the MCS API gives them to the implementation).
    let meta = serde_json::json!({"metadata": {"annotations": patch["annotations"]}});
    api.patch(
        &export.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&meta),
    )
    .await?;
    let status = serde_json::json!({"status": {"conditions": patch["conditions"]}});
    Ok(api
        .patch_status(
            &export.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?)
}

/// The joined members this hub server has not read once since it started. Until each has been,
/// nobody here knows what it exports: a service only it exports would look unexported, and the
/// clean-up would remove the service's hub ServiceImport (its VIP) and every member's copies.
fn never_read<'a>(
    clusters: &'a BTreeMap<String, MemberCluster>,
    views: &BTreeMap<String, MemberView>,
) -> Vec<&'a str> {
    clusters
        .keys()
        .filter(|name| !views.contains_key(*name))
        .map(String::as_str)
        .collect()
}

/// Reads a member's exports (with their Services), nodes and namespaces. A member without the
/// Multi-Cluster Services API has no exports.
async fn read_member(
    hub: &Client,
    clients: &MemberClients,
    member: &MemberCluster,
) -> anyhow::Result<MemberView> {
    let client = clients
        .get(
            hub,
            member,
            Capability::Services,
            Some(Duration::from_secs(5)),
        )
        .await?;
    let exports_api =
        Api::<DynamicObject>::all_with(client.clone(), &mcs::mcs_api_resource("ServiceExport"));
    let lp = ListParams::default();
    let (services_api, nodes_api, namespaces_api) = (
        Api::<Service>::all(client.clone()),
        Api::<Node>::all(client.clone()),
        Api::<Namespace>::all(client.clone()),
    );
    let routes_api = Api::<DynamicObject>::all_with(client.clone(), &http_route_resource());
    let slices_api = Api::<EndpointSlice>::all(client.clone());
    // The member's own slices only: ours (managed-by multicluster.dev) are not its endpoints.
    let own_slices = ListParams::default()
        .labels("endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io");
    let (exports, services, nodes, namespaces, gateway_api, slices) = tokio::try_join!(
        async {
            match exports_api.list(&lp).await {
                Ok(l) => Ok(l.items),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(Vec::new()),
                Err(e) => Err(e),
            }
        },
        services_api.list(&lp),
        nodes_api.list(&lp),
        namespaces_api.list(&lp),
        async {
            match routes_api
                .list_metadata(&ListParams::default().limit(1))
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
                Err(e) => Err(e),
            }
        },
        slices_api.list(&own_slices),
    )?;
    let mut slices_of: HashMap<(String, String), Vec<EndpointSlice>> = HashMap::new();
    for slice in slices.items {
        if let Some(service) = slice.labels().get("kubernetes.io/service-name") {
            slices_of
                .entry((slice.namespace().unwrap_or_default(), service.clone()))
                .or_default()
                .push(slice);
        }
    }
    let services: HashMap<(String, String), Service> = services
        .items
        .into_iter()
        .map(|s| ((s.namespace().unwrap_or_default(), s.name_any()), s))
        .collect();
    let exports = exports
        .into_iter()
        .filter(|e| e.metadata.deletion_timestamp.is_none())
        .map(|e| {
            let namespace = e.namespace().unwrap_or_default();
            let name = e.name_any();
            ExportSeen {
                service: services.get(&(namespace.clone(), name.clone())).cloned(),
                endpoint_slices: slices_of
                    .remove(&(namespace.clone(), name.clone()))
                    .unwrap_or_default(),
                created: e
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default(),
                pool: e.labels().get(VIP_POOL).cloned(),
                namespace,
                name,
                object: e,
            }
        })
        .collect();
    Ok(MemberView {
        exports,
        nodes: nodes.items,
        namespaces: namespaces
            .items
            .iter()
            .filter(|n| n.metadata.deletion_timestamp.is_none())
            .map(ResourceExt::name_any)
            .collect(),
        gateway_api,
        fresh: true,
    })
}

#[cfg(test)]
mod tests {
    //! The loop's clean-up in process: a hub and two members played by `crate::testing::FakeApi`.

    use super::*;
    use crate::testing::{FakeApi, Served};
    use serde_json::json;

    fn mcs_kinds(fake: &FakeApi) {
        for (kind, plural) in [
            ("ServiceExport", "serviceexports"),
            ("ServiceImport", "serviceimports"),
        ] {
            fake.serve(Served::new(
                "multicluster.x-k8s.io/v1beta1",
                kind,
                plural,
                true,
            ));
        }
        fake.serve(Served::new(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "endpointslices",
            true,
        ));
    }

    fn member_cluster(name: &str) -> MemberCluster {
        serde_json::from_value(json!({
            "apiVersion": "multicluster.dev/v1alpha1", "kind": "MemberCluster",
            "metadata": {"name": name},
            "spec": {"endpoint": format!("https://{name}.example:6443"),
                     "credentialsSecret": {"name": format!("member-{name}")}}}))
        .unwrap()
    }

    /// The hub server restarts while member-1, the only exporter of `shop/web`, does not answer:
    /// the service's hub ServiceImport (which holds its VIP) and member-2's imported copy stay, and
    /// the first clean-up after member-1 answers again keeps them too (it still exports).
    #[tokio::test]
    async fn a_restart_while_the_exporting_member_is_unreachable_removes_nothing() {
        let hub = FakeApi::new();
        mcs_kinds(&hub);
        let labels = json!({SERVICE_LABEL: "web"});
        let import = json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceImport",
            "metadata": {"name": "web", "namespace": "shop", "labels": labels,
                         "annotations": {VIP: "10.250.0.5", HOSTNAME: "web.shop.mc.example.com"}},
            "spec": {"type": "ClusterSetIP", "ips": ["10.250.0.5"], "ports": [{"port": 80, "protocol": "TCP"}]}});
        hub.insert(import.clone());
        let (m1, m2) = (FakeApi::new(), FakeApi::new());
        for m in [&m1, &m2] {
            mcs_kinds(m);
            m.insert(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
            );
        }
        m1.insert(json!({"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
            "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2026-01-01T00:00:00Z"}}));
        m1.insert(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}}));
        m2.insert(import);
        m1.set_unreachable(true);
        let clients = MemberClients::default();
        clients.give("member-1", m1.client());
        clients.give("member-2", m2.client());
        let clusters: BTreeMap<String, MemberCluster> = ["member-1", "member-2"]
            .into_iter()
            .map(|n| (n.to_owned(), member_cluster(n)))
            .collect();
        let metrics = crate::metrics::Metrics::default();
        let mut state = LoopState::new(crate::loops::Loop::new("services", &metrics));
        let hub_client = hub.client();

        // The first pass after the start, a clean-up pass, member-1 unreachable.
        state.refresh(&hub_client, &clients, &clusters).await;
        state
            .reconcile(&hub_client, &clients, &clusters, &[], true)
            .await;
        let kept = |fake: &FakeApi| {
            fake.get(
                "multicluster.x-k8s.io/v1beta1",
                "ServiceImport",
                Some("shop"),
                "web",
            )
            .is_some()
        };
        assert!(
            kept(&hub),
            "the hub ServiceImport (the VIP) was removed: {:?}",
            hub.writes()
        );
        assert!(
            kept(&m2),
            "member-2's ServiceImport was removed: {:?}",
            m2.writes()
        );

        // member-1 answers again: it exports web, so the clean-up keeps everything.
        m1.set_unreachable(false);
        state.refresh(&hub_client, &clients, &clusters).await;
        state
            .reconcile(&hub_client, &clients, &clusters, &[], true)
            .await;
        assert!(kept(&hub) && kept(&m2));
    }
}
