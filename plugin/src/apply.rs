//! Server-side apply of the objects the plugin installs (CRDs, the hub server), shared by
//! `local up` and `init`.

use std::time::Duration;

use anyhow::{Context, anyhow};
use futures::future::try_join_all;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, Patch, PatchParams, ValidationDirective};
use kube::{Api, Client};
use multicluster_core::cluster::Kinds;

/// Field manager of everything the plugin applies.
pub const FIELD_MANAGER: &str = "kubectl-multicluster";

/// Server-side apply, forced (the plugin owns these fields) and strict (an unknown field is an
/// error, not silently dropped).
fn params() -> PatchParams {
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.field_validation = Some(ValidationDirective::Strict);
    params
}

/// Every `multicluster.dev` CRD, applied together and waited for until Established.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    install_these_crds(client, &multicluster_core::crds::all()).await
}

/// The Multi-Cluster Services API CRDs (ServiceExport, ServiceImport), vendored unchanged from
/// kubernetes-sigs/mcs-api (`manifests/third-party/mcs-api/SOURCE.md`). Real clusters get them
/// from their multi-cluster services implementation; the playground installs them everywhere.
pub fn mcs_api_crds() -> anyhow::Result<Vec<CustomResourceDefinition>> {
    [
        include_str!(
            "../../manifests/third-party/mcs-api/multicluster.x-k8s.io_serviceexports.yaml"
        ),
        include_str!(
            "../../manifests/third-party/mcs-api/multicluster.x-k8s.io_serviceimports.yaml"
        ),
    ]
    .iter()
    .map(|yaml| serde_saphyr::from_str(yaml).context("parsing a vendored MCS API CRD"))
    .collect()
}

/// Applies `all` (server-side) and waits until each is Established.
pub async fn install_these_crds(
    client: &Client,
    all: &[CustomResourceDefinition],
) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let applies = all.iter().map(|crd| {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let crds = crds.clone();
        async move {
            crds.patch(&name, &params(), &Patch::Apply(crd))
                .await
                .with_context(|| format!("installing CRD {name}"))?;
            multicluster_core::cluster::wait_established(client, &name, Duration::from_secs(30))
                .await?;
            anyhow::Ok(())
        }
    });
    try_join_all(applies).await?;
    Ok(())
}

/// An object parsed from JSON, and the API it lives in, found by discovery. A namespaced object
/// without a namespace is placed in `default_namespace`.
#[derive(Debug)]
pub struct Located {
    pub object: DynamicObject,
    pub name: String,
    pub kind: String,
    pub api: Api<DynamicObject>,
}

pub async fn locate(
    client: &Client,
    value: &serde_json::Value,
    default_namespace: Option<&str>,
) -> anyhow::Result<Located> {
    locate_cached(client, value, default_namespace, &mut Default::default()).await
}

/// `locate`, asking discovery only for kinds not yet in `kinds` (a bundle of many objects of few
/// kinds asks once per kind).
pub async fn locate_cached(
    client: &Client,
    value: &serde_json::Value,
    default_namespace: Option<&str>,
    kinds: &mut Kinds,
) -> anyhow::Result<Located> {
    let mut object: DynamicObject =
        serde_json::from_value(value.clone()).context("a document is not a Kubernetes object")?;
    let types = object
        .types
        .clone()
        .ok_or_else(|| anyhow!("an object has no apiVersion/kind"))?;
    let name = object
        .metadata
        .name
        .clone()
        .ok_or_else(|| anyhow!("a {} has no metadata.name", types.kind))?;
    let kind = kinds
        .resolve(client, &types.api_version, &types.kind)
        .await
        .with_context(|| {
            format!(
                "the cluster does not serve {} {}",
                types.api_version, types.kind
            )
        })?;
    let namespace = object
        .metadata
        .namespace
        .clone()
        .or(default_namespace.map(str::to_owned))
        .filter(|_| kind.namespaced);
    if namespace.is_some() {
        object.metadata.namespace.clone_from(&namespace);
    }
    let api = kind.api(client, namespace.as_deref());
    Ok(Located {
        object,
        name,
        kind: types.kind,
        api,
    })
}

/// Applies `objects` in order (so a namespace exists before what lives in it) and returns
/// `kind/name` of each.
pub async fn apply_objects(
    client: &Client,
    objects: &[serde_json::Value],
) -> anyhow::Result<Vec<String>> {
    let mut applied = Vec::new();
    for value in objects {
        let Located {
            object,
            name,
            kind,
            api,
        } = locate(client, value, None).await?;
        api.patch(&name, &params(), &Patch::Apply(&object))
            .await
            .with_context(|| format!("applying {kind} {name}"))?;
        applied.push(format!("{kind}/{name}"));
    }
    Ok(applied)
}
