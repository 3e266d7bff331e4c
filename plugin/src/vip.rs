//! `kubectl multicluster vip list|show`: the addresses handed out, from the `VipClaim`s.

use anyhow::anyhow;
use clap::Subcommand;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use multicluster_core::api::VipClaim;
use serde::Serialize;

use crate::output::{self, OutputFormat, Tabular};

#[derive(Subcommand, Debug)]
pub enum VipCommand {
    /// Every allocated VIP: address, pool, hostname and the Service holding it
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
    pub created: Option<String>,
}

#[derive(Serialize, Debug)]
#[serde(transparent)]
pub struct VipTable(pub Vec<VipRow>);

impl Tabular for VipTable {
    fn headers(&self) -> Vec<&'static str> {
        vec!["address", "pool", "hostname", "service", "created"]
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
                    r.created.clone().unwrap_or_default(),
                ]
            })
            .collect()
    }
}

fn row(claim: &VipClaim) -> VipRow {
    let owner = &claim.spec.owner;
    VipRow {
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

pub async fn run(cmd: VipCommand, client: Client, format: OutputFormat) -> anyhow::Result<()> {
    let claims: Api<VipClaim> = Api::all(client);
    let mut rows: Vec<VipRow> = claims
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(row)
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
