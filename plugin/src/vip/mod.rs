//! `kubectl multicluster vip list|show`: the addresses handed out, from the `VipClaim`s, with the
//! members behind each multi-cluster service (from the hub's `ServiceImport`s).

use anyhow::anyhow;
use clap::Subcommand;
use std::collections::BTreeMap;

use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::VipClaim;
use serde::Serialize;

use crate::output::{self, OutputFormat, Tabular};

#[derive(Subcommand, Debug)]
pub enum VipCommand {
    /// Every allocated VIP: address, pool, hostname, the Service or multi-cluster service holding
    /// it, and the members behind a multi-cluster service
    List,
    /// One VIP, by address or by the Service holding it (NAMESPACE/NAME)
    Show { address_or_service: String },
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct VipRow {
    pub address: String,
    pub pool: String,
    pub hostname: String,
    pub service: String,
    /// `Service`, or `ServiceImport` for a multi-cluster service.
    pub kind: String,
    /// For a multi-cluster service: each exporting member with the backend addresses listed now
    /// of those it has (`member-1=2/3`); a member at 0 gets no traffic now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<String>,
    pub created: Option<String>,
}

#[derive(Serialize, Debug)]
#[serde(transparent)]
pub struct VipTable(pub Vec<VipRow>);

impl Tabular for VipTable {
    fn headers(&self) -> Vec<&'static str> {
        vec![
            "address", "pool", "hostname", "service", "kind", "members", "created",
        ]
    }
    fn rows(&self) -> Vec<Vec<String>> {
        self.0
            .iter()
            .map(|r| {
                vec![
                    r.address.clone(),
                    r.pool.clone(),
                    r.hostname.clone(),
                    r.service.clone(),
                    r.kind.clone(),
                    r.members.clone().unwrap_or_else(|| "-".to_owned()),
                    r.created.clone().unwrap_or_default(),
                ]
            })
            .collect()
    }
}

fn row(claim: &VipClaim, backends: &BTreeMap<(String, String), String>) -> VipRow {
    let owner = &claim.spec.owner;
    let namespace = owner.namespace.clone().unwrap_or_default();
    VipRow {
        kind: owner.kind.clone(),
        members: (owner.kind == "ServiceImport")
            .then(|| {
                backends
                    .get(&(namespace.clone(), owner.name.clone()))
                    .cloned()
            })
            .flatten(),
        address: claim.spec.address.clone(),
        pool: claim.spec.pool.clone(),
        hostname: claim.spec.hostname.clone(),
        service: format!(
            "{}/{}",
            owner.namespace.clone().unwrap_or_default(),
            owner.name
        ),
        created: claim.creation_timestamp().map(|t| t.0.to_string()),
    }
}

/// The hub's multi-cluster services: (namespace, name) → who serves. Empty when the hub has no
/// Multi-Cluster Services API.
async fn multi_cluster_backends(client: &Client) -> BTreeMap<(String, String), String> {
    let resource = multicluster_core::services::mcs_api_resource("ServiceImport");
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let list = api
        .list(&ListParams::default().labels(multicluster_core::services::SERVICE_LABEL))
        .await;
    list.map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .map(|i| {
            let summary = i
                .annotations()
                .get(multicluster_core::keys::BACKENDS)
                .cloned()
                .unwrap_or_default();
            ((i.namespace().unwrap_or_default(), i.name_any()), summary)
        })
        .collect()
}

pub async fn run(cmd: VipCommand, client: Client, format: OutputFormat) -> anyhow::Result<()> {
    let backends = multi_cluster_backends(&client).await;
    let claims: Api<VipClaim> = Api::all(client);
    let mut rows: Vec<VipRow> = claims
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(|c| row(c, &backends))
        .collect();
    // Numeric order of addresses, as a person reads them.
    rows.sort_by_key(|r| r.address.parse::<std::net::Ipv4Addr>().ok());
    match cmd {
        VipCommand::List => output::print(format, &VipTable(rows)),
        VipCommand::Show { address_or_service } => {
            let found: Vec<VipRow> = rows
                .into_iter()
                .filter(|r| r.address == address_or_service || r.service == address_or_service)
                .collect();
            if found.is_empty() {
                return Err(anyhow!(
                    "no VIP {address_or_service:?} (give an address or NAMESPACE/SERVICE)"
                ));
            }
            output::print(format, &VipTable(found))
        }
    }
}
